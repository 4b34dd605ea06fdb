//! `cchq <env> after-reboot --limit HOST all`: bring rebooted hosts back.

use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime, select_within};
use crate::render;

pub fn run(env: &Environment, pattern: &str, limit: &str, json: bool) -> Result<ExitStatus, Error> {
    let hosts = select_within(env, pattern, limit)?;
    let vault = match &env.vault {
        v if v.needs_opening() => Some(super::vault_value(env)?),
        _ => None,
    };
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let results = rt.block_on(async {
        let r = cchq_core::after_reboot::run(env, transport.as_ref(), &hosts, vault.as_ref()).await;
        let _ = transport.close().await;
        r
    });
    let (mut bad, mut unreachable) = (0, 0);
    for (host, res) in &results {
        match res {
            Ok(rep) => {
                if !rep.ok() {
                    bad += 1;
                }
                if json {
                    crate::outln!("{}", serde_json::to_string(rep).unwrap_or_default());
                    continue;
                }
                crate::outln!("==> {host}: {}", if rep.ok() { "ok" } else { "NOT OK" });
                for s in &rep.steps {
                    crate::outln!(
                        "    {:<28} {:<6} {}",
                        s.step,
                        if s.ok { "ok" } else { "FAILED" },
                        s.detail.replace('\n', "; ")
                    );
                }
                for p in &rep.programs {
                    crate::outln!("    {:<28} {:<6} {}", p.name, p.state, p.detail);
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::Connection {
                    unreachable += 1;
                } else {
                    bad += 1;
                }
                if json {
                    crate::outln!(
                        "{}",
                        serde_json::json!({"host": host, "error": e.message()})
                    );
                } else {
                    crate::outln!("==> {host}: FAILED");
                    render::error(e);
                }
            }
        }
    }
    Ok(ExitStatus::from_counts(bad, unreachable))
}
