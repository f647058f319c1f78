//! The example exchange in docs/handoff.md is the protocol as the library runs
//! it: replayed through the generation-side machines, every porthold frame is
//! accepted as written and every generation frame is exactly what the
//! generation's machine produces; replayed through the supervisor-side
//! machines (re-addressed to the ids they choose), every porthold frame is
//! exactly what porthold's machine produces.

use std::time::{Duration, Instant};

use porthold::control::frame::Frame;
use porthold::handoff::session::{SupervisorState, out_frame};
use porthold::handoff::{
    GenerationDecision, GenerationSession, Message, Role, SupervisorDecision, SupervisorEvent,
    SupervisorSession,
};

fn exchange() -> Vec<(String, Frame)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/handoff.md");
    let doc = std::fs::read_to_string(path).expect("docs/handoff.md");
    let start = doc.find("```exchange\n").expect("an exchange block") + "```exchange\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end]
        .lines()
        .map(|line| {
            let (dir, json) = line.split_once(' ').expect("DIR JSON");
            (
                dir.to_string(),
                serde_json::from_str(json).expect("a frame"),
            )
        })
        .collect()
}

fn msg(frame: &Frame) -> Message {
    Message::from_frame(frame).expect("a known message")
}

/// The same frame without its id (the supervisor machines choose their own).
fn anonymous(frame: &Frame) -> Frame {
    Frame {
        id: None,
        ..frame.clone()
    }
}

#[test]
fn generation_machines_accept_porthold_frames_and_produce_their_own() {
    let now = Instant::now();
    let lines = exchange();
    assert_eq!(lines.len(), 16);
    let mut inc = GenerationSession::new(Role::Incumbent, 4242, "counter 0.1.0", now);
    let mut suc = GenerationSession::new(Role::Successor, 4243, "counter 0.1.1", now);
    for (dir, frame) in &lines {
        match dir.as_str() {
            "P>I" | "P>S" => {
                let g = if dir == "P>I" { &mut inc } else { &mut suc };
                let decision = g.on_frame(frame, now);
                assert!(
                    !matches!(
                        decision,
                        GenerationDecision::Rollback { .. } | GenerationDecision::Fail(_)
                    ),
                    "{dir} {frame:?} -> {decision:?}"
                );
            }
            "I>P" | "S>P" => {
                let g = if dir == "I>P" { &mut inc } else { &mut suc };
                let produced = match msg(frame) {
                    Message::Hello { .. } => g.hello(),
                    Message::Heartbeat { seq } => Message::Heartbeat { seq },
                    Message::Drained { open_connections } => g.drained(open_connections).unwrap(),
                    Message::SealProgress { done, total } => g.seal_progress(done, total).unwrap(),
                    Message::SealComplete => g.sealed().unwrap(),
                    Message::Ready => {
                        let ready = g.ready().unwrap();
                        let f = out_frame(g.session(), &ready);
                        assert_eq!(&f, frame);
                        g.become_incumbent();
                        continue;
                    }
                    other => panic!("{dir} never sends {other:?}"),
                };
                assert_eq!(&out_frame(g.session(), &produced), frame, "{dir}");
            }
            other => panic!("unknown direction {other}"),
        }
    }
    assert_eq!(
        inc.state(),
        porthold::handoff::session::GenerationState::Committed
    );
    assert_eq!(suc.role(), Role::Incumbent);
}

#[test]
fn supervisor_machines_produce_porthold_frames() {
    let now = Instant::now();
    let mut inc = SupervisorSession::new(Role::Incumbent, now);
    let mut suc = SupervisorSession::new(Role::Successor, now);
    // What porthold's machines sent, to compare with the next P> lines.
    let mut pending: Vec<(&'static str, Frame)> = Vec::new();
    for (dir, frame) in exchange() {
        match dir.as_str() {
            "I>P" | "S>P" => {
                let s = if dir == "I>P" { &mut inc } else { &mut suc };
                let mut frame = frame.clone();
                if frame.id.is_some() {
                    frame.id = s.session().map(|x| x.id.clone());
                }
                let to = if dir == "I>P" { "P>I" } else { "P>S" };
                match s.on_frame(&frame, now) {
                    SupervisorDecision::Proceed { send, event } => {
                        pending.extend(send.map(|f| (to, f)));
                        match event {
                            Some(SupervisorEvent::Sealed) => {
                                assert_eq!(inc.state(), SupervisorState::Sealed);
                            }
                            Some(SupervisorEvent::Ready) => {
                                pending.push(("P>I", inc.commit().unwrap()));
                            }
                            _ => {}
                        }
                    }
                    SupervisorDecision::Nothing => {}
                    other => panic!("{dir} {frame:?} -> {other:?}"),
                }
            }
            "P>I" | "P>S" => {
                let produced = if pending.is_empty() {
                    // Frames porthold sends on its own initiative.
                    match msg(&frame) {
                        Message::Heartbeat { seq } => {
                            out_frame(inc.session(), &Message::Heartbeat { seq })
                        }
                        Message::PrepareHandoff { deadline_ms } => inc
                            .prepare(now, Duration::from_millis(deadline_ms))
                            .unwrap(),
                        Message::Begin { deadline_ms } => suc
                            .begin(now, now + Duration::from_millis(deadline_ms))
                            .unwrap(),
                        other => panic!("porthold would not send {other:?} now"),
                    }
                } else {
                    let (to, f) = pending.remove(0);
                    assert_eq!(to, dir);
                    f
                };
                assert_eq!(anonymous(&produced), anonymous(&frame), "{dir}");
                assert!(
                    produced.id.is_some(),
                    "after hello, every frame carries the id"
                );
            }
            other => panic!("unknown direction {other}"),
        }
    }
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(inc.state(), SupervisorState::Committed);
    assert_eq!(
        (suc.role(), suc.state()),
        (Role::Incumbent, SupervisorState::Idle)
    );
}
