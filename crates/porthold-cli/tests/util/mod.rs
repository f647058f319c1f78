//! Shared helpers for the CLI integration tests: an isolated environment per
//! test and a `porthold` command bound to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A temporary data dir and runtime dir, and commands that use them.
pub struct TestEnv {
    pub dir: TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn registry(&self) -> PathBuf {
        self.data_dir().join("registry.sqlite3")
    }

    /// `porthold` with this env's dirs, run from a project dir inside the temp dir.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::from_std(self.std_cmd());
        cmd.timeout(std::time::Duration::from_secs(120));
        cmd
    }

    /// The same as a plain `std::process::Command`, for tests that spawn many at once.
    pub fn std_cmd(&self) -> Command {
        let cwd = self.dir.path().join("project");
        std::fs::create_dir_all(&cwd).expect("project dir");
        let mut cmd = Command::new(porthold_bin());
        cmd.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("PORTHOLD_DATA_DIR", self.data_dir())
            .env("PORTHOLD_RUNTIME_DIR", self.dir.path().join("run"))
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn project(&self) -> PathBuf {
        let cwd = self.dir.path().join("project");
        std::fs::create_dir_all(&cwd).expect("project dir");
        cwd.canonicalize().expect("canonical project dir")
    }

    /// Opens the registry file directly, for checks the CLI does not expose.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.registry()).expect("open registry")
    }

    pub fn row_count(&self) -> i64 {
        self.db()
            .query_row("SELECT count(*) FROM reservations", [], |r| r.get(0))
            .expect("count")
    }
}

/// The binary under test: this build's, or the one `PORTHOLD_TEST_BIN` names
/// (the shipped build of `scripts/build-release.sh`, to run the suite against it).
pub fn porthold_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("PORTHOLD_TEST_BIN")
            .map_or_else(|| env!("CARGO_BIN_EXE_porthold").into(), Into::into)
    })
}

/// stdout as a trimmed string.
pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Whether this process runs as root (some tests need namespaces).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
