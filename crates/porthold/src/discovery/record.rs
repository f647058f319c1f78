//! The discovery record: what a live instance publishes about itself.
//!
//! The JSON shape is PRODUCT.md §4.2 and is documented, with a parsed example,
//! in `docs/discovery.md`. `schema` is `"MAJOR.MINOR"`: readers accept any
//! minor of the major they know (unknown fields, states, protocols and
//! families are tolerated) and reject any other major.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::{self, ProcessIdentity};

/// The schema version this build writes.
pub const SCHEMA: &str = "1.2";

/// The only schema major version this build reads.
pub const SCHEMA_MAJOR: u64 = 1;

/// Records larger than this are rejected unread (a record is a few KiB at most).
pub(crate) const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The lifecycle state an instance advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Sockets are bound; the server is being started and is not ready yet.
    Starting,
    /// The server passed its readiness check.
    Ready,
    /// A new generation is being started on the same sockets.
    Reloading,
    /// The instance is shutting down.
    Stopping,
    /// A state written by a newer minor schema version that this build does not know.
    #[serde(other)]
    Unknown,
}

impl State {
    /// The JSON spelling (`starting`, `ready`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Reloading => "reloading",
            State::Stopping => "stopping",
            State::Unknown => "unknown",
        }
    }
}

/// What one generation of an instance is doing (schema 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    /// Spawned, not ready yet (a first start, a reload's or a restart's new generation).
    Starting,
    /// Ready: the current generation.
    Ready,
    /// Retired by a reload: sent the stop signal, killed after the drain timeout.
    Draining,
    /// A state written by a newer minor schema version that this build does not know.
    #[serde(other)]
    Unknown,
}

/// What started a generation after the first (schema 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationCause {
    /// `porthold reload` (or SIGHUP with `--on-hup reload`).
    Reload,
    /// `--restart`: the server had exited by itself.
    Restart,
    /// A cause written by a newer minor schema version that this build does not know.
    #[serde(other)]
    Unknown,
}

/// How a reload or restart ended (schema 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// The new generation is the current one.
    Committed,
    /// The new generation was killed; the old one serves on (a reload), or
    /// the next try is scheduled (a restart).
    RolledBack,
    /// An outcome written by a newer minor schema version that this build does not know.
    #[serde(other)]
    Unknown,
}

/// One reload or restart, as the record remembers it (the last
/// [`MAX_EVENTS`]; schema 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationEvent {
    /// The generation it started.
    pub generation: u64,
    /// What started it.
    pub cause: GenerationCause,
    /// How it ended.
    pub outcome: EventOutcome,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From the request (or the restart's due time) to ready, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
    /// The generation a committed reload retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<u64>,
    /// How long the retired generation took to end after the commit, in
    /// milliseconds (absent while it still drains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
    /// When it ended: milliseconds since the Unix epoch (UTC).
    pub at: u64,
}

/// How many reload and restart events a record keeps.
pub const MAX_EVENTS: usize = 16;

/// One generation of an instance, as the record lists it (schema 1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationEntry {
    /// Its number (1 for the first child, +1 per reload or restart).
    pub number: u64,
    /// Its server process.
    pub pid: u32,
    /// Its process group (the server leads it).
    pub pgid: u32,
    /// What it is doing.
    pub state: GenerationState,
    /// When it was spawned: milliseconds since the Unix epoch (UTC).
    pub started_at: u64,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (stream) socket.
    Tcp,
    /// UDP (datagram) socket.
    Udp,
    /// Unix-domain stream socket.
    Unix,
    /// A protocol written by a newer minor schema version.
    #[serde(other)]
    Other,
}

/// A listener's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`addr` is a dotted quad).
    Ipv4,
    /// IPv6 (`addr` is an IPv6 literal without brackets).
    Ipv6,
    /// Unix domain (`addr` is the socket path).
    Unix,
    /// A family written by a newer minor schema version.
    #[serde(other)]
    Other,
}

/// One socket the instance listens on, with its actual bound address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// The listener's name (the `LISTEN_FDNAMES` entry).
    pub name: String,
    /// Transport protocol.
    pub proto: Proto,
    /// Address family.
    pub family: Family,
    /// IP literal (no brackets) or, for Unix sockets, the socket path.
    pub addr: String,
    /// The bound port; `null` for Unix sockets.
    pub port: Option<u16>,
}

