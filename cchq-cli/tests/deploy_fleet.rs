//! Deploys of the demo app to the fleet, end to end: real git, real supervisord, real sshd.
//! The tests share the fleet, so they run one at a time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use cchq_tests::{cchq_closing, fleet, fleet_root};

static SERIAL: Mutex<()> = Mutex::new(());

/// cchq with masters closed at the end of each run (`cchq_tests::cchq_closing`).
fn cchq(root: &Path, args: &[&str]) -> Output {
    cchq_closing(env!("CARGO_BIN_EXE_cchq"), root)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo(root: &Path) -> PathBuf {
    root.parent().unwrap().join("demo-app.git")
}

/// Adds a commit to the fleet's demo repository; returns its id.
fn commit(root: &Path, file: &str, contents: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
        text(&o.stdout).trim().to_owned()
    };
    git(&["clone", "-q", &repo(root).display().to_string(), "."]);
    let path = work.path().join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        file,
    ]);
    git(&["push", "-q", "origin", "HEAD:master"]);
    git(&["rev-parse", "HEAD"])
}

/// What `/version` answers on each host of `group` (web workers on 9010, formplayer on 8080).
fn versions_of(root: &Path, group: &str, port: u16) -> Vec<String> {
    let env = cchq_core::Environment::load(root, "fleet").unwrap();
    env.inventory
        .select(group)
        .unwrap()
        .hosts
        .into_iter()
        .map(|h| {
            let url = format!("http://{}:{port}/version", env.ssh_target(&h).address);
            let o = Command::new("python3")
                .args(["-c", &format!("import urllib.request;print(urllib.request.urlopen('{url}',timeout=5).read().decode().strip())")])
                .output()
                .unwrap();
            text(&o.stdout).trim().to_owned()
        })
        .collect()
}

/// What each web worker's `/version` answers.
fn versions(root: &Path) -> Vec<String> {
    versions_of(root, "webworkers", 9010)
}

/// `host -> current release` from list-releases --json.
fn currents(root: &Path) -> Vec<(String, String, bool)> {
    let o = cchq(root, &["fleet", "list-releases", "--json"]);
    assert!(
        o.status.success(),
        "list-releases: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["current"] == true)
        .map(|v| {
            (
                v["host"].as_str().unwrap().to_owned(),
                v["name"].as_str().unwrap().to_owned(),
                v["complete"] == true,
            )
        })
        .collect()
}

/// Every host is on one and the same complete release; returns it.
fn one_release(root: &Path) -> String {
    let c = currents(root);
    let names: std::collections::BTreeSet<&str> = c.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 1, "hosts on different releases: {c:?}");
    assert!(
        c.iter().all(|(_, _, complete)| *complete),
        "current is incomplete somewhere: {c:?}"
    );
    let env = cchq_core::Environment::load(root, "fleet").unwrap();
    let app_hosts = env
        .inventory
        .select(cchq_core::deploy::COMMCARE_GROUPS)
        .unwrap()
        .hosts
        .len();
    assert_eq!(
        c.len(),
        app_hosts,
        "every app host has a current release: {c:?}"
    );
    names.into_iter().next().unwrap().to_owned()
}

fn deploy_json(root: &Path, extra: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let mut args = vec!["fleet", "deploy", "--yes", "--json"];
    args.extend_from_slice(extra);
    let o = cchq(root, &args);
    let events = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (o, events)
}

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event")
}

