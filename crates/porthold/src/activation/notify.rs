//! The launcher side of `NOTIFY_SOCKET` readiness: a datagram socket that learns
//! who sent each message, and the policy deciding whose messages count.
//!
//! A server started with `NOTIFY_SOCKET=/path` sends datagrams of
//! newline-separated `KEY=VALUE` lines (`READY=1`, `STATUS=...`). Anyone who can
//! reach the socket file can send one, so the payload alone proves nothing. The
//! socket has `SO_PASSCRED` on, which makes the kernel attach the sender's pid,
//! uid and gid (`SCM_CREDENTIALS`) to every datagram; a sender cannot forge them
//! without `CAP_SYS_ADMIN`. [`NotifyServer::recv`] drops datagrams that arrive
//! without credentials, or with pid 0 (a sender in a pid namespace we cannot see).
//!
//! [`accepts`] then applies the access policy: [`NotifyAccess::Main`] accepts only
//! the main child, [`NotifyAccess::Tree`] also its descendants, found by walking
//! the parent chain in `/proc/<pid>/stat`. Two kernel facts limit that walk, and
//! callers should know them: the sender must still exist when the check runs (a
//! helper that sends `READY=1` and exits at once may be rejected), and a process
//! whose parent died is re-parented to a subreaper or init and so leaves the tree.
//!
//! The socket file is created with mode 0600 (bound under a temporary name,
//! `chmod`ed, then renamed into place, so it never exists with a wider mode under
//! its final name), either in a directory the caller chooses under a unique
//! name ([`NotifyServer::bind`]) or at a path the caller owns
//! ([`NotifyServer::bind_at`], which replaces a file left there by a killed
//! predecessor, so such files never accumulate). It is removed when the
//! [`NotifyServer`] is dropped, if it is still the socket this server bound.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, socket_with, sockopt,
};

use crate::error::{Error, Result};

/// Largest datagram accepted; longer ones are dropped as truncated.
pub const MAX_MESSAGE: usize = 4096;

/// Longest socket path the kernel accepts (`sun_path` minus the terminating NUL).
const MAX_SUN_PATH: usize = 107;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A bound notify socket; the socket file is removed on drop.
#[derive(Debug)]
pub struct NotifyServer {
    fd: OwnedFd,
    path: PathBuf,
    /// `(device, inode)` of the socket file as bound: drop removes only that file.
    file_id: Option<(u64, u64)>,
}

/// One message received on a [`NotifyServer`], with its sender and parsed fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyMessage {
    /// The sender's pid, from the kernel (`SCM_CREDENTIALS`), in our pid namespace.
    pub pid: u32,
    /// The sender's uid, from the kernel.
    pub uid: u32,
    /// The sender's gid, from the kernel.
    pub gid: u32,
    /// `READY=1`: startup finished.
    pub ready: bool,
    /// `STATUS=...`: free-form status text.
    pub status: Option<String>,
    /// `STOPPING=1`: shutting down.
    pub stopping: bool,
    /// `RELOADING=1`: reloading its configuration.
    pub reloading: bool,
    /// `MAINPID=n`: the server says its main process is `n`.
    pub main_pid: Option<u32>,
    /// `WATCHDOG=1`: a keep-alive ping.
    pub watchdog: bool,
    /// `EXTEND_TIMEOUT_USEC=n`: asks for `n` more microseconds before a timeout.
    pub extend_timeout_usec: Option<u64>,
    /// Lines not understood (unknown keys, malformed values), verbatim.
    pub other: Vec<String>,
}

impl NotifyMessage {
    /// Parses a datagram's payload from the sender `pid`/`uid`/`gid`.
    ///
    /// Lines are `KEY=VALUE`; empty lines are skipped; a known key with a value
    /// that does not parse (`READY=yes`, `MAINPID=x`) goes to [`NotifyMessage::other`],
    /// like unknown keys. Invalid UTF-8 is replaced (U+FFFD).
    ///
    /// ```
    /// use porthold::activation::notify::NotifyMessage;
    /// let m = NotifyMessage::from_payload(10, 1000, 1000, b"READY=1\nSTATUS=up\nFOO=bar\n");
    /// assert!(m.ready);
    /// assert_eq!(m.status.as_deref(), Some("up"));
    /// assert_eq!(m.other, vec!["FOO=bar".to_string()]);
    /// ```
    pub fn from_payload(pid: u32, uid: u32, gid: u32, payload: &[u8]) -> NotifyMessage {
        let text = String::from_utf8_lossy(payload);
        let mut m = NotifyMessage {
            pid,
            uid,
            gid,
            ..NotifyMessage::default()
        };
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            let known = match (key, value) {
                ("READY", "1") => {
                    m.ready = true;
                    true
                }
                ("STOPPING", "1") => {
                    m.stopping = true;
                    true
                }
                ("RELOADING", "1") => {
                    m.reloading = true;
                    true
                }
                ("WATCHDOG", "1") => {
                    m.watchdog = true;
                    true
                }
                ("STATUS", _) if line.contains('=') => {
                    m.status = Some(value.to_string());
                    true
                }
                ("MAINPID", v) => match v.parse::<u32>() {
                    Ok(p) if p > 0 => {
                        m.main_pid = Some(p);
                        true
                    }
                    _ => false,
                },
                ("EXTEND_TIMEOUT_USEC", v) => match v.parse::<u64>() {
                    Ok(u) => {
                        m.extend_timeout_usec = Some(u);
                        true
                    }
                    Err(_) => false,
                },
                _ => false,
            };
            if !known {
                m.other.push(line.to_string());
            }
        }
        m
    }
}

