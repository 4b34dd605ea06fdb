//! `cchq <env> lookup <server>`: the address of a server.

use cchq_core::inventory::ServerSpec;
use cchq_core::{Environment, Error};

use super::ExitStatus;

pub fn run(env: &Environment, server: &str) -> Result<ExitStatus, Error> {
    let spec = ServerSpec::parse(server)?;
    // As commcare-cloud's `lookup`: a group without an index prints every host's address.
    for name in env.inventory.resolve_all(&spec)? {
        let host = env.host_or_address(&name);
        match &spec.user {
            Some(u) => crate::outln!("{u}@{}", host.address),
            None => crate::outln!("{}", host.address),
        }
    }
    Ok(ExitStatus::Success)
}
