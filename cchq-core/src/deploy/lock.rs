//! The deploy lock: one deploy per environment at a time, always.
//!
//! The lock is a directory, `<www>/<deploy_env>/.deploy-lock`, made atomically with `mkdir` on
//! the environment's control point (the host holding the downtime record), with a holder record
//! (`holder.json`: who, when, which release, why, and the holder's identity: a random **token**,
//! the controller's host name and machine id, its process id, its heartbeat interval).
//!
//! - Only the holder releases it: the release checks the token and removes the directory in one
//!   shell command on the host.
//! - The holder refreshes a **heartbeat** (the mtime of `holder.json`, measured on the lock host's
//!   own clock) every [`HEARTBEAT_INTERVAL`] while its deploy runs ([`keep_alive`]); a heartbeat
//!   that finds the lock no longer its own stops the deploy.
//! - Another deploy takes the lock over only when its holder is provably gone: on the same
//!   controller (same host name and machine id), when the holder's process is dead; from another
//!   controller, when the heartbeat is older than [`STALE_AFTER_BEATS`] intervals. A directory
//!   without a holder record (a deploy killed between the `mkdir` and the write) is a lock with an
//!   unknown holder, stale [`STALE_AFTER_BEATS`] default intervals after the directory's mtime.
//!   The takeover is a compare-and-swap: the record is replaced only if it is still the one judged
//!   gone (same heartbeat mtime, same token).
//! - Every operation on the lock runs under `flock` on `<www>/<deploy_env>/.deploy-lock.flock`
//!   (held for the few milliseconds of one shell command; the kernel drops it with the process),
//!   so that check-then-act steps are atomic between controllers; on a host without `flock`
//!   they still run, without that mutex.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventSink};
use crate::transport::Transport;

/// How often a holder refreshes its heartbeat (by default; a holder records its own interval).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// After how many missed heartbeat intervals a holder on another controller is considered gone.
pub const STALE_AFTER_BEATS: u64 = 3;

/// How often `acquire` looks again while waiting (`--lock-wait`).
const WAIT_POLL: Duration = Duration::from_secs(2);

/// How long one lock operation waits for the host-side mutex (`flock -w`).
const MUTEX_WAIT_SECS: u32 = 30;

/// A lock holder's secret identity: random, 128 bits, hex. The deploy that takes the lock holds
/// it; only a release with it frees the lock.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A new random token.
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if random.is_err() {
            // No /dev/urandom: time, process and a counter, hashed (unique, if not secret).
            use sha2::Digest as _;
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = crate::clock::now_nanos();
            let seed = format!(
                "{nanos}:{}:{n}:{}",
                std::process::id(),
                crate::identity::hostname()
            );
            bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
        }
        Self(hex::encode(bytes))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `login@machine`.
    pub by: String,
    /// When it was taken (seconds since the epoch, the controller's clock).
    pub at: u64,
    /// The release being deployed.
    pub release: String,
    /// What is being deployed.
    pub message: String,
    /// The holder's token (empty in a record written by an older cchq).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The host name of the controller running the deploy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub controller: String,
    /// The controller's machine id, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The deploy's process id on the controller.
    #[serde(default)]
    pub pid: u32,
    /// Seconds between the holder's heartbeats (0 in a record written by an older cchq).
    #[serde(default)]
    pub heartbeat_secs: u64,
}

impl Holder {
    /// The record of a deploy of `release` by this process, holding `token`, beating every
    /// `heartbeat`.
    pub fn new(
        by: impl Into<String>,
        release: impl Into<String>,
        message: impl Into<String>,
        token: &Token,
        heartbeat: Duration,
    ) -> Self {
        Self {
            by: by.into(),
            at: crate::clock::now(),
            release: release.into(),
            message: message.into(),
            token: token.0.clone(),
            controller: crate::identity::hostname(),
            machine_id: crate::identity::machine_id(),
            pid: std::process::id(),
            heartbeat_secs: heartbeat.as_secs().max(1),
        }
    }

