//! `cchq <env> run-shell-command <pattern> <command>`: one shell command on many hosts at once.

use std::sync::Arc;
use std::time::Duration;

use cchq_core::events::NullSink;
use cchq_core::fanout::{HostResult, run_per_host_each};
use cchq_core::transport::DynTransport;
use cchq_core::transport::dry_run::DryRun;
use cchq_core::{Environment, Error, ErrorKind, RemoteCommand};

use super::{ExitStatus, runtime, select};
use crate::cli::RunShellArgs;
use crate::render;

pub fn run(env: &Environment, args: &RunShellArgs) -> Result<ExitStatus, Error> {
    let env = &*super::factory_auth(env, args.use_factory_auth)?;
    let hosts = select(env, &args.pattern)?;
    if args.command.trim().is_empty() {
        return Err(Error::usage("the command is empty")
            .with_hint("give the shell command to run, e.g. 'uptime'"));
    }
    if !args.silence_warnings && args.command.trim_start().starts_with("sudo ") {
        render::warning(
            "the command starts with `sudo`: use `-b` (or `--become-user USER`) instead; silence with --silence-warnings",
        );
    }
    let mut cmd = RemoteCommand::shell(args.command.clone());
    if args.become_root {
        cmd = cmd.become_user("root");
    } else if let Some(u) = &args.become_user {
        cmd = cmd.become_user(u.clone());
    }
    if let Some(t) = args.timeout {
        cmd = cmd.timeout(Duration::from_secs(t));
    }
    let mut transport: DynTransport = env.transport(Some(&hosts))?;
    if args.dry_run {
        transport = Arc::new(DryRun::new(transport, |host, action| {
            crate::outln!("{host}: would run: {action}")
        }));
    }
    let rt = runtime()?;
    // Text: each host's block as soon as that host finishes (completion order, as pdsh), under a
    // live progress line on a terminal. `--json`: one object per host at the end, in inventory
    // order (a script reading it gets the same order every time).
    let live = if args.dry_run {
        None
    } else {
        crate::progress::Live::start(args.json, Some(hosts.len()))
    };
    let sink: &dyn cchq_core::events::EventSink = match &live {
        Some(l) => l,
        None => &NullSink,
    };
    let stream = !args.json && !args.dry_run;
    let on_done = |r: &HostResult| {
        if stream {
            print_block(r);
        }
    };
    let results = rt.block_on(async {
        let r = run_per_host_each(
            transport.as_ref(),
            &hosts,
            |_| cmd.clone(),
            args.forks,
            "run-shell-command",
            sink,
            &on_done,
        )
        .await;
        let _ = transport.close().await;
        r
    });
    drop(live);
    if args.dry_run {
        return Ok(ExitStatus::Success);
    }
    let (mut failed, mut unreachable) = (0usize, 0usize);
    for r in &results {
        match &r.result {
            Ok(out) if !out.success() => failed += 1,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Connection => unreachable += 1,
            Err(_) => failed += 1,
        }
        if args.json {
            crate::outln!("{}", json_line(r));
        }
    }
    let total = results.len();
    if !args.json {
        render::info(&format!(
            "{} ok, {failed} failed, {unreachable} unreachable ({total} hosts)",
            total - failed - unreachable
        ));
    }
    Ok(ExitStatus::from_counts(failed, unreachable))
}

fn millis(r: &HostResult) -> u64 {
    u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX)
}

/// The `--json` object of a host.
fn json_line(r: &HostResult) -> serde_json::Value {
    let ms = millis(r);
    match &r.result {
        Ok(out) => serde_json::json!({
            "host": r.host, "exit_code": out.exit_code, "stdout": out.stdout_str(),
            "stderr": out.stderr_str(), "error": null, "duration_ms": ms,
        }),
        Err(e) => serde_json::json!({
            "host": r.host, "exit_code": null, "stdout": "", "stderr": "",
            "error": e.message(), "duration_ms": ms,
        }),
    }
}

/// A host's block: `==> host | ok | rc=0 | 12 ms` and its stdout on stdout (one write, so blocks
/// never mix), its stderr on stderr with each line prefixed `host stderr:`.
fn print_block(r: &HostResult) {
    use crate::render::{Stream, paint, style};
    let ms = millis(r);
    match &r.result {
        Ok(out) => {
            let code = out
                .exit_code
                .map_or_else(|| "signal".to_owned(), |c| c.to_string());
            let status = if out.success() {
                paint(Stream::Stdout, style::OK, "ok")
            } else {
                paint(Stream::Stdout, style::FAILED, "FAILED")
            };
            let mut block = format!("==> {} | {status} | rc={code} | {ms} ms\n", r.host);
            block.push_str(&out.stdout_str());
            if !out.stdout.is_empty() && !out.stdout.ends_with(b"\n") {
                block.push('\n');
            }
            render::out(&block);
            if !out.stderr.is_empty() {
                render::err(&indent_stderr(&r.host, &out.stderr_str()));
            }
        }
        Err(e) => {
            crate::outln!(
                "==> {} | {} | {ms} ms",
                r.host,
                paint(Stream::Stdout, style::FAILED, "UNREACHABLE")
            );
            render::error(e);
        }
    }
}

fn indent_stderr(host: &str, text: &str) -> String {
    text.lines()
        .map(|l| format!("{host} stderr: {l}\n"))
        .collect()
}
