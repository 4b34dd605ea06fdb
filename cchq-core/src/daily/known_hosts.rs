//! `update-local-known-hosts`: fetches the hosts' keys (`ssh-keyscan`) into the environment's
//! `known_hosts`, showing what changed.
//!
//! commcare-cloud's command rewrites the file with whatever the scan returned, a changed key
//! included (it trusts the network at that moment). cchq adds new keys, keeps the ones that
//! match, and refuses the whole update when a key changed, unless `replace`: a changed host key
//! is what a man in the middle looks like, so the operator checks it first. Lines it does not
//! manage (hashed names, `@cert-authority` / `@revoked`, comments) are kept as they are. A host
//! whose scan fails keeps its keys. Names are the ones ssh looks up: the address, or
//! `[address]:port` off port 22.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest as _;

use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::ssh::SshTarget;

/// One `name[,name...] type key [comment]` line of a `known_hosts` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    names: Vec<String>,
    key_type: String,
    key: String,
    rest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Entry(Entry),
    Other(String),
}

fn parse_line(line: &str) -> Line {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with('@') || t.starts_with('|') {
        return Line::Other(line.to_owned());
    }
    let mut words = t.splitn(4, char::is_whitespace);
    match (words.next(), words.next(), words.next()) {
        (Some(names), Some(key_type), Some(key)) => Line::Entry(Entry {
            names: names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
            key_type: key_type.to_owned(),
            key: key.to_owned(),
            rest: words.next().unwrap_or("").trim().to_owned(),
        }),
        _ => Line::Other(line.to_owned()),
    }
}

fn render_entry(e: &Entry) -> String {
    let mut s = format!("{} {} {}", e.names.join(","), e.key_type, e.key);
    if !e.rest.is_empty() {
        s.push(' ');
        s.push_str(&e.rest);
    }
    s
}

/// OpenSSH's fingerprint of a base64 key: `SHA256:` and the unpadded base64 of its SHA-256.
pub fn fingerprint(key: &str) -> String {
    match crate::command::base64_decode(key) {
        Some(blob) => format!(
            "SHA256:{}",
            crate::command::base64(&sha2::Sha256::digest(&blob)).trim_end_matches('=')
        ),
        None => format!("(not base64: {key})"),
    }
}

/// The name ssh looks a target up by.
pub fn known_name(t: &SshTarget) -> String {
    match t.port {
        Some(p) if p != 22 => format!("[{}]:{p}", t.address),
        _ => t.address.clone(),
    }
}

/// What happened to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// New: added.
    Added,
    /// The same key is already there.
    Unchanged,
    /// A different key is there; refused (without `replace`).
    Changed,
    /// A different key was there; replaced (`replace`).
    Replaced,
}

/// One key of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The inventory host.
    pub host: String,
    /// The name in `known_hosts` (address, or `[address]:port`).
    pub name: String,
    /// The key type (`ssh-ed25519`).
    pub key_type: String,
    /// What happened.
    pub status: Status,
    /// The fingerprint of the key that was there, when one was.
    pub old: Option<String>,
    /// The fingerprint of the key the host gave.
    pub new: String,
}

/// A host whose keys could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The inventory host.
    pub host: String,
    /// Why.
    pub error: String,
}

/// A key removed by `prune`: its name is no inventory host's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The names of its line.
    pub name: String,
    /// The key type.
    pub key_type: String,
    /// The key's fingerprint.
    pub fingerprint: String,
}

/// The outcome: what changed and the file's new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Every key the hosts gave, in host order.
    pub changes: Vec<Change>,
    /// Keys removed because no inventory host has their names (`prune`).
    pub removed: Vec<Removed>,
    /// Hosts whose scan failed (their keys are kept).
    pub failed: Vec<Failure>,
    /// The file's new text.
    pub text: String,
}

impl Update {
    /// Keys that changed and were not replaced.
    pub fn refused(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| c.status == Status::Changed)
            .collect()
    }

    /// Whether the file would change.
    pub fn changes_file(&self) -> bool {
        !self.removed.is_empty()
            || self
                .changes
                .iter()
                .any(|c| matches!(c.status, Status::Added | Status::Replaced))
    }
}

