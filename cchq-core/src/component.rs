//! What cchq deploys: [`Component`], the app or formplayer. Data every layer names (paths,
//! settings, notifications, the deploy), so it sits low; [`crate::deploy::layout`] re-exports it.

/// A component cchq deploys, each with its own releases: the app (`commcare`) or formplayer's
/// jar (`formplayer`). A type rather than a string so that a misspelt name is refused once, where
/// it comes in (the CLI's arguments, Python's). It serializes (events, records, notifications)
/// and prints as the same lowercase names the strings were. It is only the name: what a deploy
/// does with it is its implementation of `deploy::Deployable` (`Component::deployable`, defined
/// with the trait in `deploy::deployable`, above this module).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The web app and its workers, built from the code repository.
    #[default]
    Commcare,
    /// Formplayer, a downloaded jar with its own `formplayer_build/` home.
    Formplayer,
}

impl Component {
    /// Every component, in the order a default deploy runs them.
    pub const ALL: [Self; 2] = [Self::Commcare, Self::Formplayer];

    /// The name, as the command line, the records and the notifications spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Commcare => "commcare",
            Self::Formplayer => "formplayer",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Component {
    type Err = crate::error::Error;

    /// Refuses a component cchq does not know (`comcare`), listing those it does: never a
    /// silent default.
    fn from_str(s: &str) -> crate::error::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                crate::error::Error::not_found(format!("unknown component `{s}`")).with_hint(
                    format!(
                        "the components are {}",
                        Self::ALL
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }
}