impl NotifyServer {
    /// Binds a new notify socket in `dir` (which must exist; it should be private
    /// to the user) under a unique name, mode 0600, close-on-exec, `SO_PASSCRED` on.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the resulting path is too long for a Unix socket;
    /// [`Error::Io`] on socket, bind, chmod or rename failures.
    ///
    /// ```no_run
    /// use porthold::activation::notify::{accepts, NotifyAccess, NotifyServer};
    /// use std::time::Duration;
    /// # fn main() -> porthold::Result<()> {
    /// let server = NotifyServer::bind(std::path::Path::new("/run/user/1000/porthold"))?;
    /// let child = std::process::Command::new("my-server")
    ///     .env("NOTIFY_SOCKET", server.path())
    ///     .spawn()
    ///     .map_err(|e| porthold::Error::io("spawning my-server", e))?;
    /// while let Some(msg) = server.recv(Duration::from_secs(30))? {
    ///     if msg.ready && accepts(NotifyAccess::Tree, child.id(), msg.pid) {
    ///         break;
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind(dir: &Path) -> Result<NotifyServer> {
        let fd = new_socket()?;
        let path = dir.join(format!("notify-{}.sock", unique_suffix()));
        check_length(&path)?;
        let tmp = bind_temporary(&fd, dir)?;
        // `rename` would silently replace an existing file, so refuse one first.
        let placed = if path.symlink_metadata().is_ok() {
            Err(Error::invalid(
                format!("`{}` already exists", path.display()),
                None,
            ))
        } else {
            rename_into_place(&tmp, &path)
        };
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(NotifyServer::placed(fd, path))
    }

    /// Binds a notify socket at exactly `path` (mode 0600, close-on-exec,
    /// `SO_PASSCRED` on), atomically replacing a file already there.
    ///
    /// For a caller that owns the name, e.g. the holder of an instance's lock:
    /// a socket file left at `path` by a predecessor that was killed is
    /// replaced, so notify sockets never pile up in the directory.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `path` is too long for a Unix socket or has no
    /// parent directory; [`Error::Io`] on socket, bind, chmod or rename failures.
    pub fn bind_at(path: &Path) -> Result<NotifyServer> {
        check_length(path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    format!("notify socket path `{}` has no directory", path.display()),
                    None,
                )
            })?;
        let fd = new_socket()?;
        let tmp = bind_temporary(&fd, dir)?;
        if let Err(e) = rename_into_place(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(NotifyServer::placed(fd, path.to_path_buf()))
    }

    fn placed(fd: OwnedFd, path: PathBuf) -> NotifyServer {
        use std::os::unix::fs::MetadataExt;
        let file_id = path.symlink_metadata().ok().map(|m| (m.dev(), m.ino()));
        NotifyServer { fd, path, file_id }
    }

    /// Removes the socket file now if it is still the one this server bound
    /// (idempotent; the socket keeps working for datagrams already queued).
    pub fn remove_file(&self) {
        use std::os::unix::fs::MetadataExt;
        let current = self
            .path
            .symlink_metadata()
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The socket's path: the value for the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for the next message with credentials.
    ///
    /// Returns `Ok(None)` when the time runs out. Datagrams without credentials,
    /// from pid 0, or longer than [`MAX_MESSAGE`] are dropped and waiting goes on;
    /// file descriptors sent along are closed.
    ///
    /// # Errors
    /// [`Error::Io`] when polling or receiving fails.
    pub fn recv(&self, timeout: Duration) -> Result<Option<NotifyMessage>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => timeout,
            };
            if !wait_readable(self.fd.as_fd(), left)? {
                return Ok(None);
            }
            match self.recv_one()? {
                Some(msg) => return Ok(Some(msg)),
                None if left.is_zero() => return Ok(None),
                None => continue,
            }
        }
    }

    /// Receives one datagram without blocking; `None` when there is none or it was dropped.
    fn recv_one(&self) -> Result<Option<NotifyMessage>> {
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let received = match recv_with_credentials(self.fd.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("receiving on the notify socket", e)),
        };
        if received.bytes > MAX_MESSAGE || received.truncated {
            return Ok(None);
        }
        let Some(cred) = received.cred else {
            return Ok(None);
        };
        let Ok(pid) = u32::try_from(cred.pid) else {
            return Ok(None);
        };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(NotifyMessage::from_payload(
            pid,
            cred.uid,
            cred.gid,
            &buf[..received.bytes],
        )))
    }
}

