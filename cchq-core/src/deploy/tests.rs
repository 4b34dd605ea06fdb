//! Unit tests of the deploy engine on the memory transport.

use super::*;
use crate::events::NullSink;
use crate::fixture_env as fixture;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;

#[test]
fn hosts_of_components_and_private_releases() {
    let env = fixture("test");
    let all = component_hosts(&env, &Options::default()).unwrap();
    assert_eq!(all.len(), 7);
    let private = component_hosts(
        &env,
        &Options {
            private: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(private, ["cloud_worker_1"]);
}

#[tokio::test]
async fn a_failed_switch_sends_the_switched_hosts_back() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_2", "cloud_worker_3"]
        .map(String::from)
        .to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.respond(
        Some("cloud_worker_2"),
        "cchq-new; mv -T",
        Output::new(
            0,
            "PREV=/home/cchq/www/test/releases/old\nNOW=/home/cchq/www/test/releases/r\n",
            "",
        ),
    );
    t.respond(
        Some("cloud_worker_3"),
        "cchq-new; mv -T",
        Output::new(3, "", "release r is not complete here\n"),
    );
    let ctx = switch_ctx(&env, &t);
    let err = switch(&ctx, &hosts, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeployFailed);
    assert!(
        err.message().contains("cloud_worker_3") && err.message().contains("went back"),
        "{err}"
    );
    let back = t.commands_on("cloud_worker_2");
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back[1].contains("releases/old"), "{back:?}");
    assert!(
        !ctx.keep_lock.load(std::sync::atomic::Ordering::SeqCst),
        "every host is known to be back: the lock goes"
    );
}

fn switch_ctx<'a>(env: &'a Environment, t: &'a MemoryTransport) -> Ctx<'a> {
    Ctx {
        env,
        t,
        events: &NullSink,
        layout: Layout::new(env, Component::Commcare),
        name: "r".into(),
        secrets: Vec::new(),
        timings: std::sync::Mutex::new(Vec::new()),
        keep_lock: std::sync::atomic::AtomicBool::new(false),
        shield: Shield::default(),
    }
}

/// A host whose `current` did not end on the new release (e.g. the www root is immutable and
/// the new link could not be made) fails the switch, even though its script "ran": the others go
/// back. The script checks every step (no `&&` list that `set -e` lets through) and reads
/// `current` back.
#[tokio::test]
async fn a_host_whose_current_did_not_move_fails_the_switch() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_2", "cloud_worker_3"]
        .map(String::from)
        .to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    let ok = Output::new(
        0,
        "PREV=/home/cchq/www/test/releases/old\nNOW=/home/cchq/www/test/releases/r\n",
        "",
    );
    t.respond(Some("cloud_worker_2"), "cchq-new; mv -T", ok);
    t.respond(
        Some("cloud_worker_3"),
        "cchq-new; mv -T",
        Output::new(
            1,
            "",
            "ln: failed to create symbolic link: Operation not permitted\n",
        ),
    );
    let ctx = switch_ctx(&env, &t);
    let err = switch(&ctx, &hosts, None).await.unwrap_err();
    assert!(
        err.message().contains("cloud_worker_3")
            && err.message().contains("Operation not permitted"),
        "{err}"
    );
    let script = &t.commands_on("cloud_worker_3")[0];
    assert!(
        !script.contains("&& mv"),
        "no && list in the switch: {script}"
    );
    assert!(
        script.contains("NOW=") && script.contains("not at the new release"),
        "current is read back: {script}"
    );
    assert!(
        t.commands_on("cloud_worker_2")[1].contains("releases/old"),
        "the other host went back"
    );
}

/// A host that cannot be read after its connection dropped mid-switch: its state is unknown, so
/// the error names it and the lock is kept.
#[tokio::test]
async fn a_host_lost_mid_switch_keeps_the_lock_and_is_named() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_2", "cloud_worker_3"]
        .map(String::from)
        .to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    let ok = Output::new(
        0,
        "PREV=/home/cchq/www/test/releases/old\nNOW=/home/cchq/www/test/releases/r\n",
        "",
    );
    t.respond(Some("cloud_worker_2"), "cchq-new; mv -T", ok);
    t.set_reachable("cloud_worker_3", false);
    let ctx = switch_ctx(&env, &t);
    let err = switch(&ctx, &hosts, None).await.unwrap_err();
    assert!(ctx.keep_lock.load(std::sync::atomic::Ordering::SeqCst));
    assert!(
        err.message().contains("`cloud_worker_3`") && err.message().contains("could not be read"),
        "{err}"
    );
    assert!(err.message().contains("lock is kept"), "{err}");
    assert!(err.hint().unwrap().contains("--resume r"), "{err:?}");
}

