//! Where an environment's secrets live: `meta.yml` `secrets_backend`, as in commcare-cloud.
//!
//! - `ansible-vault` (the default): `vault.yml`, plaintext or ansible-vault encrypted
//!   ([`crate::vault`], [`crate::vault::edit`]).
//! - `aws-secrets`: AWS Secrets Manager, one secret per name, `commcare-<env>/<NAME>`, each value
//!   JSON-encoded ([`aws`]).
//!
//! Both reach the rest of cchq the same way: [`crate::environment::Vault`] says which one an
//! environment uses, and [`crate::Environment::vault_value`] gives its values in the vault's
//! shape (`localsettings_private.X`, `secrets.Y`, top-level keys), so settings, deploys,
//! notifications and after-reboot read either alike.

pub mod aws;
pub mod sigv4;

use crate::Value;

/// `meta.yml`'s `secrets_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ansible-vault` (the default): `vault.yml`.
    AnsibleVault,
    /// `aws-secrets`: AWS Secrets Manager.
    AwsSecrets,
}

impl Backend {
    /// The names commcare-cloud accepts.
    pub const NAMES: &'static [&'static str] = &["ansible-vault", "aws-secrets"];

    /// The backend named `name` (`None`: the default).
    pub fn from_name(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("ansible-vault") => Some(Self::AnsibleVault),
            Some("aws-secrets") => Some(Self::AwsSecrets),
            Some(_) => None,
        }
    }
}

