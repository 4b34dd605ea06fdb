//! Shared helpers for the cross-crate integration tests: finding the fleet test bed, the fixtures
//! and the stand-in servers (`cchq-testsupport`, re-exported here as [`fixtures`] and [`servers`],
//! so that `cchq-cli/tests` reach them through this crate too).
//!
//! Fleet tests need `tests/fleet/up` to have run; `tests/run-all` brings the fleet up and sets
//! `CCHQ_FLEET_ROOT` (the environments root it printed) and `CCHQ_REQUIRE_FLEET=1`, so that in
//! CI a missing fleet fails the tests instead of skipping them.

use std::path::PathBuf;

pub use cchq_testsupport::{fixtures, servers};

/// The environments root of the running fleet, or `None` (the test then skips, saying so) when
/// no fleet is up and none is required.
///
/// # Panics
/// When `CCHQ_REQUIRE_FLEET=1` and no fleet is up.
pub fn fleet_root() -> Option<PathBuf> {
    let root = std::env::var_os("CCHQ_FLEET_ROOT")
        .map(PathBuf::from)
        .filter(|p| p.join("fleet").is_dir());
    if root.is_none() {
        assert!(
            std::env::var("CCHQ_REQUIRE_FLEET").as_deref() != Ok("1"),
            "CCHQ_REQUIRE_FLEET=1 but no fleet at CCHQ_FLEET_ROOT; run `tests/fleet/up 5` and export its last line"
        );
        eprintln!("SKIPPED: no fleet (run `export CCHQ_FLEET_ROOT=$(tests/fleet/up 5 | tail -1)`)");
    }
    root
}

/// The path of a fleet script (`up`, `down`, `cut`, `restore`, `crash`).
pub fn fleet_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fleet")
        .join(name)
}

