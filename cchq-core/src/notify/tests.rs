//! Notifications end to end: real SMTP and HTTP servers on 127.0.0.1 (`cchq_testsupport::servers`),
//! real environment directories, and the deploy engine on the memory transport.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cchq_testsupport::fixtures;
use cchq_testsupport::servers::{BlackHole, HttpServer, SmtpOptions, SmtpServer, closed_port};

use super::*;
use crate::deploy::{self, Options};
use crate::services::RollingOptions;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;

const PASSWORD: &str = "s3cret-Pa55w0rd!";
const LOGIN: &str = "deploys@example.org";
const PREVIOUS: &str = "1111111111111111111111111111111111111111";

/// An environment directory `notify-test` under `tmp`: two web hosts (h1 also runs everything
/// else), code from a fresh git repository, a plaintext vault with the SMTP password.
struct TestEnv {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl TestEnv {
    fn new(cchq_yml: &str, public_extra: &str, fab_extra: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("code.git");
        let git = |args: &[&str]| {
            let o = std::process::Command::new("git")
                .args(args)
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        std::fs::create_dir(&repo).unwrap();
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("manage.py"), "print('hi')\n").unwrap();
        git(&["add", "manage.py"]);
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
        let dir = tmp.path().join("notify-test");
        std::fs::create_dir(&dir).unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w(
            "meta.yml",
            "deploy_env: notify\nenv_monitoring_id: notify\nusers: []\n",
        );
        w(
            "inventory.ini",
            "[webworkers]\nh1\nh2\n[django_manage]\nh1\n[celery]\nh1\n[pillowtop]\nh1\n[proxy]\nh1\n",
        );
        w(
            "public.yml",
            &format!("daily_deploy_email: daily@example.org\n{public_extra}"),
        );
        w(
            "fab-settings.yml",
            &format!(
                "code_repo: {}\ndefault_branch: main\n{fab_extra}",
                repo.display()
            ),
        );
        w(
            "vault.yml",
            &format!(
                "localsettings_private:\n  EMAIL_LOGIN: '{LOGIN}'\n  EMAIL_PASSWORD: '{PASSWORD}'\nsecrets:\n  WEBHOOK: 'unset'\n"
            ),
        );
        w("cchq.yml", cchq_yml);
        // Every celery and pillowtop host is named, as validation (which a deploy passes first) asks.
        w(
            "app-processes.yml",
            "celery_processes:\n  h1: {}\npillows:\n  h1: {}\n",
        );
        Self { _tmp: tmp, dir }
    }

    fn set_vault(&self, text: &str) {
        std::fs::write(self.dir.join("vault.yml"), text).unwrap();
    }

    fn load(&self) -> Environment {
        Environment::load_dir(&self.dir).unwrap()
    }
}

fn vault_of(env: &Environment) -> Option<Value> {
    env.vault.plain()
}

/// The memory fleet: every command succeeds; the lock is taken; `current` holds `PREVIOUS`;
/// every supervisor program of a host is RUNNING.
fn fleet(env: &Environment) -> MemoryTransport {
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    let programs: std::collections::BTreeMap<String, String> = env
        .inventory
        .hosts()
        .map(|h| {
            let progs = crate::services::programs::programs_for_host(env, &h.name);
            let states: Vec<(&str, &str)> =
                progs.iter().map(|p| (p.name.as_str(), "RUNNING")).collect();
            (
                h.name.clone(),
                crate::services::supervisor::fake_answer(&states),
            )
        })
        .collect();
    for (host, status) in programs {
        t.respond_with(Some(&host), move |cmd| {
            let s = cmd.inner_shell();
            let out = if s.contains("echo TAKEN") {
                "TAKEN\n".to_owned()
            } else if s.contains("echo RELEASED") {
                "RELEASED\n".to_owned()
            } else if s.contains("supervisor.getAllProcessInfo") {
                status.clone()
            } else if s.contains("current rev-parse HEAD") {
                format!("{PREVIOUS}\n")
            } else if s.contains("checkout: done") {
                "checkout: done\nHAS_CURRENT_SETTINGS\n".to_owned()
            } else {
                String::new()
            };
            Some(Output::new(0, out, ""))
        });
    }
    t
}

type Events = Arc<Mutex<Vec<Event>>>;

fn sink(events: &Events) -> impl Fn(&Event) + Send + Sync + use<> {
    let e = events.clone();
    move |ev: &Event| e.lock().unwrap().push(ev.clone())
}

fn opts(env: &Environment) -> Options {
    Options {
        by: "tester@ci".into(),
        vault: vault_of(env),
        rolling: RollingOptions {
            healthy_for: Duration::ZERO,
            timeout: Duration::from_secs(10),
            ..RollingOptions::default()
        },
        ..Options::default()
    }
}

fn warnings(events: &Events) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            // The rolling restart reports its batches as warnings.
            Event::Warning { message, .. } if !message.starts_with("rolling restart:") => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect()
}

