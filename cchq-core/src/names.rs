//! Names from the environment that become part of generated files, checked when the environment
//! loads: a `localsettings` key becomes `KEY = value` in `localsettings.py`, a pillow, celery queue
//! or management command name becomes `[program:...]` in a supervisor file, `deploy_env` becomes
//! part of paths and program names. A newline in any of them would add lines of their own (a
//! `[program:...]` section, arbitrary Python), so a name that is not one is refused, never escaped.

use std::path::Path;

use crate::Value;
use crate::app_processes::AppProcesses;
use crate::error::{Error, Result};
use crate::yaml;

/// Python's keywords: not usable as a setting name (`None = 1` is a syntax error).
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Whether `name` is a Python identifier usable as a setting: `^[A-Za-z_][A-Za-z0-9_]*$`, not a
/// keyword.
pub fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !PYTHON_KEYWORDS.contains(&name)
}

/// Whether `name` is usable as a process name (pillow, celery queue, management command,
/// `deploy_env`): `[A-Za-z0-9_.-]+`, and not `.` or `..`.
pub fn is_process_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A key as shown in a message: on one line, quotes and control characters escaped.
fn shown(key: &str) -> String {
    key.escape_debug().to_string()
}

/// Checks the keys of the mapping `section` (`localsettings`, `localsettings_private`) of `top`,
/// the contents of `path`: each must be a Python identifier.
///
/// # Errors
/// A [`crate::ErrorKind::Config`] error naming the file, the section and the key.
pub fn check_localsettings(top: &Value, section: &str, path: &Path) -> Result<()> {
    let Some(Value::Mapping(m)) = top.get(section) else {
        return Ok(());
    };
    for k in m.keys() {
        let key = yaml::scalar_to_string(k).unwrap_or_else(|| format!("{k:?}"));
        if !matches!(k, Value::String(_)) || !is_python_identifier(&key) {
            return Err(Error::at(path, None, None, format!("`{section}` key `{}` is not a Python identifier", shown(&key))).with_hint(
                "each key becomes a `NAME = value` line of localsettings.py: use letters, digits and `_` (not first), and no Python keyword",
            ));
        }
    }
    Ok(())
}

/// Checks the names in `app-processes.yml` (at `path`) that become supervisor program names: host
/// keys, management command names, celery queue names (each of a comma-separated key) and pillow
/// names.
///
/// # Errors
/// A [`crate::ErrorKind::Config`] error naming the file, the section and the name.
pub fn check_app_processes(ap: &AppProcesses, path: &Path) -> Result<()> {
    let hint = "names become supervisor program names and file names: use letters, digits, `_`, `.` and `-`";
    let bad = |section: &str, what: &str, name: &str| {
        Error::at(
            path,
            None,
            None,
            format!("`{section}`: {what} `{}` is not a valid name", shown(name)),
        )
        .with_hint(hint)
    };
    let host_ok = |h: &str| {
        !h.is_empty()
            && !h.starts_with('-')
            && !h.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    for (host, cmds) in &ap.management_commands {
        if !host_ok(host) {
            return Err(bad("management_commands", "host", host));
        }
        if let Some(name) = cmds
            .iter()
            .flat_map(|m| m.keys())
            .find(|n| !is_process_name(n))
        {
            return Err(bad("management_commands", "command", name));
        }
    }
    for (host, queues) in &ap.celery_processes {
        if !host_ok(host) {
            return Err(bad("celery_processes", "host", host));
        }
        for key in queues.iter().flat_map(|m| m.keys()) {
            if let Some(q) = key.split(',').find(|q| !is_process_name(q)) {
                return Err(bad("celery_processes", "queue", q));
            }
        }
    }
    for (host, pillows) in &ap.pillows {
        if !host_ok(host) {
            return Err(bad("pillows", "host", host));
        }
        if let Some(name) = pillows
            .iter()
            .flat_map(|m| m.keys())
            .find(|n| !is_process_name(n))
        {
            return Err(bad("pillows", "pillow", name));
        }
    }
    Ok(())
}

/// Checks `deploy_env` (from `meta.yml` at `path`), which is part of paths and program names.
///
/// # Errors
/// A [`crate::ErrorKind::Config`] error naming the file and the value.
pub fn check_deploy_env(deploy_env: &str, path: &Path) -> Result<()> {
    if is_process_name(deploy_env) {
        return Ok(());
    }
    Err(Error::at(
        path,
        None,
        None,
        format!("`deploy_env` `{}` is not a valid name", shown(deploy_env)),
    )
    .with_hint(
        "it is part of paths and supervisor program names: use letters, digits, `_`, `.` and `-`",
    ))
}

/// Checks the user the app runs as (`sudo_user` in `fab-settings.yml`, or `app_user` in
/// `cchq.yml`): part of supervisor files (`user=`, `HOME=`), paths and `sudo -iu` commands.
///
/// # Errors
/// A [`crate::ErrorKind::Config`] error naming the files and the value.
pub fn check_app_user(user: &str, dir: &Path) -> Result<()> {
    if is_process_name(user) && !user.starts_with('-') {
        return Ok(());
    }
    Err(Error::config(format!(
        "the app user `{}` (`sudo_user` in {}, or `app_user` in {}) is not a valid user name",
        shown(user),
        dir.join("fab-settings.yml").display(),
        dir.join("cchq.yml").display()
    ))
    .with_hint("use letters, digits, `_`, `.` and `-` (not first)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_process_names() {
        for ok in ["A", "_x", "SECRET_KEY", "a1", "match", "_"] {
            assert!(is_python_identifier(ok), "{ok}");
        }
        for bad in [
            "", "1A", "A-B", "A B", "A\nB", "é", "None", "class", "A.B", "A=1",
        ] {
            assert!(!is_python_identifier(bad), "{bad}");
        }
        for ok in [
            "kafka-ucr-main",
            "AppDbChangeFeedPillow",
            "celery_periodic",
            "a.b",
            "q1",
        ] {
            assert!(is_process_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a\n[program:x]",
            "a/b",
            "a;b",
            "é",
            "a,b",
        ] {
            assert!(!is_process_name(bad), "{bad}");
        }
        assert!(check_app_user("cchq", Path::new("e")).is_ok());
        for bad in ["-x", "a\nb", "a b", ""] {
            let e = check_app_user(bad, Path::new("e")).unwrap_err();
            assert!(
                e.message().contains("e/fab-settings.yml") && e.message().contains("e/cchq.yml"),
                "{e}"
            );
        }
    }
}
