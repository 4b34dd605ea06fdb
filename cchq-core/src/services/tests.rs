//! Unit tests of service planning and execution on the memory and mock transports.

use std::sync::Arc;

use super::*;
use crate::events::NullSink;
use crate::fixture_env as fixture;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;

fn req(services: &[&str], only: &[&str], limit: Option<&str>) -> Request {
    Request {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        only: only.iter().map(|s| (*s).to_owned()).collect(),
        limit: limit.map(str::to_owned),
    }
}

#[test]
fn commcare_covers_the_app_hosts() {
    let env = fixture("test");
    let (plans, _) = plan(&env, &req(&["commcare"], &[], None), Action::Stop).unwrap();
    let hosts: Vec<&str> = plans.iter().map(|p| p.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "cloud_worker_2",
            "cloud_worker_3",
            "cloud_worker_4",
            "cloud_worker_5",
            "cloud_worker_6"
        ]
    );
    assert!(plans.iter().all(|p| !p.programs.is_empty()), "{plans:#?}");
}

#[test]
fn only_and_limit_narrow_the_plan() {
    let env = fixture("development");
    let (plans, _) = plan(
        &env,
        &req(&["celery"], &["email_queue"], None),
        Action::Restart,
    )
    .unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(
        plans[0].names(None),
        ["commcare-hq-dev-celery_email_queue,reminder_case_update_queue_0"]
    );
    let (plans, warnings) = plan(
        &env,
        &req(&["webworker"], &[], Some("proxy")),
        Action::Status,
    )
    .unwrap();
    assert!(plans.is_empty());
    assert_eq!(warnings, ["no `webworker` hosts match `proxy`"]);
}

#[test]
fn unknown_services_and_bad_only_are_errors() {
    let env = fixture("test");
    let err = plan(&env, &req(&["webwrker"], &[], None), Action::Status).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.hint().unwrap().contains("webworker"));
    assert!(parse_only("a;b").is_err());
    assert!(parse_only("$(x)").is_err());
    assert_eq!(parse_only("q1,Pillow:2").unwrap(), ["q1", "Pillow:2"]);
    let err = plan(
        &env,
        &req(&["celery"], &["nosuchqueue"], None),
        Action::Status,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// An `--only` item that selects nothing is an error listing what it could name, even when another
/// item selects something (it was silently dropped: `--only email_queue,emial_queue`).
#[test]
fn every_only_item_must_select_something() {
    let env = fixture("development");
    let err = plan(
        &env,
        &req(&["celery"], &["email_queue", "emial_queue"], None),
        Action::Restart,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("`--only emial_queue`"), "{err}");
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("beat") && hint.contains("email_queue"),
        "{hint}"
    );
    assert!(
        plan(
            &env,
            &req(&["celery"], &["email_queue", "beat"], None),
            Action::Restart
        )
        .is_ok()
    );
}

#[tokio::test]
async fn stop_reports_states_and_failures_per_program() {
    let env = fixture("test");
    let (plans, _) = plan(&env, &req(&["pillowtop"], &[], None), Action::Stop).unwrap();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.respond(
        Some("cloud_worker_6"),
        "supervisor.stopProcess",
        Output::new(
            0,
            supervisor::fake_answer(&[(
                "commcare-hq-test-pillowtop-AppDbChangeFeedPillow-0",
                "STOPPED",
            )]),
            "",
        ),
    );
    let report = execute(
        &t,
        &plans,
        Action::Stop,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.rows[0].state, "STOPPED");
    assert_eq!(
        t.commands_on("cloud_worker_6").len(),
        1,
        "one round trip per host"
    );
}

