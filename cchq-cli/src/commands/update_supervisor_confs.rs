//! `cchq <env> update-supervisor-confs`: render the supervisor program files, show what would
//! change, and apply them (files written, stale ones removed, supervisord's reread + update).

use cchq_core::services::supervisor::{Allow, ConfPlan, apply_confs, plan_confs};
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime, select};
use crate::render;

/// The groups whose hosts run app programs.
const APP_GROUPS: &str = "webworkers:celery:pillowtop:formplayer:django_manage";

/// Help shown after the options of `update-supervisor-confs`.
pub const AFTER_HELP: &str = "\
Renders the supervisor program files of every app host (webworkers, celery, pillowtop, formplayer,
django_manage) from app-processes.yml and the inventory, compares them with this environment's
files in the host's supervisor directory (<deploy_env>_supervisor_*.conf), writes those that
differ, removes those the environment no longer gives the host, and has supervisord reread and
update (added programs start, removed ones stop).

Nothing is done while the environment does not validate (validate-environment-settings): a host
key it cannot read would give its hosts no programs and remove theirs. Removing files asks first
(--yes answers). A host that would lose every program file is refused unless --empty-hosts --yes.

Exit codes: 0 done (with --check: nothing would change); 1 with --check: something would change,
or a host failed; 3 the environment does not validate, or a host would be emptied; 5 a host is
unreachable.

Examples:
  cchq prod update-supervisor-confs --check
  cchq prod update-supervisor-confs --limit celery --yes";

/// `update-supervisor-confs`.
#[derive(Debug, clap::Args)]
pub struct UpdateSupervisorConfsArgs {
    /// Only these hosts (a host pattern)
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// One JSON object per host per line
    #[arg(long)]
    pub json: bool,
    /// Show what would be written and removed; change nothing (exit code 1 when something would change)
    #[arg(long, conflicts_with_all = ["yes", "empty_hosts"])]
    pub check: bool,
    /// Remove program files without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also remove every program file of hosts the environment now gives no programs (with --yes)
    #[arg(long, requires = "yes")]
    pub empty_hosts: bool,
}

pub fn run(env: &Environment, args: &UpdateSupervisorConfsArgs) -> Result<ExitStatus, Error> {
    let hosts = match &args.limit {
        Some(l) => super::select_within(env, APP_GROUPS, l)?,
        None => select(env, APP_GROUPS)?,
    };
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    rt.block_on(async {
        let r = work(env, args, &hosts, transport.as_ref()).await;
        let _ = transport.close().await;
        r
    })
}

async fn work(
    env: &Environment,
    args: &UpdateSupervisorConfsArgs,
    hosts: &[String],
    transport: &dyn cchq_core::transport::Transport,
) -> Result<ExitStatus, Error> {
    let planned = plan_confs(env, transport, hosts).await?;
    let (mut failed, mut unreachable) = (0, 0);
    let mut plans = Vec::new();
    for (host, p) in planned {
        match p {
            Ok(p) => plans.push(p),
            Err(e) => {
                count(&e, &mut failed, &mut unreachable);
                fail(args.json, &host, &e);
            }
        }
    }
    let changing: Vec<&ConfPlan> = plans.iter().filter(|p| p.changes()).collect();
    let removals: usize = changing.iter().map(|p| p.remove.len()).sum();

    if args.check {
        for p in &plans {
            show(args.json, p);
        }
        if changing.is_empty() {
            render::info(&format!(
                "supervisor program files are up to date on {} host(s)",
                plans.len()
            ));
        } else {
            render::info(&format!(
                "{} host(s) would change ({removals} file(s) removed) (--check: nothing written)",
                changing.len()
            ));
        }
        let status = ExitStatus::from_counts(failed, unreachable);
        return Ok(if changing.is_empty() {
            status
        } else {
            ExitStatus::from_counts(failed.max(1), unreachable)
        });
    }

    for p in &changing {
        show(args.json, p);
    }
    let emptied: Vec<&ConfPlan> = changing
        .iter()
        .copied()
        .filter(|p| p.empties_host())
        .collect();
    if !emptied.is_empty() && !args.empty_hosts {
        let list: Vec<String> = emptied
            .iter()
            .map(|p| format!("`{}` ({})", p.host, p.remove.join(", ")))
            .collect();
        return Err(Error::config(format!(
            "refusing to remove every supervisor program file of {} host(s) that the environment gives no programs: {}; nothing was changed",
            emptied.len(),
            list.join("; ")
        ))
        .with_hint(
            "check that app-processes.yml and the inventory still name these hosts (`service <service> help` lists what each host runs); \
             if they should run nothing, add `--empty-hosts --yes`, or `--limit` the others",
        ));
    }
    if removals > 0 {
        let n_hosts = changing.iter().filter(|p| !p.remove.is_empty()).count();
        if !render::confirm(
            &format!(
                "Remove {removals} program file(s) on {n_hosts} host(s), stopping their programs?"
            ),
            args.yes,
        )? {
            render::info("nothing changed");
            return Ok(ExitStatus::Failure);
        }
    }
    let results = apply_confs(
        env,
        transport,
        &plans,
        Allow {
            empty_hosts: args.empty_hosts,
        },
    )
    .await;
    for (host, res) in &results {
        match res {
            Ok(u) => {
                if args.json {
                    crate::outln!(
                        "{}",
                        serde_json::json!({"host": host, "files": u.files, "output": u.output, "error": null})
                    );
                } else {
                    crate::outln!(
                        "==> {host}: {} file(s): {}",
                        u.files.len(),
                        u.files.join(", ")
                    );
                    for line in u.output.lines() {
                        crate::outln!("    {line}");
                    }
                }
            }
            Err(e) => {
                count(e, &mut failed, &mut unreachable);
                fail(args.json, host, e);
            }
        }
    }
    Ok(ExitStatus::from_counts(failed, unreachable))
}

fn count(e: &Error, failed: &mut usize, unreachable: &mut usize) {
    if e.kind() == ErrorKind::Connection {
        *unreachable += 1;
    } else {
        *failed += 1;
    }
}

fn fail(json: bool, host: &str, e: &Error) {
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({"host": host, "files": [], "output": "", "error": e.message()})
        );
    } else {
        crate::outln!("==> {host}: FAILED");
        render::error(e);
    }
}

/// One host's plan: `==> host` then `+ new`, `~ changed`, `- removed` (stdout), or its JSON.
fn show(json: bool, p: &ConfPlan) {
    if json {
        crate::outln!("{}", serde_json::json!({"host": p.host, "plan": p}));
        return;
    }
    if !p.changes() {
        render::info(&format!(
            "==> {}: up to date ({} file(s))",
            p.host,
            p.unchanged.len()
        ));
        return;
    }
    let note = if p.empties_host() {
        " (every program file would go: the environment gives this host no programs)"
    } else {
        ""
    };
    crate::outln!("==> {}{note}", p.host);
    for (mark, names) in [("+", &p.new), ("~", &p.changed), ("-", &p.remove)] {
        for n in names {
            crate::outln!("    {mark} {n}");
        }
    }
}
