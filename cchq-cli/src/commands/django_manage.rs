//! `cchq <env> django-manage [--server S] [--release R] [--tmux] [--tee FILE] <command> [args...]`:
//! `manage.py` in a release, as the app user, on `django_manage[0]` or the server given.

use std::io::IsTerminal as _;
use std::process::Stdio;

use cchq_core::command::{RemoteCommand, quote};
use cchq_core::config;
use cchq_core::inventory::ServerSpec;
use cchq_core::transport::local::LocalTransport;
use cchq_core::transport::ssh::{SshTransport, run_interactive};
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime};
use crate::render;

/// Help shown after the options of `django-manage`.
pub const AFTER_HELP: &str = "\
Runs `cd <www_root>/<deploy_env>/current && python_env/bin/python manage.py <command> <args>` as
the app user (sudo -iu cchq) on django_manage[0], or on --server (`webworkers[1]`, `web3`, `-`).
Arguments reach manage.py unchanged (spaces, quotes, `$`, `;`). cchq's own options go before the
command: everything after it is the management command's.

When standard input is a terminal the command gets a real terminal (ssh -t), so `shell` and
`dbshell` work; otherwise its output is printed when it ends. The command's exit code is cchq's
(1 when it was killed by a signal).

--tee FILE copies the output to FILE on the remote host (relative to the release directory) and
refuses a FILE that exists. --tmux runs the command in a tmux window of the app user on the host
(one session per operator: detach with ^b d, come back with the same command or `tmux attach`).

Examples:
  cchq prod django-manage check_services
  cchq prod django-manage --release 2026-11-26_16.00.00 showmigrations
  cchq prod django-manage --server webworkers[1] shell
  cchq prod django-manage --tee /tmp/preindex.log preindex_everything --check";