/// What one `recvmsg` on the notify socket gave.
struct Received {
    bytes: usize,
    truncated: bool,
    cred: Option<libc::ucred>,
}

/// One non-blocking `recvmsg` into `buf`, returning the sender's credentials.
///
/// Plain libc rather than rustix: rustix's `UCred` holds a non-zero `Pid`, but the
/// kernel reports pid 0 for a sender outside our pid namespace, so decoding its
/// credentials through that type would be undefined behaviour. Here the pid is an
/// ordinary integer and pid 0 is dropped by the caller.
fn recv_with_credentials(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<Received> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `hdr` points at `iov` (describing `buf`) and `control`, all alive and
    // exclusively borrowed for the duration of the call, with their true lengths.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut hdr,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
        )
    };
    let Ok(bytes) = usize::try_from(n) else {
        return Err(std::io::Error::last_os_error());
    };
    let mut cred = None;
    // SAFETY: the kernel filled `hdr.msg_control`/`msg_controllen` with a valid
    // chain of control messages inside `control`; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within `msg_controllen` and return null at the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a header inside `control`.
        let (level, kind, len) =
            unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        // SAFETY: CMSG_LEN is pure arithmetic.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        // `cmsg_len` is usize on glibc but u32 on musl.
        #[allow(clippy::unnecessary_cast)]
        let payload = (len as usize).saturating_sub(header);
        // SAFETY: CMSG_DATA points just past the header of a message inside `control`.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        if level == libc::SOL_SOCKET
            && kind == libc::SCM_CREDENTIALS
            && payload >= std::mem::size_of::<libc::ucred>()
        {
            // SAFETY: the payload holds at least one `ucred` (checked above); it may be
            // unaligned, hence read_unaligned. `ucred` is three integers: any bits are valid.
            cred = Some(unsafe { std::ptr::read_unaligned(data.cast::<libc::ucred>()) });
        } else if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let count = payload / std::mem::size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: `i < count` keeps the read inside this message's payload.
                let raw = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel just installed this fd in our table for us and
                // nothing else knows it; owning it here closes it on drop.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; `cmsg` is a header of this message chain.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    Ok(Received {
        bytes,
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        cred,
    })
}

impl AsFd for NotifyServer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for NotifyServer {
    fn drop(&mut self) {
        self.remove_file();
    }
}

/// A datagram socket, close-on-exec, with `SO_PASSCRED`.
fn new_socket() -> Result<OwnedFd> {
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("creating the notify socket", e.into()))?;
    sockopt::set_socket_passcred(&fd, true)
        .map_err(|e| Error::io("setting SO_PASSCRED on the notify socket", e.into()))?;
    Ok(fd)
}

fn check_length(path: &Path) -> Result<()> {
    if path.as_os_str().len() > MAX_SUN_PATH {
        return Err(Error::invalid(
            format!(
                "notify socket path `{}` is longer than the {MAX_SUN_PATH} bytes a Unix socket allows",
                path.display()
            ),
            Some("use a shorter runtime directory".to_string()),
        ));
    }
    Ok(())
}

/// Binds `fd` under a fresh temporary name in `dir` and makes it mode 0600.
fn bind_temporary(fd: &OwnedFd, dir: &Path) -> Result<PathBuf> {
    for _ in 0..100 {
        let tmp = dir.join(format!(".notify-{}.tmp", unique_suffix()));
        check_length(&tmp)?;
        let addr = SocketAddrUnix::new(&tmp)
            .map_err(|e| Error::io(format!("notify socket `{}`", tmp.display()), e.into()))?;
        match bind(fd, &addr) {
            Ok(()) => {}
            Err(Errno::ADDRINUSE) => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("binding the notify socket `{}`", tmp.display()),
                    e.into(),
                ));
            }
        }
        if let Err(e) = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("chmod 0600 `{}`", tmp.display()), e));
        }
        return Ok(tmp);
    }
    Err(Error::io(
        format!("finding a free notify socket name in `{}`", dir.display()),
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        Error::io(
            format!("renaming `{}` to `{}`", tmp.display(), path.display()),
            e,
        )
    })
}

fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// Polls `fd` for input for up to `timeout`; `false` when the time ran out.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        // An interrupted wait returns early; the caller's loop recomputes the time left.
        Err(Errno::INTR) => Ok(true),
        Err(e) => Err(Error::io("waiting on the notify socket", e.into())),
    }
}

/// Who may send readiness messages for a server (systemd's `NotifyAccess=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAccess {
    /// Only the main child process.
    Main,
    /// The main child and any of its descendants.
    Tree,
}

impl NotifyAccess {
    /// Parses `main` or `tree`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the value otherwise.
    pub fn parse(text: &str) -> Result<NotifyAccess> {
        match text {
            "main" => Ok(NotifyAccess::Main),
            "tree" => Ok(NotifyAccess::Tree),
            other => Err(Error::invalid(
                format!("unknown notify access `{other}`"),
                Some("use `main` or `tree`".to_string()),
            )),
        }
    }
}

/// The longest parent chain [`accepts`] walks before giving up.
const MAX_DEPTH: usize = 4096;

/// Whether a message from `sender_pid` may speak for the server whose main
/// process is `main_pid`, under `access`.
///
/// Pid 0 (unknown) is never accepted. Under [`NotifyAccess::Tree`] the sender's
/// parent chain is read from `/proc/<pid>/stat`; a process that no longer exists,
/// or whose chain reaches init without meeting `main_pid`, is rejected.
///
/// ```
/// use porthold::activation::notify::{accepts, NotifyAccess};
/// let me = std::process::id();
/// assert!(accepts(NotifyAccess::Main, me, me));
/// assert!(!accepts(NotifyAccess::Tree, me, 0));
/// ```
pub fn accepts(access: NotifyAccess, main_pid: u32, sender_pid: u32) -> bool {
    if main_pid == 0 || sender_pid == 0 {
        return false;
    }
    if sender_pid == main_pid {
        return true;
    }
    if access == NotifyAccess::Main {
        return false;
    }
    let mut pid = sender_pid;
    for _ in 0..MAX_DEPTH {
        let Some(ppid) = parent_of(pid) else {
            return false;
        };
        if ppid == main_pid {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

/// The parent pid of `pid` from `/proc/<pid>/stat`, `None` when unreadable.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ppid(&stat)
}

/// Reads the ppid out of a `/proc/<pid>/stat` line. The command name (field 2) is
/// in parentheses and may itself contain `)` and spaces, so the fields are
/// counted from the *last* `)`: `state ppid ...`.
fn parse_stat_ppid(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = OsString::from_vec(stat[close + 1..].to_vec());
    let rest = rest.to_str()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ppid_is_read_after_the_last_paren() {
        assert_eq!(parse_stat_ppid(b"12 (sh) S 7 12 12 0"), Some(7));
        assert_eq!(parse_stat_ppid(b"12 (a) b) (c) R 99 1 1"), Some(99));
        assert_eq!(parse_stat_ppid(b"12 (x) S"), None);
        assert_eq!(parse_stat_ppid(b"12 (x) S -3"), None);
        assert_eq!(parse_stat_ppid(b"garbage"), None);
    }

    #[test]
    fn every_field_is_parsed_and_unknown_lines_kept() {
        let m = NotifyMessage::from_payload(
            5,
            6,
            7,
            b"READY=1\nSTATUS=a=b\nSTOPPING=1\nRELOADING=1\nMAINPID=42\nWATCHDOG=1\n\
              EXTEND_TIMEOUT_USEC=5000000\nFDSTORE=1\nMAINPID=x\nREADY=2\n\n",
        );
        assert_eq!(
            m,
            NotifyMessage {
                pid: 5,
                uid: 6,
                gid: 7,
                ready: true,
                status: Some("a=b".into()),
                stopping: true,
                reloading: true,
                main_pid: Some(42),
                watchdog: true,
                extend_timeout_usec: Some(5_000_000),
                other: vec!["FDSTORE=1".into(), "MAINPID=x".into(), "READY=2".into()],
            }
        );
    }

    #[test]
    fn access_parses_main_and_tree_only() {
        assert_eq!(NotifyAccess::parse("main").unwrap(), NotifyAccess::Main);
        assert_eq!(NotifyAccess::parse("tree").unwrap(), NotifyAccess::Tree);
        assert!(NotifyAccess::parse("all").is_err());
    }

    #[test]
    fn our_parent_is_not_our_descendant() {
        let me = std::process::id();
        let parent = parent_of(me).expect("own stat");
        assert!(accepts(NotifyAccess::Tree, parent, me));
        assert!(!accepts(NotifyAccess::Tree, me, parent));
        assert!(!accepts(NotifyAccess::Main, parent, me));
    }
}
