//! Sockets as the kernel sees them: occupancy probes, the kernel's port ranges,
//! and who owns a listening socket.
//!
//! Nothing here knows about reservations. The registry asks, through the
//! [`OccupancyProbe`] trait, whether a port is free *right now*; tests pass a
//! fake probe so allocation logic can be checked without real sockets.

pub mod kernel;
pub mod listen;
pub mod owner;
pub mod probe;

pub use kernel::{KernelPorts, PortRange};
pub use owner::{SocketOwner, listeners_on_port};
pub use probe::{Occupancy, OccupancyProbe, SystemProbe};