    /// After how many seconds without a heartbeat this holder is considered gone.
    pub fn stale_after(&self) -> u64 {
        let beat = if self.heartbeat_secs == 0 {
            HEARTBEAT_INTERVAL.as_secs()
        } else {
            self.heartbeat_secs
        };
        beat * STALE_AFTER_BEATS
    }

    /// Whether the holder runs on this machine (same host name, and same machine id where both
    /// have one).
    pub fn on_this_controller(&self) -> bool {
        if self.controller.is_empty() || self.controller != crate::identity::hostname() {
            return false;
        }
        match (&self.machine_id, crate::identity::machine_id()) {
            (Some(theirs), Some(ours)) => *theirs == ours,
            _ => true,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} since {}", self.by, crate::clock::format_utc(self.at))?;
        // A holder that deploys no release (`clean-releases`) says only what it does.
        match (self.release.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, " (release {}: {})", self.release, self.message),
            (false, true) => write!(f, " (release {})", self.release),
            (true, false) => write!(f, " ({})", self.message),
            (true, true) => Ok(()),
        }
    }
}

/// Whether a lock's holder still runs, as far as this controller can tell, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "why", rename_all = "snake_case")]
pub enum Liveness {
    /// The holder runs, or may run: the lock must not be taken.
    Alive(String),
    /// The holder is provably gone: the lock may be taken over.
    Gone(String),
}

impl Liveness {
    /// Whether the holder is gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone(_))
    }

    /// Why.
    pub fn why(&self) -> &str {
        match self {
            Self::Alive(w) | Self::Gone(w) => w,
        }
    }
}

/// A taken lock, as seen now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockState {
    /// The holder record; `None` when the lock directory has none (or an unreadable one).
    pub holder: Option<Holder>,
    /// Seconds since the last heartbeat (the holder record's mtime, or the directory's when there
    /// is no record), on the lock host's clock.
    pub heartbeat_age_secs: u64,
    /// After how many seconds without a heartbeat the holder is considered gone.
    pub stale_after_secs: u64,
    /// Whether the holder still runs, as this controller sees it.
    pub liveness: Liveness,
    /// The heartbeat's mtime on the lock host (what a takeover compares).
    #[serde(skip)]
    mtime: u64,
}

impl LockState {
    /// Who holds it, in words.
    pub fn who(&self) -> String {
        self.holder.as_ref().map_or_else(
            || "an unknown holder (the lock has no holder record)".to_owned(),
            ToString::to_string,
        )
    }

    /// Seconds until the holder would be considered stale (0: already).
    pub fn stale_in_secs(&self) -> u64 {
        self.stale_after_secs
            .saturating_sub(self.heartbeat_age_secs)
    }
}

/// What [`acquire`] did.
#[derive(Debug)]
pub struct Acquired {
    /// The lock that was taken over (its holder was gone), if it was not free.
    pub taken_over: Option<LockState>,
    _active: Active,
}

/// The tokens of the locks held by deploys of this process that are still running (their future
/// not dropped): a record with this process's pid and a token not in here is gone.
static ACTIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Marks a token active for as long as it lives.
#[derive(Debug)]
struct Active(String);

impl Active {
    fn new(token: &str) -> Self {
        if let Ok(mut a) = ACTIVE.lock() {
            a.insert(token.to_owned());
        }
        Self(token.to_owned())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Ok(mut a) = ACTIVE.lock() {
            a.remove(&self.0);
        }
    }
}

fn active(token: &str) -> bool {
    ACTIVE.lock().is_ok_and(|a| a.contains(token))
}

fn lock_dir(env: &Environment) -> String {
    env.paths().deploy_lock()
}

/// The lock's host.
pub fn host(env: &Environment) -> Result<String> {
    crate::downtime::location(env).map(|(h, _)| h)
}

