//! Jinja in the values of the environment files (`public.yml`, the vault, `postgresql.yml`,
//! `proxy.yml`, inventory variables), evaluated as Ansible evaluates them for commcare-cloud:
//! with a real Jinja engine (`minijinja`) and the Ansible filters commcare-cloud environments use.
//!
//! - **Lazy, with cycle detection.** A variable's value is rendered when something reads it (a
//!   template, another value), once per [`Scope`]; `a: "{{ b }}"`, `b: "{{ a }}"` is an error naming
//!   the cycle and the files that set it.
//! - **Strict.** A variable that is not defined is an error naming it (and the variables through
//!   which it was reached), except where the expression handles it (`| default(..)`, `is defined`).
//! - **Text outside the tags is never touched.** Only a string holding `{{`, `{%` or `{#` is a
//!   template; everything else is kept byte for byte, and so is the text around the tags.
//! - **Native types.** A value that is exactly one expression (`"{{ some_list }}"`) keeps the type
//!   of what it evaluates to (list, dict, number, bool, none), as Ansible does; any other template
//!   renders to a string, values printed as Python prints them (`True`, `None`, `['a', 'b']`).
//!
//! Every read of a variable is recorded ([`Resolved::reads`]), so that [`crate::settings`] can
//! tell which values hold for every host and which must be rendered again for a host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use minijinja::value::{Kwargs, Object, ObjectRepr, Rest, Value as V, ValueKind, ValueOrKwargs};
use minijinja::{ErrorKind as JinjaErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value as J};

use crate::error::{Error, Result};
use crate::templates::python_repr;

/// How deep variables may refer to variables (`a` -> `b` -> ... ) before resolution stops.
const MAX_DEPTH: usize = 64;

/// Whether `s` is a Jinja template (holds `{{`, `{%` or `{#`), as Ansible decides what to template.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Whether `v` holds a template at any depth.
pub fn has_templates(v: &J) -> bool {
    match v {
        J::String(s) => is_template(s),
        J::Array(a) => a.iter().any(has_templates),
        J::Object(o) => o.values().any(has_templates),
        _ => false,
    }
}

/// Variables, and the file that set each (for messages).
#[derive(Debug, Default, Clone)]
pub struct Layer {
    vars: Map<String, J>,
    origin: HashMap<String, String>,
}

impl Layer {
    /// Sets `key` to `value`, set in `origin` (a file name, `the inventory`, ...).
    pub fn insert(&mut self, key: impl Into<String>, value: J, origin: &str) {
        let key = key.into();
        self.origin.insert(key.clone(), origin.to_owned());
        self.vars.insert(key, value);
    }

    /// Sets `key` unless it is set already.
    pub fn insert_if_absent(&mut self, key: &str, value: J, origin: &str) {
        if !self.vars.contains_key(key) {
            self.insert(key, value, origin);
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.vars.remove(key);
        self.origin.remove(key);
    }

    /// The value of `key`, as set (templates not rendered).
    pub fn get(&self, key: &str) -> Option<&J> {
        self.vars.get(key)
    }

    /// Every variable, as set.
    pub fn vars(&self) -> &Map<String, J> {
        &self.vars
    }

    /// Where `key` was set.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origin.get(key).map(String::as_str)
    }
}

/// Variables shared by many [`Scope`]s (an environment's, for every host), with the values that
/// hold no template converted for Jinja once.
#[derive(Debug)]
pub struct Base {
    layer: Layer,
    /// Each host's own variables, for `hostvars[host]` (empty: no `hostvars`).
    hosts: HashMap<String, Layer>,
    converted: Mutex<HashMap<String, V>>,
}

impl Base {
    /// Shares `layer`.
    pub fn new(layer: Layer) -> Arc<Self> {
        Self::with_hosts(layer, HashMap::new())
    }

    /// Shares `layer`, with `hostvars`: `hostvars[h].x` is `x` as host `h` sees it (`hosts[h]`
    /// over `layer`).
    pub fn with_hosts(layer: Layer, hosts: HashMap<String, Layer>) -> Arc<Self> {
        Arc::new(Self {
            layer,
            hosts,
            converted: Mutex::new(HashMap::new()),
        })
    }

    /// The variables, as set.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }
}

