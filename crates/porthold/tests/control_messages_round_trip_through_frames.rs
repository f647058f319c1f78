//! Every control request and reply survives a trip through a frame: encoded,
//! decoded from the byte stream, and parsed back to the same value with the
//! same request id.

use porthold::control::frame::FrameDecoder;
use porthold::control::{Request, Response};
use proptest::prelude::*;

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Status),
        (proptest::option::of(".{0,40}"), any::<u64>())
            .prop_map(|(check, timeout_ms)| Request::Reload { check, timeout_ms }),
    ]
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        ".{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        arb_json().prop_map(|status| Response::Status { status }),
        any::<u32>().prop_map(|pid| Response::Reloaded { pid }),
        ".{0,40}".prop_map(|reason| Response::RolledBack { reason }),
        Just(Response::InProgress),
        ".{0,40}".prop_map(|reason| Response::Unsupported { reason }),
        ".{0,40}".prop_map(|reason| Response::ProtocolError { reason }),
    ]
}

fn decode_one(bytes: &[u8]) -> porthold::control::frame::Frame {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    let frame = decoder.next_frame().unwrap().unwrap();
    decoder.finish().unwrap();
    frame
}

proptest! {
    #[test]
    fn requests_round_trip(request in arb_request(), id in "[ -~]{1,32}") {
        let bytes = request.to_frame(&id).unwrap().encode().unwrap();
        let (got_id, got) = Request::from_frame(&decode_one(&bytes)).unwrap();
        prop_assert_eq!(got_id, id);
        prop_assert_eq!(got, request);
    }

    #[test]
    fn responses_round_trip(response in arb_response(), id in "[ -~]{1,32}") {
        let bytes = response.to_frame(&id).unwrap().encode().unwrap();
        let (got_id, got) = Response::from_frame(&decode_one(&bytes)).unwrap();
        prop_assert_eq!(got_id, id);
        prop_assert_eq!(got, response);
    }
}

/// The example session in docs/control.md parses: requests and replies alternate.
#[test]
fn the_documented_session_parses() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/control.md"
    ))
    .unwrap();
    let start = doc.find("```jsonl\n").expect("a ```jsonl block") + "```jsonl\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let lines: Vec<&str> = doc[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 4);
    for pair in lines.chunks(2) {
        let request: porthold::control::frame::Frame = serde_json::from_str(pair[0]).unwrap();
        let reply: porthold::control::frame::Frame = serde_json::from_str(pair[1]).unwrap();
        let (request_id, _) = Request::from_frame(&request).unwrap();
        let (reply_id, _) = Response::from_frame(&reply).unwrap();
        assert_eq!(request_id, reply_id);
    }
}
