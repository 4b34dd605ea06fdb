//! `list-postgresql-dbs`: the databases `postgresql.yml` puts on each host (commcare-cloud's
//! `ListDatabases.get_expected_dbs`: `postgresql_dbs.all` grouped by `host`), and with
//! `--compare` what each PostgreSQL host really holds.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::transport::Transport;

/// One database `postgresql.yml` expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedDb {
    /// The host it lives on (an inventory host, or `127.0.0.1` as written).
    pub host: String,
    /// The database name.
    pub name: String,
    /// Its Django alias (`default`, `ucr`, ...), when Django uses it.
    pub django_alias: Option<String>,
    /// The port Django connects to.
    pub port: Option<i64>,
    /// The pgbouncer Django connects through.
    pub pgbouncer_endpoint: Option<String>,
}

/// The databases of `postgresql.yml`, sorted by host then name (commcare-cloud sorts
/// `postgresql_dbs.all` by name and groups it by host).
///
/// # Errors
/// [`ErrorKind::NotFound`] when the environment has no `postgresql.yml` (or it is empty).
pub fn expected(env: &Environment) -> Result<Vec<ExpectedDb>> {
    let cfg = env.postgresql_config.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "environment `{}` has no databases: `{}` is missing or empty",
                env.name,
                env.dir.join("postgresql.yml").display()
            ),
        )
        .with_hint("list the databases under `dbs:` in postgresql.yml, as commcare-cloud does")
    })?;
    let mut out: Vec<ExpectedDb> = cfg
        .all_dbs()
        .into_iter()
        .filter_map(|db| {
            Some(ExpectedDb {
                host: db.host.clone()?,
                name: db.name.clone()?,
                django_alias: db.django_alias.clone(),
                port: db.port,
                pgbouncer_endpoint: db.pgbouncer_endpoint.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
    out.dedup_by(|a, b| a.host == b.host && a.name == b.name);
    Ok(out)
}

/// What a host holds compared with what `postgresql.yml` expects there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// The host.
    pub host: String,
    /// Expected databases that exist there.
    pub present: Vec<String>,
    /// Expected databases that do not exist there.
    pub missing: Vec<String>,
    /// Databases there that `postgresql.yml` does not list (`postgres` and templates left out).
    pub additional: Vec<String>,
    /// Why the host could not be asked, when it could not.
    pub error: Option<String>,
}

/// The query listing a server's databases (as the `postgres` user, on its default socket).
pub fn list_command() -> RemoteCommand {
    RemoteCommand::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname",
        ])
        .become_user("postgres")
}

/// The inventory hosts among the databases' hosts (a database may name `127.0.0.1` or an
/// address outside the inventory), each once, in the order of `expected`.
pub fn db_hosts(env: &Environment, expected: &[ExpectedDb]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for d in expected {
        if env.inventory.host(&d.host).is_some() && !hosts.contains(&d.host) {
            hosts.push(d.host.clone());
        }
    }
    hosts
}

/// Asks every inventory host that `expected` names which databases it holds; hosts that are not
/// in the inventory (`127.0.0.1`) are reported with an error rather than asked.
pub async fn compare(
    env: &Environment,
    transport: &dyn Transport,
    expected: &[ExpectedDb],
) -> Vec<Comparison> {
    let hosts: BTreeSet<&str> = expected.iter().map(|d| d.host.as_str()).collect();
    let (asked, skipped): (Vec<&str>, Vec<&str>) = hosts
        .into_iter()
        .partition(|h| env.inventory.host(h).is_some());
    let asked: Vec<String> = asked.into_iter().map(str::to_owned).collect();
    let null = crate::events::NullSink;
    let results = crate::fanout::run_on_hosts(
        transport,
        &asked,
        &list_command(),
        crate::fanout::DEFAULT_FORKS,
        "list databases",
        &null,
    )
    .await;
    let mut out = Vec::new();
    for r in results {
        let want: Vec<&str> = expected
            .iter()
            .filter(|d| d.host == r.host)
            .map(|d| d.name.as_str())
            .collect();
        let cmd = list_command();
        match r.result.and_then(|o| o.check(&r.host, &cmd)) {
            Ok(o) => {
                let have: BTreeSet<String> = o
                    .stdout_str()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                out.push(Comparison {
                    present: want
                        .iter()
                        .filter(|w| have.contains(**w))
                        .map(|w| (*w).to_owned())
                        .collect(),
                    missing: want
                        .iter()
                        .filter(|w| !have.contains(**w))
                        .map(|w| (*w).to_owned())
                        .collect(),
                    additional: have
                        .iter()
                        .filter(|h| h.as_str() != "postgres" && !want.contains(&h.as_str()))
                        .cloned()
                        .collect(),
                    error: None,
                    host: r.host,
                });
            }
            Err(e) => out.push(Comparison {
                host: r.host,
                present: Vec::new(),
                missing: Vec::new(),
                additional: Vec::new(),
                error: Some(e.message().to_owned()),
            }),
        }
    }
    for h in skipped {
        out.push(Comparison {
            host: h.to_owned(),
            present: Vec::new(),
            missing: Vec::new(),
            additional: Vec::new(),
            error: Some(format!(
                "`{h}` is not an inventory host: cchq cannot log in there"
            )),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Output;
    use crate::transport::memory::MemoryTransport;

    fn env() -> Environment {
        crate::fixture_env("test")
    }

    #[test]
    fn expected_databases_come_from_postgresql_yml_by_host() {
        let dbs = expected(&env()).unwrap();
        let names: Vec<(&str, &str)> = dbs
            .iter()
            .map(|d| (d.host.as_str(), d.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("postgres.fake", "commcarehq"),
                ("postgres.fake", "commcarehq_ucr"),
                ("postgres.fake", "formplayer")
            ]
        );
        assert_eq!(dbs[0].django_alias.as_deref(), Some("default"));
    }

    #[tokio::test]
    async fn compare_lists_missing_and_additional_databases() {
        let env = env();
        let dbs = expected(&env).unwrap();
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        t.respond(
            Some("postgres.fake"),
            "pg_database",
            Output::new(0, "commcarehq\nformplayer\npostgres\nold_reports\n", ""),
        );
        let c = compare(&env, &t, &dbs).await;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].present, ["commcarehq", "formplayer"]);
        assert_eq!(c[0].missing, ["commcarehq_ucr"]);
        assert_eq!(c[0].additional, ["old_reports"]);
        // Run as postgres, through sudo.
        assert_eq!(t.calls()[0].command.become_as(), Some("postgres"));
    }

    #[tokio::test]
    async fn an_unreachable_host_is_named_with_its_error() {
        let env = env();
        let dbs = expected(&env).unwrap();
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        t.set_reachable("postgres.fake", false);
        let c = compare(&env, &t, &dbs).await;
        assert!(
            c[0].error.as_deref().unwrap().contains("postgres.fake"),
            "{c:?}"
        );
    }
}
