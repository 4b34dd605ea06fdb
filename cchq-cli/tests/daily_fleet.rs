//! The daily commands of issue 16 on the fleet: `ping`, `tmux`, `copy-files` / `scp` (and its
//! plan form),
//! `update-local-known-hosts`, `kill-stale-celery-workers`, `list-postgresql-dbs --compare` and
//! `ansible-playbook`.
//!
//! The tests work on a copy of the fleet's environment whose `deploy_env` is `fleet-daily-test`,
//! so what they make on the hosts (releases, stale workers) lives under
//! `/home/cchq/www/fleet-daily-test/` and `/home/cchq/www/fleet-daily-other/`, away from the
//! other fleet tests, and their `known_hosts` changes never touch the fleet's. Every test removes
//! what it made (also when it fails) and kills only the processes it started, by pid. They run one
//! at a time, holding `/tmp/cchq-fleet-tests.lock`, with kept ssh masters off
//! (`CCHQ_SSH_CONTROL_PERSIST=no`: a kept master would still reach a cut host).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use cchq_core::transport::Transport as _;
use cchq_tests::{fleet, fleet_root};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

const DEPLOY_ENV: &str = "fleet-daily-test";
const WWW: &str = "/home/cchq/www/fleet-daily-test";
const OTHER_WWW: &str = "/home/cchq/www/fleet-daily-other";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn all(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A copy of the fleet's environment (`<tmp>/envs/fleet`) with `deploy_env: fleet-daily-test`.
struct Bed {
    tmp: tempfile::TempDir,
    root: PathBuf,
    _lock: cchq_tests::FleetLock,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Bed {
    fn new(fleet_root: &Path) -> Self {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lock = cchq_tests::FleetLock::take();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("envs");
        let dir = root.join("fleet");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fleet_root.join("fleet")).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        // The users files meta.yml names (`ap` reads them, as commcare-cloud does).
        if let Ok(users) = std::fs::read_dir(fleet_root.join("_users")) {
            std::fs::create_dir_all(root.join("_users")).unwrap();
            for entry in users {
                let p = entry.unwrap().path();
                std::fs::copy(&p, root.join("_users").join(p.file_name().unwrap())).unwrap();
            }
        }
        let meta = std::fs::read_to_string(dir.join("meta.yml")).unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            meta.replace(
                "deploy_env: fleet\n",
                &format!("deploy_env: {DEPLOY_ENV}\n"),
            ),
        )
        .unwrap();
        let bed = Self {
            tmp,
            root,
            _lock: lock,
            _serial: serial,
        };
        assert_eq!(bed.env().meta.deploy_env, DEPLOY_ENV);
        bed
    }

    fn env(&self) -> cchq_core::Environment {
        cchq_core::Environment::load(&self.root, "fleet").unwrap()
    }

    fn dir(&self) -> PathBuf {
        self.root.join("fleet")
    }

    /// Every host, in the order the pattern `all` selects them (Ansible's: as the inventory
    /// first names them), which is the order of cchq's results.
    fn hosts(&self) -> Vec<String> {
        self.env().inventory.select("all").unwrap().hosts
    }

    fn first_of(&self, group: &str) -> String {
        self.env().inventory.select(group).unwrap().hosts[0].clone()
    }

    fn cchq(&self, args: &[&str]) -> Output {
        self.cchq_env(args, &[])
    }

    fn cchq_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = cchq_tests::cchq_closing(env!("CARGO_BIN_EXE_cchq"), &self.root);
        c.args(args)
            .env_remove("CCHQ_ENVIRONMENTS")
            .env_remove("ANSIBLE_VAULT_PASSWORD")
            .env("CCHQ_PROGRESS", "0")
            .stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs `script` on `host` as `user`; its output (whatever the exit code).
    fn on(&self, host: &str, user: &str, script: &str) -> cchq_core::transport::Output {
        let env = self.env();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = env.transport(Some(&[host.to_owned()])).unwrap();
            let out = t
                .exec(
                    host,
                    &cchq_core::RemoteCommand::shell(script).become_user(user),
                )
                .await
                .unwrap();
            let _ = t.close().await;
            out
        })
    }

    /// [`Bed::on`] that must succeed; its stdout.
    fn on_ok(&self, host: &str, user: &str, script: &str) -> String {
        let out = self.on(host, user, script);
        assert!(out.success(), "{script} on {host} as {user}: {out:?}");
        out.stdout_str()
    }
}

