//! Downtime: a record on the environment's hosts that every operator sees (who, when, why,
//! until when), stopping the app services, and finding processes of the app user that linger.
//!
//! The record lives in `<www_home>/downtime.json` on the environment's control point (the first
//! `django_manage` host, else the first app host), so that any operator's cchq finds it, and a
//! different operator can end a downtime another one started.

use serde::{Deserialize, Serialize};

use crate::clock::{format_utc, now};
use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::transport::{ReadOptions, Transport, WriteOptions};

/// The groups whose hosts run app processes.
pub const APP_GROUPS: &str = "webworkers:celery:pillowtop:formplayer:proxy:django_manage";

/// A downtime in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who started it (`user@machine`).
    pub by: String,
    /// When it started (seconds since the epoch, UTC).
    pub started_at: u64,
    /// When it is meant to end at the latest (seconds since the epoch, UTC).
    pub expires_at: u64,
    /// Why.
    pub message: String,
    /// The environment.
    pub env: String,
}

impl Record {
    /// A record starting now for `hours`.
    pub fn new(env: &Environment, by: &str, message: &str, hours: f64) -> Self {
        let now = now();
        // Whole seconds are enough; the float comes from the operator's `-d`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = (hours.max(0.0) * 3600.0) as u64;
        Self {
            by: by.to_owned(),
            started_at: now,
            expires_at: now.saturating_add(secs),
            message: message.to_owned(),
            env: env.name.clone(),
        }
    }

    /// Whether its expiry has passed.
    pub fn expired(&self) -> bool {
        now() > self.expires_at
    }
}

/// The host holding the record and the path of the record on it.
pub fn location(env: &Environment) -> Result<(String, String)> {
    let host = ["django_manage", "webworkers", APP_GROUPS, "all"]
        .iter()
        .find_map(|p| {
            env.inventory
                .select(p)
                .ok()
                .and_then(|s| s.hosts.into_iter().next())
        })
        .ok_or_else(|| Error::config(format!("environment `{}` has no hosts", env.name)))?;
    Ok((host, env.paths().downtime_record()))
}

/// The hosts a downtime works on: every application host (`app_hosts`, whose programs it stops
/// and starts) and `connect`, those plus the host holding the record.
pub struct Hosts {
    /// The hosts of `APP_GROUPS`, whose programs a downtime stops and starts.
    pub app_hosts: Vec<String>,
    /// `app_hosts` and the host of the record: the hosts to connect to.
    pub connect: Vec<String>,
}

/// The application hosts and the hosts to connect to for a downtime of `env`.
pub fn hosts(env: &Environment) -> Result<Hosts> {
    let (control, _) = location(env)?;
    let app_hosts = env
        .inventory
        .select(APP_GROUPS)
        .map(|s| s.hosts)
        .unwrap_or_default();
    let mut connect = app_hosts.clone();
    if !connect.contains(&control) {
        connect.push(control);
    }
    Ok(Hosts { app_hosts, connect })
}

/// The current record, if any.
pub async fn read(env: &Environment, transport: &dyn Transport) -> Result<Option<Record>> {
    let (host, path) = location(env)?;
    let opts = ReadOptions {
        become_user: Some(env.profile.app_user.clone()),
    };
    match transport.read_file(&host, &path, &opts).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::config(format!(
                "`{path}` on `{host}` is not a downtime record: {e}"
            ))
            .with_source(e)
            .with_hint("remove it by hand if it is stale")
        }),
    }
}

/// Writes the record.
pub async fn write(env: &Environment, transport: &dyn Transport, record: &Record) -> Result<()> {
    let (host, path) = location(env)?;
    let data = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::internal(e.to_string()).with_source(e))?;
    let opts = WriteOptions {
        mode: Some(0o644),
        become_user: Some(env.profile.app_user.clone()),
    };
    transport.write_file(&host, &path, &data, &opts).await
}

