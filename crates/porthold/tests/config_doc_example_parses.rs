//! The example in docs/config.md is valid and means what the document says.

use porthold::config::Config;

fn fenced_block(markdown: &str, language: &str) -> String {
    let start_marker = format!("```{language}\n");
    let start = markdown
        .find(&start_marker)
        .unwrap_or_else(|| panic!("no ```{language} block"))
        + start_marker.len();
    let end = markdown[start..].find("```").expect("unterminated block") + start;
    markdown[start..end].to_string()
}

#[test]
fn the_documented_example_loads_with_the_documented_meaning() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md"))
        .expect("docs/config.md");
    let example = fenced_block(&doc, "toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("porthold.toml");
    std::fs::write(&path, example).unwrap();
    let config = Config::check_file(&path).unwrap();
    assert_eq!(config.project_name.as_ref().unwrap().value, "shop");
    // Registry settings are not allowed in a project file.
    assert_eq!(
        config.busy_timeout.value,
        porthold::config::DEFAULT_BUSY_TIMEOUT
    );
    assert_eq!(config.data_dir, None);
    let web = &config.services["web"].listen_specs().unwrap();
    assert!(
        web[0].needs_reserved_port(),
        "the example must use the reserved port"
    );
    assert!(config.service_warnings().is_empty());
    let envs: Vec<_> = config.services.values().map(|s| s.env.as_str()).collect();
    assert_eq!(envs, ["API_PORT", "DATABASE_PORT", "WEB_PORT"]);
    assert_eq!(config.services["db"].port, Some(22005));
    assert_eq!(config.services["api"].offset, Some(1));
    assert_eq!(config.exclude.len(), 2);
    assert_eq!(
        config
            .pool
            .unwrap()
            .value
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["20000-20999", "22000-22099"]
    );
}
