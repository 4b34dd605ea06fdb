//! Downtime: a record on the environment's hosts that every operator sees (who, when, why,
//! until when), stopping the app services, and finding processes of the app user that linger.
//!
//! The record lives in `<www_home>/downtime.json` on the environment's control point (the first
//! `django_manage` host, else the first app host), so that any operator's cchq finds it, and a
//! different operator can end a downtime another one started.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::transport::{ReadOptions, Transport, WriteOptions};

/// The groups whose hosts run app processes.
pub const APP_GROUPS: &str = "webworkers:celery:pillowtop:formplayer:proxy:django_manage";

/// A downtime in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who started it (`user@machine`).
    pub by: String,
    /// When it started (seconds since the epoch, UTC).
    pub started_at: u64,
    /// When it is meant to end at the latest (seconds since the epoch, UTC).
    pub expires_at: u64,
    /// Why.
    pub message: String,
    /// The environment.
    pub env: String,
}

impl Record {
    /// A record starting now for `hours`.
    pub fn new(env: &Environment, by: &str, message: &str, hours: f64) -> Self {
        let now = now();
        // Whole seconds are enough; the float comes from the operator's `-d`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = (hours.max(0.0) * 3600.0) as u64;
        Self { by: by.to_owned(), started_at: now, expires_at: now + secs, message: message.to_owned(), env: env.name.clone() }
    }

    /// Whether its expiry has passed.
    pub fn expired(&self) -> bool {
        now() > self.expires_at
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The UTC calendar date `(year, month, day)` of a day count since the epoch (civil-from-days, no
/// time zone database needed).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD HH:MM UTC` for a timestamp.
pub fn format_utc(ts: u64) -> String {
    let (y, m, d) = civil_from_days(i64::try_from(ts / 86_400).unwrap_or(0));
    let rem = ts % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

/// The host holding the record and the path of the record on it.
pub fn location(env: &Environment) -> Result<(String, String)> {
    let host = ["django_manage", "webworkers", APP_GROUPS, "all"]
        .iter()
        .find_map(|p| env.inventory.select(p).ok().and_then(|s| s.hosts.into_iter().next()))
        .ok_or_else(|| Error::config(format!("environment `{}` has no hosts", env.name)))?;
    Ok((host, env.paths().downtime_record()))
}

/// The current record, if any.
pub async fn read(env: &Environment, transport: &dyn Transport) -> Result<Option<Record>> {
    let (host, path) = location(env)?;
    let opts = ReadOptions { become_user: Some(env.profile.app_user.clone()) };
    match transport.read_file(&host, &path, &opts).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::config(format!("`{path}` on `{host}` is not a downtime record: {e}")).with_hint("remove it by hand if it is stale")
        }),
    }
}

/// Writes the record.
pub async fn write(env: &Environment, transport: &dyn Transport, record: &Record) -> Result<()> {
    let (host, path) = location(env)?;
    let data = serde_json::to_vec_pretty(record).map_err(|e| Error::internal(e.to_string()))?;
    let opts = WriteOptions { mode: Some(0o644), become_user: Some(env.profile.app_user.clone()) };
    transport.write_file(&host, &path, &data, &opts).await
}

/// Removes the record.
pub async fn clear(env: &Environment, transport: &dyn Transport) -> Result<()> {
    let (host, path) = location(env)?;
    let cmd = RemoteCommand::new("rm").arg("-f").arg(&path).become_user(env.profile.app_user.clone());
    transport.exec(&host, &cmd).await?.check(&host, &cmd).map(|_| ())
}

/// A process of this environment still running on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lingering {
    /// Its pid.
    pub pid: u32,
    /// Its command line.
    pub args: String,
}

impl std::fmt::Display for Lingering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pid, self.args)
    }
}

