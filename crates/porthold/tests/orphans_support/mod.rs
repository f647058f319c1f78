//! The stress both ways of adopting orphans must pass: 4 threads × 125
//! generations that exit at once with their own codes, while every fourth
//! one leaves an orphan behind, each report exactly their own code. (A
//! reaper that calls `waitpid(-1)`, the naive design, takes some of those
//! statuses.)

use std::time::Duration;

use porthold::supervisor::generation::{Generation, GenerationSpec, Spawner};

fn spec(script: &str) -> GenerationSpec {
    GenerationSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..GenerationSpec::default()
    }
}

/// Runs the 500 generations; panics naming the first one whose status was wrong or lost.
pub fn five_hundred_quick_exits_report_their_own_codes() {
    std::thread::scope(|scope| {
        for worker in 0..4u32 {
            scope.spawn(move || {
                let spawner = Spawner::new().expect("a spawner");
                for round in 0..125u32 {
                    let code = (worker * 125 + round) % 200 + 1;
                    // Every fourth one leaves an orphan behind for the reaper.
                    let script = if round % 4 == 0 {
                        format!("(sleep 0.01 &); exit {code}")
                    } else {
                        format!("exit {code}")
                    };
                    let generation = Generation::spawn(&spawner, spec(&script)).expect("spawn");
                    let status = generation
                        .wait_timeout(Duration::from_secs(30))
                        .unwrap_or_else(|| panic!("worker {worker} round {round}: no status"));
                    assert_eq!(
                        status.code(),
                        Some(i32::try_from(code).unwrap()),
                        "worker {worker} round {round}: {status:?}"
                    );
                }
            });
        }
    });
}
