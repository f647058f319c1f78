//! A `reserve` that finds its key and has nothing to change is answered by a
//! read: no write lock, no fsync, no file created or removed, nothing written
//! to the registry or its WAL. Its last-used time is refreshed only when it
//! is older than the refresh interval. Racing it against release + reserve of
//! the same key never prints a port the key did not hold during the call.

mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use util::{TestEnv, stderr_of, stdout_of};

fn reserve_ok(env: &TestEnv, args: &[&str]) -> String {
    let output = env
        .cmd()
        .args(["--busy-timeout", "60s", "reserve", "--allow-unrelated-path"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
    stdout_of(&output)
}

fn last_used(env: &TestEnv) -> i64 {
    env.db()
        .query_row("SELECT last_used_at FROM reservations", [], |r| r.get(0))
        .unwrap()
}

/// (name, inode, size, content hash-ish) of every file but the -shm index.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let body = if name.ends_with("-shm") {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, (meta.ino(), body))
        })
        .collect()
}

fn strace_available() -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PORTHOLD_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "strace is missing (scripts/install-test-deps.sh installs it) and PORTHOLD_REQUIRE_ALL=1"
        );
        eprintln!("skipping: strace is not installed (scripts/install-test-deps.sh)");
    }
    found
}

/// What the trace says a process did to the registry's files.
#[derive(Default, Debug)]
struct Effects {
    syncs: Vec<String>,
    removed_or_created: Vec<String>,
    writes_to_registry_or_wal: Vec<String>,
}

fn read_trace(trace: &str, data_dir: &Path) -> Effects {
    let registry = data_dir.join("registry.sqlite3").display().to_string();
    let wal = format!("{registry}-wal");
    let mut fds: HashMap<(String, i64), String> = HashMap::new();
    let mut effects = Effects::default();
    for line in trace.lines() {
        let mut parts = line.splitn(2, ' ');
        let pid = parts.next().unwrap_or_default().to_string();
        let call = parts.next().unwrap_or_default().trim_start();
        let name = call.split('(').next().unwrap_or_default();
        let result = call
            .rsplit("= ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(-1);
        let first_arg = call
            .split_once('(')
            .map(|(_, rest)| rest.split([',', ')']).next().unwrap_or_default().trim())
            .unwrap_or_default();
        match name {
            "fsync" | "fdatasync" | "sync_file_range" | "syncfs" | "sync" => {
                effects.syncs.push(line.to_string());
            }
            "unlink" | "unlinkat" | "rename" | "renameat" | "renameat2" | "link" | "linkat"
            | "mkdir" | "mkdirat" | "creat"
                if result >= 0 =>
            {
                effects.removed_or_created.push(line.to_string());
            }
            "openat" | "open" if result >= 0 => {
                let path = call.split('"').nth(1).unwrap_or_default().to_string();
                fds.insert((pid, result), path);
            }
            "close" => {
                if let Ok(fd) = first_arg.parse::<i64>() {
                    fds.remove(&(pid, fd));
                }
            }
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate"
            | "fallocate" => {
                if let Ok(fd) = first_arg.parse::<i64>()
                    && let Some(path) = fds.get(&(pid.clone(), fd))
                    && (*path == registry || *path == wal)
                {
                    effects.writes_to_registry_or_wal.push(line.to_string());
                }
            }
            "dup" | "dup2" | "dup3" => {
                if let Ok(fd) = first_arg.parse::<i64>()
                    && let Some(path) = fds.get(&(pid.clone(), fd)).cloned()
                {
                    fds.insert((pid, result), path);
                }
            }
            _ => {}
        }
    }
    effects
}

#[test]
fn an_idempotent_reserve_makes_no_fsync_no_file_and_no_write() {
    if !strace_available() {
        return;
    }
    let env = TestEnv::new();
    let port = reserve_ok(&env, &["--pool", "24800-24899"]);
    let before = snapshot(&env.data_dir());
    let trace_file = env.dir.path().join("trace");
    let output = Command::new("strace")
        .arg("-f")
        .arg("-qq")
        .arg("-o")
        .arg(&trace_file)
        .args([
            "-e",
            "trace=open,openat,creat,close,dup,dup2,dup3,write,pwrite64,writev,pwritev,pwritev2,\
             ftruncate,fallocate,fsync,fdatasync,sync_file_range,syncfs,sync,unlink,unlinkat,\
             rename,renameat,renameat2,link,linkat,mkdir,mkdirat",
        ])
        .arg(util::porthold_bin())
        .args(["reserve", "--pool", "24800-24899"])
        .current_dir(env.project())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), port, "the same port");
    let trace = std::fs::read_to_string(&trace_file).unwrap();
    assert!(
        trace.contains("registry.sqlite3"),
        "the trace saw the registry being opened: {trace}"
    );
    let effects = read_trace(&trace, &env.data_dir());
    assert!(effects.syncs.is_empty(), "fsyncs: {:#?}", effects.syncs);
    assert!(
        effects.removed_or_created.is_empty(),
        "files created or removed: {:#?}",
        effects.removed_or_created
    );
    assert!(
        effects.writes_to_registry_or_wal.is_empty(),
        "writes to the registry or its WAL: {:#?}",
        effects.writes_to_registry_or_wal
    );
    assert_eq!(
        snapshot(&env.data_dir()),
        before,
        "files (other than -shm) changed"
    );
}