/// Runs a cleanup script on hosts when dropped (as root), whatever happened.
struct Cleanup<'a> {
    bed: &'a Bed,
    hosts: Vec<String>,
    script: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for h in &self.hosts {
            let out = self.bed.on(h, "root", &self.script);
            if !out.success() {
                eprintln!("cleanup on {h} failed: {out:?}");
            }
        }
    }
}

/// Every host of a healthy fleet answers over ssh, sudo works, and supervisord answers where the
/// environment's programs run; a cut host fails as unreachable, named, with exit 5.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn ping_checks_ssh_sudo_and_supervisord_and_names_a_cut_host() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let hosts = bed.hosts();
    let out = bed.cchq(&["fleet", "ping", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(
        rows.iter()
            .map(|r| r["host"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        hosts,
        "one row per host, inventory order"
    );
    for r in &rows {
        assert_eq!(r["reachable"], true, "{r}");
        assert_eq!(r["sudo"], true, "{r}");
        assert_eq!(
            r["hostname"], r["host"],
            "each fleet host's hostname is its inventory name: {r}"
        );
    }
    let web = bed.first_of("webworkers");
    let row = |rows: &[Value], h: &str| rows.iter().find(|r| r["host"] == h).unwrap().clone();
    assert_eq!(
        row(&rows, &web)["supervisord"],
        "RUNNING",
        "supervisord is asked where programs run"
    );
    let db = bed.first_of("postgresql");
    let env = bed.env();
    if cchq_core::services::programs::programs_for_host(&env, &db).is_empty() {
        assert_eq!(
            row(&rows, &db)["supervisord"],
            Value::Null,
            "no program on {db}: supervisord is not asked"
        );
    }
    // The table.
    let out = bed.cchq(&["fleet", "ping"]);
    assert!(out.status.success(), "{}", all(&out));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("HOST") && table.contains("SUPERVISORD"),
        "{table}"
    );
    assert!(
        text(&out.stderr).contains(&format!("all {} hosts answer", hosts.len())),
        "{}",
        all(&out)
    );

    // A cut host: exit 5, the host named, the others still checked.
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            fleet("restore", &[&self.0]);
        }
    }
    let host = bed.first_of("formplayer");
    fleet("cut", &[&host]);
    let restore = Restore(host.clone());
    let out = bed.cchq(&["fleet", "ping", "--json"]);
    assert_eq!(out.status.code(), Some(5), "{}", all(&out));
    let rows = json_lines(&out);
    let cut = row(&rows, &host);
    assert_eq!(cut["reachable"], false, "{cut}");
    assert_eq!(cut["ok"], false);
    assert!(cut["problem"].as_str().unwrap().contains(&host), "{cut}");
    assert!(
        rows.iter()
            .filter(|r| r["host"] != host.as_str())
            .all(|r| r["ok"] == true),
        "{rows:?}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("error: 1 of") && err.contains(&host) && err.contains("hint:"),
        "{err}"
    );
    drop(restore);
    let out = bed.cchq(&["fleet", "ping", &host]);
    assert!(out.status.success(), "restored: {}", all(&out));
}

