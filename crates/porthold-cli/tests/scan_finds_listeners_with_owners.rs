//! `scan` and `port-info`: listeners from /proc with their owner's pid and
//! command, marked reserved or unreserved; `--autoexclude` turns unreserved
//! listeners into exclusions.

mod support;
mod util;

use std::net::{TcpListener, UdpSocket};

use support::{fails, json, ok, redact};
use util::TestEnv;

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn scan_finds_a_listener_with_its_pid_and_command_and_autoexclude_excludes_it() {
    let env = TestEnv::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let range = format!("{port}-{port}");
    let me = std::process::id();

    let human = ok(&env, &["scan", "--range", &range]);
    let line = human
        .lines()
        .find(|l| l.starts_with(&port.to_string()))
        .unwrap_or_else(|| panic!("port {port} missing from scan:\n{human}"));
    assert!(line.contains(&format!(" {me} ")), "{line}");
    assert!(line.contains(&my_comm()), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    assert!(line.ends_with("unreserved"), "{line}");

    let value = json(&env, &["scan", "--range", &range]);
    let found = value["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == port && l["proto"] == "tcp")
        .cloned()
        .unwrap_or_else(|| panic!("{value}"));
    assert_eq!(found["pid"], me);
    assert_eq!(found["command"], my_comm());
    assert_eq!(found["addr"], "127.0.0.1");
    assert_eq!(found["reserved"], false);
    assert_eq!(found["excluded"], false);

    let value = json(&env, &["scan", "--range", &range, "--autoexclude"]);
    assert_eq!(value["autoexcluded"], serde_json::json!([port]));
    let exclusions = json(&env, &["exclude"]);
    let row = &exclusions["exclusions"][0];
    assert_eq!(row["start"], port);
    assert_eq!(row["end"], port);
    assert_eq!(
        row["note"],
        format!("scan: pid {me} ({})", my_comm()).as_str()
    );
    // A second scan shows it excluded and excludes nothing new.
    let value = json(&env, &["scan", "--range", &range, "--autoexclude"]);
    assert_eq!(value["autoexcluded"], serde_json::json!([]));
    assert_eq!(value["listeners"][0]["excluded"], true);
    // And the port is never handed out now.
    fails(
        &env,
        &[
            "reserve",
            "--port",
            &port.to_string(),
            "--skip-occupancy-check",
        ],
        3,
    );
    drop(listener);
}

#[test]
fn a_reserved_listener_is_marked_and_not_autoexcluded() {
    let env = TestEnv::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "web",
            "--port",
            &port.to_string(),
            "--skip-occupancy-check",
        ],
    );
    let lo = port.min(udp_port);
    let hi = port.max(udp_port);
    let value = json(
        &env,
        &["scan", "--range", &format!("{lo}-{hi}"), "--autoexclude"],
    );
    let listeners = value["listeners"].as_array().unwrap();
    let tcp = listeners
        .iter()
        .find(|l| l["port"] == port && l["proto"] == "tcp")
        .unwrap();
    assert_eq!(tcp["reserved"], true);
    assert_eq!(tcp["reservation"]["tag"], "web");
    assert_eq!(tcp["excluded"], false);
    let udp_row = listeners
        .iter()
        .find(|l| l["port"] == udp_port && l["proto"] == "udp")
        .unwrap_or_else(|| panic!("udp socket missing: {value}"));
    assert_eq!(udp_row["pid"], std::process::id());
    let autoexcluded = value["autoexcluded"].as_array().unwrap();
    assert!(!autoexcluded.contains(&port.into()), "{value}");
    assert!(autoexcluded.contains(&udp_port.into()), "{value}");
    let human = ok(&env, &["scan", "--range", &format!("{port}-{port}")]);
    assert!(human.contains("reserved by"), "{human}");
    assert!(human.contains("(tag web)"), "{human}");
}

#[test]
fn port_info_reports_reservation_exclusion_occupancy_and_owner() {
    let env = TestEnv::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    ok(
        &env,
        &[
            "reserve",
            "--tag",
            "api",
            "--port",
            &port.to_string(),
            "--skip-occupancy-check",
        ],
    );
    let value = json(&env, &["port-info", &port.to_string()]);
    assert_eq!(value["port"], port);
    assert_eq!(value["occupancy"], "busy");
    assert_eq!(value["reservation"]["tag"], "api");
    assert_eq!(value["sockets"][0]["pid"], std::process::id());
    assert_eq!(value["sockets"][0]["command"], my_comm());
    let human = ok(&env, &["port-info", &port.to_string()]);
    assert!(human.contains("occupancy:   in use"), "{human}");
    assert!(
        human.contains(&format!("pid {} ({})", std::process::id(), my_comm())),
        "{human}"
    );
}

#[test]
fn port_info_of_a_quiet_port_is_a_stable_report() {
    let env = TestEnv::new();
    ok(&env, &["exclude", "24410-24419", "--note", "lab"]);
    let out = ok(&env, &["port-info", "24411"]);
    insta::assert_snapshot!(redact(&out, env.dir.path()));
}

#[test]
fn bad_arguments_are_exit_2() {
    let env = TestEnv::new();
    fails(&env, &["port-info", "0"], 2);
    fails(&env, &["port-info", "x"], 2);
    fails(&env, &["scan", "--range", "9-1"], 2);
}