/// The connection to a host drops while its switch runs, but the remote `mv` had run: read again,
/// the host is on the new release. It goes back with the others (to the target it recorded in
/// `.cchq-prev-current`), and the error says the switch had happened there; nothing is split, so
/// the lock is not kept.
#[tokio::test]
async fn a_host_whose_connection_dropped_after_its_switch_is_read_again_and_switched_back() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_2", "cloud_worker_3"]
        .map(String::from)
        .to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    let (old, new) = (
        "/home/cchq/www/test/releases/old",
        "/home/cchq/www/test/releases/r",
    );
    t.respond(
        Some("cloud_worker_2"),
        "cchq-new; mv -T",
        Output::new(0, format!("PREV={old}\nNOW={new}\n"), ""),
    );
    t.drop_connection_on("cloud_worker_3", "cchq-new; mv -T");
    // Read again after the drop, cloud_worker_3's `current` is the new release...
    t.respond(
        Some("cloud_worker_3"),
        "echo \"NOW=$(readlink",
        Output::new(0, format!("NOW={new}\n"), ""),
    );
    // ...and the switch had recorded where it pointed before.
    t.put_file(
        "cloud_worker_3",
        &format!("{new}/.cchq-prev-current"),
        format!("{old}\n"),
    );
    t.respond(
        Some("cloud_worker_3"),
        &format!("ln -s {old} "),
        Output::new(0, "", ""),
    );
    let ctx = switch_ctx(&env, &t);
    let err = switch(&ctx, &hosts, None).await.unwrap_err();
    let msg = err.message();
    assert!(
        msg.contains("`cloud_worker_3`") && msg.contains("the switch had happened"),
        "{err}"
    );
    assert!(
        msg.contains("the 2 host(s) that had switched went back"),
        "{err}"
    );
    assert!(
        !ctx.keep_lock.load(std::sync::atomic::Ordering::SeqCst),
        "nothing is split: the lock goes"
    );
    for h in &hosts {
        let back: Vec<String> = t
            .commands_on(h)
            .into_iter()
            .filter(|c| c.contains(&format!("ln -s {old} ")))
            .collect();
        assert_eq!(
            back.len(),
            1,
            "`{h}` switched back to the old release: {:?}",
            t.commands_on(h)
        );
    }
}

#[test]
fn commits_resolve_on_the_controller_from_a_real_repository() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("f"), "1").unwrap();
    git(&["add", "f"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "one",
    ]);
    git(&["tag", "-a", "v1", "-m", "v1"]);
    let head = git(&["rev-parse", "HEAD"]);
    let repo = dir.path().display().to_string();
    assert_eq!(resolve_commit(&repo, "main").unwrap(), head);
    assert_eq!(
        resolve_commit(&repo, "v1").unwrap(),
        head,
        "annotated tags resolve to their commit"
    );
    assert_eq!(
        resolve_commit(&repo, "nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

/// A one-host environment (`web1`) with a plain vault, in `tmp`.
fn small_env(tmp: &std::path::Path) -> Environment {
    let dir = tmp.join("t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  HQ_INSTANCE: tt\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vault.yml"),
        "localsettings_private:\n  SECRET_KEY: sekrit-SENTINEL\n",
    )
    .unwrap();
    std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
    std::fs::write(dir.join("app-processes.yml"), "{}\n").unwrap();
    Environment::load(tmp, "t").unwrap()
}

/// A host whose applied settings were edited by hand since: the guard of `--update-config`
/// stops with the drift error's own message and hint (not "resume"), and `force_settings` goes
/// on with warnings.
#[tokio::test]
async fn the_drift_guard_of_update_config_keeps_its_message_and_force_overrides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let env = small_env(tmp.path());
    let vault = match &env.vault {
        crate::environment::Vault::Plain(v) => v.clone(),
        _ => panic!("plain vault expected"),
    };
    let t = MemoryTransport::new(["web1"]);
    let probe = "dir\t/home/cchq/www/tt/current\t/home/cchq/www/tt/releases/r1\n";
    t.respond_with(Some("web1"), move |cmd| {
        cmd.inner_shell()
            .contains("readlink -f")
            .then(|| Output::new(0, probe, ""))
    });
    let files = settings::render_for_host(&env, "web1", Some(&vault), Some("r1")).unwrap();
    let ls = "/home/cchq/www/tt/current/localsettings.py";
    crate::apply::record_applied(&env, &t, "web1", &files)
        .await
        .unwrap();
    t.put_file(
        "web1",
        ls,
        format!("{}DEBUG = True\n", files[0].contents).into_bytes(),
    );

    let events = Collect::default();
    let ctx = Ctx {
        env: &env,
        t: &t,
        events: &events,
        layout: Layout::new(&env, Component::Commcare),
        name: "r2".into(),
        secrets: crate::redact::secret_values(Some(&vault)),
        timings: std::sync::Mutex::new(Vec::new()),
        keep_lock: std::sync::atomic::AtomicBool::new(false),
        shield: Shield::default(),
    };
    let hosts = vec!["web1".to_owned()];
    let opts = Options {
        update_config: true,
        vault: Some(vault.clone()),
        ..Options::default()
    };
    let err = guard_settings(&ctx, &hosts, &opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.message().contains(ls) && err.message().contains("edited by hand"),
        "{err}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("deploy --update-config")
            && hint.contains("--force")
            && !hint.contains("--resume"),
        "{hint}"
    );
    assert!(!err.message().contains("SENTINEL"));

    let forced = Options {
        force_settings: true,
        ..opts
    };
    guard_settings(&ctx, &hosts, &forced).await.unwrap();
    let warnings: Vec<String> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| {
            if let Event::Warning { message, .. } = e {
                Some(message.clone())
            } else {
                None
            }
        })
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("edited by hand"))
            && warnings.iter().any(|w| w.contains("--force")),
        "{warnings:?}"
    );
}

