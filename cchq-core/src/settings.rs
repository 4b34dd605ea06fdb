//! Settings files rendered from the environment: `localsettings.py` for the web app and
//! `application.properties` for formplayer, the settings commcare-cloud writes for the same
//! environment, from Jinja templates shipped with the profile (overridable in `<env>/templates/`:
//! `<file>.j2`, or a handlebars `<file>.hbs` as before), with variables from the inventory,
//! `public.yml`, the vault, `postgresql.yml`, `proxy.yml`, commcare-cloud's defaults and the values
//! it generates.

pub mod django;
pub(crate) mod generated;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use serde_json::{Map, Value as J};

use crate::component::Component;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::jinja::{self, Base, Layer, Scope, has_templates};
use crate::templates::Renderer;
use crate::{Value, yaml};

/// The built-in `localsettings.py` template (Jinja).
pub const LOCALSETTINGS_TEMPLATE: &str =
    include_str!("../profiles/commcare/templates/localsettings.py.j2");
/// The built-in formplayer `application.properties` template (Jinja).
pub const FORMPLAYER_TEMPLATE: &str =
    include_str!("../profiles/commcare/templates/application.properties.j2");

/// The values the settings fall back on (commcare-cloud's group_vars and role defaults), then the
/// variables commcare-cloud makes of the secrets it knows: the lowest layers of the context.
const PROFILE_DEFAULTS: [(&str, &str); 2] = [
    ("settings-defaults.yml", crate::profile::SETTINGS_DEFAULTS),
    (
        "settings-secrets.yml",
        include_str!("../profiles/commcare/settings-secrets.yml"),
    ),
];

/// Where the profile's defaults come from, for messages.
const DEFAULTS: &str = "cchq's commcare profile defaults";

/// [`PROFILE_DEFAULTS`], read.
static DEFAULT_VARS: LazyLock<Vec<(String, J)>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for (name, text) in PROFILE_DEFAULTS {
        if let Ok(Value::Mapping(m)) = yaml::load(text, std::path::Path::new(name)) {
            for (k, v) in &m {
                if let Some(k) = yaml::scalar_to_string(k) {
                    out.push((k, to_json(v)));
                }
            }
        }
    }
    out
});

/// The groups whose hosts run the web app and get `localsettings.py`.
pub const APP_GROUPS: &[&str] = &[
    "webworkers",
    "celery",
    "pillowtop",
    "proxy",
    "django_manage",
];

/// The groups whose hosts run formplayer and get `application.properties`.
pub const FORMPLAYER_GROUPS: &[&str] = &["formplayer"];

/// Every settings file cchq renders: `(component, path inside the component's release)`.
pub const FILES: &[(Component, &str)] = &[
    (Component::Commcare, "localsettings.py"),
    (Component::Formplayer, "application.properties"),
];

/// The settings files of `env`'s profile: [`FILES`], or for the `django` profile the modules it
/// writes beside the project's `manage.py` (see [`crate::deploy::django`]).
pub fn files(env: &Environment) -> Vec<(Component, &'static str)> {
    if env.profile.name == "django" {
        vec![
            (Component::Commcare, "cchq_settings.py"),
            (Component::Commcare, "cchq_wsgi.py"),
            FILES[1],
        ]
    } else {
        FILES.to_vec()
    }
}

/// The app's settings files (relative to a release) of `env`'s profile.
pub fn app_files(env: &Environment) -> Vec<&'static str> {
    files(env)
        .into_iter()
        .filter(|(c, _)| *c == Component::Commcare)
        .map(|(_, f)| f)
        .collect()
}

/// The `django` profile's settings files for one host, from its settings context.
fn django_files(env: &Environment, ctx: &J) -> Vec<SettingsFile> {
    let shared = env.paths().shared();
    django::files(ctx, env.profile.django_settings_module.as_deref(), &shared)
        .into_iter()
        .map(|(relative_path, contents)| SettingsFile {
            component: Component::Commcare,
            relative_path,
            contents,
            mode: 0o600,
        })
        .collect()
}

/// One rendered settings file.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingsFile {
    /// The component whose release it goes into.
    pub component: Component,
    /// The path inside the component's release directory.
    pub relative_path: String,
    /// The rendered contents (may hold secrets: never log them).
    pub contents: String,
    /// The file mode.
    pub mode: u32,
}

impl std::fmt::Debug for SettingsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsFile")
            .field("component", &self.component)
            .field("relative_path", &self.relative_path)
            .field("bytes", &self.contents.len())
            .finish()
    }
}

fn to_json(v: &Value) -> J {
    serde_json::to_value(v).unwrap_or(J::Null)
}

/// Stops when settings would be rendered without the vault's values: `env`'s vault is encrypted
/// and `vault` (its decrypted values) was not given. A file rendered so would lack every secret
/// (or fail on the first one a template needs), and a deploy would write it and go on.
///
/// # Errors
/// [`crate::ErrorKind::Vault`], saying where the password comes from.
pub fn require_vault(env: &Environment, vault: Option<&Value>) -> Result<()> {
    if vault.is_some() || !env.vault.needs_opening() {
        return Ok(());
    }
    if let crate::environment::Vault::Aws(a) = &env.vault {
        return Err(Error::new(
            crate::ErrorKind::Vault,
            format!(
                "the secrets of `{}` are in AWS Secrets Manager (`{}/...`) and were not fetched: settings are not rendered without them",
                env.name, a.prefix
            ),
        )
        .with_hint("give AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) so that cchq fetches them"));
    }
    Err(Error::new(
        crate::ErrorKind::Vault,
        format!("the vault of `{}` is encrypted and was not opened: settings are not rendered without its values", env.name),
    )
    .with_hint(format!(
        "give the vault password: set {} or {} (cchq on a terminal asks for it)",
        crate::vault::PASSWORD_ENV,
        crate::vault::PASSWORD_FILE_ENV
    )))
}

/// Whether `host` is in one of `groups` (directly or through a child group).
fn in_any(env: &Environment, host: &str, groups: &[&str]) -> bool {
    // The host's own groups, sorted: a few lookups instead of a scan of every group's hosts.
    let mine = env.inventory.groups_of(host);
    groups.iter().any(|g| mine.binary_search(g).is_ok())
}

/// The hosts that get settings files (in inventory order): those of [`APP_GROUPS`] and
/// [`FORMPLAYER_GROUPS`].
pub fn settings_hosts(env: &Environment) -> Vec<String> {
    env.inventory
        .hosts()
        .filter(|h| in_any(env, &h.name, APP_GROUPS) || in_any(env, &h.name, FORMPLAYER_GROUPS))
        .map(|h| h.name.clone())
        .collect()
}

