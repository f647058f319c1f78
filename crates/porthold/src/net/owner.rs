//! Who owns a socket: `/proc/net/{tcp,tcp6,udp,udp6}` rows mapped to processes
//! through the `socket:[inode]` links in `/proc/<pid>/fd`.
//!
//! The socket tables list every socket in this network namespace, with the
//! owner's uid, even when the owning process's fds are unreadable to us; in
//! that case the owner is reported as unknown rather than the socket as absent.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Transport protocol of a socket table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A socket bound to a local port: a TCP listener or a bound UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    /// TCP or UDP.
    pub proto: Proto,
    /// The local address.
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The uid that created the socket.
    pub uid: u32,
    /// The socket inode (`socket:[inode]`).
    pub inode: u64,
    /// The owning process, when `/proc/<pid>/fd` is readable.
    pub owner: Option<SocketOwner>,
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOwner {
    /// Process id.
    pub pid: u32,
    /// The command name (`/proc/<pid>/comm`).
    pub comm: String,
}

const TCP_LISTEN: u8 = 0x0A;
const UDP_UNCONNECTED: u8 = 0x07;

/// Every TCP listener and bound UDP socket in this network namespace, with owners.
pub fn bound_sockets() -> Vec<SocketEntry> {
    let mut entries = Vec::new();
    for (file, proto, v6) in [
        ("/proc/net/tcp", Proto::Tcp, false),
        ("/proc/net/tcp6", Proto::Tcp, true),
        ("/proc/net/udp", Proto::Udp, false),
        ("/proc/net/udp6", Proto::Udp, true),
    ] {
        if let Ok(text) = fs::read_to_string(file) {
            let wanted = if proto == Proto::Tcp {
                TCP_LISTEN
            } else {
                UDP_UNCONNECTED
            };
            entries.extend(
                parse_socket_table(&text, proto, v6)
                    .into_iter()
                    .filter(|(state, _)| *state == wanted)
                    .map(|(_, e)| e),
            );
        }
    }
    attach_owners(&mut entries);
    entries
}

/// TCP listeners on `port`, with owners where readable.
pub fn listeners_on_port(port: u16) -> Vec<SocketEntry> {
    bound_sockets()
        .into_iter()
        .filter(|e| e.proto == Proto::Tcp && e.port == port)
        .collect()
}

/// Parses one `/proc/net/{tcp,udp}{,6}` table into (state, entry) pairs.
pub fn parse_socket_table(text: &str, proto: Proto, v6: bool) -> Vec<(u8, SocketEntry)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if fields.len() < 10 {
                return None;
            }
            let (addr_hex, port_hex) = fields[1].split_once(':')?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            let state = u8::from_str_radix(fields[3], 16).ok()?;
            let uid = fields[7].parse().ok()?;
            let inode = fields[9].parse().ok()?;
            let addr = parse_hex_addr(addr_hex, v6)?;
            Some((
                state,
                SocketEntry {
                    proto,
                    addr,
                    port,
                    uid,
                    inode,
                    owner: None,
                },
            ))
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host byte order: the
/// network-order bytes of each word are the word's native-endian bytes.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| {
        u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_ne_bytes)
    };
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::V6(Ipv6Addr::from(bytes)))
    } else {
        if hex.len() != 8 {
            return None;
        }
        Some(IpAddr::V4(Ipv4Addr::from(word(0)?)))
    }
}

/// Fills in `owner` by scanning `/proc/*/fd` for the entries' inodes.
fn attach_owners(entries: &mut [SocketEntry]) {
    if entries.is_empty() {
        return;
    }
    let wanted: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.inode, i))
        .collect();
    let mut found: HashMap<u64, SocketOwner> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for proc_entry in procs.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if wanted.contains_key(&inode) && !found.contains_key(&inode) {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_else(|_| "?".to_string());
                found.insert(inode, SocketOwner { pid, comm });
            }
        }
    }
    for (inode, owner) in found {
        if let Some(&i) = wanted.get(&inode) {
            entries[i].owner = Some(owner);
        }
    }
    // Several entries may share an inode only for dual-stack quirks; fill the rest.
    for i in 0..entries.len() {
        if entries[i].owner.is_none() {
            let inode = entries[i].inode;
            if let Some(owner) = entries
                .iter()
                .find(|e| e.inode == inode && e.owner.is_some())
                .and_then(|e| e.owner.clone())
            {
                entries[i].owner = Some(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn table_rows_parse_on_this_host() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n";
        let rows = parse_socket_table(v4, Proto::Tcp, false);
        assert_eq!(rows.len(), 1);
        let (state, entry) = &rows[0];
        assert_eq!(*state, TCP_LISTEN);
        assert_eq!(entry.port, 8080);
        assert_eq!(entry.uid, 1000);
        assert_eq!(entry.inode, 12345);
        if cfg!(target_endian = "little") {
            assert_eq!(entry.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        }
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let rows = parse_socket_table(v6, Proto::Tcp, true);
        if cfg!(target_endian = "little") {
            assert_eq!(rows[0].1.addr, "::1".parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn our_own_listener_is_found_with_our_pid() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = listeners_on_port(port);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            found[0].owner.as_ref().map(|o| o.pid),
            Some(std::process::id())
        );
    }
}
