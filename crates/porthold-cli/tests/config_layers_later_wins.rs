//! Layered configuration through the CLI: defaults → user config →
//! porthold.toml → porthold.local.toml → PORTHOLD_* → flags, later wins;
//! unknown keys and bad values are exit 2 naming file and line; `validate`
//! checks without touching the registry; `init --config` writes a valid file.

mod support;
mod util;

use std::path::PathBuf;

use support::{fails, json, json_error, ok, redact, write_project};
use util::TestEnv;

fn user_config(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().join(".config/porthold");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("config.toml")
}

/// `show-data-dir --json` and the port `reserve` picks, with only the
/// layers written so far; PORTHOLD_DATA_DIR/PORTHOLD_POOL are set only when given.
fn observe(env: &TestEnv, env_layer: bool, flags: bool, step: u8) -> (String, String) {
    let mut cmd = env.cmd();
    cmd.env_remove("PORTHOLD_DATA_DIR");
    if env_layer {
        cmd.env("PORTHOLD_DATA_DIR", env.dir.path().join("d-env"));
        cmd.env("PORTHOLD_POOL", "24840-24849");
    }
    let mut data_args = vec!["--json", "show-data-dir"];
    if flags {
        data_args.extend(["--data-dir", "../d-flag"]);
    }
    let out = cmd.args(&data_args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let data_dir = value["data_dir"].as_str().unwrap().to_string();

    let mut cmd = env.cmd();
    cmd.env_remove("PORTHOLD_DATA_DIR");
    if env_layer {
        cmd.env("PORTHOLD_DATA_DIR", env.dir.path().join("d-env"));
        cmd.env("PORTHOLD_POOL", "24840-24849");
    }
    let mut reserve_args = vec!["reserve", "--skip-occupancy-check", "--tag"];
    // A fresh tag per step: with one data dir, a reused tag would keep its port.
    let tag = format!("t{step}");
    reserve_args.push(&tag);
    if flags {
        reserve_args.extend(["--pool", "24850-24859", "--data-dir", "../d-flag"]);
    }
    let out = cmd.args(&reserve_args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (redact(&data_dir, env.dir.path()), port)
}

#[test]
fn the_same_setting_in_each_layer_is_won_by_the_later_layer() {
    let env = TestEnv::new();
    std::fs::write(
        user_config(&env),
        "[registry]\ndata_dir = \"../../d-user\"\n[pool]\nrange = \"24800-24809\"\n",
    )
    .unwrap();
    assert_eq!(
        observe(&env, false, false, 1),
        ("[TMP]/d-user".into(), "24800".into())
    );

    // Project files may not set registry settings: the data dir stays the user's.
    write_project(&env, "[pool]\nrange = \"24810-24819\"\n");
    assert_eq!(
        observe(&env, false, false, 2),
        ("[TMP]/d-user".into(), "24810".into())
    );

    std::fs::write(
        env.project().join("porthold.local.toml"),
        "[pool]\nrange = \"24820-24829\"\n",
    )
    .unwrap();
    assert_eq!(
        observe(&env, false, false, 3),
        ("[TMP]/d-user".into(), "24820".into())
    );

    assert_eq!(
        observe(&env, true, false, 4),
        ("[TMP]/d-env".into(), "24840".into())
    );
    assert_eq!(
        observe(&env, true, true, 5),
        ("[TMP]/d-flag".into(), "24850".into())
    );
}

#[test]
fn an_unknown_key_is_exit_2_naming_file_and_line() {
    let env = TestEnv::new();
    write_project(&env, "[project]\nname = \"x\"\n\n[pool]\nrnage = \"1-2\"\n");
    let stderr = fails(&env, &["list"], 2);
    let file = env.project().join("porthold.toml");
    assert!(
        stderr.contains(&format!("{}:5:", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("rnage"), "{stderr}");
    let error = json_error(&env, &["list"], 2);
    assert_eq!(error["error"]["kind"], "usage");
}

#[test]
fn a_bad_value_in_the_user_config_or_environment_is_exit_2_naming_it() {
    let env = TestEnv::new();
    std::fs::write(
        user_config(&env),
        "[registry]\nbusy_timeout = \"forever\"\n",
    )
    .unwrap();
    let stderr = fails(&env, &["list"], 2);
    assert!(
        stderr.contains(&format!(
            "{}:2: registry.busy_timeout:",
            user_config(&env).display()
        )),
        "{stderr}"
    );
    std::fs::remove_file(user_config(&env)).unwrap();
    let out = env
        .cmd()
        .env("PORTHOLD_POOL", "9-1")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORTHOLD_POOL"));
    fails(&env, &["--busy-timeout", "5 parsecs", "list"], 2);
}

#[test]
fn validate_checks_a_file_without_touching_the_registry() {
    let env = TestEnv::new();
    let good = env.dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[services.web]\nport = 24860\n[services.api]\noffset = 1\n",
    )
    .unwrap();
    let out = ok(&env, &["validate", good.to_str().unwrap()]);
    insta::assert_snapshot!(redact(&out, env.dir.path()));
    let value = json(&env, &["validate", good.to_str().unwrap()]);
    assert_eq!(value["valid"], true);
    assert_eq!(value["services"][1]["tag"], "web");
    assert_eq!(value["services"][1]["env"], "WEB_PORT");

    let bad = env.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[services.web]\nport = 24860\nlisten = \"tcp://x:1\"\n",
    )
    .unwrap();
    let stderr = fails(&env, &["validate", bad.to_str().unwrap()], 2);
    assert!(
        stderr.contains(&format!("{}:3: services.web.listen:", bad.display())),
        "{stderr}"
    );
    fails(&env, &["validate", "/does/not/exist.toml"], 2);
    // Without FILE: the layers that apply here.
    write_project(&env, "[services.web]\nport = 24861\n");
    let value = json(&env, &["validate"]);
    assert_eq!(
        value["files"][0],
        env.project().join("porthold.toml").to_str().unwrap()
    );
    assert!(!env.data_dir().exists(), "validate touched the data dir");
}

#[test]
fn init_config_writes_a_valid_commented_project_file_once() {
    let env = TestEnv::new();
    let value = json(&env, &["init", "--config"]);
    let file = env.project().join("porthold.toml");
    assert_eq!(value["config"], file.to_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# porthold project file"));
    ok(&env, &["validate"]);
    ok(&env, &["validate", "porthold.toml"]);
    let out = ok(
        &env,
        &[
            "autoreserve",
            "--format",
            "dotenv",
            "--skip-occupancy-check",
        ],
    );
    assert!(out.contains("WEB_PORT='"), "{out}");
    let stderr = fails(&env, &["init", "--config"], 2);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn a_project_file_cannot_move_or_slow_the_registry() {
    let env = TestEnv::new();
    for (name, text, key) in [
        (
            "porthold.toml",
            "[registry]\ndata_dir = \"../elsewhere\"\n",
            "registry.data_dir",
        ),
        (
            "porthold.local.toml",
            "[registry]\nbusy_timeout = \"1m\"\n",
            "registry.busy_timeout",
        ),
    ] {
        // porthold.local.toml is read beside a porthold.toml.
        write_project(&env, "");
        let file = env.project().join(name);
        std::fs::write(&file, text).unwrap();
        let stderr = fails(&env, &["reserve", "--skip-occupancy-check"], 2);
        assert!(
            stderr.contains(&format!("{}:2: {key}:", file.display())),
            "{stderr}"
        );
        assert!(
            stderr.contains("config.toml"),
            "the hint names the user config: {stderr}"
        );
        assert!(!env.dir.path().join("elsewhere").exists());
        let stderr = fails(&env, &["validate", name], 2);
        assert!(stderr.contains(key), "{stderr}");
        std::fs::remove_file(&file).unwrap();
    }
    // The same settings in the user config are fine.
    std::fs::write(user_config(&env), "[registry]\nbusy_timeout = \"1m\"\n").unwrap();
    ok(&env, &["validate"]);
}
