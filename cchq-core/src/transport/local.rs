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
        Self { hosts: hosts.into_iter().map(Into::into).collect(), user }
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
        if !self.hosts.iter().any(|h| h == host) {
            return Err(unknown_host(host, &self.hosts));
        }
        let script = if cmd.become_as().is_some() && cmd.become_as() == self.user.as_deref() {
            cmd.clone().maybe_become(None).to_shell()
        } else {
            cmd.to_shell()
        };
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .stdin(if cmd.stdin_data().is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io("cannot start /bin/sh", e))?;
        if let (Some(data), Some(mut stdin)) = (cmd.stdin_data(), child.stdin.take()) {
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&data).await;
            });
        }
        let run = child.wait_with_output();
        let out = super::with_timeout(host, cmd, run).await?.map_err(|e| Error::io(format!("running `{cmd}`"), e))?;
        Ok(Output { exit_code: out.status.code(), stdout: out.stdout, stderr: out.stderr })
    }
}
