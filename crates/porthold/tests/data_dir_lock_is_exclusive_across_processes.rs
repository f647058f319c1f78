//! `DataDirLock` is exclusive between processes: while another process holds
//! it, `acquire` fails with `DataDirLocked`, and it is free again once that
//! process has gone (the kernel drops an `flock` with its holder: never stale).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use porthold::handoff::DataDirLock;

const ROLE: &str = "PORTHOLD_TEST_LOCK_ROLE";
const DIR: &str = "PORTHOLD_TEST_LOCK_DIR";

fn child(dir: &Path, role: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs only inside a child: `hold` takes the lock, says so, and keeps it until
/// stdin closes; `try` reports whether it could take the lock.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var_os(DIR).unwrap());
    match role.as_str() {
        "hold" => {
            let _lock = DataDirLock::acquire(&dir).unwrap();
            println!("@@ locked");
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
        }
        "try" => match DataDirLock::acquire(&dir) {
            Ok(_) => println!("@@ acquired"),
            Err(porthold::Error::DataDirLocked { .. }) => println!("@@ locked-by-other"),
            Err(e) => println!("@@ error {e}"),
        },
        other => panic!("unknown role {other}"),
    }
}

fn tagged_line(child: &mut std::process::Child) -> String {
    let out = child.stdout.as_mut().unwrap();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("@@ ") {
            return rest.to_string();
        }
    }
    panic!("child printed no tagged line");
}

#[test]
fn a_lock_held_by_another_process_refuses_acquire_until_that_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = child(dir.path(), "hold");
    assert_eq!(tagged_line(&mut holder), "locked");
    assert!(matches!(
        DataDirLock::acquire(dir.path()),
        Err(porthold::Error::DataDirLocked { .. })
    ));
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    DataDirLock::acquire(dir.path()).expect("free once the holder is gone");
}

#[test]
fn another_process_cannot_acquire_a_lock_this_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let lock = DataDirLock::acquire(dir.path()).unwrap();
    let mut prober = child(dir.path(), "try");
    assert_eq!(tagged_line(&mut prober), "locked-by-other");
    assert!(prober.wait().unwrap().success());
    drop(lock);
    let mut prober = child(dir.path(), "try");
    assert_eq!(tagged_line(&mut prober), "acquired");
    assert!(prober.wait().unwrap().success());
}

#[test]
fn a_second_open_in_the_same_process_is_refused_and_the_lock_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataDirLock::acquire(dir.path()).unwrap();
    assert!(matches!(
        DataDirLock::acquire(dir.path()),
        Err(porthold::Error::DataDirLocked { .. })
    ));
    drop(first);
    // Never unlinked: the next holder locks the same inode.
    assert!(dir.path().join(DataDirLock::FILE_NAME).exists());
    DataDirLock::acquire(dir.path()).unwrap();
}
