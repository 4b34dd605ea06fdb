//! The releases on each host: listing them (`list-releases`) and cleaning old ones
//! (`clean-releases`), never the current release, an excluded one, or one kept by date.

use serde::Serialize;

use super::Deployable;
use super::layout::{Component, Layout, markers};
use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::Result;
use crate::transport::Transport;

/// One release on one host. Its fields are its serialized shape (`list-releases --json`,
/// Python's `Release`); [`Release::state`] says what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// The host.
    pub host: String,
    /// The release name (directory).
    pub name: String,
    /// Its commit (empty when unknown).
    pub commit: String,
    /// Whether every build and run-once step is done ([`Deployable::required_markers`]), or the
    /// deploy recorded it.
    pub complete: bool,
    /// Whether `current` points at it.
    pub current: bool,
    /// `YYYY-MM-DD_HH.MM` from a `KEEP_UNTIL__` marker, if any.
    pub keep_until: Option<String>,
    /// The markers of the steps not done (empty when complete).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// What a release is: live or not, complete or not (with the markers of the steps not done).
/// Prints as `list-releases` shows it (`current`, `complete`, `incomplete (not done: build)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState<'a> {
    /// `current` points at it, and it is complete.
    Current,
    /// `current` points at it, but steps are not done: their markers.
    CurrentIncomplete(&'a [String]),
    /// Complete and not live: what a rollback can switch to.
    Complete,
    /// Steps are not done (their markers; none when the listing could not tell): a resume
    /// finishes it, a rollback never picks it.
    Incomplete(&'a [String]),
}

impl std::fmt::Display for ReleaseState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps = |missing: &[String]| {
            missing
                .iter()
                .map(|m| markers::step(m))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::Current => f.write_str("current"),
            Self::CurrentIncomplete(m) => write!(f, "current, incomplete (not done: {})", steps(m)),
            Self::Complete => f.write_str("complete"),
            Self::Incomplete([]) => f.write_str("incomplete"),
            Self::Incomplete(m) => write!(f, "incomplete (not done: {})", steps(m)),
        }
    }
}

impl Release {
    /// A release this deploy has just built on `host`: complete, not (yet) current.
    pub fn built(host: &str, name: &str) -> Self {
        Self {
            host: host.to_owned(),
            name: name.to_owned(),
            commit: String::new(),
            complete: true,
            current: false,
            keep_until: None,
            missing: Vec::new(),
        }
    }

    /// What it is.
    pub fn state(&self) -> ReleaseState<'_> {
        match (self.current, self.complete) {
            (true, true) => ReleaseState::Current,
            (true, false) => ReleaseState::CurrentIncomplete(&self.missing),
            (false, true) => ReleaseState::Complete,
            (false, false) => ReleaseState::Incomplete(&self.missing),
        }
    }

    /// Whether a `KEEP_UNTIL__` marker keeps it at `now` (a [`keep_stamp`]).
    pub fn kept_at(&self, now: &str) -> bool {
        self.keep_until.as_deref().is_some_and(|k| k >= now)
    }

    /// A checkout under way (`<name>.tmp`, renamed when complete).
    pub fn in_progress(&self) -> bool {
        self.name.ends_with(".tmp")
    }

    /// A release a later checkout of the same name moved aside (`<name>.fail-<time>`).
    pub fn failed_checkout(&self) -> bool {
        self.name.contains(".fail-")
    }
}

/// `YYYY-MM-DD_HH.MM` (UTC) of `ts` (seconds since the epoch): how a `KEEP_UNTIL__` marker
/// writes a date, so that its order is the dates' order.
pub fn keep_stamp(ts: u64) -> String {
    let s = crate::clock::format_utc(ts);
    format!("{}_{}", &s[..10], s[11..16].replace(':', "."))
}

/// Whether release `name` is complete on every host of `hosts` in `rels`.
pub fn complete_everywhere(rels: &[Release], hosts: &[String], name: &str) -> bool {
    hosts.iter().all(|h| {
        rels.iter()
            .any(|r| &r.host == h && r.name == name && r.complete)
    })
}

