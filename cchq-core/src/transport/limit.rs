//! A decorator that bounds how many operations run at once across all hosts.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::{FileWrite, Output, ReadOptions, Transport, WriteOptions};
use crate::command::RemoteCommand;
use crate::error::{Error, Result};

/// Wraps a transport so that at most `max` operations are in flight.
pub struct Limit<T> {
    inner: T,
    permits: Arc<Semaphore>,
    max: usize,
}

impl<T> Limit<T> {
    /// Wraps `inner` with a bound of `max` (at least 1) concurrent operations.
    pub fn new(inner: T, max: usize) -> Self {
        let max = max.max(1);
        Self { inner, permits: Arc::new(Semaphore::new(max)), max }
    }
}

impl<T: fmt::Debug> fmt::Debug for Limit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit").field("inner", &self.inner).field("max", &self.max).finish()
    }
}

impl<T> Limit<T> {
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits.acquire().await.map_err(|_| Error::internal("concurrency limit closed"))
    }
}

#[async_trait]
impl<T: Transport> Transport for Limit<T> {
    fn hosts(&self) -> Vec<String> {
        self.inner.hosts()
    }
    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        let _p = self.permit().await?;
        self.inner.exec(host, cmd).await
    }
    async fn write_file(&self, host: &str, path: &str, contents: &[u8], opts: &WriteOptions) -> Result<()> {
        let _p = self.permit().await?;
        self.inner.write_file(host, path, contents, opts).await
    }
    async fn read_file(&self, host: &str, path: &str, opts: &ReadOptions) -> Result<Option<Vec<u8>>> {
        let _p = self.permit().await?;
        self.inner.read_file(host, path, opts).await
    }
    async fn read_files(&self, host: &str, paths: &[String], opts: &ReadOptions) -> Result<Vec<Option<Vec<u8>>>> {
        let _p = self.permit().await?;
        self.inner.read_files(host, paths, opts).await
    }
    async fn write_files(&self, host: &str, files: &[FileWrite], opts: &WriteOptions) -> Result<()> {
        let _p = self.permit().await?;
        self.inner.write_files(host, files, opts).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
