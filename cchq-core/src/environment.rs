//! commcare-cloud environments: finding the environments root, loading one environment directory
//! unchanged, and building the transport that reaches its hosts.
//!
//! An environment is a directory with `public.yml` and exactly one inventory source
//! (`inventory.ini`, `inventory.csv` or `inventory/`). Beside it: `meta.yml`, `app-processes.yml`
//! and `fab-settings.yml` (merged over commcare-cloud's defaults), `postgresql.yml`, `proxy.yml`,
//! `vault.yml`, `known_hosts`, and cchq's own optional `cchq.yml` (see [`crate::profile`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::app_processes::AppProcesses;
use crate::error::{Error, Result};
pub use crate::fab_settings::{FabSettings, MaintenanceWindow};
use crate::host::{Host, Route};
use crate::inventory::Inventory;
use crate::profile::Profile;
use crate::transport::DynTransport;
use crate::transport::local::LocalTransport;
use crate::transport::routed::Routed;
use crate::transport::ssh::{HostKeyPolicy, SshOptions, SshTarget, SshTransport};
use crate::{Value, yaml};

/// The variables that commcare-cloud forbids in `public.yml` (they belong in `proxy.yml`).
pub const DISALLOWED_PUBLIC_VARS: &[&str] = &[
    "SITE_HOST",
    "J2ME_SITE_HOST",
    "fake_ssl_cert",
    "letsencrypt_cchq_ssl",
    "trusted_proxies",
    "special_sites",
    "NO_WWW_SITE_HOST",
];

/// commcare-cloud's `environmental-defaults/fab-settings.yml`.
const FAB_DEFAULTS: &str =
    include_str!("../profiles/commcare/environmental-defaults/fab-settings.yml");

/// The environments root: `explicit` (`--environments`), else `$CCHQ_ENVIRONMENTS`, else
/// `$COMMCARE_CLOUD_ENVIRONMENTS`.
pub fn environments_root(explicit: Option<&Path>) -> Result<PathBuf> {
    let (root, from) = if let Some(p) = explicit {
        (p.to_path_buf(), "--environments")
    } else if let Some(p) = std::env::var_os("CCHQ_ENVIRONMENTS").filter(|v| !v.is_empty()) {
        (PathBuf::from(p), "CCHQ_ENVIRONMENTS")
    } else if let Some(p) =
        std::env::var_os("COMMCARE_CLOUD_ENVIRONMENTS").filter(|v| !v.is_empty())
    {
        (PathBuf::from(p), "COMMCARE_CLOUD_ENVIRONMENTS")
    } else {
        return Err(Error::config("no environments directory given")
            .with_hint("pass `--environments DIR` or set `CCHQ_ENVIRONMENTS` (or `COMMCARE_CLOUD_ENVIRONMENTS`) to the directory holding your environments"));
    };
    if !root.is_dir() {
        return Err(Error::not_found(format!(
            "environments directory `{}` (from {from}) does not exist",
            root.display()
        ))
        .with_hint("point it at the directory that holds one folder per environment"));
    }
    Ok(root)
}

/// The inventory source of an environment directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventorySource {
    /// `inventory.ini`.
    Ini(PathBuf),
    /// `inventory.csv`.
    Csv(PathBuf),
    /// `inventory/` (every file in it, in name order, read as INI).
    Dir(PathBuf),
}

fn inventory_sources(dir: &Path) -> Vec<InventorySource> {
    let mut out = Vec::new();
    let ini = dir.join("inventory.ini");
    if ini.is_file() {
        out.push(InventorySource::Ini(ini));
    }
    let csv = dir.join("inventory.csv");
    if csv.is_file() {
        out.push(InventorySource::Csv(csv));
    }
    let d = dir.join("inventory");
    if d.is_dir() {
        out.push(InventorySource::Dir(d));
    }
    out
}