/// Lists the releases, one line each: name, commit, complete (every marker `app` requires, or
/// the deploy's record), current, keep-until, the missing markers (comma-separated).
fn list_script(l: &Layout, app: &dyn Deployable) -> String {
    let required = app.required_markers().join(" ");
    format!(
        "cd {rels} 2>/dev/null || exit 0; cur=$(readlink {cur} 2>/dev/null || true); \
         for d in *; do [ -d \"$d\" ] || continue; \
           {read} \
           k=; for f in \"$d\"/KEEP_UNTIL__*; do [ -e \"$f\" ] && k=${{f##*KEEP_UNTIL__}}; break; done; \
           miss=; if [ ! -f \"$d\"/{record} ]; then for m in {required}; do [ -e \"$d/$m\" ] || miss=\"$miss,$m\"; done; \
             [ ! -e \"$d\"/{failed} ] || miss=\"$miss,{failed}\"; fi; \
           if [ -z \"$miss\" ]; then comp=1; else comp=0; fi; \
           if [ \"$cur\" = {rels}/\"$d\" ] || [ \"$cur\" = \"$d\" ] || [ \"$cur\" = releases/\"$d\" ]; then isc=1; else isc=0; fi; \
           printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$d\" \"$c\" \"$comp\" \"$isc\" \"$k\" \"${{miss#,}}\"; done",
        rels = quote(&l.releases),
        cur = quote(&l.current),
        record = markers::RECORD,
        failed = markers::START_FAILED,
        read = super::probe::read_commit("\"$d\""),
    )
}

