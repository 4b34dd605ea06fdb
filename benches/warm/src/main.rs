//! Warm cchq: load the environment through cchq-core, open every connection once
//! (`env.transport(None)` then a first `exec` on every host), then time fan-outs repeatedly:
//!
//! - task 1: `cchq_core::fanout::run_on_hosts` of `hostname` over every host;
//! - task 2: `services::plan` + `services::execute` of `commcare status` (what
//!   `cchq <env> service commcare status` does, over the same open connections).
//!
//! It also reports the controller's memory while every connection is open: this process's
//! RSS and the RSS / PSS of the `ssh` ControlMaster processes it started.
//!
//! Usage: cchq-bench-warm ROOT ENV ITERATIONS TASKS(e.g. 1,2)  -> JSON on stdout.

use std::collections::BTreeSet;
use std::time::Instant;

use cchq_core::events::NullSink;
use cchq_core::fanout::{DEFAULT_FORKS, run_on_hosts};
use cchq_core::services::{self, Action, Request, RollingOptions};
use cchq_core::{Environment, RemoteCommand};
use serde_json::json;

fn ssh_master_pids() -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_ssh = args.first().is_some_and(|a| a.ends_with(b"ssh"));
        let is_master =
            args.iter().any(|a| *a == b"-M") && cmd.windows(15).any(|w| w == b".ssh-connection");
        if is_ssh && is_master {
            out.insert(pid);
        }
    }
    out
}

/// `(rss_kib, pss_kib)` of a process.
fn mem_kib(pid: &str) -> (u64, u64) {
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|t| field(&t, "VmRSS:"))
        .unwrap_or(0);
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map(|t| field(&t, "Pss:"))
        .unwrap_or(0);
    (rss, pss)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: cchq-bench-warm ROOT ENV ITERATIONS TASKS");
        std::process::exit(2);
    }
    let root = std::path::PathBuf::from(&args[1]);
    let iterations: usize = args[3].parse().expect("ITERATIONS is a number");
    let tasks: Vec<&str> = args[4].split(',').collect();
    let env = Environment::load(&root, &args[2])
        .unwrap_or_else(|e| panic!("loading the environment: {e}"));
    let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let before = ssh_master_pids();
    let transport = env.transport(None).expect("transport");
    let t = transport.as_ref();
    let hostname = RemoteCommand::shell("hostname");

    let mut result = serde_json::Map::new();
    result.insert("hosts".into(), json!(hosts.len()));
    rt.block_on(async {
        // Connect: the first exec on every host opens its ControlMaster.
        let start = Instant::now();
        let first = run_on_hosts(t, &hosts, &hostname, DEFAULT_FORKS, "connect", &NullSink).await;
        let connect_ms = ms(start.elapsed());
        let failed: Vec<_> = first.iter().filter(|r| !r.ok()).map(|r| format!("{}: {:?}", r.host, r.result)).collect();
        assert!(failed.is_empty(), "connecting failed: {failed:?}");
        result.insert("connect_ms".into(), json!(connect_ms));

        // Memory with every connection open.
        let masters: Vec<u32> = ssh_master_pids().difference(&before).copied().collect();
        let (self_rss, self_pss) = mem_kib("self");
        let (mut m_rss, mut m_pss) = (0u64, 0u64);
        for p in &masters {
            let (r, s) = mem_kib(&p.to_string());
            m_rss += r;
            m_pss += s;
        }
        result.insert(
            "memory".into(),
            json!({
                "self_rss_kib": self_rss, "self_pss_kib": self_pss,
                "ssh_masters": masters.len(), "ssh_masters_rss_kib": m_rss, "ssh_masters_pss_kib": m_pss,
            }),
        );

        if tasks.contains(&"1") {
            let mut times = Vec::new();
            for _ in 0..iterations {
                let start = Instant::now();
                let res = run_on_hosts(t, &hosts, &hostname, DEFAULT_FORKS, "hostname", &NullSink).await;
                times.push(ms(start.elapsed()));
                for r in &res {
                    let out = r.result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", r.host));
                    assert!(out.success() && out.stdout_str().trim() == r.host, "{}: {out:?}", r.host);
                }
            }
            result.insert("task1_ms".into(), json!(times));
        }
        if tasks.contains(&"2") {
            let req = Request { services: vec!["commcare".into()], only: Vec::new(), limit: None };
            let (plans, _) = services::plan(&env, &req, Action::Status).expect("plan");
            result.insert("task2_hosts".into(), json!(plans.len()));
            let mut times = Vec::new();
            let mut rows = 0;
            for _ in 0..iterations {
                let start = Instant::now();
                let report = services::execute(t, &plans, Action::Status, &RollingOptions::default(), &NullSink).await;
                times.push(ms(start.elapsed()));
                assert!(report.ok(), "status not ok: {:?}", report.rows.iter().filter(|r| !r.ok).take(3).collect::<Vec<_>>());
                rows = report.rows.len();
            }
            result.insert("task2_programs".into(), json!(rows));
            result.insert("task2_ms".into(), json!(times));
        }
        let _ = t.close().await;
    });
    println!("{}", serde_json::Value::Object(result));
}
