//! A deploy's steps as data: each profile declares the steps that build a release (after cchq's
//! own checkout and settings) and the ones that run after the restart, in
//! `profiles/<profile>/steps.yml`; an environment's `cchq.yml` adds, replaces, removes and
//! reorders them under `steps:`. The deploy renders each step's command (a Jinja template over
//! the deploy's variables) on the controller and runs it behind its done-marker, so that a
//! resume runs each step once. See `docs/deploy-steps.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Value, yaml};

/// The built-in profiles with their own steps.
pub const PROFILES: &[&str] = &["commcare", "django"];

const COMMCARE_STEPS: &str = include_str!("../../profiles/commcare/steps.yml");
const DJANGO_STEPS: &str = include_str!("../../profiles/django/steps.yml");

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "pattern")]
pub enum Where {
    /// On every host the release is built on.
    Build,
    /// Once, on the first `django_manage` host the release is built on.
    Once,
    /// On the build hosts matching an inventory pattern (`webworkers:proxy`, `proxy[0]`); a step
    /// whose pattern matches none of them does not run.
    Hosts(String),
}

impl Where {
    fn parse(s: &str) -> Self {
        match s.trim() {
            "build" | "all" => Self::Build,
            "once" | "django_manage[0]" => Self::Once,
            other => Self::Hosts(other.to_owned()),
        }
    }
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build => f.write_str("every build host"),
            Self::Once => f.write_str("once (django_manage)"),
            Self::Hosts(p) => write!(f, "{p}"),
        }
    }
}

/// What a failing step does to the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The deploy stops (resumable).
    #[default]
    Abort,
    /// A warning; the deploy goes on (and the step is marked done).
    Warn,
}

/// What a step waits for before it starts on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// The steps before it, on every host (as Ansible's linear strategy runs tasks): what a
    /// step that needs another host's work (a manifest another host saved) must have.
    #[default]
    All,
    /// The steps before it on its own host only: it runs in the same command as the steps
    /// before it (one round trip, no waiting for the slowest host between them).
    Host,
}

/// A step's name: letters, digits and `_`/`-` (it names the step's done-marker file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StepName(String);

impl StepName {
    /// A checked name.
    ///
    /// # Errors
    /// A name that is empty, too long, or holds anything but ASCII letters, digits, `_` and `-`.
    pub fn new(name: &str) -> std::result::Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && name.as_bytes()[0].is_ascii_alphabetic();
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not a step name (a letter, then letters, digits, `_` or `-`)"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The step's done-marker in the release (`.migrate-done`), as commcare-cloud names them.
    pub fn marker(&self) -> String {
        format!(".{}-done", self.0)
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Its name (and marker).
    pub name: StepName,
    /// What it does, for `deploy --plan`.
    pub description: String,
    /// The command: a Jinja template rendering a shell command run as the app user in the
    /// release's directory (empty after rendering: the step is skipped).
    pub run: String,
    /// Where it runs.
    pub on: Where,
    /// What it waits for (every host's previous steps, or its own host's).
    pub wait: Wait,
    /// A shell condition checked on the host first: false, and the step is skipped (and marked).
    pub when: Option<String>,
    /// Runs after the restart (`record_deploy_success`) instead of before the switch.
    pub after_switch: bool,
    /// Leaves a done-marker, so that a resume does not run it again (default true).
    pub marker: bool,
    /// Killed after this many seconds (default: no limit).
    pub timeout_secs: Option<u64>,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// Added to the deploy's error when this step fails.
    pub hint: Option<String>,
    /// Outputs taken from the previous release instead of running, when the inputs are the same.
    pub reuse: Option<Reuse>,
}

/// A step's outputs reused from the release `current` pointed to when the deploy started (the
/// previous one), instead of running the step, when its inputs are the same there: the key is a
/// SHA-256 over the inputs, kept in the release as `.<step>-key` once the step succeeded. The
/// outputs are copied as hard links (`cp -al`: instant, and nothing in either release is
/// changed in place afterwards: a rollback finds its files as they were).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reuse {
    /// Paths in the release whose contents make the key (a missing one counts as missing);
    /// `.` is the whole checkout (its commit's tree).
    pub inputs: Vec<String>,
    /// Paths in the release the step makes; all must exist in the previous release. None: the
    /// step is skipped when its inputs did not change (a check whose answer they decide).
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// A step as written in a `steps.yml` or under `steps:` in `cchq.yml`; every key but `name`
/// optional (a replacement keeps what it does not give).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    name: String,
    description: Option<String>,
    run: Option<String>,
    on: Option<String>,
    wait: Option<Wait>,
    when: Option<String>,
    after_switch: Option<bool>,
    marker: Option<bool>,
    timeout_secs: Option<u64>,
    on_failure: Option<OnFailure>,
    hint: Option<String>,
    reuse: Option<Reuse>,
    /// Only in `add`: the step it goes before.
    before: Option<String>,
    /// Only in `add`: the step it goes after.
    after: Option<String>,
}

