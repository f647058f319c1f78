//! A registry that cannot be trusted is reported (exit 6) and left byte for
//! byte as it was; a registry whose write lock is held elsewhere is exit 5
//! after --busy-timeout, not a hang.

mod util;

use std::time::{Duration, Instant};

use util::{TestEnv, stderr_of};

fn fill_random(bytes: &mut [u8]) {
    // xorshift: deterministic "random" bytes without a dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
}

#[test]
fn a_registry_of_random_bytes_is_exit_6_and_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let mut junk = vec![0u8; 8192];
    fill_random(&mut junk);
    std::fs::write(env.registry(), &junk).unwrap();
    for args in [
        &["reserve"][..],
        &["list"],
        &["release"],
        &["init"],
        &["--json", "reserve"],
    ] {
        let output = env.cmd().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(6),
            "{args:?}: {}",
            stderr_of(&output)
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(&env.registry().display().to_string()),
            "the error names the file: {stderr}"
        );
        assert!(stderr.contains("hint"), "the error gives a hint: {stderr}");
        assert_eq!(
            std::fs::read(env.registry()).unwrap(),
            junk,
            "{args:?} modified the file"
        );
    }
    let entries: Vec<_> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "no side files were created: {entries:?}");
}

#[test]
fn a_registry_with_a_newer_schema_is_exit_6_and_untouched() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    {
        let db = env.db();
        db.execute_batch(
            "PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;
             UPDATE meta SET value = '99' WHERE key = 'min_writer_version';",
        )
        .unwrap();
    }
    let before = std::fs::read(env.registry()).unwrap();
    for args in [&["reserve"][..], &["list"]] {
        let output = env.cmd().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(6), "{}", stderr_of(&output));
        assert!(
            stderr_of(&output).contains("schema version 99"),
            "{}",
            stderr_of(&output)
        );
    }
    assert_eq!(std::fs::read(env.registry()).unwrap(), before);
}

#[test]
fn a_newer_schema_that_allows_older_writers_is_used() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    env.db().execute_batch("PRAGMA user_version = 2;").unwrap();
    let output = env
        .cmd()
        .args(["reserve", "--pool", "20000-20009"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let version: i64 = env
        .db()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2, "never downgraded");
}

#[test]
fn a_held_write_lock_gives_exit_5_after_the_busy_timeout() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    let mut db = env.db();
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let started = Instant::now();
    // The outer timeout (120 s in TestEnv) only guards against a hang.
    let output = env
        .cmd()
        .args(["--busy-timeout", "200ms", "reserve"])
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("busy"),
        "{}",
        stderr_of(&output)
    );
    assert!(
        waited >= Duration::from_millis(200),
        "gave up before the timeout: {waited:?}"
    );
    let json = env
        .cmd()
        .args(["--json", "--busy-timeout", "100ms", "reserve"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stderr).unwrap();
    assert_eq!(value["error"]["kind"], "busy");
    assert_eq!(value["error"]["exit"], 5);
    tx.rollback().unwrap();
    assert!(
        env.cmd()
            .args(["--busy-timeout", "200ms", "reserve"])
            .output()
            .unwrap()
            .status
            .success()
    );
}
