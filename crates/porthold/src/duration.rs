//! Human durations: `500ms`, `5s`, `2m`, `1h`, `30d`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration with a unit suffix: `ms`, `s`, `m`, `h` or `d`.
///
/// # Errors
/// [`Error::Invalid`] naming the text when it is not a number followed by a unit.
pub fn parse(text: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            format!("invalid duration `{text}`"),
            Some("write a number and a unit: 500ms, 5s, 2m, 1h or 30d".to_string()),
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (number, unit) = trimmed.split_at(split);
    let value: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Formats a duration the way [`parse`] reads it, choosing the largest exact unit.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn nonsense_is_rejected_naming_the_value() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-1s",
            "1.5s",
            "5x",
            "99999999999999999999d",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["500ms", "5s", "2m", "1h", "30d", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
