//! [`ServiceBackend`]: how a service is controlled on its hosts — the one trait that the
//! supervisor, systemd (`service`) and monit backends implement, and that an embedder implements
//! for a backend of their own.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Serialize, Serializer};

use super::Action;
use super::programs::{Program, ProgramKind};
use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::Result;
use crate::transport::{Output, Transport};

/// How a service is controlled on its hosts: what differs between supervisor programs, system
/// services and monit checks, and what an embedder writes for a backend of their own.
///
/// [`plan`](super::plan) asks a backend what a service is made of on a host
/// ([`programs`](Self::programs): supervisord programs, or the service as one thing);
/// [`execute`](super::execute) asks it for the [`command`](Self::command) that performs an action
/// there (and reports the states after), turns the host's answer into per-name
/// [`states`](Self::states), and lets it [`settle`](Self::settle) what is still moving. A backend
/// acted on as one (a unit, a monit check, yours) gets `names` = the service's name: its rows are
/// named after the service.
///
/// The built-in backends: [`Supervisor`](super::supervisor::Supervisor) (programs over
/// supervisord's XML-RPC socket), [`Systemd`](super::systemd::Systemd) (`service <unit> ...`: the
/// systemd unit, or the init script on a host without systemd) and
/// [`Monit`](super::monit::Monit) (`monit <action> <name>`, then `monit status <name>`).
///
/// # Example
///
/// A backend of one's own: a Docker container, whose state is what `docker inspect` says.
///
/// ```
/// use std::sync::Arc;
///
/// use cchq_core::command::{RemoteCommand, quote};
/// use cchq_core::services::{Action, Backend, ServiceBackend, ServiceDef, UnitState};
/// use cchq_core::transport::Output;
///
/// #[derive(Debug)]
/// struct Docker {
///     container: String,
/// }
///
/// #[async_trait::async_trait]
/// impl ServiceBackend for Docker {
///     fn describe(&self) -> Backend {
///         Backend::Custom { kind: "docker".into(), name: self.container.clone() }
///     }
///
///     fn command(&self, action: Action, _names: &[String]) -> cchq_core::Result<RemoteCommand> {
///         let c = quote(&self.container);
///         let act = match action {
///             Action::Status => String::new(),
///             a => format!("docker {} {c} >/dev/null; ", a.word()),
///         };
///         Ok(RemoteCommand::shell(format!("{act}docker inspect -f '{{{{.State.Status}}}}' {c}"))
///             .become_user("root"))
///     }
///
///     fn states(
///         &self,
///         _host: &str,
///         _action: Action,
///         names: &[String],
///         answer: &Output,
///     ) -> cchq_core::Result<Vec<UnitState>> {
///         // `running`, `exited`, ...: what `Action::wanted` reads.
///         let state = answer.stdout_str().trim().to_owned();
///         Ok(names
///             .iter()
///             .map(|n| UnitState::new(n, &state, answer.stderr_str().trim()))
///             .collect())
///     }
/// }
///
/// let web = ServiceDef {
///     name: "web".into(),
///     hosts: "webworkers".into(),
///     backend: Arc::new(Docker { container: "web".into() }),
///     app: false,
/// };
/// // Then: `services::plan_with(&env, &[web], &request, action)` and `services::execute`.
/// # let _ = web;
/// ```
#[async_trait]
pub trait ServiceBackend: Send + Sync + fmt::Debug {
    /// What it is, as data: what `--json`, Python and `service help` show, and what two
    /// backends are compared by.
    fn describe(&self) -> Backend;

    /// The supervisord programs the service is made of on `host`, for a backend of programs
    /// (supervisor): they join the host's other programs in one supervisord round trip, `--only`
    /// picks among them, web workers restart in rolling batches. `None` (the default): the
    /// service is acted on as one, through [`Self::command`], its row named after the service.
    fn programs(&self, env: &Environment, host: &str) -> Option<Vec<Program>> {
        let _ = (env, host);
        None
    }

    /// Whether `action` restarts its programs in rolling, health-checked batches (the web
    /// workers). `false` by default.
    fn rolls(&self, action: Action) -> bool {
        let _ = action;
        false
    }

    /// The command that performs `action` on `names` on a host and then reports their states
    /// (for [`Self::states`]).
    ///
    /// # Errors
    /// A name the command cannot carry (`Config`, naming it).
    fn command(&self, action: Action, names: &[String]) -> Result<RemoteCommand>;

