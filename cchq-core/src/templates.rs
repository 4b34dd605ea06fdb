//! Rendering settings and supervisor files with handlebars, strictly: a variable that is missing
//! is an error naming the template, the line and the variable, never an empty string.

use handlebars::{Handlebars, RenderErrorReason, no_escape};
use serde::Serialize;

use crate::error::{Error, Result};

/// A strict handlebars renderer; templates are registered by name (usually their path).
pub struct Renderer {
    hb: Handlebars<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field(
                "templates",
                &self.hb.get_templates().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// An empty renderer in strict mode, without HTML escaping.
    pub fn new() -> Self {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(no_escape);
        // `settings` caches references whose template names only variables the host does not
        // change; that holds as long as no helper here reads the context other than through its
        // parameters (`py` reads its one parameter).
        hb.register_helper("py", Box::new(py_helper));
        hb.register_helper("py_name", Box::new(py_name_helper));
        hb.register_helper("props", Box::new(props_helper));
        hb.register_helper("one_line", Box::new(one_line_helper));
        Self { hb }
    }

    /// Registers `text` as template `name`; a syntax error names the template and line.
    pub fn add(&mut self, name: &str, text: &str) -> Result<()> {
        self.hb.register_template_string(name, text).map_err(|e| {
            let pos = e
                .pos()
                .map_or_else(String::new, |(l, c)| format!(":{l}:{c}"));
            Error::config(format!(
                "{name}{pos}: template syntax error: {}",
                e.reason()
            ))
            .with_source(e)
        })
    }

    /// Whether template `name` is registered.
    pub fn has(&self, name: &str) -> bool {
        self.hb.has_template(name)
    }

    /// Renders template `name` with `data`.
    pub fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<String> {
        self.hb
            .render(name, data)
            .map_err(|e| render_error(name, &e))
    }

    /// [`Renderer::render`] with the data already converted for handlebars: the data is used in
    /// place, not copied, so a large context shared by many renders costs nothing per render.
    pub(crate) fn render_in(&self, name: &str, ctx: &handlebars::Context) -> Result<String> {
        self.hb
            .render_with_context(name, ctx)
            .map_err(|e| render_error(name, &e))
    }

    /// Renders a one-off template string (registered under `name` for error messages).
    pub fn render_str<T: Serialize>(&self, name: &str, text: &str, data: &T) -> Result<String> {
        let ctx = handlebars::Context::wraps(data).map_err(|e| render_error(name, &e))?;
        self.render_str_in(name, text, &ctx)
    }

    /// [`Renderer::render_str`] with the data already converted for handlebars, for callers that
    /// render many strings against the same (large) data.
    pub(crate) fn render_str_in(
        &self,
        name: &str,
        text: &str,
        ctx: &handlebars::Context,
    ) -> Result<String> {
        let mut hb = self.hb.clone();
        hb.register_template_string(name, text).map_err(|e| {
            let pos = e
                .pos()
                .map_or_else(String::new, |(l, c)| format!(":{l}:{c}"));
            Error::config(format!(
                "{name}{pos}: template syntax error: {}",
                e.reason()
            ))
            .with_source(e)
        })?;
        hb.render_with_context(name, ctx)
            .map_err(|e| render_error(name, &e))
    }
}

/// A helper's first parameter: an error when it is not given or names nothing.
fn first_param<'a>(
    h: &'a handlebars::Helper<'_>,
    helper: &'static str,
) -> Result<&'a serde_json::Value, handlebars::RenderError> {
    let Some(param) = h.param(0) else {
        return Err(RenderErrorReason::ParamNotFoundForIndex(helper, 0).into());
    };
    if param.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
    }
    Ok(param.value())
}

