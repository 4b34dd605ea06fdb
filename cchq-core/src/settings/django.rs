//! The `django` profile's settings: a plain Django project (`django-admin startproject`) is
//! deployed with no edit to it. cchq writes two modules into each release beside `manage.py`:
//! `cchq_settings.py`, which imports the project's own settings module (named in `cchq.yml`
//! `django.settings_module`, else read from `manage.py`) and sets over it what the environment
//! says (`localsettings:` in public.yml and `localsettings_private:` in the vault, as for CommCare),
//! the hosts it serves, a `STATIC_ROOT` in the release and an SQLite database kept in the shared
//! directory (a release must not start from an empty database); and `cchq_wsgi.py`, the WSGI
//! application gunicorn runs with those settings.

use serde_json::Value as J;

use crate::templates::python_literal;

/// The settings module cchq writes into a release and runs the project with.
pub const SETTINGS_MODULE: &str = "cchq_settings";

/// The WSGI module cchq writes into a release (`cchq_wsgi:application`).
pub const WSGI_MODULE: &str = "cchq_wsgi";

fn s(ctx: &J, key: &str) -> Option<String> {
    match ctx.get(key)? {
        J::String(v) if !v.is_empty() => Some(v.clone()),
        J::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `cchq_settings.py` and `cchq_wsgi.py` for one host: `(relative path, contents)`.
///
/// `ctx` is the host's settings context (see [`crate::settings::context`]); `settings_module` the
/// project's settings module when `cchq.yml` names it; `shared` the environment's shared
/// directory on the host.
pub fn files(ctx: &J, settings_module: Option<&str>, shared: &str) -> Vec<(String, String)> {
    let host = s(ctx, "inventory_hostname").unwrap_or_default();
    let env = s(ctx, "deploy_env").unwrap_or_default();
    let mut hosts: Vec<String> = Vec::new();
    for h in [
        s(ctx, "SITE_HOST"),
        s(ctx, "host_address"),
        s(ctx, "ansible_host"),
        Some(host.clone()),
    ]
    .into_iter()
    .flatten()
    {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    for h in ["localhost", "127.0.0.1"] {
        if !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_owned());
        }
    }
    let hosts_py = python_literal(&J::Array(hosts.into_iter().map(J::from).collect()));
    let module = settings_module.map_or_else(|| "None".to_owned(), |m| python_literal(&J::from(m)));
    let mut out = format!(
        "# Django settings for {env} on {host}, written by cchq (profile `django`): the project's own\n\
         # settings, then what the environment sets. Do not edit by hand: run `cchq {env} update-config`.\n\
         import os as _os\n\
         import re as _re\n\
         from importlib import import_module as _import_module\n\
         from pathlib import Path as _Path\n\
         \n\
         _release = _Path(__file__).resolve().parent\n\
         _base = {module}\n\
         if not _base:\n\
         \x20   _found = _re.search(r\"DJANGO_SETTINGS_MODULE['\\\"]\\s*,\\s*['\\\"]([\\w.]+)['\\\"]\", (_release / 'manage.py').read_text())\n\
         \x20   if not _found:\n\
         \x20       raise ImportError('cchq: manage.py sets no DJANGO_SETTINGS_MODULE; name it in cchq.yml (django: settings_module:)')\n\
         \x20   _base = _found.group(1)\n\
         globals().update({{_k: _v for _k, _v in vars(_import_module(_base)).items() if _k.isupper()}})\n\
         \n\
         ALLOWED_HOSTS = [*globals().get('ALLOWED_HOSTS', []), *{hosts_py}]\n\
         if not globals().get('STATIC_ROOT'):\n\
         \x20   STATIC_ROOT = str(_release / 'staticfiles')\n\
         _shared = {shared}\n\
         for _db in globals().get('DATABASES', {{}}).values():\n\
         \x20   _name = str(_db.get('NAME', ''))\n\
         \x20   if _db.get('ENGINE', '').endswith('sqlite3') and _name.startswith(str(_release) + _os.sep):\n\
         \x20       _db['NAME'] = _os.path.join(_shared, _os.path.relpath(_name, _release))\n",
        shared = python_literal(&J::from(shared)),
    );
    if let Some(J::Object(ls)) = ctx.get("localsettings_merged") {
        if !ls.is_empty() {
            out.push_str("\n# From the environment (public.yml `localsettings`, the vault's `localsettings_private`).\n");
        }
        for (k, v) in ls {
            if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit())
            {
                out.push_str(&format!("{k} = {}\n", python_literal(v)));
            }
        }
    }
    let wsgi = format!(
        "# The WSGI application of {env}, written by cchq: the project run with {SETTINGS_MODULE}.\n\
         import os\n\
         \n\
         os.environ['DJANGO_SETTINGS_MODULE'] = '{SETTINGS_MODULE}'\n\
         \n\
         from django.core.wsgi import get_wsgi_application  # noqa: E402\n\
         \n\
         application = get_wsgi_application()\n"
    );
    vec![
        (format!("{SETTINGS_MODULE}.py"), out),
        (format!("{WSGI_MODULE}.py"), wsgi),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_imports_the_project_settings_and_sets_the_environments() {
        let ctx = serde_json::json!({
            "inventory_hostname": "web1", "deploy_env": "prod", "host_address": "10.0.0.5", "SITE_HOST": "www.example.org",
            "localsettings_merged": {"DEBUG": false, "SECRET_KEY": "s3cr3t", "bad-key": 1},
        });
        let f = files(&ctx, None, "/home/cchq/www/prod/shared");
        assert_eq!(f[0].0, "cchq_settings.py");
        let py = &f[0].1;
        assert!(
            py.contains("'www.example.org', '10.0.0.5', 'web1', 'localhost', '127.0.0.1'"),
            "{py}"
        );
        assert!(
            py.contains("DEBUG = False\n") && py.contains("SECRET_KEY = 's3cr3t'\n"),
            "{py}"
        );
        assert!(!py.contains("bad-key"), "{py}");
        assert!(py.contains("_base = None\n"), "{py}");
        let f = files(&ctx, Some("mysite.settings"), "/s");
        assert!(f[0].1.contains("_base = 'mysite.settings'\n"));
        assert!(
            f[1].1
                .contains("DJANGO_SETTINGS_MODULE'] = 'cchq_settings'")
        );
    }
}
