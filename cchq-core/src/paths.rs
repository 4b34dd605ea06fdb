//! Where an environment's things live on its hosts, in one place: commcare-cloud's layout under
//! `<www_root>/<deploy_env>` (`www_home`): `current -> releases/<name>`, `releases/`,
//! `shared/`, `log/`, `formplayer_build/{current,releases}`, and cchq's own files there (the
//! deploy lock, the downtime record, the record of applied settings). Every module builds these
//! paths with [`Paths`]; none joins `www_root` itself.

/// The name of the record of what was applied, in `<www_root>/<deploy_env>/`.
pub const APPLIED_FILE: &str = ".cchq-applied.json";

/// The paths of one environment on its hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    www_home: String,
}

impl Paths {
    /// The paths under `<www_root>/<deploy_env>`.
    pub fn new(www_root: &str, deploy_env: &str) -> Self {
        let root = www_root.trim_end_matches('/');
        Self {
            www_home: format!("{root}/{deploy_env}"),
        }
    }

    /// `<www_root>/<deploy_env>`: everything of the environment on a host is under it.
    pub fn www_home(&self) -> &str {
        &self.www_home
    }

    /// A path under the www home.
    fn under(&self, rel: &str) -> String {
        format!("{}/{rel}", self.www_home)
    }

    /// Where a component's releases and `current` live: the www home (`commcare`), or
    /// `formplayer_build/` in it (`formplayer`).
    pub fn component_home(&self, component: crate::component::Component) -> String {
        match component {
            crate::component::Component::Commcare => self.www_home.clone(),
            crate::component::Component::Formplayer => self.under("formplayer_build"),
        }
    }

    /// The app's live release: `<www_home>/current`.
    pub fn current(&self) -> String {
        self.under("current")
    }

    /// The app's releases: `<www_home>/releases`.
    pub fn releases(&self) -> String {
        self.under("releases")
    }

    /// formplayer's live release: `<www_home>/formplayer_build/current`.
    pub fn formplayer_current(&self) -> String {
        self.under("formplayer_build/current")
    }

    /// Where apps that ship formplayer in their own release keep its settings:
    /// `<www_home>/current/formplayer`.
    pub fn formplayer_in_app(&self) -> String {
        self.under("current/formplayer")
    }

    /// Data that outlives releases: `<www_home>/shared`.
    pub fn shared(&self) -> String {
        self.under("shared")
    }

    /// The programs' logs: `<www_home>/log`.
    pub fn log_dir(&self) -> String {
        self.under("log")
    }

    /// The deploy lock's directory: `<www_home>/.deploy-lock`.
    pub fn deploy_lock(&self) -> String {
        self.under(".deploy-lock")
    }

    /// The downtime record: `<www_home>/downtime.json`.
    pub fn downtime_record(&self) -> String {
        self.under("downtime.json")
    }

    /// The record of the settings applied: `<www_home>/.cchq-applied.json`.
    pub fn applied_record(&self) -> String {
        self.under(APPLIED_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_www_home_and_a_trailing_slash_does_not_matter() {
        let a = Paths::new("/home/cchq/www/", "prod");
        assert_eq!(a, Paths::new("/home/cchq/www", "prod"));
        assert_eq!(a.www_home(), "/home/cchq/www/prod");
        for p in [
            a.current(),
            a.formplayer_current(),
            a.formplayer_in_app(),
            a.shared(),
            a.log_dir(),
            a.deploy_lock(),
            a.downtime_record(),
            a.applied_record(),
            a.component_home(crate::component::Component::Formplayer),
        ] {
            assert!(
                p.starts_with("/home/cchq/www/prod/") && !p.contains("//"),
                "{p}"
            );
        }
        assert_eq!(
            a.component_home(crate::component::Component::Commcare),
            "/home/cchq/www/prod"
        );
    }
}
