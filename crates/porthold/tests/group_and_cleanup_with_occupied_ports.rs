//! Group reservation and autoclean against a fake occupancy probe: a block
//! of offsets skips ports some other process listens on; a cleanup whose
//! retry still fails is rolled back with it; migrate and released-port reuse.

use std::collections::HashSet;
use std::time::Duration;

use porthold::key::Key;
use porthold::net::{KernelPorts, Occupancy, OccupancyProbe, PortRange};
use porthold::pool::Pool;
use porthold::registry::{
    CleanPolicy, GroupMember, GroupRequest, ListFilter, Registry, ReserveRequest,
};
use porthold::{Error, ErrorKind};

struct FakeProbe(HashSet<u16>);

impl OccupancyProbe for FakeProbe {
    fn probe(&self, port: u16) -> Occupancy {
        if self.0.contains(&port) {
            Occupancy::Busy
        } else {
            Occupancy::Free
        }
    }

    fn owner(&self, _port: u16) -> Option<(u32, String)> {
        None
    }
}

fn kernel() -> KernelPorts {
    KernelPorts {
        ephemeral: PortRange::new(32768, 60999).unwrap(),
        reserved: vec![],
    }
}

fn pool(a: u16, b: u16) -> Pool {
    Pool::new(vec![PortRange::new(a, b).unwrap()]).unwrap()
}

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("data"), Duration::from_secs(5)).unwrap();
    (dir, registry)
}

fn offsets(offsets: &[(&str, u16)]) -> Vec<GroupMember> {
    offsets
        .iter()
        .map(|(tag, offset)| GroupMember {
            tag: tag.to_string(),
            port: None,
            offset: Some(*offset),
        })
        .collect()
}

#[test]
fn an_offset_block_skips_bases_where_any_member_port_is_occupied() {
    let (_dir, mut registry) = open();
    let request = GroupRequest {
        path: "/p/shop".into(),
        members: offsets(&[("web", 0), ("api", 1), ("db", 3)]),
        project: None,
        pool: pool(25000, 25099),
        kernel: kernel(),
    };
    // Members sit at base, base+1, base+3. 25001 busy rules out bases 25000
    // and 25001; 25004 would rule out 25001, 25003 and 25004. The lowest free
    // port is 25000, but the first block that fits starts at 25002.
    let probe = FakeProbe([25001, 25004].into());
    let outcome = registry.reserve_group(&request, Some(&probe)).unwrap();
    let ports: Vec<(String, u16)> = outcome
        .members
        .iter()
        .map(|(tag, o)| (tag.clone(), o.reservation.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("web".to_string(), 25002),
            ("api".to_string(), 25003),
            ("db".to_string(), 25005)
        ]
    );
}

#[test]
fn a_new_offset_member_joins_the_existing_base() {
    let (_dir, mut registry) = open();
    let mut request = GroupRequest {
        path: "/p/shop".into(),
        members: offsets(&[("web", 0)]),
        project: None,
        pool: pool(25100, 25199),
        kernel: kernel(),
    };
    registry.reserve_group(&request, None).unwrap();
    // Someone takes 25101 meanwhile; then the project grows a service at offset 2.
    registry
        .reserve(
            &ReserveRequest::new(
                Key {
                    path: "/other".into(),
                    tag: String::new(),
                },
                pool(25100, 25199),
                kernel(),
            ),
            None,
        )
        .unwrap();
    request.members = offsets(&[("web", 0), ("api", 2)]);
    let outcome = registry.reserve_group(&request, None).unwrap();
    assert_eq!(outcome.members[0].1.reservation.port, 25100);
    assert_eq!(outcome.members[1].1.reservation.port, 25102);
    assert!(!outcome.members[0].1.created);
    assert!(outcome.members[1].1.created);
}

#[test]
fn duplicate_or_bad_tags_are_refused_before_anything_happens() {
    let (_dir, mut registry) = open();
    let request = GroupRequest {
        path: "/p/shop".into(),
        members: offsets(&[("web", 0), ("web", 1)]),
        project: None,
        pool: pool(25200, 25299),
        kernel: kernel(),
    };
    let err = registry.reserve_group(&request, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    assert!(registry.list(&ListFilter::default()).unwrap().is_empty());
}

#[test]
fn an_autoclean_whose_retry_still_fails_is_rolled_back_with_it() {
    let (dir, mut registry) = open();
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut first = ReserveRequest::new(
        Key {
            path: gone.clone(),
            tag: String::new(),
        },
        pool(25300, 25300),
        kernel(),
    );
    first.port = None;
    registry.reserve(&first, None).unwrap();
    std::fs::remove_dir(&gone).unwrap();

    let new = ReserveRequest::new(
        Key {
            path: "/p/new".into(),
            tag: String::new(),
        },
        pool(25300, 25300),
        kernel(),
    );
    // The only port is cleaned, but something listens on it: the retry fails,
    // and the cleanup must not have happened either.
    let busy = FakeProbe([25300].into());
    let policy = CleanPolicy::prune();
    let err = registry
        .reserve_with_autoclean(&new, Some(&busy), &policy)
        .unwrap_err();
    assert!(matches!(err, Error::PoolExhausted { .. }), "{err}");
    let rows = registry.list(&ListFilter::default()).unwrap();
    assert_eq!(rows.len(), 1, "the cleanup was not rolled back");
    assert_eq!(rows[0].path, gone);

    // With the port free, the same call cleans and succeeds.
    let (outcome, cleaned) = registry
        .reserve_with_autoclean(&new, Some(&FakeProbe(HashSet::new())), &policy)
        .unwrap();
    assert_eq!(outcome.reservation.port, 25300);
    assert_eq!(cleaned.len(), 1);
    assert_eq!(cleaned[0].reservation.path, gone);
}

#[test]
fn cleanup_keeps_a_path_that_exists_and_a_recently_used_reservation() {
    let (dir, mut registry) = open();
    let here = dir.path().to_path_buf();
    registry
        .reserve(
            &ReserveRequest::new(
                Key {
                    path: here,
                    tag: String::new(),
                },
                pool(25400, 25409),
                kernel(),
            ),
            None,
        )
        .unwrap();
    let cleaned = registry.clean(&CleanPolicy::prune(), false).unwrap();
    assert!(cleaned.is_empty());
    let cleaned = registry
        .clean(&CleanPolicy::expire(Duration::from_secs(3600)), false)
        .unwrap();
    assert!(
        cleaned.is_empty(),
        "a reservation used just now is not expired"
    );
}
