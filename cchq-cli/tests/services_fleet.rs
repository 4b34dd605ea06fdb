//! `service` and `update-supervisor-confs` against real supervisord on the fleet.
//! The tests share the fleet's programs, so they run one at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, Once};

use cchq_tests::{cchq_closing, fleet, fleet_root, install_demo_release};

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

/// Brings the fleet to a known state: demo release installed, program files applied, all running.
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
}

/// `(host, program) -> (state, pid)` from `service <svc> status --json`.
fn states(root: &Path, svc: &str) -> BTreeMap<(String, String), (String, Option<u64>)> {
    let out = cchq(root, &["fleet", "service", svc, "status", "--json"]);
    let mut m = BTreeMap::new();
    for l in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let detail = v["detail"].as_str().unwrap_or("");
        let pid = detail
            .strip_prefix("pid ")
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.parse().ok());
        m.insert(
            (
                v["host"].as_str().unwrap().to_owned(),
                v["program"].as_str().unwrap_or("-").to_owned(),
            ),
            (v["state"].as_str().unwrap().to_owned(), pid),
        );
    }
    m
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn commcare_status_shows_every_program_running() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let out = cchq(&root, &["fleet", "service", "commcare", "status"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let st = states(&root, "commcare");
    assert!(st.len() >= 5, "{st:?}");
    assert!(
        st.values().all(|(s, pid)| s == "RUNNING" && pid.is_some()),
        "{st:?}"
    );
    assert!(st.keys().any(|(_, p)| p == "commcare-hq-fleet-django"));
    assert!(
        st.keys()
            .any(|(_, p)| p.starts_with("commcare-hq-fleet-pillowtop-AppDbChangeFeedPillow-"))
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn restart_changes_pids_of_exactly_the_service_named() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let before = states(&root, "commcare");
    let out = cchq(&root, &["fleet", "service", "celery", "restart"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let after = states(&root, "commcare");
    for (k, (state, pid)) in &after {
        assert_eq!(state, "RUNNING", "{k:?}");
        let celery = k.1.contains("celery");
        assert_eq!(
            pid != &before[k].1,
            celery,
            "{k:?}: pid changed = {}, expected {celery}",
            pid != &before[k].1
        );
    }
}

/// A restart stops a host's programs side by side and starts them side by side (each start waits
/// for its program's `startsecs`, 1 s here): after it, every restarted program on a host came up
/// within the same second or the next. One at a time, the third would be two seconds younger
/// than the first.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_restart_starts_a_hosts_programs_side_by_side() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let out = cchq(&root, &["fleet", "service", "celery", "restart"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = cchq(&root, &["fleet", "service", "celery", "status", "--json"]);
    let mut uptimes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["state"], "RUNNING", "{l}");
        let detail = v["detail"].as_str().unwrap_or("");
        let uptime = detail
            .split("uptime ")
            .nth(1)
            .map(|u| {
                u.split(':').fold(0u64, |acc, p| {
                    acc * 60 + p.trim().parse::<u64>().unwrap_or(0)
                })
            })
            .unwrap_or_else(|| panic!("no uptime in {l}"));
        uptimes
            .entry(v["host"].as_str().unwrap().to_owned())
            .or_default()
            .push(uptime);
    }
    let (host, ups) = uptimes
        .iter()
        .max_by_key(|(_, u)| u.len())
        .expect("celery programs");
    assert!(
        ups.len() >= 3,
        "a host with three celery programs or more: {uptimes:?}"
    );
    let spread = ups.iter().max().unwrap() - ups.iter().min().unwrap();
    assert!(
        spread <= 1,
        "{host}: uptimes {ups:?}: started one after the other"
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn only_and_limit_touch_exactly_what_they_name() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let web = cchq(&root, &["fleet", "hosts", "webworkers"]);
    let first_web = text(&web.stdout)
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = cchq(
        &root,
        &[
            "fleet",
            "service",
            "webworker",
            "stop",
            "--limit",
            &first_web,
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let st = states(&root, "commcare");
    for ((host, prog), (state, _)) in &st {
        let expect = if host == &first_web && prog.ends_with("-django") {
            "STOPPED"
        } else {
            "RUNNING"
        };
        assert_eq!(state, expect, "{host} {prog}");
    }
    // The process is really gone on that host.
    let ps = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            &first_web,
            "pgrep -f '[m]anage.py runweb' || true",
        ],
    );
    assert!(
        !text(&ps.stdout)
            .lines()
            .skip(1)
            .any(|l| l.trim().parse::<u32>().is_ok()),
        "{}",
        text(&ps.stdout)
    );
    let out = cchq(
        &root,
        &["fleet", "service", "celery", "stop", "--only", "beat"],
    );
    assert!(out.status.success());
    let st = states(&root, "celery");
    for ((_, prog), (state, _)) in &st {
        assert_eq!(
            state,
            if prog.ends_with("-celerybeat") {
                "STOPPED"
            } else {
                "RUNNING"
            },
            "{prog}"
        );
    }
    let out = cchq(&root, &["fleet", "service", "commcare", "start"]);
    assert!(out.status.success());
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn webworker_restart_rolls_over_every_web_host() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let before = states(&root, "webworker");
    let out = cchq(&root, &["fleet", "service", "webworker", "restart"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("rolling restart"),
        "{}",
        text(&out.stderr)
    );
    let after = states(&root, "webworker");
    for (k, (state, pid)) in &after {
        assert_eq!(state, "RUNNING");
        assert_ne!(pid, &before[k].1, "{k:?} was restarted");
    }
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn an_unreachable_host_is_reported_while_the_others_complete() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let victim = env.inventory.select("formplayer").unwrap().hosts[0].clone();
    fleet("cut", &[&victim]);
    let out = cchq(&root, &["fleet", "service", "commcare", "status"]);
    fleet("restore", &[&victim]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&victim) && l.contains("UNREACHABLE")),
        "{stdout}"
    );
    assert!(
        stdout.lines().filter(|l| l.contains("RUNNING")).count() >= 4,
        "{stdout}"
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn bad_service_input_changes_nothing() {
    let Some(root) = fleet_root() else { return };
    let out = cchq(&root, &["fleet", "service", "webwrker", "stop"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("unknown service `webwrker`"));
    let out = cchq(
        &root,
        &["fleet", "service", "celery", "stop", "--only", "x;reboot"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = cchq(&root, &["fleet", "service", "celery", "explode"]);
    assert_eq!(out.status.code(), Some(2));
}

fn all_states(root: &Path) -> Vec<String> {
    states(root, "commcare")
        .into_values()
        .map(|(s, _)| s)
        .collect()
}

/// The fleet environment's www home on its hosts.
const WWW_HOME: &str = "/home/cchq/www/fleet";

/// Leaves a process of the fleet environment (the app user, working in its www home) running on
/// `host` (in its own session, so that sudo's pty teardown does not take it along), and checks it
/// is there.
fn linger(root: &Path, host: &str, seconds: u32) {
    linger_in(root, host, seconds, WWW_HOME);
}

/// Kills what an earlier (failed) run of these tests left lingering, and ends its downtime.
fn no_sleepers(root: &Path) {
    cchq(
        root,
        &[
            "fleet",
            "run-shell-command",
            "all",
            "pkill -u cchq -x sleep; true",
            "-b",
        ],
    );
    cchq(root, &["fleet", "downtime", "end", "--yes"]);
}

/// [`linger`], working in `dir`.
fn linger_in(root: &Path, host: &str, seconds: u32, dir: &str) {
    let start = format!(
        "mkdir -p {dir} && cd {dir} && setsid -f sleep {seconds} >/dev/null 2>&1 </dev/null"
    );
    let out = cchq(
        root,
        &[
            "fleet",
            "run-shell-command",
            host,
            &start,
            "--become-user",
            "cchq",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let check = format!("pgrep -u cchq -f '[s]leep {seconds}$' >/dev/null");
    let ok = (0..20).any(|_| {
        let found = cchq(root, &["fleet", "run-shell-command", host, &check])
            .status
            .success();
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        found
    });
    assert!(
        ok,
        "the lingering `sleep {seconds}` did not start on {host}"
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn downtime_stops_everything_kills_lingering_processes_and_ends() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    no_sleepers(&root);
    linger(&root, "fleet2", 1000);
    // Processes of the same user that are not this environment's: another environment's
    // (`/www/fleet2` is not under `/www/fleet`) and the operator's own, in the home directory.
    linger_in(&root, "fleet2", 1001, "/home/cchq/www/fleet2");
    linger_in(&root, "fleet2", 1002, "/home/cchq");
    let out = cchq(
        &root,
        &[
            "fleet",
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "kill",
            "-m",
            "db upgrade",
            "-d",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("still running") && err.contains("sleep 1000"),
        "the lingering sleep was found: {err}"
    );
    assert!(
        !err.contains("sleep 1001") && !err.contains("sleep 1002"),
        "only this environment's processes are listed: {err}"
    );
    assert!(
        err.contains("will kill (SIGKILL) pid"),
        "what will be killed is shown first: {err}"
    );
    assert!(
        all_states(&root).iter().all(|s| s == "STOPPED"),
        "{:?}",
        all_states(&root)
    );
    let ps = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet2",
            "ps -u cchq -o args= | grep '[s]leep 100' | sort || true",
        ],
    );
    assert!(
        !text(&ps.stdout).contains("sleep 1000"),
        "the lingering process was killed: {}",
        text(&ps.stdout)
    );
    assert!(
        text(&ps.stdout).contains("sleep 1001") && text(&ps.stdout).contains("sleep 1002"),
        "the other processes of the user are alive: {}",
        text(&ps.stdout)
    );
    cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet2",
            "pkill -u cchq -f 'sleep 100[12]'; true",
            "-b",
        ],
    );
    let st = cchq(&root, &["fleet", "downtime", "status"]);
    assert!(
        text(&st.stdout).contains("in progress") && text(&st.stdout).contains("db upgrade"),
        "{}",
        text(&st.stdout)
    );
    // A second start is refused, clearly.
    let again = cchq(
        &root,
        &[
            "fleet",
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "continue",
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already in progress"),
        "{}",
        text(&again.stderr)
    );
    let end = cchq(&root, &["fleet", "downtime", "end", "--yes"]);
    assert!(
        end.status.success(),
        "{}{}",
        text(&end.stdout),
        text(&end.stderr)
    );
    assert!(
        all_states(&root).iter().all(|s| s == "RUNNING"),
        "{:?}",
        all_states(&root)
    );
    let end_again = cchq(&root, &["fleet", "downtime", "end", "--yes"]);
    assert_eq!(end_again.status.code(), Some(1));
    assert!(text(&end_again.stderr).contains("no downtime in progress"));
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn downtime_abort_wait_and_continue_do_what_they_say() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    no_sleepers(&root);
    // abort: everything starts again and there is no downtime.
    linger(&root, "fleet3", 1000);
    let out = cchq(
        &root,
        &[
            "fleet",
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "abort",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(all_states(&root).iter().all(|s| s == "RUNNING"));
    assert!(text(&cchq(&root, &["fleet", "downtime", "status"]).stdout).contains("no downtime"));
    cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet3",
            "pkill -u cchq -f 'sleep 1000'; true",
            "-b",
        ],
    );
    // wait: a process that ends by itself is waited for.
    linger(&root, "fleet3", 8);
    let out = cchq(
        &root,
        &[
            "fleet",
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "wait",
            "--wait-seconds",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("waiting 1 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        cchq(&root, &["fleet", "downtime", "end", "--yes"])
            .status
            .success()
    );
    // continue: the downtime goes on with the process still there.
    linger(&root, "fleet3", 1000);
    let out = cchq(
        &root,
        &[
            "fleet",
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "continue",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let ps = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet3",
            "pgrep -u cchq -f '[s]leep 1000' >/dev/null && echo alive",
        ],
    );
    assert!(text(&ps.stdout).contains("alive"));
    cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "fleet3",
            "pkill -u cchq -f 'sleep 1000'; true",
            "-b",
        ],
    );
    assert!(
        cchq(&root, &["fleet", "downtime", "end", "--yes"])
            .status
            .success()
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn after_reboot_starts_supervisord_and_its_programs() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let host = env.inventory.select("celery").unwrap().hosts[0].clone();
    let out = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            &host,
            "supervisorctl shutdown; while pgrep -x supervisord >/dev/null; do sleep 0.2; done",
            "-b",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cchq(&root, &["fleet", "after-reboot", "all"]);
    assert_eq!(out.status.code(), Some(2), "--limit is required");
    let out = cchq(&root, &["fleet", "after-reboot", "--limit", &host, "all"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("supervisord started"),
        "{}",
        text(&out.stdout)
    );
    let st = states(&root, "commcare");
    assert!(
        st.iter()
            .filter(|((h, _), _)| h == &host)
            .all(|(_, (s, _))| s == "RUNNING"),
        "{st:?}"
    );
}

#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn check_services_lists_what_is_wrong() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let app = [
        "fleet",
        "check-services",
        "webworker",
        "celery",
        "pillowtop",
        "formplayer",
    ];
    let out = cchq(&root, &app);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("checks passed"));
    assert!(
        cchq(
            &root,
            &["fleet", "service", "webworker", "stop", "--limit", "fleet3"]
        )
        .status
        .success()
    );
    let out = cchq(&root, &app);
    cchq(
        &root,
        &[
            "fleet",
            "service",
            "webworker",
            "start",
            "--limit",
            "fleet3",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("fleet3") && l.contains("STOPPED")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("fleet3")
            && l.contains("tcp 127.0.0.13:9010")
            && l.contains("closed")),
        "{stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("fleet2")),
        "only what is wrong is listed: {stdout}"
    );
}

/// Where a host has no `curl`, the few lines of `python3` carry the same request; a socket where
/// supervisord does not listen is an error that names it.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn the_python_relay_reads_the_same_states_and_a_wrong_socket_is_named() {
    use cchq_core::services::{supervisor, xmlrpc};
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let host = "fleet2".to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = env.transport(Some(std::slice::from_ref(&host))).unwrap();
        let body = supervisor::action_bodies("status", &[]).unwrap();
        let out = t
            .exec(
                &host,
                &supervisor::rpc_command_python(&env.profile.supervisor_socket, &body),
            )
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr_str());
        let text = out.stdout_str();
        let answer = text.split(supervisor::RPC_SEPARATOR).next().unwrap();
        let v = xmlrpc::parse_response(answer).unwrap().unwrap();
        let via_python = format!("{v:?}");
        let (_, states) = supervisor::call(
            t.as_ref(),
            &host,
            &env.profile.supervisor_socket,
            "status",
            &[],
        )
        .await
        .unwrap();
        assert!(
            !states.is_empty() && states.iter().all(|s| via_python.contains(&s.name)),
            "{states:?} vs {via_python}"
        );
        let err = supervisor::call(t.as_ref(), &host, "/run/nothing-here.sock", "status", &[])
            .await
            .unwrap_err();
        assert!(
            err.message().contains("/run/nothing-here.sock")
                && err.hint().unwrap().contains("after-reboot"),
            "{err:?}"
        );
        let out = t
            .exec(
                &host,
                &supervisor::rpc_command_python("/run/nothing-here.sock", &body),
            )
            .await
            .unwrap();
        assert!(
            !out.success()
                && out
                    .stderr_str()
                    .contains("cannot connect to /run/nothing-here.sock"),
            "{}",
            out.stderr_str()
        );
        let _ = t.close().await;
    });
}

/// `name STATE pid` of the programs that are not the fleet environment's on `host`: another
/// environment's (`commcare-hq-other-django`, running in `/home/cchq/www/other`) and the
/// operator's own (`operator-tool`), in the same supervisord.
fn foreign(root: &Path, host: &str, socket: &str) -> Vec<String> {
    let cmd = format!(
        "supervisorctl -s unix://{socket} status commcare-hq-other-django operator-tool || true"
    );
    let out = cchq(
        root,
        &["fleet", "run-shell-command", host, &cmd, "-b", "--json"],
    );
    let v: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().unwrap_or("{}")).unwrap_or_default();
    let stdout = v["stdout"].as_str().unwrap_or_default().to_owned();
    let mut lines: Vec<String> = stdout
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // name STATE [pid N,]
            format!(
                "{} {} {}",
                w.first().unwrap_or(&""),
                w.get(1).unwrap_or(&""),
                w.get(3).unwrap_or(&"").trim_end_matches(',')
            )
        })
        .collect();
    lines.sort();
    lines
}

