//! What the binary keeps of Rust's runtime start-up, which its C `main`
//! skips (see the crate docs).

use std::process::ExitCode;

/// Makes fds 0, 1 and 2 open (on `/dev/null` where they were closed) and
/// ignores SIGPIPE, as Rust's start-up does.
///
/// Open standard fds: otherwise the first file or socket porthold opens
/// would take a closed one's number, and a server it starts would find a
/// listening socket or the registry as its stdin. SIGPIPE ignored: a reader
/// that went away is an `EPIPE` error (see [`crate::stdout`]), not the
/// launcher's death by signal while its server runs.
pub fn init() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the call's duration.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled >= 0 {
        for pollfd in fds {
            if pollfd.revents & libc::POLLNVAL != 0 {
                // open takes the lowest free number: this closed standard fd.
                // SAFETY: a NUL-terminated path and valid flags; the fd it
                // returns is deliberately never closed.
                unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            }
        }
    }
    // SAFETY: setting a disposition to SIG_IGN runs no code of ours; no other
    // thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// The numeric status of `code` (std has no stable accessor; `ExitCode`
/// compares equal to the `ExitCode` of its byte).
pub fn status_of(code: ExitCode) -> i32 {
    (0..=u8::MAX)
        .find(|&byte| ExitCode::from(byte) == code)
        .map_or(1, i32::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_keeps_its_number() {
        for byte in 0..=u8::MAX {
            assert_eq!(status_of(ExitCode::from(byte)), i32::from(byte));
        }
        assert_eq!(status_of(ExitCode::SUCCESS), 0);
        assert_eq!(status_of(ExitCode::FAILURE), 1);
    }
}
