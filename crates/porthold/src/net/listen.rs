//! Listen specs and binding: the sockets `porthold run` creates before the
//! server exists, and hands to it.
//!
//! A spec is `[NAME=]SCHEME://ADDRESS[?OPTIONS]`:
//!
//! | spec | socket |
//! |---|---|
//! | `web=tcp://127.0.0.1:0` | TCP on IPv4 loopback, kernel-chosen port, fd named `web` |
//! | `tcp://[::]:8080` | TCP on every IPv6 address; `IPV6_V6ONLY` on unless `?v6only=0` |
//! | `udp://127.0.0.1:5353` | UDP |
//! | `unix:///run/app.sock?mode=0660` | Unix stream socket, mode 0600 unless `mode=` |
//! | `web=tcp://127.0.0.1:{port}`, `tcp://[::1]` | the key's reserved port (see below) |
//!
//! A TCP or UDP spec that leaves out the port or writes `{port}` stands for
//! the key's reserved port: [`ListenSpec::needs_reserved_port`] says so, and
//! the caller fills it in with [`ListenSpec::with_port`] before binding
//! ([`bind`] refuses a spec whose port is still open). Port `0` stays
//! "kernel-chosen". Names must be unique within one set of specs
//! ([`validate_listen_specs`]).
//!
//! Kernel behaviour the code relies on:
//! - TCP sockets get `SO_REUSEADDR` (a restart can bind while old connections
//!   sit in `TIME_WAIT`) and never `SO_REUSEPORT` (which would let a second
//!   process bind the same port and silently split the traffic). UDP gets
//!   neither: on Linux, `SO_REUSEADDR` lets another UDP socket bind the same port.
//! - `IPV6_V6ONLY` is always set explicitly, so behaviour never depends on
//!   `net.ipv6.bindv6only`.
//! - Every socket is created `CLOEXEC`; the spawner clears the flag only on the
//!   copies it places at fd 3 and up in the child.
//! - A Unix socket is bound to a temporary name in the same directory, given
//!   its mode, and then renamed over the final path, so the path never exists
//!   with a wider mode. A stale socket file (nobody accepts: `ECONNREFUSED`) is
//!   replaced; a live socket or a file that is not a socket is an error.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::{Error, Holder, Result};

/// The listen backlog used unless the caller asks for another.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The fd name used for a spec without `NAME=` (what systemd uses too).
pub const UNNAMED: &str = "unknown";

/// What a spec binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecKind {
    /// A TCP listener.
    Tcp {
        /// Address and port (port 0: kernel-chosen).
        addr: SocketAddr,
        /// `IPV6_V6ONLY` for IPv6 addresses.
        v6only: bool,
    },
    /// A UDP socket.
    Udp {
        /// Address and port.
        addr: SocketAddr,
        /// `IPV6_V6ONLY` for IPv6 addresses.
        v6only: bool,
    },
    /// A Unix-domain stream listener.
    Unix {
        /// The socket path (absolute).
        path: PathBuf,
        /// The socket file's mode.
        mode: u32,
    },
}

/// A parsed listen spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The fd name (`LISTEN_FDNAMES` entry), when given.
    pub name: Option<String>,
    /// What to bind. While [`ListenSpec::reserved_port`] is set, the port of
    /// an IP address here is a placeholder `0`.
    pub kind: SpecKind,
    /// The spec left out the port or wrote `{port}`: it binds the key's
    /// reserved port, filled in by [`ListenSpec::with_port`].
    pub reserved_port: bool,
}

/// The placeholder for the key's reserved port in a listen spec.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// Checks a set of specs that are bound together (one `run`, one service):
/// socket names must be unique, since the server finds its sockets by name
/// (`LISTEN_FDNAMES`). Unnamed specs share the name `unknown` and may repeat,
/// as systemd allows.
///
/// # Errors
/// [`Error::Invalid`] naming the duplicated name.
pub fn validate_listen_specs(specs: &[ListenSpec]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        if let Some(name) = &spec.name
            && !seen.insert(name.as_str())
        {
            return Err(Error::invalid(
                format!(
                    "the socket name `{}` is used by two listen specs",
                    crate::text::quote_prefix(name)
                ),
                Some("give every listen spec its own NAME= (the server tells its sockets apart by name)".into()),
            ));
        }
    }
    Ok(())
}

