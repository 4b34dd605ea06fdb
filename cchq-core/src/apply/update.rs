//! `update-config` as one operation, shared by the command line and the Python bindings: which
//! hosts ([`update_hosts`]), what the drift guard allows ([`Plan::decide`]), and, for callers
//! that do not ask anyone, plan -> decide -> apply in one call ([`update`]) with a report that
//! holds only masked text ([`UpdateReport`]).
//!
//! The command line uses the parts ([`update_hosts`], [`plan`], [`Plan::decide`], [`apply`]) so
//! that it can show the diffs and ask before anything is written.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;

use super::{Drift, HostApplied, Masker, Plan, apply, plan};
use crate::Value;
use crate::component::Component;
use crate::drift::drift_error;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventSink};
use crate::settings;
use crate::transport::Transport;

/// The hosts `update-config` works on: every host that gets settings files (web app and
/// formplayer hosts), within `limit` (a host pattern) when given, in inventory order. The
/// pattern's warnings (parts that match nothing) go to `on_warning`, also when this fails.
///
/// # Errors
/// [`ErrorKind::Pattern`] for a bad pattern, or when no host is left; `Config` when the
/// environment does not validate ([`crate::validate::require_valid`]: settings read from a part
/// of it, e.g. the pillows and heartbeat thresholds of `app-processes.yml`, would be wrong).
pub fn update_hosts(
    env: &Environment,
    limit: Option<&str>,
    on_warning: &mut dyn FnMut(&str),
) -> Result<Vec<String>> {
    crate::validate::require_valid(env, "update-config")?;
    let mut hosts = settings::settings_hosts(env);
    if let Some(limit) = limit {
        let sel = env
            .inventory
            .select(limit)
            .map_err(|e| e.context(format!("environment `{}`", env.name)))?;
        for w in &sel.warnings {
            on_warning(w);
        }
        let chosen: BTreeSet<String> = sel.hosts.into_iter().collect();
        hosts.retain(|h| chosen.contains(h));
    }
    if hosts.is_empty() {
        return Err(Error::pattern(format!(
            "no host of `{}` gets settings files{}",
            env.name,
            limit.map_or_else(String::new, |l| format!(" within `{l}`"))
        ))
        .with_hint("settings go to the hosts of webworkers, celery, pillowtop, proxy, django_manage and formplayer"));
    }
    Ok(hosts)
}

/// What may be written for a [`Plan`], as the drift guard decided ([`Plan::decide`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The hosts where files change, in plan order.
    pub changed: Vec<String>,
    /// The hosts with nothing to write whose record of what was applied is out of date (it is
    /// rewritten), in plan order.
    pub refresh: Vec<String>,
    /// The blocking findings that `force` overrode (empty unless forced).
    pub forced: Vec<Drift>,
}

impl Decision {
    /// The hosts to hand to [`apply`]: the changed ones, then the ones to refresh.
    pub fn targets(&self) -> Vec<String> {
        self.changed.iter().chain(&self.refresh).cloned().collect()
    }
}

impl Plan {
    /// The drift guard: the settings of a host that would change are not overwritten when they
    /// were applied from an environment commit the operator's checkout does not contain, or were
    /// edited by hand since, unless `force`. Hosts that would not change are never stopped.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] ([`drift_error`]) naming every blocking finding, unless `force`.
    pub fn decide(&self, env: &Environment, force: bool) -> Result<Decision> {
        let blocked: Vec<&Drift> = self
            .hosts
            .iter()
            .filter(|h| h.blocked())
            .flat_map(|h| h.drift.iter().filter(|d| d.blocking))
            .collect();
        if !blocked.is_empty() && !force {
            return Err(drift_error(env, &blocked));
        }
        let refresh = self
            .hosts
            .iter()
            .filter(|h| {
                !h.changed()
                    && !h.drift.iter().any(|d| d.blocking)
                    && !h.record_current(self.checkout.as_ref())
            })
            .map(|h| h.host.clone())
            .collect();
        Ok(Decision {
            changed: self.changed_hosts(),
            refresh,
            forced: blocked.into_iter().cloned().collect(),
        })
    }
}

