//! The client side of the control socket, for the CLI (`porthold reload`,
//! `porthold status`) and for tests.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::frame::{FrameDecoder, FrameError, send_frame};
use super::request::{Request, Response};
use super::server::{check_socket_path, read_frame_until};
use crate::error::{Error, Result};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A connection to an instance's control socket.
#[derive(Debug)]
pub struct ControlClient {
    stream: UnixStream,
    decoder: FrameDecoder,
    path: PathBuf,
    prefix: String,
}

impl ControlClient {
    /// Connects to the control socket at `path`.
    ///
    /// # Errors
    /// [`Error::SocketPathTooLong`], and [`Error::Io`] when nobody listens there.
    pub fn connect(path: &Path) -> Result<ControlClient> {
        check_socket_path(path)?;
        let stream = UnixStream::connect(path).map_err(|e| {
            Error::io(
                format!("connecting to the control socket {}", path.display()),
                e,
            )
        })?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(ControlClient {
            stream,
            decoder: FrameDecoder::new(),
            path: path.to_owned(),
            prefix: format!("{:x}-{nanos:08x}", std::process::id()),
        })
    }

    /// Sends `request` and waits up to `timeout` for its reply.
    ///
    /// # Errors
    /// [`Error::Frame`] when the connection breaks or the reply does not come
    /// in time ([`FrameError::TimedOut`]); [`Error::ControlProtocol`] when the
    /// server reports a protocol error or replies with another id or version.
    pub fn request(&mut self, request: &Request, timeout: Duration) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        let id = format!(
            "{}-{}",
            self.prefix,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(FrameError::Io)?;
        send_frame(&self.stream, &request.to_frame(&id)?)?;
        let frame = read_frame_until(&self.stream, &mut self.decoder, deadline)?;
        if let Ok(Response::ProtocolError { reason }) = Response::deserialize_msg(&frame.msg) {
            return Err(Error::ControlProtocol {
                reason: format!("{} refused the request: {reason}", self.path.display()),
            });
        }
        let (got, response) = Response::from_frame(&frame).map_err(|e| Error::ControlProtocol {
            reason: e.to_string(),
        })?;
        if got != id {
            return Err(Error::ControlProtocol {
                reason: format!("reply to request `{got}` where `{id}` was expected"),
            });
        }
        Ok(response)
    }
}
