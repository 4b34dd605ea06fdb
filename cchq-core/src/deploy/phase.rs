//! The phases of a deploy, as its events, timings and round-trip counts name them.

/// A phase of a deploy: one of cchq's own (the profile's steps name theirs, see
/// [`super::steps`]). A type so that the names a deploy reports come from one list; its events,
/// [`super::Timing`]s and [`PhaseTrips`](crate::transport::counting::PhaseTrips) still carry
/// the name as a string ([`Phase::as_str`]), so what a program reads of them does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Reading each host's state of a release (a resume; the commit live before a deploy).
    Probe,
    /// Taking the environment's deploy lock.
    Lock,
    /// Refreshing the lock's heartbeat while the deploy runs.
    Heartbeat,
    /// Resolving the revision to a commit (formplayer: naming the jar's URL).
    Resolve,
    /// The drift guard of `update_config`, before anything is built.
    Drift,
    /// The build on every host (checkout or download, and a group of the profile's steps).
    Build,
    /// The round trips of the checkout (or download) inside [`Phase::Build`].
    Checkout,
    /// Writing rendered settings into the release.
    Settings,
    /// The round trips of a group of the profile's steps run in one command per host.
    Steps,
    /// Marking a private release complete (it is not switched).
    BuildComplete,
    /// Moving `current` to the release on every host, or none.
    Switch,
    /// Recording the settings applied (`update_config`), for the drift guard of later runs.
    AppliedRecord,
    /// Updating the supervisor program files.
    Supervisor,
    /// Restarting the component's service (web workers rolling).
    Restart,
    /// Switching back to the previous release after the new one failed to start.
    Rollback,
    /// Writing the deploy's record into the release (the same command starts the clean).
    Record,
    /// Removing old releases (in the background, by the record's command).
    Clean,
    /// Starting again the programs a restart cut short had stopped.
    Restore,
    /// Releasing the deploy lock.
    Unlock,
}

impl Phase {
    /// The phase's name in events, timings and round-trip counts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Lock => "lock",
            Self::Heartbeat => "heartbeat",
            Self::Resolve => "resolve",
            Self::Drift => "drift",
            Self::Build => "build",
            Self::Checkout => "checkout",
            Self::Settings => "settings",
            Self::Steps => "steps",
            Self::BuildComplete => "build-complete",
            Self::Switch => "switch",
            Self::AppliedRecord => "applied-record",
            Self::Supervisor => "supervisor",
            Self::Restart => "restart",
            Self::Rollback => "rollback",
            Self::Record => "record",
            Self::Clean => "clean",
            Self::Restore => "restore",
            Self::Unlock => "unlock",
        }
    }
}

impl AsRef<str> for Phase {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<Phase> for String {
    fn from(p: Phase) -> Self {
        p.as_str().to_owned()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::*;

    /// The names are what events and `--json` output carry: a renamed variant must not rename
    /// them.
    #[test]
    fn phases_keep_the_names_events_carry() {
        let all = [
            (Probe, "probe"),
            (Lock, "lock"),
            (Heartbeat, "heartbeat"),
            (Resolve, "resolve"),
            (Drift, "drift"),
            (Build, "build"),
            (Checkout, "checkout"),
            (Settings, "settings"),
            (Steps, "steps"),
            (BuildComplete, "build-complete"),
            (Switch, "switch"),
            (AppliedRecord, "applied-record"),
            (Supervisor, "supervisor"),
            (Restart, "restart"),
            (Rollback, "rollback"),
            (Record, "record"),
            (Clean, "clean"),
            (Restore, "restore"),
            (Unlock, "unlock"),
        ];
        for (p, name) in all {
            assert_eq!(
                (p.as_str(), String::from(p), p.to_string()),
                (name, name.to_owned(), name.to_owned())
            );
        }
    }
}
