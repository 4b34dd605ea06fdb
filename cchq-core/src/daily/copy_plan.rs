//! `copy-files PLAN.yml prepare|copy|cleanup`: commcare-cloud's plan-driven copy between hosts
//! (`commands/migrations/copy_files.py`), where each target host pulls with `rsync` over ssh from
//! its source hosts, without the data passing through this machine.
//!
//! The plan file is commcare-cloud's:
//!
//! ```yaml
//! copy_files:
//!   - <target host>:
//!       - source_host: <source host>
//!         source_user: <user>        # optional: the environment's remote user (`ansible`)
//!         source_dir: /opt/data/
//!         target_dir: /opt/data/
//!         target_user: root          # optional, cchq's own: who runs rsync on the target
//!         rsync_args: [--checksum]   # optional
//!         files: [redis/, x/y.txt]   # optional: relative to source_dir (else all of it)
//!         exclude: [logs/*]          # optional
//! ```
//!
//! Hosts are inventory hosts or groups of one host. `source_env` (another environment) is
//! refused: cchq reaches the hosts of one environment per run.
//!
//! - `prepare`: on each target, as its target user, a key pair made for this plan in a private
//!   (0700) directory (`/var/tmp/cchq-copy-files.<id>`, the id `<deploy_env>+<plan file stem>`); its public key goes into each of its
//!   sources' `~source_user/.ssh/authorized_keys`, as `restrict <key> cchq-copy-files:<id>`
//!   (no forwarding, no pty). The private key never leaves the target; nothing secret is on a
//!   command line. The source's host key, from the environment's `known_hosts`, is written beside
//!   the key: the target checks it strictly.
//! - `copy`: per entry, on the target as the target user, `rsync -aH --append-verify` (as
//!   commcare-cloud) with the plan's `rsync_args`, `--exclude`s and `--files-from` (a list
//!   written into the key directory), from `source_user@<source address>:source_dir` to
//!   `target_dir`; `dry_run` adds `--dry-run`.
//! - `cleanup`: the lines `prepare` added (matched by their `cchq-copy-files:<id>` comment) are
//!   removed from each source's authorized_keys, the rest of the file kept as it was, and the key
//!   directory is removed from each target.
//!
//! Everything in the plan is checked before any host is touched; each action first checks every
//! host it needs (reachable, `rsync`/`ssh-keygen` installed, the source users exist) before it
//! changes any of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Value;
use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{Transport, WriteOptions};

/// The three steps, as commcare-cloud names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Make the keys and authorize them.
    Prepare,
    /// Run rsync.
    Copy,
    /// Remove the keys and their authorization.
    Cleanup,
}

impl Action {
    /// The action named `name` (`prepare`, `copy`, `cleanup`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "prepare" => Some(Self::Prepare),
            "copy" => Some(Self::Copy),
            "cleanup" => Some(Self::Cleanup),
            _ => None,
        }
    }
}

/// Whether a `copy-files` command line is the plan form: a `.yml`/`.yaml` local path, then an
/// action.
pub fn is_plan_form(first: &str, second: &str) -> bool {
    let local = first
        .split_once(':')
        .is_none_or(|(server, _)| server.contains('/'));
    local
        && (first.ends_with(".yml") || first.ends_with(".yaml"))
        && Action::parse(second).is_some()
}

/// One entry of the plan: what one target pulls from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Where it is in the plan file (`copy_files[0].redis1[0]`).
    pub at: String,
    /// The target (inventory host).
    pub target_host: String,
    /// Who runs rsync there (and owns the key).
    pub target_user: String,
    /// The source (inventory host).
    pub source_host: String,
    /// Who the target logs in as on the source.
    pub source_user: String,
    /// The source directory.
    pub source_dir: String,
    /// The target directory.
    pub target_dir: String,
    /// More rsync arguments.
    pub rsync_args: Vec<String>,
    /// Files and directories (ending in `/`) under `source_dir`; empty: all of it.
    pub files: Vec<String>,
    /// Patterns to leave out.
    pub exclude: Vec<String>,
}

/// A loaded, checked plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The plan file.
    pub path: PathBuf,
    /// Names this plan's keys and directories: `<deploy_env>-<file stem>`.
    pub id: String,
    /// The entries, in the file's order (only the targets `--limit` selects).
    pub entries: Vec<Entry>,
    /// Each source's address as the targets reach it, and its `known_hosts` lines.
    sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    host: String,
    address: String,
    port: Option<u16>,
    known_hosts: String,
}

