//! The supervisor: everything `porthold run` does around the child process.
//!
//! It is built from independent parts, each usable and tested on its own:
//!
//! * [`lifecycle`]: the state machine of a start (and of a reload's new
//!   generation), with compare-and-swap transitions and a cancellation token that
//!   is checked before any work and at every boundary;
//! * [`ready`]: readiness modes and their probe loops;
//! * [`tree`]: ownership of the child's whole process tree (subreaper, tree
//!   walks, kill-and-reap, exit-code mapping);
//! * [`signals`]: the signal policy of a launcher ([`signals::SignalWatcher`],
//!   installed by the embedder, never by [`instance::run`]) and the
//!   [`signals::SignalSource`] through which an instance receives signals;
//! * [`instance`]: all of it together, in the order of work of `porthold run`;
//! * [`generation`]: one child of an instance with its own pidfd, process
//!   group, captured output and scoped stop, spawned from a dedicated
//!   [`generation::Spawner`] thread (what `TestServer` hosts, and what
//!   several instances in one process use without disturbing each other);
//! * [`launch`]: typed start failures ([`LaunchError`]);
//! * [`plan`]: the run plan: a project's service and the caller's choices
//!   turned into sockets, ports, readiness, environment and a name (shared
//!   by `porthold run` and `TestServer`);
//! * [`reaper`]: who reaps which child: every child is reaped by its own
//!   waiter, by pid; orphans only in an embedder that opted in
//!   ([`reaper::adopt_orphans`], or [`reaper::adopt_orphans_on_signal`]
//!   without a thread, what the CLI does).

pub mod generation;
pub mod instance;
pub mod launch;
pub mod lifecycle;
pub mod plan;
pub mod ready;
pub mod reaper;
pub mod signals;
pub mod tree;

pub use generation::{Generation, GenerationSpec, GenerationStdio, Spawner};
pub use instance::{Instance, Running, StartFailure};
pub use launch::LaunchError;
