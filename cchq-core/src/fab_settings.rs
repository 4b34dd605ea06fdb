//! `fab-settings.yml` as data: commcare-cloud's `FabSettingsConfig` (its keys, and no others),
//! read and merged over commcare-cloud's defaults by [`crate::environment`] (which re-exports
//! these types), and read by [`crate::profile`] for the `commcare` profile's defaults.

use indexmap::IndexMap;
use serde::Deserialize;

use crate::Value;

/// `fab-settings.yml` merged over commcare-cloud's defaults (`FabSettingsConfig`: its keys, and
/// no others).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FabSettings {
    /// The user the app runs as (`cchq`).
    pub sudo_user: String,
    /// The branch deployed when no revision is given.
    pub default_branch: String,
    /// The app user's home.
    pub home: String,
    /// The project name.
    pub project: String,
    /// The code repository.
    pub code_repo: String,
    /// Email notifications on deploy.
    #[serde(default)]
    pub email_enabled: bool,
    /// Where static files are shared between proxies (dropped when
    /// `use_shared_dir_for_staticfiles: false`).
    #[serde(default)]
    pub shared_dir_for_staticfiles: Option<String>,
    /// Tag deployed commits.
    #[serde(default)]
    pub tag_deploy_commits: bool,
    /// A file to log deploy timing to.
    #[serde(default)]
    pub timing_log: Option<String>,
    /// Fabric's SSH keepalive, seconds (60).
    #[serde(default)]
    pub keepalive: Option<i64>,
    /// Skip the kafka checkpoint warning.
    #[serde(default)]
    pub ignore_kafka_checkpoint_warning: Option<bool>,
    /// When deploys are acceptable.
    #[serde(default)]
    pub acceptable_maintenance_window: Option<MaintenanceWindow>,
    /// A URL notified of deploys.
    #[serde(default)]
    pub deploy_event_url: Option<String>,
    /// Show the diff of what a deploy brings (true).
    #[serde(default = "yes")]
    pub generate_deploy_diffs: bool,
    /// Extra details for deploy notifications.
    #[serde(default)]
    pub custom_deploy_details: IndexMap<String, Value>,
}

fn yes() -> bool {
    true
}

/// `acceptable_maintenance_window` (`AcceptableMaintenanceWindow`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// The first hour.
    #[serde(default)]
    pub hour_start: Option<i64>,
    /// The last hour.
    #[serde(default)]
    pub hour_end: Option<i64>,
    /// The hours' time zone.
    #[serde(default)]
    pub timezone: Option<String>,
}
