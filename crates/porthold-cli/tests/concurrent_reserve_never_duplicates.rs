//! PRODUCT.md P1: concurrent `reserve` calls never receive the same port, and a
//! requested port is never silently replaced. Each test repeats the race many
//! times with real processes against one data dir.

mod util;

use std::collections::HashSet;
use std::process::{Child, Stdio};

use util::{TestEnv, stdout_of};

const PROCESSES: usize = 64;

fn spawn_reserve(env: &TestEnv, args: &[&str]) -> Child {
    env.std_cmd()
        .args(["--busy-timeout", "60s", "reserve", "--allow-unrelated-path"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn porthold")
}

/// 64 concurrent reserves of distinct keys give 64 distinct ports, all exit 0;
/// 20 rounds, half of them racing to create the data dir itself.
#[test]
fn sixty_four_concurrent_reservers_get_distinct_ports() {
    for round in 0..20 {
        let env = TestEnv::new();
        if round % 2 == 1 {
            // Odd rounds start from an existing, migrated registry; even rounds
            // race on creating the directory, the file, WAL and the schema.
            assert!(env.cmd().arg("init").output().unwrap().status.success());
        }
        let children: Vec<Child> = (0..PROCESSES)
            .map(|i| {
                spawn_reserve(
                    &env,
                    &[
                        "--path",
                        &format!("/stress/round{round}/p{i}"),
                        "--pool",
                        "20000-20999",
                    ],
                )
            })
            .collect();
        let mut ports = HashSet::new();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}: reserve failed: {:?} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let port: u16 = stdout_of(&output).parse().expect("a port on stdout");
            assert!(
                (20000..=20999).contains(&port),
                "port {port} outside the pool"
            );
            assert!(
                ports.insert(port),
                "round {round}: port {port} handed out twice"
            );
        }
        assert_eq!(ports.len(), PROCESSES);
        assert_eq!(env.row_count(), PROCESSES as i64);
    }
}

/// 64 concurrent reserves of the same key all print the same port; one row.
#[test]
fn concurrent_reserves_of_one_key_agree_on_one_port() {
    for round in 0..3 {
        let env = TestEnv::new();
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                spawn_reserve(
                    &env,
                    &[
                        "--path",
                        "/same/key",
                        "--tag",
                        "web",
                        "--pool",
                        "20000-20999",
                    ],
                )
            })
            .collect();
        let ports: HashSet<String> = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().unwrap();
                assert!(
                    output.status.success(),
                    "round {round}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                stdout_of(&output)
            })
            .collect();
        assert_eq!(
            ports.len(),
            1,
            "round {round}: one key got several ports: {ports:?}"
        );
        assert_eq!(env.row_count(), 1);
    }
}

/// Two concurrent `reserve --port N` for different keys: exactly one wins, the
/// other exits 3, and nobody receives a port other than N. 100 rounds.
#[test]
fn two_requests_for_one_port_have_exactly_one_winner() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    for round in 0..100u16 {
        let port = 21000 + round;
        let wanted = port.to_string();
        let a = spawn_reserve(
            &env,
            &["--path", &format!("/race/{round}/a"), "--port", &wanted],
        );
        let b = spawn_reserve(
            &env,
            &["--path", &format!("/race/{round}/b"), "--port", &wanted],
        );
        let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let winners = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}: {winners} winners");
        for output in &outputs {
            if output.status.success() {
                assert_eq!(
                    stdout_of(output),
                    wanted,
                    "round {round}: got another port than requested"
                );
            } else {
                assert_eq!(
                    output.status.code(),
                    Some(3),
                    "round {round}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                assert!(stdout_of(output).is_empty(), "the loser printed a port");
                assert!(
                    String::from_utf8_lossy(&output.stderr)
                        .contains(&format!("port {wanted} is reserved by"))
                );
            }
        }
    }
}
