//! `cchq <env> check-services`: what is not in the expected state, on every host.

use cchq_core::services::check::check_services;
use cchq_core::{Environment, Error};

use super::{ExitStatus, runtime};
use crate::render;

pub fn run(
    env: &Environment,
    services: &[String],
    limit: Option<&str>,
    verbose: bool,
    json: bool,
) -> Result<ExitStatus, Error> {
    let hosts: Vec<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
    let transport = env.transport(Some(&hosts))?;
    let rt = runtime()?;
    let checks = rt.block_on(async {
        let r = check_services(env, transport.as_ref(), services, limit).await;
        let _ = transport.close().await;
        r
    })?;
    let failed = checks.iter().filter(|c| !c.ok).count();
    if json {
        for c in &checks {
            crate::outln!("{}", serde_json::to_string(c).unwrap_or_default());
        }
    } else {
        let mut rows = vec![vec![
            "HOST".to_owned(),
            "SERVICE".to_owned(),
            "CHECK".to_owned(),
            "STATE".to_owned(),
            "DETAIL".to_owned(),
        ]];
        for c in checks.iter().filter(|c| verbose || !c.ok) {
            rows.push(vec![
                c.host.clone(),
                c.service.clone(),
                c.what.clone(),
                format!("{}{}", c.state, if c.ok { "" } else { " !" }),
                c.detail.clone(),
            ]);
        }
        if rows.len() > 1 {
            render::out(&render::table(&rows));
        }
        if failed == 0 {
            crate::outln!("all {} checks passed", checks.len());
        } else {
            render::info(&format!(
                "{failed} of {} checks are not in the expected state",
                checks.len()
            ));
        }
    }
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
