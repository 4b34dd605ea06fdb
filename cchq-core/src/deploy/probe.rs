//! Probe -> plan -> execute, the deploy as a typed state machine: one command per host reads the
//! state of a release there ([`HostState`]); pure functions decide — [`plan_resume`] what a
//! `--resume` of it has to do, [`plan`] the [`Stage`]s of the deploy under the lock, in order —
//! and the deploy (`run_locked`) executes the stages, one `match` arm each.

use std::collections::BTreeSet;

use serde::Serialize;

use super::layout::{Layout, markers};
use super::{Options, artifact};
use crate::command::{RemoteCommand, quote};
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

/// The shell command that prints a host's [`HostState`] of release `name`, run as the login user:
/// it reads what it can see itself, without `sudo` (the release's files are the app user's but
/// readable by others as the deploy makes them), and only where it cannot — a home that is not
/// searchable, a release without its record of the commit — does the same as `app_user`.
///
/// It starts no process where it can avoid it (it runs on every host of a resume at once): the
/// commit is read by the shell from the release's `.cchq-release.json` (or the artifact's
/// checksum file), `current` compared with `-ef`; `git` only for a release without that record.
pub fn script(l: &Layout, name: &str, app_user: &str) -> String {
    let body = body(l, name);
    let as_app = RemoteCommand::shell_as(app_user, body.clone()).to_shell();
    let (rels, r) = (quote(&l.releases), quote(&l.release(name)));
    format!(
        "if [ -x {rels} ] && {{ [ ! -e {r} ] || {{ [ -x {r} ] && \
         {{ [ -r {r}/{sha} ] || [ -r {r}/{info} ]; }}; }}; }}; then {body}; else {as_app}; fi",
        sha = artifact::SHA_FILE,
        info = markers::RELEASE_INFO,
    )
}

fn body(l: &Layout, name: &str) -> String {
    let (r, c) = (quote(&l.release(name)), quote(&l.current));
    format!(
        "if [ -d {r} ]; then echo EXISTS; {read} \
           echo \"COMMIT=$c\"; \
           if [ -f {r}/{record} ]; then echo RECORDED; fi; fi; \
         if [ {c} -ef {r} ]; then echo CURRENT; fi",
        read = read_commit(&r),
        record = markers::RECORD,
    )
}

/// Shell that sets `c` to the commit of the release in `dir` (a shell word: quoted, or
/// `"$d"`): read by the shell itself from the artifact's checksum file or the release's
/// `.cchq-release.json` (hexadecimal only), `git` only for a release without either (one made
/// before cchq recorded it); empty when none says.
pub(crate) fn read_commit(dir: &str) -> String {
    format!(
        "c=; \
         if [ -r {dir}/{sha} ]; then read -r c < {dir}/{sha} || :; \
         elif [ -r {dir}/{info} ]; then read -r c < {dir}/{info} || :; \
           case \"$c\" in *'\"commit\":\"'*) c=${{c#*'\"commit\":\"'}}; c=${{c%%'\"'*}};; *) c=;; esac; fi; \
         case \"$c\" in *[!0-9a-f]*) c=;; esac; \
         [ -n \"$c\" ] || c=$(git -C {dir} rev-parse HEAD 2>/dev/null || true);",
        sha = artifact::SHA_FILE,
        info = markers::RELEASE_INFO,
    )
}

