//! Reload: a new generation on the same sockets, the overlap model
//! (PRODUCT.md §3.3).
//!
//! 1. the optional pre-flight check (a failure leaves the old generation untouched);
//! 2. generation n+1 is spawned on duplicates of the same listening sockets
//!    (the executable resolved again; `LISTEN_PID` is the new child's);
//! 3. its readiness: `notify` (`READY=1` from n+1's tree only), `cmd:` and
//!    `delay:` as configured; `listen`, `tcp` and `http:` cannot tell two
//!    generations apart through one shared socket, so n+1 must live for
//!    [`RunOptions::reload_delay`](super::RunOptions::reload_delay) instead;
//! 4. the confirm window: n+1 must stay alive for
//!    [`RunOptions::reload_confirm`](super::RunOptions::reload_confirm)
//!    while n still serves;
//! 5. commit: n+1 is the record's current generation; n gets the stop
//!    signal, and SIGKILL after the drain timeout (the serving loop keeps
//!    that deadline; the reload returns at the commit).
//!
//! Any failure in steps 1–4, the timeout, or a stop request rolls back: n+1's
//! whole tree is killed and n, which never stopped accepting, serves on.
//! Connections that arrive meanwhile wait in the one backlog both
//! generations accept from: nothing is refused.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::{Event, Inbox, Instance, StartFailure, TREE_GRACE};
use crate::activation::spawn::SpawnRequest;
use crate::discovery::{GenerationCause, State as RecordState};
use crate::error::{Error, Result};
use crate::supervisor::generation::Generation;
use crate::supervisor::lifecycle::CancelToken;
use crate::supervisor::ready::{self, ReadyMode, ReadyOutcome};
use crate::supervisor::tree;

/// What a reload's readiness wait needs from the serving loop: its inbox
/// (notify messages arrive there) and a place for the events it must not lose.
pub(super) struct ReloadWait<'a> {
    pub(super) inbox: &'a Inbox,
    pub(super) deferred: &'a mut Vec<Event>,
    /// Another generation still serves on the sockets (a reload), so a
    /// readiness that cannot tell generations apart must wait instead;
    /// `false` for a restart after the server exited.
    pub(super) overlap: bool,
    /// Set for a generation a handoff starts: readiness is the protocol.
    pub(super) handoff: Option<super::handoff::HandoffWait>,
}

/// The outcome of a committed reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reloaded {
    /// The new generation's number and pid.
    pub(super) number: u64,
    pub(super) pid: u32,
    /// The generation it replaced (now sent the stop signal).
    pub(super) retired: u64,
    /// From the request to n+1's readiness, in milliseconds.
    pub(super) ready_ms: u64,
}

impl Instance {
    /// Runs one reload to its commit or its rollback (see the module docs).
    /// `cancel` is the instance's stop request; `deferred` receives the
    /// events for the serving loop that arrived meanwhile.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an instance that holds no socket (`no_fds`);
    /// [`Error::RolledBack`] naming the reason otherwise.
    pub(super) fn reload(
        &mut self,
        check: Option<&str>,
        timeout: Duration,
        cancel: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
    ) -> Result<Reloaded> {
        if self.options.no_fds {
            return Err(Error::invalid(
                format!(
                    "instance {} holds no socket (its server binds its port by itself): a reload would refuse connections",
                    self.options.name
                ),
                None,
            ));
        }
        let Some(old) = self.current().map(|g| g.number) else {
            return Err(Error::RolledBack {
                reason: "the instance has no running generation".into(),
            });
        };
        // One token for the reload: cancelled by a stop request or the timeout.
        let deadline = Instant::now() + timeout;
        let token = CancelToken::new();
        let done = CancelToken::new();
        {
            let (token, done, cancel) = (token.clone(), done.clone(), cancel.clone());
            std::thread::spawn(move || {
                loop {
                    if cancel.is_cancelled() || Instant::now() >= deadline {
                        token.cancel();
                        return;
                    }
                    if done.wait_timeout(Duration::from_millis(20)) {
                        return;
                    }
                }
            });
        }
        self.set_state(RecordState::Reloading);
        let began = Instant::now();
        let mut ready_at = None;
        let handoff = self.options.handoff.is_some();
        let mut cold = false;
        let result = if handoff {
            self.handoff_steps(check, &token, cancel, inbox, deferred)
                .map(|(number, pid, was_cold)| {
                    ready_at = Some(Instant::now());
                    cold = was_cold;
                    (number, pid)
                })
        } else {
            self.reload_steps(check, &token, cancel, inbox, deferred, &mut ready_at)
        };
        done.cancel();
        let ready_ms = ready_at.map(|at: Instant| {
            u64::try_from(at.duration_since(began).as_millis()).unwrap_or(u64::MAX)
        });
        match result {
            Ok((number, pid)) => {
                self.record_event(number, GenerationCause::Reload, Ok((ready_ms, Some(old))));
                let _ = self.republish();
                let old_pid = self
                    .generations
                    .iter()
                    .find(|g| g.number == old)
                    .map(|g| g.generation.pid());
                // A handoff's incumbent exits by itself at Commit (or was
                // killed for a cold start); the drain timeout still bounds it.
                if let Some(old_pid) = old_pid
                    && !handoff
                {
                    tree::signal_group(old_pid, self.options.stop_signal);
                }
                if cold && !self.options.quiet {
                    eprintln!(
                        "porthold: {}: generation {number} started cold after the incumbent was killed",
                        self.options.name
                    );
                }
                Ok(Reloaded {
                    number,
                    pid,
                    retired: old,
                    ready_ms: ready_ms.unwrap_or(0),
                })
            }
            Err(reason) => {
                self.record_event(old + 1, GenerationCause::Reload, Err(reason.clone()));
                self.set_state(RecordState::Ready);
                Err(Error::RolledBack { reason })
            }
        }
    }