/// A one-host environment (`web1`: webworkers, django_manage, the lock's host) whose www root is
/// `<tmp>/www`, run as the current user on this machine by the local transport.
pub(in crate::deploy) fn local_env(
    tmp: &std::path::Path,
) -> (Environment, crate::transport::local::LocalTransport) {
    let mut env = small_env(tmp);
    env.profile.www_root = tmp.join("www").display().to_string();
    env.profile.app_user = crate::identity::login_name();
    (env, crate::transport::local::LocalTransport::new(["web1"]))
}

/// The run-once steps run on one host, and their markers are then put on every host, so that
/// each host's copy of the release tells by itself whether it is complete.
#[tokio::test]
async fn run_once_markers_reach_every_host() {
    let env = fixture("test");
    let hosts: Vec<String> = ["cloud_worker_1", "cloud_worker_2"]
        .map(String::from)
        .to_vec();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.respond_with(None, |cmd| {
        cmd.inner_shell()
            .contains("cd ")
            .then(|| Output::new(0, "", ""))
    });
    let ctx = switch_ctx(&env, &t);
    let all = steps::builtin("commcare").unwrap();
    let once: Vec<&steps::Step> = all
        .iter()
        .filter(|s| s.name.as_str() == "migrate")
        .collect();
    let vars = steps::Vars::new(&env, &ctx.layout, "r", "a", Some("a"), &Options::default());
    run_steps(&ctx, &hosts, &once, &vars).await.unwrap();
    let first = once_host(&env, &hosts);
    let other = hosts.iter().find(|h| **h != first).unwrap();
    assert!(
        t.commands_on(other).is_empty(),
        "the run-once step ran on one host only"
    );
    assert!(
        t.commands_on(&first)
            .iter()
            .any(|c| c.contains("manage.py migrate_multi"))
    );
}

/// `small_env` with its vault encrypted (password `pw`), `web1` running formplayer too.
fn encrypted_env(tmp: &std::path::Path) -> Environment {
    small_env(tmp);
    std::fs::write(
        tmp.join("t/inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n[formplayer]\nweb1\n",
    )
    .unwrap();
    let path = tmp.join("t/vault.yml");
    let plain = std::fs::read(&path).unwrap();
    std::fs::write(&path, crate::vault::encrypt(&plain, b"pw", None).unwrap()).unwrap();
    let env = Environment::load(tmp, "t").unwrap();
    assert!(matches!(env.vault, crate::environment::Vault::Encrypted(_)));
    env
}

/// Issue 12: a first deploy (or a new host) with an encrypted vault rendered localsettings.py
/// without any vault value and succeeded. Now a deploy that may render settings stops before it
/// starts (no lock, no command on any host) when the vault was not opened, naming where the
/// password comes from.
#[tokio::test]
async fn a_deploy_with_an_encrypted_vault_not_opened_stops_before_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let env = encrypted_env(tmp.path());
    let t = MemoryTransport::new(["web1"]);
    for opts in [
        Options {
            name: Some("r2".into()),
            ..Options::default()
        },
        Options {
            component: Component::Formplayer,
            name: Some("r2".into()),
            ..Options::default()
        },
        Options {
            resume: Some("r1".into()),
            update_config: true,
            ..Options::default()
        },
        Options {
            name: Some("r2".into()),
            private: true,
            ..Options::default()
        },
    ] {
        let err = deploy(&env, &t, &opts, &NullSink).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Vault, "{err}");
        assert!(
            err.message().contains("encrypted") && err.message().contains("`t`"),
            "{err}"
        );
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("ANSIBLE_VAULT_PASSWORD") && hint.contains("CCHQ_VAULT_PASSWORD_FILE"),
            "{hint}"
        );
        assert!(
            t.calls().is_empty(),
            "nothing ran on any host: {:?}",
            t.calls()
        );
    }
    let err = preindex_views(
        &env,
        &t,
        &Options {
            name: Some("r2".into()),
            ..Options::default()
        },
        &NullSink,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Vault, "{err}");
    assert!(t.calls().is_empty(), "{:?}", t.calls());
    // Wherever settings are rendered (a resume that renders for a host without any), the same.
    let err = settings::SettingsRenderer::new(&env, None)
        .render("web1", Some("r1"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Vault, "{err}");
    // With the vault opened, rendering has its values.
    let vault = env
        .vault_value(|| Ok(b"pw".to_vec().into()))
        .unwrap()
        .unwrap();
    let files = settings::SettingsRenderer::new(&env, Some(&vault))
        .render("web1", Some("r1"))
        .unwrap();
    assert!(
        files[0].contents.contains("SECRET_KEY = 'sekrit-SENTINEL'"),
        "{}",
        files[0].contents
    );
}

/// The memory transport, except that the first command containing `needle` is logged, fires
/// `cancel` (when given) and never answers: a restart cut short in the middle of its round trip.
#[derive(Debug)]
struct StallAt {
    inner: MemoryTransport,
    needle: &'static str,
    cancel: Option<crate::cancel::Cancel>,
    stalled: std::sync::atomic::AtomicBool,
    /// Answer after this long instead of never.
    answer_after: Option<Duration>,
}

