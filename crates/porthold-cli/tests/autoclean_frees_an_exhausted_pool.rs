//! Cleanup: `prune` (project directory gone), `expire --older-than`
//! (unused), `autoclean` (both), each with `--dry-run`; and `reserve`
//! autocleaning an exhausted pool unless `--disable-autoclean`.

mod support;
mod util;

use std::path::PathBuf;

use support::{fails, json, ok, redact};
use util::TestEnv;

/// Reserves a port for each of `n` directories under the temp dir, then deletes them.
fn reserve_for_deleted_dirs(env: &TestEnv, n: usize, pool: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for i in 0..n {
        let dir = env.dir.path().join(format!("gone-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        ok(
            env,
            &[
                "reserve",
                "--path",
                dir.to_str().unwrap(),
                "--allow-unrelated-path",
                "--pool",
                pool,
                "--skip-occupancy-check",
            ],
        );
        std::fs::remove_dir(&dir).unwrap();
        dirs.push(dir);
    }
    dirs
}

#[test]
fn a_full_pool_of_deleted_projects_is_autocleaned_by_reserve_which_reports_it() {
    let env = TestEnv::new();
    let pool = "24500-24502";
    reserve_for_deleted_dirs(&env, 3, pool);
    assert_eq!(env.row_count(), 3);

    let output = env
        .cmd()
        .args(["reserve", "--pool", pool, "--skip-occupancy-check"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", output);
    let port: u16 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!((24500..=24502).contains(&port));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("autoclean removed 3 reservation(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("gone-0"), "{stderr}");
    assert!(stderr.contains("path missing"), "{stderr}");
    assert_eq!(env.row_count(), 1);
}

#[test]
fn with_disable_autoclean_an_exhausted_pool_is_exit_4_and_nothing_is_removed() {
    let env = TestEnv::new();
    let pool = "24510-24512";
    reserve_for_deleted_dirs(&env, 3, pool);
    fails(
        &env,
        &[
            "reserve",
            "--pool",
            pool,
            "--skip-occupancy-check",
            "--disable-autoclean",
        ],
        4,
    );
    assert_eq!(env.row_count(), 3);
}

#[test]
fn autoclean_that_frees_nothing_is_still_exit_4_and_json_lists_what_was_cleaned() {
    let env = TestEnv::new();
    let pool = "24520-24521";
    // Two live projects: nothing to clean.
    for tag in ["a", "b"] {
        ok(
            &env,
            &[
                "reserve",
                "--tag",
                tag,
                "--pool",
                pool,
                "--skip-occupancy-check",
            ],
        );
    }
    fails(
        &env,
        &[
            "reserve",
            "--tag",
            "c",
            "--pool",
            pool,
            "--skip-occupancy-check",
        ],
        4,
    );
    assert_eq!(env.row_count(), 2);
    // One deleted project frees one port; --json reports it under "cleaned".
    let env = TestEnv::new();
    let dirs = reserve_for_deleted_dirs(&env, 2, pool);
    let value = json(&env, &["reserve", "--pool", pool, "--skip-occupancy-check"]);
    let cleaned = value["cleaned"].as_array().unwrap();
    assert_eq!(cleaned.len(), 2);
    assert_eq!(cleaned[0]["reason"], "path-missing");
    assert_eq!(cleaned[0]["path"], dirs[0].to_str().unwrap());
}

#[test]
fn prune_removes_only_missing_paths_and_dry_run_changes_nothing() {
    let env = TestEnv::new();
    reserve_for_deleted_dirs(&env, 2, "24530-24539");
    ok(
        &env,
        &["reserve", "--pool", "24530-24539", "--skip-occupancy-check"],
    );
    let dry = json(&env, &["prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(env.row_count(), 3);
    let human = ok(&env, &["prune", "--dry-run"]);
    insta::assert_snapshot!(redact(&human, env.dir.path()));
    let done = json(&env, &["prune"]);
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["removed"].as_array().unwrap().len(), 2);
    assert_eq!(env.row_count(), 1);
    let again = json(&env, &["prune"]);
    assert_eq!(again["removed"], serde_json::json!([]));
}

#[test]
fn expire_removes_reservations_unused_for_longer_than_the_age() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "old",
            "--pool",
            "24540-24549",
            "--skip-occupancy-check",
        ],
    );
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "new",
            "--pool",
            "24540-24549",
            "--skip-occupancy-check",
        ],
    );
    let forty_days_ms: i64 = 40 * 24 * 3600 * 1000;
    env.db()
        .execute(
            "UPDATE reservations SET last_used_at = last_used_at - ?1 WHERE tag = 'old'",
            [forty_days_ms],
        )
        .unwrap();
    let dry = json(&env, &["expire", "--older-than", "30d", "--dry-run"]);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1);
    assert_eq!(dry["removed"][0]["reason"], "expired");
    assert_eq!(env.row_count(), 2);
    let none = json(&env, &["expire", "--older-than", "50d"]);
    assert_eq!(none["removed"], serde_json::json!([]));
    let done = json(&env, &["expire", "--older-than", "30d"]);
    assert_eq!(done["removed"][0]["tag"], "old");
    assert_eq!(env.row_count(), 1);
    fails(&env, &["expire", "--older-than", "soon"], 2);
    fails(&env, &["expire"], 2);
}

#[test]
fn autoclean_removes_both_kinds() {
    let env = TestEnv::new();
    reserve_for_deleted_dirs(&env, 1, "24550-24559");
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "old",
            "--pool",
            "24550-24559",
            "--skip-occupancy-check",
        ],
    );
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "fresh",
            "--pool",
            "24550-24559",
            "--skip-occupancy-check",
        ],
    );
    env.db()
        .execute(
            "UPDATE reservations SET last_used_at = 0 WHERE tag = 'old'",
            [],
        )
        .unwrap();
    let dry = json(&env, &["autoclean", "--dry-run"]);
    let reasons: Vec<_> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["path-missing", "expired"]);
    assert_eq!(env.row_count(), 3);
    ok(&env, &["autoclean"]);
    assert_eq!(env.row_count(), 1);
}

#[test]
fn reserve_group_autocleans_an_exhausted_pool_unless_disabled() {
    let env = TestEnv::new();
    let pool = "24590-24592";
    reserve_for_deleted_dirs(&env, 3, pool);
    support::write_project(
        &env,
        "[services.web]\noffset = 0\n[services.api]\noffset = 1\n",
    );
    // Disabled: exit 4, nothing removed, nothing written.
    fails(
        &env,
        &[
            "reserve-group",
            "--pool",
            pool,
            "--skip-occupancy-check",
            "--disable-autoclean",
        ],
        4,
    );
    assert_eq!(env.row_count(), 3);
    // Enabled (the default): the three stale rows go, both services get ports.
    let v = json(
        &env,
        &["reserve-group", "--pool", pool, "--skip-occupancy-check"],
    );
    assert_eq!(v["services"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["cleaned"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["cleaned"][0]["reason"], "path-missing", "{v}");
    assert_eq!(env.row_count(), 2);
}
