//! An embedder that adopts orphans without a reaper thread
//! (`reaper::adopt_orphans_on_signal`, as `porthold run` does) sweeps the
//! exited orphans on SIGCHLD and after every reap of an owned child: here the
//! four workers' own reaps sweep while the other workers fork children that
//! exit at once. A sweep must never reap a child a generation owns, even one
//! that exited before its fork returned (see `orphans_support`).
//!
//! In a test binary of its own: adopting orphans lasts for the whole process.

mod orphans_support;

use porthold::supervisor::reaper;

#[test]
fn five_hundred_quick_exits_each_report_their_own_code_while_orphans_are_swept() {
    reaper::adopt_orphans_on_signal().expect("adopting orphans");
    assert!(reaper::adopts_orphans());
    orphans_support::five_hundred_quick_exits_report_their_own_codes();
}