/// Two environments (and an operator's own program) in one supervisord on the same hosts: every
/// `service`, `downtime`, `after-reboot`, `update-supervisor-confs` and `deploy` of `fleet` leaves the
/// others' programs exactly as they were (same state, same pid).
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn another_environments_programs_are_never_touched() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    no_sleepers(&root);
    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let (dir, socket) = (
        env.profile.supervisor_conf_dir.clone(),
        env.profile.supervisor_socket.clone(),
    );
    let hosts: Vec<String> = env
        .inventory
        .select("webworkers:celery:pillowtop")
        .unwrap()
        .hosts;
    let conf = "[program:commcare-hq-other-django]\ncommand=sleep 100000\ndirectory=/home/cchq/www/other\nuser=cchq\nautostart=true\n\n\
                [program:operator-tool]\ncommand=sleep 100001\nuser=cchq\nautostart=true\n";
    let install = format!(
        "mkdir -p /home/cchq/www/other && chown cchq /home/cchq/www/other && printf %s '{conf}' > {dir}/other_supervisor_django.conf && \
         supervisorctl -s unix://{socket} update >/dev/null && sleep 1"
    );
    let out = cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "webworkers:celery:pillowtop",
            &install,
            "-b",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let snapshot = |root: &Path| -> Vec<Vec<String>> {
        hosts.iter().map(|h| foreign(root, h, &socket)).collect()
    };
    let before = snapshot(&root);
    assert!(
        before
            .iter()
            .all(|l| l.len() == 2 && l.iter().all(|s| s.contains(" RUNNING "))),
        "{before:?}"
    );
    for args in [
        &["service", "commcare", "stop"][..],
        &["service", "commcare", "start"],
        &["service", "commcare", "restart"],
        &["service", "celery", "restart"],
        &[
            "downtime",
            "start",
            "--yes",
            "--on-lingering",
            "kill",
            "-m",
            "two environments",
        ],
        &["downtime", "end", "--yes"],
        &["update-supervisor-confs", "--yes"],
        &["deploy", "--yes"],
    ] {
        let mut full = vec!["fleet"];
        full.extend_from_slice(args);
        let out = cchq(&root, &full);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(
            snapshot(&root),
            before,
            "`{}` left the other programs alone",
            args.join(" ")
        );
    }
    // A changed file of the other environment is not applied by the fleet's update.
    let edit = format!("sed -i 's/sleep 100000/sleep 100002/' {dir}/other_supervisor_django.conf");
    assert!(
        cchq(
            &root,
            &[
                "fleet",
                "run-shell-command",
                "webworkers:celery:pillowtop",
                &edit,
                "-b"
            ]
        )
        .status
        .success()
    );
    let out = cchq(&root, &["fleet", "update-supervisor-confs"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        snapshot(&root),
        before,
        "the other environment's changed file was not applied"
    );
    // after-reboot starts this environment's programs, not a stopped program of someone else.
    let stop = format!("supervisorctl -s unix://{socket} stop operator-tool >/dev/null");
    assert!(
        cchq(
            &root,
            &[
                "fleet",
                "run-shell-command",
                "webworkers:celery:pillowtop",
                &stop,
                "-b"
            ]
        )
        .status
        .success()
    );
    let stopped = snapshot(&root);
    let out = cchq(
        &root,
        &[
            "fleet",
            "after-reboot",
            "--limit",
            "webworkers:celery:pillowtop",
            "all",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let after = snapshot(&root);
    assert_eq!(
        after, stopped,
        "after-reboot left the operator's stopped program stopped"
    );
    assert!(
        after
            .iter()
            .all(|l| l.iter().any(|s| s.starts_with("operator-tool STOPPED"))),
        "{after:?}"
    );
    let clean = format!(
        "rm -f {dir}/other_supervisor_django.conf && supervisorctl -s unix://{socket} update >/dev/null; rm -rf /home/cchq/www/other"
    );
    cchq(
        &root,
        &[
            "fleet",
            "run-shell-command",
            "webworkers:celery:pillowtop",
            &clean,
            "-b",
        ],
    );
}

/// Issue 13 on real hosts: the fleet's `app-processes.yml` with its celery hosts under one
/// comma-separated key plans the same program files (`--check` exits 0, nothing to change); a
/// key that also names a host the inventory lacks stops `update-supervisor-confs` and `deploy`
/// (exit 3) with every program file and program in place.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn comma_separated_keys_plan_the_same_files_and_a_bad_key_removes_nothing() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setup(&root);
    let out = cchq(&root, &["fleet", "update-supervisor-confs", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let env = cchq_core::Environment::load(&root, "fleet").unwrap();
    let celery: Vec<String> = env
        .inventory
        .group_hosts("celery")
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let original = std::fs::read_to_string(root.join("fleet/app-processes.yml")).unwrap();
    let (head, rest) = original.split_once("celery_processes:\n").unwrap();
    let pillows = &rest[rest.find("pillows:\n").unwrap()..];
    // The queues tests/fleet/up gives every celery host.
    let queues = "background_queue,analytics_queue,case_rule_queue,case_import_queue,celery,email_queue,export_download_queue,\
                  reminder_case_update_queue,reminder_rule_queue,repeat_record_queue,saved_exports_queue";
    let with_keys = |others: &str| {
        let mut s = format!(
            "{head}celery_processes:\n  {}:\n    beat: {{}}\n    {queues}:\n      concurrency: 1\n    flower: {{}}\n",
            celery[0]
        );
        if !others.is_empty() {
            s.push_str(&format!(
                "  {others}:\n    {queues}:\n      concurrency: 1\n"
            ));
        }
        s.push_str(pillows);
        s
    };
    let copy = |text: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(root.join("fleet"))
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::write(tmp.path().join("fleet/app-processes.yml"), text).unwrap();
        tmp
    };

    let others = celery[1..].join(",");
    let same = copy(&with_keys(&others));
    let out = cchq(
        same.path(),
        &["fleet", "update-supervisor-confs", "--check"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "comma-separated keys, same files: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let bad_key = if others.is_empty() {
        "nohost".to_owned()
    } else {
        format!("{others},nohost")
    };
    let bad = copy(&with_keys(&bad_key));
    for args in [
        &["fleet", "update-supervisor-confs", "--yes", "--empty-hosts"][..],
        &["fleet", "deploy", "--yes"],
    ] {
        let out = cchq(bad.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("does not validate") && err.contains("no host or group `nohost`"),
            "{args:?}: {err}"
        );
    }
    let out = cchq(&root, &["fleet", "update-supervisor-confs", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "every file still in place: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let st = states(&root, "celery");
    assert!(
        !st.is_empty() && st.values().all(|(s, _)| s == "RUNNING"),
        "{st:?}"
    );
}

/// A killed run leaves its control sockets (and, for a while, its masters); the next run cleans
/// them: the folder of the dead run in cchq's private directory is gone and its masters exited.
/// Nothing is left in the system's temporary directory.
#[test]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
fn a_killed_runs_control_sockets_and_masters_are_cleaned_by_the_next_run() {
    let Some(root) = fleet_root() else { return };
    let _s = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runs = cchq_core::transport::ssh::persist_dir()
        .unwrap()
        .join("run");
    let tmp_before = ssh_dirs_in_tmp();
    let mut child = cchq_closing(env!("CARGO_BIN_EXE_cchq"), &root)
        .args(["fleet", "run-shell-command", "all", "sleep 30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = runs.join(child.id().to_string());
    // Wait until its masters are up (one socket folder per host), then kill it.
    let mut sockets = 0;
    for _ in 0..100 {
        sockets = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        if sockets >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        sockets >= 2,
        "the probe opened its masters in {}",
        dir.display()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.exists(), "a killed run leaves its folder");
    let masters = |d: &std::path::Path| {
        let o = std::process::Command::new("pgrep")
            .arg("-f")
            .arg(d.display().to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert!(masters(&dir) > 0, "and its masters");
    // The next run cleans up.
    let out = cchq(&root, &["fleet", "run-shell-command", "fleet1", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.exists(), "the dead run's folder is removed");
    // `ssh -O exit` is answered before the master has gone: give it a moment.
    let mut left = masters(&dir);
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = masters(&dir);
    }
    assert_eq!(left, 0, "its masters were told to exit");
    assert_eq!(
        ssh_dirs_in_tmp(),
        tmp_before,
        "nothing in the system's temporary directory"
    );
}

fn ssh_dirs_in_tmp() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".ssh-connection")
                })
                .count()
        })
        .unwrap_or(0)
}