/// `django-manage`.
#[derive(Debug, clap::Args)]
pub struct DjangoManageArgs {
    /// The server (default `-`, the first django_manage host): a host, `group[N]`, `user@group[N]`
    #[arg(long)]
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

fn valid_release_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The script run as the app user: the command, optionally through `tee`, keeping its exit code.
fn script(dir: &str, argv: &[String], tee: Option<&str>) -> String {
    let manage = RemoteCommand::from_argv(["python_env/bin/python".to_owned(), "manage.py".to_owned()]).args(argv.iter().cloned());
    let cmd = manage.inner_shell();
    match tee {
        None => format!("cd {} && {cmd}", quote(dir)),
        Some(file) => format!(
            "cd {d} || exit 1; set -C; true > {f} || exit 1; set +C; exec 4>&1; \
             rc=$( {{ {{ {cmd} 2>&1; echo $? >&3; }} | tee -a {f} >&4; }} 3>&1 ); exit $rc",
            d = quote(dir),
            f = quote(file)
        ),
    }
}

fn tmux_script(inner: &str) -> String {
    let who = config::operator().split('@').next().unwrap_or("cchq").to_owned();
    let session: String = format!("manage-{who}").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let window = quote(&format!("{inner}; echo; echo \"[exit status $?: press Enter to close]\"; read _"));
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
    let spec = ServerSpec::parse(args.server.as_deref().unwrap_or("-"))?;
    for w in &spec.warnings {
        render::warning(w);
    }
    let host = env.inventory.resolve(&spec)?;
    if env.inventory.host(&host).is_none() {
        return Err(Error::not_found(format!("`{host}` is not a host of `{}`", env.name)).with_hint("name an inventory host or group"));
    }
    let www = config::www_home(env);
    let dir = match &args.release {
        None => format!("{www}/current"),
        Some(n) if valid_release_name(n) => format!("{www}/releases/{n}"),
        Some(n) => {
            return Err(Error::usage(format!("`{n}` is not a release name")).with_hint("release names are like `2026-11-26_16.00.00`"));
        }
    };
    let interactive = std::io::stdin().is_terminal();
    if args.tmux && !interactive {
        return Err(Error::usage("--tmux needs a terminal").with_hint("run it from a terminal, or without --tmux"));
    }
    let app = env.app_user().to_owned();
    let local = env.is_local(&host);

    // Checks first: the release exists, the tee file does not.
    let transport = env.transport(Some(std::slice::from_ref(&host)))?;
    let rt = runtime()?;
    let check = {
        let releases = format!("{www}/releases");
        let mut s = format!("if [ ! -d {d} ]; then ls -1 {r} 2>/dev/null; exit 3; fi", d = quote(&dir), r = quote(&releases));
        if let Some(f) = &args.tee {
            s.push_str(&format!("; cd {d} && if [ -e {f} ]; then exit 4; fi", d = quote(&dir), f = quote(f)));
        }
        RemoteCommand::shell(s).become_user(app.clone())
    };
    let checked = rt.block_on(transport.exec(&host, &check));
    let checked = match checked {
        Ok(o) => o,
        Err(e) => {
            let _ = rt.block_on(transport.close());
            return Err(e);
        }
    };
    match checked.exit_code {
        Some(0) => {}
        Some(3) => {
            let _ = rt.block_on(transport.close());
            let list: Vec<String> = checked.stdout_str().lines().filter(|l| !l.starts_with('.')).map(str::to_owned).collect();
            let what = args.release.as_ref().map_or_else(|| format!("`{dir}`"), |n| format!("release `{n}`"));
            return Err(Error::not_found(format!("{what} does not exist on `{host}`")).with_hint(if list.is_empty() {
                format!("`{www}/releases` holds no release: deploy first")
            } else {
                format!("releases on `{host}`: {}", list.join(", "))
            }));
        }
        Some(4) => {
            let _ = rt.block_on(transport.close());
            return Err(Error::usage(format!(
                "`{}` already exists on `{host}`: --tee does not overwrite",
                args.tee.as_deref().unwrap_or_default()
            ))
            .with_hint("give another file name, or remove that file first"));
        }
        _ => {
            let _ = rt.block_on(transport.close());
            return checked.check(&host, &check).map(|_| ExitStatus::Failure);
        }
    }

    let inner = script(&dir, &args.command, args.tee.as_deref());
    let inner = if args.tmux { tmux_script(&inner) } else { inner };
    let cmd = RemoteCommand::shell(inner).become_user(app.clone());
    if !args.quiet {
        let shown = RemoteCommand::from_argv(["python_env/bin/python".to_owned(), "manage.py".to_owned()])
            .args(args.command.iter().cloned())
            .cwd(&dir);
        render::info(&format!("{host}: [as {app}] {}", shown.inner_shell()));
    }

    if interactive || args.tmux {
        let _ = rt.block_on(transport.close());
        let code = if local {
            // As LocalTransport: no sudo to the user cchq already runs as.
            let me = LocalTransport::new([host.clone()]);
            let shell = if me.current_user() == Some(app.as_str()) { cmd.clone().maybe_become(None).to_shell() } else { cmd.to_shell() };
            let status = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(shell)
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .map_err(|e| Error::io("cannot run /bin/sh", e))?;
            status.code()
        } else {
            let ssh = SshTransport::new(vec![env.ssh_target(&host)], env.ssh_options()?)?;
            let argv = ssh.interactive_argv(&host, spec.user.as_deref(), &["-t".to_owned(), "--".to_owned(), cmd.to_shell()])?;
            Some(run_interactive(&argv)?)
        };
        return Ok(exit_status(code));
    }

    let out = rt.block_on(transport.exec(&host, &cmd));
    let _ = rt.block_on(transport.close());
    let out = out?;
    render::out(&out.stdout_str());
    if !out.stderr.is_empty() {
        eprint!("{}", out.stderr_str());
    }
    if out.exit_code.is_none() {
        render::error(&Error::new(ErrorKind::CommandFailed, format!("the management command on `{host}` was killed by a signal")));
    }
    Ok(exit_status(out.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_arguments_and_keep_exit_codes() {
        let argv = vec!["echo_args".to_owned(), "a b".to_owned(), "$(id)".to_owned(), "it's".to_owned()];
        let s = script("/home/cchq/www/x/current", &argv, None);
        assert_eq!(s, "cd /home/cchq/www/x/current && python_env/bin/python manage.py echo_args 'a b' '$(id)' 'it'\\''s'");
        // The tee form returns the command's code, not tee's, and refuses an existing file.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        std::fs::create_dir_all(tmp.path().join("python_env/bin")).unwrap();
        std::fs::write(tmp.path().join("python_env/bin/python"), "#!/bin/sh\necho \"ran $*\"; echo oops >&2; exit 7\n").unwrap();
        std::fs::set_permissions(tmp.path().join("python_env/bin/python"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let s = script(dir, &["x".to_owned(), "a b".to_owned()], Some("out.log"));
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&s).output().unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran manage.py x a b\noops\n");
        assert_eq!(std::fs::read_to_string(tmp.path().join("out.log")).unwrap(), "ran manage.py x a b\noops\n");
        let again = std::process::Command::new("/bin/sh").arg("-c").arg(&s).output().unwrap();
        assert_eq!(again.status.code(), Some(1), "an existing tee file is refused");
    }

    #[test]
    fn release_names_are_checked() {
        assert!(valid_release_name("2026-11-26_16.00.00"));
        for bad in ["", "../x", ".git_mirrors", "a b", "x;y", "a/b"] {
            assert!(!valid_release_name(bad), "{bad}");
        }
    }
}
