//! Deploy micro-benchmarks on the memory transport: a 1,000-host environment, and the curve of a
//! whole deploy at 200, 1,000 and 5,000 hosts (the sizes past the fleet's reach) with the
//! controller's memory at each (`deploy_memory_rss`, printed as JSON lines before criterion's).
//!
//! The deploy engine has no separate planning step: `deploy::deploy` builds each phase's commands
//! and runs them as it goes. So this measures a whole `deploy::deploy` (lock, resolve, build,
//! migrate, preindex, switch, supervisor files, rolling restart, record, clean, unlock) against
//! `MemoryTransport` with canned answers: the controller-side cost of a deploy, without network.
//! The pure planner the deploy uses for its restart, `services::plan`, is measured on its own.
//!
//! `cargo bench -p cchq-core --bench deploy` (`-- deploy_curve` for the curve alone, `-- rss` for
//! the memory probe alone)

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use cchq_core::command::RemoteCommand;
use cchq_core::deploy::{self, Options};
use cchq_core::environment::Environment;
use cchq_core::events::NullSink;
use cchq_core::services::{self, Action, Request};
use cchq_core::transport::Output;
use cchq_core::transport::memory::MemoryTransport;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};

mod common;

const HOSTS: usize = 1_000;
const RELEASE: &str = "2026-01-02_00.00.00";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OLD_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// What `supervisorctl status` says on the deploy hosts: every program RUNNING for ten minutes.
/// Lines for programs found on several hosts are shared; a host with programs of its own (the
/// pillowtop hosts, whose process numbers differ, and the host running celery beat) gets its
/// own answer.
struct Statuses {
    shared: String,
    own: Vec<(String, String)>,
    /// The same as supervisord's XML-RPC `getAllProcessInfo` answers.
    shared_rpc: String,
    own_rpc: Vec<(String, String)>,
}

fn statuses(env: &Environment, hosts: &[String]) -> Statuses {
    let line = |n: &str| format!("{n}   RUNNING   pid 4242, uptime 0:10:00\n");
    let per_host: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|h| {
            (
                h.clone(),
                services::programs::programs_for_host(env, h)
                    .into_iter()
                    .map(|p| p.name)
                    .collect(),
            )
        })
        .collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, names) in &per_host {
        for n in names {
            *seen.entry(n).or_default() += 1;
        }
    }
    let shared = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| line(n))
        .collect();
    let own = per_host
        .iter()
        .filter(|(_, names)| names.iter().any(|n| seen[n.as_str()] == 1))
        .map(|(h, names)| (h.clone(), names.iter().map(|n| line(n)).collect()))
        .collect();
    let rpc = |names: &[&str]| {
        let states: Vec<(&str, &str)> = names.iter().map(|n| (*n, "RUNNING")).collect();
        services::supervisor::fake_answer(&states)
    };
    let shared_names: Vec<&str> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    let own_rpc = per_host
        .iter()
        .filter(|(_, names)| names.iter().any(|n| seen[n.as_str()] == 1))
        .map(|(h, names)| {
            (
                h.clone(),
                rpc(&names.iter().map(String::as_str).collect::<Vec<_>>()),
            )
        })
        .collect();
    Statuses {
        shared,
        own,
        shared_rpc: rpc(&shared_names),
        own_rpc,
    }
}

/// Whether `cmd`'s words contain `needle` (cheaper than rendering the command for a shell).
fn mentions(cmd: &RemoteCommand, needle: &str) -> bool {
    cmd.argv().iter().any(|a| a.contains(needle))
}

