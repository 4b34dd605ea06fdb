//! `cchq <env> downtime {start,end,status}`: maintenance windows every operator can see.

use std::time::Duration;

use cchq_core::downtime::{self, OnLingering, Record, describe};
use cchq_core::services::{self, Action};
use cchq_core::transport::Transport;
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime};
use crate::cli::DowntimeArgs;
use crate::render;

pub fn run(env: &Environment, args: &DowntimeArgs) -> Result<ExitStatus, Error> {
    let downtime::Hosts {
        app_hosts,
        connect: hosts,
    } = downtime::hosts(env)?;
    if args.action == "start"
        && (args.on_lingering.is_none() || !args.yes)
        && !render::interactive()
    {
        // Decide before changing anything: without a terminal the questions cannot be asked.
        return Err(Error::usage(
            "downtime start needs a terminal to ask, or `--yes` and `--on-lingering`",
        )
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
        Some(r) if r.expired() => crate::outln!(
            "downtime of `{}` {}; EXPIRED (run `downtime end`)",
            env.name,
            describe(&r)
        ),
        Some(r) => crate::outln!("downtime of `{}` in progress: {}", env.name, describe(&r)),
        None => crate::outln!("no downtime in progress for `{}`", env.name),
    }
    Ok(ExitStatus::Success)
}

/// The terminal operator: prints what happens, asks (or answers from the flags).
struct Terminal<'a> {
    env: &'a str,
    args: &'a DowntimeArgs,
}

fn print_report(report: &services::Report) {
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
    for (h, why) in &report.unreachable {
        rows.push(vec![
            h.clone(),
            "-".into(),
            "UNREACHABLE !".into(),
            why.clone(),
        ]);
    }
    render::out(&render::table(&rows));
}

impl downtime::Operator for Terminal<'_> {
    fn confirm_start(&mut self, hosts: usize, replacing: Option<&Record>) -> bool {
        if let Some(r) = replacing {
            render::warning(&format!(
                "replacing an expired downtime record: {}",
                describe(r)
            ));
        }
        let yes = render::confirm(
            &format!(
                "Stop all CommCare services on {hosts} host(s) of `{}`?",
                self.env
            ),
            self.args.yes,
        );
        if !matches!(yes, Ok(true)) {
            render::info("nothing done");
        }
        matches!(yes, Ok(true))
    }

    fn recorded(&mut self, record: &Record) {
        render::info(&format!("downtime recorded: {}", describe(record)));
    }

    fn services(&mut self, action: Action, report: &services::Report) {
        print_report(report);
        if action == Action::Stop && !report.unreachable.is_empty() {
            render::warning("some hosts could not be reached; their services may still run");
        }
    }

    fn search_failed(&mut self, host: &str, error: &Error) {
        render::warning(&format!(
            "{host}: could not look for lingering processes: {}",
            error.message()
        ));
    }

    fn lingering(&mut self, found: &[(String, Vec<downtime::Lingering>)]) -> OnLingering {
        for (h, procs) in found {
            render::warning(&format!(
                "{h}: {} process(es) of `{}` still running:",
                procs.len(),
                self.env
            ));
            for p in procs.iter().take(10) {
                render::info(&format!("    {p}"));
            }
            if procs.len() > 10 {
                render::info(&format!("    ... and {} more", procs.len() - 10));
            }
        }
        loop {
            let choice = match &self.args.on_lingering {
                Some(c) => c.clone(),
                None => render::ask("abort, wait, continue or kill? [a/w/c/k]").unwrap_or_default(),
            };
            match choice.parse::<OnLingering>() {
                Ok(OnLingering::Continue) => {
                    render::warning("continuing with processes still running");
                    return OnLingering::Continue;
                }
                Ok(OnLingering::Abort) => {
                    render::info(
                        "aborting: starting the services again and cancelling the downtime",
                    );
                    return OnLingering::Abort;
                }
                Ok(c) => return c,
                Err(e) => render::warning(e.message()),
            }
        }
    }

    fn confirm_kill(&mut self, targets: &[(String, Vec<u32>)]) -> bool {
        for (h, pids) in targets {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            render::info(&format!("{h}: will kill (SIGKILL) pid {}", list.join(" ")));
        }
        self.args.on_lingering.is_some()
            || matches!(
                render::confirm("Kill these processes with SIGKILL?", self.args.yes),
                Ok(true)
            )
    }

    fn killed(&mut self, results: &[(String, Result<Vec<u32>, Error>)]) {
        for (h, r) in results {
            match r {
                Ok(killed) => {
                    let list: Vec<String> = killed.iter().map(u32::to_string).collect();
                    render::info(&format!(
                        "{h}: killed {}",
                        if list.is_empty() {
                            "none (gone already)".to_owned()
                        } else {
                            list.join(" ")
                        }
                    ));
                }
                Err(e) => render::host_error(h, e),
            }
        }
    }

    fn waiting(&mut self, d: Duration) {
        render::info(&format!("waiting {} s", d.as_secs()));
    }

    fn confirm_end(&mut self, record: &Record) -> bool {
        let q = format!(
            "End the downtime of `{}` ({}) and start every CommCare service?",
            self.env,
            describe(record)
        );
        let yes = matches!(render::confirm(&q, self.args.yes), Ok(true));
        if !yes {
            render::info("nothing done");
        }
        yes
    }
}