    /// How `host`'s answer to [`Self::command`] becomes the state of each of `names`, in their
    /// order. States are the backend's words; [`Action::wanted`] says whether one is what
    /// `action` wants.
    ///
    /// # Errors
    /// An answer that says nothing about the names (the daemon not answering, not its protocol):
    /// the host gets one error row for all of them.
    fn states(
        &self,
        host: &str,
        action: Action,
        names: &[String],
        answer: &Output,
    ) -> Result<Vec<UnitState>>;

    /// After an action that changes something: waits out states still in transition (looking
    /// again on the host) and returns the last ones read. The default returns `states` as they
    /// are (a backend whose command waits itself, as monit's does).
    async fn settle(
        &self,
        transport: &dyn Transport,
        host: &str,
        states: Vec<UnitState>,
    ) -> Vec<UnitState> {
        let _ = (transport, host);
        states
    }

    /// The command that starts it on a host after a reboot, where it is installed there (it
    /// prints what it did); `None` (the default) when `after-reboot` starts it otherwise
    /// (supervisor's programs, after supervisord) or not at all.
    fn start_after_reboot(&self) -> Option<RemoteCommand> {
        None
    }

    /// Performs `action` on `names` on `host`: runs [`Self::command`] there and reads its answer
    /// with [`Self::states`], in one round trip. Rarely overridden.
    ///
    /// # Errors
    /// The transport's (a `Connection` error: the host is unreachable), [`Self::command`]'s and
    /// [`Self::states`]'s.
    async fn run(
        &self,
        transport: &dyn Transport,
        host: &str,
        action: Action,
        names: &[String],
    ) -> Result<Vec<UnitState>> {
        let cmd = self.command(action, names)?;
        let answer = transport.exec(host, &cmd).await?;
        self.states(host, action, names, &answer)
    }
}

/// The state of one program, unit or check after an action, as its backend reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// The name it was asked about.
    pub name: String,
    /// Its state, in the backend's words (`RUNNING`, `running`, `OK`, `Not monitored`, ...).
    pub state: String,
    /// Uptime, exit description, or what the host printed.
    pub detail: String,
    /// What the action itself reported (errors), shown after the detail when the state is not
    /// the one the action wanted; empty when it went as asked.
    pub note: String,
}

impl UnitState {
    /// `name` in `state`, with `detail` and no note.
    pub fn new(name: &str, state: &str, detail: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: state.to_owned(),
            detail: detail.to_owned(),
            note: String::new(),
        }
    }
}

/// What a backend is, as data ([`ServiceBackend::describe`]): serialized under `backend` in
/// `--json` and Python, and shown by `service help` ([`fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Backend {
    /// supervisord programs (derived from `app-processes.yml`).
    Supervisor {
        /// The kinds of program that make up the service.
        kinds: Vec<ProgramKind>,
    },
    /// A system service, controlled through `service` as commcare-cloud controls it
    /// (`service <name> status`, and Ansible's `service` module to change it): its systemd unit on a
    /// host that runs systemd, its init script on one that does not.
    Systemd {
        /// The unit (the init script's name).
        unit: String,
    },
    /// A monit service (`monit status <name>`, as commcare-cloud checks them).
    Monit {
        /// The name of monit's check, as commcare-cloud's monit configuration names it.
        name: String,
    },
    /// A backend of an embedder's own.
    Custom {
        /// What kind of backend it is (`docker`, ...).
        kind: String,
        /// What it controls.
        name: String,
    },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Supervisor { .. } => f.write_str("supervisor"),
            Self::Systemd { unit } => write!(f, "systemd unit `{unit}`"),
            Self::Monit { name } => write!(f, "monit `{name}`"),
            Self::Custom { kind, name } => write!(f, "{kind} `{name}`"),
        }
    }
}

/// Backends are equal when they describe the same thing.
impl PartialEq for dyn ServiceBackend {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

impl Eq for dyn ServiceBackend {}

/// A backend is its description, for `--json` and Python.
impl Serialize for dyn ServiceBackend {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.describe().serialize(s)
    }
}

impl PartialEq<Backend> for Arc<dyn ServiceBackend> {
    fn eq(&self, other: &Backend) -> bool {
        self.describe() == *other
    }
}

/// Serializes a shared backend as its description (`#[serde(serialize_with)]`).
pub(crate) fn serialize_shared<S: Serializer>(
    b: &Arc<dyn ServiceBackend>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    b.describe().serialize(s)
}

/// Serializes `(service, backend)` pairs with each backend as its description.
pub(crate) fn serialize_units<S: Serializer>(
    units: &[(String, Arc<dyn ServiceBackend>)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(units.len()))?;
    for (name, b) in units {
        seq.serialize_element(&(name, b.describe()))?;
    }
    seq.end()
}
