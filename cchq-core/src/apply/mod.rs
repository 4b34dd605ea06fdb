//! Applying settings files to hosts (`update-config`): probe, plan, decide, apply, record.
//!
//! [`plan`] finds where each host's live settings are, renders every settings file of every host
//! (all of them before anything is written, so one template error changes nothing), reads what is
//! on the hosts, and compares. [`Plan::diff`] gives a unified diff with no secret in it by
//! construction ([`masked_diff`]: the settings rendered with placeholders for the vault's values
//! against the host's file with everything not known to be public masked). [`apply`] writes the files that changed (atomically, keeping their mode) and, on
//! each host, a record of what was applied: `<www_root>/<deploy_env>/.cchq-applied.json` (who,
//! when, cchq's version, the environment's git commit, and the sha256 of every file written).
//!
//! # Where settings go
//!
//! - `localsettings.py` into `<www_root>/<deploy_env>/current/` on web app hosts;
//! - `application.properties` into `<www_root>/<deploy_env>/formplayer_build/current/` on
//!   formplayer hosts, or, when that directory does not exist (an app that ships formplayer inside
//!   its own release, such as the demo app), into `<www_root>/<deploy_env>/current/formplayer/`.
//!   The choice is reported in [`PlannedFile::note`].
//!
//! # The drift guard
//!
//! [`plan`] asks [`crate::drift`] about each host's record before anything is written, and
//! [`Plan::decide`] stops a change that would overwrite settings from a newer copy of the
//! environment or edited by hand. [`record_applied`] writes the record for other callers (a
//! deploy that renders settings).
//!
//! # As one operation
//!
//! [`update_hosts`] -> [`plan`] -> [`Plan::decide`] -> [`apply`] is `update-config`; the command
//! line runs them one by one (it shows the diffs and asks), [`update`] runs them without asking
//! and returns an [`UpdateReport`] (the Python bindings' `Environment.update_config`).

mod update;

pub use update::{
    Decision, FileReport, HostReport, UpdateOptions, UpdateReport, update, update_hosts,
};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Value;
use crate::command::{RemoteCommand, quote};
use crate::component::Component;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::redact::{self, Masker, masked_diff};
use crate::settings::{self, SettingsFile};
use crate::transport::{FileWrite, ReadOptions, Transport, WriteOptions};

pub use crate::drift::{APPLIED_FILE, Applied, Checkout, Drift, DriftKind, applied_path};
use crate::drift::{applied_file, assess_in_background, parse_applied, sha256_hex, write_applied};

fn app_current(env: &Environment) -> String {
    env.paths().current()
}

fn formplayer_current(env: &Environment) -> String {
    env.paths().formplayer_current()
}

fn formplayer_fallback(env: &Environment) -> String {
    env.paths().formplayer_in_app()
}

// ---------------------------------------------------------------------------------------------
// Where settings live on a host

/// What [`probe`] found on a host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    /// Where `<www>/current` points (resolved), when it exists.
    pub app_release: Option<String>,
    /// Where `<www>/formplayer_build/current` points (resolved), when it exists.
    pub formplayer_release: Option<String>,
    /// The mode of each candidate settings file that exists.
    pub modes: BTreeMap<String, u32>,
    /// The contents of every candidate settings file and of the record of what was applied
    /// (`None` for those that do not exist), when the probe read them; `None` when it did not
    /// (then [`plan`] reads them itself).
    pub contents: Option<BTreeMap<String, Option<Vec<u8>>>>,
}

