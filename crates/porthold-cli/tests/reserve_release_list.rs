//! The registry commands as a user sees them: stdout, stderr, exit codes and
//! `--json` shapes of `reserve`, `release` and `list`.

mod util;

use std::net::TcpListener;

use serde_json::Value;
use util::{TestEnv, stderr_of, stdout_of};

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let output = env.cmd().args(args).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
    stdout_of(&output)
}

fn fails(env: &TestEnv, args: &[&str], code: i32) -> String {
    let output = env.cmd().args(args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout_of(&output),
        stderr_of(&output)
    );
    assert!(
        stdout_of(&output).is_empty(),
        "{args:?} printed data on failure"
    );
    stderr_of(&output)
}

#[test]
fn reserve_prints_just_the_port_and_is_idempotent() {
    let env = TestEnv::new();
    let first = ok(&env, &["reserve", "--pool", "22000-22009"]);
    assert_eq!(first, "22000");
    assert_eq!(ok(&env, &["reserve", "--pool", "22000-22009"]), "22000");
    assert_eq!(
        ok(&env, &["reserve", "--tag", "web", "--pool", "22000-22009"]),
        "22001"
    );
    assert_eq!(env.row_count(), 2);
}

#[test]
fn a_requested_port_held_by_another_key_is_exit_3_naming_the_holder() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/elsewhere/shop",
            "--allow-unrelated-path",
            "--tag",
            "web",
            "--port",
            "22010",
        ],
    );
    let stderr = fails(&env, &["reserve", "--port", "22010"], 3);
    assert!(
        stderr.contains("port 22010 is reserved by `/elsewhere/shop` (tag web)"),
        "{stderr}"
    );
    assert!(stderr.contains("--or-any"), "{stderr}");
    let stdout = ok(
        &env,
        &[
            "reserve",
            "--port",
            "22010",
            "--or-any",
            "--pool",
            "22011-22019",
        ],
    );
    assert_eq!(stdout, "22011");
}

#[test]
fn or_any_says_so_on_stderr() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/other",
            "--allow-unrelated-path",
            "--port",
            "22020",
        ],
    );
    let output = env
        .cmd()
        .args([
            "reserve",
            "--port",
            "22020",
            "--or-any",
            "--pool",
            "22021-22029",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        stderr_of(&output)
            .contains("port 22020 is reserved by `/other`; --or-any chose another port"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn a_key_holding_another_port_needs_force_to_move() {
    let env = TestEnv::new();
    assert_eq!(ok(&env, &["reserve", "--pool", "22030-22039"]), "22030");
    let stderr = fails(&env, &["reserve", "--port", "22035"], 3);
    assert!(
        stderr.contains("already holds port 22030, not 22035"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        ok(&env, &["reserve", "--port", "22035", "--force"]),
        "22035"
    );
    assert_eq!(
        ok(&env, &["reserve", "--pool", "22030-22039"]),
        "22035",
        "the key moved"
    );
    assert_eq!(env.row_count(), 1);
}

fn foreign_listener_is_named(addr: &str) {
    let Ok(listener) = TcpListener::bind(addr) else {
        eprintln!("skipping: cannot bind {addr} here");
        return;
    };
    let port = listener.local_addr().unwrap().port().to_string();
    let env = TestEnv::new();
    let stderr = fails(&env, &["reserve", "--port", &port], 3);
    let me = std::process::id();
    assert!(
        stderr.contains(&format!("port {port} is in use by pid {me} (")),
        "{stderr}"
    );
    assert_eq!(env.row_count(), 0, "nothing was written");
}

#[test]
fn a_requested_port_with_a_foreign_ipv4_listener_is_exit_3_naming_it() {
    foreign_listener_is_named("127.0.0.1:0");
}

#[test]
fn a_requested_port_with_a_foreign_ipv6_listener_is_exit_3_naming_it() {
    foreign_listener_is_named("[::1]:0");
}

#[test]
fn an_existing_reservation_with_a_listener_is_kept_with_a_warning() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let env = TestEnv::new();
    let project = env.project();
    // Reserve while nobody listens (skip the probe), then listen and ask again.
    ok(
        &env,
        &["reserve", "--port", &port, "--skip-occupancy-check"],
    );
    let output = env.cmd().args(["reserve"]).output().unwrap();
    assert!(output.status.success());
    assert_eq!(stdout_of(&output), port);
    assert!(
        stderr_of(&output).contains(&format!(
            "port {port} is in use by pid {}",
            std::process::id()
        )),
        "{}",
        stderr_of(&output)
    );
    let reassigned = ok(&env, &["reserve", "--reassign", "--pool", "22040-22049"]);
    assert_eq!(reassigned, "22040");
    let list: Value = serde_json::from_str(&ok(&env, &["--json", "list"])).unwrap();
    assert_eq!(list["reservations"][0]["path"], project.to_str().unwrap());
    assert_eq!(list["reservations"][0]["port"], 22040);
}

#[test]
fn sticky_labels_change_only_with_force() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--project",
            "shop",
            "--task",
            "t1",
            "--pool",
            "22050-22059",
        ],
    );
    ok(
        &env,
        &["reserve", "--project", "shop", "--pool", "22050-22059"],
    );
    let stderr = fails(&env, &["reserve", "--project", "other"], 3);
    assert!(
        stderr.contains("project is `shop`; refusing to change it to `other`"),
        "{stderr}"
    );
    ok(&env, &["reserve", "--project", "other", "--force"]);
    let list: Value = serde_json::from_str(&ok(&env, &["--json", "list"])).unwrap();
    assert_eq!(list["reservations"][0]["project"], "other");
    assert_eq!(list["reservations"][0]["task"], "t1");
}

