//! The run plan: what a server gets, decided from the project's
//! configuration and the caller's choices, before anything is bound.
//!
//! `porthold run`, [`crate::testing::TestServer`] and (later) `reload` all
//! answer the same questions before they start a server:
//!
//! * **Which service is this?** The key's tag names a `[services.<tag>]` of
//!   the project when the key's path is the project's root (the directory
//!   holding the `porthold.toml` the [`Config`] came from). A tag that names
//!   none, in a project that has services, is a [`PlanNote::UnknownService`].
//! * **Which sockets?** The caller's [`ListenSpec`]s, else the service's
//!   `listen`, else one `NAME=tcp://127.0.0.1:PORT` (named after the tag, or
//!   `default`). A spec that left out its port or wrote `{port}` binds the
//!   key's port.
//! * **Which port?** ([`PortChoice`] and [`PortSource`].) A service run with
//!   no explicit choice reserves the project's whole group, atomically, as
//!   `reserve-group` does, so a service run first and `autoreserve` later
//!   agree on every port. Otherwise the key's own reservation (or an exact
//!   port) when a socket needs it; nothing for kernel-chosen ports, except for
//!   a server that binds by itself (`no_fds`): it needs a number it can be
//!   told in advance, so it gets a lease owned by this process, never port 0.
//! * **Which readiness?** The caller's, else the service's `ready`, else
//!   [`ReadyMode::Listen`] ([`ReadyMode::Tcp`] for a server that binds by itself).
//! * **Which environment?** The service's variable (`WEB_PORT`) and its
//!   siblings' (`API_PORT`), beside the caller's `port_env`.
//! * **Which name?** The caller's (validated), else
//!   [`discovery::default_name`].
//!
//! Planning is two steps. [`prepare`] needs no registry and decides
//! everything but the ports; its [`PendingPlan::source`] says what the
//! registry must provide. [`PendingPlan::reserve`] (feature `registry`) asks
//! the registry, or [`PendingPlan::with_ports`] takes ports the caller got
//! elsewhere; both give the [`RunPlan`]. Warnings come back as typed
//! [`PlanNote`]s for the caller to render; no message here names a
//! command-line flag.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::{Config, Service};
use crate::discovery;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::net::listen::{self, ListenSpec};
use crate::supervisor::ready::ReadyMode;

#[cfg(feature = "registry")]
use crate::net::{KernelPorts, OccupancyProbe};
#[cfg(feature = "registry")]
use crate::pool::Pool;
#[cfg(feature = "registry")]
use crate::registry::{self, Registry};

/// Which port the key's sockets bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortChoice {
    /// The key's reserved port (reserved now if it has none); for a service
    /// of the project, the whole group is reserved.
    #[default]
    Reserved,
    /// This port, reserved for the key (a conflict if another key holds it).
    Exact(u16),
    /// A kernel-chosen port; a leased one for a server that binds by itself.
    Ephemeral,
}

/// What to plan. Build with [`PlanRequest::new`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlanRequest<'a> {
    /// The key the server runs for.
    pub key: Key,
    /// The layered configuration (its project's services).
    pub config: &'a Config,
    /// Which port.
    pub port: PortChoice,
    /// The sockets; empty for the service's `listen`, else the default socket.
    pub listen: Vec<ListenSpec>,
    /// The readiness; `None` for the service's `ready`, else the default.
    pub ready: Option<ReadyMode>,
    /// The server binds by itself: it is told its port by number, gets no sockets.
    pub no_fds: bool,
    /// The variable that receives the first socket's port (`PORT`).
    pub port_env: String,
    /// The instance name; `None` for the default name of the key.
    pub name: Option<String>,
}

