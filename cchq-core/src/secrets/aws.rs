//! `secrets_backend: aws-secrets`: AWS Secrets Manager, read and written as commcare-cloud does.
//!
//! - **Names.** Every secret is `commcare-<env>/<NAME>` (`<NAME>` from commcare-cloud's
//!   `secrets.yml`, e.g. `SECRET_KEY`, `POSTGRES_USERS`, or any other).
//! - **Values.** Each `SecretString` is JSON (commcare-cloud's `cchq_aws_secret` lookup
//!   `json.loads` it): a string secret is stored with its quotes. A value that is not JSON is an
//!   error naming the secret (never showing the value).
//! - **All of them** (settings, `secrets view`): `ListSecrets` filtered on the prefix, then
//!   `GetSecretValue` of each, 8 at a time; without `secretsmanager:ListSecrets`, the known names
//!   one by one (a missing one is absent, as commcare-cloud's `errors='ignore'`).
//! - **Edit**: `PutSecretValue`, and `CreateSecret` when there is no such secret yet.
//! - **Region**: `terraform.yml` `region` (commcare-cloud pins it), else `AWS_REGION`,
//!   `AWS_DEFAULT_REGION`, the profile's `region` in `~/.aws/config`.
//! - **`aws.yml`** (optional, beside `terraform.yml`): commcare-cloud's `AwsConfig`, strictly
//!   ([`AwsConfig::load`]): `credential_style` (`sso` or `iam`, the default), `sso_config`
//!   (`sso_start_url`, `sso_region`, `sso_account_id`, `region`), `ses_config` (read, unused);
//!   any other top-level key is an error naming the file. Empty or absent: the defaults.
//! - **Credentials**, the standard chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//!   (+`AWS_SESSION_TOKEN`); then, as commcare-cloud's `aws_sign_in` skips signing in there, an
//!   EC2 instance in `sso_config.sso_account_id`'s account uses its role (the probe: an IMDSv2
//!   token and the instance identity document's `accountId`, 200 ms a call; not with an explicit
//!   `AWS_PROFILE`); a profile's static keys in `~/.aws/credentials` or `~/.aws/config`
//!   (`AWS_PROFILE`, else commcare-cloud's `<aws_profile>:session` and `<aws_profile>` from
//!   `terraform.yml`, else `default`; `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`); then the
//!   EC2 instance metadata service (IMDSv2; `AWS_EC2_METADATA_DISABLED`,
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT`; not asked again when the probe had no answer). Without
//!   any, the hint follows `credential_style`: `commcare-cloud <env> aws-sign-in` by SSO (or
//!   `aws sso login` and exporting the keys) or by MFA, which writes `<aws_profile>:session`.
//! - **Endpoint**: `AWS_ENDPOINT_URL_SECRETSMANAGER`, else `AWS_ENDPOINT_URL`, else
//!   `https://secretsmanager.<region>.amazonaws.com`; `AWS_CA_BUNDLE` adds a CA.
//!
//! The client is Secrets Manager's JSON 1.1 protocol (`POST /`, `X-Amz-Target`) signed with
//! [`super::sigv4`], on the notifications' HTTP client. Errors name the secret, the region and
//! where the credentials came from, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value as J, json};

use super::sigv4::{self, Credentials};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{self, Url};
use crate::{Value, yaml};

/// How long one Secrets Manager call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one instance metadata call may take (off EC2 nothing answers).
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long each call of the probe for the instance's account may take (commcare-cloud: 100 ms);
/// off EC2 the probe costs at most this, once.
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Secrets fetched at once.
const PARALLEL: usize = 8;

/// An environment's AWS secrets, as its files describe them (no network at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSecrets {
    /// The environment's name.
    pub env_name: String,
    /// `commcare-<env>`: every secret is `<prefix>/<NAME>`.
    pub prefix: String,
    /// `terraform.yml` `region`.
    pub region: Option<String>,
    /// `terraform.yml` `aws_profile` (else `account_alias`).
    pub aws_profile: Option<String>,
    /// `aws.yml` (defaults when there is none).
    pub aws_config: AwsConfig,
}

/// `aws.yml` as commcare-cloud's `AwsConfig` takes it: these keys and no others.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// How `commcare-cloud <env> aws-sign-in` signs in (`iam` when unset).
    #[serde(default, deserialize_with = "null_is_default")]
    pub credential_style: CredentialStyle,
    /// The AWS SSO (IAM Identity Center) sign-in; its `sso_account_id` is also the account whose
    /// EC2 instances use their own credentials.
    #[serde(default)]
    pub sso_config: Option<SsoConfig>,
    /// The SES account's sign-in (commcare-cloud's `aws_sign_in_for_ses`; read, not used by cchq).
    #[serde(default)]
    pub ses_config: Option<SesConfig>,
}

/// `aws.yml` `credential_style`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStyle {
    /// MFA with the IAM user's keys (`aws-sign-in` writes a session profile).
    #[default]
    Iam,
    /// AWS SSO; `aws-sign-in` writes the session's keys to a v1 profile.
    Sso,
}

