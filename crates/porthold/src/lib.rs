//! porthold: race-free local ports.
//!
//! (The crate guide is filled in as the modules land.)

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod duration;
pub mod error;
pub mod supervisor;

pub use error::{Error, ErrorKind, Holder, Result};
