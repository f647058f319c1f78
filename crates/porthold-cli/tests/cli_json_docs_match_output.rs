//! docs/cli-json.md documents every command's `--json` shape with an
//! example; each example must be valid JSON with exactly the top-level keys
//! the command really prints.

mod support;
mod util;

use std::collections::{BTreeMap, BTreeSet};

use support::write_project;
use util::TestEnv;

/// `command name -> example` for every "### `porthold NAME`" section with a json block.
fn documented() -> BTreeMap<String, serde_json::Value> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cli-json.md"
    ))
    .expect("docs/cli-json.md");
    let mut out = BTreeMap::new();
    for section in doc.split("\n### `porthold ").skip(1) {
        let name = section.split('`').next().unwrap().to_string();
        let Some(start) = section.find("```json\n") else {
            continue;
        };
        let body = &section[start + 8..];
        let end = body.find("```").expect("unterminated json block");
        let value: serde_json::Value = serde_json::from_str(&body[..end])
            .unwrap_or_else(|e| panic!("example of `{name}` is not JSON: {e}"));
        out.insert(name, value);
    }
    out
}

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// Checked by `url_ps_wait_stop_find_live_instances.rs` (and `run`'s tests).
const CHECKED_WITH_A_LIVE_INSTANCE: [&str; 3] = ["url", "wait", "stop"];

#[test]
fn every_documented_example_has_the_keys_the_command_prints() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[project]\nname = \"shop\"\n[services.web]\noffset = 0\n",
    );
    let runs: &[(&str, &[&str])] = &[
        ("init", &["init"]),
        (
            "reserve",
            &[
                "reserve",
                "--tag",
                "x",
                "--skip-occupancy-check",
                "--pool",
                "24900-24909",
            ],
        ),
        (
            "reserve-group",
            &[
                "reserve-group",
                "--skip-occupancy-check",
                "--pool",
                "24910-24919",
            ],
        ),
        (
            "autoreserve",
            &[
                "autoreserve",
                "--skip-occupancy-check",
                "--pool",
                "24910-24919",
            ],
        ),
        ("exclude", &["exclude", "24950", "--note", "x"]),
        ("scan", &["scan", "--range", "24900-24999"]),
        ("port-info", &["port-info", "24900"]),
        ("prune", &["prune", "--dry-run"]),
        ("expire", &["expire", "--older-than", "30d"]),
        ("autoclean", &["autoclean"]),
        ("assert-reservation", &["assert-reservation", "--tag", "x"]),
        ("assert-port", &["assert-port", "24900"]),
        ("assert-data-dir", &["assert-data-dir", "--validate"]),
        ("list-projects", &["list-projects"]),
        ("migrate", &["migrate", "--from", "a", "--to", "b"]),
        ("validate", &["validate"]),
        ("ps", &["ps"]),
        ("pick", &["pick", "--pool", "24920-24929"]),
        ("list --leases", &["list", "--leases"]),
    ];
    let docs = documented();
    for (name, args) in runs {
        let example = docs
            .get(*name)
            .unwrap_or_else(|| panic!("docs/cli-json.md has no example for `{name}`"));
        let output = env.cmd().arg("--json").args(*args).output().unwrap();
        assert!(
            output.status.code().is_some_and(|c| c <= 1),
            "{name}: {output:?}"
        );
        let actual: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not JSON: {e}: {output:?}"));
        assert_eq!(keys(&actual), keys(example), "top-level keys of `{name}`");
    }
    // Every documented command was checked, here or (commands that need a
    // live instance) in the test named in its section.
    let mut checked: BTreeSet<&str> = runs.iter().map(|(n, _)| *n).collect();
    checked.extend(CHECKED_WITH_A_LIVE_INSTANCE);
    for name in docs.keys() {
        assert!(
            checked.contains(name.as_str()),
            "`{name}` is documented but not checked"
        );
    }
}

/// The lease objects inside `pick` and `list --leases` have the documented keys too.
#[test]
fn documented_lease_objects_have_the_keys_the_commands_print() {
    let env = TestEnv::new();
    let docs = documented();
    for (name, args, list) in [
        ("pick", &["pick", "--pool", "24930-24939"][..], "leases"),
        ("list --leases", &["list", "--leases"][..], "leases"),
    ] {
        let output = env.cmd().arg("--json").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{name}: {output:?}");
        let actual: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let example = &docs[name][list][0];
        let printed = &actual[list][0];
        assert_eq!(keys(printed), keys(example), "keys of a lease of `{name}`");
        assert_eq!(
            keys(&printed["owner"]),
            keys(&example["owner"]),
            "keys of a lease owner of `{name}`"
        );
    }
}
