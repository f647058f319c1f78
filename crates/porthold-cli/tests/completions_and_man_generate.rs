//! `completions SHELL` for every supported shell and `man` as roff, both
//! generated from the clap definitions.

mod support;
mod util;

use support::{fails, ok};
use util::TestEnv;

#[test]
fn completions_generate_for_each_shell_and_mention_the_commands() {
    let env = TestEnv::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef porthold"),
        ("fish", "complete -c porthold"),
        ("elvish", "edit:completion:arg-completer[porthold]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = ok(&env, &["completions", shell]);
        assert!(out.contains(marker), "{shell}: no {marker:?}");
        for command in [
            "reserve-group",
            "autoreserve",
            "port-info",
            "assert-data-dir",
        ] {
            assert!(out.contains(command), "{shell}: no {command}");
        }
    }
    fails(&env, &["completions", "tcsh"], 2);
    assert!(!env.data_dir().exists(), "completions touched the data dir");
}

#[test]
fn man_produces_a_roff_page_with_the_commands_and_exit_status() {
    let env = TestEnv::new();
    let out = ok(&env, &["man"]);
    assert!(
        out.starts_with(".ie \\n(.g .ds Aq"),
        "{}",
        &out[..80.min(out.len())]
    );
    assert!(out.contains(".TH porthold 1"), "no .TH header");
    assert!(out.contains(".SH NAME"));
    assert!(out.contains("reserve\\-group"), "subcommands are listed");
    assert!(out.contains("EXIT STATUS"));
}
