//! `cchq <env> update-config`: render the settings files of every host, show what would change
//! (secrets masked), and write them into the live release, guarded against drift.

use cchq_core::apply::{self, Plan};
use cchq_core::environment::Vault;
use cchq_core::redact::Masker;
use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::transport::Transport;
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime};
use crate::render;

/// Help shown after the options of `update-config`.
pub const AFTER_HELP: &str = "\
Renders localsettings.py (web app hosts: webworkers, celery, pillowtop, proxy, django_manage) into
<www_root>/<deploy_env>/current/ and application.properties (formplayer hosts) into
<www_root>/<deploy_env>/formplayer_build/current/ — or, when that does not exist on a host, into
<www_root>/<deploy_env>/current/formplayer/ (apps that ship formplayer in their own release).
Shows a unified diff per host and file with no secret in it: the new side is rendered with every
vault value replaced (shown as ********); of the host's file, only public lines are shown, others
by their key only (an old or removed secret, a hand edit: `KEY = '********'`). Then asks, writes
each changed file atomically as the app user, keeping its mode (0600 for a new file), and records
what was applied in <www_root>/<deploy_env>/.cchq-applied.json on the host.

Drift guard: when a host's settings were applied from an environment commit that your checkout
does not contain (a newer or diverged copy), or were edited by hand since, update-config stops
and says who applied what and when; update the environment checkout, then run it again, or pass
--force to overwrite. Nothing is written anywhere when any host fails to render or to answer.

Running services keep the old settings until restarted: update-config says which to restart,
or restarts them (`service commcare restart` on the changed hosts) with --restart.

Exit codes: 0 done (with --check: no differences); 1 with --check: differences found, or a
host failed to write; 3 the drift guard stopped (or a template failed); 5 a host is unreachable.

Examples:
  cchq prod update-config --check
  cchq prod update-config --limit formplayer --yes --restart";

/// `update-config`.
#[derive(Debug, clap::Args)]
pub struct UpdateConfigArgs {
    /// Only these hosts (a host pattern); `formplayer` means the formplayer hosts
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// Show the differences only; change nothing (exit code 1 when there are differences)
    #[arg(long, conflicts_with_all = ["yes", "restart", "force"])]
    pub check: bool,
    /// Apply without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Restart the app services on the hosts that changed
    #[arg(long)]
    pub restart: bool,
    /// Overwrite settings the drift guard would keep (applied from a newer environment, or edited by hand)
    #[arg(long)]
    pub force: bool,
}

pub fn run(env: &Environment, args: &UpdateConfigArgs) -> Result<ExitStatus, Error> {
    let hosts = apply::update_hosts(env, args.limit.as_deref(), &mut |w| render::warning(w))?;
    let vault = match &env.vault {
        Vault::Missing => None,
        _ => Some(super::vault_value(env)?),
    };
    let masker = Masker::new(vault.as_ref());
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let result = work(env, args, &hosts, vault.as_ref(), transport.as_ref(), &rt);
    let _ = rt.block_on(transport.close());
    result.map_err(|e| masker.mask_error(&e))
}

