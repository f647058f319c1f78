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

/// Waits for every child; asserts each exited 0; returns their stdouts.
fn all_succeed(children: Vec<Child>, what: &str) -> Vec<String> {
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{what}: {:?} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            stdout_of(&output)
        })
        .collect()
}

/// The same race through `Registry::reserve` itself (`--disable-autoclean`
/// skips the autoclean wrapper): its own transaction must serialise too.
#[test]
fn sixty_four_concurrent_reservers_without_autoclean_get_distinct_ports() {
    for round in 0..10 {
        let env = TestEnv::new();
        if round % 2 == 1 {
            assert!(env.cmd().arg("init").output().unwrap().status.success());
        }
        let children: Vec<Child> = (0..PROCESSES)
            .map(|i| {
                spawn_reserve(
                    &env,
                    &[
                        "--disable-autoclean",
                        "--path",
                        &format!("/stress/plain{round}/p{i}"),
                        "--pool",
                        "20000-20999",
                    ],
                )
            })
            .collect();
        let ports: HashSet<String> = all_succeed(children, &format!("round {round}"))
            .into_iter()
            .collect();
        assert_eq!(ports.len(), PROCESSES, "round {round}: a port went twice");
        assert_eq!(env.row_count(), PROCESSES as i64);
    }
}

#[test]
fn concurrent_reserves_of_one_key_without_autoclean_agree_on_one_port() {
    for round in 0..3 {
        let env = TestEnv::new();
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                spawn_reserve(
                    &env,
                    &[
                        "--disable-autoclean",
                        "--path",
                        "/same/key",
                        "--pool",
                        "20000-20999",
                    ],
                )
            })
            .collect();
        let ports: HashSet<String> = all_succeed(children, &format!("round {round}"))
            .into_iter()
            .collect();
        assert_eq!(ports.len(), 1, "round {round}: {ports:?}");
        assert_eq!(env.row_count(), 1);
    }
}

#[test]
fn two_requests_for_one_port_without_autoclean_have_exactly_one_winner() {
    let env = TestEnv::new();
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    for round in 0..50u16 {
        let wanted = (21500 + round).to_string();
        let children = ["a", "b"].map(|side| {
            spawn_reserve(
                &env,
                &[
                    "--disable-autoclean",
                    "--path",
                    &format!("/plain-race/{round}/{side}"),
                    "--port",
                    &wanted,
                ],
            )
        });
        let outputs = children.map(|c| c.wait_with_output().unwrap());
        let winners: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(stdout_of(winners[0]), wanted);
        let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
        assert_eq!(
            loser.status.code(),
            Some(3),
            "round {round}: {}",
            String::from_utf8_lossy(&loser.stderr)
        );
    }
}

/// `porthold run` reserves the key's port through `Registry::reserve`
/// before binding it: 64 runs of distinct tags at once get distinct ports.
#[test]
fn sixty_four_concurrent_runs_reserve_distinct_ports() {
    for round in 0..2 {
        let env = TestEnv::new();
        let children: Vec<Child> = (0..PROCESSES)
            .map(|i| {
                env.std_cmd()
                    .env("PORTHOLD_POOL", "22000-22999")
                    .args(["--busy-timeout", "60s", "run", "--tag"])
                    .arg(format!("t{i}"))
                    .args(["--", "true"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn porthold run")
            })
            .collect();
        all_succeed(children, &format!("run round {round}"));
        let db = env.db();
        let (rows, distinct): (i64, i64) = db
            .query_row(
                "SELECT count(*), count(DISTINCT port) FROM reservations",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, distinct), (PROCESSES as i64, PROCESSES as i64));
    }
}

/// 16 projects of 4 services each reserve their groups at once: 64 distinct ports.
#[test]
fn concurrent_group_reserves_get_disjoint_ports() {
    const PROJECTS: usize = 16;
    for round in 0..3 {
        let env = TestEnv::new();
        let dirs: Vec<_> = (0..PROJECTS)
            .map(|i| {
                let dir = env.dir.path().join(format!("projects/p{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    dir.join("porthold.toml"),
                    "[services.web]\n[services.api]\n[services.db]\n[services.cache]\n",
                )
                .unwrap();
                dir
            })
            .collect();
        let children: Vec<Child> = dirs
            .iter()
            .map(|dir| {
                env.std_cmd()
                    .current_dir(dir)
                    .args([
                        "--busy-timeout",
                        "60s",
                        "reserve-group",
                        "--pool",
                        "23000-23999",
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn porthold reserve-group")
            })
            .collect();
        all_succeed(children, &format!("group round {round}"));
        let (rows, distinct): (i64, i64) = env
            .db()
            .query_row(
                "SELECT count(*), count(DISTINCT port) FROM reservations",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, distinct), (64, 64), "round {round}");
    }
}
