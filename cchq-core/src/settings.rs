//! Settings files rendered from the environment: `localsettings.py` for the web app and
//! `application.properties` for formplayer, from handlebars templates shipped with the profile
//! (overridable in `<env>/templates/`), with variables from the inventory, `public.yml`, the
//! vault, `postgresql.yml`, `proxy.yml` and generated values.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value as J};

use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::templates::Renderer;
use crate::{Value, yaml};

/// The built-in `localsettings.py` template.
pub const LOCALSETTINGS_TEMPLATE: &str = include_str!("../profiles/commcare/templates/localsettings.py.hbs");
/// The built-in formplayer `application.properties` template.
pub const FORMPLAYER_TEMPLATE: &str = include_str!("../profiles/commcare/templates/application.properties.hbs");

/// The groups whose hosts run the web app and get `localsettings.py`.
pub const APP_GROUPS: &[&str] = &["webworkers", "celery", "pillowtop", "proxy", "django_manage"];

/// The groups whose hosts run formplayer and get `application.properties`.
pub const FORMPLAYER_GROUPS: &[&str] = &["formplayer"];

/// Every settings file cchq renders: `(component, path inside the component's release)`.
pub const FILES: &[(&str, &str)] = &[("commcare", "localsettings.py"), ("formplayer", "application.properties")];

/// One rendered settings file.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingsFile {
    /// `commcare` or `formplayer`.
    pub component: String,
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