/// Judges a lock's holder from this controller.
fn judge(holder: Option<&Holder>, age: u64, stale_after: u64) -> Liveness {
    let Some(h) = holder else {
        return if age > stale_after {
            Liveness::Gone(format!(
                "no holder record for {age} s (a deploy killed while taking the lock)"
            ))
        } else {
            Liveness::Alive(format!(
                "no holder record yet ({age} s old): being taken, or left by a deploy killed while taking it; stale after {stale_after} s"
            ))
        };
    };
    if h.token.is_empty() {
        return Liveness::Alive(
            "taken by an older cchq (no token, no heartbeat): whether it still runs cannot be told"
                .into(),
        );
    }
    if h.on_this_controller() {
        let pid = h.pid;
        if pid == std::process::id() {
            return if active(&h.token) {
                Liveness::Alive(format!(
                    "a deploy of this process ({pid}) that is still running"
                ))
            } else {
                Liveness::Gone(format!("its deploy in this process ({pid}) has ended"))
            };
        }
        return if crate::identity::process_alive(pid) {
            Liveness::Alive(format!(
                "its process {pid} runs on this machine ({})",
                h.controller
            ))
        } else {
            Liveness::Gone(format!(
                "its process {pid} on this machine ({}) is dead",
                h.controller
            ))
        };
    }
    let from = if h.controller.is_empty() {
        "another controller".to_owned()
    } else {
        format!("`{}`", h.controller)
    };
    if age > stale_after {
        Liveness::Gone(format!(
            "no heartbeat from {from} for {age} s (stale after {stale_after} s)"
        ))
    } else {
        Liveness::Alive(format!(
            "its heartbeat from {from} is {age} s old (stale after {stale_after} s)"
        ))
    }
}

/// Prefixes `body` with the host-side mutex (`flock` when the host has it).
fn guarded(env: &Environment, body: &str) -> String {
    let d = lock_dir(env);
    let m = quote(&format!("{d}.flock"));
    format!(
        "mkdir -p \"$(dirname {d})\" || exit 1; \
         if command -v flock >/dev/null 2>&1; then exec 9>>{m} && flock -w {MUTEX_WAIT_SECS} 9 || {{ echo 'cannot take the lock mutex '{m} >&2; exit 75; }}; fi; {body}",
        d = quote(&d),
    )
}

/// The heartbeat's mtime: the holder record's, or the directory's when there is none.
fn mtime_expr(d: &str) -> String {
    format!("$(stat -c %Y {d}/holder.json 2>/dev/null || stat -c %Y {d})")
}

/// Prints the lock's state: `FREE`, or `LOCK <now> <mtime>` then the holder record.
fn state_script(d: &str) -> String {
    format!(
        "if [ -d {d} ]; then echo \"LOCK $(date +%s) {m}\"; cat {d}/holder.json 2>/dev/null; echo; else echo FREE; fi",
        m = mtime_expr(d)
    )
}

/// Writes the holder record, its `len` bytes read from the command's standard input (never in the
/// script: the argv of `sh -c`, `sudo` and `ssh`, which `ps` shows), to a temporary file renamed
/// into place, and prints `TAKEN`.
fn write_holder(d: &str, len: usize) -> String {
    let tmp = format!("{d}/holder.json.tmp");
    format!(
        "{{ {}; }} && mv -f {tmp} {d}/holder.json && echo TAKEN",
        crate::transport::fill_from_stdin(&tmp, len)
    )
}

/// Parses what [`state_script`] printed (after any first line such as `OTHER`).
fn parse_state(text: &str) -> Option<LockState> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("LOCK ") && l.trim() != "FREE");
    let first = lines.next()?;
    let mut words = first.strip_prefix("LOCK ")?.split_whitespace();
    let now: u64 = words.next()?.parse().ok()?;
    let mtime: u64 = words.next()?.parse().unwrap_or(now);
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    let holder: Option<Holder> = serde_json::from_str(rest.trim()).ok();
    let age = now.saturating_sub(mtime);
    let stale_after = holder.as_ref().map_or(
        HEARTBEAT_INTERVAL.as_secs() * STALE_AFTER_BEATS,
        Holder::stale_after,
    );
    let liveness = judge(holder.as_ref(), age, stale_after);
    Some(LockState {
        holder,
        heartbeat_age_secs: age,
        stale_after_secs: stale_after,
        liveness,
        mtime,
    })
}