/// The occupancy check of an idempotent reserve is one trial bind per
/// family, on the wildcard address (which also answers for the loopback
/// addresses: `net::probe`'s tests compare it with a bind on each address).
#[test]
fn an_idempotent_reserve_probes_with_one_wildcard_bind_per_family() {
    if !strace_available() {
        return;
    }
    let env = TestEnv::new();
    let port = reserve_ok(&env, &["--pool", "24800-24899"]);
    let trace_file = env.dir.path().join("trace");
    let output = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace_file)
        .args(["-e", "trace=socket,bind"])
        .arg(util::porthold_bin())
        .args(["reserve", "--pool", "24800-24899"])
        .current_dir(env.project())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), port, "the same port");
    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let binds: Vec<&str> = trace.lines().filter(|l| l.contains(" bind(")).collect();
    let sockets = trace.lines().filter(|l| l.contains(" socket(")).count();
    let on = |addr: &str| binds.iter().filter(|l| l.contains(addr)).count();
    let v4 = on("inet_addr(\"0.0.0.0\")");
    let v6 = on("\"::\", &sin6_addr");
    assert_eq!(v4, 1, "one bind on 0.0.0.0: {trace}");
    assert!(v6 <= 1, "at most one bind on :: {trace}");
    assert_eq!(binds.len(), v4 + v6, "no other bind: {trace}");
    assert!(sockets <= 2, "at most one socket per family: {trace}");
}