/// Why a value did not resolve.
#[derive(Debug, Clone)]
enum Why {
    /// This variable is not defined.
    Undefined(String),
    /// These variables refer to each other (the first again at the end).
    Cycle(Vec<String>),
    /// Too many variables refer to each other in a row.
    TooDeep,
    /// The template failed otherwise (syntax, filter, operation): what the engine says.
    Other(String),
}

/// A value that did not resolve: why, and through which variables (from the one read first to
/// the one whose value failed).
#[derive(Debug, Clone)]
struct Failure {
    via: Vec<String>,
    why: Why,
}

/// One variable being resolved.
#[derive(Debug, Default)]
struct Frame {
    /// The variable (`None`: a value that is not a variable, such as a localsettings entry).
    name: Option<String>,
    /// The variables read so far.
    reads: BTreeSet<String>,
    /// The first read of a variable that failed other than by being undefined: fails this one.
    failure: Option<Failure>,
    /// The reads that were undefined (which may be handled, `| default(..)`).
    missing: Vec<Failure>,
}

#[derive(Debug, Default)]
struct Progress {
    memo: HashMap<String, (std::result::Result<V, Failure>, BTreeSet<String>)>,
    frames: Vec<Frame>,
}

/// Variables resolved on demand: a [`Base`] (shared) under a layer of its own (a host's), each
/// variable rendered once, when first read.
#[derive(Debug)]
pub struct Scope {
    base: Arc<Base>,
    top: Layer,
    progress: Mutex<Progress>,
    /// How many `hostvars[..]` lookups led to this scope (bounded: hosts may refer to each other).
    depth: usize,
    /// The scopes of the hosts `hostvars[..]` read.
    hosts: Mutex<HashMap<String, Arc<Scope>>>,
}

/// How deep `hostvars[a]` ... `hostvars[b]` may nest.
const MAX_HOST_DEPTH: usize = 8;

/// `hostvars`: each host's variables, evaluated in that host's scope.
#[derive(Debug)]
struct HostVars(std::sync::Weak<Scope>);

impl Object for HostVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &V) -> Option<V> {
        let host = key.as_str()?;
        let parent = self.0.upgrade()?;
        let top = parent.base.hosts.get(host)?;
        if parent.depth >= MAX_HOST_DEPTH {
            return None;
        }
        let mut hosts = parent.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        let scope = hosts.entry(host.to_owned()).or_insert_with(|| {
            let mut s = Scope::raw_new(parent.base.clone(), top.clone());
            s.depth = parent.depth + 1;
            Arc::new(s)
        });
        Some(V::from_object(Ctx(scope.clone())))
    }
}

/// A value with its templates rendered, and every variable its rendering read.
#[derive(Debug)]
pub struct Resolved {
    /// The value, or why it does not resolve.
    pub result: Result<J>,
    /// The variables read (at any depth: those read by the variables it read too), including the
    /// ones that were not defined.
    pub reads: BTreeSet<String>,
}

/// The context of a template: variable lookups go to the scope.
#[derive(Debug)]
struct Ctx(Arc<Scope>);

impl Object for Ctx {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &V) -> Option<V> {
        let name = key.as_str()?;
        match self.0.fetch(name) {
            Ok(v) => Some(v),
            Err(f) => {
                let mut p = self.0.progress();
                if let Some(frame) = p.frames.last_mut() {
                    match f.why {
                        Why::Undefined(_) => frame.missing.push(f),
                        _ => {
                            frame.failure.get_or_insert(f);
                        }
                    }
                }
                None
            }
        }
    }
}

impl Scope {
    /// `top` over `base`.
    pub fn new(base: Arc<Base>, top: Layer) -> Arc<Self> {
        Arc::new(Self::raw_new(base, top))
    }