/// Merges scanned keys into the `existing` text of a `known_hosts` file. `scanned` holds, per
/// host, its name and `ssh-keyscan`'s output (or why the scan failed). Keys of other names are
/// never touched, unless `prune` lists the names to keep: then plain lines none of whose names
/// is in it go (hashed lines and markers stay); with `replace`, a changed key's name is taken
/// out of its old line (the line goes when no name is left) and the new key added.
pub fn merge(
    existing: &str,
    scanned: &[(String, String, std::result::Result<String, String>)],
    replace: bool,
    prune: Option<&[String]>,
) -> Update {
    let mut lines: Vec<Line> = existing.lines().map(parse_line).collect();
    let mut removed = Vec::new();
    if let Some(keep) = prune {
        lines.retain(|l| match l {
            Line::Entry(e) if !e.names.iter().any(|n| keep.contains(n)) => {
                removed.push(Removed {
                    name: e.names.join(","),
                    key_type: e.key_type.clone(),
                    fingerprint: fingerprint(&e.key),
                });
                false
            }
            _ => true,
        });
    }
    let mut changes = Vec::new();
    let mut failed = Vec::new();
    let mut added: Vec<Entry> = Vec::new();
    for (host, name, result) in scanned {
        let text = match result {
            Ok(t) => t,
            Err(e) => {
                failed.push(Failure {
                    host: host.clone(),
                    error: e.clone(),
                });
                continue;
            }
        };
        let mut keys: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| match parse_line(l) {
                Line::Entry(e) if e.names.iter().any(|n| n == name) => Some((e.key_type, e.key)),
                _ => None,
            })
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            failed.push(Failure {
                host: host.clone(),
                error: format!("`ssh-keyscan` returned no key for `{name}`"),
            });
            continue;
        }
        for (key_type, key) in keys {
            let holders: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter_map(|(i, l)| match l {
                    Line::Entry(e)
                        if e.key_type == key_type && e.names.iter().any(|n| n == name) =>
                    {
                        Some(i)
                    }
                    _ => None,
                })
                .collect();
            let same = holders
                .iter()
                .any(|&i| matches!(&lines[i], Line::Entry(e) if e.key == key));
            let old = holders.iter().find_map(|&i| match &lines[i] {
                Line::Entry(e) if e.key != key => Some(fingerprint(&e.key)),
                _ => None,
            });
            let status = match (holders.is_empty(), same, old.is_some()) {
                (true, _, _) => Status::Added,
                (false, true, false) => Status::Unchanged,
                _ if replace => Status::Replaced,
                _ => Status::Changed,
            };
            if status == Status::Replaced {
                for &i in &holders {
                    if let Line::Entry(e) = &mut lines[i] {
                        e.names.retain(|n| n != name);
                    }
                }
            }
            if matches!(status, Status::Added | Status::Replaced) {
                added.push(Entry {
                    names: vec![name.clone()],
                    key_type: key_type.clone(),
                    key: key.clone(),
                    rest: String::new(),
                });
            }
            changes.push(Change {
                host: host.clone(),
                name: name.clone(),
                key_type,
                status,
                old,
                new: fingerprint(&key),
            });
        }
    }
    let mut text = String::new();
    for l in &lines {
        match l {
            Line::Other(s) => {
                text.push_str(s);
                text.push('\n');
            }
            Line::Entry(e) if e.names.is_empty() => {}
            Line::Entry(e) => {
                text.push_str(&render_entry(e));
                text.push('\n');
            }
        }
    }
    for e in &added {
        text.push_str(&render_entry(e));
        text.push('\n');
    }
    Update {
        changes,
        removed,
        failed,
        text,
    }
}

