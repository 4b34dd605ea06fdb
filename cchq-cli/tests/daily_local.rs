//! The daily commands (issue 16) end to end without a fleet: their `--help`, on the fixture
//! environments, and on an environment whose one host is this machine
//! (`ansible_connection=local`). `ansible-playbook` runs for real when Ansible is installed
//! (on PATH, or in `$CCHQ_ANSIBLE_VENV` / `/tmp/cchq-ansible-venv`, which `tests/run-all`
//! installs); that test skips, saying so, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cchq_tests::fixture_root;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn all(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn cchq(root: &Path, args: &[&str]) -> Output {
    cchq_env(root, args, &[])
}

fn cchq_env(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
    c.arg("--environments")
        .arg(root)
        .args(args)
        .env_remove("CCHQ_ENVIRONMENTS")
        .env_remove("ANSIBLE_VAULT_PASSWORD")
        .env_remove("CCHQ_ANSIBLE_DIR")
        .env("CCHQ_PROGRESS", "0")
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn me() -> String {
    text(&Command::new("id").arg("-un").output().unwrap().stdout)
        .trim()
        .to_owned()
}

/// An environment `local` whose one host `this` is this machine, in the `celery` group, with its
/// www root in a temporary directory and the current user as the app user.
fn local_env(extra_files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("envs");
    let dir = root.join("local");
    std::fs::create_dir_all(&dir).unwrap();
    let www_root = tmp.path().join("www");
    let files = [
        (
            "inventory.ini",
            "[celery]\nthis ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
                .to_owned(),
        ),
        (
            "meta.yml",
            "deploy_env: loc\nenv_monitoring_id: loc\nusers: []\n".to_owned(),
        ),
        ("public.yml", "public_value: from-public\n".to_owned()),
        ("proxy.yml", "SITE_HOST: local.example\n".to_owned()),
        ("app-processes.yml", "{}\n".to_owned()),
        (
            "cchq.yml",
            format!("www_root: {}\napp_user: {}\n", www_root.display(), me()),
        ),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    for (name, body) in extra_files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    (tmp, root)
}

#[test]
fn every_daily_command_has_help_with_examples() {
    for cmd in [
        "ping",
        "tmux",
        "copy-files",
        "scp",
        "update-local-known-hosts",
        "kill-stale-celery-workers",
        "list-postgresql-dbs",
        "ansible-playbook",
        "ap",
    ] {
        let out = cchq(&fixture_root(), &["test", cmd, "--help"]);
        assert!(out.status.success(), "{cmd}: {}", all(&out));
        assert!(
            text(&out.stdout).contains("Examples:"),
            "{cmd} --help has no examples:\n{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn list_postgresql_dbs_reads_postgresql_yml() {
    let out = cchq(&fixture_root(), &["test", "list-postgresql-dbs"]);
    assert!(out.status.success(), "{}", all(&out));
    let t = text(&out.stdout);
    assert!(
        t.lines().any(|l| l.starts_with("postgres.fake")
            && l.contains("commcarehq_ucr")
            && l.contains("ucr")),
        "{t}"
    );
    let out = cchq(&fixture_root(), &["test", "list-postgresql-dbs", "--json"]);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["commcarehq", "commcarehq_ucr", "formplayer"]);
    // Without postgresql.yml: an error that names the file, exit 4.
    let (_tmp, root) = local_env(&[]);
    let out = cchq(&root, &["local", "list-postgresql-dbs"]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("postgresql.yml") && text(&out.stderr).contains("hint:"),
        "{}",
        all(&out)
    );
}

#[test]
fn ansible_playbook_dry_run_shows_the_environment_s_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("site.yml");
    std::fs::write(&pb, "- hosts: all\n  tasks: []\n").unwrap();
    let out = cchq(
        &fixture_root(),
        &[
            "test",
            "ap",
            "--limit",
            "webworkers",
            "--dry-run",
            pb.to_str().unwrap(),
            "--tags",
            "users",
        ],
    );
    assert!(out.status.success(), "{}", all(&out));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "the check, then the apply: {lines:?}");
    assert!(
        lines[0].contains(" --check ") && !lines[1].contains(" --check "),
        "{lines:?}"
    );
    for l in &lines {
        assert!(l.starts_with("ansible-playbook "), "{l}");
        assert!(
            l.contains("test/inventory.ini")
                && l.contains("test/public.yml")
                && l.contains("test/vault.yml"),
            "{l}"
        );
        assert!(
            l.contains("--limit webworkers")
                && l.contains("-u admin")
                && l.contains("--ssh-common-args=")
                && l.ends_with("--tags users"),
            "{l}"
        );
    }
    assert!(
        text(&out.stderr).contains("\"deploy_env\": \"test\""),
        "{}",
        text(&out.stderr)
    );
    // A missing playbook: named, with where it was looked for.
    let out = cchq(
        &fixture_root(),
        &[
            "test",
            "ap",
            "--ansible-dir",
            "/nonexistent/ansible",
            "--dry-run",
            "deploy_stack.yml",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("/nonexistent/ansible/deploy_stack.yml"),
        "{}",
        all(&out)
    );
}

/// `--use-factory-auth` (commcare-cloud's bootstrap login): without `commcare_cloud_pem` it is
/// refused before anything runs, naming the file; with one, ansible-playbook gets `-i PEM` first
/// among its ssh arguments.
#[test]
fn use_factory_auth_needs_the_pem_and_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("site.yml");
    std::fs::write(&pb, "- hosts: all\n").unwrap();
    for args in [
        &[
            "test",
            "run-shell-command",
            "all",
            "uptime",
            "--use-factory-auth",
        ][..],
        &[
            "test",
            "ap",
            "--use-factory-auth",
            "--dry-run",
            pb.to_str().unwrap(),
        ],
    ] {
        let out = cchq(&fixture_root(), args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", all(&out));
        assert!(
            text(&out.stderr).contains("needs `commcare_cloud_pem` in")
                && text(&out.stderr).contains("test/public.yml"),
            "{}",
            all(&out)
        );
        assert!(text(&out.stdout).is_empty(), "{}", all(&out));
    }
    let root = dir.path().join("envs");
    let o = Command::new("cp")
        .arg("-r")
        .arg(fixture_root())
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success());
    let pem = dir.path().join("factory.pem");
    std::fs::write(&pem, "key").unwrap();
    let public = root.join("test/public.yml");
    let text_before = std::fs::read_to_string(&public).unwrap();
    std::fs::write(
        &public,
        format!("{text_before}\ncommcare_cloud_pem: {}\n", pem.display()),
    )
    .unwrap();
    let out = cchq(
        &root,
        &[
            "test",
            "ap",
            "--use-factory-auth",
            "--skip-check",
            "--dry-run",
            pb.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", all(&out));
    let line = text(&out.stdout);
    assert!(
        line.contains(&format!("--ssh-common-args=-i {}", pem.display()))
            && line.contains("-u admin"),
        "{line}"
    );
}

#[test]
fn ansible_playbook_without_ansible_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("site.yml");
    std::fs::write(&pb, "- hosts: all\n").unwrap();
    let out = cchq_env(
        &fixture_root(),
        &["test", "ap", "--skip-check", "--yes", pb.to_str().unwrap()],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: `ansible-playbook` is not installed")
            && err.contains("hint:")
            && err.contains("pip install ansible-core"),
        "{err}"
    );
}

/// A real Ansible run on this machine: the playbook sees public.yml, the encrypted vault (its
/// password through cchq's pipe) and the generated variables; the password is on no command line.
#[test]
fn ansible_playbook_runs_with_the_environment_s_vault_and_variables() {
    let Some(bin) = cchq_tests::ansible_bin() else {
        eprintln!("SKIPPED: ansible-playbook is not installed (pip install ansible-core)");
        return;
    };
    let password = "ap-test-password-SENTINEL";
    let vault =
        cchq_core::vault::encrypt(b"secret_value: from-the-vault\n", password.as_bytes(), None)
            .unwrap();
    let (tmp, root) = local_env(&[("vault.yml", &vault)]);
    let outfile = tmp.path().join("out.txt");
    let pb = tmp.path().join("play.yml");
    std::fs::write(
        &pb,
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - copy:\n        dest: {}\n        content: \"{{{{ public_value }}}} {{{{ secret_value }}}} {{{{ deploy_env }}}} {{{{ known_hosts_file | basename }}}}\\n\"\n",
            outfile.display()
        ),
    )
    .unwrap();
    let path = cchq_tests::path_with(&bin);
    let envs = [
        ("PATH", path.as_str()),
        ("ANSIBLE_VAULT_PASSWORD", password),
        ("ANSIBLE_LOCAL_TEMP", tmp.path().to_str().unwrap()),
    ];
    // The check first (--check: nothing written), then the apply.
    let out = cchq_env(
        &root,
        &["local", "ap", pb.to_str().unwrap(), "--check"],
        &envs,
    );
    assert!(out.status.success(), "{}", all(&out));
    assert!(!outfile.exists(), "--check wrote the file");
    let out = cchq_env(
        &root,
        &["local", "ap", "--skip-check", "--yes", pb.to_str().unwrap()],
        &envs,
    );
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        std::fs::read_to_string(&outfile).unwrap(),
        "from-public from-the-vault loc known_hosts\n"
    );
    assert!(
        !all(&out).contains(password),
        "the password leaked: {}",
        all(&out)
    );
    assert!(
        text(&out.stderr).contains("--vault-password-file="),
        "{}",
        all(&out)
    );
    // A wrong password stops before Ansible starts.
    let bad = [
        ("PATH", path.as_str()),
        ("ANSIBLE_VAULT_PASSWORD", "wrong"),
        ("ANSIBLE_LOCAL_TEMP", tmp.path().to_str().unwrap()),
    ];
    let out = cchq_env(
        &root,
        &["local", "ap", "--skip-check", "--yes", pb.to_str().unwrap()],
        &bad,
    );
    assert_eq!(out.status.code(), Some(6), "{}", all(&out));
    assert!(
        !text(&out.stderr).contains("$ ansible-playbook"),
        "{}",
        all(&out)
    );
}

