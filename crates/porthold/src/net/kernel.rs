//! The kernel's own port allocation ranges.
//!
//! Linux hands out ports from `net.ipv4.ip_local_port_range` for `bind(0)` and
//! for the implicit bind of `connect()`. A port porthold gives to a project must
//! not lie in that range, or any outbound connection on the machine may take it
//! between the handout and the server's bind. Ports listed in
//! `ip_local_reserved_ports` are never auto-assigned, so they stay safe even
//! inside the ephemeral range.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An inclusive range of ports, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A range from `start` to `end` inclusive; `None` when `start > end` or `start == 0`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(PortRange { start, end })
    }

    /// A range holding a single port.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `self` minus `other`: zero, one or two ranges.
    pub fn subtract(&self, other: &PortRange) -> Vec<PortRange> {
        if !self.overlaps(other) {
            return vec![*self];
        }
        let mut out = Vec::new();
        if other.start > self.start {
            out.extend(PortRange::new(self.start, other.start - 1));
        }
        if other.end < self.end {
            out.extend(PortRange::new(other.end + 1, self.end));
        }
        out
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = Error;

    /// Parses `8000-8999` or a single port `8080`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                format!("invalid port range `{text}`"),
                Some("write a range as START-END with ports 1-65535, e.g. 10000-29999".to_string()),
            )
        };
        let (a, b) = match text.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (text.trim(), text.trim()),
        };
        let start: u16 = a.parse().map_err(|_| bad())?;
        let end: u16 = b.parse().map_err(|_| bad())?;
        PortRange::new(start, end).ok_or_else(bad)
    }
}

/// Parses one port number `1..=65535`, naming the value when it is not one.
pub fn parse_port(text: &str) -> Result<u16> {
    match text.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Error::invalid(
            format!("invalid port `{text}`"),
            Some("a port is a number from 1 to 65535".to_string()),
        )),
    }
}

/// The kernel's port allocation settings that matter to porthold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPorts {
    /// `net.ipv4.ip_local_port_range`: where `bind(0)` and `connect()` take ports from.
    pub ephemeral: PortRange,
    /// `net.ipv4.ip_local_reserved_ports`: never auto-assigned by the kernel.
    pub reserved: Vec<PortRange>,
}

impl KernelPorts {
    /// Linux's default when `/proc` cannot be read.
    pub const FALLBACK_EPHEMERAL: PortRange = PortRange {
        start: 32768,
        end: 60999,
    };

    /// Reads the current settings from `/proc/sys/net/ipv4`.
    ///
    /// A missing or unreadable file falls back to Linux's defaults: guessing
    /// the usual ephemeral range is safer than assuming there is none.
    pub fn read() -> KernelPorts {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| parse_local_port_range(&text))
            .unwrap_or(Self::FALLBACK_EPHEMERAL);
        let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .ok()
            .map(|text| parse_reserved_ports(&text))
            .unwrap_or_default();
        KernelPorts {
            ephemeral,
            reserved,
        }
    }

    /// Whether the kernel may hand `port` to `bind(0)` or `connect()`.
    pub fn is_auto_assignable(&self, port: u16) -> bool {
        self.ephemeral.contains(port) && !self.reserved.iter().any(|r| r.contains(port))
    }

    /// `pool` minus the auto-assignable ports, as sorted disjoint ranges.
    pub fn safe_part(&self, pool: &[PortRange]) -> Vec<PortRange> {
        // The unsafe set is the ephemeral range minus reserved ports.
        let mut unsafe_ranges = vec![self.ephemeral];
        for reserved in &self.reserved {
            unsafe_ranges = unsafe_ranges
                .iter()
                .flat_map(|r| r.subtract(reserved))
                .collect();
        }
        let mut out: Vec<PortRange> = pool.to_vec();
        for bad in &unsafe_ranges {
            out = out.iter().flat_map(|r| r.subtract(bad)).collect();
        }
        normalize(out)
    }
}

/// Sorts ranges and merges overlapping or adjacent ones.
pub fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if u32::from(range.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(range.end);
            }
            _ => out.push(range),
        }
    }
    out
}

/// Parses the two numbers of `ip_local_port_range` (`32768\t60999`).
pub fn parse_local_port_range(text: &str) -> Option<PortRange> {
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u16>());
    let start = numbers.next()?.ok()?;
    let end = numbers.next()?.ok()?;
    PortRange::new(start, end)
}

/// Parses `ip_local_reserved_ports` (`8080,9000-9100`, possibly empty).
pub fn parse_reserved_ports(text: &str) -> Vec<PortRange> {
    normalize(
        text.trim()
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .filter_map(|part| part.parse::<PortRange>().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert_eq!("8000-8999".parse::<PortRange>().unwrap(), r(8000, 8999));
        assert_eq!("8080".parse::<PortRange>().unwrap(), r(8080, 8080));
        for bad in ["", "0-10", "10-5", "a-b", "1-65536", "-", "5-"] {
            assert!(
                bad.parse::<PortRange>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            parse_local_port_range("32768\t60999\n"),
            Some(r(32768, 60999))
        );
        assert_eq!(parse_reserved_ports("\n"), vec![]);
        assert_eq!(
            parse_reserved_ports("40000-40010,8080,40011\n"),
            vec![r(8080, 8080), r(40000, 40011)]
        );
    }

    #[test]
    fn the_safe_pool_leaves_out_the_ephemeral_range_but_keeps_reserved_ports() {
        let kernel = KernelPorts {
            ephemeral: r(15000, 25000),
            reserved: vec![r(20000, 20009)],
        };
        let safe = kernel.safe_part(&[r(10000, 29999)]);
        assert_eq!(
            safe,
            vec![r(10000, 14999), r(20000, 20009), r(25001, 29999)]
        );
        assert!(kernel.is_auto_assignable(15000));
        assert!(!kernel.is_auto_assignable(20005));
        assert!(!kernel.is_auto_assignable(14999));
    }

    #[test]
    fn a_pool_inside_the_ephemeral_range_leaves_nothing() {
        let kernel = KernelPorts {
            ephemeral: r(1024, 65535),
            reserved: vec![],
        };
        assert!(kernel.safe_part(&[r(10000, 29999)]).is_empty());
    }

    #[test]
    fn subtract_and_normalize_cover_the_edges() {
        assert_eq!(r(1, 10).subtract(&r(1, 10)), vec![]);
        assert_eq!(r(1, 10).subtract(&r(5, 5)), vec![r(1, 4), r(6, 10)]);
        assert_eq!(r(1, 65535).subtract(&r(65535, 65535)), vec![r(1, 65534)]);
        assert_eq!(
            normalize(vec![r(5, 9), r(1, 4), r(20, 30), r(8, 12)]),
            vec![r(1, 12), r(20, 30)]
        );
    }
}