    fn reload_steps(
        &mut self,
        check: Option<&str>,
        token: &CancelToken,
        cancel: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
        ready_at: &mut Option<Instant>,
    ) -> std::result::Result<(u64, u32), String> {
        let why_cancelled = || why_cancelled(cancel);
        self.preflight(check, token, cancel)?;
        let wait = ReloadWait {
            inbox,
            deferred,
            overlap: true,
            handoff: None,
        };
        let launched = self.launch(token, &mut |_| {}, Some(wait));
        let (number, generation) = match launched {
            Ok(launched) => launched,
            Err(StartFailure::Cancelled) => return Err(why_cancelled()),
            Err(StartFailure::Failed(e)) => return Err(e.to_string()),
        };
        *ready_at = Some(Instant::now());
        // The confirm window: n+1 must stay alive while n still serves.
        let confirm_end = Instant::now() + self.options.reload_confirm;
        loop {
            if let Some(status) = generation.try_wait() {
                generation.stop(Signal::TERM, TREE_GRACE);
                self.forget_generation(generation.pid());
                return Err(format!(
                    "generation {number} exited within the confirm window ({status})"
                ));
            }
            if token.is_cancelled() {
                generation.stop(Signal::TERM, TREE_GRACE);
                self.forget_generation(generation.pid());
                return Err(why_cancelled());
            }
            let left = confirm_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            generation.wait_timeout(left.min(Duration::from_millis(20)));
        }
        let pid = generation.pid();
        self.commit(number, generation).map_err(|e| match e {
            StartFailure::Cancelled => why_cancelled(),
            StartFailure::Failed(e) => e.to_string(),
        })?;
        Ok((number, pid))
    }

    /// A reload's first step: the optional pre-flight check (see
    /// [`Instance::run_check`]); a check cut off by `token` says why.
    pub(super) fn preflight(
        &mut self,
        check: Option<&str>,
        token: &CancelToken,
        cancel: &CancelToken,
    ) -> std::result::Result<(), String> {
        let Some(check) = check else {
            return Ok(());
        };
        self.run_check(check, token).map_err(|e| {
            if token.is_cancelled() {
                why_cancelled(cancel)
            } else {
                e
            }
        })
    }