#[test]
fn copy_files_to_and_from_a_local_host() {
    let (tmp, root) = local_env(&[]);
    let src = tmp.path().join("a.conf");
    std::fs::write(&src, "k = v\n").unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let dest_dir = tmp.path().join("dest");
    std::fs::create_dir(&dest_dir).unwrap();
    let target = format!("this:{}/", dest_dir.display());
    let out = cchq(
        &root,
        &[
            "local",
            "copy-files",
            src.to_str().unwrap(),
            &target,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", all(&out));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(row["target"], format!("this:{}/a.conf", dest_dir.display()));
    assert_eq!(row["mode"], "0640");
    assert_eq!(
        std::fs::read_to_string(dest_dir.join("a.conf")).unwrap(),
        "k = v\n"
    );
    // Back, under another name, with a mode of its own (the `scp` alias).
    let back = tmp.path().join("back.conf");
    let source = format!("this:{}/a.conf", dest_dir.display());
    let out = cchq(
        &root,
        &[
            "local",
            "scp",
            &source,
            back.to_str().unwrap(),
            "--mode",
            "0600",
        ],
    );
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "k = v\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&back).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
    // A missing source: exit 4, nothing written.
    let out = cchq(
        &root,
        &[
            "local",
            "copy-files",
            "this:/nonexistent/x",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("`/nonexistent/x` does not exist on `this`"),
        "{}",
        all(&out)
    );
    assert!(!tmp.path().join("x").exists());
    // `-:PATH` is django_manage[0]'s (not an option); this environment has no such group.
    let out = cchq(&root, &["local", "copy-files", "-:/tmp/x", "."]);
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    assert!(text(&out.stderr).contains("django_manage"), "{}", all(&out));
    // Bad input: usage errors.
    for args in [
        vec!["root@this:/x", "."],
        vec!["a", "this:/tmp/x", "--mode", "999"],
    ] {
        let mut a = vec!["local", "copy-files"];
        a.extend(args.iter().copied());
        let out = cchq(&root, &a);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {}", all(&out));
        assert!(text(&out.stderr).contains("hint:"), "{}", all(&out));
    }
}

/// The plan form (`copy-files PLAN.yml ACTION`): a bad plan stops before any host is reached,
/// naming the plan file and the entry; options of one form are refused with the other.
#[test]
fn copy_files_plan_errors_name_the_plan_and_the_entry() {
    let (tmp, root) = local_env(&[]);
    let plan = tmp.path().join("move.yml");
    let entry = "copy_files:\n  - this:\n      - source_host: elsewhere\n        source_dir: /a/\n        target_dir: /b/\n";
    std::fs::write(&plan, entry).unwrap();
    let p = plan.to_str().unwrap();
    let out = cchq(&root, &["local", "copy-files", p, "prepare"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    assert!(
        text(&out.stderr).contains(&format!(
            "{p}: `copy_files[0].this[0].source_host`: no host or group `elsewhere`"
        )),
        "{}",
        all(&out)
    );
    assert!(text(&out.stderr).contains("hint:"), "{}", all(&out));
    // A source without a host key in known_hosts: the hint says how to get it.
    std::fs::write(&plan, entry.replace("elsewhere", "this")).unwrap();
    let out = cchq(&root, &["local", "copy-files", p, "copy", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("update-local-known-hosts"),
        "{}",
        all(&out)
    );
    for args in [
        vec![p, "copy", "--mode", "0600"],
        vec![p, "prepare", "--check"],
        vec!["a.conf", "this:/tmp/", "--limit", "this"],
    ] {
        let mut a = vec!["local", "copy-files"];
        a.extend(args.iter().copied());
        let out = cchq(&root, &a);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {}", all(&out));
        assert!(text(&out.stderr).contains("hint:"), "{}", all(&out));
    }
    let out = cchq(
        &root,
        &[
            "local",
            "copy-files",
            tmp.path().join("none.yml").to_str().unwrap(),
            "cleanup",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
}

#[test]
fn ping_a_local_host() {
    let (_tmp, root) = local_env(&[]);
    let out = cchq(&root, &["local", "ping", "--json"]);
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(row["host"], "this");
    assert_eq!(row["reachable"], true);
    // sudo may or may not work for whoever runs the tests; the row says which, and the exit code agrees.
    assert_eq!(out.status.success(), row["ok"] == true, "{}", all(&out));
    if row["ok"] == false {
        assert!(
            text(&out.stderr).contains("this:"),
            "the failing host is named: {}",
            all(&out)
        );
    }
    let out = cchq(&root, &["local", "ping"]);
    assert!(text(&out.stdout).starts_with("HOST"), "{}", all(&out));
}

#[test]
fn update_local_known_hosts_keeps_the_file_when_a_host_does_not_answer() {
    // Port 1 of 127.0.0.1: nothing listens, ssh-keyscan gets no key.
    let (tmp, root) = local_env(&[]);
    let dir = root.join("local");
    std::fs::write(
        dir.join("inventory.ini"),
        "[celery]\nnohost ansible_host=127.0.0.1 ansible_port=1\n",
    )
    .unwrap();
    std::fs::write(dir.join("known_hosts"), "# kept\n").unwrap();
    let out = cchq(&root, &["local", "update-local-known-hosts"]);
    assert_eq!(out.status.code(), Some(5), "{}", all(&out));
    assert!(text(&out.stderr).contains("nohost"), "{}", all(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("known_hosts")).unwrap(),
        "# kept\n"
    );
    drop(tmp);
}

/// Stale workers on this machine: a `celery` process running from an old release of the
/// environment is listed and killed; the current release's, another environment's and a
/// non-celery process in the old release are left alone.
#[test]
fn kill_stale_celery_workers_on_a_local_host() {
    let (tmp, root) = local_env(&[]);
    let www = tmp.path().join("www");
    for d in ["loc/releases/old", "loc/releases/new", "other/releases/old"] {
        std::fs::create_dir_all(www.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(www.join("loc/releases/new"), www.join("loc/current")).unwrap();
    let named = |cwd: &Path, name: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(format!("exec -a {name} sleep 120"))
            .current_dir(cwd)
            .spawn()
            .unwrap()
    };
    let mut procs = [
        named(&www.join("loc/releases/old"), "celery-worker-stale"),
        named(&www.join("loc/releases/new"), "celery-worker-current"),
        named(&www.join("other/releases/old"), "celery-worker-other-env"),
        named(&www.join("loc/releases/old"), "not-a-worker"),
    ];
    let stale_pid = procs[0].id();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = cchq(
        &root,
        &["local", "kill-stale-celery-workers", "--list", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "--list with stale workers exits 1: {}",
        all(&out)
    );
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["pid"], stale_pid);
    assert_eq!(rows[0]["release"], "old");
    // Without --yes and no terminal: refused, nothing killed.
    let out = cchq(&root, &["local", "kill-stale-celery-workers"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        text(&out.stdout).contains(&format!("pid {stale_pid}")),
        "shown before asking: {}",
        all(&out)
    );
    assert!(procs[0].try_wait().unwrap().is_none());
    let out = cchq(
        &root,
        &["local", "kill-stale-celery-workers", "--yes", "--json"],
    );
    assert!(out.status.success(), "{}", all(&out));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(row["killed"], true);
    let status = procs[0].wait().unwrap();
    assert!(!status.success(), "the stale worker was killed");
    for p in &mut procs[1..] {
        assert!(
            p.try_wait().unwrap().is_none(),
            "only the stale worker is killed"
        );
    }
    let out = cchq(&root, &["local", "kill-stale-celery-workers", "--list"]);
    assert!(out.status.success(), "{}", all(&out));
    for p in &mut procs[1..] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// A throwaway sshd on 127.0.0.1 (root only: it needs `/run/sshd`), killed by its pid when dropped.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: String,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// With `authorized_keys`: root may log in with those keys (and only those).
    fn start_with(authorized_keys: Option<&Path>) -> Option<Self> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.is_file() || me() != "root" {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let hk = dir.path().join("hk");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&hk)
            .status()
            .ok()?;
        assert!(made.success());
        std::fs::create_dir_all("/run/sshd").ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(sshd);
        if let Some(ak) = authorized_keys {
            cmd.args([
                "-o",
                "StrictModes=no",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "UsePAM=no",
                "-o",
                "PermitRootLogin=prohibit-password",
            ])
            .arg("-o")
            .arg(format!("AuthorizedKeysFile={}", ak.display()));
        } else {
            cmd.args(["-o", "AuthorizedKeysFile=none"]);
        }
        let child = cmd
            .args(["-D", "-f", "/dev/null", "-h"])
            .arg(&hk)
            .arg("-o")
            .arg(format!("ListenAddress=127.0.0.1:{port}"))
            .arg("-o")
            .arg(format!("PidFile={}", dir.path().join("pid").display()))
            .arg("-E")
            .arg(dir.path().join("log"))
            .spawn()
            .ok()?;
        let pubkey = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
        let key = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    child,
                    port,
                    key,
                    _dir: dir,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// New key added, known key kept, changed key refused (file untouched) until --replace.
#[test]
fn update_local_known_hosts_against_a_real_sshd() {
    let Some(sshd) = Sshd::start() else {
        eprintln!("SKIPPED: needs root and /usr/sbin/sshd for a throwaway sshd");
        return;
    };
    let (_tmp, root) = local_env(&[]);
    let dir = root.join("local");
    std::fs::write(
        dir.join("inventory.ini"),
        format!(
            "[celery]\nh1 ansible_host=127.0.0.1 ansible_port={}\n",
            sshd.port
        ),
    )
    .unwrap();
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, "# operators' notes stay\n").unwrap();
    let name = format!("[127.0.0.1]:{}", sshd.port);
    let want = format!("# operators' notes stay\n{name} {}\n", sshd.key);
    let out = cchq(&root, &["local", "update-local-known-hosts", "--json"]);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["name"].as_str()),
        (Some("added"), Some(name.as_str()))
    );
    assert!(rows[0]["new"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), want);
    let out = cchq(&root, &["local", "update-local-known-hosts"]);
    assert!(
        out.status.success() && text(&out.stderr).contains("is up to date"),
        "{}",
        all(&out)
    );
    // Another key under the same name: refused, nothing written.
    let other = tempfile::tempdir().unwrap();
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(other.path().join("k"))
        .status()
        .unwrap();
    assert!(ok.success());
    let wrong_key: String = std::fs::read_to_string(other.path().join("k.pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let wrong = format!("# operators' notes stay\n{name} {wrong_key}\n");
    std::fs::write(&kh, &wrong).unwrap();
    let out = cchq(&root, &["local", "update-local-known-hosts"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("changed") && text(&out.stderr).contains("--replace"),
        "{}",
        all(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        wrong,
        "nothing written"
    );
    let out = cchq(&root, &["local", "update-local-known-hosts", "--replace"]);
    assert!(out.status.success(), "{}", all(&out));
    assert!(text(&out.stdout).contains("replaced"), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), want);
    // A host gone from the inventory: its key stays, unless --prune.
    let gone = format!("{want}10.9.9.9 {}\n", sshd.key);
    std::fs::write(&kh, &gone).unwrap();
    let out = cchq(&root, &["local", "update-local-known-hosts"]);
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), gone);
    let out = cchq(
        &root,
        &["local", "update-local-known-hosts", "--prune", "--json"],
    );
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        json_lines(&out)
            .iter()
            .any(|r| r["status"] == "removed" && r["name"] == "10.9.9.9"),
        "{}",
        all(&out)
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), want);
    let out = cchq(
        &root,
        &[
            "local",
            "update-local-known-hosts",
            "--prune",
            "--limit",
            "h1",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "--prune with --limit: {}",
        all(&out)
    );
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Over real ssh (a throwaway sshd on 127.0.0.1 that lets only this test's key in, as root):
/// known_hosts filled by update-local-known-hosts, then ping, copy-files both ways and tmux.
#[test]
fn ping_copy_files_and_tmux_over_ssh() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    if !Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: no ssh-keygen");
        return;
    }
    let ak = keys.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &ak).unwrap();
    let Some(sshd) = Sshd::start_with(Some(&ak)) else {
        eprintln!("SKIPPED: needs root and /usr/sbin/sshd for a throwaway sshd");
        return;
    };
    let (tmp, root) = local_env(&[]);
    let dir = root.join("local");
    std::fs::write(
        dir.join("inventory.ini"),
        format!(
            "[celery]\nh1 ansible_host=127.0.0.1 ansible_port={} ansible_user=root ansible_ssh_private_key_file={}\n",
            sshd.port,
            key.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("known_hosts"), "").unwrap();
    let envs = [("CCHQ_SSH_CONTROL_PERSIST", "no")];
    let out = cchq_env(&root, &["local", "update-local-known-hosts"], &envs);
    assert!(out.status.success(), "{}", all(&out));
    let out = cchq_env(&root, &["local", "ping", "--json"], &envs);
    assert!(out.status.success(), "{}", all(&out));
    let rows = json_lines(&out);
    assert_eq!(
        (
            rows[0]["reachable"].as_bool(),
            rows[0]["sudo"].as_bool(),
            rows[0]["ok"].as_bool()
        ),
        (Some(true), Some(true), Some(true)),
        "{rows:?}"
    );
    // To the host and back.
    let src = tmp.path().join("f.txt");
    std::fs::write(&src, "over ssh\n").unwrap();
    let remote_dir = tmp.path().join("remote");
    let target = format!("h1:{}/", remote_dir.display());
    let out = cchq_env(
        &root,
        &[
            "local",
            "copy-files",
            src.to_str().unwrap(),
            &target,
            "--mode",
            "0604",
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(
        std::fs::read_to_string(remote_dir.join("f.txt")).unwrap(),
        "over ssh\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(remote_dir.join("f.txt"))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o604);
    let back = tmp.path().join("back.txt");
    let out = cchq_env(
        &root,
        &[
            "local",
            "scp",
            &format!("h1:{}/f.txt", remote_dir.display()),
            back.to_str().unwrap(),
            "-b",
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", all(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "over ssh\n");
    // tmux on a terminal (a pty from `script`), as the app user (root here), attached: the
    // command detaches its own client; then --detach adds a window without a terminal. Only this
    // test's session is touched (its name is unique), and killed at the end.
    if Command::new("script").arg("--version").output().is_ok()
        && Command::new("tmux").arg("-V").output().is_ok()
    {
        let session = format!("cchq-daily-local-{}", std::process::id());
        struct Kill(String);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = Command::new("tmux")
                    .args(["kill-session", "-t", &format!("={}", self.0)])
                    .status();
            }
        }
        let _kill = Kill(session.clone());
        let mark = tmp.path().join("mark");
        let line = format!(
            // The session's command runs as soon as the session exists, maybe before the
            // client attaches: it waits for one before detaching it.
            "{} --environments {} local tmux h1 'echo attached > {}; for i in $(seq 200); do tmux list-clients -t ={session} | grep -q . && break; sleep 0.1; done; tmux detach-client' --session {session}",
            env!("CARGO_BIN_EXE_cchq"),
            root.display(),
            mark.display()
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
        assert!(
            out.status.success()
                && screen.contains(&format!("[detached (from session {session})]")),
            "{screen}"
        );
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "attached\n");
        let out = cchq_env(
            &root,
            &[
                "local",
                "tmux",
                "h1",
                "true",
                "--detach",
                "--session",
                &session,
            ],
            &envs,
        );
        assert!(out.status.success(), "{}", all(&out));
        let windows = Command::new("tmux")
            .args(["list-windows", "-t", &format!("={session}")])
            .output()
            .unwrap();
        assert_eq!(
            text(&windows.stdout).lines().count(),
            2,
            "{}",
            all(&windows)
        );
    }
    // A host key that changed: ping refuses to connect, naming the host.
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", sshd.port),
    )
    .unwrap();
    let out = cchq_env(&root, &["local", "ping"], &envs);
    assert_eq!(out.status.code(), Some(5), "{}", all(&out));
    assert!(text(&out.stderr).contains("h1"), "{}", all(&out));
}
