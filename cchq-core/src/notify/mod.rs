//! Deploy notifications: a [`Notice`] when a deploy starts, succeeds or fails, sent by email over
//! SMTP and to webhooks (a JSON `POST` with a Slack-compatible `text`).
//!
//! Configured in the `notify:` section of the environment's `cchq.yml` ([`Config`]); email
//! also honours commcare-cloud's settings: `email_enabled: False` in `fab-settings.yml` turns it
//! off, the SMTP server defaults to `localsettings.EMAIL_SMTP_HOST`/`EMAIL_SMTP_PORT`/
//! `EMAIL_USE_TLS` in `public.yml` with `EMAIL_LOGIN`/`EMAIL_PASSWORD` from the vault's
//! `localsettings_private`, and `daily_deploy_email` also receives the success mails.
//!
//! Sending never fails a deploy: every destination has a time limit (5 s by default), runs in
//! parallel with the others, and a failure is a [`Event::Warning`]. Secrets (the SMTP password,
//! webhook URLs kept in the vault) are masked in every message.

mod smtp;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use crate::component::Component;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventSink};
use crate::profile::notify::address;
pub use crate::profile::notify::{Config, EmailConfig, Security, SmtpConfig, Stage, WebhookConfig};
use crate::{Value, yaml};
use crate::{http, tls};

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// Start, success or failure.
    pub stage: Stage,
    /// The environment.
    pub env: String,
    /// What is deployed (`commcare` or `formplayer` in the notification).
    pub component: Component,
    /// The release name.
    pub release: String,
    /// Who deploys (`user@machine`).
    pub by: String,
    /// The commit deployed, once resolved.
    pub commit: Option<String>,
    /// The commit that was current before, where known.
    pub previous_commit: Option<String>,
    /// `previous..commit` (short ids), when both are known and differ.
    pub commit_range: Option<String>,
    /// A web page comparing the two commits (GitHub repositories).
    pub compare_url: Option<String>,
    /// The hosts deployed to.
    pub hosts: Vec<String>,
    /// A private release (built, not switched).
    pub private: bool,
    /// A resumed deploy (`--resume`, or a rollback).
    pub resumed: bool,
    /// How long it took, for success and failure.
    pub duration_ms: Option<u64>,
    /// The step that failed (`build: checkout`).
    pub failed_step: Option<String>,
    /// The hosts it failed on.
    pub failed_hosts: Vec<String>,
    /// The error (secrets masked).
    pub error: Option<String>,
    /// The command that continues a failed deploy.
    pub resume_command: Option<String>,
}

fn short(c: &str) -> &str {
    // Characters, not bytes: a commit read from a host's records may be anything.
    c.char_indices().nth(12).map_or(c, |(i, _)| &c[..i])
}

impl Notice {
    /// A notice with only the deploy's identity filled in.
    pub fn new(stage: Stage, env: &str, component: Component, release: &str, by: &str) -> Self {
        Self {
            stage,
            env: env.to_owned(),
            component,
            release: release.to_owned(),
            by: by.to_owned(),
            commit: None,
            previous_commit: None,
            commit_range: None,
            compare_url: None,
            hosts: Vec::new(),
            private: false,
            resumed: false,
            duration_ms: None,
            failed_step: None,
            failed_hosts: Vec::new(),
            error: None,
            resume_command: None,
        }
    }

    /// Sets the commit and the one before it, with the range and (for GitHub) a compare link.
    pub fn with_commits(
        mut self,
        repo: &str,
        commit: Option<&str>,
        previous: Option<&str>,
    ) -> Self {
        self.commit = commit.map(str::to_owned);
        self.previous_commit = previous.map(str::to_owned);
        if let (Some(c), Some(p)) = (commit, previous)
            && c != p
        {
            self.commit_range = Some(format!("{}..{}", short(p), short(c)));
            self.compare_url = github_web(repo).map(|w| format!("{w}/compare/{p}...{c}"));
        }
        self
    }

