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
        let pool_setting = config.pool.as_ref().unwrap();
        // Registry settings come only from the user config, env and flags;
        // the pool is the setting every layer may change.
        match &origin {
            Origin::File { .. } => assert_eq!(pool_setting.origin, origin),
            _ => assert_eq!(config.busy_timeout.origin, origin),
        }
        assert_eq!(
            Pool::new(pool_setting.value.clone()).unwrap().to_string(),
            pool
        );
    };
    check(
        &sources,
        1000,
        "20000-20099",
        Origin::File {
            path: user.clone(),
            line: 4,
        },
    );

    let project = dir.path().join("proj");
    std::fs::create_dir(&project).unwrap();
    let project_file = write(
        &project,
        PROJECT_FILE,
        "\n\n[pool]\nrange = [\"20100-20199\"]\n",
    );
    sources.project_dir = Some(project.clone());
    check(
        &sources,
        1000,
        "20100-20199",
        Origin::File {
            path: project_file,
            line: 4,
        },
    );

    let local = write(
        &project,
        LOCAL_FILE,
        "\n\n\n[pool]\nrange = \"20200-20299\"\n",
    );
    check(
        &sources,
        1000,
        "20200-20299",
        Origin::File {
            path: local,
            line: 5,
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
fn names_the_shell_or_loader_interprets_are_refused() {
    for reserved in [
        "PATH",
        "HOME",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "PS1",
        "PS4",
        "PROMPT_COMMAND",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "PORTHOLD_PROJECT_PATH",
        "PORTHOLD_DATA_DIR",
        "LISTEN_FDS",
    ] {
        let err = validate_env_name(reserved).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert!(err.to_string().contains(reserved), "{err}");
        // The shape alone is fine: porthold's own export line uses it.
        assert!(validate_env_syntax(reserved).is_ok(), "{reserved}");
    }
    for fine in ["PORT", "WEB_PORT", "PATH_PORT", "HOME_PORT", "XLD_PORT"] {
        assert!(validate_env_name(fine).is_ok(), "{fine}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[services.web]\nport = 20001\nenv = \"BASH_ENV\"\n",
    );
    let message = Config::check_file(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:3: services.web.env:", path.display())),
        "{message}"
    );
    assert!(message.contains("BASH_ENV"), "{message}");
}

#[test]
fn two_services_mapping_to_one_variable_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        // By the default mapping.
        "[services.web-x]\noffset = 0\n[services.web_x]\noffset = 1\n",
        // Explicitly.
        "[services.web]\noffset = 0\nenv = \"APP_PORT\"\n[services.api]\noffset = 1\nenv = \"APP_PORT\"\n",
        // One explicit, one default.
        "[services.web]\noffset = 0\nenv = \"API_PORT\"\n[services.api]\noffset = 1\n",
    ] {
        let path = write(dir.path(), "c.toml", text);
        let err = Config::check_file(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{text}");
        let message = err.to_string();
        assert!(message.contains("environment variable"), "{message}");
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
    }
}

#[test]
fn services_of_one_group_may_not_share_a_port_or_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    for (text, what, line) in [
        (
            "[services.a]\nport = 20001\n[services.b]\nport = 20001\n",
            "the same port 20001",
            4,
        ),
        (
            "[services.a]\noffset = 1\n\n[services.b]\noffset = 1\n",
            "the same offset 1",
            5,
        ),
    ] {
        let path = write(dir.path(), "c.toml", text);
        let message = Config::check_file(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:{line}: services.b:", path.display())),
            "{message}"
        );
        assert!(message.contains(what), "{message}");
        assert!(message.contains("services.a"), "{message}");
    }
    // A local file that moves one of them resolves the clash.
    write(
        dir.path(),
        PROJECT_FILE,
        "[services.a]\noffset = 1\n[services.b]\noffset = 1\n",
    );
    let sources = Sources {
        project_dir: Some(dir.path().to_path_buf()),
        ..Sources::default()
    };
    assert!(Config::load(&sources).is_err());
    write(dir.path(), LOCAL_FILE, "[services.b]\noffset = 2\n");
    assert!(Config::load(&sources).is_ok());
}

#[test]
fn registry_settings_in_a_project_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[registry]\ndata_dir = \"/tmp/elsewhere\"\n",
            "registry.data_dir",
        ),
        (
            "\n[registry]\nbusy_timeout = \"1s\"\n",
            "registry.busy_timeout",
        ),
    ] {
        for name in [PROJECT_FILE, LOCAL_FILE] {
            let file = write(dir.path(), name, text);
            let err = Config::load(&Sources {
                project_dir: Some(dir.path().to_path_buf()),
                ..Sources::default()
            })
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{}:", file.display())),
                "{message}"
            );
            assert!(message.contains(key), "{message}");
            assert!(Config::check_file(&file).is_err());
            std::fs::remove_file(&file).unwrap();
        }
        // The same text in a user config is fine.
        let user = write(dir.path(), "config.toml", text);
        assert!(
            Config::load(&Sources {
                user_config: Some(user),
                ..Sources::default()
            })
            .is_ok()
        );
    }
}