/// `ssh-keyscan` of each target (at most 32 at once), each with `timeout_secs`: `(host, name,
/// output or error)`.
pub fn keyscan(
    targets: &[SshTarget],
    timeout_secs: u64,
) -> Vec<(String, String, std::result::Result<String, String>)> {
    let scan = |t: &SshTarget| {
        let name = known_name(t);
        let mut cmd = std::process::Command::new("ssh-keyscan");
        crate::vault::scrub_env(&mut cmd)
            .arg("-T")
            .arg(timeout_secs.max(1).to_string());
        if let Some(p) = t.port {
            cmd.arg("-p").arg(p.to_string());
        }
        cmd.arg("--")
            .arg(&t.address)
            .stdin(std::process::Stdio::null());
        let result = match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("`ssh-keyscan` is not installed on this machine".to_owned())
            }
            Err(e) => Err(format!("cannot run `ssh-keyscan`: {e}")),
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text
                    .lines()
                    .any(|l| matches!(parse_line(l), Line::Entry(_)))
                {
                    Ok(text)
                } else {
                    let why = String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .filter(|l| !l.starts_with('#'))
                        .collect::<Vec<_>>()
                        .join("; ");
                    Err(format!(
                        "no key from `{name}`{}",
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    ))
                }
            }
        };
        (t.name.clone(), name, result)
    };
    let mut out = Vec::new();
    for chunk in targets.chunks(32) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|t| s.spawn(move || scan(t))).collect();
            for h in handles {
                if let Ok(r) = h.join() {
                    out.push(r);
                }
            }
        });
    }
    out
}

/// The environment's `known_hosts` path (`<env>/known_hosts`, also when it does not exist yet).
pub fn path(env: &Environment) -> PathBuf {
    env.known_hosts
        .clone()
        .unwrap_or_else(|| env.dir.join("known_hosts"))
}

/// Scans `hosts` and merges their keys into the environment's `known_hosts`; writes it (keeping
/// its mode, atomically) unless `dry_run`, or when a key changed without `replace` (then nothing
/// is written and the caller reports [`Update::refused`]). With `prune`, keys whose names are no
/// inventory host's (as ssh names it) are removed, as commcare-cloud's command does.
///
/// # Errors
/// The file cannot be read or written ([`ErrorKind::Io`]); a host that is local
/// (`ansible_connection=local`) is skipped, not an error.
pub fn update(
    env: &Environment,
    hosts: &[String],
    replace: bool,
    dry_run: bool,
    prune: bool,
) -> Result<Update> {
    let file = path(env);
    let existing = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("cannot read `{}`", file.display()), e)),
    };
    let targets: Vec<SshTarget> = hosts
        .iter()
        .filter_map(|h| env.host_or_address(h).into_ssh_target())
        .collect();
    let keep: Vec<String> = env
        .inventory
        .hosts()
        .filter_map(|h| env.host_or_address(&h.name).into_ssh_target())
        .map(|t| known_name(&t))
        .collect();
    let update = merge(
        &existing,
        &keyscan(&targets, 10),
        replace,
        prune.then_some(keep.as_slice()),
    );
    if !dry_run && update.refused().is_empty() && update.changes_file() {
        write(&file, &update.text)?;
    }
    Ok(update)
}

fn write(file: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mode = std::fs::metadata(file)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    let err = |e| Error::io(format!("cannot write `{}`", file.display()), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".known_hosts.")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(err)?;
    tmp.persist(file).map_err(|e| err(e.error))?;
    Ok(())
}

