//! Configuration and input that could hijack a shell, a child, the registry
//! or the terminal are refused (exit 2, naming the value) or neutralised:
//! reserved environment names, colliding services, project files owned by
//! someone else, registry settings in a project file, a data dir others can
//! write, control characters in what porthold prints, oversized labels.

mod support;
mod util;

use std::os::unix::fs::PermissionsExt as _;

use support::{fails, ok, write_project};
use util::{TestEnv, is_root, stderr_of};

fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    porthold::test_hooks::skip(&format!("needs root ({what})"));
    false
}

#[test]
fn a_service_env_the_shell_or_loader_interprets_is_exit_2_naming_it() {
    let env = TestEnv::new();
    for name in [
        "PATH",
        "LD_PRELOAD",
        "BASH_ENV",
        "PROMPT_COMMAND",
        "PORTHOLD_PROJECT_PATH",
    ] {
        write_project(
            &env,
            &format!("[services.web]\noffset = 0\nenv = \"{name}\"\n"),
        );
        let stderr = fails(&env, &["autoreserve", "--format", "export"], 2);
        assert!(stderr.contains(name), "{stderr}");
        assert!(
            stderr.contains("porthold.toml:3: services.web.env"),
            "{stderr}"
        );
    }
    assert!(!env.registry().exists(), "nothing may be reserved");
}

#[test]
fn run_port_env_is_checked_like_a_config_name() {
    let env = TestEnv::new();
    for name in ["PATH", "LD_LIBRARY_PATH", "IFS", "PORTHOLD_INSTANCE_ID"] {
        let stderr = fails(
            &env,
            &["run", "--ephemeral", "--port-env", name, "--", "true"],
            2,
        );
        assert!(
            stderr.contains(name) && stderr.contains("--port-env"),
            "{stderr}"
        );
    }
    let stderr = fails(
        &env,
        &["run", "--ephemeral", "--port-env", "a;b", "--", "true"],
        2,
    );
    assert!(stderr.contains("a;b"), "{stderr}");
}

#[test]
fn two_services_on_one_variable_are_exit_2_not_an_overwrite() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[services.web-x]\noffset = 0\n\n[services.web_x]\noffset = 1\n",
    );
    let stderr = fails(&env, &["autoreserve", "--format", "export"], 2);
    assert!(stderr.contains("WEB_X_PORT"), "{stderr}");
    assert!(
        stderr.contains("services.web-x") && stderr.contains("services.web_x"),
        "{stderr}"
    );
    fails(&env, &["validate"], 2);
    assert!(!env.registry().exists());
}

#[test]
fn services_that_collide_are_a_config_error_reported_by_validate() {
    let env = TestEnv::new();
    let file = env.project().join("porthold.toml");
    write_project(
        &env,
        "[services.a]\nport = 24870\n[services.b]\nport = 24870\n",
    );
    let stderr = fails(&env, &["validate"], 2);
    assert!(
        stderr.contains(&format!(
            "{}:4: services.b: the same port 24870",
            file.display()
        )),
        "{stderr}"
    );
    fails(&env, &["reserve-group"], 2);
    write_project(&env, "[services.a]\noffset = 3\n[services.b]\noffset = 3\n");
    let stderr = fails(&env, &["validate", "porthold.toml"], 2);
    assert!(stderr.contains("the same offset 3"), "{stderr}");
    assert!(!env.registry().exists());
}