fn ensure_deployed(root: &Path) {
    // Nothing deployed yet, or a release installed by hand by another test binary (the
    // check_services and services tests install `r0` without a deploy's markers).
    let c = currents(root);
    if c.is_empty() || c.iter().any(|(_, _, complete)| !complete) {
        let (o, _) = deploy_json(root, &[]);
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    }
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn deploy_new_commits_then_roll_back() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    // What the web workers run now (the repository's head may be ahead: `deploy formplayer`).
    let first = versions(&root)[0].clone();
    let second = commit(
        &root,
        "migrations/0002_visits.sql",
        "CREATE TABLE IF NOT EXISTS visits (at TEXT);\n",
    );
    let (o, events) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let s = summary(&events);
    assert_eq!(s["outcome"]["commit"], second.as_str());
    let release = s["outcome"]["release"].as_str().unwrap().to_owned();
    assert_eq!(one_release(&root), release);
    assert!(
        versions(&root).iter().all(|v| v == &second),
        "every web worker serves the new commit: {:?}",
        versions(&root)
    );
    let phases: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "phase" && e["ok"] == true)
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    for p in [
        "lock", "resolve", "build", "migrate", "switch", "restart", "record",
    ] {
        assert!(phases.contains(&p), "phase {p} in {phases:?}");
    }
    // The round trips of every phase are counted; cchq's own bookkeeping costs a host one each.
    let trips = s["outcome"]["round_trips"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in ["lock", "checkout", "switch", "restart", "record"] {
        assert!(
            trips.iter().any(|t| t["phase"] == p),
            "round trips of {p} in {trips:?}"
        );
    }
    let own = ["lock", "probe", "checkout", "switch", "record", "unlock"];
    assert!(
        trips
            .iter()
            .filter(|t| own.iter().any(|p| t["phase"] == *p))
            .all(|t| t["max_per_host"] == 1),
        "{trips:?}"
    );
    // The migration ran, once, against the shared database.
    let m = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "django_manage",
            "cd /home/cchq/www/fleet/current && python_env/bin/python manage.py showmigrations",
            "--become-user",
            "cchq",
        ],
    );
    assert!(
        text(&m.stdout).contains("[X] 0002_visits.sql"),
        "{}",
        text(&m.stdout)
    );
    // A no-op resume of a finished release: nothing is built, switched or restarted again.
    let (o, ev) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        ev.iter().all(|e| e["event"] != "phase"
            || !["build", "switch", "restart"].contains(&e["phase"].as_str().unwrap())),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing to do"))),
        "{ev:?}"
    );
    // ... in one round trip per host, as the transport counted them: no lock taken.
    let trips = summary(&ev)["outcome"]["round_trips"].clone();
    assert_eq!(trips.as_array().map(Vec::len), Some(1), "{trips}");
    assert!(
        trips[0]["phase"] == "probe" && trips[0]["max_per_host"] == 1,
        "{trips}"
    );
    // Roll back: the previous complete release, serving the previous commit.
    let o = cchq(&root, &["fleet", "rollback", "--yes"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        versions(&root).iter().all(|v| v == &first),
        "{:?} != {first}",
        versions(&root)
    );
    // An unknown or incomplete release is refused, listing the complete ones.
    let o = cchq(
        &root,
        &["fleet", "rollback", "--yes", "--to", "1999-01-01_00.00.00"],
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o.stderr).contains("complete releases:"),
        "{}",
        text(&o.stderr)
    );
    // Forward again.
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success());
    assert!(versions(&root).iter().all(|v| v == &second));
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_failing_build_on_one_host_switches_nothing_and_resume_completes() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let before = one_release(&root);
    commit(&root, "notes.txt", "a new commit\n");
    // fleet3 cannot build: its releases directory is blocked.
    let block = "mv /home/cchq/www/fleet/releases /home/cchq/www/fleet/releases.real && touch /home/cchq/www/fleet/releases";
    assert!(
        cchq(
            &root,
            &[
                "fleet",
                "run-shell-command",
                "fleet3",
                block,
                "--become-user",
                "cchq"
            ]
        )
        .status
        .success()
    );
    let (o, events) = deploy_json(&root, &[]);
    let unblock = "rm /home/cchq/www/fleet/releases && mv /home/cchq/www/fleet/releases.real /home/cchq/www/fleet/releases";
    // `current` on fleet3 points into releases.real only by name; put things back before looking.
    assert!(
        cchq(
            &root,
            &[
                "fleet",
                "run-shell-command",
                "fleet3",
                unblock,
                "--become-user",
                "cchq"
            ]
        )
        .status
        .success()
    );
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let err = text(&o.stderr);
    assert!(err.contains("fleet3") && err.contains("--resume"), "{err}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["host"] == "fleet3"),
        "the host's output is shown"
    );
    assert_eq!(one_release(&root), before, "nothing switched");
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), release);
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn two_deploys_at_once_only_one_proceeds() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let (mut first, mut lines) = spawn_deploy(&root, &[], Stdio::null());
    // Wait until the first holds the lock.
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l.contains("\"phase\":\"lock\"") && l.contains("\"ok\":true") {
            break;
        }
    }
    let second = cchq(&root, &["fleet", "deploy", "--yes"]);
    assert_eq!(second.status.code(), Some(7), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("locked by"),
        "{}",
        text(&second.stderr)
    );
    for _ in lines {}
    assert!(first.wait().unwrap().success());
    let st = cchq(&root, &["fleet", "lock", "status"]);
    assert!(
        text(&st.stdout).contains("is not locked"),
        "the lock is released: {}",
        text(&st.stdout)
    );
}

