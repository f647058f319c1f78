//! `url`, `ps`, `wait` and `stop` against instances published through the
//! library's `discovery::Publisher` (by this test process, or by a child
//! process that re-runs this test binary in a "publisher" role).

mod runner;
mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use porthold::discovery::{self, Key, Listener, Proto, Publisher, Record, State};
use porthold::identity::{self, ProcessIdentity};
use util::{TestEnv, stderr_of, stdout_of};

const ROLE: &str = "PORTHOLD_TEST_PUBLISHER_ROLE";

fn shop_web() -> Key {
    Key {
        path: "/srv/shop".into(),
        tag: "web".into(),
    }
}

fn publish(dir: &Path, name: &str, state: State) -> Publisher {
    publish_for(dir, name, shop_web(), state)
}

fn publish_for(dir: &Path, name: &str, key: Key, state: State) -> Publisher {
    publish_with(dir, name, key, state, |_| {})
}

fn publish_with(
    dir: &Path,
    name: &str,
    key: Key,
    state: State,
    edit: impl FnOnce(&mut Record),
) -> Publisher {
    discovery::ensure_runtime_dir(dir).unwrap();
    let id = discovery::new_instance_id().unwrap();
    let mut publisher = Publisher::acquire(dir, name, &id).unwrap();
    let addr = "127.0.0.1:24801".parse().unwrap();
    let mut record = Record::new(
        name,
        &id,
        key,
        vec![Listener::inet("web", Proto::Tcp, addr)],
    )
    .unwrap();
    record.state = state;
    edit(&mut record);
    publisher.publish(&record).unwrap();
    publisher
}

/// The boot id a child publisher writes instead of the real one (a record from another boot).
const OTHER_BOOT: &str = "00000000-0000-4000-8000-000000000000";

/// The child role: publish `name` for key `path`/`tag` in the given runtime
/// dir (with another boot's id when asked), print "ready", then sleep.
#[test]
fn publisher_role() {
    let Ok(spec) = std::env::var(ROLE) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, name, ignore_term, path, tag, other_boot] = parts[..] else {
        panic!("bad role spec {spec}");
    };
    if ignore_term == "1" {
        // SAFETY: installing SIG_IGN for SIGTERM in a single-purpose child process.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let key = Key {
        path: path.into(),
        tag: tag.into(),
    };
    let _publisher = publish_with(Path::new(dir), name, key, State::Ready, |r| {
        if other_boot == "1" {
            r.boot_id = OTHER_BOOT.into();
        }
    });
    println!("ready");
    std::thread::sleep(Duration::from_secs(120));
    std::process::exit(0);
}

fn spawn_publisher(env: &TestEnv, name: &str, ignore_term: bool) -> std::process::Child {
    spawn_publisher_for(env, name, &shop_web(), ignore_term, false)
}