#[tokio::test]
async fn unreachable_hosts_are_reported_while_others_complete() {
    let env = fixture("test");
    let (plans, _) = plan(&env, &req(&["webworker"], &[], None), Action::Status).unwrap();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.set_reachable("cloud_worker_3", false);
    t.respond(
        None,
        "supervisor.getAllProcessInfo",
        Output::new(
            0,
            supervisor::fake_answer(&[("commcare-hq-test-django", "RUNNING")]),
            "",
        ),
    );
    let report = execute(
        &t,
        &plans,
        Action::Status,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(!report.ok());
    assert_eq!(report.unreachable.len(), 1);
    assert_eq!(report.unreachable[0].0, "cloud_worker_3");
    assert_eq!(report.rows.iter().filter(|r| r.ok).count(), 2);
}

#[tokio::test]
async fn a_failed_rolling_batch_stops_the_roll() {
    let env = fixture("test");
    let (plans, _) = plan(&env, &req(&["webworker"], &[], None), Action::Restart).unwrap();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    // The first batch (one host of three) never becomes healthy.
    t.respond(
        None,
        "supervisor.getAllProcessInfo",
        Output::new(
            0,
            supervisor::fake_answer(&[("commcare-hq-test-django", "FATAL")]),
            "",
        ),
    );
    let opts = RollingOptions {
        timeout: Duration::from_millis(500),
        ..RollingOptions::default()
    };
    let report = execute(&t, &plans, Action::Restart, &opts, &NullSink).await;
    assert_eq!(report.failed_batch, ["cloud_worker_2"]);
    let skipped: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| r.state == "SKIPPED")
        .map(|r| r.host.as_str())
        .collect();
    assert_eq!(skipped, ["cloud_worker_3", "cloud_worker_4"]);
    assert!(
        t.commands_on("cloud_worker_3").is_empty(),
        "later batches were not touched"
    );
}

/// What `monit status <name>` prints (monit 5.33), in `state`.
fn monit_status(name: &str, state: &str) -> String {
    format!(
        "Monit 5.33.0 uptime: 3m\n\nProcess '{name}'\n  status                       {state}\n  monitoring status            Monitored\n  pid                          110\n"
    )
}