/// The shell condition "the lock is still as `seen`": same heartbeat mtime, same token; and the
/// standard input it reads first (the token's line, [`holds_token`]).
fn unchanged(d: &str, seen: &LockState) -> (String, Vec<u8>) {
    let token = seen
        .holder
        .as_ref()
        .map(|h| h.token.as_str())
        .filter(|t| !t.is_empty());
    let same_token = token.map_or_else(String::new, |_| format!(" && {}", holds_token(d)));
    let cond = format!(
        "[ -d {d} ] && [ \"{m}\" = {mt} ]{same_token}",
        m = mtime_expr(d),
        mt = seen.mtime
    );
    (cond, token.map(token_line).unwrap_or_default())
}

/// The shell condition "the holder record holds the token on the next line of standard input"
/// ([`token_line`]): read by the shell's `read` and matched by `case`, both builtins, so that the
/// token is in no argv (`ps` on either machine); `read` takes that one line, and nothing after it.
fn holds_token(d: &str) -> String {
    format!(
        "{{ IFS= read -r tok && [ -n \"$tok\" ] && case \"$(cat {d}/holder.json 2>/dev/null)\" in *\"$tok\"*) true ;; *) false ;; esac; }}"
    )
}

/// The line [`holds_token`] reads: the token as the holder record spells it.
fn token_line(token: &str) -> Vec<u8> {
    format!("{}\n", token_field(token)).into_bytes()
}

fn token_field(token: &str) -> String {
    format!("\"token\":\"{token}\"")
}

/// Runs a lock command on the lock's host; an unreachable host is an error saying where the
/// lock is and what that means.
async fn run(env: &Environment, t: &dyn Transport, what: &str, body: &str) -> Result<String> {
    run_with_stdin(env, t, what, body, None).await
}

/// [`run`], with `stdin` (a token to check, a holder record to write) on the command's standard
/// input: never in its argv.
async fn run_with_stdin(
    env: &Environment,
    t: &dyn Transport,
    what: &str,
    body: &str,
    stdin: Option<&[u8]>,
) -> Result<String> {
    let h = host(env)?;
    let mut cmd = RemoteCommand::shell_as(env.profile.app_user.clone(), guarded(env, body));
    if let Some(data) = stdin {
        cmd = cmd.stdin(data.to_vec());
    }
    let out = match t.exec(&h, &cmd).await {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::Connection => {
            return Err(e
                .map_message(|m| {
                    format!(
                        "cannot {what} the deploy lock of `{}` on `{h}`: {m}",
                        env.name
                    )
                })
                .with_hint(format!(
                    "the lock lives in `{}` on `{h}`; try again once `{h}` is reachable",
                    lock_dir(env)
                )));
        }
        Err(e) => return Err(e),
    };
    Ok(out.check(&h, &cmd)?.stdout_str())
}

fn held_error(env: &Environment, state: &LockState) -> Error {
    let stale = if state.liveness.is_gone() {
        String::new()
    } else if state
        .holder
        .as_ref()
        .is_some_and(Holder::on_this_controller)
    {
        " once its process has ended".to_owned()
    } else {
        format!(" in {} s without a heartbeat", state.stale_in_secs())
    };
    Error::new(
        ErrorKind::LockHeld,
        format!("another deploy of `{}` is in progress: locked by {} ({})", env.name, state.who(), state.liveness.why()),
    )
    .with_holder(state.who())
    .with_hint(format!(
        "wait for it (`--lock-wait SECONDS`; it can be taken over{stale}); `cchq {} lock status` shows it; only if that deploy is dead: `cchq {} lock release --force`",
        env.name, env.name
    ))
}

/// Takes the lock for `holder` (whose token is the deploy's): at once when it is free, or by
/// taking it over when its holder is provably gone; otherwise fails naming the holder, or with
/// `wait`, looks again until it is free or gone or `wait` has passed.
pub async fn acquire(
    env: &Environment,
    t: &dyn Transport,
    holder: &Holder,
    wait: Option<Duration>,
) -> Result<Acquired> {
    acquire_probing(env, t, holder, wait, None)
        .await
        .map(|(a, _)| a)
}

/// Where the output of [`acquire_probing`]'s probe starts.
const PROBE_MARK: &str = "CCHQ_LOCK_PROBE";

