//! `kill-stale-celery-workers`: celery processes of **this** environment still running from a
//! release that is no longer `current` (workers that did not finish their warm shutdown).
//!
//! commcare-cloud runs `manage.py kill_stale_celery_workers` (CommCare HQ's own command) on
//! `django_manage`; cchq, which runs other apps too, looks at the processes themselves. A process
//! is a stale worker on a host when all of these hold:
//! - it runs as the app user;
//! - its command line has `celery` in it;
//! - its working directory (as the kernel resolved it when the process started, so a process
//!   started in `current` shows the release it was then) or, failing that, a word of its command
//!   line is inside `<www_root>/<deploy_env>/releases/<name>` (whole path components: another
//!   environment's releases, `/www/<other>/releases/...`, never match);
//! - `<name>` is not the release `current` points to now.
//!
//! A host without `current` has no stale worker (nothing to compare with). The kill is `kill`
//! with the chosen signal of exactly the pids listed, each checked again on the host first (a
//! pid reused since is left alone).

use serde::Serialize;

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::Transport;

/// A stale celery process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    /// Its host.
    pub host: String,
    /// Its pid (as the host sees it).
    pub pid: u32,
    /// The release it runs from.
    pub release: String,
    /// Its command line.
    pub args: String,
}

/// [`celery_hosts`] within `within` (the hosts a `--limit` selected), or all of them.
///
/// # Errors
/// [`ErrorKind::Pattern`] when no celery host is left.
pub fn celery_hosts_within(env: &Environment, within: Option<&[String]>) -> Result<Vec<String>> {
    let mut hosts = celery_hosts(env);
    if let Some(w) = within {
        hosts.retain(|h| w.contains(h));
    }
    if hosts.is_empty() {
        return Err(Error::new(ErrorKind::Pattern, "no celery host selected")
            .with_hint("celery hosts are the `celery` group's and those with celery programs in app-processes.yml"));
    }
    Ok(hosts)
}

/// The hosts celery runs on: the `celery` group, and any host with a celery program.
pub fn celery_hosts(env: &Environment) -> Vec<String> {
    env.inventory
        .hosts()
        .map(|h| h.name.clone())
        .filter(|h| {
            env.inventory.groups_of(h).contains(&"celery")
                || crate::services::programs::programs_for_host(env, h)
                    .iter()
                    .any(|p| p.kind.service() == "celery")
        })
        .collect()
}

/// Shell function `stale PID` (prints `<release>` and succeeds when PID is a stale worker) with
/// the variables it needs; runs as root. Its callers loop with `p`: the function never sets it.
fn stale_function(env: &Environment) -> String {
    let paths = env.paths();
    stale_function_for(&env.profile.app_user, &paths.releases(), &paths.current())
}

fn stale_function_for(user: &str, releases: &str, current: &str) -> String {
    format!(
        "set -f; user={u}; releases={r}; current={c}; uid=$(id -u \"$user\" 2>/dev/null) || exit 0\n\
         cur=$(readlink -f \"$current\" 2>/dev/null); [ -n \"$cur\" ] && [ -e \"$cur\" ] || exit 0\n\
         rel=$(readlink -f \"$releases\" 2>/dev/null) || exit 0; [ -n \"$rel\" ] || exit 0\n\
         stale() {{\n\
           d=/proc/$1; [ \"$(stat -c %u \"$d\" 2>/dev/null)\" = \"$uid\" ] || return 1\n\
           a=$(tr '\\0' ' ' < \"$d/cmdline\" 2>/dev/null); case \"$a\" in *celery*) ;; *) return 1;; esac\n\
           r=''; c=$(readlink \"$d/cwd\" 2>/dev/null); c=${{c% (deleted)}}\n\
           for q in \"$rel\" \"$releases\"; do case \"$c/\" in \"$q\"/*/*) r=${{c#\"$q\"/}}; r=${{r%%/*}}; break;; esac; done\n\
           if [ -z \"$r\" ]; then for w in $(tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null | tr -s ' =:' '\\n\\n\\n'); do\n\
             for q in \"$rel\" \"$releases\"; do case \"$w/\" in \"$q\"/*/*) r=${{w#\"$q\"/}}; r=${{r%%/*}}; break 2;; esac; done; done; fi\n\
           [ -n \"$r\" ] || return 1\n\
           [ \"$rel/$r\" = \"$cur\" ] && return 1\n\
           printf '%s' \"$r\"\n\
         }}\n",
        u = quote(user),
        r = quote(releases),
        c = quote(current),
    )
}

/// The command listing a host's stale workers: `pid<TAB>release<TAB>args` lines.
pub fn list_command(env: &Environment) -> RemoteCommand {
    let script = format!(
        "{f}for p in $(ps -u \"$uid\" -o pid= 2>/dev/null); do r=$(stale \"$p\") && \
         printf '%s\\t%s\\t%s\\n' \"$p\" \"$r\" \"$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)\"; done; true",
        f = stale_function(env)
    );
    RemoteCommand::shell(script).become_user("root")
}

/// The command killing exactly `pids` (those still stale) with `signal`; prints the pids killed.
pub fn kill_command(env: &Environment, pids: &[u32], signal: Signal) -> RemoteCommand {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "{f}for p in {l}; do stale \"$p\" >/dev/null && kill -{s} \"$p\" 2>/dev/null && echo \"$p\"; done; true",
        f = stale_function(env),
        l = list.join(" "),
        s = signal.name()
    );
    RemoteCommand::shell(script).become_user("root")
}

fn parse(host: &str, text: &str) -> Vec<Stale> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let pid = f.next()?.trim().parse().ok()?;
            let release = f.next()?.to_owned();
            Some(Stale {
                host: host.to_owned(),
                pid,
                release,
                args: f.next().unwrap_or("").trim().to_owned(),
            })
        })
        .collect()
}