    /// `cchq ENV deploy [formplayer] --resume RELEASE`.
    pub fn resume_command_for(env: &str, component: Component, release: &str) -> String {
        // The CLI's default component goes unsaid.
        let c = match component {
            Component::Commcare => String::new(),
            Component::Formplayer => format!(" {component}"),
        };
        format!("cchq {env} deploy{c} --resume {release}")
    }

    fn what(&self) -> String {
        let kind = if self.private {
            "private release"
        } else {
            "release"
        };
        let resumed = if self.resumed { " (resumed)" } else { "" };
        format!(
            "deploy of {} {kind} {}{resumed}",
            self.component, self.release
        )
    }

    /// The mail subject: environment, release and outcome.
    pub fn subject(&self) -> String {
        let outcome = match self.stage {
            Stage::Start => format!("started by {}", self.by),
            Stage::Success => "succeeded".to_owned(),
            Stage::Failure => "FAILED".to_owned(),
        };
        format!("[cchq] {}: {} {outcome}", self.env, self.what())
    }

    /// A short summary (the webhook's `text`, Slack markup).
    pub fn summary(&self) -> String {
        let mut s = match self.stage {
            Stage::Start => format!("*{}*: {} started by {}", self.env, self.what(), self.by),
            Stage::Success => format!("*{}*: {} succeeded", self.env, self.what()),
            Stage::Failure => format!("*{}*: {} *FAILED*", self.env, self.what()),
        };
        if let Some(c) = &self.commit {
            s.push_str(&format!(" — commit `{}`", short(c)));
        }
        if let Some(r) = &self.commit_range {
            s.push_str(&format!(" (`{r}`)"));
        }
        if let Some(d) = self.duration_ms {
            s.push_str(&format!(" in {:.1} s", d as f64 / 1000.0));
        }
        if let Some(step) = &self.failed_step {
            s.push_str(&format!("; failed step: {step}"));
            if !self.failed_hosts.is_empty() {
                s.push_str(&format!(" on {}", self.failed_hosts.join(", ")));
            }
        }
        if let Some(r) = &self.resume_command {
            s.push_str(&format!(". Continue with `{r}`"));
        }
        s
    }

    /// The mail body (plain text).
    pub fn body(&self) -> String {
        let mut b = match self.stage {
            Stage::Start => format!(
                "{} started the {} to `{}`.\n\n",
                self.by,
                self.what(),
                self.env
            ),
            Stage::Success => format!("The {} to `{}` succeeded.\n\n", self.what(), self.env),
            Stage::Failure => format!("The {} to `{}` FAILED.\n\n", self.what(), self.env),
        };
        let mut row = |k: &str, v: &str| b.push_str(&format!("{k:<13} {v}\n"));
        row("Environment:", &self.env);
        row("Component:", self.component.as_str());
        row("Release:", &self.release);
        row("By:", &self.by);
        if let Some(c) = &self.commit {
            row("Commit:", c);
        }
        if let Some(c) = &self.previous_commit {
            row("Previous:", c);
        }
        if let Some(r) = &self.commit_range {
            row("Changes:", r);
        }
        if let Some(u) = &self.compare_url {
            row("Compare:", u);
        }
        if !self.hosts.is_empty() {
            row(
                "Hosts:",
                &format!("{} ({})", self.hosts.len(), self.hosts.join(", ")),
            );
        }
        if let Some(d) = self.duration_ms {
            row("Duration:", &format!("{:.1} s", d as f64 / 1000.0));
        }
        if let Some(s) = &self.failed_step {
            row("Failed step:", s);
        }
        if !self.failed_hosts.is_empty() {
            row("Failed on:", &self.failed_hosts.join(", "));
        }
        if let Some(e) = &self.error {
            b.push_str(&format!(
                "\nError:\n{}\n",
                e.chars().take(4000).collect::<String>()
            ));
        }
        if let Some(r) = &self.resume_command {
            b.push_str(&format!("\nFix the cause, then continue the deploy with:\n\n    {r}\n\n(steps already done are not run again)\n"));
        }
        b.push_str("\n-- \nsent by cchq\n");
        b
    }

