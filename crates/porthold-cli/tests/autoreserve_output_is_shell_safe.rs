//! `autoreserve`: finds porthold.toml upward, reserves the group and prints
//! it. The `export` and `dotenv` formats are evaluated by shells, so they
//! must define exactly the expected variables and run nothing, whatever the
//! project path contains; an env name that is not `[A-Z_][A-Z0-9_]*` is
//! refused when the config loads (exit 2).

mod support;
mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::{fails, json, ok, redact, write_project};
use util::{TestEnv, porthold_bin};

/// A directory name with spaces, both quotes, command substitutions in both
/// spellings, a quote-breaking attempt and a newline.
const EVIL: &str = "sp ace q'uote \"dq $(touch pwned1) `touch pwned2` '; touch pwned3; ' new\nline";

fn bash_available() -> bool {
    Command::new("bash")
        .arg("-c")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn eval_of_the_export_format_defines_exactly_the_variables_and_runs_nothing() {
    if !bash_available() {
        porthold::test_hooks::skip("bash is not installed");
        return;
    }
    let env = TestEnv::new();
    let project = env.project().join(EVIL);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("porthold.toml"),
        "[services.web]\noffset = 0\n[services.api]\noffset = 1\nenv = \"API_PORT\"\n",
    )
    .unwrap();
    let script = r#"
        before=$(compgen -v | sort)
        eval "$("$PORTHOLD" autoreserve --format export --pool 24200-24209 --skip-occupancy-check)"
        echo $? > "$OUT/eval-status"
        after=$(compgen -v | sort)
        comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -v -x -e before -e after -e PIPESTATUS -e _ > "$OUT/names"
        printf '%s' "$PORTHOLD_PROJECT_PATH" > "$OUT/path"
        printf '%s %s' "$WEB_PORT" "$API_PORT" > "$OUT/ports"
        # exported, not just set:
        env | grep -c -e '^WEB_PORT=' -e '^API_PORT=' > "$OUT/exported"
    "#;
    let out_dir = env.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(&project)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD", porthold_bin())
        .env("OUT", &out_dir)
        .status()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
    for marker in ["pwned1", "pwned2", "pwned3"] {
        for dir in [&project, env.dir.path(), &env.project()] {
            assert!(
                !dir.join(marker).exists(),
                "{marker} was created in {}",
                dir.display()
            );
        }
    }
    assert!(status.success(), "bash script failed: {status:?}");
    assert_eq!(read("eval-status").trim(), "0", "eval failed");
    let names: BTreeSet<String> = read("names").lines().map(str::to_string).collect();
    let expected: BTreeSet<String> = ["API_PORT", "PORTHOLD_PROJECT_PATH", "WEB_PORT"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
    assert_eq!(read("path"), project.display().to_string());
    assert_eq!(read("ports"), "24200 24201");
    assert_eq!(read("exported").trim(), "2");
    let entries: Vec<_> = std::fs::read_dir(&project).unwrap().collect();
    assert_eq!(entries.len(), 1, "only porthold.toml is in the project dir");
}

#[test]
fn an_env_name_that_is_not_a_shell_name_is_exit_2_naming_file_and_line() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[services.web]\noffset = 0\n\n[services.api]\nenv = \"X;touch f\"\n",
    );
    let stderr = fails(&env, &["autoreserve", "--format", "export"], 2);
    let file = env.project().join("porthold.toml");
    assert!(
        stderr.contains(&format!("{}:5: services.api.env:", file.display())),
        "{stderr}"
    );
    assert!(!env.project().join("f").exists());
    assert!(!env.registry().exists(), "the registry was touched");
}

#[test]
fn dotenv_and_export_lines_are_quoted_assignments() {
    let env = TestEnv::new();
    write_project(&env, "[services.web]\nport = 24215\n");
    let export = ok(
        &env,
        &[
            "autoreserve",
            "--format",
            "export",
            "--skip-occupancy-check",
        ],
    );
    let project = env.project().display().to_string();
    assert_eq!(
        export,
        format!("export PORTHOLD_PROJECT_PATH='{project}'\nexport WEB_PORT='24215'")
    );
    let dotenv = ok(
        &env,
        &[
            "autoreserve",
            "--format",
            "dotenv",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(
        dotenv,
        format!("PORTHOLD_PROJECT_PATH='{project}'\nWEB_PORT='24215'")
    );
}

#[test]
fn json_and_human_formats_describe_the_group() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[project]\nname = \"shop\"\n[services.web]\nport = 24220\n[services.worker]\noffset = 0\n",
    );
    let value = json(
        &env,
        &[
            "autoreserve",
            "--pool",
            "24221-24229",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(value["env"]["WEB_PORT"], 24220);
    assert_eq!(value["env"]["WORKER_PORT"], 24221);
    assert_eq!(value["project"], "shop");
    // --format json without the global flag gives the same object.
    let formatted: serde_json::Value = serde_json::from_str(&ok(
        &env,
        &["autoreserve", "--format", "json", "--skip-occupancy-check"],
    ))
    .unwrap();
    assert_eq!(formatted["env"], value["env"]);
    let human = ok(
        &env,
        &["autoreserve", "--format", "human", "--skip-occupancy-check"],
    );
    insta::assert_snapshot!(redact(&human, env.dir.path()));
}

#[test]
fn autoreserve_finds_the_project_file_from_a_subdirectory() {
    let env = TestEnv::new();
    write_project(&env, "[services.web]\nport = 24230\n");
    let sub = env.project().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let output = env
        .cmd()
        .current_dir(&sub)
        .args([
            "autoreserve",
            "--format",
            "dotenv",
            "--skip-occupancy-check",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("WEB_PORT='24230'"), "{text}");
    assert!(
        text.contains(&format!("'{}'", env.project().display())),
        "keyed by the project root: {text}"
    );
    let _ = Path::new("");
}
