//! A decorator that shows what would run instead of running it.
//!
//! Commands and file writes are handed to a reporter (the CLI prints them) and answered with a
//! successful, empty [`Output`]; file reads go to the wrapped transport, since they change nothing.
//! Secrets are masked: the reporter sees [`RemoteCommand`]'s display form, never file contents.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{FileWrite, Output, ReadOptions, Transport, WriteOptions};
use crate::command::RemoteCommand;
use crate::error::Result;

/// What a dry run would have done on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRunAction {
    /// A command, as the operator would type it (secrets masked).
    Exec(String),
    /// A file write: path and size (contents never shown).
    Write {
        /// The path on the host.
        path: String,
        /// Its size in bytes.
        bytes: usize,
    },
}

impl fmt::Display for DryRunAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exec(c) => f.write_str(c),
            Self::Write { path, bytes } => write!(f, "write {path} ({bytes} bytes)"),
        }
    }
}

type Reporter = dyn Fn(&str, &DryRunAction) + Send + Sync;

/// Wraps a transport so that nothing is changed on any host.
pub struct DryRun<T> {
    inner: T,
    report: Arc<Reporter>,
}

impl<T> DryRun<T> {
    /// Wraps `inner`; `report(host, action)` is called for every command and write.
    pub fn new(inner: T, report: impl Fn(&str, &DryRunAction) + Send + Sync + 'static) -> Self {
        Self {
            inner,
            report: Arc::new(report),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for DryRun<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DryRun").field(&self.inner).finish()
    }
}

#[async_trait]
impl<T: Transport> Transport for DryRun<T> {
    fn hosts(&self) -> Vec<String> {
        self.inner.hosts()
    }

    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        if !self.inner.hosts().iter().any(|h| h == host) {
            return Err(super::unknown_host(host, &self.inner.hosts()));
        }
        (self.report)(host, &DryRunAction::Exec(cmd.to_string()));
        Ok(Output::new(0, Vec::new(), Vec::new()))
    }

    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        _opts: &WriteOptions,
    ) -> Result<()> {
        (self.report)(
            host,
            &DryRunAction::Write {
                path: path.to_owned(),
                bytes: contents.len(),
            },
        );
        Ok(())
    }

    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        self.inner.read_file(host, path, opts).await
    }

    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.read_files(host, paths, opts).await
    }

    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        _opts: &WriteOptions,
    ) -> Result<()> {
        for f in files {
            (self.report)(
                host,
                &DryRunAction::Write {
                    path: f.path.clone(),
                    bytes: f.contents.len(),
                },
            );
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::MemoryTransport;
    use std::sync::Mutex;

    #[tokio::test]
    async fn dry_run_reports_and_changes_nothing() {
        let mem = MemoryTransport::new(["h"]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let dry = DryRun::new(mem.clone(), move |h, a| {
            seen2.lock().unwrap().push(format!("{h}: {a}"))
        });
        dry.exec("h", &RemoteCommand::new("rm").arg("-rf").arg("/x"))
            .await
            .unwrap();
        dry.write_file("h", "/etc/x", b"secret", &WriteOptions::default())
            .await
            .unwrap();
        assert!(mem.calls().is_empty());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                "h: rm -rf /x".to_owned(),
                "h: write /etc/x (6 bytes)".to_owned()
            ]
        );
    }
}
