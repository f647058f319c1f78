//! The smallest server for restart tests: answers `ok\n` to every connection.
//!
//! It serves the socket it inherits (`LISTEN_FDS`, fd 3) or, without one,
//! binds `127.0.0.1:$OK_SERVER_PORT` itself with `SO_REUSEADDR` (the naive
//! stop-and-rebind strategy of the load tests). Each connection: read one
//! request line (or until the peer half-closes), write `ok\n`, close. Once it
//! is polling its socket it prints `ok-server ready <pid>` on stdout (a
//! readiness line the harness waits for). On `SIGTERM` it finishes the
//! connection in hand and exits 0, leaving queued connections in the shared
//! socket's backlog for the next generation. On `SIGUSR1` it crashes: exits 3
//! at once, but only between connections (never holding one), as a crash
//! test needs.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};

/// Serves until `SIGTERM`.
///
/// # Errors
/// When the socket cannot be obtained or polled.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let listener = match porthold::activation::listeners()?.into_iter().next() {
        Some(inherited) => inherited.into_tcp_listener()?,
        None => bind_itself()?,
    };
    // Non-blocking: generations sharing one socket all wake up for one
    // connection, and only one of them gets it.
    listener.set_nonblocking(true)?;
    let (term_read, term_write) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, term_write)?;
    let (crash_read, crash_write) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGUSR1, crash_write)?;
    println!("ok-server ready {}", std::process::id());
    std::io::stdout().flush()?;
    loop {
        let mut fds = [
            PollFd::new(&term_read, PollFlags::IN),
            PollFd::new(&listener, PollFlags::IN),
            PollFd::new(&crash_read, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if !fds[0].revents().is_empty() {
            return Ok(());
        }
        if !fds[2].revents().is_empty() {
            // A crash between requests: no connection is in hand.
            std::process::exit(3);
        }
        match listener.accept() {
            Ok((stream, _)) => answer(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn bind_itself() -> Result<TcpListener, Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("OK_SERVER_PORT")?.parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn answer(stream: TcpStream) {
    // A client that never sends its line must not stall the generation.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let _ = reader.read_line(&mut line);
    let _ = (&stream).write_all(b"ok\n");
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ok_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
