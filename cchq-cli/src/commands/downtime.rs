//! `cchq <env> downtime {start,end,status}`: maintenance windows every operator can see.

use std::time::Duration;

use cchq_core::downtime::{self, APP_GROUPS, Record, format_utc};
use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::transport::Transport;
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, operator, runtime};
use crate::cli::DowntimeArgs;
use crate::render;

fn describe(r: &Record) -> String {
    let msg = if r.message.is_empty() { String::new() } else { format!(": {}", r.message) };
    format!("started by {} at {} (until {}){msg}", r.by, format_utc(r.started_at), format_utc(r.expires_at))
}

pub fn run(env: &Environment, args: &DowntimeArgs) -> Result<ExitStatus, Error> {
    let (control, _) = downtime::location(env)?;
    let app_hosts = env.inventory.select(APP_GROUPS).map(|s| s.hosts).unwrap_or_default();
    let mut hosts = app_hosts.clone();
    if !hosts.contains(&control) {
        hosts.push(control.clone());
    }
    if args.action == "start" && (args.on_lingering.is_none() || !args.yes) && !render::interactive() {
        // Decide before changing anything: without a terminal the questions cannot be asked.
        return Err(Error::usage("downtime start needs a terminal to ask, or `--yes` and `--on-lingering`")
            .with_hint("e.g. `downtime start --yes --on-lingering wait`"));
    }
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    rt.block_on(async {
        let r = match args.action.as_str() {
            "status" => status(env, transport.as_ref()).await,
            "start" => start(env, transport.as_ref(), &app_hosts, args).await,
            _ => end(env, transport.as_ref(), args).await,
        };
        let _ = transport.close().await;
        r
    })
}

async fn status(env: &Environment, t: &dyn Transport) -> Result<ExitStatus, Error> {
    match downtime::read(env, t).await? {
        Some(r) if r.expired() => crate::outln!("downtime of `{}` {}; EXPIRED (run `downtime end`)", env.name, describe(&r)),
        Some(r) => crate::outln!("downtime of `{}` in progress: {}", env.name, describe(&r)),
        None => crate::outln!("no downtime in progress for `{}`", env.name),
    }
    Ok(ExitStatus::Success)
}

async fn commcare(env: &Environment, t: &dyn Transport, action: Action) -> Result<services::Report, Error> {
    let req = Request { services: vec!["commcare".into()], ..Request::default() };
    let (plans, _) = services::plan(env, &req, action)?;
    let report = services::execute(t, &plans, action, &RollingOptions::default(), &cchq_core::events::NullSink).await;
    let mut rows = vec![vec!["HOST".to_owned(), "PROGRAM".to_owned(), "STATE".to_owned(), "DETAIL".to_owned()]];
    for r in &report.rows {
        rows.push(vec![r.host.clone(), r.program.clone(), format!("{}{}", r.state, if r.ok { "" } else { " !" }), r.detail.clone()]);
    }
    for (h, why) in &report.unreachable {
        rows.push(vec![h.clone(), "-".into(), "UNREACHABLE !".into(), why.clone()]);
    }
    render::out(&render::table(&rows));
    Ok(report)
}