/// A shell function `mine PID` (true when the process belongs to this environment) and the
/// variables it needs, as root on a host.
///
/// A process is this environment's when it runs as the app user and its working directory or a
/// word of its command line is under the environment's www home (`<www_root>/<deploy_env>`, whole
/// path components: `/www/test2` is not under `/www/test`), or supervisord started it (or its
/// ancestor) for one of the environment's programs (`SUPERVISOR_GROUP_NAME`, inherited by
/// children). Other environments' processes of the same user, and the operator's own, are not.
fn mine_function(env: &Environment, host: &str) -> String {
    use crate::command::quote;
    let home = crate::deploy::layout::Layout::new(env, "commcare").home;
    let programs: Vec<String> = crate::services::programs::programs_for_host(env, host).into_iter().map(|p| p.name).collect();
    format!(
        "set -f; user={u}; home={h}; progs=' '{p}' '; uid=$(id -u \"$user\" 2>/dev/null) || exit 0\n\
         mine() {{\n\
           d=/proc/$1; [ \"$(stat -c %u \"$d\" 2>/dev/null)\" = \"$uid\" ] || return 1\n\
           c=$(readlink \"$d/cwd\" 2>/dev/null); case \"$c/\" in \"$home\"/*) return 0;; esac\n\
           for w in $(tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null | tr -s ' =:' '\\n\\n\\n'); do case \"$w/\" in \"$home\"/*) return 0;; esac; done\n\
           g=$(tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | sed -n 's/^SUPERVISOR_GROUP_NAME=//p')\n\
           [ -n \"$g\" ] && case \"$progs\" in *\" $g \"*) return 0;; esac\n\
           return 1\n\
         }}\n",
        u = quote(&env.profile.app_user),
        h = quote(&home),
        p = quote(&programs.join(" ")),
    )
}

/// Processes of this environment still running on `hosts` (see `mine_function` for what
/// counts as this environment's): `(host, processes)`. Connection errors are returned as errors
/// for that host.
pub async fn lingering(env: &Environment, transport: &dyn Transport, hosts: &[String]) -> Vec<(String, Result<Vec<Lingering>>)> {
    let command = |host: &str| {
        let script = format!(
            "{f}for p in $(ps -u \"$uid\" -o pid= 2>/dev/null); do \
             mine \"$p\" && printf '%s %s\\n' \"$p\" \"$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)\"; done; true",
            f = mine_function(env, host)
        );
        RemoteCommand::shell(script).become_user("root")
    };
    let null = crate::events::NullSink;
    crate::fanout::run_per_host(transport, hosts, command, crate::fanout::DEFAULT_FORKS, "lingering", &null)
        .await
        .into_iter()
        .map(|r| {
            let what = RemoteCommand::new("ps").arg("(this environment's processes)");
            (r.host.clone(), r.result.and_then(|o| o.check(&r.host, &what)).map(|out| parse_lingering(&out.stdout_str())))
        })
        .collect()
}

fn parse_lingering(text: &str) -> Vec<Lingering> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (pid, args) = l.split_once(' ').unwrap_or((l, ""));
            Some(Lingering { pid: pid.parse().ok()?, args: args.trim().to_owned() })
        })
        .collect()
}

/// Kills (SIGKILL) exactly the processes listed per host, each only if it still belongs to this
/// environment (a pid reused since it was listed is left alone). Returns the pids killed per host.
pub async fn kill_lingering(
    env: &Environment,
    transport: &dyn Transport,
    targets: &[(String, Vec<u32>)],
) -> Vec<(String, Result<Vec<u32>>)> {
    let hosts: Vec<String> = targets.iter().map(|(h, _)| h.clone()).collect();
    let command = |host: &str| {
        let pids: Vec<String> = targets.iter().filter(|(h, _)| h == host).flat_map(|(_, p)| p.iter().map(u32::to_string)).collect();
        let script = format!(
            "{f}for p in {l}; do mine \"$p\" && kill -9 \"$p\" 2>/dev/null && echo \"$p\"; done; true",
            f = mine_function(env, host),
            l = pids.join(" ")
        );
        RemoteCommand::shell(script).become_user("root")
    };
    let null = crate::events::NullSink;
    crate::fanout::run_per_host(transport, &hosts, command, crate::fanout::DEFAULT_FORKS, "kill lingering", &null)
        .await
        .into_iter()
        .map(|r| {
            let what = RemoteCommand::new("kill").arg("-9").arg("(this environment's processes)");
            let res = r
                .result
                .and_then(|o| o.check(&r.host, &what))
                .map(|out| out.stdout_str().lines().filter_map(|l| l.trim().parse().ok()).collect());
            (r.host, res)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_795_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[tokio::test]
    async fn records_round_trip_on_the_control_point() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/commcare-cloud/environments");
        let env = Environment::load(&root, "test").unwrap();
        let t = crate::transport::memory::MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        assert_eq!(read(&env, &t).await.unwrap(), None);
        let r = Record::new(&env, "me@laptop", "db upgrade", 2.0);
        write(&env, &t, &r).await.unwrap();
        assert!(t.file("cloud_worker_1", "/home/cchq/www/test/downtime.json").is_some());
        assert_eq!(read(&env, &t).await.unwrap(), Some(r.clone()));
        assert!(!r.expired());
        assert_eq!(r.expires_at - r.started_at, 7200);
    }
}
