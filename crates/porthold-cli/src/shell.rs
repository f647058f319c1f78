//! Shell-safe output for `autoreserve --format export|dotenv`.
//!
//! Output that a shell evaluates (`eval "$(porthold autoreserve --format
//! export)"`) must define variables and do nothing else, whatever bytes a
//! project path contains. Names are checked against `[A-Z_][A-Z0-9_]*` (the
//! config loader already refused anything else; checking again here means a
//! future caller cannot bypass it), and every value is wrapped in single
//! quotes, inside which POSIX shells interpret nothing at all: no `$`, no
//! backquote, no backslash, and a newline is just a newline. The one byte
//! that cannot appear inside single quotes, `'` itself, is written as `'\''`
//! (close the quote, an escaped quote, reopen).

/// Quotes `value` for a POSIX shell: `it's` → `'it'\''s'`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// One assignment line, `NAME='value'`, after checking the name.
pub fn assignment(name: &str, value: &str) -> anyhow::Result<String> {
    porthold::config::validate_env_syntax(name)?;
    Ok(format!("{name}={}", quote(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_single_quoted_and_quotes_escaped() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(touch x)\n`y`"), "'$(touch x)\n`y`'");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(assignment("X;touch f", "1").is_err());
        assert!(assignment("web", "1").is_err());
        assert_eq!(assignment("WEB_PORT", "1").unwrap(), "WEB_PORT='1'");
    }
}
