//! Arbitrary bytes into the frame decoder, in arbitrary chunks; every frame
//! that decodes goes to the handoff message parser and through both sides'
//! state machines, to the control-socket request and reply parsers (whatever
//! parses re-encodes and parses back the same), and re-encodes to a frame
//! that decodes the same.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use porthold::control::frame::{Frame, FrameDecoder, MAX_FRAME};
use porthold::control::{Request, Response};
use porthold::handoff::{GenerationSession, Message, Role, SupervisorSession};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let now = Instant::now();
    let mut supervisors = [
        SupervisorSession::new(Role::Incumbent, now),
        SupervisorSession::new(Role::Successor, now),
    ];
    let mut generations = [
        GenerationSession::new(Role::Incumbent, 1, "fuzz", now),
        GenerationSession::new(Role::Successor, 2, "fuzz", now),
    ];
    let mut decoder = FrameDecoder::new();
    for piece in bytes.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => check(&frame, &mut supervisors, &mut generations, now),
                Ok(None) => break,
                // A broken stream: the session would be closed here.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});

fn check(
    frame: &Frame,
    supervisors: &mut [SupervisorSession],
    generations: &mut [GenerationSession],
    now: Instant,
) {
    if let Ok(msg) = Message::from_frame(frame) {
        let again = Frame::new(frame.v, frame.id.as_deref(), &msg).expect("message serialises");
        assert_eq!(Message::from_frame(&again).expect("re-parses"), msg);
    }
    if let Ok((id, request)) = Request::from_frame(frame) {
        let again = request.to_frame(&id).expect("request serialises");
        assert_eq!(Request::from_frame(&again).expect("re-parses"), (id, request));
    }
    if let Ok((id, response)) = Response::from_frame(frame) {
        let again = response.to_frame(&id).expect("reply serialises");
        assert_eq!(Response::from_frame(&again).expect("re-parses"), (id, response));
    }
    // A decoded frame is at most MAX_FRAME when re-encoded in canonical form,
    // or the encoder says TooLong; it never panics.
    match frame.encode() {
        Ok(bytes) => {
            assert!(bytes.len() <= 4 + MAX_FRAME as usize);
            let mut d = FrameDecoder::new();
            d.feed(&bytes);
            assert_eq!(d.next_frame().expect("own encoding decodes").as_ref(), Some(frame));
        }
        Err(_) => {}
    }
    for s in supervisors.iter_mut() {
        let _ = s.on_frame(frame, now);
    }
    for g in generations.iter_mut() {
        let _ = g.on_frame(frame, now);
    }
}
