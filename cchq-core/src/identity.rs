//! Who runs cchq, and on which machine: the operator recorded in deploys, locks and downtimes
//! (`login@machine`, the login name from the OS, not from `$USER`), and this process's identity
//! as a lock holder (machine and process id, so that a lock left by a dead process of this same
//! machine can be recognised as such).

/// The login name of the effective user, from the OS (`getpwuid(geteuid())`); `uid<N>` for a
/// user without a passwd entry. `$USER` is not consulted: anyone can set it to anything.
pub fn login_name() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid{uid}"),
    }
}

/// This machine's host name (`gethostname`), `unknown-host` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// This machine's id (`/etc/machine-id`, systemd's), when there is one: tells two machines that
/// share a host name apart.
pub fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Who runs cchq: `login@machine`, with `$USER` added as extra information when it is set and
/// differs from the login name (`root@vm (USER=alice)`). Worked out once per process.
pub fn operator() -> String {
    static OPERATOR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        operator_from(
            &login_name(),
            &hostname(),
            std::env::var("USER").ok().as_deref(),
        )
    });
    OPERATOR.clone()
}

/// Where a request comes from: what the records add to the [`operator`], and how its messages
/// spell an option (both frontends share the core's wording, each with its own spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Frontend {
    /// The `cchq` command line.
    #[default]
    Cli,
    /// The Python bindings (`import cchq`).
    Python,
}

impl Frontend {
    /// Who acts, as the deploy records, the lock and the notifications name them: [`operator`],
    /// with ` (python)` from Python, so that a record tells a script's deploy from a person's.
    pub fn operator(self) -> String {
        match self {
            Self::Cli => operator(),
            Self::Python => format!("{} (python)", operator()),
        }
    }

    /// Option `name` (`resume`, `keep_days`) as this frontend's users write it: `--resume`,
    /// `--keep-days` on the command line, `resume`, `keep_days` in Python.
    pub fn option(self, name: &str) -> String {
        match self {
            Self::Cli => format!("--{}", name.replace('_', "-")),
            Self::Python => name.to_owned(),
        }
    }
}

/// [`operator`] from its parts.
pub fn operator_from(login: &str, host: &str, user_var: Option<&str>) -> String {
    match user_var
        .map(str::trim)
        .filter(|u| !u.is_empty() && *u != login)
    {
        Some(u) => format!("{login}@{host} (USER={u})"),
        None => format!("{login}@{host}"),
    }
}

/// Whether process `pid` of this machine is alive (`kill(pid, 0)`: a process of another user,
/// which cannot be signalled, is alive too).
pub fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_name_comes_from_the_os_not_from_user() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        assert!(id.status.success());
        assert_eq!(login_name(), String::from_utf8_lossy(&id.stdout).trim());
        let op = operator();
        assert!(
            op.starts_with(&format!("{}@{}", login_name(), hostname())),
            "{op}"
        );
    }

    #[test]
    fn user_is_extra_information_only_when_it_differs() {
        assert_eq!(operator_from("root", "vm", None), "root@vm");
        assert_eq!(operator_from("root", "vm", Some("root")), "root@vm");
        assert_eq!(operator_from("root", "vm", Some("")), "root@vm");
        assert_eq!(
            operator_from("root", "vm", Some("alice")),
            "root@vm (USER=alice)"
        );
    }

    #[test]
    fn frontends_mark_the_operator_and_spell_options_their_way() {
        assert_eq!(Frontend::Cli.operator(), operator());
        assert_eq!(
            Frontend::Python.operator(),
            format!("{} (python)", operator())
        );
        assert_eq!(
            (
                Frontend::Cli.option("keep_days"),
                Frontend::Python.option("keep_days")
            ),
            ("--keep-days".into(), "keep_days".into())
        );
    }

    #[test]
    fn liveness_of_processes() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid), "a reaped child is dead");
        assert!(!process_alive(0));
    }
}