fn spawn_publisher_for(
    env: &TestEnv,
    name: &str,
    key: &Key,
    ignore_term: bool,
    other_boot: bool,
) -> std::process::Child {
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
            format!(
                "{}|{name}|{}|{}|{}|{}",
                run.display(),
                u8::from(ignore_term),
                key.path,
                key.tag,
                u8::from(other_boot)
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The child says "ready" once its record is published (after the harness's own lines).
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let said_ready =
        std::io::BufRead::lines(stdout).any(|l| l.is_ok_and(|l| l.trim_end().ends_with("ready")));
    assert!(said_ready, "publisher did not start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !other_boot && discovery::lookup(&run, name).unwrap().is_none() {
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
    let _publisher = publish_for(&run, &name, Key::new(&env.project(), "api"), State::Ready);
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

#[test]
fn a_key_lookup_never_returns_another_keys_instance_under_the_same_name() {
    let env = TestEnv::new();
    // Another key's instance sits under this key's default name (a name it
    // chose with --name, or two keys meeting one name).
    let name = discovery::default_name(&env.project(), "api");
    let mut other = spawn_publisher_for(&env, &name, &shop_web(), false, false);
    let out = env.cmd().args(["url", "--tag", "api"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no live instance for key")
            && stderr_of(&out).contains("/srv/shop (tag web)"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(stdout_of(&out), "");
    let out = env
        .cmd()
        .args(["wait", "--tag", "api", "--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .args(["ps", "--tag", "api", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instances"], serde_json::json!([]), "{v}");
    let out = env.cmd().args(["stop", "--tag", "api"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        other.try_wait().unwrap().is_none(),
        "stop of one key signalled another key's instance"
    );
    // By name, it is found.
    let out = env.cmd().args(["url", "--name", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn ps_filters_by_path_and_tag_and_ends_with_a_newline() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let project = env.project();
    let _web = publish_for(&run, "p-web", Key::new(&project, "web"), State::Ready);
    let _api = publish_for(&run, "p-api", Key::new(&project, "api"), State::Ready);
    let _elsewhere = publish(&run, "elsewhere", State::Ready);
    let names = |args: &[&str]| -> Vec<String> {
        let out = env
            .cmd()
            .args(["ps", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&[]), ["elsewhere", "p-api", "p-web"]);
    assert_eq!(names(&["--tag", "web"]), ["p-web"]);
    let path = project.to_str().unwrap();
    assert_eq!(names(&["--path", path]), ["p-api", "p-web"]);
    assert_eq!(
        names(&["--path", "/srv/shop", "--tag", "web"]),
        ["elsewhere"]
    );
    let out = env.cmd().arg("ps").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
}

#[test]
fn url_accepts_only_well_formed_schemes() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    let _publisher = publish(&run, "schemes", State::Ready);
    for good in ["http", "https", "ws", "git+ssh", "a.b-c", "h2"] {
        let out = env
            .cmd()
            .args(["url", "--name", "schemes", "--scheme", good])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr_of(&out));
        assert_eq!(stdout_of(&out), format!("{good}://127.0.0.1:24801"));
    }
    for bad in [
        "", "HTTP", "1http", "+x", "ht tp", "http:", "http://", "a/b", "é",
    ] {
        let out = env
            .cmd()
            .args(["url", "--name", "schemes", "--scheme", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr_of(&out));
        assert_eq!(stdout_of(&out), "", "{bad:?}");
    }
}

#[test]
fn rejected_records_are_no_live_instance_with_a_warning_not_a_registry_error() {
    let env = TestEnv::new();
    let run = env.dir.path().join("run");
    discovery::ensure_runtime_dir(&run).unwrap();
    type Plant<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Plant); 3] = [
        ("symlinked", &|p: &Path| {
            std::os::unix::fs::symlink("/etc/hostname", p).unwrap()
        }),
        ("halfwritten", &|p: &Path| {
            std::fs::write(p, b"{\"schema\": \"1.1\", \"name\": ").unwrap()
        }),
        ("newmajor", &|p: &Path| {
            std::fs::write(p, b"{\"schema\": \"2.0\", \"name\": \"newmajor\"}").unwrap()
        }),
    ];
    for (name, plant) in cases {
        // The lock is held (a live owner), and the record is untrustworthy.
        let id = discovery::new_instance_id().unwrap();
        let publisher = Publisher::acquire(&run, name, &id).unwrap();
        plant(&run.join(format!("{name}.json")));
        for cmd in [
            vec!["url", "--name", name],
            vec!["stop", "--name", name],
            vec!["wait", "--name", name, "--timeout", "1s"],
        ] {
            let out = env.cmd().args(&cmd).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {}", stderr_of(&out));
            let err = stderr_of(&out);
            assert!(
                err.contains("warning:") && err.contains("rejected"),
                "{cmd:?}: {err}"
            );
        }
        let out = env.cmd().arg("ps").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("rejected"), "{}", stderr_of(&out));
        drop(publisher);
    }
}

#[test]
fn a_record_from_another_boot_is_not_alive_through_url_ps_and_stop() {
    let env = TestEnv::new();
    // A live process with the recorded pid and start time, holding the lock,
    // but the record says another boot: the pid names a different process.
    let mut child = spawn_publisher_for(&env, "oldboot", &shop_web(), false, true);
    let run = env.dir.path().join("run");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("oldboot.json")).unwrap()).unwrap();
    assert_eq!(record["boot_id"], OTHER_BOOT);
    assert_eq!(record["pid"], child.id());
    let now = ProcessIdentity::of(child.id()).unwrap().unwrap();
    assert_eq!(
        record["starttime"], now.starttime,
        "same pid and start time"
    );

    let out = env
        .cmd()
        .args(["url", "--name", "oldboot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "");
    let out = env.cmd().args(["ps", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instances"], serde_json::json!([]), "{v}");
    let out = env
        .cmd()
        .args(["stop", "--name", "oldboot", "--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        child.try_wait().unwrap().is_none(),
        "stop signalled a process by a record of another boot"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn stop_all_tags_and_stop_all_stop_every_matching_instance() {
    let env = TestEnv::new();
    let project = env.project();
    let project_text = project.to_string_lossy().into_owned();
    let key = |tag: &str| Key {
        path: project_text.clone(),
        tag: tag.into(),
    };
    let mut web = spawn_publisher_for(&env, "mine-web", &key("web"), false, false);
    let mut api = spawn_publisher_for(&env, "mine-api", &key(""), false, false);
    let mut other = spawn_publisher_for(&env, "other", &shop_web(), false, false);

    // Plain stop of a tag with nothing running names what does run there.
    let out = env.cmd().args(["stop", "--tag", "db"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("mine-web") && err.contains("mine-api"),
        "{err}"
    );
    assert!(!err.contains("`other`"), "{err}");

    let out = env
        .cmd()
        .args(["stop", "--all-tags", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut stopped: Vec<&str> = v["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    stopped.sort();
    assert_eq!(stopped, ["mine-api", "mine-web"]);
    web.wait().unwrap();
    api.wait().unwrap();
    assert!(
        other.try_wait().unwrap().is_none(),
        "another path was stopped"
    );

    let out = env.cmd().args(["stop", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    other.wait().unwrap();
    // --all with nothing left is still success; --all and --name do not mix.
    let out = env.cmd().args(["stop", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .args(["stop", "--all", "--name", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

/// Pids (with identities) of every descendant of `root` now.
fn tree_of(root: u32) -> Vec<ProcessIdentity> {
    identity::descendants_in(&identity::processes(), root)
}

/// A `sleep` duration unique to this test process, to find its sleeps by.
fn marker(seconds: u32) -> String {
    format!("{seconds}.{}", std::process::id())
}

/// Live `sleep` processes whose command line contains `marker` (not the
/// launcher or shell whose command line merely mentions it).
fn sleeps_with(marker: &str) -> Vec<u32> {
    runner::processes_with(marker)
        .into_iter()
        .filter(|pid| identity::comm(*pid).as_deref() == Some("sleep"))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stop_kill_ends_a_term_ignoring_server_tree_and_frees_the_port() {
    let env = TestEnv::new();
    let (a, b) = (marker(30511), marker(30512));
    let script = format!("trap '' TERM; sleep {a} & exec sleep {b}");
    let mut launcher = runner::spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "stubtree",
            "--drain-timeout",
            "120s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let live = runner::wait_ready(&env, "stubtree", &mut launcher);
    let addr = live.record.listeners[0].socket_addr().unwrap();
    let tree = tree_of(launcher.id());
    wait_until("both sleeps", || {
        sleeps_with(&a).len() == 1 && sleeps_with(&b).len() == 1
    });
    let tree = if tree.len() >= 2 {
        tree
    } else {
        tree_of(launcher.id())
    };
    assert!(tree.len() >= 2, "{tree:?}");
    let out = env
        .cmd()
        .args([
            "stop",
            "--name",
            "stubtree",
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
    launcher.wait().unwrap();
    for p in &tree {
        assert!(
            !p.is_alive(),
            "{p:?} of the instance's tree survived stop --kill"
        );
    }
    assert!(sleeps_with(&a).is_empty());
    assert!(sleeps_with(&b).is_empty());
    std::net::TcpListener::bind(addr).expect("the port is free after stop --kill");
}

/// A port below the ephemeral range that is free now.
fn free_low_port() -> u16 {
    let start = 20000 + (std::process::id() % 9000) as u16;
    (start..start + 1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

#[test]
fn a_new_run_after_the_launcher_was_sigkilled_ends_the_leftover_group() {
    let env = TestEnv::new();
    let port = free_low_port();
    let listen = format!("web=tcp://127.0.0.1:{port}");
    let a = marker(30521);
    let script = format!("sleep {a} & sleep {a} & wait");
    let mut first = runner::spawn_run(
        &env,
        &[
            "--listen", &listen, "--name", "orphans", "--", "sh", "-c", &script,
        ],
    );
    let live = runner::wait_ready(&env, "orphans", &mut first);
    let pgid = live
        .record
        .pgid
        .expect("the record names the server's group");
    assert_eq!(Some(pgid), live.record.child_pid);
    wait_until("both sleeps", || sleeps_with(&a).len() == 2);
    let sleeps = sleeps_with(&a);

    runner::signal(first.id(), libc::SIGKILL);
    first.wait().unwrap();
    // The parent-death signal ends the shell; the sleeps it started keep the
    // socket (and would keep the port) with nobody left to end them.
    let me = rustix::process::geteuid().as_raw();
    assert!(
        !identity::group_members_since(pgid, 0, me).is_empty(),
        "the leftovers are still there"
    );

    let mut second = runner::spawn_run(
        &env,
        &[
            "--listen", &listen, "--name", "orphans", "--", "sleep", "30522",
        ],
    );
    let live2 = runner::wait_ready(&env, "orphans", &mut second);
    assert_ne!(live2.record.instance_id, live.record.instance_id);
    for pid in sleeps {
        assert!(
            identity::stat(pid)
                .unwrap()
                .is_none_or(|s| s.is_exited() || s.pgrp != pgid),
            "leftover sleep {pid} survived the new run"
        );
    }
    assert!(identity::group_members_since(pgid, live.record.starttime, me).is_empty());
    let out = env
        .cmd()
        .args(["stop", "--name", "orphans"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    second.wait().unwrap();
}

#[test]
fn run_of_another_key_under_a_taken_name_names_both_keys() {
    let env = TestEnv::new();
    let mut first = runner::spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "shared",
            "--tag",
            "alpha",
            "--",
            "sleep",
            "30531",
        ],
    );
    runner::wait_ready(&env, "shared", &mut first);
    let out = env
        .cmd()
        .args([
            "run",
            "--ephemeral",
            "--name",
            "shared",
            "--tag",
            "beta",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("(tag alpha)") && err.contains("(tag beta)"),
        "{err}"
    );
    let out = env
        .cmd()
        .args(["stop", "--name", "shared"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    first.wait().unwrap();
}

#[test]
fn stop_waits_for_the_recorded_drain_timeout_by_default() {
    // The launcher itself kills a TERM-ignoring server after its drain
    // timeout; stop's default wait covers that (drain timeout + 5 s), so the
    // outcome is "stopped", not "busy", even for a drain timeout above 30 s.
    let env = TestEnv::new();
    let mut launcher = runner::spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "drainer",
            "--drain-timeout",
            "31s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; exec sleep 30541",
        ],
    );
    let live = runner::wait_ready(&env, "drainer", &mut launcher);
    assert_eq!(live.record.drain_timeout_ms, Some(31_000));
    let out = env
        .cmd()
        .args(["stop", "--name", "drainer", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "stopped");
    launcher.wait().unwrap();
}

#[test]
fn reserve_run_list_scan_and_port_info_recognise_the_keys_own_instance() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .args(["reserve", "--tag", "own"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let port: u16 = stdout_of(&out).parse().unwrap();
    let name = discovery::default_name(&env.project(), "own");
    let mut launcher = runner::spawn_run(&env, &["--tag", "own", "--", "sleep", "30551"]);
    let live = runner::wait_ready(&env, &name, &mut launcher);
    assert!(live.record.listens_on(port));
    let server = live.record.child_pid.unwrap().to_string();

    // The key's own instance holds the key's port: that is no reason to warn.
    let out = env
        .cmd()
        .args(["reserve", "--tag", "own"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), port.to_string());
    assert!(!stderr_of(&out).contains("in use"), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .args(["run", "--tag", "own", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        !stderr_of(&out).contains("--reassign"),
        "{}",
        stderr_of(&out)
    );

    // list, scan and port-info name the instance and its server.
    let expected = format!("instance {name} (server pid {server})");
    let out = env.cmd().arg("list").output().unwrap();
    assert!(stdout_of(&out).contains(&expected), "{}", stdout_of(&out));
    let range = format!("{port}-{port}");
    let out = env
        .cmd()
        .args(["scan", "--range", &range])
        .output()
        .unwrap();
    assert!(stdout_of(&out).contains(&expected), "{}", stdout_of(&out));
    let out = env
        .cmd()
        .args(["port-info", &port.to_string()])
        .output()
        .unwrap();
    assert!(stdout_of(&out).contains(&expected), "{}", stdout_of(&out));
    let out = env
        .cmd()
        .args(["--json", "port-info", &port.to_string()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sockets"][0]["instance"]["name"], name.as_str());

    // Another key's reserve on a port a foreign process holds still warns.
    let out = env
        .cmd()
        .args(["reserve", "--tag", "foreign"])
        .output()
        .unwrap();
    let foreign: u16 = stdout_of(&out).parse().unwrap();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", foreign)).unwrap();
    let out = env
        .cmd()
        .args(["reserve", "--tag", "foreign"])
        .output()
        .unwrap();
    assert!(stderr_of(&out).contains("in use"), "{}", stderr_of(&out));

    let out = env.cmd().args(["stop", "--tag", "own"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    launcher.wait().unwrap();
}

#[test]
fn stop_of_a_name_whose_launcher_was_sigkilled_ends_the_leftover_group() {
    let env = TestEnv::new();
    let a = marker(30561);
    let script = format!("sleep {a} & sleep {a} & wait");
    let mut launcher = runner::spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "deadlauncher",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let live = runner::wait_ready(&env, "deadlauncher", &mut launcher);
    let pgid = live
        .record
        .pgid
        .expect("the record names the server's group");
    wait_until("both sleeps", || sleeps_with(&a).len() == 2);
    runner::signal(launcher.id(), libc::SIGKILL);
    launcher.wait().unwrap();
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(
        identity::group_members_since(pgid, live.record.starttime, me).len(),
        2
    );

    // Nothing live to stop (exit 1), but stop takes the free lock as a new
    // owner would, and ends what the dead launcher left.
    let out = env
        .cmd()
        .args(["stop", "--name", "deadlauncher"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("ended 2 leftover process(es)"),
        "{}",
        stderr_of(&out)
    );
    assert!(identity::group_members_since(pgid, live.record.starttime, me).is_empty());
    assert!(sleeps_with(&a).is_empty());
    assert!(!env.dir.path().join("run/deadlauncher.json").exists());
}
