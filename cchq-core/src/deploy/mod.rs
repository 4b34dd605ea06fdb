//! Deploys: build a release on every host in parallel, run the run-once steps, switch `current`
//! on every host only when every host has built (atomically per host, compensating on failure
//! so the environment never stays split), restart services (rolling for web workers), record,
//! clean old releases. Every step leaves a done-marker in the release, so `--resume NAME`
//! continues where a failed or interrupted deploy stopped, running each step once.
//!
//! Phases, in order: lock -> resolve -> build -> migrate/preindex -> switch -> restart ->
//! record -> clean -> unlock; under the lock, the stages [`probe::plan`] decides, executed by
//! `run_locked` (probe -> plan -> execute). Notifications ([`crate::notify`]): start once the lock is taken and
//! the commit resolved, success after the record (and unlock), failure on any deploy that failed
//! after taking the lock.

pub mod artifact;
pub mod deployable;
pub mod diff;
pub use crate::settings::django;
pub mod layout;
pub mod lock;
pub mod phase;
pub mod probe;
pub mod releases;
pub mod request;
pub mod steps;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventSink};
use crate::fanout;
use crate::notify::{Notice, Notifier, Stage};
use crate::services::{self, Action, RollingOptions};
use crate::transport::counting::{Counting, PhaseTrips, in_phase};
use crate::transport::{FileWrite, Transport, WriteOptions};
use crate::{Value, settings};
pub use deployable::{Code, Deployable};
pub use layout::Component;
use layout::{Layout, valid_release_name};
pub use phase::Phase;
pub use request::Request;

/// The host groups a commcare release is built on (CommCare HQ's and a Django app's
/// [`Deployable::hosts`]).
pub const COMMCARE_GROUPS: &str = "webworkers:celery:pillowtop:proxy:django_manage";

/// How long a cancel waits for the lock's attempt in flight (one round trip) before it frees
/// the lock; a deploy waiting for another's lock is not waited for longer than this.
const LOCK_ATTEMPT_GRACE: Duration = Duration::from_secs(10);

/// How long a cancel waits for a restart's round trips in flight ([`Options::cancel_grace`]).
pub const CANCEL_GRACE: Duration = Duration::from_secs(120);

/// What to deploy and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// What is deployed.
    pub component: Component,
    /// The revision (branch, tag, commit); the profile's default branch when `None`.
    pub rev: Option<String>,
    /// Continue (or switch back to) this release.
    pub resume: Option<String>,
    /// The name of a new release (taken now on the controller when `None`).
    pub name: Option<String>,
    /// Build on `django_manage` (or `limit`) only, without switching.
    pub private: bool,
    /// Hosts for a private release.
    pub limit: Option<String>,
    /// Keep the release at least this many days (`KEEP_UNTIL__<date>` marker).
    pub keep_days: Option<u32>,
    /// Releases kept by cleanup (besides current and dated ones).
    pub keep: usize,
    /// Do not record the deploy (no `record_deploy_success`).
    pub skip_record: bool,
    /// Deploy even when the Kafka checkpoints are not safe (`validate_kafka_pillow_checkpoints
    /// --print-only`); `None`: fab-settings.yml's `ignore_kafka_checkpoint_warning`.
    pub ignore_kafka_checkpoint_warning: Option<bool>,
    /// Render fresh settings into the release instead of copying the current ones.
    pub update_config: bool,
    /// With `update_config`: write the fresh settings even where the drift guard would stop
    /// (settings applied from a newer or diverged environment, or edited by hand), with a warning.
    pub force_settings: bool,
    /// Wait this long for a held lock.
    pub lock_wait: Option<Duration>,
    /// The deploy's lock token (random, made by `default()`): the lock is taken under it and only
    /// a release with it frees the lock (`lock::release(env, t, &opts.lock_token)` after an
    /// interrupt).
    pub lock_token: lock::Token,
    /// How often the lock's heartbeat is refreshed while the deploy runs (the holder records it;
    /// another controller takes the lock over after [`lock::STALE_AFTER_BEATS`] missed beats).
    pub lock_heartbeat: Duration,
    /// Who deploys (`user@machine`).
    pub by: String,
    /// The decrypted vault, for rendering settings.
    pub vault: Option<Value>,
    /// Rolling restart settings.
    pub rolling: RollingOptions,
    /// Send the notifications configured in the environment's `cchq.yml` (`notify:`) when the
    /// deploy starts, succeeds or fails (on by default; `--no-notify` turns it off).
    pub notify: bool,
    /// Fired by the caller to stop the deploy at its next safe point (never in the middle of the
    /// switch): the programs its restart stopped are started again, the lock is released, and the
    /// deploy ends with [`ErrorKind::Interrupted`] (resumable).
    pub cancel: crate::cancel::Cancel,
    /// The programs the restart stopped and has not started again. The deploy starts them again
    /// itself when it ends early; a caller that drops the deploy's future instead (Python's
    /// Ctrl-C) calls [`RestartGuard::restore`](services::RestartGuard::restore) with it.
    pub restart_guard: services::RestartGuard,
    /// How long a cancel (or a lost lock) waits for the restart's round trips running at that
    /// moment to answer before the deploy's future is dropped (then what they stopped is started
    /// again). A round trip cut short goes on in supervisord, which could stop a program again
    /// after it was started: waiting for it is what leaves every program running.
    pub cancel_grace: Duration,
    /// When the new release fails to start (the restart phase fails after the switch): switch
    /// back to the previous release and restart it; the deploy still fails. `None`: the
    /// environment's `cchq.yml` (`rollback_on_failure`, off by default) decides.
    pub rollback_on_failure: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            component: Component::Commcare,
            rev: None,
            resume: None,
            name: None,
            private: false,
            limit: None,
            keep_days: None,
            keep: 3,
            skip_record: false,
            ignore_kafka_checkpoint_warning: None,
            update_config: false,
            force_settings: false,
            lock_wait: None,
            lock_token: lock::Token::new(),
            lock_heartbeat: lock::HEARTBEAT_INTERVAL,
            by: "cchq".into(),
            vault: None,
            rolling: RollingOptions::default(),
            notify: true,
            cancel: crate::cancel::Cancel::new(),
            restart_guard: services::RestartGuard::default(),
            cancel_grace: CANCEL_GRACE,
            rollback_on_failure: None,
        }
    }
}

/// A phase's duration.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// The phase.
    pub phase: String,
    /// Milliseconds.
    pub ms: u64,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The release.
    pub release: String,
    /// The commit deployed.
    pub commit: String,
    /// The commit that was current before, where known.
    pub previous_commit: Option<String>,
    /// The hosts involved.
    pub hosts: Vec<String>,
    /// Whether `current` was switched.
    pub switched: bool,
    /// Phase timings.
    pub timings: Vec<Timing>,
    /// Total wall time, milliseconds.
    pub duration_ms: u64,
    /// Round trips (commands and file transfers) per phase, as the transport counted them.
    pub round_trips: Vec<PhaseTrips>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn failed(release: &str, what: impl Into<String>) -> Error {
    Error::new(ErrorKind::DeployFailed, what.into()).with_hint(resume_hint(release))
}

/// `e` as a deploy failure (see [`failed`]): `message` of its message, `e` its cause.
fn failed_by(release: &str, e: Error, message: impl FnOnce(&str) -> String) -> Error {
    e.wrap(ErrorKind::DeployFailed, message)
        .with_hint(resume_hint(release))
}

fn resume_hint(release: &str) -> String {
    format!(
        "fix the cause, then continue with `deploy --resume {release}` (steps already done are not run again)"
    )
}

struct Ctx<'a> {
    env: &'a Environment,
    t: &'a dyn Transport,
    events: &'a dyn EventSink,
    layout: Layout,
    name: String,
    secrets: Vec<String>,
    timings: std::sync::Mutex<Vec<Timing>>,
    /// Set when hosts may be split between releases: the lock stays, so that nothing but
    /// `--resume` (or a rollback) runs until an operator has looked.
    keep_lock: std::sync::atomic::AtomicBool,
    /// Steps a cancel must not cut short (the checkout, the switch).
    shield: Shield,
}

/// Counts the steps running that must not be cut short (the switch, all or nothing on every
/// host): a cancel (or a lost lock) waits until none runs before the deploy's future is dropped.
struct Shield(tokio::sync::watch::Sender<usize>);

impl Default for Shield {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(0))
    }
}

impl Shield {
    /// Runs `f` shielded.
    async fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        struct Leave<'a>(&'a tokio::sync::watch::Sender<usize>);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        self.0.send_modify(|n| *n += 1);
        let _leave = Leave(&self.0);
        f.await
    }

    /// Completes when no shielded step runs.
    async fn clear(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Ctx<'_> {
    fn push_timing(&self, phase: &str, ms: u64) {
        if let Ok(mut t) = self.timings.lock() {
            t.push(Timing {
                phase: phase.into(),
                ms,
            });
        }
    }

    fn timings(&self) -> Vec<Timing> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn user(&self) -> String {
        self.env.profile.app_user.clone()
    }

    fn mask(&self, text: &str) -> String {
        let s: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        crate::redact::mask(text, &s)
    }

    /// Runs `f` as phase `name` (a [`Phase`], or a profile's step): its start and end as events,
    /// its duration as a timing, its round trips counted under it.
    async fn phase<T, F: std::future::Future<Output = Result<T>>>(
        &self,
        name: impl AsRef<str>,
        detail: &str,
        f: F,
    ) -> Result<T> {
        let name = name.as_ref();
        self.events.emit(&Event::Phase {
            phase: name.into(),
            ok: None,
            duration_ms: None,
            detail: detail.into(),
        });
        let start = Instant::now();
        let r = in_phase(name, f).await;
        let d = ms(start.elapsed());
        self.events.emit(&Event::Phase {
            phase: name.into(),
            ok: Some(r.is_ok()),
            duration_ms: Some(d),
            detail: detail.into(),
        });
        self.push_timing(name, d);
        r
    }

    /// Runs `script` as the app user on every host; returns outputs, or an error naming the
    /// failed hosts with their (masked) output. For cchq's own work on the release (the checkout,
    /// the markers, the record): without the user's login shell (`sudo -u`, not `sudo -iu`), as
    /// Ansible's `become` runs commcare-cloud's. A login shell costs every host a `bash --login`
    /// and its profile per command; the profile's steps, which run the operator's tools, keep it
    /// ([`run_steps`]).
    async fn on_hosts(
        &self,
        step: &str,
        hosts: &[String],
        script: impl Fn(&str) -> String,
    ) -> Result<Vec<(String, String)>> {
        let user = self.user();
        self.on_hosts_as(step, hosts, |h| {
            RemoteCommand::shell_as(user.clone(), script(h))
        })
        .await
    }

    /// [`Ctx::on_hosts`] with the command as given (as the login user unless it says otherwise).
    async fn on_hosts_as(
        &self,
        step: &str,
        hosts: &[String],
        command: impl Fn(&str) -> RemoteCommand,
    ) -> Result<Vec<(String, String)>> {
        let command = &command;
        let results = fanout::for_each_host_step(
            hosts,
            fanout::DEFAULT_FORKS,
            step,
            self.events,
            |h| async move {
                let cmd = command(h);
                // Each line as the host prints it, named by the step printing it (a group of
                // steps says which with its `::cchq-step` markers).
                let printing = std::sync::Mutex::new(step.to_owned());
                let on_line = |stream: crate::transport::Stream, line: &str| {
                    if let Some(name) = line.strip_prefix("::cchq-step ") {
                        if let Ok(mut p) = printing.lock() {
                            name.trim().clone_into(&mut p);
                        }
                    } else if !line.starts_with("::cchq-") {
                        let step = printing.lock().map(|p| p.clone()).unwrap_or_default();
                        self.events.emit(&Event::Line {
                            host: h.to_owned(),
                            step,
                            stream,
                            text: self.mask(line),
                        });
                    }
                };
                self.t.exec_lines(h, &cmd, &on_line).await
            },
            |r| r.as_ref().is_ok_and(crate::transport::Output::success),
        )
        .await;
        let mut outs = Vec::new();
        let mut failures = Vec::new();
        for (h, r) in results {
            match r {
                Ok(o) if o.success() => outs.push((h, o.stdout_str())),
                Ok(o) => {
                    let text = self.mask(&format!("{}{}", o.stdout_str(), o.stderr_str()));
                    // A group of steps names the one that failed (see `steps::script`).
                    let which = steps::failed_step(&text)
                        .map(|n| format!(" in step `{n}`"))
                        .unwrap_or_default();
                    let text = steps::strip_markers(&text);
                    self.events.emit(&Event::Output {
                        host: h.clone(),
                        step: step.into(),
                        text: text.clone(),
                    });
                    let tail: Vec<&str> = text
                        .lines()
                        .rev()
                        .take(8)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    failures.push(format!(
                        "`{h}`{which} (exit code {}):\n    {}",
                        o.exit_code.unwrap_or(-1),
                        tail.join("\n    ")
                    ));
                }
                Err(e) => failures.push(format!("`{h}`: {}", e.message())),
            }
        }
        if failures.is_empty() {
            Ok(outs)
        } else {
            Err(failed(
                &self.name,
                format!(
                    "{step} failed on {} host(s): {}",
                    failures.len(),
                    failures.join("\n  ")
                ),
            ))
        }
    }
}