fn notifications(events: &Events) -> Vec<(String, String, bool)> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Notification {
                stage, channel, ok, ..
            } => Some((stage.clone(), channel.clone(), *ok)),
            _ => None,
        })
        .collect()
}

fn cchq_yml(smtp_port: u16, webhook: &str, extra_webhook: &str) -> String {
    format!(
        "notify:\n  email:\n    to: [ops@example.org, 'Dev Team <dev@example.org>']\n    from: 'cchq <deploys@example.org>'\n    smtp:\n      \
         host: 127.0.0.1\n      port: {smtp_port}\n      security: none\n      login: {LOGIN}\n  webhooks:\n    - url: {webhook}\n{extra_webhook}"
    )
}

#[tokio::test]
async fn a_successful_deploy_mails_and_posts_start_and_success() {
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some((LOGIN.into(), PASSWORD.into())),
        ..SmtpOptions::default()
    })
    .await;
    let hook = HttpServer::start(200, false).await;
    let failures_only = HttpServer::start(200, false).await;
    let extra = format!(
        "    - url: {}\n      events: [failure]\n",
        failures_only.url(false, "/only-failures")
    );
    let te = TestEnv::new(
        &cchq_yml(
            smtp.addr.port(),
            &hook.url(false, "/hooks/T0/B0/xyz"),
            &extra,
        ),
        "",
        "",
    );
    let env = te.load();
    let t = fleet(&env);
    let events: Events = Arc::default();
    let outcome = deploy::deploy(&env, &t, &opts(&env), &sink(&events))
        .await
        .unwrap();
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    assert_eq!(
        notifications(&events),
        [
            ("start", "email", true),
            ("start", "webhook", true),
            ("success", "email", true),
            ("success", "webhook", true)
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c))
    );

    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let (start, done) = (&mails[0], &mails[1]);
    for m in &mails {
        assert_eq!(
            m.auth.as_deref(),
            Some(format!("{LOGIN}:{PASSWORD}").as_str())
        );
        assert_eq!(m.from, "deploys@example.org");
        assert_eq!(
            m.header("From").as_deref(),
            Some("cchq <deploys@example.org>")
        );
        assert!(
            m.header("Date").is_some() && m.header("Message-ID").is_some(),
            "{}",
            m.data
        );
    }
    assert_eq!(start.to, ["ops@example.org", "dev@example.org"]);
    let subject = start.header("Subject").unwrap();
    assert!(
        subject.contains("notify-test")
            && subject.contains(&outcome.release)
            && subject.contains("started by tester@ci"),
        "{subject}"
    );
    // daily_deploy_email receives the success mail, as with commcare-cloud.
    assert_eq!(
        done.to,
        ["ops@example.org", "dev@example.org", "daily@example.org"]
    );
    let subject = done.header("Subject").unwrap();
    assert!(
        subject.contains("notify-test")
            && subject.contains(&outcome.release)
            && subject.contains("succeeded"),
        "{subject}"
    );
    let body = done.body();
    assert!(
        body.contains(&format!("Commit:       {}", outcome.commit)),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "Changes:      111111111111..{}",
            &outcome.commit[..12]
        )),
        "{body}"
    );
    assert!(
        body.contains("Duration:") && !body.contains("--resume"),
        "{body}"
    );

    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/hooks/T0/B0/xyz")
    );
    assert!(
        reqs[0]
            .headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    let (j0, j1) = (reqs[0].json(), reqs[1].json());
    assert_eq!(j0["event"], "deploy_start");
    assert_eq!(j1["event"], "deploy_success");
    assert_eq!(j1["env"], "notify-test");
    assert_eq!(j1["component"], "commcare");
    assert_eq!(j1["release"], outcome.release.as_str());
    assert_eq!(j1["commit"], outcome.commit.as_str());
    assert_eq!(j1["previous_commit"], PREVIOUS);
    assert_eq!(j1["by"], "tester@ci");
    assert_eq!(j1["hosts"], serde_json::json!(["h1", "h2"]));
    assert!(j1["duration_ms"].as_u64().is_some());
    assert!(j1["text"].as_str().unwrap().contains("succeeded"), "{j1}");
    assert!(
        failures_only.requests().is_empty(),
        "`events: [failure]` is honoured"
    );
}

