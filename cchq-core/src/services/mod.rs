//! Services: the catalog (which services exist, on which hosts, through which backend), and
//! start/stop/restart/status of them on their hosts.
//!
//! How a service is controlled is its backend, a [`ServiceBackend`]: supervisor programs
//! ([`Supervisor`], over supervisord's XML-RPC socket), system services ([`Systemd`], through
//! `service`) and monit checks ([`Monit`]) are its implementations, and an embedder can add their
//! own ([`plan_with`] plans a catalog of one's own).
//!
//! Planning ([`plan`]) is pure: it turns services, `--only` and `--limit` into per-host targets.
//! Execution ([`execute`]) runs the plan through a [`Transport`], all hosts in parallel, with
//! rolling, health-checked restarts of web workers.

pub mod backend;
pub mod check;
pub mod monit;
pub mod programs;
pub mod supervisor;
pub mod systemd;
pub mod xmlrpc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventSink};
use crate::fanout::{DEFAULT_FORKS, bounded};
use crate::transport::Transport;
pub use backend::{Backend, ServiceBackend, UnitState};
pub use monit::{Monit, monit_state};
use programs::ProgramKind;
use supervisor::ProgramStatus;
pub use supervisor::{Supervisor, settle};
pub use systemd::Systemd;

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDef {
    /// Its name (`webworker`, `celery`, `postgresql`, ...).
    pub name: String,
    /// The host pattern of its hosts.
    pub hosts: String,
    /// Its backend: how it is controlled on its hosts (serialized as its [`Backend`]
    /// description).
    #[serde(serialize_with = "backend::serialize_shared")]
    pub backend: Arc<dyn ServiceBackend>,
    /// Whether it is part of the `commcare` meta-service.
    pub app: bool,
}

/// The services the built-in `commcare` profile knows (those whose groups the inventory has).
pub fn catalog(env: &Environment) -> Vec<ServiceDef> {
    let socket = &env.profile.supervisor_socket;
    let sup = |kinds: &[ProgramKind]| -> Arc<dyn ServiceBackend> {
        Arc::new(Supervisor::new(kinds, socket.clone()))
    };
    let unit = |unit: &str| -> Arc<dyn ServiceBackend> { Arc::new(Systemd::new(unit)) };
    let monit = |name: String| -> Arc<dyn ServiceBackend> { Arc::new(Monit::new(name)) };
    let svc = |name: &str, hosts: &str, backend: Arc<dyn ServiceBackend>, app: bool| ServiceDef {
        name: name.into(),
        hosts: hosts.into(),
        backend,
        app,
    };
    let all = [
        svc("webworker", "webworkers", sup(&[ProgramKind::Django]), true),
        svc(
            "celery",
            "celery",
            sup(&[
                ProgramKind::Celery,
                ProgramKind::CeleryBeat,
                ProgramKind::Flower,
                ProgramKind::ManagementCommand,
            ]),
            true,
        ),
        svc(
            "pillowtop",
            "pillowtop",
            sup(&[ProgramKind::Pillowtop]),
            true,
        ),
        svc(
            "formplayer",
            "formplayer",
            sup(&[ProgramKind::Formplayer]),
            true,
        ),
        svc("nginx", "proxy", unit("nginx"), false),
        svc(
            "postgresql",
            // (An exclusion of a group the inventory does not have is refused.)
            if env.inventory.group("remote_postgresql").is_some() {
                "postgresql:pg_standby:!remote_postgresql"
            } else {
                "postgresql:pg_standby"
            },
            monit(format!("postgresql_{}", postgresql_version(env))),
            false,
        ),
        svc("pgbouncer", "pgbouncer", monit("pgbouncer".into()), false),
        // commcare-cloud's monit check is `redis` (roles/redis/templates/monit.redis.j2); its
        // `service redis status` asks monit about `redis-server`, which no check is called.
        svc("redis", "redis", monit("redis".into()), false),
        svc("couchdb2", "couchdb2", monit("couchdb2".into()), false),
        svc(
            "elasticsearch",
            "elasticsearch",
            unit("elasticsearch"),
            false,
        ),
        svc("kafka", "kafka", unit("kafka-server"), false),
        svc("zookeeper", "zookeeper", unit("zookeeper-server"), false),
        svc("rabbitmq", "rabbitmq", unit("rabbitmq-server"), false),
    ];
    all.into_iter()
        .filter(|s| env.inventory.select(&s.hosts).is_ok())
        .collect()
}

