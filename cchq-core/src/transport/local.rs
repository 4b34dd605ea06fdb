//! Processes on the control machine: for monolith installs and the local quickstart.
//!
//! Every host name this transport is built with is the local machine. Commands run through
//! `/bin/sh -c` with the same rendering as over SSH; `become` to the user cchq already runs as is
//! dropped (no sudo needed).

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Output, Transport, unknown_host};
use crate::command::RemoteCommand;
use crate::error::{Error, Result};

/// Runs commands on the control machine.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    hosts: Vec<String>,
    user: Option<String>,
}

impl LocalTransport {
    /// A transport for which each of `hosts` is this machine.
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let user = std::process::Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            user,
        }
    }

    /// The user cchq runs as on this machine.
    pub fn current_user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

#[async_trait]
impl Transport for LocalTransport {
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
}

impl LocalTransport {
    /// Runs `cmd` (see [`Transport::exec_lines`] for `on_line`).
    async fn run(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: Option<&dyn super::LineSink>,
    ) -> Result<Output> {
        if !self.hosts.iter().any(|h| h == host) {
            return Err(unknown_host(host, &self.hosts));
        }
        let script = if cmd.become_as().is_some() && cmd.become_as() == self.user.as_deref() {
            cmd.clone().maybe_become(None).to_shell()
        } else {
            cmd.to_shell()
        };
        let mut sh = tokio::process::Command::new("/bin/sh");
        // A vault password in cchq's environment never reaches the commands it runs.
        for v in crate::vault::SCRUBBED_ENV {
            sh.env_remove(v);
        }
        let mut child = sh
            .arg("-c")
            .arg(&script)
            .stdin(if cmd.stdin_data().is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a command dropped unfinished (Ctrl-C, a cancel, a
            // timeout) takes its children with it: `kill_on_drop` only reaches the shell.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("cannot start /bin/sh", e))?;
        let mut group = GroupGuard(child.id());
        if let (Some(data), Some(mut stdin)) = (cmd.stdin_data(), child.stdin.take()) {
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&data).await;
            });
        }
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            // Both streams read while waiting (a full pipe would block the command).
            let (stdout, stderr) = futures::try_join!(
                super::read_lines(out, super::Stream::Stdout, on_line),
                super::read_lines(err, super::Stream::Stderr, on_line)
            )?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>(Output {
                exit_code: status.code(),
                stdout,
                stderr,
            })
        };
        let out = super::with_timeout(host, cmd, run).await;
        // Waited for: what the command left running in the background is left alone (a timeout
        // drops it unfinished: the group is killed).
        if matches!(out, Ok(Ok(_))) {
            group.0 = None;
        }
        drop(group);
        out?.map_err(|e| Error::io(format!("running `{cmd}`"), e))
    }
}

