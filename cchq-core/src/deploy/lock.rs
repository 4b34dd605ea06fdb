//! The deploy lock: one deploy per environment at a time. Taken atomically with `mkdir` on the
//! environment's control point (the host holding the downtime record), holding who, when, which
//! release and why; released by the deploy that took it, or by hand (`lock release`) when stale.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::Transport;

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `user@machine`.
    pub by: String,
    /// When it was taken (seconds since the epoch).
    pub at: u64,
    /// The release being deployed.
    pub release: String,
    /// What is being deployed.
    pub message: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} since {} (release {}", self.by, crate::downtime::format_utc(self.at), self.release)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        f.write_str(")")
    }
}

fn lock_dir(env: &Environment) -> String {
    format!("{}/{}/.deploy-lock", env.profile.www_root.trim_end_matches('/'), env.meta.deploy_env)
}

/// The lock's host.
pub fn host(env: &Environment) -> Result<String> {
    crate::downtime::location(env).map(|(h, _)| h)
}

/// Takes the lock, or fails at once naming the holder; with `wait`, retries until it is free or
/// `wait` has passed.
pub async fn acquire(env: &Environment, t: &dyn Transport, holder: &Holder, wait: Option<Duration>) -> Result<()> {
    let h = host(env)?;
    let dir = lock_dir(env);
    let info = serde_json::to_string(holder).map_err(|e| Error::internal(e.to_string()))?;
    let script = format!(
        "mkdir -p \"$(dirname {d})\" && if mkdir {d} 2>/dev/null; then printf '%s' {i} > {d}/holder.json; echo TAKEN; else cat {d}/holder.json 2>/dev/null; fi",
        d = quote(&dir),
        i = quote(&info)
    );
    let cmd = RemoteCommand::shell(script).become_user(env.profile.app_user.clone());
    let start = std::time::Instant::now();
    loop {
        let out = t.exec(&h, &cmd).await?.check(&h, &cmd)?;
        let text = out.stdout_str();
        if text.trim() == "TAKEN" {
            return Ok(());
        }
        let held: Option<Holder> = serde_json::from_str(text.trim()).ok();
        if let Some(w) = wait
            && start.elapsed() < w
        {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let who = held.map_or_else(|| "someone (no holder information)".to_owned(), |h| h.to_string());
        return Err(Error::new(ErrorKind::LockHeld, format!("another deploy of `{}` is in progress: locked by {who}", env.name))
            .with_hint(format!("wait for it (`--lock-wait SECONDS`), or if it is stale: `cchq {} lock release`", env.name)));
    }
}

/// Releases the lock (only when it holds `release`, unless `force`).
pub async fn release(env: &Environment, t: &dyn Transport, release: Option<&str>) -> Result<()> {
    let h = host(env)?;
    let dir = lock_dir(env);
    let guard = match release {
        Some(r) => format!("grep -q {} {d}/holder.json 2>/dev/null || exit 0; ", quote(&format!("\"release\":\"{r}\"")), d = quote(&dir)),
        None => String::new(),
    };
    let cmd = RemoteCommand::shell(format!("{guard}rm -rf {}", quote(&dir))).become_user(env.profile.app_user.clone());
    t.exec(&h, &cmd).await?.check(&h, &cmd).map(|_| ())
}

/// The current holder, if the lock is taken.
pub async fn status(env: &Environment, t: &dyn Transport) -> Result<Option<Holder>> {
    let h = host(env)?;
    let dir = lock_dir(env);
    let cmd = RemoteCommand::shell(format!("if [ -d {d} ]; then cat {d}/holder.json 2>/dev/null || echo '{{}}'; fi", d = quote(&dir)))
        .become_user(env.profile.app_user.clone());
    let out = t.exec(&h, &cmd).await?.check(&h, &cmd)?;
    let text = out.stdout_str();
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(text.trim()).unwrap_or(Holder {
        by: "unknown".into(),
        at: 0,
        release: "unknown".into(),
        message: String::new(),
    })))
}