#[test]
fn an_unrelated_path_needs_the_override() {
    let env = TestEnv::new();
    let stderr = fails(&env, &["reserve", "--path", "/somewhere/else"], 2);
    assert!(stderr.contains("--allow-unrelated-path"), "{stderr}");
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/somewhere/else",
            "--allow-unrelated-path",
            "--pool",
            "22060-22069",
        ],
    );
    // Ancestors and descendants of the working directory are fine.
    ok(
        &env,
        &["reserve", "--path", "sub/dir", "--pool", "22060-22069"],
    );
    ok(&env, &["reserve", "--path", "..", "--pool", "22060-22069"]);
}

#[test]
fn bad_values_are_exit_2_naming_the_value() {
    let env = TestEnv::new();
    let stderr = fails(&env, &["reserve", "--tag", "a b"], 2);
    assert!(stderr.contains("invalid tag `a b`"), "{stderr}");
    let stderr = fails(&env, &["reserve", "--pool", "30000-20000"], 2);
    assert!(
        stderr.contains("invalid port range `30000-20000`"),
        "{stderr}"
    );
    let stderr = fails(&env, &["--busy-timeout", "soon", "reserve"], 2);
    assert!(stderr.contains("invalid duration `soon`"), "{stderr}");
    fails(&env, &["reserve", "--port", "0"], 2);
    fails(&env, &["reserve", "--port", "70000"], 2);
}

#[test]
fn an_exhausted_pool_is_exit_4_not_a_loop() {
    let env = TestEnv::new();
    for i in 0..3 {
        ok(
            &env,
            &[
                "reserve",
                "--tag",
                &format!("t{i}"),
                "--pool",
                "22070-22072",
            ],
        );
    }
    let stderr = fails(
        &env,
        &["reserve", "--tag", "t3", "--pool", "22070-22072"],
        4,
    );
    assert!(
        stderr.contains("no free port in the pool 22070-22072"),
        "{stderr}"
    );
    let json = env
        .cmd()
        .args(["--json", "reserve", "--tag", "t3", "--pool", "22070-22072"])
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&json.stderr).unwrap();
    assert_eq!(value["error"]["kind"], "pool-exhausted");
    assert_eq!(value["error"]["exit"], 4);
}

#[test]
fn a_released_port_is_not_reissued_while_fresh_ports_remain() {
    let env = TestEnv::new();
    assert_eq!(
        ok(&env, &["reserve", "--tag", "a", "--pool", "22080-22082"]),
        "22080"
    );
    assert_eq!(
        ok(&env, &["reserve", "--tag", "b", "--pool", "22080-22082"]),
        "22081"
    );
    ok(&env, &["release", "--tag", "a"]);
    assert_eq!(
        ok(&env, &["reserve", "--tag", "c", "--pool", "22080-22082"]),
        "22082",
        "a fresh port first"
    );
    assert_eq!(
        ok(&env, &["reserve", "--tag", "d", "--pool", "22080-22082"]),
        "22080",
        "then the released one"
    );
}