    /// The pre-flight check: `sh -c CHECK` with the server's environment, in
    /// a process group of its own (its output is the launcher's); `Err` with
    /// the reason unless it exits 0. Cut off by `token`, its whole group is
    /// killed.
    fn run_check(&self, check: &str, token: &CancelToken) -> std::result::Result<(), String> {
        let stdin = ready::dev_null().map_err(|e| e.to_string())?;
        let mut request = SpawnRequest::new(vec!["sh".into(), "-c".into(), check.into()])
            .stdin(stdin)
            .new_process_group(true)
            .parent_death_signal(Signal::KILL);
        for (k, v) in &self.env {
            request = request.env(k, v);
        }
        let child = request
            .spawn()
            .map_err(|e| format!("the check `{check}` could not start: {e}"))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("the check `{check}` failed ({status})"));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for the check `{check}`: {e}")),
            }
            if token.wait_timeout(Duration::from_millis(5)) {
                ready::kill_probe(&child);
                return Err("cancelled".into());
            }
        }
    }

    /// Starts a new generation after the current one exited by itself
    /// (`--restart`): readiness as configured (nothing else serves on the
    /// sockets), then it is the current generation and the exited ones are
    /// forgotten. Returns its number and pid.
    ///
    /// # Errors
    /// The start's failure (the child killed and reaped).
    pub(super) fn restart(
        &mut self,
        cancel: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
    ) -> std::result::Result<(u64, u32), StartFailure> {
        let wait = ReloadWait {
            inbox,
            deferred,
            overlap: false,
            handoff: None,
        };
        let (number, generation) = self.launch(cancel, &mut |_| {}, Some(wait))?;
        let pid = generation.pid();
        self.commit(number, generation)?;
        let ended: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.number != number && g.generation.try_wait().is_some())
            .map(|g| g.generation.pid())
            .collect();
        for pid in ended {
            self.forget_generation(pid);
        }
        self.generations
            .retain(|g| g.number == number || g.generation.try_wait().is_none());
        let _ = self.republish();
        Ok((number, pid))
    }

    pub(super) fn set_state(&mut self, state: RecordState) {
        if let Some(record) = self.record.as_mut() {
            record.state = state;
        }
        let _ = self.republish();
    }
}

/// A reload's readiness wait for generation n+1 (`child`).
pub(super) fn wait_ready(
    instance: &mut Instance,
    reload: &mut ReloadWait<'_>,
    child: &Generation,
    cancel: &CancelToken,
) -> ReadyOutcome {
    if let Some(wait) = reload.handoff {
        return super::handoff::wait_ready(instance, wait, child, cancel);
    }
    let mut child_exited = || child.try_wait();
    let options = &instance.options;
    let mode = match &options.ready {
        ReadyMode::Notify { .. } => {
            // The notify socket's messages reach the serving loop's inbox:
            // READY=1 counts only from n+1's tree. Every message is kept for
            // the loop too (n's `STATUS=` still reaches the record), and so
            // is every other event.
            let (inbox, deferred) = (reload.inbox, &mut *reload.deferred);
            let mut next = |wait| match inbox.recv_timeout(wait) {
                Ok(Event::Notify(message)) => {
                    deferred.push(Event::Notify(message.clone()));
                    Ok(Some(message))
                }
                Ok(event) => {
                    deferred.push(event);
                    Ok(None)
                }
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err("the serving loop ended".to_string()),
            };
            return super::wait_notify(
                &mut next,
                options.notify_access,
                child.pid(),
                options.ready_timeout,
                cancel,
                &mut child_exited,
                &mut instance.status,
            );
        }
        ReadyMode::Listen if !reload.overlap => return ReadyOutcome::Ready,
        // Nothing else serves (a restart): the probe answers for this generation.
        mode @ (ReadyMode::Tcp | ReadyMode::Http { .. }) if !reload.overlap => mode.clone(),
        mode @ (ReadyMode::Listen | ReadyMode::Tcp | ReadyMode::Http { .. }) => {
            let name = match mode {
                ReadyMode::Listen => "listen",
                ReadyMode::Tcp => "tcp",
                _ => "http:",
            };
            if !options.quiet {
                eprintln!(
                    "porthold: {}: readiness `{name}` cannot tell two generations apart through one socket; generation {} must stay alive for {:?} instead",
                    options.name,
                    instance.generations.last().map_or(1, |g| g.number + 1),
                    options.reload_delay
                );
            }
            ReadyMode::Delay(options.reload_delay)
        }
        other => other.clone(),
    };
    super::wait_probe(instance, &mode, cancel, &mut child_exited)
}

/// Why a reload's token was cancelled: a stop request (`cancel`) or its timeout.
pub(super) fn why_cancelled(cancel: &CancelToken) -> String {
    if cancel.is_cancelled() {
        "the instance is stopping".to_string()
    } else {
        "the reload's timeout passed".to_string()
    }
}