/// The signal a kill sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    /// SIGTERM: a warm shutdown (celery finishes its tasks).
    Term,
    /// SIGKILL: at once (workers stuck in their warm shutdown).
    #[default]
    Kill,
}

impl Signal {
    /// `TERM` / `KILL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Kill => "KILL",
        }
    }
}

/// The stale workers on `hosts`, per host (a host that cannot be asked gives its error).
pub async fn find(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
) -> Vec<(String, Result<Vec<Stale>>)> {
    let null = crate::events::NullSink;
    let cmd = list_command(env);
    crate::fanout::run_on_hosts(
        transport,
        hosts,
        &cmd,
        crate::fanout::DEFAULT_FORKS,
        "stale celery workers",
        &null,
    )
    .await
    .into_iter()
    .map(|r| {
        let what = RemoteCommand::new("ps").arg("(stale celery workers)");
        let res = r
            .result
            .and_then(|o| o.check(&r.host, &what))
            .map(|o| parse(&r.host, &o.stdout_str()));
        (r.host, res)
    })
    .collect()
}

/// Kills the listed workers (those still stale); the pids killed per host.
pub async fn kill(
    env: &Environment,
    transport: &dyn Transport,
    stale: &[Stale],
    signal: Signal,
) -> Vec<(String, Result<Vec<u32>>)> {
    let mut hosts: Vec<String> = stale.iter().map(|s| s.host.clone()).collect();
    hosts.dedup();
    let null = crate::events::NullSink;
    let command = |host: &str| {
        let pids: Vec<u32> = stale
            .iter()
            .filter(|s| s.host == host)
            .map(|s| s.pid)
            .collect();
        kill_command(env, &pids, signal)
    };
    crate::fanout::run_per_host(
        transport,
        &hosts,
        command,
        crate::fanout::DEFAULT_FORKS,
        "kill stale celery workers",
        &null,
    )
    .await
    .into_iter()
    .map(|r| {
        let what = RemoteCommand::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg("(stale celery workers)");
        let res = r.result.and_then(|o| o.check(&r.host, &what)).map(|o| {
            o.stdout_str()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        });
        (r.host, res)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Output;
    use crate::transport::memory::MemoryTransport;

    fn env() -> Environment {
        crate::fixture_env("test")
    }

    #[test]
    fn celery_hosts_come_from_the_inventory_and_app_processes() {
        assert_eq!(celery_hosts(&env()), ["cloud_worker_5"]);
    }

    #[tokio::test]
    async fn stale_workers_are_listed_per_host_as_root() {
        let env = env();
        let t = MemoryTransport::new(["cloud_worker_5"]);
        t.respond(
            None,
            "stale()",
            Output::new(
                0,
                "412\t2026-01-01_10.00\tpython manage.py celery worker -Q background_queue \n",
                "",
            ),
        );
        let found = find(&env, &t, &["cloud_worker_5".to_owned()]).await;
        let list = found[0].1.as_ref().unwrap();
        assert_eq!(
            list,
            &[Stale {
                host: "cloud_worker_5".into(),
                pid: 412,
                release: "2026-01-01_10.00".into(),
                args: "python manage.py celery worker -Q background_queue".into()
            }]
        );
        assert_eq!(t.calls()[0].command.become_as(), Some("root"));
        let killed = kill(&env, &t, list, Signal::Kill).await;
        assert!(killed[0].1.is_ok());
        let cmd = t.calls()[1].command.inner_shell();
        assert!(
            cmd.contains("for p in 412; do stale") && cmd.contains("kill -KILL"),
            "{cmd}"
        );
    }

    /// The function run for real, on this machine's processes: a fake app user's processes are
    /// not there, so it finds nothing; and a process is judged by its real cwd and arguments.
    #[test]
    fn the_stale_function_judges_release_directories() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www/test");
        for r in ["releases/old", "releases/new"] {
            std::fs::create_dir_all(www.join(r)).unwrap();
        }
        std::os::unix::fs::symlink(www.join("releases/new"), www.join("current")).unwrap();
        let user = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        let f = stale_function_for(
            &user,
            &www.join("releases").display().to_string(),
            &www.join("current").display().to_string(),
        );
        let spawn = |cwd: &std::path::Path, arg: &str| {
            std::process::Command::new("sleep")
                .arg("30")
                .current_dir(cwd)
                .env("X", arg)
                .spawn()
                .unwrap()
        };
        // `sleep` has no `celery` in its arguments: use the shell's `exec -a` to name it.
        let named = |cwd: &std::path::Path, name: &str| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("exec -a {name} sleep 30"))
                .current_dir(cwd)
                .spawn()
                .unwrap()
        };
        let mut old_worker = named(&www.join("releases/old"), "celery-worker");
        let mut new_worker = named(&www.join("releases/new"), "celery-worker");
        let mut old_other = spawn(&www.join("releases/old"), "x");
        let other_env = dir.path().join("www/test2/releases/old");
        std::fs::create_dir_all(&other_env).unwrap();
        let mut other = named(&other_env, "celery-worker");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let judge = |pid: u32| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{f}stale {pid}"))
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let verdicts = (
            judge(old_worker.id()),
            judge(new_worker.id()),
            judge(old_other.id()),
            judge(other.id()),
        );
        // In a loop over `p`, as the kill runs it: the function leaves `p` alone.
        let pid = old_worker.id();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{f}for p in {pid}; do stale \"$p\" >/dev/null && echo \"$p\"; done"
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
        for c in [&mut old_worker, &mut new_worker, &mut old_other, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(verdicts, (Some("old".to_owned()), None, None, None));
    }
}