/// The PostgreSQL major version of the environment: `postgres_override.postgresql_version` in
/// `postgresql.yml`, or commcare-cloud's default (`14`, its `postgresql_base` role). monit's check
/// of PostgreSQL is named after it (`postgresql_14`), as in commcare-cloud's `monit.postgresql.j2`.
pub fn postgresql_version(env: &Environment) -> String {
    let v = env
        .postgresql_config
        .as_ref()
        .and_then(|c| c.postgres_override.get("postgresql_version"));
    match v {
        Some(crate::Value::String(s)) => s.clone(),
        Some(crate::Value::Number(n)) => n.to_string(),
        _ => "14".to_owned(),
    }
}

/// What to do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Restart it (rolling for web workers).
    Restart,
    /// Report its state.
    Status,
}

impl Action {
    /// Parses `start`, `stop`, `restart`, `status`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "start" => Self::Start,
            "stop" => Self::Stop,
            "restart" => Self::Restart,
            "status" => Self::Status,
            other => {
                return Err(Error::usage(format!("unknown action `{other}`"))
                    .with_hint("use one of `start`, `stop`, `restart`, `status`, `logs`, `help`"));
            }
        })
    }

    /// The word supervisor/systemd/monit use.
    pub fn word(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Status => "status",
        }
    }

    /// Whether a program in `state` (supervisor's `RUNNING`, a service's `running`, monit's `OK`,
    /// in any case) is where this action wants it.
    pub fn wanted(self, state: &str) -> bool {
        let state = state.to_ascii_lowercase();
        match self {
            Self::Stop => matches!(
                state.as_str(),
                "stopped" | "exited" | "inactive" | "not monitored"
            ),
            _ => matches!(state.as_str(), "running" | "active" | "ok"),
        }
    }
}

/// What one host is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    /// The host.
    pub host: String,
    /// The service(s) concerned, for display.
    pub services: Vec<String>,
    /// supervisor programs to act on.
    pub programs: Vec<Target>,
    /// The services acted on as one (systemd units, monit checks, an embedder's own backends),
    /// each with its backend (serialized as its [`Backend`] description).
    #[serde(serialize_with = "backend::serialize_units")]
    pub units: Vec<(String, Arc<dyn ServiceBackend>)>,
    /// Whether the host's web workers restart in the rolling phase.
    pub rolling: bool,
    /// supervisord's XML-RPC socket on the host (`supervisor_socket` in cchq.yml).
    pub socket: String,
}

/// A supervisor program a plan acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The program name.
    pub name: String,
    /// What it is (web workers restart in the rolling phase, formplayer with its own deploy).
    pub kind: ProgramKind,
}

impl HostPlan {
    /// The names of the programs of `kind` in the plan (all of them when `None`).
    pub fn names(&self, kind: Option<ProgramKind>) -> Vec<String> {
        self.programs
            .iter()
            .filter(|p| kind.is_none_or(|k| p.kind == k))
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A request: services, action, `--only`, `--limit`.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Service names (`commcare` is every app service).
    pub services: Vec<String>,
    /// `--only name[:N],...`.
    pub only: Vec<String>,
    /// `--limit` pattern.
    pub limit: Option<String>,
}

/// An `--only` item: `name` or `name:N`.
static ONLY_ITEM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^[\w-]+(:\d+)?$").expect("a valid regular expression")
});

