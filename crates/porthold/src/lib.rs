//! porthold: race-free local ports.
//!
//! (The crate guide is filled in as the modules land.)

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod discovery;
pub mod error;
pub mod identity;

pub use error::{Error, ErrorKind, Holder, Result};