/// The hosts a component is built on ([`Deployable::hosts`], narrowed by `--limit`).
pub fn component_hosts(env: &Environment, opts: &Options) -> Result<Vec<String>> {
    let base = opts.component.deployable(env).hosts();
    let sel = match (&opts.limit, opts.private) {
        (Some(l), _) => env.inventory.select_within(base, l)?,
        (None, true) => env.inventory.select("django_manage")?,
        (None, false) => env.inventory.select(base)?,
    };
    let skip: BTreeSet<&str> = env
        .inventory
        .group_hosts("ansible_skip")
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(sel
        .hosts
        .into_iter()
        .filter(|h| !skip.contains(h.as_str()))
        .collect())
}

/// The hosts a deploy or rollback talks to: the component's hosts and the host holding the
/// deploy lock (the first `django_manage` host, which a `formplayer` deploy does not build on).
///
/// # Errors
/// As [`component_hosts`], or an environment without hosts.
pub fn connect_hosts(env: &Environment, opts: &Options) -> Result<Vec<String>> {
    let mut hosts = component_hosts(env, opts)?;
    let lock_host = lock::host(env)?;
    if !hosts.contains(&lock_host) {
        hosts.push(lock_host);
    }
    Ok(hosts)
}

/// [`resolve_commit`] for async code: `git ls-remote` waits on the network, so it runs on a
/// blocking thread, never on one of the runtime's.
pub(crate) async fn resolve_commit_in_background(repo: &str, rev: &str) -> Result<String> {
    let (repo, rev) = (repo.to_owned(), rev.to_owned());
    tokio::task::spawn_blocking(move || resolve_commit(&repo, &rev))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
}

