//! The drift guard: the record of what was applied on each host (`.cchq-applied.json`), the
//! operator's checkout of the environment ([`Checkout`]), and the assessment of one against the
//! other ([`assess`], [`check_drift`]).
//!
//! Before settings are overwritten, the record on each host is compared with the operator's copy
//! of the environment: settings applied from an environment commit that is not an ancestor of the
//! operator's `HEAD` (a newer or diverged copy) or files that no longer match the recorded hashes
//! (edited by hand) stop the change, unless forced ([`crate::apply::Plan::decide`]). Writing the
//! settings and the record is [`crate::apply`]'s; this module only reads and judges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::transport::{FileWrite, ReadOptions, Transport, WriteOptions};

pub use crate::paths::APPLIED_FILE;

/// The path of the record of what was applied on every host.
pub fn applied_path(env: &Environment) -> String {
    env.paths().applied_record()
}

/// What `.cchq-applied.json` holds on each host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Who applied (`user@machine`).
    pub by: String,
    /// When, in UTC (RFC 3339).
    pub at: String,
    /// The version of cchq that applied.
    pub cchq_version: String,
    /// The environment directory's git commit (`None` when it was not a git checkout).
    pub env_commit: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub dirty: bool,
    /// The sha256 (hex) of each file written, by path on the host.
    pub files: BTreeMap<String, String>,
}

impl Applied {
    /// A record made now, by this operator, from `checkout`, of `files` (path, contents).
    pub fn from_checkout(checkout: Option<&Checkout>, files: &[(String, &[u8])]) -> Self {
        Self {
            by: operator(),
            at: crate::clock::rfc3339(crate::clock::now()),
            cchq_version: env!("CARGO_PKG_VERSION").to_owned(),
            env_commit: checkout.map(|c| c.commit.clone()),
            dirty: checkout.is_some_and(|c| c.dirty),
            files: files
                .iter()
                .map(|(p, c)| (p.clone(), sha256_hex(c)))
                .collect(),
        }
    }

    /// `alice@laptop at 2026-11-26T16:00:00Z from environment commit 1a2b3c4d5e6f`.
    pub fn describe(&self) -> String {
        let from = match &self.env_commit {
            Some(c) => format!(
                "environment commit {}{}",
                short(c),
                if self.dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            ),
            None => "an environment that is not a git checkout".to_owned(),
        };
        format!(
            "{} at {} from {from} (cchq {})",
            self.by, self.at, self.cchq_version
        )
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `login@machine` of whoever runs cchq: [`crate::identity::operator`].
pub fn operator() -> String {
    crate::identity::operator()
}

fn run_text(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Reads the record on `host` (`None` when there is none; an unreadable record is an error).
pub async fn read_applied(
    env: &Environment,
    transport: &dyn Transport,
    host: &str,
) -> Result<Option<Applied>> {
    let opts = ReadOptions {
        become_user: Some(env.app_user().to_owned()),
    };
    let Some(bytes) = transport.read_file(host, &applied_path(env), &opts).await? else {
        return Ok(None);
    };
    parse_applied(env, host, &bytes).map(Some)
}

pub(crate) fn parse_applied(env: &Environment, host: &str, bytes: &[u8]) -> Result<Applied> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::config(format!(
            "`{}` on `{host}` is not a record cchq wrote: {e}",
            applied_path(env)
        ))
        .with_source(e)
        .with_hint("remove it (it is only a record) and run update-config again")
    })
}

/// The record as the file written on the hosts (0600 like the settings themselves: the hashes
/// are of files that hold secrets).
pub(crate) fn applied_file(env: &Environment, record: &Applied) -> Result<FileWrite> {
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| Error::internal(e.to_string()).with_source(e))?
        + "\n";
    Ok(FileWrite {
        path: applied_path(env),
        contents: text.into_bytes(),
        mode: Some(0o600),
    })
}

pub(crate) async fn write_applied(
    env: &Environment,
    transport: &dyn Transport,
    host: &str,
    record: &Applied,
) -> Result<()> {
    let opts = WriteOptions {
        mode: None,
        become_user: Some(env.app_user().to_owned()),
    };
    transport
        .write_files(host, &[applied_file(env, record)?], &opts)
        .await
}

