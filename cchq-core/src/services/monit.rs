//! [`Monit`]: a service watched by monit, controlled as commcare-cloud checks it
//! (`monit status <name>`).

use super::Action;
use super::backend::{Backend, ServiceBackend, UnitState};
use crate::command::{RemoteCommand, quote};
use crate::error::Result;
use crate::transport::Output;

/// A monit check (`monit start|stop|restart|status <name>`): postgresql, pgbouncer, redis,
/// couchdb2, under the names commcare-cloud's monit configuration gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monit {
    /// The name of monit's check (`postgresql_14`, `redis`, ...).
    pub name: String,
}

impl Monit {
    /// monit's check `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl ServiceBackend for Monit {
    fn describe(&self) -> Backend {
        Backend::Monit {
            name: self.name.clone(),
        }
    }

    /// `monit <action> <name>` (monit only queues it: the command then waits, up to 30 s, until
    /// monit's status for it no longer says `pending`), then `monit status <name>`, whose `status`
    /// line is the state ([`monit_state`]).
    fn command(&self, action: Action, _names: &[String]) -> Result<RemoteCommand> {
        let n = quote(&self.name);
        let script = if action == Action::Status {
            format!("monit status {n}")
        } else {
            format!(
                "monit {w} {n}; i=0; while [ $i -lt 300 ] && monit status {n} 2>/dev/null | grep -q ' pending$'; do sleep 0.1; i=$((i+1)); done; \
                 monit status {n}",
                w = action.word()
            )
        };
        Ok(RemoteCommand::shell(script).become_user("root"))
    }

    /// The `status` line of `monit status` ([`monit_state`]), stderr the detail; `unknown` with
    /// everything monit printed when there is no such line (`Service 'x' not found`,
    /// `monit: not found`, no answer from monit).
    fn states(
        &self,
        _host: &str,
        _action: Action,
        names: &[String],
        answer: &Output,
    ) -> Result<Vec<UnitState>> {
        let text = answer.stdout_str();
        let stderr = answer.stderr_str();
        let (state, detail) = match monit_state(&text) {
            Some(state) => (state, stderr.trim().to_owned()),
            None => (
                "unknown".to_owned(),
                format!("{} {}", text.trim(), stderr.trim())
                    .trim()
                    .to_owned(),
            ),
        };
        Ok(names
            .iter()
            .map(|n| UnitState::new(n, &state, &detail))
            .collect())
    }

    /// `monit start <name>` where the host has monit; else it says it is not managed there.
    fn start_after_reboot(&self) -> Option<RemoteCommand> {
        Some(
            RemoteCommand::shell(format!(
                "if command -v monit >/dev/null 2>&1; then monit start {n} && echo started; else echo 'not managed here (no monit)'; fi",
                n = quote(&self.name)
            ))
            .become_user("root"),
        )
    }
}

/// The state in `monit status <name>`'s output: its `status` line (`OK`, `Not monitored`, `Does not
/// exist`, `Initializing`, `OK - stop pending`, ...), or `None` when there is none (no such
/// service, no monit).
pub fn monit_state(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("status ").map(|v| v.trim().to_owned()))
}
