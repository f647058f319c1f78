//! Exit codes (PRODUCT.md §3.4) and error reporting: the single table that maps
//! library error kinds to process exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | negative answer (assertion false, nothing found) |
//! | 2 | usage or config error |
//! | 3 | conflict (port held by another key or process, name already running) |
//! | 4 | pool exhausted |
//! | 5 | busy (registry lock timeout, reload in progress) |
//! | 6 | registry unreadable or corrupt |
//! | 7 | reload rolled back |
//! | 8 | launch failure |

use std::io::Write;
use std::process::ExitCode;

use porthold::ErrorKind;

use crate::output::{ColorChoice, Style};

/// Negative answer.
pub const NEGATIVE: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;

/// The exit code for an error kind.
pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => NEGATIVE,
        ErrorKind::Usage => USAGE,
        ErrorKind::Conflict => 3,
        ErrorKind::PoolExhausted => 4,
        ErrorKind::Busy => 5,
        ErrorKind::Corrupt => 6,
        ErrorKind::RolledBack => 7,
        ErrorKind::Launch => 8,
        _ => USAGE,
    }
}

/// A library error with the hint of the command that met it, replacing the
/// library's generic one (which may name another command's flags).
#[derive(Debug)]
pub struct WithHint {
    /// The error (its message and kind are kept).
    pub error: porthold::Error,
    /// What the user can do, in this command's terms.
    pub hint: String,
}

impl std::fmt::Display for WithHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for WithHint {}

/// The library error inside an anyhow chain, if there is one.
fn library_error(err: &anyhow::Error) -> Option<&porthold::Error> {
    err.chain().find_map(|e| {
        e.downcast_ref::<porthold::Error>()
            .or_else(|| e.downcast_ref::<WithHint>().map(|w| &w.error))
    })
}

/// Prints `err` on stderr (human or `--json`) and returns its exit code.
pub fn report(err: &anyhow::Error, json: bool, color: ColorChoice) -> ExitCode {
    let lib = library_error(err);
    let kind = lib.map_or(ErrorKind::Usage, porthold::Error::kind);
    let code = code_for(kind);
    let hint = match err.chain().find_map(|e| e.downcast_ref::<WithHint>()) {
        Some(with_hint) => Some(with_hint.hint.clone()),
        None => lib.and_then(porthold::Error::hint),
    };
    let message = format!("{err:#}");
    let mut stderr = std::io::stderr().lock();
    if json {
        let body = serde_json::json!({
            "error": { "kind": kind.as_str(), "exit": code, "message": message, "hint": hint }
        });
        let _ = writeln!(stderr, "{body}");
    } else {
        let style = Style::for_stderr(color);
        let _ = writeln!(stderr, "porthold: {} {message}", style.error("error:"));
        if let Some(hint) = hint {
            let _ = writeln!(stderr, "  {} {hint}", style.hint("hint:"));
        }
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_documented_code() {
        let table = [
            (ErrorKind::NotFound, 1),
            (ErrorKind::Usage, 2),
            (ErrorKind::Conflict, 3),
            (ErrorKind::PoolExhausted, 4),
            (ErrorKind::Busy, 5),
            (ErrorKind::Corrupt, 6),
            (ErrorKind::RolledBack, 7),
            (ErrorKind::Launch, 8),
        ];
        for (kind, code) in table {
            assert_eq!(code_for(kind), code, "{kind}");
        }
    }

    #[test]
    fn the_library_error_is_found_through_context() {
        let err =
            anyhow::Error::new(porthold::Error::NotFound("x".into())).context("while listing");
        assert_eq!(
            library_error(&err).map(porthold::Error::kind),
            Some(ErrorKind::NotFound)
        );
    }
}