fn parse(host: &str, text: &str) -> Vec<Release> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() >= 4).then(|| Release {
                host: host.to_owned(),
                name: f[0].to_owned(),
                commit: f[1].to_owned(),
                complete: f[2] == "1",
                current: f[3] == "1",
                keep_until: f.get(4).filter(|k| !k.is_empty()).map(|k| (*k).to_owned()),
                missing: f
                    .get(5)
                    .map(|m| {
                        m.split(',')
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Where an [`embedded_listing`]'s answer starts and ends in a command's output.
const LIST_START: &str = "CCHQ_RELEASES";
const LIST_END: &str = "CCHQ_RELEASES_END";

/// The listing of [`list`] as a part of another command (the deploy's checkout): it never fails
/// that command, and [`embedded_releases`] takes its answer only when it is whole.
pub fn embedded_listing(env: &Environment, component: Component) -> String {
    let app = component.deployable(env);
    let l = Layout::of(env, app);
    format!(
        "echo {LIST_START}; ( {} ) && echo {LIST_END}; true",
        list_script(&l, app)
    )
}

/// The releases [`embedded_listing`] printed on `host`, or `None` when its answer is not whole
/// (a partial reading plans no cleaning).
pub fn embedded_releases(host: &str, output: &str) -> Option<Vec<Release>> {
    let (_, rest) = output.split_once(&format!("{LIST_START}\n"))?;
    let (answer, _) = rest
        .split_once(&format!("{LIST_END}\n"))
        .or_else(|| rest.strip_suffix(LIST_END).map(|a| (a, "")))?;
    let mut rels = parse(host, answer);
    rels.sort_by(|a, b| a.name.cmp(&b.name));
    Some(rels)
}

/// The command that removes `gone` (release names from [`plan_clean`]) without making the
/// deploy wait: each is renamed out of the listing at once (`.cchq-trash-<name>`, which no
/// listing shows), then every trashed release is deleted in the background, detached from the
/// command (its session may end first). Never fails the command it is a part of. The shared
/// virtualenvs no release links any more go the same way ([`trash_unused_venvs`]).
pub fn clean_in_background(env: &Environment, component: Component, gone: &[String]) -> String {
    let l = Layout::new(env, component);
    let rels = quote(&l.releases);
    let moves: String = gone
        .iter()
        .map(|n| {
            format!(
                "mv -T -- {} {} 2>/dev/null || true; ",
                quote(&l.release(n)),
                quote(&format!("{}/.cchq-trash-{n}", l.releases))
            )
        })
        .collect();
    let venvs = trash_unused_venvs(&l, &venv_users(env));
    format!(
        "{{ {moves}{venvs}; if command -v setsid >/dev/null 2>&1; then setsid rm -rf -- {rels}/.cchq-trash-* </dev/null >/dev/null 2>&1 &          else nohup rm -rf -- {rels}/.cchq-trash-* </dev/null >/dev/null 2>&1 & fi; }} || true"
    )
}

/// The command that moves each shared virtualenv ([`super::steps::virtualenv_script`]) that no
/// release's `.venv` links to the trash (`<releases>/.cchq-trash-venv-<key>`, `l` being the
/// component cleaning): run after releases were removed, under the deploy lock (no virtualenv is
/// being built meanwhile: a release links its own before the lock is released). The virtualenvs
/// are the environment's (`<shared>/venvs`), not one component's, so a link from a release of
/// any component in `linked_from` (every component's `releases`: [`venv_users`]) keeps one:
/// cleaning formplayer's jars never takes the app's virtualenvs. Never fails.
pub fn trash_unused_venvs(l: &Layout, linked_from: &[String]) -> String {
    let venvs = quote(&super::steps::venvs_dir(l));
    let rels = quote(&l.releases);
    let links: Vec<String> = linked_from
        .iter()
        .map(|r| format!("{}/*/.venv", quote(r)))
        .collect();
    let links = links.join(" ");
    format!(
        "if [ -d {venvs} ]; then for v in {venvs}/*; do [ -d \"$v\" ] || continue; used=; \
         for l in {links}; do [ \"$(readlink \"$l\" 2>/dev/null)\" = \"$v\" ] && {{ used=1; break; }}; done; \
         [ -n \"$used\" ] || mv -T -- \"$v\" {rels}/.cchq-trash-venv-\"${{v##*/}}\" 2>/dev/null || true; done; fi"
    )
}

/// Where the releases that may link a shared virtualenv live: every component's `releases`.
pub fn venv_users(env: &Environment) -> Vec<String> {
    Component::ALL
        .iter()
        .map(|c| Layout::new(env, *c).releases)
        .collect()
}

/// Every release of `component` on `hosts`, sorted by host order then name.
pub async fn list(
    env: &Environment,
    t: &dyn Transport,
    hosts: &[String],
    component: Component,
) -> Result<Vec<Release>> {
    let app = component.deployable(env);
    let l = Layout::of(env, app);
    let cmd = RemoteCommand::shell_as(env.profile.app_user.clone(), list_script(&l, app));
    let futs = hosts.iter().map(|h| {
        let cmd = cmd.clone();
        async move { (h.clone(), t.exec(h, &cmd).await) }
    });
    let mut out = Vec::new();
    for (h, r) in crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await {
        let o = r?.check(&h, &cmd)?;
        let mut rels = parse(&h, &o.stdout_str());
        rels.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(rels);
    }
    Ok(out)
}

/// Which releases of one host to delete: all but the `keep` newest (complete ones first), never
/// the current one, an excluded one, an in-progress `.tmp`, or one whose `KEEP_UNTIL` is after `now`.
pub fn plan_clean(releases: &[Release], keep: usize, exclude: &[String], now: &str) -> Vec<String> {
    let mut ordered: Vec<&Release> = releases.iter().filter(|r| !r.in_progress()).collect();
    ordered.sort_by(|a, b| (b.complete, &b.name).cmp(&(a.complete, &a.name)));
    ordered
        .into_iter()
        .filter(|r| !r.failed_checkout())
        .skip(keep)
        .chain(releases.iter().filter(|r| r.failed_checkout()))
        .filter(|r| !r.current && !exclude.contains(&r.name) && !r.kept_at(now))
        .map(|r| r.name.clone())
        .collect()
}

/// What `clean` removed, per host.
pub type Removed = Vec<(String, Vec<String>)>;

/// Removes old releases of `component` on `hosts`, keeping `keep` (see [`plan_clean`]), under
/// the deploy lock: a deploy running meanwhile may have built a shared virtualenv that no
/// release links yet ([`trash_unused_venvs`]), or be about to switch to a release this would
/// judge old. `t` must reach the lock's host too ([`super::connect_hosts`]).
///
/// # Errors
/// [`crate::error::ErrorKind::LockHeld`] while a deploy of the environment runs (nothing is
/// removed); a host's errors.
pub async fn clean(
    env: &Environment,
    t: &dyn Transport,
    hosts: &[String],
    component: Component,
    keep: usize,
    exclude: &[String],
) -> Result<Removed> {
    crate::validate::require_valid(env, "clean-releases")?;
    let token = super::lock::Token::new();
    let holder = super::lock::Holder::new(
        crate::identity::operator(),
        "",
        format!("clean-releases {component}"),
        &token,
        super::lock::HEARTBEAT_INTERVAL,
    );
    super::lock::acquire(env, t, &holder, None)
        .await
        .map_err(|e| e.context("cleaning releases"))?;
    let removed = async {
        let rels = list(env, t, hosts, component).await?;
        // An excluded name is a release's (`releases/<name>/`, as a shell completes it, is taken as
        // `<name>`); one that names none is refused before anything is removed: a misspelt `-x`
        // would otherwise let the release it meant to keep go.
        let exclude: Vec<String> = exclude
            .iter()
            .map(|x| {
                let x = x.trim_end_matches('/');
                x.rsplit('/').next().unwrap_or(x).to_owned()
            })
            .collect();
        let unknown: Vec<&str> = exclude
            .iter()
            .filter(|x| !rels.iter().any(|r| &r.name == *x))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let mut names: Vec<&str> = rels.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let newest: Vec<&str> = names.iter().rev().take(5).copied().collect();
            return Err(crate::error::Error::not_found(format!(
                "--exclude {}: no release of {component} on {} is called that; nothing was removed",
                unknown.join(", "),
                hosts.join(", ")
            ))
            .with_hint(if newest.is_empty() {
                "there are no releases to keep".to_owned()
            } else {
                format!("the newest releases are {}", newest.join(", "))
            }));
        }
        let exclude = exclude.as_slice();
        let l = Layout::new(env, component);
        let venvs = trash_unused_venvs(&l, &venv_users(env));
        let now = keep_stamp(crate::clock::now());
        let mut removed = Vec::new();
        let mut futs = Vec::new();
        for h in hosts {
            let mine: Vec<Release> = rels.iter().filter(|r| &r.host == h).cloned().collect();
            let gone = plan_clean(&mine, keep, exclude, &now);
            if gone.is_empty() {
                continue;
            }
            let paths: Vec<String> = gone
                .iter()
                .map(|n| quote(&format!("{}/{n}", l.releases)))
                .collect();
            // The releases are read back gone (what the command's status says), not taken from
            // `rm`'s status, which the commands after it would hide.
            let paths = paths.join(" ");
            let cmd = RemoteCommand::shell_as(
                env.profile.app_user.clone(),
                format!(
                    "rm -rf -- {paths}; {venvs}; rm -rf -- {}/.cchq-trash-venv-*; \
                     for p in {paths}; do if [ -e \"$p\" ]; then echo \"not removed: $p\" >&2; exit 1; fi; done",
                    quote(&l.releases)
                ),
            );
            removed.push((h.clone(), gone));
            futs.push(async move {
                t.exec(h, &cmd)
                    .await
                    .and_then(|o| o.check(h, &cmd))
                    .map(|_| ())
            });
        }
        for r in crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await {
            r.map_err(|e| e.context("cleaning releases"))?;
        }
        Ok::<Removed, crate::error::Error>(removed)
    }
    .await;
    let released = super::lock::release(env, t, &token).await;
    let removed = removed?;
    released.map_err(|e| e.context("releasing the deploy lock after cleaning releases"))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(name: &str, complete: bool, current: bool, keep: Option<&str>) -> Release {
        Release {
            host: "h".into(),
            name: name.into(),
            commit: String::new(),
            complete,
            current,
            keep_until: keep.map(Into::into),
            missing: Vec::new(),
        }
    }

    #[test]
    fn cleaning_keeps_current_excluded_dated_and_newest() {
        let rels = vec![
            rel("2026-01-01_00.00.00", true, false, None),
            rel("2026-01-02_00.00.00", true, true, None),
            rel("2026-01-03_00.00.00", true, false, Some("2999-01-01_00.00")),
            rel("2026-01-04_00.00.00", false, false, None),
            rel("2026-01-05_00.00.00", true, false, None),
            rel("2026-01-06_00.00.00.tmp", false, false, None),
            rel("2026-01-00_00.00.00.fail-1", false, false, None),
        ];
        let gone = plan_clean(
            &rels,
            1,
            &["2026-01-05_00.00.00".into()],
            "2026-11-26_00.00",
        );
        assert_eq!(
            gone,
            [
                "2026-01-01_00.00.00",
                "2026-01-04_00.00.00",
                "2026-01-00_00.00.00.fail-1"
            ]
        );
        let gone = plan_clean(&rels, 10, &[], "2026-11-26_00.00");
        assert_eq!(gone, ["2026-01-00_00.00.00.fail-1"]);
    }

    #[test]
    fn listing_parses() {
        let r = parse("h", "a\tabc\t1\t0\t\nb\t\t0\t1\t2026-12-01_00.00\n");
        assert_eq!(r[0], rel("a", true, false, None).tap_commit("abc"));
        assert!(r[1].current && !r[1].complete);
        assert_eq!(r[1].keep_until.as_deref(), Some("2026-12-01_00.00"));
    }

    /// `clean-releases` holds the deploy lock: refused (nothing removed) while a deploy holds
    /// it, and leaves it free after cleaning. Real `sh` and files (the local transport).
    #[tokio::test]
    async fn clean_waits_for_no_deploy_and_leaves_the_lock_free() {
        use crate::deploy::lock;
        let tmp = tempfile::tempdir().unwrap();
        let (env, t) = crate::deploy::tests::local_env(tmp.path());
        let l = Layout::new(&env, Component::Commcare);
        let all = markers::required(Component::Commcare);
        let names = [
            "2026-01-01_00.00.00",
            "2026-01-02_00.00.00",
            "2026-01-03_00.00.00",
        ];
        for name in names {
            let d = std::path::Path::new(&l.releases).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for m in &all {
                std::fs::write(d.join(m), "").unwrap();
            }
        }
        let token = lock::Token::new();
        let deploying = lock::Holder::new(
            "alice@ctl",
            "2026-01-04_00.00.00",
            "deploy commcare",
            &token,
            lock::HEARTBEAT_INTERVAL,
        );
        // (Held while `held` lives: a holder of this process whose deploy ended is gone.)
        let held = lock::acquire(&env, &t, &deploying, None).await.unwrap();
        let hosts = ["web1".to_owned()];
        let err = clean(&env, &t, &hosts, Component::Commcare, 1, &[])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::LockHeld, "{err:?}");
        for name in names {
            assert!(
                std::path::Path::new(&l.release(name)).is_dir(),
                "{name} kept"
            );
        }
        lock::release(&env, &t, &token).await.unwrap();
        drop(held);
        let removed = clean(&env, &t, &hosts, Component::Commcare, 1, &[])
            .await
            .unwrap();
        assert_eq!(
            removed,
            [(
                "web1".to_owned(),
                vec![
                    "2026-01-02_00.00.00".to_owned(),
                    "2026-01-01_00.00.00".to_owned()
                ]
            )]
        );
        assert!(std::path::Path::new(&l.release(names[2])).is_dir());
        assert!(
            lock::status(&env, &t).await.unwrap().is_none(),
            "the lock is free again"
        );
        // A misspelt `--exclude` removes nothing; a completed path is the release's name.
        let d = std::path::Path::new(&l.releases).join(names[0]);
        std::fs::create_dir_all(&d).unwrap();
        for m in &all {
            std::fs::write(d.join(m), "").unwrap();
        }
        let typo = ["2026-01-01_00.00.0".to_owned()];
        let err = clean(&env, &t, &hosts, Component::Commcare, 0, &typo)
            .await
            .unwrap_err();
        assert!(err.message().contains("nothing was removed"), "{err:?}");
        assert!(std::path::Path::new(&l.release(names[0])).is_dir());
        assert!(lock::status(&env, &t).await.unwrap().is_none());
        let completed = [format!("releases/{}/", names[0])];
        let removed = clean(&env, &t, &hosts, Component::Commcare, 0, &completed)
            .await
            .unwrap();
        assert_eq!(removed, [("web1".to_owned(), vec![names[2].to_owned()])]);
    }

    /// Releases on a real host (the local transport, a temporary www root): a release is complete
    /// only with every build and run-once marker (or the deploy's record); one whose migrate
    /// failed is not, and does not take the place of a complete one in `keep`.
    #[tokio::test]
    async fn a_release_whose_migrate_failed_is_incomplete_and_not_kept_over_a_complete_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (env, t) = crate::deploy::tests::local_env(tmp.path());
        let l = Layout::new(&env, Component::Commcare);
        let make = |name: &str, with: &[&str]| {
            let d = std::path::Path::new(&l.releases).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for m in with {
                std::fs::write(d.join(m), "").unwrap();
            }
        };
        let all = markers::required(Component::Commcare);
        make("2026-01-01_00.00.00", &all);
        make("2026-01-02_00.00.00", &[markers::CHECKOUT, markers::CONFIG]); // a step failed
        make("2026-01-03_00.00.00", &[markers::BUILD, markers::RECORD]); // recorded by an older cchq
        make(
            "2026-01-04_00.00.00",
            &[markers::CHECKOUT, markers::CONFIG, markers::MIGRATE],
        );
        let mut failed_start = all.clone();
        failed_start.push(markers::START_FAILED);
        make("2026-01-05_00.00.00", &failed_start); // rolled back from: it failed to start
        let mut resumed = failed_start.clone();
        resumed.push(markers::RECORD);
        make("2026-01-06_00.00.00", &resumed); // ... then resumed to its end
        let rels = list(&env, &t, &["web1".to_owned()], Component::Commcare)
            .await
            .unwrap();
        let state: Vec<(&str, bool, Vec<&str>)> = rels
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.complete,
                    r.missing.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            state,
            [
                ("2026-01-01_00.00.00", true, vec![]),
                ("2026-01-02_00.00.00", false, vec![markers::BUILD]),
                ("2026-01-03_00.00.00", true, vec![]),
                ("2026-01-04_00.00.00", false, vec![markers::BUILD]),
                ("2026-01-05_00.00.00", false, vec![markers::START_FAILED]),
                ("2026-01-06_00.00.00", true, vec![]),
            ]
        );
        let rels: Vec<Release> = rels
            .into_iter()
            .filter(|r| r.name.as_str() < "2026-01-05")
            .collect();
        // keep 1: the newest complete release stays, the newer failed ones go.
        let gone = plan_clean(&rels, 1, &[], "2026-11-26_00.00");
        assert_eq!(
            gone,
            [
                "2026-01-01_00.00.00",
                "2026-01-04_00.00.00",
                "2026-01-02_00.00.00"
            ]
        );
        let gone = plan_clean(&rels, 2, &[], "2026-11-26_00.00");
        assert_eq!(
            gone,
            ["2026-01-04_00.00.00", "2026-01-02_00.00.00"],
            "only complete releases fill the kept places first"
        );
        let fp = Layout::new(&env, Component::Formplayer);
        let d = std::path::Path::new(&fp.releases).join("2026-01-05_00.00.00");
        std::fs::create_dir_all(&d).unwrap();
        for m in markers::BUILD_STEPS {
            std::fs::write(d.join(m), "").unwrap();
        }
        let rels = list(&env, &t, &["web1".to_owned()], Component::Formplayer)
            .await
            .unwrap();
        assert!(rels.len() == 1 && rels[0].complete, "{rels:?}");
    }

    /// Cleaning moves out the shared virtualenvs no release of any component links, and only
    /// those: formplayer's clean (its jars link none) keeps the app's.
    #[test]
    fn unused_shared_virtualenvs_are_trashed_and_linked_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().display().to_string();
        let l = Layout {
            home: d.clone(),
            releases: format!("{d}/releases"),
            current: format!("{d}/current"),
            shared: format!("{d}/shared"),
        };
        let fp = Layout {
            home: format!("{d}/formplayer_build"),
            releases: format!("{d}/formplayer_build/releases"),
            current: format!("{d}/formplayer_build/current"),
            shared: format!("{d}/shared"),
        };
        let users = [l.releases.clone(), fp.releases.clone()];
        let venvs = super::super::steps::venvs_dir(&l);
        assert_eq!(venvs, super::super::steps::venvs_dir(&fp));
        for v in ["a", "b", "c", "d"] {
            std::fs::create_dir_all(format!("{venvs}/{v}/bin")).unwrap();
        }
        for (rels, r, v) in [
            (&l.releases, "r1", "a"),
            (&l.releases, "r2", "a"),
            (&l.releases, "r3", "c"),
            (&fp.releases, "f1", "b"),
        ] {
            std::fs::create_dir_all(format!("{rels}/{r}")).unwrap();
            std::os::unix::fs::symlink(format!("{venvs}/{v}"), format!("{rels}/{r}/.venv"))
                .unwrap();
        }
        std::fs::create_dir_all(format!("{}/j1", fp.releases)).unwrap();
        let run = |layout: &Layout| {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(trash_unused_venvs(layout, &users))
                .output()
                .unwrap();
            assert!(o.status.success(), "{o:?}");
        };
        let left = || {
            let mut left: Vec<String> = std::fs::read_dir(&venvs)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            left
        };
        // Formplayer's clean: only `d` is linked by no release of either component.
        run(&fp);
        assert_eq!(left(), ["a", "b", "c"]);
        assert!(std::path::Path::new(&format!("{}/.cchq-trash-venv-d/bin", fp.releases)).is_dir());
        // r3 was trashed by the app's clean: its venv goes too; f1's stays.
        std::fs::rename(
            format!("{d}/releases/r3"),
            format!("{d}/releases/.cchq-trash-r3"),
        )
        .unwrap();
        run(&l);
        assert_eq!(left(), ["a", "b"]);
        assert!(std::path::Path::new(&format!("{d}/releases/.cchq-trash-venv-c/bin")).is_dir());
        // Nothing to do, or no venvs at all: still fine.
        run(&l);
        std::fs::remove_dir_all(&venvs).unwrap();
        run(&l);
        run(&fp);
    }

    /// Both components' releases keep a virtualenv, whichever component cleans.
    #[test]
    fn every_components_releases_may_link_a_virtualenv() {
        let tmp = tempfile::tempdir().unwrap();
        let (env, _) = crate::deploy::tests::local_env(tmp.path());
        let users = venv_users(&env);
        assert_eq!(users.len(), Component::ALL.len());
        for c in Component::ALL {
            let script = clean_in_background(&env, c, &["2026-01-01_00.00.00".to_owned()]);
            for r in &users {
                assert!(
                    script.contains(&format!("{}/*/.venv", quote(r))),
                    "{c}: {script}"
                );
            }
        }
    }

    #[test]
    fn markers_name_their_steps() {
        let steps: Vec<&str> = markers::required(Component::Commcare)
            .into_iter()
            .map(markers::step)
            .collect();
        assert_eq!(steps, ["checkout", "settings", "build"]);
        assert_eq!(markers::step(markers::MIGRATE), "migrate");
    }

    /// `list-releases` shows each state as it always did; the serialized shape is the fields.
    #[test]
    fn states_print_as_list_releases_shows_them() {
        let with = |current: bool, complete: bool, missing: &[&str]| Release {
            missing: missing.iter().map(|m| (*m).to_owned()).collect(),
            ..rel("r", complete, current, None)
        };
        let shown: Vec<String> = [
            with(true, true, &[]),
            with(true, false, &[markers::BUILD, markers::MIGRATE]),
            with(false, true, &[]),
            with(false, false, &[]),
            with(false, false, &[markers::START_FAILED]),
        ]
        .iter()
        .map(|r| r.state().to_string())
        .collect();
        assert_eq!(
            shown,
            [
                "current",
                "current, incomplete (not done: build, migrate)",
                "complete",
                "incomplete",
                "incomplete (not done: start (it failed; rolled back from))",
            ]
        );
        assert_eq!(
            with(false, false, &[markers::BUILD]).state(),
            ReleaseState::Incomplete(&[markers::BUILD.to_owned()])
        );
        let built = Release::built("h", "r");
        assert_eq!(built.state(), ReleaseState::Complete);
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            serde_json::json!({"host": "h", "name": "r", "commit": "", "complete": true,
                               "current": false, "keep_until": null}),
            "the serialized shape is unchanged"
        );
    }

    #[test]
    fn a_keep_until_marker_keeps_until_its_minute() {
        let kept = rel("r", true, false, Some("2026-12-01_10.30"));
        assert!(kept.kept_at("2026-12-01_10.29") && kept.kept_at("2026-12-01_10.30"));
        assert!(!kept.kept_at("2026-12-01_10.31"));
        assert!(!rel("r", true, false, None).kept_at("2000-01-01_00.00"));
        // 2026-12-01 10:30:59 UTC
        assert_eq!(keep_stamp(1_796_121_059), "2026-12-01_10.30");
        assert!(rel("r.tmp", false, false, None).in_progress());
        assert!(rel("r.fail-12", false, false, None).failed_checkout());
    }

    #[test]
    fn complete_everywhere_needs_every_host() {
        let on = |host: &str, complete: bool| Release {
            host: host.into(),
            ..rel("r", complete, false, None)
        };
        let hosts = ["a".to_owned(), "b".to_owned()];
        assert!(complete_everywhere(
            &[on("a", true), on("b", true)],
            &hosts,
            "r"
        ));
        assert!(!complete_everywhere(
            &[on("a", true), on("b", false)],
            &hosts,
            "r"
        ));
        assert!(!complete_everywhere(&[on("a", true)], &hosts, "r"));
    }

    trait Tap {
        fn tap_commit(self, c: &str) -> Self;
    }
    impl Tap for Release {
        fn tap_commit(mut self, c: &str) -> Self {
            self.commit = c.into();
            self
        }
    }
}
