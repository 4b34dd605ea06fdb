//! OpenSSH through the `openssh` crate (native-mux): one ControlMaster per host, commands
//! multiplexed over it.
//!
//! Host keys are checked strictly against the environment's `known_hosts` by default. Connection
//! starts are bounded across all hosts ([`DEFAULT_CONNECT_CONCURRENCY`], fewer through a
//! bastion so that its sshd's `MaxStartups` does not drop them; a connection dropped before the
//! key exchange anyway is tried again after a pause), and channels per host are bounded by the
//! server's `MaxSessions` (10 unless the environment says otherwise). A master that dies (host
//! crashed, network cut) is dropped and re-established on the next command.
//!
//! With [`SshOptions::persist`] (`cchq_ssh_control_persist` in the environment, 60 s unless it
//! says otherwise), masters outlive the process that opened them, as Ansible's `ControlPersist`
//! does: they wait in a private
//! directory ([`persist_dir`]), one folder per host and connection settings, until they have been
//! idle that long, and the next run that connects to the same host with the same settings takes
//! them over instead of connecting again.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use openssh::Session;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, Semaphore};

use super::{Output, Transport, unknown_host};
use crate::command::RemoteCommand;
use crate::error::{Error, ErrorKind, Result};

/// How many masters [`SshTransport::close`] closes at once (`fanout::DEFAULT_FORKS`, the bound of
/// every fan-out).
const CLOSE_AT_ONCE: usize = 256;

/// Where and as whom to connect for one inventory host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The inventory name.
    pub name: String,
    /// The address to connect to (`ansible_host`, else the name).
    pub address: String,
    /// The port (`ansible_port`), if not 22.
    pub port: Option<u16>,
    /// The user to log in as (`ansible_user`, else the environment's remote user).
    pub user: Option<String>,
    /// The private key to use (`ansible_ssh_private_key_file`).
    pub keyfile: Option<PathBuf>,
}

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Unknown or changed keys are refused (the default).
    #[default]
    Strict,
    /// Unknown keys are added, changed keys refused.
    AcceptNew,
    /// No checking at all (`commcare_cloud_strict_host_key_checking: no`).
    Off,
}

/// Settings shared by every connection of an environment.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The known_hosts file to check against (the environment's `known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// The host-key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Extra `ssh_config` options (`(keyword, value)`), e.g. from `commcare_cloud_ssh_args`.
    pub extra_options: Vec<(String, String)>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// At most this many connections are being set up at once, across all hosts.
    pub connect_concurrency: usize,
    /// At most this many channels per host at once (sshd's `MaxSessions`, 10 by default).
    pub max_sessions: usize,
    /// Where control sockets live (masters that end with the transport); `None`: this process's
    /// own folder in cchq's private directory ([`run_dir`]), where folders of dead runs are
    /// cleaned up.
    pub control_dir: Option<PathBuf>,
    /// Keep masters open after [`Transport::close`] for this long of idleness, and take over
    /// the masters earlier runs left ([`persist_dir`]); `None` closes them.
    pub persist: Option<Duration>,
    /// Where kept masters live; `None`: [`persist_dir`].
    pub persist_dir: Option<PathBuf>,
    /// Whether `persist` is cchq's default rather than the operator's choice: then a machine
    /// without a private directory for kept masters closes them instead of failing.
    pub persist_by_default: bool,
}

/// Connections started at once by default (`cchq_ssh_connect_concurrency` changes it). On the
/// test bed, where every host's sshd shares the controller's cores, more at once is no faster
/// (BENCHMARKS.md, "cold connections"); on a real network, where a connection waits on round
/// trips rather than on CPU, more would be.
pub const DEFAULT_CONNECT_CONCURRENCY: usize = 16;

/// Connections started at once when the ssh arguments name a bastion (`ProxyJump`,
/// `ProxyCommand`): under the bastion sshd's default `MaxStartups` (drops from 10 at once, all
/// from 100).
pub const PROXIED_CONNECT_CONCURRENCY: usize = 16;

impl SshOptions {
    /// Whether the extra options send connections through another host (`ProxyJump`,
    /// `ProxyCommand`, other than `none`).
    pub fn through_proxy(&self) -> bool {
        self.extra_options.iter().any(|(k, v)| {
            (k.eq_ignore_ascii_case("proxyjump") || k.eq_ignore_ascii_case("proxycommand"))
                && !v.eq_ignore_ascii_case("none")
        })
    }
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            extra_options: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            connect_concurrency: DEFAULT_CONNECT_CONCURRENCY,
            max_sessions: 10,
            control_dir: None,
            persist: None,
            persist_dir: None,
            persist_by_default: false,
        }
    }
}

