//! Issue 14 on the fleet test bed: a plain Django project (`django-admin startproject`, its
//! requirements from the package index, no change to it) deployed with the `django` profile to
//! three real hosts over SSH: served by gunicorn under each host's supervisord, redeployed (the
//! virtualenv shared by content, static files hard-linked when nothing changed) and rolled back.
//!
//! Needs the fleet (`tests/fleet/up 5`, `CCHQ_FLEET_ROOT`); skips without one unless
//! `CCHQ_REQUIRE_FLEET=1`. Run with `-- --include-ignored`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Instant;

use cchq_core::transport::Transport as _;

const ENV: &str = "djfleet";
const PORT: u16 = 9147;
const HOSTS: [&str; 3] = ["fleet2", "fleet3", "fleet4"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn all(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// The environment: three web workers of the fleet (the first also `django_manage`), the
/// fleet's SSH settings and known hosts, `profile: django`. gunicorn binds to each host's own
/// address (on the test bed every host shares one network stack).
fn write_env(fleet_root: &Path, root: &Path, repo: &Path) {
    let dir = root.join(ENV);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fleet_root.join("fleet/known_hosts"),
        dir.join("known_hosts"),
    )
    .unwrap();
    let fleet_inv = std::fs::read_to_string(fleet_root.join("fleet/inventory.ini")).unwrap();
    let mut inv = String::new();
    for h in HOSTS {
        let line = fleet_inv
            .lines()
            .find(|l| l.starts_with(&format!("{h} ")))
            .unwrap_or_else(|| panic!("{h} in the fleet"));
        inv.push_str(&format!("[{h}]\n{line}\n"));
    }
    inv.push_str(
        "[webworkers:children]\nfleet2\nfleet3\nfleet4\n[django_manage:children]\nfleet2\n",
    );
    let vars = &fleet_inv[fleet_inv
        .find("[all:vars]")
        .expect("the fleet's [all:vars]")..];
    inv.push_str(vars);
    let files = [
        ("inventory.ini", inv),
        ("meta.yml", format!("deploy_env: {ENV}\nenv_monitoring_id: {ENV}\nusers: []\n")),
        (
            "public.yml",
            "commcare_cloud_remote_user: ansible\ncommcare_cloud_strict_host_key_checking: yes\ncommcare_cloud_use_vault: no\n\
             localsettings:\n  TIME_ZONE: 'Africa/Nairobi'\n"
                .to_owned(),
        ),
        ("vault.yml", "{}\n".to_owned()),
        ("fab-settings.yml", format!("code_repo: {}\ndefault_branch: main\nemail_enabled: False\n", repo.display())),
        ("app-processes.yml", format!("django_port: {PORT}\ngunicorn_workers_static_factor: 1\ncelery_processes: {{}}\npillows: {{}}\n")),
        (
            "cchq.yml",
            "profile: django\nprograms:\n  django: \"{{python_env}}/bin/gunicorn cchq_wsgi:application --workers 1 --bind {{host_address}}:{{django_port}}\"\n"
                .to_owned(),
        ),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

struct Bed {
    root: PathBuf,
    repo: PathBuf,
    _lock: cchq_tests::FleetLock,
}

impl Bed {
    fn cchq(&self, args: &[&str]) -> Output {
        cchq_tests::cchq_closing(env!("CARGO_BIN_EXE_cchq"), &self.root)
            .arg(ENV)
            .args(args)
            .env_remove("CCHQ_ENVIRONMENTS")
            .env("CCHQ_PROGRESS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `script` on every host as `user`: (host, stdout) for each, each must succeed.
    fn on_all(&self, user: &str, script: &str) -> Vec<(String, String)> {
        let env = cchq_core::Environment::load(&self.root, ENV).unwrap();
        let hosts: Vec<String> = HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = env.transport(Some(&hosts)).unwrap();
            let mut outs = Vec::new();
            for h in &hosts {
                let out = t
                    .exec(
                        h,
                        &cchq_core::RemoteCommand::shell(script).become_user(user),
                    )
                    .await
                    .unwrap();
                assert!(out.success(), "{script} on {h}: {out:?}");
                outs.push((h.clone(), out.stdout_str().trim().to_owned()));
            }
            let _ = t.close().await;
            outs
        })
    }

    /// Where `current` points on every host.
    fn current(&self) -> Vec<String> {
        self.on_all("cchq", &format!("readlink -f /home/cchq/www/{ENV}/current"))
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // This environment's programs and files only: the fleet's own are left alone.
        let script = format!(
            "rm -f /etc/supervisor/conf.d/{ENV}_supervisor_*.conf; supervisorctl update >/dev/null 2>&1; rm -rf /home/cchq/www/{ENV}; true"
        );
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.on_all("root", &script)
        }))
        .is_err()
        {
            eprintln!("cleanup of `{ENV}` on the fleet failed");
        }
        let _ = std::fs::remove_dir_all(&self.repo);
    }
}

/// The status and body of `GET http://ADDRESS:PORT/PATH` (waiting for an answer).
fn get(address: &str, path: &str) -> (u16, String) {
    cchq_tests::http_get(&format!("http://{address}:{PORT}{path}"))
}

