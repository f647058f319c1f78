//! `porthold run --tag SERVICE` reserves the way `reserve-group` does: the
//! service's preferred port or offset, the whole group at once, and the
//! siblings' ports in the server's environment. An explicit `--port`,
//! `--ephemeral` or `--listen` wins and reserves no group; a failed group
//! reservation fails `run` like `reserve-group` (exit 3 naming the holder),
//! with hints that work for `run`.

mod support;
mod util;

use support::{fails, json, ok, write_project};
use util::TestEnv;

const PROJECT: &str = r#"
[project]
name = "shop"

[services.web]
port = 27431

[services.api]
port = 27432
env = "API_PORT"
"#;

/// `porthold run ARGS -- sh -c 'echo …'` printing the server's `VARS`, one per line.
fn run_env(env: &TestEnv, args: &[&str], vars: &[&str]) -> (i32, Vec<String>, String) {
    let script: String = vars
        .iter()
        .map(|v| format!("echo \"${{{v}-unset}}\"; "))
        .collect();
    let mut all: Vec<&str> = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", &script]);
    let out = env.cmd().args(&all).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn group_ports(env: &TestEnv) -> serde_json::Value {
    json(env, &["autoreserve", "--format", "json"])
}

#[test]
fn a_service_run_first_gets_its_preferred_port_and_autoreserve_later_agrees() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    let (code, lines, err) = run_env(&env, &["--tag", "web"], &["PORT", "WEB_PORT", "API_PORT"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines, ["27431", "27431", "27432"], "{err}");
    let later = group_ports(&env).to_string();
    assert!(
        later.contains("27431") && later.contains("27432"),
        "{later}"
    );
    assert_eq!(ok(&env, &["reserve", "--tag", "api"]).trim(), "27432");
}

#[test]
fn an_explicit_choice_wins_reserves_no_group_and_sets_only_reserved_siblings() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    let (code, lines, err) = run_env(&env, &["--tag", "web", "--ephemeral"], &["API_PORT"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines, ["unset"], "no sibling is reserved yet");
    let list = ok(&env, &["list"]);
    assert!(!list.contains("27432"), "no group reservation: {list}");
    let api = ok(&env, &["reserve", "--tag", "api"]);
    let (code, lines, err) = run_env(
        &env,
        &["--tag", "web", "--port", "27433"],
        &["PORT", "API_PORT"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines,
        ["27433".to_string(), api.trim().to_string()],
        "{err}"
    );
}

#[test]
fn a_listen_spec_with_a_port_placeholder_binds_the_keys_reserved_port() {
    let env = TestEnv::new();
    let (code, lines, err) = run_env(
        &env,
        &["--tag", "solo", "--listen", "main=tcp://127.0.0.1:{port}"],
        &["PORT"],
    );
    assert_eq!(code, 0, "{err}");
    let reserved = ok(&env, &["reserve", "--tag", "solo"]);
    assert_eq!(lines, [reserved.trim().to_string()]);
}

#[test]
fn a_tag_that_names_no_service_warns_naming_the_known_services() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    let (code, _, err) = run_env(&env, &["--tag", "wbe", "--ephemeral"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wbe") && err.contains("api, web"), "{err}");
}

#[test]
fn a_group_that_cannot_be_reserved_fails_run_like_reserve_group_with_a_run_hint() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    // Another key holds api's preferred port.
    let other = env.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            other.to_str().unwrap(),
            "--allow-unrelated-path",
            "--port",
            "27432",
        ],
    );
    let group_err = fails(&env, &["reserve-group"], 3);
    let run_err = fails(&env, &["run", "--tag", "web", "--", "true"], 3);
    let first_line = |text: &str| text.lines().next().unwrap_or_default().to_string();
    assert_eq!(first_line(&run_err), first_line(&group_err));
    assert!(run_err.contains("other"), "names the holder: {run_err}");
    assert!(
        !run_err.contains("--or-any") && !run_err.contains("--force"),
        "{run_err}"
    );
    // Nothing of the group was reserved.
    assert!(!ok(&env, &["list"]).contains("27431"));
}

#[test]
fn a_port_taken_by_another_key_fails_run_with_hints_that_work_for_run() {
    let env = TestEnv::new();
    let other = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            other.to_str().unwrap(),
            "--allow-unrelated-path",
            "--port",
            "27441",
        ],
    );
    let err = fails(&env, &["run", "--port", "27441", "--", "true"], 3);
    assert!(err.contains("elsewhere"), "{err}");
    assert!(
        !err.contains("--or-any") && !err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("--ephemeral"), "{err}");
}

#[test]
fn a_services_listen_spec_without_a_port_or_with_the_placeholder_binds_the_reserved_port() {
    let env = TestEnv::new();
    write_project(
        &env,
        r#"
[services.web]
port = 27441
listen = ["web=tcp://127.0.0.1:{port}"]

[services.api]
port = 27442
listen = ["api=tcp://127.0.0.1"]
"#,
    );
    for (tag, port) in [("web", "27441"), ("api", "27442")] {
        // The server prints the port of the socket it was handed (fd 3's name
        // and the PORT variable come from what porthold really bound).
        let (code, lines, err) = run_env(&env, &["--tag", tag], &["PORT", "LISTEN_FDNAMES"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(lines, [port, tag], "{tag}: {err}");
    }
}

#[test]
fn two_listen_specs_with_one_name_are_a_usage_error() {
    let env = TestEnv::new();
    let stderr = fails(
        &env,
        &[
            "run",
            "--listen",
            "web=tcp://127.0.0.1:0",
            "--listen",
            "web=tcp://127.0.0.1:0",
            "--",
            "true",
        ],
        2,
    );
    assert!(stderr.contains("web"), "{stderr}");
}
