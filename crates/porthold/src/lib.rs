//! porthold: race-free local ports.
//!
//! "Pick a free port, close it, start the server on that number" is a race:
//! between the close and the server's `bind` any other process can take the
//! port. porthold closes that window in two ways: it *reserves* ports per
//! project in a registry (so two projects never get the same one), and it
//! *binds* the socket itself and hands the bound socket to the server
//! (socket activation, `LISTEN_FDS`), so there is no window at all.
//!
//! # Features
//!
//! * `registry` (default): the SQLite port registry ([`registry`]); pulls in
//!   `rusqlite` with a bundled SQLite.
//! * `testing`: [`testing::TestServer`], to start a server on pre-bound
//!   sockets in a test. It needs no SQLite.
//!
//! A server that only wants its sockets ([`activation::listeners`]) or a test
//! suite that only wants `TestServer` should not compile SQLite:
//!
//! ```toml
//! porthold = { version = "0.1", default-features = false }                       # a server
//! porthold = { version = "0.1", default-features = false, features = ["testing"] } # tests
//! ```
//!
//! # Reserve a port for a project (feature `registry`)
//!
//! ```
//! # #[cfg(feature = "registry")]
//! # fn main() -> Result<(), porthold::Error> {
//! use std::time::Duration;
//! use porthold::key::Key;
//! use porthold::net::{KernelPorts, PortRange};
//! use porthold::pool::Pool;
//! use porthold::registry::{Registry, ReserveRequest};
//!
//! # let dir = std::env::temp_dir().join(format!("porthold-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let mut registry = Registry::open(&dir, Duration::from_secs(5))?;
//! let key = Key { path: "/home/me/shop".into(), tag: "web".into() };
//! let pool = Pool::new(vec![PortRange::new(10000, 10999).expect("start <= end")])?;
//! let kernel = KernelPorts::read();
//! let first = registry.reserve(&ReserveRequest::new(key.clone(), pool.clone(), kernel.clone()), None)?;
//! // The same key always gets the same port back.
//! let again = registry.reserve(&ReserveRequest::new(key, pool, kernel), None)?;
//! assert_eq!(first.reservation.port, again.reservation.port);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "registry"))]
//! # fn main() {}
//! ```
//!
//! # Take the sockets you were given (server side)
//!
//! Under `porthold run`, systemd, or a [`testing::TestServer`], the server's
//! sockets are already bound at fds 3, 4, …:
//!
//! ```no_run
//! # fn main() -> Result<(), porthold::Error> {
//! let mut sockets = porthold::activation::listeners()?; // taken once; LISTEN_* cleared
//! let listener = sockets.remove(0).into_tcp_listener()?;
//! porthold::activation::notify_ready()?; // for `--ready notify`; a no-op without NOTIFY_SOCKET
//! for conn in listener.incoming() {
//!     // serve conn
//! #   let _ = conn;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Start a server in a test (feature `testing`)
//!
//! ```no_run
//! # #[cfg(feature = "testing")]
//! # fn main() -> Result<(), porthold::Error> {
//! use porthold::testing::TestServer;
//! let server = TestServer::builder("./target/debug/my-server")
//!     .arg("--verbose")
//!     .start()?; // clients may connect at once: the socket already listens
//! let _url = server.url(); // http://127.0.0.1:PORT
//! server.stop()?; // Err if the server exited on its own, with its stderr tail
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "testing"))]
//! # fn main() {}
//! ```
//!
//! See `docs/testing.md`.
//!
//! # Look up a running instance
//!
//! ```no_run
//! # fn main() -> Result<(), porthold::Error> {
//! # let runtime_dir = std::path::PathBuf::from("/run/user/1000/porthold");
//! if let Some(live) = porthold::discovery::lookup(&runtime_dir, "shop-web")? {
//!     println!("{:?} (pid {:?})", live.record.url("http"), live.record.child_pid);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod activation;
pub mod config;
pub mod control;
pub mod discovery;
pub mod duration;
pub mod error;
pub mod handoff;
pub mod identity;
pub mod key;
pub mod net;
pub mod pool;
#[cfg(feature = "registry")]
pub mod registry;
pub mod supervisor;
mod sync;
#[doc(hidden)]
pub mod test_hooks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod time;

pub use error::{Error, ErrorKind, Holder, Result, StorageProblem};

/// `docs/testing.md`, whose examples run as doctests.
#[cfg(all(doctest, feature = "testing"))]
#[doc = include_str!("../../../docs/testing.md")]
pub struct TestingGuide;
