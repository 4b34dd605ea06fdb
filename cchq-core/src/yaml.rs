//! YAML reading with errors that name the file, line and column, and small helpers over
//! [`Value`]s as Ansible reads them.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::Value;
use crate::error::{Error, Result};

/// Parses `text` (the contents of `path`) into `T`; errors name `path:line:column`.
pub fn from_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let text = if text.trim().is_empty() { "null" } else { text };
    yaml_serde::from_str(text).map_err(|e| {
        let loc = e.location();
        let msg = e.to_string();
        // yaml_serde appends " at line X column Y"; the location goes in front instead.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        Error::at(path, loc.as_ref().map(yaml_serde::Location::line), loc.as_ref().map(yaml_serde::Location::column), msg)
    })
}

/// Converts an already-parsed value into `T`; errors name `path`.
pub fn from_value<T: DeserializeOwned>(value: Value, path: &Path) -> Result<T> {
    yaml_serde::from_value(value).map_err(|e| Error::at(path, None, None, e))
}

/// A scalar as text (`1` -> `"1"`, `true` -> `"true"`); `None` for null, sequences and mappings.
pub fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(t) => scalar_to_string(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// Ansible's truthiness for settings: `yes`/`true`/`on`/`1` (any case) and non-zero numbers.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true" | "on" | "1" | "y"),
        Value::Tagged(t) => truthy(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_and_column() {
        let err = from_str::<Value>("a: 1\nb: [x\n", Path::new("f.yml")).unwrap_err();
        assert!(err.message().starts_with("f.yml:"), "{err}");
    }

    #[test]
    fn truthiness_is_ansibles() {
        for (s, t) in [("yes", true), ("no", false), ("True", true), ("0", false), ("on", true)] {
            assert_eq!(truthy(&Value::String(s.into())), t, "{s}");
        }
        assert!(truthy(&Value::Bool(true)));
        assert!(!truthy(&Value::Null));
    }
}
