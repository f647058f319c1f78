//! Several `supervisor::instance::run` instances live in one embedding
//! process, independently: each waits for its own child by its own pid, so the
//! embedder's own children (spawned with `std::process::Command`) keep their
//! real exit statuses, stopping one instance never touches another's server,
//! and the library never makes the process a child subreaper.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use porthold::discovery;
use porthold::supervisor::instance::{self, RunOptions};
use porthold::supervisor::signals::SignalAction;
use rustix::process::Signal;

fn options(runtime_dir: &Path, name: &str, command: &[&str]) -> RunOptions {
    let key = discovery::Key {
        path: format!("/embedded/{name}"),
        tag: String::new(),
    };
    RunOptions::new(
        runtime_dir,
        name,
        key,
        command.iter().map(Into::into).collect(),
    )
}

fn is_subreaper() -> bool {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one c_int through the pointer,
    // which points to a live local.
    let rc = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int) };
    assert_eq!(rc, 0, "prctl(PR_GET_CHILD_SUBREAPER)");
    flag != 0
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive: read the state from /proc.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['R', 'S', 'D']))
        })
        .unwrap_or(false)
}

#[test]
fn two_instances_and_the_embedders_own_children_do_not_disturb_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    discovery::ensure_runtime_dir(&runtime_dir).unwrap();

    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for name in ["first", "second"] {
        let (stop, source) = mpsc::channel::<SignalAction>();
        let options = options(&runtime_dir, name, &["sleep", "1000"]);
        stops.push(stop);
        threads.push(std::thread::spawn(move || instance::run(options, source)));
    }
    let mut servers = Vec::new();
    for name in ["first", "second"] {
        let live = discovery::wait(&runtime_dir, name, None, true, Duration::from_secs(60))
            .expect("the instance became ready");
        servers.push(live.record.child_pid.expect("a child pid"));
    }
    assert!(
        !is_subreaper(),
        "the library made the embedding process a subreaper"
    );

    // The embedder's own children, exiting while both instances supervise:
    // each status reaches the embedder, many times over.
    for round in 0..50 {
        let code = round % 7 + 1;
        let mut child = Command::new("sh")
            .args(["-c", &format!("exit {code}")])
            .spawn()
            .unwrap();
        // Let it exit (and be a zombie) before we wait: a stray waitpid(-1)
        // anywhere in the process would take it first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(child.id()) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let status = child.wait().expect("the embedder's child was not stolen");
        assert_eq!(status.code(), Some(code), "round {round}");
    }

    // Stopping the first instance leaves the second one's server running.
    stops[0].send(SignalAction::Stop(Signal::TERM)).unwrap();
    let first = threads.remove(0).join().unwrap().expect("run");
    assert_eq!(first, 128 + libc::SIGTERM);
    assert!(!alive(servers[0]), "the first server survived its stop");
    assert!(
        alive(servers[1]),
        "stopping one instance ended another's server"
    );
    let second = discovery::probe(&runtime_dir, "second").unwrap();
    assert!(second.record.is_some(), "the second record is still there");

    stops[1].send(SignalAction::Stop(Signal::TERM)).unwrap();
    let second = threads.remove(0).join().unwrap().expect("run");
    assert_eq!(second, 128 + libc::SIGTERM);
    assert!(!alive(servers[1]));
}

#[test]
fn a_server_that_exits_by_itself_reports_its_own_code_beside_the_embedders_children() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    discovery::ensure_runtime_dir(&runtime_dir).unwrap();
    for round in 0..20 {
        let code = 40 + round;
        let (_stop, source) = mpsc::channel::<SignalAction>();
        let name = format!("exits-{round}");
        let options = options(&runtime_dir, &name, &["sh", "-c", &format!("exit {code}")]);
        let instance = std::thread::spawn(move || instance::run(options, source));
        // Meanwhile the embedder's own child exits with another code.
        let mut mine = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        assert_eq!(mine.wait().unwrap().code(), Some(3), "round {round}");
        assert_eq!(
            instance.join().unwrap().expect("run"),
            code,
            "round {round}"
        );
    }
}