/// Validates `--only` as commcare-cloud does: `name` or `name:N`, comma separated.
pub fn parse_only(s: &str) -> Result<Vec<String>> {
    let items: Vec<String> = s.split(',').map(str::trim).map(str::to_owned).collect();
    for i in &items {
        if !ONLY_ITEM.is_match(i) {
            return Err(Error::usage(format!(
                "`--only` item `{i}` is not `name` or `name:number`"
            ))
            .with_hint("e.g. --only background_queue,AppDbChangeFeedPillow:0"));
        }
        if let Some((_, n)) = i.split_once(':')
            && n.parse::<u32>().is_err()
        {
            return Err(
                Error::usage(format!("`--only` item `{i}`: `{n}` is no process number"))
                    .with_hint("process numbers count from 0 (`name:0`, `name:1`, ...)"),
            );
        }
    }
    Ok(items)
}

/// Turns a request into per-host plans (pure), for the services of the [`catalog`].
pub fn plan(
    env: &Environment,
    req: &Request,
    action: Action,
) -> Result<(Vec<HostPlan>, Vec<String>)> {
    plan_with(env, &catalog(env), req, action)
}

/// [`plan`] for the services of `cat` (a catalog of one's own, with backends of one's own):
/// each service's backend says what it is made of on each host
/// ([`ServiceBackend::programs`]).
pub fn plan_with(
    env: &Environment,
    cat: &[ServiceDef],
    req: &Request,
    action: Action,
) -> Result<(Vec<HostPlan>, Vec<String>)> {
    let mut wanted: Vec<&ServiceDef> = Vec::new();
    for name in &req.services {
        if name == "commcare" {
            wanted.extend(cat.iter().filter(|s| s.app));
            continue;
        }
        match cat.iter().find(|s| &s.name == name) {
            Some(s) => wanted.push(s),
            None => {
                let known: Vec<&str> = cat.iter().map(|s| s.name.as_str()).collect();
                return Err(
                    Error::not_found(format!("unknown service `{name}`")).with_hint(format!(
                        "services in `{}`: commcare, {}",
                        env.name,
                        known.join(", ")
                    )),
                );
            }
        }
    }
    if wanted.is_empty() {
        return Err(Error::usage("no service given")
            .with_hint("e.g. `service commcare status`; `service help` lists them"));
    }
    let limit: Option<BTreeSet<String>> = match &req.limit {
        Some(p) => Some(env.inventory.select(p)?.hosts.into_iter().collect()),
        None => None,
    };
    let mut warnings = Vec::new();
    let mut plans: Vec<HostPlan> = Vec::new();
    // `--only` items that selected something, and what they could have named (for the error).
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    let mut could: BTreeSet<String> = BTreeSet::new();
    for svc in &wanted {
        let hosts = env.inventory.select(&svc.hosts)?.hosts;
        let hosts: Vec<String> = hosts
            .into_iter()
            .filter(|h| limit.as_ref().is_none_or(|l| l.contains(h)))
            .collect();
        if hosts.is_empty() {
            warnings.push(format!(
                "no `{}` hosts match `{}`",
                svc.name,
                req.limit.as_deref().unwrap_or("all")
            ));
        }
        for host in hosts {
            let idx = match plans.iter().position(|p| p.host == host) {
                Some(i) => i,
                None => {
                    plans.push(HostPlan {
                        host: host.clone(),
                        services: Vec::new(),
                        programs: Vec::new(),
                        units: Vec::new(),
                        rolling: false,
                        socket: env.profile.supervisor_socket.clone(),
                    });
                    plans.len() - 1
                }
            };
            let p = &mut plans[idx];
            p.services.push(svc.name.clone());
            let Some(progs) = svc.backend.programs(env, &host) else {
                p.units.push((svc.name.clone(), svc.backend.clone()));
                continue;
            };
            for prog in progs {
                could.insert(only_name(&prog));
                let hits: Vec<&str> = req
                    .only
                    .iter()
                    .filter(|o| prog.matches_only(o))
                    .map(String::as_str)
                    .collect();
                matched.extend(hits.iter().copied());
                if (req.only.is_empty() || !hits.is_empty())
                    && !p.programs.iter().any(|t| t.name == prog.name)
                {
                    p.programs.push(Target {
                        name: prog.name.clone(),
                        kind: prog.kind,
                    });
                }
            }
            if svc.backend.rolls(action) {
                p.rolling = true;
            }
        }
    }
    // Every `--only` item must name a program of these services on these hosts: an item that
    // selects nothing is a typo or a host that does not run it, never silently dropped.
    let unmatched: Vec<&str> = req
        .only
        .iter()
        .map(String::as_str)
        .filter(|o| !matched.contains(o))
        .collect();
    if !unmatched.is_empty() {
        let on = req
            .limit
            .as_deref()
            .map_or_else(String::new, |l| format!(" on `{l}`"));
        let names: Vec<String> = could.into_iter().collect();
        return Err(Error::not_found(format!("`--only {}` matches no program of {}{on}", unmatched.join(","), req.services.join(", ")))
            .with_hint(if names.is_empty() {
                "`service <name> help` lists the programs of each host".to_owned()
            } else {
                format!("names that `--only` takes here: {} (`service <name> help` lists the programs of each host)", names.join(", "))
            }));
    }
    plans.retain(|p| !p.programs.is_empty() || !p.units.is_empty());
    Ok((plans, warnings))
}

