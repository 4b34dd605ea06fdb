//! `cchq <env> update-supervisor-confs`: render and apply supervisor program files.

use cchq_core::services::supervisor::update_confs;
use cchq_core::{Environment, Error, ErrorKind};

use super::{ExitStatus, runtime, select};
use crate::render;

/// The groups whose hosts run app programs.
const APP_GROUPS: &str = "webworkers:celery:pillowtop:formplayer:django_manage";

pub fn run(env: &Environment, limit: Option<&str>, json: bool) -> Result<ExitStatus, Error> {
    let pattern = match limit {
        Some(l) => format!("{APP_GROUPS}:&{l}"),
        None => APP_GROUPS.to_owned(),
    };
    let hosts = select(env, &pattern)?;
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let results = rt.block_on(async {
        let r = update_confs(env, transport.as_ref(), &hosts).await;
        let _ = transport.close().await;
        r
    })?;
    let (mut failed, mut unreachable) = (0, 0);
    for (host, res) in &results {
        match res {
            Ok(u) => {
                if json {
                    crate::outln!("{}", serde_json::json!({"host": host, "files": u.files, "output": u.output, "error": null}));
                } else {
                    crate::outln!("==> {host}: {} file(s): {}", u.files.len(), u.files.join(", "));
                    for line in u.output.lines() {
                        crate::outln!("    {line}");
                    }
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::Connection {
                    unreachable += 1;
                } else {
                    failed += 1;
                }
                if json {
                    crate::outln!("{}", serde_json::json!({"host": host, "files": [], "output": "", "error": e.message()}));
                } else {
                    crate::outln!("==> {host}: FAILED");
                    render::error(e);
                }
            }
        }
    }
    Ok(ExitStatus::from_counts(failed, unreachable))
}
