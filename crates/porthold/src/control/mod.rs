//! The control protocol: the control socket (`<runtime-dir>/<name>.sock`)
//! through which `porthold reload` and `porthold status` talk to a running
//! instance, and the wire layer it shares with the private handoff channel of
//! each generation (`PORTHOLD_HANDOFF_FD`).
//!
//! - [`frame`]: length-prefixed JSON frames, an incremental decoder whose
//!   failures are typed, and blocking helpers over any `Read`/`Write` (writes
//!   to sockets never raise `SIGPIPE`);
//! - [`request`]: the typed messages ([`Request`], [`Response`]);
//! - [`server`]: [`ControlServer`], bound at mode 0600 before it is visible,
//!   checking each peer's uid, calling the embedder's [`Handler`];
//! - [`client`]: the [`ControlClient`].
//!
//! The format is described in `docs/control.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use porthold::control::{ControlClient, ControlServer, Request, Response};
//!
//! # fn main() -> porthold::Result<()> {
//! let dir = std::path::Path::new("/run/user/1000/porthold");
//! let server = ControlServer::bind(dir, "web")?;
//! let stop = server.shutdown_handle();
//! std::thread::scope(|s| {
//!     s.spawn(|| server.serve(&|request: Request| match request {
//!         Request::Status => Response::Status { status: serde_json::json!({"state": "ready"}) },
//!         _ => Response::Unsupported { reason: "not yet".into() },
//!     }));
//!     let mut client = ControlClient::connect(server.path())?;
//!     let reply = client.request(&Request::Status, Duration::from_secs(5))?;
//!     assert!(matches!(reply, Response::Status { .. }));
//!     stop.shutdown();
//!     Ok(())
//! })
//! # }
//! ```

pub mod client;
pub mod frame;
pub mod request;
pub mod server;

pub use client::ControlClient;
pub use request::{CONTROL_VERSION, MessageError, Request, Response};
pub use server::{ControlServer, Handler, ServerStats, ShutdownHandle};
