//! A launcher started with stdin and stderr closed opens them on /dev/null
//! before anything else: otherwise the first file or socket it opens would
//! take fd 0 or 2, its messages would land in that file, and its server
//! would start without a stdin or stderr.

mod util;

use std::process::Stdio;

use util::{TestEnv, porthold_bin, stdout_of};

#[test]
fn a_server_started_with_closed_stdin_and_stderr_finds_them_on_dev_null() {
    let env = TestEnv::new();
    let porthold = env.std_cmd();
    // `sh` closes fds 0 and 2 (`<&- 2>&-`) and execs the launcher in its place.
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(r#"exec "$0" "$@" <&- 2>&-"#)
        .arg(porthold_bin())
        .args(["run", "--ephemeral", "--", "sh", "-c"])
        .arg(
            "echo \"stdin=$(readlink /proc/self/fd/0)\"; \
             echo \"stderr=$(readlink /proc/self/fd/2)\"; \
             echo \"socket=$(readlink /proc/self/fd/3)\"; \
             echo \"fds=$LISTEN_FDS\"",
        )
        .stdout(Stdio::piped());
    sh.env_clear();
    for (k, v) in porthold.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    if let Some(dir) = porthold.get_current_dir() {
        sh.current_dir(dir);
    }
    let out = sh.output().expect("running the launcher through sh");
    let text = stdout_of(&out);
    assert!(out.status.success(), "{}: {text}", out.status);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        ["stdin=/dev/null", "stderr=/dev/null"],
        "the server's stdio: {text}"
    );
    assert!(lines[2].starts_with("socket=socket:["), "{text}");
    assert_eq!(lines[3], "fds=1", "{text}");
}
