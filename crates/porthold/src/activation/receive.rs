//! The server side of socket activation: taking the inherited listening sockets,
//! and telling the launcher "ready" through `NOTIFY_SOCKET`.
//!
//! A launcher (porthold, systemd, `systemd-socket-activate`) passes `n` sockets at
//! fds `3..3+n` and sets `LISTEN_FDS=n`, `LISTEN_PID=<our pid>` and usually
//! `LISTEN_FDNAMES=a:b:...`. [`listeners`] takes them, following the same rules as
//! systemd's `sd_listen_fds_with_names(3)`:
//!
//! - The fds are ours only when `LISTEN_PID` equals our own pid. The variables are
//!   inherited by every process we start, so a child that sees `LISTEN_PID` of its
//!   parent must not touch fd 3: it belongs to someone else (or is another file).
//!   Absent or mismatching `LISTEN_PID` gives an empty list, not an error.
//! - Malformed values (`LISTEN_FDS=abc`, a count of names that does not match the
//!   count of fds, an fd that is not open) are errors: the launcher is broken, and
//!   silently serving nothing would hide it.
//! - The fds are inherited *without* `FD_CLOEXEC` (they had to survive the
//!   launcher's `exec`). We set `FD_CLOEXEC` on each fd we take, so that the
//!   programs the server itself starts do not inherit the listening sockets and
//!   keep the port open after the server is gone.
//! - The environment is left alone. Removing variables (`unsetenv`) is not
//!   thread-safe, and `LISTEN_PID` already keeps children from taking the fds.
//! - The fds are taken at most once per process: a process-global flag makes a
//!   second call return an empty list, so two owners can never close the same fd.
//!
//! [`notify`] sends a state string (`READY=1`, `STATUS=...`) as one datagram to the
//! `AF_UNIX` socket named by `NOTIFY_SOCKET` (a path, or `@name` for the Linux
//! abstract namespace). The kernel attaches our pid to the datagram, which is how
//! the launcher decides whether we may speak for the server (see
//! [`super::notify::NotifyAccess`]).

use std::ffi::OsStr;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};
use rustix::net::{AddressFamily, SocketType, sockopt};

use crate::error::{Error, Result};

/// The first inherited fd: the protocol places sockets at `3, 4, ...`.
pub const LISTEN_FDS_START: RawFd = 3;

/// Most fds a launcher may pass; a larger `LISTEN_FDS` is treated as malformed.
pub const MAX_LISTEN_FDS: usize = 65_536;

/// Set once the inherited fds have been taken by this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// One fd announced by the activation environment (before it is taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritedFd {
    /// The fd number (`3 + index`).
    pub fd: RawFd,
    /// Its name from `LISTEN_FDNAMES`; `None` when the variable is absent or the
    /// entry is empty.
    pub name: Option<String>,
}

