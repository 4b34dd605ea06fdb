//! `cchq <env> copy-files SOURCE TARGET` (alias `scp`): one file between this machine and hosts.

use cchq_core::daily::copy::{Endpoint, Options, copy, plan};
use cchq_core::{Environment, Error};

use super::{ExitStatus, runtime};
use crate::cli::CopyArgs;
use crate::render;

pub const AFTER_HELP: &str = "\
SOURCE and TARGET are local paths or SERVER:PATH, where SERVER is a host, `group[N]` or `-`
(django_manage[0]); a target group without an index is every host of it. When neither names a
server, the source is on django_manage[0] (as commcare-cloud's scp). Host to host goes through
this machine: the file is read from the source host, then written to each target.

The file keeps its permission bits (or --mode); a target ending in `/`, or a directory, gets the
source's name; every write is atomic (a temporary file, then a rename). -b / --become-user read
and write as root / USER through sudo (the login user may not read the app's files). Nothing is
written when the source is missing or a directory. One file at a time, passing through this
machine's memory: for configuration files and dumps, not for data migrations.

Examples:
  cchq prod copy-files /tmp/dump.sql .                      # from django_manage[0]
  cchq prod scp webworkers[0]:/etc/nginx/nginx.conf ./nginx.conf
  cchq prod copy-files ./local.conf webworkers:/tmp/        # to every web worker
  cchq prod copy-files celery[0]:/home/cchq/x.csv proxy:/tmp/ --become-user cchq
  cchq prod copy-files secret.json -:/home/cchq/secret.json --become-user cchq --mode 0600";

pub fn run(env: &Environment, args: &CopyArgs) -> Result<ExitStatus, Error> {
    let mode = match &args.mode {
        None => None,
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .ok_or_else(|| Error::usage(format!("`--mode {m}` is not an octal mode")).with_hint("e.g. --mode 0644"))?,
        ),
    };
    let source = Endpoint::parse(&args.source)?;
    let target = Endpoint::parse(&args.target)?;
    let plan = plan(env, &source, &target)?;
    let mut hosts: Vec<String> = Vec::new();
    for h in std::iter::once(&plan.source).chain(&plan.targets).filter_map(|p| p.host.clone()) {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let become_user = if args.become_root { Some("root".to_owned()) } else { args.become_user.clone() };
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let done = rt.block_on(async {
        let r = copy(transport.as_ref(), &plan, &Options { become_user, mode }).await;
        let _ = transport.close().await;
        r
    })?;
    for c in &done {
        if args.json {
            crate::outln!("{}", serde_json::to_string(c).unwrap_or_default());
        } else {
            render::info(&format!("{} -> {} ({} bytes, mode {})", c.source, c.target, c.bytes, c.mode));
        }
    }
    Ok(ExitStatus::Success)
}