#[tokio::test]
async fn a_failed_deploy_mails_the_failure_with_the_resume_command() {
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some((LOGIN.into(), PASSWORD.into())),
        ..SmtpOptions::default()
    })
    .await;
    let hook = HttpServer::start(204, false).await;
    let failures_only = HttpServer::start(200, false).await;
    let extra = format!(
        "    - url: {}\n      events: [failure]\n",
        failures_only.url(false, "/only-failures")
    );
    let te = TestEnv::new(
        &cchq_yml(smtp.addr.port(), &hook.url(false, "/hook"), &extra),
        "",
        "",
    );
    let env = te.load();
    let t = fleet(&env);
    t.respond(
        Some("h2"),
        "checkout: done",
        Output::new(128, "", "fatal: unable to access the repository\n"),
    );
    let events: Events = Arc::default();
    let release = "2026-11-26_16.05.12".to_owned();
    let o = Options {
        name: Some(release.clone()),
        ..opts(&env)
    };
    let err = deploy::deploy(&env, &t, &o, &sink(&events))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::DeployFailed);
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    let resume = format!("cchq notify-test deploy --resume {release}");

    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let failed = &mails[1];
    assert_eq!(
        failed.to,
        ["ops@example.org", "dev@example.org"],
        "daily_deploy_email only gets successes"
    );
    let subject = failed.header("Subject").unwrap();
    assert!(
        subject.contains("notify-test") && subject.contains(&release) && subject.contains("FAILED"),
        "{subject}"
    );
    let body = failed.body();
    assert!(body.contains(&resume), "{body}");
    assert!(body.contains("Failed step:  build: checkout"), "{body}");
    assert!(body.contains("Failed on:    h2"), "{body}");
    assert!(body.contains("unable to access the repository"), "{body}");

    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    let j = reqs[1].json();
    assert_eq!(j["event"], "deploy_failure");
    assert_eq!(j["resume_command"], resume.as_str());
    assert_eq!(j["failed_step"], "build: checkout");
    assert_eq!(j["failed_hosts"], serde_json::json!(["h2"]));
    assert!(
        j["error"].as_str().unwrap().contains("checkout failed"),
        "{j}"
    );
    assert!(
        j["text"].as_str().unwrap().contains("FAILED")
            && j["text"].as_str().unwrap().contains(&resume),
        "{j}"
    );
    let only = failures_only.requests();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].json()["event"], "deploy_failure");
}

#[tokio::test]
async fn unreachable_servers_are_warnings_and_the_deploy_succeeds() {
    let hole = BlackHole::start().await;
    let closed = closed_port().await;
    let refused = closed.port;
    let cchq = format!(
        "notify:\n  timeout_secs: 1\n  email:\n    to: [ops@example.org]\n    smtp: {{host: 127.0.0.1, port: {refused}, security: none}}\n  \
         webhooks:\n    - url: http://{}/hook\n    - url: http://127.0.0.1:{refused}/hook\n",
        hole.addr
    );
    let te = TestEnv::new(&cchq, "", "");
    let env = te.load();
    let t = fleet(&env);
    let events: Events = Arc::default();
    let started = Instant::now();
    let outcome = deploy::deploy(&env, &t, &opts(&env), &sink(&events)).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the 1 s limit: {:?}",
        started.elapsed()
    );
    let w = warnings(&events);
    assert_eq!(w.len(), 6, "{w:#?}");
    assert_eq!(
        w.iter()
            .filter(|m| m.contains("no answer within 1 s"))
            .count(),
        2,
        "{w:#?}"
    );
    assert_eq!(
        w.iter().filter(|m| m.contains("cannot connect")).count(),
        4,
        "{w:#?}"
    );
    assert!(
        w.iter().all(|m| m.contains("never fail a deploy")),
        "{w:#?}"
    );
    assert!(
        w.iter().all(|m| !m.contains("/hook")),
        "webhook paths are not shown: {w:#?}"
    );
    assert!(notifications(&events).iter().all(|(_, _, ok)| !ok));
}

#[tokio::test]
async fn the_smtp_password_never_appears_in_events() {
    // The server refuses the login and echoes what it got, base64 and decoded.
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some((LOGIN.into(), "another-password".into())),
        ..SmtpOptions::default()
    })
    .await;
    let te = TestEnv::new(
        &cchq_yml(smtp.addr.port(), "http://127.0.0.1:9/x", ""),
        "",
        "",
    );
    let env = te.load();
    let t = fleet(&env);
    t.respond(
        Some("h1"),
        "checkout: done",
        Output::new(1, "", format!("the vault said {PASSWORD}\n")),
    );
    let events: Events = Arc::default();
    deploy::deploy(&env, &t, &opts(&env), &sink(&events))
        .await
        .unwrap_err();
    let w = warnings(&events);
    assert!(
        w.iter()
            .any(|m| m.contains("535 5.7.8 authentication failed for")),
        "{w:#?}"
    );
    let all = serde_json::to_string(&*events.lock().unwrap()).unwrap();
    let plain = crate::command::base64(format!("\0{LOGIN}\0{PASSWORD}").as_bytes());
    for secret in [
        PASSWORD,
        &crate::command::base64(PASSWORD.as_bytes()),
        &plain,
    ] {
        assert!(!all.contains(secret), "`{secret}` leaked: {all}");
    }
    let n = Notifier::from_env(&env, vault_of(&env).as_ref());
    assert!(!format!("{n:?}").contains(PASSWORD));
    assert!(smtp.mails().is_empty());
}