#[test]
fn last_used_is_refreshed_only_when_older_than_the_interval() {
    let env = TestEnv::new();
    let port = reserve_ok(&env, &["--pool", "24800-24899"]);
    let first = last_used(&env);
    assert_eq!(reserve_ok(&env, &["--pool", "24800-24899"]), port);
    assert_eq!(last_used(&env), first, "a fresh last-used is not rewritten");
    let two_hours_ago = first - 2 * 3600 * 1000;
    env.db()
        .execute("UPDATE reservations SET last_used_at = ?1", [two_hours_ago])
        .unwrap();
    assert_eq!(reserve_ok(&env, &["--pool", "24800-24899"]), port);
    assert!(
        last_used(&env) >= first,
        "a stale last-used is refreshed: {} < {first}",
        last_used(&env)
    );
    // A requested change is a write, however fresh last-used is.
    assert_eq!(
        reserve_ok(&env, &["--pool", "24800-24899", "--project", "shop"]),
        port
    );
    let project: String = env
        .db()
        .query_row("SELECT project FROM reservations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(project, "shop");
}

/// One call seen from outside: when it was spawned, when it had exited, what it printed.
#[derive(Debug, Clone)]
struct Call {
    start: Instant,
    end: Instant,
    port: u16,
}

fn timed_reserve(env: &TestEnv, args: &[&str]) -> Call {
    let start = Instant::now();
    let output = env
        .std_cmd()
        .args(["--busy-timeout", "60s", "reserve", "--allow-unrelated-path"])
        .args(args)
        .output()
        .unwrap();
    let end = Instant::now();
    assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
    Call {
        start,
        end,
        port: stdout_of(&output).parse().expect("a port"),
    }
}

#[test]
fn idempotent_reserves_racing_release_and_reserve_print_only_ports_the_key_held() {
    const CYCLES: usize = 40;
    const READERS: usize = 3;
    let env = Arc::new(TestEnv::new());
    let key = ["--path", "/mix/key", "--pool", "25000-25999"];
    let other = |i: usize| format!("/mix/other{i}");
    let first = timed_reserve(&env, &key);
    let done = Arc::new(AtomicBool::new(false));
    let releases: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::new(Mutex::new(vec![first]));
    let others: Arc<Mutex<Vec<u16>>> = Arc::default();

    let cycler = {
        let (env, done, releases, calls) =
            (env.clone(), done.clone(), releases.clone(), calls.clone());
        std::thread::spawn(move || {
            for _ in 0..CYCLES {
                let start = Instant::now();
                let output = env
                    .std_cmd()
                    .args(["--busy-timeout", "60s", "release", "--path", "/mix/key"])
                    .args(["--allow-unrelated-path"])
                    .output()
                    .unwrap();
                let end = Instant::now();
                assert!(output.status.success(), "{}", stderr_of(&output));
                releases.lock().unwrap().push((start, end));
                let call = timed_reserve(&env, &key);
                calls.lock().unwrap().push(call);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (env, done, calls) = (env.clone(), done.clone(), calls.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let call = timed_reserve(&env, &key);
                    calls.lock().unwrap().push(call);
                }
            })
        })
        .collect();
    let newcomer = {
        let (env, done, others) = (env.clone(), done.clone(), others.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let path = other(i);
                let call = timed_reserve(&env, &["--path", &path, "--pool", "25000-25999"]);
                others.lock().unwrap().push(call.port);
                i += 1;
            }
        })
    };
    cycler.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    newcomer.join().unwrap();

    let calls = calls.lock().unwrap().clone();
    let releases = releases.lock().unwrap().clone();
    // Every port the key ever printed, with the earliest end of a call that
    // printed it: by then the port was the key's.
    let mut seen_by: HashMap<u16, Instant> = HashMap::new();
    for call in &calls {
        let at = seen_by.entry(call.port).or_insert(call.end);
        *at = (*at).min(call.end);
    }
    for call in &calls {
        let held_from = seen_by[&call.port];
        // The first release that started after the port was certainly held
        // had removed it by its end; a call that started after that printed
        // a port the key no longer held.
        let removed_by = releases
            .iter()
            .filter(|(start, _)| *start > held_from)
            .map(|(_, end)| *end)
            .min();
        if let Some(removed_by) = removed_by {
            assert!(
                call.start <= removed_by,
                "a call printed port {} which the key had released before the call started",
                call.port
            );
        }
    }
    let key_ports: HashSet<u16> = seen_by.keys().copied().collect();
    assert!(
        key_ports.len() > CYCLES / 2,
        "the key moved between ports: {key_ports:?}"
    );
    let others = others.lock().unwrap().clone();
    let other_ports: HashSet<u16> = others.iter().copied().collect();
    assert_eq!(other_ports.len(), others.len(), "two new keys got one port");
    assert!(
        key_ports.is_disjoint(&other_ports),
        "a port went to the key and to another key"
    );
    let (rows, distinct): (i64, i64) = env
        .db()
        .query_row(
            "SELECT count(*), count(DISTINCT port) FROM reservations NOT INDEXED",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, distinct, "the registry holds a duplicate port");
    assert_eq!(rows as usize, others.len() + 1);
}