impl SshOptions {
    /// Parses ssh command-line arguments (`-o Key=Value`, `-o Key Value`, `-p`, `-i`, `-J`, `-l`,
    /// `-F` is refused) into `ssh_config` options, as `commcare_cloud_ssh_args` lists them.
    pub fn parse_ssh_args(args: &[String]) -> Result<Vec<(String, String)>> {
        let mut words = Vec::new();
        for a in args {
            words.extend(split_ssh_words(a));
        }
        let mut out = Vec::new();
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            // `-oX=y` is `-o` with `X=y`. Split after the second character, not the second byte:
            // `-éx` must not panic (issue 12).
            let second = w
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .and_then(|r| r.chars().next());
            let (flag, inline) = match second {
                Some(c) if w.len() > 1 + c.len_utf8() => {
                    let at = 1 + c.len_utf8();
                    (w[..at].to_owned(), Some(w[at..].to_owned()))
                }
                _ => (w.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| Error::config(format!("ssh argument `{flag}` needs a value")))
            };
            match flag.as_str() {
                "-o" => {
                    let v = value()?;
                    let (k, val) = match v.split_once('=') {
                        Some((k, val)) if !k.contains(char::is_whitespace) => {
                            (k.trim().to_owned(), val.trim().to_owned())
                        }
                        _ => match v.trim().split_once(char::is_whitespace) {
                            Some((k, val)) => (k.to_owned(), val.trim().to_owned()),
                            None => {
                                return Err(Error::config(format!(
                                    "ssh option `{v}` is not `Key=Value`"
                                )));
                            }
                        },
                    };
                    out.push((k, val));
                }
                "-p" => out.push(("Port".into(), value()?)),
                "-i" => out.push(("IdentityFile".into(), value()?)),
                "-J" => out.push(("ProxyJump".into(), value()?)),
                "-l" => out.push(("User".into(), value()?)),
                "-A" => out.push(("ForwardAgent".into(), "yes".into())),
                "-C" => out.push(("Compression".into(), "yes".into())),
                "-q" | "-v" | "-t" | "-T" | "-x" | "-4" | "-6" => {}
                other => {
                    return Err(Error::config(format!(
                        "unsupported ssh argument `{other}` in the environment's ssh args"
                    ))
                    .with_hint("use `-o Key=Value` options"));
                }
            }
        }
        // Each option becomes one line of the generated `ssh_config`.
        if let Some((k, v)) = out.iter().find(|(k, v)| {
            k.is_empty()
                || k.contains(char::is_whitespace)
                || (k.clone() + v).contains(char::is_control)
        }) {
            return Err(Error::config(format!(
                "ssh option `{}` = `{}` is not one `Key=Value` line",
                k.escape_debug(),
                v.escape_debug()
            ))
            .with_hint("write each option as `-o Key=Value` on one line"));
        }
        Ok(out)
    }
}

/// Splits an ssh argument string the way a shell would (the fixtures fold a ProxyCommand over
/// several YAML lines): whitespace separates words, quotes group them, `-o Key=long value` keeps
/// the rest of a ProxyCommand together.
fn split_ssh_words(s: &str) -> Vec<String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("-o") {
        let rest = rest.trim_start();
        if rest.contains('=') || rest.contains(' ') {
            return vec!["-o".to_owned(), rest.to_owned()];
        }
    }
    s.split_whitespace().map(str::to_owned).collect()
}

/// The options of OpenSSH's `ssh` that take a value (its getopt string).
const SSH_OPTIONS_WITH_VALUE: &str = "bcDeEFiIJlLmoOpPQRSwW";

/// Splits what follows the destination on an `ssh` command line the way `ssh` reads it (it parses
/// options again after the destination, up to the first word that is not one): the leading
/// options with their values, and the rest. A `--` ends the options and is dropped.
fn split_ssh_options(args: &[String]) -> Result<(&[String], &[String])> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            return Ok((&args[..i], &args[i + 1..]));
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        i += 1;
        // In `-vL8000:x:80`, `L` takes the rest of the word; in `-vL`, the next word.
        if let Some(k) = flags.find(|c| SSH_OPTIONS_WITH_VALUE.contains(c))
            && k + 1 == flags.len()
        {
            if i == args.len() {
                return Err(Error::usage(format!("ssh option `{a}` needs a value"))
                    .with_hint(format!("write `{a} VALUE`")));
            }
            i += 1;
        }
    }
    Ok((&args[..i], &args[i..]))
}

struct HostConn {
    target: SshTarget,
    session: Mutex<Arc<OnceCell<Arc<Session>>>>,
    channels: Semaphore,
    /// Where this host's kept masters live, when masters are kept.
    keep_dir: Option<PathBuf>,
    /// The folders (control socket and log) of the masters this transport started and does not
    /// keep: removed once [`Transport::close`] has closed them, or when the transport goes.
    folders: Mutex<Vec<tempfile::TempDir>>,
    /// Commands running over the master now, and since when none has been.
    used: Mutex<Use>,
}

/// How a host's master is used: ssh's `ControlPersist` ends a master idle (no session open) for
/// its time, even while this transport still means to use it.
#[derive(Default)]
struct Use {
    active: usize,
    idle_since: Option<std::time::Instant>,
}

/// A command's hold on its host's master: while any is held the master is not idle.
struct InUse<'a>(&'a HostConn);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if let Ok(mut u) = self.0.used.lock() {
            u.active = u.active.saturating_sub(1);
            if u.active == 0 {
                u.idle_since = Some(std::time::Instant::now());
            }
        }
    }
}

