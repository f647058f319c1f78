//! `url`, `ps`, `wait` and `stop` against instances published through the
//! library's `discovery::Publisher` (by this test process, or by a child
//! process that re-runs this test binary in a "publisher" role).

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use porthold::discovery::{self, Key, Listener, Proto, Publisher, Record, State};
use util::{TestEnv, stderr_of, stdout_of};

const ROLE: &str = "PORTHOLD_TEST_PUBLISHER_ROLE";

fn publish(dir: &Path, name: &str, state: State) -> Publisher {
    discovery::ensure_runtime_dir(dir).unwrap();
    let id = discovery::new_instance_id().unwrap();
    let mut publisher = Publisher::acquire(dir, name, &id).unwrap();
    let addr = "127.0.0.1:24801".parse().unwrap();
    let key = Key {
        path: "/srv/shop".into(),
        tag: "web".into(),
    };
    let mut record = Record::new(
        name,
        &id,
        key,
        vec![Listener::inet("web", Proto::Tcp, addr)],
    )
    .unwrap();
    record.state = state;
    publisher.publish(&record).unwrap();
    publisher
}

/// The child role: publish `name` in the given runtime dir, print "ready", then sleep.
#[test]
fn publisher_role() {
    let Ok(spec) = std::env::var(ROLE) else {
        return;
    };
    let (dir, rest) = spec.split_once('|').unwrap();
    let (name, ignore_term) = rest.split_once('|').unwrap();
    if ignore_term == "1" {
        // SAFETY: installing SIG_IGN for SIGTERM in a single-purpose child process.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let _publisher = publish(Path::new(dir), name, State::Ready);
    println!("ready");
    std::thread::sleep(Duration::from_secs(120));
    std::process::exit(0);
}

fn spawn_publisher(env: &TestEnv, name: &str, ignore_term: bool) -> std::process::Child {
    let run = env.dir.path().join("run");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "publisher_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            ROLE,
            format!("{}|{name}|{}", run.display(), u8::from(ignore_term)),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while discovery::lookup(&run, name).unwrap().is_none() {
        assert!(Instant::now() < deadline, "publisher never appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("publisher exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn url_prints_the_live_instance_and_exits_1_once_it_is_gone() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let out = env
        .cmd()
        .args(["url", "--name", "shop-web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("no live instance `shop-web`"));

    let publisher = publish(&run, "shop-web", State::Ready);
    let out = env
        .cmd()
        .args(["url", "--name", "shop-web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "http://127.0.0.1:24801");
    let out = env
        .cmd()
        .args(["url", "--name", "shop-web", "--scheme", "ws", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["url"], "ws://127.0.0.1:24801");
    assert_eq!(v["instance"]["key"]["tag"], "web");

    publisher.finish().unwrap();
    let out = env
        .cmd()
        .args(["url", "--name", "shop-web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn url_finds_an_instance_by_its_key_through_the_default_name() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let name = discovery::default_name(&env.project(), "api");
    let _publisher = publish(&run, &name, State::Ready);
    let out = env.cmd().args(["url", "--tag", "api"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "http://127.0.0.1:24801");
    // Another tag of the same project is another instance.
    let out = env.cmd().args(["url", "--tag", "web"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // --name and --tag together are a usage error.
    let out = env
        .cmd()
        .args(["url", "--tag", "api", "--name", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ps_lists_live_instances_only() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let _a = publish(&run, "alpha", State::Ready);
    let _b = publish(&run, "beta", State::Starting);
    let gone = publish(&run, "gamma", State::Ready);
    gone.finish().unwrap();
    let out = env.cmd().args(["ps", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(v["instances"][1]["state"], "starting");
    let out = env.cmd().arg("ps").output().unwrap();
    let text = stdout_of(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.contains("alpha") && text.contains("web=tcp://127.0.0.1:24801"),
        "{text}"
    );
    assert!(!text.contains("gamma"));
}

#[test]
fn wait_returns_when_the_instance_becomes_ready_and_times_out_with_exit_1() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let out = env
        .cmd()
        .args(["wait", "--name", "late", "--timeout", "200ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));

    let mut publisher = publish(&run, "late", State::Starting);
    let waiter = env
        .std_cmd()
        .args(["wait", "--name", "late", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    publisher.set_state(State::Ready).unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_of(&out), "http://127.0.0.1:24801");
}

#[test]
fn stop_terminates_the_launcher_and_the_instance_disappears() {
    let env = TestEnv::new();
    let mut child = spawn_publisher(&env, "victim", false);
    let out = env
        .cmd()
        .args(["stop", "--name", "victim"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let status = child.wait().unwrap();
    assert!(!status.success(), "the publisher was terminated: {status}");
    let out = env
        .cmd()
        .args(["url", "--name", "victim"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Stopping what is not running is a negative answer.
    let out = env
        .cmd()
        .args(["stop", "--name", "victim"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stop_of_a_launcher_ignoring_sigterm_is_exit_5_then_kill_works() {
    let env = TestEnv::new();
    let mut child = spawn_publisher(&env, "stubborn", true);
    let out = env
        .cmd()
        .args(["stop", "--name", "stubborn", "--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr_of(&out));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let out = env
        .cmd()
        .args([
            "stop",
            "--name",
            "stubborn",
            "--timeout",
            "300ms",
            "--kill",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "killed");
    child.wait().unwrap();
}

/// The example of "### `porthold NAME`" in docs/cli-json.md.
fn documented(name: &str) -> serde_json::Value {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cli-json.md"
    ))
    .unwrap();
    let section = doc
        .split(&format!("\n### `porthold {name}`"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section for {name}"));
    let body = section.split("```json\n").nth(1).unwrap();
    serde_json::from_str(body.split("```").next().unwrap()).unwrap()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn json_of_url_wait_ps_and_stop_has_the_documented_keys() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let _publisher = publish(&run, "shape", State::Ready);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = env.cmd().arg("--json").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr_of(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let url = json(&["url", "--name", "shape"]);
    assert_eq!(keys(&url), keys(&documented("url")));
    let wait = json(&["wait", "--name", "shape"]);
    assert_eq!(keys(&wait), keys(&documented("wait")));
    let ps = json(&["ps"]);
    assert_eq!(
        keys(&ps["instances"][0]),
        keys(&documented("ps")["instances"][0])
    );
    assert_eq!(keys(&url["instance"]), keys(&wait));

    let mut child = spawn_publisher(&env, "stopped", false);
    let stop = json(&["stop", "--name", "stopped"]);
    assert_eq!(keys(&stop), keys(&documented("stop")));
    child.wait().unwrap();
}