impl std::fmt::Debug for HostLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The contents hold secrets: only their paths are shown.
        f.debug_struct("HostLayout")
            .field("app_release", &self.app_release)
            .field("formplayer_release", &self.formplayer_release)
            .field("modes", &self.modes)
            .field(
                "contents",
                &self.contents.as_ref().map(|c| c.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl HostLayout {
    /// The release name (last path component) of `component`'s live release.
    pub fn release_name(&self, component: Component) -> Option<&str> {
        let dir = match component {
            Component::Commcare => self.app_release.as_ref(),
            Component::Formplayer => self
                .formplayer_release
                .as_ref()
                .or(self.app_release.as_ref()),
        };
        dir.map(|d| d.trim_end_matches('/').rsplit('/').next().unwrap_or(d))
    }
}

/// Where `relative_path` of `component` lives on a host laid out as `layout`, and a note when the
/// formplayer fallback is used.
///
/// # Errors
/// [`crate::ErrorKind::NotFound`] when the host has no live release for the component.
pub fn settings_path(
    env: &Environment,
    host: &str,
    layout: &HostLayout,
    component: Component,
    relative_path: &str,
) -> Result<(String, Option<String>)> {
    let no_release = || {
        Error::not_found(format!(
            "`{host}` has no live release: `{}` does not exist",
            app_current(env)
        ))
        .with_hint("deploy first (`cchq <env> deploy`); update-config writes into the live release")
    };
    match component {
        Component::Formplayer if layout.formplayer_release.is_some() => {
            Ok((format!("{}/{relative_path}", formplayer_current(env)), None))
        }
        Component::Formplayer => {
            if layout.app_release.is_none() {
                return Err(no_release());
            }
            Ok((
                format!("{}/{relative_path}", formplayer_fallback(env)),
                Some(format!(
                    "`{}` does not exist: formplayer's settings go into the app release's `formplayer/`",
                    formplayer_current(env)
                )),
            ))
        }
        Component::Commcare => {
            if layout.app_release.is_none() {
                return Err(no_release());
            }
            Ok((format!("{}/{relative_path}", app_current(env)), None))
        }
    }
}

/// The files [`probe`] asks the mode of.
fn candidate_files(env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    for (component, rel) in settings::files(env) {
        match component {
            Component::Commcare => out.push(format!("{}/{rel}", app_current(env))),
            Component::Formplayer => {
                out.push(format!("{}/{rel}", formplayer_current(env)));
                out.push(format!("{}/{rel}", formplayer_fallback(env)));
            }
        }
    }
    out
}

/// The command that finds a host's live releases, the modes and contents of its settings files
/// and its record of what was applied (as the app user), in one round trip; its output is read
/// by [`parse_probe`].
pub fn probe_command(env: &Environment) -> RemoteCommand {
    let dirs = [app_current(env), formplayer_current(env)]
        .iter()
        .map(|d| quote(d))
        .collect::<Vec<_>>()
        .join(" ");
    let files = candidate_files(env)
        .iter()
        .map(|f| quote(f))
        .collect::<Vec<_>>()
        .join(" ");
    let record = quote(&applied_path(env));
    let script = format!(
        "for d in {dirs}; do if [ -d \"$d\" ]; then printf 'dir\\t%s\\t%s\\n' \"$d\" \"$(readlink -f \"$d\")\"; fi; done; \
         for f in {files}; do if [ -e \"$f\" ]; then printf 'mode\\t%s\\t%s\\n' \"$f\" \"$(stat -L -c %a \"$f\")\"; fi; done; \
         for f in {files} {record}; do if [ -e \"$f\" ]; then printf 'data\\t%s\\t' \"$f\"; base64 -w0 < \"$f\" || exit 3; echo; fi; done; \
         echo data-end"
    );
    RemoteCommand::shell_as(env.app_user().to_owned(), script)
}

/// Reads the output of [`probe_command`].
pub fn parse_probe(env: &Environment, text: &str) -> HostLayout {
    let mut layout = HostLayout::default();
    let mut data = BTreeMap::new();
    for line in text.lines() {
        if line == "data-end" {
            // Every candidate and the record were looked at: those not listed do not exist.
            for f in candidate_files(env).into_iter().chain([applied_path(env)]) {
                data.entry(f).or_insert(None);
            }
            layout.contents = Some(std::mem::take(&mut data));
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("dir"), Some(d), Some(target)) => {
                let target = if target.is_empty() {
                    d.to_owned()
                } else {
                    target.to_owned()
                };
                if d == app_current(env) {
                    layout.app_release = Some(target);
                } else if d == formplayer_current(env) {
                    layout.formplayer_release = Some(target);
                }
            }
            (Some("mode"), Some(f), Some(m)) => {
                if let Ok(m) = u32::from_str_radix(m.trim(), 8) {
                    layout.modes.insert(f.to_owned(), m);
                }
            }
            (Some("data"), Some(f), Some(b64)) => {
                if let Some(bytes) = crate::command::base64_decode(b64) {
                    data.insert(f.to_owned(), Some(bytes));
                }
            }
            _ => {}
        }
    }
    layout
}

/// Finds where `host`'s settings live.
pub async fn probe(env: &Environment, transport: &dyn Transport, host: &str) -> Result<HostLayout> {
    let cmd = probe_command(env);
    let out = transport.exec(host, &cmd).await?;
    let out = out.check(
        host,
        &RemoteCommand::new("probe").arg(env.paths().www_home()),
    )?;
    Ok(parse_probe(env, &out.stdout_str()))
}

/// Records on `host` that `files` were just applied into its live release (call it after the
/// files are written and `current` points at the release that holds them).
pub async fn record_applied(
    env: &Environment,
    transport: &dyn Transport,
    host: &str,
    files: &[SettingsFile],
) -> Result<()> {
    let layout = probe(env, transport, host).await?;
    let mut entries = Vec::new();
    for f in files {
        let (path, _) = settings_path(env, host, &layout, f.component, &f.relative_path)?;
        entries.push((path, f.contents.as_bytes()));
    }
    let checkout = Checkout::of_in_background(&env.dir).await;
    write_applied(
        env,
        transport,
        host,
        &Applied::from_checkout(checkout.as_ref(), &entries),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Planning and applying

/// One settings file of one host: rendered, and what the host has now.
#[derive(Clone)]
pub struct PlannedFile {
    /// The rendered file.
    pub file: SettingsFile,
    /// The same file rendered with placeholders for the vault's values
    /// ([`redact::public_vault`]), which diffs show; `Err`: why that rendering failed.
    pub public: std::result::Result<String, String>,
    /// Where it goes on the host.
    pub path: String,
    /// What the host has there now (`None`: no such file).
    pub current: Option<Vec<u8>>,
    /// The mode of the file on the host, if it exists.
    pub existing_mode: Option<u32>,
    /// How the path was chosen, when it is worth saying (the formplayer fallback).
    pub note: Option<String>,
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("changed", &self.changed())
            .field("existing_mode", &self.existing_mode)
            .finish()
    }
}

impl PlannedFile {
    /// Whether writing it would change the host.
    pub fn changed(&self) -> bool {
        self.current.as_deref() != Some(self.file.contents.as_bytes())
    }

    /// The mode it is written with: the existing file's, else the settings file's (0600).
    pub fn write_mode(&self) -> u32 {
        self.existing_mode.unwrap_or(self.file.mode)
    }
}

/// What [`plan`] found for one host.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// The host.
    pub host: String,
    /// Its settings files.
    pub files: Vec<PlannedFile>,
    /// The record of the last apply, if any.
    pub applied: Option<Applied>,
    /// What the drift guard found.
    pub drift: Vec<Drift>,
}

impl HostPlan {
    /// Whether any file would change.
    pub fn changed(&self) -> bool {
        self.files.iter().any(PlannedFile::changed)
    }

    /// Whether the drift guard stops writing to this host (only when something would change).
    pub fn blocked(&self) -> bool {
        self.changed() && self.drift.iter().any(|d| d.blocking)
    }

    /// Whether the host's record already describes these files from this checkout.
    pub fn record_current(&self, checkout: Option<&Checkout>) -> bool {
        self.applied.as_ref().is_some_and(|a| {
            a.env_commit.as_deref() == checkout.map(|c| c.commit.as_str())
                && a.dirty == checkout.is_some_and(|c| c.dirty)
                && a.files.len() == self.files.len()
                && self
                    .files
                    .iter()
                    .all(|f| a.files.get(&f.path) == Some(&sha256_hex(f.file.contents.as_bytes())))
        })
    }
}

/// Every host's settings, rendered and compared with what the hosts have.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One entry per host, in the order asked.
    pub hosts: Vec<HostPlan>,
    /// The operator's checkout of the environment.
    pub checkout: Option<Checkout>,
    /// Masks secrets in anything shown.
    pub masker: Masker,
}