    fn raw_new(base: Arc<Base>, top: Layer) -> Self {
        Self {
            base,
            top,
            progress: Mutex::new(Progress::default()),
            depth: 0,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// A scope of `layer` alone.
    pub fn of(layer: Layer) -> Arc<Self> {
        Self::new(Base::new(layer), Layer::default())
    }

    /// The shared variables under this scope's own.
    pub fn base(&self) -> &Arc<Base> {
        &self.base
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn raw(&self, name: &str) -> Option<&J> {
        self.top.get(name).or_else(|| self.base.layer.get(name))
    }

    /// Where variable `name` was set.
    pub fn origin(&self, name: &str) -> &str {
        self.top
            .origin(name)
            .or_else(|| self.base.layer.origin(name))
            .unwrap_or("the environment")
    }

    /// Variable `key`, its templates rendered.
    pub fn resolve(self: &Arc<Self>, key: &str) -> Resolved {
        self.run(
            None,
            |s| s.fetch(key),
            |f| self.error(key, self.origin(key), f),
        )
    }

    /// `value`, set as `label` in `origin`, its templates rendered (for values that are not
    /// variables themselves, such as the entries of `localsettings`).
    pub fn resolve_value(self: &Arc<Self>, label: &str, origin: &str, value: &J) -> Resolved {
        self.run(None, |s| s.eval(value), |f| self.error(label, origin, f))
    }

    fn run(
        self: &Arc<Self>,
        name: Option<String>,
        f: impl FnOnce(&Arc<Self>) -> std::result::Result<V, Failure>,
        error: impl FnOnce(Failure) -> Error,
    ) -> Resolved {
        self.progress().frames.push(Frame {
            name,
            ..Frame::default()
        });
        let result = f(self);
        let frame = self.progress().frames.pop().unwrap_or_default();
        let result = match (frame.failure, result) {
            (Some(f), _) | (None, Err(f)) => Err(f),
            (None, Ok(v)) => to_json(&v),
        };
        Resolved {
            result: result.map_err(error),
            reads: frame.reads,
        }
    }

    /// Variable `name`'s value (rendered once, then remembered), noting the read.
    fn fetch(self: &Arc<Self>, name: &str) -> std::result::Result<V, Failure> {
        {
            let mut p = self.progress();
            let Progress { memo, frames } = &mut *p;
            if let Some(frame) = frames.last_mut() {
                frame.reads.insert(name.to_owned());
                if let Some((_, reads)) = memo.get(name) {
                    frame.reads.extend(reads.iter().cloned());
                }
            }
            if let Some((r, _)) = memo.get(name) {
                return r.clone();
            }
            if let Some(i) = frames.iter().position(|f| f.name.as_deref() == Some(name)) {
                let mut cycle: Vec<String> =
                    frames[i..].iter().filter_map(|f| f.name.clone()).collect();
                cycle.push(name.to_owned());
                return Err(Failure {
                    via: Vec::new(),
                    why: Why::Cycle(cycle),
                });
            }
            if frames.len() > MAX_DEPTH {
                return Err(Failure {
                    via: Vec::new(),
                    why: Why::TooDeep,
                });
            }
        }
        let Some(raw) = self.raw(name) else {
            if name == "hostvars" && !self.base.hosts.is_empty() {
                return Ok(V::from_object(HostVars(Arc::downgrade(self))));
            }
            return Err(Failure {
                via: Vec::new(),
                why: Why::Undefined(name.to_owned()),
            });
        };
        if !has_templates(raw) {
            if self.top.get(name).is_none() {
                let mut cache = self
                    .base
                    .converted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                return Ok(cache
                    .entry(name.to_owned())
                    .or_insert_with(|| V::from(minijinja::value::Serde(raw)))
                    .clone());
            }
            return Ok(V::from(minijinja::value::Serde(raw)));
        }
        self.progress().frames.push(Frame {
            name: Some(name.to_owned()),
            ..Frame::default()
        });
        let result = self.eval(raw);
        let frame = self.progress().frames.pop().unwrap_or_default();
        let result = match (frame.failure, result) {
            (Some(f), _) | (None, Err(f)) => Err(f),
            (None, Ok(v)) => Ok(v),
        }
        .map_err(|mut f| {
            f.via.insert(0, name.to_owned());
            f
        });
        let mut p = self.progress();
        if let Some(parent) = p.frames.last_mut() {
            parent.reads.extend(frame.reads.iter().cloned());
        }
        p.memo
            .insert(name.to_owned(), (result.clone(), frame.reads));
        result
    }

    /// `raw` with every template in it rendered (in the current frame).
    fn eval(self: &Arc<Self>, raw: &J) -> std::result::Result<V, Failure> {
        Ok(match raw {
            J::String(s) if is_template(s) => return self.render(s),
            J::Array(a) => a
                .iter()
                .map(|x| self.eval(x))
                .collect::<std::result::Result<Vec<V>, _>>()?
                .into(),
            J::Object(o) => {
                let mut m = BTreeMap::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.eval(x)?);
                }
                V::from(m)
            }
            other => V::from(minijinja::value::Serde(other)),
        })
    }

    /// Renders template `s`: a value of one expression keeps its type, any other renders to text.
    fn render(self: &Arc<Self>, s: &str) -> std::result::Result<V, Failure> {
        let ctx = V::from_object(Ctx(self.clone()));
        if let Some(inner) = s.strip_prefix("{{").and_then(|x| x.strip_suffix("}}"))
            && let Ok(expr) = JINJA.compile_expression(inner)
        {
            return match expr.eval(ctx) {
                Ok(v) if v.is_undefined() => Err(self.undefined(inner.trim(), None)),
                Ok(v) => Ok(v),
                Err(e) => Err(self.failure(&e, inner)),
            };
        }
        match JINJA.render_str(s, ctx) {
            Ok(text) => Ok(V::from(text)),
            Err(e) => Err(self.failure(&e, s)),
        }
    }

    /// An engine error of template `source` as a failure.
    fn failure(&self, e: &minijinja::Error, source: &str) -> Failure {
        let snippet = e
            .range()
            .and_then(|r| source.get(r))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if e.kind() == JinjaErrorKind::UndefinedError {
            return self.undefined(snippet.unwrap_or(source.trim()), snippet);
        }
        let mut what = e.kind().to_string();
        if let Some(d) = e.detail() {
            let _ = write!(what, ": {d}");
        }
        let _ = write!(what, " in `{}`", snippet.unwrap_or(source));
        Failure {
            via: Vec::new(),
            why: Why::Other(what),
        }
    }

    /// The failure of an undefined value in `snippet`: the undefined variable read last that
    /// `snippet` names, else the last one read, else the snippet itself.
    fn undefined(&self, text: &str, snippet: Option<&str>) -> Failure {
        let p = self.progress();
        let missing = p
            .frames
            .last()
            .map(|f| f.missing.as_slice())
            .unwrap_or_default();
        let names = identifiers(snippet.unwrap_or(text));
        let head = |f: &Failure| match (&f.via.first(), &f.why) {
            (Some(v), _) => v.to_string(),
            (None, Why::Undefined(n)) => n.clone(),
            _ => String::new(),
        };
        let found = missing
            .iter()
            .rev()
            .find(|f| names.contains(&head(f)))
            .or_else(|| missing.last());
        match found {
            Some(f) => f.clone(),
            None => Failure {
                via: Vec::new(),
                why: Why::Other(format!("`{text}` is undefined")),
            },
        }
    }

    /// The error of `failure` for `key` (set in `origin`).
    fn error(&self, key: &str, origin: &str, failure: Failure) -> Error {
        let chain = |names: &[String]| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" -> ")
        };
        // `via` starts with `key` itself when `key` is a variable.
        let via: Vec<String> = failure
            .via
            .iter()
            .skip_while(|v| v.as_str() == key)
            .cloned()
            .collect();
        match failure.why {
            Why::Undefined(name) => {
                let through = if via.is_empty() {
                    String::new()
                } else {
                    let last = via.last().map_or("", String::as_str);
                    format!(" (through {} -> `{name}`; `{last}` is set in {})", chain(&via), self.origin(last))
                };
                Error::config(format!("{origin}: `{key}`: variable `{name}` is not defined{through}")).with_hint(format!(
                    "define `{name}` (in public.yml, the vault, the inventory), fix its name, or give a default: \
                     `{{{{ {name} | default(..) }}}}`; Ansible facts (`ansible_*`) are not known to cchq"
                ))
            }
            Why::Cycle(mut cycle) => {
                // Shown from its smallest name, whichever variable was read first.
                cycle.pop();
                if let Some(first) = cycle.iter().enumerate().min_by_key(|(_, n)| n.as_str()).map(|(i, _)| i) {
                    cycle.rotate_left(first);
                }
                cycle.extend(cycle.first().cloned());
                let shown: Vec<String> = cycle.iter().map(|n| format!("`{n}` ({})", self.origin(n))).collect();
                Error::config(format!("{origin}: `{key}`: variables refer to each other in a cycle: {}", shown.join(" -> ")))
                    .with_hint("give one of these variables a value that does not refer back to the others")
            }
            Why::TooDeep => Error::config(format!(
                "{origin}: `{key}`: more than {MAX_DEPTH} variables refer to one another in a row (through {})",
                chain(&via)
            ))
            .with_hint("give one of these variables a plain value"),
            Why::Other(what) => {
                let place = match via.last() {
                    Some(last) => format!(" (in `{last}`, set in {}, through {})", self.origin(last), chain(&via)),
                    None => String::new(),
                };
                Error::config(format!("{origin}: `{key}`: {what}{place}"))
                    .with_hint("fix the Jinja expression (cchq evaluates it as Ansible does, with Ansible's common filters)")
            }
        }
    }
}