#[test]
fn an_unreadable_user_config_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    // `.config` is a file: reading below it fails (ENOTDIR) even for root.
    write(dir.path(), ".config", "");
    let config = Config::load(&Sources {
        user_config: Some(dir.path().join(".config/porthold/config.toml")),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("user config"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_project_file_owned_by_another_user_is_ignored_with_a_warning() {
    if !rustix::process::geteuid().is_root() {
        crate::test_hooks::skip("needs root to give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        PROJECT_FILE,
        "[pool]\nrange = \"20000-20009\"\n",
    );
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let config = Config::load(&Sources {
        project_dir: Some(dir.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap();
    assert!(config.pool.is_none(), "an untrusted file was applied");
    assert_eq!(config.project_root, None);
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0].contains("uid 65534"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_zero_port_listener_of_a_service_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[services.web]\noffset = 0\nlisten = [\"web=tcp://127.0.0.1:0\"]\n[services.api]\noffset = 1\nlisten = [\"api=tcp://127.0.0.1:{port}\", \"tcp://[::1]\"]\n",
    );
    let config = Config::check_file(&path).unwrap();
    let warnings = config.service_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!("{}:3: services.web.listen:", path.display())),
        "{warnings:?}"
    );
}

#[test]
fn listen_specs_are_checked_as_run_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    for (text, what) in [
        // Syntactically plausible, refused by run: a host name.
        (
            "[services.web]\nlisten = [\"tcp://localhost:80\"]\n",
            "localhost",
        ),
        (
            "[services.web]\nlisten = [\"a=tcp://127.0.0.1:0\", \"a=tcp://[::1]:0\"]\n",
            "`a`",
        ),
    ] {
        let path = write(dir.path(), "c.toml", text);
        let message = Config::check_file(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:2: services.web.listen:", path.display())),
            "{message}"
        );
        assert!(message.contains(what), "{message}");
        assert!(!message.contains("--listen"), "{message}");
    }
}

#[test]
fn listen_and_ready_specs_are_checked() {
    for good in [
        "tcp://127.0.0.1:0",
        "web=tcp://[::]:8080?v6only=0",
        "udp://127.0.0.1:0",
        "unix:///run/x.sock",
        "web=tcp://127.0.0.1:{port}",
        "tcp://[::1]",
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
        "tcp://localhost:80",
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

#[test]
fn the_default_data_dir_follows_xdg_and_ignores_a_relative_one() {
    use std::ffi::OsStr;
    let home = Some(OsStr::new("/home/u"));
    assert_eq!(
        default_data_dir(Some(OsStr::new("/xdg/data")), home),
        Some(PathBuf::from("/xdg/data/porthold"))
    );
    for ignored in ["", "rel/data"] {
        assert_eq!(
            default_data_dir(Some(OsStr::new(ignored)), home),
            Some(PathBuf::from("/home/u/.local/share/porthold")),
            "{ignored:?}"
        );
    }
    assert_eq!(default_data_dir(None, None), None);
    assert_eq!(default_data_dir(None, Some(OsStr::new(""))), None);
    assert_eq!(
        default_user_config(None, home),
        Some(PathBuf::from("/home/u/.config/porthold/config.toml"))
    );
}
