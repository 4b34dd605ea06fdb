//! Where releases live on a host, as commcare-cloud lays them out:
//! `<www_root>/<deploy_env>/releases/<name>`, `current -> releases/<name>`, a bare mirror of the
//! code repository in `releases/.git_mirrors/`, and formplayer's own `formplayer_build/`.

use crate::environment::Environment;

pub use crate::component::Component;

/// A component's directories on every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `<www_root>/<deploy_env>` (commcare) or `.../formplayer_build` (formplayer).
    pub home: String,
    /// `<home>/releases`.
    pub releases: String,
    /// `<home>/current`.
    pub current: String,
    /// `<www_root>/<deploy_env>/shared`: data that outlives releases (the demo app's database).
    pub shared: String,
}

impl Layout {
    /// The layout of `component` in `env`.
    pub fn new(env: &Environment, component: Component) -> Self {
        Self::of(env, component.deployable(env))
    }

    /// The layout of a [`Deployable`](super::Deployable): its home
    /// ([`Deployable::home`](super::Deployable::home)), `releases/` and `current` in it.
    pub fn of(env: &Environment, app: &dyn super::Deployable) -> Self {
        let paths = env.paths();
        let home = app.home(&paths);
        Self {
            releases: format!("{home}/releases"),
            current: format!("{home}/current"),
            shared: paths.shared(),
            home,
        }
    }

    /// `<releases>/<name>`.
    pub fn release(&self, name: &str) -> String {
        format!("{}/{name}", self.releases)
    }

    /// The bare mirror used as `--reference` for clones.
    pub fn mirror(&self) -> String {
        format!("{}/.git_mirrors/code.git", self.releases)
    }
}

/// The done-markers a deploy's steps leave in a release (one file each, in the release's
/// directory); a resume skips a step whose marker is there. Each of the profile's steps leaves
/// `.<step>-done` (see [`super::steps`]); [`markers::BUILD`] is written on every host once every
/// step before the switch is done (the run-once ones too, whose markers are then put on every
/// host), so each host's copy of a release tells by itself that it is complete.
pub mod markers {
    /// The code is checked out.
    pub const CHECKOUT: &str = ".checkout-done";
    /// The release's name, commit and maker: one line of JSON written with the checkout (what a
    /// resume's probe reads the commit from, without running `git`).
    pub const RELEASE_INFO: &str = ".cchq-release.json";
    /// The settings are in place.
    pub const CONFIG: &str = ".config-done";
    /// Every step before the switch is done (what the switch checks).
    pub const BUILD: &str = ".build-complete";
    /// The `migrate` step ran (run once, on one host; then marked on every host).
    pub const MIGRATE: &str = ".migrate-done";
    /// The deploy's record, written last: every step ran.
    pub const RECORD: &str = ".cchq-deploy.json";
    /// The release failed to start and `--rollback-on-failure` switched back from it: it is not
    /// complete (a rollback never picks it) until a resume of it finishes (its [`RECORD`]).
    pub const START_FAILED: &str = ".start-failed";

    /// The markers of cchq's own build steps, every host.
    pub const BUILD_STEPS: &[&str] = &[CHECKOUT, CONFIG, BUILD];

    /// The step a marker stands for (`.migrate-done` -> `migrate`).
    pub fn step(marker: &str) -> &str {
        let m = marker.trim_start_matches('.');
        match m {
            "config-done" => "settings",
            "build-complete" => "build",
            "start-failed" => "start (it failed; rolled back from)",
            _ => m.strip_suffix("-done").unwrap_or(m),
        }
    }

    /// The markers a release of `component` has when every step before the switch is done:
    /// its implementation's [`Deployable::required_markers`](crate::deploy::Deployable), the
    /// one definition of a complete release (a release with [`RECORD`] is complete too). The
    /// same under every profile.
    pub fn required(component: super::Component) -> Vec<&'static str> {
        component.deployable_any_profile().required_markers()
    }
}

/// A release name: the UTC time, `YYYY-MM-DD_HH.MM.SS` (commcare-cloud's format with seconds),
/// taken once on the controller.
pub fn release_name_now() -> String {
    let ts = crate::clock::now();
    let day = crate::clock::format_utc(ts);
    // format_utc gives `YYYY-MM-DD HH:MM UTC`.
    let date = &day[..10];
    format!(
        "{date}_{:02}.{:02}.{:02}",
        (ts % 86_400) / 3600,
        (ts % 3600) / 60,
        ts % 60
    )
}

/// Whether `name` is a safe release name (no path tricks or shell metacharacters).
pub fn valid_release_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_components_are_refused_listing_the_known_ones() {
        assert_eq!(
            (
                "commcare".parse::<Component>().unwrap(),
                "formplayer".parse().unwrap()
            ),
            (Component::Commcare, Component::Formplayer)
        );
        let err = "comcare".parse::<Component>().unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::NotFound);
        assert_eq!(err.message(), "unknown component `comcare`");
        assert_eq!(
            err.hint(),
            Some("the components are `commcare`, `formplayer`")
        );
    }

    #[test]
    fn components_serialize_and_print_as_their_old_strings() {
        for c in Component::ALL {
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
            assert_eq!(
                serde_json::from_value::<Component>(serde_json::json!(c.to_string())).unwrap(),
                c
            );
            assert_eq!(c.as_str().parse::<Component>().unwrap(), c);
        }
        assert_eq!(
            format!("deploy {}", Component::Formplayer),
            "deploy formplayer"
        );
    }

    #[test]
    fn names_are_timestamps_and_validated() {
        let n = release_name_now();
        assert_eq!(n.len(), 19, "{n}");
        assert!(valid_release_name(&n));
        for bad in ["", "../x", ".hidden", "a b", "x;rm", "$(id)", "a/b"] {
            assert!(!valid_release_name(bad), "{bad}");
        }
    }
}
