//! Length-prefixed JSON frames.
//!
//! A frame is a `u32` big-endian length `n` (at most [`MAX_FRAME`]) followed by
//! `n` bytes of UTF-8 JSON: an object
//!
//! ```json
//! {"v": 1, "id": "7f3a…", "msg": {"type": "seal_request"}}
//! ```
//!
//! - `v`: the protocol version the message is written in;
//! - `id`: the per-request (control socket) or per-attempt (handoff) id; absent
//!   on messages sent before one exists (a handoff `Hello`);
//! - `fds`: how many file descriptors travel with this frame as `SCM_RIGHTS`
//!   ancillary data on its first byte. Reserved: this version sends none, omits
//!   the field, and a decoder rejects a frame announcing any (it would otherwise
//!   silently lose them);
//! - `msg`: the message, an object tagged by `type`; the layer above parses it
//!   ([`crate::handoff::Message::from_frame`]).
//!
//! Unknown top-level fields are ignored, so later minor versions can add some.
//!
//! The decoder is incremental: feed it whatever bytes arrived and take the
//! frames that are complete. Its errors are distinct ([`FrameError`]) and each
//! means "this session is unusable, close it": after a length over the cap, a
//! truncated frame or a body that is not a frame object, the byte stream
//! cannot be trusted to resynchronise.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// The largest body a frame may carry: 1 MiB.
pub const MAX_FRAME: u32 = 1 << 20;

/// Why a frame could not be decoded, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLong {
        /// The announced length.
        len: u32,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the frame (prefix included) that arrived.
        have: usize,
        /// Bytes the frame needs (prefix included), or 4 when the prefix itself is cut.
        need: usize,
    },
    /// The body is not JSON, or not a frame object (`v`, `msg`).
    #[error("frame body is not a valid frame object: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The frame announces file descriptors, which this version never sends.
    #[error("frame announces {0} file descriptors; this protocol version passes none")]
    UnexpectedFds(u32),
    /// The peer closed the stream at a frame boundary (a clean end).
    #[error("the peer closed the channel")]
    Closed,
    /// No complete frame arrived within the read timeout; the partial frame is kept.
    #[error("timed out waiting for a frame")]
    TimedOut,
    /// Reading or writing failed.
    #[error("channel I/O failed: {0}")]
    Io(#[source] io::Error),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Protocol version of the message.
    pub v: u32,
    /// Per-request or per-attempt id; `None` before one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// File descriptors travelling with the frame (reserved; always 0 here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fds: u32,
    /// The message, tagged by `type`.
    pub msg: serde_json::Value,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Frame {
    /// A frame carrying `msg` (serialised) with version `v` and `id`.
    ///
    /// # Errors
    /// [`FrameError::BadJson`] when `msg` cannot be serialised.
    pub fn new<T: Serialize>(v: u32, id: Option<&str>, msg: &T) -> Result<Frame, FrameError> {
        Ok(Frame {
            v,
            id: id.map(str::to_owned),
            fds: 0,
            msg: serde_json::to_value(msg).map_err(FrameError::BadJson)?,
        })
    }

    /// The frame's bytes on the wire: length prefix and body.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] when the body exceeds [`MAX_FRAME`];
    /// [`FrameError::UnexpectedFds`] when `fds` is not 0.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        if self.fds != 0 {
            return Err(FrameError::UnexpectedFds(self.fds));
        }
        let body = serde_json::to_vec(self).map_err(FrameError::BadJson)?;
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        if len > MAX_FRAME {
            return Err(FrameError::TooLong { len });
        }
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses one body (without its length prefix).
    ///
    /// # Errors
    /// [`FrameError::BadJson`], [`FrameError::UnexpectedFds`].
    pub fn parse_body(body: &[u8]) -> Result<Frame, FrameError> {
        let frame: Frame = serde_json::from_slice(body).map_err(FrameError::BadJson)?;
        if frame.fds != 0 {
            return Err(FrameError::UnexpectedFds(frame.fds));
        }
        Ok(frame)
    }
}

/// An incremental frame decoder: [`feed`](Self::feed) bytes, take frames with
/// [`next_frame`](Self::next_frame), call [`finish`](Self::finish) at end of stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed by returned frames.
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes that arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, or `None` when more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] as soon as a length prefix over the cap is seen
    /// (before its body arrives), [`FrameError::BadJson`] and
    /// [`FrameError::UnexpectedFds`] for a complete body that is not a valid frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > MAX_FRAME {
            return Err(FrameError::TooLong { len });
        }
        let total = 4 + len as usize;
        if pending.len() < total {
            return Ok(None);
        }
        let frame = Frame::parse_body(&pending[4..total]);
        self.start += total;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        frame.map(Some)
    }

    /// Call at end of stream: `Ok` when it ended at a frame boundary.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when a partial frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = &self.buf[self.start..];
        if pending.is_empty() {
            return Ok(());
        }
        let need = match pending.first_chunk::<4>() {
            Some(prefix) => 4 + u32::from_be_bytes(*prefix) as usize,
            None => 4,
        };
        Err(FrameError::Truncated {
            have: pending.len(),
            need,
        })
    }
}