/// The names of the environments under `root`, sorted: directories with `public.yml` and exactly
/// one inventory source.
pub fn list_environments(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root.display(), e))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir()
            && p.join("public.yml").is_file()
            && inventory_sources(&p).len() == 1
            && let Some(n) = p.file_name().and_then(|n| n.to_str())
        {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `meta.yml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// The environment's deploy name (used in program names and paths).
    pub deploy_env: String,
    /// The monitoring id.
    pub env_monitoring_id: String,
    /// The `_users/<name>.yml` groups.
    pub users: Vec<String>,
    /// Deploy formplayer with every deploy.
    #[serde(default)]
    pub always_deploy_formplayer: bool,
    /// Slack channel for alerts.
    #[serde(default)]
    pub slack_alerts_channel: Option<String>,
    /// Slack channel for notifications.
    #[serde(default)]
    pub slack_notifications_channel: Option<String>,
    /// An environment without CommCare HQ services.
    #[serde(default)]
    pub bare_non_cchq_environment: bool,
    /// Deploy keys.
    #[serde(default)]
    pub deploy_keys: IndexMap<String, String>,
    /// `ansible-vault` (default) or `aws-secrets`.
    #[serde(default)]
    pub secrets_backend: Option<String>,
}

/// Where the environment's secrets are (`meta.yml` `secrets_backend`, see [`crate::secrets`]):
/// `vault.yml` (plaintext YAML, or an ansible-vault file not yet decrypted), or AWS Secrets
/// Manager (not yet fetched).
#[derive(Clone, PartialEq)]
pub enum Vault {
    /// No `vault.yml`.
    Missing,
    /// A plaintext `vault.yml`.
    Plain(Value),
    /// An `$ANSIBLE_VAULT` file; its text, for decryption.
    Encrypted(String),
    /// `secrets_backend: aws-secrets`: the secrets are fetched from AWS Secrets Manager
    /// (`vault.yml` is not read).
    Aws(Box<crate::secrets::aws::AwsSecrets>),
}

impl Vault {
    /// The values of a plaintext vault (`None` when missing, still encrypted, or in AWS).
    pub fn plain(&self) -> Option<Value> {
        match self {
            Self::Plain(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Whether the values must be opened before use: an encrypted vault (a password), or AWS
    /// Secrets Manager (credentials and a fetch).
    pub fn needs_opening(&self) -> bool {
        matches!(self, Self::Encrypted(_) | Self::Aws(_))
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "Vault::Missing",
            Self::Plain(_) => "Vault::Plain(<secret>)",
            Self::Encrypted(_) => "Vault::Encrypted(..)",
            Self::Aws(_) => "Vault::Aws(..)",
        })
    }
}

/// A loaded environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Its name (the directory name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// `meta.yml`.
    pub meta: Meta,
    /// The inventory.
    pub inventory: Inventory,
    /// Where the inventory came from.
    pub inventory_source: InventorySource,
    /// `public.yml`.
    pub public: IndexMap<String, Value>,
    /// `app-processes.yml` over the defaults (`None` for bare environments without one).
    pub app_processes: Option<AppProcesses>,
    /// `fab-settings.yml` over the defaults.
    pub fab_settings: FabSettings,
    /// `postgresql.yml` as written.
    pub postgresql: Value,
    /// `postgresql.yml` as commcare-cloud reads it: typed, hosts resolved against the inventory
    /// and checked ([`crate::postgresql`]); `None` without the file, or in a bare environment
    /// (commcare-cloud does not read it there).
    pub postgresql_config: Option<crate::postgresql::PostgresqlConfig>,
    /// `proxy.yml`.
    pub proxy: Value,
    /// `vault.yml`.
    pub vault: Vault,
    /// `known_hosts`, when the environment has one.
    pub known_hosts: Option<PathBuf>,
    /// The profile: built-in `commcare` with `cchq.yml` over it.
    pub profile: Profile,
    /// Connections log in as commcare-cloud's `--use-factory-auth` does (to bootstrap hosts that
    /// have no `ansible` user yet): see [`Environment::use_factory_auth`].
    pub factory_auth: bool,
}

fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
            Error::at(
                path,
                None,
                None,
                format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Reads an optional YAML file into `T`; an empty file reads as `T`'s value of `null`.
fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match read_text(path)? {
        None => Ok(None),
        Some(text) => yaml::from_str(&text, path).map(Some),
    }
}

/// Reads an optional YAML file that Ansible reads, as Ansible does (YAML 1.1: [`yaml::load`]).
fn load_ansible_yaml(path: &Path) -> Result<Option<Value>> {
    match read_text(path)? {
        None => Ok(None),
        Some(text) => yaml::load(&text, path).map(Some),
    }
}

fn mapping(v: Value, path: &Path) -> Result<IndexMap<String, Value>> {
    match v {
        Value::Null => Ok(IndexMap::new()),
        Value::Mapping(m) => {
            let mut out = IndexMap::new();
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s,
                    other => yaml::scalar_to_string(&other).ok_or_else(|| {
                        Error::at(path, None, None, "expected string keys at the top level")
                    })?,
                };
                out.insert(key, v);
            }
            Ok(out)
        }
        _ => Err(not_a_mapping(path)),
    }
}

fn not_a_mapping(path: &Path) -> Error {
    Error::at(
        path,
        None,
        None,
        "expected a mapping of `key: value` at the top level",
    )
    .with_hint("the file holds `key: value` lines (or nothing), not a list or a single value")
}

/// `v` when it is a mapping, or null (an empty file).
fn mapping_or_null(v: Value, path: &Path) -> Result<Value> {
    match v {
        Value::Null | Value::Mapping(_) => Ok(v),
        _ => Err(not_a_mapping(path)),
    }
}

impl Environment {
    /// Loads environment `name` from `root`.
    pub fn load(root: &Path, name: &str) -> Result<Self> {
        let dir = root.join(name);
        let valid_name = !(name.is_empty() || name.contains('/') || name.starts_with('.'));
        if valid_name && dir.is_dir() && !dir.join("public.yml").exists() {
            return Err(missing_public(name, &dir));
        }
        if !valid_name || !dir.join("public.yml").is_file() {
            let known = list_environments(root).unwrap_or_default();
            let hint = if known.is_empty() {
                format!(
                    "`{}` holds no environments (directories with `public.yml` and an inventory)",
                    root.display()
                )
            } else {
                format!("environments in `{}`: {}", root.display(), known.join(", "))
            };
            return Err(Error::not_found(format!("unknown environment `{name}`")).with_hint(hint));
        }
        Self::load_dir(&dir)
    }

    /// Loads the environment in `dir` (its name is the directory name).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("environment")
            .to_owned();
        let sources = inventory_sources(dir);
        let inventory_source = match sources.len() {
            1 => sources
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("inventory source vanished"))?,
            0 => {
                return Err(
                    Error::config(format!("environment `{name}` has no inventory"))
                        .with_hint(format!("add `{}/inventory.ini`", dir.display())),
                );
            }
            _ => {
                return Err(Error::config(format!(
                    "environment `{name}` has more than one inventory source"
                ))
                .with_hint(
                    "keep exactly one of `inventory.ini`, `inventory.csv` and `inventory/`",
                ));
            }
        };
        let inventory = load_inventory(&inventory_source)?;
        check_connection_vars(&inventory, inventory_source.path())?;

        let meta_path = dir.join("meta.yml");
        let meta: Meta = load_yaml(&meta_path)?.ok_or_else(|| {
            Error::config(format!(
                "environment `{name}` has no `meta.yml` (`{}` is missing)",
                meta_path.display()
            ))
            .with_hint("add `meta.yml` with `deploy_env`, `env_monitoring_id` and `users`")
        })?;

        crate::names::check_deploy_env(&meta.deploy_env, &meta_path)?;

        let public_path = dir.join("public.yml");
        let public = mapping(
            load_ansible_yaml(&public_path)?.ok_or_else(|| missing_public(&name, dir))?,
            &public_path,
        )?;
        if let Some(ls) = public.get("localsettings") {
            let top = Value::Mapping(
                std::iter::once((Value::String("localsettings".into()), ls.clone())).collect(),
            );
            crate::names::check_localsettings(&top, "localsettings", &public_path)?;
        }
        if let Some(user) = public
            .get("commcare_cloud_remote_user")
            .and_then(yaml::scalar_to_string)
            && let Some(problem) = ssh_word_problem(&user)
        {
            return Err(Error::at(
                &public_path,
                None,
                None,
                format!(
                    "`commcare_cloud_remote_user` is `{}`, which {problem}",
                    user.escape_debug()
                ),
            )
            .with_hint("ssh would read it as an option; set it to the user cchq logs in as"));
        }

        let fab_path = dir.join("fab-settings.yml");
        let mut fab: IndexMap<String, Value> = mapping(
            yaml::load(
                FAB_DEFAULTS,
                Path::new("environmental-defaults/fab-settings.yml"),
            )?,
            &fab_path,
        )?;
        if let Some(v) = load_ansible_yaml(&fab_path)? {
            fab.extend(mapping(v, &fab_path)?);
        }
        // `FabSettingsConfig.wrap`: deprecated keys are dropped (they have no effect), and
        // `use_shared_dir_for_staticfiles: false` drops `shared_dir_for_staticfiles`.
        for deprecated in ["py3_include_venv", "py3_run_deploy"] {
            fab.shift_remove(deprecated);
        }
        if fab
            .shift_remove("use_shared_dir_for_staticfiles")
            .is_some_and(|v| !yaml::truthy(&v))
        {
            fab.shift_remove("shared_dir_for_staticfiles");
        }
        let fab_settings: FabSettings = yaml::from_value(
            Value::Mapping(
                fab.into_iter()
                    .map(|(k, v)| (Value::String(k), v))
                    .collect(),
            ),
            &fab_path,
        )?;

        let app_path = dir.join("app-processes.yml");
        let app_processes = match read_text(&app_path)? {
            Some(text) => {
                let ap = AppProcesses::load(&text, &app_path)?;
                crate::names::check_app_processes(&ap, &app_path)?;
                Some(ap)
            }
            None if meta.bare_non_cchq_environment => None,
            None => Some(AppProcesses::load("", &app_path)?),
        };

        let postgresql_path = dir.join("postgresql.yml");
        let postgresql = mapping_or_null(
            load_ansible_yaml(&postgresql_path)?.unwrap_or(Value::Null),
            &postgresql_path,
        )?;
        // A missing or empty file is no configuration (commcare-cloud would fail to read it; cchq
        // needs it only where databases are rendered).
        let postgresql_config = if postgresql.is_null() || meta.bare_non_cchq_environment {
            None
        } else {
            let mut c = crate::postgresql::PostgresqlConfig::parse(&postgresql, &postgresql_path)?;
            c.resolve(&inventory, &postgresql_path)?;
            c.check(&postgresql_path)?;
            // What commcare-cloud's check does last: generate the variables (a standby's master).
            c.generated_variables(&inventory, &postgresql_path)?;
            Some(c)
        };
        let proxy_path = dir.join("proxy.yml");
        let proxy = mapping_or_null(
            load_ansible_yaml(&proxy_path)?.unwrap_or(Value::Null),
            &proxy_path,
        )?;
        if !proxy.is_null() && !meta.bare_non_cchq_environment {
            check_proxy(&proxy, &proxy_path)?;
        }

        let backend = crate::secrets::Backend::from_name(meta.secrets_backend.as_deref())
            .ok_or_else(|| {
                Error::at(
                    &meta_path,
                    None,
                    None,
                    format!(
                        "`secrets_backend` is `{}`",
                        meta.secrets_backend.as_deref().unwrap_or_default()
                    ),
                )
                .with_hint(format!(
                    "use one of {} (commcare-cloud's)",
                    crate::secrets::Backend::NAMES.join(", ")
                ))
            })?;
        let vault_path = dir.join("vault.yml");
        let vault_text = match backend {
            crate::secrets::Backend::AnsibleVault => read_text(&vault_path)?,
            crate::secrets::Backend::AwsSecrets => None,
        };
        let vault = match vault_text {
            None if backend == crate::secrets::Backend::AwsSecrets => {
                Vault::Aws(Box::new(crate::secrets::aws::AwsSecrets::load(&name, dir)?))
            }
            None => Vault::Missing,
            Some(t) => {
                crate::vault::refuse_bom(&t).map_err(|e| e.context(vault_path.display()))?;
                if crate::vault::is_encrypted(&t) {
                    Vault::Encrypted(t)
                } else {
                    let v = yaml::load(&t, &vault_path).map_err(|e| {
                        // Never echo vault contents: keep only the location of the problem.
                        Error::at(&vault_path, None, None, "is not valid YAML")
                            .with_hint(e.message().split(':').take(3).collect::<Vec<_>>().join(":"))
                    })?;
                    let v = mapping_or_null(v, &vault_path)?;
                    crate::names::check_localsettings(&v, "localsettings_private", &vault_path)?;
                    Vault::Plain(v)
                }
            }
        };

        let known_hosts = Some(dir.join("known_hosts")).filter(|p| p.is_file());
        let profile = Profile::load(dir, &fab_settings)?;
        crate::names::check_app_user(&profile.app_user, dir)?;

        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            meta,
            inventory,
            inventory_source,
            public,
            app_processes,
            fab_settings,
            postgresql,
            postgresql_config,
            proxy,
            vault,
            known_hosts,
            profile,
            factory_auth: false,
        })
    }

    /// Connects from now on as commcare-cloud's `--use-factory-auth`: with `public.yml`'s
    /// `commcare_cloud_pem` as the key of every host, logging in as `commcare_cloud_remote_user`
    /// when set, else `commcare_cloud_root_user` (default `root`) — a host's own `ansible_user`
    /// still wins, as in Ansible.
    ///
    /// # Errors
    /// No `commcare_cloud_pem` (commcare-cloud then asks for a password; cchq does not: every
    /// connection is made without a terminal), or a pem that is not a file.
    pub fn use_factory_auth(&mut self) -> Result<()> {
        let public = self.dir.join("public.yml");
        let pem = self.pem().ok_or_else(|| {
            Error::config(format!("--use-factory-auth needs `commcare_cloud_pem` in {}", public.display()))
                .with_hint("set it to the key the hosts were created with (cchq does not ask for root passwords)")
        })?;
        if !pem.is_file() {
            return Err(Error::config(format!(
                "{}: `commcare_cloud_pem` is `{}`, which is not a file",
                public.display(),
                pem.display()
            )));
        }
        self.factory_auth = true;
        Ok(())
    }

    /// The user connections log in as when a host names none (`ansible_user`): the remote user,
    /// or with [`Environment::use_factory_auth`] the factory user.
    pub fn login_user(&self) -> String {
        if !self.factory_auth || self.public_var("commcare_cloud_remote_user").is_some() {
            return self.remote_user();
        }
        self.public_var("commcare_cloud_root_user")
            .and_then(yaml::scalar_to_string)
            .unwrap_or_else(|| "root".to_owned())
    }

    /// A `public.yml` variable.
    pub fn public_var(&self, key: &str) -> Option<&Value> {
        self.public.get(key)
    }

    /// The user cchq logs in as: `commcare_cloud_remote_user`, else `ansible`.
    pub fn remote_user(&self) -> String {
        self.public_var("commcare_cloud_remote_user")
            .and_then(yaml::scalar_to_string)
            .unwrap_or_else(|| "ansible".to_owned())
    }

    /// The secrets' values, in the vault's shape: a plaintext vault as it is, an ansible-vault
    /// file decrypted with what `password` gives (called only for an encrypted vault), AWS Secrets
    /// Manager's secrets fetched ([`crate::secrets::aws`], credentials from the process
    /// environment); `None` without a `vault.yml`.
    ///
    /// # Errors
    /// `password`'s, a wrong password ([`crate::ErrorKind::Vault`]), or decrypted text that is not
    /// YAML ([`crate::ErrorKind::Config`]); AWS's (no credentials or access denied are
    /// [`crate::ErrorKind::Vault`]).
    pub fn vault_value(
        &self,
        password: impl FnOnce() -> Result<crate::vault::Password>,
    ) -> Result<Option<Value>> {
        let text = match &self.vault {
            Vault::Missing => return Ok(None),
            Vault::Plain(v) => return Ok(Some(v.clone())),
            Vault::Aws(a) => {
                let v = a.vault_value(&crate::secrets::aws::AwsEnv::process())?;
                crate::names::check_localsettings(
                    &v,
                    "localsettings_private",
                    Path::new(&a.prefix),
                )?;
                return Ok(Some(v));
            }
            Vault::Encrypted(t) => t,
        };
        let password = password()?;
        let path = self.dir.join("vault.yml");
        let plain = zeroize::Zeroizing::new(
            crate::vault::decrypt_str(text, &password).map_err(|e| e.context(path.display()))?,
        );
        let v = yaml::load(&plain, &path).map_err(|_| {
            Error::config(format!("{}: decrypted, but not valid YAML", path.display()))
        })?;
        let v = mapping_or_null(v, &path)?;
        crate::names::check_localsettings(&v, "localsettings_private", &path)?;
        Ok(Some(v))
    }

    /// [`Environment::vault_value`] with the password from `ANSIBLE_VAULT_PASSWORD` or the file
    /// `CCHQ_VAULT_PASSWORD_FILE`, never a prompt (for callers without a terminal).
    ///
    /// # Errors
    /// Those of [`Environment::vault_value`]; [`crate::ErrorKind::Vault`] when the vault is
    /// encrypted and neither variable is set.
    pub fn vault_without_prompt(&self) -> Result<Option<Value>> {
        self.vault_value(|| {
            crate::vault::password_from_environment()?.ok_or_else(|| {
                Error::new(
                    crate::ErrorKind::Vault,
                    "the vault is encrypted and no password was given",
                )
                .with_hint("set ANSIBLE_VAULT_PASSWORD or CCHQ_VAULT_PASSWORD_FILE")
            })
        })
    }

    /// Where this environment's things live on its hosts (see [`crate::paths`]).
    pub fn paths(&self) -> crate::paths::Paths {
        crate::paths::Paths::new(&self.profile.www_root, &self.meta.deploy_env)
    }

    /// The user the app runs as (`cchq`).
    pub fn app_user(&self) -> &str {
        &self.profile.app_user
    }

    /// Whether `host` is reached without SSH (`ansible_connection=local`): whether
    /// [`Environment::host`]'s route would be [`Route::Local`], without building the host.
    pub fn is_local(&self, host: &str) -> bool {
        crate::host::is_local_connection(&self.inventory.host_vars(host))
    }

    /// The host named `name` in the inventory: its address, port, user, merged variables, groups
    /// and route (see [`crate::host`]).
    ///
    /// Errors: not found when the inventory has no such host (an address or a group name is not a
    /// host: [`Environment::host_or_address`] takes an address, [`Environment::hosts`] a pattern).
    pub fn host(&self, name: &str) -> Result<Host> {
        if self.inventory.host(name).is_none() {
            return Err(self.unknown_host(name));
        }
        Ok(self.host_or_address(name))
    }

    /// The hosts `pattern` selects (an Ansible host pattern as `--limit` takes it: `webworkers`,
    /// `web*:!web3`, `postgresql[0]`, `all`), in the order Ansible lists them.
    ///
    /// Errors: a malformed pattern, or one that selects no host (never read as "all hosts"). The
    /// warnings about parts that matched nothing are dropped: [`Inventory::select`] gives them.
    pub fn hosts(&self, pattern: &str) -> Result<Vec<Host>> {
        let selection = self
            .inventory
            .select(pattern)
            .map_err(|e| e.context(format!("environment `{}`", self.name)))?;
        Ok(selection
            .hosts
            .iter()
            .map(|h| self.host_or_address(h))
            .collect())
    }

    /// The host `name` as [`Environment::host`] gives it when the inventory has it; otherwise an
    /// address outside the inventory (as `cchq ENV ssh 10.1.2.3` takes it): no variables, no
    /// groups, reached over SSH at `name` as the login user.
    pub fn host_or_address(&self, name: &str) -> Host {
        let vars = self.inventory.host_vars(name);
        let groups = self
            .inventory
            .groups_of(name)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let target = self.ssh_target_of(name, &vars);
        Host::new(name, vars, groups, target)
    }

    fn unknown_host(&self, name: &str) -> Error {
        let close = self.inventory.close_host_names(name);
        let list = format!("`cchq {} hosts` lists them", self.name);
        let hint = if close.is_empty() {
            format!("name a host of the inventory: {list}")
        } else {
            let names: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
            format!("did you mean {}? {list}", names.join(" or "))
        };
        Error::not_found(format!(
            "no host `{name}` in the inventory of environment `{}`",
            self.name
        ))
        .with_hint(hint)
    }

    /// The SSH settings of the environment.
    pub fn ssh_options(&self) -> Result<SshOptions> {
        let mut opts = SshOptions::default();
        let strict = self
            .public_var("commcare_cloud_strict_host_key_checking")
            .map(yaml::truthy);
        opts.known_hosts.clone_from(&self.known_hosts);
        opts.host_key_policy = match (&self.known_hosts, strict) {
            (_, Some(false)) => HostKeyPolicy::Off,
            _ => HostKeyPolicy::Strict,
        };
        if let Some(args) = self.public_var("commcare_cloud_ssh_args") {
            let list: Vec<String> = match args {
                Value::Sequence(s) => s.iter().filter_map(yaml::scalar_to_string).collect(),
                other => yaml::scalar_to_string(other).into_iter().collect(),
            };
            opts.extra_options = SshOptions::parse_ssh_args(&list).map_err(|e| {
                e.context(format!(
                    "{}: `commcare_cloud_ssh_args`",
                    self.dir.join("public.yml").display()
                ))
            })?;
        }
        if let Some(n) = self
            .public_var("cchq_ssh_max_sessions")
            .and_then(Value::as_u64)
        {
            opts.max_sessions = usize::try_from(n).unwrap_or(10);
        }
        // Connections started at once: the environment's choice, else many, except through a
        // bastion named in the ssh arguments, whose own sshd would drop connections past its
        // `MaxStartups` (those are retried anyway: `transport::ssh`).
        if let Some(n) = self
            .public_var("cchq_ssh_connect_concurrency")
            .and_then(Value::as_u64)
        {
            opts.connect_concurrency =
                usize::try_from(n).unwrap_or(crate::transport::ssh::PROXIED_CONNECT_CONCURRENCY);
        } else if opts.through_proxy() {
            opts.connect_concurrency = crate::transport::ssh::PROXIED_CONNECT_CONCURRENCY;
        }
        // Keeping masters between runs, as Ansible's ControlPersist does (60 s): the
        // environment's `cchq_ssh_control_persist`, which the operator's
        // CCHQ_SSH_CONTROL_PERSIST overrides; `no` turns it off.
        let public = self.dir.join("public.yml");
        opts.persist = Some(DEFAULT_CONTROL_PERSIST);
        opts.persist_by_default = true;
        if let Ok(v) = std::env::var("CCHQ_SSH_CONTROL_PERSIST") {
            opts.persist_by_default = false;
            opts.persist = parse_persist(&v)
                .map_err(|e| e.context("the environment variable CCHQ_SSH_CONTROL_PERSIST"))?;
        } else if let Some(v) = self.public_var("cchq_ssh_control_persist") {
            opts.persist_by_default = false;
            let text = match v {
                Value::Bool(false) => "no".to_owned(),
                other => yaml::scalar_to_string(other).unwrap_or_default(),
            };
            opts.persist = parse_persist(&text).map_err(|e| {
                e.context(format!("{}: `cchq_ssh_control_persist`", public.display()))
            })?;
        }
        Ok(opts)
    }

    /// Where and as whom to connect to `host`. The key: the host's `ansible_ssh_private_key_file`
    /// (relative to the environment), else none (the operator's own keys and agent). Not
    /// `public.yml`'s `commcare_cloud_pem`: commcare-cloud gives it to ssh only with
    /// `--use-factory-auth` (`add_factory_auth_cmd`, logging in as the root user to bootstrap
    /// users); its normal runs log in as `ansible` with the operator's keys, and a key given with
    /// `-i` comes with `IdentitiesOnly=yes` here, so using the pem would refuse every other key.
    /// With [`Environment::use_factory_auth`], the pem is every host's key.
    ///
    /// The same target as [`Environment::host`]'s [`Route::Ssh`], without building the host.
    pub fn ssh_target(&self, host: &str) -> SshTarget {
        self.ssh_target_of(host, &self.inventory.host_vars(host))
    }

    /// [`Environment::ssh_target`] from the host's merged variables.
    fn ssh_target_of(&self, host: &str, vars: &crate::inventory::Vars) -> SshTarget {
        let get = |k: &str| vars.get(k).and_then(yaml::scalar_to_string);
        let own = get("ansible_ssh_private_key_file")
            .or_else(|| get("ansible_private_key_file"))
            .map(|k| {
                let p = PathBuf::from(shellexpand_home(&k));
                if p.is_relative() { self.dir.join(p) } else { p }
            });
        let keyfile = if self.factory_auth {
            self.pem().or(own)
        } else {
            own
        };
        SshTarget {
            name: host.to_owned(),
            address: get("ansible_host")
                .or_else(|| get("ansible_ssh_host"))
                .unwrap_or_else(|| host.to_owned()),
            // Checked at load (`check_connection_vars`): a port that is set is a port.
            port: vars
                .get("ansible_port")
                .filter(|v| !v.is_null())
                .or_else(|| vars.get("ansible_ssh_port"))
                .and_then(parse_port),
            user: Some(
                get("ansible_user")
                    .or_else(|| get("ansible_ssh_user"))
                    .unwrap_or_else(|| self.login_user()),
            ),
            keyfile,
        }
    }

    /// `public.yml`'s `commcare_cloud_pem`, `~` expanded and made absolute from the current
    /// directory (`None` when unset or empty).
    pub fn pem(&self) -> Option<PathBuf> {
        let pem = self
            .public_var("commcare_cloud_pem")
            .and_then(yaml::scalar_to_string)
            .filter(|s| !s.is_empty())?;
        let p = PathBuf::from(shellexpand_home(&pem));
        Some(if p.is_relative() {
            std::env::current_dir().map_or_else(|_| p.clone(), |d| d.join(&p))
        } else {
            p
        })
    }

    /// The transport for `hosts` (all inventory hosts when `None`): SSH, or local processes for
    /// hosts with `ansible_connection=local`.
    pub fn transport(&self, hosts: Option<&[String]>) -> Result<DynTransport> {
        let all: Vec<String>;
        let hosts = match hosts {
            Some(h) => h,
            None => {
                all = self.inventory.hosts().map(|h| h.name.clone()).collect();
                &all
            }
        };
        let mut local = Vec::new();
        let mut targets = Vec::new();
        for h in hosts {
            match self.host_or_address(h).route {
                Route::Ssh(target) => targets.push(target),
                Route::Local => local.push(h.clone()),
            }
        }
        let ssh: Option<DynTransport> = if targets.is_empty() {
            None
        } else {
            Some(Arc::new(SshTransport::new(targets, self.ssh_options()?)?))
        };
        let local: Option<DynTransport> = if local.is_empty() {
            None
        } else {
            Some(Arc::new(LocalTransport::new(local)))
        };
        Ok(match (ssh, local) {
            (Some(s), None) => s,
            (None, Some(l)) => l,
            (Some(s), Some(l)) => Arc::new(Routed::new(vec![s, l])),
            (None, None) => Arc::new(Routed::new(Vec::new())),
        })
    }
}

/// `proxy.yml` as commcare-cloud's `ProxyConfig` takes it: its keys only, `SITE_HOST` required,
/// each value of its type (`null` is accepted as unset).
fn check_proxy(v: &Value, path: &Path) -> Result<()> {
    const STRINGS: &[&str] = &[
        "SITE_HOST",
        "NO_WWW_SITE_HOST",
        "J2ME_SITE_HOST",
        "nginx_combined_cert_value",
        "nginx_key_value",
        "nginx_ssl_protocols",
        "nginx_ssl_ciphers",
        "primary_ssl_env",
        "tableau_server",
    ];
    const INTEGERS: &[&str] = &[
        "nginx_hsts_max_age",
        "nginx_max_worker_connection",
        "nginx_worker_rlimit_nofile",
    ];
    const BOOLS: &[&str] = &["fake_ssl_cert", "letsencrypt_cchq_ssl"];
    const LISTS: &[&str] = &[
        "trusted_proxies",
        "special_sites",
        "extra_sites",
        "nginx_block_ips",
    ];
    let Value::Mapping(m) = v else { return Ok(()) };
    let mut site_host = false;
    for (k, v) in m {
        let key = yaml::scalar_to_string(k).unwrap_or_default();
        let k = key.as_str();
        let bad = |what: &str| {
            Error::at(path, None, None, format!("`{k}`: expected {what}"))
                .with_hint("see commcare-cloud's proxy.yml schema (`ProxyConfig`)")
        };
        let v = match v {
            Value::Tagged(t) => &t.value,
            other => other,
        };
        if v.is_null() {
            continue;
        }
        if STRINGS.contains(&k) {
            site_host |= k == "SITE_HOST";
            if !v.is_string() {
                return Err(bad("a string"));
            }
        } else if INTEGERS.contains(&k) {
            if !v.is_i64() {
                return Err(bad("an integer"));
            }
        } else if BOOLS.contains(&k) {
            if !v.is_bool() {
                return Err(bad("a boolean"));
            }
        } else if LISTS.contains(&k) {
            if !v
                .as_sequence()
                .is_some_and(|s| s.iter().all(Value::is_string))
            {
                return Err(bad("a list of strings"));
            }
        } else {
            let all: Vec<&str> = [STRINGS, INTEGERS, BOOLS, LISTS].concat();
            return Err(Error::at(
                path,
                None,
                None,
                format!("`{k}`: unknown key (commcare-cloud refuses it)"),
            )
            .with_hint(format!("the keys of proxy.yml: {}", all.join(", "))));
        }
    }
    if !site_host {
        return Err(Error::at(path, None, None, "`SITE_HOST` is required")
            .with_hint("set `SITE_HOST` to the site's host name"));
    }
    Ok(())
}

fn shellexpand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_owned(),
    }
}

impl InventorySource {
    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Ini(p) | Self::Csv(p) | Self::Dir(p) => p,
        }
    }
}

fn missing_public(name: &str, dir: &Path) -> Error {
    let path = dir.join("public.yml");
    Error::config(format!(
        "environment `{name}` has no `public.yml` (`{}` is missing)",
        path.display()
    ))
    .with_hint(format!(
        "create `{}` (it may hold just `{{}}`), or check the environment's name",
        path.display()
    ))
}

/// The inventory variables whose values become `ssh`'s destination, and its user.
const ADDRESS_VARS: &[&str] = &["ansible_host", "ansible_ssh_host"];
const USER_VARS: &[&str] = &["ansible_user", "ansible_ssh_user"];
const PORT_VARS: &[&str] = &["ansible_port", "ansible_ssh_port"];

/// Why `word` cannot be given to `ssh` as a destination or user: empty, starting with `-` (ssh,
/// and the `openssh` crate, which puts no `--` before the destination, would read
/// `-oProxyCommand=...` as an option and run a local command), also after an `ssh://` prefix, or
/// holding control characters.
fn ssh_word_problem(word: &str) -> Option<&'static str> {
    let after_scheme = word.strip_prefix("ssh://");
    if word.is_empty() {
        Some("is empty")
    } else if word.starts_with('-') {
        Some("starts with `-`")
    } else if after_scheme.is_some_and(|rest| {
        rest.starts_with('-')
            || rest
                .rsplit_once('@')
                .is_some_and(|(_, h)| h.starts_with('-'))
    }) {
        Some("names a host or user starting with `-`")
    } else if word.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    }
}

