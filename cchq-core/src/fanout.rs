//! Running one command on many hosts at once, bounded, with per-host results in host order.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::command::RemoteCommand;
use crate::error::Result;
use crate::events::{Event, EventSink};
use crate::transport::{Output, Transport};

/// The default number of hosts worked on at once (Ansible's `forks`).
pub const DEFAULT_FORKS: usize = 256;

/// What one host gave back.
#[derive(Debug)]
pub struct HostResult {
    /// The host.
    pub host: String,
    /// Its output, or why it could not run.
    pub result: Result<Output>,
    /// Wall time on that host.
    pub duration: Duration,
}

impl HostResult {
    /// Whether the command ran and exited 0.
    pub fn ok(&self) -> bool {
        self.result.as_ref().is_ok_and(Output::success)
    }
}

/// Runs `cmd` on every host in `hosts`, at most `forks` at once; results come back in the order
/// of `hosts`. Emits `Started`/`Finished` events named `step`, and an [`Event::Line`] for each
/// line of output as the host prints it (the whole output is in the result too, as bytes).
pub async fn run_on_hosts(
    transport: &dyn Transport,
    hosts: &[String],
    cmd: &RemoteCommand,
    forks: usize,
    step: &str,
    events: &dyn EventSink,
) -> Vec<HostResult> {
    run_per_host(transport, hosts, |_| cmd.clone(), forks, step, events).await
}

/// [`run_on_hosts`] with a command of its own for each host (`command(host)`).
pub async fn run_per_host(
    transport: &dyn Transport,
    hosts: &[String],
    command: impl Fn(&str) -> RemoteCommand,
    forks: usize,
    step: &str,
    events: &dyn EventSink,
) -> Vec<HostResult> {
    run_per_host_each(transport, hosts, command, forks, step, events, &|_| {}).await
}

/// [`run_per_host`] that hands each host's result to `on_done` as soon as that host finishes
/// (in the order hosts finish), so that a caller can show results while slower hosts still run;
/// the returned results are still in the order of `hosts`. A slow host never holds back the
/// start of the others: a new host starts whenever any running one finishes.
pub async fn run_per_host_each(
    transport: &dyn Transport,
    hosts: &[String],
    command: impl Fn(&str) -> RemoteCommand,
    forks: usize,
    step: &str,
    events: &dyn EventSink,
    on_done: &(dyn Fn(&HostResult) + Send + Sync),
) -> Vec<HostResult> {
    let command = &command;
    let mut results: Vec<(usize, HostResult)> = futures::stream::iter(hosts.iter().cloned().enumerate())
        .map(|(i, host)| async move {
            events.emit(&Event::Started { host: host.clone(), step: step.to_owned() });
            let start = Instant::now();
            let cmd = command(&host);
            let on_line = |stream, text: &str| {
                events.emit(&Event::Line { host: host.clone(), step: step.to_owned(), stream, text: text.to_owned() });
            };
            let result = transport.exec_lines(&host, &cmd, &on_line).await;
            let duration = start.elapsed();
            let ok = result.as_ref().is_ok_and(Output::success);
            events.emit(&Event::Finished {
                host: host.clone(),
                step: step.to_owned(),
                ok,
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            });
            let r = HostResult { host, result, duration };
            on_done(&r);
            (i, r)
        })
        .buffer_unordered(forks.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NullSink;
    use crate::transport::memory::MemoryTransport;

    #[tokio::test]
    async fn results_keep_host_order_and_failures_are_per_host() {
        let t = MemoryTransport::new(["a", "b", "c"]);
        t.set_reachable("b", false);
        let hosts: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let res = run_on_hosts(&t, &hosts, &RemoteCommand::new("hostname"), 2, "hostname", &NullSink).await;
        assert_eq!(res.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(res[0].result.as_ref().unwrap().stdout_str(), "a\n");
        assert!(res[1].result.is_err());
        assert!(res[2].ok());
    }

    /// Results reach `on_done` as hosts finish (the fast ones first), the returned list stays in
    /// host order, and a slow first host does not hold back hosts beyond `forks`.
    #[tokio::test]
    async fn each_result_is_handed_over_as_its_host_finishes() {
        let t = crate::transport::local::LocalTransport::new(["slow", "a", "b", "c"]);
        let hosts: Vec<String> = ["slow", "a", "b", "c"].map(String::from).to_vec();
        let seen = std::sync::Mutex::new(Vec::new());
        let res = run_per_host_each(
            &t,
            &hosts,
            |h| RemoteCommand::shell(if h == "slow" { "sleep 0.5; echo slow" } else { "echo fast" }),
            2,
            "hostname",
            &NullSink,
            &|r| seen.lock().unwrap().push(r.host.clone()),
        )
        .await;
        assert_eq!(res.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(), ["slow", "a", "b", "c"]);
        assert_eq!(*seen.lock().unwrap(), ["a", "b", "c", "slow"]);
    }

    /// Each line reaches the events as the host prints it, before the command ends: the
    /// command below prints a line and waits until the sink has seen it (it would wait out its
    /// 10 s and fail if lines only came at the end).
    #[tokio::test]
    async fn output_lines_are_events_while_the_command_runs() {
        let t = crate::transport::local::LocalTransport::new(["a"]);
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("seen");
        let script = format!(
            "echo one; i=0; while [ ! -e '{f}' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; [ -e '{f}' ] && echo two",
            f = flag.display()
        );
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |e: &Event| {
            if let Event::Line { host, step, text, .. } = e {
                if text == "one" {
                    std::fs::write(&flag, b"").unwrap();
                }
                seen.lock().unwrap().push(format!("{host} {step} {text}"));
            }
        };
        let res = run_on_hosts(&t, &["a".to_owned()], &RemoteCommand::shell(script), 1, "run", &sink).await;
        assert!(res[0].ok(), "{:?}", res[0].result);
        assert_eq!(res[0].result.as_ref().unwrap().stdout_str(), "one\ntwo\n");
        assert_eq!(*seen.lock().unwrap(), ["a run one", "a run two"]);
    }
}
