//! The `cchq` binary end to end: fixtures for the pure commands, the fleet for the ones that
//! reach hosts.

use std::path::Path;
use std::process::{Command, Output};

use cchq_tests::{fixture_root, fleet_root};

fn cchq(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cchq"))
        .arg("--environments")
        .arg(root)
        .args(args)
        .env_remove("CCHQ_ENVIRONMENTS")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn hosts_lists_a_pattern_in_inventory_order() {
    let out = cchq(
        &fixture_root(),
        &["development", "hosts", "redis:!webworkers"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["192.168.33.16", "192.168.33.17"]);
}

#[test]
fn hosts_json_has_one_object_per_host() {
    let out = cchq(&fixture_root(), &["test", "hosts", "commcarehq", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["name"], "cloud_worker_1");
    assert_eq!(lines[0]["user"], "admin");
    assert!(
        lines[0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "django_manage")
    );
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let out = cchq(&fixture_root(), &["prod", "hosts"]);
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.contains("error: unknown environment `prod`"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("development, prod-aws, prod-sharded, test"),
        "{err}"
    );
}

#[test]
fn a_pattern_that_selects_nothing_is_an_error() {
    let out = cchq(&fixture_root(), &["development", "hosts", "nosuchgroup"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("error:") && err.contains("`nosuchgroup` matches no hosts"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    let out = cchq(
        &fixture_root(),
        &["development", "hosts", "webworkers:nosuchgroup"],
    );
    assert!(out.status.success());
    assert!(
        text(&out.stderr)
            .contains("warning: Could not match supplied host pattern, ignoring: nosuchgroup"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lookup_resolves_server_specs() {
    let out = cchq(&fixture_root(), &["development", "lookup", "-"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "192.168.33.15",
        "{}",
        text(&out.stderr)
    );
    let out = cchq(&fixture_root(), &["development", "lookup", "root@redis[2]"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "root@192.168.33.17",
        "{}",
        text(&out.stderr)
    );
    let out = cchq(&fixture_root(), &["development", "lookup", "nosuch"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn the_fixture_environments_validate() {
    let mut envs: Vec<String> = std::fs::read_dir(fixture_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    envs.sort();
    assert!(
        envs.len() >= 5
            && envs.iter().any(|e| e == "prod-sharded")
            && envs.iter().any(|e| e == "prod-aws"),
        "{envs:?}"
    );
    for env in &envs {
        let env = env.as_str();
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
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: b\nenv_monitoring_id: b\nusers: []\n",
    )
    .unwrap();
    std::fs::write(dir.join("inventory.ini"), "[web]\nh1\n[web:vars\nx=1\n").unwrap();
    let before = std::fs::read(dir.join("inventory.ini")).unwrap();
    let out = cchq(tmp.path(), &["broken", "hosts"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("inventory.ini:3"), "{err}");
    assert_eq!(std::fs::read(dir.join("inventory.ini")).unwrap(), before);
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn run_shell_command_all_hostname_on_the_fleet() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(
        &root,
        &["fleet", "run-shell-command", "all", "hostname", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 5, "{lines:?}");
    for l in &lines {
        assert_eq!(l["exit_code"], 0);
        assert_eq!(
            l["stdout"].as_str().unwrap().trim(),
            l["host"].as_str().unwrap(),
            "each host answers with its own hostname"
        );
    }
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn run_shell_command_reports_failures_per_host() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "webworkers",
            "test $(hostname) = fleet2 || exit 9",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("==> fleet2 | ok | rc=0"), "{stdout}");
    assert!(stdout.contains("| FAILED | rc=9"), "{stdout}");
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn run_shell_command_becomes_the_app_user() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "django_manage",
            "id -un; echo \"$HOME\"",
            "--become-user",
            "cchq",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("cchq\n/home/cchq\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn dry_run_shows_and_runs_nothing() {
    let Some(root) = fleet_root() else { return };
    let marker = "/tmp/cchq-dry-run-marker";
    let out = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet1",
            &format!("touch {marker}"),
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("fleet1: would run: /bin/sh -c 'touch {marker}'")),
        "{}",
        text(&out.stdout)
    );
    let check = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet1",
            &format!("test ! -e {marker}"),
        ],
    );
    assert!(
        check.status.success(),
        "the dry run created the file: {}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
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
    assert!(
        help.contains("--no-notify")
            && help.contains("Notifications:")
            && help.contains("email_enabled: False"),
        "{help}"
    );
    let out = cchq(&fixture_root(), &["test", "rollback", "--help"]);
    assert!(
        text(&out.stdout).contains("--no-notify"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_password_in_cchq_yml_notify_is_refused_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: n\nenv_monitoring_id: n\nusers: []\n",
    )
    .unwrap();
    std::fs::write(dir.join("inventory.ini"), "[webworkers]\nh1\n").unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        "notify:\n  email:\n    to: [ops@example.org]\n    smtp: {host: smtp.example.org, password: hunter22-pw}\n",
    )
    .unwrap();
    let out = cchq(tmp.path(), &["n", "hosts"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cchq.yml") && err.contains("password_vault"),
        "{err}"
    );
    assert!(!err.contains("hunter22-pw"), "{err}");
}

#[test]
fn validate_describes_the_notifications_and_what_cannot_be_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  EMAIL_SMTP_HOST: '{{ groups.proxy.0 }}'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: n\nenv_monitoring_id: n\nusers: []\n",
    )
    .unwrap();
    std::fs::write(dir.join("inventory.ini"), "[webworkers]\nh1\n").unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        "notify:\n  email:\n    to: [ops@example.org]\n  webhooks:\n    - url: https://hooks.example.org/x\n",
    )
    .unwrap();
    let out = cchq(tmp.path(), &["n", "validate-environment-settings"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deploy notifications: 1 webhook(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("set `notify.email.smtp.host`"),
        "{}",
        text(&out.stderr)
    );
}

/// A vault password in cchq's environment never reaches a command it runs: `run-shell-command
/// all env` on an `ansible_connection=local` host does not show it.
#[test]
fn vault_passwords_are_not_inherited_by_local_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("here");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nthis ansible_connection=local\n",
    )
    .unwrap();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: here\nenv_monitoring_id: here\nusers: [here]\n",
    )
    .unwrap();
    // Every variable cchq reads a vault password from (or the file holding it), and Ansible's.
    let file = tmp.path().join("pw-SENTINEL-3");
    std::fs::write(&file, "pw-SENTINEL-4\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cchq"))
        .arg("--environments")
        .arg(tmp.path())
        .args(["here", "run-shell-command", "all", "env; echo done"])
        .env("ANSIBLE_VAULT_PASSWORD", "pw-SENTINEL-1")
        .env("CCHQ_VAULT_PASSWORD", "pw-SENTINEL-2")
        .env(cchq_core::vault::PASSWORD_FILE_ENV, &file)
        .env("ANSIBLE_VAULT_PASSWORD_FILE", &file)
        .output()
        .unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(o.contains("done"), "the command ran: {o}{e}");
    assert!(!o.contains("SENTINEL") && !e.contains("SENTINEL"), "{o}{e}");
}

/// `lock status` and `lock release` on a local environment (the lock host is this machine):
/// status names the holder with its heartbeat's age and when it would be stale; a holder whose
/// heartbeat is fresh is only released with `--force`, and the error says so.
#[test]
fn lock_status_shows_the_heartbeat_and_release_of_a_live_holder_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    std::fs::create_dir(&dir).unwrap();
    let www = tmp.path().join("www");
    let login = cchq_core::identity::login_name();
    std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: ll\nenv_monitoring_id: ll\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[django_manage]\nlocalhost ansible_connection=local\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        format!("www_root: {}\napp_user: {login}\n", www.display()),
    )
    .unwrap();
    let out = cchq(tmp.path(), &["l", "lock", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("`l` is not locked"),
        "{}",
        text(&out.stdout)
    );

    let lock = www.join("ll/.deploy-lock");
    std::fs::create_dir_all(&lock).unwrap();
    let holder = r#"{"by":"alice@elsewhere","at":1767225600,"release":"r1","message":"deploy commcare","token":"00112233445566778899aabbccddeeff","controller":"elsewhere","pid":4242,"heartbeat_secs":30}"#;
    std::fs::write(lock.join("holder.json"), holder).unwrap();
    let out = cchq(tmp.path(), &["l", "lock", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("locked by alice@elsewhere") && s.contains("release r1"),
        "{s}"
    );
    assert!(
        s.contains("process 4242 on elsewhere")
            && s.contains("every 30 s")
            && s.contains("stale after 90 s"),
        "{s}"
    );
    assert!(s.contains("running"), "{s}");
    // `lock wait` waits for the running holder, and says who holds it when the wait is over.
    let out = cchq(tmp.path(), &["l", "lock", "wait", "--timeout", "1"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("locked by alice@elsewhere"),
        "{}",
        text(&out.stderr)
    );

    let out = cchq(tmp.path(), &["l", "lock", "release", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("lock release --force"),
        "{}",
        text(&out.stderr)
    );
    assert!(lock.exists());
    let out = cchq(tmp.path(), &["l", "lock", "release", "--yes", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("released the lock of `l`"),
        "{}",
        text(&out.stdout)
    );
    assert!(!lock.exists());
    let out = cchq(tmp.path(), &["l", "lock", "wait", "--timeout", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("`l` is not locked"),
        "{}",
        text(&out.stdout)
    );
}

/// The lock holder (`by`) a local deploy records names the login from the OS (`id -un`), never
/// `$USER`, which anyone sets: with `USER` unset it is `login@machine`; with `USER=mallory` the
/// login still comes first, `$USER` only as extra information. The deploy (of a commit, so that
/// nothing is resolved before the lock) holds the lock while its checkout waits (a
/// `GIT_SSH_COMMAND` that sleeps, then fails); its record is read from the lock's host (this
/// machine) meanwhile, and `lock status` shows it.
#[test]
fn the_lock_holder_is_the_os_login_not_user() {
    let login = text(&Command::new("id").arg("-un").output().unwrap().stdout)
        .trim()
        .to_owned();
    let host = cchq_core::identity::hostname();
    for user in [None, Some("mallory")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("l");
        std::fs::create_dir(&dir).unwrap();
        let www = tmp.path().join("www");
        std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: ll\nenv_monitoring_id: ll\nusers: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("inventory.ini"),
            "[monolith]\nlocalhost ansible_connection=local\n[webworkers:children]\nmonolith\n[django_manage:children]\nmonolith\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cchq.yml"),
            format!(
                "www_root: {}\napp_user: {login}\ncode_repo: ssh://cchq-test.invalid/repo.git\ndefault_branch: master\n",
                www.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cchq"));
        cmd.arg("--environments")
            .arg(tmp.path())
            .args([
                "l",
                "deploy",
                "--yes",
                "--no-notify",
                "--commcare-rev",
                "0123456789abcdef0123456789abcdef01234567",
            ])
            .env_remove("CCHQ_ENVIRONMENTS")
            .env("XDG_STATE_HOME", tmp.path().join("state"))
            .env("GIT_SSH_COMMAND", "sleep 2; exit 1;")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match user {
            Some(u) => cmd.env("USER", u),
            None => cmd.env_remove("USER"),
        };
        let mut child = cmd.spawn().unwrap();
        let record = www.join("ll/.deploy-lock/holder.json");
        let start = std::time::Instant::now();
        let held = loop {
            if let Some(h) = std::fs::read_to_string(&record)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            {
                break h;
            }
            if start.elapsed() > std::time::Duration::from_secs(30)
                || child.try_wait().unwrap().is_some()
            {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the deploy never took the lock: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let status = cchq(tmp.path(), &["l", "lock", "status"]);
        let out = child.wait_with_output().unwrap();
        let by = held["by"].as_str().unwrap().to_owned();
        let expected = match user {
            None => format!("{login}@{host}"),
            Some(u) if u == login => format!("{login}@{host}"),
            Some(u) => format!("{login}@{host} (USER={u})"),
        };
        assert_eq!(
            by,
            expected,
            "USER={user:?}; deploy: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(by.starts_with(&format!("{login}@")), "{by}");
        assert!(
            text(&status.stdout).contains(&format!("locked by {by}")),
            "{}{}",
            text(&status.stdout),
            text(&status.stderr)
        );
    }
}

/// A temporary environment `e` with the given `inventory.ini` and `public.yml`.
fn temp_env(inventory: &str, public: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("e");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("public.yml"), public).unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: e\nenv_monitoring_id: e\nusers: []\n",
    )
    .unwrap();
    std::fs::write(dir.join("inventory.ini"), inventory).unwrap();
    (tmp, dir)
}

/// Issue 12: `webworkers[0` selected every web worker; a malformed pattern is an error (exit 4).
#[test]
fn a_malformed_pattern_is_an_error_not_a_wider_selection() {
    for pattern in ["webworkers[0", "webworkers[", "redis[1:2:3]"] {
        let out = cchq(&fixture_root(), &["development", "hosts", pattern]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{pattern}: {}",
            text(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{pattern}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "error: environment `development`: malformed host pattern `{pattern}`"
            )),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }
    let out = cchq(&fixture_root(), &["development", "lookup", "redis[1"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("malformed server spec `redis[1`"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 12: `ansible_host=-oProxyCommand=...` made `cchq ssh` run a local command.
#[test]
fn ssh_never_runs_an_inventory_value_as_an_option() {
    let tmp = tempfile::tempdir().unwrap();
    let pwned = tmp.path().join("pwned");
    let (_env, dir) = temp_env(
        &format!(
            "[web]\nweb1 ansible_host='-oProxyCommand=touch {}'\n",
            pwned.display()
        ),
        "{}\n",
    );
    let out = cchq(dir.parent().unwrap(), &["e", "ssh", "web1", "true"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("inventory.ini: host `web1`: `ansible_host` is `-oProxyCommand=touch"),
        "{err}"
    );
    assert!(
        err.contains("hint: ssh would read it as an option"),
        "{err}"
    );
    assert!(!pwned.exists());
    let (_env, dir) = temp_env("[web]\nweb1 ansible_port=99999\n", "{}\n");
    let out = cchq(dir.parent().unwrap(), &["e", "hosts"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`ansible_port` is `99999`, which is not a port"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 12: `hosts` with a cell wider than 65,535 characters panicked (exit 101).
#[test]
fn hosts_with_a_huge_cell_does_not_panic() {
    let long = "a".repeat(70_000);
    let (_env, dir) = temp_env(&format!("[web]\nweb1 ansible_host={long}\nweb2\n"), "{}\n");
    let out = cchq(dir.parent().unwrap(), &["e", "hosts", "all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&long));
}

/// Issue 12: names that would add lines to generated files fail validation (at load), exit 3.
#[test]
fn validate_refuses_names_that_would_inject_into_generated_files() {
    let (_env, dir) = temp_env("[pillowtop]\nh1\n", "localsettings:\n  OK: 1\n");
    std::fs::write(
        dir.join("app-processes.yml"),
        "pillows:\n  h1:\n    \"P\\n[program:evil]\": {}\n",
    )
    .unwrap();
    let out = cchq(
        dir.parent().unwrap(),
        &["e", "validate-environment-settings"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "app-processes.yml: `pillows`: pillow `P\\n[program:evil]` is not a valid name"
        ),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    std::fs::write(dir.join("app-processes.yml"), "{}\n").unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  \"A\\nimport os\": 1\n",
    )
    .unwrap();
    let out = cchq(
        dir.parent().unwrap(),
        &["e", "validate-environment-settings"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("`localsettings` key `A\\nimport os` is not a Python identifier"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 12: odd patterns and server specs through the real binary end in an error, never a
/// panic (exit 101).
#[test]
fn odd_patterns_and_specs_never_panic_the_binary() {
    let odd = [
        "webworkers[0",
        "[",
        "]",
        "é[",
        "web[0:9999999999999999999999]",
        "~(",
        "!",
        "&",
        "-",
        "--",
        "a\u{feff}",
        "中:é,!x",
        "\n",
    ];
    for arg in odd {
        for cmd in ["hosts", "lookup"] {
            let out = cchq(&fixture_root(), &["development", cmd, arg]);
            let err = text(&out.stderr);
            assert_ne!(out.status.code(), Some(101), "{cmd} {arg:?}: {err}");
            assert!(!err.contains("panicked"), "{cmd} {arg:?}: {err}");
        }
    }
}

/// A private `XDG_RUNTIME_DIR` (0700) for a run whose masters are kept.
fn private_runtime_dir() -> tempfile::TempDir {
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        runtime.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    runtime
}

/// The ssh masters cchq starts (kept after it ends, by default) do not inherit the vault
/// password's environment variables: `/proc/<pid>/environ` of every master of the run is read.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn ssh_masters_do_not_inherit_the_vault_password() {
    let Some(root) = fleet_root() else { return };
    let runtime = private_runtime_dir();
    let marker = format!("vault-secret-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_cchq"))
        .arg("--environments")
        .arg(&root)
        .args(["fleet", "run-shell-command", "all", "true"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("CCHQ_SSH_CONTROL_PERSIST", "60s")
        .env("ANSIBLE_VAULT_PASSWORD", &marker)
        .env(
            "ANSIBLE_VAULT_PASSWORD_FILE",
            format!("/nonexistent/{marker}"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let dir = runtime.path().display().to_string();
    let mut masters = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("ssh ") && cmdline.contains(&dir) && cmdline.contains(" -M ") {
            let environ = std::fs::read(p.path().join("environ")).unwrap_or_default();
            masters.push((cmdline, String::from_utf8_lossy(&environ).into_owned()));
        }
    }
    // The masters end with the test (an idle timeout would end them too).
    for (cmdline, _) in &masters {
        if let Some(socket) = cmdline.split(' ').find(|w| w.ends_with("/master")) {
            let _ = Command::new("ssh")
                .args(["-O", "exit", "-S", socket, "x"])
                .output();
        }
    }
    assert!(
        !masters.is_empty(),
        "no master of the run found under {dir}"
    );
    for (cmdline, environ) in &masters {
        assert!(
            !environ.contains(&marker),
            "`{cmdline}` inherited the vault password"
        );
        assert!(
            !environ.contains("ANSIBLE_VAULT_PASSWORD"),
            "`{cmdline}`: {environ}"
        );
    }
}

/// Masters are kept between runs by default, and runs that start at the same time from a cold
/// machine all connect: none removes the folder of a master another one is still starting.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn concurrent_runs_from_a_cold_machine_share_kept_masters() {
    let Some(root) = fleet_root() else { return };
    let runtime = private_runtime_dir();
    let children: Vec<std::process::Child> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_cchq"))
                .arg("--environments")
                .arg(&root)
                .args(["fleet", "run-shell-command", "all", "hostname"])
                .env("XDG_RUNTIME_DIR", runtime.path())
                .env_remove("CCHQ_SSH_CONTROL_PERSIST")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let kept = runtime.path().join("cchq-ssh");
    assert!(
        std::fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0) > 0,
        "masters were kept in {}",
        kept.display()
    );
    // The masters kept in the private directory end with it (an idle timeout would end them too).
    for host_dir in std::fs::read_dir(&kept).unwrap().flatten() {
        for conn in std::fs::read_dir(host_dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("ssh")
                .arg("-O")
                .arg("exit")
                .arg("-S")
                .arg(conn.path().join("master"))
                .arg("x")
                .output();
        }
    }
}