    /// The webhook body: every field, `event` (`deploy_start`, ...) and a Slack-compatible `text`.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("event".into(), format!("deploy_{}", self.stage).into());
            m.insert("text".into(), self.summary().into());
        }
        v
    }
}

/// `https://github.com/OWNER/REPO` for a GitHub remote.
fn github_web(repo: &str) -> Option<String> {
    let path = repo
        .strip_prefix("https://github.com/")
        .or_else(|| repo.strip_prefix("git@github.com:"))
        .or_else(|| repo.strip_prefix("ssh://git@github.com/"))?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    (path.split('/').count() == 2 && !path.contains(char::is_whitespace))
        .then(|| format!("https://github.com/{path}"))
}

/// A value at a dotted path (`localsettings_private.EMAIL_PASSWORD`) of the vault.
fn vault_lookup(vault: &Value, path: &str) -> Option<String> {
    let mut v = vault;
    for k in path.split('.') {
        v = v.as_mapping()?.get(Value::String(k.to_owned()))?;
    }
    yaml::scalar_to_string(v).filter(|s| !s.is_empty())
}

struct Email {
    server: smtp::Server,
    from_header: String,
    from: String,
    to: Vec<String>,
    /// Also mailed on success (`daily_deploy_email`).
    success_to: Vec<String>,
    events: Vec<Stage>,
}

struct Webhook {
    url: http::Url,
    events: Vec<Stage>,
}

/// The resolved notification destinations of an environment.
pub struct Notifier {
    email: Option<Email>,
    webhooks: Vec<Webhook>,
    /// `None` when the CA file could not be read: TLS destinations are then skipped.
    roots: Option<tls::Roots>,
    timeout: Duration,
    secrets: Vec<String>,
    warnings: Vec<String>,
    helo: String,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("email", &self.email.as_ref().map(|e| (&e.server, &e.to)))
            .field(
                "webhooks",
                &self
                    .webhooks
                    .iter()
                    .map(|w| w.url.origin())
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

type Job<'a> = Pin<Box<dyn Future<Output = (&'static str, String, Result<()>)> + Send + 'a>>;

impl Notifier {
    /// The destinations configured for `env` (`cchq.yml` `notify:`), with their secrets taken
    /// from `vault`. Never fails: what cannot be used is left out and said in [`Self::warnings`].
    pub fn from_env(env: &Environment, vault: Option<&Value>) -> Self {
        let mut n = Self {
            email: None,
            webhooks: Vec::new(),
            roots: None,
            timeout: Duration::from_secs(5),
            secrets: Vec::new(),
            warnings: Vec::new(),
            helo: helo_name(),
        };
        let Some(cfg) = &env.profile.notify else {
            return n;
        };
        n.timeout = Duration::from_secs(cfg.timeout_secs.unwrap_or(5).clamp(1, 120));
        match tls::roots(cfg.ca_file.as_ref().map(|f| env.dir.join(f)).as_deref()) {
            Ok(r) => n.roots = Some(r),
            Err(e) => n
                .warnings
                .push(format!("notifications: {e}; TLS destinations are skipped")),
        }
        if let Some(ec) = &cfg.email
            && env.fab_settings.email_enabled
        {
            match resolve_email(env, ec, vault) {
                Ok(mut e) => {
                    e.server.roots.clone_from(&n.roots);
                    n.secrets.extend(e.server.secrets());
                    n.email = Some(e);
                }
                Err(w) => n.warnings.push(format!("email notifications are off: {w}")),
            }
        }
        for (i, w) in cfg.webhooks.iter().enumerate() {
            let url = match (&w.url, &w.url_vault) {
                (Some(u), _) => u.clone(),
                (None, Some(k)) => {
                    match vault.and_then(|v| vault_lookup(v, k)) {
                        Some(u) => {
                            n.secrets.push(u.clone());
                            u
                        }
                        None if vault.is_none() => {
                            n.warnings.push(format!("webhook {} is off: its URL is in the vault (`{k}`), which is not open", i + 1));
                            continue;
                        }
                        None => {
                            n.warnings
                                .push(format!("webhook {} is off: the vault has no `{k}`", i + 1));
                            continue;
                        }
                    }
                }
                (None, None) => continue,
            };
            match http::Url::parse(&url) {
                Ok(u) => {
                    if w.url_vault.is_some() && u.path.len() > 1 {
                        n.secrets.push(u.path.clone());
                    }
                    n.webhooks.push(Webhook {
                        url: u,
                        events: w.events.clone().unwrap_or_else(|| Stage::ALL.to_vec()),
                    });
                }
                Err(e) => n.warnings.push(format!("webhook {} is off: {e}", i + 1)),
            }
        }
        n.secrets.retain(|s| s.len() >= 4);
        n.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        n
    }

