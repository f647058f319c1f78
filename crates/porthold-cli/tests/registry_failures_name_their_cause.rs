//! A registry is called corrupt only when it really is not a sound registry
//! (bad header, damaged pages or indexes, another program's database); a
//! file system that refuses (read-only, full, another user's files) is named
//! as such, exit 6, with a hint that never discards the registry. A data dir
//! reached through a symlinked directory works; a symlink in place of the
//! registry does not. Dry runs only read.
//!
//! Tests that need root (mounts in a private mount namespace, `chattr`,
//! switching to uid 65534) skip with a printed reason when not root, and fail
//! instead when `PORTHOLD_REQUIRE_ALL=1`.

mod support;
mod util;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Output};

use support::{fails, ok};
use util::{TestEnv, is_root, porthold_bin, stderr_of};

fn code(env: &TestEnv, args: &[&str]) -> i32 {
    env.cmd()
        .args(args)
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

/// Whether a root-only test can run; panics when it must run but cannot.
fn can_run_as_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("PORTHOLD_REQUIRE_ALL").is_none_or(|v| v != "1"),
        "{test} needs root, and PORTHOLD_REQUIRE_ALL=1 forbids skipping it"
    );
    eprintln!("skipping {test}: needs root (mounts, chattr, setuid)");
    false
}

/// Whether this root may make a private mount namespace (a container may
/// forbid it); panics when it cannot but must.
fn can_unshare_mounts(test: &str) -> bool {
    let works = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("PORTHOLD_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "{test} needs `unshare -m`, and PORTHOLD_REQUIRE_ALL=1 forbids skipping it"
        );
        eprintln!("skipping {test}: `unshare -m` is not permitted here");
    }
    works
}

/// The "move it aside" advice is for files that are not a registry only.
fn assert_no_discarding_hint(stderr: &str) {
    assert!(
        !stderr.contains("aside") && !stderr.contains("porthold init"),
        "a sound registry must not be advised away: {stderr}"
    );
    assert!(
        !stderr.contains("corrupt"),
        "a sound registry is not corrupt: {stderr}"
    );
}

