//! `cchq <env> hosts [PATTERN] [--json]`: the hosts a pattern selects, in inventory order.

use cchq_core::{Environment, Error};

use super::{ExitStatus, select};
use crate::cli::HostsArgs;
use crate::render;

pub fn run(env: &Environment, args: &HostsArgs) -> Result<ExitStatus, Error> {
    let hosts = select(env, &args.pattern)?;
    let mut rows = Vec::new();
    for h in &hosts {
        let target = env.ssh_target(h);
        let groups = env.inventory.groups_of(h);
        if args.json {
            let obj = serde_json::json!({
                "name": h,
                "address": target.address,
                "port": target.port.unwrap_or(22),
                "user": target.user,
                "groups": groups,
            });
            crate::outln!("{obj}");
        } else {
            rows.push(vec![h.clone(), target.address, groups.join(",")]);
        }
    }
    if !args.json {
        render::out(&render::table(&rows));
    }
    Ok(ExitStatus::Success)
}
