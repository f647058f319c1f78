//! Occupancy probes: is a port free for a server *right now*?
//!
//! A probe mirrors what a server does: it creates a socket with SO_REUSEADDR
//! on (servers set it), SO_REUSEPORT off (setting it would let the probe
//! coexist with a REUSEPORT listener and call the port free), IPV6_V6ONLY set
//! explicitly, and binds it on the wildcard address of each family, 0.0.0.0
//! and ::. That answers for 127.0.0.1 and ::1 too: the kernel checks a
//! wildcard bind against every socket of the family on the port (a wildcard
//! address overlaps every address), with the same SO_REUSEADDR rules as a
//! bind on one address, so a bind on 127.0.0.1 or ::1 can never fail where
//! the wildcard bind succeeds (and IPV6_V6ONLY keeps the IPv6 probe out of
//! the IPv4 space, which the IPv4 probe covers). It never listens, so no
//! client can ever connect to a probe. Error classes: EADDRINUSE means busy,
//! EACCES means unusable by this user, EAFNOSUPPORT and EADDRNOTAVAIL mean
//! that family or address does not exist here (not applicable, ignored).

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

/// The addresses probed: the wildcard of each family (see the module docs:
/// together they cover 127.0.0.1, ::1 and every other local address).
const PROBE_ADDRS: [(Domain, &str); 2] = [(Domain::IPV4, "0.0.0.0"), (Domain::IPV6, "::")];

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

/// Trial-binds TCP `port` on 0.0.0.0 and :: (those that exist): busy when a
/// socket that a server's bind would collide with holds it on any address
/// of either family (127.0.0.1, ::1, the wildcards, any other).
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

    /// A socket set up as a server (or a client, `listen: false`) might hold `addr`.
    struct Holder {
        addr: &'static str,
        v6only: Option<bool>,
        reuse_address: bool,
        reuse_port: bool,
        listen: bool,
    }

    impl Holder {
        fn listener(addr: &'static str) -> Holder {
            Holder {
                addr,
                v6only: None,
                reuse_address: true,
                reuse_port: false,
                listen: true,
            }
        }

        /// Binds (and listens, when asked) on an ephemeral port; `None` when
        /// this machine has no such address.
        fn hold(&self) -> Option<(Socket, u16)> {
            let addr: SocketAddr = format!("{}:0", self.addr).parse().unwrap();
            let domain = Domain::for_address(addr);
            let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).ok()?;
            socket.set_reuse_address(self.reuse_address).unwrap();
            socket.set_reuse_port(self.reuse_port).unwrap();
            if let Some(v6only) = self.v6only {
                socket.set_only_v6(v6only).unwrap();
            }
            socket.bind(&addr.into()).ok()?;
            if self.listen {
                socket.listen(8).unwrap();
            }
            let port = socket.local_addr().unwrap().as_socket().unwrap().port();
            Some((socket, port))
        }
    }

    /// The probe as it was: a bind on each of 127.0.0.1, ::1, 0.0.0.0 and ::.
    fn probe_each_address(port: u16) -> Occupancy {
        let mut result = Occupancy::Free;
        for (domain, addr) in [
            (Domain::IPV4, "127.0.0.1"),
            (Domain::IPV6, "::1"),
            (Domain::IPV4, "0.0.0.0"),
            (Domain::IPV6, "::"),
        ] {
            match try_bind(domain, addr, port) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => return Occupancy::Busy,
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => result = Occupancy::Unusable,
                Err(_) => {}
            }
        }
        result
    }

    /// Binding only the two wildcards finds every holder that the four
    /// binds found: a listener on any of the four addresses, a dual-stack
    /// one, one on another loopback address or an IPv4-mapped one, a
    /// REUSEPORT listener, a bound socket without SO_REUSEADDR; and, like
    /// them, ignores a bound-only SO_REUSEADDR socket.
    #[test]
    fn the_wildcard_probe_answers_as_a_bind_on_each_address_does() {
        let holders = [
            (Holder::listener("127.0.0.1"), Occupancy::Busy),
            (Holder::listener("127.0.0.2"), Occupancy::Busy),
            (Holder::listener("0.0.0.0"), Occupancy::Busy),
            (
                Holder {
                    v6only: Some(true),
                    ..Holder::listener("[::1]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    v6only: Some(true),
                    ..Holder::listener("[::]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    v6only: Some(false),
                    ..Holder::listener("[::]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    v6only: Some(false),
                    ..Holder::listener("[::ffff:127.0.0.1]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    reuse_port: true,
                    ..Holder::listener("127.0.0.1")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    reuse_port: true,
                    v6only: Some(true),
                    ..Holder::listener("[::1]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    reuse_address: false,
                    listen: false,
                    ..Holder::listener("127.0.0.1")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    reuse_address: false,
                    listen: false,
                    v6only: Some(true),
                    ..Holder::listener("[::1]")
                },
                Occupancy::Busy,
            ),
            (
                Holder {
                    listen: false,
                    ..Holder::listener("127.0.0.1")
                },
                Occupancy::Free,
            ),
        ];
        let mut checked = 0;
        for (holder, expected) in holders {
            let Some((socket, port)) = holder.hold() else {
                eprintln!("skipping {}: no such address here", holder.addr);
                continue;
            };
            assert_eq!(probe_tcp(port), expected, "{} held", holder.addr);
            assert_eq!(
                probe_tcp(port),
                probe_each_address(port),
                "{} held",
                holder.addr
            );
            drop(socket);
            assert_eq!(probe_tcp(port), Occupancy::Free, "{} released", holder.addr);
            checked += 1;
        }
        assert!(checked >= 4, "only {checked} holders could be set up");
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