/// The shortest name `--only` takes for `prog` (a queue group, a pillow, `beat`, `flower`, or the
/// program's kind), for error hints.
fn only_name(prog: &programs::Program) -> String {
    match prog.kind {
        ProgramKind::CeleryBeat => "beat".to_owned(),
        ProgramKind::Flower => "flower".to_owned(),
        _ if !prog.sub.is_empty() => prog.sub.clone(),
        k => k.slug().to_owned(),
    }
}

/// The programs a restart has stopped and not started again, per host: what a cancelled restart
/// must start again. Cheap to clone; clones share state, so that a caller which drops the
/// restart's future (Ctrl-C in Python, a second signal in the CLI) can still [`restore`] them.
///
/// A host's programs are recorded just before the restart's one round trip (stop all, then start
/// all) and forgotten once it answered: a round trip cut short (the future dropped, the
/// connection lost, supervisord not answering) leaves them recorded, since they may be stopped.
///
/// [`restore`]: RestartGuard::restore
#[derive(Debug, Clone)]
pub struct RestartGuard {
    pending: std::sync::Arc<std::sync::Mutex<Stopped>>,
    /// Closed by a cancel: no restart round trip starts any more.
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The restart round trips running now.
    in_flight: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for RestartGuard {
    fn default() -> Self {
        Self {
            pending: std::sync::Arc::default(),
            closed: std::sync::Arc::default(),
            in_flight: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

/// A restart round trip running (see [`RestartGuard::begin`]); ends when dropped.
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Per host: supervisord's socket and the programs stopped there.
type Stopped = BTreeMap<String, (String, BTreeSet<String>)>;

/// What [`RestartGuard::restore`] did on one host.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The host.
    pub host: String,
    /// The programs started again (by name).
    pub programs: Vec<String>,
    /// Why they could not be started, if they could not.
    pub error: Option<String>,
}

impl RestartGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Stopped> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a restart round trip of `programs` on `host`: records them (as [`Self::stopping`])
    /// and counts the round trip as running until the returned value is dropped. `None` once
    /// the guard is closed (a cancel): the round trip must not start.
    pub fn begin(&self, host: &str, socket: &str, programs: &[String]) -> Option<InFlight> {
        if self.is_closed() {
            return None;
        }
        self.in_flight.send_modify(|n| *n += 1);
        let flight = InFlight(self.in_flight.clone());
        self.stopping(host, socket, programs);
        Some(flight)
    }

    /// After a cancel: no restart round trip starts any more (those running finish).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets restart round trips start again (a new deploy with the same options).
    pub fn reopen(&self) {
        self.closed
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes when no restart round trip runs: a cancel waits for this (bounded) before the
    /// restart's future is dropped, since a round trip cut short goes on in supervisord, which
    /// could stop a program after [`Self::restore`] started it again.
    pub async fn settled(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Records that `programs` on `host` (supervisord at `socket`) are about to be stopped.
    pub fn stopping(&self, host: &str, socket: &str, programs: &[String]) {
        let mut p = self.lock();
        let entry = p
            .entry(host.to_owned())
            .or_insert_with(|| (socket.to_owned(), BTreeSet::new()));
        entry.1.extend(programs.iter().cloned());
    }

    /// Records that `programs` on `host` were started again (or never stopped).
    pub fn started(&self, host: &str, programs: &[String]) {
        let mut p = self.lock();
        if let Some((_, names)) = p.get_mut(host) {
            for n in programs {
                names.remove(n);
            }
            if names.is_empty() {
                p.remove(host);
            }
        }
    }

    /// The programs stopped and not started again: `(host, socket, names)`, in host order.
    pub fn pending(&self) -> Vec<(String, String, Vec<String>)> {
        self.lock()
            .iter()
            .map(|(h, (s, n))| (h.clone(), s.clone(), n.iter().cloned().collect()))
            .collect()
    }

    /// Starts every pending program again, by name (`supervisor.startProcess`, never
    /// `startAllProcesses`), all hosts in parallel; a program already running is left alone, one
    /// still stopping (the cut round trip's stop goes on in supervisord) is waited for and started
    /// once stopped. Emits a warning per host (what was started again, or why it could not be).
    /// Programs started are forgotten; those that could not be stay recorded.
    pub async fn restore(&self, t: &dyn Transport, events: &dyn EventSink) -> Vec<Restored> {
        let pending = self.pending();
        let results = bounded(
            pending.into_iter().map(|(host, socket, names)| async move {
                let error = start_again(t, &host, &socket, &names).await.err();
                (host, names, error)
            }),
            DEFAULT_FORKS,
        )
        .await;
        let mut out = Vec::new();
        for (host, names, error) in results {
            let message = match &error {
                None => {
                    self.started(&host, &names);
                    format!(
                        "started again what the interrupted restart had stopped: {}",
                        names.join(", ")
                    )
                }
                Some(why) => format!(
                    "could not start again what the interrupted restart had stopped ({}): {why}",
                    names.join(", ")
                ),
            };
            events.emit(&Event::Warning {
                host: Some(host.clone()),
                message,
            });
            out.push(Restored {
                host,
                programs: names,
                error,
            });
        }
        out
    }
}

/// Starts `names` on `host` until each is running (or starting), waiting out transitional
/// states between tries (a program still STOPPING cannot be started yet); why not, when not.
async fn start_again(
    t: &dyn Transport,
    host: &str,
    socket: &str,
    names: &[String],
) -> std::result::Result<(), String> {
    let mut todo = names.to_vec();
    let mut why = String::new();
    for _ in 0..3 {
        let (said, statuses) = supervisor::call(t, host, socket, "start", &todo)
            .await
            .map_err(|e| e.message().to_owned())?;
        let statuses = settle(t, host, socket, &todo, statuses).await;
        todo.retain(|n| {
            !statuses
                .iter()
                .any(|s| &s.name == n && (s.running() || s.state == "STARTING"))
        });
        if todo.is_empty() {
            return Ok(());
        }
        let states: Vec<String> = todo
            .iter()
            .map(|n| {
                format!(
                    "{n} {}",
                    statuses
                        .iter()
                        .find(|s| &s.name == n)
                        .map_or("MISSING", |s| s.state.as_str())
                )
            })
            .collect();
        let said = said.trim().replace('\n', "; ");
        why = format!(
            "not running: {}{}",
            states.join(", "),
            if said.is_empty() {
                String::new()
            } else {
                format!(" ({said})")
            }
        );
    }
    Err(why)
}

/// One row of the result table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The host.
    pub host: String,
    /// The program or unit.
    pub program: String,
    /// Its state after the action.
    pub state: String,
    /// Uptime, exit description, or error.
    pub detail: String,
    /// Whether it is in the state the action wanted.
    pub ok: bool,
}

/// The outcome of a service action.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// One row per program/unit per host, in host order.
    pub rows: Vec<Row>,
    /// Hosts that could not be reached, with why.
    pub unreachable: Vec<(String, String)>,
    /// Hosts of a rolling restart batch that failed its health check (the roll stopped there).
    pub failed_batch: Vec<String>,
}

impl Report {
    /// Whether everything ended in the wanted state.
    pub fn ok(&self) -> bool {
        self.unreachable.is_empty()
            && self.failed_batch.is_empty()
            && self.rows.iter().all(|r| r.ok)
    }
}

/// How rolling restarts of web workers proceed.
#[derive(Debug, Clone)]
pub struct RollingOptions {
    /// Cumulative fractions of the web hosts restarted after each batch (the last batch takes
    /// the rest): 10%, then up to 50%, then all.
    pub batches: Vec<f64>,
    /// A restarted program must be RUNNING for this long to pass.
    pub healthy_for: Duration,
    /// Give up on a batch after this long.
    pub timeout: Duration,
    /// Restart web workers together with everything else, on every host at once: no batches, no
    /// health checks (every web worker is down at the same time).
    pub all_at_once: bool,
}

impl Default for RollingOptions {
    fn default() -> Self {
        Self {
            batches: vec![0.1, 0.5],
            healthy_for: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            all_at_once: false,
        }
    }
}

async fn run_host(
    transport: &dyn Transport,
    plan: &HostPlan,
    action: Action,
    skip_rolling: bool,
    guard: &RestartGuard,
) -> (Vec<Row>, Option<String>) {
    let mut rows = Vec::new();
    let programs: Vec<String> = plan
        .programs
        .iter()
        .filter(|p| !(skip_rolling && p.kind == ProgramKind::Django))
        .map(|p| p.name.clone())
        .collect();
    if !programs.is_empty() {
        let flight = if action == Action::Restart {
            let Some(f) = guard.begin(&plan.host, &plan.socket, &programs) else {
                // Cancelled before this host's round trip: nothing was stopped.
                for name in &programs {
                    rows.push(Row {
                        host: plan.host.clone(),
                        program: name.clone(),
                        state: "NOT RESTARTED".into(),
                        detail: "the restart was cancelled".into(),
                        ok: false,
                    });
                }
                return (rows, None);
            };
            Some(f)
        } else {
            None
        };
        // Always by name: supervisord may run other environments' programs too. The host's
        // programs of every service, whatever their kind, in one round trip.
        let sup = Supervisor::at(plan.socket.clone());
        let answer = sup.run(transport, &plan.host, action, &programs).await;
        if action == Action::Restart && answer.is_ok() {
            // Stopped, then started (running or not): nothing left for a cancel to start again.
            guard.started(&plan.host, &programs);
        }
        drop(flight);
        match answer {
            Ok(states) => {
                rows.extend(settled_rows(transport, &plan.host, &sup, action, states).await)
            }
            Err(e) if e.kind() == ErrorKind::Connection => {
                return (rows, Some(e.message().to_owned()));
            }
            Err(e) => rows.push(Row {
                host: plan.host.clone(),
                program: "supervisor".into(),
                state: "ERROR".into(),
                detail: e.message().to_owned(),
                ok: false,
            }),
        }
    }
    for (name, backend) in &plan.units {
        let names = std::slice::from_ref(name);
        match backend.run(transport, &plan.host, action, names).await {
            Ok(states) => rows.extend(
                settled_rows(transport, &plan.host, backend.as_ref(), action, states).await,
            ),
            Err(e) if e.kind() == ErrorKind::Connection => {
                return (rows, Some(e.message().to_owned()));
            }
            Err(e) => rows.push(Row {
                host: plan.host.clone(),
                program: name.clone(),
                state: "ERROR".into(),
                detail: e.message().to_owned(),
                ok: false,
            }),
        }
    }
    (rows, None)
}

/// The rows of `states` on `host` after `action`, once `backend` let them settle (an action that
/// changes something): ok when in the state the action wanted; the action's note follows the
/// detail when not.
async fn settled_rows(
    transport: &dyn Transport,
    host: &str,
    backend: &dyn ServiceBackend,
    action: Action,
    states: Vec<UnitState>,
) -> Vec<Row> {
    let states = if action == Action::Status {
        states
    } else {
        backend.settle(transport, host, states).await
    };
    states
        .into_iter()
        .map(|s| {
            let ok = action.wanted(&s.state);
            let detail = if ok || s.note.is_empty() {
                s.detail
            } else {
                format!("{} ({})", s.detail, s.note)
            };
            Row {
                host: host.to_owned(),
                program: s.name,
                state: s.state,
                detail,
                ok,
            }
        })
        .collect()
}

/// Waits until `program` on `host` has been RUNNING for `opts.healthy_for`.
async fn healthy(
    transport: &dyn Transport,
    plan: &HostPlan,
    program: &str,
    opts: &RollingOptions,
) -> std::result::Result<ProgramStatus, String> {
    let start = Instant::now();
    let mut last = String::from("no status yet");
    while start.elapsed() < opts.timeout {
        match supervisor::call(transport, &plan.host, &plan.socket, "status", &[]).await {
            Ok((_, statuses)) => {
                if let Some(st) = statuses.into_iter().find(|s| s.name == program) {
                    if st.running() && st.uptime_secs.unwrap_or(0) >= opts.healthy_for.as_secs() {
                        return Ok(st);
                    }
                    if matches!(
                        st.state.as_str(),
                        "FATAL" | "EXITED" | "STOPPED" | "MISSING"
                    ) {
                        return Err(format!("{} {}", st.state, st.detail));
                    }
                    last = format!("{} {}", st.state, st.detail);
                }
            }
            Err(e) => return Err(e.message().to_owned()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("not healthy after {:?}: {last}", opts.timeout))
}

/// Runs `action` on every planned host in parallel; web workers restart in rolling,
/// health-checked batches after everything else.
pub async fn execute(
    transport: &dyn Transport,
    plans: &[HostPlan],
    action: Action,
    rolling: &RollingOptions,
    events: &dyn EventSink,
) -> Report {
    execute_guarded(
        transport,
        plans,
        action,
        rolling,
        events,
        &RestartGuard::default(),
    )
    .await
}

/// [`execute`], recording in `guard` the programs a restart stopped and has not started again
/// yet, so that a caller whose restart is cancelled (the future dropped) can start them again
/// ([`RestartGuard::restore`]).
pub async fn execute_guarded(
    transport: &dyn Transport,
    plans: &[HostPlan],
    action: Action,
    rolling: &RollingOptions,
    events: &dyn EventSink,
    guard: &RestartGuard,
) -> Report {
    let mut report = Report::default();
    let roll = action == Action::Restart && !rolling.all_at_once && plans.iter().any(|p| p.rolling);
    let results = bounded(
        plans.iter().map(|p| async move {
            events.emit(&Event::Started {
                host: p.host.clone(),
                step: format!("service {}", action.word()),
            });
            let t0 = Instant::now();
            let r = run_host(transport, p, action, roll && p.rolling, guard).await;
            events.emit(&Event::Finished {
                host: p.host.clone(),
                step: format!("service {}", action.word()),
                ok: r.1.is_none() && r.0.iter().all(|x| x.ok),
                duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            r
        }),
        DEFAULT_FORKS,
    )
    .await;
    for (p, (rows, unreachable)) in plans.iter().zip(results) {
        report.rows.extend(rows);
        if let Some(why) = unreachable {
            report.unreachable.push((p.host.clone(), why));
        }
    }
    if roll {
        let web: Vec<&HostPlan> = plans
            .iter()
            .filter(|p| {
                p.rolling
                    && !report.unreachable.iter().any(|(h, _)| h == &p.host)
                    && p.programs.iter().any(|t| t.kind == ProgramKind::Django)
            })
            .collect();
        let n = web.len();
        let mut done = 0usize;
        // No web worker left to roll (e.g. `--only` picked none, or their hosts are unreachable):
        // no batches at all (`clamp(1, 0)` would panic).
        let mut cuts: Vec<usize> = if n == 0 {
            Vec::new()
        } else {
            rolling
                .batches
                .iter()
                .map(|f| ((f * n as f64).ceil() as usize).clamp(1, n))
                .collect()
        };
        cuts.push(n);
        for cut in cuts {
            if cut <= done {
                continue;
            }
            if guard.is_closed() {
                // Cancelled: the batches not started stay as they are (running).
                for p in &web[done..] {
                    let prog = p
                        .names(Some(ProgramKind::Django))
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    report.rows.push(Row {
                        host: p.host.clone(),
                        program: prog,
                        state: "SKIPPED".into(),
                        detail: "rolling restart stopped: cancelled".into(),
                        ok: false,
                    });
                }
                break;
            }
            let batch = &web[done..cut];
            let step = format!("rolling restart {}..{} of {n}", done + 1, cut);
            events.emit(&Event::Warning {
                host: None,
                message: format!("rolling restart: web workers {}..{} of {n}", done + 1, cut),
            });
            let step = &step;
            let outcomes = bounded(
                batch.iter().map(|p| async move {
                    events.emit(&Event::Started {
                        host: p.host.clone(),
                        step: step.clone(),
                    });
                    let t0 = Instant::now();
                    let finished = |ok: bool| Event::Finished {
                        host: p.host.clone(),
                        step: step.clone(),
                        ok,
                        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                    };
                    let prog = p
                        .names(Some(ProgramKind::Django))
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    let one = std::slice::from_ref(&prog);
                    let Some(flight) = guard.begin(&p.host, &p.socket, one) else {
                        events.emit(&finished(false));
                        return (
                            p.host.clone(),
                            prog,
                            Err("the restart was cancelled".to_owned()),
                        );
                    };
                    if let Err(e) =
                        supervisor::call(transport, &p.host, &p.socket, "restart", one).await
                    {
                        events.emit(&finished(false));
                        return (p.host.clone(), prog, Err(e.message().to_owned()));
                    }
                    guard.started(&p.host, one);
                    drop(flight);
                    let st = healthy(transport, p, &prog, rolling).await;
                    events.emit(&finished(st.is_ok()));
                    (p.host.clone(), prog, st)
                }),
                DEFAULT_FORKS,
            )
            .await;
            let mut failed = Vec::new();
            for (host, prog, st) in outcomes {
                match st {
                    Ok(s) => report.rows.push(Row {
                        host,
                        program: prog,
                        state: s.state,
                        detail: s.detail,
                        ok: true,
                    }),
                    Err(why) => {
                        failed.push(host.clone());
                        report.rows.push(Row {
                            host,
                            program: prog,
                            state: "UNHEALTHY".into(),
                            detail: why,
                            ok: false,
                        });
                    }
                }
            }
            done = cut;
            if !failed.is_empty() {
                report.failed_batch = failed;
                for p in &web[done..] {
                    let prog = p
                        .names(Some(ProgramKind::Django))
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    report.rows.push(Row {
                        host: p.host.clone(),
                        program: prog,
                        state: "SKIPPED".into(),
                        detail: "rolling restart stopped: an earlier batch failed".into(),
                        ok: false,
                    });
                }
                break;
            }
        }
        // Each host's place in the plan, looked up once per row (a scan per comparison is
        // quadratic in hosts).
        let mut order: HashMap<&str, usize> = HashMap::with_capacity(plans.len());
        for (i, p) in plans.iter().enumerate() {
            order.entry(p.host.as_str()).or_insert(i);
        }
        report
            .rows
            .sort_by_key(|r| order.get(r.host.as_str()).copied().unwrap_or(usize::MAX));
    }
    report
}

#[cfg(test)]
mod tests;
