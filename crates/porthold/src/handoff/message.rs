//! The handoff protocol's messages.
//!
//! Each message is the `msg` object of a frame ([`crate::control::frame`]),
//! tagged by `type` in snake case: `{"type": "prepare_handoff", "deadline_ms": 5000}`.
//! Unknown fields are ignored (later minor versions may add some); an unknown
//! `type` is a protocol violation.

use serde::{Deserialize, Serialize};

use crate::control::frame::Frame;

/// The oldest protocol version this build speaks.
pub const PROTOCOL_MIN: u32 = 1;
/// The newest protocol version this build speaks.
pub const PROTOCOL_MAX: u32 = 1;

/// What a generation is in a handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The generation that serves now and hands its state over.
    Incumbent,
    /// The generation that takes the state over.
    Successor,
}

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// porthold, or any program that supervises generations.
    Supervisor,
    /// The serving generation.
    Incumbent,
    /// The generation being started.
    Successor,
}

impl Role {
    /// The role's name, as in `PORTHOLD_HANDOFF_ROLE` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Incumbent => "incumbent",
            Role::Successor => "successor",
        }
    }
}

impl From<Role> for Party {
    fn from(role: Role) -> Party {
        match role {
            Role::Incumbent => Party::Incumbent,
            Role::Successor => Party::Successor,
        }
    }
}

/// A handoff message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Generation → supervisor: opens a session.
    Hello {
        /// The sender's role.
        role: Role,
        /// The sender's pid.
        pid: u32,
        /// An opaque build identifier (version, commit) for logs.
        build_id: String,
        /// Oldest protocol version the sender speaks.
        proto_min: u32,
        /// Newest protocol version the sender speaks.
        proto_max: u32,
    },
    /// Supervisor → generation: the session is open. The frame's `id` is the
    /// handoff id of this attempt; its `v` and `version` are the chosen version.
    HelloAck {
        /// The chosen protocol version.
        version: u32,
    },
    /// Supervisor → incumbent: stop accepting and drain.
    PrepareHandoff {
        /// The bound on the whole attempt, from now until the successor is ready.
        deadline_ms: u64,
    },
    /// Incumbent → supervisor: accepting stopped, in-flight work finished (or the drain ran out of time).
    Drained {
        /// Connections still open when draining ended.
        open_connections: u64,
    },
    /// Supervisor → incumbent: make the state durable and release the lock.
    SealRequest,
    /// Incumbent → supervisor: sealing advances (keeps long seals observable).
    SealProgress {
        /// Units done.
        done: u64,
        /// Units in all (0 when unknown).
        total: u64,
    },
    /// Incumbent → supervisor: the state is durable and the data-directory lock released.
    SealComplete,
    /// Incumbent → supervisor: sealing failed; the incumbent still holds the lock.
    SealFailed {
        /// Why.
        reason: String,
    },
    /// Supervisor → incumbent: the successor is ready; exit.
    Commit,
    /// Supervisor → incumbent: roll back (re-acquire the lock if released,
    /// re-read the state, accept again). Ends the session.
    Resume {
        /// Why the attempt was abandoned.
        reason: String,
    },
    /// Supervisor → successor: the lock is free; acquire it and open the state.
    Begin {
        /// Time left for the successor to become ready.
        deadline_ms: u64,
    },
    /// Successor → supervisor: it holds the lock, has opened the state and serves.
    Ready,
    /// Either way, every 250 ms, in every state.
    Heartbeat {
        /// Sender's counter, for logs.
        seq: u64,
    },
}

/// A message's type without its payload: what the state tables match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Kind {
    Hello,
    HelloAck,
    PrepareHandoff,
    Drained,
    SealRequest,
    SealProgress,
    SealComplete,
    SealFailed,
    Commit,
    Resume,
    Begin,
    Ready,
    Heartbeat,
}