impl CopyPlan {
    /// The `(target host, target user)` pairs, in order.
    pub fn targets(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in &self.entries {
            let t = (e.target_host.clone(), e.target_user.clone());
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Every host the plan touches (targets, then sources), once each.
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in self
            .entries
            .iter()
            .map(|e| &e.target_host)
            .chain(self.entries.iter().map(|e| &e.source_host))
        {
            if !out.contains(h) {
                out.push(h.clone());
            }
        }
        out
    }

    /// The private directory of a target's key and lists.
    pub fn key_dir(&self, target_host: &str, target_user: &str) -> String {
        format!(
            "/var/tmp/cchq-copy-files.{}.{}.{}",
            self.id,
            safe(target_host),
            safe(target_user)
        )
    }

    /// The comment that marks the authorized_keys lines of a target's key.
    pub fn marker(&self, target_host: &str, target_user: &str) -> String {
        format!(
            "cchq-copy-files:{}:{}:{}",
            self.id,
            safe(target_host),
            safe(target_user)
        )
    }

    fn source(&self, host: &str) -> &Source {
        self.sources
            .iter()
            .find(|s| s.host == host)
            .unwrap_or(&self.sources[0])
    }

    /// The `(source host, source user)` pairs a target pulls from.
    fn sources_of(&self, target_host: &str, target_user: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.target_host == target_host && e.target_user == target_user)
        {
            let s = (e.source_host.clone(), e.source_user.clone());
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// `text` with only `[A-Za-z0-9._-]` (others become `_`).
/// A plan's id: `<deploy_env>+<plan file stem>`. `+` is in neither part (`deploy_env` is
/// `[A-Za-z0-9_.-]+`, [`safe`] keeps no `+`), so env `prod`'s plan `eu-redis.yml` and env
/// `prod-eu`'s `redis.yml` have two ids: one environment's cleanup never removes another's keys
/// or key directories on a shared host.
fn plan_id(deploy_env: &str, stem: &str) -> String {
    format!("{}+{}", safe(deploy_env), safe(stem))
}

fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

const ENTRY_KEYS: &[&str] = &[
    "source_host",
    "source_user",
    "source_dir",
    "target_dir",
    "target_user",
    "rsync_args",
    "files",
    "exclude",
];

/// rsync arguments cchq sets itself (the remote shell carries the key and the host key check).
const OWN_ARGS: &[&str] = &[
    "-e",
    "--rsh",
    "--rsync-path",
    "--files-from",
    "--dry-run",
    "-n",
];

fn plan_error(path: &Path, at: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{}: `{at}`: {msg}", path.display()))
}

fn string_of(path: &Path, at: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => {
            Err(plan_error(path, at, "expected a string").with_hint("write a host name or a path"))
        }
    }
}

fn strings_of(path: &Path, at: &str, v: Option<&Value>) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(s)) => s
            .iter()
            .enumerate()
            .map(|(i, x)| string_of(path, &format!("{at}[{i}]"), x))
            .collect(),
        Some(_) => Err(plan_error(path, at, "expected a list").with_hint(format!(
            "write `{}: [a, b]`",
            at.rsplit('.').next().unwrap_or(at)
        ))),
    }
}

/// The inventory host `name` names (a host or a group of one host).
fn host_of(env: &Environment, path: &Path, at: &str, name: &str) -> Result<String> {
    match crate::app_processes::translate_item(&env.inventory, name) {
        Ok(Some(h)) => Ok(h.to_owned()),
        Ok(None) => Err(plan_error(path, at, "`None` is no host")
            .with_hint("name an inventory host or a group of one host")),
        Err(e) => Err(plan_error(path, at, e).with_hint(format!(
            "`cchq {} hosts` lists the inventory's hosts and groups",
            env.name
        ))),
    }
}