/// A `--resume` of the release a running deploy is deploying is refused (the lock is the running
/// deploy's: its process is alive), and the running deploy finishes and frees its lock; issue 12.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_resume_of_a_running_deploys_release_is_refused_and_does_not_take_its_lock() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    commit(&root, "notes.txt", "resume while running\n");
    let (mut first, mut lines) = spawn_deploy(&root, &[], Stdio::null());
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l.contains("\"phase\":\"lock\"") && l.contains("\"ok\":true") {
            break;
        }
    }
    let st = text(&cchq(&root, &["fleet", "lock", "status"]).stdout);
    assert!(
        st.contains("heartbeat:") && st.contains("stale after"),
        "{st}"
    );
    let release = st
        .split("(release ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .expect("lock status names the release")
        .to_owned();
    let second = cchq(&root, &["fleet", "deploy", "--yes", "--resume", &release]);
    assert_eq!(second.status.code(), Some(7), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("runs on this machine"),
        "{}",
        text(&second.stderr)
    );
    // A third deploy is refused too: the first still holds the lock.
    let third = cchq(&root, &["fleet", "deploy", "--yes"]);
    assert_eq!(third.status.code(), Some(7), "{}", text(&third.stderr));
    for _ in lines {}
    assert!(first.wait().unwrap().success());
    let st = cchq(&root, &["fleet", "lock", "status"]);
    assert!(
        text(&st.stdout).contains("is not locked"),
        "the lock is released: {}",
        text(&st.stdout)
    );
    assert_eq!(one_release(&root), release);
}

/// The lock's host crashed mid-deploy: the deploy fails saying the lock is probably still held
/// and how to go on; once the host is back, `--resume` takes the lock over (its holder, the failed
/// deploy's process, has ended) and completes.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_lock_host_lost_mid_deploy_leaves_the_lock_held_and_resume_takes_it_over() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let lock_host = cchq_core::deploy::lock::host(&env).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    commit(&root, "notes.txt", &format!("lock host lost {now}\n"));
    let (child, lines) = spawn_deploy(&root, &[], Stdio::piped());
    let mut events = Vec::new();
    let mut cut = false;
    for l in lines {
        let l = l.unwrap();
        if !cut && l.contains(r#""phase":"build","ok":null"#) {
            // A crash, not a `cut`: a cut host keeps the connections already open (the deploy's
            // master), so the deploy would not notice.
            fleet("crash", &[&lock_host]);
            cut = true;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
            events.push(v);
        }
    }
    let o = child.wait_with_output().unwrap();
    fleet("restore", &[&lock_host]);
    assert!(cut, "the deploy never reached its build");
    assert_eq!(o.status.code(), Some(8), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("probably still held")
            && err.contains("deploy --resume")
            && err.contains("lock release"),
        "{err}"
    );
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    let st = text(&cchq(&root, &["fleet", "lock", "status"]).stdout);
    assert!(
        st.contains(&format!("release {release}")) && st.contains("is dead"),
        "{st}"
    );
    let (o, ev) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        ev.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("taking over the lock")),
        "{ev:?}"
    );
    assert_eq!(one_release(&root), release);
}