fn registry_files(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_data_dir_reached_through_a_symlinked_directory_works() {
    let env = TestEnv::new();
    let real_home = env.dir.path().join("var/home/me");
    std::fs::create_dir_all(&real_home).unwrap();
    let home = env.dir.path().join("home");
    std::os::unix::fs::symlink(env.dir.path().join("var/home"), &home).unwrap();
    let data = home.join("me/.local/share/porthold");
    let run = |args: &[&str]| -> Output {
        env.std_cmd()
            .env("PORTHOLD_DATA_DIR", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&["reserve", "--pool", "24600-24699"]);
    assert!(first.status.success(), "{}", stderr_of(&first));
    let again = run(&["reserve", "--pool", "24600-24699"]);
    assert_eq!(again.stdout, first.stdout, "{}", stderr_of(&again));
    let list = run(&["list"]);
    assert!(list.status.success(), "{}", stderr_of(&list));
    assert!(
        real_home
            .join(".local/share/porthold/registry.sqlite3")
            .is_file()
    );
}

#[test]
fn a_symlink_in_place_of_the_registry_or_its_wal_is_refused() {
    let env = TestEnv::new();
    ok(&env, &["init"]);
    let elsewhere = env.dir.path().join("elsewhere.sqlite3");
    std::fs::rename(env.registry(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.registry()).unwrap();
    let stderr = fails(&env, &["reserve"], 6);
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(
        !stderr.contains("empty registry"),
        "the registry behind the symlink is not to be replaced: {stderr}"
    );

    let env = TestEnv::new();
    ok(&env, &["init"]);
    let wal = env.data_dir().join("registry.sqlite3-wal");
    let _ = std::fs::remove_file(&wal);
    std::os::unix::fs::symlink(env.dir.path().join("victim"), &wal).unwrap();
    let stderr = fails(&env, &["reserve"], 6);
    assert!(stderr.contains("-wal"), "{stderr}");
    assert!(
        !stderr.contains("porthold init"),
        "a bad side file is no reason to start over: {stderr}"
    );
    assert!(
        !env.dir.path().join("victim").exists(),
        "the symlink was followed"
    );
}

#[test]
fn another_programs_sqlite_database_is_left_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    {
        let db = rusqlite::Connection::open(env.registry()).unwrap();
        db.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = registry_files(&env);
    for args in [&["reserve"][..], &["init"], &["list"], &["release"]] {
        let stderr = fails(&env, args, 6);
        assert!(
            stderr.contains("not a porthold registry") && stderr.contains("notes"),
            "{args:?}: {stderr}"
        );
        assert_eq!(registry_files(&env), before, "{args:?} changed the file");
    }
    assert_eq!(
        code(&env, &["assert-data-dir", "--validate"]),
        1,
        "another program's database is not a valid registry"
    );
    assert_eq!(registry_files(&env), before);
    let mode: String = env
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "never switched to WAL");
}

/// Rewrites the one entry of the `UNIQUE(port)` index from `port` to
/// `port + 1`: the header, every page and the entry count stay well-formed
/// (so `quick_check` says `ok`), only the index disagrees with its table.
fn damage_the_port_index(registry: &Path, port: u16) {
    use std::io::{Seek, SeekFrom, Write};
    let (root, page_size): (i64, i64) = {
        let db = rusqlite::Connection::open(registry).unwrap();
        let index: String = db
            .query_row(
                "SELECT il.name FROM pragma_index_list('reservations') AS il
                 WHERE il.origin = 'u' AND
                   (SELECT group_concat(name) FROM pragma_index_info(il.name)) = 'port'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let root = db
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [&index],
                |r| r.get(0),
            )
            .unwrap();
        let page_size = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        // The last check happened two days ago: the next write is due one.
        let two_days_ago = porthold::time::now_ms() - 2 * 24 * 3600 * 1000;
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('integrity_checked_at', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [two_days_ago.to_string()],
        )
        .unwrap();
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        (root, page_size)
    };
    let offset = ((root - 1) * page_size) as usize;
    let mut bytes = std::fs::read(registry).unwrap();
    let page = &mut bytes[offset..offset + page_size as usize];
    let wanted = port.to_be_bytes();
    let at = page
        .windows(2)
        .rposition(|w| w == wanted)
        .expect("the port in its index entry");
    page[at..at + 2].copy_from_slice(&(port + 1).to_be_bytes());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(registry)
        .unwrap();
    file.seek(SeekFrom::Start(offset as u64)).unwrap();
    file.write_all(&bytes[offset..offset + page_size as usize])
        .unwrap();
}

#[test]
fn a_damaged_port_index_is_caught_before_any_write() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--port",
            "24650",
            "--skip-occupancy-check",
            "--tag",
            "holder",
        ],
    );
    damage_the_port_index(&env.registry(), 24650);
    {
        // Why integrity_check: quick_check does not compare indexes with tables.
        let db = env.db();
        let quick: String = db
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(quick, "ok", "the damage is the kind quick_check misses");
        let full: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_ne!(full, "ok");
    }
    let before = std::fs::read(env.registry()).unwrap();
    let stderr = fails(
        &env,
        &[
            "reserve",
            "--port",
            "24650",
            "--skip-occupancy-check",
            "--tag",
            "thief",
        ],
        6,
    );
    assert!(stderr.contains("integrity check failed"), "{stderr}");
    assert!(
        stderr.contains("aside"),
        "damage gets the move-aside hint: {stderr}"
    );
    assert_eq!(
        std::fs::read(env.registry()).unwrap(),
        before,
        "nothing was written"
    );
    let holders: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM reservations NOT INDEXED WHERE port = 24650",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(holders, 1, "the port was granted twice");
    assert_eq!(code(&env, &["assert-data-dir", "--validate"]), 1);
}