/// How [`update`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Only compare: write nothing.
    pub check: bool,
    /// Overwrite settings the drift guard would keep.
    pub force: bool,
}

/// One settings file of one host in an [`UpdateReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// Where it goes on the host.
    pub path: String,
    /// The component it configures (`commcare`, `formplayer`).
    pub component: Component,
    /// Whether the host's file differs from the rendered one.
    pub changed: bool,
    /// Whether the host has no such file yet.
    pub new: bool,
    /// The unified diff, secrets masked (empty when unchanged).
    pub diff: String,
    /// How the path was chosen, when it is worth saying (the formplayer fallback).
    pub note: Option<String>,
}

/// One host in an [`UpdateReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The host.
    pub host: String,
    /// Its settings files.
    pub files: Vec<FileReport>,
    /// What the drift guard found on it.
    pub drift: Vec<Drift>,
    /// The paths written (none with `check`).
    pub written: Vec<String>,
    /// Whether its record of what was applied was (re)written.
    pub recorded: bool,
    /// Why writing to it failed (secrets masked), else `None`.
    pub error: Option<String>,
    /// Whether it failed because it could not be reached.
    pub unreachable: bool,
}

/// What [`update`] compared and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateReport {
    /// Whether it only compared.
    pub check: bool,
    /// How many files differ from the environment (before anything was written).
    pub changed_files: usize,
    /// Whether blocking drift was overridden (`force`).
    pub forced: bool,
    /// One entry per host, in the order asked.
    pub hosts: Vec<HostReport>,
    /// Whether every host that was to be written to was.
    pub ok: bool,
}

impl UpdateReport {
    /// The comparison part of a report: every file with its masked diff, every drift finding.
    pub fn of_plan(plan: &Plan, check: bool) -> Self {
        let hosts = plan
            .hosts
            .iter()
            .map(|h| HostReport {
                host: h.host.clone(),
                files: h
                    .files
                    .iter()
                    .map(|f| FileReport {
                        path: f.path.clone(),
                        component: f.file.component,
                        changed: f.changed(),
                        new: f.current.is_none(),
                        diff: plan.diff(&h.host, f),
                        note: f.note.clone(),
                    })
                    .collect(),
                drift: h.drift.clone(),
                written: Vec::new(),
                recorded: false,
                error: None,
                unreachable: false,
            })
            .collect();
        Self {
            check,
            changed_files: plan.changed_files(),
            forced: false,
            hosts,
            ok: true,
        }
    }

    /// Adds what [`apply`] did, its errors masked with `masker`.
    pub fn add_applied(&mut self, results: Vec<(String, Result<HostApplied>)>, masker: &Masker) {
        for (host, r) in results {
            let Some(entry) = self.hosts.iter_mut().find(|h| h.host == host) else {
                continue;
            };
            match r {
                Ok(a) => {
                    entry.written = a.written;
                    entry.recorded = a.recorded;
                }
                Err(e) => {
                    entry.error = Some(masker.mask(e.message()));
                    entry.unreachable = e.kind() == ErrorKind::Connection;
                    self.ok = false;
                }
            }
        }
    }
}

