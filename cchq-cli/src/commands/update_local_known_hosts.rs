//! `cchq <env> update-local-known-hosts`: the hosts' keys into the environment's `known_hosts`.

use cchq_core::daily::known_hosts::{Status, path, refused_error, update};
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, select};
use crate::cli::KnownHostsArgs;
use crate::render::{self, Stream, paint, style};

pub const AFTER_HELP: &str = "\
Runs `ssh-keyscan` for every host (or --limit) from this machine, as ssh names them (the
address, `[address]:port` off port 22), and merges the keys into the environment's known_hosts:
new keys are added, known ones kept, and a key that CHANGED is never trusted by itself: nothing
is written and the command fails, naming the host and both fingerprints, until you check the
key on the host and run again with --replace. Lines cchq does not manage (hashed names,
@cert-authority, comments) are kept. A host that does not answer keeps its keys (exit 5).

As with commcare-cloud's command, running it trusts the network at that moment for NEW keys:
compare the fingerprints shown with the hosts' own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)
when in doubt. Hosts reached through a ProxyCommand (a bastion) cannot be scanned from here.
--prune also removes the keys of names that are no inventory host's (hosts gone from the
inventory; commcare-cloud removes them by default), leaving hashed lines and markers alone.

Examples:
  cchq prod update-local-known-hosts
  cchq prod update-local-known-hosts --limit webworkers --check
  cchq prod update-local-known-hosts --limit web3 --replace
  cchq prod update-local-known-hosts --prune";

pub fn run(env: &Environment, args: &KnownHostsArgs) -> Result<ExitStatus, Error> {
    let hosts = select(env, args.limit.as_deref().unwrap_or("all"))?;
    let u = update(env, &hosts, args.replace, args.check, args.prune)?;
    let file = path(env);
    for c in &u.changes {
        if args.json {
            crate::outln!("{}", serde_json::to_string(c).unwrap_or_default());
            continue;
        }
        let (word, st) = match c.status {
            Status::Added => ("added", style::OK),
            Status::Unchanged => ("unchanged", anstyle::Style::new()),
            Status::Changed => ("CHANGED", style::FAILED),
            Status::Replaced => ("replaced", style::WARNING),
        };
        let old = c
            .old
            .as_deref()
            .map(|o| format!(" (was {o})"))
            .unwrap_or_default();
        crate::outln!(
            "{:<10} {} {} {}{old}  [{}]",
            paint(Stream::Stdout, st, word),
            c.name,
            c.key_type,
            c.new,
            c.host
        );
    }
    for r in &u.removed {
        if args.json {
            crate::outln!(
                "{}",
                serde_json::json!({"name": r.name, "key_type": r.key_type, "status": "removed", "old": r.fingerprint})
            );
        } else {
            crate::outln!(
                "{:<10} {} {} {}  [not in the inventory]",
                paint(Stream::Stdout, style::WARNING, "removed"),
                r.name,
                r.key_type,
                r.fingerprint
            );
        }
    }
    for f in &u.failed {
        if args.json {
            crate::outln!(
                "{}",
                serde_json::json!({"host": f.host, "status": "failed", "error": f.error})
            );
        } else {
            render::warning(&format!("`{}`: {} (its keys are kept)", f.host, f.error));
        }
    }
    let refused = u.refused();
    if !refused.is_empty() {
        render::error(&refused_error(env, &refused));
        return Ok(ExitStatus::Failure);
    }
    let changed = u.changes_file();
    if !args.json {
        let n = u
            .changes
            .iter()
            .filter(|c| matches!(c.status, Status::Added | Status::Replaced))
            .count()
            + u.removed.len();
        render::info(&match (changed, args.check) {
            (false, _) => format!("`{}` is up to date", file.display()),
            (true, true) => format!(
                "{n} key(s) would be written to `{}` (--check: nothing written)",
                file.display()
            ),
            (true, false) => format!("{n} key(s) written to `{}`", file.display()),
        });
    }
    if !u.failed.is_empty() {
        let names: Vec<&str> = u.failed.iter().map(|f| f.host.as_str()).collect();
        render::error(
            &Error::new(
                ErrorKind::Connection,
                format!("no key from {}", names.join(", ")),
            )
            .with_hint("is the host up and sshd listening? then run again"),
        );
        return Ok(ExitStatus::Error(ErrorKind::Connection));
    }
    Ok(if args.check && changed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
