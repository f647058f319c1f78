//! Socket activation: handing bound sockets to a server, and hearing back from it.
//!
//! porthold speaks the systemd protocol in both directions (see `docs/activation.md`).
//! A launcher binds the listening sockets itself, then starts the server with the
//! sockets at file descriptors `3, 4, ...` and three environment variables:
//! `LISTEN_FDS` (how many), `LISTEN_PID` (the pid of the process meant to take
//! them: the server's *own* pid, so that a grandchild that inherits the
//! environment does not mistake the sockets for its own) and `LISTEN_FDNAMES`
//! (one name per fd, joined with `:`). Because the socket is bound before the
//! server starts, no other program can take the port in between, and clients
//! that connect early wait in the kernel's accept queue instead of being refused.
//!
//! [`spawn`] is the launcher side of the handover: it starts a program with the
//! sockets at fds 3.. and the `LISTEN_*` environment, leaking no other fd and
//! running only async-signal-safe code between fork and exec.
//! [`receive`] is the server side of that handover ([`receive::listeners`]) and
//! the `NOTIFY_SOCKET` client ([`receive::notify_ready`]). [`notify`] is the
//! launcher side of readiness: a datagram socket that learns each sender's pid
//! from the kernel (`SCM_CREDENTIALS`) and a policy deciding which senders may
//! speak for the server.

pub mod notify;
pub mod receive;
pub mod spawn;

pub use receive::{listeners, notify_ready};
pub use spawn::{Child, SpawnRequest, substitute_ports};