/// Where the inventory's variables are set, for messages (`inventory.ini`).
fn inventory_origin(env: &Environment) -> String {
    use crate::environment::InventorySource;
    let (InventorySource::Ini(p) | InventorySource::Csv(p) | InventorySource::Dir(p)) =
        &env.inventory_source;
    p.file_name().map_or_else(
        || "the inventory".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Where the values cchq generates (`release_name`, the supervisor variables) come from.
const GENERATED: &str = "cchq's generated values";

/// The variables every host of `env` shares, lowest first: public.yml, the vault, postgresql.yml,
/// proxy.yml; each with the file that sets it.
fn environment_vars(env: &Environment, vault: Option<&Value>) -> Layer {
    let mut m = Layer::default();
    for (k, v) in DEFAULT_VARS.iter() {
        m.insert(k.clone(), v.clone(), DEFAULTS);
    }
    // The vault's sections, empty when it has none (`secrets.X | default(None)` is then None, as
    // with Ansible's undefined).
    m.insert("secrets", J::Object(Map::new()), DEFAULTS);
    m.insert("localsettings_private", J::Object(Map::new()), DEFAULTS);
    for (k, v) in &env.public {
        m.insert(k.clone(), to_json(v), "public.yml");
    }
    // postgresql.yml as commcare-cloud generates its variables (`postgresql_dbs.all`,
    // `by_pgbouncer_host`, the overrides' variables, defaults filled in), else as written.
    let postgresql = env.postgresql_config.as_ref().and_then(|c| {
        c.generated_variables(&env.inventory, &env.dir.join("postgresql.yml"))
            .ok()
    });
    let raw_postgresql = if postgresql.is_some() {
        &Value::Null
    } else {
        &env.postgresql
    };
    for (file, extra) in [
        ("vault.yml", vault.unwrap_or(&Value::Null)),
        ("postgresql.yml", raw_postgresql),
        ("proxy.yml", &env.proxy),
    ] {
        if file == "proxy.yml"
            && let Some(pg) = &postgresql
        {
            for (k, v) in pg {
                m.insert(k.clone(), v.clone(), "postgresql.yml");
            }
        }
        if let Value::Mapping(map) = extra {
            for (k, val) in map {
                if let Some(k) = yaml::scalar_to_string(k) {
                    m.insert(k, to_json(val), file);
                }
            }
        }
    }
    // commcare-cloud's generated `postgres_users` (the databases' default user and password
    // read it), where nothing sets it.
    if m.get("postgres_users").is_none() {
        m.insert(
            "postgres_users",
            J::from("{{ secrets.POSTGRES_USERS | default(None) }}"),
            GENERATED,
        );
    }
    // What commcare-cloud generates for every host (its extra variables: over the files).
    let www_home = env.paths().www_home().to_owned();
    m.insert(
        "deploy_env",
        J::from(env.meta.deploy_env.clone()),
        GENERATED,
    );
    m.insert(
        "env_monitoring_id",
        J::from(env.meta.env_monitoring_id.clone()),
        GENERATED,
    );
    m.insert("env", J::from(env.name.clone()), GENERATED);
    m.insert("www_home", J::from(www_home), GENERATED);
    m.insert("app_user", J::from(env.profile.app_user.clone()), GENERATED);
    for (k, v) in generated::values(env) {
        m.insert(k, v, GENERATED);
    }
    m
}

/// Adds the vault's `localsettings_private` keys as variables (`{{ COUCH_PASSWORD }}`) where
/// nothing sets them.
fn promote_private(m: &mut Layer) {
    if let Some(J::Object(o)) = m.get("localsettings_private").cloned() {
        let origin = format!(
            "{} (`localsettings_private`)",
            m.origin("localsettings_private").unwrap_or("vault.yml")
        );
        for (k, v) in o {
            m.insert_if_absent(&k, v, &origin);
        }
    }
}

/// The variables of `env` every host shares, as a [`Base`] with `hostvars`: public.yml, the
/// vault, postgresql.yml, proxy.yml, `groups`, the promoted `localsettings_private` keys.
fn environment_base(env: &Environment, vault: Option<&Value>) -> Arc<Base> {
    let mut m = environment_vars(env, vault);
    let inventory = inventory_origin(env);
    m.insert("groups", groups(env), &inventory);
    promote_private(&mut m);
    // `hostvars[h]`: the inventory's variables of `h` (Ansible's facts are not known).
    let hosts = env
        .inventory
        .hosts()
        .map(|h| {
            let mut layer = Layer::default();
            for (k, v) in env.inventory.host_vars(&h.name) {
                layer.insert(k, to_json(&v), &inventory);
            }
            layer.insert("inventory_hostname", J::from(h.name.clone()), &inventory);
            if let Some(name) = known_hostname(env, &h.name) {
                layer.insert("ansible_hostname", J::from(name), &inventory);
            }
            (h.name.clone(), layer)
        })
        .collect();
    Base::with_hosts(m, hosts)
}

/// The one Ansible fact cchq knows without gathering facts: a host's `ansible_hostname` is its
/// `hostname` inventory variable when it has one (commcare-cloud's `common` role sets the
/// machine's hostname to it).
fn known_hostname(env: &Environment, host: &str) -> Option<String> {
    env.inventory
        .host_vars(host)
        .get("hostname")
        .and_then(yaml::scalar_to_string)
}

/// `hostvars` of the settings templates: each host's inventory variables (with
/// `inventory_hostname`, and `ansible_hostname` where [`known_hostname`] knows it).
fn hostvars(env: &Environment) -> J {
    let mut all = Map::new();
    for h in env.inventory.hosts() {
        let mut vars = Map::new();
        for (k, v) in env.inventory.host_vars(&h.name) {
            vars.insert(k, to_json(&v));
        }
        vars.insert("inventory_hostname".into(), J::from(h.name.clone()));
        if let Some(name) = known_hostname(env, &h.name) {
            vars.insert("ansible_hostname".into(), J::from(name));
        }
        all.insert(h.name.clone(), J::Object(vars));
    }
    J::Object(all)
}

/// The variables of `m` that differ from `base`'s: a layer over it that gives `m`.
fn over(base: &Base, m: &Layer) -> Layer {
    let mut top = Layer::default();
    for (k, v) in m.vars() {
        if base.layer().get(k) != Some(v) {
            top.insert(k.clone(), v.clone(), m.origin(k).unwrap_or(GENERATED));
        }
    }
    top
}

/// The merged localsettings (public `localsettings` over vault `localsettings_private`): each
/// entry's name, value and where it is set.
fn localsettings_entries(m: &Layer) -> BTreeMap<String, (J, String)> {
    let mut ls = BTreeMap::new();
    for key in ["localsettings_private", "localsettings"] {
        if let Some(J::Object(o)) = m.get(key) {
            let origin = m.origin(key).unwrap_or("public.yml");
            for (k, v) in o {
                ls.insert(k.clone(), (v.clone(), origin.to_owned()));
            }
        }
    }
    ls
}

/// Renders the templates of localsettings entry `k` in `scope`.
fn resolve_local(scope: &Arc<Scope>, k: &str, raw: &J, origin: &str) -> jinja::Resolved {
    scope.resolve_value(&format!("localsettings.{k}"), origin, raw)
}

/// `groups`: every inventory group's host list.
fn groups(env: &Environment) -> J {
    let mut groups = Map::new();
    for g in env.inventory.groups() {
        groups.insert(
            g.name.clone(),
            J::from(env.inventory.group_hosts(&g.name).unwrap_or_default()),
        );
    }
    J::Object(groups)
}

/// The variables a settings template sees on `host`.
pub fn context(
    env: &Environment,
    host: &str,
    vault: Option<&Value>,
    release: Option<&str>,
) -> Result<J> {
    context_and_unresolved(env, host, vault, release).map(|(j, _)| j)
}

/// [`context`], and the variables left out of it because their Jinja could not be evaluated,
/// with why (so that a template using one can say so).
fn context_and_unresolved(
    env: &Environment,
    host: &str,
    vault: Option<&Value>,
    release: Option<&str>,
) -> Result<(J, Vec<(String, Error)>)> {
    // Lowest first: public.yml, vault, postgresql.yml, proxy.yml, inventory vars, generated.
    let mut m = environment_vars(env, vault);
    let inventory = inventory_origin(env);
    for (k, v) in env.inventory.host_vars(host) {
        m.insert(k, to_json(&v), &inventory);
    }
    for (k, v) in crate::services::supervisor::host_context(env, host) {
        m.insert(k, v, GENERATED);
    }
    m.insert("release_name", J::from(release.unwrap_or("")), GENERATED);
    m.insert("groups", groups(env), &inventory);
    promote_private(&mut m);
    let ls = localsettings_entries(&m);
    // Values are Jinja, evaluated as Ansible does (lazily, each once); one that does not
    // evaluate (an Ansible fact, a typo) is left out, so a template using it fails naming it.
    let base = environment_base(env, vault);
    let scope = Scope::new(base.clone(), over(&base, &m));
    let mut resolved = Map::new();
    let mut unresolved = Vec::new();
    for (k, v) in m.vars() {
        if !has_templates(v) {
            resolved.insert(k.clone(), v.clone());
            continue;
        }
        match scope.resolve(k).result {
            Ok(x) => {
                resolved.insert(k.clone(), x);
            }
            Err(e) => unresolved.push((k.clone(), e)),
        }
    }
    let mut merged = Map::new();
    for (k, (v, origin)) in ls {
        let x = if has_templates(&v) {
            resolve_local(&scope, &k, &v, &origin).result?
        } else {
            v
        };
        merged.insert(k, x);
    }
    resolved.insert("localsettings_merged".into(), J::Object(merged));
    Ok((J::Object(resolved), unresolved))
}

/// A template error about a variable that was left out of the context because its own value
/// does not evaluate: says so, with why.
fn explain_unresolved(e: Error, unresolved: &[(String, Error)]) -> Error {
    match unresolved
        .iter()
        .find(|(k, _)| e.message().contains(&format!("`{k}`")))
    {
        Some((k, why)) => e
            .map_message(|m| {
                format!(
                    "{m}: the environment sets `{k}`, but its value does not evaluate: {}",
                    why.message()
                )
            })
            .with_hint(format!(
                "fix `{k}` in the file that sets it: {}",
                why.hint()
                    .unwrap_or("give it a value that evaluates, or define what it refers to")
            )),
        None => e,
    }
}

/// The settings templates of an environment: the profile's (Jinja), or the environment's
/// overrides, `<env>/templates/<file>.j2` (Jinja) or `<env>/templates/<file>.hbs` (handlebars,
/// with the variables of the first settings templates: `localsettings_merged` and the helpers).
pub struct Templates {
    /// The Jinja templates, by file name.
    jinja: minijinja::Environment<'static>,
    /// The handlebars overrides, by file name.
    hbs: Renderer,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("hbs", &self.hbs)
            .finish_non_exhaustive()
    }
}

/// The engine of the settings templates: the environment values' engine ([`jinja::engine`]),
/// printing `None` as nothing as Ansible does, with the settings filters
/// ([`crate::templates::settings_filters`]); an undefined value is false in a condition and an
/// error anywhere else.
fn settings_engine() -> minijinja::Environment<'static> {
    let mut env = jinja::engine();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Ok(());
        }
        if value.is_undefined() || value.as_str().is_some() {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = crate::templates::ansible_text(value);
        out.write_str(&text)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    crate::templates::settings_filters::add(&mut env);
    env
}