impl StallAt {
    fn new(
        inner: &MemoryTransport,
        needle: &'static str,
        cancel: Option<crate::cancel::Cancel>,
        answer_after: Option<Duration>,
    ) -> Self {
        Self {
            inner: inner.clone(),
            needle,
            cancel,
            stalled: std::sync::atomic::AtomicBool::new(false),
            answer_after,
        }
    }
}

#[async_trait::async_trait]
impl Transport for StallAt {
    fn hosts(&self) -> Vec<String> {
        self.inner.hosts()
    }

    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        if cmd.inner_shell().contains(self.needle)
            && !self.stalled.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = self.inner.exec(host, cmd).await;
            if let Some(c) = &self.cancel {
                c.cancel("SIGTERM");
            }
            match self.answer_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            return self.inner.exec(host, cmd).await;
        }
        self.inner.exec(host, cmd).await
    }

    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        self.inner.write_files(host, files, opts).await
    }

    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &crate::transport::ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        self.inner.read_file(host, path, opts).await
    }
}

/// One host (`web1`) running web, celery and pillowtop programs; the names of its programs.
fn app_env(tmp: &std::path::Path) -> (Environment, Vec<String>) {
    let dir = tmp.join("t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[webworkers]\nweb1\n[django_manage]\nweb1\n[celery]\nweb1\n[pillowtop]\nweb1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("meta.yml"),
        "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("public.yml"),
        "localsettings:\n  HQ_INSTANCE: tt\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vault.yml"),
        "localsettings_private:\n  SECRET_KEY: s\n",
    )
    .unwrap();
    std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
    std::fs::write(
        dir.join("app-processes.yml"),
        "celery_processes:\n  web1:\n    q1: {}\npillows:\n  web1:\n    P1: {}\n",
    )
    .unwrap();
    let env = Environment::load(tmp, "t").unwrap();
    let names = crate::services::programs::programs_for_host(&env, "web1")
        .into_iter()
        .map(|p| p.name)
        .collect();
    (env, names)
}

const OLD: &str = "2024-01-01_00.00.00";
const NEW: &str = "2024-02-01_00.00.00";

/// A memory host on which a whole deploy of [`NEW`] over [`OLD`] runs: the lock is taken and
/// released, the build and run-once steps succeed, the switch reports where `current` was, and
/// supervisord answers with every program in `state(call number)` (restart calls counted).
fn deploy_host(
    env: &Environment,
    names: &[String],
    state: impl Fn(usize) -> &'static str + Send + Sync + 'static,
) -> MemoryTransport {
    let t = MemoryTransport::new(["web1"]);
    let rels = Layout::new(env, Component::Commcare).releases;
    t.respond(None, "", Output::new(0, "", ""));
    // The checkout also lists the releases (two old ones beyond `keep`) and reads the program
    // files (none yet).
    let listing: String = [
        "2023-01-01_00.00.00",
        "2023-02-01_00.00.00",
        "2023-03-01_00.00.00",
        OLD,
    ]
    .iter()
    .map(|n| format!("{n}\t{}\t1\t{}\t\t\n", "b".repeat(40), u8::from(*n == OLD)))
    .collect();
    let checkout = format!(
        "checkout: done\nHAS_CURRENT_SETTINGS\nCCHQ_RELEASES\n{listing}CCHQ_RELEASES_END\nCCHQ_SUPERVISOR_PROBE\nCCHQ_SUPERVISOR_PROBE_END\n"
    );
    t.respond(None, "HAS_CURRENT_SETTINGS", Output::new(0, checkout, ""));
    // The lock's command also reads the commit live before (the deploy's first probe).
    t.respond(
        None,
        ".deploy-lock 2>/dev/null; then",
        Output::new(
            0,
            format!("TAKEN\nCCHQ_LOCK_PROBE\n{}\n", "b".repeat(40)),
            "",
        ),
    );
    t.respond(None, "echo RELEASED", Output::new(0, "RELEASED\n", ""));
    let switch_out = format!("PREV={rels}/{OLD}\nNOW={rels}/{NEW}\n");
    t.respond(None, "cchq-new; mv -T", Output::new(0, switch_out, ""));
    let names = names.to_vec();
    let restarts = std::sync::atomic::AtomicUsize::new(0);
    t.respond_with(None, move |cmd| {
        let s = cmd.inner_shell();
        if !s.contains("supervisor.getAllProcessInfo") {
            return None;
        }
        let n = if s.contains("supervisor.stopProcess") {
            restarts.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        } else {
            0
        };
        let st = state(n);
        let states: Vec<(&str, &str)> = names.iter().map(|p| (p.as_str(), st)).collect();
        Some(Output::new(
            0,
            crate::services::supervisor::fake_answer(&states),
            "",
        ))
    });
    t
}

fn deploy_opts() -> Options {
    Options {
        rev: Some("a".repeat(40)),
        name: Some(NEW.into()),
        notify: false,
        lock_heartbeat: Duration::from_secs(3600),
        rolling: RollingOptions {
            all_at_once: true,
            ..RollingOptions::default()
        },
        ..Options::default()
    }
}

/// Where in the call log the first command matching `f` is.
fn position(t: &MemoryTransport, what: &str, f: impl Fn(&str) -> bool) -> usize {
    let calls = t.calls();
    calls
        .iter()
        .position(|c| f(&c.command.inner_shell()))
        .unwrap_or_else(|| panic!("no {what} in {calls:#?}"))
}

