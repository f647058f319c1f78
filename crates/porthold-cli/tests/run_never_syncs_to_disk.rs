//! `porthold run` never forces anything to disk: the runtime directory is
//! volatile by definition, and a discovery record only has to be atomic for
//! concurrent readers (temp file + rename), not durable across a power loss.
//! Nor does it rename a record over the previous one, which ext4 treats as a
//! replace and answers with immediate writeback. Nor does it install a
//! signal handler per signal (about 60 of them, two system calls each, on
//! every start): it blocks the signals it takes and waits for them. Nor does
//! a plain run start a thread: one poll in the main thread waits for the
//! server's exit, the signals and the control socket. Nor does
//! any command's start-up read `/proc/self/maps` or set up alternate signal
//! stacks for stack-overflow handlers, as Rust's runtime start-up would.
//! Checked structurally, by tracing system calls, not by timing.

mod util;

use std::process::Command;

use util::{TestEnv, porthold_bin};

const SYNC_CALLS: &str = "trace=fsync,fdatasync,syncfs,sync_file_range,msync,sync";

/// Whether strace is installed and allowed to trace here (ptrace may be refused in containers).
fn strace_usable() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-o", "/dev/null", "--", "true"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "strace cannot trace here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("strace is not available: {e}")),
    }
}

/// Runs `porthold ARGS` under strace, tracing only the sync calls, and returns
/// the trace lines that name one (all processes: the launcher and its child).
fn sync_calls_of(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let calls = [
        "fsync(",
        "fdatasync(",
        "syncfs(",
        "sync_file_range(",
        "msync(",
        "sync(",
    ];
    traced(env, args, SYNC_CALLS)
        .into_iter()
        .filter(|l| calls.iter().any(|call| l.contains(call)))
        .collect()
}