async fn start(env: &Environment, t: &dyn Transport, app_hosts: &[String], args: &DowntimeArgs) -> Result<ExitStatus, Error> {
    if let Some(r) = downtime::read(env, t).await? {
        if !r.expired() {
            render::error(
                &Error::usage(format!("a downtime of `{}` is already in progress: {}", env.name, describe(&r)))
                    .with_hint("end it with `downtime end`, or look at it with `downtime status`"),
            );
            return Ok(ExitStatus::Failure);
        }
        render::warning(&format!("replacing an expired downtime record: {}", describe(&r)));
    }
    if !render::confirm(&format!("Stop all CommCare services on {} host(s) of `{}`?", app_hosts.len(), env.name), args.yes)? {
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    let record = Record::new(env, &operator(), &args.message, args.duration);
    downtime::write(env, t, &record).await?;
    render::info(&format!("downtime recorded: {}", describe(&record)));
    let report = commcare(env, t, Action::Stop).await?;
    if !report.unreachable.is_empty() {
        render::warning("some hosts could not be reached; their services may still run");
    }
    let mut waits = 0;
    loop {
        let found = downtime::lingering(env, t, app_hosts).await;
        let mut lingering: Vec<(String, Vec<downtime::Lingering>)> = Vec::new();
        for (h, r) in found {
            match r {
                Ok(l) if !l.is_empty() => lingering.push((h, l)),
                Ok(_) => {}
                Err(e) => render::warning(&format!("{h}: could not look for lingering processes: {}", e.message())),
            }
        }
        if lingering.is_empty() {
            render::info(&format!("no processes of `{}` left running", env.name));
            break;
        }
        for (h, procs) in &lingering {
            render::warning(&format!("{h}: {} process(es) of `{}` still running:", procs.len(), env.name));
            for p in procs.iter().take(10) {
                render::info(&format!("    {p}"));
            }
            if procs.len() > 10 {
                render::info(&format!("    ... and {} more", procs.len() - 10));
            }
        }
        let choice = match &args.on_lingering {
            Some(c) => c.clone(),
            None => render::ask("abort, wait, continue or kill? [a/w/c/k]").unwrap_or_default(),
        };
        match choice.as_str() {
            "a" | "abort" => {
                render::info("aborting: starting the services again and cancelling the downtime");
                let report = commcare(env, t, Action::Start).await?;
                downtime::clear(env, t).await?;
                return Ok(if report.ok() { ExitStatus::Failure } else { ExitStatus::Error(ErrorKind::CommandFailed) });
            }
            "w" | "wait" => {
                waits += 1;
                if args.on_lingering.is_some() && waits > 10 {
                    return Err(Error::new(
                        ErrorKind::CommandFailed,
                        "processes still linger after 10 waits; the downtime is on and services are stopped",
                    )
                    .with_hint("look at them on the hosts, then `downtime start --on-lingering kill` or `downtime end`"));
                }
                render::info(&format!("waiting {} s", args.wait_seconds));
                tokio::time::sleep(Duration::from_secs(args.wait_seconds)).await;
            }
            "c" | "continue" => {
                render::warning("continuing with processes still running");
                break;
            }
            "k" | "kill" => {
                // Exactly the processes listed above (each re-checked on the host before the kill).
                let targets: Vec<(String, Vec<u32>)> =
                    lingering.iter().map(|(h, procs)| (h.clone(), procs.iter().map(|p| p.pid).collect())).collect();
                for (h, pids) in &targets {
                    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                    render::info(&format!("{h}: will kill (SIGKILL) pid {}", list.join(" ")));
                }
                if args.on_lingering.is_none() && !render::confirm("Kill these processes with SIGKILL?", args.yes)? {
                    continue;
                }
                for (h, r) in downtime::kill_lingering(env, t, &targets).await {
                    match r {
                        Ok(killed) => {
                            let list: Vec<String> = killed.iter().map(u32::to_string).collect();
                            render::info(&format!(
                                "{h}: killed {}",
                                if list.is_empty() { "none (gone already)".to_owned() } else { list.join(" ") }
                            ));
                        }
                        Err(e) => render::error(&e.context(h)),
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => render::warning(&format!("`{other}` is not one of abort, wait, continue, kill")),
        }
    }
    crate::outln!("downtime of `{}` started: {}", env.name, describe(&record));
    Ok(if report.ok() { ExitStatus::Success } else { ExitStatus::Failure })
}

async fn end(env: &Environment, t: &dyn Transport, args: &DowntimeArgs) -> Result<ExitStatus, Error> {
    let Some(r) = downtime::read(env, t).await? else {
        render::error(
            &Error::usage(format!("no downtime in progress for `{}`", env.name))
                .with_hint("`downtime status` shows the current record; start services with `service commcare start`"),
        );
        return Ok(ExitStatus::Failure);
    };
    if !render::confirm(&format!("End the downtime of `{}` ({}) and start every CommCare service?", env.name, describe(&r)), args.yes)? {
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    let report = commcare(env, t, Action::Start).await?;
    if !report.ok() {
        render::error(
            &Error::new(ErrorKind::CommandFailed, "some services did not start; the downtime record stays")
                .with_hint("fix them, then `downtime end` again"),
        );
        return Ok(ExitStatus::Failure);
    }
    downtime::clear(env, t).await?;
    crate::outln!("downtime of `{}` ended; every CommCare service runs", env.name);
    Ok(ExitStatus::Success)
}
