//! Dispatch: parse the command line, load the environment, run one subcommand, map the outcome to
//! an exit code. One file per subcommand.

mod after_reboot;
pub(crate) mod ansible_playbook;
mod check_services;
pub(crate) mod completions;
pub(crate) mod copy_files;
mod deploy;
pub(crate) mod django_manage;
mod downtime;
mod hosts;
pub(crate) mod kill_stale_celery_workers;
pub(crate) mod list_postgresql_dbs;
mod lookup;
pub(crate) mod ping;
mod run_shell_command;
pub(crate) mod secrets;
mod service;
mod ssh;
pub(crate) mod tmux;
pub(crate) mod update_config;
pub(crate) mod update_local_known_hosts;
pub mod update_supervisor_confs;
mod validate;

use std::ffi::OsString;

use cchq_core::{Environment, Error, ErrorKind};
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::render;

/// How `cchq` ends; the process exit code in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked.
    Success,
    /// The work ran and something failed.
    Failure,
    /// Bad usage.
    Usage,
    /// An error of the given kind.
    Error(ErrorKind),
    /// A child process's own exit code (`ssh`).
    Code(u8),
}

impl ExitStatus {
    /// The status of work over many hosts: any unreachable host is a connection error (5), else
    /// any failure is a failure (1).
    pub fn from_counts(failed: usize, unreachable: usize) -> Self {
        if unreachable > 0 {
            Self::Error(ErrorKind::Connection)
        } else if failed > 0 {
            Self::Failure
        } else {
            Self::Success
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Code(c) => c,
            Self::Error(kind) => match kind {
                ErrorKind::CommandFailed => 1,
                ErrorKind::Usage => 2,
                ErrorKind::Config | ErrorKind::Io => 3,
                ErrorKind::NotFound | ErrorKind::Pattern => 4,
                ErrorKind::Connection => 5,
                ErrorKind::Vault => 6,
                ErrorKind::LockHeld => 7,
                ErrorKind::DeployFailed => 8,
                ErrorKind::Interrupted => 130,
                _ => 70,
            },
        }
    }
}

/// Runs `cchq` with `args` (program name first).
pub fn main(args: Vec<OsString>) -> ExitStatus {
    if completions::complete_env(&args) {
        return ExitStatus::Success;
    }
    if args.get(1).and_then(|a| a.to_str()) == Some("completions") {
        return completions::run(&args);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(c) = render::color_from_args(&args) {
                render::set_color(c);
            }
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Usage
            } else {
                ExitStatus::Success
            };
        }
    };
    match run(cli) {
        Ok(status) => status,
        Err(err) => {
            render::error(&err);
            ExitStatus::Error(err.kind())
        }
    }
}

fn run(cli: Cli) -> Result<ExitStatus, Error> {
    render::set_color(cli.color);
    let root = cchq_core::environment::environments_root(cli.environments.as_deref())?;
    let env = Environment::load(&root, &cli.env)?;
    match cli.command {
        Command::Validate => validate::run(&env),
        Command::Hosts(args) => hosts::run(&env, &args),
        Command::Lookup { server } => lookup::run(&env, &server),
        Command::Ssh { server, ssh_args } => ssh::run(&env, &server, &ssh_args),
        Command::RunShellCommand(args) => run_shell_command::run(&env, &args),
        Command::Service(args) => service::run(&env, &args),
        Command::Downtime(args) => downtime::run(&env, &args),
        Command::Deploy(args) => deploy::run(&env, &args),
        Command::Rollback {
            to,
            component,
            yes,
            json,
            no_notify,
        } => deploy::rollback(
            &env,
            to.as_deref(),
            component.parse()?,
            yes,
            json,
            !no_notify,
        ),
        Command::PreindexViews {
            commcare_rev,
            yes,
            json,
        } => deploy::preindex_views(&env, commcare_rev.as_deref(), yes, json),
        Command::ListReleases {
            limit,
            component,
            json,
        } => deploy::list_releases(&env, limit.as_deref(), component.parse()?, json),
        Command::CleanReleases {
            keep,
            exclude,
            component,
            yes,
        } => deploy::clean_releases(&env, keep, &exclude, component.parse()?, yes),
        Command::Lock {
            action,
            timeout,
            yes,
            force,
        } => deploy::lock(&env, &action, timeout, yes, force),
        Command::AfterReboot {
            pattern,
            limit,
            json,
        } => after_reboot::run(&env, &pattern, &limit, json),
        Command::CheckServices {
            services,
            limit,
            verbose,
            json,
        } => check_services::run(&env, &services, limit.as_deref(), verbose, json),
        Command::UpdateSupervisorConfs(args) => update_supervisor_confs::run(&env, &args),
        Command::UpdateConfig(args) => update_config::run(&env, &args),
        Command::Secrets(args) => secrets::run(&env, &args),
        Command::DjangoManage(args) => django_manage::run(&env, &args),
        Command::Ping(args) => ping::run(&env, &args),
        Command::Tmux(args) => tmux::run(&env, &args),
        Command::CopyFiles(args) => copy_files::run(&env, &args),
        Command::UpdateLocalKnownHosts(args) => update_local_known_hosts::run(&env, &args),
        Command::KillStaleCeleryWorkers(args) => kill_stale_celery_workers::run(&env, &args),
        Command::ListPostgresqlDbs { compare, json } => {
            list_postgresql_dbs::run(&env, compare, json)
        }
        Command::AnsiblePlaybook(args) => ansible_playbook::run(&env, &args),
    }
}

/// One tokio runtime for the commands that talk to hosts.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))
}

/// Selects hosts with `pattern`, printing Ansible's warnings for parts that match nothing.
pub fn select(env: &Environment, pattern: &str) -> Result<Vec<String>, Error> {
    shown(env, env.inventory.select(pattern))
}

/// [`select`] of the hosts of `base` within an operator's `--limit` (read whole: a comma in it is
/// a union, not a split of `base:&...`).
pub fn select_within(env: &Environment, base: &str, limit: &str) -> Result<Vec<String>, Error> {
    shown(env, env.inventory.select_within(base, limit))
}

/// A selection's hosts, its warnings shown; its error naming the environment.
fn shown(
    env: &Environment,
    sel: Result<cchq_core::inventory::Selection, Error>,
) -> Result<Vec<String>, Error> {
    let sel = sel.map_err(|e| e.context(format!("environment `{}`", env.name)))?;
    for w in &sel.warnings {
        render::warning(w);
    }
    Ok(sel.hosts)
}

/// The vault's contents, decrypting an ansible-vault file with the password from
/// `ANSIBLE_VAULT_PASSWORD`, `--vault-password-file` style `CCHQ_VAULT_PASSWORD_FILE`, or a prompt.
pub fn vault_value(env: &Environment) -> Result<cchq_core::Value, Error> {
    env.vault_value(|| secrets::password(&env.name))?
        .ok_or_else(|| Error::config(format!("environment `{}` has no vault.yml", env.name)))
}

/// `env`, or (`on`: `--use-factory-auth`) a copy of it that logs in with factory auth
/// ([`Environment::use_factory_auth`]).
pub fn factory_auth(
    env: &Environment,
    on: bool,
) -> Result<std::borrow::Cow<'_, Environment>, Error> {
    if !on {
        return Ok(std::borrow::Cow::Borrowed(env));
    }
    let mut e = env.clone();
    e.use_factory_auth()?;
    Ok(std::borrow::Cow::Owned(e))
}