/// Kills the process group of a command (its shell's pid) when dropped before it finished.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self
            .0
            .take()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{FileWrite, ReadOptions, WriteOptions};

    /// The batch writer makes its temporary files itself: they must be private while they fill
    /// (as `mktemp`'s), the directories it makes must get the caller's umask (not the private
    /// one), a file without a mode takes its predecessor's, and nothing is left behind.
    #[tokio::test]
    async fn a_batch_keeps_modes_and_umask_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().display().to_string();
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        std::fs::create_dir(format!("{root}/reference")).unwrap();
        std::fs::write(format!("{root}/old"), b"x").unwrap();
        std::fs::set_permissions(
            format!("{root}/old"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let t = LocalTransport::new(["here"]);
        let batch = vec![
            FileWrite {
                path: format!("{root}/new/deeper/secret"),
                contents: b"s3cret".to_vec(),
                mode: Some(0o600),
            },
            FileWrite {
                path: format!("{root}/old"),
                contents: b"kept mode".to_vec(),
                mode: None,
            },
            FileWrite {
                path: format!("{root}/new/fresh"),
                contents: Vec::new(),
                mode: None,
            },
            FileWrite {
                path: format!("{root}/new/shared"),
                contents: b"also 600".to_vec(),
                mode: Some(0o600),
            },
        ];
        t.write_files("here", &batch, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(mode(&format!("{root}/new/deeper/secret")), 0o600);
        assert_eq!(mode(&format!("{root}/new/shared")), 0o600);
        assert_eq!(mode(&format!("{root}/old")), 0o640);
        assert_eq!(mode(&format!("{root}/new/fresh")), 0o644);
        let dir_mode = mode(&format!("{root}/reference"));
        assert_eq!(mode(&format!("{root}/new")), dir_mode);
        assert_eq!(mode(&format!("{root}/new/deeper")), dir_mode);
        assert_eq!(std::fs::read(format!("{root}/old")).unwrap(), b"kept mode");
        // While a file fills, it is private: the script creates it under umask 077.
        let script = super::super::write_files_script(&batch, None);
        assert!(script.contains("umask 077; set -C; : > "), "{script}");
        // A batch that fails half-way (a file's directory cannot be made) leaves nothing behind.
        std::fs::write(format!("{root}/blocker"), b"").unwrap();
        let bad = vec![
            FileWrite {
                path: format!("{root}/new/first"),
                contents: b"1".to_vec(),
                mode: None,
            },
            FileWrite {
                path: format!("{root}/blocker/second"),
                contents: b"2".to_vec(),
                mode: None,
            },
        ];
        assert!(
            t.write_files("here", &bad, &WriteOptions::default())
                .await
                .is_err()
        );
        assert!(!std::path::Path::new(&format!("{root}/new/first")).exists());
        let left: Vec<_> = std::fs::read_dir(format!("{root}/new"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cchq-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn lines_arrive_while_the_command_runs() {
        let t = LocalTransport::new(["here"]);
        let start = std::time::Instant::now();
        let seen = std::sync::Mutex::new(Vec::new());
        let on_line = |s: crate::transport::Stream, l: &str| {
            seen.lock()
                .unwrap()
                .push((s, l.to_owned(), start.elapsed()))
        };
        let cmd = RemoteCommand::shell(
            "echo first; echo oops >&2; sleep 0.5; printf 'last\\r\\nno newline'",
        );
        let out = t.exec_lines("here", &cmd, &on_line).await.unwrap();
        let total = start.elapsed();
        let seen = seen.into_inner().unwrap();
        let texts: Vec<&str> = seen.iter().map(|(_, l, _)| l.as_str()).collect();
        assert_eq!(
            texts
                .iter()
                .filter(|l| **l != "oops")
                .copied()
                .collect::<Vec<_>>(),
            ["first", "last", "no newline"]
        );
        assert!(
            seen.iter()
                .any(|(s, l, _)| *s == crate::transport::Stream::Stderr && l == "oops"),
            "{seen:?}"
        );
        let first = seen.iter().find(|(_, l, _)| l == "first").unwrap().2;
        assert!(
            first + std::time::Duration::from_millis(300) < total,
            "the first line came as printed ({first:?} of {total:?})"
        );
        assert_eq!(
            out.stdout_str(),
            "first\nlast\r\nno newline",
            "the output is whole as well"
        );
        assert_eq!(out.stderr_str(), "oops\n");
    }

    #[tokio::test]
    async fn a_failed_batch_write_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().display().to_string();
        let t = LocalTransport::new(["here"]);
        let keep = format!("{dir}/keep.txt");
        std::fs::write(&keep, "old").unwrap();
        std::fs::write(format!("{dir}/a-file"), "").unwrap();
        // The second file's directory cannot exist (its parent is a file): the batch fails.
        let batch = vec![
            FileWrite {
                path: keep.clone(),
                contents: b"new".to_vec(),
                mode: None,
            },
            FileWrite {
                path: format!("{dir}/a-file/sub/x"),
                contents: b"x".to_vec(),
                mode: None,
            },
        ];
        let err = t
            .write_files("here", &batch, &WriteOptions::default())
            .await
            .unwrap_err();
        assert!(err.message().contains("keep.txt"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&keep).unwrap(),
            "old",
            "the first file is untouched"
        );
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !left.iter().any(|n| n.starts_with(".cchq-tmp")),
            "temporary files are removed: {left:?}"
        );
        // A file the reader may not read is an error, not a missing file.
        let secret = format!("{dir}/secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        let r = t
            .read_files("here", &[keep.clone(), secret], &ReadOptions::default())
            .await;
        if !nix_is_root() {
            assert!(r.is_err(), "{r:?}");
        }
    }

    #[tokio::test]
    async fn a_dropped_command_takes_its_children_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        let t = LocalTransport::new(["here"]);
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cmd = RemoteCommand::shell(script).timeout(std::time::Duration::from_millis(500));
        assert!(t.exec("here", &cmd).await.is_err(), "timed out");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed (a zombie until reaped by init at worst): not alive as `sleep`.
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(gone, "the shell's child `sleep` still runs");
    }

    fn nix_is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }
}
