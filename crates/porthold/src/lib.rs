//! porthold: race-free local ports.
//!
//! (The crate guide is filled in as the modules land.)

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
#[doc(hidden)]
pub mod test_hooks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod time;

pub use error::{Error, ErrorKind, Holder, Result};