/// commcare-cloud's known secrets (`environment/secrets/secrets.yml`, BSD-3) and the vault
/// section each one lives in with `ansible-vault` (its `legacy_namespace`).
pub const KNOWN_SECRETS: &[(&str, Option<&str>)] = &[
    ("AMAZON_S3_ACCESS_KEY", Some("localsettings_private")),
    ("AMAZON_S3_SECRET_KEY", Some("localsettings_private")),
    ("APPCUES_ID", Some("localsettings_private")),
    ("APPCUES_KEY", Some("localsettings_private")),
    ("BANK_ACCOUNT_NUMBER", Some("localsettings_private")),
    ("BANK_ROUTING_NUMBER_ACH", Some("localsettings_private")),
    ("BANK_ROUTING_NUMBER_WIRE", Some("localsettings_private")),
    ("BITLY_OAUTH_TOKEN", Some("localsettings_private")),
    ("BOOKKEEPER_CONTACT_EMAILS", Some("localsettings_private")),
    ("COUCH_PASSWORD", Some("localsettings_private")),
    ("COUCH_USERNAME", Some("localsettings_private")),
    ("DATADOG_API_KEY", Some("secrets")),
    ("DATADOG_APP_KEY", Some("secrets")),
    ("DRIFT_ID", Some("localsettings_private")),
    ("DROPBOX_KEY", Some("localsettings_private")),
    ("DROPBOX_SECRET", Some("localsettings_private")),
    ("ECRYPTFS_PASSWORD", Some("secrets")),
    ("EMAIL_LOGIN", Some("localsettings_private")),
    ("EMAIL_PASSWORD", Some("localsettings_private")),
    (
        "FORMPLAYER_INTERNAL_AUTH_KEY",
        Some("localsettings_private"),
    ),
    ("FORMPLAYER_SENTRY_DSN", Some("secrets")),
    ("GMAPS_API_KEY", Some("localsettings_private")),
    ("GOOGLE_ANALYTICS_API_ID", Some("localsettings_private")),
    ("GOOGLE_ANALYTICS_SECRET", Some("localsettings_private")),
    (
        "GOOGLE_ANALYTICS_MEASUREMENT_ID",
        Some("localsettings_private"),
    ),
    ("GOOGLE_OAUTH_CLIENT_ID", Some("localsettings_private")),
    ("GOOGLE_OAUTH_PROJECT_ID", Some("localsettings_private")),
    ("GOOGLE_OAUTH_CLIENT_SECRET", Some("localsettings_private")),
    ("GREENHOUSE_API_KEY", Some("localsettings_private")),
    ("HQ_PRIVATE_KEY", Some("localsettings_private")),
    ("HUBSPOT_API_ID", Some("localsettings_private")),
    ("HUBSPOT_ACCESS_TOKEN", Some("localsettings_private")),
    ("KISSMETRICS_KEY", Some("localsettings_private")),
    ("KSPLICE_ACTIVATION_KEY", Some("secrets")),
    ("MAPBOX_ACCESS_TOKEN", Some("localsettings_private")),
    ("MAPS_LAYERS", Some("localsettings_private")),
    ("MAXMIND_ACCOUNT_ID", Some("secrets")),
    ("MAXMIND_LICENSE_KEY", Some("secrets")),
    (
        "MOBILE_INTEGRATION_TEST_TOKEN",
        Some("localsettings_private"),
    ),
    ("OLD_S3_BLOB_DB_ACCESS_KEY", Some("secrets")),
    ("OLD_S3_BLOB_DB_SECRET_KEY", Some("secrets")),
    ("OPEN_EXCHANGE_RATES_API_ID", Some("localsettings_private")),
    ("POSTGRES_USERS", Some("secrets")),
    ("RECAPTCHA_PRIVATE_KEY", Some("secrets")),
    ("RECAPTCHA_PUBLIC_KEY", Some("secrets")),
    ("REDIS_PASSWORD", Some("localsettings_private")),
    ("RETURN_PATH_EMAIL_PASSWORD", Some("localsettings_private")),
    ("S3_ACCESS_KEY", Some("secrets")),
    ("S3_SECRET_KEY", Some("secrets")),
    ("SECRET_KEY", Some("localsettings_private")),
    ("SENTRY_API_KEY", Some("localsettings_private")),
    ("SENTRY_DSN", Some("localsettings_private")),
    ("SENTRY_PRIVATE_KEY", Some("localsettings_private")),
    ("SENTRY_PROJECT_ID", Some("localsettings_private")),
    ("SENTRY_PUBLIC_KEY", Some("localsettings_private")),
    ("SENTRY_QUERY_URL", Some("localsettings_private")),
    ("SIMPLE_API_KEYS", Some("localsettings_private")),
    ("SNS_EMAIL_EVENT_SECRET", Some("localsettings_private")),
    ("STRIPE_PRIVATE_KEY", Some("localsettings_private")),
    ("STRIPE_PUBLIC_KEY", Some("localsettings_private")),
    ("SUMOLOGIC_URL", Some("localsettings_private")),
    ("TRANSIFEX_API_TOKEN", Some("localsettings_private")),
    ("USERFLOW_TOKEN", Some("secrets")),
    ("ansible_sudo_pass", None),
    ("deploy_event_token", None),
    ("slack_token", None),
    ("ABDM_CLIENT_ID", Some("secrets")),
    ("ABDM_CLIENT_SECRET", Some("secrets")),
    ("FCM_CREDS", Some("secrets")),
    ("GTM_ID", Some("secrets")),
    ("EPIC_PRIVATE_KEY", Some("secrets")),
    ("EPIC_CLIENT_ID", Some("secrets")),
    ("CONNECTID_SECRET_KEY", Some("secrets")),
    ("CONNECTID_CLIENT_ID", Some("secrets")),
    ("CONNECTID_CREDENTIALS_CLIENT_ID", Some("secrets")),
    ("CONNECTID_CREDENTIALS_SECRET_KEY", Some("secrets")),
    ("AI_CHATBOT_ID", Some("secrets")),
    ("AI_CHATBOT_TOKEN", Some("secrets")),
    ("ORANGE_CAMEROON_X_AUTH_TOKEN", Some("secrets")),
    ("ORANGE_CAMEROON_CHANNEL_MSISDN", Some("secrets")),
    ("ORANGE_CAMEROON_CHANNEL_PIN", Some("secrets")),
];

