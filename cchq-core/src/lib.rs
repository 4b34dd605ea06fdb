//! `cchq-core`: the SDK behind the `cchq` command line and the `cchq` Python package.
//!
//! It knows how to load commcare-cloud environments ([`environment`]), select hosts with Ansible's
//! inventory and pattern rules ([`inventory`]) as typed [`Host`]s (address, variables, SSH or local
//! route: [`host`]), and reach hosts through one I/O seam, the [`transport::Transport`] trait
//! (OpenSSH, local processes, an in-memory fake, a mock). Fan-out over many hosts is [`fanout`].
//! The core never prints: long-running work reports typed [`events`].

// The core never prints (events go through `EventSink`), and a panic is never its way to fail.
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod after_reboot;
pub mod app_processes;
pub mod apply;
pub mod bounded;
pub mod cancel;
pub mod clock;
pub mod command;
pub mod component;
pub mod daily;
pub mod deploy;
pub mod django_manage;
pub mod downtime;
pub mod drift;
pub mod environment;
pub mod error;
pub mod events;
pub mod fab_settings;
pub mod fanout;
pub mod host;
pub(crate) mod http;
pub mod identity;
pub mod inventory;
pub mod jinja;
pub mod names;
pub mod notify;
pub mod paths;
pub mod postgresql;
pub mod profile;
pub mod redact;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod templates;
pub(crate) mod tls;
pub mod transport;
pub mod validate;
pub mod vault;
pub mod yaml;

pub use command::RemoteCommand;
pub use environment::Environment;
pub use error::{Details, Error, ErrorKind, Result};
pub use host::{Host, Route};

/// A variable value, as found in YAML files and inventories.
pub type Value = yaml_serde::Value;

/// The fixture environment `name` of the repository (`cchq_testsupport::fixtures::environments`),
/// loaded, for unit tests.
#[cfg(test)]
pub(crate) fn fixture_env(name: &str) -> Environment {
    Environment::load(&cchq_testsupport::fixtures::environments(), name).unwrap()
}