/// The settings templates of `env` (the environment's overrides where it has them).
///
/// # Errors
/// A template that does not parse (named with its line).
pub fn templates(env: &Environment) -> Result<Templates> {
    let mut t = Templates {
        jinja: settings_engine(),
        hbs: Renderer::new(),
    };
    for (name, builtin) in [
        ("localsettings.py", LOCALSETTINGS_TEMPLATE),
        ("application.properties", FORMPLAYER_TEMPLATE),
    ] {
        let j2 = env.dir.join(format!("templates/{name}.j2"));
        let hbs = env.dir.join(format!("templates/{name}.hbs"));
        if let Ok(text) = std::fs::read_to_string(&j2) {
            t.jinja.add_template_owned(name, text).map_err(|e| {
                jinja_error(&format!("{name}.j2"), &e, "", &[]).context(j2.display())
            })?;
        } else if let Ok(text) = std::fs::read_to_string(&hbs) {
            t.hbs
                .add(name, &text)
                .map_err(|e| e.context(hbs.display()))?;
        } else {
            t.jinja
                .add_template(name, builtin)
                .map_err(|e| jinja_error(&format!("{name}.j2"), &e, "", &[]))?;
        }
    }
    Ok(t)
}

impl Templates {
    /// Renders settings file `name` with the variables of `view` (of a host).
    fn render(
        &self,
        name: &str,
        view: &HostChanges<'_>,
        base: &Arc<BTreeMap<String, minijinja::Value>>,
        hostvars: &minijinja::Value,
    ) -> Result<String> {
        if self.hbs.has(name) {
            return self.hbs.render_in(name, view.ctx());
        }
        let template = self
            .jinja
            .get_template(name)
            .map_err(|e| jinja_error(name, &e, "", &[]))?;
        let data = view.ctx().data();
        let over = if view.whole {
            data.as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), Some(mj(v)))).collect())
                .unwrap_or_default()
        } else {
            view.touched()
                .into_iter()
                .map(|k| (k.clone(), data.get(&k).map(mj)))
                .collect()
        };
        let host = Arc::new(HostView {
            base: if view.whole {
                Arc::default()
            } else {
                base.clone()
            },
            over,
            hostvars: hostvars.clone(),
            missing: Mutex::default(),
        });
        template
            .render(minijinja::Value::from_dyn_object(host.clone()))
            .map_err(|e| {
                let missing = host
                    .missing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                jinja_error(&format!("{name}.j2"), &e, template.source(), &missing)
            })
    }
}

/// A JSON value as a Jinja value.
fn mj(v: &J) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// The variables a Jinja settings template sees on one host: the environment's (converted once
/// per environment) under the host's own.
#[derive(Debug)]
struct HostView {
    base: Arc<BTreeMap<String, minijinja::Value>>,
    /// The host's own values (`None`: not set on this host).
    over: BTreeMap<String, Option<minijinja::Value>>,
    /// `hostvars` ([`hostvars`]).
    hostvars: minijinja::Value,
    /// The variables looked up and not found, in order (to name an undefined one).
    missing: Mutex<Vec<String>>,
}

impl minijinja::value::Object for HostView {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let k = key.as_str()?;
        let found = match self.over.get(k) {
            Some(v) => v.clone(),
            None if k == "hostvars" => Some(self.hostvars.clone()),
            None => self.base.get(k).cloned(),
        };
        if found.is_none() {
            self.missing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(k.to_owned());
        }
        found
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let mut keys: BTreeSet<&String> = self
            .base
            .keys()
            .filter(|k| !self.over.contains_key(*k))
            .collect();
        keys.extend(
            self.over
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k),
        );
        minijinja::value::Enumerator::Values(
            keys.into_iter()
                .map(|k| minijinja::Value::from(k.as_str()))
                .collect(),
        )
    }
}

/// A Jinja settings template's error, as cchq's template errors read: `<template>:<line>: ...`;
/// an undefined value names the variable (the last one looked up and not found that the failing
/// expression names, else the expression).
fn jinja_error(name: &str, e: &minijinja::Error, source: &str, missing: &[String]) -> Error {
    let loc = e
        .line()
        .map_or_else(|| name.to_owned(), |l| format!("{name}:{l}"));
    let snippet = e
        .range()
        .and_then(|r| source.get(r))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        let words = |text: &str| -> Vec<String> {
            text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        // The expression, else the line it is on.
        let line = e
            .line()
            .and_then(|l| source.lines().nth(l.saturating_sub(1)))
            .unwrap_or_default();
        let named = |names: Vec<String>| missing.iter().rev().find(|m| names.contains(m));
        let var = named(words(snippet.unwrap_or_default())).or_else(|| named(words(line)));
        return match (var, snippet) {
            (Some(v), _) => Error::config(format!("{loc}: variable `{v}` is not defined")),
            (None, Some(s)) => Error::config(format!("{loc}: `{s}` is not defined")),
            (None, None) => Error::config(format!("{loc}: a variable is not defined")),
        }
        .with_hint("define it in public.yml, the inventory, the vault or cchq.yml, or fix its name in the template");
    }
    let mut what = e.kind().to_string();
    if let Some(d) = e.detail() {
        what.push_str(": ");
        what.push_str(d);
    }
    if let Some(s) = snippet {
        what.push_str(&format!(" in `{s}`"));
    }
    Error::config(format!("{loc}: {what}"))
}

/// Renders the settings files of `host`: `localsettings.py` where the host runs the web app
/// (webworkers, celery, pillowtop, proxy, django_manage), `application.properties` on formplayer hosts.
///
/// Works out everything for this one host; to render many hosts, use one [`SettingsRenderer`].
pub fn render_for_host(
    env: &Environment,
    host: &str,
    vault: Option<&Value>,
    release: Option<&str>,
) -> Result<Vec<SettingsFile>> {
    render_for_host_releases(env, host, vault, release, release)
}

/// Like [`render_for_host`], with the release name of each component: the web app's
/// (`app_release`) and formplayer's (`formplayer_release`), which live in different directories.
pub fn render_for_host_releases(
    env: &Environment,
    host: &str,
    vault: Option<&Value>,
    app_release: Option<&str>,
    formplayer_release: Option<&str>,
) -> Result<Vec<SettingsFile>> {
    SettingsRenderer::new(env, vault).render_releases(host, app_release, formplayer_release)
}