/// Decides, without touching any fd, which fds the activation environment gives us.
///
/// `listen_pid`, `listen_fds` and `fdnames` are the raw values of `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` (`None` when unset); `own_pid` is our pid.
/// Returns an empty list when the fds are not meant for us (`LISTEN_PID` or
/// `LISTEN_FDS` unset, `LISTEN_PID` another pid, `LISTEN_FDS=0`).
///
/// # Errors
/// [`Error::Invalid`] when `LISTEN_PID` or `LISTEN_FDS` is not a number, the count is
/// absurd, or `LISTEN_FDNAMES` does not hold exactly one name per fd.
///
/// ```
/// use porthold::activation::receive::{parse_listen_env, InheritedFd};
/// let fds = parse_listen_env(Some("42"), Some("2"), Some("web:admin"), 42).unwrap();
/// assert_eq!(fds[1], InheritedFd { fd: 4, name: Some("admin".into()) });
/// // Meant for another process: not ours, not an error.
/// assert!(parse_listen_env(Some("41"), Some("2"), Some("web:admin"), 42).unwrap().is_empty());
/// ```
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    fdnames: Option<&str>,
    own_pid: u32,
) -> Result<Vec<InheritedFd>> {
    let Some(pid_text) = listen_pid else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid_text.trim().parse().map_err(|_| {
        Error::invalid(
            format!("LISTEN_PID=`{pid_text}` is not a process id"),
            Some("the launcher that started this process set a malformed LISTEN_PID".to_string()),
        )
    })?;
    if pid != own_pid {
        return Ok(Vec::new());
    }
    let Some(count_text) = listen_fds else {
        return Ok(Vec::new());
    };
    let count: usize = count_text.trim().parse().map_err(|_| {
        Error::invalid(
            format!("LISTEN_FDS=`{count_text}` is not a count of file descriptors"),
            Some("the launcher that started this process set a malformed LISTEN_FDS".to_string()),
        )
    })?;
    if count > MAX_LISTEN_FDS {
        return Err(Error::invalid(
            format!("LISTEN_FDS={count} is more than the {MAX_LISTEN_FDS} fds a launcher may pass"),
            None,
        ));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<Option<String>> = match fdnames {
        None => vec![None; count],
        Some(text) => {
            let names: Vec<Option<String>> = text
                .split(':')
                .map(|n| (!n.is_empty()).then(|| n.to_string()))
                .collect();
            if names.len() != count {
                return Err(Error::invalid(
                    format!(
                        "LISTEN_FDNAMES=`{text}` holds {} names but LISTEN_FDS={count}",
                        names.len()
                    ),
                    Some("the launcher must pass one name per fd, joined with `:`".to_string()),
                ));
            }
            names
        }
    };
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| InheritedFd {
            // `count <= MAX_LISTEN_FDS`, so `3 + i` fits in an i32.
            fd: LISTEN_FDS_START + i as RawFd,
            name,
        })
        .collect())
}

/// A listening socket inherited from the launcher.
#[derive(Debug)]
pub struct Listener {
    /// The socket; owned (closed on drop) and marked close-on-exec.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`, when the launcher gave one.
    pub name: Option<String>,
}

/// What kind of socket a [`Listener`] holds, read from the kernel (`SO_DOMAIN`, `SO_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketKind {
    /// A TCP socket (IPv4 or IPv6 stream).
    Tcp,
    /// A UDP socket (IPv4 or IPv6 datagram).
    Udp,
    /// A Unix stream socket.
    UnixStream,
    /// A Unix datagram socket.
    UnixDatagram,
    /// Anything else (netlink, seqpacket, ...).
    Other,
}

impl Listener {
    /// The fd number.
    pub fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// The socket's kind.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the fd is not a socket.
    pub fn kind(&self) -> Result<SocketKind> {
        socket_kind(self.fd.as_fd(), self.describe())
    }

    /// Converts into a [`TcpListener`], checking that the socket is a listening TCP socket.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the fd when it is something else.
    pub fn into_tcp_listener(self) -> Result<TcpListener> {
        self.expect(SocketKind::Tcp, "a TCP listener")?;
        self.expect_listening("a TCP listener")?;
        Ok(TcpListener::from(self.fd))
    }

    /// Converts into a [`UdpSocket`], checking that the socket is UDP.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the fd when it is something else.
    pub fn into_udp_socket(self) -> Result<UdpSocket> {
        self.expect(SocketKind::Udp, "a UDP socket")?;
        Ok(UdpSocket::from(self.fd))
    }

    /// Converts into a [`UnixListener`], checking that the socket is a listening Unix stream socket.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the fd when it is something else.
    pub fn into_unix_listener(self) -> Result<UnixListener> {
        self.expect(SocketKind::UnixStream, "a Unix stream listener")?;
        self.expect_listening("a Unix stream listener")?;
        Ok(UnixListener::from(self.fd))
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("inherited fd {} (`{name}`)", self.raw_fd()),
            None => format!("inherited fd {}", self.raw_fd()),
        }
    }

    fn expect(&self, want: SocketKind, what: &str) -> Result<()> {
        let got = self.kind()?;
        if got == want {
            Ok(())
        } else {
            Err(Error::invalid(
                format!("{} is a {got:?} socket, not {what}", self.describe()),
                Some("check the launcher's listen specs and their order".to_string()),
            ))
        }
    }

    fn expect_listening(&self, what: &str) -> Result<()> {
        let listening = sockopt::socket_acceptconn(&self.fd).map_err(|e| {
            Error::io(
                format!("reading SO_ACCEPTCONN of {}", self.describe()),
                e.into(),
            )
        })?;
        if listening {
            Ok(())
        } else {
            Err(Error::invalid(
                format!("{} is not listening, so it is not {what}", self.describe()),
                None,
            ))
        }
    }
}

