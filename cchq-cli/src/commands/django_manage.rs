//! `cchq <env> django-manage [--server S] [--release R] [--tmux] [--tee FILE] <command> [args...]`:
//! `manage.py` in a release, as the app user, on `django_manage[0]` or the server given.

use std::io::IsTerminal as _;
use std::process::Stdio;

use cchq_core::command::{RemoteCommand, quote};
use cchq_core::django_manage::Manage;
use cchq_core::transport::local::LocalTransport;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error, ErrorKind, Route};

use super::{ExitStatus, runtime};
use crate::render;

/// Help shown after the options of `django-manage`.
pub const AFTER_HELP: &str = "\
Runs `cd <www_root>/<deploy_env>/current && python_env/bin/python manage.py <command> <args>` as
the app user (sudo -iu cchq) on django_manage[0], or on --server (`webworkers[1]`, `web3`, `-`).
Arguments reach manage.py unchanged (spaces, quotes, `$`, `;`). cchq's own options go before the
command: everything after it is the management command's.

When standard input is a terminal the command gets a real terminal (ssh -t), so `shell` and
`dbshell` work; otherwise piped input reaches the command and its output streams as it comes
(`echo 'print(1+1)' | cchq prod django-manage shell` prints 2). The command's exit code is
cchq's (1 when it was killed by a signal).

--tee FILE copies the output to FILE on the remote host (relative to the release directory) and
refuses a FILE that exists. --tmux runs the command in a tmux window of the app user on the host
(one session per operator: detach with ^b d, come back with the same command or `tmux attach`).

Examples:
  cchq prod django-manage check_services
  cchq prod django-manage --release 2026-11-26_16.00.00 showmigrations
  cchq prod django-manage --server webworkers[1] shell
  cchq prod django-manage --tee /tmp/preindex.log preindex_everything --check
  echo 'print(1+1)' | cchq prod django-manage shell";

/// `django-manage`.
#[derive(Debug, clap::Args)]
pub struct DjangoManageArgs {
    /// The server (default `-`, the first django_manage host): a host, `group[N]`, `user@group[N]`
    #[arg(long, add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::servers))]
    pub server: Option<String>,
    /// Run in this release (`releases/NAME`) instead of `current`
    #[arg(long)]
    pub release: Option<String>,
    /// Run in a tmux window of the app user on the host (needs a terminal)
    #[arg(long)]
    pub tmux: bool,
    /// Also write the output to this file on the host (an existing file is refused)
    #[arg(long, value_name = "FILE")]
    pub tee: Option<String>,
    /// Do not print the command being run
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The management command and its arguments
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn tmux_script(inner: &str) -> String {
    let who = cchq_core::identity::login_name();
    let session: String = format!("manage-{who}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // The window stays open showing the command's exit status (taken before `echo` resets `$?`).
    let window = quote(&format!(
        "{inner}; s=$?; echo; echo \"[exit status $s: press Enter to close]\"; read _"
    ));
    format!(
        "if tmux has-session -t {s} 2>/dev/null; then exec tmux new-window -t {s} {window} \\; attach-session -t {s}; \
         else exec tmux new-session -s {s} {window}; fi",
        s = quote(&session)
    )
}

fn exit_status(code: Option<i32>) -> ExitStatus {
    match code {
        Some(0) => ExitStatus::Success,
        Some(c) => ExitStatus::Code(u8::try_from(c).unwrap_or(1)),
        None => ExitStatus::Failure,
    }
}

pub fn run(env: &Environment, args: &DjangoManageArgs) -> Result<ExitStatus, Error> {
    let manage = Manage::new(
        env,
        args.server.as_deref(),
        args.release.as_deref(),
        args.tee.as_deref(),
        args.command.clone(),
        &mut |w| {
            render::warning(w);
        },
    )?;
    let interactive = std::io::stdin().is_terminal();
    if args.tmux && !interactive {
        return Err(Error::usage("--tmux needs a terminal")
            .with_hint("run it from a terminal, or without --tmux"));
    }
    let (host, app) = (manage.host.clone(), manage.app_user.clone());
    let route = env.host_or_address(&host).route;

    // Checks first: the release exists, the tee file does not.
    let transport = env.transport(Some(std::slice::from_ref(&host)))?;
    let rt = runtime()?;
    if let Err(e) = rt.block_on(manage.verify(env, transport.as_ref())) {
        let _ = rt.block_on(transport.close());
        return Err(e);
    }

    let cmd = if args.tmux {
        RemoteCommand::shell(tmux_script(&manage.script())).become_user(app.clone())
    } else {
        manage.command()
    };
    if !args.quiet {
        render::info(&format!("{host}: [as {app}] {}", manage.shown()));
    }

    // The command runs as a child of cchq with cchq's standard input, output and error: a
    // terminal gets a real one (ssh -t), so `shell` and `dbshell` work; otherwise piped input
    // reaches the command (`echo 'print(1+1)' | cchq ENV django-manage shell`) and its output
    // streams as it comes.
    let _ = rt.block_on(transport.close());
    let code = match route {
        Route::Local => {
            // As LocalTransport: no sudo to the user cchq already runs as.
            let me = LocalTransport::new([host.clone()]);
            let shell = if me.current_user() == Some(app.as_str()) {
                cmd.clone().maybe_become(None).to_shell()
            } else {
                cmd.to_shell()
            };
            let status = cchq_core::vault::scrub_env(&mut std::process::Command::new("/bin/sh"))
                .arg("-c")
                .arg(shell)
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .map_err(|e| Error::io("cannot run /bin/sh", e))?;
            status.code()
        }
        Route::Ssh(target) => {
            let ssh = SshTransport::new(vec![target], env.ssh_options()?)?;
            let tty = if interactive || args.tmux { "-t" } else { "-T" };
            let argv = ssh.interactive_argv(
                &host,
                manage.login_user.as_deref(),
                &[tty.to_owned(), "--".to_owned(), cmd.to_shell()],
            )?;
            Some(run_interactive(&argv)?)
        }
    };
    if code.is_none() {
        render::error(&Error::new(
            ErrorKind::CommandFailed,
            format!("the management command on `{host}` was killed by a signal"),
        ));
    }
    Ok(exit_status(code))
}
