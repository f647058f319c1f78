//! `exclude`: ports and ranges never handed out, by every allocation path
//! (`reserve`, `reserve --port`, `reserve-group`), from the registry or from
//! `[pool] exclude` in the config; `--remove` and `--compact` manage them.

mod support;
mod util;

use support::{fails, json, json_error, ok, redact, write_project};
use util::TestEnv;

#[test]
fn a_pool_of_five_with_three_excluded_hands_out_the_other_two_then_exit_4() {
    let env = TestEnv::new();
    ok(&env, &["exclude", "24300"]);
    ok(&env, &["exclude", "24302-24303"]);
    let pool = [
        "--pool",
        "24300-24304",
        "--skip-occupancy-check",
        "--disable-autoclean",
    ];
    let mut got = Vec::new();
    for tag in ["a", "b"] {
        let mut args = vec!["reserve", "--tag", tag];
        args.extend(pool);
        got.push(ok(&env, &args));
    }
    assert_eq!(got, ["24301", "24304"]);
    let mut args = vec!["reserve", "--tag", "c"];
    args.extend(pool);
    let stderr = fails(&env, &args, 4);
    assert!(stderr.contains("no free port in the pool"), "{stderr}");
}

#[test]
fn an_excluded_port_requested_explicitly_is_exit_3() {
    let env = TestEnv::new();
    ok(&env, &["exclude", "24310"]);
    let stderr = fails(
        &env,
        &["reserve", "--port", "24310", "--skip-occupancy-check"],
        3,
    );
    assert!(stderr.contains("port 24310 is excluded"), "{stderr}");
}

#[test]
fn config_exclusions_are_honoured_by_reserve_and_reserve_group() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[pool]\nrange = \"24320-24324\"\nexclude = [24320, \"24322-24323\"]\n[services.web]\noffset = 0\n",
    );
    let group = json(&env, &["reserve-group", "--skip-occupancy-check"]);
    assert_eq!(group["env"]["WEB_PORT"], 24321);
    assert_eq!(
        ok(&env, &["reserve", "--tag", "x", "--skip-occupancy-check"]),
        "24324"
    );
    fails(
        &env,
        &[
            "reserve",
            "--tag",
            "y",
            "--skip-occupancy-check",
            "--disable-autoclean",
        ],
        4,
    );
}

#[test]
fn remove_trims_and_splits_and_compact_merges() {
    let env = TestEnv::new();
    ok(&env, &["exclude", "24330-24339", "--note", "mongo"]);
    ok(&env, &["exclude", "24335", "--remove"]);
    let listed = json(&env, &["exclude"]);
    assert_eq!(
        listed["exclusions"],
        serde_json::json!([
            {"start": 24330, "end": 24334, "note": "mongo"},
            {"start": 24336, "end": 24339, "note": "mongo"},
        ])
    );
    ok(&env, &["exclude", "24335"]);
    ok(&env, &["exclude", "24338-24345", "--note", "other"]);
    let compacted = json(&env, &["exclude", "--compact"]);
    assert_eq!(
        compacted["exclusions"],
        serde_json::json!([{"start": 24330, "end": 24345, "note": "mongo; other"}])
    );
    // The port freed by --remove is allocatable again.
    ok(&env, &["exclude", "24340", "--remove"]);
    assert_eq!(
        ok(
            &env,
            &[
                "reserve",
                "--pool",
                "24330-24345",
                "--skip-occupancy-check",
                "--disable-autoclean"
            ]
        ),
        "24340"
    );
}

#[test]
fn adding_an_exclusion_twice_is_a_no_op_and_json_reports_the_change() {
    let env = TestEnv::new();
    let first = json(&env, &["exclude", "24350"]);
    assert_eq!(first["change"]["added"], "24350");
    assert_eq!(first["change"]["new"], true);
    let second = json(&env, &["exclude", "24350"]);
    assert_eq!(second["change"]["new"], false);
    assert_eq!(second["exclusions"].as_array().unwrap().len(), 1);
}

#[test]
fn excluding_a_reserved_port_warns_and_keeps_the_reservation() {
    let env = TestEnv::new();
    ok(
        &env,
        &["reserve", "--port", "24360", "--skip-occupancy-check"],
    );
    let output = env.cmd().args(["exclude", "24360"]).output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("keeps its reservation"), "{stderr}");
    assert_eq!(env.row_count(), 1);
}

#[test]
fn a_bad_range_is_exit_2() {
    let env = TestEnv::new();
    fails(&env, &["exclude", "5-3"], 2);
    fails(&env, &["exclude", "70000"], 2);
    json_error(&env, &["exclude", "x"], 2);
    // --remove needs a range (clap usage error).
    fails(&env, &["exclude", "--remove"], 2);
}

#[test]
fn the_exclusion_list_is_a_table() {
    let env = TestEnv::new();
    ok(&env, &["exclude", "24370-24379", "--note", "a database"]);
    ok(&env, &["exclude", "24390"]);
    let out = ok(&env, &["exclude"]);
    insta::assert_snapshot!(redact(&out, env.dir.path()));
}

#[test]
fn a_port_excluded_by_config_requested_explicitly_is_exit_3_and_or_any_picks_another() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[pool]\nrange = \"24350-24354\"\nexclude = [24350, \"24352-24353\"]\n",
    );
    let stderr = fails(
        &env,
        &["reserve", "--port", "24352", "--skip-occupancy-check"],
        3,
    );
    assert!(stderr.contains("port 24352 is excluded"), "{stderr}");
    // Nothing was written.
    assert_eq!(env.row_count(), 0);
    let port = ok(
        &env,
        &[
            "reserve",
            "--port",
            "24352",
            "--or-any",
            "--skip-occupancy-check",
        ],
    );
    assert!(port == "24351" || port == "24354", "{port}");
}
