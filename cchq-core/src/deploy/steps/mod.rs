//! Running a profile's steps: each step's command rendered over the deploy's variables, the
//! scripts that run them behind their done-markers, and the markers read back from their output.
//! The steps themselves are data, read with the profile ([`crate::profile::steps`], re-exported
//! here). See `docs/deploy-steps.md`.

use serde_json::{Value as J, json};

use crate::error::Result;
pub use crate::profile::steps::*;

/// The variables a step's command is rendered with.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// Everything, as JSON.
    pub map: serde_json::Map<String, J>,
}

impl Vars {
    /// The deploy's variables: the release, commits, paths, options.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        env: &crate::environment::Environment,
        layout: &super::layout::Layout,
        release: &str,
        commit: &str,
        previous_commit: Option<&str>,
        opts: &super::Options,
    ) -> Self {
        let rel = layout.release(release);
        let python = "python_env/bin/python".to_owned();
        // The app's `manage.py` (CommCare HQ's, or a Django project's with cchq's settings).
        let manage = super::Component::Commcare.deployable(env).manage(&python);
        let v = json!({
            "deploy_env": env.meta.deploy_env,
            "env": env.name,
            "release": release,
            "release_dir": rel,
            "code_current": layout.current,
            "shared_dir": layout.shared,
            "www_home": layout.home,
            "commit": commit,
            "previous_commit": previous_commit.unwrap_or(""),
            "by": opts.by,
            "python": python,
            "manage": manage,
            "skip_record": opts.skip_record,
            "private": opts.private,
            "ignore_kafka_checkpoint_warning": opts.ignore_kafka_checkpoint_warning
                .or(env.fab_settings.ignore_kafka_checkpoint_warning)
                .unwrap_or(false),
            "keep_days": opts.keep_days,
            "cchq_virtualenv": virtualenv_script(env, layout),
        });
        Self {
            map: v.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// Renders a step's command.
///
/// # Errors
/// A template error, naming the step.
pub fn render(step: &Step, vars: &Vars) -> Result<String> {
    render_text(step, &step.run, vars)
}

/// `step` with its command and condition rendered.
///
/// # Errors
/// As [`render`].
pub fn rendered(step: &Step, vars: &Vars) -> Result<Step> {
    let mut s = step.clone();
    s.run = render(step, vars)?;
    s.when = match &step.when {
        Some(w) => Some(render_text(step, w, vars)?).filter(|w| !w.is_empty()),
        None => None,
    };
    Ok(s)
}

fn render_text(step: &Step, text: &str, vars: &Vars) -> Result<String> {
    let out = crate::jinja::render_str(text, &J::Object(vars.map.clone())).map_err(|e| {
        e.wrap(crate::error::ErrorKind::Config, |m| {
            format!("step `{}`: {m}", step.name)
        })
    })?;
    Ok(match out {
        J::String(s) => s.trim().to_owned(),
        J::Null => String::new(),
        other => other.to_string(),
    })
}

/// The virtualenv of a release, `<release>/.venv` with `python_env -> .venv` as
/// commcare-cloud's `setup_virtualenv` makes it: `uv sync` where there is a `uv.lock`
/// (`--locked`, no dev dependencies, the `prod` group for commcare), else `uv pip install -r`
/// of `requirements.txt`, else `uv pip install .` of a `pyproject.toml`. A release with nothing
/// to install gets a bare virtualenv. uv comes from the host's PATH, or is installed once into
/// `<shared>/.cchq-uv`; it trusts the host's certificate store (`UV_NATIVE_TLS`, as pip and curl
/// do). Any failure fails the step.
///
/// Where what is installed follows from the dependency files alone (a `uv.lock` of a project
/// that is not itself a package, or a `requirements.txt` without editable, local or included
/// requirements), the environment is shared by content: built once into
/// `<shared>/venvs/<key>` (the key: a hash of the Python version and those files), marked
/// complete last, never installed into again, and `.venv` links to it. A release whose
/// dependencies did not change links the same one in no time; a release with other
/// dependencies gets another; a rollback finds its own unchanged; cleaning removes the ones no
/// release links ([`super::releases::clean_in_background`]). Otherwise each release builds its
/// own, from uv's cache (hard links: seconds when nothing is new).
pub fn virtualenv_script(
    env: &crate::environment::Environment,
    layout: &super::layout::Layout,
) -> String {
    let uvdir = crate::command::quote(&format!("{}/.cchq-uv", layout.shared));
    let venvs = crate::command::quote(&venvs_dir(layout));
    let group = super::Component::Commcare.deployable(env).uv_sync_args();
    format!(
        "set -e; rm -rf .venv python_env; \
         if [ -f uv.lock ] || [ -f requirements.txt ] || [ -f pyproject.toml ]; then \
           uv=$(command -v uv || true); \
           if [ -z \"$uv\" ]; then \
             if [ ! -x {uvdir}/bin/uv ]; then echo 'virtualenv: installing uv'; rm -rf {uvdir}; \
               python3 -m venv {uvdir} && {uvdir}/bin/pip install -q uv || {{ echo 'cannot install uv: install it on the host (https://docs.astral.sh/uv/)' >&2; exit 1; }}; fi; \
             uv={uvdir}/bin/uv; fi; \
           export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=hardlink UV_NATIVE_TLS=1; \
           share=; \
           if [ -f uv.lock ]; then grep -q '^\\[build-system\\]' pyproject.toml 2>/dev/null || share=1; \
           elif [ -f requirements.txt ]; then \
             grep -qE '^[[:space:]]*(-e|--editable|-r|--requirement|-c|--constraint|\\.|/|file:)|@[[:space:]]*(file:|\\.|/)' requirements.txt || share=1; fi; \
           if [ -n \"$share\" ]; then \
             key=$( {{ python3 -V 2>&1; echo '{group}'; for f in uv.lock requirements.txt; do if [ -f \"$f\" ]; then echo \"== $f\"; cat \"$f\"; fi; done; }} | sha256sum | cut -c1-16); \
             venv={venvs}/$key; \
             if [ -f \"$venv/.cchq-complete\" ]; then echo \"virtualenv: $venv (dependencies unchanged)\"; \
             else echo \"virtualenv: building $venv\"; rm -rf \"$venv\"; mkdir -p {venvs}; \
               \"$uv\" venv -q --seed \"$venv\"; \
               if [ -f uv.lock ]; then UV_PROJECT_ENVIRONMENT=\"$venv\" \"$uv\" sync -q{group} --no-dev --locked --compile-bytecode --no-install-project; \
               else \"$uv\" pip install -q --compile-bytecode --python \"$venv/bin/python\" -r requirements.txt; fi; \
               touch \"$venv/.cchq-complete\"; fi; \
             ln -sfn \"$venv\" .venv; \
           elif [ -f uv.lock ]; then UV_PROJECT_ENVIRONMENT=.venv \"$uv\" sync -q{group} --no-dev --locked --compile-bytecode; \
           else \"$uv\" venv -q --seed .venv; \
             if [ -f requirements.txt ]; then \"$uv\" pip install -q --python .venv/bin/python -r requirements.txt; \
             else \"$uv\" pip install -q --python .venv/bin/python .; fi; fi; \
         else python3 -m venv --without-pip .venv; fi; \
         ln -sfn .venv python_env"
    )
}

/// Where the shared virtualenvs of [`virtualenv_script`] are: `<shared>/venvs`.
pub fn venvs_dir(layout: &super::layout::Layout) -> String {
    format!("{}/venvs", layout.shared.trim_end_matches('/'))
}

/// One group of consecutive steps that run on the same hosts: one command per host.
pub fn script(steps: &[(&Step, String)]) -> String {
    let mut s = String::from("set -e; ");
    for (step, cmd) in steps {
        let name = step.name.as_str();
        let marker = step.name.marker();
        let body = if cmd.is_empty() {
            format!("echo '{name}: nothing to run'")
        } else {
            let cmd = match &step.reuse {
                Some(r) => reusing(name, r, cmd),
                None => cmd.clone(),
            };
            let run = match step.timeout_secs {
                Some(t) => format!(
                    "timeout --kill-after=10 {t} /bin/sh -c {}",
                    crate::command::quote(&cmd)
                ),
                None => format!("/bin/sh -c {}", crate::command::quote(&cmd)),
            };
            let run = match step.on_failure {
                OnFailure::Abort => {
                    format!("{run} || {{ rc=$?; echo \"::cchq-failed {name} $rc\"; exit $rc; }}")
                }
                OnFailure::Warn => format!("{run} || echo \"::cchq-warn {name} $?\""),
            };
            match &step.when {
                Some(w) => format!("if {w}; then {run}; else echo '{name}: skipped (when)'; fi"),
                None => run,
            }
        };
        // The marker by the shell itself (`: >`, an empty file): no process per step.
        let mark = if step.marker {
            format!("; : > {marker}")
        } else {
            String::new()
        };
        if step.marker {
            s.push_str(&format!(
                "echo '::cchq-step {name}'; if [ -f {marker} ]; then echo '{name}: already done'; else {body}{mark}; fi; "
            ));
        } else {
            s.push_str(&format!("echo '::cchq-step {name}'; {body}; "));
        }
    }
    s.push_str("true");
    s
}

/// `cmd` behind its step's [`Reuse`]: the key over the inputs; when the previous release
/// (`$cchq_previous`, which the deploy exports: the release `current` points to) has the same
/// key and every output, the outputs are hard-linked from it instead of running `cmd`; the key
/// is written only once the step succeeded. An input that is a symbolic link counts by its
/// target (a shared virtualenv), `.` by the checkout's tree, a file by its contents; a
/// directory (or a checkout git cannot read) makes the key unique, so the step runs.
fn reusing(name: &str, r: &Reuse, cmd: &str) -> String {
    use crate::command::quote;
    let key: Vec<String> = r
        .inputs
        .iter()
        .map(|p| {
            if p == "." {
                "git rev-parse 'HEAD^{tree}' 2>/dev/null || echo \"no tree $$ $(date +%s%N)\"".to_owned()
            } else {
                let q = quote(p);
                format!(
                    "if [ -L {q} ]; then echo link {q} \"$(readlink {q})\"; elif [ -f {q} ]; then echo == {q}; cat {q}; \
                     elif [ -e {q} ]; then echo \"unique $$ $(date +%s%N)\"; else echo absent {q}; fi"
                )
            }
        })
        .collect();
    let have: String = r
        .outputs
        .iter()
        .map(|o| format!(" && [ -e \"$cchq_previous\"/{} ]", quote(o)))
        .collect();
    let copy: Vec<String> = r
        .outputs
        .iter()
        .map(|o| {
            let q = quote(o);
            format!("rm -rf {q}; mkdir -p \"$(dirname {q})\"; cp -al \"$cchq_previous\"/{q} {q}")
        })
        .collect();
    let keyfile = format!(".{name}-key");
    format!(
        "set -e; cchq_key=$( {{ {key}; }} | sha256sum | cut -c1-64); rm -f {keyfile}; \
         if [ -n \"${{cchq_previous:-}}\" ] && [ \"$cchq_previous\" != \"$(pwd -P)\" ] && \
            [ \"$(cat \"$cchq_previous\"/{keyfile} 2>/dev/null)\" = \"$cchq_key\" ]{have}; then \
           {copy}; echo '{name}: reused from the previous release (its inputs did not change)'; \
         else /bin/sh -c {cmd}; fi; printf '%s\\n' \"$cchq_key\" > {keyfile}",
        key = key.join("; "),
        copy = if copy.is_empty() {
            ":".to_owned()
        } else {
            copy.join("; ")
        },
        cmd = quote(cmd),
    )
}

/// The step a failed group's output names (`::cchq-failed NAME`, else the last started).
pub fn failed_step(output: &str) -> Option<String> {
    let failed = output.lines().find_map(|l| {
        l.strip_prefix("::cchq-failed ")
            .and_then(|r| r.split_whitespace().next())
    });
    failed
        .or_else(|| {
            output
                .lines()
                .filter_map(|l| l.strip_prefix("::cchq-step "))
                .next_back()
        })
        .map(str::to_owned)
}

/// The steps that warned in a group's output.
pub fn warned_steps(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("::cchq-warn "))
        .map(str::to_owned)
        .collect()
}

/// The output without cchq's own step lines.
pub fn strip_markers(output: &str) -> String {
    output
        .lines()
        .filter(|l| !l.starts_with("::cchq-"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
