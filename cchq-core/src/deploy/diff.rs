//! The deploy diff shown before confirming a deploy, as commcare-cloud's `DeployDiff` shows it:
//! the commit running now -> the commit going out, the log between them, a warning when the
//! revision is not the default branch and when the same commit goes out again.
//!
//! The log comes from a bare mirror of the code repository on the controller
//! (`<cache>/cchq/repos/<hash>.git`, fetched each time: only what is new is transferred); when
//! it cannot be fetched the diff still names both commits and says why there is no log.

use std::path::PathBuf;

use serde::Serialize;

use crate::environment::Environment;
use crate::error::Result;
use crate::transport::Transport;

/// The deploy diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployDiff {
    /// The revision asked for (branch, tag, commit).
    pub rev: String,
    /// The commit it resolves to.
    pub new_commit: String,
    /// The commit `current` runs on the first host (none on a first deploy).
    pub current_commit: Option<String>,
    /// `git log --oneline current..new` (newest first), at most [`MAX_LOG`] lines.
    pub log: Vec<String>,
    /// Commits left out of `log`.
    pub more: usize,
    /// Why there is no log (the repository could not be fetched), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_unavailable: Option<String>,
    /// Warnings: a revision that is not the default branch, the same commit again, going back.
    pub warnings: Vec<String>,
}

/// The most commits listed.
pub const MAX_LOG: usize = 50;

/// Works out the diff of deploying `rev` (default: the environment's default branch) to `env`;
/// `first_host` is asked where `current` points.
///
/// # Errors
/// The revision does not resolve (`git ls-remote`).
pub async fn deploy_diff(
    env: &Environment,
    t: &dyn Transport,
    first_host: &str,
    rev: Option<&str>,
) -> Result<DeployDiff> {
    let repo = env.profile.code_repo.clone();
    let rev = rev.map_or_else(|| env.profile.default_branch.clone(), str::to_owned);
    let new_commit = super::resolve_commit_in_background(&repo, &rev).await?;
    let layout = super::layout::Layout::new(env, super::Component::Commcare);
    let cmd = crate::command::RemoteCommand::shell(format!(
        "git -C {} rev-parse HEAD 2>/dev/null || true",
        crate::command::quote(&layout.current)
    ))
    .become_user(env.app_user().to_owned());
    let current_commit = match t.exec(first_host, &cmd).await {
        Ok(o) => Some(o.stdout_str().trim().to_owned()).filter(|c| c.len() == 40),
        Err(_) => None,
    };
    let mut warnings = Vec::new();
    if rev != env.profile.default_branch {
        warnings.push(format!(
            "`{rev}` is not the default branch (`{}`)",
            env.profile.default_branch
        ));
    }
    let (mut log, mut log_unavailable, mut more) = (Vec::new(), None, 0);
    match &current_commit {
        Some(c) if *c == new_commit => warnings.push(format!(
            "{} is already deployed: the same commit goes out again",
            short(c)
        )),
        Some(c) if env.fab_settings.generate_deploy_diffs => {
            let (repo, c, n) = (repo.clone(), c.clone(), new_commit.clone());
            match tokio::task::spawn_blocking(move || git_log(&repo, &c, &n)).await {
                Ok(Ok((lines, behind))) => {
                    more = lines.len().saturating_sub(MAX_LOG);
                    log = lines.into_iter().take(MAX_LOG).collect();
                    if log.is_empty() && behind > 0 {
                        warnings.push(format!(
                            "{} is {behind} commit(s) behind what runs now ({}): this goes back",
                            short(&new_commit),
                            short(&c_or(&current_commit))
                        ));
                    }
                }
                Ok(Err(why)) => log_unavailable = Some(why),
                Err(e) => log_unavailable = Some(e.to_string()),
            }
        }
        Some(_) => {
            log_unavailable = Some("generate_deploy_diffs is off in fab-settings.yml".into())
        }
        None => {}
    }
    Ok(DeployDiff {
        rev,
        new_commit,
        current_commit,
        log,
        more,
        log_unavailable,
        warnings,
    })
}

