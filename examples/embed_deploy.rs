//! Embedding `cchq-core`: load an environment, deploy with your own event handler, print your own
//! summary — as a team would in its own tooling.
//!
//! ```text
//! cargo run --example embed_deploy -- /tmp/cchq-fleet/environments fleet [REV]
//! ```

use std::time::Instant;

use cchq_core::deploy::{self, Options};
use cchq_core::events::Event;
use cchq_core::{Environment, ErrorKind};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(root), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: embed_deploy ENVIRONMENTS_DIR ENV [REV]");
        return std::process::ExitCode::from(2);
    };
    let env = match Environment::load(root.as_ref(), name) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot load {name}: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    let vault = env.vault.plain();
    let opts = Options {
        rev: args.get(3).cloned(),
        by: "embed-example".into(),
        vault,
        ..Options::default()
    };
    let transport =
        match deploy::connect_hosts(&env, &opts).and_then(|hosts| env.transport(Some(&hosts))) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(4);
            }
        };
    let start = Instant::now();
    // Our own event handler: one terse line per finished phase.
    let on_event = |e: &Event| {
        if let Event::Phase {
            phase,
            ok: Some(ok),
            duration_ms,
            ..
        } = e
        {
            println!(
                "[{:>6.1}s] {phase:<22} {}",
                start.elapsed().as_secs_f64(),
                if *ok {
                    format!("ok ({} ms)", duration_ms.unwrap_or(0))
                } else {
                    "FAILED".into()
                }
            );
        }
    };
    let result = deploy::deploy(&env, transport.as_ref(), &opts, &on_event).await;
    let _ = transport.close().await;
    match result {
        Ok(o) => {
            println!(
                "{} is now on {} ({}), {} hosts, {:.1}s",
                env.name,
                o.release,
                &o.commit[..12],
                o.hosts.len(),
                o.duration_ms as f64 / 1000.0
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) if e.kind() == ErrorKind::DeployFailed => {
            println!("deploy failed: {e}\n{}", e.hint().unwrap_or_default());
            std::process::ExitCode::from(8)
        }
        Err(e) => {
            println!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