/// The directory kept masters live in: `$XDG_RUNTIME_DIR/cchq-ssh`, else `~/.cache/cchq/ssh`,
/// else (or when that path is too long for a socket name) `<tmp>/cchq-ssh-<uid>`; created
/// `0700`, and refused when another user owns it or others may write to it.
///
/// # Errors
/// When no such directory can be made safe.
pub fn persist_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        candidates.push(PathBuf::from(d).join("cchq-ssh"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        candidates.push(PathBuf::from(h).join(".cache/cchq/ssh"));
    }
    candidates.push(std::env::temp_dir().join(format!("cchq-ssh-{}", uid.unwrap_or(0))));
    let mut last = None;
    // A socket path is at most 107 bytes: <dir>/<16 hex>/.ssh-connectionXXXXXX/master.
    for dir in candidates.into_iter().filter(|d| d.as_os_str().len() <= 60) {
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
        match (made, std::fs::symlink_metadata(&dir)) {
            (Ok(()), Ok(m)) if m.is_dir() && Some(m.uid()) == uid && m.mode() & 0o077 == 0 => {
                return Ok(dir);
            }
            (Err(e), _) => last = Some(format!("`{}`: {e}", dir.display())),
            _ => {
                last = Some(format!(
                    "`{}` is not a private directory of this user",
                    dir.display()
                ))
            }
        }
    }
    Err(Error::config(format!("no private directory for kept ssh connections: {}", last.unwrap_or_default()))
        .with_hint("set XDG_RUNTIME_DIR to a directory only you can use, or turn `cchq_ssh_control_persist` off"))
}

/// This process's folder for the control sockets of masters that end with the transport:
/// `<persist_dir>/run/<pid>` (private to the user, like [`persist_dir`]). Folders of runs that are
/// gone (a killed cchq leaves its sockets and, for a while, its masters) are cleaned first: each
/// master still listening is told to exit, then the folder is removed. Falls back to the system's
/// temporary directory when no private directory can be made.
pub fn run_dir() -> PathBuf {
    let Ok(base) = persist_dir() else {
        return std::env::temp_dir();
    };
    let runs = base.join("run");
    if let Ok(entries) = std::fs::read_dir(&runs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let alive = name
                .parse::<u32>()
                .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                clean_stale(&e.path());
            }
        }
    }
    let mine = runs.join(std::process::id().to_string());
    match std::fs::create_dir_all(&mine) {
        Ok(()) => mine,
        Err(_) => std::env::temp_dir(),
    }
}

/// Asks every master whose socket is in `dir` to exit, then removes `dir`.
fn clean_stale(dir: &Path) {
    for socket in kept_sockets(dir) {
        let _ = crate::vault::scrub_env(&mut std::process::Command::new("ssh"))
            .arg("-o")
            .arg(format!("ControlPath={}", socket.display()))
            .args(["-O", "exit", "cchq-stale-master"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    // A master that was still connecting when its run died was not listening yet: end every
    // process of this user whose command line names the folder (only ssh masters do).
    let needle = dir.display().to_string();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.starts_with("ssh") && text.contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    // `ssh -O exit` is answered before the master has unlinked its socket: removing the folder
    // can race with that (an entry gone, or still there, mid-removal). Try again for a moment.
    for _ in 0..40 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && dir.exists() => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            _ => break,
        }
    }
}

/// The folder of `t`'s kept masters: one per host and connection settings, so that a master is
/// only taken over by a run that would have opened the same one.
fn keep_dir(base: &Path, t: &SshTarget, opts: &SshOptions) -> PathBuf {
    use sha2::Digest as _;
    let key = format!(
        "{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
        t.address,
        t.port,
        t.user,
        t.keyfile,
        opts.known_hosts,
        opts.host_key_policy,
        opts.extra_options
    );
    base.join(&hex::encode(sha2::Sha256::digest(key.as_bytes()))[..16])
}

/// The kept masters' sockets in `dir` (newest first).
fn kept_sockets(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ssh-connection")
        })
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                e.path().join("master"),
            )
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// The OpenSSH transport.
pub struct SshTransport {
    hosts: Vec<String>,
    conns: HashMap<String, HostConn>,
    options: SshOptions,
    config_file: Option<tempfile::TempPath>,
    connects: Semaphore,
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTransport")
            .field("hosts", &self.hosts.len())
            .field("options", &self.options)
            .finish()
    }
}