/// Removes the record.
pub async fn clear(env: &Environment, transport: &dyn Transport) -> Result<()> {
    let (host, path) = location(env)?;
    let cmd = RemoteCommand::new("rm")
        .arg("-f")
        .arg(&path)
        .become_user(env.profile.app_user.clone());
    transport
        .exec(&host, &cmd)
        .await?
        .check(&host, &cmd)
        .map(|_| ())
}

/// A process of this environment still running on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lingering {
    /// Its pid.
    pub pid: u32,
    /// Its command line.
    pub args: String,
}

impl std::fmt::Display for Lingering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pid, self.args)
    }
}

/// A shell function `mine PID` (true when the process belongs to this environment) and the
/// variables it needs, as root on a host.
///
/// A process is this environment's when it runs as the app user and its working directory or a
/// word of its command line is under the environment's www home (`<www_root>/<deploy_env>`, whole
/// path components: `/www/test2` is not under `/www/test`), or supervisord started it (or its
/// ancestor) for one of the environment's programs (`SUPERVISOR_GROUP_NAME`, inherited by
/// children). Other environments' processes of the same user, and the operator's own, are not.
fn mine_function(env: &Environment, host: &str) -> String {
    use crate::command::quote;
    let home = env
        .paths()
        .component_home(crate::component::Component::Commcare);
    let programs: Vec<String> = crate::services::programs::programs_for_host(env, host)
        .into_iter()
        .map(|p| p.name)
        .collect();
    format!(
        "set -f; user={u}; home={h}; progs=' '{p}' '; uid=$(id -u \"$user\" 2>/dev/null) || exit 0\n\
         mine() {{\n\
           d=/proc/$1; [ \"$(stat -c %u \"$d\" 2>/dev/null)\" = \"$uid\" ] || return 1\n\
           c=$(readlink \"$d/cwd\" 2>/dev/null); case \"$c/\" in \"$home\"/*) return 0;; esac\n\
           for w in $(tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null | tr -s ' =:' '\\n\\n\\n'); do case \"$w/\" in \"$home\"/*) return 0;; esac; done\n\
           g=$(tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | sed -n 's/^SUPERVISOR_GROUP_NAME=//p')\n\
           [ -n \"$g\" ] && case \"$progs\" in *\" $g \"*) return 0;; esac\n\
           return 1\n\
         }}\n",
        u = quote(&env.profile.app_user),
        h = quote(&home),
        p = quote(&programs.join(" ")),
    )
}

/// Processes of this environment still running on `hosts` (see `mine_function` for what
/// counts as this environment's): `(host, processes)`. Connection errors are returned as errors
/// for that host.
pub async fn lingering(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
) -> Vec<(String, Result<Vec<Lingering>>)> {
    let command = |host: &str| {
        let script = format!(
            "{f}for p in $(ps -u \"$uid\" -o pid= 2>/dev/null); do \
             mine \"$p\" && printf '%s %s\\n' \"$p\" \"$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)\"; done; true",
            f = mine_function(env, host)
        );
        RemoteCommand::shell(script).become_user("root")
    };
    let null = crate::events::NullSink;
    crate::fanout::run_per_host(
        transport,
        hosts,
        command,
        crate::fanout::DEFAULT_FORKS,
        "lingering",
        &null,
    )
    .await
    .into_iter()
    .map(|r| {
        let what = RemoteCommand::new("ps").arg("(this environment's processes)");
        (
            r.host.clone(),
            r.result
                .and_then(|o| o.check(&r.host, &what))
                .map(|out| parse_lingering(&out.stdout_str())),
        )
    })
    .collect()
}

fn parse_lingering(text: &str) -> Vec<Lingering> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (pid, args) = l.split_once(' ').unwrap_or((l, ""));
            Some(Lingering {
                pid: pid.parse().ok()?,
                args: args.trim().to_owned(),
            })
        })
        .collect()
}

