//! `cchq <env> ssh <server> [ssh args]`: an interactive session with a real terminal.

use cchq_core::inventory::ServerSpec;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error, Route};

use super::ExitStatus;
use crate::render;

/// The host a server spec names, reached over SSH: (name, address, ssh target). A local host
/// (`ansible_connection=local`) is refused with `local_hint`, what to do instead.
pub(crate) fn remote_host(
    env: &Environment,
    spec: &ServerSpec,
    local_hint: &str,
) -> Result<(String, String, cchq_core::transport::ssh::SshTarget), Error> {
    let host = env.host_or_address(&env.inventory.resolve(spec)?);
    match host.route {
        Route::Ssh(target) => Ok((host.name, host.address, target)),
        Route::Local => Err(Error::usage(format!(
            "`{}` is this machine (ansible_connection=local)",
            host.name
        ))
        .with_hint(local_hint.to_owned())),
    }
}

pub fn run(env: &Environment, server: &str, ssh_args: &[String]) -> Result<ExitStatus, Error> {
    let spec = ServerSpec::parse(server)?;
    let (host, address, target) = remote_host(env, &spec, "open a shell here instead")?;
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
