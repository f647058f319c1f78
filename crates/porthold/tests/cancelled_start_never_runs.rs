//! A start whose cancellation happened before the transition to `Running` never
//! ends `Running` (PRODUCT.md P3, shared/reference/002: a `Start(ctx)` with an
//! already-cancelled context reported success because setup did not block).
//!
//! The steps are real: a TCP listener on 127.0.0.1:0, a `sleep` child, a `tcp`
//! readiness probe, and a kill-and-reap abort.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use porthold::supervisor::lifecycle::{
    Boundary, CancelToken, Lifecycle, Phase, StartError, StartSteps, State,
};
use porthold::supervisor::ready::{ProbeOptions, ReadyMode, ReadyOutcome, wait_ready};

#[derive(Default)]
struct RealSteps {
    address: Option<SocketAddr>,
    bound: usize,
    spawned: usize,
    aborted: usize,
}

impl StartSteps for RealSteps {
    type Sockets = TcpListener;
    type Child = Child;

    fn bind(&mut self) -> porthold::Result<TcpListener> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| porthold::Error::io("bind", e))?;
        self.address = Some(
            listener
                .local_addr()
                .map_err(|e| porthold::Error::io("local_addr", e))?,
        );
        self.bound += 1;
        Ok(listener)
    }

    fn spawn(&mut self, _sockets: &TcpListener) -> porthold::Result<Child> {
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| porthold::Error::io("spawn sleep", e))?;
        self.spawned += 1;
        Ok(child)
    }

    fn wait_ready(&mut self, child: &mut Child, cancel: &CancelToken) -> ReadyOutcome {
        let options = ProbeOptions::new(self.address, Duration::from_secs(60));
        wait_ready(&ReadyMode::Tcp, &options, cancel, &mut || {
            child.try_wait().ok().flatten()
        })
        .expect("tcp mode with an address always probes")
    }

    fn abort(&mut self, mut child: Child) -> Option<ExitStatus> {
        self.aborted += 1;
        let _ = child.kill();
        child.wait().ok()
    }
}

fn phase_checked_at(boundary: Boundary) -> Phase {
    match boundary {
        Boundary::BeforeBind => Phase::Idle,
        Boundary::BeforeSpawn => Phase::Binding,
        Boundary::BeforeReadyWait => Phase::Spawning,
        Boundary::BeforeRunning => Phase::WaitingReady,
    }
}

#[test]
fn a_token_cancelled_before_start_ends_cancelled_and_does_no_work() {
    // The exact seed case of 002: the context is cancelled before Start is called.
    let machine = Lifecycle::new();
    let token = CancelToken::new();
    token.cancel();
    let mut steps = RealSteps::default();
    let result = machine.start(&token, &mut steps, &mut |_| {});
    assert!(
        matches!(
            result,
            Err(StartError::Cancelled {
                during: Phase::Idle,
                child_status: None
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        machine.state(),
        State::Cancelled {
            during: Phase::Idle
        }
    );
    assert_eq!(
        (steps.bound, steps.spawned),
        (0, 0),
        "a cancelled start must not bind or spawn"
    );
}

#[test]
fn an_uncancelled_start_reaches_running_and_stops() {
    // The control: the same steps do reach Running, so the other tests can fail.
    for _ in 0..20 {
        let machine = Lifecycle::new();
        let token = CancelToken::new();
        let mut steps = RealSteps::default();
        let started = machine
            .start(&token, &mut steps, &mut |_| {})
            .expect("start");
        assert_eq!(machine.state(), State::Running);
        // A cancellation after Running is a stop, not a failed start.
        token.cancel();
        assert!(
            machine
                .advance(Phase::Running, Phase::Stopping, &token)
                .is_ok()
        );
        let _ = steps.abort(started.child);
        machine.transition(Phase::Stopping, State::Stopped).unwrap();
        assert_eq!(machine.state(), State::Stopped);
    }
}

#[test]
fn a_cancel_raced_in_at_every_pause_point_never_ends_running() {
    // 1,000 starts, round-robin over the pause points. At the chosen boundary the
    // start thread pauses; another thread cancels (and has returned from cancel())
    // before the start resumes. The start must end Cancelled at that boundary, with
    // any spawned child killed and reaped.
    let (paused_tx, paused_rx) = mpsc::channel::<CancelToken>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let canceller = std::thread::spawn(move || {
        for token in paused_rx {
            token.cancel();
            resume_tx.send(()).unwrap();
        }
    });

    for iteration in 0..1_000 {
        let pause_at = Boundary::ALL[iteration % Boundary::ALL.len()];
        let machine = Lifecycle::new();
        let token = CancelToken::new();
        let mut steps = RealSteps::default();
        let result = machine.start(&token, &mut steps, &mut |boundary| {
            if boundary == pause_at {
                paused_tx.send(token.clone()).unwrap();
                resume_rx.recv().unwrap();
            }
        });
        let during = phase_checked_at(pause_at);
        match &result {
            Err(StartError::Cancelled { during: seen, .. }) => {
                assert_eq!(
                    *seen, during,
                    "iteration {iteration}: cancelled at the wrong boundary"
                )
            }
            other => panic!(
                "iteration {iteration}: cancel at {pause_at:?} gave {other:?}, state {}",
                machine.state()
            ),
        }
        assert_eq!(
            machine.state(),
            State::Cancelled { during },
            "iteration {iteration}"
        );
        assert_eq!(
            steps.spawned, steps.aborted,
            "iteration {iteration}: a child was left behind"
        );
        if let Ok(started) = result {
            let _ = steps.abort(started.child);
        }
    }
    drop(paused_tx);
    canceller.join().unwrap();
}

#[test]
fn a_cancel_racing_freely_never_ends_running_once_it_has_returned() {
    // No pause: a thread cancels after a varying delay while the start runs. Either
    // outcome is legal, except one: the cancel() call had returned before the final
    // check (observed at BeforeRunning) and the start still ended Running.
    let (mut running, mut cancelled) = (0, 0);
    for iteration in 0..200u64 {
        let machine = Lifecycle::new();
        let token = CancelToken::new();
        let returned = Arc::new(AtomicBool::new(false));
        let canceller = {
            let token = token.clone();
            let returned = Arc::clone(&returned);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros((iteration * 7919) % 4000));
                token.cancel();
                returned.store(true, Ordering::SeqCst);
            })
        };
        let mut steps = RealSteps::default();
        let mut returned_before_final_check = false;
        let result = machine.start(&token, &mut steps, &mut |boundary| {
            if boundary == Boundary::BeforeRunning {
                returned_before_final_check = returned.load(Ordering::SeqCst);
            }
        });
        canceller.join().unwrap();
        match result {
            Ok(started) => {
                assert!(
                    !returned_before_final_check,
                    "iteration {iteration}: Running although the cancel had returned before the final check"
                );
                assert_eq!(machine.state(), State::Running);
                let _ = steps.abort(started.child);
                running += 1;
            }
            Err(StartError::Cancelled { during, .. }) => {
                assert_eq!(machine.state(), State::Cancelled { during });
                cancelled += 1;
            }
            Err(other) => panic!("iteration {iteration}: {other:?}"),
        }
        assert_eq!(steps.spawned, steps.aborted);
    }
    eprintln!(
        "free race: {running} starts ended running (cancel came later), {cancelled} cancelled"
    );
}
