//! `cchq <env> validate-environment-settings`: load everything and check it agrees.

use std::collections::HashSet;

use cchq_core::{Environment, Error};

use super::ExitStatus;
use crate::render;

pub fn run(env: &Environment) -> Result<ExitStatus, Error> {
    // What every command that must not act on a partial reading also checks.
    let cchq_core::validate::Report {
        mut problems,
        mut warnings,
    } = cchq_core::validate::check(env);
    // Loading checked the names that reach generated files (localsettings keys, process names);
    // an encrypted vault's `localsettings_private` keys are checked here when its password is
    // given by the environment (never asked for).
    if matches!(env.vault, cchq_core::environment::Vault::Encrypted(_))
        && matches!(cchq_core::vault::password_from_environment(), Ok(Some(_)))
        && let Err(e) = env.vault_without_prompt()
    {
        problems.push(e.message().to_owned());
    }
    if let Some(kh) = &env.known_hosts {
        let known =
            known_host_names(&std::fs::read_to_string(kh).map_err(|e| Error::io(kh.display(), e))?);
        let skip: HashSet<String> = env
            .inventory
            .group_hosts("ansible_skip")
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let missing: Vec<String> = env
            .inventory
            .hosts()
            .map(|h| h.name.clone())
            .filter(|h| !skip.contains(h))
            .filter(|h| {
                let t = env.ssh_target(h);
                let key = t
                    .port
                    .filter(|p| *p != 22)
                    .map_or_else(|| t.address.clone(), |p| format!("[{}]:{p}", t.address));
                !known.contains(&key) && !known.contains("*")
            })
            .collect();
        if !missing.is_empty() && !known.contains("|hashed|") {
            warnings.push(format!(
                "{}: no host key for {} host(s): {}{}",
                kh.display(),
                missing.len(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() > 5 { ", ..." } else { "" }
            ));
        }
    }
    warnings.extend(cchq_core::drift::checkout_warnings(env));
    let mut notify_line = None;
    if env.profile.notify.is_some() {
        // The vault is only read when it is plaintext: validation asks for no password.
        let vault = env.vault.plain();
        let encrypted = env.vault.needs_opening();
        let notifier = cchq_core::notify::Notifier::from_env(env, vault.as_ref());
        warnings.extend(
            notifier
                .warnings()
                .iter()
                .filter(|w| !(encrypted && w.contains("not open")))
                .cloned(),
        );
        notify_line = Some(notifier.describe());
    }
    for w in &warnings {
        render::warning(w);
    }
    if problems.is_empty() {
        crate::outln!(
            "environment `{}` is valid: {} hosts, {} groups (deploy_env `{}`, profile `{}`)",
            env.name,
            env.inventory.hosts().count(),
            env.inventory.groups().count(),
            env.meta.deploy_env,
            env.profile.name
        );
        if let Some(line) = notify_line {
            crate::outln!("deploy notifications: {line}");
        }
        Ok(ExitStatus::Success)
    } else {
        for p in &problems {
            render::error(&Error::config(p.clone()));
        }
        render::info(&format!(
            "{} problem(s) in environment `{}`",
            problems.len(),
            env.name
        ));
        Ok(ExitStatus::Error(cchq_core::ErrorKind::Config))
    }
}

/// The host names a known_hosts file covers (`|hashed|` stands for any hashed entry).
fn known_host_names(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        if first.starts_with('@') {
            first = fields.next().unwrap_or("");
        }
        for name in first.split(',') {
            if name.starts_with("|1|") {
                out.insert("|hashed|".to_owned());
            } else {
                out.insert(name.to_owned());
            }
        }
    }
    out
}
