//! Helpers for the CLI tests of the full registry, on top of `util`.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

use crate::util::{TestEnv, stderr_of, stdout_of};

/// Runs porthold with `args`; asserts success; returns stdout (trimmed).
pub fn ok(env: &TestEnv, args: &[&str]) -> String {
    let output = env.cmd().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed ({:?}): {}",
        output.status.code(),
        stderr_of(&output)
    );
    stdout_of(&output)
}

/// Runs porthold with `args`; asserts exit `code` and empty stdout; returns stderr.
pub fn fails(env: &TestEnv, args: &[&str], code: i32) -> String {
    let output = env.cmd().args(args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout_of(&output),
        stderr_of(&output)
    );
    assert!(
        stdout_of(&output).is_empty(),
        "{args:?} printed data on failure: {}",
        stdout_of(&output)
    );
    stderr_of(&output)
}

/// Runs porthold with `--json` and `args`; asserts success; parses stdout.
pub fn json(env: &TestEnv, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(env, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs porthold with `--json` and `args`; asserts exit `code`; parses the
/// error object on stderr.
pub fn json_error(env: &TestEnv, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stderr = fails(env, &all, code);
    let line = stderr
        .lines()
        .find(|l| l.contains("\"error\""))
        .unwrap_or_else(|| panic!("no error object in {stderr}"));
    let value: Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["error"]["exit"], code, "{value}");
    value
}

/// Writes `porthold.toml` into the env's project dir.
pub fn write_project(env: &TestEnv, text: &str) {
    std::fs::write(env.project().join("porthold.toml"), text).unwrap();
}

/// Replaces `dir` by `[TMP]` and RFC 3339 timestamps by `[TIME]`, and
/// collapses runs of spaces (table padding depends on the temp dir's
/// length), so snapshots depend on neither the temp dir nor the clock.
pub fn redact(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.canonicalize().unwrap().display().to_string(), "[TMP]");
    let text = text.replace(&dir.display().to_string(), "[TMP]");
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if i + 20 <= bytes.len() && is_timestamp(&bytes[i..i + 20]) {
            out.push_str("[TIME]");
            i += 20;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for line in out.lines() {
        let mut previous_space = 0;
        for c in line.chars() {
            if c == ' ' {
                previous_space += 1;
                if previous_space <= 2 {
                    collapsed.push(c);
                }
            } else {
                previous_space = 0;
                collapsed.push(c);
            }
        }
        collapsed.push('\n');
    }
    collapsed.trim_end().to_string()
}

fn is_timestamp(b: &[u8]) -> bool {
    // 2026-11-25T01:23:45Z
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
}