/// Renders the settings files of many hosts of one environment, in time linear in their number.
///
/// What does not depend on the host is worked out once, on the first render: the variables of
/// `public.yml`, the vault, `postgresql.yml` and `proxy.yml`, every group's host list, the
/// references among them that name nothing a host sets, and the compiled templates. Each render
/// then adds the host's own variables to that shared context, renders, and takes them out again.
/// (Worked out per host, as [`render_for_host`] does, every host's variables carry every group's
/// host list: rendering every host of an environment is quadratic in its size.)
///
/// The files and errors are those of [`render_for_host_releases`], byte for byte. Create one per
/// environment and vault and use it for every host; renders of one renderer take turns.
pub struct SettingsRenderer<'e> {
    env: &'e Environment,
    vault: Option<&'e Value>,
    built: OnceLock<Built>,
}

impl std::fmt::Debug for SettingsRenderer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsRenderer")
            .field("env", &self.env.name)
            .field("built", &self.built.get().is_some())
            .finish()
    }
}

/// What a [`SettingsRenderer`] works out once.
struct Built {
    /// The settings templates, or why they could not be loaded (which every render reports, as
    /// [`render_for_host`] does).
    templates: Result<Templates>,
    /// The shared context as Jinja values, converted once.
    jinja_base: Arc<BTreeMap<String, minijinja::Value>>,
    /// `hostvars` ([`hostvars`]) as a Jinja value.
    hostvars: minijinja::Value,
    /// The environment's variables, as set: what a host's own variables are layered over.
    base: Arc<Base>,
    /// The environment's variables whose values hold Jinja, evaluated for no host.
    keys: BTreeMap<String, Evaluated>,
    /// The same for the entries of the merged localsettings.
    locals: BTreeMap<String, Evaluated>,
    /// The shared context, changed for one host at a time.
    shared: Mutex<Shared>,
}

/// A value holding Jinja, and what it evaluates to for no host.
struct Evaluated {
    raw: J,
    /// Where it is set.
    origin: String,
    result: Result<J>,
    /// The variables the evaluation read (those read through other variables too).
    reads: BTreeSet<String>,
}

impl Evaluated {
    fn new(raw: &J, origin: &str, r: jinja::Resolved) -> Self {
        Self {
            raw: raw.clone(),
            origin: origin.to_owned(),
            result: r.result,
            reads: r.reads,
        }
    }

    /// Whether `result` holds for a host whose own variables `changed` differ from the
    /// environment's: the evaluation read none of them (Jinja is deterministic, so it reads and
    /// gives the same again).
    fn holds_for(&self, changed: &HashSet<&str>) -> bool {
        self.reads.iter().all(|k| !changed.contains(k.as_str()))
    }
}

/// The environment's variables, for no host.
struct Shared {
    /// What templates see: Jinja evaluated, the variables that do not evaluate left out, and
    /// `localsettings_merged`.
    view: handlebars::Context,
}

/// Changes to a shared context for one host. Dropping it puts every variable back as it was (on
/// success, error or panic alike), so nothing of one host is left for the next.
struct HostChanges<'c> {
    ctx: &'c mut handlebars::Context,
    /// `(variable, entry of it, value before)`, in the order of the changes.
    undo: Vec<(String, Option<String>, Option<J>)>,
    /// Whether `ctx` is the host's own, whole (not the shared one with changes).
    whole: bool,
}

impl<'c> HostChanges<'c> {
    fn new(ctx: &'c mut handlebars::Context) -> Self {
        Self {
            ctx,
            undo: Vec::new(),
            whole: false,
        }
    }

    /// The variables changed for this host.
    fn touched(&self) -> BTreeSet<String> {
        self.undo.iter().map(|(k, _, _)| k.clone()).collect()
    }

    /// Sets variable `key`, or with `entry` that entry of the object `key` holds, to `value`
    /// (`None`: removes it).
    fn set(&mut self, key: &str, entry: Option<&str>, value: Option<J>) {
        let Some(map) = object_of(self.ctx.data_mut(), key, entry) else {
            return;
        };
        let name = entry.unwrap_or(key);
        let before = match value {
            Some(v) => map.insert(name.to_owned(), v),
            None => map.remove(name),
        };
        self.undo
            .push((key.to_owned(), entry.map(str::to_owned), before));
    }

    fn ctx(&self) -> &handlebars::Context {
        self.ctx
    }
}

impl Drop for HostChanges<'_> {
    fn drop(&mut self) {
        while let Some((key, entry, before)) = self.undo.pop() {
            let Some(map) = object_of(self.ctx.data_mut(), &key, entry.as_deref()) else {
                continue;
            };
            let name = entry.unwrap_or(key);
            match before {
                Some(v) => map.insert(name, v),
                None => map.remove(&name),
            };
        }
    }
}

/// The object that holds variable `key` (with `entry`: the object `key` holds).
fn object_of<'j>(
    data: &'j mut J,
    key: &str,
    entry: Option<&str>,
) -> Option<&'j mut Map<String, J>> {
    let top = data.as_object_mut()?;
    match entry {
        None => Some(top),
        Some(_) => top.get_mut(key)?.as_object_mut(),
    }
}

/// A copy of a template or reference error (kind, message, hint and details; those have no source).
fn duplicate(e: &Error) -> Error {
    e.redacted(str::to_owned)
}

impl<'e> SettingsRenderer<'e> {
    /// A renderer for the hosts of `env`, with the secrets of `vault`. Nothing is read or worked
    /// out before the first render.
    pub fn new(env: &'e Environment, vault: Option<&'e Value>) -> Self {
        Self {
            env,
            vault,
            built: OnceLock::new(),
        }
    }

    /// The settings files of `host`, as [`render_for_host`] renders them.
    pub fn render(&self, host: &str, release: Option<&str>) -> Result<Vec<SettingsFile>> {
        self.render_releases(host, release, release)
    }

    /// The settings files of `host`, as [`render_for_host_releases`] renders them.
    ///
    /// # Errors
    /// [`require_vault`]'s (an encrypted vault not opened), a template's.
    pub fn render_releases(
        &self,
        host: &str,
        app_release: Option<&str>,
        formplayer_release: Option<&str>,
    ) -> Result<Vec<SettingsFile>> {
        require_vault(self.env, self.vault)?;
        let built = self.built();
        let templates = built.templates.as_ref().map_err(duplicate)?;
        let app = in_any(self.env, host, APP_GROUPS);
        let formplayer = in_any(self.env, host, FORMPLAYER_GROUPS);
        self.with_host(built, host, app_release, |view, unresolved| {
            let explain = |e: Error| explain_unresolved(e, &unresolved());
            let mut out = Vec::new();
            if app && self.env.profile.name == "django" {
                out.extend(django_files(self.env, view.ctx().data()));
            } else if app {
                out.push(SettingsFile {
                    component: Component::Commcare,
                    relative_path: "localsettings.py".into(),
                    contents: templates
                        .render("localsettings.py", view, &built.jinja_base, &built.hostvars)
                        .map_err(explain)?,
                    mode: 0o600,
                });
            }
            if formplayer {
                view.set(
                    "release_name",
                    None,
                    Some(J::from(formplayer_release.unwrap_or(""))),
                );
                // commcare-cloud's formplayer_release_name, from the formplayer release.
                if let Some(J::String(id)) = view.ctx().data().get("env_monitoring_id").cloned() {
                    view.set(
                        "formplayer_release_name",
                        None,
                        Some(J::from(format!(
                            "{}-{id}",
                            formplayer_release.unwrap_or("")
                        ))),
                    );
                }
                out.push(SettingsFile {
                    component: Component::Formplayer,
                    relative_path: "application.properties".into(),
                    contents: templates
                        .render(
                            "application.properties",
                            view,
                            &built.jinja_base,
                            &built.hostvars,
                        )
                        .map_err(explain)?,
                    mode: 0o600,
                });
            }
            Ok(out)
        })
    }

    /// The variables a settings template sees on `host`, as [`context`] returns them.
    pub fn context(&self, host: &str, release: Option<&str>) -> Result<J> {
        self.with_host(self.built(), host, release, |view, _| {
            Ok(view.ctx().data().clone())
        })
    }

