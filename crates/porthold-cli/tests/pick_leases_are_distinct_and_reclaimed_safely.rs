//! `porthold pick`: leases handed out by number to a process. Concurrent
//! callers get distinct ports outside the ephemeral range that a server can
//! bind right away; a lease is reclaimed only when (its owner is provably gone
//! or its TTL passed) and nothing listens, and never within the minimum hold.

mod runner;
mod util;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use porthold::net::KernelPorts;
use util::{TestEnv, stderr_of, stdout_of};

/// `porthold pick ARGS` with a generous lock timeout.
fn pick(env: &TestEnv, args: &[&str]) -> Output {
    env.std_cmd()
        .args(["--busy-timeout", "60s", "pick"])
        .args(args)
        .output()
        .expect("run porthold pick")
}

fn picked_port(out: &Output) -> u16 {
    assert_eq!(
        out.status.code(),
        Some(0),
        "pick failed: {}",
        stderr_of(out)
    );
    stdout_of(out).parse().expect("one port on stdout")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "pick failed: {}",
        stderr_of(out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A process to own leases: `sleep`, killed and reaped on drop.
struct Owner(Child);

impl Owner {
    fn spawn() -> Owner {
        Owner(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    /// Kills the owner and waits until it is reaped (gone from /proc).
    fn exit(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ports `list --leases` shows.
fn leased_ports(env: &TestEnv) -> Vec<u16> {
    let out = env
        .cmd()
        .args(["list", "--leases", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["port"].as_u64().unwrap() as u16)
        .collect()
}

/// Whether `[::1]` can be bound at all here (no IPv6 loopback: not applicable).
fn have_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// The first lease of a fresh registry, owned by `owner`; later picks use
/// `--pool P-P` so that this lease is the only candidate.
fn first_lease(env: &TestEnv, owner: &Owner, extra: &[&str]) -> (u16, String) {
    let mut args = vec!["--owner-pid", &owner.0.id().to_string()]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(["--pool".into(), "23000-23999".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = picked_port(&pick(env, &args));
    (port, format!("{port}-{port}"))
}

#[test]
fn five_hundred_picks_from_64_workers_are_distinct_outside_the_ephemeral_range_and_bindable() {
    const WORKERS: usize = 64;
    const PICKS: usize = 500;
    let env = Arc::new(TestEnv::new());
    assert!(env.cmd().arg("init").output().unwrap().status.success());
    let kernel = KernelPorts::read();
    let ipv6 = have_ipv6_loopback();
    let next = Arc::new(Mutex::new(0usize));
    let ports = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (env, next, ports) = (env.clone(), next.clone(), ports.clone());
            std::thread::spawn(move || {
                loop {
                    {
                        let mut n = next.lock().unwrap();
                        if *n == PICKS {
                            return;
                        }
                        *n += 1;
                    }
                    // The owner is this test process (the caller's parent).
                    let out = pick(&env, &["--pool", "20000-22999"]);
                    let port = picked_port(&out);
                    // Right after handout a server binds it, as servers do
                    // (std sets SO_REUSEADDR), on both loopbacks.
                    let v4 = TcpListener::bind(("127.0.0.1", port));
                    assert!(v4.is_ok(), "127.0.0.1:{port} after handout: {v4:?}");
                    if ipv6 {
                        let v6 = TcpListener::bind(format!("[::1]:{port}"));
                        assert!(v6.is_ok(), "[::1]:{port} after handout: {v6:?}");
                    }
                    ports.lock().unwrap().push(port);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker failed");
    }
    let ports = ports.lock().unwrap();
    assert_eq!(ports.len(), PICKS);
    let distinct: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), PICKS, "a port was handed out twice");
    for port in distinct {
        assert!(
            !kernel.is_auto_assignable(port),
            "port {port} lies in the ephemeral range {}",
            kernel.ephemeral
        );
    }
}

/// Every pick holds its write transaction open for a while before the commit
/// (a test pause point); the others must wait for it and see its leases. With
/// a DEFERRED transaction they plan from a stale snapshot and fail at the
/// write (or, without UNIQUE(port), would hand out the same port).
#[test]
fn concurrent_picks_with_a_slow_commit_get_distinct_ports() {
    for round in 0..3 {
        let env = TestEnv::new();
        assert!(env.cmd().arg("init").output().unwrap().status.success());
        let children: Vec<Child> = (0..12)
            .map(|_| {
                env.std_cmd()
                    .args(["--busy-timeout", "60s", "pick", "--count", "2"])
                    .args(["--pool", "24000-24099"])
                    .env("PORTHOLD_TEST_PAUSE", "pick.before-commit:100")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ports = HashSet::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {}",
                stderr_of(&out)
            );
            for line in stdout_of(&out).lines() {
                let port: u16 = line.parse().unwrap();
                assert!(ports.insert(port), "round {round}: port {port} twice");
            }
        }
        assert_eq!(ports.len(), 24);
    }
}

#[test]
fn a_lease_whose_owner_exited_is_reclaimed_but_not_within_the_minimum_hold() {
    let env = TestEnv::new();
    let owner = Owner::spawn();
    let (port, pool) = first_lease(&env, &owner, &[]);
    // Owner alive: the only port of the pool stays leased.
    let out = pick(&env, &["--pool", &pool, "--min-hold", "0s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("`porthold list --leases`"),
        "{}",
        stderr_of(&out)
    );
    owner.exit();
    // Owner gone, but the lease is younger than the default 60 s hold.
    let out = pick(&env, &["--pool", &pool]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let value = json_of(&pick(&env, &["--json", "--pool", "23000-23999"]));
    assert_eq!(value["reclaimed"], serde_json::json!([]), "{value}");
    assert!(leased_ports(&env).contains(&port));
    // Without the hold it is reclaimed, and the reclaim is reported.
    let value = json_of(&pick(
        &env,
        &["--json", "--pool", &pool, "--min-hold", "0s"],
    ));
    assert_eq!(value["ports"], serde_json::json!([port]));
    assert_eq!(value["reclaimed"][0]["port"], port);
    assert_eq!(value["reclaimed"][0]["reason"], "owner-dead");
}

#[test]
fn a_stopped_owner_keeps_its_lease() {
    let env = TestEnv::new();
    let owner = Owner::spawn();
    let (_, pool) = first_lease(&env, &owner, &[]);
    runner::signal(owner.0.id(), libc::SIGSTOP);
    // Wait until the kernel reports it stopped.
    let stat = format!("/proc/{}/stat", owner.0.id());
    while porthold::identity::Stat::parse(&std::fs::read_to_string(&stat).unwrap())
        .unwrap()
        .state
        != 'T'
    {
        std::thread::yield_now();
    }
    let out = pick(&env, &["--pool", &pool, "--min-hold", "0s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let listed: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(listed["leases"][0]["owner"]["status"], "alive");
    runner::signal(owner.0.id(), libc::SIGCONT);
}

#[test]
fn a_lease_whose_recorded_start_time_no_longer_matches_the_live_pid_is_reclaimed() {
    let env = TestEnv::new();
    let owner = Owner::spawn();
    let (port, pool) = first_lease(&env, &owner, &[]);
    // The pid is alive, but the lease names another process that had it
    // before (what a recycled pid looks like).
    let changed = env
        .db()
        .execute(
            "UPDATE reservations SET lease_starttime = lease_starttime - 1 WHERE port = ?1",
            [port],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let value = json_of(&pick(
        &env,
        &["--json", "--pool", &pool, "--min-hold", "0s"],
    ));
    assert_eq!(value["ports"], serde_json::json!([port]));
    assert_eq!(value["reclaimed"][0]["reason"], "owner-replaced");
}

#[test]
fn an_expired_lease_is_reclaimable_only_when_nothing_listens() {
    let env = TestEnv::new();
    let owner = Owner::spawn();
    let (port, pool) = first_lease(&env, &owner, &["--ttl", "0s"]);
    // The owner's server listens on it: kept, TTL or not.
    let server = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = pick(&env, &["--pool", &pool, "--min-hold", "0s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    // A pick that succeeds elsewhere leaves it alone too.
    let value = json_of(&pick(
        &env,
        &["--json", "--pool", "23000-23999", "--min-hold", "0s"],
    ));
    assert_eq!(value["reclaimed"], serde_json::json!([]), "{value}");
    assert!(leased_ports(&env).contains(&port));
    drop(server);
    let value = json_of(&pick(
        &env,
        &["--json", "--pool", &pool, "--min-hold", "0s"],
    ));
    assert_eq!(value["ports"], serde_json::json!([port]));
    assert_eq!(value["reclaimed"][0]["reason"], "expired");
}

#[test]
fn leases_are_listed_apart_from_reservations_and_released_by_port() {
    let env = TestEnv::new();
    let owner = Owner::spawn();
    let (port, _) = first_lease(&env, &owner, &[]);
    let reserved = stdout_of(
        &env.cmd()
            .args(["reserve", "--pool", "23000-23999"])
            .output()
            .unwrap(),
    );
    let list: serde_json::Value =
        serde_json::from_slice(&env.cmd().args(["list", "--json"]).output().unwrap().stdout)
            .unwrap();
    let rows = list["reservations"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["port"].to_string(), reserved);
    let leases: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases["leases"][0]["port"], port);
    assert_eq!(leases["leases"][0]["owner"]["pid"], owner.0.id());
    // The key is synthetic: it can never be a project path.
    let path: String = env
        .db()
        .query_row(
            "SELECT path FROM reservations WHERE port = ?1",
            [port],
            |r| r.get(0),
        )
        .unwrap();
    assert!(path.starts_with("lease:"), "{path}");
    let out = env
        .cmd()
        .args(["release", "--port", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr_of(&out).contains("leased to pid"),
        "{}",
        stderr_of(&out)
    );
    let leases: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases["leases"], serde_json::json!([]));
}

#[test]
fn the_default_owner_is_the_callers_parent() {
    let env = TestEnv::new();
    // `sh -c 'porthold pick; ...'`: the owner is the shell, which is alive.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' pick && echo $$",
            util::porthold_bin().display()
        ))
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("HOME", env.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let shell_pid: u32 = text.lines().nth(1).unwrap().parse().unwrap();
    let leases: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases["leases"][0]["owner"]["pid"], shell_pid);
}

#[test]
fn an_ephemeral_no_fds_run_gets_a_leased_port_outside_the_ephemeral_range() {
    if !runner::have("python3") {
        porthold::test_hooks::skip(
            "python3 is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let env = TestEnv::new();
    let mut cmd = env.std_cmd();
    cmd.env("PORTHOLD_POOL", "24200-24299")
        .args(["run", "--ephemeral", "--no-fds", "--name", "leased", "--"])
        .args([
            "sh",
            "-c",
            "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    use std::os::unix::process::CommandExt as _;
    let mut launcher = cmd.spawn().unwrap();
    let live = runner::wait_ready(&env, "leased", &mut launcher);
    let port = live.record.listeners[0].port.expect("a TCP port");
    assert!((24200..=24299).contains(&port), "port {port}");
    assert!(!KernelPorts::read().is_auto_assignable(port));
    let leases: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases["leases"][0]["port"], port, "{leases}");
    assert_eq!(leases["leases"][0]["owner"]["pid"], launcher.id());
    assert_eq!(leases["leases"][0]["expires_at"], serde_json::Value::Null);
    runner::signal(launcher.id(), libc::SIGTERM);
    runner::finish(launcher);
    // The launcher released its lease on the way out.
    let leases: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["list", "--leases", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(leases["leases"], serde_json::json!([]));
}

/// A10 with a real recycled pid: in a new pid namespace the owner exits and
/// `ns_last_pid` makes the next process get the same pid. The lease names the
/// old process (its start time differs), so it is reclaimed.
#[test]
fn a_lease_of_a_recycled_pid_is_reclaimed() {
    if !util::is_root() || !runner::have("unshare") {
        porthold::test_hooks::skip("needs root and unshare (util-linux) for a pid namespace");
        return;
    }
    let env = TestEnv::new();
    let script = r#"
        sleep 1000 & X=$!
        P=$("$PORTHOLD" pick --owner-pid "$X" --pool 23600-23699) || exit 10
        kill "$X"; wait "$X"
        echo $((X - 1)) > /proc/sys/kernel/ns_last_pid || exit 11
        sleep 1000 & Y=$!
        [ "$X" = "$Y" ] || { echo "pid $X was not recycled (got $Y)" >&2; exit 12; }
        "$PORTHOLD" --json pick --pool "$P-$P" --min-hold 0s; status=$?
        kill "$Y"
        exit $status
    "#;
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script])
        .env("PORTHOLD", util::porthold_bin())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("HOME", env.dir.path())
        .output()
        .unwrap();
    let value = json_of(&out);
    assert_eq!(value["reclaimed"][0]["reason"], "owner-replaced", "{value}");
    assert_eq!(value["ports"][0], value["reclaimed"][0]["port"], "{value}");
}
