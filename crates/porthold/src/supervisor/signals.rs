//! The launcher's signals: caught, never fatal, delivered to one loop.
//!
//! porthold must outlive its server to report the server's exit code, so
//! SIGTERM, SIGINT, SIGQUIT and SIGHUP are caught (a handler that writes to a
//! self-pipe, from `signal-hook`) instead of killing it. A thread reads them
//! and the instance decides: before the server is ready a signal cancels the
//! start; afterwards it is forwarded to the server's process group.
//!
//! # Ctrl-C exactly once
//!
//! A terminal sends SIGINT to every process of its foreground process group.
//! The server runs in its own process group, so Ctrl-C reaches porthold only,
//! and porthold forwards it once. (Were the server in porthold's group, it
//! would receive the terminal's SIGINT *and* porthold's copy.)
//!
//! The spawner resets every disposition to the default and empties the signal
//! mask in the child, so none of this leaks into the server.

use rustix::process::Signal;
use signal_hook::iterator::Signals;

use crate::error::{Error, Result};

/// The signals the launcher catches.
pub const CAUGHT: [Signal; 4] = [Signal::TERM, Signal::INT, Signal::QUIT, Signal::HUP];

/// Catches [`CAUGHT`] for the life of the process; [`wait`](SignalWatcher::wait) returns them in order.
pub struct SignalWatcher {
    signals: Signals,
}

impl std::fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalWatcher")
    }
}

impl SignalWatcher {
    /// Installs the handlers. From now on these signals no longer terminate the process.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> Result<SignalWatcher> {
        let signals = Signals::new(CAUGHT.map(|s| s.as_raw()))
            .map_err(|e| Error::io("installing signal handlers", e))?;
        Ok(SignalWatcher { signals })
    }

    /// Blocks until the next caught signal.
    pub fn wait(&mut self) -> Option<Signal> {
        self.signals
            .forever()
            .next()
            .and_then(|raw| CAUGHT.into_iter().find(|s| s.as_raw() == raw))
    }
}
