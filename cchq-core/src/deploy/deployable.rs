//! What differs between the things cchq deploys, behind one trait: [`Deployable`]. The deploy
//! ([`super::deploy`], [`super::plan`], [`super::releases`], [`super::layout`]) asks a
//! component's implementation where it builds, where its code comes from, which steps it runs,
//! which markers make its release complete, which settings files it has and what its restart
//! touches, and never matches on the component itself.
//!
//! [`Component`] stays the name (parsed once, serialized in events and records);
//! [`Component::deployable`] gives its implementation for an environment. Three are built in:
//!
//! - [`CommcareHq`]: CommCare HQ (`commcare`, under the `commcare` profile): a git checkout,
//!   commcare-cloud's steps (`profiles/commcare/steps.yml`), `localsettings.py`.
//! - [`DjangoApp`]: a plain Django project (`commcare`, under the `django` profile): a git
//!   checkout, a plain Django project's steps (`profiles/django/steps.yml`), the settings modules
//!   written beside its `manage.py` (see [`super::django`]).
//! - [`Formplayer`]: formplayer's jar (`formplayer`): downloaded ([`super::artifact`]), no steps,
//!   `application.properties`, its own `formplayer_build/` home.

use super::layout::{Component, markers};
use super::steps;
use crate::environment::Environment;
use crate::paths::Paths;
use crate::services::HostPlan;
use crate::services::programs::ProgramKind;

/// Where a component's release gets its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A git checkout of the profile's code repository at the resolved commit (a mirror as
    /// reference, submodules too), in `<release>.tmp` renamed when complete.
    Checkout,
    /// A build downloaded on every host and checked by its SHA-256 ([`super::artifact`]); the
    /// jar's SHA-256 stands for the commit.
    Artifact,
}

/// A component cchq deploys: everything the deploy does differently for it. The deploy's body
/// is the same for every component (lock, resolve, build, steps, switch, restart, record,
/// clean); it asks this trait each time the answer depends on what is deployed.
///
/// Only [`component`](Self::component), [`hosts`](Self::hosts), [`code`](Self::code) and
/// [`steps`](Self::steps) have no default; the others give what CommCare HQ does.
///
/// # Adding a component
///
/// An embedder that deploys something else (say, a worker built from its own repository):
///
/// 1. adds a variant to [`Component`] (`crate::component`): the name the command line, events,
///    records and notifications use (`as_str`, `ALL`, and its serde name);
/// 2. writes a unit struct implementing `Deployable` (its host pattern, its [`Code`], its
///    steps — usually data, a `profiles/<name>/steps.yml` — and whatever differs from the
///    defaults: settings files, markers, restart, home);
/// 3. returns it from [`Component::deployable_in`] for that variant (and, when its releases live
///    somewhere of their own, gives [`Paths::component_home`] the directory).
///
/// Nothing else in the deploy changes: `deploy --plan`, `list-releases`, `clean-releases` and
/// `rollback` follow from the trait.
///
/// ```
/// use cchq_core::deploy::{Component, deployable::{Code, Deployable}};
///
/// let formplayer = Component::Formplayer.deployable_in("commcare");
/// assert_eq!(formplayer.code(), Code::Artifact);
/// assert_eq!(formplayer.service(), "formplayer");
/// ```
pub trait Deployable: std::fmt::Debug + Send + Sync {
    /// Its name (what `deploy --component` takes and events and records carry).
    fn component(&self) -> Component;

    /// The inventory pattern of the hosts its releases are built on (a private release is
    /// built on `django_manage` or `--limit` instead, and `--limit` narrows this pattern).
    fn hosts(&self) -> &'static str;

    /// Where a release gets its code.
    fn code(&self) -> Code;

    /// The steps a release runs after its code and settings are in place, in order (before and
    /// after the switch): its profile's, with `cchq.yml`'s changes.
    fn steps(&self, env: &Environment) -> Vec<steps::Step>;

