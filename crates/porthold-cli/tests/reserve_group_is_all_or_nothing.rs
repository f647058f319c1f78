//! `reserve-group`: every service of porthold.toml reserved in one
//! transaction. A preferred port held by another key is exit 3 and leaves no
//! row of the group behind; offsets get a contiguous block; a second run
//! returns the same ports.

mod support;
mod util;

use support::{fails, json, json_error, ok, redact, write_project};
use util::TestEnv;

const PROJECT: &str = r#"
[project]
name = "shop"

[services.web]
offset = 0

[services.api]
offset = 2
env = "API_URL_PORT"

[services.db]
port = 24105
"#;

#[test]
fn every_service_gets_a_port_and_a_rerun_returns_the_same_ones() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    let first = json(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24100-24119",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(first["project"], "shop");
    assert_eq!(first["env"]["WEB_PORT"], 24100);
    assert_eq!(first["env"]["API_URL_PORT"], 24102);
    assert_eq!(first["env"]["DB_PORT"], 24105);
    let services = first["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    assert!(services.iter().all(|s| s["created"] == true), "{first}");
    assert!(services.iter().all(|s| s["project"] == "shop"), "{first}");
    assert_eq!(env.row_count(), 3);

    let again = json(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24100-24119",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(again["env"], first["env"]);
    assert!(
        again["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["created"] == false)
    );
    assert_eq!(env.row_count(), 3);
}

#[test]
fn offsets_search_for_a_block_where_every_offset_is_free() {
    let env = TestEnv::new();
    // 24120 and 24123 are taken by others: base 24120 fails (24120), base
    // 24121 fails (24123 = 24121 + 2), so the block starts at 24122 even
    // though 24121 is the lowest free port.
    for port in ["24120", "24123"] {
        ok(
            &env,
            &[
                "reserve",
                "--path",
                &format!("/other/{port}"),
                "--allow-unrelated-path",
                "--port",
                port,
                "--skip-occupancy-check",
            ],
        );
    }
    write_project(
        &env,
        "[services.web]\noffset = 0\n[services.api]\noffset = 2\n",
    );
    let out = json(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24120-24139",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(out["env"]["WEB_PORT"], 24122, "{out}");
    assert_eq!(out["env"]["API_PORT"], 24124, "{out}");
}

#[test]
fn a_preferred_port_held_by_another_key_is_exit_3_and_writes_no_row() {
    let env = TestEnv::new();
    ok(
        &env,
        &[
            "reserve",
            "--path",
            "/someone/else",
            "--allow-unrelated-path",
            "--port",
            "24105",
            "--skip-occupancy-check",
        ],
    );
    assert_eq!(env.row_count(), 1);
    // `admin` sorts before `db`, so its row is written inside the
    // transaction before `db` fails: the rollback must remove it.
    write_project(
        &env,
        &format!("{PROJECT}\n[services.admin]\nport = 24104\n"),
    );
    let stderr = fails(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24100-24119",
            "--skip-occupancy-check",
        ],
        3,
    );
    assert!(
        stderr.contains("port 24105 is reserved by `/someone/else`"),
        "{stderr}"
    );
    // admin was written before db failed; web and api come after: none may remain.
    assert_eq!(env.row_count(), 1, "a row of the failed group was written");
    let error = json_error(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24100-24119",
            "--skip-occupancy-check",
        ],
        3,
    );
    assert_eq!(error["error"]["kind"], "conflict");
    assert_eq!(env.row_count(), 1);
}

#[test]
fn an_exhausted_pool_for_the_block_is_exit_4_and_writes_no_row() {
    let env = TestEnv::new();
    write_project(
        &env,
        "[services.a]\nport = 24150\n[services.web]\noffset = 0\n[services.api]\noffset = 5\n",
    );
    fails(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24140-24144",
            "--skip-occupancy-check",
        ],
        4,
    );
    assert_eq!(env.row_count(), 0);
}

#[test]
fn no_project_file_or_no_services_is_exit_2() {
    let env = TestEnv::new();
    let stderr = fails(&env, &["reserve-group"], 2);
    assert!(stderr.contains("no porthold.toml"), "{stderr}");
    write_project(&env, "[project]\nname = \"x\"\n");
    let stderr = fails(&env, &["reserve-group"], 2);
    assert!(stderr.contains("declares no [services]"), "{stderr}");
    json_error(&env, &["reserve-group"], 2);
}

#[test]
fn an_explicit_unrelated_path_needs_the_override() {
    let env = TestEnv::new();
    let stderr = fails(&env, &["reserve-group", "--path", "/nowhere/x"], 2);
    assert!(stderr.contains("--allow-unrelated-path"), "{stderr}");
}

#[test]
fn the_human_table_lists_service_port_env_and_status() {
    let env = TestEnv::new();
    write_project(&env, PROJECT);
    let out = ok(
        &env,
        &[
            "reserve-group",
            "--pool",
            "24160-24179",
            "--skip-occupancy-check",
        ],
    );
    insta::assert_snapshot!(redact(&out, env.dir.path()));
}

#[test]
fn concurrent_groups_of_different_projects_never_share_a_port() {
    let env = TestEnv::new();
    let projects: Vec<_> = (0..8)
        .map(|i| {
            let dir = env.project().join(format!("p{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("porthold.toml"),
                "[services.web]\noffset = 0\n[services.api]\noffset = 1\n[services.worker]\n",
            )
            .unwrap();
            dir
        })
        .collect();
    let children: Vec<_> = projects
        .iter()
        .map(|dir| {
            let mut cmd = env.std_cmd();
            cmd.current_dir(dir)
                .args([
                    "--busy-timeout",
                    "60s",
                    "--json",
                    "autoreserve",
                    "--pool",
                    "24180-24239",
                    "--skip-occupancy-check",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let web = value["env"]["WEB_PORT"].as_u64().unwrap();
        assert_eq!(value["env"]["API_PORT"].as_u64().unwrap(), web + 1);
        for port in value["env"].as_object().unwrap().values() {
            assert!(
                ports.insert(port.as_u64().unwrap()),
                "port {port} given twice"
            );
        }
    }
    assert_eq!(ports.len(), 24);
    assert_eq!(env.row_count(), 24);
}