/// The error for keys that changed (nothing written).
pub fn refused_error(env: &Environment, refused: &[&Change]) -> Error {
    let list: Vec<String> = refused
        .iter()
        .map(|c| {
            format!(
                "`{}` ({}) {}: {} -> {}",
                c.host,
                c.name,
                c.key_type,
                c.old.as_deref().unwrap_or("?"),
                c.new
            )
        })
        .collect();
    Error::new(
        ErrorKind::CommandFailed,
        format!("{} host key(s) changed; `{}` left as it was:\n  {}", refused.len(), path(env).display(), list.join("\n  ")),
    )
    .with_hint("a changed key is what a man in the middle looks like: check the new fingerprints on the hosts (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then run again with --replace")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGJ0ZXN0a2V5YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi";

    fn scan(
        host: &str,
        name: &str,
        key: &str,
    ) -> (String, String, std::result::Result<String, String>) {
        (
            host.to_owned(),
            name.to_owned(),
            Ok(format!(
                "# {name}:22 SSH-2.0-OpenSSH_9.2\n{name} ssh-ed25519 {key}\n"
            )),
        )
    }

    #[test]
    fn fingerprints_are_openssh_s() {
        // `ssh-keygen -lf` of the key above.
        let f = fingerprint(ED_A);
        assert!(
            f.starts_with("SHA256:") && !f.ends_with('=') && f.len() == 50,
            "{f}"
        );
    }

    #[test]
    fn new_keys_are_added_and_known_ones_kept() {
        let existing = "# ours\n10.0.0.1 ssh-ed25519 AAAAold\n|1|hashed|entry ssh-rsa AAAA\n";
        let u = merge(existing, &[scan("web1", "10.0.0.2", ED_A)], false, None);
        assert_eq!(u.changes[0].status, Status::Added);
        assert_eq!(u.text, format!("{existing}10.0.0.2 ssh-ed25519 {ED_A}\n"));
        let again = merge(&u.text, &[scan("web1", "10.0.0.2", ED_A)], false, None);
        assert_eq!(again.changes[0].status, Status::Unchanged);
        assert!(!again.changes_file());
        assert_eq!(again.text, u.text);
    }

    #[test]
    fn a_changed_key_is_refused_unless_replaced() {
        let existing = format!("10.0.0.2,web1 ssh-ed25519 {ED_A}\n");
        let u = merge(&existing, &[scan("web1", "10.0.0.2", ED_B)], false, None);
        assert_eq!(u.changes[0].status, Status::Changed);
        assert_eq!(
            u.changes[0].old.as_deref(),
            Some(fingerprint(ED_A).as_str())
        );
        assert_eq!(u.refused().len(), 1);
        let u = merge(&existing, &[scan("web1", "10.0.0.2", ED_B)], true, None);
        assert_eq!(u.changes[0].status, Status::Replaced);
        // The other name of the old line keeps the old key; the address gets the new one.
        assert_eq!(
            u.text,
            format!("web1 ssh-ed25519 {ED_A}\n10.0.0.2 ssh-ed25519 {ED_B}\n")
        );
    }

    #[test]
    fn a_failed_scan_keeps_the_keys_and_is_reported() {
        let existing = format!("10.0.0.2 ssh-ed25519 {ED_A}\n");
        let u = merge(
            &existing,
            &[
                (
                    "web1".into(),
                    "10.0.0.2".into(),
                    Err("connection refused".into()),
                ),
                (
                    "web2".into(),
                    "[10.0.0.3]:2222".into(),
                    Ok("# nothing\n".into()),
                ),
            ],
            true,
            None,
        );
        assert_eq!(u.failed.len(), 2);
        assert!(u.failed[1].error.contains("no key"), "{:?}", u.failed);
        assert_eq!(u.text, existing);
    }

    #[test]
    fn prune_removes_only_plain_lines_of_names_not_kept() {
        let existing = format!(
            "# c\n10.0.0.9 ssh-ed25519 {ED_A}\n10.0.0.2,old ssh-ed25519 {ED_A}\n|1|h|x ssh-ed25519 {ED_A}\n@revoked * ssh-rsa AAAA\n"
        );
        let keep = vec!["10.0.0.2".to_owned()];
        let u = merge(
            &existing,
            &[scan("web1", "10.0.0.2", ED_A)],
            false,
            Some(&keep),
        );
        assert_eq!(u.removed.len(), 1);
        assert_eq!(u.removed[0].name, "10.0.0.9");
        assert!(u.changes_file());
        assert_eq!(
            u.text,
            format!(
                "# c\n10.0.0.2,old ssh-ed25519 {ED_A}\n|1|h|x ssh-ed25519 {ED_A}\n@revoked * ssh-rsa AAAA\n"
            )
        );
        assert!(merge(&existing, &[], false, None).removed.is_empty());
    }

    #[test]
    fn names_with_ports_are_bracketed() {
        let t = SshTarget {
            name: "h".into(),
            address: "10.0.0.1".into(),
            port: Some(2222),
            user: None,
            keyfile: None,
        };
        assert_eq!(known_name(&t), "[10.0.0.1]:2222");
        let t = SshTarget {
            port: Some(22),
            ..t
        };
        assert_eq!(known_name(&t), "10.0.0.1");
    }
}