/// The identifiers in `text` (names a Jinja expression may read).
fn identifiers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cur = String::new();
    for c in text.chars().chain([' ']) {
        if c == '_' || c.is_ascii_alphanumeric() {
            cur.push(c);
        } else if !cur.is_empty() {
            if !cur.starts_with(|c: char| c.is_ascii_digit()) {
                out.insert(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
    out
}

/// A Jinja value as JSON.
fn to_json(v: &V) -> std::result::Result<J, Failure> {
    serde_json::to_value(v).map_err(|e| Failure {
        via: Vec::new(),
        why: Why::Other(format!("the value cannot be kept: {e}")),
    })
}

/// Renders one template string against `vars` (no layers, no files): for tests and one-off uses.
///
/// # Errors
/// As [`Scope::resolve_value`].
pub fn render_str(template: &str, vars: &J) -> Result<J> {
    let mut layer = Layer::default();
    if let J::Object(m) = vars {
        for (k, v) in m {
            layer.insert(k.clone(), v.clone(), "the variables");
        }
    }
    Scope::of(layer)
        .resolve_value("value", "the template", &J::String(template.to_owned()))
        .result
}

/// The engine: strict undefined, no escaping, text kept as written (a trailing newline too),
/// values printed as Python prints them, Ansible's filters and Python's common methods.
static JINJA: LazyLock<minijinja::Environment<'static>> = LazyLock::new(engine);

/// A new engine configured as the one that evaluates environment values ([`Scope`]): strict
/// undefined, no escaping, text kept as written, values printed as Python prints them, Ansible's
/// filters and Python's common methods. The settings templates start from it.
pub(crate) fn engine() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_formatter(|out, state, value| {
        if value.is_undefined() || value.kind() == ValueKind::String {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = python_repr(value);
        out.write_str(&text)
            .map_err(|e| minijinja::Error::new(JinjaErrorKind::WriteFailure, e.to_string()))
    });
    env.set_unknown_method_callback(filters::python_method);
    env.add_filter("d", minijinja::filters::default);
    env.add_filter("bool", filters::bool);
    env.add_filter("to_json", filters::to_json);
    env.add_filter("to_nice_json", filters::to_nice_json);
    env.add_filter("flatten", filters::flatten);
    env.add_filter("combine", filters::combine);
    env.add_filter("regex_replace", filters::regex_replace);
    env.add_filter("regex_search", filters::regex_search);
    env.add_filter("mandatory", filters::mandatory);
    env.add_filter("ternary", filters::ternary);
    env.add_filter("quote", |v: String| crate::command::quote(&v));
    env.add_filter("extract", filters::extract);
    env.add_filter("dict2items", filters::dict2items);
    env
}

/// Ansible's filters (and Python's methods) that minijinja lacks.
mod filters {
    use super::*;

    type R<T> = std::result::Result<T, minijinja::Error>;

    fn invalid(what: impl Into<String>) -> minijinja::Error {
        minijinja::Error::new(JinjaErrorKind::InvalidOperation, what.into())
    }

    /// `args` split into the positional ones and the keyword ones.
    fn split(args: Rest<ValueOrKwargs>) -> R<(Vec<V>, Kwargs)> {
        let args = args.into_values();
        let (pos, kwargs): (&[V], Kwargs) = minijinja::value::from_args(&args)?;
        Ok((pos.to_vec(), kwargs))
    }

    /// Ansible's `bool`: `yes`/`on`/`1`/`true` (any case) and 1 are true; anything else false.
    pub fn bool(value: &V) -> bool {
        match value.kind() {
            ValueKind::Bool => value.is_true(),
            ValueKind::String => matches!(
                value.as_str().map(str::to_lowercase).as_deref(),
                Some("yes" | "on" | "1" | "true")
            ),
            ValueKind::Number => {
                value.as_i64() == Some(1) || f64::try_from(value.clone()).is_ok_and(|f| f == 1.0)
            }
            _ => false,
        }
    }

    /// Ansible's `to_json`: Python's `json.dumps` (`", "` and `": "` between items, non-ASCII escaped).
    pub fn to_json(value: &V, kwargs: Kwargs) -> R<String> {
        let indent: Option<usize> = kwargs.get("indent")?;
        kwargs.assert_all_used()?;
        python_json(value, indent)
    }

    /// Ansible's `to_nice_json`: indented by 4, keys sorted.
    pub fn to_nice_json(value: &V, kwargs: Kwargs) -> R<String> {
        let indent: Option<usize> = kwargs.get("indent")?;
        kwargs.assert_all_used()?;
        python_json(value, Some(indent.unwrap_or(4)))
    }

    fn python_json(value: &V, indent: Option<usize>) -> R<String> {
        fn write(j: &J, indent: Option<usize>, depth: usize, out: &mut String) {
            let (open_sep, item_sep, close_sep) = match indent {
                Some(n) => (
                    format!("\n{}", " ".repeat(n * (depth + 1))),
                    format!(",\n{}", " ".repeat(n * (depth + 1))),
                    format!("\n{}", " ".repeat(n * depth)),
                ),
                None => (String::new(), ", ".to_owned(), String::new()),
            };
            match j {
                J::Array(a) if !a.is_empty() => {
                    out.push('[');
                    out.push_str(&open_sep);
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push_str(&item_sep);
                        }
                        write(x, indent, depth + 1, out);
                    }
                    out.push_str(&close_sep);
                    out.push(']');
                }
                J::Object(o) if !o.is_empty() => {
                    out.push('{');
                    out.push_str(&open_sep);
                    for (i, (k, x)) in o.iter().enumerate() {
                        if i > 0 {
                            out.push_str(&item_sep);
                        }
                        write(&J::String(k.clone()), indent, depth + 1, out);
                        out.push_str(": ");
                        write(x, indent, depth + 1, out);
                    }
                    out.push_str(&close_sep);
                    out.push('}');
                }
                J::String(s) => {
                    out.push('"');
                    for c in s.chars() {
                        match c {
                            '"' => out.push_str("\\\""),
                            '\\' => out.push_str("\\\\"),
                            '\n' => out.push_str("\\n"),
                            '\r' => out.push_str("\\r"),
                            '\t' => out.push_str("\\t"),
                            '\u{8}' => out.push_str("\\b"),
                            '\u{c}' => out.push_str("\\f"),
                            c if c.is_ascii() && (c as u32) >= 0x20 => out.push(c),
                            c => {
                                let mut buf = [0u16; 2];
                                for unit in c.encode_utf16(&mut buf) {
                                    let _ = write!(out, "\\u{unit:04x}");
                                }
                            }
                        }
                    }
                    out.push('"');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let j = serde_json::to_value(value)
            .map_err(|e| invalid(format!("cannot be written as JSON: {e}")))?;
        let mut out = String::new();
        write(&j, indent, 0, &mut out);
        Ok(out)
    }

    /// Ansible's `flatten(levels=None)`: nested lists made one (`None` items dropped).
    pub fn flatten(value: &V, args: Rest<ValueOrKwargs>) -> R<V> {
        let (pos, kwargs) = split(args)?;
        let levels: Option<usize> = match pos.first() {
            Some(v) if !v.is_none() => Some(
                v.as_usize()
                    .ok_or_else(|| invalid("flatten: `levels` must be a number"))?,
            ),
            Some(_) => None,
            None => kwargs.get("levels")?,
        };
        let skip_nulls: Option<bool> = kwargs.get("skip_nulls")?;
        kwargs.assert_all_used()?;
        fn walk(v: &V, levels: Option<usize>, skip_nulls: bool, out: &mut Vec<V>) -> R<()> {
            for x in v.try_iter()? {
                if x.kind() == ValueKind::Seq && levels != Some(0) {
                    walk(&x, levels.map(|l| l - 1), skip_nulls, out)?;
                } else if !(skip_nulls && x.is_none()) {
                    out.push(x);
                }
            }
            Ok(())
        }
        if value.kind() != ValueKind::Seq {
            return Err(invalid("flatten expects a list"));
        }
        let mut out = Vec::new();
        walk(value, levels, skip_nulls.unwrap_or(true), &mut out)?;
        Ok(V::from(out))
    }

    fn map_of(v: &V) -> R<BTreeMap<String, V>> {
        if v.kind() != ValueKind::Map {
            return Err(invalid(format!(
                "combine expects dictionaries, not {}",
                v.kind()
            )));
        }
        let mut m = BTreeMap::new();
        for k in v.try_iter()? {
            let item = v.get_item(&k)?;
            m.insert(
                k.as_str().map_or_else(|| k.to_string(), str::to_owned),
                item,
            );
        }
        Ok(m)
    }

    /// Ansible's `combine(*dicts, recursive=False, list_merge='replace')`: later keys win.
    pub fn combine(base: &V, args: Rest<ValueOrKwargs>) -> R<V> {
        let (pos, kwargs) = split(args)?;
        let recursive: Option<bool> = kwargs.get("recursive")?;
        let list_merge: Option<String> = kwargs.get("list_merge")?;
        kwargs.assert_all_used()?;
        if list_merge.as_deref().is_some_and(|m| m != "replace") {
            return Err(invalid("combine: only list_merge='replace' is supported"));
        }
        fn merge(a: &V, b: &V, recursive: bool) -> R<V> {
            let mut m = map_of(a)?;
            for (k, v) in map_of(b)? {
                let merged = match m.get(&k) {
                    Some(old)
                        if recursive
                            && old.kind() == ValueKind::Map
                            && v.kind() == ValueKind::Map =>
                    {
                        merge(old, &v, true)?
                    }
                    _ => v,
                };
                m.insert(k, merged);
            }
            Ok(V::from(m))
        }
        let mut out = V::from(map_of(base)?);
        for other in pos.iter().flat_map(|p| {
            if p.kind() == ValueKind::Seq {
                p.try_iter().map(Iterator::collect).unwrap_or_default()
            } else {
                vec![p.clone()]
            }
        }) {
            out = merge(&out, &other, recursive.unwrap_or(false))?;
        }
        Ok(out)
    }

    /// A Python regular expression's replacement (`\1`, `\g<1>`, `\g<name>`) for the regex crate.
    fn replacement(python: &str) -> String {
        let mut out = String::new();
        let mut chars = python.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '$' => out.push_str("$$"),
                '\\' => match chars.peek().copied() {
                    Some(d) if d.is_ascii_digit() => {
                        let mut n = String::new();
                        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                            n.push(d);
                            chars.next();
                        }
                        let _ = write!(out, "${{{n}}}");
                    }
                    Some('g') => {
                        chars.next();
                        if chars.peek() == Some(&'<') {
                            chars.next();
                            let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                            let _ = write!(out, "${{{name}}}");
                        } else {
                            out.push_str("\\g");
                        }
                    }
                    Some('n') => {
                        chars.next();
                        out.push('\n');
                    }
                    Some('t') => {
                        chars.next();
                        out.push('\t');
                    }
                    Some('\\') => {
                        chars.next();
                        out.push('\\');
                    }
                    _ => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        out
    }

    fn regex(pattern: &str, kwargs: &Kwargs) -> R<regex::Regex> {
        let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
        let multiline: Option<bool> = kwargs.get("multiline")?;
        regex::RegexBuilder::new(pattern)
            .case_insensitive(ignorecase.unwrap_or(false))
            .multi_line(multiline.unwrap_or(false))
            .build()
            .map_err(|e| invalid(format!("bad regular expression `{pattern}`: {e}")))
    }

    /// Ansible's `regex_replace(pattern, replacement, ignorecase=False, multiline=False)`.
    pub fn regex_replace(value: &str, args: Rest<ValueOrKwargs>) -> R<String> {
        let (pos, kwargs) = split(args)?;
        let arg = |i: usize| {
            pos.get(i)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default()
        };
        let re = regex(&arg(0), &kwargs)?;
        let count: Option<usize> = kwargs.get("count")?;
        kwargs.assert_all_used()?;
        Ok(re
            .replacen(value, count.unwrap_or(0), replacement(&arg(1)).as_str())
            .into_owned())
    }

    /// Ansible's `regex_search(pattern)`: the first match, or none.
    pub fn regex_search(value: &str, pattern: &str, kwargs: Kwargs) -> R<V> {
        let re = regex(pattern, &kwargs)?;
        kwargs.assert_all_used()?;
        Ok(re
            .find(value)
            .map_or_else(|| V::from(()), |m| V::from(m.as_str())))
    }

    /// Ansible's `mandatory`: an undefined value is an error (naming it), else the value.
    pub fn mandatory(value: &V, msg: Option<String>) -> R<V> {
        if value.is_undefined() {
            return Err(minijinja::Error::new(
                JinjaErrorKind::UndefinedError,
                msg.unwrap_or_else(|| "a mandatory variable is not defined".to_owned()),
            ));
        }
        Ok(value.clone())
    }

    /// Ansible's `extract(container, morekeys=None)`: `container[item]` (then `[key]`), undefined
    /// when missing (so that `| default(..)` can follow).
    pub fn extract(item: &V, container: &V, key: Option<V>) -> V {
        let found = container.get_item(item).unwrap_or_default();
        match key {
            Some(k) if !found.is_undefined() => found.get_item(&k).unwrap_or_default(),
            _ => found,
        }
    }

    /// Ansible's `dict2items`: `[{key, value}, ...]` of a mapping.
    pub fn dict2items(value: &V) -> R<V> {
        if value.kind() != ValueKind::Map {
            return Err(invalid("dict2items takes a mapping"));
        }
        let items = value
            .try_iter()?
            .map(|k| {
                let v = value.get_item(&k)?;
                Ok(V::from_iter([
                    ("key".to_owned(), k),
                    ("value".to_owned(), v),
                ]))
            })
            .collect::<R<Vec<V>>>()?;
        Ok(V::from(items))
    }

    /// Ansible's `ternary(true_value, false_value, none_value=None)`.
    pub fn ternary(value: &V, yes: V, no: V, none: Option<V>) -> V {
        match none {
            Some(n) if value.is_none() => n,
            _ if value.is_true() => yes,
            _ => no,
        }
    }

    /// Python's methods that Ansible templates call: `dict.get/keys/values/items`,
    /// `str.startswith/endswith/split/strip/lower/upper/replace`, `list.index/count`.
    pub fn python_method(_: &mut State<'_, '_>, value: &V, method: &str, args: &[V]) -> R<V> {
        let arg = |i: usize| args.get(i).cloned();
        let text = |i: usize| -> R<String> {
            arg(i)
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or_else(|| invalid(format!("{method}() takes a string")))
        };
        match (value.kind(), method) {
            (ValueKind::Map, "get") => {
                let key = arg(0).ok_or_else(|| invalid("get() takes a key"))?;
                Ok(value
                    .get_item(&key)
                    .ok()
                    .filter(|v| !v.is_undefined())
                    .unwrap_or_else(|| arg(1).unwrap_or(V::from(()))))
            }
            (ValueKind::Map, "keys") => Ok(V::from(value.try_iter()?.collect::<Vec<_>>())),
            (ValueKind::Map, "values") => Ok(V::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k))
                    .collect::<R<Vec<_>>>()?,
            )),
            (ValueKind::Map, "items") => Ok(V::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k).map(|v| V::from(vec![k, v])))
                    .collect::<R<Vec<_>>>()?,
            )),
            (ValueKind::String, _) => {
                let s = value.as_str().unwrap_or_default();
                Ok(match method {
                    "startswith" => V::from(s.starts_with(&text(0)?)),
                    "endswith" => V::from(s.ends_with(&text(0)?)),
                    "lower" => V::from(s.to_lowercase()),
                    "upper" => V::from(s.to_uppercase()),
                    "strip" => V::from(s.trim()),
                    "replace" => V::from(s.replace(&text(0)?, &text(1)?)),
                    "split" => match arg(0).filter(|v| !v.is_none()) {
                        Some(_) => {
                            V::from(s.split(text(0)?.as_str()).map(V::from).collect::<Vec<_>>())
                        }
                        None => V::from(s.split_whitespace().map(V::from).collect::<Vec<_>>()),
                    },
                    _ => return Err(minijinja::Error::from(JinjaErrorKind::UnknownMethod)),
                })
            }
            (ValueKind::Seq, "index") => {
                let x = arg(0).unwrap_or_default();
                value
                    .try_iter()?
                    .position(|v| v == x)
                    .map(V::from)
                    .ok_or_else(|| invalid(format!("{x} is not in the list")))
            }
            (ValueKind::Seq, "count") => {
                let x = arg(0).unwrap_or_default();
                Ok(V::from(value.try_iter()?.filter(|v| *v == x).count()))
            }
            _ => Err(minijinja::Error::from(JinjaErrorKind::UnknownMethod)),
        }
    }
}

#[cfg(test)]
mod tests;
