//! The `cchq` binary end to end: fixtures for the pure commands, the fleet for the ones that
//! reach hosts.

use std::path::Path;
use std::process::{Command, Output};

use cchq_tests::{fixture_root, fleet_root};

fn cchq(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cchq")).arg("--environments").arg(root).args(args).env_remove("CCHQ_ENVIRONMENTS").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn hosts_lists_a_pattern_in_inventory_order() {
    let out = cchq(&fixture_root(), &["development", "hosts", "redis:!webworkers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = text(&out.stdout).lines().map(|l| l.split_whitespace().next().unwrap().to_owned()).collect();
    assert_eq!(names, ["192.168.33.16", "192.168.33.17"]);
}

#[test]
fn hosts_json_has_one_object_per_host() {
    let out = cchq(&fixture_root(), &["test", "hosts", "commcarehq", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["name"], "cloud_worker_1");
    assert_eq!(lines[0]["user"], "admin");
    assert!(lines[0]["groups"].as_array().unwrap().iter().any(|g| g == "django_manage"));
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let out = cchq(&fixture_root(), &["prod", "hosts"]);
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.contains("error: unknown environment `prod`"), "{err}");
    assert!(err.contains("hint:") && err.contains("development, test"), "{err}");
}

#[test]
fn a_pattern_that_selects_nothing_is_an_error() {
    let out = cchq(&fixture_root(), &["development", "hosts", "nosuchgroup"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("error:") && err.contains("`nosuchgroup` matches no hosts"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    let out = cchq(&fixture_root(), &["development", "hosts", "webworkers:nosuchgroup"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("warning: Could not match supplied host pattern, ignoring: nosuchgroup"), "{}", text(&out.stderr));
}

#[test]
fn lookup_resolves_server_specs() {
    let out = cchq(&fixture_root(), &["development", "lookup", "-"]);
    assert_eq!(text(&out.stdout).trim(), "192.168.33.15", "{}", text(&out.stderr));
    let out = cchq(&fixture_root(), &["development", "lookup", "root@redis[2]"]);
    assert_eq!(text(&out.stdout).trim(), "root@192.168.33.17", "{}", text(&out.stderr));
    let out = cchq(&fixture_root(), &["development", "lookup", "nosuch"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn the_fixture_environments_validate() {
    for env in ["development", "test", "upstream-prod"] {
        let out = cchq(&fixture_root(), &[env, "validate-environment-settings"]);
        assert!(out.status.success(), "{env}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("is valid"));
    }
}

#[test]
fn a_malformed_inventory_names_file_and_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(dir.join("meta.yml"), "deploy_env: b\nenv_monitoring_id: b\nusers: []\n").unwrap();
    std::fs::write(dir.join("inventory.ini"), "[web]\nh1\n[web:vars\nx=1\n").unwrap();
    let before = std::fs::read(dir.join("inventory.ini")).unwrap();
    let out = cchq(tmp.path(), &["broken", "hosts"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("inventory.ini:3"), "{err}");
    assert_eq!(std::fs::read(dir.join("inventory.ini")).unwrap(), before);
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cchq")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 100, "{shell}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cchq")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_shell_command_all_hostname_on_the_fleet() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(&root, &["fleet", "run-shell-command", "all", "hostname", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 5, "{lines:?}");
    for l in &lines {
        assert_eq!(l["exit_code"], 0);
        assert_eq!(l["stdout"].as_str().unwrap().trim(), l["host"].as_str().unwrap(), "each host answers with its own hostname");
    }
}

#[test]
fn run_shell_command_reports_failures_per_host() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(&root, &["fleet", "run-shell-command", "webworkers", "test $(hostname) = fleet2 || exit 9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("==> fleet2 | ok | rc=0"), "{stdout}");
    assert!(stdout.contains("| FAILED | rc=9"), "{stdout}");
}

#[test]
fn run_shell_command_becomes_the_app_user() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(&root, &["fleet", "run-shell-command", "django_manage", "id -un; echo \"$HOME\"", "--become-user", "cchq"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cchq\n/home/cchq\n"), "{}", text(&out.stdout));
}

#[test]
fn dry_run_shows_and_runs_nothing() {
    let Some(root) = fleet_root() else { return };
    let marker = "/tmp/cchq-dry-run-marker";
    let out = cchq(&root, &["fleet", "run-shell-command", "fleet1", &format!("touch {marker}"), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("fleet1: would run: /bin/sh -c 'touch {marker}'")), "{}", text(&out.stdout));
    let check = cchq(&root, &["fleet", "run-shell-command", "fleet1", &format!("test ! -e {marker}")]);
    assert!(check.status.success(), "the dry run created the file");
}

#[test]
fn ssh_runs_a_remote_command_with_the_environments_settings() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(&root, &["fleet", "ssh", "webworkers[1]", "hostname"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "fleet3");
}

#[test]
fn deploy_and_rollback_help_document_notifications() {
    let out = cchq(&fixture_root(), &["test", "deploy", "--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    assert!(help.contains("--no-notify") && help.contains("Notifications:") && help.contains("email_enabled: False"), "{help}");
    let out = cchq(&fixture_root(), &["test", "rollback", "--help"]);
    assert!(text(&out.stdout).contains("--no-notify"), "{}", text(&out.stdout));
}

#[test]
fn a_password_in_cchq_yml_notify_is_refused_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(dir.join("meta.yml"), "deploy_env: n\nenv_monitoring_id: n\nusers: []\n").unwrap();
    std::fs::write(dir.join("inventory.ini"), "[webworkers]\nh1\n").unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        "notify:\n  email:\n    to: [ops@example.org]\n    smtp: {host: smtp.example.org, password: hunter22-pw}\n",
    )
    .unwrap();
    let out = cchq(tmp.path(), &["n", "hosts"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cchq.yml") && err.contains("password_vault"), "{err}");
    assert!(!err.contains("hunter22-pw"), "{err}");
}

#[test]
fn validate_describes_the_notifications_and_what_cannot_be_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), "localsettings:\n  EMAIL_SMTP_HOST: '{{ groups.proxy.0 }}'\n").unwrap();
    std::fs::write(dir.join("meta.yml"), "deploy_env: n\nenv_monitoring_id: n\nusers: []\n").unwrap();
    std::fs::write(dir.join("inventory.ini"), "[webworkers]\nh1\n").unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        "notify:\n  email:\n    to: [ops@example.org]\n  webhooks:\n    - url: https://hooks.example.org/x\n",
    )
    .unwrap();
    let out = cchq(tmp.path(), &["n", "validate-environment-settings"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deploy notifications: 1 webhook(s)"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("set `notify.email.smtp.host`"), "{}", text(&out.stderr));
}