/// The program files of this environment that a deploy to `hosts` would remove (its supervisor
/// step makes each host's files what `app-processes.yml` plans), per host with any: shown before
/// the confirmation, so that a renamed queue or a moved pillow never removes programs unseen.
/// A host that cannot be probed is left out (the deploy stops on it later).
///
/// # Errors
/// Those of [`crate::services::supervisor::plan_confs`] for the whole environment (it does not
/// validate; a template does not render).
pub async fn program_removals(
    env: &Environment,
    t: &dyn Transport,
    hosts: &[String],
) -> Result<Vec<(String, Vec<String>)>> {
    use crate::services::supervisor::{embedded_answer, embedded_probe, plan_confs_probed};
    // Read as the connecting user where the directory is readable (no `sudo` on every host
    // before the deploy starts); a host that answers nothing whole is read again as root.
    let probe = crate::command::RemoteCommand::shell(embedded_probe(env));
    let outs =
        crate::fanout::for_each_host(hosts, crate::fanout::DEFAULT_FORKS, |h| t.exec(h, &probe))
            .await;
    let probed: std::collections::BTreeMap<String, String> = outs
        .into_iter()
        .filter_map(|(h, r)| {
            let a = r.ok().and_then(|o| embedded_answer(&o.stdout_str()))?;
            Some((h, a))
        })
        .collect();
    let plans = plan_confs_probed(env, t, hosts, &probed).await?;
    Ok(plans
        .into_iter()
        .filter_map(|(h, p)| {
            p.ok()
                .filter(|p| !p.remove.is_empty())
                .map(|p| (h, p.remove))
        })
        .collect())
}

fn c_or(c: &Option<String>) -> String {
    c.clone().unwrap_or_default()
}

fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// The controller's mirror of `repo`.
fn mirror_of(repo: &str) -> PathBuf {
    use sha2::Digest as _;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let hash = sha2::Sha256::digest(repo.as_bytes());
    let name = hex::encode(&hash[..8]);
    base.join("cchq/repos").join(format!("{name}.git"))
}

/// `git log --oneline old..new` from the controller's mirror (fetched first), and how many
/// commits `new` is behind `old`.
fn git_log(repo: &str, old: &str, new: &str) -> std::result::Result<(Vec<String>, usize), String> {
    let dir = mirror_of(repo);
    let git = |args: &[&str]| -> std::result::Result<String, String> {
        let o = crate::vault::scrub_env(&mut std::process::Command::new("git"))
            .args(super::safe_directory_args(repo))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("git failed")
                .to_owned())
        }
    };
    let d = dir.display().to_string();
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir)).map_err(|e| e.to_string())?;
        git(&["init", "-q", "--bare", &d])?;
    }
    git(&["-C", &d, "fetch", "-q", "--no-tags", "--", repo, old, new])
        .map_err(|e| format!("cannot fetch {repo}: {e}"))?;
    let out = git(&[
        "-C",
        &d,
        "log",
        "--oneline",
        "--no-decorate",
        &format!("{old}..{new}"),
    ])?;
    let behind = git(&["-C", &d, "rev-list", "--count", &format!("{new}..{old}")])?
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((out.lines().map(str::to_owned).collect(), behind))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real repository: the log between two commits, newest first; going back is counted.
    #[test]
    fn the_log_comes_from_a_fetched_mirror() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("r");
        let run = |args: &[&str]| {
            let o = std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@e.invalid",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(o.status.success(), "{:?}", o);
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        std::fs::create_dir_all(&repo).unwrap();
        run(&["init", "-q"]);
        let mut commits = Vec::new();
        for i in 0..3 {
            std::fs::write(repo.join("f"), i.to_string()).unwrap();
            run(&["add", "-A"]);
            run(&["commit", "-qm", &format!("change {i}")]);
            commits.push(run(&["rev-parse", "HEAD"]));
        }
        let url = repo.display().to_string();
        let (log, behind) = git_log(&url, &commits[0], &commits[2]).unwrap();
        assert_eq!(log.len(), 2);
        assert!(
            log[0].ends_with("change 2") && log[1].ends_with("change 1"),
            "{log:?}"
        );
        assert_eq!(behind, 0);
        let (log, behind) = git_log(&url, &commits[2], &commits[0]).unwrap();
        assert!(log.is_empty());
        assert_eq!(behind, 2);
        assert!(
            git_log("/nonexistent/repo", &commits[0], &commits[2])
                .unwrap_err()
                .contains("cannot fetch")
        );
    }
}
