//! `update-supervisor-confs` end to end without a fleet: the refusals on fixtures, and the whole
//! plan/confirm/apply cycle on this machine (`ansible_connection=local`) when cchq runs as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cchq_tests::fixture_root;

fn cchq(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cchq"))
        .arg("--environments")
        .arg(root)
        .args(args)
        .env_remove("CCHQ_ENVIRONMENTS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the `test` fixture in a temporary root, with `app-processes.yml` replaced.
fn test_fixture_with(app_processes: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("envs");
    let dir = root.join("test");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixture_root().join("test")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    std::fs::write(dir.join("app-processes.yml"), app_processes).unwrap();
    (tmp, root)
}

/// Issue 13: a key listing the celery group and a host the inventory does not have. Before,
/// `update-supervisor-confs` planned no celery programs for the celery host and removed its
/// files, exit 0. Now validation, `update-supervisor-confs` (with or without `--check`) and every
/// command that writes programs, settings or releases all stop, before connecting to anything.
#[test]
fn nothing_runs_on_an_environment_that_does_not_validate() {
    let (_tmp, root) = test_fixture_with(
        "celery_processes:\n  celery,celery_b1:\n    beat: {}\n    flower: {}\n    background_queue,celery:\n      concurrency: 2\n\
         pillows:\n  pillowtop:\n    AppDbChangeFeedPillow: {}\n",
    );
    let out = cchq(&root, &["test", "validate-environment-settings"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "`celery_processes.celery,celery_b1`: no host or group `celery_b1` in the inventory"
        ),
        "{}",
        text(&out.stderr)
    );
    for args in [
        &["test", "update-supervisor-confs"][..],
        &["test", "update-supervisor-confs", "--check"],
        &["test", "update-supervisor-confs", "--yes", "--empty-hosts"],
        &["test", "deploy", "--yes"],
        &["test", "update-config", "--yes"],
        &["test", "update-config", "--check"],
        &["test", "rollback", "--yes"],
        &["test", "clean-releases", "--yes"],
        &["test", "preindex-views", "--yes"],
    ] {
        let out = cchq(&root, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("error: environment `test` does not validate")
                && err.contains("celery_b1"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("hint: `cchq test validate-environment-settings` lists every problem"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("Connection") && text(&out.stdout).is_empty(),
            "{args:?}: {err}"
        );
    }
    // `service ... help` only lists: it does, after saying that the list misses what is wrong.
    let out = cchq(&root, &["test", "service", "celery", "help"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("no host or group `celery_b1`")
            && err.contains("validate-environment-settings"),
        "{err}"
    );
}

#[test]
fn empty_hosts_needs_yes() {
    let out = cchq(
        &fixture_root(),
        &["test", "update-supervisor-confs", "--empty-hosts"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = cchq(
        &fixture_root(),
        &["test", "update-supervisor-confs", "--check", "--yes"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// An environment whose one host is this machine, its supervisor directory and www root in
/// `tmp`, supervisord's socket nowhere (the reread after a change fails, saying so).
fn local_env(tmp: &Path, inventory: &str, app_processes: &str) -> PathBuf {
    local_env_with(tmp, inventory, app_processes, "")
}

/// [`local_env`] with `more` at the end of its `cchq.yml`.
fn local_env_with(tmp: &Path, inventory: &str, app_processes: &str, more: &str) -> PathBuf {
    let root = tmp.join("envs");
    let dir = root.join("loc");
    std::fs::create_dir_all(&dir).unwrap();
    let user = text(&Command::new("id").arg("-un").output().unwrap().stdout)
        .trim()
        .to_owned();
    let files = [
        ("inventory.ini", inventory.to_owned()),
        (
            "meta.yml",
            "deploy_env: loc\nenv_monitoring_id: loc\nusers: []\n".to_owned(),
        ),
        (
            "public.yml",
            "localsettings:\n  HQ_INSTANCE: loc\n".to_owned(),
        ),
        ("app-processes.yml", app_processes.to_owned()),
        (
            "cchq.yml",
            format!(
                "www_root: {}\napp_user: {user}\nsupervisor_conf_dir: {}\nsupervisor_socket: {}\n{more}",
                tmp.join("www").display(),
                tmp.join("conf.d").display(),
                tmp.join("no.sock").display()
            ),
        ),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    root
}

fn confs(tmp: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tmp.join("conf.d"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The plan, the question, the apply and the empty-host guard, with the real scripts on this
/// machine. The sync and probe run as root (`become`), so this needs cchq to run as root.
#[test]
fn check_confirm_apply_and_the_empty_host_guard_on_a_local_host() {
    if text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root (the program files are written as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inventory = "[celery_a0]\nthis ansible_connection=local\n[celery:children]\ncelery_a0\n[webworkers]\nthis\n";
    let ap = "celery_processes:\n  celery_a0:\n    beat: {}\n    q1,q2:\n      num_workers: 2\n  None:\n    q3: {}\n";
    let root = local_env(tmp.path(), inventory, ap);
    let conf_d = tmp.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(conf_d.join("loc_supervisor_pillowtop.conf"), "stale").unwrap();
    std::fs::write(
        conf_d.join("other_supervisor_pillowtop.conf"),
        "another environment's",
    )
    .unwrap();

    // The celery workers' bash runner, the app user's, in `<www_home>/services`.
    let runner = tmp
        .path()
        .join("www/loc/services/loc_celery_bash_runner.sh");
    let runner_line = |mark: &str| format!("    {mark} {}", runner.display());

    // --check: the plan, exit 1, nothing written.
    let out = cchq(&root, &["loc", "update-supervisor-confs", "--check"]);
    let so = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{so}{}", text(&out.stderr));
    for line in [
        "==> this",
        "    + loc_supervisor_django.conf",
        "    + loc_supervisor_celery.conf",
        "    + loc_supervisor_celerybeat.conf",
        "    - loc_supervisor_pillowtop.conf",
        &runner_line("+"),
    ] {
        assert!(so.lines().any(|l| l == line), "{line:?} in {so}");
    }
    assert!(!runner.exists());
    assert_eq!(
        confs(tmp.path()),
        [
            "loc_supervisor_pillowtop.conf",
            "other_supervisor_pillowtop.conf"
        ]
    );

    // A removal asks; without a terminal and without --yes that is an error, nothing changed.
    let out = cchq(&root, &["loc", "update-supervisor-confs"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: Remove 1 program file(s) on 1 host(s)")
            && err.contains("hint: pass `--yes`"),
        "{err}"
    );
    assert_eq!(
        confs(tmp.path()),
        [
            "loc_supervisor_pillowtop.conf",
            "other_supervisor_pillowtop.conf"
        ]
    );

    // --yes: written and removed; supervisord is not there to reread (exit 1, said).
    let out = cchq(&root, &["loc", "update-supervisor-confs", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not answer"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        confs(tmp.path()),
        [
            "loc_supervisor_celery.conf",
            "loc_supervisor_celerybeat.conf",
            "loc_supervisor_django.conf",
            "other_supervisor_pillowtop.conf"
        ]
    );
    let celery = std::fs::read_to_string(conf_d.join("loc_supervisor_celery.conf")).unwrap();
    for p in [
        "[program:commcare-hq-loc-celery_q1,q2_0]",
        "[program:commcare-hq-loc-celery_q1,q2_1]",
    ] {
        assert!(celery.contains(p), "{p} in {celery}");
    }
    assert!(
        celery.contains(&format!("command=/bin/bash {} --events", runner.display())),
        "{celery}"
    );
    let script = std::fs::read_to_string(&runner).unwrap();
    assert!(
        script.starts_with("#!/bin/bash") && script.contains("shutdown_celery_worker_by_hostname"),
        "{script}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&runner).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o644);
    let out = cchq(&root, &["loc", "update-supervisor-confs", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A celery command of the environment's own (cchq.yml `programs.celery`) does not use the
    // runner: the plan removes it, and the program files stay.
    let own = "programs:\n  celery: \"{{python}} manage.py celery --queues {{queues}} --hostname {{celery_hostname}}\"\n";
    let root_own = local_env_with(tmp.path(), inventory, ap, own);
    let out = cchq(&root_own, &["loc", "update-supervisor-confs", "--check"]);
    let so = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{so}{}", text(&out.stderr));
    assert!(so.lines().any(|l| l == runner_line("-")), "{so}");
    assert!(
        so.lines().any(|l| l == "    ~ loc_supervisor_celery.conf"),
        "{so}"
    );
    let out = cchq(&root_own, &["loc", "update-supervisor-confs", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reread fails: {}",
        text(&out.stderr)
    );
    assert!(!runner.exists(), "removed");
    assert_eq!(confs(tmp.path()).len(), 4, "the program files stay");
    // Back to the profile's command: the runner is written again.
    let root = local_env(tmp.path(), inventory, ap);
    let out = cchq(&root, &["loc", "update-supervisor-confs", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "reread fails: {}",
        text(&out.stderr)
    );
    assert!(runner.exists());

    // The host leaves the celery and web groups but stays an app host: its plan is empty.
    let root = local_env(
        tmp.path(),
        "[django_manage]\nthis ansible_connection=local\n",
        "{}\n",
    );
    let out = cchq(&root, &["loc", "update-supervisor-confs", "--yes"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("error: refusing to remove every supervisor program file of 1 host(s)")
            && err.contains("`this`"),
        "{err}"
    );
    assert!(
        err.contains("hint:") && err.contains("--empty-hosts --yes"),
        "{err}"
    );
    assert_eq!(confs(tmp.path()).len(), 4, "nothing removed");
    let out = cchq(
        &root,
        &["loc", "update-supervisor-confs", "--yes", "--empty-hosts"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "reread fails: {}",
        text(&out.stderr)
    );
    assert_eq!(confs(tmp.path()), ["other_supervisor_pillowtop.conf"]);
    assert!(!runner.exists(), "the runner goes with the celery workers");
}
