//! Showing untrusted text to humans: paths, tags, labels and record fields can
//! hold any byte a file name or a flag can, including newlines and terminal
//! escape sequences. Everything porthold prints for humans (tables, errors,
//! notes) goes through [`escape`], so a crafted directory name can neither
//! forge an output line nor drive the terminal; error messages quote values
//! through [`quote_prefix`], so a megabyte of input stays a short message.
//!
//! `--json` output needs none of this: JSON strings escape control characters
//! themselves.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// The longest `--project` / `--task` / `project.name` label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// How many characters of a value an error message quotes.
pub const QUOTE_PREFIX_CHARS: usize = 80;

/// Whether `c` must not reach a terminal raw: C0 and C1 controls, DEL, and the
/// Unicode bidirectional overrides and isolates (which reorder what follows).
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character written as an escape: `\n`, `\r`,
/// `\t`, `\\x1b`, `\u{9b}`. Text without control characters is returned as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path for humans: lossy UTF-8, escaped as [`escape`] does.
pub fn escape_path(path: &Path) -> String {
    escape(&path.to_string_lossy()).into_owned()
}

/// At most [`QUOTE_PREFIX_CHARS`] characters of `value`, escaped, with
/// `…(N bytes)` appended when it was cut: what an error message quotes.
pub fn quote_prefix(value: &str) -> String {
    let count = value.chars().count();
    if count <= QUOTE_PREFIX_CHARS {
        return escape(value).into_owned();
    }
    let prefix: String = value.chars().take(QUOTE_PREFIX_CHARS).collect();
    format!("{}…({} bytes)", escape(&prefix), value.len())
}

/// Checks a label (`--project`, `--task`, `project.name`): at most
/// [`MAX_LABEL_BYTES`] bytes. `what` names the value in the error.
///
/// # Errors
/// [`Error::Invalid`] naming `what` and quoting a prefix of the value.
pub fn validate_label<'a>(what: &str, label: &'a str) -> Result<&'a str> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(Error::invalid(
            format!(
                "{what} `{}` is {} bytes long; at most {MAX_LABEL_BYTES} are allowed",
                quote_prefix(label),
                label.len()
            ),
            Some(format!("use a label of at most {MAX_LABEL_BYTES} bytes")),
        ));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(escape("/home/u/shop"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        assert_eq!(escape("del\x7f"), "del\\x7f");
        assert_eq!(escape("c1\u{9b}2J"), "c1\\u{9b}2J");
        assert_eq!(escape("bidi\u{202e}txt"), "bidi\\u{202e}txt");
        assert_eq!(escape("café ✓"), "café ✓");
        assert_eq!(escape_path(Path::new("/tmp/a\nb")), "/tmp/a\\nb");
    }

    #[test]
    fn quoted_values_are_bounded() {
        assert_eq!(quote_prefix("short"), "short");
        let long = "x".repeat(10_000);
        let quoted = quote_prefix(&long);
        assert!(quoted.len() < 120, "{quoted}");
        assert!(quoted.ends_with("…(10000 bytes)"), "{quoted}");
        assert!(!quote_prefix(&"\n".repeat(200)).contains('\n'));
    }

    #[test]
    fn labels_are_capped() {
        assert!(validate_label("--project", &"p".repeat(MAX_LABEL_BYTES)).is_ok());
        let err = validate_label("--project", &"p".repeat(MAX_LABEL_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("--project"), "{err}");
        assert!(err.to_string().contains("257 bytes"), "{err}");
    }
}
