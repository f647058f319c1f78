//! Allocation inside the registry, with a fake occupancy probe: preference
//! order, the bound on skipped occupied ports, and index use.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use porthold::key::Key;
use porthold::net::{KernelPorts, Occupancy, OccupancyProbe, PortRange};
use porthold::pool::Pool;
use porthold::registry::{Registry, ReserveRequest};
use porthold::{Error, Holder};

/// Ports in `busy` are occupied; every probe is counted.
struct FakeProbe {
    busy: HashSet<u16>,
    probes: RefCell<u32>,
}

impl FakeProbe {
    fn new(busy: impl IntoIterator<Item = u16>) -> FakeProbe {
        FakeProbe {
            busy: busy.into_iter().collect(),
            probes: RefCell::new(0),
        }
    }
}

impl OccupancyProbe for FakeProbe {
    fn probe(&self, port: u16) -> Occupancy {
        *self.probes.borrow_mut() += 1;
        if self.busy.contains(&port) {
            Occupancy::Busy
        } else {
            Occupancy::Free
        }
    }

    fn owner(&self, port: u16) -> Option<(u32, String)> {
        self.busy
            .contains(&port)
            .then(|| (4242, "fake-server".to_string()))
    }
}

fn kernel() -> KernelPorts {
    KernelPorts {
        ephemeral: PortRange::new(32768, 60999).unwrap(),
        reserved: vec![],
    }
}

fn request(path: &str, pool: (u16, u16)) -> ReserveRequest {
    let pool = Pool::new(vec![PortRange::new(pool.0, pool.1).unwrap()]).unwrap();
    ReserveRequest::new(
        Key {
            path: path.into(),
            tag: String::new(),
        },
        pool,
        kernel(),
    )
}

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path(), Duration::from_secs(5)).unwrap();
    (dir, registry)
}

#[test]
fn occupied_ports_are_skipped() {
    let (_dir, mut registry) = open();
    let probe = FakeProbe::new([10000, 10001, 10003]);
    let first = registry
        .reserve(&request("/a", (10000, 10010)), Some(&probe))
        .unwrap();
    assert_eq!(first.reservation.port, 10002);
    let second = registry
        .reserve(&request("/b", (10000, 10010)), Some(&probe))
        .unwrap();
    assert_eq!(second.reservation.port, 10004);
}

#[test]
fn at_most_64_occupied_candidates_are_skipped_then_exhausted() {
    let (_dir, mut registry) = open();
    let probe = FakeProbe::new(10000..=10999);
    let err = registry
        .reserve(&request("/a", (10000, 20000)), Some(&probe))
        .unwrap_err();
    assert!(
        err.to_string().contains("64 occupied ports skipped"),
        "{err}"
    );
    match err {
        Error::PoolExhausted {
            skipped_occupied, ..
        } => assert_eq!(skipped_occupied, 64),
        other => panic!("expected exhaustion, got {other}"),
    }
    assert_eq!(*probe.probes.borrow(), 64, "stopped probing after 64");
}

#[test]
fn a_requested_occupied_port_names_its_listener() {
    let (_dir, mut registry) = open();
    let probe = FakeProbe::new([10005]);
    let mut req = request("/a", (10000, 10010));
    req.port = Some(10005);
    match registry.reserve(&req, Some(&probe)).unwrap_err() {
        Error::PortTaken {
            port: 10005,
            holder: Holder::Listener {
                owner: Some((4242, comm)),
            },
        } => {
            assert_eq!(comm, "fake-server")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        registry.list(&Default::default()).unwrap().is_empty(),
        "a failed reserve writes nothing"
    );
}

#[test]
fn a_requested_port_outside_the_pool_is_allowed_and_ephemeral_ones_warned() {
    let (_dir, mut registry) = open();
    let mut req = request("/a", (10000, 10010));
    req.port = Some(40000);
    let outcome = registry.reserve(&req, None).unwrap();
    assert_eq!(outcome.reservation.port, 40000);
    assert!(
        outcome
            .notes
            .iter()
            .any(|n| n.to_string().contains("ephemeral range")),
        "{:?}",
        outcome.notes
    );
}

#[test]
fn explicit_ports_fragment_the_fresh_ranges_without_losing_any_port() {
    let (_dir, mut registry) = open();
    for port in [10000u16, 10002, 10004] {
        let mut req = request(&format!("/explicit/{port}"), (10000, 10010));
        req.port = Some(port);
        registry.reserve(&req, None).unwrap();
    }
    let got: Vec<u16> = (0..4)
        .map(|i| {
            registry
                .reserve(&request(&format!("/auto/{i}"), (10000, 10010)), None)
                .unwrap()
                .reservation
                .port
        })
        .collect();
    assert_eq!(got, vec![10001, 10003, 10005, 10006]);
}

#[test]
fn allocation_queries_use_indexes_not_table_scans() {
    let (_dir, registry) = open();
    for sql in Registry::allocation_queries() {
        let placeholders = sql.matches('?').count();
        let mut stmt = registry
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        // Bound one by one through the statement's own methods, so that this
        // test needs no rusqlite dev-dependency (which would show up in
        // `cargo tree --no-default-features` of a SQLite-free build).
        for index in 1..=placeholders {
            stmt.raw_bind_parameter(index, 10000_i64).unwrap();
        }
        let mut rows = stmt.raw_query();
        let mut details: Vec<String> = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        eprintln!("{sql}\n  -> {details:?}");
        assert!(!details.is_empty());
        // Either an index search, or an in-order walk of an index that the
        // caller stops at the first acceptable row; never a bare table scan
        // and never a sort of the whole table.
        for detail in &details {
            let full_scan = detail.starts_with("SCAN ") && !detail.contains("USING");
            assert!(!full_scan, "`{sql}` does a full table scan: {detail}");
            assert!(!detail.contains("TEMP B-TREE"), "`{sql}` sorts: {detail}");
        }
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH ") || d.contains("USING COVERING INDEX")),
            "`{sql}` uses no index: {details:?}"
        );
    }
}