/// Issue 12: a deploy cancelled in the middle of its restart (the stop/start round trip of the
/// celery and pillowtop programs never answers, past the cancel's grace) starts those programs
/// again, by name, before it releases its lock, and ends `Interrupted`, saying so.
#[tokio::test]
async fn a_deploy_cancelled_mid_restart_starts_again_what_it_stopped_then_unlocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let inner = deploy_host(&env, &names, |_| "RUNNING");
    let opts = Options {
        rolling: RollingOptions::default(),
        cancel_grace: Duration::from_millis(200),
        ..deploy_opts()
    };
    let t = StallAt::new(
        &inner,
        "supervisor.stopProcess",
        Some(opts.cancel.clone()),
        None,
    );
    let events = Collect::default();
    let err = tokio::time::timeout(Duration::from_secs(20), deploy(&env, &t, &opts, &events))
        .await
        .expect("the deploy ends")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    assert!(
        err.message().contains("interrupted (SIGTERM)")
            && err.message().contains("were started again"),
        "{err}"
    );
    assert!(
        err.hint()
            .unwrap()
            .contains(&format!("deploy --resume {NEW}")),
        "{err:?}"
    );

    let stopped = position(&inner, "the restart", |s| {
        s.contains("supervisor.stopProcess")
    });
    let started = position(&inner, "the start", |s| {
        s.contains("supervisor.startProcess") && !s.contains("supervisor.stopProcess")
    });
    let released = position(&inner, "the unlock", |s| s.contains("echo RELEASED"));
    assert!(
        stopped < started && started < released,
        "restart {stopped}, start {started}, unlock {released}"
    );
    let start = inner.calls()[started].command.inner_shell();
    // The web worker restarts later, in the rolling phase: only celery and pillowtop were stopped.
    let cut: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("celery") || n.contains("pillowtop"))
        .collect();
    assert!(!cut.is_empty());
    for n in &cut {
        assert!(start.contains(n.as_str()), "{n} started again: {start}");
    }
    assert!(
        !start.contains("django") && !start.contains("AllProcesses"),
        "by name, only what was stopped: {start}"
    );
    assert!(opts.restart_guard.pending().is_empty());
    assert!(
        events.0.lock().unwrap().iter().any(
            |e| matches!(e, Event::Warning { message, .. } if message.contains("started again"))
        ),
        "reported"
    );
}

/// The same restart cut short by dropping the deploy's future (as Python's Ctrl-C does): the
/// guard in the options still knows what was stopped, and `restore` starts it again.
#[tokio::test]
async fn a_dropped_restart_leaves_its_stopped_programs_to_the_guard() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let inner = deploy_host(&env, &names, |_| "RUNNING");
    let opts = deploy_opts();
    let t = StallAt::new(&inner, "supervisor.stopProcess", None, None);
    let r = tokio::time::timeout(Duration::from_secs(2), deploy(&env, &t, &opts, &NullSink)).await;
    assert!(r.is_err(), "stalled in the restart, then dropped");
    let pending = opts.restart_guard.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, "web1");
    assert_eq!(
        pending[0].2.len(),
        names.len(),
        "all at once: every program was in the cut round trip"
    );
    inner.clear_calls();
    let restored = opts.restart_guard.restore(&inner, &NullSink).await;
    assert!(restored.iter().all(|r| r.error.is_none()), "{restored:?}");
    let calls = inner.commands_on("web1");
    assert_eq!(calls.len(), 1, "one round trip: {calls:?}");
    let start = inner.calls()[0].command.inner_shell();
    assert!(
        start.contains("supervisor.startProcess") && !start.contains("supervisor.stopProcess"),
        "{start}"
    );
    assert!(names.iter().all(|n| start.contains(n.as_str())), "{start}");
    assert!(opts.restart_guard.pending().is_empty());
}

/// `rollback_on_failure`: the new release's programs end FATAL; the deploy switches back to the
/// release that was live, restarts it, and fails naming both.
#[tokio::test]
async fn a_release_that_fails_to_start_is_rolled_back_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let t = deploy_host(&env, &names, |n| if n == 0 { "FATAL" } else { "RUNNING" });
    let events = Collect::default();
    let opts = Options {
        rollback_on_failure: Some(true),
        ..deploy_opts()
    };
    let err = deploy(&env, &t, &opts, &events).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeployFailed, "{err}");
    let m = err.message();
    assert!(
        m.contains(&format!("release `{NEW}` failed to start")) && m.contains("FATAL"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "rolled back: release `{OLD}` is live again on 1 host(s) and restarted"
        )),
        "{m}"
    );
    assert!(
        err.hint().unwrap().contains("deploy a new release"),
        "{err:?}"
    );

    // In order: switch to the new release, its restart, switch back to the old one, its restart.
    let calls: Vec<String> = t.calls().iter().map(|c| c.command.inner_shell()).collect();
    let seq: Vec<&str> = calls
        .iter()
        .filter_map(|s| {
            if s.contains("cchq-new; mv -T") {
                Some(
                    if s.contains(&format!("releases/{OLD}"))
                        && !s.contains(&format!("releases/{NEW}"))
                    {
                        "switch old"
                    } else {
                        "switch new"
                    },
                )
            } else if s.contains("supervisor.stopProcess") {
                Some("restart")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        seq,
        ["switch new", "restart", "switch old", "restart"],
        "{calls:#?}"
    );
    // The failed release is marked, so that a later rollback never picks it.
    assert!(
        calls
            .iter()
            .any(|c| c.contains(&format!("releases/{NEW}/.start-failed")) && c.contains("touch")),
        "the failed release is marked: {calls:#?}"
    );
    let phases: Vec<(String, Option<bool>)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Phase { phase, ok, .. } if phase == "rollback" => Some((phase.clone(), *ok)),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("rollback".to_owned(), None),
            ("rollback".to_owned(), Some(true))
        ]
    );
    assert!(
        t.calls()
            .iter()
            .any(|c| c.command.inner_shell().contains("echo RELEASED")),
        "unlocked"
    );
}

