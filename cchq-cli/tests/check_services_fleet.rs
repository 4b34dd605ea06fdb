//! `check-services` on the fleet, whose hosts run the real services (tests/fleet/README.md,
//! "Services"): a healthy fleet passes, and each kind of failure — a monit service stopped, a
//! process killed behind monit's back, a system service stopped, a supervisor program stopped, a
//! host unreachable — fails with the host and service named, in the table and in `--json`. Every
//! test puts back what it broke (also when it fails) and waits until the fleet checks healthy
//! again; the tests share the fleet, so they run one at a time.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use cchq_tests::{cchq_closing, fleet, fleet_root, install_demo_release};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());
static SETUP: Once = Once::new();

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

/// `check-services --json`: its exit code and its checks.
fn checks(root: &Path) -> (Option<i32>, Vec<Value>) {
    let out = cchq(root, &["fleet", "check-services", "--json"]);
    let rows = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), rows)
}

/// The failed checks, as `host service what state`.
fn failed(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            format!(
                "{} {} {} {}",
                c["host"].as_str().unwrap(),
                c["service"].as_str().unwrap(),
                c["what"].as_str().unwrap(),
                c["state"].as_str().unwrap()
            )
        })
        .collect()
}

/// Waits (up to 60 s) until `check-services` passes; panics with what still fails.
fn wait_healthy(root: &Path) {
    let start = Instant::now();
    loop {
        let (code, rows) = checks(root);
        if code == Some(0) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the fleet does not check healthy: {:?}",
            failed(&rows)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `cchq fleet <args>` when dropped: puts back what a test broke, even when it fails.
struct Repair {
    root: PathBuf,
    args: Vec<&'static str>,
}

impl Drop for Repair {
    fn drop(&mut self) {
        let out = cchq(&self.root, &self.args);
        if !out.status.success() {
            eprintln!(
                "repair {:?} failed: {}{}",
                self.args,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

fn repair(root: &Path, args: &[&'static str]) -> Repair {
    Repair {
        root: root.to_owned(),
        args: args.to_vec(),
    }
}

/// The app running on its hosts (the demo release, program files applied, every program
/// started), then the whole fleet checking healthy.
fn setup(root: &Path) {
    SETUP.call_once(|| {
        let env = cchq_core::Environment::load(root, "fleet").unwrap();
        let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
        install_demo_release(root, &hosts, "r0");
        let out = cchq(root, &["fleet", "update-supervisor-confs", "--yes"]);
        assert!(
            out.status.success(),
            "update-supervisor-confs: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    });
    let out = cchq(root, &["fleet", "service", "commcare", "start"]);
    assert!(
        out.status.success(),
        "start: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_healthy(root);
}

/// The host of the first member of `group`.
fn first_of(root: &Path, group: &str) -> String {
    let env = cchq_core::Environment::load(root, "fleet").unwrap();
    env.inventory.select(group).unwrap().hosts[0].clone()
}

/// One check expected to fail: host, service, what was checked, state.
type Expected = (String, &'static str, String, &'static str);

/// Asserts that `check-services` fails (exit 1) with exactly the checks `expected` failing, in
/// `--json` and in the table.
fn assert_fails_with(root: &Path, expected: &[Expected]) {
    let (code, rows) = checks(root);
    assert_eq!(code, Some(1), "{rows:?}");
    let mut got = failed(&rows);
    got.sort();
    let mut want: Vec<String> = expected
        .iter()
        .map(|(h, s, w, st)| format!("{h} {s} {w} {st}"))
        .collect();
    want.sort();
    assert_eq!(got, want, "the failed checks");
    let out = cchq(root, &["fleet", "check-services"]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    for (host, service, what, state) in expected {
        assert!(
            table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&host.as_str())
                    && cols.get(1) == Some(service)
                    && l.contains(what.as_str())
                    && l.contains(&format!("{state} !"))
            }),
            "`{host} {service} {what} {state}` is not in the table:\n{table}"
        );
    }
    assert_eq!(
        table.lines().count(),
        expected.len() + 1,
        "only what is wrong is listed:\n{table}"
    );
    let summary = format!(
        "{} of {} checks are not in the expected state",
        expected.len(),
        rows.len()
    );
    assert!(
        text(&out.stderr).contains(&summary),
        "{}",
        text(&out.stderr)
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_healthy_fleet_passes_every_check() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let out = cchq(&root, &["fleet", "check-services"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let (_, rows) = checks(&root);
    assert!(
        text(&out.stdout).contains(&format!("all {} checks passed", rows.len())),
        "{}",
        text(&out.stdout)
    );
    // The data services are checked, on their hosts, both ways: their manager's state and a
    // connection to their port on the host's address.
    let db = first_of(&root, "redis");
    let addr = cchq_core::Environment::load(&root, "fleet")
        .unwrap()
        .ssh_target(&db)
        .address;
    let has = |service: &str, what: &str, state: &str| {
        rows.iter().any(|c| {
            c["host"] == db.as_str()
                && c["service"] == service
                && c["what"] == what
                && c["state"] == state
                && c["ok"] == true
        })
    };
    for (service, what, state) in [
        ("redis", "redis", "OK"),
        ("postgresql", "postgresql", "OK"),
        ("pgbouncer", "pgbouncer", "OK"),
    ] {
        assert!(has(service, what, state), "{service}: {rows:?}");
    }
    for (service, port) in [
        ("redis", 6379),
        ("postgresql", 5432),
        ("pgbouncer", 6432),
        ("nginx", 80),
    ] {
        assert!(
            has(service, &format!("tcp {addr}:{port}"), "open"),
            "{service}: {rows:?}"
        );
    }
    let proxy = first_of(&root, "proxy");
    assert!(
        rows.iter().any(|c| c["host"] == proxy.as_str()
            && c["what"] == "nginx"
            && c["state"] == "running"),
        "{rows:?}"
    );
    // Services that cannot run on the fleet are not in its environment, so not checked.
    for absent in ["couchdb2", "elasticsearch", "kafka", "zookeeper"] {
        assert!(
            !rows.iter().any(|c| c["service"] == absent),
            "{absent}: {rows:?}"
        );
    }
    // The app's programs and ports too.
    for service in ["webworker", "celery", "pillowtop", "formplayer"] {
        assert!(
            rows.iter().any(|c| c["service"] == service),
            "{service}: {rows:?}"
        );
    }
}

/// A monit service stopped through cchq (`monit stop`): monit says `Not monitored`, and its port
/// is closed; nothing else fails. Starting it again makes the fleet healthy.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_stopped_monit_service_fails_its_two_checks() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "redis");
    let addr = cchq_core::Environment::load(&root, "fleet")
        .unwrap()
        .ssh_target(&host)
        .address;
    for (service, port) in [("redis", 6379), ("postgresql", 5432)] {
        let _r = repair(&root, &["fleet", "service", service, "start"]);
        let out = cchq(&root, &["fleet", "service", service, "stop"]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l.starts_with(&host) && l.contains("Not monitored")),
            "{}",
            text(&out.stdout)
        );
        assert_fails_with(
            &root,
            &[
                (host.clone(), service, service.to_owned(), "Not monitored"),
                (
                    host.clone(),
                    service,
                    format!("tcp {addr}:{port}"),
                    "closed",
                ),
            ],
        );
        let out = cchq(&root, &["fleet", "service", service, "start"]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l.starts_with(&host) && l.contains("OK")),
            "{}",
            text(&out.stdout)
        );
        wait_healthy(&root);
    }
}

/// A process killed behind monit's back: monit still says OK until its next cycle (2 minutes),
/// but its port is closed at once. `service pgbouncer start` (monit) starts it again.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_killed_process_fails_its_port_check() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "pgbouncer");
    let addr = cchq_core::Environment::load(&root, "fleet")
        .unwrap()
        .ssh_target(&host)
        .address;
    let _r = repair(&root, &["fleet", "service", "pgbouncer", "start"]);
    // Not just before monit's next cycle (every 120 s), which would start it again. In the host's
    // pid namespace only its own pgbouncer is seen, and killed.
    let kill = "c=$(date -d \"$(monit status pgbouncer | sed -n 's/^ *data collected *//p')\" +%s); a=$(( $(date +%s) - c )); \
                if [ $a -gt 100 ]; then sleep $((125 - a)); fi; pkill -KILL -x pgbouncer && sleep 0.2 && ! pgrep -x pgbouncer";
    let out = cchq(&root, &["fleet", "run-shell-command", &host, kill, "-b"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_fails_with(
        &root,
        &[(
            host.clone(),
            "pgbouncer",
            format!("tcp {addr}:6432"),
            "closed",
        )],
    );
    let out = cchq(&root, &["fleet", "service", "pgbouncer", "start"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_healthy(&root);
}

/// A system service stopped (`service nginx stop`, the init script here): `stopped`, and its port
/// is closed.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_stopped_system_service_fails_its_two_checks() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "proxy");
    let addr = cchq_core::Environment::load(&root, "fleet")
        .unwrap()
        .ssh_target(&host)
        .address;
    let _r = repair(&root, &["fleet", "service", "nginx", "start"]);
    let out = cchq(
        &root,
        &["fleet", "service", "nginx", "stop", "--limit", &host],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_fails_with(
        &root,
        &[
            (host.clone(), "nginx", "nginx".to_owned(), "stopped"),
            (host.clone(), "nginx", format!("tcp {addr}:80"), "closed"),
        ],
    );
    let out = cchq(
        &root,
        &["fleet", "service", "nginx", "start", "--limit", &host],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("running"),
        "{}",
        text(&out.stdout)
    );
    wait_healthy(&root);
}

/// A supervisor program stopped: `STOPPED` on its host, under its service; a program without a
/// port fails that one check only.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_stopped_supervisor_program_fails_its_check() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "pillowtop");
    let _r = repair(&root, &["fleet", "service", "pillowtop", "start"]);
    let out = cchq(&root, &["fleet", "service", "pillowtop", "stop"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_fails_with(
        &root,
        &[(
            host.clone(),
            "pillowtop",
            "commcare-hq-fleet-pillowtop-AppDbChangeFeedPillow-0".to_owned(),
            "STOPPED",
        )],
    );
    let out = cchq(&root, &["fleet", "service", "pillowtop", "start"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_healthy(&root);
}

/// A host that cannot be reached is one failed check, `ssh UNREACHABLE`, naming it.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn an_unreachable_host_fails_as_unreachable() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "formplayer");
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            fleet("restore", &[&self.0]);
        }
    }
    fleet("cut", &[&host]);
    let restore = Restore(host.clone());
    let (code, rows) = checks(&root);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed(&rows),
        [format!("{host} - ssh UNREACHABLE")],
        "{rows:?}"
    );
    drop(restore);
    wait_healthy(&root);
}

/// After a power cut and a reboot of the data services' host, its init starts them again
/// (PostgreSQL recovers from the crash) and the fleet checks healthy.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_crashed_and_rebooted_services_host_checks_healthy_again() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let host = first_of(&root, "postgresql");
    fleet("crash", &[&host]);
    let (code, rows) = checks(&root);
    fleet("restore", &[&host]);
    assert_eq!(code, Some(1));
    assert!(
        failed(&rows).contains(&format!("{host} - ssh UNREACHABLE")),
        "{rows:?}"
    );
    // A rebooted host's supervisord starts what is marked autostart; start the rest as an
    // operator would (`after-reboot`), then everything is healthy.
    let out = cchq(&root, &["fleet", "after-reboot", "--limit", &host, "all"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_healthy(&root);
}
