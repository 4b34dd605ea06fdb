//! `check-services`: every service on every host checked at once — the process state (supervisor,
//! systemd, monit) and a TCP probe of its port from the host itself where the service has one.

use serde::Serialize;

use super::{Action, Request, RollingOptions, catalog, execute, plan};
use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::Result;
use crate::events::NullSink;
use crate::transport::Transport;

/// One check on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The host.
    pub host: String,
    /// The service.
    pub service: String,
    /// What was checked: a program, a unit, or `tcp <address>:<port>`.
    pub what: String,
    /// Whether it is in the expected state.
    pub ok: bool,
    /// The state found.
    pub state: String,
    /// Details.
    pub detail: String,
}

/// The port a service listens on, for the TCP probe.
pub fn probe_port(env: &Environment, service: &str) -> Option<u16> {
    Some(match service {
        "webworker" => env.app_processes.as_ref().map_or(9010, |a| a.django_port),
        // What formplayer's `application.properties` says (`server.port`): `formplayer_port`
        // of public.yml, else the profile's default (commcare-cloud's 8181).
        "formplayer" => env
            .public_var("formplayer_port")
            .and_then(crate::yaml::scalar_to_string)
            .and_then(|p| p.trim().parse().ok())
            .or_else(|| {
                crate::profile::settings_default("formplayer_port")
                    .as_ref()
                    .and_then(crate::yaml::scalar_to_string)
                    .and_then(|p| p.trim().parse().ok())
            })?,
        "redis" => 6379,
        "postgresql" => 5432,
        "pgbouncer" => 6432,
        "couchdb2" => 5984,
        "elasticsearch" => 9200,
        "kafka" => 9092,
        "zookeeper" => 2181,
        "rabbitmq" => 5672,
        "nginx" => 80,
        _ => return None,
    })
}

/// Checks `services` (every service of the catalog when empty) on every host.
pub async fn check_services(
    env: &Environment,
    transport: &dyn Transport,
    services: &[String],
    limit: Option<&str>,
) -> Result<Vec<Check>> {
    let cat = catalog(env);
    let names: Vec<String> = if services.is_empty() {
        cat.iter().map(|s| s.name.clone()).collect()
    } else {
        services.to_vec()
    };
    let req = Request {
        services: names.clone(),
        only: Vec::new(),
        limit: limit.map(str::to_owned),
    };
    let (plans, _) = plan(env, &req, Action::Status)?;
    let report = execute(
        transport,
        &plans,
        Action::Status,
        &RollingOptions::default(),
        &NullSink,
    )
    .await;
    let mut checks = Vec::new();
    let kinds: std::collections::HashMap<(&str, &str), super::programs::ProgramKind> = plans
        .iter()
        .flat_map(|p| {
            p.programs
                .iter()
                .map(move |t| ((p.host.as_str(), t.name.as_str()), t.kind))
        })
        .collect();
    let service_of = |host: &str, program: &str| -> String {
        kinds
            .get(&(host, program))
            .map_or_else(|| program.to_owned(), |k| k.service().to_owned())
    };
    for row in &report.rows {
        let detail = row
            .detail
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        checks.push(Check {
            host: row.host.clone(),
            service: service_of(&row.host, &row.program),
            what: row.program.clone(),
            ok: row.ok,
            state: row.state.clone(),
            detail,
        });
    }
    for (host, why) in &report.unreachable {
        checks.push(Check {
            host: host.clone(),
            service: "-".into(),
            what: "ssh".into(),
            ok: false,
            state: "UNREACHABLE".into(),
            detail: why.clone(),
        });
    }
    // TCP probes from each host to its own address.
    let mut probes = Vec::new();
    for p in &plans {
        if report.unreachable.iter().any(|(h, _)| h == &p.host) {
            continue;
        }
        for svc in &p.services {
            if let Some(port) = probe_port(env, svc) {
                probes.push((
                    p.host.clone(),
                    svc.clone(),
                    env.ssh_target(&p.host).address,
                    port,
                ));
            }
        }
    }
    let futs = probes
        .into_iter()
        .map(|(host, svc, addr, port)| async move {
            let script = format!(
                "timeout 3 bash -c {} 2>&1",
                quote(&format!("exec 3<>/dev/tcp/{addr}/{port}"))
            );
            let res = transport.exec(&host, &RemoteCommand::shell(script)).await;
            let (ok, state, detail) = match res {
                Ok(o) if o.success() => (true, "open".to_owned(), String::new()),
                Ok(o) => (
                    false,
                    "closed".to_owned(),
                    o.stdout_str()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned(),
                ),
                Err(e) => (false, "error".to_owned(), e.message().to_owned()),
            };
            Check {
                host,
                service: svc,
                what: format!("tcp {addr}:{port}"),
                ok,
                state,
                detail,
            }
        });
    checks.extend(crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await);
    let order: Vec<&str> = plans.iter().map(|p| p.host.as_str()).collect();
    checks.sort_by_key(|c| {
        order
            .iter()
            .position(|h| *h == c.host)
            .unwrap_or(usize::MAX)
    });
    Ok(checks)
}