/// The deploy's error keeps what failed as its cause (`Error::cause`): the failed start, whether
/// it was rolled back or stays live.
#[tokio::test]
async fn a_failed_start_is_the_cause_of_the_deploy_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let t = deploy_host(&env, &names, |n| if n == 0 { "FATAL" } else { "RUNNING" });
    let err = deploy(
        &env,
        &t,
        &Options {
            rollback_on_failure: Some(true),
            ..deploy_opts()
        },
        &NullSink,
    )
    .await
    .unwrap_err();
    let cause = err.cause().expect("the failed start is the cause");
    assert!(
        cause.message().contains("FATAL") && err.message().contains(cause.message()),
        "{err:?}"
    );
    assert_ne!(
        err.hint(),
        cause.hint(),
        "the rollback's own hint replaces the cause's"
    );
    let t = deploy_host(&env, &names, |_| "FATAL");
    let err = deploy(&env, &t, &deploy_opts(), &NullSink)
        .await
        .unwrap_err();
    let cause = err.cause().expect("the failed start is the cause");
    assert_eq!(
        err.message(),
        format!("the new release is live but {}", cause.message())
    );
    assert_eq!(
        (err.kind(), err.hint()),
        (cause.kind(), cause.hint()),
        "kind and hint carried over"
    );
}

/// Without it (the default, and `cchq.yml` says nothing), the failed release stays live and the
/// error says so; `rollback_on_failure: true` in `cchq.yml` turns it on.
#[tokio::test]
async fn without_rollback_on_failure_the_failed_release_stays_live() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let t = deploy_host(&env, &names, |_| "FATAL");
    let err = deploy(&env, &t, &deploy_opts(), &NullSink)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeployFailed);
    assert!(
        err.message()
            .starts_with("the new release is live but services did not all restart"),
        "{err}"
    );
    assert_eq!(
        t.calls()
            .iter()
            .filter(|c| c.command.inner_shell().contains("cchq-new; mv -T"))
            .count(),
        1,
        "no switch back"
    );

    let mut env = env;
    env.profile.rollback_on_failure = true;
    let t = deploy_host(&env, &names, |n| if n == 0 { "FATAL" } else { "RUNNING" });
    let err = deploy(&env, &t, &deploy_opts(), &NullSink)
        .await
        .unwrap_err();
    assert!(err.message().contains("rolled back"), "{err}");
    let err = deploy(
        &env,
        &deploy_host(&env, &names, |_| "FATAL"),
        &Options {
            rollback_on_failure: Some(false),
            ..deploy_opts()
        },
        &NullSink,
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("the new release is live"),
        "the option wins over cchq.yml: {err}"
    );
}

/// A cancel that arrives during the switch does not cut it short (hosts could stay split): the
/// switch ends, then the deploy stops before the restart, unlocks, and is resumable.
#[tokio::test]
async fn a_cancel_during_the_switch_lets_it_finish_then_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let inner = deploy_host(&env, &names, |_| "RUNNING");
    let opts = deploy_opts();
    let t = StallAt::new(
        &inner,
        "cchq-new; mv -T",
        Some(opts.cancel.clone()),
        Some(Duration::from_millis(300)),
    );
    let err = deploy(&env, &t, &opts, &NullSink).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    let calls: Vec<String> = inner
        .calls()
        .iter()
        .map(|c| c.command.inner_shell())
        .collect();
    assert_eq!(
        calls
            .iter()
            .filter(|s| s.contains("cchq-new; mv -T"))
            .count(),
        2,
        "the switch ran (logged, then answered): {calls:#?}"
    );
    assert!(
        !calls.iter().any(|s| s.contains("supervisor.stopProcess")),
        "nothing restarted after the cancel: {calls:#?}"
    );
    assert!(
        calls.last().unwrap().contains("echo RELEASED"),
        "unlocked last: {calls:#?}"
    );
}

/// The round trips of a deploy per phase, as the transport counted them: `(phase, max per host)`.
fn trips(o: &Outcome) -> Vec<(String, usize)> {
    o.round_trips
        .iter()
        .map(|p| (p.phase.clone(), p.max_per_host))
        .collect()
}