/// `aws.yml` `sso_config` (commcare-cloud's `SsoConfig`: other keys are accepted, as its
/// `JsonObject` does).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct SsoConfig {
    /// The SSO portal, `https://<name>.awsapps.com/start`.
    #[serde(default)]
    pub sso_start_url: Option<String>,
    /// The SSO portal's region.
    #[serde(default)]
    pub sso_region: Option<String>,
    /// The environment's AWS account.
    #[serde(default)]
    pub sso_account_id: Option<String>,
    /// The profile's region.
    #[serde(default)]
    pub region: Option<String>,
}

/// `aws.yml` `ses_config` (commcare-cloud's `SesConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct SesConfig {
    /// The SES IAM user.
    #[serde(default)]
    pub iam_username: Option<String>,
    /// The SES account.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The role assumed there.
    #[serde(default)]
    pub role_name: Option<String>,
    /// SES's region.
    #[serde(default)]
    pub region: Option<String>,
}

fn null_is_default<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

impl AwsConfig {
    /// `aws.yml` of environment directory `dir`, as commcare-cloud reads it (YAML 1.1); no file,
    /// or an empty one, is the defaults.
    ///
    /// # Errors
    /// A file that is not YAML, a key commcare-cloud's schema does not have, a value of the
    /// wrong type or a `credential_style` other than `sso` or `iam`; each names the file.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("aws.yml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        if yaml::load(&text, &path)?.is_null() {
            return Ok(Self::default());
        }
        yaml::load_as(&text, &path).map_err(|e| {
            let schema = "commcare-cloud's aws.yml schema (`AwsConfig`): credential_style (sso or iam), \
                          sso_config {sso_start_url, sso_region, sso_account_id, region}, ses_config {iam_username, account_id, role_name, region}";
            let hint = if e.message().contains("expected a string") {
                format!("quote it (`sso_account_id: '111122223333'`): its values are strings in {schema}")
            } else {
                format!("see {schema}")
            };
            e.with_hint(hint)
        })
    }

    /// `sso_config.sso_account_id`, when set.
    pub fn account_id(&self) -> Option<&str> {
        self.sso_config
            .as_ref()
            .and_then(|c| c.sso_account_id.as_deref())
            .filter(|a| !a.is_empty())
    }
}

/// Where AWS settings are read: the process environment, or given variables (tests).
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    vars: Option<BTreeMap<String, String>>,
}

impl AwsEnv {
    /// The process environment.
    pub fn process() -> Self {
        Self { vars: None }
    }

