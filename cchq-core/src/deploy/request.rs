//! A deploy as a frontend asks for it (`cchq <env> deploy`, Python's `Environment.deploy`): the
//! components and the operator's choices, before the defaults are applied. The defaults live
//! here, once: which components a bare deploy runs, what a private release implies, who deploys,
//! the new release's name. Each frontend fills a [`Request`] from its own arguments and runs the
//! [`Options`] it gives, one component after the other.

use std::time::Duration;

use super::{Component, Options};
use crate::Value;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::identity::Frontend;
use crate::services::RollingOptions;

/// What an operator asked to deploy, as given (see [`Request::components`] and
/// [`Request::options`] for what it means).
#[derive(Debug, Clone)]
pub struct Request {
    /// Who asks: names the operator in the records and spells the options in messages.
    pub frontend: Frontend,
    /// The components, in order; `None`: the environment's default (`commcare`, and `formplayer`
    /// too when meta.yml says `always_deploy_formplayer`). An empty list is refused.
    pub components: Option<Vec<Component>>,
    /// The revision (branch, tag, commit); the profile's default branch when `None`.
    pub rev: Option<String>,
    /// Continue (or switch back to) this release: one component only.
    pub resume: Option<String>,
    /// Build on `django_manage` (or `limit`) only, without switching, kept a day, not recorded.
    pub private: bool,
    /// Hosts for a private release.
    pub limit: Option<String>,
    /// Keep the release at least this many days; a private release's default is 1.
    pub keep_days: Option<u32>,
    /// Releases kept by the cleanup after the deploy.
    pub keep: usize,
    /// Do not record the deploy (a private release never is).
    pub skip_record: bool,
    /// Deploy even when the Kafka checkpoints are not safe; `false` leaves it to fab-settings.yml.
    pub ignore_kafka_checkpoint_warning: bool,
    /// Render fresh settings into the release instead of copying the current ones.
    pub update_config: bool,
    /// With `update_config`: write the settings where the drift guard would stop.
    pub force_settings: bool,
    /// Wait this long for a held lock.
    pub lock_wait: Option<Duration>,
    /// Restart web workers on every host at once instead of in rolling batches.
    pub all_at_once: bool,
    /// Send the notifications of cchq.yml.
    pub notify: bool,
    /// Switch back when the new release fails to start; `None`: cchq.yml decides.
    pub rollback_on_failure: Option<bool>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            frontend: Frontend::default(),
            components: None,
            rev: None,
            resume: None,
            private: false,
            limit: None,
            keep_days: None,
            keep: Options::default().keep,
            skip_record: false,
            ignore_kafka_checkpoint_warning: false,
            update_config: false,
            force_settings: false,
            lock_wait: None,
            all_at_once: false,
            notify: true,
            rollback_on_failure: None,
        }
    }
}

impl Request {
    /// The components to deploy, in order: those asked for, else `commcare` (and `formplayer`
    /// after it when `env`'s meta.yml says `always_deploy_formplayer`).
    ///
    /// # Errors
    /// `Usage`: an empty list, or a resume of more than one component (a release belongs to one
    /// component: `commcare` and `formplayer` have their own).
    pub fn components(&self, env: &Environment) -> Result<Vec<Component>> {
        let components = match &self.components {
            Some(c) => c.clone(),
            None if env.meta.always_deploy_formplayer => {
                vec![Component::Commcare, Component::Formplayer]
            }
            None => vec![Component::Commcare],
        };
        if components.is_empty() {
            return Err(Error::usage("no component to deploy")
                .with_hint("give `commcare` and/or `formplayer`"));
        }
        if self.resume.is_some() && components.len() > 1 {
            return Err(Error::usage(format!(
                "`{}` takes one component",
                self.frontend.option("resume")
            ))
            .with_hint("resume `commcare` and `formplayer` separately"));
        }
        Ok(components)
    }