#[tokio::test]
async fn no_notify_and_email_enabled_false_send_nothing() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let hook = HttpServer::start(200, false).await;
    let te = TestEnv::new(
        &cchq_yml(smtp.addr.port(), &hook.url(false, "/h"), ""),
        "",
        "",
    );
    let env = te.load();
    let events: Events = Arc::default();
    deploy::deploy(
        &env,
        &fleet(&env),
        &Options {
            notify: false,
            ..opts(&env)
        },
        &sink(&events),
    )
    .await
    .unwrap();
    assert!(notifications(&events).is_empty() && warnings(&events).is_empty());
    assert_eq!((smtp.connections(), hook.requests().len()), (0, 0));

    // commcare-cloud's switch: email off, webhooks still on.
    let te = TestEnv::new(
        &cchq_yml(smtp.addr.port(), &hook.url(false, "/h"), ""),
        "",
        "email_enabled: False\n",
    );
    let env = te.load();
    let events: Events = Arc::default();
    deploy::deploy(&env, &fleet(&env), &opts(&env), &sink(&events))
        .await
        .unwrap();
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    assert_eq!(smtp.connections(), 0);
    assert_eq!(hook.requests().len(), 2);
}

fn notice(stage: Stage) -> Notice {
    Notice::new(
        stage,
        "notify-test",
        Component::Commcare,
        "2026-11-26_16.05.12",
        "tester@ci",
    )
    .with_commits(
        "https://github.com/dimagi/commcare-hq.git",
        Some("abcdef0123456789abcdef0123456789abcdef01"),
        Some(PREVIOUS),
    )
}

#[tokio::test]
async fn starttls_implicit_tls_and_https_trust_the_environment_ca() {
    let ca = fixtures::tls().join("ca.pem");
    let auth = Some((LOGIN.to_owned(), PASSWORD.to_owned()));
    let starttls = SmtpServer::start(SmtpOptions {
        auth: auth.clone(),
        starttls: true,
        ..SmtpOptions::default()
    })
    .await;
    let implicit = SmtpServer::start(SmtpOptions {
        auth,
        implicit_tls: true,
        ..SmtpOptions::default()
    })
    .await;
    let hook = HttpServer::start(200, true).await;
    for (server, security, host) in [
        (&starttls, "starttls", "localhost"),
        (&implicit, "tls", "127.0.0.1"),
    ] {
        let cchq = format!(
            "notify:\n  ca_file: {}\n  email:\n    to: [ops@example.org]\n    smtp: {{host: {host}, port: {}, security: {security}, login: {LOGIN}}}\n  \
             webhooks:\n    - url_vault: secrets.WEBHOOK\n",
            ca.display(),
            server.addr.port()
        );
        let te = TestEnv::new(&cchq, "", "");
        te.set_vault(&format!(
            "localsettings_private:\n  EMAIL_PASSWORD: '{PASSWORD}'\nsecrets:\n  WEBHOOK: '{}'\n",
            hook.url(true, "/services/T0/B0/secret-token")
        ));
        let env = te.load();
        let n = Notifier::from_env(&env, vault_of(&env).as_ref());
        assert!(n.warnings().is_empty(), "{:?}", n.warnings());
        let events: Events = Arc::default();
        n.send(&notice(Stage::Success), &sink(&events)).await;
        assert!(
            warnings(&events).is_empty(),
            "{security}: {:?}",
            warnings(&events)
        );
        let mails = server.mails();
        assert_eq!(mails.len(), 1, "{security}");
        assert!(mails[0].tls, "{security}: the message went encrypted");
        assert_eq!(
            mails[0].auth.as_deref(),
            Some(format!("{LOGIN}:{PASSWORD}").as_str())
        );
        let body = mails[0].body();
        assert!(body.contains("https://github.com/dimagi/commcare-hq/compare/1111111111111111111111111111111111111111...abcdef"), "{body}");
        let all = serde_json::to_string(&*events.lock().unwrap()).unwrap();
        assert!(
            !all.contains("secret-token"),
            "the vault-held webhook URL is not shown: {all}"
        );
    }
    assert_eq!(hook.requests().len(), 2);
    assert_eq!(hook.requests()[0].path, "/services/T0/B0/secret-token");

    // Without the CA, the test certificate is not trusted.
    let cchq = format!(
        "notify:\n  webhooks:\n    - url: {}\n",
        hook.url(true, "/x")
    );
    let env = TestEnv::new(&cchq, "", "").load();
    let events: Events = Arc::default();
    Notifier::from_env(&env, None)
        .send(&notice(Stage::Start), &sink(&events))
        .await;
    let w = warnings(&events);
    assert!(w.len() == 1 && w[0].contains("TLS"), "{w:?}");
}

