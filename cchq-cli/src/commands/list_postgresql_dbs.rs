//! `cchq <env> list-postgresql-dbs [--compare]`: postgresql.yml's databases per host.

use cchq_core::daily::pg_dbs::{compare, expected};
use cchq_core::{Environment, Error};

use super::{ExitStatus, runtime};
use crate::render;

pub const AFTER_HELP: &str = "\
The databases come from postgresql.yml as commcare-cloud reads it (its defaults, hosts resolved
against the inventory): host, name, Django alias, port and pgbouncer. --compare logs in to each
PostgreSQL host and lists its databases (`psql` as the postgres user): the expected ones that
are missing, and the additional ones postgresql.yml does not name (`postgres` and templates left
out). With --compare the exit code is 1 when a database is missing or a host cannot be asked.

Examples:
  cchq prod list-postgresql-dbs
  cchq prod list-postgresql-dbs --compare
  cchq prod list-postgresql-dbs --json";

pub fn run(env: &Environment, do_compare: bool, json: bool) -> Result<ExitStatus, Error> {
    let dbs = expected(env)?;
    if !do_compare {
        if json {
            for d in &dbs {
                crate::outln!("{}", serde_json::to_string(d).unwrap_or_default());
            }
        } else {
            let mut rows = vec![
                ["HOST", "DATABASE", "DJANGO ALIAS", "PORT", "PGBOUNCER"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for d in &dbs {
                rows.push(vec![
                    d.host.clone(),
                    d.name.clone(),
                    d.django_alias.clone().unwrap_or_else(|| "-".into()),
                    d.port.map_or_else(|| "-".into(), |p| p.to_string()),
                    d.pgbouncer_endpoint.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            render::out(&render::table(&rows));
        }
        return Ok(ExitStatus::Success);
    }
    let hosts = cchq_core::daily::pg_dbs::db_hosts(env, &dbs);
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let found = rt.block_on(async {
        let r = compare(env, transport.as_ref(), &dbs).await;
        let _ = transport.close().await;
        r
    });
    let mut bad = false;
    for c in &found {
        bad |= c.error.is_some() || !c.missing.is_empty();
        if json {
            crate::outln!("{}", serde_json::to_string(c).unwrap_or_default());
            continue;
        }
        let mut text = format!("{}:\n", c.host);
        if let Some(e) = &c.error {
            text.push_str(&format!("    cannot list its databases: {e}\n"));
        } else {
            text.push_str("    Expected databases:\n");
            for d in &c.present {
                text.push_str(&format!("        - {d}\n"));
            }
            for d in &c.missing {
                text.push_str(&format!("        - {d}  (MISSING)\n"));
            }
            text.push_str("    Additional databases:\n");
            for d in &c.additional {
                text.push_str(&format!("        - {d}\n"));
            }
        }
        render::out(&text);
    }
    Ok(if bad {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