/// Issue 18: a deploy costs O(1) round trips per host; the counts per phase are pinned here (one
/// host, which also holds the lock), so that a change that adds one shows up.
#[tokio::test]
async fn a_deploy_costs_a_fixed_number_of_round_trips_per_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let t = deploy_host(&env, &names, |_| "RUNNING");
    let o = deploy(&env, &t, &deploy_opts(), &NullSink).await.unwrap();
    let total: usize = o.round_trips.iter().map(|p| p.total).sum();
    assert_eq!(
        total,
        t.calls().len(),
        "every call counted: {:#?}",
        o.round_trips
    );
    assert_eq!(
        o.previous_commit.as_deref(),
        Some("b".repeat(40).as_str()),
        "read by the lock's command"
    );
    let want = [
        // The first probe (the commit live before) is in the lock's command.
        ("lock", 1),
        // The settings copy, the releases' listing and the program files' probe are in it.
        ("checkout", 1),
        // The profile's steps: one command per group of consecutive steps on the same hosts,
        // or that wait only for their own host (`wait: host`): the virtualenv to
        // update_translations in one (the Kafka check on the `once` host among them), migrate,
        // the manifest pull, preindex and check in another.
        ("steps", 2),
        // The markers of a complete build are written by the switch.
        ("switch", 1),
        // The program files are new here: written (read by the checkout).
        ("supervisor", 1),
        ("restart", 1),
        ("record_deploy_success", 1),
        // The clean is in the record's command.
        ("record", 1),
        ("unlock", 1),
    ];
    assert_eq!(
        trips(&o),
        want.map(|(p, n)| (p.to_owned(), n)),
        "{:#?}",
        o.round_trips
    );
    let record = t
        .commands_on("web1")
        .into_iter()
        .find(|c| c.contains(".cchq-deploy.json") && !c.contains("checkout"))
        .unwrap();
    for gone in ["2023-01-01_00.00.00", "2023-02-01_00.00.00"] {
        assert!(
            record.contains(&format!(".cchq-trash-{gone}")),
            "{gone} cleaned: {record}"
        );
    }
    for kept in ["2023-03-01_00.00.00", OLD, NEW] {
        assert!(
            !record.contains(&format!(".cchq-trash-{kept}")),
            "{kept} kept: {record}"
        );
    }
    assert!(
        record.find(".cchq-deploy.json") < record.find("rm -rf"),
        "recorded first: {record}"
    );
}

/// A resume of a release that is finished everywhere reads every host's state and stops.
#[tokio::test]
async fn a_no_op_resume_costs_one_round_trip_per_host() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let t = deploy_host(&env, &names, |_| "RUNNING");
    let commit = "a".repeat(40);
    t.respond(
        None,
        "echo EXISTS",
        Output::new(
            0,
            format!("EXISTS\nCOMMIT={commit}\nRECORDED\nCURRENT\n"),
            "",
        ),
    );
    let opts = Options {
        resume: Some(NEW.into()),
        name: None,
        ..deploy_opts()
    };
    let o = deploy(&env, &t, &opts, &NullSink).await.unwrap();
    assert_eq!(o.commit, commit);
    assert_eq!(
        trips(&o),
        [("probe".to_owned(), 1)],
        "no lock taken, nothing but the probe"
    );
    assert!(
        !t.calls()
            .iter()
            .any(|c| c.command.inner_shell().contains(".deploy-lock")),
        "no lock churn"
    );
}

/// Issue 18 item 4 (the Python fleet tests' `_CANCEL_MID_RESTART_BUG`): a cancel during the
/// restart's round trip waits for it to answer (dropping it would leave supervisord stopping
/// programs after the deploy started them again), then starts no further round trip (the rolling
/// web batch), unlocks and ends `Interrupted`. Nothing is left stopped, so nothing is restored.
#[tokio::test]
async fn a_cancel_mid_restart_lets_the_round_trip_finish_and_starts_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let inner = deploy_host(&env, &names, |_| "RUNNING");
    let opts = Options {
        rolling: RollingOptions::default(),
        ..deploy_opts()
    };
    let t = StallAt::new(
        &inner,
        "supervisor.stopProcess",
        Some(opts.cancel.clone()),
        Some(Duration::from_millis(300)),
    );
    let events = Collect::default();
    let err = tokio::time::timeout(Duration::from_secs(20), deploy(&env, &t, &opts, &events))
        .await
        .expect("the deploy ends")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    assert!(
        !err.message().contains("started again"),
        "nothing was left stopped: {err}"
    );
    let calls: Vec<String> = inner
        .calls()
        .iter()
        .map(|c| c.command.inner_shell())
        .collect();
    let restarts: Vec<&String> = calls
        .iter()
        .filter(|s| s.contains("supervisor.stopProcess"))
        .collect();
    // The stalled round trip is logged twice (when sent, when answered); no other restart.
    assert_eq!(restarts.len(), 2, "{restarts:#?}");
    assert!(
        restarts.iter().all(|s| !names
            .iter()
            .any(|n| n.contains("django") && s.contains(n.as_str()))),
        "no web batch"
    );
    assert!(!calls.iter().any(|s| s.contains("supervisor.startProcess") && !s.contains("supervisor.stopProcess")), "no restore");
    assert!(
        !calls
            .iter()
            .any(|s| s.contains(".cchq-deploy.json") && !s.contains("checkout")),
        "not recorded"
    );
    assert!(
        calls.last().unwrap().contains("echo RELEASED"),
        "unlocked last: {calls:#?}"
    );
    assert!(opts.restart_guard.pending().is_empty());
}