/// An SSH port from an inventory value: 1 to 65535.
fn parse_port(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Tagged(t) => return parse_port(&t.value),
        _ => None,
    }?;
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// Refuses, at load, the connection variables that would be misread: a host name, address or
/// user that `ssh` would take for an option (see [`ssh_word_problem`]), and a port that is not
/// one (`ansible_port=99999` was silently dropped and ssh went to port 22).
fn check_connection_vars(inventory: &Inventory, source: &Path) -> Result<()> {
    for host in inventory.hosts() {
        let name = host.name.as_str();
        if let Some(problem) = ssh_word_problem(name) {
            return Err(Error::at(source, None, None, format!("host name `{}` {problem}", name.escape_debug()))
                .with_hint("ssh would read it as an option; rename the host (and set `ansible_host` to its address)"));
        }
        for (keys, what) in [
            (ADDRESS_VARS, "the host's name or address"),
            (USER_VARS, "the user to log in as"),
        ] {
            for key in keys {
                let Some(v) = inventory.host_var(name, key).filter(|v| !v.is_null()) else {
                    continue;
                };
                let text = yaml::scalar_to_string(&v).unwrap_or_default();
                if let Some(problem) = ssh_word_problem(&text) {
                    return Err(Error::at(
                        source,
                        None,
                        None,
                        format!(
                            "host `{name}`: `{key}` is `{}`, which {problem}",
                            text.escape_debug()
                        ),
                    )
                    .with_hint(format!(
                        "ssh would read it as an option; set `{key}` to {what}"
                    )));
                }
            }
        }
        for key in PORT_VARS {
            let Some(v) = inventory.host_var(name, key).filter(|v| !v.is_null()) else {
                continue;
            };
            if parse_port(&v).is_none() {
                let shown = yaml::scalar_to_string(&v).unwrap_or_else(|| format!("{v:?}"));
                return Err(Error::at(
                    source,
                    None,
                    None,
                    format!(
                        "host `{name}`: `{key}` is `{}`, which is not a port",
                        shown.escape_debug()
                    ),
                )
                .with_hint(format!(
                    "set `{key}` to a number from 1 to 65535, or remove it for port 22"
                )));
            }
        }
    }
    Ok(())
}