impl StepSpec {
    pub(crate) fn into_step(self, path: &Path) -> Result<Step> {
        let name = StepName::new(&self.name).map_err(|m| Error::at(path, None, None, m))?;
        let run = self.run.ok_or_else(|| {
            Error::at(path, None, None, format!("step `{name}` has no `run`"))
                .with_hint("give the command the step runs")
        })?;
        let step = Step {
            name,
            description: self.description.unwrap_or_default(),
            run,
            on: self.on.as_deref().map_or(Where::Build, Where::parse),
            wait: self.wait.unwrap_or_default(),
            when: self.when,
            after_switch: self.after_switch.unwrap_or(false),
            marker: self.marker.unwrap_or(true),
            timeout_secs: self.timeout_secs,
            on_failure: self.on_failure.unwrap_or_default(),
            hint: self.hint,
            reuse: self.reuse,
        };
        check_reuse(&step, path)?;
        check_wait(&step, path)?;
        check_template(&step, path)?;
        Ok(step)
    }

    /// `self` over `base`: what it gives replaces, the rest is kept.
    fn patch(self, base: &Step, path: &Path) -> Result<Step> {
        let step = Step {
            name: base.name.clone(),
            description: self.description.unwrap_or_else(|| base.description.clone()),
            run: self.run.unwrap_or_else(|| base.run.clone()),
            on: self
                .on
                .as_deref()
                .map_or_else(|| base.on.clone(), Where::parse),
            wait: self.wait.unwrap_or(base.wait),
            when: self.when.or_else(|| base.when.clone()),
            after_switch: self.after_switch.unwrap_or(base.after_switch),
            marker: self.marker.unwrap_or(base.marker),
            timeout_secs: self.timeout_secs.or(base.timeout_secs),
            on_failure: self.on_failure.unwrap_or(base.on_failure),
            hint: self.hint.or_else(|| base.hint.clone()),
            reuse: self.reuse.or_else(|| base.reuse.clone()),
        };
        check_reuse(&step, path)?;
        check_wait(&step, path)?;
        check_template(&step, path)?;
        Ok(step)
    }
}

/// `wait: host` is for steps before the switch: an `after_switch` step runs after the restart,
/// which waits for every host.
fn check_wait(step: &Step, path: &Path) -> Result<()> {
    if step.wait == Wait::Host && step.after_switch {
        return Err(Error::at(
            path,
            None,
            None,
            format!(
                "step `{}`: `wait: host` is for steps that run before the switch",
                step.name
            ),
        )
        .with_hint("remove `wait: host`: an `after_switch` step always waits for every host"));
    }
    Ok(())
}

/// `reuse:` names paths inside the release: relative, without `..`, with outputs to copy.
fn check_reuse(step: &Step, path: &Path) -> Result<()> {
    let Some(r) = &step.reuse else { return Ok(()) };
    let bad = |p: &String| {
        p.is_empty()
            || p.starts_with('/')
            || p.split('/').any(|c| c == "..")
            || p.contains(['\n', '\0'])
    };
    if r.inputs.is_empty() {
        return Err(Error::at(
            path,
            None,
            None,
            format!("step `{}`: `reuse` needs `inputs`", step.name),
        )
        .with_hint("e.g. `reuse: {inputs: [\".\", cchq_settings.py], outputs: [staticfiles]}`"));
    }
    if let Some(p) = r.inputs.iter().chain(&r.outputs).find(|p| bad(p)) {
        return Err(Error::at(
            path,
            None,
            None,
            format!(
                "step `{}`: `reuse` path `{p}` is not a path inside the release",
                step.name
            ),
        )
        .with_hint("give paths relative to the release, without `..`"));
    }
    if r.outputs.iter().any(|p| p == ".") {
        return Err(Error::at(
            path,
            None,
            None,
            format!("step `{}`: `.` cannot be an output of `reuse`", step.name),
        ));
    }
    Ok(())
}