#[tokio::test]
async fn starttls_is_required_when_asked_for() {
    let smtp = SmtpServer::start(SmtpOptions::default()).await;
    let cchq = format!(
        "notify:\n  email:\n    to: [ops@example.org]\n    smtp: {{host: 127.0.0.1, port: {}, security: starttls}}\n",
        smtp.addr.port()
    );
    let env = TestEnv::new(&cchq, "", "").load();
    let events: Events = Arc::default();
    Notifier::from_env(&env, None)
        .send(&notice(Stage::Start), &sink(&events))
        .await;
    let w = warnings(&events);
    assert!(
        w.len() == 1 && w[0].contains("does not offer STARTTLS"),
        "{w:?}"
    );
    assert!(smtp.mails().is_empty(), "nothing is sent in the clear");
}

#[tokio::test]
async fn a_helo_only_relay_gets_the_mail_over_helo() {
    let smtp = SmtpServer::start(SmtpOptions {
        helo_only: true,
        ..SmtpOptions::default()
    })
    .await;
    let cchq = format!(
        "notify:\n  email:\n    to: [ops@example.org]\n    smtp: {{host: 127.0.0.1, port: {}, security: none}}\n",
        smtp.addr.port()
    );
    let env = TestEnv::new(&cchq, "", "").load();
    let events: Events = Arc::default();
    let mut n = notice(Stage::Failure);
    n.error = Some(".a line that starts with a dot\nand another".into());
    Notifier::from_env(&env, None)
        .send(&n, &sink(&events))
        .await;
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].helo, super::helo_name());
    assert_eq!(
        (mails[0].from.as_str(), mails[0].to.as_slice()),
        ("cchq@localhost", &["ops@example.org".to_owned()][..])
    );
    assert_eq!(
        mails[0].body(),
        n.body(),
        "dot-stuffing undone, no line added"
    );

    // A login needs ESMTP: said, not tried.
    let cchq = format!(
        "notify:\n  email:\n    to: [ops@example.org]\n    smtp: {{host: 127.0.0.1, port: {}, security: none, login: {LOGIN}}}\n",
        smtp.addr.port()
    );
    let te = TestEnv::new(&cchq, "", "");
    let env = te.load();
    let events: Events = Arc::default();
    Notifier::from_env(&env, vault_of(&env).as_ref())
        .send(&n, &sink(&events))
        .await;
    let w = warnings(&events);
    assert!(
        w.len() == 1 && w[0].contains("502") && w[0].contains("HELO-only"),
        "{w:?}"
    );
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn commcare_cloud_localsettings_are_the_default_smtp_server() {
    let smtp = SmtpServer::start(SmtpOptions {
        auth: Some((LOGIN.into(), PASSWORD.into())),
        ..SmtpOptions::default()
    })
    .await;
    let public = format!(
        "server_email: 'CommCare HQ <commcarehq-noreply@example.org>'\nlocalsettings:\n  EMAIL_SMTP_HOST: 127.0.0.1\n  \
         EMAIL_SMTP_PORT: '{}'\n  EMAIL_USE_TLS: no\n",
        smtp.addr.port()
    );
    let te = TestEnv::new(
        "notify:\n  email:\n    to: [ops@example.org]\n    events: [failure]\n",
        &public,
        "",
    );
    let env = te.load();
    let vault = vault_of(&env);
    let n = Notifier::from_env(&env, vault.as_ref());
    let events: Events = Arc::default();
    n.send(&notice(Stage::Start), &sink(&events)).await;
    assert_eq!(smtp.connections(), 0, "`events: [failure]` skips the start");
    n.send(&notice(Stage::Failure), &sink(&events)).await;
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "commcarehq-noreply@example.org");
    assert_eq!(
        mails[0].auth.as_deref(),
        Some(format!("{LOGIN}:{PASSWORD}").as_str()),
        "EMAIL_LOGIN/EMAIL_PASSWORD from the vault"
    );

    // Without the vault the password is missing: said once, email off.
    let n = Notifier::from_env(&env, None);
    assert!(n.is_empty());
    assert!(n.warnings()[0].contains("vault"), "{:?}", n.warnings());
    // A template host (as in commcare-cloud's development environment) needs `smtp.host`.
    let te = TestEnv::new(
        "notify:\n  email:\n    to: [ops@example.org]\n",
        "localsettings:\n  EMAIL_SMTP_HOST: '{{ groups.proxy.0 }}'\n",
        "",
    );
    let env = te.load();
    let n = Notifier::from_env(&env, vault.as_ref());
    assert!(n.warnings()[0].contains("smtp.host"), "{:?}", n.warnings());
}

