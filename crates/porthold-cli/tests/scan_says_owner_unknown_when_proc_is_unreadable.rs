//! `scan` and `port-info` name a listener's owner from /proc when they can,
//! and say "owner unknown" (JSON: `pid`/`command` null) when they cannot: here
//! a root-owned listener seen by porthold running as uid 65534, which may not
//! read root's fd table. Needs root to switch users; skips otherwise.

mod util;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use util::TestEnv;

#[test]
fn a_listener_whose_owner_cannot_be_read_is_owner_unknown() {
    if rustix::process::geteuid().as_raw() != 0 {
        porthold::test_hooks::skip("needs root to run porthold as another user");
        return;
    }
    // Bind below the ephemeral range so the scan range is small and ours.
    let listener = (24960..24990)
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .expect("a free port in 24960-24989");
    let port = listener.local_addr().unwrap().port();
    let env = TestEnv::new();
    // The temp dir must be usable by the unprivileged user.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let project = env.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut cmd = env.std_cmd();
        cmd.env("HOME", env.dir.path().join("nobody-home"))
            .env("PORTHOLD_DATA_DIR", env.dir.path().join("nobody-data"))
            .env("PORTHOLD_RUNTIME_DIR", env.dir.path().join("nobody-run"))
            .uid(65534)
            .gid(65534)
            .args(args);
        cmd.output().unwrap()
    };
    let range = format!("{port}-{port}");
    let out = as_nobody(&["scan", "--range", &range]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&port.to_string()), "{text}");
    assert!(text.contains("owner unknown"), "{text}");

    let out = as_nobody(&["--json", "scan", "--range", &range]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &v["listeners"][0];
    assert_eq!(entry["port"], port);
    assert_eq!(entry["uid"], 0);
    assert!(entry["pid"].is_null() && entry["command"].is_null(), "{v}");

    let out = as_nobody(&["port-info", &port.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("owner unknown"), "{text}");

    // The control: as root the same scan names this test process.
    let out = env
        .cmd()
        .args(["--json", "scan", "--range", &range])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listeners"][0]["pid"], std::process::id());
    drop(listener);
}
