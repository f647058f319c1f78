//! The pool: the ports porthold allocates from.
//!
//! The default pool is 10000–29999 minus the kernel's ephemeral range (ports
//! listed in `ip_local_reserved_ports` stay in: the kernel never auto-assigns
//! them). A pool the user configures is used as given, with a warning where it
//! overlaps the ephemeral range.

use std::fmt;

use crate::error::{Error, Result};
use crate::net::kernel::normalize;
use crate::net::{KernelPorts, PortRange};

/// The built-in pool before the ephemeral range is taken out.
pub const DEFAULT_POOL: PortRange = PortRange {
    start: 10000,
    end: 29999,
};

/// A pool ready for allocation: sorted, disjoint ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<PortRange>,
}

/// Something about the pool the user should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolWarning {
    /// The configured range.
    pub configured: PortRange,
    /// The part of it the kernel may hand to `bind(0)` or `connect()`.
    pub ephemeral: PortRange,
}

impl fmt::Display for PoolWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool {} overlaps the kernel's ephemeral range {}: outgoing connections may take those ports; \
             choose a pool outside it or list the ports in net.ipv4.ip_local_reserved_ports",
            self.configured, self.ephemeral
        )
    }
}

impl Pool {
    /// A pool of exactly these ranges (merged and sorted).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `ranges` is empty.
    pub fn new(ranges: Vec<PortRange>) -> Result<Pool> {
        if ranges.is_empty() {
            return Err(Error::invalid(
                "the pool is empty",
                Some("give at least one range, e.g. 10000-29999".into()),
            ));
        }
        Ok(Pool {
            ranges: normalize(ranges),
        })
    }

    /// The effective pool: `configured` as given (with warnings for ephemeral
    /// overlap), or the default pool minus the kernel's auto-assignable ports.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the default pool leaves nothing, naming the sysctl.
    pub fn resolve(
        configured: Option<Vec<PortRange>>,
        kernel: &KernelPorts,
    ) -> Result<(Pool, Vec<PoolWarning>)> {
        match configured {
            Some(ranges) => {
                let pool = Pool::new(ranges)?;
                let warnings = pool
                    .ranges
                    .iter()
                    .filter(|r| r.overlaps(&kernel.ephemeral))
                    .filter(|r| !kernel.safe_part(&[**r]).eq(&[**r]))
                    .map(|r| PoolWarning {
                        configured: *r,
                        ephemeral: PortRange {
                            start: r.start.max(kernel.ephemeral.start),
                            end: r.end.min(kernel.ephemeral.end),
                        },
                    })
                    .collect();
                Ok((pool, warnings))
            }
            None => {
                let safe = kernel.safe_part(&[DEFAULT_POOL]);
                if safe.is_empty() {
                    return Err(Error::invalid(
                        format!(
                            "the default pool {DEFAULT_POOL} lies entirely inside the kernel's ephemeral range {}",
                            kernel.ephemeral
                        ),
                        Some(
                            "narrow net.ipv4.ip_local_port_range (sysctl), or configure a pool (`[pool] range`, PORTHOLD_POOL)"
                                .into(),
                        ),
                    ));
                }
                Ok((Pool { ranges: safe }, Vec::new()))
            }
        }
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    /// Whether `port` is in the pool.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(port))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

/// Parses a pool spelled `A-B[,C-D...]`.
pub fn parse_pool(text: &str) -> Result<Vec<PortRange>> {
    text.split(',').map(|part| part.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn the_default_pool_avoids_the_ephemeral_range() {
        let kernel = KernelPorts {
            ephemeral: r(15000, 25000),
            reserved: vec![],
        };
        let (pool, warnings) = Pool::resolve(None, &kernel).unwrap();
        assert_eq!(pool.ranges(), &[r(10000, 14999), r(25001, 29999)]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn reserved_ports_inside_the_ephemeral_range_stay_in_the_default_pool() {
        let kernel = KernelPorts {
            ephemeral: r(10000, 29999),
            reserved: vec![r(12000, 12009)],
        };
        let (pool, _) = Pool::resolve(None, &kernel).unwrap();
        assert_eq!(pool.ranges(), &[r(12000, 12009)]);
    }

    #[test]
    fn nothing_left_is_a_usage_error_naming_the_sysctl() {
        let kernel = KernelPorts {
            ephemeral: r(1024, 65535),
            reserved: vec![],
        };
        let err = Pool::resolve(None, &kernel).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        assert!(
            err.hint().unwrap().contains("ip_local_port_range"),
            "{:?}",
            err.hint()
        );
    }

    #[test]
    fn a_configured_pool_is_used_as_given_with_a_warning() {
        let kernel = KernelPorts {
            ephemeral: r(32768, 60999),
            reserved: vec![],
        };
        let (pool, warnings) = Pool::resolve(Some(vec![r(30000, 40000)]), &kernel).unwrap();
        assert_eq!(pool.ranges(), &[r(30000, 40000)]);
        assert_eq!(
            warnings,
            vec![PoolWarning {
                configured: r(30000, 40000),
                ephemeral: r(32768, 40000)
            }]
        );
        let (_, warnings) = Pool::resolve(Some(vec![r(10000, 10010)]), &kernel).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn pools_parse() {
        assert_eq!(
            parse_pool("10000-10009,20000").unwrap(),
            vec![r(10000, 10009), r(20000, 20000)]
        );
        assert!(parse_pool("10000-").is_err());
    }
}
