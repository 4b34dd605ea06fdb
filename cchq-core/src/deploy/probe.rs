//! Probe -> plan, the first slice of the deploy as a typed state machine (issue 14): one command
//! per host reads the state of a release there ([`HostState`]), and a pure function
//! ([`plan_resume`]) decides what a `--resume` of it has to do.

use std::collections::BTreeSet;

use serde::Serialize;

use super::layout::{Layout, markers};
use super::{Options, artifact};
use crate::command::quote;
use crate::error::{Error, ErrorKind, Result};

/// One host's state of a release, as one probe reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostState {
    /// The host.
    pub host: String,
    /// The release's directory exists.
    pub exists: bool,
    /// Its commit (formplayer: the jar's SHA-256), where it can be read.
    pub commit: Option<String>,
    /// The deploy's record is in it: every step of its deploy ran.
    pub recorded: bool,
    /// `current` points at it.
    pub current: bool,
}

/// What a `--resume` of a release has to do, as [`plan_resume`] decides from every host's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Recorded and `current` on every host: nothing to do (no lock, no restart).
    Done {
        /// The release's commit.
        commit: String,
    },
    /// Continue the deploy: the steps not done yet, the switch, the restart, the record.
    Continue {
        /// The release's commit.
        commit: String,
    },
}

/// The shell command that prints a host's [`HostState`] of release `name`.
pub fn script(l: &Layout, name: &str) -> String {
    let (r, c) = (quote(&l.release(name)), quote(&l.current));
    format!(
        "if [ -d {r} ]; then echo EXISTS; \
           echo \"COMMIT=$(cat {r}/{sha} 2>/dev/null || git -C {r} rev-parse HEAD 2>/dev/null || true)\"; \
           if [ -f {r}/{record} ]; then echo RECORDED; fi; fi; \
         if [ \"$(readlink {c} 2>/dev/null)\" = {r} ]; then echo CURRENT; fi",
        sha = artifact::SHA_FILE,
        record = markers::RECORD,
    )
}

/// Parses what [`script`] printed on `host`.
pub fn parse(host: &str, text: &str) -> HostState {
    let mut s = HostState { host: host.to_owned(), exists: false, commit: None, recorded: false, current: false };
    for line in text.lines().map(str::trim) {
        match line {
            "EXISTS" => s.exists = true,
            "RECORDED" => s.recorded = true,
            "CURRENT" => s.current = true,
            _ => {
                if let Some(c) = line.strip_prefix("COMMIT=") {
                    let c = c.trim();
                    if (c.len() == 40 || c.len() == 64) && c.bytes().all(|b| b.is_ascii_hexdigit()) {
                        s.commit = Some(c.to_owned());
                    }
                }
            }
        }
    }
    s
}

/// Decides what a `--resume` of release `name` does from every host's state: nothing when it is
/// recorded and `current` on every host (unless `private` or `update_config` ask for work);
/// else continue with the one commit the hosts that have it hold.
///
/// # Errors
/// `NotFound` when no host has the release (a caller with a revision builds it new);
/// `DeployFailed` when hosts hold different commits.
pub fn plan_resume(opts: &Options, name: &str, states: &[HostState]) -> Result<Resume> {
    let commits: BTreeSet<&str> = states.iter().filter_map(|s| s.commit.as_deref()).collect();
    let commit = match commits.len() {
        1 => commits.into_iter().next().unwrap_or_default().to_owned(),
        0 => {
            return Err(Error::not_found(format!("release `{name}` does not exist on any host"))
                .with_hint("`list-releases` shows the releases there are"));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::DeployFailed,
                format!(
                    "release `{name}` holds different commits on different hosts: {}",
                    commits.into_iter().collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint("clean it (`clean-releases`) and deploy a new release"));
        }
    };
    let finished = !states.is_empty() && states.iter().all(|s| s.exists && s.recorded && s.current);
    Ok(if finished && !opts.private && !opts.update_config { Resume::Done { commit } } else { Resume::Continue { commit } })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn st(host: &str, commit: Option<&str>, recorded: bool, current: bool) -> HostState {
        HostState { host: host.into(), exists: commit.is_some(), commit: commit.map(Into::into), recorded, current }
    }

    #[test]
    fn the_probe_output_parses_into_a_state() {
        assert_eq!(parse("h", &format!("EXISTS\nCOMMIT={A}\nRECORDED\nCURRENT\n")), st("h", Some(A), true, true));
        assert_eq!(parse("h", ""), st("h", None, false, false));
        // A release whose commit cannot be read (a `.cchq-release.json` only) exists without one.
        let s = parse("h", "EXISTS\nCOMMIT=\n");
        assert!(s.exists && s.commit.is_none());
        assert_eq!(parse("h", "EXISTS\nCOMMIT=not a commit\n").commit, None);
    }

    #[test]
    fn a_release_recorded_and_current_everywhere_needs_nothing() {
        let o = Options::default();
        let all = [st("a", Some(A), true, true), st("b", Some(A), true, true)];
        assert_eq!(plan_resume(&o, "r", &all).unwrap(), Resume::Done { commit: A.into() });
        // ... unless the options ask for work.
        for o in [Options { private: true, ..Options::default() }, Options { update_config: true, ..Options::default() }] {
            assert_eq!(plan_resume(&o, "r", &all).unwrap(), Resume::Continue { commit: A.into() });
        }
    }

    #[test]
    fn a_release_not_finished_on_one_host_continues() {
        let o = Options::default();
        for b in [st("b", Some(A), false, true), st("b", Some(A), true, false), st("b", None, false, false)] {
            let got = plan_resume(&o, "r", &[st("a", Some(A), true, true), b.clone()]).unwrap();
            assert_eq!(got, Resume::Continue { commit: A.into() }, "{b:?}");
        }
    }

    #[test]
    fn a_missing_or_split_release_is_an_error() {
        let o = Options::default();
        let e = plan_resume(&o, "r", &[st("a", None, false, false)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = plan_resume(&o, "r", &[st("a", Some(A), false, false), st("b", Some(B), false, false)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeployFailed);
        assert!(e.message().contains(A) && e.message().contains(B), "{e}");
    }
}