/// A template that cannot be parsed is refused when the environment loads, not mid-deploy.
fn check_template(step: &Step, path: &Path) -> Result<()> {
    let env = minijinja::Environment::new();
    if let Err(e) = env.template_from_str(&step.run) {
        return Err(Error::at(
            path,
            None,
            None,
            format!(
                "step `{}`: its `run` is not a valid template: {e}",
                step.name
            ),
        )
        .with_source(e));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsFile {
    steps: Vec<StepSpec>,
}

/// `steps:` in `cchq.yml`: changes to the profile's steps, applied in this order: remove,
/// replace, add, order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Steps left out.
    #[serde(default)]
    remove: Vec<String>,
    /// Steps changed (only the keys given; `name` says which).
    #[serde(default)]
    replace: Vec<StepSpec>,
    /// New steps, at the end or `before:`/`after:` a named one.
    #[serde(default)]
    add: Vec<StepSpec>,
    /// Every step's name, in the order they run.
    #[serde(default)]
    order: Option<Vec<String>>,
}

/// The built-in steps of `profile`.
///
/// # Errors
/// An unknown profile.
pub fn builtin(profile: &str) -> Result<Vec<Step>> {
    let (text, file) = match profile {
        "commcare" => (COMMCARE_STEPS, "profiles/commcare/steps.yml"),
        "django" => (DJANGO_STEPS, "profiles/django/steps.yml"),
        other => {
            return Err(Error::usage(format!("unknown profile `{other}`"))
                .with_hint(format!("the profiles are {}", PROFILES.join(", "))));
        }
    };
    let path = Path::new(file);
    let f: StepsFile = yaml::from_str(text, path)?;
    let steps = f
        .steps
        .into_iter()
        .map(|s| s.into_step(path))
        .collect::<Result<Vec<_>>>()?;
    check_unique(&steps, path)?;
    Ok(steps)
}

fn check_unique(steps: &[Step], path: &Path) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for s in steps {
        if !seen.insert(s.name.as_str()) {
            return Err(Error::at(
                path,
                None,
                None,
                format!("two steps are named `{}`", s.name),
            ));
        }
    }
    Ok(())
}

fn unknown(path: &Path, what: &str, name: &str, steps: &[Step]) -> Error {
    Error::at(
        path,
        None,
        None,
        format!("`steps.{what}` names `{name}`, which is not a step"),
    )
    .with_hint(format!(
        "the steps are: {}",
        steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// `base` with the changes of `cchq.yml`'s `steps:` (`value`), checked: every name given must
/// be a step (a typo never silently leaves a step in or out).
///
/// # Errors
/// A malformed section, a name that is not a step, an added step that already exists, an
/// `order` that does not name every step once.
pub fn apply(mut steps: Vec<Step>, value: Value, path: &Path) -> Result<Vec<Step>> {
    let o: Overrides = yaml::from_value(value, path)?;
    for name in &o.remove {
        let Some(i) = steps.iter().position(|s| s.name.as_str() == name) else {
            return Err(unknown(path, "remove", name, &steps));
        };
        steps.remove(i);
    }
    for spec in o.replace {
        let Some(i) = steps.iter().position(|s| s.name.as_str() == spec.name) else {
            return Err(unknown(path, "replace", &spec.name, &steps));
        };
        if spec.before.is_some() || spec.after.is_some() {
            return Err(Error::at(
                path,
                None,
                None,
                format!("`steps.replace`: `{}` cannot move (use `order`)", spec.name),
            ));
        }
        steps[i] = spec.patch(&steps[i], path)?;
    }
    for mut spec in o.add {
        if steps.iter().any(|s| s.name.as_str() == spec.name) {
            return Err(Error::at(
                path,
                None,
                None,
                format!("`steps.add`: a step named `{}` exists", spec.name),
            )
            .with_hint("change it under `steps.replace`, or give the new step another name"));
        }
        let (before, after) = (spec.before.take(), spec.after.take());
        let at = match (before, after) {
            (Some(_), Some(_)) => {
                return Err(Error::at(
                    path,
                    None,
                    None,
                    format!("`steps.add`: `{}` has both `before` and `after`", spec.name),
                ));
            }
            (Some(b), None) => steps
                .iter()
                .position(|s| s.name.as_str() == b)
                .ok_or_else(|| unknown(path, "add[].before", &b, &steps))?,
            (None, Some(a)) => {
                steps
                    .iter()
                    .position(|s| s.name.as_str() == a)
                    .ok_or_else(|| unknown(path, "add[].after", &a, &steps))?
                    + 1
            }
            (None, None) => steps.len(),
        };
        let step = spec.into_step(path)?;
        steps.insert(at, step);
    }
    if let Some(order) = o.order {
        let mut out = Vec::with_capacity(steps.len());
        for name in &order {
            let Some(i) = steps.iter().position(|s| s.name.as_str() == name) else {
                if out.iter().any(|s: &Step| s.name.as_str() == name) {
                    return Err(Error::at(
                        path,
                        None,
                        None,
                        format!("`steps.order` names `{name}` twice"),
                    ));
                }
                return Err(unknown(path, "order", name, &steps));
            };
            out.push(steps.remove(i));
        }
        if !steps.is_empty() {
            return Err(Error::at(
                path,
                None,
                None,
                format!(
                    "`steps.order` leaves out {}",
                    steps
                        .iter()
                        .map(|s| format!("`{}`", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_hint("name every step once (remove a step under `steps.remove`)"));
        }
        steps = out;
    }
    check_unique(&steps, path)?;
    Ok(steps)
}
