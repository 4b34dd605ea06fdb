//! Settings micro-benchmarks: rendering `localsettings.py` / `application.properties` for every
//! settings host of a 1,000-host environment with one `settings::SettingsRenderer` (as deploy and
//! update-config do), and for one host at several inventory sizes, from scratch
//! (`settings::render_for_host`) and with a renderer already used (the per-host
//! cost, which should not grow with the inventory).
//!
//! `cargo bench -p cchq-core --bench settings`

use std::hint::black_box;
use std::time::Duration;

use cchq_core::environment::Vault;
use cchq_core::{Value, settings};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

mod common;

fn vault(v: &Vault) -> Value {
    match v {
        Vault::Plain(v) => v.clone(),
        other => panic!("the fixture's vault is plaintext, not {other:?}"),
    }
}

/// Every settings host of a 1,000-host environment, one after the other with one renderer
/// created for the lot (what a deploy that renders fresh settings does before writing anything).
fn render_all(c: &mut Criterion) {
    let (_tmp, env, _) = common::environment(1_000);
    let v = vault(&env.vault);
    let hosts = settings::settings_hosts(&env);
    let mut g = c.benchmark_group("settings_render");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(hosts.len() as u64));
    g.bench_function(
        BenchmarkId::new("all_settings_hosts", format!("{}of1000", hosts.len())),
        |b| {
            b.iter(|| {
                let renderer = settings::SettingsRenderer::new(&env, Some(&v));
                for h in &hosts {
                    let files = renderer
                        .render(h, Some("2026-01-01_00.00"))
                        .expect("settings render");
                    black_box(files);
                }
            });
        },
    );
    g.bench_function(BenchmarkId::new("settings_hosts", 1_000), |b| {
        b.iter(|| black_box(settings::settings_hosts(&env)))
    });
    g.finish();
}

/// One web worker's settings in environments of growing size: from scratch, and with a renderer
/// already used once (what each host after the first costs).
fn render_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("settings_render_one_host");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [100, 1_000] {
        let (_tmp, env, layout) = common::environment(n);
        let v = vault(&env.vault);
        let web = &layout
            .roles
            .iter()
            .find(|(g, _)| *g == "webworkers")
            .expect("webworkers")
            .1[1];
        let host = env.inventory.group_hosts(web).expect("one-host group")[0].to_owned();
        g.bench_with_input(BenchmarkId::new("webworker", n), &host, |b, h| {
            b.iter(|| {
                settings::render_for_host(&env, black_box(h), Some(&v), Some("2026-01-01_00.00"))
                    .expect("settings render")
            });
        });
        let renderer = settings::SettingsRenderer::new(&env, Some(&v));
        renderer
            .render(&host, Some("2026-01-01_00.00"))
            .expect("settings render");
        g.bench_with_input(
            BenchmarkId::new("webworker_shared_renderer", n),
            &host,
            |b, h| {
                b.iter(|| {
                    renderer
                        .render(black_box(h), Some("2026-01-01_00.00"))
                        .expect("settings render")
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, render_all, render_one);
criterion_main!(benches);