    /// Exactly `vars` (`HOME` included when the files under `~/.aws` are to be read).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// A variable, `None` when unset or empty.
    fn var(&self, key: &str) -> Option<String> {
        match &self.vars {
            Some(m) => m.get(key).cloned(),
            None => std::env::var(key).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    fn aws_file(&self, var: &str, name: &str) -> Option<PathBuf> {
        self.var(var).map(PathBuf::from).or_else(|| {
            self.var("HOME")
                .map(|h| Path::new(&h).join(".aws").join(name))
        })
    }
}

/// The credentials found, and where.
#[derive(Debug, Clone)]
struct Found {
    creds: Credentials,
    from: String,
}

/// A resolved client: region, endpoint, credentials.
#[derive(Debug, Clone)]
pub struct Client {
    /// The region.
    pub region: String,
    /// Where the region came from (`terraform.yml`, `AWS_REGION`, ...).
    pub region_from: String,
    /// The endpoint.
    endpoint: Url,
    creds: Credentials,
    /// Where the credentials came from.
    pub creds_from: String,
    roots: Option<crate::tls::Roots>,
}

/// What a name stands for.
enum Lookup {
    Found(Value),
    /// No such secret (its id).
    NoSecret(String),
    /// The secret has no such key; the keys of the mapping where the path stopped.
    NoKey {
        id: String,
        keys: Vec<String>,
    },
}

/// An answer of Secrets Manager that is an error.
#[derive(Debug)]
enum CallError {
    /// AWS's error: its code (`ResourceNotFoundException`) and message.
    Aws { code: String, message: String },
    /// No answer (connection, TLS, timeout) or not one of Secrets Manager's: what went wrong
    /// (the cause of the error [`Client::error`] makes of it).
    Transport(Error),
}

impl CallError {
    fn transport(message: String) -> Self {
        Self::Transport(Error::connection(message))
    }
}

impl AwsSecrets {
    /// The secrets of environment `env_name` whose directory is `dir` (`terraform.yml` read for its
    /// `region` and `aws_profile`, `aws.yml` as [`AwsConfig::load`]).
    ///
    /// # Errors
    /// A `terraform.yml` that is not YAML; an `aws.yml` [`AwsConfig::load`] refuses.
    pub fn load(env_name: &str, dir: &Path) -> Result<Self> {
        let path = dir.join("terraform.yml");
        let tf: Option<Value> = match std::fs::read_to_string(&path) {
            Ok(text) => Some(yaml::from_str(&text, &path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let get = |k: &str| {
            tf.as_ref()
                .and_then(|t| t.get(k))
                .and_then(yaml::scalar_to_string)
                .filter(|s| !s.is_empty())
        };
        Ok(Self {
            env_name: env_name.to_owned(),
            prefix: format!("commcare-{env_name}"),
            region: get("region"),
            aws_profile: get("aws_profile").or_else(|| get("account_alias")),
            aws_config: AwsConfig::load(dir)?,
        })
    }

    /// The full name of secret `name`: `commcare-<env>/<name>`.
    pub fn secret_id(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Every secret of the environment in the vault's shape ([`super::vault_shape`]).
    ///
    /// # Errors
    /// See [`AwsSecrets::fetch_all`].
    pub fn vault_value(&self, env: &AwsEnv) -> Result<Value> {
        Ok(super::vault_shape(self.fetch_all(env)?))
    }

    /// Every secret of the environment, by name (without the prefix), sorted.
    ///
    /// # Errors
    /// No region or credentials, access denied, an answer that is not Secrets Manager's, a
    /// value that is not JSON.
    pub fn fetch_all(&self, env: &AwsEnv) -> Result<Vec<(String, Value)>> {
        block_on(async {
            let client = self.client(env).await?;
            let names = match client.list(&self.prefix).await {
                Ok(names) => names,
                // Without ListSecrets: the secrets commcare-cloud knows.
                Err(CallError::Aws { code, .. }) if code == "AccessDeniedException" => {
                    super::KNOWN_SECRETS
                        .iter()
                        .map(|(n, _)| (*n).to_owned())
                        .collect()
                }
                Err(e) => {
                    return Err(client.error(
                        e,
                        "ListSecrets",
                        &format!("{}/*", self.prefix),
                        &self.env_name,
                    ));
                }
            };
            let results: Vec<Result<Option<(String, Value)>>> = futures::stream::iter(names)
                .map(|name| {
                    let client = &client;
                    async move {
                        let id = self.secret_id(&name);
                        match client.get(&id).await {
                            Ok(Some(v)) => Ok(Some((name, v))),
                            Ok(None) => Ok(None),
                            Err(e) => Err(client.error(e, "GetSecretValue", &id, &self.env_name)),
                        }
                    }
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
            let mut out = Vec::new();
            for r in results {
                out.extend(r?);
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    /// The value of `name`: a secret's name, or a path into its JSON (`POSTGRES_USERS.commcare`;
    /// see [`super::split_secret_path`]); `None` when there is no such secret or key.
    ///
    /// # Errors
    /// As [`AwsSecrets::fetch_all`].
    pub fn get(&self, env: &AwsEnv, name: &str) -> Result<Option<Value>> {
        block_on(async {
            let client = self.client(env).await?;
            Ok(match self.lookup(&client, name).await? {
                Lookup::Found(v) => Some(v),
                Lookup::NoSecret(_) | Lookup::NoKey { .. } => None,
            })
        })
    }

    /// [`AwsSecrets::get`], where a missing secret or key is an error: a missing secret names
    /// it and the region ([`ErrorKind::NotFound`]), a missing key lists the secret's keys.
    ///
    /// # Errors
    /// As [`AwsSecrets::fetch_all`], and those.
    pub fn view(&self, env: &AwsEnv, name: &str) -> Result<Value> {
        block_on(async {
            let client = self.client(env).await?;
            match self.lookup(&client, name).await? {
                Lookup::Found(v) => Ok(v),
                Lookup::NoSecret(id) => Err(client.error(
                    CallError::Aws {
                        code: "ResourceNotFoundException".into(),
                        message: String::new(),
                    },
                    "GetSecretValue",
                    &id,
                    &self.env_name,
                )),
                Lookup::NoKey { id, keys } => Err(Error::not_found(format!(
                    "secret `{id}` has no `{name}`"
                ))
                .with_hint(if keys.is_empty() {
                    "the secret's value is not a mapping: view it by its name alone".to_owned()
                } else {
                    format!("its keys: {}", keys.join(", "))
                })),
            }
        })
    }

    async fn lookup(&self, client: &Client, name: &str) -> Result<Lookup> {
        let (secret, path) = super::split_secret_path(name);
        let id = self.secret_id(&secret);
        let Some(mut v) = client
            .get(&id)
            .await
            .map_err(|e| client.error(e, "GetSecretValue", &id, &self.env_name))?
        else {
            return Ok(Lookup::NoSecret(id));
        };
        for seg in &path {
            let next = match &v {
                Value::Mapping(m) => m.get(Value::String(seg.clone())).cloned(),
                Value::Sequence(s) => seg.parse::<usize>().ok().and_then(|i| s.get(i).cloned()),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => {
                    let keys = match &v {
                        Value::Mapping(m) => m.keys().filter_map(yaml::scalar_to_string).collect(),
                        _ => Vec::new(),
                    };
                    return Ok(Lookup::NoKey { id, keys });
                }
            }
        }
        Ok(Lookup::Found(v))
    }

    /// Sets `name` (a secret, or a path into its JSON: missing objects are created) to `value`:
    /// `PutSecretValue`, or `CreateSecret` for a new secret. Returns whether the secret existed.
    ///
    /// # Errors
    /// As [`AwsSecrets::fetch_all`]; a value JSON cannot hold (a YAML tag).
    pub fn set(&self, env: &AwsEnv, name: &str, value: Value) -> Result<bool> {
        let (secret, path) = super::split_secret_path(name);
        if secret.is_empty() || path.iter().any(String::is_empty) {
            return Err(Error::usage(format!(
                "`{name}` is not a secret name or a dotted path into one"
            ))
            .with_hint("e.g. `SECRET_KEY` or `POSTGRES_USERS.commcare.password`"));
        }
        let new = to_json(&value)?;
        block_on(async {
            let client = self.client(env).await?;
            let id = self.secret_id(&secret);
            let current = if path.is_empty() {
                None
            } else {
                client
                    .get(&id)
                    .await
                    .map_err(|e| client.error(e, "GetSecretValue", &id, &self.env_name))?
            };
            let body = if path.is_empty() {
                new
            } else {
                let mut root = current
                    .as_ref()
                    .map(to_json)
                    .transpose()?
                    .unwrap_or(J::Null);
                set_path(&mut root, &path, new, name)?;
                root
            };
            let text = serde_json::to_string(&body)
                .map_err(|e| Error::internal(format!("cannot write JSON: {e}")).with_source(e))?;
            client
                .put(&id, &text)
                .await
                .map_err(|e| client.error(e, "PutSecretValue", &id, &self.env_name))
        })
    }

    /// The client: region, endpoint and credentials resolved.
    async fn client(&self, env: &AwsEnv) -> Result<Client> {
        let profile = selected_profile(self, env);
        let (region, region_from) = self.region(env, &profile)?;
        let endpoint_text = env
            .var("AWS_ENDPOINT_URL_SECRETSMANAGER")
            .or_else(|| env.var("AWS_ENDPOINT_URL"));
        let endpoint = match &endpoint_text {
            Some(u) => Url::parse_as(u, "the URL").map_err(|e| {
                e.map_message(|m| format!("the AWS endpoint `{u}` is not usable: {m}"))
                    .with_hint("set AWS_ENDPOINT_URL_SECRETSMANAGER (or AWS_ENDPOINT_URL) to `https://host[:port]`")
            })?,
            None => {
                let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
                Url::parse(&format!("https://secretsmanager.{region}.{domain}/"))
                    .map_err(|e| e.map_message(|_| format!("`{region}` ({region_from}) is not an AWS region")))?
            }
        };
        let roots = if endpoint.https {
            let ca = env.var("AWS_CA_BUNDLE").map(PathBuf::from);
            Some(
                crate::tls::roots(ca.as_deref())
                    .map_err(|e| e.wrap(ErrorKind::Config, |m| format!("AWS_CA_BUNDLE: {m}")))?,
            )
        } else {
            None
        };
        let found = credentials(self, env, &profile).await?;
        Ok(Client {
            region,
            region_from,
            endpoint,
            creds: found.creds,
            creds_from: found.from,
            roots,
        })
    }

    fn region(&self, env: &AwsEnv, profile: &Profile) -> Result<(String, String)> {
        if let Some(r) = &self.region {
            return Ok((r.clone(), "terraform.yml `region`".to_owned()));
        }
        for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let Some(r) = env.var(var) {
                return Ok((r, var.to_owned()));
            }
        }
        if let Some(path) = env.aws_file("AWS_CONFIG_FILE", "config")
            && let Some(ini) = read_ini(&path)
        {
            for name in &profile.candidates {
                if let Some(r) = config_section(&ini, name)
                    .and_then(|s| s.get("region"))
                    .filter(|r| !r.is_empty())
                {
                    return Ok((
                        r.clone(),
                        format!("profile `{name}` in `{}`", path.display()),
                    ));
                }
            }
        }
        Err(Error::config(format!("no AWS region for the secrets of `{}`", self.env_name)).with_hint(
            "set `region` in the environment's terraform.yml (as commcare-cloud does), or AWS_REGION, or `region` in the profile's ~/.aws/config section",
        ))
    }
}

/// The profiles to read, and whether `AWS_PROFILE` chose it.
#[derive(Debug, Clone)]
struct Profile {
    /// Given by `AWS_PROFILE`: only that one is tried.
    explicit: bool,
    /// The names to try, in order.
    candidates: Vec<String>,
}

fn selected_profile(s: &AwsSecrets, env: &AwsEnv) -> Profile {
    if let Some(p) = env
        .var("AWS_PROFILE")
        .or_else(|| env.var("AWS_DEFAULT_PROFILE"))
    {
        return Profile {
            explicit: true,
            candidates: vec![p],
        };
    }
    let mut candidates = Vec::new();
    if let Some(p) = &s.aws_profile {
        // What `commcare-cloud <env> aws-sign-in` leaves in ~/.aws/credentials, then the profile.
        candidates.push(format!("{p}:session"));
        candidates.push(p.clone());
    }
    candidates.push("default".to_owned());
    Profile {
        explicit: false,
        candidates,
    }
}

type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// An AWS config or credentials file: `[section]` and `key = value` lines.
fn read_ini(path: &Path) -> Option<Ini> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(parse_ini(&text))
}

fn parse_ini(text: &str) -> Ini {
    let mut out = Ini::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim().to_owned();
            out.entry(name.clone()).or_default();
            section = Some(name);
        } else if let (Some(s), Some((k, v))) = (&section, l.split_once('='))
            && !line.starts_with([' ', '\t'])
        {
            out.entry(s.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// A profile's section of `~/.aws/config`: `[profile NAME]`, or `[default]`.
fn config_section<'a>(ini: &'a Ini, name: &str) -> Option<&'a BTreeMap<String, String>> {
    ini.get(&format!("profile {name}"))
        .or_else(|| (name == "default").then(|| ini.get("default")).flatten())
}

fn static_keys(section: &BTreeMap<String, String>) -> Option<Credentials> {
    Some(Credentials {
        access_key_id: section
            .get("aws_access_key_id")
            .filter(|v| !v.is_empty())?
            .clone(),
        secret_access_key: section
            .get("aws_secret_access_key")
            .filter(|v| !v.is_empty())?
            .clone(),
        session_token: section
            .get("aws_session_token")
            .or_else(|| section.get("aws_security_token"))
            .filter(|v| !v.is_empty())
            .cloned(),
    })
}

/// The standard chain: environment, profile files, instance metadata.
async fn credentials(s: &AwsSecrets, env: &AwsEnv, profile: &Profile) -> Result<Found> {
    let mut looked = Vec::new();
    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            return Ok(Found {
                creds: Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                    session_token: env.var("AWS_SESSION_TOKEN"),
                },
                from: "AWS_ACCESS_KEY_ID".to_owned(),
            });
        }
        (Some(_), None) => {
            looked.push("AWS_ACCESS_KEY_ID (set, but AWS_SECRET_ACCESS_KEY is not)".to_owned())
        }
        _ => looked.push("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set)".to_owned()),
    }
    // commcare-cloud's `aws_sign_in`: an EC2 instance in the environment's account (aws.yml
    // `sso_config.sso_account_id`) signs nobody in and uses its own role. An operator's explicit
    // AWS_PROFILE still wins, as it does for boto3 there.
    let imds_base = (!env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true")))
    .then(|| {
        env.var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".to_owned())
    });
    // Why the metadata service is not worth asking again (nothing answered the probe).
    let mut imds_absent = None;
    if let (Some(account), Some(base), false) =
        (s.aws_config.account_id(), &imds_base, profile.explicit)
    {
        match imds_account(base).await {
            Ok(Ok(a)) if a == account => match imds(base, IMDS_TIMEOUT).await {
                Ok(c) => {
                    return Ok(Found {
                        creds: c,
                        from: format!(
                            "the EC2 instance metadata service (an instance in account `{account}`, aws.yml `sso_config`)"
                        ),
                    });
                }
                Err(why) => looked.push(format!(
                    "the EC2 instance metadata service at `{base}`, in account `{account}` ({why})"
                )),
            },
            Ok(Ok(a)) => looked.push(format!(
                "the instance's account (`{a}`, not aws.yml's `{account}`)"
            )),
            Ok(Err(why)) => looked.push(format!("the instance's account ({why})")),
            Err(why) => imds_absent = Some(why),
        }
    }
    let creds_file = env.aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = env.aws_file("AWS_CONFIG_FILE", "config");
    let creds_ini = creds_file.as_deref().and_then(read_ini);
    let config_ini = config_file.as_deref().and_then(read_ini);
    let mut unsupported = None;
    for name in &profile.candidates {
        if let Some(c) = creds_ini
            .as_ref()
            .and_then(|i| i.get(name))
            .and_then(static_keys)
        {
            let file = creds_file
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string());
            return Ok(Found {
                creds: c,
                from: format!("profile `{name}` in `{file}`"),
            });
        }
        if let Some(section) = config_ini.as_ref().and_then(|i| config_section(i, name)) {
            if let Some(c) = static_keys(section) {
                let file = config_file
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string());
                return Ok(Found {
                    creds: c,
                    from: format!("profile `{name}` in `{file}`"),
                });
            }
            if let Some(k) = [
                "sso_session",
                "sso_start_url",
                "credential_process",
                "role_arn",
                "web_identity_token_file",
            ]
            .iter()
            .find(|k| section.contains_key(**k))
            {
                unsupported = Some(format!(
                    "profile `{name}` uses `{k}`, which cchq does not run"
                ));
            }
        }
    }
    let files = [&creds_file, &config_file]
        .iter()
        .filter_map(|f| f.as_ref().map(|p| format!("`{}`", p.display())))
        .collect::<Vec<_>>();
    looked.push(format!(
        "profile {} in {}",
        profile
            .candidates
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        if files.is_empty() {
            "~/.aws (HOME is not set)".to_owned()
        } else {
            files.join(" and ")
        }
    ));
    if profile.explicit && unsupported.is_none() {
        return Err(no_credentials(s, looked, None));
    }
    match (&imds_base, imds_absent) {
        (None, _) => {
            looked.push("the EC2 instance metadata service (AWS_EC2_METADATA_DISABLED)".to_owned())
        }
        (Some(base), Some(why)) => looked.push(format!(
            "the EC2 instance metadata service at `{base}` ({why})"
        )),
        (Some(base), None) => match imds(base, IMDS_TIMEOUT).await {
            Ok(c) => {
                return Ok(Found {
                    creds: c,
                    from: "the EC2 instance metadata service".to_owned(),
                });
            }
            Err(why) => looked.push(format!(
                "the EC2 instance metadata service at `{base}` ({why})"
            )),
        },
    }
    Err(no_credentials(s, looked, unsupported))
}

fn no_credentials(s: &AwsSecrets, looked: Vec<String>, unsupported: Option<String>) -> Error {
    let env_name = &s.env_name;
    let session = s.aws_profile.as_deref().map_or_else(
        || "<aws_profile>:session (terraform.yml `aws_profile`)".to_owned(),
        |p| format!("{p}:session"),
    );
    let keys = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE to a profile with keys";
    let mut hint = match s.aws_config.credential_style {
        CredentialStyle::Sso => {
            let sso = s.aws_config.sso_config.clone().unwrap_or_default();
            let at = [
                sso.sso_start_url.map(|u| format!("start URL `{u}`")),
                sso.sso_region.map(|r| format!("region `{r}`")),
                sso.sso_account_id.map(|a| format!("account `{a}`")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
            format!(
                "aws.yml has `credential_style: sso`: sign in with `commcare-cloud {env_name} aws-sign-in` (AWS SSO{}), which writes \
                 the session's keys to profile `{session}` in ~/.aws/credentials, where cchq reads them; or `aws sso login --profile {session}` \
                 and export them (`eval \"$(aws configure export-credentials --profile {session} --format env)\"`); or {keys}",
                if at.is_empty() {
                    String::new()
                } else {
                    format!(", {}", at.join(", "))
                }
            )
        }
        CredentialStyle::Iam => format!(
            "{keys}, or sign in with MFA with `commcare-cloud {env_name} aws-sign-in` (aws.yml `credential_style: iam`), which writes \
             the session's keys to profile `{session}` in ~/.aws/credentials, where cchq reads them"
        ),
    };
    if let Some(u) = unsupported {
        hint = format!(
            "{u}: export its credentials (`aws configure export-credentials --format env`); or {hint}"
        );
    }
    Error::new(
        ErrorKind::Vault,
        format!(
            "no AWS credentials for the secrets of `{}`; looked at: {}",
            s.env_name,
            looked.join("; ")
        ),
    )
    .with_hint(hint)
}

/// The account of this EC2 instance (IMDSv2: a token, then the instance identity document's
/// `accountId`), asked as commcare-cloud's `is_ec2_instance_in_account` does: briefly, so that
/// a machine off EC2 hardly waits. `Err` when no token is given (no metadata service); `Ok(Err)`
/// when the document cannot be read.
async fn imds_account(
    base: &str,
) -> std::result::Result<std::result::Result<String, String>, String> {
    let ttl = [(
        "X-aws-ec2-metadata-token-ttl-seconds".to_owned(),
        "21600".to_owned(),
    )];
    let token = imds_call(
        base,
        "PUT",
        ("/latest/api/token", ""),
        &ttl,
        IMDS_PROBE_TIMEOUT,
    )
    .await?;
    let auth = [("X-aws-ec2-metadata-token".to_owned(), token)];
    Ok(async {
        let doc = imds_call(
            base,
            "GET",
            ("/latest/dynamic/instance-identity/document", ""),
            &auth,
            IMDS_PROBE_TIMEOUT,
        )
        .await?;
        let j: J = serde_json::from_str(&doc)
            .map_err(|_| "the instance identity document is not JSON".to_owned())?;
        j.get("accountId")
            .and_then(J::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "the instance identity document has no accountId".to_owned())
    }
    .await)
}

/// One instance metadata call, to `path` then `extra` (not shown in errors): its body, trimmed,
/// when it answers 200.
async fn imds_call(
    base: &str,
    method: &'static str,
    (path, extra): (&str, &str),
    headers: &[(String, String)],
    timeout: Duration,
) -> std::result::Result<String, String> {
    // The metadata service's answers are probes, said in words in the error that lists them.
    let url = Url::parse_as(
        &format!("{}{path}{extra}", base.trim_end_matches('/')),
        "the URL",
    )
    .map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(
        timeout,
        http::send(
            &url,
            method,
            headers,
            b"",
            None,
            timeout,
            http::Proxy::Never,
        ),
    )
    .await
    .map_err(|_| "no answer".to_owned())?
    .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {} for {path}", r.status));
    }
    Ok(String::from_utf8_lossy(&r.body).trim().to_owned())
}

/// IMDSv2: a session token, the instance role's name, its credentials.
async fn imds(base: &str, timeout: Duration) -> std::result::Result<Credentials, String> {
    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let token = imds_call(
        base,
        "PUT",
        ("/latest/api/token", ""),
        &[(
            "X-aws-ec2-metadata-token-ttl-seconds".into(),
            "21600".into(),
        )],
        timeout,
    )
    .await?;
    let auth = [("X-aws-ec2-metadata-token".to_owned(), token)];
    let role = imds_call(base, "GET", (ROLES, ""), &auth, timeout).await?;
    let role = role.lines().next().unwrap_or_default().to_owned();
    if role.is_empty() {
        return Err("the instance has no IAM role".into());
    }
    let doc = imds_call(base, "GET", (ROLES, &role), &auth, timeout).await?;
    let j: J = serde_json::from_str(&doc)
        .map_err(|_| "the instance role's credentials are not JSON".to_owned())?;
    let field = |k: &str| j.get(k).and_then(J::as_str).map(str::to_owned);
    match (field("AccessKeyId"), field("SecretAccessKey")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: field("Token"),
        }),
        _ => Err("the instance role's credentials lack keys".into()),
    }
}

impl Client {
    /// One Secrets Manager call.
    async fn call(&self, op: &str, body: &J) -> std::result::Result<J, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            CallError::Transport(Error::internal(format!("cannot write JSON: {e}")).with_source(e))
        })?;
        let date = crate::clock::iso8601_basic(crate::clock::now());
        let host = self.endpoint.host_header();
        let target = format!("secretsmanager.{op}");
        let mut headers: Vec<(&str, &str)> = vec![
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Host", &host),
            ("X-Amz-Date", &date),
            ("X-Amz-Target", &target),
        ];
        if let Some(t) = &self.creds.session_token {
            headers.push(("X-Amz-Security-Token", t));
        }
        let (path, query) = self
            .endpoint
            .path
            .split_once('?')
            .unwrap_or((&self.endpoint.path, ""));
        let req = sigv4::Request {
            method: "POST",
            path,
            query,
            headers: &headers,
            body: &body,
        };
        let auth = sigv4::authorization(
            &req,
            &sigv4::Scope {
                region: &self.region,
                service: "secretsmanager",
                amz_date: &date,
            },
            &self.creds,
        );
        let mut send: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| *k != "Host")
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        send.push(("Authorization".into(), auth));
        send.push(("Accept".into(), "application/json".into()));
        let r = tokio::time::timeout(
            CALL_TIMEOUT,
            http::send(
                &self.endpoint,
                "POST",
                &send,
                &body,
                self.roots.clone(),
                CALL_TIMEOUT,
                http::Proxy::FromEnv,
            ),
        )
        .await
        .map_err(|_| {
            CallError::transport(format!(
                "no answer from `{}` in {}s",
                self.endpoint.origin(),
                CALL_TIMEOUT.as_secs()
            ))
        })?
        .map_err(CallError::Transport)?;
        let parsed: Option<J> = serde_json::from_slice(&r.body).ok();
        if r.status == 200 {
            return parsed.ok_or_else(|| {
                CallError::transport(format!(
                    "`{}` answered with something that is not JSON",
                    self.endpoint.origin()
                ))
            });
        }
        let code = r
            .header("x-amzn-errortype")
            .map(str::to_owned)
            .or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|j| j.get("__type"))
                    .and_then(J::as_str)
                    .map(str::to_owned)
            })
            .map(|c| {
                let c = c.split(':').next().unwrap_or_default();
                c.rsplit('#').next().unwrap_or_default().to_owned()
            })
            .filter(|c| !c.is_empty());
        let message = parsed
            .as_ref()
            .and_then(|j| j.get("message").or_else(|| j.get("Message")))
            .and_then(J::as_str)
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        match code {
            Some(code) => Err(CallError::Aws { code, message }),
            None => Err(CallError::transport(format!(
                "`{}` answered HTTP {}",
                self.endpoint.origin(),
                r.status
            ))),
        }
    }

    /// The JSON value of secret `id`; `None` when there is no such secret.
    async fn get(&self, id: &str) -> std::result::Result<Option<Value>, CallError> {
        let answer = match self
            .call("GetSecretValue", &json!({ "SecretId": id }))
            .await
        {
            Ok(a) => a,
            Err(CallError::Aws { code, .. }) if code == "ResourceNotFoundException" => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(text) = answer.get("SecretString").and_then(J::as_str) else {
            return Err(CallError::Aws {
                code: "cchq.NotJson".into(),
                message: "it holds no SecretString (a binary secret)".into(),
            });
        };
        let j: J = serde_json::from_str(text).map_err(|_| CallError::Aws {
            code: "cchq.NotJson".into(),
            message: "its SecretString is not JSON".into(),
        })?;
        serde_json::from_value(j).map(Some).map_err(|e| {
            CallError::Transport(
                Error::config(format!("cannot read the value as YAML: {e}")).with_source(e),
            )
        })
    }

    /// Writes `text` as the new value of `id`; creates the secret when there is none. Returns
    /// whether it existed.
    async fn put(&self, id: &str, text: &str) -> std::result::Result<bool, CallError> {
        match self.call("PutSecretValue", &json!({ "SecretId": id, "SecretString": text, "ClientRequestToken": request_token() })).await {
            Ok(_) => Ok(true),
            Err(CallError::Aws { code, .. }) if code == "ResourceNotFoundException" => {
                self.call("CreateSecret", &json!({ "Name": id, "SecretString": text, "ClientRequestToken": request_token() })).await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The names (without `prefix/`) of the secrets under `prefix`.
    async fn list(&self, prefix: &str) -> std::result::Result<Vec<String>, CallError> {
        let start = format!("{prefix}/");
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut body =
                json!({ "MaxResults": 100, "Filters": [{ "Key": "name", "Values": [start] }] });
            if let Some(t) = &next {
                body["NextToken"] = J::from(t.as_str());
            }
            let answer = self.call("ListSecrets", &body).await?;
            for s in answer
                .get("SecretList")
                .and_then(J::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(rest) = s
                    .get("Name")
                    .and_then(J::as_str)
                    .and_then(|n| n.strip_prefix(&start))
                {
                    names.push(rest.to_owned());
                }
            }
            next = answer
                .get("NextToken")
                .and_then(J::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// `e` as the SDK's error: what failed, on which secret, in which region, and what to do.
    fn error(&self, e: CallError, op: &str, id: &str, env_name: &str) -> Error {
        let region = format!("region `{}` from {}", self.region, self.region_from);
        let name = id.split_once('/').map_or(id, |(_, n)| n);
        match e {
            CallError::Transport(why) => why
                .wrap(ErrorKind::Connection, |why| format!("AWS Secrets Manager ({op} of `{id}`, {region}): {why}"))
                .with_hint("check the network, or AWS_ENDPOINT_URL_SECRETSMANAGER / AWS_ENDPOINT_URL when set"),
            CallError::Aws { code, message } => match code.as_str() {
                "ResourceNotFoundException" => {
                    Error::not_found(format!("AWS Secrets Manager has no secret `{id}` ({region})")).with_hint(format!(
                        "create it with `cchq {env_name} secrets edit {name}`, or check the region (terraform.yml `region`, AWS_REGION)"
                    ))
                }
                "AccessDeniedException" => Error::new(
                    ErrorKind::Vault,
                    format!("access denied: {op} of secret `{id}` in AWS Secrets Manager ({region}), with the credentials of {}", self.creds_from),
                )
                .with_hint(format!(
                    "that identity needs `secretsmanager:{op}` on `arn:aws:secretsmanager:{}:*:secret:{}/*`; or use another profile (AWS_PROFILE)",
                    self.region,
                    id.split('/').next().unwrap_or(id)
                )),
                "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException" | "IncompleteSignature"
                | "InvalidClientTokenId" | "SignatureDoesNotMatch" => Error::new(
                    ErrorKind::Vault,
                    format!("AWS refused the credentials of {} ({code}) for secret `{id}` ({region})", self.creds_from),
                )
                .with_hint(format!("sign in again (`commcare-cloud {env_name} aws-sign-in`, `aws sso login`), or set other credentials")),
                "cchq.NotJson" => Error::config(format!("secret `{id}` ({region}): {message}")).with_hint(format!(
                    "commcare-cloud stores every secret JSON-encoded (a string with its quotes: `\"value\"`); set it again with `cchq {env_name} secrets edit {name}`"
                )),
                _ => Error::config(format!(
                    "AWS Secrets Manager refused {op} of `{id}` ({region}): {code}{}",
                    if message.is_empty() { String::new() } else { format!(": {message}") }
                ))
                .with_hint("see the AWS message; check the secret in the AWS console"),
            },
        }
    }
}

/// A random version token (a UUID v4, as the SDKs generate) for `PutSecretValue`/`CreateSecret`.
fn request_token() -> String {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let nanos = crate::clock::now_nanos();
        b = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(format!(
            "{nanos}-{}",
            std::process::id()
        )))[..16]
            .try_into()
            .unwrap_or([7; 16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn to_json(v: &Value) -> Result<J> {
    serde_json::to_value(v).map_err(|_| {
        Error::usage("the value cannot be stored as JSON (a YAML tag?)")
            .with_hint("give a string, number, list or mapping")
    })
}

fn set_path(root: &mut J, path: &[String], new: J, name: &str) -> Result<()> {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        if cur.is_null() {
            *cur = J::Object(serde_json::Map::new());
        }
        let J::Object(m) = cur else {
            return Err(Error::usage(format!(
                "cannot set `{name}`: the value at `{}` is not a mapping",
                path[..i].join(".")
            ))
            .with_hint("give the path of a key inside a mapping"));
        };
        if i + 1 == path.len() {
            m.insert(seg.clone(), new);
            return Ok(());
        }
        cur = m.entry(seg.clone()).or_insert(J::Null);
    }
    Ok(())
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: callable from
/// synchronous code whether or not it runs inside a tokio runtime.
fn block_on<T: Send>(fut: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        Error::internal(format!("cannot start a runtime: {e}")).with_source(e)
                    })?;
                rt.block_on(fut)
            })
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the AWS Secrets Manager client panicked")))
    })
}

#[cfg(test)]
mod tests;
