//! The transport conformance suite on every transport: memory, local, and ssh against the fleet.

use cchq_core::Environment;
use cchq_core::transport::conformance::{Options, check};
use cchq_core::transport::local::LocalTransport;
use cchq_core::transport::memory::MemoryTransport;
use cchq_core::transport::ssh::SshTransport;
use cchq_tests::fleet_root;

fn user_exists(name: &str) -> bool {
    std::process::Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn memory_transport_conforms() {
    let t = MemoryTransport::new(["h1", "h2"]);
    check(
        &t,
        "h1",
        &Options {
            scratch_dir: "/scratch".into(),
            become_user: Some("cchq".into()),
            expected_hostname: Some("h1".into()),
        },
    )
    .await;
}

#[tokio::test]
async fn local_transport_conforms() {
    let t = LocalTransport::new(["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    // Become through sudo only where this user can (root in CI, with the fleet's `cchq` user).
    let become_user =
        (t.current_user() == Some("root") && user_exists("cchq")).then(|| "cchq".to_owned());
    if become_user.is_none() {
        eprintln!(
            "note: become checks skipped on the local transport (not root, or no `cchq` user)"
        );
    }
    let hostname = std::process::Command::new("hostname").output().unwrap();
    let opts = Options {
        scratch_dir: dir.path().display().to_string(),
        become_user,
        expected_hostname: Some(String::from_utf8_lossy(&hostname.stdout).trim().to_owned()),
    };
    check(&t, "localhost", &opts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn ssh_transport_conforms_on_the_fleet() {
    let Some(root) = fleet_root() else { return };
    let env = Environment::load(&root, "fleet").unwrap();
    let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
    let targets = hosts.iter().map(|h| env.ssh_target(h)).collect();
    let t = SshTransport::new(targets, env.ssh_options().unwrap()).unwrap();
    let host = &hosts[0];
    let opts = Options {
        scratch_dir: "/tmp/cchq-conformance".into(),
        become_user: Some("cchq".into()),
        expected_hostname: Some(host.clone()),
    };
    check(&t, host, &opts).await;
    cchq_core::transport::Transport::close(&t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fleet (tests/fleet/up, CCHQ_FLEET_ROOT): run with --include-ignored"]
async fn ssh_transport_conforms_when_becoming_root() {
    let Some(root) = fleet_root() else { return };
    let env = Environment::load(&root, "fleet").unwrap();
    let host = env.inventory.hosts().next().unwrap().name.clone();
    let t = SshTransport::new(vec![env.ssh_target(&host)], env.ssh_options().unwrap()).unwrap();
    let opts = Options {
        scratch_dir: "/tmp/cchq-conformance-root".into(),
        become_user: Some("root".into()),
        expected_hostname: None,
    };
    check(&t, &host, &opts).await;
    cchq_core::transport::Transport::close(&t).await.unwrap();
}
