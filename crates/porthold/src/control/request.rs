//! The messages of the control socket: what a client asks ([`Request`]) and
//! what the instance answers ([`Response`]).
//!
//! Each travels as the `msg` of one frame ([`super::frame`]) written in
//! protocol version [`CONTROL_VERSION`], tagged by `type` (snake case). A
//! request carries a per-request `id` chosen by the client; the reply to it
//! carries the same id. Unknown fields inside a message are ignored, so a
//! later minor version can add some; an unknown `type` is a protocol error.
//!
//! ```json
//! {"v":1,"id":"4f1c-1","msg":{"type":"reload","check":"make test","timeout_ms":60000}}
//! {"v":1,"id":"4f1c-1","msg":{"type":"reloaded","pid":4242}}
//! ```

use serde::{Deserialize, Serialize};

use super::frame::{Frame, FrameError};

/// The protocol version of control-socket messages.
pub const CONTROL_VERSION: u32 = 1;

/// A request to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Report the instance's status.
    Status,
    /// Start a new generation on the same sockets and retire the current one
    /// (PRODUCT.md §3.3).
    Reload {
        /// A pre-flight command; when it fails, nothing is stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<String>,
        /// How long the whole reload may take, in milliseconds.
        timeout_ms: u64,
    },
}

/// An instance's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// The answer to [`Request::Status`]: whatever the embedder reports, as JSON.
    Status {
        /// The status object.
        status: serde_json::Value,
    },
    /// The reload committed: this generation now serves.
    Reloaded {
        /// The new generation's pid.
        pid: u32,
    },
    /// The reload was rolled back; the old generation still serves.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// Another reload is running; this request did nothing.
    InProgress,
    /// The instance cannot do what was asked (e.g. no reload support yet).
    Unsupported {
        /// Why.
        reason: String,
    },
    /// The server could not use the request and closes the session after this
    /// reply (wrong version, unknown or out-of-order message, bad frame).
    ProtocolError {
        /// What was wrong.
        reason: String,
    },
}

/// Why a frame is not a usable control request (or reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The frame is written in another protocol version.
    #[error(
        "control message of protocol version {found}; this porthold speaks version {CONTROL_VERSION}"
    )]
    Version {
        /// The version the frame carries.
        found: u32,
    },
    /// The frame has no per-request id.
    #[error("control message without a request id")]
    MissingId,
    /// The message is not one of the expected kind (unknown type, bad fields,
    /// a reply where a request belongs or the reverse).
    #[error("not a control {expected}: {reason}")]
    Malformed {
        /// `request` or `response`.
        expected: &'static str,
        /// The parser's complaint.
        reason: String,
    },
}

/// Checks the version and id of a frame, returning the id.
fn envelope(frame: &Frame) -> Result<&str, MessageError> {
    if frame.v != CONTROL_VERSION {
        return Err(MessageError::Version { found: frame.v });
    }
    frame.id.as_deref().ok_or(MessageError::MissingId)
}

impl Request {
    /// The request a frame carries, with its id.
    ///
    /// # Errors
    /// [`MessageError`] for another version, a missing id or a message that is
    /// not a request.
    pub fn from_frame(frame: &Frame) -> Result<(String, Request), MessageError> {
        let id = envelope(frame)?;
        let request = Request::deserialize(&frame.msg).map_err(|e| MessageError::Malformed {
            expected: "request",
            reason: e.to_string(),
        })?;
        Ok((id.to_owned(), request))
    }

    /// This request as a frame with request id `id`.
    ///
    /// # Errors
    /// [`FrameError::BadJson`] if it cannot be serialised (it always can).
    pub fn to_frame(&self, id: &str) -> Result<Frame, FrameError> {
        Frame::new(CONTROL_VERSION, Some(id), self)
    }
}

impl Response {
    /// The reply a frame carries, with the id of the request it answers.
    ///
    /// # Errors
    /// [`MessageError`] for another version, a missing id or a message that is
    /// not a reply.
    pub fn from_frame(frame: &Frame) -> Result<(String, Response), MessageError> {
        let id = envelope(frame)?;
        let response = Response::deserialize(&frame.msg).map_err(|e| MessageError::Malformed {
            expected: "response",
            reason: e.to_string(),
        })?;
        Ok((id.to_owned(), response))
    }

    /// The reply in a frame's `msg`, ignoring the envelope.
    pub(crate) fn deserialize_msg(msg: &serde_json::Value) -> Result<Response, serde_json::Error> {
        Response::deserialize(msg)
    }

    /// This reply as a frame answering request `id`.
    ///
    /// # Errors
    /// [`FrameError::BadJson`] if it cannot be serialised (it always can), and
    /// [`FrameError::TooLong`] is reported later by `encode` for a status
    /// object over the frame cap.
    pub fn to_frame(&self, id: &str) -> Result<Frame, FrameError> {
        Frame::new(CONTROL_VERSION, Some(id), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_is_not_a_request_and_a_request_is_not_a_reply() {
        let reply = Response::InProgress.to_frame("a").unwrap();
        assert!(matches!(
            Request::from_frame(&reply),
            Err(MessageError::Malformed {
                expected: "request",
                ..
            })
        ));
        let request = Request::Status.to_frame("a").unwrap();
        assert!(matches!(
            Response::from_frame(&request),
            Err(MessageError::Malformed {
                expected: "response",
                ..
            })
        ));
    }

    #[test]
    fn version_and_id_are_required() {
        let mut frame = Request::Status.to_frame("a").unwrap();
        frame.v = 2;
        assert_eq!(
            Request::from_frame(&frame),
            Err(MessageError::Version { found: 2 })
        );
        let frame = Frame::new(CONTROL_VERSION, None, &json!({"type": "status"})).unwrap();
        assert_eq!(Request::from_frame(&frame), Err(MessageError::MissingId));
    }

    #[test]
    fn the_documented_reload_exchange_parses() {
        let request: Frame = serde_json::from_str(
            r#"{"v":1,"id":"4f1c-1","msg":{"type":"reload","check":"make test","timeout_ms":60000}}"#,
        )
        .unwrap();
        assert_eq!(
            Request::from_frame(&request).unwrap(),
            (
                "4f1c-1".to_owned(),
                Request::Reload {
                    check: Some("make test".into()),
                    timeout_ms: 60000
                }
            )
        );
        let reply: Frame =
            serde_json::from_str(r#"{"v":1,"id":"4f1c-1","msg":{"type":"reloaded","pid":4242}}"#)
                .unwrap();
        assert_eq!(
            Response::from_frame(&reply).unwrap(),
            ("4f1c-1".to_owned(), Response::Reloaded { pid: 4242 })
        );
    }
}