fn work(
    env: &Environment,
    args: &UpdateConfigArgs,
    hosts: &[String],
    vault: Option<&cchq_core::Value>,
    transport: &dyn Transport,
    rt: &tokio::runtime::Runtime,
) -> Result<ExitStatus, Error> {
    let plan = rt.block_on(apply::plan(env, transport, hosts, vault))?;
    show(&plan);
    let changed = plan.changed_hosts();
    let (n_files, n_hosts) = (plan.changed_files(), changed.len());

    if args.check {
        for d in plan.hosts.iter().flat_map(|h| &h.drift) {
            render::warning(&d.message);
        }
        return Ok(if n_files == 0 {
            render::info(&format!(
                "settings are up to date on {} host(s)",
                plan.hosts.len()
            ));
            ExitStatus::Success
        } else {
            render::info(&format!(
                "{n_files} file(s) on {n_hosts} host(s) differ from the environment (--check: nothing written)"
            ));
            ExitStatus::Failure
        });
    }

    // The drift guard: only hosts that would change are stopped.
    for d in plan.hosts.iter().flat_map(|h| &h.drift) {
        if !d.blocking || args.force {
            render::warning(&d.message);
        }
    }
    let decision = plan.decide(env, args.force)?;
    if !decision.forced.is_empty() {
        render::warning("--force: overwriting the settings above");
    }
    let refresh = &decision.refresh;
    if n_files == 0 {
        if !refresh.is_empty() {
            report(&rt.block_on(apply::apply(env, transport, &plan, refresh)));
        }
        render::info(&format!(
            "no changes: settings are up to date on {} host(s)",
            plan.hosts.len()
        ));
        return Ok(ExitStatus::Success);
    }
    if !render::confirm(
        &format!("Write {n_files} settings file(s) on {n_hosts} host(s)?"),
        args.yes,
    )? {
        render::info("nothing written");
        return Ok(ExitStatus::Failure);
    }
    let targets = decision.targets();
    let results = rt.block_on(apply::apply(env, transport, &plan, &targets));
    let (failed, unreachable) = report(&results);
    let written: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|a| !a.written.is_empty()))
        .map(|(h, _)| h.clone())
        .collect();

    let mut restart_failed = false;
    if !written.is_empty() {
        if args.restart {
            restart_failed = !restart(env, transport, &written, rt)?;
        } else {
            render::info(&format!(
                "running services still use the old settings: restart them with\n  cchq {} service commcare restart --limit {}",
                env.name,
                written.join(",")
            ));
        }
    }
    Ok(ExitStatus::from_counts(
        failed + usize::from(restart_failed),
        unreachable,
    ))
}

/// Prints the masked diffs (stdout) and notes (stderr).
fn show(plan: &Plan) {
    for h in &plan.hosts {
        for f in &h.files {
            if let Some(note) = &f.note {
                render::info(&format!("note: {}: {note}", h.host));
            }
            let state = match (&f.current, f.changed()) {
                (None, _) => "new file",
                (Some(_), true) => "changed",
                (Some(_), false) => "unchanged",
            };
            if f.changed() {
                crate::outln!("==> {} | {} | {state}", h.host, f.path);
                render::out(&plan.diff(&h.host, f));
            } else {
                render::info(&format!("==> {} | {} | {state}", h.host, f.path));
            }
        }
    }
}

/// Prints what [`apply::apply`] did; returns (failed, unreachable) counts.
fn report(results: &[(String, Result<apply::HostApplied, Error>)]) -> (usize, usize) {
    let (mut failed, mut unreachable) = (0, 0);
    for (host, r) in results {
        match r {
            Ok(a) => {
                for p in &a.written {
                    render::info(&format!("{host}: wrote {p}"));
                }
                if a.written.is_empty() && a.recorded {
                    render::info(&format!(
                        "{host}: recorded the settings applied ({})",
                        apply::APPLIED_FILE
                    ));
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::Connection {
                    unreachable += 1;
                } else {
                    failed += 1;
                }
                render::host_error(host, e);
            }
        }
    }
    (failed, unreachable)
}

/// `service commcare restart` on `hosts`; whether everything came back.
fn restart(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
    rt: &tokio::runtime::Runtime,
) -> Result<bool, Error> {
    let req = Request {
        services: vec!["commcare".into()],
        only: Vec::new(),
        limit: Some(hosts.join(":")),
    };
    let (plans, _) = services::plan(env, &req, Action::Restart)?;
    if plans.is_empty() {
        render::info("no app service runs on the changed hosts: nothing to restart");
        return Ok(true);
    }
    render::info(&format!(
        "restarting the app services on {}",
        hosts.join(", ")
    ));
    let sink = |e: &cchq_core::events::Event| {
        if let cchq_core::events::Event::Warning { message, .. } = e {
            render::info(message);
        }
    };
    let report = rt.block_on(services::execute(
        transport,
        &plans,
        Action::Restart,
        &RollingOptions::default(),
        &sink,
    ));
    let mut rows = vec![vec![
        "HOST".to_owned(),
        "PROGRAM".to_owned(),
        "STATE".to_owned(),
        "DETAIL".to_owned(),
    ]];
    for r in &report.rows {
        rows.push(vec![
            r.host.clone(),
            r.program.clone(),
            format!("{}{}", r.state, if r.ok { "" } else { " !" }),
            r.detail.clone(),
        ]);
    }
    for (host, why) in &report.unreachable {
        rows.push(vec![
            host.clone(),
            "-".into(),
            "UNREACHABLE !".into(),
            why.clone(),
        ]);
    }
    render::err(&render::table(&rows));
    Ok(report.ok())
}
