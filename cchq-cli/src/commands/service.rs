//! `cchq <env> service <service...> <action>`: supervisor/systemd/monit services on their hosts.

use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime};
use crate::cli::ServiceArgs;
use crate::render;

pub fn run(env: &Environment, args: &ServiceArgs) -> Result<ExitStatus, Error> {
    let (action_word, names) = match args.words.split_last() {
        Some((a, n)) if !n.is_empty() => (a.as_str(), n.to_vec()),
        Some((a, _)) if a == "help" => ("help", Vec::new()),
        _ => {
            return Err(Error::usage("give one or more services and an action")
                .with_hint("e.g. `cchq <env> service commcare status`; `cchq <env> service help` lists services"));
        }
    };
    let only = args
        .only
        .as_deref()
        .map(services::parse_only)
        .transpose()?
        .unwrap_or_default();
    match action_word {
        "help" => return help(env, &names),
        "logs" => return logs(env, &names, args),
        _ => {}
    }
    let action = Action::parse(action_word)?;
    let req = Request {
        services: names,
        only,
        limit: args.limit.clone(),
    };
    let (plans, warnings) = services::plan(env, &req, action)?;
    for w in &warnings {
        render::warning(w);
    }
    if plans.is_empty() {
        return Err(Error::pattern(format!(
            "no hosts to act on for {}",
            req.services.join(", ")
        ))
        .with_hint("check `--limit` and `cchq <env> service help`"));
    }
    let hosts: Vec<String> = plans.iter().map(|p| p.host.clone()).collect();
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    // On a terminal: a live line per step (the hosts' action, then each rolling batch).
    let live = crate::progress::Live::start(args.json, None);
    let sink = |e: &cchq_core::events::Event| {
        if let Some(l) = &live {
            l.event(e);
        }
        if let cchq_core::events::Event::Warning { message, .. } = e {
            render::info(message);
        }
    };
    let report = rt.block_on(async {
        let rolling = RollingOptions {
            all_at_once: args.all_at_once,
            ..RollingOptions::default()
        };
        let r = services::execute(transport.as_ref(), &plans, action, &rolling, &sink).await;
        let _ = transport.close().await;
        r
    });
    drop(live);
    if args.json {
        for row in &report.rows {
            crate::outln!("{}", serde_json::to_string(row).unwrap_or_default());
        }
        for (host, why) in &report.unreachable {
            crate::outln!(
                "{}",
                serde_json::json!({"host": host, "program": null, "state": "UNREACHABLE", "detail": why, "ok": false})
            );
        }
    } else {
        let mut rows = vec![vec![
            "HOST".to_owned(),
            "PROGRAM".to_owned(),
            "STATE".to_owned(),
            "DETAIL".to_owned(),
        ]];
        for r in &report.rows {
            let mark = if r.ok { "" } else { " !" };
            rows.push(vec![
                r.host.clone(),
                r.program.clone(),
                format!("{}{mark}", r.state),
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
        render::out(&render::table(&rows));
    }
    if !report.failed_batch.is_empty() {
        render::error(
            &Error::new(
                ErrorKind::CommandFailed,
                format!(
                    "rolling restart stopped: web workers on {} did not come back healthy",
                    report.failed_batch.join(", ")
                ),
            )
            .with_hint("look at their logs (`service webworker logs`), fix, then restart again"),
        );
    }
    Ok(if !report.unreachable.is_empty() {
        ExitStatus::Error(ErrorKind::Connection)
    } else if report.ok() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn help(env: &Environment, names: &[String]) -> Result<ExitStatus, Error> {
    // Read in part, the environment plans too few programs: the listing says so first.
    let problems = cchq_core::validate::check(env).problems;
    for p in &problems {
        render::warning(&format!(
            "{p}: the programs below miss what it names (`cchq {} validate-environment-settings`)",
            env.name
        ));
    }
    for svc in services::catalog(env) {
        if !names.is_empty()
            && !names
                .iter()
                .any(|n| n == &svc.name || (n == "commcare" && svc.app))
        {
            continue;
        }
        let hosts = env
            .inventory
            .select(&svc.hosts)
            .map(|s| s.hosts)
            .unwrap_or_default();
        let backend = svc.backend.describe();
        crate::outln!(
            "{} ({backend}) on `{}`: {} host(s)",
            svc.name,
            svc.hosts,
            hosts.len()
        );
        for h in hosts {
            crate::outln!("  {h}");
            for p in svc.backend.programs(env, &h).unwrap_or_default() {
                crate::outln!("    {}  (--only {}:{})", p.name, p.sub, p.number);
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn logs(env: &Environment, names: &[String], args: &ServiceArgs) -> Result<ExitStatus, Error> {
    let only = args
        .only
        .as_deref()
        .map(services::parse_only)
        .transpose()?
        .unwrap_or_default();
    let req = Request {
        services: names.to_vec(),
        only,
        limit: args.limit.clone(),
    };
    let (plans, _) = services::plan(env, &req, Action::Status)?;
    let log_dir = env.paths().log_dir();
    for p in plans {
        for prog in &p.programs {
            crate::outln!("{}  {log_dir}/{}.log", p.host, prog.name);
        }
        for (name, _) in &p.units {
            crate::outln!("{}  {name}: journalctl -u / monit logs on the host", p.host);
        }
    }
    Ok(ExitStatus::Success)
}