/// SIGKILLs a deploy when `trigger` appears in its JSON events; returns the release name.
fn deploy_killed_at(root: &Path, trigger: &str) -> String {
    let (mut child, lines) = spawn_deploy(root, &[], Stdio::null());
    let mut killed = false;
    for l in lines {
        let l = l.unwrap();
        if l.contains(trigger) {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed, "the deploy never reached {trigger}");
    // The release being built: the newest on the hosts.
    let o = cchq(root, &["fleet", "list-releases", "--json"]);
    text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        // Names cchq takes (`YYYY-MM-DD_HH.MM.SS`): not `r0`, which other test binaries install.
        .filter(|n| n.len() == 19 && n.starts_with("20") && n.matches('.').count() == 2)
        .max()
        .unwrap()
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_killed_deploy_leaves_one_release_and_resumes() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    // CCHQ_FAULT_LOOPS=20 repeats the whole series (a resume after a kill once failed 1 run in 4
    // with a web worker STOPPED: the killed run's supervisor requests went on on the host and
    // interleaved with the resume's; they are now serialised on the host).
    let loops: usize = std::env::var("CCHQ_FAULT_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let triggers = [
        r#""phase":"build","ok":true"#,
        r#""event":"started","host":"fleet3","step":"virtualenv, "#,
        r#""phase":"switch","ok":null"#,
        r#""phase":"restart","ok":null"#,
    ];
    for trigger in std::iter::repeat_n(triggers, loops).flatten() {
        let c = commit(&root, "notes.txt", &format!("kill at {trigger}\n"));
        let before = one_release(&root);
        let name = deploy_killed_at(&root, trigger);
        if trigger.contains("switch") {
            // A SIGKILL cannot be shielded: the switch commands already sent finish on their
            // hosts, the others never start. Each host is on the old or the new release (never
            // an incomplete one), and the lock is kept, so only the resume below may go on.
            for (h, n, complete) in currents(&root) {
                assert!(
                    complete && (n == before || n == name),
                    "`{h}` on `{n}` after a kill at the switch"
                );
            }
        } else {
            one_release(&root);
        }
        let (o, events) = deploy_json(&root, &["--resume", &name]);
        assert!(
            o.status.success(),
            "resume after a kill at {trigger}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(
            events.iter().any(|e| e["event"] == "warning"
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("taking over the lock")),
            "{events:?}"
        );
        assert_eq!(one_release(&root), name);
        assert!(
            versions(&root).iter().all(|v| v == &c),
            "{trigger}: {:?}",
            versions(&root)
        );
    }
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn an_unreachable_host_fails_the_build_and_resume_completes_when_it_is_back() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let before = one_release(&root);
    commit(&root, "notes.txt", "unreachable\n");
    fleet("cut", &["fleet4"]);
    let (o, events) = deploy_json(&root, &[]);
    fleet("restore", &["fleet4"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("fleet4"), "{}", text(&o.stderr));
    assert_eq!(one_release(&root), before, "no host switched");
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), release);
}

