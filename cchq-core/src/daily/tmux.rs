//! `tmux <server> [command]`: a tmux session on a host, run as the app user, attached over
//! `ssh -t` (commcare-cloud's `tmux`, which opens `sudo -iu cchq` in a window of the login
//! user's tmux).
//!
//! The session is named (`cchq-<deploy_env>-<operator>`, or `--session`): without a command it
//! is attached when it exists and created otherwise; with a command, the command runs in a new
//! window of that session (created when missing), followed by a shell so that the window stays
//! open after the command ends, as commcare-cloud does. `--detach` creates the window and
//! returns without attaching (no terminal needed).

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, Result};

/// A tmux session name made of `text`: characters tmux refuses in target names (`.` and `:`) and
/// anything that is not `[A-Za-z0-9_-]` become `-`.
pub fn session_name(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() { "cchq".to_owned() } else { s }
}

/// The default session: `cchq-<deploy_env>-<login>` (the operator's login name on this machine).
pub fn default_session(env: &Environment, operator: &str) -> String {
    let login = operator.split('@').next().unwrap_or(operator);
    session_name(&format!("cchq-{}-{login}", env.meta.deploy_env))
}

/// Checks a session name given by hand.
///
/// # Errors
/// [`crate::ErrorKind::Usage`] for an empty name or one with characters other than
/// `[A-Za-z0-9_-]` (tmux reads `.` and `:` as window and pane separators).
pub fn check_session(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::usage(format!("invalid tmux session name `{name}`"))
            .with_hint("use letters, digits, `_` and `-`"));
    }
    Ok(())
}

/// The command the host runs (through `ssh -t`): tmux as the app user.
///
/// - no command: attach the session, or create it (`new-session -A`);
/// - a command: a new window running `<command>; exec bash` in the session (created when
///   missing), then attach unless `detach`.
pub fn remote_command(
    app_user: &str,
    session: &str,
    command: Option<&str>,
    detach: bool,
) -> RemoteCommand {
    let s = quote(session);
    let script = match command {
        None if detach => {
            format!("tmux has-session -t ={s} 2>/dev/null || tmux new-session -d -s {s}")
        }
        None => format!("exec tmux new-session -A -s {s}"),
        Some(cmd) => {
            // The window keeps a shell once the command ends (commcare-cloud's `; bash`).
            let body = quote(&format!("{cmd}; exec bash"));
            let attach = if detach {
                String::new()
            } else {
                format!(" && exec tmux attach-session -t ={s}")
            };
            format!(
                "if tmux has-session -t ={s} 2>/dev/null; then tmux new-window -t ={s}: {body}; \
                 else tmux new-session -d -s {s} {body}; fi{attach}"
            )
        }
    };
    RemoteCommand::shell(script).become_user(app_user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_safe_for_tmux() {
        assert_eq!(session_name("cchq-prod-jane.doe"), "cchq-prod-jane-doe");
        assert_eq!(session_name("a:b c"), "a-b-c");
        assert_eq!(session_name("..."), "cchq");
        assert!(check_session("ok_1-2").is_ok());
        assert!(check_session("a.b").is_err());
        assert!(check_session("").is_err());
    }

    #[test]
    fn without_a_command_the_session_is_attached_or_created_as_the_app_user() {
        let c = remote_command("cchq", "cchq-prod-me", None, false);
        assert_eq!(c.become_as(), Some("cchq"));
        assert_eq!(
            c.inner_shell(),
            "/bin/sh -c 'exec tmux new-session -A -s cchq-prod-me'"
        );
        assert!(
            c.to_shell().starts_with("sudo -n -iu cchq -- /bin/sh -c "),
            "{}",
            c.to_shell()
        );
    }

    #[test]
    fn a_command_runs_in_a_new_window_and_keeps_a_shell() {
        let c = remote_command("cchq", "s", Some("echo 'hi' && sleep 1"), true);
        let inner = c.inner_shell();
        assert!(inner.contains("new-window -t =s:"), "{inner}");
        assert!(inner.contains("new-session -d -s s"), "{inner}");
        assert!(!inner.contains("attach"), "{inner}");
        // The command survives two levels of quoting: run what the host would run, with a fake tmux.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("tmux");
        std::fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done; echo; [ \"$1\" != has-session ]\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(c.inner_shell())
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("[new-session][-d][-s][s][echo 'hi' && sleep 1; exec bash]"),
            "{text}"
        );
    }
}
