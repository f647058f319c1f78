//! A session that breaks the protocol — a frame over the cap, a truncated
//! frame, garbage JSON, another protocol version, a reply sent as a request,
//! an unknown message, a request id used twice — gets a protocol error and is
//! closed; the serve loop stays alive and the next connection is served. A
//! silent peer is cut off by the session timeout without holding up others,
//! and a slow request (a reload) does not keep a second client from hearing
//! "in progress".

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use porthold::control::frame::{Frame, FrameDecoder, MAX_FRAME};
use porthold::control::{ControlClient, ControlServer, Request, Response, ShutdownHandle};

const WAIT: Duration = Duration::from_secs(20);

struct StopOnDrop(ShutdownHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

fn status_works(path: &Path) {
    let mut client = ControlClient::connect(path).unwrap();
    let reply = client.request(&Request::Status, WAIT).unwrap();
    assert_eq!(
        reply,
        Response::Status {
            status: serde_json::json!({"state": "ready"})
        }
    );
}

/// Writes `bytes` (then half-closes when `half_close`), and returns every frame
/// the server sent before it closed the connection.
fn exchange(path: &Path, bytes: &[u8], half_close: bool) -> Vec<Frame> {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The server may close before reading everything (a length over the cap):
    // a failed write is part of the behaviour under test, not an error.
    let _ = stream.write_all(bytes);
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got); // ends at EOF (closed) or ECONNRESET
    let mut decoder = FrameDecoder::new();
    decoder.feed(&got);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        frames.push(frame);
    }
    decoder.finish().unwrap();
    frames
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn is_protocol_error(frame: &Frame) -> bool {
    frame.msg["type"] == "protocol_error"
}

fn handler(request: Request) -> Response {
    match request {
        Request::Status => Response::Status {
            status: serde_json::json!({"state": "ready"}),
        },
        Request::Reload { .. } => Response::Unsupported {
            reason: "test".into(),
        },
        _ => Response::Unsupported {
            reason: "unknown".into(),
        },
    }
}

#[test]
fn each_malformed_session_is_closed_and_the_next_connection_is_served() {
    let dir = private_dir();
    let server = ControlServer::bind(dir.path(), "web").unwrap();
    let path = server.path().to_owned();
    let good = Request::Status.to_frame("one").unwrap().encode().unwrap();
    let mut wrong_version = Request::Status.to_frame("v2").unwrap();
    wrong_version.v = 2;
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "length over the cap",
            (MAX_FRAME + 1).to_be_bytes().to_vec(),
            false,
        ),
        ("truncated frame", good[..good.len() - 3].to_vec(), true),
        ("truncated prefix", vec![0, 0], true),
        ("garbage JSON", framed(b"{nope"), false),
        ("not a frame object", framed(b"[1,2,3]"), false),
        ("another version", wrong_version.encode().unwrap(), false),
        (
            "a reply sent as a request",
            Response::Reloaded { pid: 1 }
                .to_frame("r")
                .unwrap()
                .encode()
                .unwrap(),
            false,
        ),
        (
            "an unknown message",
            framed(br#"{"v":1,"id":"u","msg":{"type":"self_destruct"}}"#),
            false,
        ),
        (
            "no request id",
            framed(br#"{"v":1,"msg":{"type":"status"}}"#),
            false,
        ),
    ];
    let stop = server.shutdown_handle();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        let serving = s.spawn(|| server.serve(&handler));
        for (i, (what, bytes, half_close)) in cases.iter().enumerate() {
            let frames = exchange(&path, bytes, *half_close);
            assert_eq!(
                frames.len(),
                1,
                "{what}: expected one protocol error, got {frames:?}"
            );
            assert!(is_protocol_error(&frames[0]), "{what}: {frames:?}");
            assert_eq!(server.stats().protocol_errors, i as u64 + 1, "{what}");
            status_works(&path);
        }
        // A request id used twice in one session: the first is answered, the
        // second ends the session.
        let mut twice = good.clone();
        twice.extend_from_slice(&good);
        let frames = exchange(&path, &twice, false);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0].msg["type"], "status");
        assert_eq!(frames[0].id.as_deref(), Some("one"));
        assert!(is_protocol_error(&frames[1]), "{frames:?}");
        status_works(&path);
        assert_eq!(server.stats().requests, cases.len() as u64 + 2);
        stop.shutdown();
        serving.join().unwrap().unwrap();
    });
}

