//! docs/discovery.md is the contract for readers in other languages: its
//! examples must be what the library writes and reads.

use std::path::Path;

use porthold::discovery::{self, Family, LockOwner, Proto, Record, State};

fn json_blocks() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/discovery.md"
    ))
    .expect("docs/discovery.md");
    doc.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_string())
        .collect()
}

#[test]
fn the_documented_record_parses_with_every_field() {
    let blocks = json_blocks();
    assert_eq!(blocks.len(), 2, "a record and a lock line");
    let record = Record::from_json(blocks[0].as_bytes(), Path::new("docs/discovery.md")).unwrap();
    assert_eq!(record.schema, discovery::SCHEMA);
    assert_eq!(record.state, State::Ready);
    assert_eq!(record.listeners.len(), 2);
    assert_eq!(record.listeners[0].proto, Proto::Tcp);
    assert_eq!(record.listeners[1].family, Family::Unix);
    assert_eq!(record.listeners[1].port, None);
    assert_eq!(record.generations.len(), 2);
    assert_eq!(record.events[0].retired, Some(1));
    assert_eq!(
        record.url("http").as_deref(),
        Some("http://127.0.0.1:10003")
    );
    // Writing it back and reading it again is lossless.
    let again = Record::from_json(&record.to_json().unwrap(), Path::new("x")).unwrap();
    assert_eq!(again, record);
}

#[test]
fn the_documented_default_name_is_what_the_library_computes() {
    let blocks = json_blocks();
    let record = Record::from_json(blocks[0].as_bytes(), Path::new("docs/discovery.md")).unwrap();
    let name = discovery::default_name(Path::new(&record.key.path), &record.key.tag);
    assert_eq!(name, "shop-web-64b2c78ff4e72b85");
    assert_eq!(record.name, name);
    assert!(record.is_for(&record.key));
    assert_eq!(record.pgid, Some(41240));
    assert_eq!(record.drain_timeout_ms, Some(30_000));
    assert_eq!(record.status.as_deref(), Some("serving 3 clients"));
}

#[test]
fn the_documented_hash_input_is_path_nul_tag() {
    // The doc's example: printf '/home/ann/shop\0web' | sha256sum → 64b2c78ff4e72b85…
    assert_eq!(
        discovery::key_hash(Path::new("/home/ann/shop"), "web"),
        "64b2c78ff4e72b85"
    );
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/discovery.md"
    ))
    .unwrap();
    assert!(doc.contains("`shop-web-64b2c78ff4e72b85`"));
    assert!(doc.contains("SHA-256"));
}

#[test]
fn the_documented_lock_line_parses_only_with_its_newline() {
    let blocks = json_blocks();
    let line = blocks[1].trim_end();
    assert!(
        LockOwner::parse(line.as_bytes()).is_none(),
        "no newline: incomplete"
    );
    let owner = LockOwner::parse(format!("{line}\n").as_bytes()).expect("complete line");
    assert_eq!(owner.pid, 41234);
    assert_eq!(owner.instance_id, "5b1c0e9a7f3d42c18e6a0b9d2f4c7e11");
    assert_eq!(owner.key.unwrap().tag, "web");
}

#[test]
fn a_newer_major_schema_in_the_documented_record_is_rejected() {
    let blocks = json_blocks();
    let newer = blocks[0].replace("\"schema\": \"1.2\"", "\"schema\": \"2.0\"");
    assert_ne!(newer, blocks[0]);
    assert!(Record::from_json(newer.as_bytes(), Path::new("x")).is_err());
    let minor = blocks[0].replace("\"schema\": \"1.2\"", "\"schema\": \"1.7\", \"extra\": 1");
    assert!(Record::from_json(minor.as_bytes(), Path::new("x")).is_ok());
}
