//! docs/registry.md documents the schema; this test keeps it honest by
//! comparing every documented table and column with a freshly created registry.

use std::collections::BTreeMap;
use std::time::Duration;

use porthold::registry::Registry;

/// Table name -> [(column, declared type)] from the ```sql block of the doc.
fn documented_schema() -> BTreeMap<String, Vec<(String, String)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/registry.md")).unwrap();
    let sql = doc.split("```sql").nth(1).and_then(|rest| rest.split("```").next()).expect("a ```sql block");
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in sql.lines() {
        let line = line.split("--").next().unwrap().trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
            let name = rest.split([' ', '(']).next().unwrap().to_string();
            let columns: &mut Vec<(String, String)> = tables.entry(name.clone()).or_default();
            // One-line tables: `CREATE TABLE t (a TEXT ..., b INTEGER ...)`.
            if let Some(body) = rest.split_once('(').map(|(_, b)| b) {
                for part in body.split(',') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    if words.len() >= 2 && words[1].chars().all(|c| c.is_ascii_uppercase()) {
                        columns.push((words[0].to_string(), words[1].to_string()));
                    }
                }
                if !rest.ends_with(");") && !rest.contains("WITHOUT ROWID") {
                    columns.clear();
                    current = Some(name);
                } else {
                    current = None;
                }
            }
            continue;
        }
        if line.starts_with(')') {
            current = None;
            continue;
        }
        if let Some(table) = &current {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() >= 2 && !["UNIQUE", "PRIMARY", "CHECK"].contains(&words[0]) {
                tables.get_mut(table).unwrap().push((words[0].to_string(), words[1].trim_end_matches(',').to_string()));
            }
        }
    }
    tables
}

#[test]
fn every_documented_table_and_column_exists() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path(), Duration::from_secs(5)).unwrap();
    let documented = documented_schema();
    assert!(documented.len() >= 5, "parsed too few tables: {documented:?}");
    for (table, columns) in &documented {
        let mut stmt = registry.connection().prepare(&format!("PRAGMA table_info({table})")).unwrap();
        let actual: Vec<(String, String)> = stmt
            .query_map([], |row| Ok((row.get::<_, String>(1)?, row.get::<_, String>(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!actual.is_empty(), "table {table} is documented but missing");
        assert_eq!(&actual, columns, "table {table} differs from docs/registry.md");
    }
    let version: i64 = registry.connection().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, porthold::registry::SCHEMA_VERSION);
}
