//! Readers never delete (or hide) a live instance's record.
//!
//! A reader that removed a record "because the lock was free" would race a
//! publisher: it sees the lock free, the publisher takes the lock and writes
//! its record, and the reader's unlink then deletes a live instance's record.
//! Here one publisher cycles through whole lifetimes of one name (lock →
//! pause → first write → republishes → finish) while readers doing what
//! `url` (probe/lookup), `ps` (list) and `wait` do run side by side, and the
//! publisher checks, while it holds the lock, that its record is still there.
//! Every window (after the lock, after each write) stays open until each
//! reader has completed a whole read inside it. Between lifetimes a stale
//! record is left behind (as a SIGKILLed owner leaves one): in even rounds
//! readers get a window on it and must leave it alone (only the next lock
//! holder removes it); in odd rounds the next owner takes the name at once,
//! racing readers that just judged the stale record.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use porthold::discovery::{self, Publisher, State};

const ROUNDS: usize = 1_200;
const NAME: &str = "contended";

/// A runtime directory on tmpfs when there is one: the race is about
/// unlink and rename, not about how fast a disk syncs.
fn fast_runtime_dir() -> (tempfile::TempDir, PathBuf) {
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    };
    let dir = tmp.path().join("run");
    discovery::ensure_runtime_dir(&dir).expect("runtime dir");
    (tmp, dir)
}

/// Waits until every reader has completed two more reads, so at least one
/// whole read of each kind ran inside the window that is open now.
fn window(counters: &[Arc<AtomicUsize>], readers: &[thread::JoinHandle<()>]) {
    let start: Vec<usize> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters
        .iter()
        .zip(&start)
        .any(|(c, s)| c.load(Ordering::SeqCst) < s + 2)
    {
        assert!(
            readers.iter().all(|r| !r.is_finished()),
            "a reader stopped (it panicked: see its message above)"
        );
        assert!(
            Instant::now() < deadline,
            "readers made no progress for 60s"
        );
        thread::sleep(Duration::from_micros(20));
    }
}

#[test]
fn readers_never_delete_a_record_while_its_publisher_holds_the_lock() {
    let (_guard, dir) = fast_runtime_dir();
    let done = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    let mut readers = Vec::new();
    type Read = fn(&Path);
    let kinds: [(&str, Read); 4] = [
        ("url", |dir| {
            let _ = discovery::lookup(dir, NAME).expect("lookup");
        }),
        ("probe", |dir| {
            let _ = discovery::probe(dir, NAME).expect("probe");
        }),
        ("ps", |dir| {
            let _ = discovery::list(dir).expect("list");
        }),
        ("wait", |dir| {
            match discovery::wait(dir, NAME, None, true, Duration::ZERO) {
                Ok(_) | Err(porthold::Error::NotFound(_)) => {}
                Err(e) => panic!("wait: {e}"),
            }
        }),
    ];
    for (kind, read) in kinds {
        let dir = dir.clone();
        let done = done.clone();
        let reads = Arc::new(AtomicUsize::new(0));
        counters.push(reads.clone());
        readers.push(
            thread::Builder::new()
                .name(format!("reader-{kind}"))
                .spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        read(&dir);
                        reads.fetch_add(1, Ordering::SeqCst);
                        // Readers back to back would starve the publisher's
                        // exclusive lock; a short pause keeps them dense but fair.
                        thread::sleep(Duration::from_micros(50));
                    }
                })
                .expect("reader thread"),
        );
    }

    let record_file = dir.join(format!("{NAME}.json"));
    let mut lost = Vec::new();
    let mut stale_removed = Vec::new();
    for round in 0..ROUNDS {
        let id = discovery::new_instance_id().expect("id");
        // Readers hold shared locks for an instant; a long retry never gives up on them.
        let mut publisher = Publisher::acquire_with_retry(&dir, NAME, &id, Duration::from_secs(30))
            .expect("acquire");
        // A stale record of the previous round (as a SIGKILLed owner leaves
        // one) was removed by us, the new lock holder. In even rounds readers
        // now see "starting" between the lock and the first write; in odd
        // rounds the first write follows at once, racing readers that judged
        // the stale record just before we took the lock.
        if round % 2 == 0 {
            window(&counters, &readers);
        }
        let mut record = common::record(NAME, &id);
        record.state = State::Starting;
        publisher.publish(&record).expect("publish");
        for state in [State::Starting, State::Ready, State::Ready, State::Stopping] {
            window(&counters, &readers);
            if std::fs::symlink_metadata(&record_file).is_err() {
                lost.push(round);
            }
            // Republish: the rename replaces the file while readers look.
            record.state = state;
            publisher.publish(&record).expect("republish");
        }
        window(&counters, &readers);
        if std::fs::symlink_metadata(&record_file).is_err() {
            lost.push(round);
        }
        let last = std::fs::read(&record_file).unwrap_or_default();
        publisher.finish().expect("finish");
        // Leave the record behind as an owner killed by SIGKILL would: the
        // lock is free now, and still no reader may remove the file; only
        // the next owner does, under the lock. Planted atomically, as the
        // owner wrote it: a reader racing the plant sees all of it or none.
        if !last.is_empty() {
            let planting = dir.join("planting");
            std::fs::write(&planting, &last).expect("write a stale record");
            std::fs::rename(&planting, &record_file).expect("plant a stale record");
            if round % 2 == 0 {
                // Let every reader look at the stale record; it must survive.
                window(&counters, &readers);
                if std::fs::symlink_metadata(&record_file).is_err() {
                    stale_removed.push(round);
                }
            }
            // Odd rounds take the name again at once: a reader that judged
            // the stale record a moment ago races the new owner's first
            // write, which is how a "cleaning" reader deletes a live record.
        }
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("a reader panicked");
    }
    let reads: usize = counters.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    lost.dedup();
    assert!(
        lost.is_empty() && stale_removed.is_empty(),
        "readers deleted records they did not hold the lock of: a live record in {} of \
         {ROUNDS} rounds (first: {:?}), a stale one in {} of {} rounds (first: {:?}); {reads} reads",
        lost.len(),
        &lost[..lost.len().min(10)],
        stale_removed.len(),
        ROUNDS / 2,
        &stale_removed[..stale_removed.len().min(10)]
    );
}
