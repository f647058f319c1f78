use super::*;

use std::path::Path;

use crate::config::Sources;
use crate::net::listen::SpecKind;

/// A project directory holding `porthold.toml` with `text`, and its config.
fn project(text: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("porthold.toml"), text).unwrap();
    let config = Config::load(&Sources {
        project_dir: Some(dir.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(config.project_root.as_deref(), Some(dir.path()));
    (dir, config)
}

fn key(path: &Path, tag: &str) -> Key {
    Key {
        path: path.to_path_buf(),
        tag: tag.to_string(),
    }
}

fn port_of(spec: &ListenSpec) -> Option<u16> {
    match &spec.kind {
        SpecKind::Tcp { addr, .. } | SpecKind::Udp { addr, .. } => Some(addr.port()),
        SpecKind::Unix { .. } => None,
    }
}

fn env_of(plan: &RunPlan, name: &str) -> Option<String> {
    plan.extra_env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string_lossy().into_owned())
}

const SHOP: &str = r#"
[pool]
range = "24100-24199"

[services.web]
offset = 0
listen = ["web=tcp://127.0.0.1:{port}", "metrics=tcp://127.0.0.1:0"]
ready = "http:/health"

[services.api]
offset = 1
env = "SHOP_API"

[services.worker]
offset = 2
"#;

#[test]
fn a_service_gets_its_listen_ready_and_the_group_as_its_source() {
    let (dir, config) = project(SHOP);
    let pending = prepare(PlanRequest::new(key(dir.path(), "web"), &config)).unwrap();
    assert_eq!(pending.source(), &PortSource::Group);
    assert!(pending.needs_registry());
    let plan = pending
        .with_ports(Ports {
            port: Some(24100),
            siblings: vec![("api".into(), 24101), ("worker".into(), 24102)],
        })
        .unwrap();
    assert_eq!(plan.service.as_deref(), Some("web"));
    // `{port}` is the key's port; an explicit `:0` stays kernel-chosen.
    assert_eq!(plan.listen.len(), 2);
    assert_eq!(plan.listen[0].fd_name(), "web");
    assert_eq!(port_of(&plan.listen[0]), Some(24100));
    assert!(!plan.listen[0].needs_reserved_port());
    assert_eq!(port_of(&plan.listen[1]), Some(0));
    assert_eq!(
        plan.ready,
        ReadyMode::Http {
            path: "/health".into()
        }
    );
    // Its own variable and every sibling's, under their configured names.
    assert_eq!(env_of(&plan, "WEB_PORT").as_deref(), Some("24100"));
    assert_eq!(env_of(&plan, "SHOP_API").as_deref(), Some("24101"));
    assert_eq!(env_of(&plan, "WORKER_PORT").as_deref(), Some("24102"));
    assert_eq!(plan.extra_env.len(), 3);
    assert_eq!(plan.port, Some(24100));
    assert_eq!(plan.lease, None);
}

#[test]
fn the_port_variable_is_not_repeated_under_the_services_name() {
    let (dir, config) = project(SHOP);
    let mut request = PlanRequest::new(key(dir.path(), "api"), &config);
    request.port_env = "SHOP_API".into();
    let plan = prepare(request)
        .unwrap()
        .with_ports(Ports {
            port: Some(24101),
            siblings: vec![("web".into(), 24100)],
        })
        .unwrap();
    assert_eq!(plan.port_env, "SHOP_API");
    assert_eq!(env_of(&plan, "SHOP_API"), None, "{:?}", plan.extra_env);
    assert_eq!(env_of(&plan, "WEB_PORT").as_deref(), Some("24100"));
    // No `listen` in the service: one default socket named after the tag.
    assert_eq!(plan.listen.len(), 1);
    assert_eq!(plan.listen[0].fd_name(), "api");
    assert_eq!(port_of(&plan.listen[0]), Some(24101));
}

#[test]
fn default_readiness_is_listen_or_tcp_for_a_server_that_binds_by_itself() {
    let (dir, config) = project(SHOP);
    let plain = |no_fds: bool, ready: Option<ReadyMode>, tag: &str| {
        let mut request = PlanRequest::new(key(dir.path(), tag), &config);
        request.no_fds = no_fds;
        request.ready = ready;
        request.port = PortChoice::Ephemeral;
        prepare(request)
            .unwrap()
            .with_ports(Ports::key(24150))
            .unwrap()
            .ready
    };
    assert_eq!(plain(false, None, "api"), ReadyMode::Listen);
    assert_eq!(plain(true, None, "api"), ReadyMode::Tcp);
    // The service's `ready` wins over the default, the caller's over both.
    assert_eq!(
        plain(true, None, "web"),
        ReadyMode::Http {
            path: "/health".into()
        }
    );
    assert_eq!(
        plain(
            false,
            Some(ReadyMode::Delay(Duration::from_millis(5))),
            "web"
        ),
        ReadyMode::Delay(Duration::from_millis(5))
    );
}

use std::time::Duration;

#[test]
fn names_are_the_default_of_the_key_or_a_valid_given_one() {
    let (dir, config) = project(SHOP);
    let pending = prepare(PlanRequest::new(key(dir.path(), "web"), &config)).unwrap();
    assert_eq!(
        pending.name(),
        discovery::default_name(dir.path(), "web").as_str()
    );
    let mut request = PlanRequest::new(key(dir.path(), "web"), &config);
    request.name = Some("shop-web".into());
    assert_eq!(prepare(request).unwrap().name(), "shop-web");
    let mut request = PlanRequest::new(key(dir.path(), "web"), &config);
    request.name = Some("no/slash".into());
    let err = prepare(request).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    let mut request = PlanRequest::new(key(dir.path(), "web"), &config);
    request.port_env = "lower-case".into();
    let err = prepare(request).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

#[test]
fn a_tag_that_names_no_service_is_a_note_and_gets_the_default_socket() {
    let (dir, config) = project(SHOP);
    let mut pending = prepare(PlanRequest::new(key(dir.path(), "db"), &config)).unwrap();
    let notes = pending.take_notes();
    let unknown: Vec<_> = notes
        .iter()
        .filter_map(|n| match n {
            PlanNote::UnknownService { tag, services, .. } => Some((tag, services)),
            _ => None,
        })
        .collect();
    assert_eq!(unknown.len(), 1, "{notes:?}");
    assert_eq!(unknown[0].0, "db");
    assert_eq!(unknown[0].1, &["api", "web", "worker"]);
    let text = notes[0].to_string();
    assert!(!text.contains("--"), "a library note names no flag: {text}");
    // Not a service: the key's own reservation, a default socket named after the tag.
    assert_eq!(pending.source(), &PortSource::Key { port: None });
    let plan = pending.with_ports(Ports::key(24160)).unwrap();
    assert_eq!(plan.service, None);
    assert!(plan.extra_env.is_empty());
    assert_eq!(plan.listen[0].fd_name(), "db");
    assert_eq!(port_of(&plan.listen[0]), Some(24160));
    assert!(plan.notes.is_empty(), "taken notes do not come back");
}

#[test]
fn outside_the_project_directory_no_service_applies() {
    let (dir, config) = project(SHOP);
    let sub = dir.path().join("sub");
    let mut pending = prepare(PlanRequest::new(key(&sub, "web"), &config)).unwrap();
    assert!(
        pending
            .take_notes()
            .iter()
            .all(|n| !matches!(n, PlanNote::UnknownService { .. }))
    );
    assert_eq!(pending.source(), &PortSource::Key { port: None });
    let plan = pending.with_ports(Ports::key(24170)).unwrap();
    assert_eq!(plan.service, None);
    assert_eq!(plan.ready, ReadyMode::Listen);
    assert_eq!(plan.listen.len(), 1);
    assert!(plan.extra_env.is_empty());
}

#[test]
fn explicit_choices_decide_the_port_source() {
    let (dir, config) = project(SHOP);
    let source = |port: PortChoice, listen: &[&str], no_fds: bool, tag: &str| {
        let mut request = PlanRequest::new(key(dir.path(), tag), &config);
        request.port = port;
        request.no_fds = no_fds;
        request.listen = listen
            .iter()
            .map(|s| ListenSpec::parse(s).unwrap())
            .collect();
        let pending = prepare(request).unwrap();
        (pending.source().clone(), pending.needs_registry())
    };
    // A service with an explicit port: that port for the key, no group,
    // and the siblings' existing ports are looked up.
    assert_eq!(
        source(PortChoice::Exact(24180), &[], false, "web"),
        (PortSource::Key { port: Some(24180) }, true)
    );
    // A kernel-chosen socket needs no port, but a service still looks up its siblings.
    assert_eq!(
        source(PortChoice::Ephemeral, &[], false, "web"),
        (PortSource::Key { port: None }, true),
        "the service's listen has `{{port}}`"
    );
    assert_eq!(
        source(PortChoice::Ephemeral, &[], false, "api"),
        (PortSource::Nothing, true)
    );
    assert_eq!(
        source(PortChoice::Reserved, &["x=tcp://127.0.0.1:0"], false, "api"),
        (PortSource::Nothing, true)
    );
    assert_eq!(
        source(
            PortChoice::Reserved,
            &["x=tcp://127.0.0.1:{port}"],
            false,
            "api"
        ),
        (PortSource::Key { port: None }, true)
    );
    // A server that binds by itself cannot be told port 0: a lease.
    assert_eq!(
        source(PortChoice::Ephemeral, &[], true, "db"),
        (PortSource::Lease, true)
    );
    assert_eq!(
        source(PortChoice::Ephemeral, &[], false, "db"),
        (PortSource::Nothing, false)
    );
}

#[test]
fn an_ephemeral_run_binds_port_zero_and_two_sockets_may_not_share_a_name() {
    let (dir, config) = project(SHOP);
    let mut request = PlanRequest::new(key(dir.path(), ""), &config);
    request.port = PortChoice::Ephemeral;
    let plan = prepare(request)
        .unwrap()
        .with_ports(Ports::default())
        .unwrap();
    assert_eq!(plan.listen[0].fd_name(), "default");
    assert_eq!(port_of(&plan.listen[0]), Some(0));
    assert_eq!(plan.port, None);

    let mut request = PlanRequest::new(key(dir.path(), ""), &config);
    request.listen = vec![
        ListenSpec::parse("a=tcp://127.0.0.1:0").unwrap(),
        ListenSpec::parse("a=udp://127.0.0.1:0").unwrap(),
    ];
    assert!(matches!(prepare(request), Err(Error::Invalid { .. })));
    // A plan that needs a port refuses to be finished without one.
    let pending = prepare(PlanRequest::new(key(dir.path(), ""), &config)).unwrap();
    assert!(matches!(
        pending.with_ports(Ports::default()),
        Err(Error::Invalid { .. })
    ));
}

#[cfg(feature = "registry")]
mod with_registry {
    use super::*;

    use crate::net::Occupancy;

    struct AllFree;
    impl OccupancyProbe for AllFree {
        fn probe(&self, _port: u16) -> Occupancy {
            Occupancy::Free
        }
        fn owner(&self, _port: u16) -> Option<(u32, String)> {
            None
        }
    }

    fn registry() -> (tempfile::TempDir, Registry) {
        let data = tempfile::tempdir().unwrap();
        let registry = Registry::open(data.path(), Duration::from_secs(5)).unwrap();
        (data, registry)
    }

    #[test]
    fn a_service_run_reserves_the_whole_group_at_its_offsets() {
        let (dir, config) = project(SHOP);
        let (_data, mut registry) = registry();
        let plan = prepare(PlanRequest::new(key(dir.path(), "api"), &config))
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        let port = |tag: &str| registry.get(&key(dir.path(), tag)).unwrap().unwrap().port;
        let (web, api, worker) = (port("web"), port("api"), port("worker"));
        assert_eq!((api, worker), (web + 1, web + 2), "offsets from one base");
        assert!((24100..=24199).contains(&web));
        assert_eq!(plan.port, Some(api));
        assert_eq!(port_of(&plan.listen[0]), Some(api));
        assert_eq!(
            env_of(&plan, "SHOP_API").as_deref(),
            Some(&*api.to_string())
        );
        assert_eq!(
            env_of(&plan, "WEB_PORT").as_deref(),
            Some(&*web.to_string())
        );
        assert_eq!(
            env_of(&plan, "WORKER_PORT").as_deref(),
            Some(&*worker.to_string())
        );
        // Run again: the same ports (the group is kept).
        let again = prepare(PlanRequest::new(key(dir.path(), "web"), &config))
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        assert_eq!(again.port, Some(web));
        assert_eq!(port_of(&again.listen[0]), Some(web));
    }

    #[test]
    fn an_explicit_port_reserves_only_the_key_and_passes_on_reserved_siblings() {
        let (dir, config) = project(SHOP);
        let (_data, mut registry) = registry();
        let mut request = PlanRequest::new(key(dir.path(), "api"), &config);
        request.port = PortChoice::Exact(24190);
        let plan = prepare(request)
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        assert_eq!(plan.port, Some(24190));
        assert_eq!(env_of(&plan, "SHOP_API").as_deref(), Some("24190"));
        assert_eq!(registry.get(&key(dir.path(), "web")).unwrap(), None);
        assert_eq!(plan.extra_env.len(), 1, "no sibling holds a port yet");
        // Once web holds one, api's run passes it on.
        let mut request = PlanRequest::new(key(dir.path(), "web"), &config);
        request.port = PortChoice::Exact(24191);
        prepare(request)
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        let mut request = PlanRequest::new(key(dir.path(), "api"), &config);
        request.port = PortChoice::Exact(24190);
        let plan = prepare(request)
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        assert_eq!(env_of(&plan, "WEB_PORT").as_deref(), Some("24191"));
        assert_eq!(env_of(&plan, "WORKER_PORT"), None);
    }

    #[test]
    fn a_server_that_binds_by_itself_gets_a_lease_of_this_process() {
        let (dir, config) = project(SHOP);
        let (_data, mut registry) = registry();
        let mut request = PlanRequest::new(key(dir.path(), "db"), &config);
        request.port = PortChoice::Ephemeral;
        request.no_fds = true;
        request.port_env = "DB_PORT".into();
        let plan = prepare(request)
            .unwrap()
            .reserve(&mut registry, &AllFree)
            .unwrap();
        let leased = plan.lease.expect("a lease");
        assert_eq!(plan.port, Some(leased));
        assert_eq!(port_of(&plan.listen[0]), Some(leased));
        assert_eq!(plan.ready, ReadyMode::Tcp);
        let leases = registry.leases().unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].port, leased);
        assert_eq!(leases[0].owner.pid, std::process::id());
        assert_eq!(leases[0].expires_at_ms, None, "no TTL");
        assert!(registry.get(&key(dir.path(), "db")).unwrap().is_none());
        assert!(release_own_lease(&mut registry, leased).unwrap());
        assert!(registry.leases().unwrap().is_empty());
        assert!(!release_own_lease(&mut registry, leased).unwrap());
    }
}