/// A fake fleet of every host of `env` answering what a deploy asks. `settings_in_current`: the
/// current release has a `localsettings.py` (settings are copied, not rendered).
fn fleet(env: &Environment, st: &Statuses, settings_in_current: bool) -> MemoryTransport {
    let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
    let ok = |stdout: &str| Output::new(0, stdout.to_owned(), "");
    let releases = format!(
        "{}/{}/releases",
        env.profile.www_root.trim_end_matches('/'),
        env.meta.deploy_env
    );
    let marker = services::supervisor::STATUS_MARKER;
    let listing: String = [
        "2025-12-01_00.00.00",
        "2025-12-10_00.00.00",
        "2025-12-20_00.00.00",
    ]
    .iter()
    .map(|r| format!("{r}\t{OLD_COMMIT}\t1\t0\t\n"))
    .chain(std::iter::once(format!("{RELEASE}\t{COMMIT}\t1\t1\t\n")))
    .collect();
    let checkout = if settings_in_current {
        "checkout: done\nHAS_CURRENT_SETTINGS\n"
    } else {
        "checkout: done\n"
    };
    // First match wins: more specific needles before the ones they contain.
    let answers: Vec<(&str, Output)> = vec![
        ("echo TAKEN", ok("TAKEN\n")),                       // lock::acquire
        ("echo RELEASED", ok("RELEASED\n")),                 // lock::release
        ("echo ALIVE", ok("ALIVE\n")),                       // lock::heartbeat
        ("for d in *", ok(&listing)),                        // releases::list
        ("rm -rf --", ok("")),                               // releases::clean
        ("checkout: already done", ok(checkout)),            // build: checkout
        ("touch .build-complete", ok("virtualenv: done\n")), // build: the rest
        ("::cchq-step", ok("")),                             // other build steps
        (".migrate-done .preindex-done", ok("")),            // run-once markers
        ("manage.py migrate", ok("")),                       // run once
        ("preindex_everything", ok("preindex: done\n")),     // run once
        (
            "cchq-new; mv -T",
            ok(&format!(
                "PREV={releases}/2025-12-20_00.00.00\nNOW={releases}/{RELEASE}\n"
            )),
        ), // switch
        ("supervisor.getAllProcessInfo", ok(&st.shared_rpc)), // restart, health checks
        ("supervisor.", ok("")),                             // other supervisor calls
        ("supervisorctl reread", ok("")),                    // program files
        ("sha256sum --", ok("")),                            // program files' hashes
        (
            "supervisorctl restart",
            ok(&format!("{marker}\n{}", st.shared)),
        ), // restart
        ("supervisorctl status", ok(&st.shared)),            // health checks
        ("rev-parse HEAD", ok(&format!("{OLD_COMMIT}\n"))),  // current commit
        (".cchq-deploy.json", ok("")),                       // record
        ("record_deploy_success", ok("")),                   // record
        ("mkdir", ok("")),                                   // log directory
    ];
    t.respond_with(None, move |cmd| {
        answers
            .iter()
            .find(|(needle, _)| mentions(cmd, needle))
            .map(|(_, out)| out.clone())
    });
    for ((host, lines), (_, rpc)) in st.own.iter().zip(&st.own_rpc) {
        let restart = ok(&format!("{marker}\n{lines}"));
        let status = ok(lines);
        let rpc = ok(rpc);
        t.respond_with(Some(host), move |cmd| {
            if mentions(cmd, "supervisor.getAllProcessInfo") {
                Some(rpc.clone())
            } else if mentions(cmd, "supervisorctl restart") {
                Some(restart.clone())
            } else if mentions(cmd, "supervisorctl status") {
                Some(status.clone())
            } else {
                None
            }
        });
    }
    t
}

fn options(env: &Environment) -> Options {
    let vault = env.vault.plain();
    Options {
        rev: Some(COMMIT.into()),
        name: Some(RELEASE.into()),
        by: "bench".into(),
        vault,
        ..Options::default()
    }
}

/// Times a whole `deploy::deploy` of `env` on a fresh fake fleet per iteration (made outside the
/// timing).
fn whole_deploy(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    id: BenchmarkId,
    env: &Environment,
    st: &Statuses,
    settings_in_current: bool,
) {
    let opts = options(env);
    let hosts = deploy::component_hosts(env, &opts).expect("deploy hosts");
    g.bench_function(id, |b| {
        b.iter_batched(
            || fleet(env, st, settings_in_current),
            |t| {
                let out = rt
                    .block_on(deploy::deploy(env, &t, &opts, &NullSink))
                    .expect("the deploy succeeds");
                assert!(out.switched && out.hosts.len() == hosts.len());
                t
            },
            BatchSize::PerIteration,
        );
    });
}

fn deploy_bench(c: &mut Criterion) {
    let (_tmp, env, _) = common::environment(HOSTS);
    let opts = options(&env);
    let hosts = deploy::component_hosts(&env, &opts).expect("deploy hosts");
    let st = statuses(&env, &hosts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");

    let mut g = c.benchmark_group("deploy_memory");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(hosts.len() as u64));
    for (label, settings_in_current) in [("settings_copied", true), ("settings_rendered", false)] {
        let id = BenchmarkId::new(label, format!("{}of{HOSTS}", hosts.len()));
        whole_deploy(&mut g, &rt, id, &env, &st, settings_in_current);
    }
    g.bench_function(BenchmarkId::new("component_hosts", HOSTS), |b| {
        b.iter(|| deploy::component_hosts(&env, black_box(&opts)))
    });
    let req = Request {
        services: vec!["commcare".into()],
        only: Vec::new(),
        limit: Some(hosts.join(",")),
    };
    g.bench_function(
        BenchmarkId::new("services_plan_restart", format!("{}of{HOSTS}", hosts.len())),
        |b| {
            b.iter(|| services::plan(&env, black_box(&req), Action::Restart).expect("plan"));
        },
    );
    g.finish();
}

