//! `assert-reservation`, `assert-port`, `assert-data-dir`: exit 0 when the
//! assertion holds, 1 when not, `--not` inverting; other failures keep their
//! own codes.

mod support;
mod util;

use support::{fails, json, ok};
use util::TestEnv;

fn code(env: &TestEnv, args: &[&str]) -> i32 {
    let output = env.cmd().args(args).output().unwrap();
    assert!(output.stdout.is_empty() || args.contains(&"--json"));
    output.status.code().unwrap()
}

#[test]
fn assert_reservation_checks_the_key_and_optionally_its_port() {
    let env = TestEnv::new();
    assert_eq!(code(&env, &["assert-reservation"]), 1, "no registry yet");
    assert_eq!(code(&env, &["assert-reservation", "--not"]), 0);
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "web",
            "--port",
            "24700",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(code(&env, &["assert-reservation", "--tag", "web"]), 0);
    assert_eq!(
        code(
            &env,
            &["assert-reservation", "--tag", "web", "--port", "24700"]
        ),
        0
    );
    assert_eq!(
        code(
            &env,
            &["assert-reservation", "--tag", "web", "--port", "24701"]
        ),
        1
    );
    assert_eq!(code(&env, &["assert-reservation", "--tag", "api"]), 1);
    assert_eq!(
        code(&env, &["assert-reservation", "--tag", "api", "--not"]),
        0
    );
    assert_eq!(
        code(&env, &["assert-reservation", "--tag", "web", "--not"]),
        1
    );
    let stderr = fails(&env, &["assert-reservation", "--tag", "api"], 1);
    assert!(stderr.contains("assertion failed"), "{stderr}");
    fails(&env, &["assert-reservation", "--tag", "a b"], 2);
}

#[test]
fn assert_port_checks_whether_any_key_holds_the_port() {
    let env = TestEnv::new();
    assert_eq!(code(&env, &["assert-port", "24710"]), 1);
    ok(
        &env,
        &["reserve", "--port", "24710", "--skip-occupancy-check"],
    );
    assert_eq!(code(&env, &["assert-port", "24710"]), 0);
    assert_eq!(code(&env, &["assert-port", "24710", "--not"]), 1);
    assert_eq!(code(&env, &["assert-port", "24711", "--not"]), 0);
    fails(&env, &["assert-port", "0"], 2);
}

#[test]
fn assert_data_dir_checks_existence_and_with_validate_integrity() {
    let env = TestEnv::new();
    assert_eq!(code(&env, &["assert-data-dir"]), 1);
    assert!(
        !env.registry().exists(),
        "an assertion must not create the registry"
    );
    ok(&env, &["init"]);
    assert_eq!(code(&env, &["assert-data-dir"]), 0);
    assert_eq!(code(&env, &["assert-data-dir", "--validate"]), 0);
    // A file that is not a database is not a registry, validated or not.
    std::fs::write(env.registry(), b"this is not sqlite, not at all....").unwrap();
    assert_eq!(code(&env, &["assert-data-dir"]), 1);
    assert_eq!(code(&env, &["assert-data-dir", "--validate"]), 1);
    assert_eq!(code(&env, &["assert-data-dir", "--validate", "--not"]), 0);
}

#[test]
fn json_reports_the_assertion_and_its_answer() {
    let env = TestEnv::new();
    ok(
        &env,
        &["reserve", "--port", "24720", "--skip-occupancy-check"],
    );
    let value = json(&env, &["assert-port", "24720"]);
    assert_eq!(value["holds"], true);
    assert_eq!(value["success"], true);
    assert_eq!(value["assertion"], "port 24720 is reserved");
    let output = env
        .cmd()
        .args(["--json", "assert-port", "24721"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["holds"], false);
    assert_eq!(value["success"], false);
}
