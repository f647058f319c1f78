//! Test-only pause points.
//!
//! With the `test-hooks` feature, `PORTHOLD_TEST_PAUSE=<point>:<millis>` makes
//! the process print `porthold-test: paused at <point>` to stderr and sleep at
//! that point, so a test can kill it or race another process in a window that a
//! 2-core machine would rarely hit by chance. Without the feature, `pause`
//! compiles to nothing.

/// Pauses at `point` when the environment asks for it (feature `test-hooks` only).
#[inline]
pub fn pause(point: &str) {
    #[cfg(feature = "test-hooks")]
    {
        use std::io::Write;
        let Ok(spec) = std::env::var("PORTHOLD_TEST_PAUSE") else {
            return;
        };
        for item in spec.split(',') {
            if let Some((name, millis)) = item.split_once(':')
                && name == point
                && let Ok(millis) = millis.parse::<u64>()
            {
                let _ = writeln!(std::io::stderr(), "porthold-test: paused at {point}");
                std::thread::sleep(std::time::Duration::from_millis(millis));
            }
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}

/// The environment variable that turns a test's "skipped: <reason>" into a failure.
pub const REQUIRE_ALL_ENV: &str = "PORTHOLD_REQUIRE_ALL";

/// For tests that need an external program or root: prints `skipped: <reason>`
/// and returns, so the test can end early, unless `PORTHOLD_REQUIRE_ALL=1` is
/// set (CI sets it), in which case it panics: CI can never be green with a
/// test silently skipped.
///
/// # Panics
/// When `PORTHOLD_REQUIRE_ALL=1` is set.
pub fn skip(reason: &str) {
    if std::env::var_os(REQUIRE_ALL_ENV).is_some_and(|v| v == "1") {
        panic!("{REQUIRE_ALL_ENV}=1 but this test would be skipped: {reason}");
    }
    eprintln!("skipped: {reason}");
}