/// Checks an fd name: 1–255 printable ASCII bytes, no `:` (the `LISTEN_FDNAMES` separator).
///
/// # Errors
/// [`Error::Invalid`] naming the value.
pub fn validate_fd_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("invalid socket name `{}`", crate::text::quote_prefix(name)),
            Some("use 1-255 printable ASCII characters without `:` or spaces".into()),
        ))
    }
}

impl ListenSpec {
    /// Parses `[NAME=]tcp://HOST:PORT`, `udp://…`, `unix:///PATH` with options.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the spec, with a hint showing the accepted forms.
    pub fn parse(text: &str) -> Result<ListenSpec> {
        let bad = |why: &str| {
            Error::invalid(
                format!(
                    "invalid listen spec `{}`: {why}",
                    crate::text::quote_prefix(text)
                ),
                Some(
                    "write NAME=tcp://127.0.0.1:{port} (the reserved port), tcp://[::1]:8080?v6only=0, \
                     udp://127.0.0.1:0 (kernel-chosen) or unix:///path/sock?mode=0660"
                        .into(),
                ),
            )
        };
        let (name, rest) = match text.split_once("://") {
            Some((head, _)) if head.contains('=') => {
                let (name, rest) = text.split_once('=').ok_or_else(|| bad("no scheme"))?;
                validate_fd_name(name)?;
                (Some(name.to_string()), rest)
            }
            _ => (None, text),
        };
        let (scheme, rest) = rest
            .split_once("://")
            .ok_or_else(|| bad("no scheme (tcp://, udp:// or unix://)"))?;
        let (address, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let mut v6only = true;
        let mut mode = 0o600;
        for option in query.into_iter().flat_map(|q| q.split('&')) {
            match option.split_once('=') {
                Some(("v6only", "1")) if scheme != "unix" => v6only = true,
                Some(("v6only", "0")) if scheme != "unix" => v6only = false,
                Some(("mode", value)) if scheme == "unix" => {
                    mode = u32::from_str_radix(value, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| bad("mode must be octal, at most 0777"))?;
                }
                _ => return Err(bad(&format!("unknown option `{option}`"))),
            }
        }
        let mut reserved_port = false;
        let kind = match scheme {
            "tcp" | "udp" => {
                let (addr, placeholder) = parse_ip_address(address).ok_or_else(|| {
                    bad("the address must be IP:PORT, IP:{port} or IP, with [brackets] for IPv6")
                })?;
                reserved_port = placeholder;
                if scheme == "tcp" {
                    SpecKind::Tcp { addr, v6only }
                } else {
                    SpecKind::Udp { addr, v6only }
                }
            }
            "unix" => {
                let path = PathBuf::from(address);
                if !path.is_absolute() {
                    return Err(bad("the socket path must be absolute (unix:///run/x.sock)"));
                }
                if path.as_os_str().len() > 100 {
                    return Err(bad("the socket path is too long for a Unix socket"));
                }
                SpecKind::Unix { path, mode }
            }
            other => return Err(bad(&format!("unknown scheme `{other}`"))),
        };
        Ok(ListenSpec {
            name,
            kind,
            reserved_port,
        })
    }

    /// Whether this spec binds the key's reserved port (it left out the port
    /// or wrote `{port}`) and so needs [`ListenSpec::with_port`] before binding.
    pub fn needs_reserved_port(&self) -> bool {
        self.reserved_port
    }

    /// This spec with its IP port set to `port` (the key's reserved port);
    /// a Unix spec is returned unchanged.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> ListenSpec {
        match &mut self.kind {
            SpecKind::Tcp { addr, .. } | SpecKind::Udp { addr, .. } => addr.set_port(port),
            SpecKind::Unix { .. } => {}
        }
        self.reserved_port = false;
        self
    }

    /// The explicit port of an IP spec: `Some(0)` for kernel-chosen, `None`
    /// for a Unix spec or one that waits for the reserved port.
    pub fn explicit_port(&self) -> Option<u16> {
        match &self.kind {
            SpecKind::Tcp { addr, .. } | SpecKind::Udp { addr, .. } if !self.reserved_port => {
                Some(addr.port())
            }
            _ => None,
        }
    }

