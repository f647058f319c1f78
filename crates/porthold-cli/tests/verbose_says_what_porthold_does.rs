//! `-v` tells what porthold does: the data dir and where it came from, the
//! project and key, the configuration files read, and how long the registry
//! and the command took. `-q` wins over it.

mod support;
mod util;

use support::write_project;
use util::{TestEnv, stderr_of, stdout_of};

#[test]
fn verbose_names_the_data_dir_project_key_config_files_and_timings() {
    let env = TestEnv::new();
    write_project(&env, "[services.web]\n");
    let output = env
        .cmd()
        .args(["-v", "reserve", "--tag", "web", "--skip-occupancy-check"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).parse::<u16>().is_ok(),
        "stdout is still just the port"
    );
    let stderr = stderr_of(&output);
    let project = env.project();
    for expected in [
        format!("data dir {}", env.data_dir().display()),
        "PORTHOLD_DATA_DIR".to_string(),
        format!("project {} (holds porthold.toml)", project.display()),
        format!(
            "configuration read: {}",
            project.join("porthold.toml").display()
        ),
        format!("key {} (tag web)", project.display()),
        "opened in".to_string(),
        "`reserve` took".to_string(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn quiet_wins_over_verbose_and_plain_runs_say_nothing_extra() {
    let env = TestEnv::new();
    for args in [&["-v", "-q", "reserve"][..], &["reserve"][..]] {
        let output = env.cmd().args(args).output().unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let stderr = stderr_of(&output);
        assert!(!stderr.contains("[-v]"), "{args:?}: {stderr}");
    }
}