    /// The done-markers a release has when every step before the switch is done: what makes it
    /// complete (a release with the deploy's record, [`markers::RECORD`], is complete too).
    fn required_markers(&self) -> Vec<&'static str> {
        markers::BUILD_STEPS.to_vec()
    }

    /// The settings files of a release, relative to it (the first is the one whose presence in
    /// `current` says a host has settings to copy).
    fn settings_files(&self, env: &Environment) -> Vec<&'static str> {
        let component = self.component();
        let files: Vec<&str> = crate::settings::files(env)
            .into_iter()
            .filter(|(c, _)| *c == component)
            .map(|(_, f)| f)
            .collect();
        if files.is_empty() {
            vec!["localsettings.py"]
        } else {
            files
        }
    }

    /// Whether every release gets freshly rendered settings (they name the release), rather than
    /// a copy of the current ones unless `--update-config`.
    fn settings_name_the_release(&self) -> bool {
        false
    }

    /// Whether `--update-config` guards against drift before the build and records what it
    /// applied after the switch ([`crate::drift`], [`crate::apply::record_applied`]).
    fn records_applied_settings(&self) -> bool {
        true
    }

    /// The service (`cchq <env> service <name>`) whose programs the restart restarts.
    fn service(&self) -> &'static str {
        self.component().as_str()
    }

    /// The restart's plans for [`service`](Self::service), narrowed to what a deploy of this
    /// component restarts (the hosts left with nothing to restart dropped).
    fn restart_plans(&self, plans: Vec<HostPlan>) -> Vec<HostPlan> {
        plans
    }

    /// Where its `releases/` and `current` live on a host (see [`super::layout::Layout`]).
    fn home(&self, paths: &Paths) -> String {
        paths.component_home(self.component())
    }

    /// The `manage.py` command line its steps run (`{{ manage }}`), with `python` the release's
    /// interpreter.
    fn manage(&self, python: &str) -> String {
        format!("{python} manage.py")
    }

    /// What `uv sync` installs besides the project's dependencies (the `virtualenv` step).
    fn uv_sync_args(&self) -> &'static str {
        ""
    }
}

/// CommCare HQ: the `commcare` component under the `commcare` profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommcareHq;

/// A plain Django project: the `commcare` component under the `django` profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct DjangoApp;

/// formplayer's jar: the `formplayer` component, whatever the profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Formplayer;

/// The app's restart leaves formplayer alone: formplayer restarts with its own deploy.
fn without_formplayer(plans: Vec<HostPlan>) -> Vec<HostPlan> {
    plans
        .into_iter()
        .map(|mut p| {
            p.programs.retain(|t| t.kind != ProgramKind::Formplayer);
            p
        })
        .filter(|p| !p.programs.is_empty() || !p.units.is_empty())
        .collect()
}

impl Deployable for CommcareHq {
    fn component(&self) -> Component {
        Component::Commcare
    }

    fn hosts(&self) -> &'static str {
        super::COMMCARE_GROUPS
    }

    fn code(&self) -> Code {
        Code::Checkout
    }

    fn steps(&self, env: &Environment) -> Vec<steps::Step> {
        env.profile.steps.clone()
    }

    fn restart_plans(&self, plans: Vec<HostPlan>) -> Vec<HostPlan> {
        without_formplayer(plans)
    }

    /// commcare-cloud's `uv sync --group=prod`.
    fn uv_sync_args(&self) -> &'static str {
        " --group=prod"
    }
}

impl Deployable for DjangoApp {
    fn component(&self) -> Component {
        Component::Commcare
    }

    fn hosts(&self) -> &'static str {
        super::COMMCARE_GROUPS
    }

    fn code(&self) -> Code {
        Code::Checkout
    }

    fn steps(&self, env: &Environment) -> Vec<steps::Step> {
        env.profile.steps.clone()
    }

    fn restart_plans(&self, plans: Vec<HostPlan>) -> Vec<HostPlan> {
        without_formplayer(plans)
    }

    /// The project's `manage.py` with cchq's settings module (which imports the project's).
    fn manage(&self, python: &str) -> String {
        format!(
            "DJANGO_SETTINGS_MODULE={} {python} manage.py",
            super::django::SETTINGS_MODULE
        )
    }
}

impl Deployable for Formplayer {
    fn component(&self) -> Component {
        Component::Formplayer
    }

    fn hosts(&self) -> &'static str {
        "formplayer"
    }

    fn code(&self) -> Code {
        Code::Artifact
    }

    /// None: a jar has nothing to build.
    fn steps(&self, _env: &Environment) -> Vec<steps::Step> {
        Vec::new()
    }

    /// `application.properties` names the release (`build.version`).
    fn settings_name_the_release(&self) -> bool {
        true
    }

    /// The settings records and their drift guard are the app's.
    fn records_applied_settings(&self) -> bool {
        false
    }
}