impl Message {
    /// The message's type.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::HelloAck { .. } => Kind::HelloAck,
            Message::PrepareHandoff { .. } => Kind::PrepareHandoff,
            Message::Drained { .. } => Kind::Drained,
            Message::SealRequest => Kind::SealRequest,
            Message::SealProgress { .. } => Kind::SealProgress,
            Message::SealComplete => Kind::SealComplete,
            Message::SealFailed { .. } => Kind::SealFailed,
            Message::Commit => Kind::Commit,
            Message::Resume { .. } => Kind::Resume,
            Message::Begin { .. } => Kind::Begin,
            Message::Ready => Kind::Ready,
            Message::Heartbeat { .. } => Kind::Heartbeat,
        }
    }

    /// Parses the `msg` of a frame.
    ///
    /// # Errors
    /// The JSON error when `msg` is no known message.
    pub fn from_frame(frame: &Frame) -> Result<Message, serde_json::Error> {
        Message::deserialize(&frame.msg)
    }
}

impl Kind {
    /// Whether `party` may send this message at all.
    pub fn may_be_sent_by(self, party: Party) -> bool {
        use Kind::*;
        match self {
            Heartbeat => true,
            Hello => party != Party::Supervisor,
            HelloAck | PrepareHandoff | SealRequest | Commit | Resume | Begin => {
                party == Party::Supervisor
            }
            Drained | SealProgress | SealComplete | SealFailed => party == Party::Incumbent,
            Ready => party == Party::Successor,
        }
    }

    /// The snake-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        use Kind::*;
        match self {
            Hello => "hello",
            HelloAck => "hello_ack",
            PrepareHandoff => "prepare_handoff",
            Drained => "drained",
            SealRequest => "seal_request",
            SealProgress => "seal_progress",
            SealComplete => "seal_complete",
            SealFailed => "seal_failed",
            Commit => "commit",
            Resume => "resume",
            Begin => "begin",
            Ready => "ready",
            Heartbeat => "heartbeat",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        let role = prop_oneof![Just(Role::Incumbent), Just(Role::Successor)];
        prop_oneof![
            (role, any::<u32>(), ".{0,16}", any::<u32>(), any::<u32>()).prop_map(
                |(role, pid, build_id, proto_min, proto_max)| Message::Hello {
                    role,
                    pid,
                    build_id,
                    proto_min,
                    proto_max
                }
            ),
            any::<u32>().prop_map(|version| Message::HelloAck { version }),
            any::<u64>().prop_map(|deadline_ms| Message::PrepareHandoff { deadline_ms }),
            any::<u64>().prop_map(|open_connections| Message::Drained { open_connections }),
            Just(Message::SealRequest),
            (any::<u64>(), any::<u64>())
                .prop_map(|(done, total)| Message::SealProgress { done, total }),
            Just(Message::SealComplete),
            ".{0,32}".prop_map(|reason| Message::SealFailed { reason }),
            Just(Message::Commit),
            ".{0,32}".prop_map(|reason| Message::Resume { reason }),
            any::<u64>().prop_map(|deadline_ms| Message::Begin { deadline_ms }),
            Just(Message::Ready),
            any::<u64>().prop_map(|seq| Message::Heartbeat { seq }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips_through_a_frame(
            msg in arb_message(),
            id in proptest::option::of("[0-9a-f]{1,32}"),
            v in any::<u32>(),
        ) {
            let frame = Frame::new(v, id.as_deref(), &msg).unwrap();
            let mut decoder = crate::control::frame::FrameDecoder::new();
            decoder.feed(&frame.encode().unwrap());
            let back = decoder.next_frame().unwrap().unwrap();
            prop_assert_eq!(&back, &frame);
            prop_assert_eq!(back.msg["type"].as_str(), Some(msg.kind().as_str()));
            prop_assert_eq!(Message::from_frame(&back).unwrap(), msg);
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_rejected() {
        let frame: Frame =
            serde_json::from_str(r#"{"v":1,"id":"a","msg":{"type":"ready","extra":1}}"#).unwrap();
        assert_eq!(Message::from_frame(&frame).unwrap(), Message::Ready);
        let frame: Frame =
            serde_json::from_str(r#"{"v":1,"id":"a","msg":{"type":"reboot"}}"#).unwrap();
        assert!(Message::from_frame(&frame).is_err());
    }
}
