//! In-process cost of `Registry::reserve` for a new key, on an empty registry
//! and on one holding 20,000 reservations (pool of 40,000 ports, occupancy
//! check off). The allocation is indexed, so the two should cost the same;
//! docs/performance.md records the ratio (goal: <= 1.25x).
//!
//! Run: `cargo bench -p porthold --bench reserve`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use porthold::key::Key;
use porthold::net::{KernelPorts, PortRange};
use porthold::pool::Pool;
use porthold::registry::{Registry, ReleaseTarget, ReserveRequest};

fn request(path: String) -> ReserveRequest {
    let pool = Pool::new(vec![PortRange::new(10000, 49999).unwrap()]).unwrap();
    let kernel = KernelPorts {
        ephemeral: PortRange::new(50000, 60999).unwrap(),
        reserved: vec![],
    };
    ReserveRequest::new(
        Key {
            path: path.into(),
            tag: String::new(),
        },
        pool,
        kernel,
    )
}

fn reserve_new_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve_new_key");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    for existing in [0usize, 20_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(dir.path(), Duration::from_secs(5)).unwrap();
        for i in 0..existing {
            registry
                .reserve(&request(format!("/bench/existing/{i}")), None)
                .unwrap();
        }
        let mut counter = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(existing), &existing, |b, _| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    counter += 1;
                    registry
                        .reserve(&request(format!("/bench/new/{counter}")), None)
                        .unwrap();
                }
                let elapsed = start.elapsed();
                // Keep the row count at `existing` between batches (not timed).
                registry
                    .release(&ReleaseTarget::Recursive {
                        path: "/bench/new".into(),
                        tag: None,
                    })
                    .unwrap();
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, reserve_new_key);
criterion_main!(benches);
