//! Running work on many hosts at once, bounded, with per-host results in host order.
//!
//! Every fan-out over hosts goes through [`bounded`] (directly, or through [`for_each_host`],
//! [`for_each_host_step`] or the `run_*` functions): at most `forks` futures run at once, a new
//! one starts whenever any running one finishes (so one slow host never holds back the others),
//! and the results come back in the order of the input.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::command::RemoteCommand;
use crate::error::Result;
use crate::events::{Event, EventSink};
use crate::transport::{Output, Transport};

pub use crate::bounded::{Bounded, bounded};

/// The default number of hosts worked on at once (Ansible's `forks`).
pub const DEFAULT_FORKS: usize = 256;

/// Runs `work(host)` for every host in `hosts`, at most `forks` at once (see [`bounded`]);
/// returns `(host, result)` in the order of `hosts`. `work` is called for every host before
/// the returned future runs; only the futures it returns wait for a slot.
pub fn for_each_host<'h, T, Fut>(
    hosts: &'h [String],
    forks: usize,
    work: impl Fn(&'h str) -> Fut,
) -> impl Future<Output = Vec<(String, T)>>
where
    Fut: Future<Output = T>,
{
    bounded(
        hosts.iter().map(|h| {
            let job = work(h);
            async move { (h.clone(), job.await) }
        }),
        forks,
    )
}