/// The `known_hosts` lines of the environment that name `name` (`address` or `[address]:port`).
fn known_lines(env: &Environment, name: &str) -> String {
    let path = crate::daily::known_hosts::path(env);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| {
            let l = l.trim();
            let first = l
                .strip_prefix("@cert-authority ")
                .unwrap_or(l)
                .split_whitespace()
                .next()
                .unwrap_or("");
            !l.starts_with('#') && !l.starts_with("@revoked") && first.split(',').any(|n| n == name)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Reads and checks the plan file at `path` for `env`, keeping the targets `limit` selects.
///
/// # Errors
/// [`ErrorKind::Config`] naming the file and the entry at fault: not YAML, unknown or missing
/// keys, an unknown host, a relative directory, a file list entry with a newline, an rsync
/// argument cchq sets itself, a source without a key in the environment's `known_hosts`, a
/// `source_env` other than `env`. [`ErrorKind::NotFound`] for a missing file;
/// [`ErrorKind::Usage`] for a limit that selects no target.
pub fn load(env: &Environment, path: &Path, limit: Option<&str>) -> Result<CopyPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(ErrorKind::NotFound, format!("plan file `{}` not found", path.display()))
            .with_hint("give the path of a plan file (see `cchq ENV copy-files --help`); to copy a file named so from django_manage[0], write `-:PATH`"),
        _ => Error::io(format!("cannot read `{}`", path.display()), e),
    })?;
    let doc = crate::yaml::load(&text, path)?;
    let Value::Mapping(top) = &doc else {
        return Err(Error::config(format!(
            "{}: expected a mapping with `copy_files`",
            path.display()
        ))
        .with_hint("see `cchq ENV copy-files --help` for the plan format"));
    };
    for (k, v) in top {
        match k.as_str() {
            Some("copy_files") => {}
            Some("source_env") => {
                let named = string_of(path, "source_env", v)?;
                if named != env.name {
                    return Err(plan_error(path, "source_env", format!("`{named}` is another environment than `{}`", env.name))
                        .with_hint("cchq copies between the hosts of one environment: drop `source_env`, or add the source hosts to this environment's inventory"));
                }
            }
            _ => {
                return Err(plan_error(
                    path,
                    &crate::yaml::scalar_to_string(k).unwrap_or_default(),
                    "unknown key",
                )
                .with_hint("a plan has `copy_files` (and optionally `source_env`)"));
            }
        }
    }
    let Some(Value::Sequence(targets)) = top.get("copy_files") else {
        return Err(
            Error::config(format!("{}: no `copy_files` list", path.display()))
                .with_hint("write `copy_files:` with a list of `<target host>: [entries]`"),
        );
    };
    let mut entries = Vec::new();
    for (i, item) in targets.iter().enumerate() {
        let Value::Mapping(by_target) = item else {
            return Err(plan_error(
                path,
                &format!("copy_files[{i}]"),
                "expected `<target host>: [entries]`",
            ));
        };
        for (target, list) in by_target {
            let target_name = crate::yaml::scalar_to_string(target).unwrap_or_default();
            let at_target = format!("copy_files[{i}].{target_name}");
            let target_host = host_of(env, path, &at_target, &target_name)?;
            let Value::Sequence(list) = list else {
                return Err(plan_error(path, &at_target, "expected a list of entries")
                    .with_hint("each entry has source_host, source_dir and target_dir"));
            };
            for (j, e) in list.iter().enumerate() {
                let at = format!("{at_target}[{j}]");
                let Value::Mapping(m) = e else {
                    return Err(plan_error(path, &at, "expected a mapping"));
                };
                for k in m.keys() {
                    let k = crate::yaml::scalar_to_string(k).unwrap_or_default();
                    if !ENTRY_KEYS.contains(&k.as_str()) {
                        return Err(plan_error(path, &format!("{at}.{k}"), "unknown key")
                            .with_hint(format!("an entry's keys are {}", ENTRY_KEYS.join(", "))));
                    }
                }
                let get = |k: &str| m.get(k).filter(|v| !v.is_null());
                let required = |k: &str| -> Result<String> {
                    let v = get(k).ok_or_else(|| {
                        plan_error(path, &at, format!("`{k}` is missing"))
                            .with_hint("each entry has source_host, source_dir and target_dir")
                    })?;
                    string_of(path, &format!("{at}.{k}"), v)
                };
                let source_name = required("source_host")?;
                let source_host = host_of(env, path, &format!("{at}.source_host"), &source_name)?;
                let mut dirs = Vec::new();
                for k in ["source_dir", "target_dir"] {
                    let d = required(k)?;
                    if !d.starts_with('/') || d.contains('\n') {
                        return Err(plan_error(
                            path,
                            &format!("{at}.{k}"),
                            format!("`{d}` is not an absolute path"),
                        )
                        .with_hint("write the directory from `/`, e.g. `/opt/data/`"));
                    }
                    dirs.push(d);
                }
                let user = |k: &str, default: String| -> Result<String> {
                    let u = get(k)
                        .map(|v| string_of(path, &format!("{at}.{k}"), v))
                        .transpose()?
                        .unwrap_or(default);
                    if u.is_empty()
                        || !u
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        return Err(plan_error(
                            path,
                            &format!("{at}.{k}"),
                            format!("`{u}` is not a user name"),
                        ));
                    }
                    Ok(u)
                };
                let source_user = user("source_user", env.login_user())?;
                let target_user = user("target_user", "root".to_owned())?;
                let rsync_args = strings_of(path, &format!("{at}.rsync_args"), get("rsync_args"))?;
                for a in &rsync_args {
                    let name = a.split('=').next().unwrap_or(a);
                    if OWN_ARGS.contains(&name) || (a.starts_with("-e") && !a.starts_with("--")) {
                        return Err(plan_error(path, &format!("{at}.rsync_args"), format!("`{a}` is set by cchq"))
                            .with_hint("cchq sets the remote shell (with the plan's key), the file list and --dry-run (`copy --check`)"));
                    }
                }
                let files = strings_of(path, &format!("{at}.files"), get("files"))?;
                let exclude = strings_of(path, &format!("{at}.exclude"), get("exclude"))?;
                if let Some(f) = files
                    .iter()
                    .chain(&exclude)
                    .find(|f| f.contains('\n') || f.is_empty())
                {
                    return Err(plan_error(
                        path,
                        &at,
                        format!("{f:?} is not a file name or pattern"),
                    ));
                }
                let [source_dir, target_dir] = <[String; 2]>::try_from(dirs).unwrap_or_default();
                entries.push(Entry {
                    at,
                    target_host: target_host.clone(),
                    target_user,
                    source_host,
                    source_user,
                    source_dir,
                    target_dir,
                    rsync_args,
                    files,
                    exclude,
                });
            }
        }
    }
    if entries.is_empty() {
        return Err(
            Error::config(format!("{}: `copy_files` has no entries", path.display()))
                .with_hint("add `<target host>: [entries]`"),
        );
    }
    if let Some(limit) = limit {
        let selected: BTreeSet<String> = env.inventory.select(limit)?.hosts.into_iter().collect();
        entries.retain(|e| selected.contains(&e.target_host));
        if entries.is_empty() {
            return Err(Error::usage(format!(
                "--limit `{limit}` selects none of the plan's targets"
            ))
            .with_hint(format!(
                "the targets of `{}` are its `copy_files` hosts",
                path.display()
            )));
        }
    }
    let mut sources: Vec<Source> = Vec::new();
    for e in &entries {
        if sources.iter().any(|s| s.host == e.source_host) {
            continue;
        }
        let address = env.inventory.address(&e.source_host);
        let port = env.inventory.port(&e.source_host).filter(|p| *p != 22);
        let name = match port {
            Some(p) => format!("[{address}]:{p}"),
            None => address.clone(),
        };
        let known_hosts = known_lines(env, &name);
        if known_hosts.is_empty() {
            return Err(plan_error(
                path,
                &format!("{}.source_host", e.at),
                format!("the environment's known_hosts has no key for `{name}` ({})", e.source_host),
            )
            .with_hint(format!(
                "the targets check the source's host key: run `cchq {} update-local-known-hosts --limit {}` first",
                env.name, e.source_host
            )));
        }
        sources.push(Source {
            host: e.source_host.clone(),
            address,
            port,
            known_hosts,
        });
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plan");
    let id = plan_id(&env.meta.deploy_env, stem);
    Ok(CopyPlan {
        path: path.to_path_buf(),
        id,
        entries,
        sources,
    })
}