/// Runs a fleet script with arguments and panics when it fails.
///
/// # Panics
/// When the script fails.
pub fn fleet(name: &str, args: &[&str]) {
    let out = std::process::Command::new(fleet_script(name))
        .args(args)
        .output()
        .expect("fleet script runs");
    assert!(
        out.status.success(),
        "tests/fleet/{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a fuzz target (`run(cases)` runs `cases` random cases, e.g. a proptest runner) for as long
/// as the environment asks: with `CCHQ_FUZZ_SECS=N`, batch after batch (each with new random
/// inputs) until `N` seconds have passed (the last batch finishes: a target may run one batch
/// longer), so that CI fuzzes for a fixed time; else one batch. A batch is `CCHQ_FUZZ_CASES`
/// cases, else `default_cases`.
pub fn fuzz_batches(default_cases: u32, mut run: impl FnMut(u32)) {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let cases = var("CCHQ_FUZZ_CASES")
        .and_then(|c| u32::try_from(c).ok())
        .filter(|&c| c > 0)
        .unwrap_or(default_cases);
    let Some(secs) = var("CCHQ_FUZZ_SECS") else {
        run(cases);
        return;
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        run(cases);
        if std::time::Instant::now() >= end {
            break;
        }
    }
}

/// The fixture environments shipped in the repository ([`fixtures::environments`]).
#[must_use]
pub fn fixture_root() -> PathBuf {
    fixtures::environments()
}

/// Installs the demo app (examples/demo-app, as it is in the working tree) as release `name` on
/// `hosts` of the fleet environment, with `current` (and formplayer's `formplayer_build/current`)
/// pointing at it and a `python_env` that is the system Python: a stand-in release for service
/// tests until a real deploy makes one.
///
/// # Panics
/// When anything fails.
pub fn install_demo_release(root: &std::path::Path, hosts: &[String], name: &str) {
    use cchq_core::transport::Transport as _;
    let env = cchq_core::Environment::load(root, "fleet").expect("fleet loads");
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/demo-app");
    // The formplayer stand-in runs from its "jar" (make-formplayer-jar), in the release's root.
    let jar_dir = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new(app.join("make-formplayer-jar"))
        .arg(jar_dir.path().join("formplayer.jar"))
        .arg(name)
        .output()
        .expect("make-formplayer-jar runs");
    assert!(
        made.status.success(),
        "make-formplayer-jar: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tar = std::process::Command::new("tar")
        .args(["-C"])
        .arg(&app)
        .args(["--exclude=__pycache__", "-czf", "-", ".", "-C"])
        .arg(jar_dir.path())
        .arg("formplayer.jar")
        .output()
        .expect("tar runs");
    assert!(tar.status.success());
    let www = format!("{}/{}", env.profile.www_root, env.meta.deploy_env);
    let script = format!(
        "set -e; r={www}/releases/{name}; rm -rf \"$r\"; mkdir -p \"$r/python_env/bin\" {www}/log {www}/shared; tar -C \"$r\" -xzf -; \
         ln -sfn /usr/bin/python3 \"$r/python_env/bin/python\"; ln -sfn \"$r\" {www}/current.tmp; mv -T {www}/current.tmp {www}/current; \
         mkdir -p {www}/formplayer_build; ln -sfn \"$r\" {www}/formplayer_build/current.tmp; \
         mv -T {www}/formplayer_build/current.tmp {www}/formplayer_build/current"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t = env.transport(Some(hosts)).expect("transport");
        for h in hosts {
            let cmd = cchq_core::RemoteCommand::shell(script.clone())
                .become_user("cchq")
                .stdin(tar.stdout.clone());
            let out = t.exec(h, &cmd).await.expect("exec");
            assert!(out.success(), "installing the demo release on {h}: {out:?}");
        }
        t.close().await.expect("close");
    });
}

/// `cchq --environments ROOT` (the binary at `bin`: `env!("CARGO_BIN_EXE_cchq")`) with its SSH
/// masters closed at the end of each run. Fleet tests that cut hosts need it: `fleet cut` stops
/// sshd's listener and leaves open sessions alone, which a kept master would still reach.
pub fn cchq_closing(bin: &str, root: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.env("CCHQ_SSH_CONTROL_PERSIST", "no")
        .arg("--environments")
        .arg(root);
    c
}

/// The folder holding `ansible-playbook`: on `PATH`, else `$CCHQ_ANSIBLE_VENV/bin` or
/// `/tmp/cchq-ansible-venv/bin` (where `tests/run-all` installs ansible-core); `None` when
/// there is none (the test says it skipped).
pub fn ansible_bin() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(p) = cchq_core::daily::ansible::which("ansible-playbook") {
        return p.parent().map(std::path::Path::to_owned);
    }
    let venv = std::env::var_os("CCHQ_ANSIBLE_VENV")
        .map_or_else(|| PathBuf::from("/tmp/cchq-ansible-venv"), PathBuf::from);
    let bin = venv.join("bin");
    bin.join("ansible-playbook").is_file().then_some(bin)
}

/// This process's `PATH` with `dir` in front: what a test sets to put its own `ssh` or
/// `ansible-playbook` before the system's.
pub fn path_with(dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Holds `/tmp/cchq-fleet-tests.lock` (flock) while alive: fleet tests of different binaries that
/// change the same hosts' programs take it, one at a time.
pub struct FleetLock(std::process::Child);

impl FleetLock {
    /// Waits for the lock and takes it.
    ///
    /// # Panics
    /// When `flock` cannot run.
    #[must_use]
    pub fn take() -> Self {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let mut child = Command::new("flock")
            .args([
                "/tmp/cchq-fleet-tests.lock",
                "sh",
                "-c",
                "echo locked; exec cat >/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("flock answers");
        assert_eq!(line.trim(), "locked");
        Self(child)
    }
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// `django-admin`, from a Django installed once (from the package index) for every test run on
/// this machine, into a virtualenv under the temporary directory (made beside and renamed into
/// place, so that concurrent first calls do not see half an install; run as `python -m django`,
/// which works from a moved venv where the scripts' `#!` lines would not).
///
/// # Panics
/// When the virtualenv or the install fails.
#[must_use]
pub fn django_admin() -> std::process::Command {
    use std::process::Command;
    let venv = std::env::temp_dir().join("cchq-django-admin-venv");
    let python = venv.join("bin/python3");
    if !venv.join("installed").exists() {
        let making =
            std::env::temp_dir().join(format!("cchq-django-admin-venv.{}", std::process::id()));
        let o = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&making)
            .output()
            .expect("python3 runs");
        assert!(
            o.status.success(),
            "venv: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = Command::new(making.join("bin/pip"))
            .args(["install", "-q", "django"])
            .output()
            .expect("pip runs");
        assert!(
            o.status.success(),
            "pip install django: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(making.join("installed"), "").expect("write");
        if !venv.join("installed").exists() {
            let _ = std::fs::remove_dir_all(&venv); // half made by an older run
        }
        // Another test may have won the race: then its venv stays and this one goes.
        if std::fs::rename(&making, &venv).is_err() {
            let _ = std::fs::remove_dir_all(&making);
        }
    }
    let mut c = Command::new(python);
    c.args(["-m", "django"]);
    c
}

/// `git ARGS` in `dir` with a fixed identity and `main` as the first branch; its stdout, trimmed.
///
/// # Panics
/// When git fails.
pub fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A plain Django project in `work`, as `django-admin startproject mysite .` makes it, with
/// `django` and `gunicorn` (from the package index) in its `requirements.txt`, committed on
/// `main`, and a bare clone of it at `bare` (the environment's `code_repo`).
///
/// # Panics
/// When anything fails.
pub fn django_project(work: &std::path::Path, bare: &std::path::Path) {
    std::fs::create_dir_all(work).expect("mkdir");
    let o = django_admin()
        .args(["startproject", "mysite", "."])
        .current_dir(work)
        .output()
        .expect("django-admin runs");
    assert!(
        o.status.success(),
        "startproject: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(work.join("requirements.txt"), "django\ngunicorn\n").expect("write");
    git_in(work, &["init", "-q"]);
    git_in(work, &["add", "-A"]);
    git_in(work, &["commit", "-qm", "startproject"]);
    let o = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(work)
        .arg(bare)
        .output()
        .expect("git runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Commits every change in `work` and pushes it to `bare`'s `main`.
///
/// # Panics
/// When git fails.
pub fn commit_and_push(work: &std::path::Path, bare: &std::path::Path, message: &str) {
    git_in(work, &["add", "-A"]);
    git_in(work, &["commit", "-qm", message]);
    git_in(
        work,
        &["push", "-q", &bare.display().to_string(), "HEAD:main"],
    );
}

/// `GET url`: its status and body, waiting up to 30 s for an answer (a server still starting);
/// status 0 when none came. Through Python's urllib (no HTTP client among the dependencies).
///
/// # Panics
/// When python3 cannot run.
#[must_use]
pub fn http_get(url: &str) -> (u16, String) {
    for _ in 0..60 {
        let o = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys,urllib.request as u\ntry:\n r=u.urlopen(sys.argv[1],timeout=5); print(r.status); print(r.read().decode())\nexcept u.HTTPError as e: print(e.code)\nexcept OSError: print(0)",
                url,
            ])
            .output()
            .expect("python3 runs");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let code: u16 = out
            .lines()
            .next()
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap_or(0);
        if code != 0 {
            return (code, out);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    (0, String::new())
}