impl SshTransport {
    /// A transport for `targets`; nothing connects until the first command.
    ///
    /// # Errors
    /// A target whose address or user starts with `-` ([`ErrorKind::Usage`]): such a value
    /// (`-oProxyCommand=...`) is an option, which runs a local command, on any ssh command line
    /// that puts it before a `--` (the masters' and `cchq ssh`'s have one). Environments refuse
    /// those values when they load; this is the same guard for targets made by hand.
    pub fn new(targets: Vec<SshTarget>, options: SshOptions) -> Result<Self> {
        for t in &targets {
            let address = t
                .address
                .strip_prefix("ssh://")
                .map_or(t.address.as_str(), |r| {
                    r.rsplit_once('@').map_or(r, |(_, h)| h)
                });
            for (what, word) in [
                ("address", address),
                ("user", t.user.as_deref().unwrap_or("")),
            ] {
                if word.starts_with('-') {
                    return Err(Error::usage(format!(
                        "the ssh {what} of `{}` starts with `-`: `{word}`",
                        t.name
                    ))
                    .with_hint("ssh would read it as an option; give the host's name or address"));
                }
            }
        }
        let config_file = if options.extra_options.is_empty() {
            None
        } else {
            let mut f = tempfile::Builder::new()
                .prefix("cchq-ssh-config.")
                .tempfile()
                .map_err(|e| Error::io("cannot create a temporary ssh config", e))?;
            let mut text =
                String::from("# written by cchq from the environment's ssh args\nHost *\n");
            for (k, v) in &options.extra_options {
                text.push_str(&format!("  {k} {v}\n"));
            }
            text.push_str("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n");
            f.write_all(text.as_bytes())
                .map_err(|e| Error::io("cannot write a temporary ssh config", e))?;
            Some(f.into_temp_path())
        };
        let mut options = options;
        if options.control_dir.is_none() {
            options.control_dir = Some(run_dir());
        }
        let base = match (&options.persist, &options.persist_dir) {
            (None, _) => None,
            (Some(_), Some(dir)) => Some(dir.clone()),
            (Some(_), None) => match persist_dir() {
                Ok(dir) => Some(dir),
                // Kept by default only: without a private directory, masters end with the run.
                Err(_) if options.persist_by_default => {
                    options.persist = None;
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let mut hosts = Vec::new();
        let mut conns = HashMap::new();
        for t in targets {
            hosts.push(t.name.clone());
            conns.insert(
                t.name.clone(),
                HostConn {
                    keep_dir: base.as_deref().map(|b| keep_dir(b, &t, &options)),
                    target: t,
                    session: Mutex::new(Arc::new(OnceCell::new())),
                    channels: Semaphore::new(options.max_sessions.max(1)),
                    used: Mutex::new(Use::default()),
                    folders: Mutex::new(Vec::new()),
                },
            );
        }
        let connects = Semaphore::new(options.connect_concurrency.max(1));
        Ok(Self {
            hosts,
            conns,
            options,
            config_file,
            connects,
        })
    }

    /// The options in use.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// The `ssh` argv (program included) for an interactive session on `host`, with the same
    /// settings the transport uses, and `--` before the destination so that no address is ever
    /// read as an option. `extra` is what `ssh` would take after the destination: its leading
    /// options (`-t`, `-L 8000:localhost:8000`, up to a `--` of its own) go before ours, the rest
    /// (a remote command) after the destination.
    pub fn interactive_argv(
        &self,
        host: &str,
        user: Option<&str>,
        extra: &[String],
    ) -> Result<Vec<String>> {
        let conn = self
            .conns
            .get(host)
            .ok_or_else(|| unknown_host(host, &self.hosts))?;
        let t = &conn.target;
        let mut argv = vec!["ssh".to_owned()];
        argv.extend(self.target_options(t, user));
        let (options, command) = split_ssh_options(extra)?;
        argv.extend(options.iter().cloned());
        argv.push("--".to_owned());
        argv.push(t.address.clone());
        argv.extend(command.iter().cloned());
        Ok(argv)
    }

    /// How long a master lives without a session (`ControlPersist`): the kept time, else two
    /// minutes (a master that is not kept still ends by itself if this process dies without
    /// closing it).
    fn master_idle(&self) -> Duration {
        self.options
            .persist
            .map_or(Duration::from_secs(120), |d| d.max(Duration::from_secs(1)))
    }

    /// Marks a command starting on `conn`'s master. A master left idle for nearly its
    /// `ControlPersist` time (a long step elsewhere: a migration, a rolling restart) is ending or
    /// gone: it is let go (it ends by itself) and the command opens a new one, before anything is
    /// sent, rather than failing as a lost connection.
    fn begin<'c>(&self, conn: &'c HostConn) -> InUse<'c> {
        let idle = self.master_idle();
        let limit = idle.saturating_sub(Duration::from_secs(10)).max(idle / 2);
        if let Ok(mut u) = conn.used.lock() {
            let stale = u.active == 0 && u.idle_since.is_some_and(|t| t.elapsed() >= limit);
            if stale && let Ok(mut cur) = conn.session.lock() {
                let old = std::mem::replace(&mut *cur, Arc::new(OnceCell::new()));
                if let Ok(cell) = Arc::try_unwrap(old)
                    && let Some(s) = cell.into_inner()
                    && let Ok(s) = Arc::try_unwrap(s)
                {
                    drop(s.detach());
                }
            }
            u.active += 1;
        }
        InUse(conn)
    }

    /// How to reach `t` (as `user`, else its own): the config file, the host-key policy and
    /// file, the port, the user and the key. What the master and `cchq ssh` share.
    fn target_options(&self, t: &SshTarget, user: Option<&str>) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(cfg) = &self.config_file {
            a.extend(["-F".to_owned(), cfg.display().to_string()]);
        }
        a.extend([
            "-o".to_owned(),
            format!(
                "StrictHostKeyChecking={}",
                policy_word(self.options.host_key_policy)
            ),
        ]);
        if let Some(kh) = &self.options.known_hosts {
            a.extend([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", kh.display()),
            ]);
        }
        if let Some(p) = t.port {
            a.extend(["-p".to_owned(), p.to_string()]);
        }
        if let Some(u) = user.or(t.user.as_deref()) {
            a.extend(["-l".to_owned(), u.to_owned()]);
        }
        if let Some(k) = &t.keyfile {
            a.extend([
                "-o".to_owned(),
                "IdentitiesOnly=yes".to_owned(),
                "-i".to_owned(),
                k.display().to_string(),
            ]);
        }
        a
    }

