//! The `notify:` section of `cchq.yml`, as data: where deploy notifications go and when. It is
//! read and checked with the profile (so a bad address or URL is refused at load); sending is
//! [`crate::notify`]'s, which re-exports these types.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Value, http};

/// Where a deploy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The deploy took the lock and resolved its commit.
    Start,
    /// The deploy finished (switched, restarted, recorded).
    Success,
    /// The deploy failed (it can be resumed).
    Failure,
}

impl Stage {
    /// `start`, `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub(crate) const ALL: [Self; 3] = [Self::Start, Self::Success, Self::Failure];
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to talk to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain TCP, then `STARTTLS` (required); port 587 by default.
    Starttls,
    /// TLS from the first byte ("SMTPS"); port 465 by default.
    Tls,
    /// Plain TCP only (a local relay); port 25 by default.
    None,
}

impl Security {
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// The `notify:` section of `cchq.yml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// Webhooks, each sent a JSON `POST`.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Seconds one destination may take in all (connect, TLS, the whole exchange); 5 by default.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// A PEM file of CA certificates trusted besides Mozilla's roots (relative to the environment
    /// directory), for an internal mail relay or webhook receiver.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `notify.email`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipients of every notification.
    #[serde(default)]
    pub to: Vec<String>,
    /// The sender (`Name <address>` or `address`); default: `server_email` from `public.yml`, else
    /// the SMTP login when it is an address, else `cchq@localhost`.
    #[serde(default)]
    pub from: Option<String>,
    /// Which notifications are mailed (`start`, `success`, `failure`); all by default.
    #[serde(default)]
    pub events: Option<Vec<Stage>>,
    /// The server; without `smtp.host`, commcare-cloud's `localsettings` settings are used.
    #[serde(default)]
    pub smtp: SmtpConfig,
}

/// `notify.email.smtp`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name; default `localsettings.EMAIL_SMTP_HOST` in `public.yml`.
    #[serde(default)]
    pub host: Option<String>,
    /// The port; default 587, 465 or 25 by `security` (with `localsettings`:
    /// `EMAIL_SMTP_PORT`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none` (with `localsettings`: `starttls` when
    /// `EMAIL_USE_TLS` is true, else `none`).
    #[serde(default)]
    pub security: Option<Security>,
    /// The login name; none means no authentication (with `localsettings`: the vault's
    /// `localsettings_private.EMAIL_LOGIN` when not empty).
    #[serde(default)]
    pub login: Option<String>,
    /// The vault key (dotted path) of the password; default `localsettings_private.EMAIL_PASSWORD`.
    #[serde(default)]
    pub password_vault: Option<String>,
    /// Not allowed: a password written in `cchq.yml` is refused when it loads (name its vault key
    /// in `password_vault`).
    #[serde(default)]
    pub password: Option<Value>,
}

/// One entry of `notify.webhooks`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (`https://` or `http://`).
    #[serde(default)]
    pub url: Option<String>,
    /// Or the vault key (dotted path) holding the URL (a Slack webhook URL is a secret).
    #[serde(default)]
    pub url_vault: Option<String>,
    /// Which notifications are posted; all by default.
    #[serde(default)]
    pub events: Option<Vec<Stage>>,
}

impl Config {
    /// Checks what can be checked without the vault or `public.yml`; `path` is `cchq.yml`.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::at(path, None, None, m));
        if let Some(e) = &self.email {
            if e.smtp.password.is_some() {
                return Err(Error::at(path, None, None, "`notify.email.smtp.password`: passwords do not go in cchq.yml").with_hint(
                    "put it in vault.yml and name its key in `password_vault` (default `localsettings_private.EMAIL_PASSWORD`)",
                ));
            }
            for a in e.to.iter().chain(e.from.iter()) {
                if address(a).is_none() {
                    return bad(format!("`notify.email`: `{a}` is not an email address"));
                }
            }
            if e.smtp
                .host
                .as_deref()
                .is_some_and(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
            {
                return bad("`notify.email.smtp.host` is not a host name".into());
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            match (&w.url, &w.url_vault) {
                (Some(u), None) => {
                    if let Err(e) = http::Url::parse(u) {
                        return Err(
                            e.context(format!("{}: `notify.webhooks[{i}]`", path.display()))
                        );
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return bad(format!(
                        "`notify.webhooks[{i}]` needs exactly one of `url` and `url_vault`"
                    ));
                }
            }
        }
        if self.timeout_secs == Some(0) {
            return bad("`notify.timeout_secs` must be at least 1".into());
        }
        Ok(())
    }

    /// Whether sending needs the decrypted vault (an SMTP password, a webhook URL kept there).
    /// `email_enabled` is `fab-settings.yml`'s.
    pub fn needs_vault(&self, email_enabled: bool) -> bool {
        let email = self
            .email
            .as_ref()
            .is_some_and(|e| email_enabled && (e.smtp.host.is_none() || e.smtp.login.is_some()));
        email || self.webhooks.iter().any(|w| w.url_vault.is_some())
    }
}

/// The address part of `Name <address>` or `address`, when it looks like one.
pub(crate) fn address(s: &str) -> Option<String> {
    let s = s.trim();
    let a = match (s.rfind('<'), s.ends_with('>')) {
        (Some(i), true) => &s[i + 1..s.len() - 1],
        _ => s,
    };
    let ok = a.contains('@')
        && !a.starts_with('@')
        && !a.ends_with('@')
        && !a.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        });
    ok.then(|| a.to_owned())
}