    fn built(&self) -> &Built {
        self.built.get_or_init(|| Built::new(self.env, self.vault))
    }

    /// Calls `f` with the variables templates see on `host` (changes `f` makes are undone after),
    /// and what lists the variables left out because they do not resolve, with why.
    fn with_host<T>(
        &self,
        built: &Built,
        host: &str,
        release: Option<&str>,
        f: impl FnOnce(&mut HostChanges<'_>, &dyn Fn() -> Vec<(String, Error)>) -> Result<T>,
    ) -> Result<T> {
        // The host's own variables, over the environment's as `context_and_unresolved` puts them
        // (`groups` is the environment's whatever the host sets).
        let inventory = inventory_origin(self.env);
        let mut layer = Layer::default();
        for (k, v) in self.env.inventory.host_vars(host) {
            layer.insert(k, to_json(&v), &inventory);
        }
        for (k, v) in crate::services::supervisor::host_context(self.env, host) {
            layer.insert(k, v, GENERATED);
        }
        layer.insert("release_name", J::from(release.unwrap_or("")), GENERATED);
        layer.remove("groups");
        // Only the variables that differ from the environment's can make this host's differ.
        let top = over(&built.base, &layer);
        let changed: Vec<(String, J)> = top
            .vars()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let names: HashSet<&str> = changed.iter().map(|(k, _)| k.as_str()).collect();
        if names.contains("localsettings_private") || names.contains("localsettings") {
            // The host sets the localsettings themselves (never seen in practice): worked out
            // from scratch.
            let (ctx, unresolved) = context_and_unresolved(self.env, host, self.vault, release)?;
            let mut ctx = handlebars::Context::from(ctx);
            let mut changes = HostChanges::new(&mut ctx);
            changes.whole = true;
            return f(&mut changes, &|| {
                unresolved
                    .iter()
                    .map(|(k, e)| (k.clone(), duplicate(e)))
                    .collect()
            });
        }
        // Evaluated again for this host: the host's own values with Jinja, and the environment's
        // whose evaluation read something the host changes.
        let stale_keys: Vec<&str> = built
            .keys
            .iter()
            .filter(|(k, r)| !names.contains(k.as_str()) && !r.holds_for(&names))
            .map(|(k, _)| k.as_str())
            .chain(
                changed
                    .iter()
                    .filter(|(_, v)| has_templates(v))
                    .map(|(k, _)| k.as_str()),
            )
            .collect();
        let stale_locals: Vec<(&str, &Evaluated)> = built
            .locals
            .iter()
            .filter(|(_, r)| !r.holds_for(&names))
            .map(|(k, r)| (k.as_str(), r))
            .collect();
        let mut fresh: HashMap<&str, Result<J>> = HashMap::new();
        let mut fresh_locals: HashMap<&str, Result<J>> = HashMap::new();
        if !stale_keys.is_empty() || !stale_locals.is_empty() {
            let scope = Scope::new(built.base.clone(), top);
            for k in stale_keys {
                fresh.insert(k, scope.resolve(k).result);
            }
            for (k, r) in stale_locals {
                fresh_locals.insert(k, resolve_local(&scope, k, &r.raw, &r.origin).result);
            }
        }
        // Renders take turns; a panicking one has put the context back already (`HostChanges`).
        let mut shared = built.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Shared { view } = &mut *shared;
        // The host's view: its own variables, and the environment's that resolve differently on it.
        let mut at_view = HostChanges::new(view);
        for (k, v) in &changed {
            if k == "localsettings_merged" {
                continue; // the merged localsettings replace it
            }
            let value = match fresh.get(k.as_str()) {
                Some(now) => now.as_ref().ok().cloned(),
                None => Some(v.clone()),
            };
            at_view.set(k, None, value);
        }
        for (k, r) in &built.keys {
            if names.contains(k.as_str()) || k == "localsettings_merged" {
                continue;
            }
            if let Some(now) = fresh.get(k.as_str()) {
                let same = match (&r.result, now) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(_), Err(_)) => true,
                    _ => false,
                };
                if !same {
                    at_view.set(k, None, now.as_ref().ok().cloned());
                }
            }
        }
        for (k, r) in &built.locals {
            let now = fresh_locals.get(k.as_str());
            match now.unwrap_or(&r.result) {
                Err(e) => return Err(duplicate(e)),
                Ok(x) if now.is_some() && r.result.as_ref().ok() != Some(x) => {
                    at_view.set("localsettings_merged", Some(k.as_str()), Some(x.clone()));
                }
                Ok(_) => {}
            }
        }
        let unresolved = || {
            let mut out = Vec::new();
            for (k, r) in &built.keys {
                if !names.contains(k.as_str())
                    && let Err(e) = fresh.get(k.as_str()).unwrap_or(&r.result)
                {
                    out.push((k.clone(), duplicate(e)));
                }
            }
            for (k, _) in &changed {
                if let Some(Err(e)) = fresh.get(k.as_str()) {
                    out.push((k.clone(), duplicate(e)));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        f(&mut at_view, &unresolved)
    }
}

impl Built {
    fn new(env: &Environment, vault: Option<&Value>) -> Self {
        let templates = templates(env);
        // The environment's variables, layered as `context_and_unresolved` layers them (a host
        // that sets one of the promoted keys keeps its value: its layer is over these).
        let base = environment_base(env, vault);
        let ls = localsettings_entries(base.layer());
        let scope = Scope::new(base.clone(), Layer::default());
        let mut keys = BTreeMap::new();
        let mut view = Map::new();
        for (k, v) in base.layer().vars() {
            if has_templates(v) {
                let origin = base.layer().origin(k).unwrap_or("public.yml");
                let r = Evaluated::new(v, origin, scope.resolve(k));
                if let Ok(x) = &r.result {
                    view.insert(k.clone(), x.clone());
                }
                keys.insert(k.clone(), r);
            } else {
                view.insert(k.clone(), v.clone());
            }
        }
        let mut locals = BTreeMap::new();
        let mut merged = Map::new();
        for (k, (v, origin)) in ls {
            if has_templates(&v) {
                let r = Evaluated::new(&v, &origin, resolve_local(&scope, &k, &v, &origin));
                if let Ok(x) = &r.result {
                    merged.insert(k.clone(), x.clone());
                }
                locals.insert(k, r);
            } else {
                merged.insert(k, v);
            }
        }
        view.insert("localsettings_merged".into(), J::Object(merged));
        let jinja_base: BTreeMap<String, minijinja::Value> =
            view.iter().map(|(k, v)| (k.clone(), mj(v))).collect();
        let shared = Shared {
            view: handlebars::Context::from(J::Object(view)),
        };
        Self {
            templates,
            jinja_base: Arc::new(jinja_base),
            hostvars: mj(&hostvars(env)),
            base,
            keys,
            locals,
            shared: Mutex::new(shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture_env as fixture;

    fn vault(env: &Environment) -> Value {
        match &env.vault {
            crate::environment::Vault::Plain(v) => v.clone(),
            _ => panic!("plain vault expected"),
        }
    }

    /// postgresql.yml reaches templates as commcare-cloud's generated variables: the databases
    /// with hosts resolved, users from the vault's `POSTGRES_USERS` (via `postgres_users`).
    #[test]
    fn the_context_has_upstreams_postgresql_dbs() {
        let env = fixture("test");
        let v = vault(&env);
        let host = settings_hosts(&env)[0].clone();
        let ctx = context(&env, &host, Some(&v), None).unwrap();
        let all = ctx["postgresql_dbs"]["all"].as_array().unwrap();
        let ucr = all.iter().find(|d| d["django_alias"] == "ucr").unwrap();
        let pg_host = env.inventory.group_hosts("postgresql").unwrap()[0].to_owned();
        assert_eq!(ucr["host"], J::from(pg_host.clone()));
        assert_eq!(ucr["pgbouncer_endpoint"], J::from(pg_host));
        assert_eq!(ucr["port"], 6432);
        assert_eq!(ucr["user"], "commcarehq");
        assert_eq!(ctx["SEPARATE_FORM_PROCESSING_DBS"], false);
        assert_eq!(ctx["postgresql_hba_entries"], J::Array(Vec::new()));
        let by_host = ctx["postgresql_dbs"]["by_pgbouncer_host"]
            .as_object()
            .unwrap();
        assert!(!by_host.is_empty());
    }

    #[test]
    fn localsettings_render_with_references_resolved() {
        let env = fixture("development");
        let v = vault(&env);
        let files =
            render_for_host(&env, "192.168.33.15", Some(&v), Some("2026-11-26_16.00")).unwrap();
        let ls = &files
            .iter()
            .find(|f| f.relative_path == "localsettings.py")
            .unwrap()
            .contents;
        assert!(
            ls.contains("os.path.join(LOG_HOME, '192.168.33.15-commcarehq.django.log')"),
            "{ls}"
        );
        assert!(
            ls.contains("EMAIL_BACKEND = 'django.core.mail.backends.filebased.EmailBackend'"),
            "{ls}"
        );
        assert!(
            ls.contains("'LOCATION': 'redis://192.168.33.15:6379/0',"),
            "{ls}"
        );
        assert!(
            ls.contains("SECRET_KEY = 'JHX1y7iG0bQaVICcBXrQYw1fcJcomC24p6lxAfKMG0B5g7D5'"),
            "{ls}"
        );
        // YAML's `no` is Python's False.
        assert!(ls.contains("EMAIL_USE_TLS = False"), "{ls}");
        // proxy.yml's SITE_HOST is an Ansible fact here (`hostvars[groups.proxy.0].ansible_hostname`),
        // the one cchq knows: the proxy's `hostname` inventory variable.
        let fp = render_for_host(&env, "192.168.33.16", Some(&v), Some("r1")).unwrap();
        assert!(
            fp[1]
                .contents
                .contains("\ncommcarehq.host=https://proxy1\n"),
            "{}",
            fp[1].contents
        );
        // Without it, the templates that use SITE_HOST fail, naming it, rather than render it empty.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("development");
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&env.dir).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap();
            std::fs::write(
                dir.join(f.file_name()),
                text.replace("hostname='proxy1'", ""),
            )
            .unwrap();
        }
        let env = Environment::load(tmp.path(), "development").unwrap();
        let err = render_for_host(&env, "192.168.33.16", Some(&v), Some("r1")).unwrap_err();
        assert!(
            err.message().contains("localsettings.py.j2:") && err.message().contains("`SITE_HOST`"),
            "{err}"
        );
        // ... and says why `SITE_HOST` is missing: its own value does not resolve.
        assert!(
            err.message().contains("the environment sets `SITE_HOST`")
                && err.message().contains("proxy.yml: `SITE_HOST`"),
            "{err}"
        );
        assert!(
            err.hint().is_some_and(|h| h.contains("`SITE_HOST`")),
            "{err:?}"
        );
    }

    #[test]
    fn a_public_yml_value_referring_to_nothing_is_named_with_what_it_refers_to() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("inventory.ini"), "[webworkers]\nweb1\n").unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("public.yml"),
            "BASE_DOMAIN: '{{ no_such_variable }}.example'\nlocalsettings:\n  HQ_INSTANCE: tt\n",
        )
        .unwrap();
        std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("templates/localsettings.py.hbs"),
            "BASE = '{{BASE_DOMAIN}}'\n",
        )
        .unwrap();
        let env = Environment::load(tmp.path(), "t").unwrap();
        let err = render_for_host(&env, "web1", None, Some("r1")).unwrap_err();
        assert!(
            err.message().contains("`BASE_DOMAIN`") && err.message().contains("no_such_variable"),
            "{err}"
        );
        // A template that does not use it renders.
        std::fs::write(dir.join("templates/localsettings.py.hbs"), "X = 1\n").unwrap();
        let env = Environment::load(tmp.path(), "t").unwrap();
        assert_eq!(
            render_for_host(&env, "web1", None, Some("r1")).unwrap()[0].contents,
            "X = 1\n"
        );
    }

    #[test]
    fn a_missing_variable_names_template_line_and_variable() {
        let mut env = fixture("test");
        env.public.insert(
            "localsettings".into(),
            yaml_serde::from_str("{A: '{{ nowhere_defined }}'}").unwrap(),
        );
        let err = render_for_host(&env, "cloud_worker_2", None, None).unwrap_err();
        assert!(err.message().contains("nowhere_defined"), "{err}");
    }

    #[test]
    fn secrets_are_collected_for_masking() {
        let env = fixture("development");
        let s = crate::redact::secret_values(Some(&vault(&env)));
        assert!(s.iter().any(|x| x == "p9RzGNx7wZr3BqLhNc7UtjQv"));
    }

    /// Rendering as it was before [`SettingsRenderer`]: everything worked out for the one host.
    fn render_from_scratch(
        env: &Environment,
        host: &str,
        vault: Option<&Value>,
        app_release: Option<&str>,
        formplayer_release: Option<&str>,
    ) -> Result<Vec<SettingsFile>> {
        let t = templates(env)?;
        let (ctx, unresolved) = context_and_unresolved(env, host, vault, app_release)?;
        let hv = mj(&hostvars(env));
        let explain = |e: Error| explain_unresolved(e, &unresolved);
        let mut ctx = handlebars::Context::from(ctx);
        let mut view = HostChanges::new(&mut ctx);
        view.whole = true;
        let mut out = Vec::new();
        if in_any(env, host, APP_GROUPS) && env.profile.name == "django" {
            out.extend(django_files(env, view.ctx().data()));
        } else if in_any(env, host, APP_GROUPS) {
            out.push(SettingsFile {
                component: Component::Commcare,
                relative_path: "localsettings.py".into(),
                contents: t
                    .render("localsettings.py", &view, &Arc::default(), &hv)
                    .map_err(explain)?,
                mode: 0o600,
            });
        }
        if in_any(env, host, FORMPLAYER_GROUPS) {
            view.set(
                "release_name",
                None,
                Some(J::from(formplayer_release.unwrap_or(""))),
            );
            let id = env.meta.env_monitoring_id.clone();
            view.set(
                "formplayer_release_name",
                None,
                Some(J::from(format!(
                    "{}-{id}",
                    formplayer_release.unwrap_or("")
                ))),
            );
            out.push(SettingsFile {
                component: Component::Formplayer,
                relative_path: "application.properties".into(),
                contents: t
                    .render("application.properties", &view, &Arc::default(), &hv)
                    .map_err(explain)?,
                mode: 0o600,
            });
        }
        Ok(out)
    }

    /// A result as something comparable and printable: `show` of the value, or the error's kind,
    /// message and hint.
    fn outcome<T, U>(
        r: &Result<T>,
        show: impl Fn(&T) -> U,
    ) -> std::result::Result<U, (crate::ErrorKind, String, Option<String>)> {
        match r {
            Ok(x) => Ok(show(x)),
            Err(e) => Err((
                e.kind(),
                e.message().to_owned(),
                e.hint().map(str::to_owned),
            )),
        }
    }

    fn files(fs: &[SettingsFile]) -> Vec<(Component, String, String, u32)> {
        fs.iter()
            .map(|f| {
                (
                    f.component,
                    f.relative_path.clone(),
                    f.contents.clone(),
                    f.mode,
                )
            })
            .collect()
    }

    /// Every host of `hosts` rendered by one shared renderer, forwards then backwards (so each
    /// host follows hosts of every kind), gives what rendering it from scratch gives: the same
    /// files or the same error, and the same context.
    fn assert_shared_renders_as_from_scratch(
        env: &Environment,
        vault: Option<&Value>,
        hosts: &[String],
    ) {
        let shared = SettingsRenderer::new(env, vault);
        let releases = [
            (Some("r1"), Some("f1")),
            (None, None),
            (Some("r2"), Some("r2")),
        ];
        for h in hosts.iter().chain(hosts.iter().rev()) {
            for (app, formplayer) in releases {
                let want = outcome(&render_from_scratch(env, h, vault, app, formplayer), |fs| {
                    files(fs)
                });
                let got = outcome(&shared.render_releases(h, app, formplayer), |fs| files(fs));
                assert_eq!(got, want, "host `{h}`, releases {app:?} {formplayer:?}");
                let want = outcome(&context(env, h, vault, app), J::clone);
                assert_eq!(
                    outcome(&shared.context(h, app), J::clone),
                    want,
                    "context of `{h}`"
                );
            }
        }
    }

    fn all_hosts(env: &Environment) -> Vec<String> {
        env.inventory
            .hosts()
            .map(|h| h.name.clone())
            .chain(["not-in-the-inventory".to_owned()])
            .collect()
    }

    #[test]
    fn the_shared_renderer_renders_the_fixtures_as_each_host_from_scratch() {
        for name in ["development", "test"] {
            let env = fixture(name);
            let v = vault(&env);
            assert_shared_renders_as_from_scratch(&env, Some(&v), &all_hosts(&env));
            assert_shared_renders_as_from_scratch(&env, None, &all_hosts(&env));
        }
    }

    /// An environment whose hosts exercise every way a host's variables can differ from the
    /// environment's: host and group variables that override public.yml values other values
    /// refer to, that hold references themselves, that set `release_name`, `groups` or
    /// `localsettings`, that a reference needs and only some hosts have.
    fn tricky_env(root: &std::path::Path) -> Environment {
        let dir = root.join("tricky");
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let inventory = "\
[all:vars]
ref_var='{{ inventory_hostname }}-x'

[webworkers]
web1 fact_of_host=1 PROMOTED=from-host
web2 BASE_DOMAIN=example.com
web3 fact_of_host=3 localsettings=\"{'HQ_INSTANCE': 'own', 'SITE': '{{ SITE_HOST }}'}\"
web4 fact_of_host=4 BASE_DOMAIN=host.example
web5 fact_of_host=5 ref_var='{{ BASE_DOMAIN }}/{{ inventory_hostname }}'

[webworkers:vars]
suffix=w

[formplayer]
fp1 fact_of_host=6
web1

[formplayer:vars]
suffix=f

[celery]
cel1 fact_of_host=7 release_name=ignored groups=ignored

[proxy]
proxy1

[proxy:vars]
suffix=p
";
        std::fs::write(dir.join("inventory.ini"), inventory).unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
        )
        .unwrap();
        let public = r#"