impl Listener {
    /// A TCP or UDP listener bound to `addr` (use the address from `getsockname`, not the requested one).
    pub fn inet(name: impl Into<String>, proto: Proto, addr: SocketAddr) -> Listener {
        let family = if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        Listener {
            name: name.into(),
            proto,
            family,
            addr: addr.ip().to_string(),
            port: Some(addr.port()),
        }
    }

    /// A Unix-domain stream listener at `path`.
    pub fn unix(name: impl Into<String>, path: &Path) -> Listener {
        Listener {
            name: name.into(),
            proto: Proto::Unix,
            family: Family::Unix,
            addr: path.to_string_lossy().into_owned(),
            port: None,
        }
    }

    /// The socket address of an IP listener, `None` for Unix sockets or unparsable addresses.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.addr.parse().ok()?;
        Some(SocketAddr::new(ip, self.port?))
    }

    /// A URL such as `http://127.0.0.1:10003` or `http://[::1]:8080` for IP listeners.
    ///
    /// An unspecified address (`0.0.0.0`, `::`) is replaced by the loopback
    /// address of the same family, which is where a local client connects.
    pub fn url(&self, scheme: &str) -> Option<String> {
        let mut sa = self.socket_addr()?;
        if sa.ip().is_unspecified() {
            let lo: IpAddr = if sa.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            sa.set_ip(lo);
        }
        Some(format!("{scheme}://{sa}"))
    }
}

/// The key an instance was started for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Key {
    /// The project path (UTF-8; a non-UTF-8 path is stored lossily).
    pub path: String,
    /// The tag; empty when none.
    pub tag: String,
}

impl Key {
    /// The key of `path` (stored lossily when not UTF-8) and `tag`.
    pub fn new(path: &Path, tag: &str) -> Key {
        Key {
            path: path.to_string_lossy().into_owned(),
            tag: tag.to_string(),
        }
    }
}

impl std::fmt::Display for Key {
    /// `/home/ann/shop (tag web)`, or just the path when there is no tag.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tag.is_empty() {
            write!(f, "{}", self.path)
        } else {
            write!(f, "{} (tag {})", self.path, self.tag)
        }
    }
}

/// A discovery record, exactly the JSON object of PRODUCT.md §4.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `"MAJOR.MINOR"`; this build writes [`SCHEMA`].
    pub schema: String,
    /// The instance name (also the file name stem).
    pub name: String,
    /// Random id of this run of the instance; a launcher waits for *its* id.
    pub instance_id: String,
    /// Pid of the process that holds the instance (the launcher), in its pid namespace.
    pub pid: u32,
    /// That process's start time in clock ticks since boot.
    pub starttime: u64,
    /// The kernel boot id when the record was written.
    pub boot_id: String,
    /// Inode of the writer's pid namespace (`/proc/self/ns/pid`). An addition to
    /// PRODUCT.md §4.2 allowed by minor versioning: a reader in another pid
    /// namespace cannot check `pid` and relies on the lock alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<u64>,
    /// The writer's effective uid.
    pub uid: u32,
    /// The key the instance runs for.
    pub key: Key,
    /// The bound sockets, in fd order.
    pub listeners: Vec<Listener>,
    /// Lifecycle state.
    pub state: State,
    /// The current generation (1 for the first child, n+1 after each reload).
    pub generation: u64,
    /// Pid of the current server process, when there is one.
    pub child_pid: Option<u32>,
    /// The server's process group (schema 1.1): published right after the
    /// spawn, so whoever takes the name after a launcher died by SIGKILL can
    /// end what is left of the server's tree. `None` before the spawn and in
    /// records of schema 1.0.
    #[serde(default)]
    pub pgid: Option<u32>,
    /// How long the server may drain after the stop signal before the
    /// launcher kills it, in milliseconds (schema 1.1); `stop` waits that
    /// long plus a margin. `None` when unknown.
    #[serde(default)]
    pub drain_timeout_ms: Option<u64>,
    /// Path of the instance's control socket, when it has one.
    pub control_socket: Option<String>,
    /// When the instance started: milliseconds since the Unix epoch (UTC).
    pub started_at: u64,
    /// Version of the software that wrote the record (informational).
    pub version: String,
    /// The writer's executable (informational).
    pub exe: String,
    /// The writer's command line (informational).
    pub argv: Vec<String>,
    /// The server's latest `STATUS=` text from the notify socket, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Every generation with a live process (schema 1.2): the current one,
    /// one being started by a reload or restart, and retired ones still
    /// draining. Empty in older records.
    #[serde(default)]
    pub generations: Vec<GenerationEntry>,
    /// The last [`MAX_EVENTS`] reloads and restarts, oldest first (schema 1.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<GenerationEvent>,
}

