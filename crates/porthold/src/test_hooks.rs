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
