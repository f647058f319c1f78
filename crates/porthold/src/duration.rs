//! Human durations: `500ms`, `5s`, `2m`, `1h`, `30d`; a bare number is
//! seconds (`5`) and decimals are accepted (`1.5s`, `0.25`), as systemd and
//! timeout(1) read them.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration: a number with an optional unit `ms`, `s`, `m`, `h` or
/// `d` (no unit: seconds). The number may have a decimal part (`1.5s`); the
/// result is rounded down to whole milliseconds.
///
/// # Errors
/// [`Error::Invalid`] naming the text when it is not a non-negative number
/// optionally followed by a unit, or when it overflows.
pub fn parse(text: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(
            format!("invalid duration `{}`", crate::text::quote_prefix(text)),
            Some(
                "write a number of seconds (5, 1.5) or a number and a unit: 500ms, 5s, 2m, 1h or 30d"
                    .to_string(),
            ),
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let millis_per_unit: u128 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // `5.` and `.5` are accepted as systemd does; `.` alone and `1.2.3` are not.
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // Exact decimal arithmetic in billionths of the unit: no float rounding.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction = &fraction[..fraction.len().min(9)];
    let fraction_nanos: u128 = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().map_err(|_| bad())?;
        digits * 10u128.pow(9 - fraction.len() as u32)
    };
    let millis = whole
        .checked_mul(millis_per_unit)
        .and_then(|ms| ms.checked_add(fraction_nanos * millis_per_unit / 1_000_000_000))
        .ok_or_else(bad)?;
    u64::try_from(millis)
        .map(Duration::from_millis)
        .map_err(|_| bad())
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
    fn a_bare_number_is_seconds_and_decimals_are_accepted() {
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0.25m").unwrap(), Duration::from_secs(15));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2.5ms").unwrap(), Duration::from_millis(2));
        assert_eq!(parse("1.0001h").unwrap(), Duration::from_millis(3_600_360));
    }

    #[test]
    fn nonsense_is_rejected_naming_the_value() {
        for bad in [
            "",
            "s",
            ".",
            ".s",
            "1.2.3s",
            "5 s",
            "-1s",
            "5x",
            "1e3s",
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