#[test]
fn dry_runs_answer_while_another_process_holds_the_write_lock() {
    let env = TestEnv::new();
    ok(
        &env,
        &["reserve", "--allow-unrelated-path", "--path", "/gone/away"],
    );
    let mut db = env.db();
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    for args in [
        &["prune", "--dry-run"][..],
        &["expire", "--dry-run", "--older-than", "1d"],
        &["autoclean", "--dry-run"],
    ] {
        let output = env
            .cmd()
            .args(["--busy-timeout", "200ms"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?} waited for the write lock: {}",
            stderr_of(&output)
        );
    }
    let output = env
        .cmd()
        .args(["--busy-timeout", "200ms", "prune", "--dry-run"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("/gone/away"));
    tx.rollback().unwrap();
    assert_eq!(env.row_count(), 1, "a dry run removed something");
}

/// Runs `script` under `sh` in a private mount namespace (mounts vanish with
/// it), with `$PORTHOLD` the binary and the test env's variables.
fn in_mount_namespace(env: &TestEnv, script: &str) -> Output {
    let project = env.project();
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .current_dir(&project)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("PORTHOLD", porthold_bin())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .env("NO_COLOR", "1")
        .output()
        .expect("unshare")
}

#[test]
fn a_read_only_file_system_is_named_and_the_registry_kept() {
    if !can_run_as_root("a_read_only_file_system_is_named_and_the_registry_kept")
        || !can_unshare_mounts("a_read_only_file_system_is_named_and_the_registry_kept")
    {
        return;
    }
    let env = TestEnv::new();
    ok(&env, &["reserve", "--pool", "24700-24799"]);
    let before = registry_files(&env);
    let out = in_mount_namespace(
        &env,
        r#"set -e
        mount --bind "$PORTHOLD_DATA_DIR" "$PORTHOLD_DATA_DIR"
        mount -o remount,ro,bind "$PORTHOLD_DATA_DIR"
        set +e
        "$PORTHOLD" reserve --tag new --pool 24700-24799
        echo "exit=$?" >&2"#,
    );
    let stderr = stderr_of(&out);
    assert!(stderr.contains("exit=6"), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(
        stderr.contains("remount"),
        "the hint fits the cause: {stderr}"
    );
    assert_no_discarding_hint(&stderr);
    assert_eq!(registry_files(&env), before);
}

/// Clears `chattr +i` even when the test fails, so the temp dir can go.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

#[test]
fn an_immutable_registry_is_named_and_kept() {
    if !can_run_as_root("an_immutable_registry_is_named_and_kept") {
        return;
    }
    let env = TestEnv::new();
    ok(&env, &["reserve", "--pool", "24700-24799"]);
    let before = registry_files(&env);
    let status = Command::new("chattr")
        .arg("+i")
        .arg(env.registry())
        .status()
        .unwrap();
    assert!(status.success(), "chattr +i failed on this file system");
    let _guard = Immutable(&env.registry());
    let stderr = fails(
        &env,
        &["reserve", "--tag", "new", "--pool", "24700-24799"],
        6,
    );
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(
        stderr.contains("chattr -i"),
        "the hint fits the cause: {stderr}"
    );
    assert_no_discarding_hint(&stderr);
    drop(_guard);
    assert_eq!(registry_files(&env), before);
}

#[test]
fn a_full_disk_is_named_and_the_registry_survives_it() {
    if !can_run_as_root("a_full_disk_is_named_and_the_registry_survives_it")
        || !can_unshare_mounts("a_full_disk_is_named_and_the_registry_survives_it")
    {
        return;
    }
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let out = in_mount_namespace(
        &env,
        r#"set -e
        mount -t tmpfs -o size=512k,mode=0700 tmpfs "$PORTHOLD_DATA_DIR"
        "$PORTHOLD" reserve --tag first --pool 24700-24799 --skip-occupancy-check >/dev/null
        dd if=/dev/zero of="$PORTHOLD_DATA_DIR/filler" bs=4k 2>/dev/null || true
        set +e
        "$PORTHOLD" reserve --tag second --pool 24700-24799 --skip-occupancy-check
        echo "full-exit=$?" >&2
        rm "$PORTHOLD_DATA_DIR/filler"
        "$PORTHOLD" reserve --tag second --pool 24700-24799 --skip-occupancy-check
        echo "after-exit=$?" >&2
        "$PORTHOLD" assert-data-dir --validate
        echo "valid-exit=$?" >&2
        "$PORTHOLD" list"#,
    );
    let stderr = stderr_of(&out);
    assert!(stderr.contains("full-exit=6"), "{stderr}");
    assert!(stderr.contains("no space"), "{stderr}");
    assert!(
        stderr.contains("free space"),
        "the hint fits the cause: {stderr}"
    );
    let full_part = stderr.split("full-exit").next().unwrap_or_default();
    assert_no_discarding_hint(full_part);
    assert!(stderr.contains("after-exit=0"), "{stderr}");
    assert!(stderr.contains("valid-exit=0"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("first") && stdout.contains("second"),
        "{stdout}"
    );
}

#[test]
fn permission_denied_is_named_once_with_a_fitting_hint() {
    if !can_run_as_root("permission_denied_is_named_once_with_a_fitting_hint") {
        return;
    }
    let env = TestEnv::new();
    ok(&env, &["init"]);
    // Let uid 65534 reach the data dir and the project. The data dir becomes
    // theirs (so porthold's owner check of the data dir passes), while the
    // registry files in it stay root's 0600: opening them is what is denied.
    let mut perms = std::fs::metadata(env.dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(env.dir.path(), perms).unwrap();
    std::os::unix::fs::chown(env.data_dir(), Some(65534), Some(65534)).unwrap();
    let before = registry_files(&env);
    for args in [&["reserve"][..], &["list"]] {
        let output = env
            .std_cmd()
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(6), "{args:?}: {stderr}");
        assert!(stderr.contains("permission denied"), "{stderr}");
        assert!(stderr.contains("owns"), "the hint fits the cause: {stderr}");
        assert_eq!(
            stderr.to_lowercase().matches("permission denied").count(),
            1,
            "the cause is said once: {stderr}"
        );
        assert_eq!(stderr.matches("os error 13").count(), 1, "{stderr}");
        assert_no_discarding_hint(&stderr);
    }
    assert_eq!(registry_files(&env), before);
}