#[test]
fn validate_checks_listen_specs_as_run_does_and_warns_about_zero_ports() {
    let env = TestEnv::new();
    let file = env.project().join("porthold.toml");
    write_project(
        &env,
        "[services.web]\noffset = 0\nlisten = [\"web=tcp://127.0.0.1:0\"]\n[services.api]\noffset = 1\nlisten = [\"api=tcp://127.0.0.1:{port}\", \"tcp://[::1]\"]\n",
    );
    let out = env.cmd().args(["validate"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: services.web.listen:", file.display()))
            && stderr.contains("kernel-chosen"),
        "{stderr}"
    );
    for (spec, what) in [
        ("\"a=tcp://127.0.0.1:0\", \"a=tcp://[::1]:0\"", "`a`"),
        ("\"tcp://localhost:80\"", "localhost"),
    ] {
        write_project(
            &env,
            &format!("[services.web]\nport = 24871\nlisten = [{spec}]\n"),
        );
        let stderr = fails(&env, &["validate"], 2);
        assert!(
            stderr.contains(&format!("{}:3: services.web.listen:", file.display())),
            "{stderr}"
        );
        assert!(stderr.contains(what), "{stderr}");
        assert!(
            !stderr.contains("--listen"),
            "a config value reported as a flag: {stderr}"
        );
    }
}

#[test]
fn a_project_file_owned_by_someone_else_is_ignored_with_a_warning() {
    if !require_root("chown to another user") {
        return;
    }
    let env = TestEnv::new();
    let parent = env.dir.path().canonicalize().unwrap();
    let planted = parent.join("porthold.toml");
    std::fs::write(&planted, "[pool]\nrange = \"24880-24880\"\n").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    let out = env.cmd().args(["show-path"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        env.project().to_str().unwrap()
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("warning:")
            && stderr.contains(planted.to_str().unwrap())
            && stderr.contains("uid 65534"),
        "{stderr}"
    );
    // Its pool is not used either.
    let port = ok(&env, &["reserve", "--skip-occupancy-check"]);
    assert_ne!(port, "24880");
    // Also through --path of the group commands.
    let stderr = fails(
        &env,
        &["reserve-group", "--path", "..", "--skip-occupancy-check"],
        2,
    );
    assert!(stderr.contains("uid 65534"), "{stderr}");
}

#[test]
fn a_data_dir_others_can_write_or_own_is_exit_2_with_a_hint() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = fails(&env, &["reserve", "--skip-occupancy-check"], 2);
    assert!(
        stderr.contains("writable by group or others") && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    fails(&env, &["list"], 2);
    assert!(!env.registry().exists());
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(&env, &["reserve", "--skip-occupancy-check"]);
    if !require_root("chown the data dir to another user") {
        return;
    }
    std::os::unix::fs::chown(env.data_dir(), Some(65534), Some(65534)).unwrap();
    let stderr = fails(&env, &["list"], 2);
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
}

#[test]
fn control_characters_never_reach_the_terminal_raw() {
    let env = TestEnv::new();
    let evil = "/srv/x\nporthold: hint: run rm -rf ~\x1b[2J";
    // An error quoting the value.
    let stderr = fails(&env, &["reserve", "--path", evil], 2);
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(
        stderr.contains("\\n") && stderr.contains("\\x1b"),
        "{stderr:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        2,
        "one error line and one hint: {stderr:?}"
    );
    // A table row.
    ok(
        &env,
        &[
            "reserve",
            "--skip-occupancy-check",
            "--path",
            evil,
            "--allow-unrelated-path",
            "--project",
            "p\x1b]0;title\x07",
        ],
    );
    let out = ok(&env, &["list"]);
    assert_eq!(out.lines().count(), 2, "a header and one row: {out:?}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    // The release note.
    let out = env
        .cmd()
        .args(["release", "--path", evil, "--allow-unrelated-path"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stderr_of(&out).contains('\x1b'), "{:?}", stderr_of(&out));
    assert_eq!(stderr_of(&out).lines().count(), 1, "{:?}", stderr_of(&out));
}

#[test]
fn labels_are_capped_and_errors_quote_a_bounded_prefix() {
    let env = TestEnv::new();
    let ok_label = "p".repeat(256);
    ok(
        &env,
        &["reserve", "--skip-occupancy-check", "--project", &ok_label],
    );
    for flag in ["--project", "--task"] {
        let huge = "q".repeat(100_000);
        let stderr = fails(
            &env,
            &[
                "reserve",
                "--skip-occupancy-check",
                "--tag",
                "t",
                flag,
                &huge,
            ],
            2,
        );
        assert!(
            stderr.contains(flag) && stderr.contains("100000 bytes"),
            "{stderr}"
        );
        assert!(
            stderr.len() < 1_000,
            "the error quotes {} bytes",
            stderr.len()
        );
    }
    let stderr = fails(&env, &["--busy-timeout", &"9".repeat(50_000), "list"], 2);
    assert!(
        stderr.len() < 1_000,
        "the error quotes {} bytes",
        stderr.len()
    );
    write_project(
        &env,
        &format!("[project]\nname = \"{}\"\n", "n".repeat(300)),
    );
    let stderr = fails(&env, &["validate"], 2);
    assert!(stderr.contains("porthold.toml:2: project.name"), "{stderr}");
}

#[test]
fn durations_accept_bare_seconds_and_decimals() {
    let env = TestEnv::new();
    for value in ["5", "1.5s", "0.5", "250ms"] {
        ok(
            &env,
            &["--busy-timeout", value, "reserve", "--skip-occupancy-check"],
        );
    }
    let stderr = fails(&env, &["--busy-timeout", "1.2.3", "list"], 2);
    assert!(stderr.contains("`1.2.3`"), "{stderr}");
}

#[test]
fn an_unreadable_config_directory_is_a_warning_not_an_error() {
    let env = TestEnv::new();
    // `$HOME/.config` as a file: every read below it fails, even for root.
    std::fs::write(env.dir.path().join(".config"), "").unwrap();
    let out = env
        .cmd()
        .args(["reserve", "--skip-occupancy-check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("warning:"), "{}", stderr_of(&out));
}