#[test]
fn bad_notify_settings_are_refused_when_cchq_yml_loads() {
    for (yml, says) in [
        (
            "notify:\n  email:\n    to: [a@b.c]\n    smtp:\n      host: x\n      password: hunter22\n",
            "passwords do not go in cchq.yml",
        ),
        (
            "notify:\n  webhooks:\n    - url: https://x/\n      url_vault: a.b\n",
            "exactly one of",
        ),
        ("notify:\n  webhooks:\n    - url: ftp://x/\n", "https://"),
        (
            "notify:\n  email:\n    to: [not-an-address]\n",
            "not an email address",
        ),
        ("notify:\n  email:\n    tos: [a@b.c]\n", "cchq.yml:3"),
        ("notify:\n  email:\n    events: [sometimes]\n", "sometimes"),
    ] {
        let te = TestEnv::new(yml, "", "");
        let err = Environment::load_dir(&te.dir).unwrap_err();
        assert!(err.to_string().contains(says), "{yml}: {err}");
        assert!(!err.to_string().contains("hunter22"), "{err}");
    }
}

#[test]
fn the_fixture_environments_have_no_notifications() {
    for name in ["development", "test"] {
        let env = crate::fixture_env(name);
        assert!(env.profile.notify.is_none());
        assert!(Notifier::from_env(&env, None).is_empty());
    }
}

#[test]
fn notices_read_well() {
    let mut n = notice(Stage::Failure);
    n.failed_step = Some("switch".into());
    n.resume_command = Some(Notice::resume_command_for(
        "prod",
        Component::Formplayer,
        "r1",
    ));
    assert_eq!(
        n.resume_command.as_deref(),
        Some("cchq prod deploy formplayer --resume r1")
    );
    assert_eq!(
        n.subject(),
        "[cchq] notify-test: deploy of commcare release 2026-11-26_16.05.12 FAILED"
    );
    assert_eq!(
        n.commit_range.as_deref(),
        Some("111111111111..abcdef012345")
    );
    assert_eq!(
        github_web("git@github.com:dimagi/commcare-hq.git").as_deref(),
        Some("https://github.com/dimagi/commcare-hq")
    );
    assert_eq!(github_web("/srv/git/app.git"), None);
    assert_eq!(
        address("Dev <dev@example.org>").as_deref(),
        Some("dev@example.org")
    );
    assert_eq!(address("a b@c"), None);
}

/// Issue 12: a commit of multi-byte characters (read from a host's records) panicked when cut.
#[test]
fn short_commits_cut_on_characters() {
    assert_eq!(super::short("0123456789abcdef"), "0123456789ab");
    assert_eq!(super::short("ééééééééééééé"), "éééééééééééé");
    assert_eq!(super::short("abc"), "abc");
}

/// aiosmtpd (PyPI), a third-party SMTP server: each message it accepts is parsed by Python's
/// `email` package (`policy.default`, which decodes encoded words and transfer encodings) and
/// written as JSON. AUTH PLAIN/LOGIN with one login; STARTTLS with the test certificate.
const AIOSMTPD_SERVER: &str = r#"
import json, os, ssl, sys, time
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out, port, login, password, tls_dir, starttls = sys.argv[1:7]
starttls = starttls == "1"

class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        record = {
            "helo": session.host_name,
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "auth": session.authenticated,
            "subject": str(msg["subject"]),
            "header_from": str(msg["from"]),
            "header_to": str(msg["to"]),
            "date": str(msg["date"]),
            "message_id": str(msg["message-id"]),
            "body": msg.get_content(),
            "raw": envelope.original_content.decode("ascii", "replace"),
            "defects": [repr(d) for d in msg.defects] + [repr(d) for h in msg.values() for d in getattr(h, "defects", [])],
        }
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        with open(os.path.join(out, "tmp"), "w") as f:
            json.dump(record, f)
        os.rename(os.path.join(out, "tmp"), os.path.join(out, f"{n}.json"))
        return "250 2.0.0 queued"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == (login, password)
    return AuthResult(success=ok, handled=False)

kwargs = {}
if starttls:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(tls_dir, "server.pem"), os.path.join(tls_dir, "server.key"))
    kwargs = {"tls_context": ctx, "require_starttls": True}
c = Controller(Handler(), hostname="127.0.0.1", port=int(port), authenticator=authenticator if login else None,
               auth_require_tls=starttls, **kwargs)