/// Reads frames from any byte stream.
///
/// With a read timeout set on the stream (`UnixStream::set_read_timeout`), a
/// read that times out gives [`FrameError::TimedOut`] and keeps the partial
/// frame, so the next call continues where this one stopped.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl FrameDecoder {
    /// One `read` from `reader` into the decoder: the end of the stream is
    /// [`FrameError::Closed`] (or [`FrameError::Truncated`] inside a frame), a
    /// read timeout is [`FrameError::TimedOut`] (the partial frame is kept), and
    /// an interrupted read is simply retried by the caller's loop.
    pub(crate) fn read_once(
        &mut self,
        mut reader: impl Read,
        chunk: &mut [u8],
    ) -> Result<(), FrameError> {
        match reader.read(chunk) {
            Ok(0) => {
                self.finish()?;
                Err(FrameError::Closed)
            }
            Ok(n) => {
                self.feed(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(FrameError::TimedOut)
            }
            Err(e) => Err(FrameError::Io(e)),
        }
    }
}

impl<R: Read> FrameReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            decoder: FrameDecoder::new(),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Blocks until a whole frame arrived.
    ///
    /// # Errors
    /// [`FrameError::Closed`] at a clean end of stream, [`FrameError::Truncated`]
    /// at an end inside a frame, [`FrameError::TimedOut`] when the stream's read
    /// timeout expired, the decoder's errors, and [`FrameError::Io`].
    pub fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            self.decoder.read_once(&mut self.inner, &mut chunk)?;
        }
    }
}

/// Writes one frame to any byte sink.
///
/// Over a socket, prefer [`send_frame`]: a plain `write(2)` to a socket whose
/// peer is gone raises `SIGPIPE` unless the process ignores it. (std's own
/// `UnixStream` writes already pass `MSG_NOSIGNAL`; a `File` over a socket fd
/// does not.)
///
/// # Errors
/// The encoder's errors and [`FrameError::Io`].
pub fn write_frame<W: Write>(out: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.encode()?;
    out.write_all(&bytes).map_err(FrameError::Io)?;
    out.flush().map_err(FrameError::Io)
}

/// Writes one frame to a Unix stream socket with `MSG_NOSIGNAL`: a peer that
/// went away gives [`FrameError::Io`] (`EPIPE`), never a `SIGPIPE`. With a
/// write timeout set on the socket, a peer that stops reading gives
/// [`FrameError::TimedOut`].
///
/// # Errors
/// The encoder's errors, [`FrameError::TimedOut`] and [`FrameError::Io`].
pub fn send_frame(socket: &UnixStream, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.encode()?;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match rustix::net::send(socket.as_fd(), rest, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Err(FrameError::TimedOut),
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample(n: u64) -> Frame {
        Frame::new(1, Some("abc"), &json!({"type": "heartbeat", "seq": n})).unwrap()
    }

    #[test]
    fn a_length_over_the_cap_is_rejected_before_its_body_arrives() {
        let mut d = FrameDecoder::new();
        d.feed(&(MAX_FRAME + 1).to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLong { len }) if len == MAX_FRAME + 1));
    }

    #[test]
    fn a_frame_cut_at_eof_is_truncated_and_a_boundary_is_clean() {
        let bytes = sample(7).encode().unwrap();
        let mut d = FrameDecoder::new();
        d.feed(&bytes[..bytes.len() - 1]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(
            matches!(d.finish(), Err(FrameError::Truncated { have, need })
            if have == bytes.len() - 1 && need == bytes.len())
        );
        d.feed(&bytes[bytes.len() - 1..]);
        assert_eq!(d.next_frame().unwrap(), Some(sample(7)));
        d.finish().unwrap();
        let mut cut = FrameDecoder::new();
        cut.feed(&[0, 0]);
        assert!(matches!(
            cut.finish(),
            Err(FrameError::Truncated { have: 2, need: 4 })
        ));
    }

    #[test]
    fn garbage_json_and_non_frame_objects_are_bad_json() {
        for body in [&b"{nope"[..], b"[1,2]", b"{\"v\":1}", b"\xff\xfe"] {
            let mut d = FrameDecoder::new();
            d.feed(&(body.len() as u32).to_be_bytes());
            d.feed(body);
            assert!(
                matches!(d.next_frame(), Err(FrameError::BadJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn announced_fds_are_refused_by_this_version() {
        let body = br#"{"v":1,"fds":2,"msg":{"type":"x"}}"#;
        let mut d = FrameDecoder::new();
        d.feed(&(body.len() as u32).to_be_bytes());
        d.feed(body);
        assert!(matches!(d.next_frame(), Err(FrameError::UnexpectedFds(2))));
    }

    #[test]
    fn an_oversized_body_is_not_encoded() {
        let big = "x".repeat(MAX_FRAME as usize);
        let frame = Frame::new(1, None, &json!({"type": "big", "pad": big})).unwrap();
        assert!(matches!(frame.encode(), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn reader_reports_timeout_then_resumes_the_partial_frame() {
        let (a, b) = rustix_pair();
        b.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let bytes = sample(3).encode().unwrap();
        let mut reader = FrameReader::new(&b);
        (&a).write_all(&bytes[..5]).unwrap();
        assert!(matches!(reader.read_frame(), Err(FrameError::TimedOut)));
        (&a).write_all(&bytes[5..]).unwrap();
        assert_eq!(reader.read_frame().unwrap(), sample(3));
        drop(a);
        assert!(matches!(reader.read_frame(), Err(FrameError::Closed)));
    }

    fn rustix_pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (any::<u32>(), proptest::option::of(".{0,24}"), arb_json()).prop_map(|(v, id, msg)| Frame {
            v,
            id,
            fds: 0,
            msg,
        })
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_any_split_of_the_stream(
            frames in prop::collection::vec(arb_frame(), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend(f.encode().unwrap());
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                d.feed(&stream[w[0]..w[1]]);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut d = FrameDecoder::new();
            d.feed(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
            let _ = d.finish();
        }
    }
}
