//! Unit tests of the deploy engine on the memory transport.

use std::path::PathBuf;

use super::*;
use crate::events::NullSink;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;

fn fixture(name: &str) -> Environment {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/commcare-cloud/environments");
    Environment::load(&root, name).unwrap()
}

#[test]
fn hosts_of_components_and_private_releases() {
    let env = fixture("test");
    let all = component_hosts(&env, &Options::default()).unwrap();
    assert_eq!(all.len(), 7);
    let private = component_hosts(&env, &Options { private: true, ..Options::default() }).unwrap();
    assert_eq!(private, ["cloud_worker_1"]);
}

#[tokio::test]
async fn a_failed_switch_sends_the_switched_hosts_back() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_2", "cloud_worker_3"].map(String::from).to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.respond(Some("cloud_worker_2"), "cchq-new && mv -T", Output::new(0, "PREV=/home/cchq/www/test/releases/old\n", ""));
    t.respond(Some("cloud_worker_3"), "cchq-new && mv -T", Output::new(3, "", "release r is not complete here\n"));
    let ctx = Ctx {
        env: &env,
        t: &t,
        events: &NullSink,
        layout: Layout::new(&env, "commcare"),
        name: "r".into(),
        secrets: Vec::new(),
        timings: std::sync::Mutex::new(Vec::new()),
    };
    let err = switch(&ctx, &hosts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeployFailed);
    assert!(err.message().contains("cloud_worker_3") && err.message().contains("went back"), "{err}");
    let back = t.commands_on("cloud_worker_2");
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back[1].contains("releases/old"), "{back:?}");
}

#[test]
fn commits_resolve_on_the_controller_from_a_real_repository() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git").args(args).current_dir(dir.path()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("f"), "1").unwrap();
    git(&["add", "f"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"]);
    git(&["tag", "-a", "v1", "-m", "v1"]);
    let head = git(&["rev-parse", "HEAD"]);
    let repo = dir.path().display().to_string();
    assert_eq!(resolve_commit(&repo, "main").unwrap(), head);
    assert_eq!(resolve_commit(&repo, "v1").unwrap(), head, "annotated tags resolve to their commit");
    assert_eq!(resolve_commit(&repo, "nope").unwrap_err().kind(), ErrorKind::NotFound);
}
