//! What `validate-environment-settings` checks, for every command that must not act on an
//! environment it reads only in part: `update-supervisor-confs` and `deploy` refuse to start
//! while [`problems`] is not empty ([`require_valid`]), because a host key they cannot read plans
//! no programs for its hosts, and an empty plan removes their program files.

use crate::environment::{DISALLOWED_PUBLIC_VARS, Environment};
use crate::error::{Error, Result};

/// What is wrong with the environment (each a sentence naming the file), and what should change
/// but does not stop anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What makes the environment invalid.
    pub problems: Vec<String>,
    /// What is accepted but should change.
    pub warnings: Vec<String>,
}

/// The checks of `validate-environment-settings` that need no host and no vault password:
/// variables public.yml may not hold, `app-processes.yml` against the inventory
/// ([`crate::app_processes::AppProcesses::check`]), the SSH settings.
pub fn check(env: &Environment) -> Report {
    let mut out = Report::default();
    let public = env.dir.join("public.yml");
    for key in DISALLOWED_PUBLIC_VARS {
        if env.public.contains_key(*key) {
            out.problems.push(format!("{}: `{key}` is not allowed here; it belongs in proxy.yml", public.display()));
        }
    }
    if let Some(ap) = &env.app_processes {
        let path = env.dir.join("app-processes.yml");
        let c = ap.check(&env.inventory);
        out.problems.extend(c.problems.into_iter().map(|p| format!("{}: {p}", path.display())));
        out.warnings.extend(c.warnings.into_iter().map(|w| format!("{}: {w}", path.display())));
    }
    if let Err(e) = env.ssh_options() {
        out.problems.push(e.message().to_owned());
    }
    out
}

/// `Ok` when [`check`] finds no problem; else a `Config` error naming the first problems, saying
/// that `doing` (e.g. `update-supervisor-confs`) did nothing.
///
/// # Errors
/// The environment does not validate.
pub fn require_valid(env: &Environment, doing: &str) -> Result<()> {
    let problems = check(env).problems;
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = if problems.len() > shown.len() { format!("; and {} more", problems.len() - shown.len()) } else { String::new() };
    Err(Error::config(format!("environment `{}` does not validate, so {doing} did nothing: {}{more}", env.name, shown.join("; ")))
        .with_hint(format!("`cchq {} validate-environment-settings` lists every problem; fix them, then run it again", env.name)))
}
