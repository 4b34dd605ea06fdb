//! `cchq <env> ping [PATTERN]`: every host answers, sudo works, supervisord answers.

use cchq_core::daily::ping::ping;
use cchq_core::events::NullSink;
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime, select};
use crate::cli::PingArgs;
use crate::render::{self, Stream, paint, style};

pub const AFTER_HELP: &str = "\
On each host: log in over ssh as the environment says (its user, key, known_hosts and ssh args),
run `hostname` and `uptime`, check that `sudo -n true` works for the login user, and, on hosts
that run a program of the environment, ask supervisord for its state over its socket (as
root). A table shows each host; the hosts that fail are named at the end.

Exit codes: 0 when every host passes, 1 when a host answers but sudo or supervisord fails, 5
when a host cannot be reached.

Examples:
  cchq prod ping
  cchq prod ping webworkers --json
  cchq prod ping 'celery:!celery[0]'";

pub fn run(env: &Environment, args: &PingArgs) -> Result<ExitStatus, Error> {
    let hosts = select(env, &args.pattern)?;
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let live = crate::progress::Live::start(args.json, Some(hosts.len()));
    let sink: &dyn cchq_core::events::EventSink = match &live {
        Some(l) => l,
        None => &NullSink,
    };
    let results = rt.block_on(async {
        let r = ping(env, transport.as_ref(), &hosts, args.forks, sink).await;
        let _ = transport.close().await;
        r
    });
    drop(live);
    if args.json {
        for p in &results {
            crate::outln!("{}", serde_json::to_string(p).unwrap_or_default());
        }
    } else {
        let yes_no = |b: Option<bool>| match b {
            Some(true) => paint(Stream::Stdout, style::OK, "ok"),
            Some(false) => paint(Stream::Stdout, style::FAILED, "FAILED"),
            None => "-".to_owned(),
        };
        let mut rows = vec![
            ["HOST", "ADDRESS", "SSH", "SUDO", "SUPERVISORD", "UPTIME"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for p in &results {
            let sup = match p.supervisord.as_deref() {
                None => "-".to_owned(),
                Some("RUNNING") => paint(Stream::Stdout, style::OK, "RUNNING"),
                Some(s) => paint(Stream::Stdout, style::FAILED, s),
            };
            let ssh = if p.reachable {
                paint(Stream::Stdout, style::OK, "ok")
            } else {
                paint(Stream::Stdout, style::FAILED, "UNREACHABLE")
            };
            rows.push(vec![
                p.host.clone(),
                p.address.clone(),
                ssh,
                yes_no(p.sudo),
                sup,
                p.uptime.clone().unwrap_or_default(),
            ]);
        }
        render::out(&render::table(&rows));
    }
    let failed: Vec<&cchq_core::daily::ping::Ping> = results.iter().filter(|p| !p.ok).collect();
    let unreachable = failed.iter().filter(|p| !p.reachable).count();
    if failed.is_empty() {
        if !args.json {
            render::info(&format!("all {} hosts answer", results.len()));
        }
        return Ok(ExitStatus::Success);
    }
    let list: Vec<String> = failed
        .iter()
        .map(|p| format!("{}: {}", p.host, p.problem))
        .collect();
    let names: Vec<&str> = failed.iter().map(|p| p.host.as_str()).collect();
    let kind = if unreachable > 0 {
        ErrorKind::Connection
    } else {
        ErrorKind::CommandFailed
    };
    render::error(
        &Error::new(kind, format!("{} of {} hosts failed: {}\n  {}", failed.len(), results.len(), names.join(", "), list.join("\n  ")))
            .with_hint("fix what is named (host up? `sudo` for the login user? `after-reboot --limit HOST all` starts supervisord), then ping again"),
    );
    Ok(ExitStatus::from_counts(
        failed.len() - unreachable,
        unreachable,
    ))
}