impl Plan {
    /// The hosts where something would change.
    pub fn changed_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.changed())
            .map(|h| h.host.clone())
            .collect()
    }

    /// How many files would change.
    pub fn changed_files(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| h.files.iter().filter(|f| f.changed()).count())
            .sum()
    }

    /// The unified diff of one file, with no secret in it ([`masked_diff`]); empty when unchanged.
    pub fn diff(&self, host: &str, file: &PlannedFile) -> String {
        let old = file.current.as_deref().map(String::from_utf8_lossy);
        let old_label = if file.current.is_some() {
            format!("{host}:{}", file.path)
        } else {
            "/dev/null".to_owned()
        };
        let new_label = format!("{host}:{} (rendered)", file.path);
        match &file.public {
            Ok(public) => masked_diff(
                old.as_deref(),
                &file.file.contents,
                public,
                &old_label,
                &new_label,
            ),
            Err(_) if !file.changed() => String::new(),
            Err(why) => redact::show_placeholders(&format!(
                "--- {old_label}\n+++ {new_label}\n@@ changed; not shown: without the vault's values the file does not render: {why} @@\n"
            )),
        }
    }
}

/// Renders every settings file of every host in `hosts` and reads what the hosts have.
///
/// Nothing is written. Every host is probed and every file rendered before this returns, so a
/// template error or an unreachable host fails the whole plan.
pub async fn plan(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
    vault: Option<&Value>,
) -> Result<Plan> {
    // 1. Where each host's live releases are.
    let layouts = crate::fanout::bounded(
        hosts.iter().map(|h| probe(env, transport, h)),
        crate::fanout::DEFAULT_FORKS,
    )
    .await;
    let mut probed = Vec::new();
    for (h, l) in hosts.iter().zip(layouts) {
        probed.push((h.clone(), l.map_err(|e| e.context(format!("host `{h}`")))?));
    }
    // 2. Render everything before reading or writing anything else.
    // Rendered twice: with the vault (what is written) and with placeholders for its values (what
    // is shown: public by construction).
    let mut masker = Masker::new(vault);
    let mut rendered = Vec::new();
    let settings_renderer = settings::SettingsRenderer::new(env, vault);
    let public_vault = redact::public_vault(vault);
    let public_renderer = settings::SettingsRenderer::new(env, public_vault.as_ref());
    for (h, layout) in &probed {
        let (app, formplayer) = (
            layout.release_name(Component::Commcare),
            layout.release_name(Component::Formplayer),
        );
        let public = public_renderer.render_releases(h, app, formplayer);
        let files = settings_renderer
            .render_releases(h, app, formplayer)
            .map_err(|e| {
                // The public rendering's error, when it has one, names the same cause without a secret.
                let e = match &public {
                    Err(p) => p.redacted(redact::show_placeholders),
                    Ok(_) => e,
                };
                e.context(format!("host `{h}`"))
            })?;
        let mut planned = Vec::new();
        for f in files {
            let (path, note) = settings_path(env, h, layout, f.component, &f.relative_path)?;
            masker.add_keys(masker.keys_of_secret_lines(&f.contents));
            let public = match &public {
                Ok(p) => p
                    .iter()
                    .find(|x| x.component == f.component && x.relative_path == f.relative_path)
                    .map(|x| x.contents.clone())
                    .ok_or_else(|| "it renders no such file".to_owned()),
                Err(e) => Err(redact::show_placeholders(e.message())),
            };
            planned.push(PlannedFile {
                existing_mode: layout.modes.get(&path).copied(),
                path,
                current: None,
                note,
                public,
                file: f,
            });
        }
        rendered.push((h.clone(), planned));
    }
    // 3. What the hosts have now, and their records: the probe read them (else one read per host),
    // plus one read for files a record names that are not where the settings go now (rare).
    let checkout = Checkout::of_in_background(&env.dir).await;
    let opts = ReadOptions {
        become_user: Some(env.app_user().to_owned()),
    };
    let record_path = applied_path(env);
    let futs = rendered
        .into_iter()
        .zip(probed)
        .map(|((host, mut files), (_, layout))| {
            let (opts, checkout, record_path) =
                (opts.clone(), checkout.clone(), record_path.clone());
            async move {
                let mut have = match layout.contents {
                    Some(c) => c,
                    None => {
                        let paths: Vec<String> = files
                            .iter()
                            .map(|f| f.path.clone())
                            .chain([record_path.clone()])
                            .collect();
                        paths
                            .iter()
                            .cloned()
                            .zip(transport.read_files(&host, &paths, &opts).await?)
                            .collect()
                    }
                };
                for f in &mut files {
                    f.current = have.get(&f.path).cloned().flatten();
                }
                let applied = match have.get(&record_path).cloned().flatten() {
                    Some(bytes) => Some(parse_applied(env, &host, &bytes)?),
                    None => None,
                };
                let mut drift = Vec::new();
                if let Some(record) = &applied {
                    let missing: Vec<String> = record
                        .files
                        .keys()
                        .filter(|p| !have.contains_key(*p))
                        .cloned()
                        .collect();
                    have.extend(
                        missing
                            .iter()
                            .cloned()
                            .zip(transport.read_files(&host, &missing, &opts).await?),
                    );
                    let contents: BTreeMap<String, Option<Vec<u8>>> = files
                        .iter()
                        .map(|f| (f.path.clone(), f.current.clone()))
                        .chain(
                            record
                                .files
                                .keys()
                                .map(|p| (p.clone(), have.get(p).cloned().flatten())),
                        )
                        .collect();
                    drift = assess_in_background(&host, record, checkout.as_ref(), contents).await;
                }
                Ok::<_, Error>(HostPlan {
                    host,
                    files,
                    applied,
                    drift,
                })
            }
        });
    let mut out = Vec::new();
    for (h, r) in hosts
        .iter()
        .zip(crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await)
    {
        out.push(r.map_err(|e| e.context(format!("host `{h}`")))?);
    }
    Ok(Plan {
        hosts: out,
        checkout,
        masker,
    })
}

