//! A frame that is out of order, from the wrong party or of another attempt
//! closes the incumbent's session — it rolls back and opens a new session
//! with `Hello` — while the incumbent keeps its lock and serves; a new attempt
//! on the same channel then completes a handoff.

mod handoff_support;

use porthold::control::frame::Frame;
use porthold::handoff::session::SessionId;
use porthold::handoff::{Channel, Message, Role, Served};

use handoff_support::{Hook, Running, next_non_heartbeat, start_incumbent};

/// A hand-driven supervisor end, so tests can send what porthold never would.
struct Raw {
    channel: Channel,
    _heartbeat: porthold::handoff::Heartbeater,
    session: Option<SessionId>,
}

impl Raw {
    fn new(stream: std::os::unix::net::UnixStream) -> Raw {
        let channel = Channel::new(stream).unwrap();
        let heartbeat = channel.sender().start_heartbeat();
        Raw {
            channel,
            _heartbeat: heartbeat,
            session: None,
        }
    }

    fn send(&self, id: &str, msg: Message) {
        let frame = Frame::new(1, Some(id), &msg).unwrap();
        self.channel.sender().send_frame(&frame).unwrap();
    }

    fn id(&self) -> String {
        self.session.as_ref().unwrap().id.clone()
    }

    /// Expects the incumbent's Hello and opens a session with a fresh id.
    fn open(&mut self, id: &str) {
        let (frame, msg) = next_non_heartbeat(&mut self.channel);
        assert!(
            matches!(
                msg,
                Message::Hello {
                    role: Role::Incumbent,
                    ..
                }
            ),
            "{msg:?}"
        );
        assert_eq!(frame.id, None, "Hello precedes any id");
        self.send(id, Message::HelloAck { version: 1 });
        let session = SessionId {
            version: 1,
            id: id.to_string(),
        };
        self.channel.sender().set_session(Some(session.clone()));
        self.session = Some(session);
    }

    fn expect(&mut self, want: &str) -> Frame {
        let (frame, msg) = next_non_heartbeat(&mut self.channel);
        assert_eq!(frame.msg["type"], want, "{msg:?}");
        assert_eq!(
            frame.id,
            Some(self.id()),
            "every frame carries the handoff id"
        );
        frame
    }

    fn prepare(&mut self) {
        self.send(&self.id(), Message::PrepareHandoff { deadline_ms: 5000 });
        self.expect("drained");
    }

    fn seal(&mut self) {
        self.send(&self.id(), Message::SealRequest);
        self.expect("seal_progress");
        self.expect("seal_complete");
    }

