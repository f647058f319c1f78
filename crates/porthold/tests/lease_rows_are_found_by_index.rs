//! Reclaim reads every lease row on each `pick`, and the next lease index of
//! an owner: both must be index searches on `UNIQUE(path, tag)`, never a scan
//! of all reservations (whose count can be tens of thousands).

#![cfg(feature = "registry")]

use std::time::Duration;

use porthold::registry::Registry;

#[test]
fn lease_queries_search_the_key_index() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path(), Duration::from_secs(5)).unwrap();
    for sql in Registry::lease_queries() {
        let placeholders = sql.matches('?').count();
        let mut stmt = registry
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let params: Vec<String> = (0..placeholders).map(|_| "lease:x:1:2".into()).collect();
        let details: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!details.is_empty());
        for detail in &details {
            assert!(
                detail.starts_with("SEARCH ") && detail.contains("INDEX"),
                "`{sql}` is not an index search: {detail}"
            );
        }
    }
}