/// Kills (SIGKILL) exactly the processes listed per host, each only if it still belongs to this
/// environment (a pid reused since it was listed is left alone). Returns the pids killed per host.
pub async fn kill_lingering(
    env: &Environment,
    transport: &dyn Transport,
    targets: &[(String, Vec<u32>)],
) -> Vec<(String, Result<Vec<u32>>)> {
    let hosts: Vec<String> = targets.iter().map(|(h, _)| h.clone()).collect();
    let command = |host: &str| {
        let pids: Vec<String> = targets
            .iter()
            .filter(|(h, _)| h == host)
            .flat_map(|(_, p)| p.iter().map(u32::to_string))
            .collect();
        let script = format!(
            "{f}for p in {l}; do mine \"$p\" && kill -9 \"$p\" 2>/dev/null && echo \"$p\"; done; true",
            f = mine_function(env, host),
            l = pids.join(" ")
        );
        RemoteCommand::shell(script).become_user("root")
    };
    let null = crate::events::NullSink;
    crate::fanout::run_per_host(
        transport,
        &hosts,
        command,
        crate::fanout::DEFAULT_FORKS,
        "kill lingering",
        &null,
    )
    .await
    .into_iter()
    .map(|r| {
        let what = RemoteCommand::new("kill")
            .arg("-9")
            .arg("(this environment's processes)");
        let res = r.result.and_then(|o| o.check(&r.host, &what)).map(|out| {
            out.stdout_str()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        });
        (r.host, res)
    })
    .collect()
}

/// What to do with processes of the environment still running once its services are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLingering {
    /// Start the services again and cancel the downtime.
    Abort,
    /// Wait and look again.
    Wait,
    /// Go on with them running.
    Continue,
    /// Kill them (SIGKILL), exactly those listed, then look again.
    Kill,
}

impl std::str::FromStr for OnLingering {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "a" | "abort" => Ok(Self::Abort),
            "w" | "wait" => Ok(Self::Wait),
            "c" | "continue" => Ok(Self::Continue),
            "k" | "kill" => Ok(Self::Kill),
            other => Err(Error::usage(format!(
                "`{other}` is not one of abort, wait, continue, kill"
            ))
            .with_hint("what to do with processes still running: abort, wait, continue or kill")),
        }
    }
}

/// The operator's side of [`start`] and [`end`]: told what happens, asked what to do. The CLI
/// prints and asks on the terminal; the Python bindings follow a fixed policy.
pub trait Operator: Send {
    /// Whether to go on with stopping every service on `hosts` app hosts (`replacing`: an expired
    /// record that will be replaced). `false` changes nothing.
    fn confirm_start(&mut self, hosts: usize, replacing: Option<&Record>) -> bool;
    /// The record was written.
    fn recorded(&mut self, _record: &Record) {}
    /// The services were stopped (or, on abort, started again).
    fn services(&mut self, _action: crate::services::Action, _report: &crate::services::Report) {}
    /// A host could not be searched for lingering processes.
    fn search_failed(&mut self, _host: &str, _error: &Error) {}
    /// What to do with the processes of the environment still running.
    fn lingering(&mut self, found: &[(String, Vec<Lingering>)]) -> OnLingering;
    /// Whether to kill exactly `targets` (pids per host).
    fn confirm_kill(&mut self, _targets: &[(String, Vec<u32>)]) -> bool {
        true
    }
    /// What was killed per host.
    fn killed(&mut self, _results: &[(String, Result<Vec<u32>>)]) {}
    /// About to wait this long before looking again.
    fn waiting(&mut self, _for: std::time::Duration) {}
    /// Whether to end `record` and start every service.
    fn confirm_end(&mut self, record: &Record) -> bool;
}

