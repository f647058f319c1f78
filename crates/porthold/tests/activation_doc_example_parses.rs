//! The examples in docs/activation.md are what the code does: the ```env block is
//! parsed by the receive side's own parser, and every line of the NOTIFY_SOCKET
//! table is a field the notify server understands.

use std::collections::BTreeMap;

use porthold::activation::notify::NotifyMessage;
use porthold::activation::receive::{InheritedFd, parse_listen_env};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/activation.md");
    std::fs::read_to_string(path).expect("docs/activation.md")
}

/// The body of the first fenced block whose info string is `lang`.
fn fenced(doc: &str, lang: &str) -> String {
    let open = format!("```{lang}\n");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("no ```{lang} block"))
        + open.len();
    let len = doc[start..].find("```").expect("unterminated block");
    doc[start..start + len].to_string()
}

#[test]
fn the_documented_environment_gives_the_documented_fds() {
    let env: BTreeMap<String, String> = fenced(&doc(), "env")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE line");
            (k.to_string(), v.to_string())
        })
        .collect();
    let get = |k: &str| env.get(k).map(String::as_str);
    let pid: u32 = get("LISTEN_PID").expect("LISTEN_PID").parse().expect("pid");
    let fds = parse_listen_env(
        get("LISTEN_PID"),
        get("LISTEN_FDS"),
        get("LISTEN_FDNAMES"),
        pid,
    )
    .expect("the documented environment parses");
    assert_eq!(
        fds,
        vec![
            InheritedFd {
                fd: 3,
                name: Some("web".into())
            },
            InheritedFd {
                fd: 4,
                name: Some("admin".into())
            },
        ]
    );
    // The same environment seen by another process: no sockets.
    let other = parse_listen_env(
        get("LISTEN_PID"),
        get("LISTEN_FDS"),
        get("LISTEN_FDNAMES"),
        pid + 1,
    )
    .expect("parses");
    assert!(other.is_empty());
}

#[test]
fn every_documented_notify_line_is_understood() {
    let doc = doc();
    let lines: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .filter(|l| l.contains('='))
        .map(|l| l.replace("=n", "=123"))
        .collect();
    assert_eq!(
        lines.len(),
        7,
        "the table lists the seven fields: {lines:?}"
    );
    for line in &lines {
        let m = NotifyMessage::from_payload(1, 0, 0, line.as_bytes());
        assert!(m.other.is_empty(), "`{line}` is not understood: {m:?}");
        assert_ne!(
            m,
            NotifyMessage {
                pid: 1,
                ..NotifyMessage::default()
            },
            "`{line}` changed nothing"
        );
    }
}