fn socket_kind(fd: BorrowedFd<'_>, describe: String) -> Result<SocketKind> {
    let not_socket = |e: rustix::io::Errno| {
        if e == rustix::io::Errno::NOTSOCK {
            Error::invalid(format!("{describe} is not a socket"), None)
        } else {
            Error::io(format!("inspecting {describe}"), e.into())
        }
    };
    let domain = sockopt::socket_domain(fd).map_err(not_socket)?;
    let ty = sockopt::socket_type(fd).map_err(not_socket)?;
    let inet = domain == AddressFamily::INET || domain == AddressFamily::INET6;
    Ok(if inet && ty == SocketType::STREAM {
        SocketKind::Tcp
    } else if inet && ty == SocketType::DGRAM {
        SocketKind::Udp
    } else if domain == AddressFamily::UNIX && ty == SocketType::STREAM {
        SocketKind::UnixStream
    } else if domain == AddressFamily::UNIX && ty == SocketType::DGRAM {
        SocketKind::UnixDatagram
    } else {
        SocketKind::Other
    })
}

/// Takes the listening sockets the launcher passed to this process.
///
/// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (see [`parse_listen_env`]),
/// checks that every announced fd is open, sets `FD_CLOEXEC` on each and returns
/// them as owned fds, in fd order. The environment is not modified. Only the
/// first call in a process takes the fds; later calls return an empty list.
///
/// # Errors
/// [`Error::Invalid`] when the environment is malformed or an announced fd is not
/// open (nothing is taken then); [`Error::Io`] when `FD_CLOEXEC` cannot be set.
///
/// ```no_run
/// use porthold::activation::receive::listeners;
/// use std::io::Write;
///
/// # fn main() -> porthold::Result<()> {
/// let mut fds = listeners()?;
/// let web = match fds.iter().position(|l| l.name.as_deref() == Some("web")) {
///     Some(i) => fds.swap_remove(i),
///     None => return Err(porthold::Error::NotFound("no socket named `web` was passed".into())),
/// };
/// let server = web.into_tcp_listener()?;
/// porthold::activation::receive::notify_ready()?;
/// for conn in server.incoming() {
///     let _ = conn.and_then(|mut c| c.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello\n"));
/// }
/// # Ok(())
/// # }
/// ```
pub fn listeners() -> Result<Vec<Listener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let announced = parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    if announced.is_empty() {
        return Ok(Vec::new());
    }
    // Check every fd before taking any, so a broken environment takes nothing.
    for inherited in &announced {
        // SAFETY: the borrow lives only for this fcntl call; a closed fd makes
        // fcntl fail with EBADF, which is what we test for.
        let fd = unsafe { BorrowedFd::borrow_raw(inherited.fd) };
        if fcntl_getfd(fd).is_err() {
            return Err(Error::invalid(
                format!(
                    "LISTEN_FDS={} announces fd {}, but it is not open",
                    announced.len(),
                    inherited.fd
                ),
                Some("the launcher did not pass the sockets it announced".to_string()),
            ));
        }
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(Vec::new());
    }
    let mut taken = Vec::with_capacity(announced.len());
    for inherited in announced {
        // SAFETY: LISTEN_PID names this process, so the launcher passed these fds
        // to us and nothing in this process owns them yet; the TAKEN flag (set
        // above, never cleared) makes this the only place that ever takes them,
        // and we checked above that each fd is open.
        let fd = unsafe { OwnedFd::from_raw_fd(inherited.fd) };
        let flags = fcntl_getfd(&fd)
            .map_err(|e| Error::io(format!("reading flags of fd {}", inherited.fd), e.into()))?;
        fcntl_setfd(&fd, flags | FdFlags::CLOEXEC).map_err(|e| {
            Error::io(
                format!("setting close-on-exec on fd {}", inherited.fd),
                e.into(),
            )
        })?;
        taken.push(Listener {
            fd,
            name: inherited.name,
        });
    }
    Ok(taken)
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the socket named by
/// `NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is unset or empty (nobody listens for
/// readiness: not an error), `Ok(true)` once the datagram was sent.
///
/// # Errors
/// [`Error::Invalid`] when `NOTIFY_SOCKET` is neither an absolute path nor an
/// `@abstract` name; [`Error::Io`] when sending fails.
///
/// ```no_run
/// # fn main() -> porthold::Result<()> {
/// porthold::activation::receive::notify("STATUS=warming caches")?;
/// porthold::activation::receive::notify("READY=1\nSTATUS=serving")?;
/// # Ok(())
/// # }
/// ```
pub fn notify(state: &str) -> Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Tells the launcher the server is ready: [`notify`]`("READY=1")`.
///
/// # Errors
/// As [`notify`].
///
/// ```no_run
/// # fn main() -> porthold::Result<()> {
/// let sockets = porthold::activation::receive::listeners()?;
/// // ... set up the server on `sockets` ...
/// porthold::activation::receive::notify_ready()?;
/// # Ok(())
/// # }
/// ```
pub fn notify_ready() -> Result<bool> {
    notify("READY=1")
}

