//! One directory, one key: an explicit `--path` is canonicalised like an
//! inferred one (symlinks resolved; a missing path through its longest
//! existing prefix), the inferred path falls back to the git work tree root,
//! and `migrate` / `release --recursive` refuse what would surprise.

mod support;
mod util;

use std::path::Path;

use support::{fails, ok};
use util::{TestEnv, stderr_of, stdout_of};

/// `porthold ARGS` run from `cwd` (the env's data dirs), with `PWD` set as a shell would.
fn run_in(env: &TestEnv, cwd: &Path, args: &[&str]) -> std::process::Output {
    env.cmd()
        .current_dir(cwd)
        .env("PWD", cwd)
        .args(args)
        .output()
        .unwrap()
}

fn ok_in(env: &TestEnv, cwd: &Path, args: &[&str]) -> String {
    let out = run_in(env, cwd, args);
    assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    stdout_of(&out)
}

#[test]
fn path_of_a_symlinked_working_directory_is_the_same_key_as_no_path() {
    let env = TestEnv::new();
    let real = env.dir.path().canonicalize().unwrap().join("real/shop");
    std::fs::create_dir_all(&real).unwrap();
    let link = env.dir.path().join("home-link");
    std::os::unix::fs::symlink(real.parent().unwrap(), &link).unwrap();
    let through_link = link.join("shop");
    let inferred = ok_in(&env, &through_link, &["reserve", "--skip-occupancy-check"]);
    let explicit = ok_in(
        &env,
        &through_link,
        &[
            "reserve",
            "--skip-occupancy-check",
            "--path",
            through_link.to_str().unwrap(),
        ],
    );
    assert_eq!(inferred, explicit, "two keys for one directory");
    assert_eq!(
        ok_in(
            &env,
            &through_link,
            &["show-path", "--path", through_link.to_str().unwrap()]
        ),
        real.to_str().unwrap()
    );
    assert_eq!(env.row_count(), 1);
}

#[test]
fn a_deleted_directory_under_a_symlink_still_matches_its_key() {
    let env = TestEnv::new();
    let real = env.dir.path().canonicalize().unwrap().join("real");
    std::fs::create_dir_all(real.join("gone")).unwrap();
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok_in(
        &env,
        &real.join("gone"),
        &["reserve", "--skip-occupancy-check"],
    );
    std::fs::remove_dir(real.join("gone")).unwrap();
    let gone = link.join("gone");
    let out = run_in(
        &env,
        &real,
        &[
            "--json",
            "release",
            "--path",
            gone.to_str().unwrap(),
            "--allow-unrelated-path",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["released"].as_array().unwrap().len(), 1, "{value}");
    assert_eq!(env.row_count(), 0);
}

#[test]
fn without_a_project_file_the_git_work_tree_root_is_the_project() {
    let env = TestEnv::new();
    let repo = env.dir.path().canonicalize().unwrap().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("src/deep")).unwrap();
    assert_eq!(
        ok_in(&env, &repo.join("src/deep"), &["show-path"]),
        repo.to_str().unwrap()
    );
    let from_root = ok_in(&env, &repo, &["reserve", "--skip-occupancy-check"]);
    let from_src = ok_in(
        &env,
        &repo.join("src"),
        &["reserve", "--skip-occupancy-check"],
    );
    assert_eq!(from_root, from_src);
    // A linked worktree has a `.git` file and is its own project.
    let worktree = repo.join("wt");
    std::fs::create_dir_all(worktree.join("lib")).unwrap();
    std::fs::write(worktree.join(".git"), "gitdir: ../.git/worktrees/wt\n").unwrap();
    assert_eq!(
        ok_in(&env, &worktree.join("lib"), &["show-path"]),
        worktree.to_str().unwrap()
    );
    // A porthold.toml inside the repository wins.
    std::fs::write(repo.join("src/porthold.toml"), "").unwrap();
    assert_eq!(
        ok_in(&env, &repo.join("src/deep"), &["show-path"]),
        repo.join("src").to_str().unwrap()
    );
}

#[test]
fn migrate_refuses_the_same_path_and_works_from_the_new_directory_after_mv() {
    let env = TestEnv::new();
    let base = env.dir.path().canonicalize().unwrap();
    let old = base.join("old/shop");
    std::fs::create_dir_all(&old).unwrap();
    let port = ok_in(&env, &old, &["reserve", "--skip-occupancy-check"]);

    let stderr = fails(
        &env,
        &[
            "migrate",
            "--from",
            old.to_str().unwrap(),
            "--to",
            old.to_str().unwrap(),
            "--allow-unrelated-path",
        ],
        2,
    );
    assert!(stderr.contains("same path"), "{stderr}");

    let new = base.join("new/shop");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    std::fs::rename(&old, &new).unwrap();
    // From the new directory, the old (now unrelated) path needs no override.
    let out = run_in(
        &env,
        &new,
        &["migrate", "--from", old.to_str().unwrap(), "--to", "."],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        ok_in(&env, &new, &["reserve", "--skip-occupancy-check"]),
        port
    );
    // Elsewhere, an unrelated --from still needs it.
    let out = run_in(
        &env,
        &base,
        &[
            "migrate",
            "--from",
            "/somewhere/else",
            "--to",
            new.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn migrate_to_a_path_that_does_not_exist_warns() {
    let env = TestEnv::new();
    let base = env.dir.path().canonicalize().unwrap();
    let out = run_in(&env, &base, &["migrate", "--from", "a", "--to", "b"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("warning:") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn release_recursive_of_the_root_or_home_needs_force() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--skip-occupancy-check",
            "--path",
            "/srv/x",
            "--allow-unrelated-path",
        ],
    );
    for path in ["/", env.dir.path().to_str().unwrap()] {
        let stderr = fails(
            &env,
            &[
                "release",
                "--recursive",
                "--path",
                path,
                "--allow-unrelated-path",
            ],
            2,
        );
        assert!(stderr.contains("--force"), "{stderr}");
    }
    assert_eq!(env.row_count(), 1);
    ok(
        &env,
        &[
            "release",
            "--recursive",
            "--force",
            "--path",
            "/",
            "--allow-unrelated-path",
        ],
    );
    assert_eq!(env.row_count(), 0);
}
