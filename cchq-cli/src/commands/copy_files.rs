//! `cchq <env> copy-files SOURCE TARGET` (alias `scp`): one file between this machine and hosts;
//! `cchq <env> copy-files PLAN.yml prepare|copy|cleanup`: commcare-cloud's plan, hosts pulling
//! from hosts with rsync.

use cchq_core::daily::copy::{Endpoint, Options, copy, plan};
use cchq_core::daily::copy_plan::{self, Action};
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

With a plan file (commcare-cloud's format) instead, hosts copy directories from hosts with rsync,
the data going straight from source to target:

  copy_files:
    - <target host>:                  # a host, or a group of one host
        - source_host: <source host>
          source_user: ansible        # optional (default: the environment's remote user)
          source_dir: /opt/data/
          target_dir: /opt/data/
          target_user: root           # optional (cchq's own; default root): who runs rsync
          rsync_args: [--checksum]    # optional
          files: [redis/, x/y.txt]    # optional: under source_dir (default: all of it)
          exclude: ['logs/*']         # optional

  prepare  each target makes a key pair for the plan (its private key never leaves the target)
           and its public key is added, `restrict`ed and marked, to the source user's
           ~/.ssh/authorized_keys; the sources' host keys come from the environment's known_hosts
           (checked strictly: run update-local-known-hosts first).
  copy     each entry's `rsync -aH --append-verify` (as commcare-cloud) on its target, as the
           target user; first with --dry-run, then copies after asking (--skip-check: no dry
           run; --yes: no question; --check: the dry run only).
  cleanup  removes the marked authorized_keys lines and the targets' keys.
The whole plan is checked first (hosts, keys, paths: errors name the plan file and entry), and
each step checks every host it needs before changing any. --limit keeps some targets. The plan
form is a local `.yml`/`.yaml` path followed by prepare, copy or cleanup; to fetch such a file
from a host into a local file of one of those names, write `-:x.yml ./copy`.

Examples:
  cchq prod copy-files /tmp/dump.sql .                      # from django_manage[0]
  cchq prod scp webworkers[0]:/etc/nginx/nginx.conf ./nginx.conf
  cchq prod copy-files ./local.conf webworkers:/tmp/        # to every web worker
  cchq prod copy-files celery[0]:/home/cchq/x.csv proxy:/tmp/ --become-user cchq
  cchq prod copy-files secret.json -:/home/cchq/secret.json --become-user cchq --mode 0600
  cchq prod copy-files migrations/redis.yml prepare
  cchq prod copy-files migrations/redis.yml copy --yes
  cchq prod copy-files migrations/redis.yml cleanup --json";

pub fn run(env: &Environment, args: &CopyArgs) -> Result<ExitStatus, Error> {
    if copy_plan::is_plan_form(&args.source, &args.target) {
        return run_plan(env, args);
    }
    let plan_only = [
        ("--limit", args.limit.is_some()),
        ("--check", args.check),
        ("--skip-check", args.skip_check),
        ("--yes", args.yes),
    ];
    if let Some((flag, _)) = plan_only.iter().find(|(_, given)| *given) {
        return Err(Error::usage(format!(
            "{flag} is for a plan: `copy-files PLAN.yml prepare|copy|cleanup`"
        ))
        .with_hint("a single file goes to every host its target names (e.g. `webworkers:/tmp/`)"));
    }
    let mode = match &args.mode {
        None => None,
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .ok_or_else(|| {
                    Error::usage(format!("`--mode {m}` is not an octal mode"))
                        .with_hint("e.g. --mode 0644")
                })?,
        ),
    };
    let source = Endpoint::parse(&args.source)?;
    let target = Endpoint::parse(&args.target)?;
    let plan = plan(env, &source, &target)?;
    let mut hosts: Vec<String> = Vec::new();
    for h in std::iter::once(&plan.source)
        .chain(&plan.targets)
        .filter_map(|p| p.host.clone())
    {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let become_user = if args.become_root {
        Some("root".to_owned())
    } else {
        args.become_user.clone()
    };
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
            render::info(&format!(
                "{} -> {} ({} bytes, mode {})",
                c.source, c.target, c.bytes, c.mode
            ));
        }
    }
    Ok(ExitStatus::Success)
}

fn run_plan(env: &Environment, args: &CopyArgs) -> Result<ExitStatus, Error> {
    let action = Action::parse(&args.target).unwrap_or(Action::Copy);
    let single = [
        (
            "--become/--become-user",
            args.become_root || args.become_user.is_some(),
        ),
        ("--mode", args.mode.is_some()),
    ];
    if let Some((flag, _)) = single.iter().find(|(_, given)| *given) {
        return Err(
            Error::usage(format!("{flag} is for a single file, not a plan")).with_hint(
                "a plan's entries say who reads (source_user) and who writes (target_user)",
            ),
        );
    }
    if action != Action::Copy && (args.check || args.skip_check) {
        return Err(Error::usage("--check and --skip-check are for `copy`")
            .with_hint("prepare and cleanup change only keys"));
    }
    let plan = copy_plan::load(
        env,
        std::path::Path::new(&args.source),
        args.limit.as_deref(),
    )?;
    let transport = env.transport(Some(&plan.hosts()))?;
    let rt = runtime()?;
    let show = |done: &[copy_plan::Done]| {
        for d in done {
            if args.json {
                crate::outln!("{}", serde_json::to_string(d).unwrap_or_default());
            } else {
                render::info(&format!("{} <- {}: {}", d.target, d.source, d.detail));
            }
        }
    };
    let result = rt.block_on(async {
        let t = transport.as_ref();
        let r = match action {
            Action::Prepare => copy_plan::prepare(t, &plan).await.map(|d| show(&d)),
            Action::Cleanup => copy_plan::cleanup(t, &plan).await.map(|d| show(&d)),
            Action::Copy => {
                if !args.skip_check {
                    match copy_plan::copy(t, &plan, true).await {
                        Ok(d) => show(&d),
                        Err(e) => {
                            let _ = transport.close().await;
                            return Err(e);
                        }
                    }
                }
                if args.check {
                    Ok(())
                } else {
                    let question = if args.skip_check {
                        "copy without a dry run first?"
                    } else {
                        "copy now?"
                    };
                    match render::confirm(question, args.yes) {
                        Ok(true) => copy_plan::copy(t, &plan, false).await.map(|d| show(&d)),
                        Ok(false) => {
                            render::info("nothing copied");
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        let _ = transport.close().await;
        r
    });
    result.map(|()| ExitStatus::Success)
}
