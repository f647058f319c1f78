//! Human durations: `500ms`, `5s`, `2m`, `1h`, `30d`, and sums such as `1m30s`.
//!
//! Every duration porthold accepts (`--ready-timeout`, `--drain-timeout`,
//! `--busy-timeout`, `delay:500ms`, `expire --older-than 30d`) goes through
//! [`parse`], so the grammar is the same everywhere:
//!
//! ```text
//! duration = component { component }
//! component = digits unit
//! unit = "ms" | "s" | "m" | "h" | "d"
//! ```
//!
//! A bare number is rejected on purpose: `--ready-timeout 60` could mean
//! seconds or milliseconds, and guessing wrong is a silent bug. Fractions
//! (`1.5s`) are rejected too; write `1500ms`. Overflow is an error, never a
//! wrap-around.

use std::time::Duration;

use crate::error::{Error, Result};

const HINT: &str = "write a whole number followed by a unit: 500ms, 5s, 2m, 1h, 30d (sums like 1m30s work too)";

/// Parses a human duration such as `500ms`, `5s`, `2m`, `1h`, `30d` or `1m30s`.
///
/// # Errors
///
/// [`Error::Invalid`] naming the value when it is empty, has no unit, has an
/// unknown unit, a fraction, a sign, or overflows.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(porthold::duration::parse("1m30s").unwrap(), Duration::from_secs(90));
/// assert!(porthold::duration::parse("60").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration> {
    let invalid = |why: &str| Error::invalid(format!("invalid duration `{text}`: {why}"), HINT.to_string());
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(invalid("expected a number"));
        }
        let (digits, after) = rest.split_at(digits_len);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(if after.is_empty() {
                invalid("the number has no unit")
            } else {
                invalid("fractions and other characters are not accepted")
            });
        }
        let (unit, after_unit) = after.split_at(unit_len);
        let value: u64 = digits.parse().map_err(|_| invalid("the number is too large"))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid(&format!("unknown unit `{unit}`"))),
        };
        let millis = value.checked_mul(millis_per_unit).ok_or_else(|| invalid("it is too large"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| invalid("it is too large"))?;
        rest = after_unit;
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it, choosing the largest exact unit
/// (`1500ms`, `90s`, `2m`, `1h`). Sub-millisecond parts are dropped.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0ms".to_string();
    }
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn sums_components() {
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h1m1s1ms").unwrap(), Duration::from_millis(3_661_001));
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        for bad in ["", "60", "5x", "1.5s", "-5s", "s", "5 s", " 5s", "5s ", "ms5", "5sec", "1m30"] {
            let err = parse(bad).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&format!("`{bad}`")), "{bad:?}: {message}");
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{bad:?}");
            assert!(err.hint().is_some());
        }
    }

    #[test]
    fn rejects_overflow_instead_of_wrapping() {
        assert!(parse("18446744073709551615d").is_err());
        assert!(parse("99999999999999999999999s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["1500ms", "90s", "2m", "1h", "30d", "0ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