/// `deploy formplayer` downloads the jar from `formplayer_build_url` (here a local HTTP server
/// with a published `.sha256`) on formplayer's hosts only, into its own releases
/// (`formplayer_build/`), switches and restarts them; a jar whose checksum does not match is
/// refused before anything switches; `update-config --limit formplayer` reaches them there.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn deploy_formplayer_deploys_its_own_hosts_only() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let web_before = versions(&root);
    let new = commit(&root, "formplayer/NOTES", "formplayer only\n");
    // The build, served over HTTP as a build server would, with its checksum.
    let builds = tempfile::tempdir().unwrap();
    let jar = builds.path().join("formplayer.jar");
    let make =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-app/make-formplayer-jar");
    let o = Command::new(&make).arg(&jar).arg(&new).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(builds.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let public = root.join("fleet/public.yml");
    let original = std::fs::read_to_string(&public).unwrap();
    struct Restore(PathBuf, String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, &self.1);
        }
    }
    let _restore = Restore(public.clone(), original.clone());
    let mut served: String = original
        .lines()
        .filter(|l| !l.starts_with("formplayer_build_url:"))
        .map(|l| format!("{l}\n"))
        .collect();
    served.push_str(&format!(
        "formplayer_build_url: http://127.0.0.1:{port}/formplayer.jar\n"
    ));
    std::fs::write(&public, &served).unwrap();

    // A published checksum that does not match: refused, nothing switched.
    let sums = builds.path().join("formplayer.jar.sha256");
    let good = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, format!("{}  formplayer.jar\n", "0".repeat(64))).unwrap();
    let fp_before = versions_of(&root, "formplayer", 8080);
    let (o, _) = deploy_json(&root, &["formplayer"]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("not 0000"), "{}", text(&o.stderr));
    assert_eq!(versions_of(&root, "formplayer", 8080), fp_before);
    std::fs::write(&sums, good).unwrap();

    let (o, events) = deploy_json(&root, &["formplayer"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let s = summary(&events);
    let sha = text(&Command::new("sha256sum").arg(&jar).output().unwrap().stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        s["outcome"]["commit"],
        sha.as_str(),
        "the jar's SHA-256 stands for the commit"
    );
    let fp = versions_of(&root, "formplayer", 8080);
    assert!(
        !fp.is_empty() && fp.iter().all(|v| v == &new),
        "formplayer serves the new build: {fp:?}"
    );
    assert_eq!(versions(&root), web_before, "web workers were not touched");
    let release = s["outcome"]["release"].as_str().unwrap().to_owned();
    let o = cchq(
        &root,
        &[
            "fleet",
            "list-releases",
            "--component",
            "formplayer",
            "--json",
        ],
    );
    let rows: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter().any(|r| r["name"] == release.as_str()
            && r["current"] == true
            && r["complete"] == true),
        "{rows:?}"
    );
    let o = cchq(
        &root,
        &["fleet", "update-config", "--limit", "formplayer", "--check"],
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        all.contains("formplayer_build/current/application.properties"),
        "{all}"
    );
}