/// A refusal of the core (one in progress, none in progress) is exit 1, as a declined start.
fn refused(e: Error) -> Result<ExitStatus, Error> {
    if e.kind() == ErrorKind::Usage {
        render::error(&e);
        Ok(ExitStatus::Failure)
    } else {
        Err(e)
    }
}

async fn start(
    env: &Environment,
    t: &dyn Transport,
    app_hosts: &[String],
    args: &DowntimeArgs,
) -> Result<ExitStatus, Error> {
    let opts = downtime::StartOptions {
        by: cchq_core::identity::operator(),
        message: args.message.clone(),
        hours: args.duration,
        wait: Duration::from_secs(args.wait_seconds),
        // Asking on the terminal, the operator decides when to stop waiting.
        max_waits: if args.on_lingering.is_some() {
            10
        } else {
            u32::MAX
        },
    };
    let mut op = Terminal {
        env: &env.name,
        args,
    };
    match downtime::start(env, t, app_hosts, &opts, &mut op).await {
        Ok(downtime::Started::Started {
            record, stopped, ..
        }) => {
            crate::outln!("downtime of `{}` started: {}", env.name, describe(&record));
            Ok(if stopped.ok() {
                ExitStatus::Success
            } else {
                ExitStatus::Failure
            })
        }
        Ok(downtime::Started::Aborted { restarted }) => Ok(if restarted.ok() {
            ExitStatus::Failure
        } else {
            ExitStatus::Error(ErrorKind::CommandFailed)
        }),
        Ok(downtime::Started::Declined) => Ok(ExitStatus::Failure),
        Err(e) => refused(e),
    }
}

async fn end(
    env: &Environment,
    t: &dyn Transport,
    args: &DowntimeArgs,
) -> Result<ExitStatus, Error> {
    let mut op = Terminal {
        env: &env.name,
        args,
    };
    match downtime::end(env, t, &mut op).await {
        Ok(downtime::Ended::Ended { .. }) => {
            crate::outln!(
                "downtime of `{}` ended; every CommCare service runs",
                env.name
            );
            Ok(ExitStatus::Success)
        }
        Ok(downtime::Ended::NotStarted { .. }) => {
            render::error(
                &Error::new(
                    ErrorKind::CommandFailed,
                    "some services did not start; the downtime record stays",
                )
                .with_hint("fix them, then `downtime end` again"),
            );
            Ok(ExitStatus::Failure)
        }
        Ok(downtime::Ended::Declined) => Ok(ExitStatus::Failure),
        Err(e) => refused(e),
    }
}
