//! kill -9 of `reserve` at random moments, many of them inside the write
//! transaction (a test-only pause point holds it open), leaves a registry that
//! passes `PRAGMA integrity_check`, has no duplicates, keeps its allocation
//! bookkeeping consistent, and serves the next reserve.

mod util;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use util::{TestEnv, stdout_of};

/// Deterministic pseudo-random numbers (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_at_random_moments_leaves_a_consistent_registry() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut killed_inside_transaction = 0;
    let mut killed_elsewhere = 0;
    let mut finished: i64 = 0;
    for i in 0..100 {
        let pause_ms = rng.below(20);
        let mut child = env
            .std_cmd()
            .args([
                "--busy-timeout",
                "30s",
                "reserve",
                "--skip-occupancy-check",
                "--allow-unrelated-path",
            ])
            .args(["--path", &format!("/kill/{i}"), "--pool", "23000-23999"])
            .env(
                "PORTHOLD_TEST_PAUSE",
                format!("reserve.before-commit:{pause_ms}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(25)));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        if status.success() {
            finished += 1;
        } else if stderr.contains("paused at reserve.before-commit") {
            // The process had written its rows and was waiting to commit.
            killed_inside_transaction += 1;
        } else {
            killed_elsewhere += 1;
        }
        if i % 10 == 9 {
            check_consistent(&env);
        }
    }
    eprintln!(
        "kills inside the transaction: {killed_inside_transaction}, elsewhere: {killed_elsewhere}, finished: {finished}"
    );
    assert!(
        killed_inside_transaction >= 20,
        "too few kills landed inside a transaction: {killed_inside_transaction}"
    );
    check_consistent(&env);
    let output = env
        .cmd()
        .args([
            "reserve",
            "--path",
            "/kill/after",
            "--allow-unrelated-path",
            "--pool",
            "23000-23999",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!stdout_of(&output).is_empty());
    // A process killed after its commit but before it exited keeps its row.
    let rows = env.row_count();
    assert!(
        (finished + 1..=101).contains(&rows),
        "rows {rows}, finished {finished}"
    );
}

fn check_consistent(env: &TestEnv) {
    let db = env.db();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let duplicate_ports: i64 = db
        .query_row("SELECT count(*) FROM (SELECT port FROM reservations GROUP BY port HAVING count(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(duplicate_ports, 0);
    let duplicate_keys: i64 = db
        .query_row("SELECT count(*) FROM (SELECT 1 FROM reservations GROUP BY path, tag HAVING count(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(duplicate_keys, 0);
    // Every reserved port is out of the never-issued ranges.
    let reserved_but_fresh: i64 = db
        .query_row(
            "SELECT count(*) FROM reservations r JOIN fresh_ranges f ON r.port BETWEEN f.start AND f.end",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reserved_but_fresh, 0);
}