fn served_everywhere() {
    for (i, h) in HOSTS.iter().enumerate() {
        let address = format!("127.0.0.{}", 12 + i);
        let (code, body) = get(&address, "/admin/login/");
        assert_eq!(
            code, 200,
            "{h} ({address}) serves the admin login page: {body}"
        );
    }
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up 5); run with --include-ignored"]
fn a_plain_django_project_deploys_serves_redeploys_and_rolls_back_on_the_fleet() {
    let Some(fleet_root) = cchq_tests::fleet_root() else {
        return;
    };
    let lock = cchq_tests::FleetLock::take();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("mysite");
    // The repository where the hosts can read it: the fleet's state directory is at the same
    // path on every host (each host's /tmp is its own).
    let state = fleet_root.parent().expect("the fleet's state directory");
    let repo = state.join(format!("mysite-{}.git", std::process::id()));
    cchq_tests::django_project(&work, &repo);
    let root = tmp.path().join("envs");
    write_env(&fleet_root, &root, &repo);
    let bed = Bed {
        root,
        repo: repo.clone(),
        _lock: lock,
    };

    let o = bed.cchq(&["deploy", "--plan"]);
    assert!(o.status.success(), "{}", all(&o));
    let plan = text(&o.stdout);
    assert!(
        plan.contains("collectstatic")
            && plan.contains("migrate")
            && !plan.contains("record_deploy_success"),
        "{plan}"
    );

    let started = Instant::now();
    let o = bed.cchq(&["deploy", "--yes", "--no-notify"]);
    assert!(o.status.success(), "first deploy: {}", all(&o));
    let first_took = started.elapsed();
    served_everywhere();
    let first = bed.current();
    assert!(
        first.iter().all(|c| c == &first[0]),
        "one release on every host: {first:?}"
    );
    // collectstatic on every host; migrate once, on django_manage (the SQLite database in its
    // shared directory); the environment's settings over the project's.
    bed.on_all("cchq", &format!("test -d {}/staticfiles/admin", first[0]));
    let dbs = bed.on_all(
        "cchq",
        &format!("test -f /home/cchq/www/{ENV}/shared/db.sqlite3 && echo db || echo none"),
    );
    assert_eq!(
        dbs.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>(),
        ["db", "none", "none"],
        "{dbs:?}"
    );
    let o = bed.cchq(&[
        "django-manage",
        "shell",
        "-c",
        "from django.conf import settings; print(settings.TIME_ZONE)",
    ]);
    assert!(text(&o.stdout).contains("Africa/Nairobi"), "{}", all(&o));

    // A change, deployed: a new release everywhere.
    std::fs::write(work.join("mysite/extra.py"), "X = 1\n").unwrap();
    cchq_tests::commit_and_push(&work, &repo, "a change");
    let started = Instant::now();
    let o = bed.cchq(&["deploy", "--yes", "--no-notify"]);
    assert!(o.status.success(), "second deploy: {}", all(&o));
    assert!(
        text(&o.stderr).contains(" a change"),
        "the deploy diff names the commit going out: {}",
        all(&o)
    );
    eprintln!(
        "first deploy {:.1} s, second (a change) {:.1} s",
        first_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let second = bed.current();
    assert!(
        second.iter().all(|c| c == &second[0]) && second[0] != first[0],
        "{first:?} -> {second:?}"
    );
    bed.on_all("cchq", &format!("test -f {}/mysite/extra.py", second[0]));
    // The dependencies did not change: both releases link one shared virtualenv.
    let venv = |r: &str| bed.on_all("cchq", &format!("readlink {r}/.venv"));
    assert_eq!(venv(&first[0]), venv(&second[0]));
    assert!(
        venv(&second[0])
            .iter()
            .all(|(_, v)| v.starts_with(&format!("/home/cchq/www/{ENV}/shared/venvs/"))),
        "{:?}",
        venv(&second[0])
    );
    served_everywhere();

    // The same commit again: collectstatic's inputs (checkout, settings, virtualenv) are the
    // same, so its files are hard-linked from the previous release instead of collected.
    let started = Instant::now();
    let o = bed.cchq(&["deploy", "--yes", "--no-notify"]);
    assert!(o.status.success(), "third deploy: {}", all(&o));
    eprintln!(
        "third deploy (nothing changed) {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let third = bed.current();
    assert!(third[0] != second[0]);
    let inode = |r: &str| {
        bed.on_all(
            "cchq",
            &format!("stat -c %i {r}/staticfiles/admin/css/base.css"),
        )
    };
    assert_eq!(inode(&third[0]), inode(&second[0]), "collectstatic reused");
    served_everywhere();

    // Rollback: back to the second release on every host, serving.
    let o = bed.cchq(&["rollback", "--yes", "--no-notify"]);
    assert!(o.status.success(), "rollback: {}", all(&o));
    assert_eq!(bed.current(), second);
    served_everywhere();
    assert_eq!(
        cchq_tests::git_in(&work, &["status", "--porcelain"]),
        "",
        "the project was not changed"
    );
}
