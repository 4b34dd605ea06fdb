//! What `validate-environment-settings` checks, for every command that must not act on an
//! environment it reads only in part: every command that writes or deletes program files,
//! settings or releases (`update-supervisor-confs`, `deploy`, `update-config`, `rollback`,
//! `clean-releases`, `preindex-views`) refuses to start while [`Report::problems`] is not empty
//! ([`require_valid`]), because a host key they cannot read plans no programs for its hosts, and
//! an empty plan removes their program files.

use crate::environment::{DISALLOWED_PUBLIC_VARS, Environment};
use crate::error::{Error, Result};

/// What is wrong with the environment (each a sentence naming the file), and what should change
/// but does not stop anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What makes the environment invalid.
    pub problems: Vec<String>,
    /// What is accepted but should change.
    pub warnings: Vec<String>,
}

/// The checks of `validate-environment-settings` that need no host and no vault password:
/// variables public.yml may not hold, `app-processes.yml` against the inventory
/// ([`crate::app_processes::AppProcesses::check`]), the SSH settings.
pub fn check(env: &Environment) -> Report {
    let mut out = Report::default();
    let public = env.dir.join("public.yml");
    for key in DISALLOWED_PUBLIC_VARS {
        if env.public.contains_key(*key) {
            out.problems.push(format!(
                "{}: `{key}` is not allowed here; it belongs in proxy.yml",
                public.display()
            ));
        }
    }
    if let Some(ap) = &env.app_processes {
        let path = env.dir.join("app-processes.yml");
        let c = ap.check(&env.inventory);
        out.problems.extend(
            c.problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display())),
        );
        out.warnings.extend(
            c.warnings
                .into_iter()
                .map(|w| format!("{}: {w}", path.display())),
        );
    }
    if let Err(e) = env.ssh_options() {
        out.problems.push(e.message().to_owned());
    }
    out
}

/// `Ok` when [`check`] finds no problem; else a `Config` error naming the first problems, saying
/// that `doing` (e.g. `update-supervisor-confs`) did nothing.
///
/// # Errors
/// The environment does not validate.
pub fn require_valid(env: &Environment, doing: &str) -> Result<()> {
    let problems = check(env).problems;
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = if problems.len() > shown.len() {
        format!("; and {} more", problems.len() - shown.len())
    } else {
        String::new()
    };
    Err(Error::config(format!(
        "environment `{}` does not validate, so {doing} did nothing: {}{more}",
        env.name,
        shown.join("; ")
    ))
    .with_hint(format!(
        "`cchq {} validate-environment-settings` lists every problem; fix them, then run it again",
        env.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::{Options, deploy};
    use crate::transport::memory::MemoryTransport;

    /// An environment of its own in `tmp`: a web host and two celery hosts, `app-processes.yml`
    /// as given.
    fn env_with(tmp: &std::path::Path, app_processes: &str) -> Environment {
        let dir = tmp.join("v");
        std::fs::create_dir_all(&dir).unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w(
            "inventory.ini",
            "[webworkers]\nweb1\n[django_manage]\nweb1\n[celery_a1]\nc1\n[celery_b1]\nc2\n[celery:children]\ncelery_a1\ncelery_b1\n",
        );
        w(
            "meta.yml",
            "deploy_env: vv\nenv_monitoring_id: vv\nusers: []\n",
        );
        w("public.yml", "localsettings:\n  HQ_INSTANCE: vv\n");
        w("app-processes.yml", app_processes);
        Environment::load(tmp, "v").unwrap()
    }

    #[test]
    fn comma_separated_keys_validate_and_unknown_items_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let good = env_with(
            tmp.path(),
            "celery_processes:\n  celery_a1,celery_b1:\n    celery: {}\n",
        );
        assert_eq!(check(&good), Report::default());
        require_valid(&good, "x").unwrap();
        let bad = env_with(
            tmp.path(),
            "celery_processes:\n  celery_a1,celery_c1:\n    celery: {}\n",
        );
        let r = check(&bad);
        assert_eq!(r.problems.len(), 2, "{r:?}");
        assert!(
            r.problems[0]
                .ends_with("app-processes.yml: `celery_processes.celery_a1,celery_c1`: no host or group `celery_c1` in the inventory")
        );
        assert!(
            r.problems[1].contains("`celery` host `c2` is not mentioned"),
            "{r:?}"
        );
        let err = require_valid(&bad, "update-supervisor-confs").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(
            err.message().starts_with(
                "environment `v` does not validate, so update-supervisor-confs did nothing: "
            ),
            "{err}"
        );
        assert_eq!(
            err.hint(),
            Some(
                "`cchq v validate-environment-settings` lists every problem; fix them, then run it again"
            )
        );
    }

    /// A deploy of an environment that does not validate stops before anything runs: no lock,
    /// no build, no supervisor step that would remove the programs of the hosts it cannot read.
    #[tokio::test]
    async fn a_deploy_refuses_to_start_when_the_environment_does_not_validate() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_with(
            tmp.path(),
            "celery_processes:\n  celery_a1,celery_c1:\n    celery: {}\n",
        );
        let t = MemoryTransport::new(["web1", "c1", "c2"]);
        let err = deploy(
            &env,
            &t,
            &Options::default(),
            &|_: &crate::events::Event| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
        assert!(
            err.message().contains("so deploy did nothing") && err.message().contains("celery_c1"),
            "{err}"
        );
        assert!(t.calls().is_empty(), "nothing ran: {:?}", t.calls());
    }
}
