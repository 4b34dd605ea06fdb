//! `cchq <env> hosts [PATTERN] [--json]`: the hosts a pattern selects, in inventory order.

use cchq_core::{Environment, Error};

use super::{ExitStatus, select};
use crate::cli::HostsArgs;
use crate::render;

pub fn run(env: &Environment, args: &HostsArgs) -> Result<ExitStatus, Error> {
    let names = select(env, &args.pattern)?;
    let mut rows = Vec::new();
    for name in &names {
        let h = env.host_or_address(name);
        if args.json {
            let obj = serde_json::json!({
                "name": h.name,
                "address": h.address,
                "port": h.port.unwrap_or(22),
                "user": h.user,
                "groups": h.groups,
            });
            crate::outln!("{obj}");
        } else {
            rows.push(vec![h.name, h.address, h.groups.join(",")]);
        }
    }
    if !args.json {
        render::out(&render::table(&rows));
    }
    Ok(ExitStatus::Success)
}