    /// The session was closed: the incumbent says why, and opens a new one.
    fn expect_closed(&mut self, running: &Running, why: &str, resumed: Option<bool>) {
        loop {
            match running.next_hook() {
                Hook::Closed(kind) => {
                    assert_eq!(kind, why);
                    break;
                }
                Hook::Drained | Hook::Sealed => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        if let Some(relocked) = resumed {
            assert_eq!(running.next_hook(), Hook::Resumed { relocked });
        }
        self.channel.sender().set_session(None);
        self.session = None;
    }
}

fn complete_handoff(mut raw: Raw, running: Running, id: &str) {
    raw.open(id);
    raw.prepare();
    raw.seal();
    raw.send(id, Message::Commit);
    let (served, holds_lock) = running.join();
    assert!(matches!(served, Served::Committed), "{served:?}");
    assert!(!holds_lock, "the lock went to the successor");
}

fn setup() -> (tempfile::TempDir, Running, Raw) {
    let dir = tempfile::tempdir().unwrap();
    let (running, stream) = start_incumbent(dir.path(), 7);
    (dir, running, Raw::new(stream))
}

#[test]
fn commit_before_seal_request_closes_the_session_then_a_new_attempt_commits() {
    let (dir, running, mut raw) = setup();
    raw.open("attempt-1");
    raw.prepare();
    raw.send("attempt-1", Message::Commit);
    raw.expect_closed(&running, "OutOfOrder", Some(false));
    // Still holding the lock: a second holder is refused.
    assert!(porthold::handoff::DataDirLock::acquire(dir.path()).is_err());
    complete_handoff(raw, running, "attempt-2");
}

#[test]
fn seal_request_with_another_attempts_id_closes_the_session() {
    let (dir, running, mut raw) = setup();
    raw.open("attempt-1");
    raw.prepare();
    raw.send("attempt-0", Message::SealRequest);
    raw.expect_closed(&running, "WrongId", Some(false));
    assert!(porthold::handoff::DataDirLock::acquire(dir.path()).is_err());
    complete_handoff(raw, running, "attempt-2");
}

#[test]
fn commit_with_another_attempts_id_closes_the_session_and_the_incumbent_relocks() {
    let (dir, running, mut raw) = setup();
    raw.open("attempt-1");
    raw.prepare();
    raw.seal();
    // Sealed: the lock is free now.
    drop(porthold::handoff::DataDirLock::acquire(dir.path()).unwrap());
    raw.send("attempt-0", Message::Commit);
    raw.expect_closed(&running, "WrongId", Some(true));
    assert!(
        porthold::handoff::DataDirLock::acquire(dir.path()).is_err(),
        "the incumbent took its lock back"
    );
    complete_handoff(raw, running, "attempt-2");
}

#[test]
fn every_wrong_direction_frame_closes_the_session_in_idle_and_while_drained() {
    let (_dir, running, mut raw) = setup();
    let wrong_direction = [
        Message::Hello {
            role: Role::Successor,
            pid: 1,
            build_id: String::new(),
            proto_min: 1,
            proto_max: 1,
        },
        Message::Drained {
            open_connections: 0,
        },
        Message::SealProgress { done: 0, total: 0 },
        Message::SealComplete,
        Message::SealFailed { reason: "x".into() },
        Message::Ready,
    ];
    let mut n = 0;
    for msg in wrong_direction {
        for paused in [false, true] {
            n += 1;
            let id = format!("attempt-{n}");
            raw.open(&id);
            if paused {
                raw.prepare();
            }
            raw.send(&id, msg.clone());
            raw.expect_closed(&running, "WrongDirection", paused.then_some(false));
        }
    }
    // Messages the supervisor sends, but not to an incumbent or not now.
    for msg in [
        Message::HelloAck { version: 1 },
        Message::Begin { deadline_ms: 1 },
    ] {
        n += 1;
        let id = format!("attempt-{n}");
        raw.open(&id);
        raw.send(&id, msg);
        raw.expect_closed(&running, "OutOfOrder", None);
    }
    complete_handoff(raw, running, "last");
}

#[test]
fn heartbeats_round_trip_in_every_incumbent_state() {
    let (_dir, running, mut raw) = setup();
    let id = "attempt-1";
    // Each state: our heartbeat is accepted and the incumbent's arrive with the id.
    let beat = |raw: &mut Raw| {
        raw.send(id, Message::Heartbeat { seq: 1 });
        let give_up = std::time::Instant::now() + handoff_support::HANG;
        loop {
            assert!(std::time::Instant::now() < give_up, "no heartbeat");
            match raw.channel.recv_tick() {
                Ok(frame) => {
                    assert_eq!(frame.msg["type"], "heartbeat", "{frame:?}");
                    assert_eq!(frame.id.as_deref(), Some(id));
                    break;
                }
                Err(porthold::control::frame::FrameError::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    raw.open(id);
    beat(&mut raw);
    raw.prepare();
    beat(&mut raw);
    raw.seal();
    beat(&mut raw);
    raw.send(id, Message::Commit);
    let (served, _, hooks) = running.finish();
    assert!(matches!(served, Served::Committed), "{served:?}");
    assert_eq!(
        hooks,
        [Hook::Drained, Hook::Sealed],
        "no session was closed"
    );
}