/// What one step did on one pair of hosts (prepare, cleanup) or for one entry (copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The action.
    pub action: Action,
    /// The plan entry (copy), else the target's first one.
    pub at: String,
    /// `host` (as `user`).
    pub target: String,
    /// `user@host:dir` (copy), `user@host` (prepare, cleanup).
    pub source: String,
    /// What happened, in words.
    pub detail: String,
    /// Files rsync transferred (copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_transferred: Option<u64>,
    /// Bytes of the files transferred (copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_transferred: Option<u64>,
    /// `copy --check`: rsync's `--dry-run`.
    pub dry_run: bool,
}

async fn run(t: &dyn Transport, host: &str, cmd: RemoteCommand, what: &str) -> Result<String> {
    let out = t.exec(host, &cmd).await?;
    if !out.success() {
        let err = out.stderr_str();
        let msg = err.trim().lines().last().unwrap_or("").to_owned();
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!(
                "{what} on `{host}` failed (exit {}): {msg}",
                out.exit_code.map_or("signal".to_owned(), |c| c.to_string())
            ),
        ));
    }
    Ok(out.stdout_str())
}

/// Checks every host an action needs before it changes anything: targets have rsync, ssh and
/// ssh-keygen (as the target user); sources have rsync and the source users.
async fn check_hosts(t: &dyn Transport, plan: &CopyPlan, action: Action) -> Result<()> {
    if action == Action::Cleanup {
        for host in plan.hosts() {
            run(t, &host, RemoteCommand::shell("true"), "connecting").await?;
        }
        return Ok(());
    }
    for (host, user) in plan.targets() {
        let script = "for p in rsync ssh ssh-keygen; do command -v \"$p\" >/dev/null || { echo \"$p is not installed\" >&2; exit 3; }; done";
        run(
            t,
            &host,
            RemoteCommand::shell(script).become_user(&user),
            &format!("checking rsync, ssh and ssh-keygen (as {user})"),
        )
        .await
        .map_err(|e| e.with_hint(format!("install rsync and openssh-client on `{host}`")))?;
    }
    let mut seen = BTreeSet::new();
    for e in &plan.entries {
        if !seen.insert((e.source_host.clone(), e.source_user.clone())) {
            continue;
        }
        let script = format!(
            "command -v rsync >/dev/null || {{ echo 'rsync is not installed' >&2; exit 3; }}; \
             getent passwd {u} >/dev/null || {{ echo 'no user {u}' >&2; exit 3; }}",
            u = quote(&e.source_user)
        );
        run(
            t,
            &e.source_host,
            RemoteCommand::shell(script).become_user("root"),
            &format!("checking rsync and user `{}`", e.source_user),
        )
        .await
        .map_err(|err| {
            err.with_hint(format!(
                "{} ({}): install rsync on the source, or fix `source_user`",
                plan.path.display(),
                e.at
            ))
        })?;
    }
    Ok(())
}

/// The shell script that adds `line` (read from stdin) to `user`'s authorized_keys once,
/// creating `~/.ssh` (0700) and the file (0600) owned by the user when missing.
fn authorize_script(user: &str) -> String {
    format!(
        "set -e; u={u}; h=$(getent passwd \"$u\" | cut -d: -f6); g=$(id -gn \"$u\"); line=$(cat); \
         [ -n \"$h\" ] || {{ echo \"no home for $u\" >&2; exit 3; }}; \
         [ -d \"$h/.ssh\" ] || install -d -m 700 -o \"$u\" -g \"$g\" \"$h/.ssh\"; \
         f=\"$h/.ssh/authorized_keys\"; [ -e \"$f\" ] || install -m 600 -o \"$u\" -g \"$g\" /dev/null \"$f\"; \
         if grep -qxF -- \"$line\" \"$f\"; then echo kept; else \
         if [ -s \"$f\" ] && [ -n \"$(tail -c1 \"$f\")\" ]; then echo >> \"$f\"; fi; \
         printf '%s\\n' \"$line\" >> \"$f\"; echo added; fi",
        u = quote(user)
    )
}

/// The shell script that removes the lines of `user`'s authorized_keys whose last field is
/// `marker`, keeping the file (its owner, mode and other lines) as it was.
fn unauthorize_script(user: &str, marker: &str) -> String {
    format!(
        "set -e; u={u}; h=$(getent passwd \"$u\" | cut -d: -f6); f=\"$h/.ssh/authorized_keys\"; \
         [ -n \"$h\" ] && [ -f \"$f\" ] || {{ echo 0; exit 0; }}; \
         n=$(awk -v m={m} '$NF == m' \"$f\" | wc -l); \
         if [ \"$n\" -gt 0 ]; then t=$(mktemp \"$f.cchq.XXXXXX\"); awk -v m={m} '$NF != m' \"$f\" > \"$t\"; cat \"$t\" > \"$f\"; rm -f \"$t\"; fi; \
         echo \"$n\"",
        u = quote(user),
        m = quote(marker)
    )
}