    /// The options of the deploy of `component` (one of [`Request::components`]), with `vault`
    /// for rendering settings. A new release is named now (each component's release its own
    /// name, taken when its deploy is about to start); a private one is kept a day unless told
    /// otherwise and never recorded (it is not what runs). The caller sets what is not a choice
    /// of the request (`cancel`).
    pub fn options(&self, component: Component, vault: Option<Value>) -> Options {
        Options {
            component,
            rev: self.rev.clone(),
            resume: self.resume.clone(),
            name: self.resume.is_none().then(super::layout::release_name_now),
            private: self.private,
            limit: self.limit.clone(),
            keep_days: self.keep_days.or(self.private.then_some(1)),
            keep: self.keep,
            skip_record: self.skip_record || self.private,
            ignore_kafka_checkpoint_warning: self.ignore_kafka_checkpoint_warning.then_some(true),
            update_config: self.update_config,
            force_settings: self.force_settings,
            lock_wait: self.lock_wait,
            by: self.frontend.operator(),
            vault,
            rolling: RollingOptions {
                all_at_once: self.all_at_once,
                ..RollingOptions::default()
            },
            notify: self.notify,
            rollback_on_failure: self.rollback_on_failure,
            ..Options::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_bare_deploy_is_commcare_and_formplayer_when_meta_yml_says_so() {
        let mut env = crate::fixture_env("development");
        env.meta.always_deploy_formplayer = false;
        assert_eq!(
            Request::default().components(&env).unwrap(),
            [Component::Commcare]
        );
        env.meta.always_deploy_formplayer = true;
        assert_eq!(
            Request::default().components(&env).unwrap(),
            [Component::Commcare, Component::Formplayer]
        );
        // Asked for: exactly those, in that order.
        let r = Request {
            components: Some(vec![Component::Formplayer]),
            ..Request::default()
        };
        assert_eq!(r.components(&env).unwrap(), [Component::Formplayer]);
        let r = Request {
            components: Some(Vec::new()),
            ..Request::default()
        };
        let e = r.components(&env).unwrap_err();
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::Usage, "no component to deploy")
        );
    }

    #[test]
    fn a_resume_of_two_components_is_refused_in_the_frontends_spelling() {
        let mut env = crate::fixture_env("development");
        env.meta.always_deploy_formplayer = true;
        let cli = Request {
            resume: Some("r1".into()),
            ..Request::default()
        };
        let e = cli.components(&env).unwrap_err();
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::Usage, "`--resume` takes one component")
        );
        assert_eq!(
            e.hint(),
            Some("resume `commcare` and `formplayer` separately")
        );
        let py = Request {
            frontend: Frontend::Python,
            ..cli.clone()
        };
        assert_eq!(
            py.components(&env).unwrap_err().message(),
            "`resume` takes one component"
        );
        // One component named: resumable.
        let one = Request {
            components: Some(vec![Component::Formplayer]),
            ..cli
        };
        assert_eq!(one.components(&env).unwrap(), [Component::Formplayer]);
    }

    #[test]
    fn a_private_release_is_kept_a_day_and_not_recorded() {
        let private = Request {
            private: true,
            ..Request::default()
        }
        .options(Component::Commcare, None);
        assert_eq!(
            (private.keep_days, private.skip_record, private.private),
            (Some(1), true, true)
        );
        let longer = Request {
            private: true,
            keep_days: Some(7),
            ..Request::default()
        }
        .options(Component::Commcare, None);
        assert_eq!(longer.keep_days, Some(7));
        let public = Request::default().options(Component::Formplayer, None);
        assert_eq!(
            (public.keep_days, public.skip_record, public.component),
            (None, false, Component::Formplayer)
        );
        let skipped = Request {
            skip_record: true,
            ..Request::default()
        }
        .options(Component::Commcare, None);
        assert!(skipped.skip_record);
    }

    #[test]
    fn options_carry_the_request_and_name_a_new_release() {
        let r = Request {
            ignore_kafka_checkpoint_warning: true,
            all_at_once: true,
            keep: 5,
            frontend: Frontend::Python,
            ..Request::default()
        };
        let o = r.options(Component::Commcare, None);
        assert_eq!(o.ignore_kafka_checkpoint_warning, Some(true));
        assert!(o.rolling.all_at_once && o.notify && o.resume.is_none());
        assert_eq!((o.keep, o.by), (5, Frontend::Python.operator()));
        assert!(
            o.name
                .as_deref()
                .is_some_and(super::super::layout::valid_release_name),
            "{:?}",
            o.name
        );
        assert_eq!(
            Request::default()
                .options(Component::Commcare, None)
                .ignore_kafka_checkpoint_warning,
            None
        );
        // A resume continues its release: no new name.
        let o = Request {
            resume: Some("r1".into()),
            ..Request::default()
        }
        .options(Component::Commcare, None);
        assert_eq!((o.resume.as_deref(), o.name), (Some("r1"), None));
    }
}
