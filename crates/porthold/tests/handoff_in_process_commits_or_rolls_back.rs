//! Whole handoffs between an `Incumbent` and a `Successor` in one process,
//! driven by a small supervisor loop built on the library's supervisor-side
//! state machines: a good successor takes the lock and the state over; one that
//! hangs after `Begin` is killed at the deadline and one that crashes is
//! noticed by its channel's end, and in both cases the incumbent re-acquires
//! the lock, re-reads its state and accepts again.

mod handoff_support;

use std::cell::RefCell;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use porthold::handoff::session::SupervisorState;
use porthold::handoff::{DataDirLock, Role, Served, Successor, SupervisorEvent};

use handoff_support::{
    Attempt, Hook, Recorder, Supervised, read_state, run_attempt, start_incumbent,
};

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Good,
    HangAfterBegin,
    CrashAfterBegin,
}

#[derive(Debug)]
enum Ended {
    /// Served as the next incumbent until its channel closed; the state it read.
    Served {
        value: u64,
        served: Served,
    },
    Crashed,
    Killed,
}

struct SuccessorProcess {
    kill: Sender<()>,
    thread: JoinHandle<Ended>,
}

fn spawn_successor(dir: &Path, behaviour: Behaviour) -> (UnixStream, SuccessorProcess) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (kill, killed): (Sender<()>, Receiver<()>) = channel();
    let dir: PathBuf = dir.to_path_buf();
    let thread = thread::spawn(move || {
        let successor = Successor::new(theirs, "new build").unwrap();
        let begun = successor.wait_begin().unwrap();
        assert!(begun.deadline() > Duration::ZERO);
        match behaviour {
            Behaviour::CrashAfterBegin => Ended::Crashed,
            Behaviour::HangAfterBegin => {
                let lock = DataDirLock::acquire(&dir).unwrap();
                // Stops responding (no Ready) until killed; the heartbeat thread
                // goes on, as it would in a server whose main loop is stuck.
                let _ = killed.recv();
                drop(lock);
                drop(begun);
                Ended::Killed
            }
            Behaviour::Good => {
                let lock = DataDirLock::acquire(&dir).unwrap();
                let value = read_state(&dir);
                let mut incumbent = begun.ready(lock).unwrap();
                let (events, _rx) = channel();
                let mut hooks = Recorder {
                    dir: dir.clone(),
                    value,
                    events,
                };
                let served = incumbent.serve(&mut hooks).unwrap();
                Ended::Served { value, served }
            }
        }
    });
    (ours, SuccessorProcess { kill, thread })
}

/// Runs one attempt with a successor of `behaviour`; returns the outcome and how the successor ended
/// (for a committed attempt, once the test drops the successor's channel).
fn attempt(
    incumbent: &mut Supervised,
    dir: &Path,
    behaviour: Behaviour,
    deadline: Duration,
) -> (Attempt, SuccessorProcess) {
    let started: RefCell<Option<SuccessorProcess>> = RefCell::new(None);
    let killed: RefCell<Option<Ended>> = RefCell::new(None);
    let outcome = run_attempt(
        incumbent,
        deadline,
        || {
            let (stream, process) = spawn_successor(dir, behaviour);
            *started.borrow_mut() = Some(process);
            stream
        },
        || {
            // "Kill the successor's tree": stop it and wait until it is gone.
            let process = started.borrow_mut().take().expect("a successor ran");
            drop(process.kill);
            *killed.borrow_mut() = Some(process.thread.join().unwrap());
        },
    );
    let process = match started.into_inner() {
        Some(p) => p,
        None => {
            // Killed already: hand back a finished stand-in carrying its end.
            let ended = killed.into_inner().expect("killed successor");
            let (kill, _) = channel();
            SuccessorProcess {
                kill,
                thread: thread::spawn(move || ended),
            }
        }
    };
    (outcome, process)
}

fn setup(value: u64) -> (tempfile::TempDir, handoff_support::Running, Supervised) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state"), value.to_string()).unwrap();
    let (running, stream) = start_incumbent(dir.path(), value);
    let mut incumbent = Supervised::new(stream, Role::Incumbent);
    incumbent.until_open();
    (dir, running, incumbent)
}

fn committed(
    dir: &Path,
    running: handoff_support::Running,
    incumbent: &mut Supervised,
    expect_value: u64,
) {
    let (outcome, successor) = attempt(incumbent, dir, Behaviour::Good, Duration::from_secs(10));
    let Attempt::Committed {
        successor: mut next,
    } = outcome
    else {
        panic!("expected a commit, got {outcome:?}");
    };
    let (served, holds_lock, _) = running.finish();
    assert!(matches!(served, Served::Committed), "{served:?}");
    assert!(!holds_lock);
    // The successor holds the lock and opens its next session as the incumbent.
    assert!(matches!(
        DataDirLock::acquire(dir),
        Err(porthold::Error::DataDirLocked { .. })
    ));
    assert_eq!(next.machine.role(), Role::Incumbent);
    next.until(|e| matches!(e, SupervisorEvent::SessionOpened { .. }));
    assert_eq!(next.machine.state(), SupervisorState::Idle);
    drop(next);
    match successor.thread.join().unwrap() {
        Ended::Served { value, served } => {
            assert_eq!(value, expect_value, "the successor read the sealed state");
            assert!(matches!(served, Served::ChannelClosed(_)), "{served:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_good_successor_gets_the_lock_and_the_sealed_state_and_becomes_the_next_incumbent() {
    let (dir, running, mut incumbent) = setup(41);
    committed(dir.path(), running, &mut incumbent, 41);
}

fn rolled_back(behaviour: Behaviour, expect_reason: &str) {
    let (dir, running, mut incumbent) = setup(5);
    let (outcome, successor) = attempt(
        &mut incumbent,
        dir.path(),
        behaviour,
        Duration::from_millis(1500),
    );
    match &outcome {
        Attempt::RolledBack { reason } => assert!(reason.contains(expect_reason), "{reason}"),
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert!(matches!(
        successor.thread.join().unwrap(),
        Ended::Killed | Ended::Crashed
    ));
    // The incumbent drained, sealed, then resumed with the lock taken back.
    assert_eq!(running.next_hook(), Hook::Drained);
    assert_eq!(running.next_hook(), Hook::Sealed);
    assert_eq!(running.next_hook(), Hook::Resumed { relocked: true });
    assert!(matches!(
        DataDirLock::acquire(dir.path()),
        Err(porthold::Error::DataDirLocked { .. })
    ));
    // It opens a new session, and the next attempt commits.
    incumbent.until_open();
    committed(dir.path(), running, &mut incumbent, 5);
}

#[test]
fn a_successor_that_hangs_after_begin_is_killed_at_the_deadline_and_the_incumbent_resumes() {
    rolled_back(Behaviour::HangAfterBegin, "deadline");
}

#[test]
fn a_successor_that_crashes_after_begin_ends_its_channel_and_the_incumbent_resumes() {
    rolled_back(Behaviour::CrashAfterBegin, "closed");
}