    /// The master's `ssh` arguments for `conn` in `folder` (its control socket `master`, its log
    /// `log`): what the `openssh` crate's `SessionBuilder` would give, with a `--` before the
    /// destination.
    fn master_args(&self, conn: &HostConn, folder: &Path) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec![
            "-E".into(),
            folder.join("log").into(),
            "-S".into(),
            folder.join("master").into(),
        ];
        let options = [
            "-M".to_owned(),
            "-f".to_owned(),
            "-N".to_owned(),
            "-o".to_owned(),
            format!("ControlPersist={}", self.master_idle().as_secs().max(1)),
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            format!(
                "ConnectTimeout={}",
                self.options.connect_timeout.as_secs().max(1)
            ),
            "-o".to_owned(),
            "ServerAliveInterval=15".to_owned(),
        ];
        a.extend(options.into_iter().map(Into::into));
        a.extend(
            self.target_options(&conn.target, None)
                .into_iter()
                .map(Into::into),
        );
        a.extend(["--".into(), conn.target.address.clone().into()]);
        a
    }

    /// Starts `conn`'s master (`ssh -M -f -N`, in a new `.ssh-connection*` folder of `dir`) and
    /// takes it as a native-mux session. cchq starts it rather than the `openssh` crate, whose
    /// master inherits this process's whole environment: this one gets it without the vault
    /// password's variables ([`crate::vault::scrub_env`]), which a master (alive for its
    /// `ControlPersist` time after cchq ends) and any `ProxyCommand` it runs would otherwise
    /// hold. `Err` is what ssh said (its log), or why it could not be started.
    async fn launch_master(
        &self,
        conn: &HostConn,
        dir: &Path,
    ) -> std::result::Result<(Session, tempfile::TempDir), String> {
        let folder = tempfile::Builder::new()
            .prefix(".ssh-connection")
            .tempdir_in(dir)
            .map_err(|e| format!("cannot create a control folder in `{}`: {e}", dir.display()))?;
        let mut cmd = std::process::Command::new("ssh");
        crate::vault::scrub_env(&mut cmd)
            .args(self.master_args(conn, folder.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // It forks once connected: the process started ends then, the master goes on.
        let status = tokio::process::Command::from(cmd)
            .status()
            .await
            .map_err(|e| format!("cannot run `ssh`: {e}"))?;
        if !status.success() {
            let log = tokio::fs::read_to_string(folder.path().join("log"))
                .await
                .unwrap_or_default();
            return Err(master_failure(&log, status));
        }
        let session = Session::resume_mux(
            folder.path().join("master").into_boxed_path(),
            Some(folder.path().join("log").into_boxed_path()),
        );
        Ok((session, folder))
    }

    async fn session(
        &self,
        conn: &HostConn,
    ) -> Result<(Arc<Session>, Arc<OnceCell<Arc<Session>>>)> {
        let cell = conn
            .session
            .lock()
            .map_err(|_| Error::internal("ssh session lock poisoned"))?
            .clone();
        let session = cell
            .get_or_try_init(|| async {
                if let Some(kept) = take_over(conn).await {
                    return Ok(Arc::new(kept));
                }
                let _permit = self
                    .connects
                    .acquire()
                    .await
                    .map_err(|_| Error::internal("connect limit closed"))?;
                let t = &conn.target;
                let dir = conn
                    .keep_dir
                    .as_deref()
                    .or(self.options.control_dir.as_deref());
                // The folder may have been removed since (another transport of this process
                // closed and left it empty).
                if let Some(dir) = dir {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| Error::io(format!("cannot create `{}`", dir.display()), e))?;
                }
                let dir = dir.unwrap_or(Path::new("/tmp"));
                let mut attempt = 0;
                loop {
                    match self.launch_master(conn, dir).await {
                        Ok((s, folder)) => {
                            if conn.keep_dir.is_some() {
                                // Kept: the next run takes it over from there.
                                let _ = folder.keep();
                            } else if let Ok(mut f) = conn.folders.lock() {
                                f.push(folder);
                            }
                            return Ok(Arc::new(s));
                        }
                        Err(e) if attempt < CONNECT_RETRIES && dropped_at_start(&e) => {
                            attempt += 1;
                            tokio::time::sleep(retry_pause(attempt)).await;
                        }
                        Err(e) => return Err(connect_error(t, &e, &self.options)),
                    }
                }
            })
            .await?
            .clone();
        Ok((session, cell))
    }

    /// Forgets a dead master so that the next command reconnects.
    fn forget(&self, conn: &HostConn, dead: &Arc<OnceCell<Arc<Session>>>) {
        if let Ok(mut cur) = conn.session.lock()
            && Arc::ptr_eq(&cur, dead)
        {
            *cur = Arc::new(OnceCell::new());
        }
    }
}

/// How many times a connection dropped before the key exchange is tried again.
const CONNECT_RETRIES: u32 = 3;

