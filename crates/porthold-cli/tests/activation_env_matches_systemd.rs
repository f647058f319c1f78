//! A child started by a launcher sees the activation environment and fd set
//! that `systemd-socket-activate --fdname=web` gives it. The probe child (this
//! binary in role `probe`) reports what it saw as the HTTP response to the first
//! connection, which is also the connection that makes systemd-socket-activate
//! start it.

mod activation_support;

use std::collections::BTreeMap;

use activation_support::{
    Launcher, body, parse_report, role_argv, run_role_if_requested, serve_one,
};

/// Entry point of the child roles; a no-op in a normal test run.
#[test]
fn role_entry() {
    run_role_if_requested();
}

/// Every launcher whose child environment must match systemd-socket-activate's.
const LAUNCHERS: &[Launcher] = &[Launcher::SystemdSocketActivate, Launcher::PortholdRun];

/// Runs the probe under `launcher` with one TCP socket named `web`.
fn probe_under(launcher: Launcher) -> BTreeMap<String, String> {
    let (argv, role) = role_argv("probe");
    let response = serve_one(launcher, "web", &[role], &argv);
    let report = parse_report(body(&response));
    assert!(
        report.contains_key("LISTEN_FDS"),
        "{launcher:?}: not a probe report: {response:?}"
    );
    report
}

/// The parts of a report that must not depend on the launcher (the socket's
/// inode and port differ from run to run).
fn launcher_independent(report: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    report
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "FD3" | "FD3_LOCAL"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn child_receives_same_env_as_systemd_socket_activate() {
    let reference = Launcher::SystemdSocketActivate;
    if let Err(reason) = reference.available() {
        porthold::test_hooks::skip(&reason);
        return;
    }
    let expected = probe_under(reference);
    // What systemd-socket-activate gives: one fd at 3, inherited without
    // close-on-exec, named `web`, LISTEN_PID the child's own pid, and nothing
    // but 0, 1, 2 and 3 open.
    assert_eq!(expected["LISTEN_FDS"], "1", "{expected:#?}");
    assert_eq!(expected["LISTEN_FDNAMES"], "web", "{expected:#?}");
    assert_eq!(expected["LISTEN_PID_IS_SELF"], "true", "{expected:#?}");
    assert_eq!(expected["FDS"], "0,1,2,3", "{expected:#?}");
    assert!(expected["FD3"].starts_with("socket:["), "{expected:#?}");
    assert_eq!(expected["FD3_CLOEXEC"], "false", "{expected:#?}");
    // And what our receive side made of it.
    assert_eq!(expected["TAKEN"], "1", "{expected:#?}");
    assert_eq!(expected["FD3_CLOEXEC_AFTER_TAKE"], "true", "{expected:#?}");
    assert!(
        expected["FD3_LOCAL"].starts_with("127.0.0.1:"),
        "{expected:#?}"
    );

    let expected = launcher_independent(&expected);
    for &launcher in LAUNCHERS {
        if let Err(reason) = launcher.available() {
            porthold::test_hooks::skip(&format!("{launcher:?}: {reason}"));
            continue;
        }
        let got = launcher_independent(&probe_under(launcher));
        assert_eq!(
            got, expected,
            "{launcher:?} differs from systemd-socket-activate"
        );
    }
}