/// `prepare`: a key per target (made there, as the target user), authorized on its sources.
///
/// # Errors
/// A host that fails its check (nothing changed then), or a command that fails (named).
pub async fn prepare(t: &dyn Transport, plan: &CopyPlan) -> Result<Vec<Done>> {
    check_hosts(t, plan, Action::Prepare).await?;
    let mut done = Vec::new();
    for (host, user) in plan.targets() {
        let dir = plan.key_dir(&host, &user);
        let marker = plan.marker(&host, &user);
        let script = format!(
            "set -e; d={d}; umask 077; mkdir -p \"$d\"; [ -O \"$d\" ] || {{ echo \"$d belongs to another user\" >&2; exit 3; }}; \
             chmod 700 \"$d\"; [ -f \"$d/id_ed25519\" ] || ssh-keygen -q -t ed25519 -N '' -C {m} -f \"$d/id_ed25519\"; \
             cat \"$d/id_ed25519.pub\"",
            d = quote(&dir),
            m = quote(&marker)
        );
        let public = run(
            t,
            &host,
            RemoteCommand::shell(script).become_user(&user),
            &format!("making the key (as {user})"),
        )
        .await?;
        let mut words = public.split_whitespace();
        let (Some(kind), Some(key)) = (words.next(), words.next()) else {
            return Err(Error::new(
                ErrorKind::CommandFailed,
                format!("`{host}`: ssh-keygen gave no public key in `{dir}`"),
            ));
        };
        let line = format!("restrict {kind} {key} {marker}");
        let sources = plan.sources_of(&host, &user);
        let mut known = String::new();
        for (source_host, _) in &sources {
            let lines = &plan.source(source_host).known_hosts;
            if !known.contains(lines.as_str()) {
                known.push_str(lines);
            }
        }
        let wo = WriteOptions {
            mode: Some(0o600),
            become_user: Some(user.clone()),
        };
        t.write_file(&host, &format!("{dir}/known_hosts"), known.as_bytes(), &wo)
            .await
            .map_err(|e| e.context(format!("writing `{host}:{dir}/known_hosts`")))?;
        for (source_host, source_user) in sources {
            let cmd = RemoteCommand::shell(authorize_script(&source_user))
                .become_user("root")
                .stdin(line.clone().into_bytes());
            let what = run(
                t,
                &source_host,
                cmd,
                &format!("authorizing the key of {host} for {source_user}"),
            )
            .await?;
            done.push(Done {
                action: Action::Prepare,
                at: plan
                    .entries
                    .iter()
                    .find(|e| e.target_host == host)
                    .map(|e| e.at.clone())
                    .unwrap_or_default(),
                target: format!("{host} (as {user})"),
                source: format!("{source_user}@{source_host}"),
                detail: format!(
                    "key {} {}",
                    crate::daily::known_hosts::fingerprint(key),
                    if what.trim() == "kept" {
                        "already authorized"
                    } else {
                        "authorized"
                    }
                ),
                files_transferred: None,
                bytes_transferred: None,
                dry_run: false,
            });
        }
    }
    Ok(done)
}

/// The rsync command line of `entry`, run on its target (the file list, if any, at `list`).
pub fn rsync_command(
    plan: &CopyPlan,
    entry: &Entry,
    list: Option<&str>,
    dry_run: bool,
) -> Vec<String> {
    let dir = plan.key_dir(&entry.target_host, &entry.target_user);
    let source = plan.source(&entry.source_host);
    let mut ssh = vec![
        "ssh".to_owned(),
        "-i".to_owned(),
        format!("{dir}/id_ed25519"),
        "-o".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={dir}/known_hosts"),
        "-o".to_owned(),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "-o".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
    ];
    if let Some(p) = source.port {
        ssh.extend(["-p".to_owned(), p.to_string()]);
    }
    let mut argv = vec![
        "rsync".to_owned(),
        "-e".to_owned(),
        crate::command::join(&ssh),
        "--append-verify".to_owned(),
        "-aH".to_owned(),
    ];
    argv.push("--stats".to_owned());
    argv.extend(entry.rsync_args.iter().cloned());
    for x in &entry.exclude {
        argv.extend(["--exclude".to_owned(), x.clone()]);
    }
    if let Some(l) = list {
        argv.extend(["--files-from".to_owned(), l.to_owned()]);
    }
    argv.push("-r".to_owned());
    if dry_run {
        argv.push("--dry-run".to_owned());
    }
    let host = if source.address.contains(':') {
        format!("[{}]", source.address)
    } else {
        source.address.clone()
    };
    argv.push(format!("{}@{host}:{}", entry.source_user, entry.source_dir));
    argv.push(entry.target_dir.clone());
    argv
}

/// A number of rsync's `--stats` (`Number of regular files transferred: 1,234`).
fn stat(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    let value = line.split_once(':')?.1.split_whitespace().next()?;
    value.replace([',', '.'], "").parse().ok()
}

/// `copy`: each entry's rsync, on its target as the target user (with `dry_run`, `--dry-run`).
///
/// # Errors
/// A host that fails its check, or `prepare` not run (no key on a target: nothing copied then);
/// an rsync that fails (named, with its last line; entries before it stay copied).
pub async fn copy(t: &dyn Transport, plan: &CopyPlan, dry_run: bool) -> Result<Vec<Done>> {
    check_hosts(t, plan, Action::Copy).await?;
    for (host, user) in plan.targets() {
        let dir = plan.key_dir(&host, &user);
        let script = format!(
            "test -f {k} && test -f {h}",
            k = quote(&format!("{dir}/id_ed25519")),
            h = quote(&format!("{dir}/known_hosts"))
        );
        if !t
            .exec(&host, &RemoteCommand::shell(script).become_user(&user))
            .await?
            .success()
        {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("`{host}` has no key of this plan in `{dir}`"),
            )
            .with_hint(format!(
                "run `copy-files {} prepare` first",
                plan.path.display()
            )));
        }
    }
    let mut done = Vec::new();
    for (i, e) in plan.entries.iter().enumerate() {
        let dir = plan.key_dir(&e.target_host, &e.target_user);
        let list = if e.files.is_empty() {
            None
        } else {
            let p = format!("{dir}/files.{i}");
            let text: String = e.files.iter().map(|f| format!("{f}\n")).collect();
            t.write_file(
                &e.target_host,
                &p,
                text.as_bytes(),
                &WriteOptions {
                    mode: Some(0o600),
                    become_user: Some(e.target_user.clone()),
                },
            )
            .await
            .map_err(|err| err.context(format!("writing `{}:{p}`", e.target_host)))?;
            Some(p)
        };
        let argv = rsync_command(plan, e, list.as_deref(), dry_run);
        let cmd = RemoteCommand::from_argv(&argv).become_user(&e.target_user);
        let out = t.exec(&e.target_host, &cmd).await?;
        if !out.success() {
            let err = out.stderr_str();
            return Err(Error::new(
                ErrorKind::CommandFailed,
                format!(
                    "rsync on `{}` from `{}@{}:{}` failed (exit {}): {}",
                    e.target_host,
                    e.source_user,
                    e.source_host,
                    e.source_dir,
                    out.exit_code.map_or("signal".to_owned(), |c| c.to_string()),
                    err.trim().lines().last().unwrap_or("")
                ),
            )
            .with_hint(format!(
                "{} ({}): check the directories and that `prepare` ran",
                plan.path.display(),
                e.at
            )));
        }
        let stats = out.stdout_str();
        let files = stat(&stats, "Number of regular files transferred");
        let bytes = stat(&stats, "Total transferred file size");
        done.push(Done {
            action: Action::Copy,
            at: e.at.clone(),
            target: format!("{}:{} (as {})", e.target_host, e.target_dir, e.target_user),
            source: format!("{}@{}:{}", e.source_user, e.source_host, e.source_dir),
            detail: format!(
                "{} {} files ({} bytes)",
                if dry_run {
                    "would transfer"
                } else {
                    "transferred"
                },
                files.map_or("?".to_owned(), |n| n.to_string()),
                bytes.map_or("?".to_owned(), |n| n.to_string())
            ),
            files_transferred: files,
            bytes_transferred: bytes,
            dry_run,
        });
    }
    Ok(done)
}