impl Record {
    /// A `starting` record for the calling process, generation 1, stamped now.
    ///
    /// Identity fields (`pid`, `starttime`, `boot_id`, `pidns`, `uid`) come
    /// from the calling process; `exe`/`argv` from `/proc/self`; `version` is
    /// this crate's version. Callers overwrite what they know better.
    ///
    /// # Errors
    /// When the process identity cannot be read from `/proc`.
    pub fn new(
        name: &str,
        instance_id: &str,
        key: Key,
        listeners: Vec<Listener>,
    ) -> Result<Record> {
        let me = ProcessIdentity::current()?;
        Ok(Record {
            schema: SCHEMA.to_string(),
            name: name.to_string(),
            instance_id: instance_id.to_string(),
            pid: me.pid,
            starttime: me.starttime,
            boot_id: me.boot_id,
            pidns: identity::current_pid_namespace(),
            uid: rustix::process::geteuid().as_raw(),
            key,
            listeners,
            state: State::Starting,
            generation: 1,
            child_pid: None,
            pgid: None,
            drain_timeout_ms: None,
            control_socket: None,
            started_at: unix_millis(SystemTime::now()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            exe: std::env::current_exe()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            argv: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            status: None,
            generations: Vec::new(),
            events: Vec::new(),
        })
    }

    /// Every process group of the instance's servers: the current `pgid` and
    /// each listed generation's, without repeats.
    pub fn process_groups(&self) -> Vec<u32> {
        let mut groups: Vec<u32> = self.pgid.into_iter().collect();
        for generation in &self.generations {
            if !groups.contains(&generation.pgid) {
                groups.push(generation.pgid);
            }
        }
        groups
    }

    /// The identity of the process that holds the instance.
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.pid,
            starttime: self.starttime,
            boot_id: self.boot_id.clone(),
        }
    }

    /// The record as written to disk: pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// Only if serialization fails, which the field types rule out in practice.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::invalid(
                format!("cannot serialize record `{}`: {e}", self.name),
                None,
            )
        })?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses a record, checking the schema major version first.
    ///
    /// `origin` names the file in errors.
    ///
    /// # Errors
    /// [`Error::BadRecord`] for invalid JSON, a missing or malformed `schema`,
    /// an unknown major version, or missing/mistyped fields.
    pub fn from_json(bytes: &[u8], origin: &Path) -> Result<Record> {
        let bad = |reason: String| Error::BadRecord {
            path: origin.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let schema = value
            .get("schema")
            .and_then(|s| s.as_str())
            .ok_or_else(|| bad("no string `schema` field".into()))?
            .to_string();
        match schema_major(&schema) {
            Some(SCHEMA_MAJOR) => {}
            Some(major) => {
                return Err(bad(format!(
                    "schema `{schema}` has major version {major}; this porthold reads only {SCHEMA_MAJOR}.x"
                )));
            }
            None => {
                return Err(bad(format!(
                    "malformed schema version `{schema}` (want MAJOR.MINOR)"
                )));
            }
        }
        serde_json::from_value(value).map_err(|e| bad(format!("schema {schema}: {e}")))
    }

    /// Whether this record was published for `key` (path and tag both equal).
    ///
    /// A lookup by key must check this: a name can be shared by two keys
    /// (an explicit name, or a default name cut to fit), and the other key's
    /// instance is never the answer.
    pub fn is_for(&self, key: &Key) -> bool {
        self.key.path == key.path && self.key.tag == key.tag
    }

    /// Whether one of the record's IP listeners is bound to `port`.
    pub fn listens_on(&self, port: u16) -> bool {
        self.listeners
            .iter()
            .any(|l| l.port == Some(port) && l.proto != Proto::Unix)
    }

    /// The first IP listener's URL (see [`Listener::url`]).
    pub fn url(&self, scheme: &str) -> Option<String> {
        self.listeners.iter().find_map(|l| l.url(scheme))
    }
}