    /// The fd name this spec's socket gets.
    pub fn fd_name(&self) -> &str {
        self.name.as_deref().unwrap_or(UNNAMED)
    }
}

/// `IP:PORT`, `IP:{port}` or a bare `IP` (`[::1]` for IPv6); the flag says
/// the port is the reserved-port placeholder.
fn parse_ip_address(address: &str) -> Option<(SocketAddr, bool)> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Some((addr, false));
    }
    let host = address
        .strip_suffix(PORT_PLACEHOLDER)
        .and_then(|h| h.strip_suffix(':'))
        .unwrap_or(address);
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse().ok()?),
        // A bare IPv6 address without brackets is refused: `::1:80` is ambiguous.
        None => IpAddr::V4(host.parse().ok()?),
    };
    Some((SocketAddr::new(ip, 0), true))
}

/// The protocol of a bound socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketProto {
    /// TCP listener.
    Tcp,
    /// UDP socket.
    Udp,
    /// Unix stream listener.
    Unix,
}

/// A socket bound (and, for streams, listening), close-on-exec.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket.
    pub fd: OwnedFd,
    /// Its fd name.
    pub name: String,
    /// Its protocol.
    pub proto: SocketProto,
    /// The actual local address of an IP socket (`getsockname`: the real port for port 0).
    pub local_addr: Option<SocketAddr>,
    /// The path of a Unix socket.
    pub path: Option<PathBuf>,
}

impl AsFd for BoundSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl BoundSocket {
    /// The bound port of an IP socket.
    pub fn port(&self) -> Option<u16> {
        self.local_addr.map(|a| a.port())
    }
}

/// Binds (and listens on) `spec`.
///
/// # Errors
/// [`Error::PortTaken`] naming the listener when the address is in use (exit 3),
/// [`Error::Invalid`] for a live or non-socket Unix path, [`Error::Io`] otherwise.
pub fn bind(spec: &ListenSpec, backlog: u32) -> Result<BoundSocket> {
    if spec.reserved_port {
        // Binding the placeholder would silently give the server a random port.
        return Err(Error::invalid(
            format!(
                "the listen spec for socket `{}` asks for the key's reserved port, which was not filled in",
                spec.fd_name()
            ),
            Some("reserve a port for the key first (ListenSpec::with_port)".into()),
        ));
    }
    let backlog = i32::try_from(backlog.max(1)).unwrap_or(i32::MAX);
    let name = spec.fd_name().to_string();
    match &spec.kind {
        SpecKind::Tcp { addr, v6only } => {
            let socket = ip_socket(*addr, Type::STREAM, *v6only, true)?;
            bind_ip(&socket, *addr)?;
            socket
                .listen(backlog)
                .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
            finish_ip(socket, name, SocketProto::Tcp, *addr)
        }
        SpecKind::Udp { addr, v6only } => {
            let socket = ip_socket(*addr, Type::DGRAM, *v6only, false)?;
            bind_ip(&socket, *addr)?;
            finish_ip(socket, name, SocketProto::Udp, *addr)
        }
        SpecKind::Unix { path, mode } => bind_unix(path, *mode, backlog, name),
    }
}

fn ip_socket(addr: SocketAddr, ty: Type, v6only: bool, reuse_addr: bool) -> Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let ctx = || format!("creating a socket for {addr}");
    // socket2 creates sockets with SOCK_CLOEXEC on Linux.
    let socket = Socket::new(domain, ty, None).map_err(|e| Error::io(ctx(), e))?;
    if reuse_addr {
        socket
            .set_reuse_address(true)
            .map_err(|e| Error::io(ctx(), e))?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(v6only)
            .map_err(|e| Error::io(ctx(), e))?;
    }
    Ok(socket)
}

fn bind_ip(socket: &Socket, addr: SocketAddr) -> Result<()> {
    match socket.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let owner = crate::net::listeners_on_port(addr.port())
                .into_iter()
                .find_map(|entry| entry.owner)
                .map(|o| (o.pid, o.comm));
            Err(Error::PortTaken {
                port: addr.port(),
                holder: Holder::Listener { owner },
            })
        }
        Err(e) => Err(Error::io(format!("binding {addr}"), e)),
    }
}

