//! A load harness for restart tests (REQUIREMENTS.md Part II §4), shared by
//! test files with `mod load;`.
//!
//! - [`Load::start`]: client threads making short connections (connect, send
//!   a request line, read the reply to EOF, close) to one address at a target
//!   rate, bounded in count and time; [`Load::finish`] gives a [`LoadReport`]:
//!   refused, reset, timeouts, short replies, latency percentiles, and the
//!   `TcpExtListenOverflows` / `TcpExtListenDrops` deltas of /proc/net/netstat.
//! - [`listener_inode`]: the inode of the socket listening on a port, as held
//!   by a given pid (`/proc/<pid>/fd` ∩ `/proc/net/tcp`).
//! - Two restart strategies over the `ok_server` example (run as this test
//!   binary in a role, see [`server_role`]): [`NaiveRestart`] (stop, then a
//!   new server binds the port itself: the negative control) and
//!   [`HeldSocketHandover`] (the test holds the listening socket; generation
//!   n+1 gets it as fd 3, and n is stopped once n+1 is ready).
//!
//! Test servers listen on ports below the ephemeral range ([`free_port`]), so
//! the load generator's own client ports cannot collide with them.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use porthold::activation::{Child, SpawnRequest};
use rustix::process::Signal;

/// The environment variable that makes this test binary run as `ok_server`.
pub const SERVER_ROLE: &str = "PORTHOLD_TEST_OK_SERVER";

/// What the load generator does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub threads: usize,
    /// Target new connections per second, over all threads.
    pub rate: u32,
    /// Stop after this many connections in total…
    pub max_connections: u64,
    /// …or after this long, whichever comes first.
    pub max_duration: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl LoadConfig {
    pub fn new(addr: SocketAddr, rate: u32, max_duration: Duration) -> LoadConfig {
        LoadConfig {
            addr,
            threads: 4,
            rate,
            max_connections: u64::from(rate) * max_duration.as_secs().max(1) * 2,
            max_duration,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Tally {
    connections: u64,
    ok: u64,
    refused: u64,
    reset: u64,
    timeouts: u64,
    short: u64,
    other: Vec<String>,
    latencies_us: Vec<u64>,
}

/// The outcome of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub connections: u64,
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub timeouts: u64,
    /// Replies other than exactly `ok\n` (empty included).
    pub short: u64,
    /// Other errors, with their text.
    pub other: Vec<String>,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

impl LoadReport {
    pub fn failures(&self) -> u64 {
        self.refused + self.reset + self.timeouts + self.short + self.other.len() as u64
    }

    pub fn rate(&self) -> f64 {
        self.connections as f64 / self.elapsed.as_secs_f64()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} connections in {:.1} s ({:.0}/s): ok {}, refused {}, reset {}, timeouts {}, short {}, other {}; \
             latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
             ListenOverflows +{}, ListenDrops +{}",
            self.connections,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.ok,
            self.refused,
            self.reset,
            self.timeouts,
            self.short,
            self.other.len(),
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.listen_overflows,
            self.listen_drops,
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
    started: Instant,
    netstat_before: (u64, u64),
}

impl Load {
    pub fn start(config: &LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let netstat_before = listen_counters();
        let started = Instant::now();
        let per_thread = config.max_connections.div_ceil(config.threads as u64);
        let interval = Duration::from_secs_f64(config.threads as f64 / f64::from(config.rate));
        let threads = (0..config.threads)
            .map(|j| {
                let stop = Arc::clone(&stop);
                // Threads are staggered, so arrivals are spread evenly and
                // not in bursts of `threads` connections.
                let offset = interval.mul_f64(j as f64 / config.threads as f64);
                let config = config.clone();
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    for k in 0..per_thread {
                        if stop.load(Ordering::Relaxed) || started.elapsed() >= config.max_duration
                        {
                            break;
                        }
                        // Open-loop pacing: connection k starts at k × interval
                        // (at once when behind).
                        let due = offset + interval.mul_f64(k as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                        one_connection(&config, &mut tally);
                    }
                    tally
                })
            })
            .collect();
        Load {
            stop,
            threads,
            started,
            netstat_before,
        }
    }

    /// Stops the clients (each finishes the connection in hand) and reports.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits for the clients to reach their count or duration bound.
    pub fn wait(self) -> LoadReport {
        let mut all = Tally::default();
        for thread in self.threads {
            let t = thread.join().expect("load thread panicked");
            all.connections += t.connections;
            all.ok += t.ok;
            all.refused += t.refused;
            all.reset += t.reset;
            all.timeouts += t.timeouts;
            all.short += t.short;
            all.other.extend(t.other);
            all.latencies_us.extend(t.latencies_us);
        }
        let elapsed = self.started.elapsed();
        let after = listen_counters();
        all.latencies_us.sort_unstable();
        let pct = |p: f64| {
            if all.latencies_us.is_empty() {
                return Duration::ZERO;
            }
            let i = ((all.latencies_us.len() - 1) as f64 * p).round() as usize;
            Duration::from_micros(all.latencies_us[i])
        };
        LoadReport {
            connections: all.connections,
            ok: all.ok,
            refused: all.refused,
            reset: all.reset,
            timeouts: all.timeouts,
            short: all.short,
            other: all.other,
            elapsed,
            p50: pct(0.5),
            p99: pct(0.99),
            p999: pct(0.999),
            max: pct(1.0),
            listen_overflows: after.0.saturating_sub(self.netstat_before.0),
            listen_drops: after.1.saturating_sub(self.netstat_before.1),
        }
    }
}

fn one_connection(config: &LoadConfig, tally: &mut Tally) {
    use std::io::ErrorKind as K;
    tally.connections += 1;
    let t = Instant::now();
    let result = (|| -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&config.addr, config.connect_timeout)?;
        stream.set_read_timeout(Some(config.read_timeout))?;
        stream.write_all(b"GET\n")?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(reply)
    })();
    tally.latencies_us.push(t.elapsed().as_micros() as u64);
    match result {
        Ok(reply) if reply == b"ok\n" => tally.ok += 1,
        Ok(_) => tally.short += 1,
        Err(e) => match e.kind() {
            K::ConnectionRefused => tally.refused += 1,
            K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => tally.reset += 1,
            K::TimedOut | K::WouldBlock => tally.timeouts += 1,
            _ => tally.other.push(e.to_string()),
        },
    }
}