BASE_DOMAIN: example.com
NESTED: "{{ SITE_HOST }}"
PER_HOST: "{{ inventory_hostname }}.{{ BASE_DOMAIN }}"
FIRST_WEB: "{{ groups.webworkers.0 }}"
FACT: "{{ ansible_default_ipv4.address }}"
HOST_FACT: "{{ fact_of_host }}"
BLOCK: "{% for h in groups.webworkers %}{{ h }},{% endfor %}"
BLOCK_HOST: "{% for h in groups.webworkers %}{% if h == inventory_hostname %}me{% endif %}{% endfor %}"
LIST: ["{{ BASE_DOMAIN }}", {deep: "{{ inventory_hostname }}"}]
HV: "{{ hostvars['web4'].BASE_DOMAIN }}"
HV_OWN: "{{ hostvars[inventory_hostname].fact_of_host | default('none') }}"
localsettings_merged: "{{ nothing_here }}"
localsettings:
  HQ_INSTANCE: tt
  SITE: "{{ SITE_HOST }}"
  MACHINE: "{{ inventory_hostname }}"
  SUFFIXED: "{{ suffix }}"
  LISTED: "{{ LIST }}"
"#;
        std::fs::write(dir.join("public.yml"), public).unwrap();
        std::fs::write(
            dir.join("vault.yml"),
            "COUCH_PASSWORD: pw\nlocalsettings_private:\n  SECRET_KEY: s3cret\n  PROMOTED: from-vault\n  PRIV_REF: '{{ NESTED }}'\n",
        )
        .unwrap();
        // SITE_HOST in proxy.yml, where commcare-cloud wants it.
        std::fs::write(
            dir.join("proxy.yml"),
            "SITE_HOST: '{{ BASE_DOMAIN }}'\nJ2ME_SITE_HOST: '{{ SITE_HOST }}'\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("templates/localsettings.py.hbs"),
            "{{inventory_hostname}} {{release_name}} {{SITE_HOST}} {{NESTED}} {{PER_HOST}} {{FIRST_WEB}} {{BLOCK}} {{BLOCK_HOST}} {{PROMOTED}}\n\
             {{ref_var}} {{py LIST}} {{py groups.webworkers}} {{HOST_FACT}} {{HV}} {{HV_OWN}}\n\
             {{#each localsettings_merged}}{{@key}} = {{py this}}\n{{/each}}",
        )
        .unwrap();
        std::fs::write(
            dir.join("templates/application.properties.hbs"),
            "{{release_name}} {{PER_HOST}} {{J2ME_SITE_HOST}} {{ref_var}}\n",
        )
        .unwrap();
        Environment::load(root, "tricky").unwrap()
    }

    /// The first settings template, a handlebars one that writes every localsettings entry as a
    /// setting: an environment's override (`<env>/templates/*.hbs`), still rendered as before.
    const DUMP_TEMPLATE: &str = include_str!("settings/testdata/localsettings.py.hbs");

    /// An environment `ls` whose only host `web1` is a web worker; `public`, `vault` and the
    /// host's variables as given; its `localsettings.py` template is [`DUMP_TEMPLATE`].
    fn names_env(
        root: &std::path::Path,
        host_vars: &str,
        public: &str,
        vault: &str,
    ) -> Result<Environment> {
        let dir = root.join("ls");
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(dir.join("templates/localsettings.py.hbs"), DUMP_TEMPLATE).unwrap();
        std::fs::write(
            dir.join("inventory.ini"),
            format!("[webworkers]\nweb1 {host_vars}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: ls\nenv_monitoring_id: ls\nusers: []\n",
        )
        .unwrap();
        std::fs::write(dir.join("public.yml"), public).unwrap();
        std::fs::write(dir.join("vault.yml"), vault).unwrap();
        Environment::load(root, "ls")
    }

    /// Issue 12: a `localsettings` key with a newline wrote arbitrary Python.
    #[test]
    fn localsettings_keys_that_are_not_identifiers_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let e = names_env(
            tmp.path(),
            "",
            "localsettings:\n  \"A\\nimport os\": 1\n",
            "",
        )
        .unwrap_err();
        assert!(
            e.message().ends_with(
                "public.yml: `localsettings` key `A\\nimport os` is not a Python identifier"
            ),
            "{e}"
        );
        assert!(e.hint().is_some_and(|h| h.contains("NAME = value")));
        let e = names_env(
            tmp.path(),
            "",
            "{}\n",
            "localsettings_private:\n  'X = 1; import os; Y': s\n",
        )
        .unwrap_err();
        assert!(e.message().ends_with("vault.yml: `localsettings_private` key `X = 1; import os; Y` is not a Python identifier"), "{e}");
        let e = names_env(tmp.path(), "", "localsettings:\n  None: 1\n", "").unwrap_err();
        assert!(e.message().contains("is not a Python identifier"), "{e}");
        let e = names_env(tmp.path(), "", "localsettings:\n  1: 1\n", "").unwrap_err();
        assert!(
            e.message().contains("key `1` is not a Python identifier"),
            "{e}"
        );
        // Set on the host in the inventory, it reaches the template: refused there.
        let env = names_env(tmp.path(), r#"localsettings="{'A\nB': 1}""#, "{}\n", "").unwrap();
        let e = SettingsRenderer::new(&env, None)
            .render("web1", Some("r"))
            .unwrap_err();
        assert!(
            e.message().contains("`A\\nB` is not a Python identifier"),
            "{e}"
        );
    }

    /// Issue 12: every value of localsettings.py is a Python literal that reads back as itself.
    #[test]
    fn localsettings_values_are_python_literals_python_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let public = r#"localsettings:
  QUOTES: "it's \"quoted\" '''"
  BACKSLASH: 'C:\new\x'
  NEWLINES: "a\nimport os\r\n#"
  UNICODE: "é 中 \u2028 \x00"
  LIST: ["x'", 1, null, true]
"#;
        let env = names_env(
            tmp.path(),
            "",
            public,
            "localsettings_private:\n  SECRET: \"s'\\\\\"\n",
        )
        .unwrap();
        let vault = env.vault.plain().unwrap();
        let ls = SettingsRenderer::new(&env, Some(&vault))
            .render("web1", Some("r"))
            .unwrap()[0]
            .contents
            .clone();
        let expected = serde_json::json!({
            "QUOTES": "it's \"quoted\" '''",
            "BACKSLASH": "C:\\new\\x",
            "NEWLINES": "a\nimport os\r\n#",
            "UNICODE": "é 中 \u{2028} \u{0}",
            "LIST": ["x'", 1, null, true],
            "SECRET": "s'\\",
        });
        // Each setting is one line.
        for (k, v) in expected.as_object().unwrap() {
            assert!(
                ls.lines()
                    .any(|l| l == format!("{k} = {}", crate::templates::python_literal(v))),
                "{k}: {ls}"
            );
        }
        // And Python itself reads them back (when there is a Python).
        let file = tmp.path().join("localsettings.py");
        std::fs::write(&file, &ls).unwrap();
        let script = "import json, sys; d = {}; exec(open(sys.argv[1], encoding='utf-8').read(), d); \
                      print(json.dumps({k: d[k] for k in sys.argv[2:]}))";
        let keys: Vec<&String> = expected.as_object().unwrap().keys().collect();
        let Ok(out) = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .args(&keys)
            .output()
        else {
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(read, expected);
    }

    /// Issue 13: values are Jinja: the text around the tags is kept, filters work, a value of one
    /// expression keeps its type.
    #[test]
    fn environment_values_are_jinja_with_the_text_around_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let public = r#"API: /api/v1.2/
hosts_list: "{{ groups.webworkers }}"
localsettings:
  VIA: "{{ deploy_env }} via 10.0.0.1"
  API: "{{ API }}{{ missing | default('x') }}"
  HOSTS: "{{ hosts_list }}"
  JOINED: "{{ groups.webworkers | map('upper') | join(',') }}"
  COUNT: "{{ groups['webworkers'] | length }}"
  FLAG: "{{ 'yes' | bool }}"
  PORT: "{{ port | int + 1 }}"
"#;
        let env = names_env(tmp.path(), "port=\"8000\"", public, "").unwrap();
        let ls = SettingsRenderer::new(&env, None)
            .render("web1", Some("r"))
            .unwrap()[0]
            .contents
            .clone();
        for line in [
            "VIA = 'ls via 10.0.0.1'",
            "API = '/api/v1.2/x'",
            "HOSTS = ['web1']",
            "JOINED = 'WEB1'",
            "COUNT = 1",
            "FLAG = True",
            "PORT = 8001",
        ] {
            assert!(ls.lines().any(|l| l == line), "{line}: {ls}");
        }
        // A cycle names the variables and files.
        let env = names_env(
            tmp.path(),
            "",
            "a: '{{ b }}'\nb: '{{ a }}'\nlocalsettings:\n  A: '{{ a }}'\n",
            "",
        )
        .unwrap();
        let e = SettingsRenderer::new(&env, None)
            .render("web1", Some("r"))
            .unwrap_err();
        assert!(
            e.message().starts_with(
                "public.yml: `localsettings.A`: variables refer to each other in a cycle: `a` (public.yml) -> `b` (public.yml) -> `a`"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_shared_renderer_renders_tricky_hosts_as_each_host_from_scratch() {
        let tmp = tempfile::tempdir().unwrap();
        let env = tricky_env(tmp.path());
        let v = vault(&env);
        let hosts = all_hosts(&env);
        assert_shared_renders_as_from_scratch(&env, Some(&v), &hosts);
        assert_shared_renders_as_from_scratch(&env, None, &hosts);
        // What the hosts were made for did happen (so the comparison covered it).
        let shared = SettingsRenderer::new(&env, Some(&v));
        let ls = |h: &str| shared.render(h, Some("r1")).unwrap()[0].contents.clone();
        assert!(
            ls("web4").contains("host.example host.example"),
            "{}",
            ls("web4")
        );
        assert!(ls("web5").contains("example.com/web5"), "{}", ls("web5"));
        assert!(
            ls("web1").contains(" from-host\n") && ls("web1").contains("PROMOTED = 'from-vault'"),
            "{}",
            ls("web1")
        );
        assert!(ls("web3").contains("HQ_INSTANCE = 'own'"), "{}", ls("web3"));
        // `hostvars[h]`: `h`'s inventory variables, whichever host renders.
        assert!(
            ls("web1").contains(" 1 host.example 1\n")
                && ls("web5").contains(" 5 host.example 5\n"),
            "{}",
            ls("web1")
        );
        let err = shared.render("web2", Some("r1")).unwrap_err();
        assert!(
            err.message().contains("the environment sets `HOST_FACT`"),
            "{err}"
        );
        let err = shared.render("cel1", Some("r1")).unwrap_err();
        assert!(
            err.message()
                .contains("public.yml: `localsettings.SUFFIXED`: variable `suffix` is not defined"),
            "{err}"
        );
    }

    #[test]
    fn a_hosts_own_values_do_not_reach_the_next_host() {
        let env = fixture("test");
        let v = vault(&env);
        let shared = SettingsRenderer::new(&env, Some(&v));
        let ls = |h: &str, r: &str| shared.render(h, Some(r)).unwrap()[0].contents.clone();
        let a = ls("cloud_worker_2", "r1");
        assert!(
            a.contains("'cloud_worker_2-commcarehq.django.log'")
                && a.contains(" on cloud_worker_2, "),
            "{a}"
        );
        let b = ls("cloud_worker_3", "r2");
        assert!(
            b.contains("'cloud_worker_3-commcarehq.django.log'")
                && b.contains(" on cloud_worker_3, "),
            "{b}"
        );
        assert!(!b.contains("cloud_worker_2") && !b.contains("r1"), "{b}");
        // ... after another release's render too (localsettings.py does not name its release, so
        // that a copy into the next release is still what update-config renders), and on the
        // first host again. Renders that fail are covered by the tricky hosts' test.
        assert!(
            !shared.render("cloud_worker_2", Some("r3")).unwrap()[0]
                .contents
                .contains("r3")
        );
        assert_eq!(ls("cloud_worker_2", "r1"), a);
        assert_eq!(ls("cloud_worker_3", "r2"), b);

        let tmp = tempfile::tempdir().unwrap();
        let env = tricky_env(tmp.path());
        let v = vault(&env);
        let shared = SettingsRenderer::new(&env, Some(&v));
        // web1 runs formplayer too: its application.properties shows formplayer's release, and
        // web2's localsettings.py after it shows the app's.
        let web1 = shared
            .render_releases("web1", Some("app-r"), Some("fp-r"))
            .unwrap();
        assert!(
            web1[1].contents.starts_with("fp-r web1.example.com "),
            "{}",
            web1[1].contents
        );
        assert!(shared.render("web2", Some("x")).is_err()); // no `fact_of_host`
        let web4 = shared
            .render_releases("web4", Some("app-r"), Some("fp-r"))
            .unwrap();
        assert!(
            web4[0].contents.starts_with("web4 app-r host.example "),
            "{}",
            web4[0].contents
        );
        let web5 = shared
            .render_releases("web5", Some("app-r"), Some("fp-r"))
            .unwrap();
        assert!(
            web5[0].contents.starts_with("web5 app-r example.com "),
            "{}",
            web5[0].contents
        );
        for (h, f) in [("web4", &web4[0].contents), ("web5", &web5[0].contents)] {
            assert!(!f.contains("fp-r") && !f.contains("from-host"), "{h}: {f}");
        }
        assert!(
            !web5[0].contents.contains("web5.host.example")
                && web5[0].contents.contains("web5.example.com"),
            "{}",
            web5[0].contents
        );
    }

    #[test]
    fn json_maps_keep_their_keys_sorted() {
        // The shared renderer changes the shared maps for a host and puts them back: that leaves
        // them as they were only while maps keep their keys sorted (serde_json without
        // `preserve_order`, where a removed and re-inserted key would move to the end).
        let mut m = Map::new();
        m.insert("b".into(), J::Null);
        m.insert("a".into(), J::Null);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