/// How [`start`] behaves.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Who starts it (`user@machine`).
    pub by: String,
    /// Why.
    pub message: String,
    /// For how long at most, in hours.
    pub hours: f64,
    /// How long one wait for lingering processes lasts.
    pub wait: std::time::Duration,
    /// After this many waits (or kills) the start gives up (the downtime stays on, services
    /// stopped).
    pub max_waits: u32,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            by: String::new(),
            message: String::new(),
            hours: 1.0,
            wait: std::time::Duration::from_secs(30),
            max_waits: 10,
        }
    }
}

/// How [`start`] ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Started {
    /// The downtime is on: the record written and the services stopped.
    Started {
        /// The record written.
        record: Record,
        /// The services stopped.
        stopped: crate::services::Report,
        /// Processes the operator chose to leave running, per host.
        lingering: Vec<(String, Vec<Lingering>)>,
    },
    /// The operator aborted: the services were started again and the record removed.
    Aborted {
        /// The services started again.
        restarted: crate::services::Report,
    },
    /// The operator declined: nothing was changed.
    Declined,
}

/// Stops or starts every app service (`commcare`) of the environment.
async fn commcare(
    env: &Environment,
    transport: &dyn Transport,
    action: crate::services::Action,
) -> Result<crate::services::Report> {
    use crate::services::{Request, RollingOptions};
    let req = Request {
        services: vec!["commcare".into()],
        ..Request::default()
    };
    let (plans, _) = crate::services::plan(env, &req, action)?;
    Ok(crate::services::execute(
        transport,
        &plans,
        action,
        &RollingOptions::default(),
        &crate::events::NullSink,
    )
    .await)
}

/// The longest downtime `start` records, in hours (a year).
pub const MAX_HOURS: f64 = 24.0 * 366.0;