/// Issue 18: the commcare profile's steps run in two commands per host, not nine: the steps that
/// need only their own host's earlier work (`wait: host`, a `once` step too) join the command
/// before them; a step that waits for every host starts a command of its own.
#[test]
fn steps_that_wait_only_for_their_host_share_a_command() {
    let groups_of = |steps: &[steps::Step]| {
        let before: Vec<(&steps::Step, String)> = steps
            .iter()
            .filter(|s| !s.after_switch)
            .map(|s| (s, s.run.clone()))
            .collect();
        let mut groups = Vec::new();
        let mut i = 0;
        while i < before.len() {
            let j = super::group_end(&before, i);
            groups.push(
                before[i..j]
                    .iter()
                    .map(|(s, _)| s.name.as_str().to_owned())
                    .collect::<Vec<_>>(),
            );
            i = j;
        }
        groups
    };
    let steps = crate::profile::steps::builtin("commcare").unwrap();
    assert_eq!(
        groups_of(&steps),
        [
            vec![
                "virtualenv",
                "kafka_checkpoints",
                "node_modules",
                "yarn_install",
                "staticfiles_collect",
                "staticfiles_compress",
                "update_translations"
            ],
            vec!["migrate", "staticfiles_pull_manifest", "preindex", "check"],
        ]
    );
    let path = std::path::Path::new("cchq.yml");
    let custom = |yaml: &str| {
        crate::profile::steps::apply(steps.clone(), crate::yaml::load(yaml, path).unwrap(), path)
    };
    // A step that needs every host's earlier work (the default) starts a command of its own.
    let g = groups_of(&custom("replace:\n  - name: update_translations\n    wait: all\n").unwrap());
    assert_eq!(g[0].last().unwrap(), "staticfiles_compress", "{g:?}");
    assert_eq!(g[1], ["update_translations"], "{g:?}");
    // So does a `once` step after a `once` step that joined steps on many hosts: it waits for
    // every host's virtualenv, which the one before it did not.
    let g = groups_of(
        &custom("add:\n  - name: after_check\n    on: once\n    run: 'true'\n    after: kafka_checkpoints\n")
            .unwrap(),
    );
    assert_eq!(g[0], ["virtualenv", "kafka_checkpoints"], "{g:?}");
    assert_eq!(g[1][0], "after_check", "{g:?}");
    // `wait: host` on a step after the switch is refused, naming the step.
    let err = custom("replace:\n  - name: record_deploy_success\n    wait: host\n").unwrap_err();
    assert!(
        err.message().contains("step `record_deploy_success`"),
        "{err}"
    );
}

/// A deploy killed while git updated the mirror leaves its lock files there, and every later
/// fetch on that host failed ("cannot lock ref 'HEAD'"): the checkout waits for a git process
/// still working in the mirror, then clears the locks.
#[test]
fn stale_git_locks_in_the_mirror_are_cleared_once_no_git_works_there() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("mirror with space");
    std::fs::create_dir_all(m.join("refs/heads")).unwrap();
    std::fs::write(m.join("HEAD.lock"), "").unwrap();
    std::fs::write(m.join("refs/heads/main.lock"), "").unwrap();
    std::fs::write(m.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    // A process named `git` working in the mirror (a killed deploy's fetch), for a second.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/sleep", bin.join("git")).unwrap();
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut busy = std::process::Command::new(bin.join("git"))
        .arg("1.5")
        .current_dir(&m)
        .spawn()
        .unwrap();
    let script = super::unlock_mirror(&crate::command::quote(&m.display().to_string()));
    let started = std::time::Instant::now();
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let waited = started.elapsed();
    busy.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "waited for the git process: {waited:?}"
    );
    assert!(!m.join("HEAD.lock").exists() && !m.join("refs/heads/main.lock").exists());
    assert!(m.join("HEAD").exists(), "only lock files go");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed stale git locks"));
    // Without lock files nothing runs but the `find`.
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
}

/// A deploy cancelled while its lock's attempt is on the way (a Python test cancels "as the
/// formplayer deploy starts") lets that attempt finish before it frees the lock: cut halfway,
/// the attempt made the lock without its holder record, which no one could free for 90 s.
#[tokio::test]
async fn a_deploy_cancelled_while_taking_the_lock_lets_the_attempt_finish_then_frees_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, names) = app_env(tmp.path());
    let inner = deploy_host(&env, &names, |_| "RUNNING");
    let opts = deploy_opts();
    let t = StallAt::new(
        &inner,
        "if mkdir",
        Some(opts.cancel.clone()),
        Some(Duration::from_millis(300)),
    );
    let err = tokio::time::timeout(Duration::from_secs(20), deploy(&env, &t, &opts, &NullSink))
        .await
        .expect("the deploy ends")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    let calls: Vec<String> = inner
        .calls()
        .iter()
        .map(|c| c.command.inner_shell())
        .collect();
    let takes: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].contains("if mkdir"))
        .collect();
    let released = position(&inner, "the unlock", |s| s.contains("echo RELEASED"));
    assert_eq!(takes.len(), 2, "the attempt ran to its end: {calls:#?}");
    assert!(takes[1] < released, "freed after the attempt: {calls:#?}");
}