/// `cleanup`: the plan's lines out of the sources' authorized_keys, the key directories off the
/// targets.
///
/// # Errors
/// A host that fails its check, or a command that fails (named).
pub async fn cleanup(t: &dyn Transport, plan: &CopyPlan) -> Result<Vec<Done>> {
    check_hosts(t, plan, Action::Cleanup).await?;
    let mut done = Vec::new();
    for (host, user) in plan.targets() {
        let marker = plan.marker(&host, &user);
        for (source_host, source_user) in plan.sources_of(&host, &user) {
            let cmd =
                RemoteCommand::shell(unauthorize_script(&source_user, &marker)).become_user("root");
            let n = run(
                t,
                &source_host,
                cmd,
                &format!("removing the key of {host} for {source_user}"),
            )
            .await?;
            done.push(Done {
                action: Action::Cleanup,
                at: plan
                    .entries
                    .iter()
                    .find(|e| e.target_host == host)
                    .map(|e| e.at.clone())
                    .unwrap_or_default(),
                target: format!("{host} (as {user})"),
                source: format!("{source_user}@{source_host}"),
                detail: format!("{} authorized_keys line(s) removed", n.trim()),
                files_transferred: None,
                bytes_transferred: None,
                dry_run: false,
            });
        }
        let dir = plan.key_dir(&host, &user);
        run(
            t,
            &host,
            RemoteCommand::shell(format!("rm -rf {}", quote(&dir))).become_user(&user),
            "removing the key",
        )
        .await?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Output;
    use crate::transport::memory::MemoryTransport;

    const PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Uta2V5LWZvci10ZXN0aW5nLW9ubHktMDEyMzQ1Njc4OQ";

    /// The `test` fixture with a known_hosts holding keys for `redis.fake` and cloud_worker_1.
    fn env(dir: &Path) -> Environment {
        let mut env = crate::fixture_env("test");
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, "# notes\nredis.fake,10.0.0.9 ssh-ed25519 AAAAredis\ncloud_worker_1 ssh-ed25519 AAAAcw1\n").unwrap();
        env.known_hosts = Some(kh);
        env
    }

    fn plan_file(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("redis.yml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const PLAN: &str = "\
copy_files:
  - celery:
      - source_host: redis
        source_dir: /opt/data/
        target_dir: /opt/data/
        rsync_args: [--checksum]
        files: [redis/, x/y.txt]
        exclude: ['logs/*']
      - source_host: cloud_worker_1
        source_user: cchq
        source_dir: /home/cchq/a/
        target_dir: /home/cchq/a/
        target_user: cchq
";

    fn fleet(env: &Environment) -> MemoryTransport {
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        t.respond_with(None, |c| {
            let s = c.inner_shell();
            if s.contains("command -v") || s.contains("test -f ") || s.contains("rm -rf") || s == "true" {
                Some(Output::new(0, "", ""))
            } else if s.contains("ssh-keygen -q") {
                Some(Output::new(0, format!("{PUB} cchq-copy-files:x\n"), ""))
            } else if s.contains("authorized_keys") && s.contains("line=$(cat)") {
                Some(Output::new(0, "added\n", ""))
            } else if s.contains("authorized_keys") && s.contains("awk") {
                Some(Output::new(0, "1\n", ""))
            } else if s.starts_with("rsync ") {
                Some(Output::new(0, "Number of regular files transferred: 1,234\nTotal transferred file size: 5,678 bytes\n", ""))
            } else {
                None
            }
        });
        t
    }

    #[test]
    fn the_plan_form_is_a_yml_file_then_an_action() {
        assert!(
            is_plan_form("plan.yml", "prepare")
                && is_plan_form("./m/redis.yaml", "cleanup")
                && is_plan_form("/a:b/p.yml", "copy")
        );
        assert!(
            !is_plan_form("plan.yml", "./copy")
                && !is_plan_form("web:/x.yml", "copy")
                && !is_plan_form("a.conf", "copy")
        );
        assert_eq!(Action::parse("copy"), Some(Action::Copy));
        assert_eq!(Action::parse("run"), None);
    }

    #[test]
    fn a_plan_resolves_groups_and_fills_in_the_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        assert_eq!(p.id, "test+redis");
        assert_ne!(plan_id("prod", "eu-redis"), plan_id("prod-eu", "redis"));
        assert_eq!(p.entries.len(), 2);
        let e = &p.entries[0];
        assert_eq!(
            (e.target_host.as_str(), e.source_host.as_str()),
            ("cloud_worker_5", "redis.fake")
        );
        assert_eq!(
            (e.source_user.as_str(), e.target_user.as_str()),
            (env.login_user().as_str(), "root")
        );
        assert_eq!(e.at, "copy_files[0].celery[0]");
        assert_eq!(p.entries[1].target_user, "cchq");
        assert_eq!(
            p.targets(),
            [
                ("cloud_worker_5".to_owned(), "root".to_owned()),
                ("cloud_worker_5".to_owned(), "cchq".to_owned())
            ]
        );
        assert_eq!(
            p.hosts(),
            ["cloud_worker_5", "redis.fake", "cloud_worker_1"]
        );
        assert_eq!(
            p.key_dir("cloud_worker_5", "root"),
            "/var/tmp/cchq-copy-files.test+redis.cloud_worker_5.root"
        );
        // source_env naming this environment is fine.
        assert!(
            load(
                &env,
                &plan_file(tmp.path(), &format!("source_env: test\n{PLAN}")),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn a_bad_plan_names_the_file_and_the_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let bad = |text: &str| load(&env, &plan_file(tmp.path(), text), None).unwrap_err();
        let entry = |extra: &str| {
            format!(
                "copy_files:\n  - celery:\n      - source_host: redis\n        source_dir: /a/\n{extra}"
            )
        };
        let cases = [
            (
                entry("        target_dir: /b/\n").replace("celery", "nosuch"),
                "copy_files[0].nosuch",
                "no host or group",
            ),
            (
                entry("        target_dir: /b/\n").replace("redis", "webworkers"),
                "copy_files[0].celery[0].source_host",
                "3 hosts",
            ),
            (
                entry(""),
                "copy_files[0].celery[0]",
                "`target_dir` is missing",
            ),
            (
                entry("        target_dir: b/\n"),
                "copy_files[0].celery[0].target_dir",
                "not an absolute path",
            ),
            (
                entry("        target_dir: /b/\n        colour: red\n"),
                "copy_files[0].celery[0].colour",
                "unknown key",
            ),
            (
                entry("        target_dir: /b/\n        rsync_args: ['-e', 'ssh -i x']\n"),
                "copy_files[0].celery[0].rsync_args",
                "set by cchq",
            ),
            (
                entry("        target_dir: /b/\n        rsync_args: ['--rsh=ssh']\n"),
                "rsync_args",
                "set by cchq",
            ),
            (
                entry("        target_dir: /b/\n        files: x\n"),
                "copy_files[0].celery[0].files",
                "expected a list",
            ),
            (
                format!(
                    "source_env: production\n{}",
                    entry("        target_dir: /b/\n")
                ),
                "source_env",
                "another environment",
            ),
            (
                entry("        target_dir: /b/\n").replace("redis", "cloud_worker_2"),
                "source_host",
                "known_hosts has no key",
            ),
        ];
        for (text, at, says) in cases {
            let e = bad(&text);
            assert_eq!(e.kind(), ErrorKind::Config, "{text}: {e}");
            assert!(
                e.message().contains("redis.yml")
                    && e.message().contains(at)
                    && e.message().contains(says),
                "{text}: {e}"
            );
            assert!(e.hint().is_some(), "{text}: {e} has a hint");
        }
        let e = bad(&entry("        target_dir: /b/\n").replace("redis", "cloud_worker_2"));
        assert!(
            e.hint().unwrap().contains("update-local-known-hosts"),
            "{e}"
        );
        let e = load(&env, &tmp.path().join("nope.yml"), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = load(&env, &plan_file(tmp.path(), PLAN), Some("webworkers")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
    }

    #[tokio::test]
    async fn prepare_makes_the_key_on_the_target_and_authorizes_it_on_the_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        let t = fleet(&env);
        let done = prepare(&t, &p).await.unwrap();
        assert_eq!(done.len(), 2, "{done:?}");
        assert_eq!(done[0].source, format!("{}@redis.fake", env.login_user()));
        assert!(
            done[0].detail.starts_with("key SHA256:") && done[0].detail.ends_with("authorized"),
            "{done:?}"
        );
        let calls = t.calls();
        // The key is made on the target, as the target user; only its public half is read.
        let keygen: Vec<_> = calls
            .iter()
            .filter(|c| c.command.inner_shell().contains("ssh-keygen -q"))
            .collect();
        assert_eq!(keygen.len(), 2);
        assert!(keygen.iter().all(|c| c.host == "cloud_worker_5"));
        assert_eq!(keygen[0].command.become_as(), Some("root"));
        assert_eq!(keygen[1].command.become_as(), Some("cchq"));
        assert!(
            keygen[0]
                .command
                .inner_shell()
                .contains("cat \"$d/id_ed25519.pub\"")
        );
        assert!(
            calls
                .iter()
                .all(|c| !c.command.inner_shell().contains("id_ed25519\"\n")
                    && !c.command.to_string().contains("PRIVATE"))
        );
        // The public key goes to the source on stdin, restricted and marked.
        let auth: Vec<_> = calls
            .iter()
            .filter(|c| c.command.inner_shell().contains("line=$(cat)"))
            .collect();
        assert_eq!(auth.len(), 2);
        assert_eq!(
            (auth[0].host.as_str(), auth[0].command.become_as()),
            ("redis.fake", Some("root"))
        );
        let line = String::from_utf8(auth[0].command.stdin_data().unwrap().to_vec()).unwrap();
        assert_eq!(
            line,
            format!("restrict {PUB} cchq-copy-files:test+redis:cloud_worker_5:root")
        );
        assert!(
            !auth[0].command.inner_shell().contains("AAAA"),
            "the key is not on the command line"
        );
        assert_eq!(auth[1].host, "cloud_worker_1");
        assert!(auth[1].command.inner_shell().contains("u=cchq"));
        // The sources' host keys, for a strict check.
        let kh = "/var/tmp/cchq-copy-files.test+redis.cloud_worker_5.root/known_hosts";
        assert_eq!(
            t.file("cloud_worker_5", kh).as_deref(),
            Some(&b"redis.fake,10.0.0.9 ssh-ed25519 AAAAredis\n"[..])
        );
        assert_eq!(t.file_mode("cloud_worker_5", kh), Some(0o600));
    }

    #[tokio::test]
    async fn a_source_without_rsync_stops_prepare_before_any_change() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        let t = fleet(&env);
        t.respond_with(Some("cloud_worker_1"), |c| {
            c.inner_shell()
                .contains("command -v rsync")
                .then(|| Output::new(3, "", "rsync is not installed\n"))
        });
        let e = prepare(&t, &p).await.unwrap_err();
        assert!(
            e.message().contains("cloud_worker_1")
                && e.message().contains("rsync is not installed"),
            "{e}"
        );
        assert!(
            e.hint()
                .unwrap()
                .contains("redis.yml (copy_files[0].celery[1])"),
            "{e:?}"
        );
        assert!(
            t.calls()
                .iter()
                .all(|c| !c.command.inner_shell().contains("ssh-keygen -q")),
            "nothing made"
        );
    }

    #[tokio::test]
    async fn copy_runs_rsync_on_the_target_with_the_plan_s_arguments() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        let t = fleet(&env);
        let done = copy(&t, &p, false).await.unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            (done[0].files_transferred, done[0].bytes_transferred),
            (Some(1234), Some(5678))
        );
        let rsyncs: Vec<_> = t
            .calls()
            .into_iter()
            .filter(|c| c.command.argv().first().is_some_and(|a| a == "rsync"))
            .collect();
        assert_eq!(rsyncs.len(), 2);
        assert_eq!(rsyncs[0].host, "cloud_worker_5");
        assert_eq!(rsyncs[0].command.become_as(), Some("root"));
        let a = rsyncs[0].command.argv();
        let dir = "/var/tmp/cchq-copy-files.test+redis.cloud_worker_5.root";
        assert!(
            a[2].starts_with(&format!("ssh -i {dir}/id_ed25519 "))
                && a[2].contains("StrictHostKeyChecking=yes"),
            "{a:?}"
        );
        assert!(
            a[2].contains(&format!("UserKnownHostsFile={dir}/known_hosts")),
            "{a:?}"
        );
        let tail: Vec<&str> = a[3..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--append-verify",
                "-aH",
                "--stats",
                "--checksum",
                "--exclude",
                "logs/*",
                "--files-from",
                &format!("{dir}/files.0"),
                "-r",
                &format!("{}@redis.fake:/opt/data/", env.login_user()),
                "/opt/data/"
            ]
        );
        assert_eq!(
            t.file("cloud_worker_5", &format!("{dir}/files.0"))
                .as_deref(),
            Some(&b"redis/\nx/y.txt\n"[..])
        );
        assert_eq!(rsyncs[1].command.become_as(), Some("cchq"));
        assert!(
            !rsyncs[1].command.argv().iter().any(|a| a == "--files-from"),
            "no list: all of source_dir"
        );
        // --check: rsync's --dry-run.
        t.clear_calls();
        let done = copy(&t, &p, true).await.unwrap();
        assert!(done[0].dry_run && done[0].detail.starts_with("would transfer"));
        assert!(
            t.calls()
                .iter()
                .filter(|c| c.command.argv().first().is_some_and(|a| a == "rsync"))
                .all(|c| c.command.argv().contains(&"--dry-run".to_owned()))
        );
    }

    #[tokio::test]
    async fn copy_without_prepare_says_so_and_copies_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        let t = fleet(&env);
        t.respond_with(None, |c| {
            c.inner_shell()
                .contains("test -f ")
                .then(|| Output::new(1, "", ""))
        });
        let e = copy(&t, &p, false).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.hint().unwrap().contains("prepare"), "{e:?}");
        assert!(
            t.calls()
                .iter()
                .all(|c| c.command.argv().first().is_none_or(|a| a != "rsync"))
        );
    }

    #[tokio::test]
    async fn cleanup_removes_the_marked_lines_and_the_key_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let p = load(&env, &plan_file(tmp.path(), PLAN), None).unwrap();
        let t = fleet(&env);
        let done = cleanup(&t, &p).await.unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].detail, "1 authorized_keys line(s) removed");
        let calls = t.calls();
        let awk: Vec<_> = calls
            .iter()
            .filter(|c| c.command.inner_shell().contains("awk"))
            .collect();
        assert_eq!(awk[0].host, "redis.fake");
        assert!(
            awk[0]
                .command
                .inner_shell()
                .contains("m=cchq-copy-files:test+redis:cloud_worker_5:root"),
            "{awk:?}"
        );
        let rm: Vec<_> = calls
            .iter()
            .filter(|c| c.command.inner_shell().contains("rm -rf"))
            .collect();
        assert_eq!(rm.len(), 2);
        assert!(
            rm[0]
                .command
                .inner_shell()
                .contains("/var/tmp/cchq-copy-files.test+redis.cloud_worker_5.root")
        );
        assert_eq!(rm[1].command.become_as(), Some("cchq"));
    }
}
