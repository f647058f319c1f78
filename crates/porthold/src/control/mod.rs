//! The control protocol's wire layer, shared by the control socket
//! (`<runtime-dir>/<name>.sock`) and the private handoff channel of each
//! generation (`PORTHOLD_HANDOFF_FD`).
//!
//! [`frame`] is the whole of it for now: length-prefixed JSON frames, an
//! incremental decoder whose failures are typed, and blocking helpers over
//! any `Read`/`Write` (writes to sockets never raise `SIGPIPE`). The format is
//! described in `docs/control.md`.

pub mod frame;