    /// What could not be used (said once per deploy, as warnings).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether anything will be sent at all.
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.webhooks.is_empty()
    }

    /// What will be sent where, in a line (`email to 2 recipient(s) via host:587 (starttls), 1 webhook(s)`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = &self.email {
            let sec = format!("{:?}", e.server.security).to_lowercase();
            parts.push(format!(
                "email to {} recipient(s) via {}:{} ({sec})",
                e.to.len() + e.success_to.len(),
                e.server.host,
                e.server.port
            ));
        }
        if !self.webhooks.is_empty() {
            parts.push(format!("{} webhook(s)", self.webhooks.len()));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The time limit of each destination.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn mask(&self, text: &str) -> String {
        let s: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        crate::redact::mask(text, &s)
    }

    /// Sends `notice` to every destination that wants its stage, in parallel, each within the
    /// time limit. Reports each as an [`Event::Notification`]; a failure is also an
    /// [`Event::Warning`]. Never fails.
    pub async fn send(&self, notice: &Notice, events: &dyn EventSink) {
        let body = notice.json().to_string();
        let mut jobs: Vec<Job<'_>> = Vec::new();
        if let Some(e) = self
            .email
            .as_ref()
            .filter(|e| e.events.contains(&notice.stage))
        {
            let mut to = e.to.clone();
            if notice.stage == Stage::Success {
                to.extend(e.success_to.iter().filter(|a| !e.to.contains(a)).cloned());
            }
            if !to.is_empty() {
                let target = format!("{} via {}:{}", to.join(", "), e.server.host, e.server.port);
                let mail = smtp::message(
                    &e.from_header,
                    &e.from,
                    &to,
                    &notice.subject(),
                    &notice.body(),
                    crate::clock::now(),
                );
                jobs.push(Box::pin(async move {
                    let r = match mail {
                        Ok(mail) => {
                            bounded(
                                self.timeout,
                                smtp::send(&e.server, &mail, &self.helo, self.timeout),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    ("email", target, r)
                }));
            }
        }
        for w in self
            .webhooks
            .iter()
            .filter(|w| w.events.contains(&notice.stage))
        {
            let body = body.as_bytes();
            jobs.push(Box::pin(async move {
                let r = bounded(
                    self.timeout,
                    http::post_json(&w.url, body, self.roots.clone(), self.timeout),
                )
                .await
                .map(|_| ());
                ("webhook", w.url.origin(), r)
            }));
        }
        // Every channel at once (there are a handful), each bounded by its own timeout.
        let all = jobs.len();
        for (channel, target, r) in crate::bounded::bounded(jobs, all).await {
            let target = self.mask(&target);
            events.emit(&Event::Notification {
                stage: notice.stage.to_string(),
                channel: channel.into(),
                target: target.clone(),
                ok: r.is_ok(),
            });
            if let Err(e) = r {
                events.emit(&Event::Warning {
                    host: None,
                    message: format!(
                        "the deploy {} notification by {channel} to {target} was not sent: {} (notifications never fail a deploy)",
                        notice.stage,
                        self.mask(&e.to_string())
                    ),
                });
            }
        }
    }
}

async fn bounded<T>(limit: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(Error::connection(format!(
            "no answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// This machine's name for EHLO (`localhost` when it has none usable).
fn helo_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A `public.yml` scalar (`localsettings.EMAIL_SMTP_HOST` is `["localsettings", "EMAIL_SMTP_HOST"]`).
fn public_str(env: &Environment, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = env.public.get(*first)?;
    for k in rest {
        v = v.as_mapping()?.get(Value::String((*k).to_owned()))?;
    }
    yaml::scalar_to_string(v)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The email destination; what makes it unusable is a `Config` error (`Vault` for a vault that
/// is not open), its message saying what to set.
fn resolve_email(env: &Environment, ec: &EmailConfig, vault: Option<&Value>) -> Result<Email> {
    let (host, port, security, login) = if let Some(h) = &ec.smtp.host {
        let security = ec.smtp.security.unwrap_or(Security::Starttls);
        (
            h.clone(),
            ec.smtp.port.unwrap_or(security.default_port()),
            security,
            ec.smtp.login.clone(),
        )
    } else {
        let host = public_str(env, &["localsettings", "EMAIL_SMTP_HOST"]).ok_or_else(|| {
            Error::config("no SMTP server: set `notify.email.smtp.host` in cchq.yml (or `localsettings.EMAIL_SMTP_HOST` in public.yml)")
        })?;
        if host.contains("{{") {
            return Err(Error::config(format!(
                "`localsettings.EMAIL_SMTP_HOST` in public.yml is a template (`{host}`): set `notify.email.smtp.host` in cchq.yml"
            )));
        }
        let tls = env
            .public
            .get("localsettings")
            .and_then(|l| l.as_mapping()?.get(Value::String("EMAIL_USE_TLS".into())))
            .map(yaml::truthy);
        let security = ec.smtp.security.unwrap_or(if tls == Some(false) {
            Security::None
        } else {
            Security::Starttls
        });
        let port = match ec.smtp.port {
            Some(p) => p,
            None => match public_str(env, &["localsettings", "EMAIL_SMTP_PORT"]) {
                Some(p) => p.parse().map_err(|e| {
                    Error::config(format!(
                        "`localsettings.EMAIL_SMTP_PORT` in public.yml is not a port: `{p}`"
                    ))
                    .with_source(e)
                })?,
                None => security.default_port(),
            },
        };
        let login = match (&ec.smtp.login, vault) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(v)) => vault_lookup(v, "localsettings_private.EMAIL_LOGIN"),
            (None, None) if matches!(env.vault, crate::environment::Vault::Missing) => None,
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Vault,
                    "the SMTP login is in the vault (`localsettings_private.EMAIL_LOGIN`), which is not open",
                ));
            }
        };
        (host, port, security, login)
    };
    let password = match &login {
        None => None,
        Some(_) => {
            let key = ec
                .smtp
                .password_vault
                .as_deref()
                .unwrap_or("localsettings_private.EMAIL_PASSWORD");
            let Some(v) = vault else {
                return Err(Error::new(
                    ErrorKind::Vault,
                    format!("the SMTP password is in the vault (`{key}`), which is not open"),
                ));
            };
            Some(vault_lookup(v, key).ok_or_else(|| {
                Error::config(format!("the vault has no SMTP password at `{key}`"))
            })?)
        }
    };
    let mut to: Vec<String> = ec.to.iter().filter_map(|a| address(a)).collect();
    to.dedup();
    let success_to: Vec<String> = public_str(env, &["daily_deploy_email"])
        .and_then(|a| address(&a))
        .into_iter()
        .collect();
    if to.is_empty() && success_to.is_empty() {
        return Err(Error::config(
            "no recipients: set `notify.email.to` in cchq.yml",
        ));
    }
    let from_header = ec
        .from
        .clone()
        .or_else(|| public_str(env, &["server_email"]).filter(|s| address(s).is_some()))
        .or_else(|| login.clone().filter(|l| address(l).is_some()))
        .unwrap_or_else(|| "cchq@localhost".to_owned());
    let from = address(&from_header)
        .ok_or_else(|| Error::config(format!("`{from_header}` is not an email address")))?;
    Ok(Email {
        server: smtp::Server {
            host,
            port,
            security,
            login,
            password: password.map(zeroize::Zeroizing::new),
            roots: None,
        },
        from_header,
        from,
        to,
        success_to,
        events: ec.events.clone().unwrap_or_else(|| Stage::ALL.to_vec()),
    })
}