fn load_inventory(source: &InventorySource) -> Result<Inventory> {
    match source {
        InventorySource::Ini(p) => Inventory::parse_ini(&read_text(p)?.unwrap_or_default(), p),
        InventorySource::Csv(p) => Inventory::parse_csv(&read_text(p)?.unwrap_or_default(), p),
        InventorySource::Dir(d) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| Error::io(d.display(), e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.') || n.ends_with('~'))
                })
                .collect();
            files.sort();
            // As Ansible: every file of the directory adds to one inventory.
            let mut builder = Inventory::builder();
            for f in &files {
                let text = read_text(f)?.unwrap_or_default();
                if f.extension().is_some_and(|e| e == "csv") {
                    builder.parse_csv(&text, f)?;
                } else {
                    builder.parse_ini(&text, f)?;
                }
            }
            builder.build()
        }
    }
}

/// `60`, `60s`, `5m`, `1h`: how long kept SSH masters may stay idle; `0`, `no`, `false`, `off`:
/// not kept.
/// How long kept SSH masters wait idle for the next run unless the environment says otherwise
/// (Ansible's `ControlPersist` default).
pub const DEFAULT_CONTROL_PERSIST: std::time::Duration = std::time::Duration::from_secs(60);

fn parse_persist(text: &str) -> Result<Option<std::time::Duration>> {
    let t = text.trim().to_ascii_lowercase();
    if matches!(t.as_str(), "" | "0" | "no" | "false" | "off") {
        return Ok(None);
    }
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if scale > 0 => Ok((n > 0).then(|| std::time::Duration::from_secs(n * scale))),
        _ => Err(Error::config(format!("`{text}` is not a duration"))
            .with_hint("give seconds (`60`), or `60s`, `5m`, `1h`; `no` keeps no connection")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        cchq_testsupport::fixtures::environments()
    }

    #[test]
    #[allow(clippy::print_stderr, reason = "a skipped test says why")]
    fn masters_are_kept_a_minute_unless_the_environment_says_otherwise() {
        if std::env::var_os("CCHQ_SSH_CONTROL_PERSIST").is_some() {
            eprintln!("SKIPPED: CCHQ_SSH_CONTROL_PERSIST is set in this environment");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let copy = |name: &str, persist: Option<&str>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for f in std::fs::read_dir(fixtures().join("test")).unwrap() {
                let f = f.unwrap();
                if f.file_type().unwrap().is_file() {
                    std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
                }
            }
            if let Some(p) = persist {
                let public = dir.join("public.yml");
                let mut text = std::fs::read_to_string(&public).unwrap();
                text.push_str(&format!("\ncchq_ssh_control_persist: {p}\n"));
                std::fs::write(&public, text).unwrap();
            }
            Environment::load(tmp.path(), name)
                .unwrap()
                .ssh_options()
                .unwrap()
        };
        let default = copy("dflt", None);
        assert_eq!(default.persist, Some(DEFAULT_CONTROL_PERSIST));
        assert!(
            default.persist_by_default,
            "a machine without a private directory closes them instead of failing"
        );
        let off = copy("off", Some("no"));
        assert_eq!(off.persist, None);
        let long = copy("long", Some("5m"));
        assert_eq!(long.persist, Some(std::time::Duration::from_secs(300)));
        assert!(
            !long.persist_by_default,
            "asked for: failing without a private directory is right"
        );
    }

    #[test]
    fn control_persist_durations_parse() {
        use std::time::Duration;
        assert_eq!(parse_persist("60").unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(parse_persist("90s").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_persist("5m").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_persist(" 1H ").unwrap(),
            Some(Duration::from_secs(3600))
        );
        for off in ["0", "no", "False", "off", ""] {
            assert_eq!(parse_persist(off).unwrap(), None, "{off}");
        }
        for bad in ["soon", "5d", "-1", "1.5m", "m"] {
            let e = parse_persist(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}");
            assert!(e.hint().is_some_and(|h| h.contains("60s")), "{bad}");
        }
    }

    #[test]
    fn the_fixture_environments_load_unchanged() {
        let root = fixtures();
        assert_eq!(
            list_environments(&root).unwrap(),
            [
                "development",
                "prod-aws",
                "prod-sharded",
                "test",
                "upstream-prod"
            ]
        );
        let dev = Environment::load(&root, "development").unwrap();
        assert_eq!(dev.meta.deploy_env, "dev");
        assert_eq!(dev.fab_settings.sudo_user, "cchq");
        assert_eq!(
            dev.fab_settings.code_repo,
            "https://github.com/dimagi/commcare-hq.git"
        );
        assert!(matches!(dev.vault, Vault::Plain(_)));
        assert_eq!(dev.remote_user(), "vagrant");
        let test = Environment::load(&root, "test").unwrap();
        assert_eq!(test.meta.users, vec!["test".to_owned()]);
        assert!(test.known_hosts.is_some());
        assert!(!test.fab_settings.email_enabled);
        assert_eq!(
            test.fab_settings.shared_dir_for_staticfiles.as_deref(),
            Some("/mnt")
        );
        let opts = test.ssh_options().unwrap();
        assert_eq!(opts.host_key_policy, HostKeyPolicy::Off);
        assert_eq!(opts.extra_options.len(), 3);
        let t = test.ssh_target("cloud_worker_1");
        assert_eq!(
            (t.address.as_str(), t.user.as_deref()),
            ("cloud_worker_1", Some("admin"))
        );
    }

    #[test]
    fn unknown_environments_list_the_known_ones() {
        let err = Environment::load(&fixtures(), "prod").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert!(
            err.hint()
                .unwrap()
                .contains("development, prod-aws, prod-sharded, test"),
            "{:?}",
            err.hint()
        );
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bad");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("public.yml"), "a: 1\nb: [unclosed\n").unwrap();
        std::fs::write(dir.join("inventory.ini"), "[web]\nh1\n").unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: bad\nenv_monitoring_id: bad\nusers: []\n",
        )
        .unwrap();
        let err = Environment::load(tmp.path(), "bad").unwrap_err();
        assert!(err.message().contains("public.yml:"), "{err}");
        assert!(
            err.message().contains("public.yml:2") || err.message().contains("public.yml:3"),
            "{err}"
        );
    }

    #[test]
    fn unknown_meta_keys_are_refused_with_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
        std::fs::write(dir.join("inventory.ini"), "h1\n").unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: e\nenv_monitoring_id: e\nusers: []\ndeploy_envv: x\n",
        )
        .unwrap();
        let err = Environment::load(tmp.path(), "e").unwrap_err();
        assert!(
            err.message().contains("meta.yml") && err.message().contains("deploy_envv"),
            "{err}"
        );
    }

    /// A minimal environment `e` in a temporary root, with `inventory.ini` and `public.yml` given.
    fn tiny_env(inventory: &str, public: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("public.yml"), public).unwrap();
        std::fs::write(dir.join("inventory.ini"), inventory).unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: e\nenv_monitoring_id: e\nusers: []\n",
        )
        .unwrap();
        (tmp, dir)
    }

    /// `--use-factory-auth`: the pem is every host's key, the login is the remote user when set,
    /// else `commcare_cloud_root_user` (default root); a host's own `ansible_user` wins. Without a
    /// pem (or with a pem that is not a file) it is refused, and nothing changes.
    #[test]
    fn factory_auth_logs_in_with_the_pem_as_the_root_user() {
        let (tmp, dir) = tiny_env("[web]\nweb1\nweb2 ansible_user=ubuntu\n", "{}\n");
        let pem = tmp.path().join("env.pem");
        std::fs::write(&pem, "key").unwrap();
        std::fs::write(
            dir.join("public.yml"),
            format!("commcare_cloud_pem: {}\n", pem.display()),
        )
        .unwrap();
        let mut env = Environment::load_dir(&dir).unwrap();
        assert_eq!(env.ssh_target("web1").user.as_deref(), Some("ansible"));
        env.use_factory_auth().unwrap();
        assert_eq!(env.ssh_target("web1").user.as_deref(), Some("root"));
        assert_eq!(
            env.ssh_target("web1").keyfile.as_deref(),
            Some(pem.as_path())
        );
        assert_eq!(
            env.ssh_target("web2").user.as_deref(),
            Some("ubuntu"),
            "the host's own user wins"
        );
        std::fs::write(
            dir.join("public.yml"),
            format!(
                "commcare_cloud_pem: {}\ncommcare_cloud_root_user: admin\n",
                pem.display()
            ),
        )
        .unwrap();
        let mut env = Environment::load_dir(&dir).unwrap();
        env.use_factory_auth().unwrap();
        assert_eq!(env.login_user(), "admin");
        std::fs::write(
            dir.join("public.yml"),
            format!(
                "commcare_cloud_pem: {}\ncommcare_cloud_remote_user: ops\n",
                pem.display()
            ),
        )
        .unwrap();
        let mut env = Environment::load_dir(&dir).unwrap();
        env.use_factory_auth().unwrap();
        assert_eq!(
            env.login_user(),
            "ops",
            "as commcare-cloud: the remote user, when set, also for factory auth"
        );
        for public in [
            "{}\n".to_owned(),
            format!(
                "commcare_cloud_pem: {}\n",
                tmp.path().join("nope.pem").display()
            ),
        ] {
            std::fs::write(dir.join("public.yml"), public).unwrap();
            let mut env = Environment::load_dir(&dir).unwrap();
            let e = env.use_factory_auth().unwrap_err();
            assert!(
                e.message().contains("commcare_cloud_pem") && e.message().contains("public.yml"),
                "{e}"
            );
            assert!(!env.factory_auth && env.ssh_target("web1").user.as_deref() == Some("ansible"));
        }
    }

    /// fab-settings.yml and proxy.yml take commcare-cloud's keys (with its defaults) and no others.
    #[test]
    fn fab_settings_and_proxy_follow_upstreams_schemas() {
        let (_tmp, dir) = tiny_env("[web]\nweb1\n", "{}\n");
        std::fs::write(dir.join("fab-settings.yml"), "py3_run_deploy: yes\nuse_shared_dir_for_staticfiles: no\nshared_dir_for_staticfiles: /mnt\nacceptable_maintenance_window: {hour_start: 1, hour_end: 5, timezone: UTC}\n").unwrap();
        std::fs::write(
            dir.join("proxy.yml"),
            "SITE_HOST: e.example\nnginx_block_ips: [1.2.3.4]\nnginx_max_worker_connection: 1024\n",
        )
        .unwrap();
        let env = Environment::load_dir(&dir).unwrap();
        assert_eq!(env.fab_settings.shared_dir_for_staticfiles, None);
        assert!(env.fab_settings.generate_deploy_diffs);
        assert_eq!(env.fab_settings.keepalive, Some(60));
        assert_eq!(
            env.fab_settings
                .acceptable_maintenance_window
                .as_ref()
                .and_then(|w| w.hour_end),
            Some(5)
        );
        for (file, text, want) in [
            (
                "fab-settings.yml",
                "no_such_setting: 1\n",
                "no_such_setting",
            ),
            (
                "proxy.yml",
                "SITE_HOST: e.example\nnope: 1\n",
                "`nope`: unknown key",
            ),
            (
                "proxy.yml",
                "SITE_HOST: e.example\nfake_ssl_cert: 'maybe'\n",
                "`fake_ssl_cert`: expected a boolean",
            ),
            (
                "proxy.yml",
                "NO_WWW_SITE_HOST: e.example\n",
                "`SITE_HOST` is required",
            ),
        ] {
            let (_tmp, dir) = tiny_env("[web]\nweb1\n", "{}\n");
            std::fs::write(dir.join(file), text).unwrap();
            let e = Environment::load_dir(&dir).unwrap_err();
            assert!(
                e.message().contains(file) && e.message().contains(want),
                "{e}"
            );
        }
    }

    /// `commcare_cloud_pem` is the key of every host that names none itself (commcare-cloud
    /// passes it as `-i`; Ansible puts a host's own key first).
    #[test]
    fn commcare_cloud_pem_is_read_but_normal_connections_use_the_hosts_key_or_the_operators() {
        let (_tmp, dir) = tiny_env(
            "[web]\nweb1\nweb2 ansible_ssh_private_key_file=keys/web2.pem\n",
            "commcare_cloud_pem: /keys/env.pem\n",
        );
        let env = Environment::load_dir(&dir).unwrap();
        // As commcare-cloud: the pem is for factory auth only, not for every connection.
        assert_eq!(env.ssh_target("web1").keyfile, None);
        assert_eq!(
            env.ssh_target("web2").keyfile,
            Some(dir.join("keys/web2.pem"))
        );
        let t =
            SshTransport::new(vec![env.ssh_target("web2")], env.ssh_options().unwrap()).unwrap();
        let argv = t.interactive_argv("web2", None, &[]).unwrap().join(" ");
        assert!(
            argv.contains(&format!(
                "-o IdentitiesOnly=yes -i {}",
                dir.join("keys/web2.pem").display()
            )),
            "{argv}"
        );
        assert_eq!(env.pem(), Some(PathBuf::from("/keys/env.pem")));
        // `~` is the operator's home; a relative path is taken from the current directory.
        let (_tmp, dir) = tiny_env("[web]\nweb1\n", "commcare_cloud_pem: ~/.ssh/env.pem\n");
        let env = Environment::load_dir(&dir).unwrap();
        let home = PathBuf::from(std::env::var("HOME").unwrap());
        assert_eq!(env.pem(), Some(home.join(".ssh/env.pem")));
        let (_tmp, dir) = tiny_env("[web]\nweb1\n", "commcare_cloud_pem: env.pem\n");
        let env = Environment::load_dir(&dir).unwrap();
        assert_eq!(
            env.pem(),
            Some(std::env::current_dir().unwrap().join("env.pem"))
        );
        // Unset or empty: none.
        let (_tmp, dir) = tiny_env("[web]\nweb1\n", "commcare_cloud_pem: ''\n");
        assert_eq!(Environment::load_dir(&dir).unwrap().pem(), None);
    }

    /// Issue 12: `ansible_host=-oProxyCommand=...` ran a local command through `cchq ssh`.
    #[test]
    fn inventory_values_ssh_would_read_as_options_are_refused_at_load() {
        for (inventory, what) in [
            (
                "[web]\nweb1 ansible_host=-oProxyCommand=touch\n",
                "host `web1`: `ansible_host` is `-oProxyCommand=touch`, which starts with `-`",
            ),
            (
                "[web]\nweb1 ansible_ssh_host='-oProxyCommand=touch /tmp/x'\n",
                "host `web1`: `ansible_ssh_host` is `-oProxyCommand=touch /tmp/x`, which starts with `-`",
            ),
            (
                "[web]\nweb1\n[web:vars]\nansible_user=-oX\n",
                "host `web1`: `ansible_user` is `-oX`, which starts with `-`",
            ),
            (
                "[web]\nweb1 ansible_host=ssh://-oX\n",
                "host `web1`: `ansible_host` is `ssh://-oX`, which names a host or user starting with `-`",
            ),
            (
                "[web]\nweb1 ansible_host=ssh://u@-oX\n",
                "host `web1`: `ansible_host` is `ssh://u@-oX`, which names a host or user starting with `-`",
            ),
            (
                "[web]\nweb1 ansible_user=''\n",
                "host `web1`: `ansible_user` is ``, which is empty",
            ),
        ] {
            let (_tmp, dir) = tiny_env(inventory, "{}\n");
            let e = Environment::load_dir(&dir).expect_err(inventory);
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{inventory}");
            assert_eq!(
                e.message(),
                format!("{}: {what}", dir.join("inventory.ini").display()),
                "{inventory}"
            );
            assert!(
                e.hint()
                    .is_some_and(|h| h.contains("ssh would read it as an option")),
                "{inventory}"
            );
        }
        let (_tmp, dir) = tiny_env(
            "[web]\nweb1\n",
            "commcare_cloud_remote_user: -oProxyCommand=x\n",
        );
        let e = Environment::load_dir(&dir).unwrap_err();
        assert!(e.message().contains("public.yml: `commcare_cloud_remote_user` is `-oProxyCommand=x`, which starts with `-`"), "{e}");
        // Still fine: dashes inside, addresses, ssh URIs.
        let (_tmp, dir) = tiny_env(
            "[web]\nweb-1 ansible_host=10.0.0.1 ansible_user=a-b\nweb2 ansible_host=ssh://u@h\n",
            "{}\n",
        );
        let env = Environment::load_dir(&dir).unwrap();
        assert_eq!(env.ssh_target("web-1").address, "10.0.0.1");
    }

    /// Issue 12: a pillow or queue name with a newline added a `[program:...]` section to a
    /// supervisor file; such names are refused when the environment loads.
    #[test]
    fn app_process_names_that_are_not_names_are_refused_at_load() {
        for (text, what) in [
            (
                "pillows:\n  h1:\n    \"P\\n[program:evil]\":\n      num_processes: 1\n",
                "`pillows`: pillow `P\\n[program:evil]` is not a valid name",
            ),
            (
                "celery_processes:\n  h1:\n    \"ok_queue,bad queue\":\n      concurrency: 1\n",
                "`celery_processes`: queue `bad queue` is not a valid name",
            ),
            (
                "celery_processes:\n  h1:\n    \"a,,b\":\n      concurrency: 1\n",
                "`celery_processes`: queue `` is not a valid name",
            ),
            (
                "management_commands:\n  h1:\n    \"run\\ncommand=/bin/sh\":\n",
                "`management_commands`: command `run\\ncommand=/bin/sh` is not a valid name",
            ),
            (
                "pillows:\n  \"h1\\nx\":\n    P: {}\n",
                "`pillows`: host `h1\\nx` is not a valid name",
            ),
        ] {
            let (_tmp, dir) = tiny_env("h1\n", "{}\n");
            std::fs::write(dir.join("app-processes.yml"), text).unwrap();
            let e = Environment::load_dir(&dir).expect_err(text);
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{text}");
            assert_eq!(
                e.message(),
                format!("{}: {what}", dir.join("app-processes.yml").display())
            );
            assert!(
                e.hint()
                    .is_some_and(|h| h.contains("supervisor program names")),
                "{text}"
            );
        }
        let (_tmp, dir) = tiny_env("h1\n", "{}\n");
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: \"e\\n[program:x]\"\nenv_monitoring_id: e\nusers: []\n",
        )
        .unwrap();
        let e = Environment::load_dir(&dir).unwrap_err();
        assert_eq!(
            e.message(),
            format!(
                "{}: `deploy_env` `e\\n[program:x]` is not a valid name",
                dir.join("meta.yml").display()
            )
        );
        // The fixtures' names (`kafka-ucr-main`, `AppDbChangeFeedPillow`, queue lists) are fine.
        for env in ["development", "test"] {
            Environment::load(&fixtures(), env).unwrap();
        }
    }

    /// Issue 12: a vault with a BOM before `$ANSIBLE_VAULT;` was read as plaintext YAML.
    #[test]
    fn a_vault_with_a_byte_order_mark_is_refused() {
        let encrypted = crate::vault::encrypt(b"a: 1\n", b"pw", None).unwrap();
        for (text, what) in [
            (
                format!("\u{feff}{encrypted}"),
                "starts with a UTF-8 byte order mark before `$ANSIBLE_VAULT;`, so ansible-vault does not read it as a vault",
            ),
            (
                "\u{feff}a: 1\n".to_owned(),
                "starts with a UTF-8 byte order mark",
            ),
        ] {
            let (_tmp, dir) = tiny_env("h1\n", "{}\n");
            std::fs::write(dir.join("vault.yml"), &text).unwrap();
            let e = Environment::load_dir(&dir).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config);
            assert_eq!(
                e.message(),
                format!("{}: {what}", dir.join("vault.yml").display())
            );
            assert!(
                e.hint().is_some_and(|h| h.contains("EF BB BF")),
                "{:?}",
                e.hint()
            );
            let e = crate::vault::edit::read(&dir.join("vault.yml"), || Ok(b"pw".to_vec().into()))
                .unwrap_err();
            assert!(e.message().contains("byte order mark"), "{e}");
        }
        let (_tmp, dir) = tiny_env("h1\n", "{}\n");
        std::fs::write(dir.join("vault.yml"), &encrypted).unwrap();
        let env = Environment::load_dir(&dir).unwrap();
        assert!(matches!(env.vault, Vault::Encrypted(_)));
    }

    /// Issue 12: an environment YAML whose top level is a list or a scalar is an error naming it.
    #[test]
    fn env_yaml_that_is_not_a_mapping_is_an_error_naming_the_file() {
        for file in [
            "vault.yml",
            "postgresql.yml",
            "proxy.yml",
            "public.yml",
            "fab-settings.yml",
        ] {
            for text in ["- a\n- b\n", "just a string\n", "42\n"] {
                let (_tmp, dir) = tiny_env("h1\n", "{}\n");
                std::fs::write(dir.join(file), text).unwrap();
                let e = Environment::load_dir(&dir).expect_err(file);
                assert_eq!(e.kind(), crate::ErrorKind::Config, "{file}");
                assert_eq!(
                    e.message(),
                    format!(
                        "{}: expected a mapping of `key: value` at the top level",
                        dir.join(file).display()
                    )
                );
                assert!(e.hint().is_some(), "{file}");
                assert!(!e.message().contains("just a string"), "{file}");
            }
            // Empty is fine.
            let (_tmp, dir) = tiny_env("h1\n", "{}\n");
            std::fs::write(dir.join(file), "").unwrap();
            assert!(Environment::load_dir(&dir).is_ok(), "{file}");
        }
        // A decrypted vault too.
        let (_tmp, dir) = tiny_env("h1\n", "{}\n");
        std::fs::write(
            dir.join("vault.yml"),
            crate::vault::encrypt(b"- secret\n", b"pw", None).unwrap(),
        )
        .unwrap();
        let env = Environment::load_dir(&dir).unwrap();
        let e = env.vault_value(|| Ok(b"pw".to_vec().into())).unwrap_err();
        assert!(
            e.message()
                .ends_with("vault.yml: expected a mapping of `key: value` at the top level"),
            "{e}"
        );
    }

    /// Issue 12: a missing `public.yml` says which file is missing.
    #[test]
    fn a_missing_public_yml_names_its_path() {
        let (tmp, dir) = tiny_env("h1\n", "{}\n");
        std::fs::remove_file(dir.join("public.yml")).unwrap();
        let path = dir.join("public.yml");
        for e in [
            Environment::load(tmp.path(), "e").unwrap_err(),
            Environment::load_dir(&dir).unwrap_err(),
        ] {
            assert_eq!(e.kind(), crate::ErrorKind::Config);
            assert_eq!(
                e.message(),
                format!(
                    "environment `e` has no `public.yml` (`{}` is missing)",
                    path.display()
                )
            );
            assert!(
                e.hint()
                    .is_some_and(|h| h.contains(&path.display().to_string())),
                "{:?}",
                e.hint()
            );
        }
        // No such directory at all stays "unknown environment".
        assert_eq!(
            Environment::load(tmp.path(), "nope").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    /// Issue 12: `ansible_port=99999` was dropped silently and ssh went to port 22.
    #[test]
    fn ports_that_are_not_ports_are_load_errors() {
        for (value, shown) in [
            ("99999", "99999"),
            ("0", "0"),
            ("abc", "abc"),
            ("-1", "-1"),
            ("22.5", "22.5"),
            ("65536", "65536"),
        ] {
            let (_tmp, dir) = tiny_env(&format!("[web]\nweb1 ansible_port={value}\n"), "{}\n");
            let e = Environment::load_dir(&dir).expect_err(value);
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{value}");
            assert_eq!(
                e.message(),
                format!(
                    "{}: host `web1`: `ansible_port` is `{shown}`, which is not a port",
                    dir.join("inventory.ini").display()
                )
            );
            assert_eq!(
                e.hint(),
                Some("set `ansible_port` to a number from 1 to 65535, or remove it for port 22")
            );
        }
        let (_tmp, dir) = tiny_env("[web]\nweb1\n[web:vars]\nansible_ssh_port=70000\n", "{}\n");
        assert!(
            Environment::load_dir(&dir)
                .unwrap_err()
                .message()
                .contains("`ansible_ssh_port` is `70000`")
        );
        let (_tmp, dir) = tiny_env(
            "[web]\nweb1 ansible_port=2222\nweb2 ansible_port='65535'\n",
            "{}\n",
        );
        let env = Environment::load_dir(&dir).unwrap();
        assert_eq!(env.ssh_target("web1").port, Some(2222));
        assert_eq!(env.ssh_target("web2").port, Some(65535));
    }

    #[test]
    fn two_inventory_sources_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
        std::fs::write(dir.join("inventory.ini"), "h1\n").unwrap();
        std::fs::write(dir.join("inventory.csv"), "hostname\n").unwrap();
        let err = Environment::load_dir(&dir).unwrap_err();
        assert!(err.message().contains("more than one inventory"), "{err}");
    }

    /// Issue 17: a host as a typed value. The inventory of [`host_env`]: group variables under
    /// host variables, deeper groups over shallower ones, `all:vars` under every group.
    const HOST_INVENTORY: &str = "\
[web]
web1 ansible_host=10.0.0.1 ansible_user=own
web2
[db]
db1 ansible_port=2300
[local]
here ansible_connection=local
[prod:children]
web
[prod:vars]
ansible_user=produser
[web:vars]
ansible_host=10.0.0.9
ansible_port=2222
ansible_user=webuser
[all:vars]
ansible_user=everyone
";

    fn host_env() -> (tempfile::TempDir, Environment) {
        let (tmp, dir) = tiny_env(HOST_INVENTORY, "commcare_cloud_remote_user: remote\n");
        let env = Environment::load_dir(&dir).unwrap();
        (tmp, env)
    }

    #[test]
    fn a_host_carries_its_address_port_user_vars_groups_and_route() {
        let (_tmp, env) = host_env();
        let web1 = env.host("web1").unwrap();
        assert_eq!(web1.name, "web1");
        // The host's own `ansible_host` and `ansible_user` over its group's; the group's port.
        assert_eq!(web1.address, "10.0.0.1");
        assert_eq!(web1.port, Some(2222));
        assert_eq!(web1.user.as_deref(), Some("own"));
        assert_eq!(web1.groups, ["prod", "web"]);
        assert_eq!(web1.var("ansible_host"), Some(&Value::from("10.0.0.1")));
        assert_eq!(web1.route, Route::Ssh(env.ssh_target("web1")));
        assert_eq!(
            web1.ssh_target().map(|t| t.address.as_str()),
            Some("10.0.0.1")
        );

        // Nothing of its own: `web`'s variables, over `prod`'s (shallower) and `all`'s.
        let web2 = env.host("web2").unwrap();
        assert_eq!(
            (web2.address.as_str(), web2.port, web2.user.as_deref()),
            ("10.0.0.9", Some(2222), Some("webuser"))
        );
        // `all:vars` under the host's own port; the name is the address.
        let db1 = env.host("db1").unwrap();
        assert_eq!(
            (db1.address.as_str(), db1.port, db1.user.as_deref()),
            ("db1", Some(2300), Some("everyone"))
        );
        assert_eq!(db1.groups, ["db"]);
        assert_eq!(db1.vars, env.inventory.host_vars("db1"));
    }

    #[test]
    fn a_host_with_ansible_connection_local_has_the_local_route() {
        let (_tmp, env) = host_env();
        let here = env.host("here").unwrap();
        assert_eq!(here.route, Route::Local);
        assert!(here.is_local() && env.is_local("here"));
        assert_eq!(here.ssh_target(), None);
        // What the inventory says is kept, as `cchq ENV hosts` prints it.
        assert_eq!(here.address, "here");
        assert_eq!(here.user.as_deref(), Some("everyone"));
        assert_eq!(here.groups, ["local"]);
    }

    #[test]
    fn the_routes_of_hosts_are_those_of_is_local_and_ssh_target() {
        for name in ["test", "development", "prod-aws"] {
            let env = crate::fixture_env(name);
            let hosts = env.hosts("all").unwrap();
            assert_eq!(hosts.len(), env.inventory.len(), "{name}");
            for h in hosts {
                let expected = if env.is_local(&h.name) {
                    Route::Local
                } else {
                    Route::Ssh(env.ssh_target(&h.name))
                };
                assert_eq!(h.route, expected, "{name}: {}", h.name);
                let groups: Vec<&str> = h.groups.iter().map(String::as_str).collect();
                assert_eq!(groups, env.inventory.groups_of(&h.name), "{}", h.name);
            }
        }
    }

    #[test]
    fn an_unknown_host_is_not_found_with_close_names_in_the_hint() {
        let (_tmp, env) = host_env();
        let e = env.host("web3").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert_eq!(
            e.message(),
            "no host `web3` in the inventory of environment `e`"
        );
        let hint = e.hint().unwrap();
        assert!(hint.contains("did you mean `web1` or `web2`?"), "{hint}");
        assert!(hint.contains("`cchq e hosts` lists them"), "{hint}");
        // A group is not a host; a name close to nothing gets the way to list hosts.
        let e = env.host("zzzzzzzz").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(!e.hint().unwrap().contains("did you mean"), "{e:?}");
        assert!(env.host("web").is_err() && env.host("").is_err());
    }

    #[test]
    fn hosts_takes_a_limit_pattern_and_refuses_one_that_matches_nothing() {
        let (_tmp, env) = host_env();
        let names = |p: &str| -> Vec<String> {
            env.hosts(p).unwrap().into_iter().map(|h| h.name).collect()
        };
        assert_eq!(names("web"), ["web1", "web2"]);
        assert_eq!(names("prod:!web2"), ["web1"]);
        assert_eq!(names("db,here"), ["db1", "here"]);
        assert_eq!(names("all").len(), 4);
        assert_eq!(env.hosts("here").unwrap()[0].route, Route::Local);
        for nothing in ["nosuch", "web:&db", "web9*"] {
            let e = env.hosts(nothing).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Pattern, "{nothing}");
            assert!(e.to_string().contains("environment `e`"), "{nothing}: {e}");
        }
        assert!(env.hosts("").is_err() && env.hosts(",").is_err());
    }

    #[test]
    fn an_address_outside_the_inventory_is_reached_over_ssh_as_the_login_user() {
        let (_tmp, env) = host_env();
        let h = env.host_or_address("10.1.2.3");
        assert_eq!(h.address, "10.1.2.3");
        assert_eq!((h.port, h.user.as_deref()), (None, Some("remote")));
        assert!(h.vars.is_empty() && h.groups.is_empty());
        assert_eq!(h.route, Route::Ssh(env.ssh_target("10.1.2.3")));
        assert_eq!(env.host_or_address("web1"), env.host("web1").unwrap());
    }

    #[test]
    fn the_transport_routes_local_hosts_locally_and_others_over_ssh() {
        let (_tmp, env) = host_env();
        let all: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
        let t = env.transport(None).unwrap();
        assert_eq!(t.hosts(), all);
        let t = env.transport(Some(&["here".to_owned()])).unwrap();
        assert_eq!(t.hosts(), ["here"]);
        assert!(format!("{t:?}").contains("Local"), "{t:?}");
    }
}