/// Whether ssh's failure is a connection the server (or a bastion in between) closed before the
/// key exchange: what sshd's `MaxStartups` does to unauthenticated connections past its limit
/// (randomly from 10 at once by default), so that starting many connections through one
/// bastion loses some. Worth another try after a pause; nothing was run.
fn dropped_at_start(detail: &str) -> bool {
    let d = detail.to_lowercase();
    d.contains("kex_exchange_identification")
        || d.contains("ssh_exchange_identification")
        || (d.contains("connection closed by") && !d.contains("authenticat"))
        || (d.contains("connection reset by peer") && !d.contains("authenticat"))
}

/// The pause before the `attempt`th retry: 100 ms doubling, with up to as much again of jitter
/// so that the connections dropped together do not come back together.
fn retry_pause(attempt: u32) -> Duration {
    let base = 100u64 << attempt.saturating_sub(1).min(6);
    let mut b = [0u8; 2];
    let jitter = getrandom::fill(&mut b).map_or(0, |()| u64::from(u16::from_le_bytes(b)) % base);
    Duration::from_millis(base + jitter)
}

/// A master an earlier run kept for `conn`'s host, alive; dead ones found on the way are removed.
async fn take_over(conn: &HostConn) -> Option<Session> {
    let dir = conn.keep_dir.clone()?;
    // Reading the folder is file I/O: off the async threads.
    let sockets = tokio::task::spawn_blocking(move || kept_sockets(&dir))
        .await
        .unwrap_or_default();
    for socket in sockets {
        let session = Session::resume_mux(socket.clone().into_boxed_path(), None);
        if session.check().await.is_ok() {
            return Some(session);
        }
        // Not answering. Detach so that nothing is sent to it.
        drop(session.detach());
        // A young folder may be another run's master still starting (its socket not made yet):
        // removing it would fail that run. Only an older one is dead (idle timeout, host gone).
        let modified = match socket.parent() {
            Some(f) => tokio::fs::metadata(f)
                .await
                .ok()
                .and_then(|m| m.modified().ok()),
            None => None,
        };
        let young = modified
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < STARTING_MASTER_GRACE);
        if young {
            continue;
        }
        if let Some(folder) = socket.parent() {
            let _ = tokio::fs::remove_dir_all(folder).await;
        }
    }
    None
}

/// How long a kept master's folder without a live master is taken for one still starting
/// (another run's, at the same time), and left alone: longer than a connection attempt.
const STARTING_MASTER_GRACE: Duration = Duration::from_secs(60);

fn policy_word(p: HostKeyPolicy) -> &'static str {
    match p {
        HostKeyPolicy::Strict => "yes",
        HostKeyPolicy::AcceptNew => "accept-new",
        HostKeyPolicy::Off => "no",
    }
}

/// A master that could not be started, in words (`detail`: what ssh said, [`master_failure`]),
/// with a hint from it.
fn connect_error(t: &SshTarget, detail: &str, opts: &SshOptions) -> Error {
    let who = match &t.user {
        Some(u) => format!("{u}@{}", t.address),
        None => t.address.clone(),
    };
    let port = t.port.map_or_else(String::new, |p| format!(":{p}"));
    let mut err = Error::connection(format!(
        "cannot connect to `{}` ({who}{port}): {detail}",
        t.name
    ));
    let lower = detail.to_lowercase();
    err = if lower.contains("host key verification failed") || lower.contains("host key") {
        let kh = opts.known_hosts.as_ref().map_or_else(
            || "~/.ssh/known_hosts".to_owned(),
            |p| p.display().to_string(),
        );
        err.with_hint(format!("the host key of `{}` is not in `{kh}` or has changed; check it and add the right key there", t.address))
    } else if lower.contains("permission denied") {
        err.with_hint("the key was refused: check `ansible_user` / `commcare_cloud_remote_user` and `ansible_ssh_private_key_file`")
    } else if lower.contains("refused")
        || lower.contains("timed out")
        || lower.contains("no route")
        || lower.contains("unreachable")
    {
        err.with_hint(format!(
            "is the host up and sshd listening on {}{port}?",
            t.address
        ))
    } else {
        err.with_hint(
            "run `ssh -v` to the host to see why, or check the environment's ssh settings",
        )
    };
    err
}