/// Splits a lock command's output into the lock's part and the probe's (after [`PROBE_MARK`]).
fn split_probe(text: &str) -> (String, Option<String>) {
    match text.split_once(&format!("{PROBE_MARK}\n")) {
        Some((lock, probe)) => (lock.to_owned(), Some(probe.to_owned())),
        None => (
            text.strip_suffix(PROBE_MARK).unwrap_or(text).to_owned(),
            None,
        ),
    }
}

/// [`acquire`], running `probe` (a read-only shell command, e.g. the deploy's first probe of the
/// lock's host) in the same command as the attempt that takes the lock: the lock costs no round
/// trip of its own. Returns the probe's output of that attempt.
///
/// # Errors
/// As [`acquire`].
pub async fn acquire_probing(
    env: &Environment,
    t: &dyn Transport,
    holder: &Holder,
    wait: Option<Duration>,
    probe: Option<&str>,
) -> Result<(Acquired, Option<String>)> {
    let d = quote(&lock_dir(env));
    let info =
        serde_json::to_string(holder).map_err(|e| Error::internal(e.to_string()).with_source(e))?;
    // The probe never reads the holder record meant for the lock (when the lock was not taken).
    let probing = probe.map_or_else(String::new, |p| {
        format!("; echo {PROBE_MARK}; {{ {p}; }} </dev/null 2>/dev/null || true")
    });
    let take = format!(
        "if mkdir {d} 2>/dev/null; then {}; else {}; fi{probing}",
        write_holder(&d, info.len()),
        state_script(&d)
    );
    // Active from the first attempt: a record of this process written under this token is a
    // running deploy's, even before `acquire` returns.
    let active = Active::new(&holder.token);
    let start = std::time::Instant::now();
    loop {
        let (text, probed) =
            split_probe(&run_with_stdin(env, t, "take", &take, Some(info.as_bytes())).await?);
        if text.lines().any(|l| l.trim() == "TAKEN") {
            return Ok((
                Acquired {
                    taken_over: None,
                    _active: active,
                },
                probed,
            ));
        }
        let Some(state) = parse_state(&text) else {
            // Released in between: try again at once.
            if text.trim() == "FREE" {
                continue;
            }
            return Err(unexpected("taking", &text));
        };
        if state
            .holder
            .as_ref()
            .is_some_and(|h| !h.token.is_empty() && h.token == holder.token)
        {
            return Ok((
                Acquired {
                    taken_over: None,
                    _active: active,
                },
                probed,
            ));
        }
        if state.liveness.is_gone() {
            let (same, mut stdin) = unchanged(&d, &state);
            let swap = format!(
                "if {same}; then {}; else {}; fi{probing}",
                write_holder(&d, info.len()),
                state_script(&d)
            );
            // The seen holder's token line (when it has one), then the new holder record.
            stdin.extend_from_slice(info.as_bytes());
            let (text, probed) =
                split_probe(&run_with_stdin(env, t, "take over", &swap, Some(&stdin)).await?);
            if text.lines().any(|l| l.trim() == "TAKEN") {
                return Ok((
                    Acquired {
                        taken_over: Some(state),
                        _active: active,
                    },
                    probed,
                ));
            }
            // It changed in between (a heartbeat, another taker): judge again.
            continue;
        }
        if let Some(w) = wait
            && start.elapsed() < w
        {
            pause_before_looking_again(start, w).await;
            continue;
        }
        return Err(held_error(env, &state));
    }
}

/// The pause between two looks at a held lock: [`WAIT_POLL`], shorter near the end of `wait`
/// (at least 100 ms).
async fn pause_before_looking_again(start: std::time::Instant, wait: Duration) {
    tokio::time::sleep(
        WAIT_POLL
            .min(wait.saturating_sub(start.elapsed()))
            .max(Duration::from_millis(100)),
    )
    .await;
}

/// What [`release`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The lock was this token's; it is free now.
    Released,
    /// The lock was not taken.
    NotLocked,
    /// The lock is someone else's (taken over, or released by hand and taken again): left alone.
    NotOurs(Box<Option<LockState>>),
}