/// The sizes of the curve: up to 5,000 hosts, past what the fleet test bed reaches.
const CURVE: [usize; 3] = [200, 1_000, 5_000];

/// A whole deploy (settings copied from `current`, as every deploy after the first) at each size
/// of [`CURVE`]: the controller-side cost per host as the environment grows.
fn deploy_curve(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let mut g = c.benchmark_group("deploy_curve");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    for n in CURVE {
        let (_tmp, env, _) = common::environment(n);
        let opts = options(&env);
        let hosts = deploy::component_hosts(&env, &opts).expect("deploy hosts");
        let st = statuses(&env, &hosts);
        g.throughput(Throughput::Elements(hosts.len() as u64));
        whole_deploy(
            &mut g,
            &rt,
            BenchmarkId::new("settings_copied", format!("{}of{n}", hosts.len())),
            &env,
            &st,
            true,
        );
    }
    g.finish();
}

criterion_group!(benches, deploy_bench, deploy_curve);

/// A process's `VmRSS` or `VmHWM` (peak) from `/proc/self/status`, in KiB.
fn vm(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// In a process of its own (the peak is per process): the controller's resident memory for one
/// deploy of `n` hosts, as a JSON line. `env_kib`: the environment loaded (inventory,
/// app-processes, profile); `deploy_peak_kib`: the peak during the deploy over what was resident
/// before it (the fake fleet's own state excluded), i.e. what the deploy itself holds at once.
fn rss_probe(n: usize) {
    let before = vm("VmRSS");
    let (_tmp, env, _) = common::environment(n);
    let loaded = vm("VmRSS");
    let opts = options(&env);
    let hosts = deploy::component_hosts(&env, &opts).expect("deploy hosts");
    let st = statuses(&env, &hosts);
    let t = fleet(&env, &st, true);
    t.without_call_log();
    let ready = vm("VmRSS");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let out = rt
        .block_on(deploy::deploy(&env, &t, &opts, &NullSink))
        .expect("the deploy succeeds");
    assert!(out.switched);
    let peak = vm("VmHWM");
    let deploy_kib = peak.saturating_sub(ready);
    println!(
        "{{\"bench\":\"deploy_memory_rss\",\"hosts\":{n},\"deploy_hosts\":{},\"env_kib\":{},\"deploy_peak_kib\":{deploy_kib},\"deploy_kib_per_host\":{:.1}}}",
        hosts.len(),
        loaded.saturating_sub(before),
        deploy_kib as f64 / hosts.len() as f64
    );
}

/// `deploy::deploy` appends to `$XDG_STATE_HOME/cchq/<env>/deploys.jsonl`: run the benchmarks in
/// a child process whose `XDG_STATE_HOME` is a temporary directory, so nothing lands in `$HOME`.
fn main() {
    const MARK: &str = "CCHQ_BENCH_STATE_ISOLATED";
    const PROBE: &str = "CCHQ_BENCH_RSS_HOSTS";
    if let Some(n) = std::env::var(PROBE).ok().and_then(|v| v.parse().ok()) {
        rss_probe(n);
        return;
    }
    if std::env::var_os(MARK).is_none() {
        let state = tempfile::tempdir().expect("temporary state directory");
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let status = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("XDG_STATE_HOME", state.path())
            .env(MARK, "1")
            .status()
            .expect("run the benchmarks");
        drop(state);
        std::process::exit(status.code().unwrap_or(1));
    }
    // The memory probe: one child process per size, when no filter or the filter `rss` is given.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !std::env::args().any(|a| a == "--list")
        && (filter.is_empty() || filter.iter().any(|f| f == "rss"))
    {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        for n in CURVE {
            let status = std::process::Command::new(&exe)
                .env(PROBE, n.to_string())
                .status()
                .expect("run the memory probe");
            assert!(status.success(), "the memory probe at {n} hosts failed");
        }
        if filter.iter().any(|f| f == "rss") {
            return;
        }
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