impl Component {
    /// Its implementation in `env` (the app's depends on the environment's profile).
    pub fn deployable(self, env: &Environment) -> &'static dyn Deployable {
        self.deployable_in(&env.profile.name)
    }

    /// Its implementation under the profile named `profile` (`commcare`, `django`): CommCare HQ
    /// or a plain Django app for `commcare`, formplayer for `formplayer`. An unknown profile
    /// (which `cchq.yml` refuses) is CommCare HQ's.
    pub fn deployable_in(self, profile: &str) -> &'static dyn Deployable {
        match (self, profile) {
            (Self::Formplayer, _) => &Formplayer,
            (Self::Commcare, "django") => &DjangoApp,
            (Self::Commcare, _) => &CommcareHq,
        }
    }

    /// Its implementation for decisions every profile's makes alike (where the code comes from,
    /// the markers of a complete release, the settings records): what the planners that see no
    /// environment ([`super::probe::plan`], [`markers::required`]) ask.
    pub(crate) fn deployable_any_profile(self) -> &'static dyn Deployable {
        self.deployable_in("commcare")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<&'static dyn Deployable> {
        vec![&CommcareHq, &DjangoApp, &Formplayer]
    }

    #[test]
    fn each_component_and_profile_has_its_implementation() {
        let c = Component::Commcare;
        assert_eq!(c.deployable_in("commcare").uv_sync_args(), " --group=prod");
        assert_eq!(
            c.deployable_in("django").manage("py"),
            format!(
                "DJANGO_SETTINGS_MODULE={} py manage.py",
                super::super::django::SETTINGS_MODULE
            )
        );
        for profile in steps::PROFILES {
            for component in Component::ALL {
                assert_eq!(component.deployable_in(profile).component(), component);
            }
            let fp = Component::Formplayer.deployable_in(profile);
            assert_eq!((fp.code(), fp.hosts()), (Code::Artifact, "formplayer"));
            let app = Component::Commcare.deployable_in(profile);
            assert_eq!(
                (app.code(), app.hosts()),
                (Code::Checkout, crate::deploy::COMMCARE_GROUPS)
            );
        }
    }

    /// What the planners without an environment ask does not depend on the profile.
    #[test]
    fn what_planners_ask_without_an_environment_is_the_same_under_every_profile() {
        for component in Component::ALL {
            let any = component.deployable_any_profile();
            for profile in steps::PROFILES {
                let d = component.deployable_in(profile);
                assert_eq!(
                    (
                        d.code(),
                        d.required_markers(),
                        d.records_applied_settings(),
                        d.settings_name_the_release(),
                        d.service(),
                    ),
                    (
                        any.code(),
                        any.required_markers(),
                        any.records_applied_settings(),
                        any.settings_name_the_release(),
                        any.service(),
                    ),
                    "{component} under {profile}"
                );
            }
        }
    }

    #[test]
    fn the_homes_are_the_environments_component_homes() {
        let paths = Paths::new("/home/cchq/www", "prod");
        let homes: Vec<String> = all().iter().map(|d| d.home(&paths)).collect();
        assert_eq!(
            homes,
            [
                "/home/cchq/www/prod",
                "/home/cchq/www/prod",
                "/home/cchq/www/prod/formplayer_build"
            ]
        );
    }

    #[test]
    fn the_apps_restart_leaves_formplayer_to_its_own_deploy() {
        use crate::services::Target;
        let plan = |kinds: &[ProgramKind]| HostPlan {
            host: "h".into(),
            services: vec!["commcare".into()],
            programs: kinds
                .iter()
                .map(|k| Target {
                    name: format!("{k:?}"),
                    kind: *k,
                })
                .collect(),
            units: Vec::new(),
            rolling: false,
            socket: String::new(),
        };
        let plans = || {
            vec![
                plan(&[ProgramKind::Django, ProgramKind::Formplayer]),
                plan(&[ProgramKind::Formplayer]),
            ]
        };
        for app in [&CommcareHq as &dyn Deployable, &DjangoApp] {
            let left = app.restart_plans(plans());
            assert_eq!(left.len(), 1, "a host left with nothing is dropped");
            assert_eq!(left[0].programs.len(), 1);
            assert_eq!(left[0].programs[0].kind, ProgramKind::Django);
        }
        assert_eq!(Formplayer.restart_plans(plans()).len(), 2);
    }
}
