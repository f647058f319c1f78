//! A record is replaced atomically: while a writer process republishes it as
//! fast as it can, readers that open and parse the raw file never see a
//! partial, empty, mixed or missing file.

mod common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{DIR, NAME, say};
use porthold::discovery::{Publisher, Record, State, new_instance_id};

const WRITER: &str = "writer_child";
const RUN_FOR: Duration = Duration::from_secs(10);

/// Each generation fills argv with entries that all carry the generation, so a
/// file mixing two writes is detectable even when it happens to parse. The
/// file is ~12 KiB, spanning several pages.
fn stamped(mut r: Record, generation: u64) -> Record {
    r.generation = generation;
    r.state = if generation.is_multiple_of(2) {
        State::Ready
    } else {
        State::Reloading
    };
    r.argv = (0..200)
        .map(|i| format!("g{generation}-{i:04}-{}", "x".repeat(40)))
        .collect();
    r
}

fn consistent(r: &Record) -> bool {
    let prefix = format!("g{}-", r.generation);
    r.argv.len() == 200 && r.argv.iter().all(|a| a.starts_with(&prefix))
}

#[test]
fn writer_child() {
    if common::role().as_deref() != Some("writer") {
        return;
    }
    let dir = common::env_path(DIR);
    let name = common::env_str(NAME);
    let id = new_instance_id().unwrap();
    let mut publisher = Publisher::acquire(&dir, &name, &id).unwrap();
    let base = common::record(&name, &id);
    publisher.publish(&stamped(base.clone(), 1)).unwrap();
    say("first");
    let start = Instant::now();
    let mut generation = 1;
    while start.elapsed() < RUN_FOR {
        generation += 1;
        publisher
            .publish(&stamped(base.clone(), generation))
            .unwrap();
    }
    say(format!("done {generation}"));
    common::wait_for_stdin_eof();
    publisher.finish().unwrap();
}

#[derive(Default, Debug)]
struct Seen {
    reads: u64,
    parse_errors: u64,
    missing: u64,
    other_errors: u64,
    mixed: u64,
    went_backwards: u64,
}

#[test]
fn readers_never_see_a_half_written_or_missing_record_while_a_writer_republishes() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let name = "hammer";
    let (mut child, out) = common::spawn(common::child(WRITER, "writer", &dir, name));
    assert_eq!(out.next(), "first");

    let path = dir.join(format!("{name}.json"));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut seen = Seen::default();
                let mut last_generation = 0;
                while !stop.load(Ordering::Relaxed) {
                    seen.reads += 1;
                    match fs::read(&path) {
                        Ok(bytes) => match Record::from_json(&bytes, &path) {
                            Ok(r) => {
                                if !consistent(&r) {
                                    seen.mixed += 1;
                                }
                                if r.generation < last_generation {
                                    seen.went_backwards += 1;
                                }
                                last_generation = r.generation;
                            }
                            Err(_) => seen.parse_errors += 1,
                        },
                        Err(e) if e.kind() == ErrorKind::NotFound => seen.missing += 1,
                        Err(_) => seen.other_errors += 1,
                    }
                }
                seen
            })
        })
        .collect();

    let done = out.next();
    stop.store(true, Ordering::Relaxed);
    let per_reader: Vec<Seen> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    assert!(child.wait().unwrap().success());

    let publishes: u64 = done.strip_prefix("done ").unwrap().parse().unwrap();
    let total = per_reader.iter().fold(Seen::default(), |mut t, s| {
        t.reads += s.reads;
        t.parse_errors += s.parse_errors;
        t.missing += s.missing;
        t.other_errors += s.other_errors;
        t.mixed += s.mixed;
        t.went_backwards += s.went_backwards;
        t
    });
    eprintln!("publishes: {publishes}, {total:?}");
    assert!(
        publishes > 100,
        "the writer published only {publishes} times"
    );
    assert!(
        total.reads > 1000,
        "the readers read only {} times",
        total.reads
    );
    assert_eq!(total.parse_errors, 0, "{total:?}");
    assert_eq!(total.missing, 0, "{total:?}");
    assert_eq!(total.other_errors, 0, "{total:?}");
    assert_eq!(total.mixed, 0, "{total:?}");
    assert_eq!(total.went_backwards, 0, "{total:?}");
    // The writer's clean exit removed the record.
    assert!(!path.exists());
}