/// Parses what [`script`] printed on `host`.
pub fn parse(host: &str, text: &str) -> HostState {
    let mut s = HostState {
        host: host.to_owned(),
        exists: false,
        commit: None,
        recorded: false,
        current: false,
    };
    for line in text.lines().map(str::trim) {
        match line {
            "EXISTS" => s.exists = true,
            "RECORDED" => s.recorded = true,
            "CURRENT" => s.current = true,
            _ => {
                if let Some(c) = line.strip_prefix("COMMIT=") {
                    let c = c.trim();
                    if (c.len() == 40 || c.len() == 64) && c.bytes().all(|b| b.is_ascii_hexdigit())
                    {
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
            return Err(
                Error::not_found(format!("release `{name}` does not exist on any host"))
                    .with_hint("`list-releases` shows the releases there are"),
            );
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
    Ok(if finished && !opts.private && !opts.update_config {
        Resume::Done { commit }
    } else {
        Resume::Continue { commit }
    })
}

/// Where a deploy's commit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The revision, resolved once on the controller (`git ls-remote`).
    Resolve,
    /// formplayer's jar at its URL: its SHA-256 is known once every host downloaded it.
    Artifact,
    /// The release being resumed holds it.
    Release(String),
}

/// One stage of a deploy under the lock, in the order [`plan`] puts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The release is finished on every host: nothing to do (this commit).
    Nothing(String),
    /// The commit to deploy.
    Commit(Source),
    /// The drift guard of `update_config`, before anything is built.
    DriftGuard,
    /// Read the commit live before (when the lock's command did not).
    PreviousCommit,
    /// The start notification (the commits known).
    Announce,
    /// Every build host: checkout (or download), settings, the profile's steps before the switch.
    Build,
    /// A private release: marked complete where built, not switched; the deploy ends here.
    MarkPrivate,
    /// `current` to the release on every host, or on none.
    Switch,
    /// Record the settings applied by `update_config` (for later drift guards).
    RecordApplied,
    /// Supervisor program files and the restart; a release that fails to start is switched
    /// back when `rollback` is set.
    Restart {
        /// Switch back to the previous release on a failed start.
        rollback: bool,
    },
    /// The profile's steps after the restart (commcare: `record_deploy_success`).
    StepsAfter,
    /// The deploy's record (written last) and the clean of old releases.
    Record,
}

/// What is known when the deploy plans, under the lock.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// What the probe decided for a `--resume` ([`plan_resume`]); `None` for a new release (or a
    /// resume of a release no host has, given a revision to build it from).
    pub resume: Option<Resume>,
    /// The lock's command read the commit live before.
    pub previous_read: bool,
    /// The profile has steps after the restart.
    pub steps_after: bool,
    /// cchq.yml's `rollback_on_failure` (the options may override it).
    pub rollback_on_failure: bool,
}

/// The stages of a deploy, decided from its options and what is known: a pure function (the
/// deploy executes what it returns, in order).
pub fn plan(opts: &Options, known: &Known) -> Vec<Stage> {
    // Where the code comes from and the settings records do not depend on the profile.
    let app = opts.component.deployable_any_profile();
    let source = match &known.resume {
        Some(Resume::Done { commit }) => return vec![Stage::Nothing(commit.clone())],
        Some(Resume::Continue { commit }) => Source::Release(commit.clone()),
        None if opts.resume.is_none() && app.code() == super::Code::Artifact => Source::Artifact,
        None => Source::Resolve,
    };
    let settings = opts.update_config && app.records_applied_settings();
    let mut stages = vec![Stage::Commit(source)];
    if settings {
        stages.push(Stage::DriftGuard);
    }
    if !known.previous_read {
        stages.push(Stage::PreviousCommit);
    }
    stages.extend([Stage::Announce, Stage::Build]);
    if opts.private {
        stages.push(Stage::MarkPrivate);
        return stages;
    }
    stages.push(Stage::Switch);
    if settings {
        stages.push(Stage::RecordApplied);
    }
    stages.push(Stage::Restart {
        rollback: opts
            .rollback_on_failure
            .unwrap_or(known.rollback_on_failure),
    });
    if known.steps_after {
        stages.push(Stage::StepsAfter);
    }
    stages.push(Stage::Record);
    stages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe, run by a real shell on a release laid out as the deploy leaves it, reads the
    /// commit from the release's record (no `git`, no `sudo`), its deploy record and `current`.
    #[test]
    fn the_probe_reads_a_release_without_git_or_sudo() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("www");
        let l = Layout {
            home: home.display().to_string(),
            releases: home.join("releases").display().to_string(),
            current: home.join("current").display().to_string(),
            shared: home.join("shared").display().to_string(),
        };
        let run = |name: &str| {
            // `sudo` on the PATH fails loudly: the probe must not need it here.
            let bin = tmp.path().join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for tool in ["sudo", "git"] {
                let p = bin.join(tool);
                std::fs::write(&p, "#!/bin/sh\necho USED-$0 >&2; exit 99\n").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(script(&l, name, "nobody"))
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!err.contains("USED-"), "{err}");
            parse("h", &String::from_utf8_lossy(&out.stdout))
        };
        // No releases directory at all: nothing there (and no sudo for it).
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(home.join("releases")).unwrap();
        assert!(!run("r1").exists);
        let r1 = home.join("releases/r1");
        std::fs::create_dir_all(&r1).unwrap();
        std::fs::write(
            r1.join(markers::RELEASE_INFO),
            format!("{{\"by\":\"a\\\"commit\\\":\\\"x\",\"commit\":\"{A}\",\"name\":\"r1\"}}\n"),
        )
        .unwrap();
        let s = run("r1");
        assert!(s.exists && !s.recorded && !s.current, "{s:?}");
        assert_eq!(s.commit.as_deref(), Some(A));
        std::fs::write(r1.join(markers::RECORD), "{}").unwrap();
        std::os::unix::fs::symlink(&r1, home.join("current")).unwrap();
        let s = run("r1");
        assert!(s.recorded && s.current, "{s:?}");
        // Another release is not current.
        let r2 = home.join("releases/r2");
        std::fs::create_dir_all(&r2).unwrap();
        std::fs::write(r2.join(artifact::SHA_FILE), format!("{}\n", "b".repeat(64))).unwrap();
        let s = run("r2");
        assert!(s.exists && !s.current);
        assert_eq!(s.commit, Some("b".repeat(64)));
        // A release without the record of its commit is read as the app user (git needs it).
        let body = script(&l, "r3", "cchq");
        assert!(body.contains("sudo -n"), "{body}");
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn st(host: &str, commit: Option<&str>, recorded: bool, current: bool) -> HostState {
        HostState {
            host: host.into(),
            exists: commit.is_some(),
            commit: commit.map(Into::into),
            recorded,
            current,
        }
    }

    #[test]
    fn the_probe_output_parses_into_a_state() {
        assert_eq!(
            parse("h", &format!("EXISTS\nCOMMIT={A}\nRECORDED\nCURRENT\n")),
            st("h", Some(A), true, true)
        );
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
        assert_eq!(
            plan_resume(&o, "r", &all).unwrap(),
            Resume::Done { commit: A.into() }
        );
        // ... unless the options ask for work.
        for o in [
            Options {
                private: true,
                ..Options::default()
            },
            Options {
                update_config: true,
                ..Options::default()
            },
        ] {
            assert_eq!(
                plan_resume(&o, "r", &all).unwrap(),
                Resume::Continue { commit: A.into() }
            );
        }
    }

    #[test]
    fn a_release_not_finished_on_one_host_continues() {
        let o = Options::default();
        for b in [
            st("b", Some(A), false, true),
            st("b", Some(A), true, false),
            st("b", None, false, false),
        ] {
            let got = plan_resume(&o, "r", &[st("a", Some(A), true, true), b.clone()]).unwrap();
            assert_eq!(got, Resume::Continue { commit: A.into() }, "{b:?}");
        }
    }

    #[test]
    fn a_missing_or_split_release_is_an_error() {
        let o = Options::default();
        let e = plan_resume(&o, "r", &[st("a", None, false, false)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = plan_resume(
            &o,
            "r",
            &[
                st("a", Some(A), false, false),
                st("b", Some(B), false, false),
            ],
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeployFailed);
        assert!(e.message().contains(A) && e.message().contains(B), "{e}");
    }

    #[test]
    fn a_new_deploy_resolves_builds_switches_restarts_and_records() {
        let known = Known {
            steps_after: true,
            ..Known::default()
        };
        assert_eq!(
            plan(&Options::default(), &known),
            [
                Stage::Commit(Source::Resolve),
                Stage::PreviousCommit,
                Stage::Announce,
                Stage::Build,
                Stage::Switch,
                Stage::Restart { rollback: false },
                Stage::StepsAfter,
                Stage::Record,
            ]
        );
        // The lock's command read the commit live before; no steps after the restart; cchq.yml
        // asks for a rollback on a failed start, the options overrule it.
        let known = Known {
            previous_read: true,
            rollback_on_failure: true,
            ..Known::default()
        };
        assert_eq!(
            plan(&Options::default(), &known),
            [
                Stage::Commit(Source::Resolve),
                Stage::Announce,
                Stage::Build,
                Stage::Switch,
                Stage::Restart { rollback: true },
                Stage::Record
            ]
        );
        let o = Options {
            rollback_on_failure: Some(false),
            ..Options::default()
        };
        assert!(plan(&o, &known).contains(&Stage::Restart { rollback: false }));
    }

    #[test]
    fn a_resume_continues_from_its_release_or_does_nothing() {
        let o = Options {
            resume: Some("r".into()),
            ..Options::default()
        };
        let done = Known {
            resume: Some(Resume::Done { commit: A.into() }),
            ..Known::default()
        };
        assert_eq!(plan(&o, &done), [Stage::Nothing(A.into())]);
        let cont = Known {
            resume: Some(Resume::Continue { commit: A.into() }),
            previous_read: true,
            ..Known::default()
        };
        assert_eq!(plan(&o, &cont)[0], Stage::Commit(Source::Release(A.into())));
        // A resume of a release no host has, given a revision: built new from it, also formplayer.
        let o = Options {
            resume: Some("r".into()),
            rev: Some("main".into()),
            component: crate::deploy::Component::Formplayer,
            ..Options::default()
        };
        assert_eq!(
            plan(&o, &Known::default())[0],
            Stage::Commit(Source::Resolve)
        );
    }

    #[test]
    fn private_formplayer_and_update_config_deploys_plan_their_own_stages() {
        let private = Options {
            private: true,
            ..Options::default()
        };
        let p = plan(
            &private,
            &Known {
                previous_read: true,
                steps_after: true,
                ..Known::default()
            },
        );
        assert_eq!(
            p,
            [
                Stage::Commit(Source::Resolve),
                Stage::Announce,
                Stage::Build,
                Stage::MarkPrivate
            ],
            "never switched"
        );
        let fp = Options {
            component: crate::deploy::Component::Formplayer,
            update_config: true,
            ..Options::default()
        };
        let p = plan(
            &fp,
            &Known {
                previous_read: true,
                ..Known::default()
            },
        );
        assert_eq!(p[0], Stage::Commit(Source::Artifact));
        assert!(
            !p.contains(&Stage::DriftGuard) && !p.contains(&Stage::RecordApplied),
            "settings records are commcare's"
        );
        let uc = Options {
            update_config: true,
            ..Options::default()
        };
        let p = plan(
            &uc,
            &Known {
                previous_read: true,
                ..Known::default()
            },
        );
        let at = |s: &Stage| p.iter().position(|x| x == s).unwrap();
        assert!(
            at(&Stage::DriftGuard) < at(&Stage::Build),
            "the guard stops before anything is built"
        );
        assert!(
            at(&Stage::Switch) < at(&Stage::RecordApplied)
                && at(&Stage::RecordApplied) < at(&Stage::Restart { rollback: false })
        );
    }

    /// Whatever the options: the build before the switch, the switch before the restart, the
    /// restart before the steps after it and the record, which is last; nothing after a private
    /// release's mark; the commit first.
    #[test]
    fn every_plan_keeps_the_order_that_makes_a_deploy_safe() {
        for bits in 0..64u32 {
            let b = |i: u32| bits & (1 << i) != 0;
            let o = Options {
                private: b(0),
                update_config: b(1),
                component: if b(2) {
                    crate::deploy::Component::Formplayer
                } else {
                    crate::deploy::Component::Commcare
                },
                resume: b(3).then(|| "r".to_owned()),
                ..Options::default()
            };
            let known = Known {
                resume: b(3).then(|| Resume::Continue { commit: A.into() }),
                previous_read: b(4),
                steps_after: b(5),
                rollback_on_failure: false,
            };
            let p = plan(&o, &known);
            let at = |f: &dyn Fn(&Stage) -> bool| p.iter().position(f);
            assert!(matches!(p[0], Stage::Commit(_)), "{p:?}");
            let build = at(&|s| *s == Stage::Build).expect("always built");
            if o.private {
                assert_eq!(p.last(), Some(&Stage::MarkPrivate), "{p:?}");
                assert!(at(&|s| *s == Stage::Switch).is_none());
                continue;
            }
            let switch = at(&|s| *s == Stage::Switch).expect("switched");
            let restart = at(&|s| matches!(s, Stage::Restart { .. })).expect("restarted");
            assert!(build < switch && switch < restart, "{p:?}");
            assert_eq!(p.last(), Some(&Stage::Record), "{p:?}");
            if let Some(after) = at(&|s| *s == Stage::StepsAfter) {
                assert!(restart < after);
            }
        }
    }
}