/// `tmux --detach` starts a named session of the app user running the command, then a second
/// command in a new window of the same session; the session is the app user's.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn tmux_detached_runs_commands_as_the_app_user_in_a_named_session() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let host = bed.first_of("django_manage");
    let session = "cchq-daily-test";
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: vec![host.clone()],
        script: format!(
            "sudo -u cchq tmux kill-session -t ={session} 2>/dev/null; rm -f /tmp/cchq-daily-tmux-1 /tmp/cchq-daily-tmux-2 /tmp/cchq-daily-tmux-3; true"
        ),
    };
    let out = bed.cchq(&[
        "fleet",
        "tmux",
        "-",
        "whoami > /tmp/cchq-daily-tmux-1",
        "--detach",
        "--session",
        session,
    ]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stderr).contains(&format!("tmux session `{session}` as `cchq` on {host}")),
        "{}",
        all(&out)
    );
    let out = bed.cchq(&[
        "fleet",
        "tmux",
        "-",
        "echo \"$HOME\" > /tmp/cchq-daily-tmux-2",
        "--detach",
        "--session",
        session,
    ]);
    assert!(out.status.success(), "{}", all(&out));
    // The commands ran (as cchq, in a login shell) and the windows stay open with a shell.
    let mut got = String::new();
    for _ in 0..50 {
        got = bed
            .on(
                &host,
                "cchq",
                "cat /tmp/cchq-daily-tmux-1 /tmp/cchq-daily-tmux-2 2>/dev/null",
            )
            .stdout_str();
        if got.lines().count() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(got, "cchq\n/home/cchq\n");
    let windows = bed.on_ok(
        &host,
        "cchq",
        &format!("tmux list-windows -t ={session} | wc -l"),
    );
    assert_eq!(windows.trim(), "2", "one window per command");
    // Attached, on a terminal (a pty from `script`): the command detaches its own client, so
    // `tmux` returns 0 once it ran in a third window.
    if Command::new("script").arg("--version").output().is_ok() {
        let line = format!(
            // The window's command runs as soon as the window exists, maybe before the client
            // attaches: it waits for one before detaching it.
            "{} --environments {} fleet tmux - 'echo attached > /tmp/cchq-daily-tmux-3; for i in $(seq 200); do tmux list-clients -t ={session} | grep -q . && break; sleep 0.1; done; tmux detach-client' --session {session}",
            env!("CARGO_BIN_EXE_cchq"),
            bed.root.display()
        );
        // Bounded: a client that never detaches fails the test instead of holding it.
        let out = Command::new("timeout")
            .args(["120", "script", "-qfec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .env("CCHQ_SSH_CONTROL_PERSIST", "no")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let screen = text(&out.stdout);
        assert!(out.status.success(), "{screen}");
        assert!(
            screen.contains(&format!("[detached (from session {session})]")),
            "{screen}"
        );
        assert_eq!(
            bed.on_ok(&host, "cchq", "cat /tmp/cchq-daily-tmux-3"),
            "attached\n"
        );
        let windows = bed.on_ok(
            &host,
            "cchq",
            &format!("tmux list-windows -t ={session} | wc -l"),
        );
        assert_eq!(windows.trim(), "3");
    } else {
        eprintln!("skipped the attached part: no `script` (util-linux)");
    }
    // A bad session name changes nothing.
    let out = bed.cchq(&["fleet", "tmux", "-", "--detach", "--session", "a.b"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
}

/// A file from this machine to every web worker, from a web worker to the celery hosts (through
/// this machine), and back; as the app user with a mode of its own.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn copy_files_between_the_controller_and_hosts_and_host_to_host() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let webs = bed.env().inventory.select("webworkers").unwrap().hosts;
    let celery = bed.env().inventory.select("celery").unwrap().hosts;
    let mut hosts = webs.clone();
    hosts.extend(celery.iter().cloned());
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: hosts.clone(),
        script: "rm -rf /tmp/cchq-daily-copy /home/cchq/cchq-daily-copy.conf; true".into(),
    };
    let local = bed.tmp.path().join("app.conf");
    std::fs::write(&local, "name = daily ✓\n").unwrap();
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = bed.cchq(&[
        "fleet",
        "copy-files",
        local.to_str().unwrap(),
        "webworkers:/tmp/cchq-daily-copy/",
        "--json",
    ]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(json_lines(&out).len(), webs.len(), "{}", all(&out));
    for h in &webs {
        assert_eq!(
            bed.on_ok(
                h,
                "root",
                "cat /tmp/cchq-daily-copy/app.conf; stat -c %a /tmp/cchq-daily-copy/app.conf"
            ),
            "name = daily ✓\n640\n",
            "{h}"
        );
    }
    // Host to hosts, through the controller.
    let src = format!("{}:/tmp/cchq-daily-copy/app.conf", webs[0]);
    let out = bed.cchq(&[
        "fleet",
        "scp",
        &src,
        "celery:/tmp/cchq-daily-copy/copied.conf",
    ]);
    assert!(out.status.success(), "{}", all(&out));
    for h in &celery {
        assert_eq!(
            bed.on_ok(h, "root", "cat /tmp/cchq-daily-copy/copied.conf"),
            "name = daily ✓\n",
            "{h}"
        );
    }
    // Back to this machine.
    let back = bed.tmp.path().join("back.conf");
    let src = format!("{}:/tmp/cchq-daily-copy/copied.conf", celery[0]);
    let out = bed.cchq(&["fleet", "copy-files", &src, back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "name = daily ✓\n");
    // As the app user, with a mode of its own: owned by cchq.
    let out = bed.cchq(&[
        "fleet",
        "copy-files",
        local.to_str().unwrap(),
        "-:/home/cchq/cchq-daily-copy.conf",
        "--become-user",
        "cchq",
        "--mode",
        "0600",
    ]);
    assert!(out.status.success(), "{}", all(&out));
    let dm = bed.first_of("django_manage");
    assert_eq!(
        bed.on_ok(
            &dm,
            "root",
            "stat -c '%U %a' /home/cchq/cchq-daily-copy.conf"
        ),
        "cchq 600\n"
    );
    // A missing source: exit 4, nothing written anywhere.
    let out = bed.cchq(&[
        "fleet",
        "copy-files",
        "-:/tmp/cchq-daily-copy/nope",
        "celery:/tmp/cchq-daily-copy/",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    for h in &celery {
        assert!(
            !bed.on(h, "root", "test -e /tmp/cchq-daily-copy/nope")
                .success(),
            "{h}"
        );
    }
}

/// commcare-cloud's plan form: `prepare` makes a key on the target and authorizes it in the
/// source user's authorized_keys, `copy` has the target pull the plan's files with rsync (the
/// excluded ones left out), `cleanup` leaves authorized_keys byte for byte as it was and removes
/// the key from the target.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn copy_files_with_a_plan_between_two_hosts() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let hosts = bed.hosts();
    let src = hosts[0].clone();
    let dst = hosts
        .iter()
        .find(|h| **h != src)
        .expect("two hosts")
        .clone();
    let marker = "cchq-copy-files:fleet-daily-test+";
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: vec![src.clone(), dst.clone()],
        script: format!(
            "rm -rf /tmp/cchq-daily-plan-src /tmp/cchq-daily-plan-dst /var/tmp/cchq-copy-files.fleet-daily-test+*; \
             f=/home/cchq/.ssh/authorized_keys; [ ! -f \"$f\" ] || sed -i '/{marker}/d' \"$f\"; true"
        ),
    };
    // The source's files (readable by cchq, the source user) and cchq's own authorized_keys.
    bed.on_ok(
        &src,
        "cchq",
        "set -e; d=/tmp/cchq-daily-plan-src/d; mkdir -p $d/sub; echo one > $d/a.txt; echo two > $d/sub/b.txt; \
         echo noise > $d/skip.log; echo other > /tmp/cchq-daily-plan-src/not-listed.txt; \
         mkdir -p -m 700 /home/cchq/.ssh; f=/home/cchq/.ssh/authorized_keys; \
         [ -f $f ] || printf '# operators keys stay\\n' > $f; chmod 600 $f",
    );
    let keys = "f=/home/cchq/.ssh/authorized_keys; stat -c '%U %a' $f; cat $f";
    let before = bed.on_ok(&src, "root", keys);
    let plan = bed.tmp.path().join("plan.yml");
    std::fs::write(
        &plan,
        format!(
            "copy_files:\n  - {dst}:\n      - source_host: {src}\n        source_user: cchq\n        source_dir: /tmp/cchq-daily-plan-src/\n        \
             target_dir: /tmp/cchq-daily-plan-dst/\n        files: [d/]\n        exclude: ['*.log']\n"
        ),
    )
    .unwrap();
    let p = plan.to_str().unwrap();

    let out = bed.cchq(&["fleet", "copy-files", p, "prepare", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "{}", all(&out));
    assert_eq!(rows[0]["source"], format!("cchq@{src}"));
    let during = bed.on_ok(&src, "root", keys);
    let added: Vec<&str> = during.lines().filter(|l| l.contains(marker)).collect();
    assert_eq!(added.len(), 1, "{during}");
    assert!(added[0].starts_with("restrict ssh-ed25519 "), "{during}");
    let dir = format!("/var/tmp/cchq-copy-files.fleet-daily-test+plan.{dst}.root");
    assert_eq!(
        bed.on_ok(
            &dst,
            "root",
            &format!("stat -c '%U %a' {dir} {dir}/id_ed25519")
        ),
        "root 700\nroot 600\n"
    );
    // prepare again: the same key, authorized once.
    let out = bed.cchq(&["fleet", "copy-files", p, "prepare"]);
    assert!(
        out.status.success() && all(&out).contains("already authorized"),
        "{}",
        all(&out)
    );
    assert_eq!(bed.on_ok(&src, "root", keys), during);

    // The dry run copies nothing.
    let out = bed.cchq(&["fleet", "copy-files", p, "copy", "--check", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(json_lines(&out)[0]["dry_run"], true, "{}", all(&out));
    assert!(
        !bed.on(&dst, "root", "test -e /tmp/cchq-daily-plan-dst")
            .success()
    );
    let out = bed.cchq(&["fleet", "copy-files", p, "copy", "--yes", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(
        rows.iter().filter(|r| r["dry_run"] == false).count(),
        1,
        "{}",
        all(&out)
    );
    assert_eq!(
        rows.last().unwrap()["files_transferred"],
        2,
        "{}",
        all(&out)
    );
    assert_eq!(
        bed.on_ok(
            &dst,
            "root",
            "cd /tmp/cchq-daily-plan-dst && find . -type f | sort && cat d/a.txt d/sub/b.txt"
        ),
        "./d/a.txt\n./d/sub/b.txt\none\ntwo\n"
    );

    let out = bed.cchq(&["fleet", "copy-files", p, "cleanup", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        json_lines(&out)[0]["detail"],
        "1 authorized_keys line(s) removed",
        "{}",
        all(&out)
    );
    assert_eq!(
        bed.on_ok(&src, "root", keys),
        before,
        "authorized_keys as it was"
    );
    assert!(
        !bed.on(&dst, "root", &format!("test -e {dir}")).success(),
        "the key is gone"
    );
    // Without the key, copy says to prepare first.
    let out = bed.cchq(&["fleet", "copy-files", p, "copy", "--yes"]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(all(&out).contains("prepare"), "{}", all(&out));
}

/// An empty known_hosts is filled with every host's key (and ssh then works with strict
/// checking); a second run changes nothing; a wrong key is refused (file untouched, exit 1, both
/// fingerprints named) until `--replace`.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn update_local_known_hosts_adds_keys_and_refuses_a_changed_one() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let kh = bed.dir().join("known_hosts");
    let original = std::fs::read_to_string(&kh).unwrap();
    let hosts = bed.hosts();
    std::fs::write(&kh, "").unwrap();
    let out = bed.cchq(&["fleet", "update-local-known-hosts", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert!(rows.iter().all(|r| r["status"] == "added"), "{rows:?}");
    for h in &hosts {
        assert!(
            rows.iter()
                .any(|r| r["host"] == h.as_str() && r["key_type"] == "ssh-ed25519"),
            "{h}: {rows:?}"
        );
    }
    // The same keys as the fleet's own file.
    let filled = std::fs::read_to_string(&kh).unwrap();
    let keys = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(keys(&filled), keys(&original));
    let out = bed.cchq(&["fleet", "run-shell-command", "all", "true"]);
    assert!(
        out.status.success(),
        "ssh works with the new file: {}",
        all(&out)
    );
    // Again: nothing to do.
    let out = bed.cchq(&["fleet", "update-local-known-hosts"]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(text(&out.stderr).contains("is up to date"), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), filled);
    // A changed key (the first host's line with the second host's key): refused.
    let lines: Vec<&str> = filled.lines().collect();
    let (first, second) = (lines[0], lines[1]);
    let (name, _) = first.split_once(' ').unwrap();
    let (_, second_key) = second.split_once(' ').unwrap();
    let wrong = filled.replace(first, &format!("{name} {second_key}"));
    std::fs::write(&kh, &wrong).unwrap();
    let out = bed.cchq(&["fleet", "update-local-known-hosts"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("host key(s) changed") && err.contains(name) && err.contains("--replace"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("CHANGED"), "{}", all(&out));
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        wrong,
        "nothing written"
    );
    let out = bed.cchq(&["fleet", "update-local-known-hosts", "--check", "--replace"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check: would change: {}",
        all(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        wrong,
        "--check writes nothing"
    );
    let out = bed.cchq(&["fleet", "update-local-known-hosts", "--replace", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        json_lines(&out)
            .iter()
            .any(|r| r["status"] == "replaced" && r["name"] == name),
        "{}",
        all(&out)
    );
    assert_eq!(
        keys(&std::fs::read_to_string(&kh).unwrap()),
        keys(&original)
    );
    let out = bed.cchq(&["fleet", "run-shell-command", "all", "true"]);
    assert!(out.status.success(), "{}", all(&out));
}

/// A celery process of this environment running from an old release is listed and killed; one
/// from the current release, one of another environment (same user, same host), a non-celery
/// process in the old release and the fleet's own workers are left alone.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn kill_stale_celery_workers_kills_only_this_environment_s_old_workers() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let host = bed.first_of("celery");
    let spawn = |dir: &str, name: &str| -> u32 {
        let out = bed.on_ok(
            &host,
            "cchq",
            &format!("cd {dir} && {{ nohup setsid bash -c 'exec -a {name} sleep 600' </dev/null >/dev/null 2>&1 & echo $!; }}"),
        );
        out.trim().parse().unwrap()
    };
    bed.on_ok(
        &host,
        "cchq",
        &format!("mkdir -p {WWW}/releases/old {WWW}/releases/new {OTHER_WWW}/releases/old && ln -sfn {WWW}/releases/new {WWW}/current"),
    );
    let stale = spawn(&format!("{WWW}/releases/old"), "celery-daily-stale");
    let others = [
        spawn(&format!("{WWW}/releases/new"), "celery-daily-current"),
        spawn(
            &format!("{OTHER_WWW}/releases/old"),
            "celery-daily-other-env",
        ),
        spawn(&format!("{WWW}/releases/old"), "daily-plain-sleeper"),
    ];
    let pids: Vec<String> = std::iter::once(stale)
        .chain(others)
        .map(|p| p.to_string())
        .collect();
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: vec![host.clone()],
        script: format!(
            "kill -9 {} 2>/dev/null; rm -rf {WWW} {OTHER_WWW}; true",
            pids.join(" ")
        ),
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = bed.cchq(&["fleet", "kill-stale-celery-workers", "--list", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(
        rows.len(),
        1,
        "only this environment's old worker: {rows:?}"
    );
    assert_eq!(
        (
            rows[0]["host"].as_str(),
            rows[0]["pid"].as_u64(),
            rows[0]["release"].as_str()
        ),
        (Some(host.as_str()), Some(u64::from(stale)), Some("old"))
    );
    let out = bed.cchq(&["fleet", "kill-stale-celery-workers", "--yes"]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        text(&out.stdout).contains(&format!("pid {stale}")),
        "shown: {}",
        all(&out)
    );
    let alive = |pid: u32| bed.on(&host, "cchq", &format!("kill -0 {pid}")).success();
    let mut gone = false;
    for _ in 0..20 {
        gone = !alive(stale);
        if gone {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "the stale worker is gone");
    for p in others {
        assert!(alive(p), "pid {p} was left alone");
    }
    let out = bed.cchq(&["fleet", "kill-stale-celery-workers", "--list"]);
    assert!(out.status.success(), "none left: {}", all(&out));
}

/// `--compare` asks PostgreSQL on its host: a database made for the test shows as additional,
/// and the expected ones are each present or missing; the exit code follows.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn list_postgresql_dbs_compares_with_the_server() {
    let Some(root) = fleet_root() else { return };
    let bed = Bed::new(&root);
    let host = bed.first_of("postgresql");
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: vec![host.clone()],
        script: "sudo -n -iu postgres dropdb --if-exists cchq_daily_extra; true".into(),
    };
    bed.on_ok(
        &host,
        "postgres",
        "dropdb --if-exists cchq_daily_extra && createdb cchq_daily_extra",
    );
    let out = bed.cchq(&["fleet", "list-postgresql-dbs", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let expected: Vec<String> = json_lines(&out)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected.contains(&"commcarehq".to_owned()), "{expected:?}");
    let out = bed.cchq(&["fleet", "list-postgresql-dbs", "--compare", "--json"]);
    let rows = json_lines(&out);
    let row = rows
        .iter()
        .find(|r| r["host"] == host.as_str())
        .unwrap_or_else(|| panic!("{}", all(&out)));
    assert_eq!(row["error"], Value::Null, "{row}");
    let strings = |k: &str| {
        row[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        strings("additional").contains(&"cchq_daily_extra".to_owned()),
        "{row}"
    );
    assert!(
        !strings("additional").contains(&"postgres".to_owned()),
        "{row}"
    );
    let mut seen = strings("present");
    seen.extend(strings("missing"));
    seen.sort();
    let mut want: Vec<String> = expected.clone();
    want.sort();
    assert_eq!(seen, want, "{row}");
    assert_eq!(
        out.status.success(),
        strings("missing").is_empty(),
        "{}",
        all(&out)
    );
    let out = bed.cchq(&["fleet", "list-postgresql-dbs", "--compare"]);
    assert!(
        text(&out.stdout).contains("Additional databases:")
            && text(&out.stdout).contains("- cchq_daily_extra"),
        "{}",
        all(&out)
    );
}

/// A playbook over ssh on the fleet with the environment's inventory, user, key and known_hosts:
/// each web worker writes a file as the app user (become), with a generated variable in it.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn ansible_playbook_runs_on_the_fleet() {
    let Some(root) = fleet_root() else { return };
    let Some(bin) = cchq_tests::ansible_bin() else {
        eprintln!(
            "SKIPPED: ansible-playbook is not installed (tests/run-all installs ansible-core into /tmp/cchq-ansible-venv)"
        );
        return;
    };
    let bed = Bed::new(&root);
    let webs = bed.env().inventory.select("webworkers").unwrap().hosts;
    let _cleanup = Cleanup {
        bed: &bed,
        hosts: webs.clone(),
        script: "rm -f /home/cchq/cchq-daily-ansible.txt; true".into(),
    };
    let pb = bed.tmp.path().join("play.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  become: true\n  become_user: cchq\n  tasks:\n    - copy:\n        dest: /home/cchq/cchq-daily-ansible.txt\n        content: \"{{ deploy_env }} {{ inventory_hostname }}\\n\"\n",
    )
    .unwrap();
    let path = cchq_tests::path_with(&bin);
    let tmpdir = bed.tmp.path().to_str().unwrap().to_owned();
    let envs = [
        ("PATH", path.as_str()),
        ("ANSIBLE_LOCAL_TEMP", tmpdir.as_str()),
    ];
    let out = bed.cchq_env(
        &[
            "fleet",
            "ap",
            "--limit",
            "webworkers",
            "--yes",
            pb.to_str().unwrap(),
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", all(&out));
    for h in &webs {
        assert_eq!(
            bed.on_ok(h, "root", "stat -c %U /home/cchq/cchq-daily-ansible.txt; cat /home/cchq/cchq-daily-ansible.txt"),
            format!("cchq\n{DEPLOY_ENV} {h}\n")
        );
    }
    let others: Vec<String> = bed
        .hosts()
        .into_iter()
        .filter(|h| !webs.contains(h))
        .collect();
    for h in &others {
        assert!(
            !bed.on(h, "root", "test -e /home/cchq/cchq-daily-ansible.txt")
                .success(),
            "--limit: nothing on {h}"
        );
    }
}