/// Every secret string in the vault, for masking output (values of 4 characters or more).
pub fn secret_values(vault: Option<&Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => m.values().for_each(|x| walk(x, out)),
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            other => {
                if let Some(s) = yaml::scalar_to_string(other).filter(|s| s.len() >= 4) {
                    out.push(s);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(v) = vault {
        walk(v, &mut out);
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// The names of the vault's keys that hold scalars, at any depth (`SECRET_KEY`, `password`): a
/// settings line assigning one of them is masked in diffs even when its old value is no longer in
/// the vault (a rotated secret).
pub fn secret_keys(vault: Option<&Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, x) in m {
                    match x {
                        Value::Mapping(_) | Value::Sequence(_) => walk(x, out),
                        _ => out.extend(yaml::scalar_to_string(k)),
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(v) = vault {
        walk(v, &mut out);
    }
    out.sort();
    out.dedup();
    out
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

/// The variables a settings template sees on `host`.
pub fn context(env: &Environment, host: &str, vault: Option<&Value>, release: Option<&str>) -> Result<J> {
    context_and_unresolved(env, host, vault, release).map(|(j, _)| j)
}

/// [`context`], and the variables left out of it because their `{{ }}` references could not be
/// resolved, with why (so that a template using one can say so).
fn context_and_unresolved(
    env: &Environment,
    host: &str,
    vault: Option<&Value>,
    release: Option<&str>,
) -> Result<(J, Vec<(String, Error)>)> {
    let mut m: Map<String, J> = Map::new();
    // Lowest first: public.yml, vault, postgresql.yml, proxy.yml, inventory vars, generated.
    for (k, v) in &env.public {
        m.insert(k.clone(), to_json(v));
    }
    if let Some(Value::Mapping(v)) = vault {
        for (k, val) in v {
            if let Some(k) = yaml::scalar_to_string(k) {
                m.insert(k, to_json(val));
            }
        }
    }
    for extra in [&env.postgresql, &env.proxy] {
        if let Value::Mapping(map) = extra {
            for (k, val) in map {
                if let Some(k) = yaml::scalar_to_string(k) {
                    m.insert(k, to_json(val));
                }
            }
        }
    }
    for (k, v) in env.inventory.host_vars(host) {
        m.insert(k, to_json(&v));
    }
    let generated = crate::services::supervisor::host_context(env, host);
    for (k, v) in generated {
        m.insert(k, v);
    }
    m.insert("release_name".into(), J::from(release.unwrap_or("")));
    let mut groups = Map::new();
    for g in env.inventory.groups() {
        groups.insert(g.name.clone(), J::from(env.inventory.group_hosts(&g.name).unwrap_or_default()));
    }
    m.insert("groups".into(), J::Object(groups));
    // The vault's `localsettings_private` keys are variables too (`{{ COUCH_PASSWORD }}`).
    if let Some(J::Object(o)) = m.get("localsettings_private").cloned() {
        for (k, v) in o {
            m.entry(k).or_insert(v);
        }
    }
    // Merged localsettings: public `localsettings` over vault `localsettings_private`.
    let mut ls = Map::new();
    for key in ["localsettings_private", "localsettings"] {
        if let Some(J::Object(o)) = m.get(key) {
            for (k, v) in o {
                ls.insert(k.clone(), v.clone());
            }
        }
    }
    // The context every reference renders against, converted for handlebars once per host (not
    // once per reference: it holds every group's host list, so it grows with the inventory).
    let root = handlebars::Context::from(J::Object(m.clone()));
    let r = Renderer::new();
    // References in other variables resolve where they can (Ansible facts and Jinja filters
    // cannot): one that cannot is left out, so a template using it fails naming it.
    let mut resolved = Map::new();
    let mut unresolved = Vec::new();
    for (k, v) in &m {
        match resolve_references(v, &r, &root, 0) {
            Ok(x) => {
                resolved.insert(k.clone(), x);
            }
            Err(e) => unresolved.push((k.clone(), e)),
        }
    }
    let mut merged = Map::new();
    for (k, v) in ls {
        let x = resolve_references(&v, &r, &root, 0).map_err(|e| Error::config(format!("localsettings `{k}`: {}", e.message())))?;
        merged.insert(k, x);
    }
    resolved.insert("localsettings_merged".into(), J::Object(merged));
    Ok((J::Object(resolved), unresolved))
}

/// A template error about a variable that was left out of the context because its own value
/// refers to something that does not exist: says so, naming that inner reference.
fn explain_unresolved(e: Error, unresolved: &[(String, Error)]) -> Error {
    match unresolved.iter().find(|(k, _)| e.message().contains(&format!("`{k}`"))) {
        Some((k, why)) => Error::new(
            e.kind(),
            format!(
                "{}: the environment sets `{k}`, but its value refers to something that does not exist: {}",
                e.message(),
                why.message()
            ),
        )
        .with_hint(format!(
            "give `{k}` a plain value, or define what it refers to, in public.yml (or the file that sets it); \
             cchq resolves `{{{{ var }}}}` references to the environment's variables and inventory, not Ansible facts or filters"
        )),
        None => e,
    }
}

/// Jinja's `groups.proxy.0` is handlebars' `groups.proxy.[0]`.
static JINJA_INDEX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\.(\d+)\b").expect("a valid regular expression"));

/// Resolves `{{ var }}` references inside string values (as commcare-cloud's environments write
/// them in `public.yml`), against the whole context; a reference to nothing is an error.
fn resolve_references(v: &J, r: &Renderer, root: &handlebars::Context, depth: usize) -> Result<J> {
    if depth > 8 {
        return Err(Error::config("variable references nest too deeply (a cycle?)"));
    }
    Ok(match v {
        J::String(s) if s.contains("{{") => {
            let s = JINJA_INDEX.replace_all(s, ".[$1]");
            let rendered = r.render_str_in("public.yml value", &s, root)?;
            if rendered.contains("{{") { resolve_references(&J::String(rendered), r, root, depth + 1)? } else { J::String(rendered) }
        }
        J::Array(a) => J::Array(a.iter().map(|x| resolve_references(x, r, root, depth)).collect::<Result<_>>()?),
        J::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                out.insert(k.clone(), resolve_references(x, r, root, depth)?);
            }
            J::Object(out)
        }
        other => other.clone(),
    })
}

/// A renderer with the settings templates (the environment's overrides where it has them).
pub fn renderer(env: &Environment) -> Result<Renderer> {
    let mut r = Renderer::new();
    for (name, builtin) in [("localsettings.py", LOCALSETTINGS_TEMPLATE), ("application.properties", FORMPLAYER_TEMPLATE)] {
        let path = env.dir.join(format!("templates/{name}.hbs"));
        match std::fs::read_to_string(&path) {
            Ok(text) => r.add(name, &text).map_err(|e| e.context(path.display()))?,
            Err(_) => r.add(name, builtin)?,
        }
    }
    Ok(r)
}

/// Renders the settings files of `host`: `localsettings.py` where the host runs the web app
/// (webworkers, celery, pillowtop, proxy, django_manage), `application.properties` on formplayer hosts.
pub fn render_for_host(env: &Environment, host: &str, vault: Option<&Value>, release: Option<&str>) -> Result<Vec<SettingsFile>> {
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
    let r = renderer(env)?;
    let (mut ctx, unresolved) = context_and_unresolved(env, host, vault, app_release)?;
    let explain = |e: Error| explain_unresolved(e, &unresolved);
    let mut out = Vec::new();
    if in_any(env, host, APP_GROUPS) {
        out.push(SettingsFile {
            component: "commcare".into(),
            relative_path: "localsettings.py".into(),
            contents: r.render("localsettings.py", &ctx).map_err(explain)?,
            mode: 0o600,
        });
    }
    if in_any(env, host, FORMPLAYER_GROUPS) {
        if let J::Object(m) = &mut ctx {
            m.insert("release_name".into(), J::from(formplayer_release.unwrap_or("")));
        }
        out.push(SettingsFile {
            component: "formplayer".into(),
            relative_path: "application.properties".into(),
            contents: r.render("application.properties", &ctx).map_err(explain)?,
            mode: 0o600,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Environment {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/commcare-cloud/environments");
        Environment::load(&root, name).unwrap()
    }

    fn vault(env: &Environment) -> Value {
        match &env.vault {
            crate::environment::Vault::Plain(v) => v.clone(),
            _ => panic!("plain vault expected"),
        }
    }

    #[test]
    fn localsettings_render_with_references_resolved() {
        let env = fixture("development");
        let v = vault(&env);
        let files = render_for_host(&env, "192.168.33.15", Some(&v), Some("2026-11-26_16.00")).unwrap();
        let ls = &files.iter().find(|f| f.relative_path == "localsettings.py").unwrap().contents;
        assert!(ls.contains("DEPLOY_MACHINE_NAME = '192.168.33.15'"), "{ls}");
        assert!(ls.contains("EMAIL_SMTP_HOST = '192.168.33.17'"), "{ls}");
        assert!(ls.contains("REDIS_HOST = '192.168.33.15'"), "{ls}");
        assert!(ls.contains("SECRET_KEY = 'JHX1y7iG0bQaVICcBXrQYw1fcJcomC24p6lxAfKMG0B5g7D5'"), "{ls}");
        assert!(ls.contains("EMAIL_USE_TLS = 'no'") || ls.contains("EMAIL_USE_TLS = False"), "{ls}");
        // proxy.yml's SITE_HOST is an Ansible fact here (`hostvars[...].ansible_hostname`): the
        // formplayer template that uses it fails, naming it, rather than rendering it empty.
        let err = render_for_host(&env, "192.168.33.16", Some(&v), Some("r1")).unwrap_err();
        assert!(err.message().contains("application.properties:") && err.message().contains("`SITE_HOST`"), "{err}");
        // ... and says why `SITE_HOST` is missing: its own value does not resolve.
        assert!(err.message().contains("the environment sets `SITE_HOST`") && err.message().contains("public.yml value"), "{err}");
        assert!(err.hint().is_some_and(|h| h.contains("`SITE_HOST`")), "{err:?}");
    }

    #[test]
    fn a_public_yml_value_referring_to_nothing_is_named_with_what_it_refers_to() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("inventory.ini"), "[webworkers]\nweb1\n").unwrap();
        std::fs::write(dir.join("meta.yml"), "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n").unwrap();
        std::fs::write(dir.join("public.yml"), "BASE_DOMAIN: '{{ no_such_variable }}.example'\nlocalsettings:\n  HQ_INSTANCE: tt\n")
            .unwrap();
        std::fs::write(dir.join("proxy.yml"), "SITE_HOST: tt.example\n").unwrap();
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(dir.join("templates/localsettings.py.hbs"), "BASE = '{{BASE_DOMAIN}}'\n").unwrap();
        let env = Environment::load(tmp.path(), "t").unwrap();
        let err = render_for_host(&env, "web1", None, Some("r1")).unwrap_err();
        assert!(err.message().contains("`BASE_DOMAIN`") && err.message().contains("no_such_variable"), "{err}");
        // A template that does not use it renders.
        std::fs::write(dir.join("templates/localsettings.py.hbs"), "X = 1\n").unwrap();
        let env = Environment::load(tmp.path(), "t").unwrap();
        assert_eq!(render_for_host(&env, "web1", None, Some("r1")).unwrap()[0].contents, "X = 1\n");
    }

    #[test]
    fn a_missing_variable_names_template_line_and_variable() {
        let mut env = fixture("test");
        env.public.insert("localsettings".into(), yaml_serde::from_str("{A: '{{ nowhere_defined }}'}").unwrap());
        let err = render_for_host(&env, "cloud_worker_2", None, None).unwrap_err();
        assert!(err.message().contains("nowhere_defined"), "{err}");
    }

    #[test]
    fn secrets_are_collected_for_masking() {
        let env = fixture("development");
        let s = secret_values(Some(&vault(&env)));
        assert!(s.iter().any(|x| x == "p9RzGNx7wZr3BqLhNc7UtjQv"));
    }
}