#[test]
fn released_ports_come_back_oldest_first() {
    let env = TestEnv::new();
    for tag in ["a", "b", "c"] {
        ok(&env, &["reserve", "--tag", tag, "--pool", "22090-22092"]);
    }
    ok(&env, &["release", "--tag", "b"]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    ok(&env, &["release", "--tag", "a"]);
    assert_eq!(
        ok(&env, &["reserve", "--tag", "x", "--pool", "22090-22092"]),
        "22091"
    );
    assert_eq!(
        ok(&env, &["reserve", "--tag", "y", "--pool", "22090-22092"]),
        "22090"
    );
}

#[test]
fn release_recursive_is_component_aware() {
    let env = TestEnv::new();
    for path in ["/a/b", "/a/b/c", "/a/bc", "/a"] {
        ok(
            &env,
            &[
                "reserve",
                "--path",
                path,
                "--allow-unrelated-path",
                "--tag",
                "web",
                "--pool",
                "22100-22109",
            ],
        );
    }
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/a/b",
            "--allow-unrelated-path",
            "--tag",
            "api",
            "--pool",
            "22100-22109",
        ],
    );
    let out = env
        .cmd()
        .args([
            "--json",
            "release",
            "--path",
            "/a/b",
            "--allow-unrelated-path",
            "--recursive",
        ])
        .output()
        .unwrap();
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut released: Vec<(String, String)> = value["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    released.sort();
    assert_eq!(
        released,
        vec![
            ("/a/b".into(), "api".into()),
            ("/a/b".into(), "web".into()),
            ("/a/b/c".into(), "web".into())
        ]
    );
    let list: Value = serde_json::from_str(&ok(&env, &["--json", "list"])).unwrap();
    let left: Vec<&str> = list["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec!["/a/bc", "/a"]);
}

#[test]
fn release_by_port_all_tags_and_nothing() {
    let env = TestEnv::new();
    ok(&env, &["reserve", "--tag", "web", "--pool", "22110-22119"]);
    ok(&env, &["reserve", "--tag", "api", "--pool", "22110-22119"]);
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/x",
            "--allow-unrelated-path",
            "--pool",
            "22110-22119",
        ],
    );
    let output = env
        .cmd()
        .args(["release", "--port", "22112"])
        .output()
        .unwrap();
    assert!(
        stderr_of(&output).contains("released port 22112 of /x"),
        "{}",
        stderr_of(&output)
    );
    ok(&env, &["release", "--all-tags"]);
    assert_eq!(env.row_count(), 0);
    let output = env
        .cmd()
        .args(["release", "--tag", "web"])
        .output()
        .unwrap();
    assert!(output.status.success(), "releasing nothing succeeds");
    assert!(stderr_of(&output).contains("nothing to release"));
    let json: Value =
        serde_json::from_str(&ok(&env, &["--json", "release", "--tag", "web"])).unwrap();
    assert_eq!(json, serde_json::json!({ "released": [] }));
}

#[test]
fn json_shapes_of_reserve_and_list() {
    let env = TestEnv::new();
    let project = env.project();
    let value: Value = serde_json::from_str(&ok(
        &env,
        &["--json", "reserve", "--tag", "web", "--pool", "22120-22129"],
    ))
    .unwrap();
    assert_eq!(value["port"], 22120);
    assert_eq!(value["path"], project.to_str().unwrap());
    assert_eq!(value["tag"], "web");
    assert_eq!(value["created"], true);
    assert!(value["notes"].as_array().unwrap().is_empty());
    assert!(value["created_at"].as_str().unwrap().ends_with('Z'));
    let again: Value =
        serde_json::from_str(&ok(&env, &["--json", "reserve", "--tag", "web"])).unwrap();
    assert_eq!(again["created"], false);
    let list: Value = serde_json::from_str(&ok(&env, &["--json", "list", "--tag", "web"])).unwrap();
    assert_eq!(list["reservations"][0]["listening"], false);
    assert_eq!(list["reservations"][0]["listener"], Value::Null);
    let listener = TcpListener::bind("127.0.0.1:22120").unwrap();
    let list: Value = serde_json::from_str(&ok(&env, &["--json", "list"])).unwrap();
    assert_eq!(list["reservations"][0]["listening"], true);
    assert_eq!(
        list["reservations"][0]["listener"]["pid"],
        std::process::id()
    );
    drop(listener);
    let human = ok(&env, &["list"]);
    assert!(human.starts_with("PORT"), "{human}");
    assert!(human.contains("22120") && human.contains("web"), "{human}");
}

#[test]
fn json_errors_have_the_documented_shape() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/h",
            "--allow-unrelated-path",
            "--port",
            "22130",
        ],
    );
    let output = env
        .cmd()
        .args(["--json", "reserve", "--port", "22130"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let value: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(value["error"]["kind"], "conflict");
    assert_eq!(value["error"]["exit"], 3);
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("port 22130")
    );
    assert!(value["error"]["hint"].is_string());
    let output = env
        .cmd()
        .args(["--json", "release", "--path", "/nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let value: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(value["error"]["kind"], "usage");
    let output = env
        .cmd()
        .args(["--json", "list", "--tag", "x"])
        .output()
        .unwrap();
    assert!(output.status.success());
}

#[test]
fn list_without_a_registry_is_empty_and_creates_nothing() {
    let env = TestEnv::new();
    let output = env.cmd().arg("list").output().unwrap();
    assert!(output.status.success());
    assert!(stdout_of(&output).is_empty());
    assert!(!env.data_dir().exists());
}

#[test]
fn show_path_and_data_dir() {
    let env = TestEnv::new();
    let project = env.project();
    std::fs::write(project.join("porthold.toml"), "").unwrap();
    std::fs::create_dir_all(project.join("deep/er")).unwrap();
    let output = env
        .cmd()
        .current_dir(project.join("deep/er"))
        .arg("show-path")
        .output()
        .unwrap();
    assert_eq!(stdout_of(&output), project.to_str().unwrap());
    assert_eq!(
        ok(&env, &["show-data-dir"]),
        env.data_dir().to_str().unwrap()
    );
    ok(&env, &["init"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.registry())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "registry mode {mode:o}");
}