/// Sends `state` as one datagram to the notify socket `socket` (an absolute path,
/// or `@name` for an abstract socket), regardless of the environment.
///
/// # Errors
/// [`Error::Invalid`] for a socket name of another form; [`Error::Io`] when sending fails.
pub fn notify_to(socket: &OsStr, state: &str) -> Result<()> {
    let bytes = socket.as_bytes();
    let shown = socket.to_string_lossy();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => {
            return Err(Error::invalid(
                format!(
                    "NOTIFY_SOCKET=`{shown}` is neither an absolute path nor an @abstract name"
                ),
                None,
            ));
        }
    }
    .map_err(|e| Error::io(format!("notify socket `{shown}`"), e))?;
    let sock =
        UnixDatagram::unbound().map_err(|e| Error::io("creating a notify datagram socket", e))?;
    sock.send_to_addr(state.as_bytes(), &addr)
        .map_err(|e| Error::io(format!("sending `{state}` to notify socket `{shown}`"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_for_us_when_pid_absent_or_other() {
        assert!(
            parse_listen_env(None, Some("1"), None, 7)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_listen_env(Some("8"), Some("1"), None, 7)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_listen_env(Some("7"), None, None, 7)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_listen_env(Some("7"), Some("0"), Some(""), 7)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(parse_listen_env(Some("7"), Some("x"), None, 7).is_err());
        assert!(parse_listen_env(Some("7"), Some("-1"), None, 7).is_err());
        assert!(parse_listen_env(Some("seven"), Some("1"), None, 7).is_err());
        assert!(parse_listen_env(Some("7"), Some("99999999"), None, 7).is_err());
        let e = parse_listen_env(Some("7"), Some("2"), Some("web"), 7).unwrap_err();
        assert!(e.to_string().contains("1 names"), "{e}");
    }

    #[test]
    fn names_follow_fds_and_empty_names_are_none() {
        let fds = parse_listen_env(Some("7"), Some("3"), Some("a::c"), 7).unwrap();
        let got: Vec<_> = fds.iter().map(|f| (f.fd, f.name.as_deref())).collect();
        assert_eq!(got, vec![(3, Some("a")), (4, None), (5, Some("c"))]);
        let fds = parse_listen_env(Some("7"), Some("2"), None, 7).unwrap();
        assert_eq!(fds[1], InheritedFd { fd: 4, name: None });
    }

    #[test]
    fn notify_to_rejects_relative_names() {
        assert!(notify_to(OsStr::new("relative/sock"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("vsock:2:1"), "READY=1").is_err());
    }
}