/// What a master that did not start said: its log without the lines that are no failure
/// (`Warning: Permanently added ...`) and ssh's `ssh: ` prefix, else its exit status.
fn master_failure(log: &str, status: std::process::ExitStatus) -> String {
    let said: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map(|l| l.strip_prefix("ssh: ").unwrap_or(l))
        .collect();
    if said.is_empty() {
        format!("ssh ended with {status} and said nothing")
    } else {
        said.join("; ")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

#[async_trait]
impl Transport for SshTransport {
    fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        self.run(host, cmd, None).await
    }

    async fn exec_lines(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: &dyn super::LineSink,
    ) -> Result<Output> {
        self.run(host, cmd, Some(on_line)).await
    }

    async fn close(&self) -> Result<()> {
        let mut sessions = Vec::new();
        for conn in self.conns.values() {
            if let Ok(mut cur) = conn.session.lock() {
                let old = std::mem::replace(&mut *cur, Arc::new(OnceCell::new()));
                if let Ok(cell) = Arc::try_unwrap(old)
                    && let Some(s) = cell.into_inner()
                    && let Ok(s) = Arc::try_unwrap(s)
                {
                    sessions.push(s);
                }
            }
        }
        if self.options.persist.is_some() {
            // Kept for the next run: they end by themselves once idle for `persist`.
            for s in sessions {
                drop(s.detach());
            }
        } else {
            // At most `CLOSE_AT_ONCE` at a time.
            crate::bounded::bounded(sessions.into_iter().map(Session::close), CLOSE_AT_ONCE).await;
            // Their folders (socket, log) go with them.
            for conn in self.conns.values() {
                if let Ok(mut f) = conn.folders.lock() {
                    f.clear();
                }
            }
        }
        // This run's folder of control sockets, once empty (a later run cleans it otherwise).
        if let Some(dir) = &self.options.control_dir
            && dir.parent().is_some_and(|p| p.ends_with("run"))
        {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }
}

impl SshTransport {
    /// Runs `cmd` (see [`Transport::exec_lines`] for `on_line`).
    async fn run(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: Option<&dyn super::LineSink>,
    ) -> Result<Output> {
        let conn = self
            .conns
            .get(host)
            .ok_or_else(|| unknown_host(host, &self.hosts))?;
        let _in_use = self.begin(conn);
        let (session, cell) = self.session(conn).await?;
        let _channel = conn
            .channels
            .acquire()
            .await
            .map_err(|_| Error::internal("channel limit closed"))?;
        let script = cmd.to_shell();
        let run = async {
            let mut c = session.raw_command(&script);
            c.stdin(if cmd.stdin_data().is_some() {
                openssh::Stdio::piped()
            } else {
                openssh::Stdio::null()
            })
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
            let mut child = c.spawn().await?;
            if let (Some(data), Some(mut stdin)) = (cmd.stdin_data(), child.stdin().take()) {
                let data = data.to_vec();
                tokio::spawn(async move {
                    let _ = stdin.write_all(&data).await;
                    let _ = stdin.shutdown().await;
                });
            }
            // Read both streams while waiting (a full pipe would block the remote process), and
            // keep exit code 127 as a result: the crate reports it as an error and drops output.
            let (out, err) = (child.stdout().take(), child.stderr().take());
            let (stdout, stderr) = futures::try_join!(
                super::read_lines(out, super::Stream::Stdout, on_line),
                super::read_lines(err, super::Stream::Stderr, on_line)
            )
            .map_err(openssh::Error::ChildIo)?;
            let code = match child.wait().await {
                Ok(status) => status.code(),
                Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(127)
                }
                Err(e) => return Err(e),
            };
            Ok::<_, openssh::Error>(Output {
                exit_code: code,
                stdout,
                stderr,
            })
        };
        match super::with_timeout(host, cmd, run).await? {
            Ok(out) => Ok(out),
            Err(e) => {
                let lost = session.check().await.is_err();
                if lost {
                    self.forget(conn, &cell);
                }
                let what = if lost {
                    "lost the connection to"
                } else {
                    "ssh failed on"
                };
                Err(Error::new(
                    ErrorKind::Connection,
                    format!("{what} `{host}` while running `{cmd}`: {}", error_chain(&e)),
                )
                .with_hint("the command may or may not have run; check the host, then retry"))
            }
        }
    }
}

/// Runs an interactive `ssh` with the terminal attached; returns its exit code.
pub fn run_interactive(argv: &[String]) -> Result<i32> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::internal("empty ssh argv"))?;
    let status = crate::vault::scrub_env(&mut std::process::Command::new(program))
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| {
            Error::io("cannot run `ssh`", e)
                .with_hint("install the OpenSSH client (`apt-get install openssh-client`)")
        })?;
    Ok(status.code().unwrap_or(255))
}

/// The path of the generated ssh config file, if the environment needed one.
impl SshTransport {
    /// The generated `ssh_config` file, when the environment has extra ssh options.
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_args_from_the_fixture_parse() {
        let args = vec![
            "-o UserKnownHostsFile=/dev/null".to_owned(),
            "-o StrictHostKeyChecking=no".to_owned(),
            "-o ProxyCommand=ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -W %h:%p -p 2222 admin@localhost".to_owned(),
        ];
        let opts = SshOptions::parse_ssh_args(&args).unwrap();
        assert_eq!(opts[0], ("UserKnownHostsFile".into(), "/dev/null".into()));
        assert_eq!(opts[2].0, "ProxyCommand");
        assert!(opts[2].1.ends_with("admin@localhost"));
    }

    #[test]
    fn a_bastion_in_the_ssh_args_is_a_proxy() {
        let with = |args: &[&str]| SshOptions {
            extra_options: SshOptions::parse_ssh_args(
                &args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
            )
            .unwrap(),
            ..SshOptions::default()
        };
        assert!(with(&["-o ProxyJump=bastion"]).through_proxy());
        assert!(with(&["-o proxycommand=ssh -W %h:%p b"]).through_proxy());
        assert!(!with(&["-o ProxyJump=none"]).through_proxy());
        assert!(!with(&["-o StrictHostKeyChecking=no"]).through_proxy());
        assert_eq!(
            SshOptions::default().connect_concurrency,
            DEFAULT_CONNECT_CONCURRENCY
        );
    }

