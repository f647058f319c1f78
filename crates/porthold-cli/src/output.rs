//! Rendering: colours by role, JSON shapes, human tables.
//!
//! Data goes to stdout, diagnostics to stderr. `--json` output and anything a
//! program reads is never coloured.

use std::io::IsTerminal;

use clap::ValueEnum;
use porthold::registry::Reservation;
use serde_json::{Value, json};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Semantic colour roles for one stream.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    enabled: bool,
}

impl Style {
    /// The style for stderr under `choice`.
    pub fn for_stderr(choice: ColorChoice) -> Style {
        let enabled = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        };
        Style { enabled }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// An error label.
    pub fn error(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    /// A warning label.
    pub fn warning(&self, text: &str) -> String {
        self.paint("1;33", text)
    }

    /// A hint label.
    pub fn hint(&self, text: &str) -> String {
        self.paint("1;36", text)
    }
}

/// The JSON shape of one reservation (docs/cli-json.md).
pub fn reservation_json(r: &Reservation) -> Value {
    json!({
        "port": r.port,
        "path": r.path,
        "tag": r.tag,
        "project": r.project,
        "task": r.task,
        "created_at": porthold::time::rfc3339(r.created_at_ms),
        "last_used_at": porthold::time::rfc3339(r.last_used_at_ms),
        "lease_pid": r.lease_pid,
    })
}

/// A plain table with a header row, columns padded to their widest cell.
/// Cells are escaped ([`porthold::text::escape`]): a path or label holding a
/// newline or an escape sequence can neither forge a row nor drive the terminal.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| porthold::text::escape(&cell).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        line.join("  ").trim_end().to_string()
    };
    let mut lines = vec![render(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| render(row.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_cannot_forge_rows_or_send_escapes() {
        let out = table(
            &["PORT", "PATH"],
            vec![vec![
                "10000".into(),
                "/tmp/x\n10001  /home/victim\x1b[2J".into(),
            ]],
        );
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(
            out.contains("/tmp/x\\n10001  /home/victim\\x1b[2J"),
            "{out}"
        );
    }
}