/// `TcpExtListenOverflows` and `TcpExtListenDrops` from /proc/net/netstat
/// (system-wide: other processes' listeners count too).
pub fn listen_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        if pair[0].starts_with("TcpExt:") && pair[1].starts_with("TcpExt:") {
            let names = pair[0].split_whitespace();
            let values = pair[1].split_whitespace();
            let mut overflows = 0;
            let mut drops = 0;
            for (name, value) in names.zip(values) {
                match name {
                    "ListenOverflows" => overflows = value.parse().unwrap_or(0),
                    "ListenDrops" => drops = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
            return (overflows, drops);
        }
    }
    (0, 0)
}

/// The inode of the TCP socket listening on `port` that `pid` holds an fd of.
pub fn listener_inode(pid: u32, port: u16) -> Option<u64> {
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Ok(inode) = f[9].parse::<u64>()
            {
                listening.push(inode);
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
            && listening.contains(&inode)
        {
            return Some(inode);
        }
    }
    None
}

/// A port below the ephemeral range that is free right now (bind-probed).
pub fn free_port() -> u16 {
    let start = 20000 + (std::process::id() % 9000) as u16;
    for offset in 0..3000u16 {
        let port = 20000 + (start - 20000 + offset * 7) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000-31999");
}

/// The server role: call this from a `#[test]` named `server_role` in the
/// test file, which includes `examples/ok_server.rs` as `mod ok_server`.
pub fn server_role(run: fn() -> Result<(), Box<dyn std::error::Error>>) {
    if std::env::var_os(SERVER_ROLE).is_none() {
        return;
    }
    if let Err(e) = run() {
        eprintln!("ok_server: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// One running server generation.
pub struct Generation {
    pub child: Child,
    stdout: BufReader<File>,
}

/// The command that runs this test binary as the `ok_server` (with
/// [`SERVER_ROLE`] set, its `server_role` test becomes the server).
pub fn server_role_argv() -> Vec<std::ffi::OsString> {
    vec![
        std::env::current_exe().unwrap().into_os_string(),
        "server_role".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ]
}

impl LoadReport {
    /// Fails unless the run had enough load to mean anything (`min`
    /// connections) and not one refused, reset, timed-out, short or other
    /// failed connection.
    pub fn assert_clean(&self, min: u64) {
        assert!(
            self.connections >= min,
            "too little load to mean anything: {}",
            self.summary()
        );
        assert_eq!(self.refused, 0, "{}", self.summary());
        assert_eq!(self.reset, 0, "{}", self.summary());
        assert_eq!(self.timeouts, 0, "{}", self.summary());
        assert_eq!(self.short, 0, "{}", self.summary());
        assert!(self.other.is_empty(), "{:?}", self.other);
    }
}

impl Generation {
    fn spawn(listener: Option<&TcpListener>, port: u16) -> Generation {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let mut request = SpawnRequest::new(server_role_argv())
            .env(SERVER_ROLE, "1")
            .env("OK_SERVER_PORT", port.to_string())
            .stdout(write);
        if let Some(listener) = listener {
            request = request.listener(listener.as_fd(), "ok");
        }
        let child = request.spawn().unwrap();
        let mut generation = Generation {
            child,
            stdout: BufReader::new(File::from(read)),
        };
        generation.wait_ready();
        generation
    }

    /// Blocks until the server printed its readiness line (EOF = it died: panic).
    fn wait_ready(&mut self) {
        let want = format!("ok-server ready {}", self.child.pid());
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "server {} exited before it was ready",
                self.child.pid()
            );
            if line.trim_end() == want {
                return;
            }
        }
    }

    /// SIGTERM, then reap.
    fn stop(self) {
        self.child.kill(Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "server {} exited with {status}",
            self.child.pid()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// A restart strategy under test.
pub trait Restart {
    fn port(&self) -> u16;
    /// The pid of the generation serving now.
    fn current_pid(&self) -> u32;
    /// Replace the current generation.
    fn restart(&mut self);
    /// Stop the last generation.
    fn stop(self);
}

/// The negative control: stop the server, then start a new one that binds
/// the port itself (`SO_REUSEADDR`). Connections in the gap are refused.
pub struct NaiveRestart {
    port: u16,
    current: Option<Generation>,
}

impl NaiveRestart {
    pub fn start(port: u16) -> NaiveRestart {
        NaiveRestart {
            port,
            current: Some(Generation::spawn(None, port)),
        }
    }
}

impl Restart for NaiveRestart {
    fn port(&self) -> u16 {
        self.port
    }
    fn current_pid(&self) -> u32 {
        self.current.as_ref().unwrap().pid()
    }
    fn restart(&mut self) {
        self.current.take().unwrap().stop();
        self.current = Some(Generation::spawn(None, self.port));
    }
    fn stop(mut self) {
        self.current.take().unwrap().stop();
    }
}

/// Held socket handover: the test holds the listening socket; generation n+1
/// is started with it as fd 3, and n is stopped once n+1 is ready.
pub struct HeldSocketHandover {
    listener: TcpListener,
    port: u16,
    current: Option<Generation>,
}

impl HeldSocketHandover {
    pub fn start(port: u16) -> HeldSocketHandover {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        socket.listen(1024).unwrap();
        let listener: TcpListener = socket.into();
        let current = Some(Generation::spawn(Some(&listener), port));
        HeldSocketHandover {
            listener,
            port,
            current,
        }
    }

    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }
}

impl Restart for HeldSocketHandover {
    fn port(&self) -> u16 {
        self.port
    }
    fn current_pid(&self) -> u32 {
        self.current.as_ref().unwrap().pid()
    }
    fn restart(&mut self) {
        let next = Generation::spawn(Some(&self.listener), self.port);
        let old = self.current.replace(next).unwrap();
        old.stop();
    }
    fn stop(mut self) {
        self.current.take().unwrap().stop();
    }
}

/// Runs `load` against `strategy` with `restarts` restarts spread over the
/// load's duration; returns the report, the listener inode held by the
/// first and by the last generation, and the number of restarts done.
pub fn restarts_under_load<R: Restart>(
    strategy: &mut R,
    config: &LoadConfig,
    restarts: u32,
) -> (LoadReport, Option<u64>, Option<u64>) {
    let port = strategy.port();
    let inode_before = listener_inode(strategy.current_pid(), port);
    let load = Load::start(config);
    // Restarts are spread over the middle of the run, so load runs before
    // the first and after the last.
    let spacing = config.max_duration / (restarts + 2);
    let started = Instant::now();
    for i in 1..=restarts {
        if let Some(wait) = (spacing * i).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        strategy.restart();
    }
    let inode_after = listener_inode(strategy.current_pid(), port);
    let report = load.wait();
    (report, inode_before, inode_after)
}