/// The major part of a `"MAJOR.MINOR"` schema string.
pub(crate) fn schema_major(schema: &str) -> Option<u64> {
    let (major, minor) = schema.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    major.parse().ok()
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new(
            "shop-web-0badc0de",
            "3f2a9c1e5b7d4e8f9a0b1c2d3e4f5a6b",
            Key {
                path: "/home/ann/shop".into(),
                tag: "web".into(),
            },
            vec![Listener::inet(
                "web",
                Proto::Tcp,
                "127.0.0.1:10003".parse().unwrap(),
            )],
        )
        .unwrap()
    }

    #[test]
    fn records_of_schema_1_0_without_pgid_or_drain_timeout_still_parse() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        v["schema"] = "1.0".into();
        let object = v.as_object_mut().unwrap();
        object.remove("pgid");
        object.remove("drain_timeout_ms");
        let r = Record::from_json(v.to_string().as_bytes(), Path::new("x")).unwrap();
        assert_eq!((r.pgid, r.drain_timeout_ms), (None, None));
        let mut with = sample();
        with.pgid = Some(4242);
        with.drain_timeout_ms = Some(30_000);
        let text = String::from_utf8(with.to_json().unwrap()).unwrap();
        assert!(text.contains("\"pgid\": 4242"), "{text}");
        assert!(text.contains("\"drain_timeout_ms\": 30000"), "{text}");
    }

    #[test]
    fn a_record_is_for_its_exact_key_only() {
        let r = sample();
        assert!(r.is_for(&Key::new(Path::new("/home/ann/shop"), "web")));
        assert!(!r.is_for(&Key::new(Path::new("/home/ann/shop"), "api")));
        assert!(!r.is_for(&Key::new(Path::new("/home/ann/shop"), "")));
        assert!(!r.is_for(&Key::new(Path::new("/home/bob/shop"), "web")));
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = sample();
        let bytes = r.to_json().unwrap();
        assert_eq!(Record::from_json(&bytes, Path::new("x")).unwrap(), r);
    }

    #[test]
    fn a_status_round_trips_and_a_record_without_one_reads_as_none() {
        let mut r = sample();
        r.status = Some("serving 3 requests".into());
        let bytes = r.to_json().unwrap();
        assert_eq!(Record::from_json(&bytes, Path::new("x")).unwrap(), r);
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        assert!(v.get("status").is_none());
        v.as_object_mut().unwrap().remove("status");
        let r = Record::from_json(v.to_string().as_bytes(), Path::new("x")).unwrap();
        assert_eq!(r.status, None);
    }

    #[test]
    fn unknown_fields_and_minor_versions_are_tolerated() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        v["schema"] = "1.7".into();
        v["token"] = "abc".into();
        v["listeners"][0]["v6only"] = true.into();
        v["key"]["extra"] = 3.into();
        v["state"] = "draining".into();
        let r = Record::from_json(v.to_string().as_bytes(), Path::new("x")).unwrap();
        assert_eq!(r.schema, "1.7");
        assert_eq!(r.state, State::Unknown);
        assert_eq!(r.listeners[0].port, Some(10003));
    }

    #[test]
    fn an_unknown_major_schema_is_rejected() {
        for schema in ["2.0", "0.9", "10.1"] {
            let mut v: serde_json::Value =
                serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
            v["schema"] = schema.into();
            let err =
                Record::from_json(v.to_string().as_bytes(), Path::new("/r/x.json")).unwrap_err();
            assert!(matches!(err, Error::BadRecord { .. }), "{err}");
            assert!(err.to_string().contains("major version"), "{err}");
        }
    }

    #[test]
    fn malformed_schemas_and_missing_fields_are_rejected() {
        for schema in ["1", "1.", ".1", "v1.0", "1.0.0", ""] {
            let mut v: serde_json::Value =
                serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
            v["schema"] = schema.into();
            assert!(
                Record::from_json(v.to_string().as_bytes(), Path::new("x")).is_err(),
                "{schema:?}"
            );
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("instance_id");
        assert!(Record::from_json(v.to_string().as_bytes(), Path::new("x")).is_err());
        assert!(Record::from_json(b"{\"schema\":\"1.0\",", Path::new("x")).is_err());
        assert!(Record::from_json(b"", Path::new("x")).is_err());
    }

    #[test]
    fn urls_bracket_ipv6_and_replace_unspecified_addresses() {
        let l = Listener::inet("a", Proto::Tcp, "[::]:8080".parse().unwrap());
        assert_eq!(l.family, Family::Ipv6);
        assert_eq!(l.url("http").as_deref(), Some("http://[::1]:8080"));
        let l = Listener::inet("a", Proto::Tcp, "0.0.0.0:81".parse().unwrap());
        assert_eq!(l.url("https").as_deref(), Some("https://127.0.0.1:81"));
        let u = Listener::unix("s", Path::new("/run/x.sock"));
        assert_eq!(u.url("http"), None);
        let json = serde_json::to_string(&u).unwrap();
        assert!(json.contains("\"port\":null"), "{json}");
    }
}
