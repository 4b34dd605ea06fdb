//! A decorator that counts round trips per host and per phase.
//!
//! A round trip is one call that reaches a host: a command ([`Transport::exec`]), a file write or
//! read, or a batch of them ([`Transport::write_files`], [`Transport::read_files`], which move
//! several files in one command). The phase a round trip belongs to is the one the calling future
//! runs in ([`in_phase`], a task-local label), so that work running beside a phase (the deploy
//! lock's heartbeat) is not counted in it. Counting happens here, in the transport layer, never
//! by hand: what the deploy reports is what it sent.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use super::{FileWrite, Output, ReadOptions, Transport, WriteOptions};
use crate::command::RemoteCommand;
use crate::error::Result;

tokio::task_local! {
    static PHASE: String;
}

/// Runs `f` with its round trips counted under `phase` (innermost wins).
pub async fn in_phase<F: Future>(phase: impl Into<String>, f: F) -> F::Output {
    PHASE.scope(phase.into(), f).await
}

/// The label round trips outside any [`in_phase`] are counted under.
pub const OTHER: &str = "other";

/// The round trips of one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseTrips {
    /// The phase (`lock`, `build`, `switch`, ...).
    pub phase: String,
    /// Round trips on every host together.
    pub total: usize,
    /// The hosts the phase reached.
    pub hosts: usize,
    /// The most round trips one host had in the phase.
    pub max_per_host: usize,
    /// The fewest round trips a host it reached had.
    pub min_per_host: usize,
}

/// Phases in first-seen order, and `(phase, host) -> round trips`.
type Counts = (Vec<String>, BTreeMap<(String, String), usize>);

/// Counts every round trip of the wrapped transport, per phase and host.
pub struct Counting<'a> {
    inner: &'a dyn Transport,
    counts: Mutex<Counts>,
}

impl<'a> Counting<'a> {
    /// Wraps `inner`.
    pub fn new(inner: &'a dyn Transport) -> Self {
        Self {
            inner,
            counts: Mutex::new((Vec::new(), BTreeMap::new())),
        }
    }

    fn count(&self, host: &str) {
        let phase = PHASE
            .try_with(Clone::clone)
            .unwrap_or_else(|_| OTHER.to_owned());
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !c.0.contains(&phase) {
            c.0.push(phase.clone());
        }
        *c.1.entry((phase, host.to_owned())).or_insert(0) += 1;
    }

    /// Round trips so far, per phase in the order phases first sent one.
    pub fn per_phase(&self) -> Vec<PhaseTrips> {
        let c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.0.iter()
            .map(|phase| {
                let per_host: Vec<usize> =
                    c.1.iter()
                        .filter(|((p, _), _)| p == phase)
                        .map(|(_, n)| *n)
                        .collect();
                PhaseTrips {
                    phase: phase.clone(),
                    total: per_host.iter().sum(),
                    hosts: per_host.len(),
                    max_per_host: per_host.iter().copied().max().unwrap_or(0),
                    min_per_host: per_host.iter().copied().min().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Round trips so far on `host`, every phase together.
    pub fn on_host(&self, host: &str) -> usize {
        let c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.1.iter()
            .filter(|((_, h), _)| h == host)
            .map(|(_, n)| *n)
            .sum()
    }
}

impl fmt::Debug for Counting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counting").field(&self.inner).finish()
    }
}

#[async_trait]
impl Transport for Counting<'_> {
    fn hosts(&self) -> Vec<String> {
        self.inner.hosts()
    }

    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        self.count(host);
        self.inner.exec(host, cmd).await
    }

    async fn exec_lines(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: &dyn super::LineSink,
    ) -> Result<Output> {
        self.count(host);
        self.inner.exec_lines(host, cmd, on_line).await
    }

    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        self.count(host);
        self.inner.write_file(host, path, contents, opts).await
    }

    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        self.count(host);
        self.inner.read_file(host, path, opts).await
    }

    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if !paths.is_empty() {
            self.count(host);
        }
        self.inner.read_files(host, paths, opts).await
    }

    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        if !files.is_empty() {
            self.count(host);
        }
        self.inner.write_files(host, files, opts).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::MemoryTransport;

    #[tokio::test]
    async fn round_trips_are_counted_per_phase_and_host() {
        let m = MemoryTransport::new(["a", "b"]);
        let t = Counting::new(&m);
        let cmd = RemoteCommand::shell("true");
        t.exec("a", &cmd).await.unwrap();
        in_phase("build", async {
            t.exec("a", &cmd).await.unwrap();
            t.exec("b", &cmd).await.unwrap();
            let files = [
                FileWrite {
                    path: "/x".into(),
                    contents: b"1".to_vec(),
                    mode: None,
                },
                FileWrite {
                    path: "/y".into(),
                    contents: b"2".to_vec(),
                    mode: None,
                },
            ];
            t.write_files("a", &files, &WriteOptions::default())
                .await
                .unwrap();
            in_phase("switch", t.exec("b", &cmd)).await.unwrap();
        })
        .await;
        let p = t.per_phase();
        let got: Vec<(&str, usize, usize, usize)> = p
            .iter()
            .map(|p| (p.phase.as_str(), p.total, p.hosts, p.max_per_host))
            .collect();
        assert_eq!(
            got,
            [(OTHER, 1, 1, 1), ("build", 3, 2, 2), ("switch", 1, 1, 1)]
        );
        assert_eq!(t.on_host("a"), 3);
    }
}