/// [`for_each_host`] that reports each host's work as step `step`: a `Started` event when it
/// starts, a `Finished` event when it ends (with `ok(&result)` and its duration).
pub fn for_each_host_step<'h, 'a, T, Fut>(
    hosts: &'h [String],
    forks: usize,
    step: &'a str,
    events: &'a dyn EventSink,
    work: impl Fn(&'h str) -> Fut,
    ok: fn(&T) -> bool,
) -> impl Future<Output = Vec<(String, T)>>
where
    Fut: Future<Output = T>,
{
    for_each_host(hosts, forks, move |h| {
        let job = work(h);
        async move {
            events.emit(&Event::Started {
                host: h.to_owned(),
                step: step.to_owned(),
            });
            let start = Instant::now();
            let r = job.await;
            let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            events.emit(&Event::Finished {
                host: h.to_owned(),
                step: step.to_owned(),
                ok: ok(&r),
                duration_ms,
            });
            r
        }
    })
}

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
    bounded(
        hosts.iter().cloned().map(|host| async move {
            events.emit(&Event::Started {
                host: host.clone(),
                step: step.to_owned(),
            });
            let start = Instant::now();
            let cmd = command(&host);
            let on_line = |stream, text: &str| {
                events.emit(&Event::Line {
                    host: host.clone(),
                    step: step.to_owned(),
                    stream,
                    text: text.to_owned(),
                });
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
            let r = HostResult {
                host,
                result,
                duration,
            };
            on_done(&r);
            r
        }),
        forks,
    )
    .await
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
        let res = run_on_hosts(
            &t,
            &hosts,
            &RemoteCommand::new("hostname"),
            2,
            "hostname",
            &NullSink,
        )
        .await;
        assert_eq!(
            res.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(res[0].result.as_ref().unwrap().stdout_str(), "a\n");
        assert!(res[1].result.is_err());
        assert!(res[2].ok());
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| (*h).to_owned()).collect()
    }

    /// The results come back in host order, whatever order the hosts finish in.
    #[tokio::test(start_paused = true)]
    async fn for_each_host_keeps_host_order() {
        let hs = hosts(&["a", "b", "c", "d", "e"]);
        let res = for_each_host(&hs, 2, |h| async move {
            // The later hosts finish first.
            let wait = 10 * (5 - u64::from(h.as_bytes()[0] - b'a'));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            h.to_uppercase()
        })
        .await;
        let expected: Vec<(String, String)> = ["a", "b", "c", "d", "e"]
            .map(|h| (h.to_owned(), h.to_uppercase()))
            .to_vec();
        assert_eq!(res, expected);
        assert!(
            for_each_host(&[], 3, |h| async move { h.len() })
                .await
                .is_empty()
        );
    }

    /// No more than `forks` hosts are worked on at once (and `0` counts as 1).
    #[tokio::test(start_paused = true)]
    async fn for_each_host_respects_the_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hs: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
        for forks in [0, 1, 3, 7, 50] {
            let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let res = for_each_host(&hs, forks, |h| {
                let (running, most) = (&running, &most);
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1 + (h.len() as u64 % 3))).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .await;
            assert_eq!(res.len(), 20);
            assert_eq!(
                most.load(Ordering::SeqCst),
                forks.clamp(1, 20),
                "forks {forks}"
            );
        }
    }

    /// A slow first host holds back neither the start nor the end of the others: with two at
    /// once, the nine fast hosts all finish one after the other beside it.
    #[tokio::test(start_paused = true)]
    async fn a_slow_first_host_does_not_delay_the_others() {
        let hs = hosts(&["slow", "a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        let start = tokio::time::Instant::now();
        let done = std::sync::Mutex::new(Vec::new());
        let res = for_each_host(&hs, 2, |h| {
            let done = &done;
            async move {
                let wait = if h == "slow" { 1000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                done.lock().unwrap().push((h.to_owned(), start.elapsed()));
            }
        })
        .await;
        assert_eq!(
            res.iter().map(|(h, ())| h.as_str()).collect::<Vec<_>>(),
            ["slow", "a", "b", "c", "d", "e", "f", "g", "h", "i"]
        );
        let done = done.into_inner().unwrap();
        assert_eq!(done.last().unwrap().0, "slow");
        let fast_end = done[done.len() - 2].1;
        assert!(
            fast_end < Duration::from_millis(200),
            "the fast hosts were held back until {fast_end:?}"
        );
    }

    /// A fan-out over borrowed hosts inside a spawned task: the task's future must be `Send`,
    /// which a stream adapter holding the caller's closure across an `.await` prevented (the
    /// Python bindings spawn every call).
    #[tokio::test]
    async fn a_fan_out_can_run_in_a_spawned_task() {
        let t = std::sync::Arc::new(MemoryTransport::new(["a", "b"]));
        let hs = hosts(&["a", "b"]);
        let task = tokio::spawn(async move {
            let cmd = RemoteCommand::new("hostname");
            let plain = bounded(
                hs.iter().map(|h| async { t.exec(h, &cmd).await.is_ok() }),
                1,
            )
            .await;
            let each = for_each_host(&hs, 1, |h| t.exec(h, &cmd)).await;
            let step =
                for_each_host_step(&hs, 1, "s", &NullSink, |h| t.exec(h, &cmd), |r| r.is_ok())
                    .await;
            let run = run_on_hosts(t.as_ref(), &hs, &cmd, 1, "s", &NullSink).await;
            (plain, each.len(), step.len(), run.len())
        });
        assert_eq!(task.await.unwrap(), (vec![true, true], 2, 2, 2));
    }

    /// `for_each_host_step` reports each host: `Started` then `Finished` with its `ok`.
    #[tokio::test]
    async fn for_each_host_step_reports_each_host() {
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |e: &Event| seen.lock().unwrap().push(e.clone());
        let hs = hosts(&["a", "b"]);
        let res = for_each_host_step(
            &hs,
            4,
            "probe",
            &sink,
            |h| async move { h == "a" },
            |ok| *ok,
        )
        .await;
        assert_eq!(res, [("a".to_owned(), true), ("b".to_owned(), false)]);
        let events = seen.lock().unwrap().clone();
        for h in ["a", "b"] {
            let mine: Vec<&Event> =
                events.iter().filter(|e| matches!(e, Event::Started { host, .. } | Event::Finished { host, .. } if host == h)).collect();
            assert!(
                matches!(mine[..], [Event::Started { step: s, .. }, Event::Finished { step: f, ok, .. }] if s == "probe" && f == "probe" && *ok == (h == "a")),
                "{mine:?}"
            );
        }
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
            |h| {
                RemoteCommand::shell(if h == "slow" {
                    "sleep 0.5; echo slow"
                } else {
                    "echo fast"
                })
            },
            2,
            "hostname",
            &NullSink,
            &|r| seen.lock().unwrap().push(r.host.clone()),
        )
        .await;
        assert_eq!(
            res.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
            ["slow", "a", "b", "c"]
        );
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
            if let Event::Line {
                host, step, text, ..
            } = e
            {
                if text == "one" {
                    std::fs::write(&flag, b"").unwrap();
                }
                seen.lock().unwrap().push(format!("{host} {step} {text}"));
            }
        };
        let res = run_on_hosts(
            &t,
            &["a".to_owned()],
            &RemoteCommand::shell(script),
            1,
            "run",
            &sink,
        )
        .await;
        assert!(res[0].ok(), "{:?}", res[0].result);
        assert_eq!(res[0].result.as_ref().unwrap().stdout_str(), "one\ntwo\n");
        assert_eq!(*seen.lock().unwrap(), ["a run one", "a run two"]);
    }
}
