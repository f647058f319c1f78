//! The runtime directory is created 0700 and an unsafe one is refused:
//! records in a directory others can write could be planted or replaced.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use porthold::discovery::{Publisher, ensure_runtime_dir, new_instance_id};
use porthold::{Error, ErrorKind};

fn assert_refused(result: porthold::Result<()>, needle: &str) {
    match result {
        Err(e @ Error::Invalid { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.hint().is_some(), "a refusal says how to fix it: {e}");
            assert_eq!(e.kind(), ErrorKind::Usage);
        }
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_missing_runtime_dir_is_created_with_mode_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/porthold");
    ensure_runtime_dir(&dir).unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    // Idempotent.
    ensure_runtime_dir(&dir).unwrap();
}

#[test]
fn records_and_lock_files_are_mode_0600() {
    let (_tmp, dir) = common::runtime_dir();
    let id = new_instance_id().unwrap();
    let mut p = Publisher::acquire(&dir, "web", &id).unwrap();
    p.publish(&common::record("web", &id)).unwrap();
    for f in ["web.json", "web.lock"] {
        let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{f}");
    }
    p.finish().unwrap();
}

#[test]
fn a_group_or_world_accessible_runtime_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    fs::create_dir(&dir).unwrap();
    for mode in [0o770, 0o707, 0o701, 0o740, 0o1777] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        assert_refused(ensure_runtime_dir(&dir), "group or others");
        let taken = Publisher::acquire(&dir, "web", &new_instance_id().unwrap()).map(drop);
        assert_refused(taken, "group or others");
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    ensure_runtime_dir(&dir).unwrap();
}

#[test]
fn a_symlinked_runtime_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.path().join("link");
    symlink(&real, &link).unwrap();
    assert_refused(ensure_runtime_dir(&link), "symbolic link");
}

#[test]
fn a_runtime_dir_owned_by_another_uid_is_refused() {
    if !common::is_root() {
        porthold::test_hooks::skip("needs root to chown the directory to uid 65534");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    assert_refused(ensure_runtime_dir(&dir), "owned by uid 65534");
}

#[test]
fn a_file_in_place_of_the_runtime_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rt");
    fs::write(&file, b"").unwrap();
    assert_refused(ensure_runtime_dir(&file), "not a directory");
}
