//! `cchq <env> tmux <server> [command]`: a named tmux session as the app user, over `ssh -t`.

use cchq_core::daily::tmux::{check_session, default_session, remote_command};
use cchq_core::inventory::ServerSpec;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error};

use super::ExitStatus;
use crate::cli::TmuxArgs;
use crate::render;

pub const AFTER_HELP: &str = "\
The session runs as the app user (`sudo -iu cchq tmux ...` on the host), named
`cchq-<deploy_env>-<your login>` unless --session says otherwise, so each operator finds their
own session again. Without a command: attach the session, or create it. With a command: run it in
a new window of the session (created when missing) and attach; a shell stays open in the window
after the command ends. Detach with `Ctrl-b d`; `tmux` again reattaches. --detach starts the
window and returns at once (no terminal needed: for long jobs started from scripts).

Examples:
  cchq prod tmux -
  cchq prod tmux webworkers[0] 'python_env/bin/python manage.py shell'
  cchq prod tmux - 'python_env/bin/python manage.py rebuild_index' --detach --session reindex";

pub fn run(env: &Environment, args: &TmuxArgs) -> Result<ExitStatus, Error> {
    let spec = ServerSpec::parse(&args.server)?;
    if spec.user.is_some() {
        return Err(Error::usage(format!(
            "`{}`: tmux runs as the app user `{}`",
            args.server,
            env.app_user()
        ))
        .with_hint("drop the `user@`; `cchq ENV ssh USER@SERVER` logs in as another user"));
    }
    let (host, address, target) = super::ssh::remote_host(env, &spec, "run tmux here instead")?;
    let session = match &args.session {
        Some(s) => {
            check_session(s)?;
            s.clone()
        }
        None => default_session(env, &cchq_core::identity::operator()),
    };
    if args.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(
            Error::usage("the command is empty").with_hint("leave it out to attach the session")
        );
    }
    let remote = remote_command(
        env.app_user(),
        &session,
        args.command.as_deref(),
        args.detach,
    )
    .to_shell();
    let transport = SshTransport::new(vec![target], env.ssh_options()?)?;
    // `-t`: tmux needs a terminal; without one (--detach) none is asked for.
    let mut extra = Vec::new();
    if !args.detach {
        extra.push("-t".to_owned());
    }
    extra.push("--".to_owned());
    extra.push(remote);
    let argv = transport.interactive_argv(&host, None, &extra)?;
    render::info(&format!(
        "tmux session `{session}` as `{}` on {host} ({address})",
        env.app_user()
    ));
    let code = run_interactive(&argv)?;
    Ok(if code == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Code(u8::try_from(code).unwrap_or(1))
    })
}