    /// What sshd's `MaxStartups` (or a bastion's) does to a connection is retried; a refused
    /// key, a bad host key or a dead host is not.
    #[test]
    fn connections_dropped_before_the_key_exchange_are_retried() {
        for d in [
            "kex_exchange_identification: read: Connection reset by peer",
            "kex_exchange_identification: Connection closed by remote host",
            "ssh_exchange_identification: Connection closed by remote host",
            "Connection closed by 10.0.0.1 port 22",
        ] {
            assert!(dropped_at_start(d), "{d}");
        }
        for d in [
            "Permission denied (publickey)",
            "Host key verification failed.",
            "connect to host 10.0.0.1 port 22: Connection refused",
            "Connection closed by authenticating user cchq 10.0.0.1 port 22 [preauth]",
        ] {
            assert!(!dropped_at_start(d), "{d}");
        }
        for attempt in 1..=CONNECT_RETRIES {
            let base = Duration::from_millis(100 << (attempt - 1));
            let p = retry_pause(attempt);
            assert!(p >= base && p < base * 2, "{attempt}: {p:?}");
        }
    }

    #[test]
    fn bad_ssh_args_are_config_errors() {
        let err = SshOptions::parse_ssh_args(&["-F /etc/x".to_owned()]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    /// Issue 12: `commcare_cloud_ssh_args: ["-éx"]` panicked slicing inside `é`.
    #[test]
    fn ssh_args_with_multibyte_characters_do_not_panic() {
        let err = SshOptions::parse_ssh_args(&["-éx".to_owned()]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(
            err.message(),
            "unsupported ssh argument `-é` in the environment's ssh args"
        );
        assert_eq!(
            SshOptions::parse_ssh_args(&["-oUser=é".to_owned()]).unwrap(),
            [("User".to_owned(), "é".to_owned())]
        );
        assert_eq!(
            SshOptions::parse_ssh_args(&["-pé".to_owned()]).unwrap(),
            [("Port".to_owned(), "é".to_owned())]
        );
        assert!(SshOptions::parse_ssh_args(&["-é".to_owned()]).is_err());
        assert!(SshOptions::parse_ssh_args(&["é".to_owned(), "--é".to_owned()]).is_err());
        assert!(
            SshOptions::parse_ssh_args(&["-o".to_owned(), "User=a\nProxyCommand x".to_owned()])
                .is_err()
        );
    }

    #[test]
    fn interactive_argv_carries_the_settings() {
        let t = SshTransport::new(
            vec![SshTarget {
                name: "web1".into(),
                address: "127.0.0.11".into(),
                port: Some(2222),
                user: Some("ansible".into()),
                keyfile: Some("/k".into()),
            }],
            SshOptions {
                known_hosts: Some("/env/known_hosts".into()),
                ..SshOptions::default()
            },
        )
        .unwrap();
        let argv = t.interactive_argv("web1", None, &["-t".into()]).unwrap();
        assert_eq!(
            argv.join(" "),
            "ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/env/known_hosts -p 2222 -l ansible -o IdentitiesOnly=yes -i /k -t -- 127.0.0.11"
        );
        assert_eq!(
            t.interactive_argv("nope", None, &[]).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    fn target(address: &str, user: Option<&str>) -> SshTarget {
        SshTarget {
            name: "web1".into(),
            address: address.into(),
            port: None,
            user: user.map(Into::into),
            keyfile: None,
        }
    }

    /// Issue 12: the destination always follows `--`, so an address is never read as an option.
    #[test]
    fn interactive_argv_puts_the_destination_after_a_double_dash() {
        let t = SshTransport::new(vec![target("10.0.0.1", None)], SshOptions::default()).unwrap();
        let argv = |extra: &[&str]| {
            let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
            t.interactive_argv("web1", None, &extra).unwrap().join(" ")
        };
        let base = "ssh -o StrictHostKeyChecking=yes";
        assert_eq!(argv(&[]), format!("{base} -- 10.0.0.1"));
        assert_eq!(argv(&["ls", "-la"]), format!("{base} -- 10.0.0.1 ls -la"));
        assert_eq!(
            argv(&["-t", "--", "sudo", "-iu", "cchq"]),
            format!("{base} -t -- 10.0.0.1 sudo -iu cchq")
        );
        assert_eq!(
            argv(&["-L", "8000:localhost:80", "-v", "top"]),
            format!("{base} -L 8000:localhost:80 -v -- 10.0.0.1 top")
        );
        assert_eq!(
            argv(&["-vL8000:x:80", "-A", "-o", "X=y", "uptime"]),
            format!("{base} -vL8000:x:80 -A -o X=y -- 10.0.0.1 uptime")
        );
        assert_eq!(
            t.interactive_argv("web1", None, &["-t".into(), "-o".into()])
                .unwrap_err()
                .kind(),
            ErrorKind::Usage
        );
        assert_eq!(argv(&["-", "x"]), format!("{base} -- 10.0.0.1 - x"));
    }

    #[test]
    fn targets_starting_with_a_dash_are_refused() {
        for (address, user) in [
            ("-oProxyCommand=touch /tmp/x", None),
            ("ssh://-oX", None),
            ("ssh://u@-oX", None),
            ("h", Some("-oX")),
        ] {
            let e =
                SshTransport::new(vec![target(address, user)], SshOptions::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Usage, "{address}");
            assert!(e.message().contains("starts with `-`"), "{e}");
        }
    }
}