/// A value as text: a string as it is, anything else as JSON.
fn as_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{{py value}}`: the value as a Python literal (`'text'`, `True`, `None`, `[1, 2]`, `{'a': 1}`).
fn py_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = first_param(h, "py")?;
    out.write(&python_literal(value))?;
    Ok(())
}

/// `{{py_name @key}}`: the name as it is when it is a Python identifier, else an error (a name is
/// never escaped: `A\nimport os` would be two lines of Python).
fn py_name_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = first_param(h, "py_name")?;
    match value {
        serde_json::Value::String(s) if crate::names::is_python_identifier(s) => {
            out.write(s)?;
            Ok(())
        }
        other => {
            let shown = other
                .as_str()
                .map_or_else(|| other.to_string(), |s| s.escape_debug().to_string());
            Err(RenderErrorReason::Other(format!(
                "`{shown}` is not a Python identifier, so it cannot be a setting name"
            ))
            .into())
        }
    }
}

/// `{{props value}}`: the value escaped for a Java `.properties` file ([`properties_value`]).
fn props_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = first_param(h, "props")?;
    let text = as_text(value);
    out.write(&properties_value(&text))?;
    Ok(())
}

/// `{{one_line value}}`: the value as it is when it holds no line break or other control
/// character, else an error: for files where a value cannot be escaped (a supervisor program
/// file's `command=`, where a newline would start a new line, even a `[program:...]` section).
fn one_line_helper(
    h: &handlebars::Helper<'_>,
    _: &Handlebars<'_>,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext<'_, '_>,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let value = first_param(h, "one_line")?;
    let text = as_text(value);
    if text.chars().any(char::is_control) {
        return Err(RenderErrorReason::Other(format!(
            "`{}` holds a line break or another control character, which this file cannot hold",
            text.escape_debug()
        ))
        .into());
    }
    out.write(&text)?;
    Ok(())
}

/// `text` as the value of a Java `.properties` entry: backslash, line breaks, tab and form feed
/// escaped, a leading space escaped (it would be dropped), and everything outside printable ASCII
/// as `\uXXXX` (UTF-16), as `Properties.store` writes, so the file reads back the same in any
/// encoding and no value can add a line (a property) of its own.
pub fn properties_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0c}' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

/// A JSON value as a Python literal (a `str` literal with every quote, backslash and control
/// character escaped, so that a value can never end its literal or its line).
pub fn python_literal(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::Null => "None".into(),
        J::Bool(true) => "True".into(),
        J::Bool(false) => "False".into(),
        J::Number(n) => n.to_string(),
        J::String(s) => {
            let mut o = String::from("'");
            for c in s.chars() {
                match c {
                    '\\' => o.push_str("\\\\"),
                    '\'' => o.push_str("\\'"),
                    '\n' => o.push_str("\\n"),
                    '\r' => o.push_str("\\r"),
                    '\t' => o.push_str("\\t"),
                    c if (c as u32) < 0x20 => o.push_str(&format!("\\x{:02x}", c as u32)),
                    c => o.push(c),
                }
            }
            o.push('\'');
            o
        }
        J::Array(a) => format!(
            "[{}]",
            a.iter().map(python_literal).collect::<Vec<_>>().join(", ")
        ),
        J::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_literal(&J::String(k.clone())),
                    python_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn render_error(name: &str, e: &handlebars::RenderError) -> Error {
    let template = e.template_name.clone().unwrap_or_else(|| name.to_owned());
    let loc = match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => format!("{template}:{l}:{c}"),
        (Some(l), None) => format!("{template}:{l}"),
        _ => template,
    };
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(var)) => Error::config(format!("{loc}: variable `{var}` is not defined"))
            .with_hint("define it in public.yml, the inventory, the vault or cchq.yml, or fix its name in the template"),
        RenderErrorReason::MissingVariable(None) => Error::config(format!("{loc}: a variable is not defined")),
        other => Error::config(format!("{loc}: {other}")),
    }
}

/// `value` as Python's `repr` writes it (`True`, `None`, `['a', 1]`, `{'k': 'v'}`), as Jinja
/// prints a value in Ansible.
pub(crate) fn python_repr(value: &minijinja::Value) -> String {
    match serde_json::to_value(value) {
        Ok(j) => python_literal(&j),
        Err(_) => value.to_string(),
    }
}

/// The text Ansible prints for a value in a template: a string as it is, nothing for `None`
/// (Ansible's `finalize`), anything else as Python's `str()` writes it (`True`, `2`, `['a']`).
pub fn ansible_text(v: &minijinja::Value) -> String {
    if v.is_none() || v.is_undefined() {
        return String::new();
    }
    match v.as_str() {
        Some(s) => s.to_owned(),
        None => python_repr(v),
    }
}

/// Whether `s` is Python source of one literal value cchq writes as is where commcare-cloud
/// pastes a value into `localsettings.py`: a number, `True`/`False`/`None`, or one quoted string
/// without a backslash (`'key'`, `"key"`).
fn is_python_literal(s: &str) -> bool {
    let t = s.trim();
    if matches!(t, "True" | "False" | "None") {
        return true;
    }
    let number = t.strip_prefix('-').unwrap_or(t);
    if !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        && number.starts_with(|c: char| c.is_ascii_digit())
        && number.matches('.').count() <= 1
    {
        return true;
    }
    for q in ['\'', '"'] {
        if let Some(inner) = t.strip_prefix(q).and_then(|x| x.strip_suffix(q))
            && t.len() >= 2
            && !inner.contains(q)
            && !inner.contains('\\')
            && !inner.contains(['\n', '\r'])
        {
            return true;
        }
    }
    false
}

/// The filters of cchq's settings templates (see `profiles/commcare/templates/*.j2`).
pub(crate) mod settings_filters {
    use super::{ansible_text, is_python_literal, properties_value, python_literal};
    use minijinja::{Error, ErrorKind, Value};

    fn json(v: &Value) -> Result<serde_json::Value, Error> {
        if v.is_undefined() {
            return Err(Error::from(ErrorKind::UndefinedError));
        }
        serde_json::to_value(v).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("the value cannot be written: {e}"),
            )
        })
    }

    /// A Python literal of the value (strings escaped).
    pub fn py(v: &Value) -> Result<String, Error> {
        Ok(python_literal(&json(v)?))
    }

    /// A Python string of the text Ansible prints for the value ([`ansible_text`]).
    pub fn py_str(v: &Value) -> Result<String, Error> {
        if v.is_undefined() {
            return Err(Error::from(ErrorKind::UndefinedError));
        }
        Ok(python_literal(&serde_json::Value::String(ansible_text(v))))
    }

    /// A value commcare-cloud pastes into the file as Python source: a string that is a Python
    /// literal as it is, any other string quoted, other values as Python literals.
    pub fn py_source(v: &Value) -> Result<String, Error> {
        match v.as_str() {
            Some(s) if is_python_literal(s) => Ok(s.trim().to_owned()),
            _ => py(v),
        }
    }

    /// The text Ansible prints for the value.
    pub fn text(v: &Value) -> Result<String, Error> {
        if v.is_undefined() {
            return Err(Error::from(ErrorKind::UndefinedError));
        }
        Ok(ansible_text(v))
    }

    /// A `.properties` value of the text Ansible prints for the value.
    pub fn props(v: &Value) -> Result<String, Error> {
        Ok(properties_value(&text(v)?))
    }

    /// A `.properties` key: as a value, with `=`, `:`, `#`, `!` and spaces escaped too.
    pub fn props_key(v: &Value) -> Result<String, Error> {
        let mut out = String::new();
        for c in properties_value(&text(v)?).chars() {
            if matches!(c, '=' | ':' | '#' | '!' | ' ') {
                out.push('\\');
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Adds these filters to `env`.
    pub fn add(env: &mut minijinja::Environment<'static>) {
        env.add_filter("py", py);
        env.add_filter("py_str", py_str);
        env.add_filter("py_source", py_source);
        env.add_filter("ansible_text", text);
        env.add_filter("props", props);
        env.add_filter("props_key", props_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_values_cannot_add_a_line() {
        assert_eq!(properties_value("a.example:8000"), "a.example:8000");
        assert_eq!(properties_value("x\nevil=1"), "x\\nevil=1");
        assert_eq!(properties_value("back\\slash\r\t"), "back\\\\slash\\r\\t");
        assert_eq!(properties_value(" lead"), "\\ lead");
        assert_eq!(properties_value("é😀"), "\\u00e9\\ud83d\\ude00");
        assert!(!properties_value("a\nb\rc\u{2028}d").contains(['\n', '\r']));
    }

    #[test]
    fn one_line_refuses_line_breaks() {
        let mut r = Renderer::new();
        r.add("t", "command={{one_line c}}\n").unwrap();
        assert_eq!(
            r.render("t", &serde_json::json!({"c": "run --x 1"}))
                .unwrap(),
            "command=run --x 1\n"
        );
        let err = r
            .render("t", &serde_json::json!({"c": "run\n[program:evil]"}))
            .unwrap_err();
        assert!(err.message().contains("line break"), "{err}");
    }

    #[test]
    fn missing_variables_name_template_line_and_variable() {
        let r = Renderer::new();
        let err = r
            .render_str(
                "localsettings.py.hbs",
                "A = 1\nB = '{{ nope }}'\n",
                &serde_json::json!({"a": 1}),
            )
            .unwrap_err();
        assert!(err.message().contains("localsettings.py.hbs:2"), "{err}");
        assert!(err.message().contains("`nope`"), "{err}");
    }

    /// Issue 12: every string value is a Python literal that cannot end early.
    #[test]
    fn python_literals_escape_quotes_backslashes_newlines() {
        let lit = |s: &str| python_literal(&serde_json::json!(s));
        assert_eq!(lit("it's"), r"'it\'s'");
        assert_eq!(lit(r"a\b"), r"'a\\b'");
        assert_eq!(lit("a\nimport os\r\t"), r"'a\nimport os\r\t'");
        assert_eq!(lit("\u{0}\u{1b}\u{7f}"), "'\\x00\\x1b\u{7f}'");
        assert_eq!(lit("é ü 中 \u{2028}"), "'é ü 中 \u{2028}'");
        assert_eq!(lit("\"'''"), r#"'"\'\'\''"#);
        assert_eq!(
            python_literal(&serde_json::json!({"k'": ["a\n", 1, null, true]})),
            r"{'k\'': ['a\n', 1, None, True]}"
        );
    }

    proptest::proptest! {
        /// Whatever the string, its literal reads back as that string (Python's `ast.literal_eval`,
        /// as the inventory implements it) and holds no line break.
        #[test]
        fn python_literals_round_trip(s in proptest::prelude::any::<String>()) {
            let lit = python_literal(&serde_json::json!(s));
            proptest::prop_assert!(!lit.contains(['\n', '\r']));
            proptest::prop_assert_eq!(crate::inventory::literal_eval(&lit), Some(crate::Value::String(s)));
        }
    }

    /// Issue 12: a setting name that is not an identifier is an error, not Python code.
    #[test]
    fn py_name_refuses_what_is_not_an_identifier() {
        let r = Renderer::new();
        let t = "{{#each m}}{{py_name @key}} = {{py this}}\n{{/each}}";
        assert_eq!(
            r.render_str("t", t, &serde_json::json!({"m": {"A_1": "x"}}))
                .unwrap(),
            "A_1 = 'x'\n"
        );
        for bad in ["A\nimport os", "A = 1; B", "1A", "None", ""] {
            let e = r
                .render_str("t", t, &serde_json::json!({"m": {bad: "x"}}))
                .unwrap_err();
            assert!(
                e.message().contains("is not a Python identifier"),
                "{bad}: {e}"
            );
            assert!(!e.message().contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn values_are_not_html_escaped() {
        let r = Renderer::new();
        let out = r
            .render_str("t", "{{ v }}", &serde_json::json!({"v": "a<b>&'\""}))
            .unwrap();
        assert_eq!(out, "a<b>&'\"");
    }
}