/// The vault section (`localsettings_private`, `secrets`) commcare-cloud keeps the known secret
/// `name` in; `None` for top-level and unknown names.
pub fn legacy_namespace(name: &str) -> Option<&'static str> {
    KNOWN_SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, ns)| *ns)
}

/// Secrets by name (`SECRET_KEY`, `POSTGRES_USERS`) in the vault's shape: each known secret in its
/// section (`localsettings_private.SECRET_KEY`), every other at the top level.
pub fn vault_shape(secrets: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut top = yaml_serde::Mapping::new();
    for (name, value) in secrets {
        match legacy_namespace(&name) {
            Some(ns) => {
                let key = Value::String(ns.to_owned());
                if !matches!(top.get(&key), Some(Value::Mapping(_))) {
                    top.insert(key.clone(), Value::Mapping(yaml_serde::Mapping::new()));
                }
                if let Some(Value::Mapping(section)) = top.get_mut(&key) {
                    section.insert(Value::String(name), value);
                }
            }
            None => {
                let key = Value::String(name);
                // A section already filled by known secrets keeps them.
                match (top.get_mut(&key), value) {
                    (Some(Value::Mapping(have)), Value::Mapping(new)) => {
                        for (k, v) in new {
                            have.entry(k).or_insert(v);
                        }
                    }
                    (_, value) => {
                        top.insert(key, value);
                    }
                }
            }
        }
    }
    Value::Mapping(top)
}

/// How a name given to `secrets view`/`edit` reads with `aws-secrets`: the secret's name and a
/// path inside its JSON value (`POSTGRES_USERS.commcare.password`). A vault-style name of a known
/// secret (`localsettings_private.SECRET_KEY`) names the same secret, so one command works with
/// either backend.
pub fn split_secret_path(name: &str) -> (String, Vec<String>) {
    let mut parts: Vec<String> = name.split('.').map(str::to_owned).collect();
    if parts.len() >= 2 && legacy_namespace(&parts[1]).is_some_and(|ns| ns == parts[0]) {
        parts.remove(0);
    }
    let first = parts.remove(0);
    (first, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_commcare_clouds() {
        assert_eq!(Backend::from_name(None), Some(Backend::AnsibleVault));
        assert_eq!(
            Backend::from_name(Some("aws-secrets")),
            Some(Backend::AwsSecrets)
        );
        assert_eq!(Backend::from_name(Some("aws")), None);
    }

    #[test]
    fn secrets_take_the_vaults_shape() {
        let v = vault_shape([
            ("SECRET_KEY".to_owned(), Value::String("k".into())),
            (
                "POSTGRES_USERS".to_owned(),
                yaml_serde::from_str("commcare: {password: p}").unwrap(),
            ),
            ("ansible_sudo_pass".to_owned(), Value::String("s".into())),
            ("MY_OWN".to_owned(), Value::String("o".into())),
        ]);
        let want: Value = yaml_serde::from_str(
            "localsettings_private: {SECRET_KEY: k}\nsecrets: {POSTGRES_USERS: {commcare: {password: p}}}\nansible_sudo_pass: s\nMY_OWN: o\n",
        )
        .unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn vault_style_names_name_the_same_secret() {
        assert_eq!(
            split_secret_path("SECRET_KEY"),
            ("SECRET_KEY".to_owned(), vec![])
        );
        assert_eq!(
            split_secret_path("localsettings_private.SECRET_KEY"),
            ("SECRET_KEY".to_owned(), vec![])
        );
        assert_eq!(
            split_secret_path("secrets.POSTGRES_USERS.commcare.password"),
            (
                "POSTGRES_USERS".to_owned(),
                vec!["commcare".to_owned(), "password".to_owned()]
            )
        );
        // Not a known secret of that section: a path like any other.
        assert_eq!(
            split_secret_path("secrets.SECRET_KEY"),
            ("secrets".to_owned(), vec!["SECRET_KEY".to_owned()])
        );
    }
}