#[tokio::test]
async fn system_and_monit_services_are_driven_as_commcare_cloud_drives_them() {
    use crate::transport::MockTransport;
    let env = fixture("development");
    let mut mock = MockTransport::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    mock.expect_exec().returning(move |host, cmd| {
        let line = format!("{host}: {cmd}");
        seen2.lock().unwrap().push(line.clone());
        Ok(if line.contains("monit") {
            Output::new(0, monit_status("redis", "OK"), "")
        } else {
            Output::new(0, "running\n", "")
        })
    });
    let (plans, _) = plan(
        &env,
        &req(&["nginx", "redis"], &[], Some("192.168.33.17")),
        Action::Restart,
    )
    .unwrap();
    let report = execute(
        &mock,
        &plans,
        Action::Restart,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(report.ok(), "{report:#?}");
    let states: Vec<(&str, &str)> = report
        .rows
        .iter()
        .map(|r| (r.program.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(states, [("nginx", "running"), ("redis", "OK")]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("192.168.33.17: [as root] /bin/sh -c 'o=$(service nginx restart 2>&1)"),
        "{seen:?}"
    );
    assert!(
        seen[0].contains("o=$(service nginx status 2>&1); rc=$?"),
        "{seen:?}"
    );
    // commcare-cloud's monit check for redis is `redis` (monit.redis.j2), and monit only queues
    // actions: the command waits until it is no longer pending.
    assert!(
        seen[1].starts_with("192.168.33.17: [as root] /bin/sh -c 'monit restart redis; "),
        "{seen:?}"
    );
    assert!(
        seen[1].contains("pending") && seen[1].ends_with("monit status redis'"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_service_or_monit_check_not_in_the_wanted_state_is_not_ok() {
    use crate::transport::MockTransport;
    let env = fixture("development");
    for (nginx, monit, ok) in [
        ("running\n", monit_status("redis", "OK"), [true, true]),
        (
            "stopped\n",
            monit_status("redis", "Not monitored"),
            [false, false],
        ),
        (
            "unknown (exit 4)\n",
            monit_status("redis", "Does not exist"),
            [false, false],
        ),
        (
            "running\n",
            monit_status("redis", "Initializing"),
            [true, false],
        ),
        (
            "running\n",
            "Service 'redis' not found\n".to_owned(),
            [true, false],
        ),
    ] {
        let mut mock = MockTransport::new();
        let monit2 = monit.clone();
        mock.expect_exec().returning(move |_, cmd| {
            Ok(if cmd.to_string().contains("monit") {
                Output::new(0, monit2.clone(), "")
            } else {
                Output::new(0, nginx, "")
            })
        });
        let (plans, _) = plan(
            &env,
            &req(&["nginx", "redis"], &[], Some("192.168.33.17")),
            Action::Status,
        )
        .unwrap();
        let report = execute(
            &mock,
            &plans,
            Action::Status,
            &RollingOptions::default(),
            &NullSink,
        )
        .await;
        let got: Vec<bool> = report.rows.iter().map(|r| r.ok).collect();
        assert_eq!(got, ok, "{nginx} / {monit}: {report:#?}");
    }
    // Stopped is what `stop` wants.
    assert!(
        Action::Stop.wanted("Not monitored")
            && Action::Stop.wanted("stopped")
            && !Action::Stop.wanted("OK")
    );
    assert_eq!(
        monit_state(&monit_status("pgbouncer", "OK - stop pending")).as_deref(),
        Some("OK - stop pending")
    );
    assert_eq!(monit_state("Service 'x' not found\n"), None);
}

#[test]
fn the_postgresql_monit_check_is_named_after_the_version() {
    let env = fixture("development");
    let pg = catalog(&env)
        .into_iter()
        .find(|s| s.name == "postgresql")
        .unwrap();
    assert_eq!(
        pg.backend,
        Backend::Monit {
            name: format!("postgresql_{}", postgresql_version(&env))
        }
    );
}

#[tokio::test]
async fn a_supervisord_that_does_not_answer_is_an_error_row_naming_the_socket() {
    let env = fixture("test");
    let (plans, _) = plan(
        &env,
        &req(&["webworker"], &[], Some("cloud_worker_2")),
        Action::Status,
    )
    .unwrap();
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    t.respond(
        None,
        "supervisor.getAllProcessInfo",
        Output::new(7, "", "curl: (7) Couldn't connect to server\n"),
    );
    let report = execute(
        &t,
        &plans,
        Action::Status,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(!report.ok() && report.unreachable.is_empty(), "{report:#?}");
    assert_eq!(report.rows[0].state, "ERROR");
    assert!(
        report.rows[0].detail.contains("/var/run/supervisor.sock")
            && report.rows[0].detail.contains("Couldn't connect"),
        "{report:#?}"
    );
    // Not XML-RPC at all (an HTTP error page, a wrong socket): still a clear error.
    t.respond(
        None,
        "supervisor.getAllProcessInfo",
        Output::new(0, "Unauthorized", ""),
    );
    let report = execute(
        &t,
        &plans,
        Action::Status,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(
        report.rows[0]
            .detail
            .contains("not an XML-RPC response: `Unauthorized`"),
        "{report:#?}"
    );
}

/// The `development` fixture with its celery host moved onto the web worker (`192.168.33.15`):
/// a host whose plan rolls (it runs web workers) even when `--only` leaves none of them.
fn development_with_celery_on_the_web_worker() -> (tempfile::TempDir, Environment) {
    let from = cchq_testsupport::fixtures::environment("development");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("development");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let inventory = std::fs::read_to_string(dir.join("inventory.ini")).unwrap();
    let moved = inventory.replace("[celery]\n192.168.33.16", "[celery]\n192.168.33.15");
    assert_ne!(moved, inventory);
    std::fs::write(dir.join("inventory.ini"), moved).unwrap();
    let env = Environment::load(tmp.path(), "development").unwrap();
    (tmp, env)
}

/// `service celery restart --only beat` (and `service commcare restart --only beat`, whose plan
/// rolls a host that runs web workers, with no web worker program left after `--only`) once
/// panicked in the rolling phase (`clamp(1, 0)`: min > max). Now: no panic, beat restarted
/// (stopped and started on its host), nothing else touched.
#[tokio::test]
async fn restart_only_beat_restarts_beat_without_panicking() {
    let (_tmp, shared) = development_with_celery_on_the_web_worker();
    let cases = [
        (fixture("test"), "celery"),
        (fixture("test"), "commcare"),
        (shared.clone(), "celery"),
        (shared, "commcare"),
    ];
    let mut rolled = false;
    for (env, service) in cases {
        let (plans, _) = plan(&env, &req(&[service], &["beat"], None), Action::Restart).unwrap();
        rolled |= plans.iter().any(|p| p.rolling);
        let beat: Vec<String> = plans
            .iter()
            .flat_map(|p| p.names(Some(ProgramKind::CeleryBeat)))
            .collect();
        assert_eq!(beat.len(), 1, "{plans:#?}");
        assert!(
            plans
                .iter()
                .all(|p| p.programs.iter().all(|t| t.kind == ProgramKind::CeleryBeat)),
            "{plans:#?}"
        );
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        let answer = supervisor::fake_answer(&[(beat[0].as_str(), "RUNNING")]);
        for method in [
            "supervisor.stopProcess",
            "supervisor.startProcess",
            "supervisor.getAllProcessInfo",
        ] {
            t.respond(None, method, Output::new(0, answer.clone(), ""));
        }
        let report = execute(
            &t,
            &plans,
            Action::Restart,
            &RollingOptions::default(),
            &NullSink,
        )
        .await;
        assert!(
            report.ok() && report.failed_batch.is_empty(),
            "{service}: {report:#?}"
        );
        let rows: Vec<(&str, &str)> = report
            .rows
            .iter()
            .map(|r| (r.program.as_str(), r.state.as_str()))
            .collect();
        assert_eq!(rows, [(beat[0].as_str(), "RUNNING")], "{service}");
        let restarts: Vec<String> = t
            .calls()
            .into_iter()
            .map(|c| c.command.to_shell())
            .filter(|s| {
                s.contains("supervisor.stopProcess") && s.contains("supervisor.startProcess")
            })
            .collect();
        assert_eq!(restarts.len(), 1, "{service}: {restarts:?}");
        assert!(restarts[0].contains(&beat[0]), "{service}: {}", restarts[0]);
    }
    assert!(
        rolled,
        "one plan has a rolling phase with no web worker in it"
    );
}

/// A backend of an embedder's own (a Docker container): what [`ServiceBackend`]'s documentation
/// shows, with a `settle` that looks again while the container is still restarting.
#[derive(Debug)]
struct Container {
    name: String,
}

#[async_trait::async_trait]
impl ServiceBackend for Container {
    fn describe(&self) -> Backend {
        Backend::Custom {
            kind: "docker".into(),
            name: self.name.clone(),
        }
    }

    fn command(&self, action: Action, _names: &[String]) -> Result<crate::RemoteCommand> {
        let act = match action {
            Action::Status => String::new(),
            a => format!("docker {} {}; ", a.word(), self.name),
        };
        Ok(crate::RemoteCommand::shell(format!(
            "{act}docker inspect {}",
            self.name
        )))
    }

    fn states(
        &self,
        _host: &str,
        _action: Action,
        names: &[String],
        answer: &Output,
    ) -> Result<Vec<UnitState>> {
        if !answer.success() {
            return Err(Error::new(
                ErrorKind::CommandFailed,
                format!("docker: {}", answer.stderr_str().trim()),
            ));
        }
        let state = answer.stdout_str().trim().to_owned();
        Ok(names
            .iter()
            .map(|n| UnitState::new(n, &state, "container"))
            .collect())
    }

    async fn settle(
        &self,
        transport: &dyn Transport,
        host: &str,
        mut states: Vec<UnitState>,
    ) -> Vec<UnitState> {
        while states.iter().any(|s| s.state == "restarting") {
            let names: Vec<String> = states.iter().map(|s| s.name.clone()).collect();
            match self.run(transport, host, Action::Status, &names).await {
                Ok(s) => states = s,
                Err(_) => break,
            }
        }
        states
    }
}

/// The catalog of `env` with `web` on the web workers, a Docker container.
fn with_container(env: &Environment) -> Vec<ServiceDef> {
    let mut cat = catalog(env);
    cat.push(ServiceDef {
        name: "web".into(),
        hosts: "webworkers".into(),
        backend: Arc::new(Container { name: "web".into() }),
        app: false,
    });
    cat
}

/// An embedder's backend goes through `plan_with` and `execute` as the built-in ones do: one row
/// per host named after the service, its own command on each host, its own states, its own
/// `settle`.
#[tokio::test]
async fn a_backend_of_ones_own_is_planned_and_executed() {
    let env = fixture("test");
    let cat = with_container(&env);
    let (plans, warnings) =
        plan_with(&env, &cat, &req(&["web"], &[], None), Action::Restart).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let hosts: Vec<&str> = plans.iter().map(|p| p.host.as_str()).collect();
    assert_eq!(
        hosts,
        ["cloud_worker_2", "cloud_worker_3", "cloud_worker_4"]
    );
    for p in &plans {
        assert!(p.programs.is_empty() && !p.rolling, "{p:?}");
        assert_eq!(p.units.len(), 1, "{p:?}");
        assert_eq!(p.units[0].0, "web");
        assert!(
            p.units[0].1
                == Backend::Custom {
                    kind: "docker".into(),
                    name: "web".into()
                }
        );
    }
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    // Just restarted: `restarting`; looked at again: `running`.
    t.respond(None, "docker inspect web", Output::new(0, "running\n", ""));
    t.respond(
        None,
        "docker restart web",
        Output::new(0, "restarting\n", ""),
    );
    let report = execute(
        &t,
        &plans,
        Action::Restart,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    assert!(report.ok(), "{report:#?}");
    let rows: Vec<(&str, &str, &str)> = report
        .rows
        .iter()
        .map(|r| (r.host.as_str(), r.program.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("cloud_worker_2", "web", "running"),
            ("cloud_worker_3", "web", "running"),
            ("cloud_worker_4", "web", "running"),
        ]
    );
    assert_eq!(
        t.commands_on("cloud_worker_2"),
        [
            "/bin/sh -c 'docker restart web; docker inspect web'",
            "/bin/sh -c 'docker inspect web'"
        ]
    );
    // Its error: one row for the host, named after the service; other hosts go on.
    t.respond(
        Some("cloud_worker_3"),
        "docker inspect web",
        Output::new(1, "", "Error: No such object: web\n"),
    );
    let report = execute(
        &t,
        &plans,
        Action::Status,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    let rows: Vec<(&str, &str, bool)> = report
        .rows
        .iter()
        .map(|r| (r.host.as_str(), r.state.as_str(), r.ok))
        .collect();
    assert_eq!(
        rows,
        [
            ("cloud_worker_2", "running", true),
            ("cloud_worker_3", "ERROR", false),
            ("cloud_worker_4", "running", true),
        ]
    );
    assert!(
        report.rows[1].detail.contains("No such object"),
        "{report:#?}"
    );
}

/// `--json` and Python see a service's backend as its description, as they did when the backend
/// was an enum; an embedder's as `custom`.
#[test]
fn backends_serialize_as_their_description() {
    let env = fixture("development");
    let cat = with_container(&env);
    let json =
        |name: &str| serde_json::to_value(cat.iter().find(|s| s.name == name).unwrap()).unwrap();
    assert_eq!(
        json("nginx"),
        serde_json::json!({"name": "nginx", "hosts": "proxy", "backend": {"backend": "systemd", "unit": "nginx"}, "app": false})
    );
    assert_eq!(
        json("redis")["backend"],
        serde_json::json!({"backend": "monit", "name": "redis"})
    );
    assert_eq!(
        json("webworker")["backend"],
        serde_json::json!({"backend": "supervisor", "kinds": ["django"]})
    );
    assert_eq!(
        json("web")["backend"],
        serde_json::json!({"backend": "custom", "kind": "docker", "name": "web"})
    );
    let (plans, _) = plan(&env, &req(&["nginx"], &[], None), Action::Status).unwrap();
    assert_eq!(
        serde_json::to_value(&plans[0]).unwrap()["units"],
        serde_json::json!([["nginx", {"backend": "systemd", "unit": "nginx"}]])
    );
    let shown: Vec<String> = ["webworker", "nginx", "redis", "web"]
        .iter()
        .map(|n| {
            cat.iter()
                .find(|s| &s.name == n)
                .unwrap()
                .backend
                .describe()
                .to_string()
        })
        .collect();
    assert_eq!(
        shown,
        [
            "supervisor",
            "systemd unit `nginx`",
            "monit `redis`",
            "docker `web`"
        ]
    );
}

/// Each built-in backend says what it is made of, whether it rolls and how it starts after a
/// reboot; what the `match`es on the backend enum decided.
#[test]
fn the_built_in_backends_answer_for_themselves() {
    let env = fixture("test");
    let cat = catalog(&env);
    let get = |name: &str| cat.iter().find(|s| s.name == name).unwrap().backend.clone();
    let (web, nginx, redis) = (get("webworker"), get("nginx"), get("redis"));
    assert_eq!(
        web.programs(&env, "cloud_worker_2")
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["commcare-hq-test-django"]
    );
    assert!(nginx.programs(&env, "cloud_worker_1").is_none());
    assert!(web.rolls(Action::Restart) && !web.rolls(Action::Stop));
    assert!(!get("celery").rolls(Action::Restart) && !nginx.rolls(Action::Restart));
    assert!(web.start_after_reboot().is_none());
    let start = nginx.start_after_reboot().unwrap().to_shell();
    assert!(start.contains("systemctl start nginx"), "{start}");
    let start = redis.start_after_reboot().unwrap().to_shell();
    assert!(start.contains("monit start redis"), "{start}");
    let status = redis
        .command(Action::Status, &["redis".to_owned()])
        .unwrap()
        .to_string();
    assert_eq!(status, "[as root] /bin/sh -c 'monit status redis'");
    let status = web
        .command(Action::Status, &["commcare-hq-test-django".to_owned()])
        .unwrap()
        .inner_shell();
    assert!(
        status.contains("/var/run/supervisor.sock") && status.contains("getAllProcessInfo"),
        "{status}"
    );
}

/// The TCP probe of `check-services` knocks on formplayer's own port: `formplayer_port` of
/// public.yml, else the profile's default (8181, commcare-cloud's), which the rendered
/// `application.properties` (`server.port`) uses too.
#[test]
fn formplayer_is_probed_on_its_configured_port() {
    let (tmp, env) = development_with_celery_on_the_web_worker();
    assert_eq!(
        crate::services::check::probe_port(&env, "formplayer"),
        Some(8181)
    );
    let public = tmp.path().join("development/public.yml");
    let text = std::fs::read_to_string(&public).unwrap();
    std::fs::write(&public, format!("{text}\nformplayer_port: 8282\n")).unwrap();
    let env = Environment::load(tmp.path(), "development").unwrap();
    assert_eq!(
        crate::services::check::probe_port(&env, "formplayer"),
        Some(8282)
    );
}

/// A process number too big for one (`name:4294967296`) is refused, and never selects every
/// process of that name.
#[test]
fn an_only_number_that_is_no_number_is_refused() {
    let e = crate::services::parse_only("celery:4294967296").unwrap_err();
    assert!(e.message().contains("is no process number"), "{e:?}");
    assert!(crate::services::parse_only("celery:1,beat").is_ok());
}
