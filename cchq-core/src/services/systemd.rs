//! [`Systemd`]: a system service controlled through `service`, as commcare-cloud controls it — its
//! systemd unit on a host that runs systemd, its init script on one that does not.

use super::Action;
use super::backend::{Backend, ServiceBackend, UnitState};
use crate::command::{RemoteCommand, quote};
use crate::error::Result;
use crate::transport::Output;

/// A system service (`service <unit> ...`): nginx, elasticsearch, kafka, zookeeper, rabbitmq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systemd {
    /// The unit (the init script's name).
    pub unit: String,
}

impl Systemd {
    /// The system service `unit`.
    pub fn new(unit: impl Into<String>) -> Self {
        Self { unit: unit.into() }
    }
}

impl ServiceBackend for Systemd {
    fn describe(&self) -> Backend {
        Backend::Systemd {
            unit: self.unit.clone(),
        }
    }

    /// `service <unit> <action>`, then `service <unit> status`, whose exit code is the state (LSB
    /// and systemd alike: 0 running, 3 stopped); stdout is the state word (`running`, `stopped`,
    /// `unknown (exit N)`), stderr the first line `service` printed (and the last line of a failed
    /// action's output).
    fn command(&self, action: Action, _names: &[String]) -> Result<RemoteCommand> {
        let u = quote(&self.unit);
        let act = if action == Action::Status {
            String::new()
        } else {
            format!(
                "o=$(service {u} {w} 2>&1) || printf '%s\\n' \"$o\" | tail -n 1 >&2; ",
                w = action.word()
            )
        };
        Ok(RemoteCommand::shell(format!(
            "{act}o=$(service {u} status 2>&1); rc=$?; printf '%s\\n' \"$o\" | grep -m 1 . >&2; \
             case $rc in 0) echo running ;; 3) echo stopped ;; *) echo \"unknown (exit $rc)\" ;; esac"
        ))
        .become_user("root"))
    }

    /// The last line of stdout is the state (`unknown` when there is none), stderr the detail.
    fn states(
        &self,
        _host: &str,
        _action: Action,
        names: &[String],
        answer: &Output,
    ) -> Result<Vec<UnitState>> {
        let text = answer.stdout_str();
        let state = text.lines().last().unwrap_or("").trim();
        let state = if state.is_empty() { "unknown" } else { state };
        let detail = answer.stderr_str();
        Ok(names
            .iter()
            .map(|n| UnitState::new(n, state, detail.trim()))
            .collect())
    }

    /// `systemctl start <unit>` where systemd knows the unit, `service <unit> start` where there is
    /// no systemd and the init script exists; else it says it is not managed there.
    fn start_after_reboot(&self) -> Option<RemoteCommand> {
        Some(
            RemoteCommand::shell(format!(
                "if [ -d /run/systemd/system ] && systemctl cat {u} >/dev/null 2>&1; then systemctl start {u} && echo started; \
                 elif [ ! -d /run/systemd/system ] && [ -x /etc/init.d/{u} ]; then service {u} start >/dev/null && echo started; \
                 else echo 'not managed here (no systemd unit or init script)'; fi",
                u = quote(&self.unit)
            ))
            .become_user("root"),
        )
    }
}