// ---------------------------------------------------------------------------------------------
// The operator's checkout

/// The git state of an environment directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The directory.
    pub dir: PathBuf,
    /// `HEAD`.
    pub commit: String,
    /// Whether the directory has uncommitted changes (`git status --porcelain -- .`).
    pub dirty: bool,
    /// How many commits the upstream branch has that `HEAD` does not (`None`: no upstream).
    pub behind: Option<u64>,
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    crate::vault::scrub_env(&mut c).arg("-C").arg(dir);
    c
}

impl Checkout {
    /// The state of `dir`, or `None` when it is not in a git checkout (or git is missing).
    pub fn of(dir: &Path) -> Option<Self> {
        let commit = run_text(git(dir).args(["rev-parse", "--verify", "-q", "HEAD"]))?;
        let status = git(dir)
            .args(["status", "--porcelain", "--", "."])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let dirty = !status.stdout.is_empty();
        let behind = if run_text(git(dir).args([
            "rev-parse",
            "--abbrev-ref",
            "--symbolic-full-name",
            "@{u}",
        ]))
        .is_some()
        {
            run_text(git(dir).args(["rev-list", "--count", "HEAD..@{u}"]))
                .and_then(|n| n.parse().ok())
        } else {
            None
        };
        Some(Self {
            dir: dir.to_owned(),
            commit,
            dirty,
            behind,
        })
    }