/// The client turns a protocol error and a reply to another request id into
/// `Error::ControlProtocol` (a hand-written server plays the other side).
#[test]
fn a_client_sees_protocol_errors_and_foreign_ids_as_typed_errors() {
    let dir = private_dir();
    let path = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let replies = [
        Response::ProtocolError {
            reason: "no".into(),
        }
        .to_frame("x")
        .unwrap(),
        Response::InProgress.to_frame("someone-else").unwrap(),
    ];
    std::thread::scope(|s| {
        s.spawn(|| {
            for reply in &replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = porthold::control::frame::FrameReader::new(&stream);
                reader.read_frame().unwrap();
                porthold::control::frame::send_frame(&stream, reply).unwrap();
            }
        });
        for _ in &replies {
            let mut client = ControlClient::connect(&path).unwrap();
            let got = client.request(&Request::Status, WAIT);
            assert!(
                matches!(got, Err(porthold::Error::ControlProtocol { .. })),
                "{got:?}"
            );
        }
    });
}

#[test]
fn a_silent_peer_is_cut_off_without_holding_up_others() {
    let dir = private_dir();
    let mut server = ControlServer::bind(dir.path(), "web").unwrap();
    server.set_session_timeout(Duration::from_millis(300));
    let path = server.path().to_owned();
    let stop = server.shutdown_handle();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        let server = &server;
        s.spawn(move || server.serve(&handler));
        let mut silent = UnixStream::connect(&path).unwrap();
        // A peer that trickles half a prefix does not extend its deadline.
        silent.write_all(&[0]).unwrap();
        status_works(&path);
        silent.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        let n = silent.read(&mut buf).unwrap();
        assert_eq!(n, 0, "the silent session must be closed by the server");
        assert_eq!(server.stats().timed_out, 1);
        status_works(&path);
    });
}

#[test]
fn a_second_reload_during_a_slow_one_hears_in_progress() {
    let dir = private_dir();
    let server = ControlServer::bind(dir.path(), "web").unwrap();
    let path = server.path().to_owned();
    let running = AtomicBool::new(false);
    let calls = AtomicU64::new(0);
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let release_rx = Mutex::new(release_rx);
    let reload = |request: Request| -> Response {
        calls.fetch_add(1, Ordering::SeqCst);
        match request {
            Request::Reload { .. } => {
                if running.swap(true, Ordering::SeqCst) {
                    return Response::InProgress;
                }
                started_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(WAIT).unwrap();
                running.store(false, Ordering::SeqCst);
                Response::Reloaded { pid: 4242 }
            }
            other => handler(other),
        }
    };
    let request = Request::Reload {
        check: Some("true".into()),
        timeout_ms: 60_000,
    };
    let stop = server.shutdown_handle();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        s.spawn(|| server.serve(&reload));
        let request = &request;
        let path = &path;
        let first = s.spawn(move || {
            let mut client = ControlClient::connect(path).unwrap();
            client.request(request, WAIT).unwrap()
        });
        started_rx.recv_timeout(WAIT).unwrap();
        let mut second = ControlClient::connect(path).unwrap();
        assert_eq!(second.request(request, WAIT).unwrap(), Response::InProgress);
        // The same session goes on serving requests.
        assert!(matches!(
            second.request(&Request::Status, WAIT).unwrap(),
            Response::Status { .. }
        ));
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Response::Reloaded { pid: 4242 });
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    });
}

/// A runtime directory as `discovery::ensure_runtime_dir` makes it: 0700.
fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn a_panicking_handler_ends_its_session_only() {
    let dir = private_dir();
    let server = ControlServer::bind(dir.path(), "web").unwrap();
    let path = server.path().to_owned();
    let panicky = |request: Request| -> Response {
        if let Request::Reload { timeout_ms: 1, .. } = request {
            panic!("handler bug (expected by this test)");
        }
        handler(request)
    };
    let stop = server.shutdown_handle();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        let serving = s.spawn(|| server.serve(&panicky));
        let mut client = ControlClient::connect(&path).unwrap();
        let got = client.request(
            &Request::Reload {
                check: None,
                timeout_ms: 1,
            },
            WAIT,
        );
        assert!(matches!(got, Err(porthold::Error::Frame(_))), "{got:?}");
        status_works(&path);
        stop.shutdown();
        serving.join().unwrap().unwrap();
    });
}