/// Starts a downtime (`cchq <env> downtime start`): refuses when one is in progress, records
/// it, stops every app service, then deals with the environment's processes that linger as the
/// operator decides. `app_hosts`: the hosts searched for lingering processes.
pub async fn start(
    env: &Environment,
    transport: &dyn Transport,
    app_hosts: &[String],
    opts: &StartOptions,
    op: &mut dyn Operator,
) -> Result<Started> {
    use crate::services::Action;
    // Checked before anything is read or stopped: a record that expires at once (0, negative)
    // or never (`inf`, `NaN`) is no downtime.
    if !(opts.hours.is_finite() && opts.hours > 0.0 && opts.hours <= MAX_HOURS) {
        return Err(Error::usage(format!(
            "a downtime of {} hours: give a number of hours above 0 and at most {MAX_HOURS}",
            opts.hours
        ))
        .with_hint("e.g. `downtime start -d 2` for two hours"));
    }
    let old = read(env, transport).await?;
    if let Some(r) = old.as_ref().filter(|r| !r.expired()) {
        return Err(Error::usage(format!(
            "a downtime of `{}` is already in progress: {}",
            env.name,
            describe(r)
        ))
        .with_hint("end it with `downtime end`, or look at it with `downtime status`"));
    }
    if !op.confirm_start(app_hosts.len(), old.as_ref()) {
        return Ok(Started::Declined);
    }
    let record = Record::new(env, &opts.by, &opts.message, opts.hours);
    write(env, transport, &record).await?;
    op.recorded(&record);
    let stopped = commcare(env, transport, Action::Stop).await?;
    op.services(Action::Stop, &stopped);
    let (mut waits, mut kills) = (0, 0);
    loop {
        let mut found: Vec<(String, Vec<Lingering>)> = Vec::new();
        for (h, r) in lingering(env, transport, app_hosts).await {
            match r {
                Ok(l) if !l.is_empty() => found.push((h, l)),
                Ok(_) => {}
                Err(e) => op.search_failed(&h, &e),
            }
        }
        if found.is_empty() {
            return Ok(Started::Started {
                record,
                stopped,
                lingering: found,
            });
        }
        match op.lingering(&found) {
            OnLingering::Abort => {
                let restarted = commcare(env, transport, Action::Start).await?;
                op.services(Action::Start, &restarted);
                clear(env, transport).await?;
                return Ok(Started::Aborted { restarted });
            }
            OnLingering::Wait => {
                waits += 1;
                if waits > opts.max_waits {
                    return Err(Error::new(
                        crate::error::ErrorKind::CommandFailed,
                        format!("processes still linger after {} waits; the downtime is on and services are stopped", opts.max_waits),
                    )
                    .with_hint("look at them on the hosts, then start again killing them (`kill`), or end the downtime"));
                }
                op.waiting(opts.wait);
                tokio::time::sleep(opts.wait).await;
            }
            OnLingering::Continue => {
                return Ok(Started::Started {
                    record,
                    stopped,
                    lingering: found,
                });
            }
            OnLingering::Kill => {
                // Exactly the processes listed (each re-checked on the host before the kill).
                let targets: Vec<(String, Vec<u32>)> = found
                    .iter()
                    .map(|(h, procs)| (h.clone(), procs.iter().map(|p| p.pid).collect()))
                    .collect();
                if !op.confirm_kill(&targets) {
                    continue;
                }
                kills += 1;
                if kills > opts.max_waits {
                    return Err(Error::new(
                        crate::error::ErrorKind::CommandFailed,
                        format!("processes still linger after {} kills; the downtime is on and services are stopped", opts.max_waits),
                    )
                    .with_hint("something starts them again: look at them on the hosts, then end the downtime or start it again"));
                }
                let results = kill_lingering(env, transport, &targets).await;
                op.killed(&results);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// How [`end`] ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Ended {
    /// Every service started and the record removed.
    Ended {
        /// The services started.
        started: crate::services::Report,
    },
    /// Some services did not start: the record stays.
    NotStarted {
        /// The services started, and those that did not.
        started: crate::services::Report,
    },
    /// The operator declined: nothing was changed.
    Declined,
}

/// Ends the downtime in progress (`cchq <env> downtime end`): starts every app service and,
/// when they all started, removes the record. An error when there is none.
pub async fn end(
    env: &Environment,
    transport: &dyn Transport,
    op: &mut dyn Operator,
) -> Result<Ended> {
    let Some(r) = read(env, transport).await? else {
        return Err(Error::usage(format!("no downtime in progress for `{}`", env.name))
            .with_hint("`downtime status` shows the current record; start services with `service commcare start`"));
    };
    if !op.confirm_end(&r) {
        return Ok(Ended::Declined);
    }
    let started = commcare(env, transport, crate::services::Action::Start).await?;
    op.services(crate::services::Action::Start, &started);
    if !started.ok() {
        return Ok(Ended::NotStarted { started });
    }
    clear(env, transport).await?;
    Ok(Ended::Ended { started })
}

/// One line about a record: who started it, when, until when, and why.
pub fn describe(r: &Record) -> String {
    let msg = if r.message.is_empty() {
        String::new()
    } else {
        format!(": {}", r.message)
    };
    format!(
        "started by {} at {} (until {}){msg}",
        r.by,
        format_utc(r.started_at),
        format_utc(r.expires_at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_on_the_control_point() {
        let env = crate::fixture_env("test");
        let t = crate::transport::memory::MemoryTransport::new(
            env.inventory.hosts().map(|h| h.name.clone()),
        );
        assert_eq!(read(&env, &t).await.unwrap(), None);
        let r = Record::new(&env, "me@laptop", "db upgrade", 2.0);
        write(&env, &t, &r).await.unwrap();
        assert!(
            t.file("cloud_worker_1", "/home/cchq/www/test/downtime.json")
                .is_some()
        );
        assert_eq!(read(&env, &t).await.unwrap(), Some(r.clone()));
        assert!(!r.expired());
        assert_eq!(r.expires_at - r.started_at, 7200);
    }

    /// An operator that answers from a script and remembers what it was told.
    struct Scripted {
        start: bool,
        answers: Vec<OnLingering>,
        seen: Vec<String>,
    }

    impl Operator for Scripted {
        fn confirm_start(&mut self, hosts: usize, _: Option<&Record>) -> bool {
            self.seen.push(format!("confirm {hosts}"));
            self.start
        }
        fn services(&mut self, action: crate::services::Action, _: &crate::services::Report) {
            self.seen.push(format!("{action:?}"));
        }
        fn lingering(&mut self, found: &[(String, Vec<Lingering>)]) -> OnLingering {
            self.seen.push(format!(
                "lingering {}",
                found
                    .iter()
                    .map(|(h, p)| format!("{h}:{}", p[0].pid))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            self.answers.remove(0)
        }
        fn killed(&mut self, results: &[(String, Result<Vec<u32>>)]) {
            self.seen.push(format!("killed {}", results.len()));
        }
        fn confirm_end(&mut self, _: &Record) -> bool {
            true
        }
    }

    fn env_and_hosts() -> (
        Environment,
        crate::transport::memory::MemoryTransport,
        Vec<String>,
    ) {
        let env = crate::fixture_env("test");
        let t = crate::transport::memory::MemoryTransport::new(
            env.inventory.hosts().map(|h| h.name.clone()),
        );
        let hosts = env.inventory.select(APP_GROUPS).unwrap().hosts;
        (env, t, hosts)
    }

    /// A duration that would expire at once or never is refused before anything is read,
    /// asked or stopped.
    #[tokio::test]
    async fn a_downtime_lasts_a_positive_finite_number_of_hours() {
        let (env, t, hosts) = env_and_hosts();
        for hours in [0.0, -1.0, f64::INFINITY, f64::NAN, MAX_HOURS * 2.0] {
            let mut op = Scripted {
                start: true,
                answers: vec![],
                seen: vec![],
            };
            let opts = StartOptions {
                hours,
                ..StartOptions::default()
            };
            let err = start(&env, &t, &hosts, &opts, &mut op).await.unwrap_err();
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::Usage,
                "{hours}: {err:?}"
            );
            assert!(op.seen.is_empty(), "{hours}: not asked");
            assert!(
                t.calls().is_empty(),
                "{hours}: nothing sent: {:?}",
                t.calls()
            );
        }
    }

    #[tokio::test]
    async fn a_declined_start_changes_nothing_and_one_in_progress_is_refused() {
        let (env, t, hosts) = env_and_hosts();
        let mut op = Scripted {
            start: false,
            answers: vec![],
            seen: vec![],
        };
        let out = start(&env, &t, &hosts, &StartOptions::default(), &mut op)
            .await
            .unwrap();
        assert!(matches!(out, Started::Declined));
        assert_eq!(read(&env, &t).await.unwrap(), None, "no record");
        assert!(
            t.calls()
                .iter()
                .all(|c| c.command.to_string().contains("read-file")),
            "only the record was read: {:?}",
            t.calls()
        );
        let r = Record::new(&env, "other@laptop", "upgrade", 2.0);
        write(&env, &t, &r).await.unwrap();
        t.clear_calls();
        let mut op = Scripted {
            start: true,
            answers: vec![],
            seen: vec![],
        };
        let err = start(&env, &t, &hosts, &StartOptions::default(), &mut op)
            .await
            .unwrap_err();
        assert!(
            err.message().contains("already in progress") && err.message().contains("other@laptop"),
            "{err}"
        );
        assert!(op.seen.is_empty(), "not even asked");
        assert_eq!(
            read(&env, &t).await.unwrap(),
            Some(r),
            "the record is theirs still"
        );
    }

    #[tokio::test]
    async fn lingering_processes_are_killed_then_the_downtime_is_on_and_ends() {
        let (env, t, hosts) = env_and_hosts();
        let looks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let l = looks.clone();
        t.respond_with(Some("cloud_worker_2"), move |cmd| {
            let text = cmd.to_string();
            // The first search finds a process on cloud_worker_2; after the kill, none.
            (text.contains("/proc/$p/cmdline")
                && l.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0)
                .then(|| {
                    crate::transport::Output::new(
                        0,
                        b"4242 python manage.py celery\n".to_vec(),
                        Vec::new(),
                    )
                })
        });
        let mut op = Scripted {
            start: true,
            answers: vec![OnLingering::Kill],
            seen: vec![],
        };
        let out = start(
            &env,
            &t,
            &hosts,
            &StartOptions {
                by: "me@laptop".into(),
                ..StartOptions::default()
            },
            &mut op,
        )
        .await
        .unwrap();
        let Started::Started {
            record, lingering, ..
        } = out
        else {
            panic!("{out:?}")
        };
        assert!(lingering.is_empty());
        assert_eq!(record.by, "me@laptop");
        assert_eq!(op.seen[0], format!("confirm {}", hosts.len()));
        assert_eq!(
            op.seen[1..],
            ["Stop", "lingering cloud_worker_2:4242", "killed 1"]
        );
        let kills = t
            .commands_on("cloud_worker_2")
            .into_iter()
            .filter(|c| c.contains("kill -9"))
            .count();
        assert_eq!(kills, 1);
        assert_eq!(read(&env, &t).await.unwrap(), Some(record));
        let ended = end(&env, &t, &mut op).await.unwrap();
        assert!(
            matches!(ended, Ended::Ended { .. } | Ended::NotStarted { .. }),
            "{ended:?}"
        );
    }

    #[tokio::test]
    async fn abort_starts_the_services_again_and_removes_the_record() {
        let (env, t, hosts) = env_and_hosts();
        t.respond_with(None, |cmd| {
            cmd.to_string()
                .contains("/proc/$p/cmdline")
                .then(|| crate::transport::Output::new(0, b"7 sleep 1000\n".to_vec(), Vec::new()))
        });
        let mut op = Scripted {
            start: true,
            answers: vec![OnLingering::Wait, OnLingering::Abort],
            seen: vec![],
        };
        let opts = StartOptions {
            wait: std::time::Duration::from_millis(1),
            ..StartOptions::default()
        };
        let out = start(&env, &t, &hosts, &opts, &mut op).await.unwrap();
        assert!(matches!(out, Started::Aborted { .. }), "{out:?}");
        assert_eq!(
            op.seen
                .iter()
                .filter(|s| s.starts_with("lingering"))
                .count(),
            2,
            "{:?}",
            op.seen
        );
        assert_eq!(op.seen.last().map(String::as_str), Some("Start"));
        assert_eq!(
            read(&env, &t).await.unwrap(),
            None,
            "the downtime is cancelled"
        );
        let err = end(&env, &t, &mut op).await.unwrap_err();
        assert!(err.message().contains("no downtime in progress"), "{err}");
    }

    #[tokio::test]
    async fn waiting_gives_up_after_max_waits_with_the_downtime_on() {
        let (env, t, hosts) = env_and_hosts();
        t.respond_with(None, |cmd| {
            cmd.to_string()
                .contains("/proc/$p/cmdline")
                .then(|| crate::transport::Output::new(0, b"7 sleep 1000\n".to_vec(), Vec::new()))
        });
        let mut op = Scripted {
            start: true,
            answers: vec![OnLingering::Wait; 3],
            seen: vec![],
        };
        let opts = StartOptions {
            wait: std::time::Duration::from_millis(1),
            max_waits: 2,
            ..StartOptions::default()
        };
        let err = start(&env, &t, &hosts, &opts, &mut op).await.unwrap_err();
        assert!(err.message().contains("after 2 waits"), "{err}");
        assert!(
            read(&env, &t).await.unwrap().is_some(),
            "the downtime stays on"
        );
    }
}