c.start()
print("READY", flush=True)
sys.stdin.read()
c.stop()
"#;

/// A running aiosmtpd, stopped (its own process, by handle) when dropped.
struct Aiosmtpd {
    child: std::process::Child,
    port: u16,
    out: tempfile::TempDir,
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Aiosmtpd {
    /// The messages it accepted, as Python's `email` read them.
    fn mails(&self) -> Vec<serde_json::Value> {
        let dir = self.out.path().join("mails");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".json")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .collect();
        names.sort_unstable();
        names
            .iter()
            .map(|n| {
                serde_json::from_slice(&std::fs::read(dir.join(format!("{n}.json"))).unwrap())
                    .unwrap()
            })
            .collect()
    }
}

/// A Python with aiosmtpd: `$CCHQ_AIOSMTPD_VENV` (tests/run-all makes it), `/tmp/cchq-aiosmtpd-venv`,
/// else `python3` on PATH if it has the package.
fn aiosmtpd_python() -> Option<PathBuf> {
    let venv = std::env::var_os("CCHQ_AIOSMTPD_VENV")
        .map_or_else(|| PathBuf::from("/tmp/cchq-aiosmtpd-venv"), PathBuf::from);
    let has = |p: &Path| {
        std::process::Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    [venv.join("bin/python"), PathBuf::from("python3")]
        .into_iter()
        .find(|p| has(p))
}

/// aiosmtpd on a free port of 127.0.0.1, or `None` after saying why the test is skipped (a
/// failure instead when `CCHQ_REQUIRE_AIOSMTPD=1`, as tests/run-all sets once it installed it).
#[allow(
    clippy::print_stderr,
    reason = "a skipped test says why, as the fleet tests do"
)]
fn aiosmtpd(test: &str, starttls: bool, auth: Option<(&str, &str)>) -> Option<Aiosmtpd> {
    let skip = |why: String| {
        assert!(
            std::env::var("CCHQ_REQUIRE_AIOSMTPD").as_deref() != Ok("1"),
            "{test}: {why} (CCHQ_REQUIRE_AIOSMTPD=1)"
        );
        eprintln!(
            "skipping {test}: {why} (tests/run-all installs it; or `python3 -m venv /tmp/cchq-aiosmtpd-venv && /tmp/cchq-aiosmtpd-venv/bin/pip install aiosmtpd`)"
        );
        None
    };
    let Some(python) = aiosmtpd_python() else {
        return skip("no Python with aiosmtpd".into());
    };
    let out = tempfile::tempdir().unwrap();
    let script = out.path().join("server.py");
    std::fs::write(&script, AIOSMTPD_SERVER).unwrap();
    let records = out.path().join("mails");
    std::fs::create_dir(&records).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (login, password) = auth.unwrap_or_default();
    let child = std::process::Command::new(&python)
        .args(["-W", "ignore::DeprecationWarning"])
        .arg(&script)
        .args([
            records.to_str().unwrap(),
            &port.to_string(),
            login,
            password,
            fixtures::tls().to_str().unwrap(),
            if starttls { "1" } else { "0" },
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return skip(format!("cannot start `{}`: {e}", python.display())),
    };
    let mut server = Aiosmtpd { child, port, out };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            return skip(format!("aiosmtpd exited ({status})"));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return skip(format!(
                "aiosmtpd did not listen on port {port} within 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

#[tokio::test]
async fn aiosmtpd_reads_our_mail_as_we_wrote_it() {
    let Some(server) = aiosmtpd("aiosmtpd_reads_our_mail_as_we_wrote_it", false, None) else {
        return;
    };
    let cchq = format!(
        "notify:\n  email:\n    to: [ops@example.org, 'Dev Team <dev@example.org>']\n    from: 'Équipe Déploiement <deploys@example.org>'\n    \
         smtp: {{host: 127.0.0.1, port: {}, security: none}}\n",
        server.port
    );
    let env = TestEnv::new(&cchq, "", "").load();
    let n = Notifier::from_env(&env, None);
    assert!(n.warnings().is_empty(), "{:?}", n.warnings());
    let mut failed = notice(Stage::Failure);
    failed.failed_step = Some("build: checkout".into());
    failed.failed_hosts = vec!["web1".into(), "web2".into()];
    failed.error =
        Some("git: fatal: unable to access the repository — ☹\n.leading dot line\n".into());
    failed.resume_command = Some(Notice::resume_command_for(
        "notify-test",
        Component::Commcare,
        "2026-11-26_16.05.12",
    ));
    let events: Events = Arc::default();
    n.send(&failed, &sink(&events)).await;
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));

    let mails = server.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert_eq!(
        m["defects"],
        serde_json::json!([]),
        "Python's email parser found defects: {m}"
    );
    assert_eq!(m["from"], "deploys@example.org");
    assert_eq!(
        m["to"],
        serde_json::json!(["ops@example.org", "dev@example.org"])
    );
    assert_eq!(m["helo"], super::helo_name().as_str());
    assert_eq!(m["header_from"], "Équipe Déploiement <deploys@example.org>");
    assert_eq!(m["subject"], failed.subject().as_str());
    assert!(
        m["date"].as_str().unwrap().ends_with("+0000")
            && m["message_id"].as_str().unwrap().ends_with("@example.org>"),
        "{m}"
    );
    // The body as written: no blank line added at its end, dot-stuffing undone.
    assert_eq!(
        m["body"].as_str().unwrap().replace("\r\n", "\n"),
        failed.body()
    );
    let raw = m["raw"].as_str().unwrap();
    assert!(raw.split("\r\n").all(|l| l.len() <= 998), "{raw}");
}

#[tokio::test]
async fn aiosmtpd_unfolds_long_subjects_and_decodes_names_in_any_script() {
    let Some(server) = aiosmtpd(
        "aiosmtpd_unfolds_long_subjects_and_decodes_names_in_any_script",
        false,
        None,
    ) else {
        return;
    };
    let subject = "[cchq] production-ñ: deploy of commcare release 2026-11-26_16.05.12 by déployeur@example.org FAILED on \
                   web0, web1, web2, web3, celery0, celery1 (検証)";
    let to = vec!["Ops Ωmega <ops@example.org>".to_owned()];
    let mail = smtp::message(
        "Zoë <zoe@example.org>",
        "zoe@example.org",
        &to,
        subject,
        "ünïcode body\nline 2\n",
        1_795_710_312,
    )
    .unwrap();
    let s = smtp::Server {
        host: "127.0.0.1".into(),
        port: server.port,
        security: Security::None,
        login: None,
        password: None,
        roots: None,
    };
    smtp::send(&s, &mail, "controller.example.org", Duration::from_secs(10))
        .await
        .unwrap();
    let m = &server.mails()[0];
    assert_eq!(m["defects"], serde_json::json!([]), "{m}");
    assert_eq!(m["subject"], subject);
    assert_eq!(m["header_from"], "Zoë <zoe@example.org>");
    assert_eq!(m["header_to"], "Ops Ωmega <ops@example.org>");
    assert_eq!(
        m["body"].as_str().unwrap().replace("\r\n", "\n"),
        "ünïcode body\nline 2\n"
    );
    assert_eq!(m["helo"], "controller.example.org");
    let raw = m["raw"].as_str().unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        head.is_ascii() && head.split("\r\n").all(|l| l.len() <= 78),
        "folded 7-bit headers: {head}"
    );
}

#[tokio::test]
async fn aiosmtpd_takes_mail_after_starttls_and_login() {
    let Some(server) = aiosmtpd(
        "aiosmtpd_takes_mail_after_starttls_and_login",
        true,
        Some((LOGIN, PASSWORD)),
    ) else {
        return;
    };
    let cchq = format!(
        "notify:\n  ca_file: {}\n  email:\n    to: [ops@example.org]\n    smtp: {{host: localhost, port: {}, security: starttls, login: {LOGIN}}}\n",
        fixtures::tls().join("ca.pem").display(),
        server.port
    );
    let te = TestEnv::new(&cchq, "", "");
    let env = te.load();
    let n = Notifier::from_env(&env, vault_of(&env).as_ref());
    assert!(n.warnings().is_empty(), "{:?}", n.warnings());
    let events: Events = Arc::default();
    n.send(&notice(Stage::Success), &sink(&events)).await;
    assert!(warnings(&events).is_empty(), "{:?}", warnings(&events));
    let m = &server.mails()[0];
    assert_eq!(
        (m["tls"].as_bool(), m["auth"].as_bool()),
        (Some(true), Some(true)),
        "{m}"
    );
    assert_eq!(
        m["body"].as_str().unwrap().replace("\r\n", "\n"),
        notice(Stage::Success).body()
    );

    // A wrong password: refused, said, and not shown.
    te.set_vault(&format!(
        "localsettings_private:\n  EMAIL_PASSWORD: 'not-{PASSWORD}'\nsecrets:\n  WEBHOOK: x\n"
    ));
    let env = te.load();
    let n = Notifier::from_env(&env, vault_of(&env).as_ref());
    let events: Events = Arc::default();
    n.send(&notice(Stage::Success), &sink(&events)).await;
    let w = warnings(&events);
    assert!(w.len() == 1 && w[0].contains("535"), "{w:?}");
    assert!(!w[0].contains(PASSWORD), "{w:?}");
    assert_eq!(server.mails().len(), 1);
}
