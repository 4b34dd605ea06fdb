//! `cchq <env> ssh <server> [ssh args]`: an interactive session with a real terminal.

use cchq_core::inventory::ServerSpec;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error, Route};

use super::ExitStatus;
use crate::render;

pub fn run(env: &Environment, server: &str, ssh_args: &[String]) -> Result<ExitStatus, Error> {
    let spec = ServerSpec::parse(server)?;
    let host = env.host_or_address(&env.inventory.resolve(&spec)?);
    let (host, address, target) = match host.route {
        Route::Ssh(target) => (host.name, host.address, target),
        Route::Local => {
            return Err(Error::usage(format!(
                "`{}` is this machine (ansible_connection=local)",
                host.name
            ))
            .with_hint("open a shell here instead"));
        }
    };
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