/// What [`apply`] did on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostApplied {
    /// The host.
    pub host: String,
    /// The paths written.
    pub written: Vec<String>,
    /// Whether the record was (re)written.
    pub recorded: bool,
}

/// Writes the changed files of `hosts` (a subset of the plan's) atomically as the app user,
/// keeping each existing file's mode (0600 for new files), then the record of what was applied.
/// Hosts whose files are all unchanged only get their record refreshed when it is out of date.
/// Hosts run in parallel; one host's failure does not stop the others.
pub async fn apply(
    env: &Environment,
    transport: &dyn Transport,
    plan: &Plan,
    hosts: &[String],
) -> Vec<(String, Result<HostApplied>)> {
    let futs = plan
        .hosts
        .iter()
        .filter(|h| hosts.contains(&h.host))
        .map(|hp| async move {
            let res: Result<HostApplied> = async {
                // The changed files and the record go in one command; the record is renamed into
                // place last, after the files it describes.
                let mut batch: Vec<FileWrite> = hp
                    .files
                    .iter()
                    .filter(|f| f.changed())
                    .map(|f| FileWrite {
                        path: f.path.clone(),
                        contents: f.file.contents.as_bytes().to_vec(),
                        mode: Some(f.write_mode()),
                    })
                    .collect();
                let written: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
                let recorded = !written.is_empty() || !hp.record_current(plan.checkout.as_ref());
                if recorded {
                    let entries: Vec<(String, &[u8])> = hp
                        .files
                        .iter()
                        .map(|f| (f.path.clone(), f.file.contents.as_bytes()))
                        .collect();
                    batch.push(applied_file(
                        env,
                        &Applied::from_checkout(plan.checkout.as_ref(), &entries),
                    )?);
                }
                let opts = WriteOptions {
                    mode: None,
                    become_user: Some(env.app_user().to_owned()),
                };
                transport.write_files(&hp.host, &batch, &opts).await?;
                Ok(HostApplied {
                    host: hp.host.clone(),
                    written,
                    recorded,
                })
            }
            .await;
            (hp.host.clone(), res)
        });
    crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await
}

#[cfg(test)]
mod tests;
