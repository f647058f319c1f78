//! The README's "60-second tour" runs as written, top to bottom, in a fresh
//! directory: the test extracts exactly the README's first `sh` block after the
//! heading and runs it with `bash -eu -o pipefail`, with `porthold` on PATH.

mod util;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use util::{TestEnv, porthold_bin};

/// The tour: the first ```sh block after the "A 60-second tour" heading.
fn tour() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let after = readme
        .split_once("## A 60-second tour")
        .expect("README has a 60-second tour")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("the tour has a sh block")
        .1;
    block
        .split_once("\n```")
        .expect("the sh block ends")
        .0
        .to_string()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_readme_tour_runs_top_to_bottom_in_a_fresh_directory() {
    for program in ["bash", "python3", "curl"] {
        if !have(program) {
            porthold::test_hooks::skip(&format!("the README tour needs {program}"));
            return;
        }
    }
    let env = TestEnv::new();
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let bin_dir = porthold_bin().parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}\n", tour());
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&home)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .env("NO_COLOR", "1")
        // Its own process group, so that whatever the tour left behind can be
        // killed as one if it fails half-way.
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bash");
    let group = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let output = child.wait_with_output().expect("wait for bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The tour has ended: only leftovers can still be in its process group.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    assert!(
        output.status.success(),
        "the README tour failed ({:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- script ---\n{script}",
        output.status
    );
    // Nothing of the tour keeps running: every server it started, it stopped.
    let ps = porthold_ps(&env, &home);
    assert!(
        !ps.contains("\"pid\""),
        "the tour left a live instance: {ps}"
    );
}

fn porthold_ps(env: &TestEnv, home: &Path) -> String {
    let output = Command::new(porthold_bin())
        .args(["--json", "ps"])
        .current_dir(home)
        .env("HOME", home)
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}
