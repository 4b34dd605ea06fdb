//! What the main commands print, as snapshots (`insta`): exit code, stdout and stderr of each, on
//! the fixture environments (no host is reached). A change to any of them shows up as a diff in
//! review; accept a deliberate one with `INSTA_UPDATE=always cargo test -p cchq-cli --test
//! snapshots` (or `cargo insta review`) and commit the `.snap` files.
//!
//! Paths that differ between machines (the fixtures' and temporary directories) are replaced by
//! `[FIXTURES]` and `[TMP]`.

use std::path::Path;
use std::process::Command;

use cchq_tests::fixture_root;

/// `cchq --environments ROOT ARGS...` as a plain process would run it (no terminal, no colour,
/// no inherited environment root), shown as exit code + stdout + stderr.
fn run(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cchq"))
        .arg("--environments")
        .arg(root)
        .args(args)
        .env_remove("CCHQ_ENVIRONMENTS")
        .env_remove("COMMCARE_CLOUD_ENVIRONMENTS")
        .env_remove("COLUMNS")
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .output()
        .unwrap();
    let show = |b: &[u8]| {
        let t = String::from_utf8_lossy(b).replace(&root.display().to_string(), "[ROOT]");
        t.replace(&fixture_root().display().to_string(), "[FIXTURES]")
    };
    format!(
        "$ cchq {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status
            .code()
            .map_or_else(|| "signal".to_owned(), |c| c.to_string()),
        show(&out.stdout),
        show(&out.stderr)
    )
}

fn fixtures(args: &[&str]) -> String {
    run(&fixture_root(), args)
}

#[test]
fn top_level_help() {
    insta::assert_snapshot!(fixtures(&["--help"]));
}

#[test]
fn validate_an_environment() {
    insta::assert_snapshot!(fixtures(&["development", "validate-environment-settings"]));
}

#[test]
fn hosts_of_a_pattern() {
    insta::assert_snapshot!(fixtures(&["development", "hosts", "redis:!webworkers"]));
}

#[test]
fn hosts_as_json() {
    insta::assert_snapshot!(fixtures(&["test", "hosts", "commcarehq", "--json"]));
}

#[test]
fn lookup_a_server() {
    insta::assert_snapshot!(fixtures(&["development", "lookup", "postgresql[0]"]));
}

#[test]
fn the_plan_of_a_service_command() {
    insta::assert_snapshot!(fixtures(&["upstream-prod", "service", "celery", "help"]));
}

#[test]
fn postgresql_databases() {
    insta::assert_snapshot!(fixtures(&["development", "list-postgresql-dbs"]));
}

#[test]
fn a_dry_run_of_a_shell_command() {
    insta::assert_snapshot!(fixtures(&[
        "development",
        "run-shell-command",
        "webworkers",
        "echo 'a b' $HOME",
        "--dry-run"
    ]));
}

#[test]
fn deploy_help() {
    insta::assert_snapshot!(fixtures(&["development", "deploy", "--help"]));
}

#[test]
fn an_unknown_environment() {
    insta::assert_snapshot!(fixtures(&["prod", "hosts"]));
}

#[test]
fn a_pattern_that_matches_nothing() {
    insta::assert_snapshot!(fixtures(&["development", "hosts", "nosuchgroup"]));
}

#[test]
fn an_unknown_service() {
    insta::assert_snapshot!(fixtures(&["development", "service", "nosuch", "status"]));
}

#[test]
fn an_unknown_subcommand() {
    insta::assert_snapshot!(fixtures(&["development", "deploy-everything"]));
}

/// A malformed `public.yml`: the file and line are named, nothing runs.
#[test]
fn malformed_yaml_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: broken\nenv_monitoring_id: broken\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1 ansible_host=10.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("public.yml"), "a: 1\nb: [unclosed\nc: 3\n").unwrap();
    insta::assert_snapshot!(run(tmp.path(), &["broken", "hosts", "all"]));
}
