//! A transport that sends each host to the transport that reaches it (SSH for most hosts, local
//! processes for `ansible_connection=local` ones).

use async_trait::async_trait;

use super::{DynTransport, FileWrite, Output, ReadOptions, Transport, WriteOptions, unknown_host};
use crate::command::RemoteCommand;
use crate::error::Result;

/// Routes each host to the first inner transport that lists it.
#[derive(Debug)]
pub struct Routed {
    inner: Vec<DynTransport>,
}

impl Routed {
    /// Routes over `inner`, in order.
    pub fn new(inner: Vec<DynTransport>) -> Self {
        Self { inner }
    }

    fn route(&self, host: &str) -> Result<&DynTransport> {
        self.inner
            .iter()
            .find(|t| t.hosts().iter().any(|h| h == host))
            .ok_or_else(|| unknown_host(host, &self.hosts()))
    }
}

#[async_trait]
impl Transport for Routed {
    fn hosts(&self) -> Vec<String> {
        self.inner.iter().flat_map(|t| t.hosts()).collect()
    }
    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        self.route(host)?.exec(host, cmd).await
    }
    async fn exec_lines(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: &dyn super::LineSink,
    ) -> Result<Output> {
        self.route(host)?.exec_lines(host, cmd, on_line).await
    }
    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        self.route(host)?
            .write_file(host, path, contents, opts)
            .await
    }
    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        self.route(host)?.read_file(host, path, opts).await
    }
    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.route(host)?.read_files(host, paths, opts).await
    }
    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        self.route(host)?.write_files(host, files, opts).await
    }
    async fn close(&self) -> Result<()> {
        for t in &self.inner {
            t.close().await?;
        }
        Ok(())
    }
}
