//! docs/testing.md's Python and Node guides are real files
//! (`examples/python/test_porthold_fixture.py`, `examples/node/porthold.test.mjs`):
//! the guide shows each file's exact text, and each file runs as a test suite
//! against this build of `porthold` (on `PATH`).

mod runner;
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{TestEnv, porthold_bin, stderr_of};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// A command with porthold on PATH and this env's data and runtime dirs.
fn with_porthold(env: &TestEnv, program: &str) -> Command {
    let bin_dir = porthold_bin().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut cmd = Command::new(program);
    cmd.current_dir(repo())
        .env("PATH", path)
        .env("HOME", env.dir.path())
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("run"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
fn the_guides_show_the_example_files_verbatim() {
    let doc = read("docs/testing.md");
    for (heading, lang, file) in [
        (
            "## Python (pytest)",
            "python",
            "examples/python/test_porthold_fixture.py",
        ),
        (
            "## Node (node --test)",
            "js",
            "examples/node/porthold.test.mjs",
        ),
    ] {
        let section = doc
            .split_once(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("docs/testing.md has no `{heading}` section"))
            .1;
        let section = section.split("\n## ").next().unwrap();
        let text = read(file);
        assert!(
            section.contains(&format!("```{lang}\n{text}```")),
            "the `{heading}` code of docs/testing.md is not the text of {file}"
        );
    }
}

#[test]
fn the_python_guide_passes_under_pytest() {
    if !runner::have("python3") {
        porthold::test_hooks::skip(
            "python3 is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let env = TestEnv::new();
    let has_pytest = with_porthold(&env, "python3")
        .args(["-c", "import pytest"])
        .output()
        .unwrap()
        .status
        .success();
    if !has_pytest {
        porthold::test_hooks::skip(
            "pytest is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let out = with_porthold(&env, "python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg("examples/python/test_porthold_fixture.py")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 passed"));
}

#[test]
fn the_node_guide_passes_under_node_test() {
    if !runner::have("node") {
        porthold::test_hooks::skip(
            "node is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let env = TestEnv::new();
    let out = with_porthold(&env, "node")
        .args(["--test", "examples/node/porthold.test.mjs"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr_of(&out));
    assert!(stdout.contains("# pass 2"), "{stdout}");
}
