//! An embedder that adopts orphans (`reaper::adopt_orphans`) has a thread
//! reaping every child no porthold waiter owns. It must never reap a child a
//! generation owns (see `orphans_support`).
//!
//! In a test binary of its own: adopting orphans lasts for the whole process.

mod orphans_support;

use porthold::supervisor::reaper;

#[test]
fn five_hundred_quick_exits_each_report_their_own_code_while_orphans_are_reaped() {
    reaper::adopt_orphans().expect("adopting orphans");
    assert!(reaper::adopts_orphans());
    orphans_support::five_hundred_quick_exits_report_their_own_codes();
}