/// Resolves `rev` to a commit on the controller (`git ls-remote`), once for every host. It
/// blocks: async code in this crate calls `resolve_commit_in_background`.
pub fn resolve_commit(repo: &str, rev: &str) -> Result<String> {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(rev.to_lowercase());
    }
    let out = crate::vault::scrub_env(&mut std::process::Command::new("git"))
        .args(safe_directory_args(repo))
        .args([
            "ls-remote",
            "--",
            repo,
            rev,
            &format!("refs/heads/{rev}"),
            &format!("refs/tags/{rev}^{{}}"),
            &format!("refs/tags/{rev}"),
        ])
        .output()
        .map_err(|e| {
            Error::io("cannot run `git ls-remote`", e)
                .with_hint("install git on the control machine")
        })?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!("`git ls-remote {repo}` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        )
        .with_hint("check `code_repo` in fab-settings.yml (or cchq.yml) and that this machine can reach it"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    // Prefer a peeled tag, then a branch, then anything.
    lines.sort_by_key(|(_, r)| {
        if r.ends_with("^{}") {
            0
        } else if r.starts_with("refs/heads/") {
            1
        } else {
            2
        }
    });
    lines
        .first()
        .map(|(sha, _)| (*sha).to_owned())
        .ok_or_else(|| {
            Error::not_found(format!("revision `{rev}` not found in `{repo}`"))
                .with_hint("give a branch, a tag or a full commit id with `--commcare-rev`")
        })
}

/// `-c safe.directory=<repo>` for a repository on the local filesystem: git refuses to read a
/// repository owned by another user (the app user clones one owned by root) without it.
pub fn safe_directory_args(repo: &str) -> Vec<String> {
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    if path.starts_with('/') {
        vec![
            "-c".into(),
            format!("safe.directory={}", path.trim_end_matches('/')),
        ]
    } else {
        Vec::new()
    }
}

fn release_info(name: &str, commit: &str, by: &str) -> String {
    serde_json::json!({"name": name, "commit": commit, "by": by, "created_at": crate::clock::now()})
        .to_string()
}

/// Reads every host's state of release `name` ([`probe::HostState`]), one command per host.
async fn probe_release(
    ctx: &Ctx<'_>,
    hosts: &[String],
    name: &str,
) -> Result<Vec<probe::HostState>> {
    let script = probe::script(&ctx.layout, name, &ctx.user());
    let outs = ctx
        .on_hosts_as("probe", hosts, |_| RemoteCommand::shell(script.clone()))
        .await?;
    Ok(outs.iter().map(|(h, o)| probe::parse(h, o)).collect())
}

/// The outcome of a resume that had nothing to do.
fn nothing_to_do(ctx: &Ctx<'_>, hosts: &[String], commit: String) -> Outcome {
    ctx.events.emit(&Event::Warning {
        host: None,
        message: format!(
            "release `{}` is already deployed and live on every host: nothing to do",
            ctx.name
        ),
    });
    Outcome {
        release: ctx.name.clone(),
        previous_commit: Some(commit.clone()),
        commit,
        hosts: hosts.to_vec(),
        switched: true,
        timings: Vec::new(),
        duration_ms: 0,
        round_trips: Vec::new(),
    }
}

/// Runs a deploy of `opts.component`. On failure the error is [`ErrorKind::DeployFailed`] (or
/// [`ErrorKind::LockHeld`]) and names the release to resume; a stop by the drift guard of
/// `update_config` (before anything is built) is [`ErrorKind::Config`] and says how to resolve it.
pub async fn deploy(
    env: &Environment,
    t: &dyn Transport,
    opts: &Options,
    events: &dyn EventSink,
) -> Result<Outcome> {
    let started = Instant::now();
    // Every round trip of the deploy is counted here, per phase (see `Ctx::phase`).
    let counting = Counting::new(t);
    let t: &dyn Transport = &counting;
    let hosts = component_hosts(env, opts)?;
    if hosts.is_empty() {
        return Err(Error::pattern(format!(
            "no `{}` hosts to deploy to",
            opts.component
        )));
    }
    // Read in part, the environment plans no programs for some hosts and the supervisor step
    // would remove theirs: nothing starts (not even the lock) while it does not validate.
    crate::validate::require_valid(env, "deploy")?;
    let name = match &opts.resume {
        Some(n) if !valid_release_name(n) => {
            return Err(Error::usage(format!("`{n}` is not a release name"))
                .with_hint("`list-releases` shows them"));
        }
        Some(n) => n.clone(),
        None => opts.name.clone().unwrap_or_else(layout::release_name_now),
    };
    // A new release (or `update_config`) renders settings for any host that has none (a first
    // deploy, a new host): an encrypted vault must be open before anything starts.
    if opts.resume.is_none() || opts.update_config {
        settings::require_vault(env, opts.vault.as_ref())?;
    }
    let secrets = crate::redact::secret_values(opts.vault.as_ref());
    let watch = Watch {
        inner: events,
        seen: std::sync::Mutex::new(Seen::default()),
    };
    let ctx = Ctx {
        env,
        t,
        events: &watch,
        layout: Layout::new(env, opts.component),
        name: name.clone(),
        secrets,
        timings: std::sync::Mutex::new(Vec::new()),
        keep_lock: std::sync::atomic::AtomicBool::new(false),
        shield: Shield::default(),
    };

    // A resume of a release finished everywhere: one probe per host, no lock, nothing else.
    if opts.resume.is_some() && !opts.private && !opts.update_config {
        let plan = in_phase(Phase::Probe, probe_release(&ctx, &hosts, &name))
            .await
            .and_then(|s| probe::plan_resume(opts, &name, &s));
        // Anything else (work to do, an error) is decided again under the lock.
        if let Ok(probe::Resume::Done { commit }) = plan {
            let mut o = nothing_to_do(&ctx, &hosts, commit);
            o.duration_ms = ms(started.elapsed());
            o.round_trips = counting.per_phase();
            return Ok(o);
        }
    }

    // Lock: free, or taken over from a holder that is provably gone (never because of a resume).
    let holder = lock::Holder::new(
        opts.by.clone(),
        name.clone(),
        format!("deploy {}", opts.component),
        &opts.lock_token,
        opts.lock_heartbeat,
    );
    // A new deploy's first probe (the commit live before it) rides on the lock's command when
    // the lock's host is one of the deploy's.
    let lock_host = lock::host(env)?;
    let first_probe =
        (opts.resume.is_none() && hosts.contains(&lock_host)).then(|| current_commit_script(&ctx));
    let taking = ctx.phase(
        Phase::Lock,
        "",
        lock::acquire_probing(env, t, &holder, opts.lock_wait, first_probe.as_deref()),
    );
    tokio::pin!(taking);
    let held = tokio::select! {
        held = &mut taking => held?,
        () = opts.cancel.cancelled() => {
            // Cancelled while waiting for (or taking) the lock. An attempt in flight is let
            // finish (cut halfway, it left the lock made without its holder record: nobody's,
            // until it goes stale), then the lock is freed if it is ours (token checked).
            let _ = tokio::time::timeout(opts.cancel_grace.min(LOCK_ATTEMPT_GRACE), &mut taking).await;
            let _ = lock::release(env, t, &opts.lock_token).await;
            return Err(interrupted(&name, opts));
        }
    };
    let (held, probed) = held;
    // `Some(previous commit)` when the lock's command read it.
    let previous = probed
        .filter(|_| first_probe.is_some())
        .map(|o| commit_in(&o));
    if let Some(prev) = &held.taken_over {
        let what = prev.holder.as_ref().map_or_else(
            || "a deploy killed while taking it".to_owned(),
            |h| format!("the interrupted deploy of `{}` ({h})", h.release),
        );
        events.emit(&Event::Warning {
            host: None,
            message: format!(
                "taking over the lock left by {what}: {}",
                prev.liveness.why()
            ),
        });
    }
    let notes = Notes::new(&ctx, opts, &hosts);
    opts.restart_guard.reopen();
    // The heartbeat runs beside the deploy; it ends the deploy if the lock is no longer its own.
    // So does a cancel. Neither cuts a switch short, nor a restart's round trip: both wait for
    // them to end first (the latter at most `cancel_grace`), and no new restart round trip starts.
    let settle = || async {
        opts.restart_guard.close();
        ctx.shield.clear().await;
        let _ = tokio::time::timeout(opts.cancel_grace, opts.restart_guard.settled()).await;
    };
    let result = tokio::select! {
        r = run_locked(&ctx, &hosts, opts, &notes, previous) => r,
        lost = async {
            let lost = in_phase(Phase::Heartbeat, lock::keep_alive(env, t, &opts.lock_token, opts.lock_heartbeat, &name, &watch)).await;
            settle().await;
            lost
        } => Err(lost),
        () = async {
            opts.cancel.cancelled().await;
            settle().await;
        } => Err(interrupted(&name, opts)),
    };
    // Whatever ended the deploy, the programs its restart stopped and did not start again (a
    // restart cut short) are started again, before the lock goes.
    let restored = in_phase(Phase::Restore, opts.restart_guard.restore(t, &watch)).await;
    let result = result.map_err(|e| with_restored(cancelled_first(e, &name, opts), &restored, env));
    let keep = ctx.keep_lock.load(std::sync::atomic::Ordering::SeqCst);
    if keep {
        events.emit(&Event::Warning {
            host: None,
            message: format!(
                "the deploy lock of `{name}` is kept: hosts may be split between releases"
            ),
        });
    }
    let unlock = if keep {
        Ok(())
    } else {
        match in_phase(Phase::Unlock, lock::release(env, t, &opts.lock_token)).await {
            Ok(lock::Released::NotOurs(state)) => {
                let who = (*state)
                    .as_ref()
                    .map_or_else(|| "someone else".to_owned(), lock::LockState::who);
                events.emit(&Event::Warning {
                    host: None,
                    message: format!("the deploy lock is held by {who} now: left alone"),
                });
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    };
    drop(held);
    let result = match (result, unlock) {
        (Ok(mut outcome), Ok(())) => {
            outcome.timings = ctx.timings();
            outcome.duration_ms = ms(started.elapsed());
            outcome.round_trips = counting.per_phase();
            Ok(outcome)
        }
        (Ok(_), Err(u)) => {
            let (msg, hint) = lock::unreleased(env, &name, &u);
            Err(u
                .map_message(|_| format!("deployed release `{name}`, but {msg}"))
                .with_hint(hint))
        }
        (Err(e), Err(u)) => {
            let (msg, hint) = lock::unreleased(env, &name, &u);
            let first = e.hint().map_or_else(String::new, |h| format!("{h}; "));
            Err(e
                .map_message(|m| format!("{m}; {msg}"))
                .with_hint(format!("{first}{hint}")))
        }
        (Err(e), Ok(())) => Err(e),
    };
    // What a program needs to act on the failure: the release (to resume it), what failed where.
    let result = result.map_err(|e| {
        let (phase, step, hosts) = watch.failed_parts();
        // What the error already names (the one failed step of a group) is more precise than
        // what the events saw (the group).
        let (phase, step) = match e.details() {
            Some(d) if d.step.is_some() => (None, None),
            _ => (phase, step),
        };
        e.with_release(name.clone())
            .with_failure(phase, step, hosts)
    });
    match &result {
        Ok(o) => notes.success(o).await,
        Err(e) => notes.failure(&ctx, e, ms(started.elapsed()), &watch).await,
    }
    result
}

/// What a caller that dropped a deploy's future (a second Ctrl-C: "stop at once") must do, in
/// one place for the CLI and Python: start again, by name, what its restart had stopped and not
/// started yet, then free the lock if it is still this deploy's (token checked on the host),
/// leaving the release resumable. The first cancel never needs it: the deploy does the same
/// itself at its next safe point.
pub async fn abandoned(
    env: &Environment,
    t: &dyn Transport,
    opts: &Options,
    events: &dyn EventSink,
) -> Vec<services::Restored> {
    opts.restart_guard.close();
    let restored = opts.restart_guard.restore(t, events).await;
    let _ = lock::release(env, t, &opts.lock_token).await;
    restored
}

/// A safe point: the deploy stops here when it was cancelled (besides at any wait outside a
/// shielded step, where `deploy` drops it).
fn checkpoint(opts: &Options, name: &str) -> Result<()> {
    if opts.cancel.is_cancelled() {
        Err(interrupted(name, opts))
    } else {
        Ok(())
    }
}

/// The error of a deploy stopped by [`Options::cancel`].
fn interrupted(name: &str, opts: &Options) -> Error {
    let why = opts
        .cancel
        .reason()
        .unwrap_or_else(|| "cancelled".to_owned());
    Error::new(
        ErrorKind::Interrupted,
        format!("deploy of `{name}` interrupted ({why})"),
    )
    .with_hint(format!(
        "continue it with `deploy --resume {name}` (steps already done are not run again)"
    ))
}

/// A deploy that failed after it was cancelled failed because of it, most likely (Ctrl-C reaches
/// the commands the deploy runs too): it is an interruption, saying what failed.
fn cancelled_first(e: Error, name: &str, opts: &Options) -> Error {
    if !opts.cancel.is_cancelled() || e.kind() == ErrorKind::Interrupted {
        return e;
    }
    let i = interrupted(name, opts);
    // The failure's own hint says more (a switch that kept the lock, a rollback) when it has one.
    let hint = e.hint().or(i.hint()).unwrap_or_default().to_owned();
    e.wrap(ErrorKind::Interrupted, |m| {
        format!("{}; meanwhile: {m}", i.message())
    })
    .with_hint(hint)
}

/// `e`, saying what [`services::RestartGuard::restore`] started again after a restart cut short
/// and, above all, what it could not.
fn with_restored(e: Error, restored: &[services::Restored], env: &Environment) -> Error {
    if restored.is_empty() {
        return e;
    }
    let (ok, bad): (Vec<&services::Restored>, Vec<&services::Restored>) =
        restored.iter().partition(|r| r.error.is_none());
    let mut msg = String::new();
    if !ok.is_empty() {
        let n: usize = ok.iter().map(|r| r.programs.len()).sum();
        msg.push_str(&format!(
            "; the {n} program(s) the restart had stopped were started again"
        ));
    }
    if bad.is_empty() {
        return e.map_message(|m| format!("{m}{msg}"));
    }
    let what: Vec<String> = bad
        .iter()
        .map(|r| {
            format!(
                "`{}`: {} ({})",
                r.host,
                r.programs.join(", "),
                r.error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    msg.push_str(&format!(
        "; programs the restart had stopped could NOT be started again on {}",
        what.join("; ")
    ));
    let hosts: Vec<&str> = bad.iter().map(|r| r.host.as_str()).collect();
    let first = e.hint().map_or_else(String::new, |h| format!("{h}; "));
    e.map_message(|m| format!("{m}{msg}")).with_hint(format!(
        "{first}start them now: `cchq {} service commcare start --limit {}`",
        env.name,
        hosts.join(",")
    ))
}

/// What failed, as seen in the events: the phase, and the step and hosts within it.
#[derive(Default)]
struct Seen {
    current_phase: Option<String>,
    failed_phase: Option<String>,
    /// (phase, step) of the last failed step, and the hosts it failed on.
    step: Option<(Option<String>, String)>,
    hosts: Vec<String>,
}

/// Passes events on, noting what failed (for the failure notification).
struct Watch<'a> {
    inner: &'a dyn EventSink,
    seen: std::sync::Mutex<Seen>,
}

impl EventSink for Watch<'_> {
    fn emit(&self, e: &Event) {
        if let Ok(mut s) = self.seen.lock() {
            match e {
                Event::Phase {
                    phase, ok: None, ..
                } => s.current_phase = Some(phase.clone()),
                Event::Phase {
                    phase,
                    ok: Some(false),
                    ..
                } => s.failed_phase = Some(phase.clone()),
                Event::Finished {
                    host,
                    step,
                    ok: false,
                    ..
                } => {
                    let key = (s.current_phase.clone(), step.clone());
                    if s.step.as_ref() != Some(&key) {
                        s.step = Some(key);
                        s.hosts.clear();
                    }
                    if !s.hosts.contains(host) {
                        s.hosts.push(host.clone());
                    }
                }
                _ => {}
            }
        }
        self.inner.emit(e);
    }
}

impl Watch<'_> {
    /// The phase that failed, the step that failed within it, and the hosts it failed on.
    fn failed_parts(&self) -> (Option<String>, Option<String>, Vec<String>) {
        let Ok(s) = self.seen.lock() else {
            return (None, None, Vec::new());
        };
        match (&s.failed_phase, &s.step) {
            (Some(p), Some((sp, step))) if sp.as_ref() == Some(p) => {
                (Some(p.clone()), Some(step.clone()), s.hosts.clone())
            }
            (Some(p), _) => (Some(p.clone()), None, Vec::new()),
            (None, Some((sp, step))) => (sp.clone(), Some(step.clone()), s.hosts.clone()),
            (None, None) => (None, None, Vec::new()),
        }
    }

    /// The failed step (`build: checkout`) and the hosts it failed on.
    fn failure(&self) -> (Option<String>, Vec<String>) {
        let Ok(s) = self.seen.lock() else {
            return (None, Vec::new());
        };
        match (&s.failed_phase, &s.step) {
            (Some(p), Some((sp, step))) if sp.as_ref() == Some(p) => (
                Some(if p == step {
                    p.clone()
                } else {
                    format!("{p}: {step}")
                }),
                s.hosts.clone(),
            ),
            (Some(p), _) => (Some(p.clone()), Vec::new()),
            (None, Some((_, step))) => (Some(step.clone()), s.hosts.clone()),
            (None, None) => (None, Vec::new()),
        }
    }
}

/// The notifications of one deploy.
struct Notes<'a> {
    notifier: Option<Notifier>,
    events: &'a dyn EventSink,
    base: Notice,
    repo: String,
    commits: std::sync::Mutex<(Option<String>, Option<String>)>,
}

impl<'a> Notes<'a> {
    fn new(ctx: &Ctx<'a>, opts: &Options, hosts: &[String]) -> Self {
        let env = ctx.env;
        let notifier = (opts.notify && env.profile.notify.is_some())
            .then(|| Notifier::from_env(env, opts.vault.as_ref()));
        for w in notifier.iter().flat_map(Notifier::warnings) {
            ctx.events.emit(&Event::Warning {
                host: None,
                message: w.clone(),
            });
        }
        let mut base = Notice::new(Stage::Start, &env.name, opts.component, &ctx.name, &opts.by);
        base.hosts = hosts.to_vec();
        base.private = opts.private;
        base.resumed = opts.resume.is_some();
        Self {
            notifier: notifier.filter(|n| !n.is_empty()),
            events: ctx.events,
            base,
            repo: env.profile.code_repo.clone(),
            commits: std::sync::Mutex::new((None, None)),
        }
    }

    fn notice(&self, stage: Stage) -> Notice {
        let (c, p) = self.commits.lock().map(|g| g.clone()).unwrap_or_default();
        Notice {
            stage,
            ..self.base.clone()
        }
        .with_commits(&self.repo, c.as_deref(), p.as_deref())
    }

    async fn start(&self, commit: &str, previous: Option<&str>) {
        if let Ok(mut g) = self.commits.lock() {
            *g = (Some(commit.to_owned()), previous.map(str::to_owned));
        }
        if let Some(n) = &self.notifier {
            n.send(&self.notice(Stage::Start), self.events).await;
        }
    }

    async fn success(&self, o: &Outcome) {
        let Some(n) = &self.notifier else { return };
        let mut notice = Notice {
            hosts: o.hosts.clone(),
            private: !o.switched,
            ..self.notice(Stage::Success)
        }
        .with_commits(&self.repo, Some(&o.commit), o.previous_commit.as_deref());
        notice.duration_ms = Some(o.duration_ms);
        n.send(&notice, self.events).await;
    }

    async fn failure(&self, ctx: &Ctx<'_>, e: &Error, duration_ms: u64, watch: &Watch<'_>) {
        let Some(n) = &self.notifier else { return };
        let mut notice = self.notice(Stage::Failure);
        let (step, hosts) = watch.failure();
        notice.failed_step = step;
        notice.failed_hosts = hosts;
        notice.error = Some(ctx.mask(e.message()));
        notice.duration_ms = Some(duration_ms);
        notice.resume_command = Some(Notice::resume_command_for(
            &notice.env,
            notice.component,
            &notice.release,
        ));
        n.send(&notice, self.events).await;
    }
}

/// The deploy under the lock: probe (a resume's release, read again: what a deploy holding the
/// lock meanwhile did counts) -> plan ([`probe::plan`], pure) -> execute, one arm per stage.
/// `previous`: the commit `current` held before, when the lock's command read it already.
async fn run_locked(
    ctx: &Ctx<'_>,
    hosts: &[String],
    opts: &Options,
    notes: &Notes<'_>,
    previous: Option<Option<String>>,
) -> Result<Outcome> {
    let env = ctx.env;
    let name = ctx.name.clone();
    let repo = env.profile.code_repo.clone();
    let resume = match &opts.resume {
        None => None,
        Some(_) => match in_phase(Phase::Probe, probe_release(ctx, hosts, &name))
            .await
            .and_then(|s| probe::plan_resume(opts, &name, &s))
        {
            Ok(r) => Some(r),
            // No host has it, and a revision says what to build: a new release of that name.
            Err(e) if e.kind() == ErrorKind::NotFound && opts.rev.is_some() => None,
            Err(e) => return Err(e),
        },
    };
    // The steps after the restart (commcare: record_deploy_success).
    let after: Vec<steps::Step> = pipeline(ctx.env, opts)
        .into_iter()
        .filter(|s| s.after_switch)
        .collect();
    let known = probe::Known {
        resume,
        previous_read: previous.is_some(),
        steps_after: !after.is_empty(),
        rollback_on_failure: env.profile.rollback_on_failure,
    };
    let mut previous = previous.flatten();
    let mut commit = String::new();
    let mut built = Built::default();
    let mut before = Vec::new();
    for stage in probe::plan(opts, &known) {
        match stage {
            // Nothing left to do: every step ran, every host is on it.
            probe::Stage::Nothing(c) => return Ok(nothing_to_do(ctx, hosts, c)),
            probe::Stage::Commit(probe::Source::Release(c)) => commit = c,
            probe::Stage::Commit(probe::Source::Artifact) => {
                // An artifact: its SHA-256 is known once downloaded (the build step checks every
                // host got the same); until then the URL stands for it.
                let src = artifact_source(ctx, hosts, opts)?;
                ctx.phase(Phase::Resolve, &src.url, async { Ok(()) })
                    .await?;
            }
            probe::Stage::Commit(probe::Source::Resolve) => {
                // Once, on the controller.
                let rev = opts
                    .rev
                    .clone()
                    .unwrap_or_else(|| env.profile.default_branch.clone());
                commit = ctx
                    .phase(
                        Phase::Resolve,
                        &rev,
                        resolve_commit_in_background(&repo, &rev),
                    )
                    .await?;
            }
            // Before anything is built: fresh settings must not overwrite settings applied from
            // a newer or diverged environment, or edited by hand since.
            probe::Stage::DriftGuard => {
                ctx.phase(Phase::Drift, "settings", guard_settings(ctx, hosts, opts))
                    .await?
            }
            probe::Stage::PreviousCommit => {
                previous = in_phase(Phase::Probe, current_commit(ctx, hosts)).await
            }
            probe::Stage::Announce => notes.start(&commit, previous.as_deref()).await,
            probe::Stage::Build => {
                // On every host, in parallel. A private release is for trying out
                // (`django-manage --release`): only the steps of every build host run; it does
                // not migrate the shared database or preindex (`preindex-views` starts one in it
                // in the background).
                checkpoint(opts, &name)?;
                built = build(ctx, hosts, &commit, previous.as_deref(), opts).await?;
                if let Some(sha) = &built.artifact_sha {
                    commit.clone_from(sha);
                }
            }
            probe::Stage::MarkPrivate => {
                let r = quote(&ctx.layout.release(&name));
                let mark = format!(
                    "[ -f {r}/{c} ] && [ -f {r}/{s} ]; {}",
                    built.marks,
                    c = layout::markers::CHECKOUT,
                    s = layout::markers::CONFIG
                );
                in_phase(
                    Phase::BuildComplete,
                    ctx.on_hosts("build-complete", hosts, |_| mark.clone()),
                )
                .await?;
                checkpoint(opts, &name)?;
                return Ok(Outcome {
                    release: name,
                    commit,
                    previous_commit: previous,
                    hosts: hosts.to_vec(),
                    switched: false,
                    timings: Vec::new(),
                    duration_ms: 0,
                    round_trips: Vec::new(),
                });
            }
            probe::Stage::Switch => {
                // Every host, or none (a cancel waits for it to end, then stops the deploy here).
                checkpoint(opts, &name)?;
                before = ctx
                    .shield
                    .run(in_phase(
                        Phase::Switch,
                        switch(ctx, hosts, Some(&built.marks)),
                    ))
                    .await?;
                checkpoint(opts, &name)?;
            }
            probe::Stage::RecordApplied => record_applied_settings(ctx, hosts, opts).await?,
            probe::Stage::Restart { rollback } => {
                // A release that fails to start is rolled back when asked to.
                if let Err(e) = restart(ctx, hosts, opts, &built.confs).await {
                    if opts.cancel.is_cancelled() {
                        // Stopped by the cancel (round trips not started): not a failed start.
                        return Err(cancelled_first(e, &name, opts));
                    }
                    return Err(if rollback {
                        roll_back_failed_start(ctx, hosts, opts, &before, e).await
                    } else {
                        e.map_message(|m| format!("the new release is live but {m}"))
                    });
                }
            }
            probe::Stage::StepsAfter => {
                let vars =
                    steps::Vars::new(env, &ctx.layout, &name, &commit, previous.as_deref(), opts);
                let list: Vec<&steps::Step> = after.iter().collect();
                run_steps(ctx, hosts, &list, &vars).await?;
            }
            probe::Stage::Record => {
                record_and_clean(
                    ctx,
                    hosts,
                    opts,
                    &commit,
                    previous.as_deref(),
                    &built,
                    &before,
                )
                .await?
            }
        }
    }
    Ok(Outcome {
        release: name,
        commit,
        previous_commit: previous,
        hosts: hosts.to_vec(),
        switched: true,
        timings: Vec::new(),
        duration_ms: 0,
        round_trips: Vec::new(),
    })
}

/// What `update_config` applied, for the drift guard of later update-configs and deploys.
async fn record_applied_settings(ctx: &Ctx<'_>, hosts: &[String], opts: &Options) -> Result<()> {
    let env = ctx.env;
    let mut records = Vec::new();
    let settings_renderer = settings::SettingsRenderer::new(env, opts.vault.as_ref());
    for h in hosts {
        // Only what this deploy wrote: a formplayer host that also runs the app keeps its
        // application.properties, which a record of the rendered one would call a hand edit.
        let files: Vec<_> = settings_renderer
            .render(h, Some(&ctx.name))
            .map_err(|e| failed_by(&ctx.name, e, str::to_owned))?
            .into_iter()
            .filter(|f| f.component == opts.component)
            .collect();
        records.push(in_phase(Phase::AppliedRecord, async move {
            (h, crate::apply::record_applied(env, ctx.t, h, &files).await)
        }));
    }
    for (h, r) in fanout::bounded(records, fanout::DEFAULT_FORKS).await {
        if let Err(e) = r {
            ctx.events.emit(&Event::Warning {
                host: Some(h.clone()),
                message: format!("could not record the applied settings: {}", e.message()),
            });
        }
    }
    Ok(())
}

/// Last: a release with this record and `current` on every host is a finished deploy (a resume
/// of it has nothing to do). The same command cleans old releases, in the background, as
/// planned from the checkout's listing: never the new release, never the one `current` pointed
/// to before the switch (`before`; nor the one current when listed), never from a partial
/// listing (that host is not cleaned).
async fn record_and_clean(
    ctx: &Ctx<'_>,
    hosts: &[String],
    opts: &Options,
    commit: &str,
    previous: Option<&str>,
    built: &Built,
    before: &[(String, String)],
) -> Result<()> {
    let env = ctx.env;
    let record = serde_json::json!({
        "release": ctx.name, "commit": commit, "previous_commit": previous, "by": opts.by,
        "finished_at": crate::clock::now(), "component": opts.component, "timings": ctx.timings(),
    });
    let rel = quote(&ctx.layout.release(&ctx.name));
    let rec = quote(&record.to_string());
    let gone = plan_cleaning(ctx, hosts, opts, &built.releases, before);
    let record_cmd = |h: &str| {
        let clean = gone.get(h).map_or_else(String::new, |g| {
            format!(
                "; {}",
                releases::clean_in_background(env, opts.component, g)
            )
        });
        format!("printf '%s\\n' {rec} > {rel}/.cchq-deploy.json{clean}")
    };
    ctx.phase(Phase::Record, "", ctx.on_hosts("record", hosts, record_cmd))
        .await?;
    append_history(env, record).await;
    let removed: usize = gone.values().map(Vec::len).sum();
    if removed > 0 {
        let detail = format!(
            "{removed} old release(s) removed in the background on {} host(s) (keep {})",
            gone.len(),
            opts.keep
        );
        ctx.events.emit(&Event::Phase {
            phase: Phase::Clean.into(),
            ok: None,
            duration_ms: None,
            detail: detail.clone(),
        });
        ctx.events.emit(&Event::Phase {
            phase: Phase::Clean.into(),
            ok: Some(true),
            duration_ms: Some(0),
            detail,
        });
    }
    Ok(())
}

/// The drift guard of `update_config`: stops (a [`ErrorKind::Config`] error naming each host's
/// drift and how to resolve it, before anything is built or switched) when the settings on any
/// host were applied from a newer or diverged copy of the environment or edited by hand since;
/// with `force_settings`, warns and goes on.
async fn guard_settings(ctx: &Ctx<'_>, hosts: &[String], opts: &Options) -> Result<()> {
    let report = crate::drift::drift_report(ctx.env, ctx.t, hosts).await?;
    for d in report.iter().filter(|d| !d.blocking || opts.force_settings) {
        ctx.events.emit(&Event::Warning {
            host: Some(d.host.clone()),
            message: d.message.clone(),
        });
    }
    let blocking: Vec<&crate::drift::Drift> = report.iter().filter(|d| d.blocking).collect();
    if blocking.is_empty() {
        return Ok(());
    }
    if opts.force_settings {
        ctx.events.emit(&Event::Warning {
            host: None,
            message: "--force: overwriting the settings above".into(),
        });
        return Ok(());
    }
    Err(crate::drift::drift_error_for(
        ctx.env,
        &blocking,
        "deploy --update-config",
    ))
}

/// The command that prints the commit `current` holds on a host.
fn current_commit_script(ctx: &Ctx<'_>) -> String {
    let cur = quote(&ctx.layout.current);
    format!(
        "cat {cur}/{} 2>/dev/null || git -C {cur} rev-parse HEAD 2>/dev/null || true",
        artifact::SHA_FILE
    )
}

/// The commit in [`current_commit_script`]'s output, if it printed one.
fn commit_in(out: &str) -> Option<String> {
    Some(out.trim().to_owned()).filter(|c| c.len() == 40 || c.len() == 64)
}

async fn current_commit(ctx: &Ctx<'_>, hosts: &[String]) -> Option<String> {
    let first = hosts.first()?.clone();
    let script = current_commit_script(ctx);
    let out = ctx
        .on_hosts("current commit", std::slice::from_ref(&first), |_| {
            script.clone()
        })
        .await
        .ok()?;
    out.first().and_then(|(_, o)| commit_in(o))
}

/// Which old releases the record's command removes on each host ([`releases::plan_clean`] over
/// the checkout's listing, counting the new release as complete and kept): never the new
/// release, the one `current` pointed to before the switch (`before`), the one current when
/// listed, or any on a host whose listing was not whole.
fn plan_cleaning(
    ctx: &Ctx<'_>,
    hosts: &[String],
    opts: &Options,
    listed: &std::collections::BTreeMap<String, Vec<releases::Release>>,
    before: &[(String, String)],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let now = releases::keep_stamp(crate::clock::now());
    let releases_dir = format!("{}/", ctx.layout.releases.trim_end_matches('/'));
    let mut out = std::collections::BTreeMap::new();
    for h in hosts {
        let Some(rels) = listed.get(h) else { continue };
        let mut rels = rels.clone();
        match rels.iter_mut().find(|r| r.name == ctx.name) {
            Some(r) => r.complete = true,
            None => rels.push(releases::Release::built(h, &ctx.name)),
        }
        let mut exclude = vec![ctx.name.clone()];
        if let Some((_, prev)) = before.iter().find(|(bh, _)| bh == h) {
            let prev = prev.strip_prefix(&releases_dir).unwrap_or(prev);
            exclude.push(prev.trim_end_matches('/').to_owned());
        }
        let gone = releases::plan_clean(&rels, opts.keep, &exclude, &now);
        if !gone.is_empty() {
            out.insert(h.clone(), gone);
        }
    }
    out
}

/// What [`build`] found out on the way, for the steps after it.
#[derive(Debug, Default)]
struct Built {
    /// formplayer: the SHA-256 of the jar every host downloaded.
    artifact_sha: Option<String>,
    /// The `touch` that marks every step before the switch done (with [`layout::markers::BUILD`]),
    /// run by the switch (or on its own for a private release).
    marks: String,
    /// Per host, its releases as the checkout listed them (only whole listings).
    releases: std::collections::BTreeMap<String, Vec<releases::Release>>,
    /// Per host, the supervisor program files as the checkout read them (only whole answers).
    confs: std::collections::BTreeMap<String, String>,
}

/// Builds the release on every host. The checkout's command also copies the current settings,
/// lists the releases (for the clean after the record) and reads the supervisor program files
/// (for the restart), so that none of them costs a round trip of its own.
async fn build(
    ctx: &Ctx<'_>,
    hosts: &[String],
    commit: &str,
    previous: Option<&str>,
    opts: &Options,
) -> Result<Built> {
    let l = ctx.layout.clone();
    let (r, tmp, m) = (
        quote(&l.release(&ctx.name)),
        quote(&format!("{}.tmp", l.release(&ctx.name))),
        quote(&l.mirror()),
    );
    let url = quote(&ctx.env.profile.code_repo);
    // git runs `upload-pack` for local clones with a cleaned environment, so `-c` does not reach
    // it: the safe.directory exception goes into the upload-pack command itself.
    let g = crate::command::join(&safe_directory_args(&ctx.env.profile.code_repo));
    let upf = if g.is_empty() {
        String::new()
    } else {
        format!(" --upload-pack {}", quote(&format!("git {g} upload-pack")))
    };
    let up = if g.is_empty() {
        String::new()
    } else {
        format!(" --no-local{upf}")
    };
    let git = if g.is_empty() {
        "git".to_owned()
    } else {
        format!("git {g}")
    };
    let sha = quote(commit);
    let info = quote(&release_info(&ctx.name, commit, &opts.by));
    let keep = opts.keep_days.map(|d| {
        let until = crate::clock::now() + u64::from(d) * 86_400;
        format!("touch {r}/KEEP_UNTIL__{}", releases::keep_stamp(until))
    });
    let keep_cmd = keep.clone();
    let cur = quote(&l.current);
    let shared = quote(&l.shared);
    // formplayer's settings name its release (`build.version`): rendered for every release, as
    // with `--update-config`; otherwise a host with current settings gets a copy of them.
    let app = opts.component.deployable(ctx.env);
    let files = app.settings_files(ctx.env);
    let always = opts.update_config || app.settings_name_the_release();
    let first_file = files.first().copied().unwrap_or("localsettings.py");
    let copies: String = files
        .iter()
        .map(|f| format!("[ -f {r}/{f} ] || cp -p {cur}/{f} {r}/{f} 2>/dev/null || true; "))
        .collect();
    let copy = if always {
        String::new()
    } else {
        format!(
            "if [ ! -f {r}/{m} ]; then {copies}touch {r}/{m}; fi; ",
            m = layout::markers::CONFIG
        )
    };
    // A host without current settings gets fresh ones, with the marker, in one write below.
    let has_current =
        format!("if [ -f {cur}/{first_file} ]; then echo HAS_CURRENT_SETTINGS; {copy}fi");
    let extra = format!(
        "{}; {}",
        releases::embedded_listing(ctx.env, opts.component),
        crate::services::supervisor::embedded_probe(ctx.env)
    );
    // Step 1: code. A clone happens in `<name>.tmp` and is renamed when complete.
    let checkout = format!(
        "set -e; mkdir -p {rels} {shared}; \
         if [ -f {r}/.checkout-done ]; then echo 'checkout: already done'; else \
           if [ -d {m} ] && ! git -C {m} rev-parse --git-dir >/dev/null 2>&1; then rm -rf {m}; fi; \
           {unlock_mirror} \
           if [ -d {m} ]; then {git} -C {m} fetch -q --prune{upf} origin '+refs/*:refs/*'; \
           else mkdir -p \"$(dirname {m})\"; rm -rf {m}.tmp; {git} clone -q --mirror{up} {url} {m}.tmp; mv -T {m}.tmp {m}; fi; \
           git -C {m} cat-file -e {sha}^{{commit}} 2>/dev/null || {git} -C {m} fetch -q{upf} origin {sha}; \
           rm -rf {tmp}; {git} clone -q --no-checkout{up} --reference {m} {url} {tmp}; git -C {tmp} checkout -q {sha}; \
           if [ -f {tmp}/.gitmodules ]; then {git}{file_ok} -C {tmp} submodule -q update --init --recursive; fi; \
           printf '%s\\n' {info} > {tmp}/{release_info}; touch {tmp}/.checkout-done; \
           if [ -e {r} ]; then mv {r} {r}.fail-$(date +%s); fi; mv -T {tmp} {r}; echo 'checkout: done'; fi; \
         {keep}; {has_current}; {extra}",
        rels = quote(&l.releases),
        keep = keep.unwrap_or_else(|| "true".into()),
        release_info = layout::markers::RELEASE_INFO,
        unlock_mirror = unlock_mirror(&m),
        // A repository on the host's disk may have its submodules there too (git refuses the
        // file protocol for submodules unless told).
        file_ok = if g.is_empty() {
            ""
        } else {
            " -c protocol.file.allow=always"
        },
    );
    let env = ctx.env;
    let mut artifact_sha = None;
    let outs = if app.code() == Code::Artifact {
        let src = artifact_source(ctx, hosts, opts)?;
        let rel_dir = l.release(&ctx.name);
        let script = format!(
            "{}; {keep}; {has_current}; {extra}",
            artifact::download_script(&src, &rel_dir, &release_info(&ctx.name, &src.url, &opts.by)),
            keep = keep_cmd.clone().unwrap_or_else(|| "true".into()),
        );
        let outs = ctx
            .shield
            .run(ctx.phase(
                Phase::Build,
                "download",
                in_phase(
                    Phase::Checkout,
                    ctx.on_hosts("download", hosts, |_| script.clone()),
                ),
            ))
            .await?;
        let sums: BTreeSet<Option<String>> =
            outs.iter().map(|(_, o)| artifact::artifact_of(o)).collect();
        match sums.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(sum)] => artifact_sha = Some(sum.clone()),
            _ => {
                let each: Vec<String> = outs
                    .iter()
                    .map(|(h, o)| {
                        format!(
                            "`{h}`: {}",
                            artifact::artifact_of(o).unwrap_or_else(|| "none".into())
                        )
                    })
                    .collect();
                return Err(failed(
                    &ctx.name,
                    format!(
                        "the hosts downloaded different builds from {} ({}): the URL moved during the deploy",
                        src.url,
                        each.join(", ")
                    ),
                ));
            }
        }
        outs
    } else {
        // Shielded: a cancel waits for the checkout to end (dropping it would leave the remote
        // command running, and the release it names to resume half made, or not made yet).
        ctx.shield
            .run(ctx.phase(
                Phase::Build,
                "checkout",
                in_phase(
                    Phase::Checkout,
                    ctx.on_hosts("checkout", hosts, |_| checkout.clone()),
                ),
            ))
            .await?
    };
    let mut built = Built {
        artifact_sha,
        ..Built::default()
    };
    for (h, o) in &outs {
        if let Some(rels) = releases::embedded_releases(h, o) {
            built.releases.insert(h.clone(), rels);
        }
        if let Some(a) = crate::services::supervisor::embedded_answer(o) {
            built.confs.insert(h.clone(), a);
        }
    }
    // Step 2: settings, rendered on the controller for every host before anything is written
    // (a template error changes nothing), or copied from the current release (by the checkout).
    let render_all = always
        || outs
            .iter()
            .any(|(_, o)| !o.contains("HAS_CURRENT_SETTINGS"));
    let mut rendered = Vec::new();
    // Worked out once for every host (and only if one is rendered).
    let settings_renderer = settings::SettingsRenderer::new(env, opts.vault.as_ref());
    for (h, o) in &outs {
        let fresh = always || !o.contains("HAS_CURRENT_SETTINGS");
        if fresh || render_all {
            let files =
                settings_renderer
                    .render(h, Some(&ctx.name))
                    .map_err(|e| match e.kind() {
                        ErrorKind::Vault => e, // a resume that renders: nothing written, the vault's own hint
                        _ => failed_by(&ctx.name, e, str::to_owned),
                    })?;
            rendered.push((h.clone(), fresh, files));
        }
    }
    let component = opts.component;
    let user = ctx.user();
    let rel_dir = l.release(&ctx.name);
    let futs = rendered.into_iter().map(|(h, fresh, files)| {
        let (user, rel_dir) = (user.clone(), rel_dir.clone());
        async move {
            if !fresh {
                return Ok(());
            }
            let mut batch: Vec<FileWrite> = files
                .iter()
                .filter(|f| f.component == component)
                .map(|f| FileWrite {
                    path: format!("{rel_dir}/{}", f.relative_path),
                    contents: f.contents.as_bytes().to_vec(),
                    mode: Some(f.mode),
                })
                .collect();
            // The settings are in place: the marker goes with them, in the same write.
            batch.push(FileWrite {
                path: format!("{rel_dir}/{}", layout::markers::CONFIG),
                contents: Vec::new(),
                mode: Some(0o644),
            });
            ctx.t
                .write_files(
                    &h,
                    &batch,
                    &WriteOptions {
                        mode: None,
                        become_user: Some(user),
                    },
                )
                .await
        }
    });
    for r in in_phase(
        Phase::Settings,
        fanout::bounded(futs, fanout::DEFAULT_FORKS),
    )
    .await
    {
        r.map_err(|e| failed_by(&ctx.name, e, |m| format!("writing settings: {m}")))?;
    }
    // Step 3: the profile's steps that run before the switch, each behind its marker.
    let vars = steps::Vars::new(env, &l, &ctx.name, commit, previous, opts);
    let all = pipeline(ctx.env, opts);
    let before: Vec<&steps::Step> = all
        .iter()
        .filter(|s| !s.after_switch && (!opts.private || s.on == steps::Where::Build))
        .collect();
    run_steps(ctx, hosts, &before, &vars).await?;
    // Every host's copy tells by itself that every step before the switch is done: the switch
    // writes these markers (a private release, which is not switched, on its own).
    let mut marks: Vec<String> = before
        .iter()
        .filter(|s| s.marker)
        .map(|s| s.name.marker())
        .collect();
    marks.push(layout::markers::BUILD.to_owned());
    built.marks = format!(
        "touch {}",
        marks
            .iter()
            .map(|m| format!("{r}/{m}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(built)
}

/// Where formplayer's jar comes from: public.yml's `formplayer_build_url` and
/// `formplayer_build_sha256` as the first host sees them.
fn artifact_source(ctx: &Ctx<'_>, hosts: &[String], opts: &Options) -> Result<artifact::Source> {
    let vars = settings::SettingsRenderer::new(ctx.env, opts.vault.as_ref())
        .context(&hosts[0], None)
        .unwrap_or(serde_json::Value::Null);
    artifact::source(ctx.env, &vars)
}

/// One step of a deploy as `deploy --plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// The step's name (cchq's own: `lock`, `checkout`, `settings`, `switch`, `restart`, ...).
    pub name: String,
    /// What it does.
    pub description: String,
    /// Whether the profile declares it (else cchq's own).
    pub from_profile: bool,
    /// Where it runs, as written.
    pub on: String,
    /// The hosts it runs on (resolved now).
    pub hosts: Vec<String>,
    /// The command, rendered with this deploy's options (`<commit>` and `<release>` unknown yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The shell condition checked first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// After the restart instead of before the switch.
    pub after_switch: bool,
    /// Killed after this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// `abort` or `warn`.
    pub on_failure: steps::OnFailure,
}

/// The steps a deploy of `opts.component` would run, in order, with their hosts and commands
/// (`deploy --plan`). Nothing is contacted.
///
/// # Errors
/// As [`component_hosts`]; a step whose command does not render.
pub fn plan(env: &Environment, opts: &Options) -> Result<Vec<PlannedStep>> {
    let hosts = component_hosts(env, opts)?;
    if hosts.is_empty() {
        return Err(Error::pattern(format!(
            "no `{}` hosts to deploy to",
            opts.component
        )));
    }
    let layout = Layout::new(env, opts.component);
    let vars = steps::Vars::new(
        env,
        &layout,
        "<release>",
        "<commit>",
        Some("<previous commit>"),
        opts,
    );
    let own = |name: &str, description: &str, on: &str, hosts: Vec<String>, after_switch: bool| {
        PlannedStep {
            name: name.into(),
            description: description.into(),
            from_profile: false,
            on: on.into(),
            hosts,
            command: None,
            when: None,
            after_switch,
            timeout_secs: None,
            on_failure: steps::OnFailure::Abort,
        }
    };
    let lock_host = lock::host(env)?;
    let mut out = vec![
        own(
            "lock",
            "take the environment's deploy lock",
            "the lock host",
            vec![lock_host],
            false,
        ),
        own(
            "resolve",
            "resolve the revision to a commit, once, on this machine",
            "controller",
            Vec::new(),
            false,
        ),
        own(
            "checkout",
            "clone the commit into the release (a mirror as reference, submodules too)",
            "build",
            hosts.clone(),
            false,
        ),
        own(
            "settings",
            "render the settings (or copy the current ones)",
            "build",
            hosts.clone(),
            false,
        ),
    ];
    let all = pipeline(env, opts);
    if opts.component.deployable(env).code() == Code::Artifact {
        let vars = settings::SettingsRenderer::new(env, opts.vault.as_ref())
            .context(&hosts[0], None)
            .unwrap_or(serde_json::Value::Null);
        let src = artifact::source(env, &vars)?;
        out[2] = own(
            "download",
            &format!(
                "download formplayer.jar from {}, check its SHA-256",
                src.url
            ),
            "build",
            hosts.clone(),
            false,
        );
    }
    let planned = |s: &steps::Step| -> Result<PlannedStep> {
        let on_hosts = hosts_of_step(env, &hosts, &s.on, |_| ())?;
        Ok(PlannedStep {
            name: s.name.to_string(),
            description: s.description.clone(),
            from_profile: true,
            on: match &s.on {
                steps::Where::Build => "build".into(),
                steps::Where::Once => "once".into(),
                steps::Where::Hosts(p) => p.clone(),
            },
            hosts: on_hosts,
            command: Some(steps::render(s, &vars)?),
            when: steps::rendered(s, &vars)?.when,
            after_switch: s.after_switch,
            timeout_secs: s.timeout_secs,
            on_failure: s.on_failure,
        })
    };
    for s in all
        .iter()
        .filter(|s| !s.after_switch && (!opts.private || s.on == steps::Where::Build))
    {
        out.push(planned(s)?);
    }
    if opts.private {
        return Ok(out);
    }
    out.push(own(
        "switch",
        "move `current` to the release on every host at once (or none)",
        "build",
        hosts.clone(),
        false,
    ));
    out.push(own(
        "restart",
        "update the supervisor programs and restart (web workers rolling)",
        "build",
        hosts.clone(),
        true,
    ));
    for s in all.iter().filter(|s| s.after_switch) {
        out.push(planned(s)?);
    }
    out.push(own(
        "record",
        "write the deploy's record into the release",
        "build",
        hosts.clone(),
        true,
    ));
    out.push(own(
        "clean",
        "remove old releases (keeping current, dated ones and the newest)",
        "build",
        hosts,
        true,
    ));
    Ok(out)
}

/// The steps of this deploy's component ([`Deployable::steps`]): the profile's for the app,
/// none for formplayer (a jar).
fn pipeline(env: &Environment, opts: &Options) -> Vec<steps::Step> {
    opts.component.deployable(env).steps(env)
}

/// The hosts a step runs on, in `hosts` order.
fn step_hosts(ctx: &Ctx<'_>, hosts: &[String], on: &steps::Where) -> Result<Vec<String>> {
    hosts_of_step(ctx.env, hosts, on, |why| {
        ctx.events.emit(&Event::Warning {
            host: None,
            message: format!("{why}: the step(s) there do not run"),
        })
    })
}

/// The build hosts (`hosts`, in their order) a step on `on` runs on. As Ansible does with a
/// play's `hosts:` (it warns "could not match supplied host pattern, ignoring"), a pattern that
/// matches nothing runs nothing (`unmatched` hears why); a malformed one is an error.
fn hosts_of_step(
    env: &Environment,
    hosts: &[String],
    on: &steps::Where,
    unmatched: impl Fn(&str),
) -> Result<Vec<String>> {
    Ok(match on {
        steps::Where::Build => hosts.to_vec(),
        steps::Where::Once => vec![once_host(env, hosts)],
        steps::Where::Hosts(p) => {
            let sel = match env.inventory.select(p) {
                Ok(s) => s.hosts,
                Err(e)
                    if e.kind() == ErrorKind::Pattern
                        && e.message().ends_with("matches no hosts") =>
                {
                    unmatched(e.message());
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            hosts.iter().filter(|h| sel.contains(h)).cloned().collect()
        }
    })
}

/// The host of run-once steps: the first `django_manage` host built on, else the first host.
fn once_host(env: &Environment, hosts: &[String]) -> String {
    env.inventory
        .select("django_manage")
        .ok()
        .and_then(|s| s.hosts.into_iter().find(|h| hosts.contains(h)))
        .unwrap_or_else(|| hosts[0].clone())
}

/// Shell (ending in `;`) that clears the lock files a git process killed mid-update left in the
/// mirror `m` (quoted), which would fail every later fetch on that host ("cannot lock ref
/// 'HEAD': ... File exists"). A git process of this user still working in the mirror (a killed
/// deploy's fetch, which goes on on the host) is waited for, up to two minutes; its locks are
/// never removed while it runs. Without lock files it starts no process (the shell's globs look).
fn unlock_mirror(m: &str) -> String {
    format!(
        "locked=; for f in {m}/*.lock {m}/refs/*/*.lock {m}/refs/*/*/*.lock; do \
           if [ -f \"$f\" ]; then locked=1; fi; done; \
         if [ -n \"$locked\" ]; then \
           mirror_busy() {{ for p in $(pgrep -u \"$(id -u)\" -x git 2>/dev/null); do \
             [ /proc/$p/cwd -ef {m} ] && return 0; done; return 1; }}; \
           n=0; while mirror_busy && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done; \
           if ! mirror_busy; then find {m} -maxdepth 4 -name '*.lock' -type f -delete 2>/dev/null || true; \
             echo 'checkout: removed stale git locks from the mirror'; fi; fi;"
    )
}

/// Where the group of steps starting at `i` ends: the steps that run in one command per host.
/// A step joins the group when it says it needs only its own host's earlier steps
/// (`wait: host`: a `once` step too, on the `once` host, after that host's steps of the group),
/// or when it runs on the same hosts as every step of the group so far (so each of its hosts has
/// run every earlier step there is to wait for: steps run once after steps run once).
fn group_end(steps: &[(&steps::Step, String)], i: usize) -> usize {
    let mut j = i + 1;
    while j < steps.len() {
        let s = steps[j].0;
        let joins = s.wait == steps::Wait::Host || steps[i..j].iter().all(|(p, _)| p.on == s.on);
        if !joins {
            break;
        }
        j += 1;
    }
    j
}

/// Runs `list` in order; consecutive steps on the same hosts go in one command per host. A
/// step whose hosts are none does not run.
async fn run_steps(
    ctx: &Ctx<'_>,
    hosts: &[String],
    list: &[&steps::Step],
    vars: &steps::Vars,
) -> Result<()> {
    let owned = list
        .iter()
        .map(|s| steps::rendered(s, vars))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| failed_by(&ctx.name, e, str::to_owned))?;
    let rendered: Vec<(&steps::Step, String)> = owned.iter().map(|s| (s, s.run.clone())).collect();
    let mut i = 0;
    let rel = quote(&ctx.layout.release(&ctx.name));
    let cur = quote(&ctx.layout.current);
    while i < rendered.len() {
        let j = group_end(&rendered, i);
        let group = &rendered[i..j];
        i = j;
        // Each step's hosts; a host runs the steps of the group that are its own, in order.
        let mut on_step = Vec::with_capacity(group.len());
        for (s, _) in group {
            on_step.push(step_hosts(ctx, hosts, &s.on)?);
        }
        let targets: Vec<String> = hosts
            .iter()
            .filter(|h| on_step.iter().any(|t| t.contains(h)))
            .cloned()
            .collect();
        if targets.is_empty() {
            continue;
        }
        let names: Vec<&str> = group.iter().map(|(s, _)| s.name.as_str()).collect();
        let label = names.join(", ");
        // The release `current` points to (the previous one, before the switch): where steps
        // with `reuse` take their outputs from when their inputs did not change.
        let script_for = |h: &str| {
            let mine: Vec<(&steps::Step, String)> = group
                .iter()
                .zip(&on_step)
                .filter(|(_, t)| t.iter().any(|x| x == h))
                .map(|((s, cmd), _)| (*s, cmd.clone()))
                .collect();
            format!(
                "cd {rel}; export cchq_previous=\"$(readlink -f {cur} 2>/dev/null || true)\"; {}",
                steps::script(&mine)
            )
        };
        // A group's phase is the build, or, when it starts with a step run once (migrate and
        // what joins it), that step.
        let phase_name = if group.len() == 1 || group[0].0.on == steps::Where::Once {
            names[0]
        } else {
            Phase::Build.as_str()
        };
        let trips = if group.len() == 1 {
            phase_name
        } else {
            Phase::Steps.as_str()
        };
        let r = ctx
            .phase(
                phase_name,
                &label,
                in_phase(
                    trips,
                    ctx.on_hosts_as(&label, &targets, |h| {
                        RemoteCommand::shell(script_for(h)).become_user(ctx.user())
                    }),
                ),
            )
            .await;
        match r {
            Ok(outs) => {
                for (h, o) in outs {
                    for w in steps::warned_steps(&o) {
                        ctx.events.emit(&Event::Warning {
                            host: Some(h.clone()),
                            message: format!("step {w} failed (on_failure: warn)"),
                        });
                    }
                }
            }
            Err(e) => {
                let failed: Vec<&steps::Step> = group
                    .iter()
                    .filter(|(s, _)| e.message().contains(&format!(" in step `{}`", s.name)))
                    .map(|(s, _)| *s)
                    .collect();
                // The hints of the steps that failed, before the resume's.
                let mut hints: Vec<String> = failed.iter().filter_map(|s| s.hint.clone()).collect();
                hints.extend(e.hint().map(str::to_owned));
                let e = if hints.is_empty() {
                    e
                } else {
                    e.with_hint(hints.join("; "))
                };
                // A group's one failed step is what failed, as a step run alone would be: its
                // phase and its step (the events name the group).
                return Err(match failed.as_slice() {
                    [one] if group.len() > 1 => {
                        let name = one.name.as_str().to_owned();
                        e.with_failure(Some(name.clone()), Some(name), Vec::new())
                    }
                    _ => e,
                });
            }
        }
    }
    Ok(())
}

/// Where `current` points on a host, as the switch script and [`read_current`] print it.
fn current_of(stdout: &str, key: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).map(str::to_owned))
}

/// Reads where `current` points on `host` (after a lost connection: the transport connects
/// again). `Ok(target)` (empty when there is none), or why it could not be read.
async fn read_current(ctx: &Ctx<'_>, host: &str) -> std::result::Result<String, String> {
    let script = format!(
        "echo \"NOW=$(readlink {c} 2>/dev/null || true)\"",
        c = quote(&ctx.layout.current)
    );
    let cmd = RemoteCommand::shell_as(ctx.user(), script);
    match ctx.t.exec(host, &cmd).await {
        Ok(o) if o.success() => {
            current_of(&o.stdout_str(), "NOW=").ok_or_else(|| "no answer".to_owned())
        }
        Ok(o) => Err(o.stderr_str().trim().to_owned()),
        Err(e) => Err(e.message().to_owned()),
    }
}

/// Switches `current` to the release on every host: all or nothing, in fact and not only in the
/// report.
///
/// Each host's script stops at the first failing command (no `&&` lists, which `set -e` lets
/// through), then reads `current` back and fails unless it resolves to the new release. The
/// previous target is kept beside the release (`.cchq-prev-current`) before the switch, so that
/// a host whose connection dropped mid-switch can be read again and put back. When a host's state
/// cannot be read at all, the deploy stops with the lock kept, naming the host: `--resume`
/// then finishes or reverts.
///
/// `marks` (from [`build`]): the markers of a release just built, written first, on a host where
/// its checkout and settings are done (instead of requiring [`layout::markers::BUILD`]).
///
/// Returns where `current` pointed on each host before (empty where there was none).
async fn switch(
    ctx: &Ctx<'_>,
    hosts: &[String],
    marks: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let l = ctx.layout.clone();
    let rel = l.release(&ctx.name);
    let complete = match marks {
        Some(m) => format!(
            "[ -f {r}/{c} ] && [ -f {r}/{s} ] || {{ echo 'release {n} is not built here' >&2; exit 3; }}; {m}",
            r = quote(&rel),
            c = layout::markers::CHECKOUT,
            s = layout::markers::CONFIG,
            n = ctx.name,
        ),
        None => format!(
            "[ -f {r}/.build-complete ] || {{ echo 'release {n} is not complete here' >&2; exit 3; }}",
            r = quote(&rel),
            n = ctx.name
        ),
    };
    let script = format!(
        "set -e; {complete}; \
         prev=$(readlink {c} 2>/dev/null || true); printf '%s\\n' \"$prev\" > {r}/.cchq-prev-current; \
         rm -f {c}.cchq-new; ln -s {r} {c}.cchq-new; mv -T {c}.cchq-new {c}; \
         now=$(readlink {c} 2>/dev/null || true); echo \"PREV=$prev\"; echo \"NOW=$now\"; \
         if [ \"$now\" != {r} ] || [ ! -f {c}/.build-complete ]; then echo \"current points at '$now', not at the new release\" >&2; exit 4; fi",
        r = quote(&rel),
        c = quote(&l.current),
    );
    ctx.events.emit(&Event::Phase {
        phase: Phase::Switch.into(),
        ok: None,
        duration_ms: None,
        detail: ctx.name.clone(),
    });
    let start = Instant::now();
    let cmd = RemoteCommand::shell_as(ctx.user(), script);
    let results =
        fanout::for_each_host(hosts, fanout::DEFAULT_FORKS, |h| ctx.t.exec(h, &cmd)).await;
    let mut switched: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut unknown = Vec::new();
    for (h, r) in results {
        match r {
            Ok(o) if o.success() => {
                switched.push((h, current_of(&o.stdout_str(), "PREV=").unwrap_or_default()))
            }
            Ok(o) => {
                let out = o.stdout_str();
                // The link moved but does not resolve to the release (or moved, then failed):
                // it is put back like a switched host.
                if let (Some(prev), Some(now)) =
                    (current_of(&out, "PREV="), current_of(&out, "NOW="))
                    && now != prev
                {
                    switched.push((h.clone(), prev));
                }
                failures.push(format!("`{h}`: {}", o.stderr_str().trim()));
            }
            Err(e) => {
                // The connection dropped: the remote `mv` may have run. Read the state again.
                match read_current(ctx, &h).await {
                    Ok(now) if now == rel => {
                        let prev = ctx
                            .t
                            .read_file(
                                &h,
                                &format!("{rel}/.cchq-prev-current"),
                                &crate::transport::ReadOptions {
                                    become_user: Some(ctx.user()),
                                },
                            )
                            .await
                            .ok()
                            .flatten()
                            .map(|b| String::from_utf8_lossy(&b).trim().to_owned());
                        match prev {
                            Some(prev) => switched.push((h.clone(), prev)),
                            None => unknown.push(format!(
                                "`{h}` (on the new release; its previous release is unknown)"
                            )),
                        }
                        failures.push(format!("`{h}`: {} (the switch had happened)", e.message()));
                    }
                    Ok(_) => failures.push(format!("`{h}`: {}", e.message())),
                    Err(why) => {
                        unknown.push(format!("`{h}` ({why})"));
                        failures.push(format!("`{h}`: {}", e.message()));
                    }
                }
            }
        }
    }
    if failures.is_empty() {
        ctx.events.emit(&Event::Phase {
            phase: Phase::Switch.into(),
            ok: Some(true),
            duration_ms: Some(ms(start.elapsed())),
            detail: ctx.name.clone(),
        });
        ctx.push_timing(Phase::Switch.as_str(), ms(start.elapsed()));
        return Ok(switched);
    }
    // Compensate: the hosts that switched go back, so no host stays on a different release.
    let back = switched.iter().map(|(h, prev)| {
        let script = if prev.is_empty() {
            format!("set -e; rm -f {c}", c = quote(&l.current))
        } else {
            format!(
                "set -e; rm -f {c}.cchq-new; ln -s {p} {c}.cchq-new; mv -T {c}.cchq-new {c}; [ \"$(readlink {c})\" = {p} ]",
                p = quote(prev),
                c = quote(&l.current)
            )
        };
        let cmd = RemoteCommand::shell_as(ctx.user(), script);
        async move { (h.clone(), ctx.t.exec(h, &cmd).await.and_then(|o| o.check(h, &cmd))) }
    });
    let mut not_back = Vec::new();
    for (h, r) in fanout::bounded(back, fanout::DEFAULT_FORKS).await {
        if let Err(e) = r {
            not_back.push(format!("`{h}` ({})", e.message()));
        }
    }
    ctx.events.emit(&Event::Phase {
        phase: Phase::Switch.into(),
        ok: Some(false),
        duration_ms: Some(ms(start.elapsed())),
        detail: ctx.name.clone(),
    });
    let mut msg = format!(
        "switching to `{}` failed on {}; the {} host(s) that had switched went back",
        ctx.name,
        failures.join(", "),
        switched.len() - not_back.len()
    );
    if !not_back.is_empty() {
        msg.push_str(&format!(
            "; NOT back: {} — those run the new release",
            not_back.join(", ")
        ));
    }
    if !unknown.is_empty() || !not_back.is_empty() {
        ctx.keep_lock
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if !unknown.is_empty() {
            msg.push_str(&format!(
                "; the state of {} could not be read",
                unknown.join(", ")
            ));
        }
        msg.push_str("; hosts may be split between releases, so the deploy lock is kept");
        return Err(Error::new(ErrorKind::DeployFailed, msg).with_hint(format!(
            "once the host(s) answer, `deploy --resume {n}` finishes the switch (or `rollback` goes back); `list-releases` shows where each host is",
            n = ctx.name
        )));
    }
    Err(failed(&ctx.name, msg))
}

/// `probed`: the supervisor program files as the checkout read them (the others are read now).
async fn restart(
    ctx: &Ctx<'_>,
    hosts: &[String],
    opts: &Options,
    probed: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let env = ctx.env;
    // Program files follow app-processes.yml; `update` picks up added or removed programs.
    let upd = crate::services::supervisor::update_confs_probed(env, ctx.t, hosts, probed);
    let results = ctx
        .phase(Phase::Supervisor, "program files", upd)
        .await
        .map_err(|e| failed_by(&ctx.name, e, str::to_owned))?;
    let bad: Vec<String> = results
        .iter()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("`{h}`: {}", e.message())))
        .collect();
    if !bad.is_empty() {
        return Err(failed(
            &ctx.name,
            format!(
                "updating supervisor program files failed: {}",
                bad.join("; ")
            ),
        ));
    }
    // Each component has its service (`cchq <env> service formplayer`).
    let app = opts.component.deployable(env);
    let service = app.service();
    let limit = hosts.join(",");
    let req = services::Request {
        services: vec![service.into()],
        only: Vec::new(),
        limit: Some(limit),
    };
    let (plans, _) = services::plan(env, &req, Action::Restart)?;
    let plans = app.restart_plans(plans);
    // The phase fails (its event says so) when any program did not restart.
    ctx.phase(Phase::Restart, service, async {
        let report = services::execute_guarded(
            ctx.t,
            &plans,
            Action::Restart,
            &opts.rolling,
            ctx.events,
            &opts.restart_guard,
        )
        .await;
        if report.ok() {
            return Ok(());
        }
        let bad: Vec<String> = report
            .rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| {
                if r.detail.is_empty() {
                    format!("{} {} {}", r.host, r.program, r.state)
                } else {
                    format!("{} {} {} ({})", r.host, r.program, r.state, r.detail)
                }
            })
            .chain(
                report
                    .unreachable
                    .iter()
                    .map(|(h, _)| format!("{h} unreachable")),
            )
            .collect();
        Err(failed(
            &ctx.name,
            format!("services did not all restart: {}", bad.join(", ")),
        ))
    })
    .await
}

