//! Errors are reported the way the caller asked (`--json` covers argument
//! errors too) and every hint names only flags the failing command has.

mod support;
mod util;

use support::{fails, json_error, ok};
use util::TestEnv;

#[test]
fn argument_errors_are_the_json_error_object_under_json() {
    let env = TestEnv::new();
    for args in [
        &["reserve", "--bogus"][..],
        &["reserve", "--port", "abc"][..],
        &["frobnicate"][..],
        &["stop", "--timeout"][..],
    ] {
        let value = json_error(&env, args, 2);
        assert_eq!(value["error"]["kind"], "usage", "{args:?}: {value}");
        let message = value["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{args:?}: {value}");
        assert!(
            !message.contains('\x1b'),
            "{args:?}: colour in JSON: {value}"
        );
    }
    // --json after the subcommand counts too; after `--` it is the server's word.
    let output = env
        .cmd()
        .args(["reserve", "--bogus", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim_start().starts_with('{'), "{stderr}");
    let output = env
        .cmd()
        .args(["run", "--port", "x", "--", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
}

#[test]
fn help_and_version_still_succeed_with_json() {
    let env = TestEnv::new();
    let out = ok(&env, &["--json", "--version"]);
    assert!(out.starts_with("porthold "), "{out}");
}

/// Each flag a hint tells the user to add, checked against the command's own
/// `--help` (flags inside a quoted `porthold other-command ...` belong to that
/// other command and are skipped).
fn assert_hint_flags_exist(env: &TestEnv, command: &str, hint: &str) {
    let help = ok(env, &[command, "--help"]);
    let unquoted: String = hint.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    for word in unquoted.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';')) {
        if let Some(flag) = word.strip_prefix("--") {
            let flag = flag.trim_end_matches(['.', ':']);
            assert!(
                help.contains(&format!("--{flag}")),
                "`{command}` hint names --{flag}, which `{command} --help` does not have: {hint}"
            );
        }
    }
}

#[test]
fn a_port_taken_hint_names_only_flags_of_the_failing_command() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "a",
            "--port",
            "24810",
            "--skip-occupancy-check",
        ],
    );
    let reserve = json_error(&env, &["reserve", "--tag", "b", "--port", "24810"], 3);
    let hint = reserve["error"]["hint"].as_str().unwrap();
    assert!(hint.contains("--or-any"), "{hint}");
    assert_hint_flags_exist(&env, "reserve", hint);

    let run = json_error(
        &env,
        &["run", "--tag", "b", "--port", "24810", "--", "true"],
        3,
    );
    let hint = run["error"]["hint"].as_str().unwrap();
    assert!(
        !hint.contains("--or-any") && !hint.contains("--force"),
        "{hint}"
    );
    assert_hint_flags_exist(&env, "run", hint);
}

#[test]
fn a_key_that_holds_another_port_gets_a_hint_that_works_for_run() {
    let env = TestEnv::new();
    ok(
        &env,
        &["reserve", "--port", "24820", "--skip-occupancy-check"],
    );
    let run = json_error(&env, &["run", "--port", "24821", "--", "true"], 3);
    let hint = run["error"]["hint"].as_str().unwrap();
    assert!(!hint.contains("use --force"), "{hint}");
    assert!(hint.contains("24820"), "{hint}");
    assert_hint_flags_exist(&env, "run", hint);
    let reserve = json_error(&env, &["reserve", "--port", "24821"], 3);
    assert_hint_flags_exist(&env, "reserve", reserve["error"]["hint"].as_str().unwrap());
}

#[test]
fn human_errors_show_the_hint_line() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "a",
            "--port",
            "24830",
            "--skip-occupancy-check",
        ],
    );
    let stderr = fails(&env, &["reserve", "--tag", "b", "--port", "24830"], 3);
    assert!(
        stderr.contains("error:") && stderr.contains("hint:"),
        "{stderr}"
    );
}
