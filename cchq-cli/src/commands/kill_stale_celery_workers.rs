//! `cchq <env> kill-stale-celery-workers`: celery workers of this environment left from old
//! releases; shown, then killed after a confirmation.

use cchq_core::daily::celery::{Signal, Stale, celery_hosts_within, find, kill};
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime, select};
use crate::cli::StaleArgs;
use crate::render;

pub const AFTER_HELP: &str = "\
A stale worker is a process of the app user with `celery` in its command line, running from a
release of THIS environment (its working directory, or a path in its command line, inside
<www_root>/<deploy_env>/releases/<release>) that is not the release `current` points to now:
typically a worker that did not finish its warm shutdown after a deploy. Processes of other
environments on the same hosts (another deploy_env), of other users, and of the current release
are never listed. The workers are shown first; each is killed only after the confirmation, and
only if it is still stale when the kill reaches its host (a reused pid is left alone).

--list only shows them (exit 1 when there are any). --signal TERM asks for a warm shutdown
instead of killing at once (KILL, the default: a worker already in its warm shutdown does not
stop for another TERM).

Examples:
  cchq prod kill-stale-celery-workers --list
  cchq prod kill-stale-celery-workers
  cchq prod kill-stale-celery-workers --limit celery[0] --yes --json";

pub fn run(env: &Environment, args: &StaleArgs) -> Result<ExitStatus, Error> {
    let limit = args.limit.as_deref().map(|l| select(env, l)).transpose()?;
    let hosts = celery_hosts_within(env, limit.as_deref())?;
    let signal = if args.signal == "TERM" {
        Signal::Term
    } else {
        Signal::Kill
    };
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let found = rt.block_on(find(env, transport.as_ref(), &hosts));
    let mut stale: Vec<Stale> = Vec::new();
    let mut unreachable = Vec::new();
    for (host, r) in found {
        match r {
            Ok(list) => stale.extend(list),
            Err(e) => {
                render::error(&e);
                unreachable.push(host);
            }
        }
    }
    let unreachable_status = if unreachable.is_empty() {
        None
    } else {
        Some(ExitStatus::Error(ErrorKind::Connection))
    };
    if stale.is_empty() {
        rt.block_on(async { transport.close().await })?;
        if !args.json {
            render::info(&format!(
                "no stale celery worker on {} host(s)",
                hosts.len() - unreachable.len()
            ));
        }
        return Ok(unreachable_status.unwrap_or(ExitStatus::Success));
    }
    if !args.json || args.list {
        for s in &stale {
            if args.json {
                crate::outln!("{}", serde_json::to_string(s).unwrap_or_default());
            } else {
                crate::outln!(
                    "{}  pid {}  release {}  {}",
                    s.host,
                    s.pid,
                    s.release,
                    s.args
                );
            }
        }
    }
    if args.list {
        rt.block_on(async { transport.close().await })?;
        return Ok(unreachable_status.unwrap_or(ExitStatus::Failure));
    }
    let question = format!(
        "kill ({}) these {} stale celery worker(s)?",
        signal.name(),
        stale.len()
    );
    if !render::confirm(&question, args.yes)? {
        render::info("nothing killed");
        rt.block_on(async { transport.close().await })?;
        return Ok(ExitStatus::Failure);
    }
    let killed = rt.block_on(async {
        let r = kill(env, transport.as_ref(), &stale, signal).await;
        let _ = transport.close().await;
        r
    });
    let mut failed = false;
    for (host, r) in killed {
        match r {
            Ok(pids) => {
                for s in stale.iter().filter(|s| s.host == host) {
                    let done = pids.contains(&s.pid);
                    if args.json {
                        let mut v = serde_json::to_value(s).unwrap_or_default();
                        v["killed"] = done.into();
                        crate::outln!("{v}");
                    } else if !done {
                        render::info(&format!(
                            "{host}: pid {} was gone or no longer stale: left alone",
                            s.pid
                        ));
                    }
                }
                if !args.json {
                    render::info(&format!(
                        "{host}: killed ({}) {} worker(s)",
                        signal.name(),
                        pids.len()
                    ));
                }
            }
            Err(e) => {
                failed = true;
                render::error(&e);
            }
        }
    }
    Ok(unreachable_status.unwrap_or(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }))
}
