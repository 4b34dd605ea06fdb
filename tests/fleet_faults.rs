//! Faults on the fleet: unreachable hosts, crashed hosts, wrong host keys. These tests change the
//! fleet (cut, crash, restore), so they run one after another in this one test binary, on the
//! last host only.

use tokio::sync::Mutex;

use cchq_core::transport::Transport;
use cchq_core::{Environment, ErrorKind, RemoteCommand};
use cchq_tests::{fleet, fleet_root};

static SERIAL: Mutex<()> = Mutex::const_new(());

fn last_host(env: &Environment) -> String {
    env.inventory.hosts().last().unwrap().name.clone()
}

/// A transport whose masters end with it and which takes over none kept by earlier runs: a cut
/// host (its sshd listener stopped, open sessions left alone) is still reached by a kept master.
fn closing_transport(
    env: &Environment,
    hosts: &[String],
) -> cchq_core::transport::ssh::SshTransport {
    let mut opts = env.ssh_options().unwrap();
    opts.persist = None;
    cchq_core::transport::ssh::SshTransport::new(
        hosts.iter().map(|h| env.ssh_target(h)).collect(),
        opts,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn a_cut_host_is_unreachable_while_the_others_complete() {
    let Some(root) = fleet_root() else { return };
    let _serial = SERIAL.lock().await;
    let env = Environment::load(&root, "fleet").unwrap();
    let victim = last_host(&env);
    fleet("cut", &[&victim]);
    let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
    let t = closing_transport(&env, &hosts);
    let results = cchq_core::fanout::run_on_hosts(
        &t,
        &hosts,
        &RemoteCommand::new("hostname"),
        64,
        "hostname",
        &cchq_core::events::NullSink,
    )
    .await;
    fleet("restore", &[&victim]);
    for r in &results {
        if r.host == victim {
            let err = r.result.as_ref().expect_err("the cut host fails");
            assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
            assert!(
                err.message().contains(&victim) && err.hint().is_some(),
                "{err} / {:?}",
                err.hint()
            );
        } else {
            assert_eq!(
                r.result.as_ref().unwrap().stdout_str().trim(),
                r.host,
                "the others still complete"
            );
        }
    }
    // Back: a new connection works again, through the same transport.
    let out = t
        .exec(&victim, &RemoteCommand::new("hostname"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), victim);
    t.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn a_crashed_host_loses_its_master_and_reconnects_after_reboot() {
    let Some(root) = fleet_root() else { return };
    let _serial = SERIAL.lock().await;
    let env = Environment::load(&root, "fleet").unwrap();
    let victim = last_host(&env);
    let t = closing_transport(&env, std::slice::from_ref(&victim));
    t.exec(&victim, &RemoteCommand::new("true")).await.unwrap();
    fleet("crash", &[&victim]);
    let err = t
        .exec(&victim, &RemoteCommand::new("hostname"))
        .await
        .expect_err("a crashed host fails");
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    fleet("restore", &[&victim]);
    // The host booted again (same host key) and the dead master was dropped: cchq reconnects.
    let mut last = None;
    for _ in 0..3 {
        match t.exec(&victim, &RemoteCommand::new("hostname")).await {
            Ok(out) => {
                last = None;
                assert_eq!(out.stdout_str().trim(), victim);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    assert!(last.is_none(), "reconnect after reboot failed: {last:?}");
    t.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn an_unknown_host_key_is_refused_with_a_hint() {
    let Some(root) = fleet_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(root.join("fleet")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("known_hosts"), "").unwrap();
    let env = Environment::load(tmp.path(), "fleet").unwrap();
    let host = env.inventory.hosts().next().unwrap().name.clone();
    let t = env.transport(Some(std::slice::from_ref(&host))).unwrap();
    let err = t
        .exec(&host, &RemoteCommand::new("true"))
        .await
        .expect_err("strict host key checking refuses");
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(
        err.hint().unwrap_or_default().contains("known_hosts"),
        "{err} / {:?}",
        err.hint()
    );
}

/// The `.ssh-connection*` folders (one per kept master) under `dir`.
fn kept(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for host_dir in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(host_dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn kept_masters_are_taken_over_by_the_next_run_and_replaced_once_dead() {
    use cchq_core::transport::ssh::SshTransport;
    let Some(root) = fleet_root() else { return };
    let _serial = SERIAL.lock().await;
    let env = Environment::load(&root, "fleet").unwrap();
    let victim = last_host(&env);
    let keep = tempfile::tempdir().unwrap();
    let mut opts = env.ssh_options().unwrap();
    opts.persist = Some(std::time::Duration::from_secs(30));
    opts.persist_dir = Some(keep.path().to_path_buf());
    let run = |opts: cchq_core::transport::ssh::SshOptions| {
        let target = env.ssh_target(&victim);
        async move {
            let t = SshTransport::new(vec![target], opts).unwrap();
            let out = t
                .exec(&victim_name(&t), &RemoteCommand::new("hostname"))
                .await;
            t.close().await.unwrap();
            out
        }
    };
    fn victim_name(t: &SshTransport) -> String {
        t.hosts()[0].clone()
    }
    // First run: a master is made and kept after close.
    assert_eq!(run(opts.clone()).await.unwrap().stdout_str().trim(), victim);
    let first = kept(keep.path());
    assert_eq!(first.len(), 1, "one kept master: {first:?}");
    // Second run: taken over, not a second one.
    assert_eq!(run(opts.clone()).await.unwrap().stdout_str().trim(), victim);
    assert_eq!(kept(keep.path()), first, "the kept master is reused");
    // The host crashes and comes back: the kept master died with its connection; the next run
    // does not use it and connects again. (Its folder goes once older than a master may take to
    // start: a younger one may be another run's master still starting, and is left alone.)
    fleet("crash", &[&victim]);
    fleet("restore", &[&victim]);
    let out = run(opts.clone()).await;
    let now = kept(keep.path());
    assert_eq!(
        out.unwrap().stdout_str().trim(),
        victim,
        "a new connection after the crash"
    );
    let new: Vec<&String> = now.iter().filter(|f| !first.contains(f)).collect();
    assert_eq!(
        new.len(),
        1,
        "the dead master was replaced by a new one: {now:?}"
    );
    // Without persist, close ends the masters again (and takes over nothing).
    let mut off = opts.clone();
    off.persist = None;
    assert!(run(off).await.is_ok());
    // Clean up the kept master.
    for folder in kept(keep.path()) {
        let _ = std::process::Command::new("ssh")
            .args(["-S", &format!("{folder}/master"), "-O", "exit", "x"])
            .output();
    }
}

/// A master idle past its `ControlPersist` time ends (ssh ends it, the transport still means to
/// use it): the next command over the same transport opens a new one instead of failing as a
/// lost connection. (A long step on one host, a migration, leaves the other hosts' masters idle.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn a_master_that_idled_out_is_replaced_before_the_next_command() {
    use cchq_core::transport::ssh::SshTransport;
    let Some(root) = fleet_root() else { return };
    let _serial = SERIAL.lock().await;
    let env = Environment::load(&root, "fleet").unwrap();
    let host = last_host(&env);
    let keep = tempfile::tempdir().unwrap();
    let mut opts = env.ssh_options().unwrap();
    opts.persist = Some(std::time::Duration::from_secs(2));
    opts.persist_dir = Some(keep.path().to_path_buf());
    let t = SshTransport::new(vec![env.ssh_target(&host)], opts).unwrap();
    let first = t
        .exec(&host, &RemoteCommand::new("hostname"))
        .await
        .unwrap();
    assert_eq!(first.stdout_str().trim(), host);
    let masters = kept(keep.path());
    assert_eq!(masters.len(), 1, "{masters:?}");
    // Idle for longer than ControlPersist: ssh ends the master.
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if kept(keep.path())
            .iter()
            .all(|f| !std::path::Path::new(f).join("master").exists())
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "ssh ended the idle master: {:?}", kept(keep.path()));
    let again = t
        .exec(&host, &RemoteCommand::new("hostname"))
        .await
        .expect("a new master, not a lost connection");
    assert_eq!(again.stdout_str().trim(), host);
    t.close().await.unwrap();
}