/// Releases the lock if `token` holds it: the token is checked and the lock removed in one
/// command on the host; a lock held by another token is left alone.
pub async fn release(env: &Environment, t: &dyn Transport, token: &Token) -> Result<Released> {
    let d = quote(&lock_dir(env));
    let body = format!(
        "if [ ! -d {d} ]; then echo FREE; elif {holds}; then \
           mv {d} {d}.released.$$ && rm -rf {d}.released.$$ && echo RELEASED; else echo OTHER; {state}; fi",
        holds = holds_token(&d),
        state = state_script(&d),
    );
    let text = run_with_stdin(env, t, "release", &body, Some(&token_line(token.as_str()))).await?;
    match text.lines().next().map(str::trim) {
        Some("RELEASED") => Ok(Released::Released),
        Some("FREE") => Ok(Released::NotLocked),
        Some("OTHER") => Ok(Released::NotOurs(Box::new(parse_state(&text)))),
        _ => Err(unexpected("releasing", &text)),
    }
}

/// Releases a lock by hand (`lock release`): only if it is still as `seen` (same holder, no
/// heartbeat since), so that a lock taken again in between is not removed. `false` when it
/// changed (nothing was removed).
pub async fn release_seen(env: &Environment, t: &dyn Transport, seen: &LockState) -> Result<bool> {
    let d = quote(&lock_dir(env));
    let (same, stdin) = unchanged(&d, seen);
    let body = format!(
        "if {same}; then mv {d} {d}.released.$$ && rm -rf {d}.released.$$ && echo RELEASED; fi"
    );
    Ok(run_with_stdin(env, t, "release", &body, Some(&stdin))
        .await?
        .lines()
        .any(|l| l.trim() == "RELEASED"))
}

/// Refreshes the heartbeat of the lock held by `token`; `false` when the lock is not (any
/// longer) held by it.
pub async fn heartbeat(env: &Environment, t: &dyn Transport, token: &Token) -> Result<bool> {
    let d = quote(&lock_dir(env));
    let body = format!(
        "if {} && touch {d}/holder.json; then echo ALIVE; else echo LOST; fi",
        holds_token(&d)
    );
    let text = run_with_stdin(env, t, "refresh", &body, Some(&token_line(token.as_str()))).await?;
    match text.lines().next().map(str::trim) {
        Some("ALIVE") => Ok(true),
        Some("LOST") => Ok(false),
        _ => Err(unexpected("refreshing", &text)),
    }
}

fn unexpected(doing: &str, text: &str) -> Error {
    Error::new(ErrorKind::CommandFailed, format!("unexpected answer {doing} the deploy lock: `{}`", text.trim()))
        .with_hint("the lock's host runs a POSIX shell with `mkdir`, `grep`, `stat` and `touch`: check that it does")
}

/// Refreshes the heartbeat every `every` for as long as it is polled; returns (an error saying
/// so) only when the lock is found to be no longer held by `token`. A host that cannot be
/// reached is a warning (once per outage): the deploy goes on, and another controller may take
/// the lock over after [`STALE_AFTER_BEATS`] missed beats.
pub async fn keep_alive(
    env: &Environment,
    t: &dyn Transport,
    token: &Token,
    every: Duration,
    release: &str,
    events: &dyn EventSink,
) -> Error {
    let every = every.max(Duration::from_millis(100));
    let stale = every.as_secs().max(1) * STALE_AFTER_BEATS;
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match heartbeat(env, t, token).await {
            Ok(true) => {
                if failing {
                    events.emit(&Event::Warning {
                        host: None,
                        message: "the deploy lock's heartbeat is refreshed again".into(),
                    });
                }
                failing = false;
            }
            Ok(false) => {
                return Error::new(
                    ErrorKind::LockHeld,
                    format!(
                        "the deploy lock of `{}` is no longer held by this deploy of `{release}` (released by hand, or taken over after {stale} s without a heartbeat): stopped, so that two deploys do not run at once",
                        env.name
                    ),
                )
                .with_hint(format!(
                    "`cchq {e} lock status` shows who holds it; once that deploy has finished, continue with `cchq {e} deploy --resume {release}`",
                    e = env.name
                ));
            }
            Err(e) => {
                if !failing {
                    events.emit(&Event::Warning {
                        host: None,
                        message: format!("{}; another controller may take the lock over after {stale} s without a heartbeat", e.message()),
                    });
                }
                failing = true;
            }
        }
    }
}