impl UpdateReport {
    /// Adds the hosts that could not be reached, keeping the order of `hosts`.
    fn add_unreachable(
        &mut self,
        hosts: &[String],
        unreachable: &[(String, Error)],
        masker: &Masker,
    ) {
        if unreachable.is_empty() {
            return;
        }
        for (h, e) in unreachable {
            self.hosts.push(HostReport {
                host: h.clone(),
                files: Vec::new(),
                drift: Vec::new(),
                written: Vec::new(),
                recorded: false,
                error: Some(masker.mask(e.message())),
                unreachable: true,
            });
        }
        self.hosts.sort_by_key(|r| {
            hosts
                .iter()
                .position(|h| *h == r.host)
                .unwrap_or(usize::MAX)
        });
        self.ok = false;
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn phase<T>(
    events: &dyn EventSink,
    name: &str,
    detail: &str,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    events.emit(&Event::Phase {
        phase: name.into(),
        ok: None,
        duration_ms: None,
        detail: detail.into(),
    });
    let start = Instant::now();
    let r = f.await;
    events.emit(&Event::Phase {
        phase: name.into(),
        ok: Some(r.is_ok()),
        duration_ms: Some(millis(start)),
        detail: detail.into(),
    });
    r
}

/// `update-config` without asking: renders and compares the settings of `hosts` ([`plan`]);
/// with `check`, stops there; else applies the drift guard ([`Plan::decide`]) and writes the
/// changed files and out-of-date records ([`apply`]).
///
/// Events: phases `plan` and `apply` (`apply` only when something is written), and a
/// [`Event::Warning`] for each drift finding that does not stop the change (with `check`: every
/// finding). Every text in the report and in the error is masked.
///
/// # Errors
/// Those of [`plan`] (a template error, an unreachable host: nothing is written anywhere) and of
/// [`Plan::decide`] (the drift guard). A host that cannot be reached (a first `true` on every
/// host finds out) or fails while writing is in the report instead (`unreachable`, `error`;
/// `ok` false); the others are planned and written as usual.
pub async fn update(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
    vault: Option<&Value>,
    opts: UpdateOptions,
    events: &dyn EventSink,
) -> Result<UpdateReport> {
    let masker = Masker::new(vault);
    // Hosts that cannot be reached are results, not the end of the whole update.
    let probe = crate::RemoteCommand::shell("true");
    let reached = crate::fanout::for_each_host(hosts, crate::fanout::DEFAULT_FORKS, |h| {
        transport.exec(h, &probe)
    })
    .await;
    let mut live = Vec::new();
    let mut unreachable = Vec::new();
    for (h, r) in reached {
        match r {
            Err(e) if e.kind() == ErrorKind::Connection => unreachable.push((h, e)),
            _ => live.push(h),
        }
    }
    for (h, e) in &unreachable {
        events.emit(&Event::Warning {
            host: Some(h.clone()),
            message: format!("unreachable: {}", masker.mask(e.message())),
        });
    }
    let work = async {
        let plan = phase(
            events,
            "plan",
            &format!("{} host(s)", live.len()),
            plan(env, transport, &live, vault),
        )
        .await?;
        let mut report = UpdateReport::of_plan(&plan, opts.check);
        report.add_unreachable(hosts, &unreachable, &masker);
        let warn = |d: &Drift| {
            events.emit(&Event::Warning {
                host: Some(d.host.clone()),
                message: d.message.clone(),
            })
        };
        for d in plan.hosts.iter().flat_map(|h| &h.drift) {
            if opts.check || !d.blocking || opts.force {
                warn(d);
            }
        }
        if opts.check {
            return Ok(report);
        }
        let decision = plan.decide(env, opts.force)?;
        report.forced = !decision.forced.is_empty();
        let targets = decision.targets();
        if !targets.is_empty() {
            let detail = format!("{} host(s)", targets.len());
            events.emit(&Event::Phase {
                phase: "apply".into(),
                ok: None,
                duration_ms: None,
                detail: detail.clone(),
            });
            let start = Instant::now();
            let results = apply(env, transport, &plan, &targets).await;
            report.add_applied(results, &plan.masker);
            events.emit(&Event::Phase {
                phase: "apply".into(),
                ok: Some(report.ok),
                duration_ms: Some(millis(start)),
                detail,
            });
        }
        Ok(report)
    };
    work.await.map_err(|e: Error| masker.mask_error(&e))
}
