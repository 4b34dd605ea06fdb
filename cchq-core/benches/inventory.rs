//! Inventory micro-benchmarks: loading a 5,000-host commcare-cloud-style `inventory.ini`, and
//! evaluating `--limit` patterns over it.
//!
//! `cargo bench -p cchq-core --bench inventory`

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use cchq_core::environment::Environment;
use cchq_core::inventory::Inventory;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod common;

const HOSTS: usize = 5_000;

/// Parsing and building the inventory from its text (what `Environment::load` does after reading
/// the file), at 1,000 and 5,000 hosts to show how it scales; and a whole `Environment::load_dir`.
fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("inventory_load");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for n in [1_000, HOSTS] {
        let (text, _) = common::inventory_ini(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("parse_ini", n), &text, |b, text| {
            b.iter(|| {
                Inventory::parse_ini(black_box(text), Path::new("inventory.ini"))
                    .expect("inventory parses")
            });
        });
    }
    let (_tmp, env, _) = common::environment(HOSTS);
    g.throughput(Throughput::Elements(HOSTS as u64));
    g.bench_function(BenchmarkId::new("environment_load_dir", HOSTS), |b| {
        b.iter(|| Environment::load_dir(black_box(&env.dir)).expect("environment loads"));
    });
    g.finish();
}

/// `--limit` patterns of every kind over the 5,000-host inventory.
fn limit(c: &mut Criterion) {
    let (text, layout) = common::inventory_ini(HOSTS);
    let inv = Inventory::parse_ini(&text, Path::new("inventory.ini")).expect("inventory parses");
    let first_web = &layout
        .roles
        .iter()
        .find(|(g, _)| *g == "webworkers")
        .expect("webworkers")
        .1[0];
    let one_host = inv.group_hosts(first_web).expect("one-host group")[0].to_owned();
    let list: Vec<String> = (0..50).map(|i| common::address(i * 97)).collect();
    let list = list.join(",");
    let patterns: Vec<(&str, String)> = vec![
        ("group", "webworkers".into()),
        ("all", "all".into()),
        ("union", "webworkers:celery:pillowtop:formplayer".into()),
        ("intersection", "commcarehq:&celery".into()),
        ("exclusion", "commcarehq:!webworkers".into()),
        ("wildcard", "web*".into()),
        ("regex", "~(web|celery)_a[0-9]*5$".into()),
        ("index", "webworkers[0:10]".into()),
        ("host", one_host),
        ("host_list_50", list),
    ];
    let mut g = c.benchmark_group("inventory_limit");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (kind, pattern) in &patterns {
        let n = inv
            .select(pattern)
            .expect("the pattern selects hosts")
            .hosts
            .len();
        assert!(n > 0, "{kind}: {pattern}");
        g.bench_with_input(BenchmarkId::new(*kind, HOSTS), pattern, |b, p| {
            b.iter(|| inv.select(black_box(p)).expect("selects"))
        });
    }
    g.finish();
}

criterion_group!(benches, load, limit);
criterion_main!(benches);
