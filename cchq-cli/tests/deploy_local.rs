//! Deploys of the demo app to this machine (`ansible_connection=local`) with a private
//! supervisord (its own socket, program directory and www root in a temporary directory): what
//! a closed stdout and signals do to a real deploy. Needs root (as the quickstart) and
//! supervisord; skips otherwise.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt as _;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A private supervisord, stopped (by its pid) when dropped.
struct Supervisord {
    conf: PathBuf,
    pidfile: PathBuf,
}

impl Supervisord {
    fn start(dir: &Path) -> Self {
        let conf = dir.join("supervisord.conf");
        let pidfile = dir.join("supervisord.pid");
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n\n[supervisord]\npidfile={d}/supervisord.pid\nlogfile={d}/supervisord.log\nchildlogdir={d}\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n[include]\nfiles = {d}/conf.d/*.conf\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let o = Command::new("supervisord")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "supervisord: {}", text(&o.stderr));
        let s = Self { conf, pidfile };
        let start = Instant::now();
        while s.ctl(&["pid"]).status.code() != Some(0) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "supervisord did not answer"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap()
    }

    /// `name state` of every program.
    fn states(&self) -> Vec<(String, String)> {
        text(&self.ctl(&["status"]).stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_owned(), w.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits (up to 30 s) until every program is RUNNING; returns the states seen last.
    fn all_running(&self) -> Vec<(String, String)> {
        let start = Instant::now();
        loop {
            let s = self.states();
            if !s.is_empty() && s.iter().all(|(_, st)| st == "RUNNING")
                || start.elapsed() > Duration::from_secs(30)
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `local` example environment as `cxl` in `<tmp>/envs`: this machine, a www root, program
/// directory and supervisord socket in `tmp`, the demo app from `<tmp>/demo.git` whose celery
/// worker takes 3 s to stop (so that a restart's round trip is long enough to be cut), one celery
/// worker and one pillow, the web worker on a free port.
fn local_env(tmp: &Path) -> PathBuf {
    let app = tmp.join("app");
    let o = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("examples/demo-app"))
        .arg(&app)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let commands = app.join("demo/commands.py");
    let src = std::fs::read_to_string(&commands).unwrap();
    let slow = src.replace(
        "    print(f\"{name} stopping\", flush=True)\n",
        "    time.sleep(3 if name == \"celery\" else 0)\n    print(f\"{name} stopping\", flush=True)\n",
    );
    assert_ne!(src, slow, "the demo app's loop() changed: update this test");
    std::fs::write(&commands, slow).unwrap();
    let o = Command::new(app.join("make-repo"))
        .arg(tmp.join("demo.git"))
        .output()
        .unwrap();
    assert!(o.status.success(), "make-repo: {}", text(&o.stderr));

    let root = tmp.join("envs");
    let dir = root.join("cxl");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["public.yml", "postgresql.yml", "proxy.yml", "vault.yml"] {
        std::fs::copy(
            repo_root().join("examples/environments/local").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    let cchq_yml = std::fs::read_to_string(repo_root().join("examples/demo-app/cchq.yml")).unwrap();
    let user = text(&Command::new("id").arg("-un").output().unwrap().stdout)
        .trim()
        .to_owned();
    let files = [
        (
            "inventory.ini",
            "[monolith]\nlocalhost ansible_connection=local ansible_host=127.0.0.1\n\
             [webworkers:children]\nmonolith\n[django_manage:children]\nmonolith\n[celery:children]\nmonolith\n[pillowtop:children]\nmonolith\n"
                .to_owned(),
        ),
        ("meta.yml", "deploy_env: cxl\nenv_monitoring_id: cxl\nusers: []\n".to_owned()),
        (
            "fab-settings.yml",
            format!("code_repo: {}\ndefault_branch: master\nemail_enabled: False\n", tmp.join("demo.git").display()),
        ),
        (
            "app-processes.yml",
            format!(
                "django_port: {}\ncelery_processes:\n  monolith:\n    background_queue:\n      concurrency: 1\npillows:\n  monolith:\n    AppDbChangeFeedPillow:\n      num_processes: 1\n",
                free_port()
            ),
        ),
        (
            "cchq.yml",
            format!(
                "{cchq_yml}\nwww_root: {}\napp_user: {user}\nsupervisor_conf_dir: {}\nsupervisor_socket: {}\n",
                tmp.join("www").display(),
                tmp.join("sv/conf.d").display(),
                tmp.join("sv/supervisor.sock").display()
            ),
        ),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    root
}

fn cchq_cmd(root: &Path, tmp: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
    c.arg("--environments")
        .arg(root)
        .arg("cxl")
        .args(args)
        .env_remove("CCHQ_ENVIRONMENTS")
        .env("XDG_STATE_HOME", tmp.join("state"));
    c
}

fn cchq(root: &Path, tmp: &Path, args: &[&str]) -> Output {
    cchq_cmd(root, tmp, args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A deploy running with its JSON events on a pipe, its stderr collected.
struct Running {
    child: Child,
    events: Option<BufReader<std::process::ChildStdout>>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn_deploy(root: &Path, tmp: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["deploy", "--yes", "--json", "--no-notify"];
    args.extend_from_slice(extra);
    // Its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
    let mut child = cchq_cmd(root, tmp, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let events = Some(BufReader::new(child.stdout.take().unwrap()));
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Running {
        child,
        events,
        stderr,
    }
}

impl Running {
    /// Reads events until one satisfies `f`; returns it.
    fn until(&mut self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .events
                .as_mut()
                .expect("stdout open")
                .read_line(&mut line)
                .unwrap();
            if n == 0 {
                let _ = self.child.wait();
                self.events = None;
                let err = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new))
                    .join()
                    .unwrap();
                panic!("the deploy ended before {what}: {err}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && f(&v)
            {
                return v;
            }
        }
    }

    fn signal(&self, sig: &str, group: bool) {
        let pid = self.child.id().to_string();
        let target = if group { format!("-{pid}") } else { pid };
        let st = Command::new("kill")
            .args([&format!("-{sig}"), "--", &target])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits (up to 3 minutes) for the exit; the exit code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(180) {
                let _ = self.child.kill();
                panic!("the deploy did not end");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.events = None;
        (status.code(), self.stderr.join().unwrap())
    }
}

fn phase_started(name: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["event"] == "phase" && v["phase"] == name && v["ok"].is_null()
}

fn unlocked(root: &Path, tmp: &Path) {
    let o = cchq(root, tmp, &["lock", "status"]);
    assert_eq!(
        text(&o.stdout).trim(),
        "`cxl` is not locked",
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Issue 12, on real processes:
/// 1. `deploy --json` whose stdout reader goes away after the first line finishes the deploy and
///    exits 0 (before: exit 0 at once, the deploy abandoned with the lock held);
/// 2. SIGTERM during the build stops it: exit 143, lock released, resumable (before: killed);
///    SIGHUP alike, exit 129;
/// 3. Ctrl-C (SIGINT to the process group, which also reaches the restart's own commands) in the
///    middle of the restart's stop/start round trip of the celery worker: the deploy waits for
///    the round trip (or, when the signal cut it, starts again what it stopped), starts no other
///    (the rolling web batch), and every program runs when cchq exits 130, lock released
///    (before: celery stayed STOPPED);
/// 4. the resume then finishes the deploy.
#[test]
fn closed_stdout_and_signals_on_a_local_deploy() {
    if text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root (as the quickstart: program files and supervisord)");
        return;
    }
    if Command::new("supervisord")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no supervisord");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let sv = Supervisord::start(&tmp.join("sv"));
    let root = local_env(tmp);

    // 1. Closed stdout.
    let mut d = spawn_deploy(&root, tmp, &[]);
    // The deploy diff comes first (before the confirmation), then the deploy's phases.
    let first = d.until("the first event", |_| true);
    assert_eq!(first["event"], "deploy_diff", "{first}");
    d.until("the first phase", |v| v["event"] == "phase");
    d.events = None; // the reader goes away, as `head -1` does
    let (code, err) = d.finish();
    assert_eq!(code, Some(0), "the deploy finished: {err}");
    assert!(
        err.contains("stdout is closed: the deploy carries on"),
        "{err}"
    );
    assert!(
        err.contains("--> restart") && err.contains("record done"),
        "progress went to stderr: {err}"
    );
    assert!(err.contains("deployed release"), "and the summary: {err}");
    unlocked(&root, tmp);
    let states = sv.all_running();
    assert_eq!(states.len(), 3, "web, celery, pillow: {states:?}");
    assert!(states.iter().all(|(_, s)| s == "RUNNING"), "{states:?}");

    // 2. SIGTERM during the build (once checked out: a release cut in its checkout is not one yet).
    let mut d = spawn_deploy(&root, tmp, &[]);
    let ev = d.until("the build", |v| {
        phase_started("build")(v) && v["detail"] != "checkout"
    });
    let release = {
        // The release being built (for the resume): the newest directory.
        let mut names: Vec<String> = std::fs::read_dir(tmp.join("www/cxl/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| n.trim_end_matches(".tmp").to_owned())
            .collect();
        names.sort();
        names.pop().unwrap()
    };
    // Every --json event says what it belongs to.
    assert_eq!(
        (ev["component"].as_str(), ev["release"].as_str()),
        (Some("commcare"), Some(release.as_str())),
        "{ev}"
    );
    d.signal("TERM", false);
    let (code, err) = d.finish();
    assert_eq!(code, Some(143), "{err}");
    assert!(
        err.contains("interrupted (SIGTERM)")
            && err.contains("hint: continue it with `deploy --resume"),
        "{err}"
    );
    unlocked(&root, tmp);

    // SIGHUP (the terminal went away) alike: exit 129, lock released.
    let mut d = spawn_deploy(&root, tmp, &["--resume", &release]);
    d.until("the build", phase_started("build"));
    d.signal("HUP", false);
    let (code, err) = d.finish();
    assert_eq!(code, Some(129), "{err}");
    assert!(err.contains("interrupted (SIGHUP)"), "{err}");
    unlocked(&root, tmp);

    // 3. Ctrl-C in the middle of the restart's round trip (celery takes 3 s to stop).
    let mut d = spawn_deploy(&root, tmp, &["--resume", &release]);
    d.until("the restart", phase_started("restart"));
    std::thread::sleep(Duration::from_millis(700));
    d.signal("INT", true);
    let (code, err) = d.finish();
    // Right away, not after supervisord's own autorestart (which does not restart a stopped program).
    let states = sv.states();
    assert!(
        states
            .iter()
            .all(|(_, s)| s == "RUNNING" || s == "STARTING"),
        "every program runs again when cchq exits: {states:?}\n{err}"
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted (SIGINT)"), "{err}");
    assert!(!err.contains("could NOT be started"), "{err}");
    unlocked(&root, tmp);

    // 4. The resume finishes.
    let o = cchq(
        &root,
        tmp,
        &["deploy", "--yes", "--no-notify", "--resume", &release],
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let states = sv.all_running();
    assert!(states.iter().all(|(_, s)| s == "RUNNING"), "{states:?}");
    unlocked(&root, tmp);
}

/// Issue 13: `update-config --check` right after a deploy finds nothing to change (exit 0), after
/// a first deploy (which renders the settings into its release) and after the next one (which
/// copies them from the release before); before, the copy's header named the previous release.
#[test]
fn update_config_check_right_after_a_local_deploy_is_clean() {
    if text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root (as the quickstart: program files and supervisord)");
        return;
    }
    if Command::new("supervisord")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no supervisord");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let _sv = Supervisord::start(&tmp.join("sv"));
    let root = local_env(tmp);
    let stale = tmp.join("sv/conf.d/cxl_supervisor_celery_retired_queue.conf");
    for round in ["first", "second"] {
        if round == "second" {
            // A program file of this environment that app-processes.yml no longer plans.
            std::fs::write(&stale, "[program:commcare-hq-cxl-celery_retired_queue_0]\ncommand=sleep 1000\nautostart=false\n").unwrap();
        }
        let o = cchq(&root, tmp, &["deploy", "--yes", "--no-notify", "--json"]);
        assert!(
            o.status.success(),
            "{round} deploy: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // Issue 13: what the deploy removes is said before the confirmation, in its diff.
        let diff = text(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "deploy_diff")
            .unwrap_or_else(|| panic!("no deploy_diff event: {}", text(&o.stdout)));
        let expected = if round == "second" {
            serde_json::json!({"localhost": ["cxl_supervisor_celery_retired_queue.conf"]})
        } else {
            serde_json::json!({})
        };
        assert_eq!(diff["removes_program_files"], expected, "{round}: {diff}");
        assert!(!stale.exists(), "{round}: the deploy removed what it said");
        // Issue 14: the lines steps print stream as `line` events, named by their step, the
        // group markers left out.
        let lines: Vec<serde_json::Value> = text(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "line")
            .collect();
        assert!(
            !lines.is_empty(),
            "{round} deploy printed no line events: {}",
            text(&o.stdout)
        );
        assert!(
            lines
                .iter()
                .all(|e| !e["text"].as_str().unwrap_or("").starts_with("::cchq-")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .all(|e| e["host"] == "localhost" && e["stream"].is_string()),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|e| e["step"] == "staticfiles_collect" || e["step"] == "migrate"),
            "steps name their lines: {lines:?}"
        );
        let o = cchq(&root, tmp, &["update-config", "--check"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "after the {round} deploy: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    // The second deploy did copy the settings (so the check above covered the copy).
    let current = std::fs::canonicalize(tmp.join("www/cxl/current")).unwrap();
    let releases = std::fs::read_dir(tmp.join("www/cxl/releases"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(releases, 2, "two releases");
    assert!(current.join("localsettings.py").exists());
}

/// Issue 16: on a terminal (a pty from `script`), a deploy shows a live line per phase and a
/// rolling restart one per step, with hosts done and the slowest running; without a terminal
/// neither shows any (the output tests above read it without one).
#[test]
fn live_progress_on_a_pty_during_a_local_deploy_and_rolling_restart() {
    if text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root (as the quickstart: program files and supervisord)");
        return;
    }
    if Command::new("supervisord")
        .arg("--version")
        .output()
        .is_err()
        || Command::new("script").arg("--version").output().is_err()
    {
        eprintln!("SKIPPED: no supervisord, or no script (util-linux) for a pty");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let sv = Supervisord::start(&tmp.join("sv"));
    let root = local_env(tmp);
    let on_pty = |args: &str| {
        let line = format!(
            "{} --environments {} cxl {args}",
            env!("CARGO_BIN_EXE_cchq"),
            root.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .env("XDG_STATE_HOME", tmp.join("state"))
            .stdin(Stdio::null());
        for v in [
            "NO_COLOR",
            "CLICOLOR_FORCE",
            "CCHQ_PROGRESS",
            "CCHQ_ENVIRONMENTS",
        ] {
            c.env_remove(v);
        }
        let out = c.output().unwrap();
        (out.status.code(), text(&out.stdout))
    };
    let (code, screen) = on_pty("deploy --yes --no-notify");
    assert_eq!(code, Some(0), "{screen}");
    // The phase's live line (a spinner, the phase, its time, its hosts), above which the
    // usual lines still come.
    for phase in ["build", "restart"] {
        assert!(
            screen.contains("\r\x1b[2K") && screen.contains(&format!(" {phase}")),
            "{phase}: {screen}"
        );
    }
    assert!(
        screen.contains("hosts done") && screen.contains("slowest: localhost"),
        "{screen}"
    );
    assert!(
        screen.contains("--> build") && screen.contains("deployed release"),
        "{screen}"
    );
    assert_eq!(sv.all_running().len(), 3);

    let (code, screen) = on_pty("service webworker restart");
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("rolling restart 1..1 of 1") && screen.contains("hosts done"),
        "{screen}"
    );

    // No terminal: no live lines.
    let o = cchq(&root, tmp, &["service", "webworker", "restart"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !text(&o.stderr).contains("hosts done") && !text(&o.stderr).contains('\r'),
        "{}",
        text(&o.stderr)
    );
}

/// Issue 14: a plain Django project, made by `django-admin startproject` with gunicorn in its
/// requirements.txt (from the package index), deploys with the `django` profile and serves,
/// redeploys (reusing uv's cache: no download) and rolls back, with no change to the project.
#[test]
fn a_plain_django_project_deploys_serves_redeploys_and_rolls_back() {
    if text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        eprintln!("SKIPPED: needs root (as the quickstart: program files and supervisord)");
        return;
    }
    if Command::new("supervisord")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no supervisord");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let sv = Supervisord::start(&tmp.join("sv"));
    // The project, as django-admin makes it, plus its requirements.
    let work = tmp.join("mysite");
    let repo = tmp.join("mysite.git");
    cchq_tests::django_project(&work, &repo);
    let port = free_port();
    let root = tmp.join("envs");
    let dir = root.join("cxl");
    std::fs::create_dir_all(&dir).unwrap();
    let user = text(&Command::new("id").arg("-un").output().unwrap().stdout)
        .trim()
        .to_owned();
    for (name, body) in [
        ("inventory.ini", "[monolith]\nlocalhost ansible_connection=local ansible_host=127.0.0.1\n[webworkers:children]\nmonolith\n[django_manage:children]\nmonolith\n".to_owned()),
        ("meta.yml", "deploy_env: cxl\nenv_monitoring_id: cxl\nusers: []\n".to_owned()),
        ("public.yml", "localsettings:\n  TIME_ZONE: 'Africa/Nairobi'\n".to_owned()),
        ("fab-settings.yml", format!("code_repo: {}\ndefault_branch: main\nemail_enabled: False\n", repo.display())),
        ("app-processes.yml", format!("django_port: {port}\ngunicorn_workers_static_factor: 1\ncelery_processes: {{}}\npillows: {{}}\n")),
        (
            "cchq.yml",
            format!(
                "profile: django\nwww_root: {}\napp_user: {user}\nsupervisor_conf_dir: {}\nsupervisor_socket: {}\n",
                tmp.join("www").display(),
                tmp.join("sv/conf.d").display(),
                tmp.join("sv/supervisor.sock").display()
            ),
        ),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let get = |path: &str| cchq_tests::http_get(&format!("http://127.0.0.1:{port}{path}"));

    let o = cchq(&root, tmp, &["deploy", "--plan"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let plan = text(&o.stdout);
    assert!(
        plan.contains("collectstatic") && !plan.contains("record_deploy_success"),
        "{plan}"
    );

    let started = Instant::now();
    let o = cchq(&root, tmp, &["deploy", "--yes", "--no-notify"]);
    assert!(
        o.status.success(),
        "first deploy: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let first_took = started.elapsed();
    let states = sv.all_running();
    assert!(
        states
            .iter()
            .any(|(n, s)| n.contains("django") && s == "RUNNING"),
        "{states:?}"
    );
    let (code, body) = get("/admin/login/");
    assert_eq!(code, 200, "{body}");
    let current = || std::fs::canonicalize(tmp.join("www/cxl/current")).unwrap();
    let first = current();
    assert!(
        first.join("staticfiles/admin").is_dir(),
        "collectstatic filled STATIC_ROOT in the release"
    );
    assert!(
        tmp.join("www/cxl/shared/db.sqlite3").exists(),
        "the database is kept in the shared directory"
    );
    let o = cchq(
        &root,
        tmp,
        &[
            "django-manage",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.TIME_ZONE)",
        ],
    );
    assert!(
        text(&o.stdout).contains("Africa/Nairobi"),
        "the environment's settings are over the project's: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // A change, deployed: a new release; its dependencies did not change, uv's cache serves them.
    std::fs::write(work.join("mysite/extra.py"), "X = 1\n").unwrap();
    cchq_tests::commit_and_push(&work, &repo, "a change");
    let started = Instant::now();
    let o = cchq(&root, tmp, &["deploy", "--yes", "--no-notify"]);
    assert!(
        o.status.success(),
        "second deploy: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // The deploy diff before it: the commit running -> the one going out, the log between.
    assert!(
        text(&o.stderr).contains(" a change") && text(&o.stderr).contains("(main)"),
        "{}",
        text(&o.stderr)
    );
    eprintln!(
        "first deploy {:.1} s, second {:.1} s",
        first_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let second = current();
    assert_ne!(first, second);
    assert!(second.join("mysite/extra.py").exists());
    assert_eq!(get("/admin/login/").0, 200);

    // Rollback: back to the first release, serving.
    // The same commit again: said before confirming.
    let o = cchq(&root, tmp, &["deploy", "--plan"]);
    assert!(o.status.success());
    let o = cchq_cmd(&root, tmp, &["deploy", "--no-notify"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&o.stderr).contains("already deployed: the same commit goes out again"),
        "{}",
        text(&o.stderr)
    );
    assert_ne!(o.status.code(), Some(0), "not confirmed without a terminal");
    let o = cchq(&root, tmp, &["rollback", "--yes", "--no-notify"]);
    assert!(
        o.status.success(),
        "rollback: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(current(), first);
    assert_eq!(get("/admin/login/").0, 200);
    let o = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "", "the project was not changed");
}