/// The newest release complete on every host of `hosts` that is older than `than`.
async fn previous_complete(
    ctx: &Ctx<'_>,
    hosts: &[String],
    component: Component,
    than: &str,
) -> Option<String> {
    let rels = releases::list(ctx.env, ctx.t, hosts, component)
        .await
        .ok()?;
    let names: BTreeSet<&str> = rels
        .iter()
        .filter(|r| r.complete && r.name.as_str() < than)
        .map(|r| r.name.as_str())
        .collect();
    names
        .into_iter()
        .rev()
        .find(|n| releases::complete_everywhere(&rels, hosts, n))
        .map(str::to_owned)
}

/// `--rollback-on-failure`: the new release was switched to on every host but did not start
/// (`failure`): switch back to the release that was live before (`before`, as the switch read it;
/// the newest older complete release when a resume switched from the new release itself), the
/// same all-or-nothing way, and restart it. Returns the deploy's error, saying what failed and
/// what is live now, with `failure` as its cause.
async fn roll_back_failed_start(
    ctx: &Ctx<'_>,
    hosts: &[String],
    opts: &Options,
    before: &[(String, String)],
    failure: Error,
) -> Error {
    let new = &ctx.name;
    let releases_dir = format!("{}/", ctx.layout.releases.trim_end_matches('/'));
    let prevs: BTreeSet<Option<&str>> = before
        .iter()
        .map(|(_, p)| {
            p.strip_prefix(&releases_dir)
                .filter(|n| valid_release_name(n))
        })
        .collect();
    let target = match prevs.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(p)] if p != new => Some((*p).to_owned()),
        _ => previous_complete(ctx, hosts, opts.component, new).await,
    };
    let what = format!("release `{new}` failed to start: {}", failure.message());
    let failed = |message: String| failure.wrap(ErrorKind::DeployFailed, |_| message);
    let Some(target) = target else {
        return failed(format!(
            "{what}; it stays live: there is no previous complete release to roll back to"
        ))
        .with_hint(format!(
            "fix the cause, then deploy again or `deploy --resume {new}`"
        ));
    };
    let detail = format!("{new} -> {target}");
    ctx.events.emit(&Event::Phase {
        phase: Phase::Rollback.into(),
        ok: None,
        duration_ms: None,
        detail: detail.clone(),
    });
    let start = Instant::now();
    let back = Ctx {
        env: ctx.env,
        t: ctx.t,
        events: ctx.events,
        layout: ctx.layout.clone(),
        name: target.clone(),
        secrets: ctx.secrets.clone(),
        timings: std::sync::Mutex::new(Vec::new()),
        keep_lock: std::sync::atomic::AtomicBool::new(false),
        shield: Shield::default(),
    };
    let switched = ctx.shield.run(switch(&back, hosts, None)).await;
    if back.keep_lock.load(std::sync::atomic::Ordering::SeqCst) {
        ctx.keep_lock
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // Err: the switch back failed; Ok(r): switched back, `r` the restart of the old release.
    let back_result = match switched {
        Ok(_) => {
            // The failed release is marked on every host: not complete, so that neither a
            // rollback nor keep's count takes it for a good one (a resume that finishes clears it
            // by its record).
            let mark = format!(
                "touch {}/{}",
                quote(&ctx.layout.release(new)),
                layout::markers::START_FAILED
            );
            if let Err(e) = ctx.on_hosts("mark-failed", hosts, |_| mark.clone()).await {
                ctx.events.emit(&Event::Warning {
                    host: None,
                    message: format!(
                        "could not mark release `{new}` as failed to start: {}",
                        e.message()
                    ),
                });
            }
            Ok(restart(&back, hosts, opts, &std::collections::BTreeMap::new()).await)
        }
        Err(e) => Err(e),
    };
    let ok = matches!(back_result, Ok(Ok(())));
    ctx.events.emit(&Event::Phase {
        phase: Phase::Rollback.into(),
        ok: Some(ok),
        duration_ms: Some(ms(start.elapsed())),
        detail,
    });
    ctx.push_timing(Phase::Rollback.as_str(), ms(start.elapsed()));
    let n = hosts.len();
    let service = opts.component.deployable(ctx.env).service();
    match back_result {
        Ok(Ok(())) => failed(format!("{what}; rolled back: release `{target}` is live again on {n} host(s) and restarted")).with_hint(
            format!("fix the cause and deploy a new release (`deploy --resume {new}` would switch to the failed release again)"),
        ),
        Ok(Err(r)) => failed(format!(
            "{what}; rolled back: release `{target}` is live again on {n} host(s), but it did not start either: {}",
            r.message()
        ))
        .with_hint(format!("`cchq {} service {service} status` shows what runs; fix the cause and deploy again", ctx.env.name)),
        Err(s) => failed(format!("{what}; rolling back to `{target}` failed: {}", s.message()))
            .with_hint(s.hint().map_or_else(|| format!("`cchq {} rollback --to {target}` retries it", ctx.env.name), str::to_owned)),
    }
}

