//! `migrate`: reservations follow a moved project, atomically and
//! component-aware (`/a/b` never touches `/a/bc`); `list-projects` shows the
//! result.

mod support;
mod util;

use support::{fails, json, json_error, ok, redact};
use util::TestEnv;

fn reserve(env: &TestEnv, path: &str, tag: Option<&str>, port: u16) {
    let port = port.to_string();
    let mut args = vec![
        "reserve",
        "--path",
        path,
        "--allow-unrelated-path",
        "--port",
        &port,
        "--skip-occupancy-check",
    ];
    if let Some(tag) = tag {
        args.extend(["--tag", tag]);
    }
    ok(env, &args);
}

fn paths_by_port(env: &TestEnv) -> Vec<(u16, String, String)> {
    let value = json(env, &["list"]);
    value["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap() as u16,
                r["path"].as_str().unwrap().to_string(),
                r["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_recursive_migrate_moves_every_key_under_the_tree_and_nothing_outside_it() {
    let env = TestEnv::new();
    reserve(&env, "/a/b", None, 24600);
    reserve(&env, "/a/b", Some("web"), 24601);
    reserve(&env, "/a/b/svc/api", None, 24602);
    reserve(&env, "/a/bc", None, 24603);
    reserve(&env, "/a", None, 24604);
    reserve(&env, "/a/b0", None, 24605);

    let value = json(
        &env,
        &[
            "migrate",
            "--from",
            "/a/b",
            "--to",
            "/z/new",
            "--recursive",
            "--allow-unrelated-path",
        ],
    );
    assert_eq!(value["migrated"].as_array().unwrap().len(), 3, "{value}");
    assert_eq!(
        paths_by_port(&env),
        vec![
            (24600, "/z/new".into(), "".into()),
            (24601, "/z/new".into(), "web".into()),
            (24602, "/z/new/svc/api".into(), "".into()),
            (24603, "/a/bc".into(), "".into()),
            (24604, "/a".into(), "".into()),
            (24605, "/a/b0".into(), "".into()),
        ]
    );
}

#[test]
fn without_recursive_only_the_path_itself_moves() {
    let env = TestEnv::new();
    reserve(&env, "/m/p", Some("web"), 24610);
    reserve(&env, "/m/p/sub", None, 24611);
    let out = ok(
        &env,
        &[
            "migrate",
            "--from",
            "/m/p",
            "--to",
            "/m/q",
            "--allow-unrelated-path",
        ],
    );
    insta::assert_snapshot!(redact(&out, env.dir.path()));
    assert_eq!(
        paths_by_port(&env),
        vec![
            (24610, "/m/q".into(), "web".into()),
            (24611, "/m/p/sub".into(), "".into()),
        ]
    );
}

#[test]
fn moving_into_its_own_subtree_works() {
    let env = TestEnv::new();
    reserve(&env, "/s", None, 24620);
    reserve(&env, "/s/x", None, 24621);
    ok(
        &env,
        &[
            "migrate",
            "--from",
            "/s",
            "--to",
            "/s/x",
            "--recursive",
            "--allow-unrelated-path",
        ],
    );
    assert_eq!(
        paths_by_port(&env),
        vec![
            (24620, "/s/x".into(), "".into()),
            (24621, "/s/x/x".into(), "".into()),
        ]
    );
}

#[test]
fn a_target_key_that_exists_is_exit_3_and_nothing_moves() {
    let env = TestEnv::new();
    reserve(&env, "/c/old", None, 24630);
    reserve(&env, "/c/old", Some("web"), 24631);
    reserve(&env, "/c/new", Some("web"), 24632);
    let stderr = fails(
        &env,
        &[
            "migrate",
            "--from",
            "/c/old",
            "--to",
            "/c/new",
            "--allow-unrelated-path",
        ],
        3,
    );
    assert!(
        stderr.contains("`/c/new` (tag web) is already reserved"),
        "{stderr}"
    );
    json_error(
        &env,
        &[
            "migrate",
            "--from",
            "/c/old",
            "--to",
            "/c/new",
            "--allow-unrelated-path",
        ],
        3,
    );
    assert_eq!(
        paths_by_port(&env),
        vec![
            (24630, "/c/old".into(), "".into()),
            (24631, "/c/old".into(), "web".into()),
            (24632, "/c/new".into(), "web".into()),
        ]
    );
}

#[test]
fn unrelated_paths_need_the_override_and_nothing_to_move_is_a_note() {
    let env = TestEnv::new();
    let stderr = fails(&env, &["migrate", "--from", "/x", "--to", "/y"], 2);
    assert!(stderr.contains("--allow-unrelated-path"), "{stderr}");
    // Paths under the working directory need no override.
    let output = env
        .cmd()
        .args(["migrate", "--from", "old", "--to", "new"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing reserved"));
    fails(&env, &["migrate", "--from", "x"], 2);
}

#[test]
fn list_projects_groups_keys_by_path() {
    let env = TestEnv::new();
    reserve(&env, "/p/one", None, 24640);
    reserve(&env, "/p/one", Some("web"), 24641);
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/p/two",
            "--allow-unrelated-path",
            "--project",
            "shop",
            "--port",
            "24642",
            "--skip-occupancy-check",
        ],
    );
    let value = json(&env, &["list-projects"]);
    let projects = value["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 2);
    assert_eq!(projects[0]["path"], "/p/one");
    assert_eq!(projects[0]["tags"], serde_json::json!(["", "web"]));
    assert_eq!(projects[0]["ports"], serde_json::json!([24640, 24641]));
    assert_eq!(projects[0]["exists"], false);
    assert_eq!(projects[1]["projects"], serde_json::json!(["shop"]));
    let human = ok(&env, &["list-projects"]);
    insta::assert_snapshot!(redact(&human, env.dir.path()));
    let empty = TestEnv::new();
    assert_eq!(
        json(&empty, &["list-projects"])["projects"],
        serde_json::json!([])
    );
}