    /// [`Checkout::of`] for async code: its `git` processes run on a blocking thread, never on
    /// one of the runtime's.
    pub async fn of_in_background(dir: &Path) -> Option<Self> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Self::of(&dir))
            .await
            .unwrap_or_else(|e| rethrow(e, None))
    }

    /// Whether `commit` is `HEAD` or one of its ancestors (`false` for a commit this checkout
    /// does not have: a newer one, not fetched yet).
    pub fn contains(&self, commit: &str) -> bool {
        commit == self.commit
            || git(&self.dir)
                .args(["merge-base", "--is-ancestor", commit, "HEAD"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }
}

/// The value of a blocking task that did not finish: its panic goes on in the caller; a task
/// cancelled (the runtime shutting down) gives `otherwise`.
pub(crate) fn rethrow<T>(e: tokio::task::JoinError, otherwise: T) -> T {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    otherwise
}

/// [`assess`] for async code: telling whether the record's commit is in the checkout's history
/// runs `git`, on a blocking thread.
pub(crate) async fn assess_in_background(
    host: &str,
    record: &Applied,
    checkout: Option<&Checkout>,
    contents: BTreeMap<String, Option<Vec<u8>>>,
) -> Vec<Drift> {
    let (host, record, checkout) = (host.to_owned(), record.clone(), checkout.cloned());
    tokio::task::spawn_blocking(move || assess(&host, &record, checkout.as_ref(), &contents))
        .await
        .unwrap_or_else(|e| rethrow(e, Vec::new()))
}

/// Warnings about the environment's checkout for `validate-environment-settings`: uncommitted
/// changes, or commits upstream that are not pulled.
pub fn checkout_warnings(env: &Environment) -> Vec<String> {
    let Some(c) = Checkout::of(&env.dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if c.dirty {
        out.push(format!(
            "`{}` has uncommitted changes: settings applied from it cannot be traced to a commit (commit them, or `git stash`)",
            env.dir.display()
        ));
    }
    if let Some(n) = c.behind.filter(|n| *n > 0) {
        out.push(format!(
            "`{}` is {n} commit(s) behind its upstream: pull before applying settings or deploying (`git -C {} pull`)",
            env.dir.display(),
            env.dir.display()
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Drift

/// What kind of drift was found on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Applied from an environment commit the operator's checkout does not contain.
    NewerEnvironment,
    /// A settings file no longer matches what was applied.
    HandEdit,
    /// Applied from a checkout with uncommitted changes at the operator's commit.
    DirtyApply,
    /// Cannot tell (one side is not a git checkout).
    Unverifiable,
}

/// One finding of the drift guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The host.
    pub host: String,
    /// What was found.
    pub kind: DriftKind,
    /// A sentence for the operator.
    pub message: String,
    /// Whether it stops the change (unless forced).
    pub blocking: bool,
}

/// Compares the record on `host` with the operator's checkout and with the files now on the host
/// (`contents`: path -> bytes, `None` for a missing file; paths not given are not checked).
pub fn assess(
    host: &str,
    record: &Applied,
    checkout: Option<&Checkout>,
    contents: &BTreeMap<String, Option<Vec<u8>>>,
) -> Vec<Drift> {
    let mut out = Vec::new();
    let who = record.describe();
    match (&record.env_commit, checkout) {
        (Some(c), Some(co)) if *c == co.commit => {
            if record.dirty {
                out.push(Drift {
                    host: host.to_owned(),
                    kind: DriftKind::DirtyApply,
                    message: format!("settings on `{host}` were applied by {who}: uncommitted changes may differ from yours"),
                    blocking: false,
                });
            }
        }
        (Some(c), Some(co)) => {
            if !co.contains(c) {
                out.push(Drift {
                    host: host.to_owned(),
                    kind: DriftKind::NewerEnvironment,
                    message: format!(
                        "settings on `{host}` were applied by {who}, a commit that is not in the history of your checkout (HEAD {}): \
                         they come from a newer or diverged copy of the environment",
                        short(&co.commit)
                    ),
                    blocking: true,
                });
            }
        }
        (Some(_), None) => out.push(Drift {
            host: host.to_owned(),
            kind: DriftKind::Unverifiable,
            message: format!(
                "settings on `{host}` were applied by {who}; this environment is not a git checkout, so cchq cannot tell which is newer"
            ),
            blocking: false,
        }),
        (None, _) => {}
    }
    for (path, hash) in &record.files {
        if let Some(Some(now)) = contents.get(path)
            && sha256_hex(now) != *hash
        {
            out.push(Drift {
                host: host.to_owned(),
                kind: DriftKind::HandEdit,
                message: format!(
                    "`{path}` on `{host}` was changed after {who} applied it (edited by hand?)"
                ),
                blocking: true,
            });
        }
    }
    out
}

/// The error for blocking drift findings (of `update-config`).
pub fn drift_error(env: &Environment, drifts: &[&Drift]) -> Error {
    drift_error_for(env, drifts, "update-config")
}

/// The error for blocking drift findings of `command` (`update-config`, `deploy --update-config`):
/// what drifted where, and how to resolve it.
pub fn drift_error_for(env: &Environment, drifts: &[&Drift], command: &str) -> Error {
    let hosts: BTreeSet<&str> = drifts.iter().map(|d| d.host.as_str()).collect();
    let mut msg = format!(
        "the settings on {} host(s) were not made from this copy of the environment:",
        hosts.len()
    );
    for d in drifts {
        msg.push_str("\n  - ");
        msg.push_str(&d.message);
    }
    Error::config(msg).with_hint(format!(
        "update your environment checkout (`git -C {dir} pull`), then run `cchq {env} {command}` again; carry any hand edit into \
         the environment first (`update-config --check` shows its keys, values masked). `--force` overwrites the hosts' settings anyway",
        dir = env.dir.display(),
        env = env.name
    ))
}

/// Reads the record and the recorded files on each host and assesses them.
pub async fn drift_report(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
) -> Result<Vec<Drift>> {
    let checkout = Checkout::of_in_background(&env.dir).await;
    let futs = hosts.iter().map(|h| {
        let checkout = checkout.clone();
        async move {
            let Some(record) = read_applied(env, transport, h).await? else {
                return Ok(Vec::new());
            };
            let opts = ReadOptions {
                become_user: Some(env.app_user().to_owned()),
            };
            let mut contents = BTreeMap::new();
            for path in record.files.keys() {
                contents.insert(path.clone(), transport.read_file(h, path, &opts).await?);
            }
            Ok::<_, Error>(assess_in_background(h, &record, checkout.as_ref(), contents).await)
        }
    });
    let mut out = Vec::new();
    for r in crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await {
        out.extend(r?);
    }
    Ok(out)
}

/// Stops with an error when the settings on any of `hosts` were applied from a newer or
/// diverged copy of the environment, or were edited by hand since they were applied.
pub async fn check_drift(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
) -> Result<()> {
    let report = drift_report(env, transport, hosts).await?;
    let blocking: Vec<&Drift> = report.iter().filter(|d| d.blocking).collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(drift_error(env, &blocking))
    }
}