/// Appends `record` to the operator's deploy history (`$XDG_STATE_HOME/cchq/<env>/deploys.jsonl`),
/// on a blocking thread (file I/O); a failure is ignored.
async fn append_history(env: &Environment, record: serde_json::Value) {
    let name = env.name.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
            });
        if let Some(dir) = base.map(|b| b.join("cchq").join(&name)) {
            let _ = std::fs::create_dir_all(&dir);
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("deploys.jsonl"))
            {
                use std::io::Write as _;
                let _ = writeln!(f, "{record}");
            }
        }
    })
    .await;
}

/// What `preindex-views` started.
#[derive(Debug, Clone, Serialize)]
pub struct Preindex {
    /// The private release built for it (kept a day).
    pub outcome: Outcome,
    /// Where `preindex_everything` runs.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its output, on the host.
    pub log: String,
}

/// `preindex-views`: builds a private release of `opts.rev` on the first `django_manage` host
/// (not switched, kept a day) and starts `manage.py preindex_everything` in it in the background,
/// so that the views and indices are up to date by the time the deploy of that revision runs
/// (`django-manage --release <name> preindex_everything --check` prints nothing while it runs).
///
/// # Errors
/// As [`deploy`]; a preindex that could not be started.
pub async fn preindex_views(
    env: &Environment,
    t: &dyn Transport,
    opts: &Options,
    events: &dyn EventSink,
) -> Result<Preindex> {
    let o = Options {
        component: Component::Commcare,
        private: true,
        limit: None,
        skip_record: true,
        keep_days: opts.keep_days.or(Some(1)),
        // Not a deploy of the site: nobody needs a deploy notice for it.
        notify: false,
        ..opts.clone()
    };
    let outcome = deploy(env, t, &o, events).await?;
    let host = outcome
        .hosts
        .first()
        .cloned()
        .ok_or_else(|| Error::pattern("no `django_manage` host to preindex on"))?;
    let rel = Layout::new(env, Component::Commcare).release(&outcome.release);
    let log = format!("{rel}/preindex.log");
    let script = format!(
        "cd {r} && nohup python_env/bin/python manage.py preindex_everything >{l} 2>&1 </dev/null & echo $!",
        r = quote(&rel),
        l = quote(&log)
    );
    let cmd = RemoteCommand::shell(script).become_user(env.profile.app_user.clone());
    let out = t.exec(&host, &cmd).await?.check(&host, &cmd)?;
    let pid = out.stdout_str().trim().parse().map_err(|_| {
        Error::new(
            ErrorKind::CommandFailed,
            format!(
                "preindex_everything did not start on `{host}`: {}",
                out.stdout_str().trim()
            ),
        )
    })?;
    events.emit(&Event::Warning {
        host: Some(host.clone()),
        message: format!(
            "preindex_everything running in the background in release `{}` (pid {pid}, log {log})",
            outcome.release
        ),
    });
    Ok(Preindex {
        outcome,
        host,
        pid,
        log,
    })
}