fn finish_ip(
    socket: Socket,
    name: String,
    proto: SocketProto,
    requested: SocketAddr,
) -> Result<BoundSocket> {
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(requested);
    let ip: IpAddr = local.ip();
    Ok(BoundSocket {
        fd: socket.into(),
        name,
        proto,
        local_addr: Some(SocketAddr::new(ip, local.port())),
        path: None,
    })
}

fn bind_unix(path: &Path, mode: u32, backlog: i32, name: String) -> Result<BoundSocket> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(Error::invalid(
                        format!("`{shown}` is a live socket: another server accepts on it"),
                        Some("stop that server, or choose another path".into()),
                    ));
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {} // stale: replaced below
                Err(e) => return Err(Error::io(format!("checking `{shown}`"), e)),
            }
        }
        Ok(_) => {
            return Err(Error::invalid(
                format!("`{shown}` exists and is not a socket"),
                Some("porthold replaces only stale socket files; move that file away".into()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("inspecting `{shown}`"), e)),
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        crate::time::now_ms()
    ));
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| Error::io(format!("creating a socket for `{shown}`"), e))?;
    let address =
        SockAddr::unix(&temp).map_err(|e| Error::io(format!("socket path `{shown}`"), e))?;
    socket
        .bind(&address)
        .map_err(|e| Error::io(format!("binding `{}`", temp.display()), e))?;
    let publish = || -> io::Result<()> {
        fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
        socket.listen(backlog)?;
        fs::rename(&temp, path)
    };
    if let Err(e) = publish() {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(format!("publishing `{shown}`"), e));
    }
    Ok(BoundSocket {
        fd: socket.into(),
        name,
        proto: SocketProto::Unix,
        local_addr: None,
        path: Some(path.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let table: &[(&str, Option<&str>, SpecKind)] = &[
            (
                "web=tcp://127.0.0.1:0",
                Some("web"),
                SpecKind::Tcp {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    v6only: true,
                },
            ),
            (
                "tcp://[::]:8080?v6only=0",
                None,
                SpecKind::Tcp {
                    addr: "[::]:8080".parse().unwrap(),
                    v6only: false,
                },
            ),
            (
                "dns=udp://127.0.0.1:5353",
                Some("dns"),
                SpecKind::Udp {
                    addr: "127.0.0.1:5353".parse().unwrap(),
                    v6only: true,
                },
            ),
            (
                "unix:///run/a.sock?mode=0660",
                None,
                SpecKind::Unix {
                    path: "/run/a.sock".into(),
                    mode: 0o660,
                },
            ),
        ];
        for (text, name, kind) in table {
            let spec = ListenSpec::parse(text).unwrap();
            assert_eq!(spec.name.as_deref(), *name, "{text}");
            assert_eq!(&spec.kind, kind, "{text}");
        }
    }

    #[test]
    fn a_missing_port_or_the_placeholder_means_the_reserved_port() {
        for (text, addr) in [
            ("web=tcp://127.0.0.1:{port}", "127.0.0.1:0"),
            ("tcp://[::1]:{port}", "[::1]:0"),
            ("tcp://127.0.0.1", "127.0.0.1:0"),
            ("udp://[::]?v6only=0", "[::]:0"),
        ] {
            let spec = ListenSpec::parse(text).unwrap();
            assert!(spec.needs_reserved_port(), "{text}");
            assert_eq!(spec.explicit_port(), None, "{text}");
            let filled = spec.with_port(20555);
            assert!(!filled.needs_reserved_port(), "{text}");
            let mut want: SocketAddr = addr.parse().unwrap();
            want.set_port(20555);
            match filled.kind {
                SpecKind::Tcp { addr, .. } | SpecKind::Udp { addr, .. } => {
                    assert_eq!(addr, want, "{text}")
                }
                SpecKind::Unix { .. } => panic!("{text}"),
            }
        }
        let zero = ListenSpec::parse("tcp://127.0.0.1:0").unwrap();
        assert!(!zero.needs_reserved_port());
        assert_eq!(zero.explicit_port(), Some(0));
        let err = bind(&ListenSpec::parse("tcp://127.0.0.1").unwrap(), 16).unwrap_err();
        assert!(err.to_string().contains("reserved port"), "{err}");
        for bad in [
            "tcp://::1",
            "tcp://127.0.0.1:{prot}",
            "tcp://127.0.0.1:{port}x",
        ] {
            assert!(ListenSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_socket_names_are_refused() {
        let specs = |texts: &[&str]| -> Vec<ListenSpec> {
            texts
                .iter()
                .map(|t| ListenSpec::parse(t).unwrap())
                .collect()
        };
        assert!(
            validate_listen_specs(&specs(&["a=tcp://127.0.0.1:0", "b=udp://127.0.0.1:0"])).is_ok()
        );
        assert!(validate_listen_specs(&specs(&["tcp://127.0.0.1:0", "tcp://[::1]:0"])).is_ok());
        let err = validate_listen_specs(&specs(&["web=tcp://127.0.0.1:0", "web=tcp://[::1]:0"]))
            .unwrap_err();
        assert!(err.to_string().contains("`web`"), "{err}");
    }

    #[test]
    fn bad_specs_are_refused_naming_the_value() {
        for text in [
            "127.0.0.1:80",
            "http://127.0.0.1:80",
            "tcp://localhost:80",
            "tcp://::1:80",
            "unix://relative/path",
            "unix:///a.sock?mode=999",
            "tcp://127.0.0.1:80?mode=0600",
            "a:b=tcp://127.0.0.1:0",
            "=tcp://127.0.0.1:0",
        ] {
            let err = ListenSpec::parse(text).unwrap_err();
            assert!(
                err.to_string().contains(text) || err.to_string().contains("socket name"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn port_zero_reports_the_real_port_and_the_socket_is_cloexec() {
        let s = bind(&ListenSpec::parse("tcp://127.0.0.1:0").unwrap(), 16).unwrap();
        assert_ne!(s.port(), Some(0));
        let flags = rustix::io::fcntl_getfd(&s.fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(s.name, UNNAMED);
    }

    #[test]
    fn a_second_bind_of_the_same_port_is_port_taken_naming_us() {
        let first = bind(&ListenSpec::parse("tcp://127.0.0.1:0").unwrap(), 16).unwrap();
        let spec =
            ListenSpec::parse(&format!("tcp://127.0.0.1:{}", first.port().unwrap())).unwrap();
        match bind(&spec, 16) {
            Err(Error::PortTaken {
                holder:
                    Holder::Listener {
                        owner: Some((pid, _)),
                    },
                ..
            }) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v6only_is_honoured() {
        let spec = ListenSpec::parse("tcp://[::1]:0").unwrap();
        let Ok(s) = bind(&spec, 16) else {
            eprintln!("skipping: no IPv6 loopback");
            return;
        };
        let socket = Socket::from(s.fd);
        assert!(socket.only_v6().unwrap());
        // The kernel forces V6ONLY on a socket bound to a specific IPv6 address
        // such as ::1 (it cannot receive IPv4); the wildcard shows the option.
        let spec = ListenSpec::parse("tcp://[::]:0?v6only=0").unwrap();
        let socket = Socket::from(bind(&spec, 16).unwrap().fd);
        assert!(!socket.only_v6().unwrap());
    }

    #[test]
    fn a_unix_socket_gets_its_mode_before_its_path_appears_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let spec = ListenSpec::parse(&format!("unix://{}?mode=0640", path.display())).unwrap();
        let s = bind(&spec, 16).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        // Live: refused.
        assert!(bind(&spec, 16).is_err());
        // Stale (closed): replaced.
        drop(s);
        let again = bind(&spec, 16).unwrap();
        assert_eq!(again.path.as_deref(), Some(path.as_path()));
        // Not a socket: refused.
        let file = dir.path().join("plain");
        fs::write(&file, "x").unwrap();
        let spec = ListenSpec::parse(&format!("unix://{}", file.display())).unwrap();
        assert!(bind(&spec, 16).is_err());
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
