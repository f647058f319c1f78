use super::*;
use crate::ErrorKind;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn each_layer_overrides_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let user = write(
        dir.path(),
        "user.toml",
        "[registry]\nbusy_timeout = \"1s\"\n[pool]\nrange = \"20000-20099\"\n",
    );
    let mut sources = Sources {
        user_config: Some(user.clone()),
        ..Sources::default()
    };
    let check = |sources: &Sources, timeout_ms: u64, pool: &str, origin: Origin| {
        let config = Config::load(sources).unwrap();
        assert_eq!(config.busy_timeout.value, Duration::from_millis(timeout_ms));
        assert_eq!(config.busy_timeout.origin, origin);
        let ranges = &config.pool.as_ref().unwrap().value;
        assert_eq!(Pool::new(ranges.clone()).unwrap().to_string(), pool);
    };
    check(
        &sources,
        1000,
        "20000-20099",
        Origin::File {
            path: user.clone(),
            line: 2,
        },
    );

    let project = dir.path().join("proj");
    std::fs::create_dir(&project).unwrap();
    let project_file = write(
        &project,
        PROJECT_FILE,
        "[registry]\nbusy_timeout = \"2s\"\n\n[pool]\nrange = [\"20100-20199\"]\n",
    );
    sources.project_dir = Some(project.clone());
    check(
        &sources,
        2000,
        "20100-20199",
        Origin::File {
            path: project_file,
            line: 2,
        },
    );

    let local = write(
        &project,
        LOCAL_FILE,
        "\n\n[registry]\nbusy_timeout = \"3s\"\n[pool]\nrange = \"20200-20299\"\n",
    );
    check(
        &sources,
        3000,
        "20200-20299",
        Origin::File {
            path: local,
            line: 4,
        },
    );

    sources.env = vec![
        ("PORTHOLD_BUSY_TIMEOUT".into(), "4s".into()),
        ("PORTHOLD_POOL".into(), "20300-20399".into()),
        ("PORTHOLD_COLOR".into(), "never".into()),
    ];
    check(
        &sources,
        4000,
        "20300-20399",
        Origin::Env("PORTHOLD_BUSY_TIMEOUT".into()),
    );

    sources.flags = Overrides {
        pool: Some("20400-20499".into()),
        busy_timeout: Some("5s".into()),
        data_dir: None,
    };
    check(
        &sources,
        5000,
        "20400-20499",
        Origin::Flag("--busy-timeout".into()),
    );
}

#[test]
fn an_unknown_key_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        PROJECT_FILE,
        "[project]\nname = \"shop\"\n\n[pool]\nrange = \"20000-20010\"\nbogus_key = 1\n",
    );
    let err = Config::load(&Sources {
        project_dir: Some(dir.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    let message = err.to_string();
    let expected = format!("{}:6:", dir.path().join(PROJECT_FILE).display());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("bogus_key"), "{message}");
}

#[test]
fn bad_values_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[pool]\nrange = \"abc\"\n", 2, "pool.range"),
        ("[pool]\nexclude = [80, \"x-y\"]\n", 2, "pool.exclude"),
        (
            "\n[registry]\nbusy_timeout = \"5 parsecs\"\n",
            3,
            "registry.busy_timeout",
        ),
        ("[services.web]\nport = 70000\n", 2, "services.web.port"),
        (
            "[services.web]\nenv = \"X;touch f\"\n",
            2,
            "services.web.env",
        ),
        (
            "[services.web]\nenv = \"web_port\"\n",
            2,
            "services.web.env",
        ),
        (
            "[services.web]\nlisten = [\"ftp://x\"]\n",
            2,
            "services.web.listen",
        ),
        (
            "[services.web]\nready = \"sometimes\"\n",
            2,
            "services.web.ready",
        ),
        ("[services.web]\nport = 1\noffset = 2\n", 2, "services.web"),
        ("[services.\"a b\"]\nport = 1\n", 1, "services.a b"),
    ];
    for (text, line, key) in cases {
        let path = write(dir.path(), "c.toml", text);
        let err = Config::check_file(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{text}");
        let message = err.to_string();
        let prefix = format!("{}:{line}: {key}:", path.display());
        assert!(message.starts_with(&prefix), "{text:?}: {message}");
    }
}

#[test]
fn services_merge_field_by_field_and_get_default_env_names() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        PROJECT_FILE,
        "[project]\nname = \"shop\"\n[services.web]\noffset = 0\nlisten = [\"web=tcp://127.0.0.1:0\"]\nready = \"http:/health\"\n[services.api-v2]\noffset = 1\n",
    );
    write(dir.path(), LOCAL_FILE, "[services.web]\nport = 20555\n");
    let config = Config::load(&Sources {
        project_dir: Some(dir.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap();
    let web = &config.services["web"];
    assert_eq!(web.port, Some(20555));
    assert_eq!(web.offset, None);
    assert_eq!(web.env, "WEB_PORT");
    assert_eq!(web.listen, vec!["web=tcp://127.0.0.1:0".to_string()]);
    assert_eq!(web.ready.as_deref(), Some("http:/health"));
    assert_eq!(config.services["api-v2"].env, "API_V2_PORT");
    assert_eq!(config.project_name.unwrap().value, "shop");
    assert_eq!(config.project_root.as_deref(), Some(dir.path()));
}

#[test]
fn exclusions_accumulate_and_leave_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let user = write(dir.path(), "user.toml", "[pool]\nexclude = [20001]\n");
    write(
        dir.path(),
        PROJECT_FILE,
        "[pool]\nrange = \"20000-20004\"\nexclude = \"20003-20004\"\n",
    );
    let config = Config::load(&Sources {
        user_config: Some(user),
        project_dir: Some(dir.path().to_path_buf()),
        env: vec![("PORTHOLD_EXCLUDE".into(), "20000".into())],
        ..Sources::default()
    })
    .unwrap();
    let kernel = KernelPorts {
        ephemeral: PortRange::new(32768, 60999).unwrap(),
        reserved: vec![],
    };
    let (pool, _) = config.pool(&kernel).unwrap();
    assert_eq!(pool.to_string(), "20002");
}

#[test]
fn env_names_are_strict() {
    for good in ["WEB_PORT", "_X", "A1"] {
        assert!(validate_env_name(good).is_ok(), "{good}");
    }
    for bad in ["", "1A", "X;touch f", "web", "A-B", "A B", "$(x)", "Ä"] {
        assert!(validate_env_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn listen_and_ready_specs_are_checked() {
    for good in [
        "tcp://127.0.0.1:0",
        "web=tcp://[::]:8080?v6only=0",
        "udp://127.0.0.1:0",
        "unix:///run/x.sock",
    ] {
        assert!(validate_listen(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "tcp://",
        "tcp://host",
        "ftp://x:1",
        "unix://rel",
        "a b=tcp://x:1",
    ] {
        assert!(validate_listen(bad).is_err(), "{bad}");
    }
    for good in [
        "listen",
        "notify",
        "tcp",
        "http:/",
        "cmd:true",
        "delay:500ms",
    ] {
        assert!(validate_ready(good).is_ok(), "{good}");
    }
    for bad in ["", "http:x", "delay:soon", "cmd:", "later"] {
        assert!(validate_ready(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_init_template_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), PROJECT_FILE, TEMPLATE);
    let config = Config::check_file(&path).unwrap();
    assert_eq!(config.services["web"].offset, Some(0));
    assert_eq!(config.services["web"].env, "WEB_PORT");
}
