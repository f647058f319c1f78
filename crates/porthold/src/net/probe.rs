//! Occupancy probes: is a port free for a server *right now*?
//!
//! A probe mirrors what a server does: it creates a socket with SO_REUSEADDR
//! on (servers set it), SO_REUSEPORT off (setting it would let the probe
//! coexist with a REUSEPORT listener and call the port free), IPV6_V6ONLY set
//! explicitly, and binds it on each of 127.0.0.1, ::1, 0.0.0.0 and ::. It
//! never listens, so no client can ever connect to a probe. Error classes:
//! EADDRINUSE means busy, EACCES means unusable by this user, EAFNOSUPPORT and
//! EADDRNOTAVAIL mean that family or address does not exist here (not
//! applicable, ignored).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// The answer of a probe for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// Every applicable address could be bound.
    Free,
    /// Some address is in use (EADDRINUSE).
    Busy,
    /// This user may not bind the port (EACCES).
    Unusable,
}

/// Something that can tell whether a port is free. The registry takes this as
/// a parameter so tests can substitute a fake.
pub trait OccupancyProbe {
    /// Probes one TCP port.
    fn probe(&self, port: u16) -> Occupancy;

    /// The pid and command of a process listening on `port`, when knowable.
    fn owner(&self, port: u16) -> Option<(u32, String)>;
}

/// The real probe: trial binds on the loopback and wildcard addresses of both families.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemProbe;

/// The four addresses a server is likely to bind.
const PROBE_ADDRS: [(Domain, &str); 4] = [
    (Domain::IPV4, "127.0.0.1"),
    (Domain::IPV6, "::1"),
    (Domain::IPV4, "0.0.0.0"),
    (Domain::IPV6, "::"),
];

impl OccupancyProbe for SystemProbe {
    fn probe(&self, port: u16) -> Occupancy {
        probe_tcp(port)
    }

    fn owner(&self, port: u16) -> Option<(u32, String)> {
        super::owner::listeners_on_port(port)
            .into_iter()
            .find_map(|listener| listener.owner.map(|o| (o.pid, o.comm)))
    }
}

/// Trial-binds TCP `port` on 127.0.0.1, ::1, 0.0.0.0 and :: (those that exist).
pub fn probe_tcp(port: u16) -> Occupancy {
    let mut result = Occupancy::Free;
    for (domain, addr) in PROBE_ADDRS {
        match try_bind(domain, addr, port) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => return Occupancy::Busy,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => result = Occupancy::Unusable,
            // EAFNOSUPPORT, EADDRNOTAVAIL (no IPv6, no such address) and
            // anything else: that address is not applicable here.
            Err(_) => {}
        }
    }
    result
}

fn try_bind(domain: Domain, addr: &str, port: u16) -> io::Result<()> {
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    let ip: std::net::IpAddr = if domain == Domain::IPV6 {
        socket.set_only_v6(true)?;
        addr.parse::<Ipv6Addr>().map_err(io::Error::other)?.into()
    } else {
        addr.parse::<Ipv4Addr>().map_err(io::Error::other)?.into()
    };
    socket.bind(&SocketAddr::new(ip, port).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listener_on_ipv4_loopback_makes_the_port_busy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(probe_tcp(port), Occupancy::Busy);
        drop(listener);
        assert_eq!(probe_tcp(port), Occupancy::Free);
    }

    #[test]
    fn a_listener_on_ipv6_loopback_makes_the_port_busy() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipping: no IPv6 loopback here");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        assert_eq!(probe_tcp(port), Occupancy::Busy);
    }

    #[test]
    fn a_bound_but_not_listening_reuseaddr_socket_does_not_count_as_busy() {
        // Servers bind with SO_REUSEADDR; a mere bind by another REUSEADDR
        // socket (another probe) must not make the port look taken.
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        other.set_reuse_address(true).unwrap();
        other
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let port = other.local_addr().unwrap().as_socket().unwrap().port();
        assert_eq!(probe_tcp(port), Occupancy::Free);
    }
}
