//! `cchq <env> run-shell-command <pattern> <command>`: one shell command on many hosts at once.

use std::sync::Arc;
use std::time::Duration;

use cchq_core::events::NullSink;
use cchq_core::fanout::run_on_hosts;
use cchq_core::transport::DynTransport;
use cchq_core::transport::dry_run::DryRun;
use cchq_core::{Environment, Error, ErrorKind, RemoteCommand};

use super::{ExitStatus, runtime, select};
use crate::cli::RunShellArgs;
use crate::render;

pub fn run(env: &Environment, args: &RunShellArgs) -> Result<ExitStatus, Error> {
    let hosts = select(env, &args.pattern)?;
    if args.command.trim().is_empty() {
        return Err(Error::usage("the command is empty").with_hint("give the shell command to run, e.g. 'uptime'"));
    }
    if !args.silence_warnings && args.command.trim_start().starts_with("sudo ") {
        render::warning("the command starts with `sudo`: use `-b` (or `--become-user USER`) instead; silence with --silence-warnings");
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
        transport = Arc::new(DryRun::new(transport, |host, action| crate::outln!("{host}: would run: {action}")));
    }
    let rt = runtime()?;
    let results = rt.block_on(async {
        let r = run_on_hosts(transport.as_ref(), &hosts, &cmd, args.forks, "run-shell-command", &NullSink).await;
        let _ = transport.close().await;
        r
    });
    if args.dry_run {
        return Ok(ExitStatus::Success);
    }
    let (mut failed, mut unreachable) = (0usize, 0usize);
    for r in &results {
        let ms = u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX);
        match &r.result {
            Ok(out) => {
                if !out.success() {
                    failed += 1;
                }
                if args.json {
                    let obj = serde_json::json!({
                        "host": r.host, "exit_code": out.exit_code, "stdout": out.stdout_str(),
                        "stderr": out.stderr_str(), "error": null, "duration_ms": ms,
                    });
                    crate::outln!("{obj}");
                } else {
                    let code = out.exit_code.map_or_else(|| "signal".to_owned(), |c| c.to_string());
                    let status = if out.success() { "ok" } else { "FAILED" };
                    crate::outln!("==> {} | {status} | rc={code} | {ms} ms", r.host);
                    crate::render::out(&out.stdout_str());
                    if !out.stdout.is_empty() && !out.stdout.ends_with(b"\n") {
                        crate::render::out("\n");
                    }
                    if !out.stderr.is_empty() {
                        eprint!("{}", indent_stderr(&r.host, &out.stderr_str()));
                    }
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::Connection {
                    unreachable += 1;
                } else {
                    failed += 1;
                }
                if args.json {
                    let obj = serde_json::json!({
                        "host": r.host, "exit_code": null, "stdout": "", "stderr": "",
                        "error": e.message(), "duration_ms": ms,
                    });
                    crate::outln!("{obj}");
                } else {
                    crate::outln!("==> {} | UNREACHABLE | {ms} ms", r.host);
                    render::error(e);
                }
            }
        }
    }
    let total = results.len();
    if !args.json {
        render::info(&format!("{} ok, {failed} failed, {unreachable} unreachable ({total} hosts)", total - failed - unreachable));
    }
    Ok(ExitStatus::from_counts(failed, unreachable))
}

fn indent_stderr(host: &str, text: &str) -> String {
    text.lines().map(|l| format!("{host} stderr: {l}\n")).collect()
}