/// Runs `porthold ARGS` under `strace -f -e FILTER` and returns the trace's lines.
fn traced(env: &TestEnv, args: &[&str], filter: &str) -> Vec<String> {
    let trace = env.dir.path().join("sync.trace");
    let porthold = env.std_cmd();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", filter, "-o"])
        .arg(&trace)
        .arg("--")
        .arg(porthold_bin())
        .args(args)
        .env_clear();
    for (k, v) in porthold.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    if let Some(cwd) = porthold.get_current_dir() {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().expect("running strace");
    assert!(
        out.status.success(),
        "porthold {args:?} under strace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).expect("reading the trace");
    text.lines().map(str::to_string).collect()
}

/// The lines of a `strace -f -o FILE` trace that are the launcher's own:
/// every line starts with the pid, and the first is the launcher's.
fn launcher_lines(lines: &[String]) -> Vec<&String> {
    let pid_of = |line: &str| line.split_whitespace().next().map(str::to_string);
    let launcher = lines
        .first()
        .and_then(|l| pid_of(l))
        .expect("an empty trace");
    lines
        .iter()
        .filter(|l| pid_of(l).as_deref() == Some(launcher.as_str()))
        .collect()
}

#[test]
fn an_ephemeral_run_makes_no_sync_call() {
    if let Err(reason) = strace_usable() {
        porthold::test_hooks::skip(&reason);
        return;
    }
    let env = TestEnv::new();
    let calls = sync_calls_of(&env, &["run", "--ephemeral", "--", "true"]);
    assert!(
        calls.is_empty(),
        "`porthold run --ephemeral -- true` synced to disk:\n{}",
        calls.join("\n")
    );
}

#[test]
fn a_named_run_that_replaces_a_stale_record_makes_no_sync_call() {
    if let Err(reason) = strace_usable() {
        porthold::test_hooks::skip(&reason);
        return;
    }
    let env = TestEnv::new();
    // A leftover temp file of a dead owner makes the new owner clean up before it publishes.
    let runtime = env.dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(runtime.join("syncless.json.00000001deadbeef.tmp"), b"{").unwrap();
    let calls = sync_calls_of(
        &env,
        &["run", "--ephemeral", "--name", "syncless", "--", "true"],
    );
    assert!(
        calls.is_empty(),
        "`porthold run --name syncless` synced to disk:\n{}",
        calls.join("\n")
    );
    assert!(
        !runtime.join("syncless.json.00000001deadbeef.tmp").exists(),
        "the stale temp file was not cleaned up, so the cleanup path was not exercised"
    );
}

#[test]
fn a_record_is_swapped_with_the_previous_one_never_renamed_over_it() {
    if let Err(reason) = strace_usable() {
        porthold::test_hooks::skip(&reason);
        return;
    }
    let env = TestEnv::new();
    let lines = traced(
        &env,
        &["run", "--ephemeral", "--name", "swapped", "--", "true"],
        "trace=rename,renameat,renameat2",
    );
    let onto_record: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("swapped.json\""))
        .collect();
    // `starting` has no previous record to swap with; `ready` and the rest do.
    let plain: Vec<&&String> = onto_record
        .iter()
        .filter(|l| !l.contains("RENAME_EXCHANGE"))
        .collect();
    assert!(
        onto_record.len() >= 2,
        "expected at least two publishes:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        plain.len(),
        1,
        "only the first publish may rename (there is nothing to swap with):\n{}",
        lines.join("\n")
    );
    assert!(
        !env.dir.path().join("run").join("swapped.json").exists(),
        "the record outlived the instance"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "swapped-out records left behind: {leftovers:?}"
    );
}

/// The trace (`strace -f -e FILTER`) of `porthold run --ephemeral -- true`;
/// `None` (the skip reported) where strace cannot trace.
fn trace_of_a_plain_run(filter: &str) -> Option<Vec<String>> {
    if let Err(reason) = strace_usable() {
        porthold::test_hooks::skip(&reason);
        return None;
    }
    let env = TestEnv::new();
    Some(traced(&env, &["run", "--ephemeral", "--", "true"], filter))
}

#[test]
fn the_launcher_takes_its_signals_without_installing_handlers() {
    let Some(lines) = trace_of_a_plain_run("trace=rt_sigaction,rt_sigprocmask") else {
        return;
    };
    let of_launcher = launcher_lines(&lines);
    let sigactions = of_launcher
        .iter()
        .filter(|l| l.contains("rt_sigaction("))
        .count();
    // SIGPIPE ignored at start-up, the SIGHUP check of the policy, the C
    // library's own at the first thread: a few, never one per signal.
    assert!(
        sigactions <= 4,
        "the launcher made {sigactions} rt_sigaction calls:\n{}",
        lines.join("\n")
    );
    // strace writes a large set as its complement (`~[ILL TRAP …]`); the
    // spawner's own block-everything around a fork is `~[]`.
    let blocks_term_and_usr1 = |line: &&&String| {
        let Some(set) = line
            .split_once("rt_sigprocmask(SIG_BLOCK, ")
            .map(|(_, rest)| rest.split(']').next().unwrap_or_default())
        else {
            return false;
        };
        let names: Vec<&str> = set.trim_start_matches(['~', '[']).split(' ').collect();
        let has = |n: &str| names.contains(&n);
        if set.starts_with("~[") {
            !set.starts_with("~[]") && !has("TERM") && !has("USR1")
        } else {
            has("TERM") && has("USR1")
        }
    };
    assert!(
        of_launcher.iter().any(|l| blocks_term_and_usr1(&l)),
        "the launcher did not block its signals:\n{}",
        lines.join("\n")
    );
}

#[test]
fn start_up_reads_no_memory_map_and_sets_up_no_alternate_signal_stack() {
    if let Err(reason) = strace_usable() {
        porthold::test_hooks::skip(&reason);
        return;
    }
    let env = TestEnv::new();
    for args in [&["--version"][..], &["show-data-dir"]] {
        let lines = traced(&env, args, "trace=openat,sigaltstack,rt_sigaction");
        let trace = lines.join("\n");
        assert!(
            !lines.iter().any(|l| l.contains("/proc/self/maps")),
            "porthold {args:?} read its memory map:\n{trace}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("sigaltstack(")),
            "porthold {args:?} set up an alternate signal stack:\n{trace}"
        );
        // Only SIGPIPE, ignored (as Rust's start-up does): no SIGSEGV/SIGBUS handler.
        let sigactions: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("rt_sigaction("))
            .collect();
        assert!(
            sigactions.len() == 1
                && sigactions[0].contains("rt_sigaction(SIGPIPE, {sa_handler=SIG_IGN"),
            "porthold {args:?}:\n{trace}"
        );
    }
}

#[test]
fn a_plain_run_starts_no_thread() {
    let Some(lines) = trace_of_a_plain_run("trace=clone,clone3,vfork,fork") else {
        return;
    };
    let creations: Vec<&String> = launcher_lines(&lines)
        .into_iter()
        .filter(|l| !l.contains("resumed>"))
        .collect();
    // One process (the server, `clone(CLONE_VM|CLONE_VFORK)`), no thread
    // (`CLONE_THREAD`, what `pthread_create` passes to clone3).
    assert_eq!(creations.len(), 1, "{}", lines.join("\n"));
    assert!(
        !creations[0].contains("CLONE_THREAD") && creations[0].contains("CLONE_VFORK"),
        "{}",
        lines.join("\n")
    );
}