impl<'a> PlanRequest<'a> {
    /// The plan of a plain run of `key`: its reserved port, the service's
    /// (or default) sockets and readiness, `PORT`, the default name.
    pub fn new(key: Key, config: &'a Config) -> PlanRequest<'a> {
        PlanRequest {
            key,
            config,
            port: PortChoice::Reserved,
            listen: Vec::new(),
            ready: None,
            no_fds: false,
            port_env: "PORT".to_string(),
            name: None,
        }
    }
}

/// Where the ports of a [`PendingPlan`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortSource {
    /// Nowhere: every port is explicit or kernel-chosen.
    Nothing,
    /// The key's reservation; `port` when a specific port was asked for.
    Key {
        /// The requested port.
        port: Option<u16>,
    },
    /// The whole group of the key's project (the key is one of its services).
    Group,
    /// A lease owned by the calling process (a server that binds by itself).
    Lease,
}

/// Something the caller should tell the user; none of it stopped the plan.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PlanNote {
    /// The key's tag names no service of its project (which has services),
    /// so no service's settings apply.
    UnknownService {
        /// The tag.
        tag: String,
        /// The project file.
        project_file: PathBuf,
        /// The project's service tags, in order.
        services: Vec<String>,
    },
    /// The configured pool overlaps the kernel's ephemeral range.
    Pool(crate::pool::PoolWarning),
    /// About the key's own reservation (it has a listener now, it lies in
    /// the ephemeral range, …).
    #[cfg(feature = "registry")]
    Reserve(registry::ReserveNote),
    /// About the reservation of one member of the group.
    #[cfg(feature = "registry")]
    GroupMember {
        /// The member's tag.
        tag: String,
        /// The note.
        note: registry::ReserveNote,
    },
    /// The pool was exhausted; autoclean removed these reservations.
    #[cfg(feature = "registry")]
    Autocleaned(Vec<registry::Cleaned>),
    /// A dead owner's lease was reclaimed on the way to this one.
    #[cfg(feature = "registry")]
    Reclaimed(registry::Reclaimed),
}

impl fmt::Display for PlanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanNote::UnknownService {
                tag,
                project_file,
                services,
            } => write!(
                f,
                "the tag {tag} names no service of {}; its services are: {}",
                project_file.display(),
                services.join(", ")
            ),
            PlanNote::Pool(warning) => warning.fmt(f),
            #[cfg(feature = "registry")]
            PlanNote::Reserve(note) => note.fmt(f),
            #[cfg(feature = "registry")]
            PlanNote::GroupMember { tag, note } => write!(f, "service {tag}: {note}"),
            #[cfg(feature = "registry")]
            PlanNote::Autocleaned(cleaned) => write!(
                f,
                "the pool was exhausted; autoclean removed {} reservation(s)",
                cleaned.len()
            ),
            #[cfg(feature = "registry")]
            PlanNote::Reclaimed(item) => write!(
                f,
                "reclaimed port {} leased to pid {}: {}",
                item.lease.port, item.lease.owner.pid, item.reason
            ),
        }
    }
}

/// A plan whose ports are not known yet; see [`prepare`].
#[derive(Debug, Clone)]
pub struct PendingPlan {
    key: Key,
    service: Option<Service>,
    /// The other services of the project, by tag (for their variables).
    siblings: Vec<Service>,
    /// Look up the siblings' existing reservations (a service run with an
    /// explicit port choice reserves no group, but still passes on the
    /// ports its siblings hold).
    lookup_siblings: bool,
    listen: Vec<ListenSpec>,
    ready: ReadyMode,
    no_fds: bool,
    port_env: String,
    name: String,
    default_socket: String,
    source: PortSource,
    #[cfg(feature = "registry")]
    registry_input: Option<RegistryInput>,
    notes: Vec<PlanNote>,
}

/// What the registry step needs, computed before the registry is opened (so
/// that pool warnings come first, as they do for `reserve`).
#[cfg(feature = "registry")]
#[derive(Debug, Clone)]
struct RegistryInput {
    pool: Pool,
    kernel: KernelPorts,
    config: Config,
}

/// Ports the caller got without the registry, for [`PendingPlan::with_ports`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Ports {
    /// The key's port.
    pub port: Option<u16>,
    /// Ports of the key's sibling services, by tag.
    pub siblings: Vec<(String, u16)>,
}

impl Ports {
    /// The key's port, no siblings.
    pub fn key(port: u16) -> Ports {
        Ports {
            port: Some(port),
            siblings: Vec::new(),
        }
    }
}

