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

/// The library error inside an anyhow chain, if there is one.
fn library_error(err: &anyhow::Error) -> Option<&porthold::Error> {
    err.chain()
        .find_map(|e| e.downcast_ref::<porthold::Error>())
}

/// The hint for `err` when it ends `command` (`reserve`, `run`, ...): every hint
/// that names a flag lives here, per command, so it only ever names a flag that
/// command really has. Hints that name no flag come from the library.
pub fn hint_for(command: &str, err: &porthold::Error) -> Option<String> {
    use porthold::{Error, Holder};
    let group = matches!(command, "reserve-group" | "autoreserve");
    let hint = match err {
        Error::UnrelatedPath { .. } => {
            "pass --allow-unrelated-path if you really mean that path".to_string()
        }
        Error::PortTaken {
            holder: Holder::Excluded,
            ..
        } => match command {
            "reserve" => "pick another port, use --or-any, or remove the exclusion (`porthold exclude PORT --remove`)".into(),
            _ => "pick another port, or remove the exclusion (`porthold exclude PORT --remove`)".into(),
        },
        Error::PortTaken { port, .. } => match command {
            "reserve" => "use --or-any to accept another port, or pick a different one".into(),
            "run" => format!(
                "pass another --port, --ephemeral for a kernel-chosen one, or free port {port} \
                 (`porthold port-info {port}` shows its holder)"
            ),
            _ if group => format!(
                "change the service's `port` in porthold.toml, or free port {port} \
                 (`porthold port-info {port}` shows its holder)"
            ),
            _ => format!("`porthold port-info {port}` shows who holds it"),
        },
        Error::KeyHoldsOtherPort { held, requested, .. } => match command {
            "reserve" => "use --force to move the key to the requested port".into(),
            "run" => format!(
                "drop --port to run on the key's port {held}, or move the key first \
                 (`porthold reserve --port {requested} --force`)"
            ),
            _ => return err.hint(),
        },
        Error::StickyLabel { .. } if command == "reserve" => "use --force to change it".into(),
        Error::NameTaken { name, pid, .. } => {
            let running = match pid {
                Some(pid) => format!("`{name}` (pid {pid})"),
                None => format!("`{name}`"),
            };
            format!(
                "stop the running instance {running} first (`porthold stop --name {name}`), \
                 or give this one another --name"
            )
        }
        Error::PoolExhausted { .. } => match command {
            "pick" => "leases are reclaimed only when their owner has exited or their --ttl \
                passed, nothing listens on the port and 60 s have passed since handout \
                (`porthold list --leases` shows them, `porthold release --port N` frees one); \
                or widen the pool with --pool"
                .into(),
            "reserve" | "reserve-group" | "autoreserve" => "release unused reservations \
                (`porthold list`, `porthold release`) or widen the pool with --pool"
                .into(),
            _ => "release unused reservations (`porthold list`, `porthold release`) or widen \
                  the pool (`[pool] range` in the configuration, or PORTHOLD_POOL)"
                .into(),
        },
        Error::Busy { what, .. } if what.starts_with("registry") => {
            "retry, or wait longer with --busy-timeout".into()
        }
        Error::Busy { .. } if command == "stop" => {
            "wait longer with --timeout, or add --kill to SIGKILL what is left".into()
        }
        _ => return err.hint(),
    };
    Some(hint)
}

/// A reservation note as `command` says it: the library's text names no flag,
/// so the flag that acts on the note is added here, only where `command` has it.
pub fn note_for(command: &str, note: &porthold::registry::ReserveNote) -> String {
    use porthold::registry::ReserveNote;
    match note {
        ReserveNote::InUse { .. } if command == "reserve" => {
            format!("{note} (use --reassign to move the key)")
        }
        ReserveNote::InUse { .. } => {
            format!("{note} (`porthold reserve --reassign` moves the key to a free port)")
        }
        ReserveNote::FellBack {
            requested, holder, ..
        } if command == "reserve" => {
            format!("port {requested} is {holder}; --or-any chose another port")
        }
        _ => note.to_string(),
    }
}

/// The error and its causes, outermost first, joined by `: `. A cause whose
/// text the message already ends with is said once: library errors such as
/// `Error::Io` print their source in their own text, and anyhow's `{:#}`
/// would repeat it ("Permission denied (os error 13): Permission denied (os error 13)").
fn chain_text(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Prints `err` on stderr (human or `--json`) and returns its exit code.
pub fn report(err: &anyhow::Error, json: bool, color: ColorChoice, command: &str) -> ExitCode {
    let lib = library_error(err);
    let kind = lib.map_or(ErrorKind::Usage, porthold::Error::kind);
    let code = code_for(kind);
    let hint = lib.and_then(|e| hint_for(command, e));
    let message = chain_text(err);
    let (message, hint) = if json {
        // JSON escapes control characters itself.
        (message, hint)
    } else {
        (
            porthold::text::escape(&message).into_owned(),
            hint.map(|h| porthold::text::escape(&h).into_owned()),
        )
    };
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

/// Reports a command-line parse error: `--help` and `--version` print to
/// stdout and succeed; anything else is a usage error (exit 2), rendered by
/// clap for humans or as the JSON error object under `--json`.
pub fn report_usage(err: &clap::Error, json: bool) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if !json {
        let _ = err.print();
        return ExitCode::from(USAGE);
    }
    let rendered = err.render().to_string();
    let mut paragraphs = rendered.split("\n\n");
    let message = paragraphs
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error:")
        .trim()
        .to_string();
    let usage = paragraphs
        .find(|p| p.trim_start().starts_with("Usage:"))
        .map(|p| p.trim().to_string());
    let hint = match usage {
        Some(usage) => format!("{usage}; see --help"),
        None => "see --help".to_string(),
    };
    let body = serde_json::json!({
        "error": { "kind": ErrorKind::Usage.as_str(), "exit": USAGE, "message": message, "hint": hint }
    });
    let _ = writeln!(std::io::stderr().lock(), "{body}");
    ExitCode::from(USAGE)
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
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::from_raw_os_error(13);
        let err =
            anyhow::Error::new(porthold::Error::io("reading `/x`", io)).context("while listing");
        let text = chain_text(&err);
        assert_eq!(text.matches("os error 13").count(), 1, "{text}");
        assert!(text.starts_with("while listing: reading `/x`: "), "{text}");
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
