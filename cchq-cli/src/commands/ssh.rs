//! `cchq <env> ssh <server> [ssh args]`: an interactive session with a real terminal.

use cchq_core::inventory::ServerSpec;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error};

use super::ExitStatus;
use crate::render;

pub fn run(env: &Environment, server: &str, ssh_args: &[String]) -> Result<ExitStatus, Error> {
    let spec = ServerSpec::parse(server)?;
    let host = env.inventory.resolve(&spec)?;
    if env.is_local(&host) {
        return Err(Error::usage(format!(
            "`{host}` is this machine (ansible_connection=local)"
        ))
        .with_hint("open a shell here instead"));
    }
    let target = env.ssh_target(&host);
    let address = target.address.clone();
    let transport = SshTransport::new(vec![target], env.ssh_options()?)?;
    // `--` comes before the destination: an address is never read as an option.
    let argv = transport.interactive_argv(&host, spec.user.as_deref(), ssh_args)?;
    render::info(&format!("ssh {host} ({address})"));
    let code = run_interactive(&argv)?;
    Ok(if code == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Code(u8::try_from(code).unwrap_or(1))
    })
}