/// Everything a server gets: sockets, readiness, environment, name.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunPlan {
    /// The instance name.
    pub name: String,
    /// The key.
    pub key: Key,
    /// The tag of the project's service the key is, if it is one.
    pub service: Option<String>,
    /// The sockets to bind, in fd order, every port filled in (at least one).
    pub listen: Vec<ListenSpec>,
    /// The readiness.
    pub ready: ReadyMode,
    /// The server binds by itself.
    pub no_fds: bool,
    /// The variable that receives the first socket's port.
    pub port_env: String,
    /// More environment: the service's variable and its siblings'.
    pub extra_env: Vec<(OsString, OsString)>,
    /// The key's port, when one was reserved, leased or given.
    pub port: Option<u16>,
    /// A port leased to the calling process for this run: release it when
    /// the run ends ([`release_own_lease`]).
    pub lease: Option<u16>,
    /// Notes for the user (those not taken from the [`PendingPlan`] already).
    pub notes: Vec<PlanNote>,
}

impl RunPlan {
    /// The key as discovery records store it.
    pub fn discovery_key(&self) -> discovery::Key {
        discovery::Key {
            path: self.key.path.to_string_lossy().into_owned(),
            tag: self.key.tag.clone(),
        }
    }
}

/// Decides everything but the ports (no registry needed).
///
/// # Errors
/// [`Error::Invalid`] for an invalid name, port variable, duplicated socket
/// names, or a service's `listen`/`ready` that does not parse (a loaded
/// configuration was checked already); with feature `registry`, a pool that
/// is entirely excluded when the plan needs one.
pub fn prepare(request: PlanRequest<'_>) -> Result<PendingPlan> {
    let PlanRequest {
        key,
        config,
        port,
        listen,
        ready,
        no_fds,
        port_env,
        name,
    } = request;
    crate::config::validate_env_name(&port_env)?;
    let mut notes = Vec::new();
    // The project's services, when the key is that project (its path holds
    // the porthold.toml the config came from).
    let in_project = config.project_root.as_deref() == Some(key.path.as_path());
    let service = if in_project {
        config.services.get(&key.tag).cloned()
    } else {
        None
    };
    if in_project && service.is_none() && !key.tag.is_empty() && !config.services.is_empty() {
        notes.push(PlanNote::UnknownService {
            tag: key.tag.clone(),
            project_file: key.path.join(crate::config::PROJECT_FILE),
            services: config.services.keys().cloned().collect(),
        });
    }
    let name = match name {
        Some(name) => {
            discovery::validate_name(&name)?;
            name
        }
        None => discovery::default_name(&key.path, &key.tag),
    };
    let default_socket = if key.tag.is_empty() {
        "default".to_string()
    } else {
        key.tag.clone()
    };
    // An explicit choice of socket wins over the service's reservation.
    let explicit = port != PortChoice::Reserved || !listen.is_empty();
    let listen = if listen.is_empty() {
        match &service {
            Some(service) => service.listen_specs()?,
            None => Vec::new(),
        }
    } else {
        listen
    };
    listen::validate_listen_specs(&listen)?;
    let needs_key_port = (listen.is_empty() && port != PortChoice::Ephemeral)
        || listen.iter().any(ListenSpec::needs_reserved_port);
    let source = if listen.is_empty() && port == PortChoice::Ephemeral && no_fds {
        PortSource::Lease
    } else if service.is_some() && !explicit {
        PortSource::Group
    } else if needs_key_port {
        PortSource::Key {
            port: match port {
                PortChoice::Exact(port) => Some(port),
                PortChoice::Reserved | PortChoice::Ephemeral => None,
            },
        }
    } else {
        PortSource::Nothing
    };
    let lookup_siblings = service.is_some() && source != PortSource::Group;
    let ready = match ready {
        Some(ready) => ready,
        None => match service.as_ref().and_then(|s| s.ready.as_deref()) {
            Some(text) => text.parse()?,
            None if no_fds => ReadyMode::Tcp,
            None => ReadyMode::Listen,
        },
    };
    let siblings = match &service {
        Some(service) => config
            .services
            .values()
            .filter(|s| s.tag != service.tag)
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    #[cfg(feature = "registry")]
    let registry_input = if source != PortSource::Nothing {
        let kernel = KernelPorts::read();
        let (pool, warnings) = config.pool(&kernel)?;
        notes.extend(warnings.into_iter().map(PlanNote::Pool));
        Some(RegistryInput {
            pool,
            kernel,
            config: config.clone(),
        })
    } else {
        None
    };
    Ok(PendingPlan {
        key,
        service,
        siblings,
        lookup_siblings,
        listen,
        ready,
        no_fds,
        port_env,
        name,
        default_socket,
        source,
        #[cfg(feature = "registry")]
        registry_input,
        notes,
    })
}

impl PendingPlan {
    /// What the registry must provide.
    pub fn source(&self) -> &PortSource {
        &self.source
    }

    /// Whether [`reserve`](Self::reserve) has anything to ask the registry
    /// (a port, or the ports the key's sibling services hold).
    pub fn needs_registry(&self) -> bool {
        self.source != PortSource::Nothing || self.lookup_siblings
    }

    /// The notes so far, taken out (so that a caller can tell them before
    /// the registry step; the rest come in [`RunPlan::notes`]).
    pub fn take_notes(&mut self) -> Vec<PlanNote> {
        std::mem::take(&mut self.notes)
    }

    /// The instance name the plan will have.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan with ports the caller got elsewhere (no registry).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the plan needs the key's port and `ports` has none.
    pub fn with_ports(self, ports: Ports) -> Result<RunPlan> {
        if self.source != PortSource::Nothing && ports.port.is_none() {
            return Err(Error::invalid(
                format!(
                    "the run of `{}` needs a port for its key, and none was given",
                    self.name
                ),
                None,
            ));
        }
        self.finish(ports.port, ports.siblings, None, Vec::new())
    }

    /// Asks the registry for the ports of [`source`](Self::source): the
    /// group's, the key's, or a lease owned by the calling process (no TTL:
    /// reclaimable once this process is gone), and the ports the key's
    /// siblings hold. `probe` checks candidate ports are free.
    ///
    /// # Errors
    /// The registry's: [`Error::PortTaken`], [`Error::KeyHoldsOtherPort`],
    /// [`Error::StickyLabel`], [`Error::PoolExhausted`], [`Error::Busy`],
    /// [`Error::Corrupt`], …
    #[cfg(feature = "registry")]
    pub fn reserve(self, registry: &mut Registry, probe: &dyn OccupancyProbe) -> Result<RunPlan> {
        let mut notes = Vec::new();
        let mut port = None;
        let mut lease = None;
        let mut siblings = Vec::new();
        let input = self.registry_input.clone();
        match (&self.source, input) {
            (PortSource::Nothing, _) | (_, None) => {}
            (PortSource::Group, Some(input)) => {
                let request = registry::GroupRequest::for_project(
                    &input.config,
                    &self.key.path,
                    input.pool,
                    input.kernel,
                );
                let policy = registry::CleanPolicy::autoclean(registry::DEFAULT_EXPIRE_AFTER);
                let (outcome, cleaned) =
                    registry.reserve_group_with_autoclean(&request, Some(probe), &policy)?;
                if !cleaned.is_empty() {
                    notes.push(PlanNote::Autocleaned(cleaned));
                }
                for (tag, member) in outcome.members {
                    notes.extend(member.notes.into_iter().map(|note| PlanNote::GroupMember {
                        tag: tag.clone(),
                        note,
                    }));
                    if tag == self.key.tag {
                        port = Some(member.reservation.port);
                    } else {
                        siblings.push((tag, member.reservation.port));
                    }
                }
            }
            (PortSource::Key { port: wanted }, Some(input)) => {
                let mut request =
                    registry::ReserveRequest::new(self.key.clone(), input.pool, input.kernel);
                request.port = *wanted;
                request.excluded = input.config.excluded_ranges();
                let outcome = registry.reserve(&request, Some(probe))?;
                notes.extend(outcome.notes.into_iter().map(PlanNote::Reserve));
                port = Some(outcome.reservation.port);
            }
            (PortSource::Lease, Some(input)) => {
                let leased = lease_port(registry, input.pool, input.kernel, probe, &mut notes)?;
                port = Some(leased);
                lease = Some(leased);
            }
        }
        if self.lookup_siblings {
            for sibling in &self.siblings {
                let key = Key {
                    path: self.key.path.clone(),
                    tag: sibling.tag.clone(),
                };
                if let Some(reservation) = registry.get(&key)? {
                    siblings.push((sibling.tag.clone(), reservation.port));
                }
            }
        }
        self.finish(port, siblings, lease, notes)
    }

    fn finish(
        mut self,
        port: Option<u16>,
        siblings: Vec<(String, u16)>,
        lease: Option<u16>,
        mut later_notes: Vec<PlanNote>,
    ) -> Result<RunPlan> {
        // `{port}` (or no port) means the key's port.
        let mut specs: Vec<ListenSpec> = self
            .listen
            .into_iter()
            .map(|spec| match port {
                Some(port) if spec.needs_reserved_port() => spec.with_port(port),
                _ => spec,
            })
            .collect();
        if specs.is_empty() {
            specs.push(ListenSpec::parse(&format!(
                "{}=tcp://127.0.0.1:{}",
                self.default_socket,
                port.unwrap_or(0)
            ))?);
        }
        let mut extra_env: Vec<(OsString, OsString)> = Vec::new();
        if let (Some(service), Some(port)) = (&self.service, port)
            && service.env != self.port_env
        {
            extra_env.push((service.env.clone().into(), port.to_string().into()));
        }
        for (tag, sibling_port) in &siblings {
            if let Some(sibling) = self.siblings.iter().find(|s| s.tag == *tag)
                && sibling.env != self.port_env
            {
                extra_env.push((sibling.env.clone().into(), sibling_port.to_string().into()));
            }
        }
        self.notes.append(&mut later_notes);
        Ok(RunPlan {
            name: self.name,
            key: self.key,
            service: self.service.map(|s| s.tag),
            listen: specs,
            ready: self.ready,
            no_fds: self.no_fds,
            port_env: self.port_env,
            extra_env,
            port,
            lease,
            notes: self.notes,
        })
    }
}

/// A port leased to the calling process, no TTL (reclaimable once the
/// process is gone and nothing listens on the port).
#[cfg(feature = "registry")]
fn lease_port(
    registry: &mut Registry,
    pool: Pool,
    kernel: KernelPorts,
    probe: &dyn OccupancyProbe,
    notes: &mut Vec<PlanNote>,
) -> Result<u16> {
    let pool_text = pool.to_string();
    let owner = crate::identity::ProcessIdentity::current()?;
    let mut request = registry::PickRequest::new(owner, pool, kernel);
    request.ttl = None;
    let outcome = registry.pick(&request, probe)?;
    notes.extend(outcome.reclaimed.into_iter().map(PlanNote::Reclaimed));
    // `pick` of one port returns one lease or fails with PoolExhausted.
    outcome
        .leases
        .first()
        .map(|lease| lease.port)
        .ok_or(Error::PoolExhausted {
            pool: pool_text,
            skipped_occupied: 0,
        })
}

/// Releases the lease of `port` if the calling process owns it; `Ok(false)`
/// when it is not (or no longer) this process's lease, which is left alone.
///
/// # Errors
/// The registry's ([`Error::Busy`], [`Error::Corrupt`], …).
#[cfg(feature = "registry")]
pub fn release_own_lease(registry: &mut Registry, port: u16) -> Result<bool> {
    let me = crate::identity::ProcessIdentity::current()?;
    let ours = registry
        .leases()?
        .iter()
        .any(|lease| lease.port == port && lease.owner.same_as(&me));
    if ours {
        registry.release(&registry::ReleaseTarget::Port(port))?;
    }
    Ok(ours)
}

#[cfg(test)]
mod tests;