/// What [`release_by_hand`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandReleased {
    /// The lock was not taken.
    NotLocked,
    /// `confirm` said no: nothing was done.
    Declined(LockState),
    /// The lock, as it was, is free now.
    Released(LockState),
}

/// `lock release` (the CLI and the Python bindings): frees the lock when its holder is gone, or
/// with `force` when it may still run; only if it is unchanged since it was looked at. `confirm`
/// is asked (with the lock as seen) before anything is removed.
///
/// # Errors
/// [`ErrorKind::LockHeld`] when the holder may still run and `force` is not set, or when the lock
/// changed meanwhile (nothing released); the lock host's errors.
pub async fn release_by_hand(
    env: &Environment,
    t: &dyn Transport,
    force: bool,
    confirm: &mut (dyn FnMut(&LockState) -> Result<bool> + Send),
) -> Result<HandReleased> {
    let Some(s) = status(env, t).await? else {
        return Ok(HandReleased::NotLocked);
    };
    let holder = s.who();
    if !s.liveness.is_gone() && !force {
        return Err(Error::new(
            ErrorKind::LockHeld,
            format!("the deploy lock of `{}` is held by {holder}, which may still be running: {}", env.name, s.liveness.why()),
        )
        .with_holder(holder)
        .with_hint(format!(
            "wait for that deploy (it is stale in {} s without a heartbeat); only if you know it is dead: `cchq {} lock release --force`",
            s.stale_in_secs(),
            env.name
        )));
    }
    if !confirm(&s)? {
        return Ok(HandReleased::Declined(s));
    }
    if !release_seen(env, t, &s).await? {
        return Err(Error::new(
            ErrorKind::LockHeld,
            format!(
                "the deploy lock of `{}` changed meanwhile: nothing released",
                env.name
            ),
        )
        .with_hint(format!("look again: `cchq {} lock status`", env.name)));
    }
    Ok(HandReleased::Released(s))
}

/// The lock's state, if it is taken.
pub async fn status(env: &Environment, t: &dyn Transport) -> Result<Option<LockState>> {
    let d = quote(&lock_dir(env));
    let text = run(env, t, "read", &state_script(&d)).await?;
    Ok(parse_state(&text))
}

/// Waits until no running deploy holds the lock: looks every few seconds until it is free
/// (`Ok(None)`) or its holder is gone (`Ok(Some(state))`: a deploy would take it over), for at
/// most `wait`. Read-only: it takes nothing, so a deploy started afterwards may still find the
/// lock taken by another that started in between (`deploy --lock-wait` waits and takes at once).
///
/// # Errors
/// [`ErrorKind::LockHeld`] naming the holder when it still holds the lock after `wait`; the lock
/// host's errors.
pub async fn wait_free(
    env: &Environment,
    t: &dyn Transport,
    wait: Duration,
) -> Result<Option<LockState>> {
    let start = std::time::Instant::now();
    loop {
        let Some(state) = status(env, t).await? else {
            return Ok(None);
        };
        if state.liveness.is_gone() {
            return Ok(Some(state));
        }
        if start.elapsed() >= wait {
            return Err(held_error(env, &state));
        }
        pause_before_looking_again(start, wait).await;
    }
}

/// The error for a deploy whose lock could not be released (its host unreachable, say): the
/// lock is probably still held, by a deploy that has ended; says how to go on.
pub fn unreleased(env: &Environment, release: &str, e: &Error) -> (String, String) {
    let h = host(env).unwrap_or_else(|_| "its host".into());
    (
        format!(
            "the deploy lock on `{h}` could not be released ({}): it is probably still held by this deploy",
            e.message()
        ),
        format!(
            "once `{h}` is reachable: `cchq {n} deploy --resume {release}` takes the lock over (its holder has ended; from another machine after {} s without a heartbeat) and continues, or `cchq {n} lock release` frees it",
            HEARTBEAT_INTERVAL.as_secs() * STALE_AFTER_BEATS,
            n = env.name
        ),
    )
}

#[cfg(test)]
mod tests;