/// Switches back to an earlier complete release (the newest complete one older than current
/// when `to` is `None`) and restarts: a deploy resumed from that release.
pub async fn rollback(
    env: &Environment,
    t: &dyn Transport,
    to: Option<&str>,
    opts: &Options,
    events: &dyn EventSink,
) -> Result<Outcome> {
    crate::validate::require_valid(env, "rollback")?;
    let hosts = component_hosts(env, opts)?;
    let rels = releases::list(env, t, &hosts, opts.component).await?;
    let complete_everywhere = |name: &str| releases::complete_everywhere(&rels, &hosts, name);
    let mut names: Vec<String> = rels
        .iter()
        .filter(|r| r.complete)
        .map(|r| r.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.retain(|n| complete_everywhere(n));
    let current: Option<String> = rels.iter().find(|r| r.current).map(|r| r.name.clone());
    let target = match to {
        Some(n) => {
            if !complete_everywhere(n) {
                return Err(Error::not_found(format!(
                    "release `{n}` is not complete on every host"
                ))
                .with_hint(format!(
                    "complete releases: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            n.to_owned()
        }
        None => names
            .iter()
            .rev()
            .find(|n| current.as_ref().is_some_and(|c| n.as_str() < c.as_str()))
            .cloned()
            .ok_or_else(|| {
                Error::not_found("no complete release older than the current one to roll back to")
                    .with_hint("`list-releases` shows them")
            })?,
    };
    let o = Options {
        resume: Some(target),
        skip_record: true,
        ..opts.clone()
    };
    deploy(env, t, &o, events).await
}

#[cfg(test)]
mod tests;
