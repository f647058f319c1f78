//! The example frame in docs/control.md is what the decoder reads: its hex
//! bytes decode to the JSON shown beside them, and to a handoff `SealRequest`.

use porthold::control::frame::{Frame, FrameDecoder, MAX_FRAME};
use porthold::handoff::Message;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/control.md");
    std::fs::read_to_string(path).expect("docs/control.md")
}

/// The contents of the first fenced block tagged `tag`.
fn block(doc: &str, tag: &str) -> String {
    let open = format!("```{tag}\n");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("no ```{tag} block"))
        + open.len();
    let end = start + doc[start..].find("```").expect("closed block");
    doc[start..end].to_string()
}

#[test]
fn the_example_bytes_decode_to_the_example_json() {
    let doc = doc();
    let bytes: Vec<u8> = block(&doc, "hex")
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect();
    let mut decoder = FrameDecoder::new();
    decoder.feed(&bytes);
    let frame = decoder.next_frame().unwrap().expect("a whole frame");
    decoder.finish().expect("nothing left over");
    let expected: Frame = serde_json::from_str(block(&doc, "json").trim()).unwrap();
    assert_eq!(frame, expected);
    assert_eq!(frame.v, 1);
    assert_eq!(frame.id.as_deref(), Some("3f2a9c41d0e8b7a6"));
    assert_eq!(Message::from_frame(&frame).unwrap(), Message::SealRequest);
    assert_eq!(frame.encode().unwrap(), bytes, "the example is canonical");
}

#[test]
fn the_documented_cap_is_the_code_s() {
    assert!(
        doc().contains(&format!("`MAX_FRAME` = {MAX_FRAME} bytes")),
        "docs state MAX_FRAME as a number"
    );
    assert_eq!(MAX_FRAME, 1 << 20, "1 MiB, as the docs say");
}