/// `preindex-views` builds a private release on django_manage only (nothing switched, no
/// migration) and leaves `preindex_everything` running there; `--check` in that release reports
/// it done once it is.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn preindex_views_builds_privately_and_preindexes_in_the_background() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let before = currents(&root);
    let o = cchq(&root, &["fleet", "preindex-views", "--yes", "--json"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let s: serde_json::Value = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .expect("a summary");
    let release = s["preindex"]["outcome"]["release"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = s["preindex"]["host"].as_str().unwrap().to_owned();
    assert_eq!(currents(&root), before, "nothing switched");
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    assert_eq!(
        host,
        env.inventory.select("django_manage").unwrap().hosts[0]
    );
    let o = cchq(&root, &["fleet", "list-releases", "--json"]);
    let holders: Vec<String> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["name"] == release.as_str())
        .map(|r| r["host"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        holders,
        std::slice::from_ref(&host),
        "the release is on django_manage only"
    );
    let mut done = String::new();
    for _ in 0..40 {
        let o = cchq(
            &root,
            &[
                "fleet",
                "django-manage",
                "--release",
                &release,
                "preindex_everything",
                "--check",
            ],
        );
        done = text(&o.stdout);
        if done.contains("up to date") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(done.contains("up to date"), "{done}");
    let log = s["preindex"]["log"].as_str().unwrap();
    let o = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            &host,
            &format!("cat {log}"),
            "--become-user",
            "cchq",
        ],
    );
    assert!(
        text(&o.stdout).contains("preindex_everything: done"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// One host whose www home refuses the new `current` link (as an immutable www root does; the
/// fleet's tmpfs has no `chattr +i`, so the directory is made read-only for the app user): the
/// deploy fails (exit 8, not "deployed"), the other hosts go back, nothing is split, and once the
/// directory is writable again `--resume` completes.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_host_that_refuses_the_switch_fails_the_deploy_and_nothing_splits() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A known start: every host on one complete release.
    let (o, _) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let before = one_release(&root);
    commit(&root, "switch-fault.txt", "a new commit\n");
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let victim = env.inventory.select("celery").unwrap().hosts[0].clone();
    let home = "/home/cchq/www/fleet";
    let freeze = format!("chown root {home} && chmod 555 {home}");
    assert!(
        cchq(
            &root,
            &["fleet", "run-shell-command", &victim, &freeze, "-b"]
        )
        .status
        .success()
    );
    let (o, events) = deploy_json(&root, &[]);
    let thaw = format!("chmod 755 {home} && chown cchq {home}");
    assert!(
        cchq(&root, &["fleet", "run-shell-command", &victim, &thaw, "-b"])
            .status
            .success()
    );
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let err = text(&o.stderr);
    assert!(err.contains(&victim) && err.contains("switch"), "{err}");
    assert_eq!(
        one_release(&root),
        before,
        "every host is back on the release it had"
    );
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), release);
}

/// Issue 12, `--rollback-on-failure`: a commit whose web program exits at once. The deploy
/// switches every host to it, the first rolling batch never becomes healthy, and every host
/// switches back to the release it had and restarts it: exit 8 (still a failed deploy), the
/// error naming the failed release and the one live again, every web worker serving the previous
/// commit. The repository's head is mended afterwards (the next tests deploy it).
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_release_that_fails_to_start_is_rolled_back_with_rollback_on_failure() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (o, _) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let before = one_release(&root);
    let serving = versions(&root);
    let manage = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-app/manage.py"),
    )
    .unwrap();
    let broken = manage.replace(
        "    sys.exit(commands.main(sys.argv[1:]))",
        "    sys.exit(3 if sys.argv[1:2] == [\"runweb\"] else commands.main(sys.argv[1:]))",
    );
    assert_ne!(
        manage, broken,
        "the demo app's manage.py changed: update this test"
    );
    let bad = commit(&root, "manage.py", &broken);
    let (o, events) = deploy_json(&root, &["--rollback-on-failure"]);
    let mended = commit(&root, "manage.py", &manage);
    assert_ne!(bad, mended);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let err = text(&o.stderr);
    let failed = summary(&events)["release"].as_str().unwrap().to_owned();
    assert!(
        err.contains(&format!("release `{failed}` failed to start")),
        "{err}"
    );
    assert!(
        err.contains(&format!("rolled back: release `{before}` is live again")),
        "{err}"
    );
    let phases: Vec<(&str, &serde_json::Value)> = events
        .iter()
        .filter(|e| e["event"] == "phase")
        .map(|e| (e["phase"].as_str().unwrap(), &e["ok"]))
        .collect();
    assert!(
        phases.contains(&("restart", &serde_json::Value::Bool(false))),
        "{phases:?}"
    );
    assert!(
        phases.contains(&("rollback", &serde_json::Value::Bool(true))),
        "{phases:?}"
    );
    assert_eq!(
        one_release(&root),
        before,
        "every host is back on the release it had"
    );
    assert_eq!(
        versions(&root),
        serving,
        "every web worker serves the previous commit"
    );
    let lock = cchq(&root, &["fleet", "lock", "status"]);
    assert!(
        text(&lock.stdout).contains("is not locked"),
        "{}",
        text(&lock.stdout)
    );
    // The release that failed to start is incomplete on every host, so a later rollback never
    // picks it (it once did, when this test ran before `deploy_new_commits_then_roll_back`).
    let o = cchq(&root, &["fleet", "list-releases", "--json"]);
    let marked: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["name"] == failed.as_str())
        .collect();
    assert!(
        !marked.is_empty() && marked.iter().all(|r| r["complete"] == false),
        "{marked:?}"
    );
    let (o, events) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let good = summary(&events)["outcome"]["release"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = cchq(&root, &["fleet", "rollback", "--yes"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(
        one_release(&root),
        before,
        "the rollback skipped the release that failed to start"
    );
    assert_eq!(versions(&root), serving);
    // Forward again: the newest release is current, as the other tests expect.
    let (o, _) = deploy_json(&root, &["--resume", &good]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), good);
}

/// Starts `cchq fleet deploy --yes --json <extra>` (its stderr to `stderr`: piped only when the
/// caller reads it, with `wait_with_output`) and returns it with a reader of its events.
fn spawn_deploy(
    root: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = cchq_closing(env!("CARGO_BIN_EXE_cchq"), root)
        .args(["fleet", "deploy", "--yes", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// A host lost in the middle of the switch (crashed as its switch runs): its state cannot be read,
/// so the deploy fails naming it, keeps the lock (hosts may be split) and never reports success;
/// once the host is back, `--resume` finishes the switch on every host.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_host_lost_mid_switch_keeps_the_lock_and_resume_finishes() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (o, _) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let victim = env.inventory.select("celery").unwrap().hosts[0].clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    commit(&root, "notes.txt", &format!("lost mid-switch {now}\n"));
    let (child, lines) = spawn_deploy(&root, &[], Stdio::piped());
    let mut events = Vec::new();
    let mut crashed = false;
    for l in lines {
        let l = l.unwrap();
        if !crashed && l.contains(r#""phase":"switch","ok":null"#) {
            fleet("crash", &[&victim]);
            crashed = true;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
            events.push(v);
        }
    }
    let o = child.wait_with_output().unwrap();
    fleet("restore", &[&victim]);
    assert!(crashed, "the deploy never reached its switch");
    let err = text(&o.stderr);
    assert_ne!(
        o.status.code(),
        Some(0),
        "a deploy that lost a host mid-switch never reports success: {err}"
    );
    assert!(err.contains(&victim), "the lost host is named: {err}");
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    if err.contains("lock is kept") {
        let st = text(&cchq(&root, &["fleet", "lock", "status"]).stdout);
        assert!(
            st.contains(&format!("release {release}")),
            "the lock is kept: {st}"
        );
    }
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), release);
}

/// SIGTERM during the build (after a checkout): the deploy stops at its next safe point, releases its lock, exits
/// 143 and nothing switched; `--resume` completes.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn sigterm_during_the_build_stops_cleanly_and_resume_completes() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (o, _) = deploy_json(&root, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let before = one_release(&root);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    commit(&root, "notes.txt", &format!("sigterm {now}\n"));
    let (child, lines) = spawn_deploy(&root, &[], Stdio::piped());
    let mut events = Vec::new();
    let mut sent = false;
    for l in lines {
        let l = l.unwrap();
        // Once a host has its checkout (a release interrupted before any checkout exists
        // nowhere, and there is nothing to resume).
        if !sent && l.contains(r#""step":"checkout","ok":true"#) {
            let ok = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
            sent = true;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
            events.push(v);
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(sent);
    assert_eq!(o.status.code(), Some(143), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--resume"), "{}", text(&o.stderr));
    let st = text(&cchq(&root, &["fleet", "lock", "status"]).stdout);
    assert!(st.contains("is not locked"), "the lock is released: {st}");
    assert_eq!(one_release(&root), before, "nothing switched");
    let release = summary(&events)["release"].as_str().unwrap().to_owned();
    let (o, _) = deploy_json(&root, &["--resume", &release]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(one_release(&root), release);
}

/// `deploy --json | head -1`: the reader goes away after the first line; the deploy carries on to
/// the end (exit 0 only because it finished), every host on the new release, the lock released.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_closed_stdout_never_ends_a_deploy() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let c = commit(&root, "notes.txt", &format!("closed stdout {now}\n"));
    let (child, mut lines) = spawn_deploy(&root, &[], Stdio::piped());
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with('{'), "{first}");
    drop(lines);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("stdout is closed: the deploy carries on"),
        "said once on stderr: {}",
        text(&o.stderr)
    );
    one_release(&root);
    assert!(
        versions(&root).iter().all(|v| v == &c),
        "{:?}",
        versions(&root)
    );
    let st = text(&cchq(&root, &["fleet", "lock", "status"]).stdout);
    assert!(st.contains("is not locked"), "{st}");
}

/// Issue 16: on a terminal (a pty from `script`), a fleet deploy shows a live line per phase
/// (hosts done, the slowest running) and a rolling restart one per batch; the same commands
/// without a terminal show none (the other tests here read them without one).
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn live_progress_on_a_pty_during_a_fleet_deploy_and_rolling_restart() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no script (util-linux) for a pty");
        return;
    }
    ensure_deployed(&root);
    commit(&root, "notes.txt", "on a terminal\n");
    let on_pty = |args: &str| {
        let line = format!(
            "{} --environments {} fleet {args}",
            env!("CARGO_BIN_EXE_cchq"),
            root.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .env("CCHQ_SSH_CONTROL_PERSIST", "no")
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
    for phase in ["build", "restart"] {
        assert!(
            screen.contains("\r\x1b[2K") && screen.contains(&format!(" {phase}")),
            "{phase}: {screen}"
        );
    }
    assert!(
        screen.contains("hosts done") && screen.contains("slowest: fleet"),
        "{screen}"
    );
    assert!(screen.contains("deployed release"), "{screen}");
    let (code, screen) = on_pty("service webworker restart");
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("rolling restart") && screen.contains("hosts done"),
        "{screen}"
    );
    let o = cchq(&root, &["fleet", "service", "webworker", "restart"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !text(&o.stderr).contains("hosts done") && !text(&o.stderr).contains('\r'),
        "{}",
        text(&o.stderr)
    );
}

/// Issue 18: a deploy without kept masters connects to each host once: the diff shown before the
/// confirmation (the log, the program files it would remove) and the deploy share their
/// connections. They made a master each on every host, so a cold deploy paid every connection
/// twice. Counted by an `ssh` on `PATH` that logs its arguments before it runs the real one.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_deploy_connects_to_each_host_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_deployed(&root);
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("ssh.log");
    let real = cchq_core::daily::ansible::which("ssh").expect("no ssh on PATH");
    let real = real.display();
    let wrapper = tmp.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    commit(&root, "notes.txt", "one connection a host\n");
    let path = cchq_tests::path_with(tmp.path());
    let o = cchq_closing(env!("CARGO_BIN_EXE_cchq"), &root)
        .env("PATH", path)
        .args(["fleet", "deploy", "--yes", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains(r#""event":"deploy_diff""#),
        "the diff was shown: {}",
        text(&o.stdout)
    );
    // Each master is one `ssh -M ... DESTINATION`.
    let masters: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().any(|a| a == "-M"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    let hosts: std::collections::BTreeSet<&String> = masters.iter().collect();
    let events: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let deployed = summary(&events)["outcome"]["hosts"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        deployed > 1 && hosts.len() >= deployed,
        "a master on every host deployed to ({deployed}): {masters:?}"
    );
    assert_eq!(hosts.len(), masters.len(), "one master a host: {masters:?}");
}
