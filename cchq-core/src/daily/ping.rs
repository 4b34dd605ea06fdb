//! `ping`: every selected host answers over SSH, `sudo` works there without a password, and,
//! on the hosts that run the app's programs, supervisord answers on its socket.
//!
//! commcare-cloud's `ping` runs `echo "$(hostname) - $(uptime)"` on the hosts (`RunShellCommand`);
//! cchq checks the three things a deploy needs and says which one failed.

use std::time::Instant;

use serde::Serialize;

use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::ErrorKind;
use crate::events::{Event, EventSink};
use crate::transport::Transport;

/// What `ping` found on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ping {
    /// The inventory name.
    pub host: String,
    /// The address cchq connects to.
    pub address: String,
    /// The host answered over SSH.
    pub reachable: bool,
    /// `sudo -n true` worked (`None`: not tried, the host did not answer).
    pub sudo: Option<bool>,
    /// supervisord's state (`RUNNING`), or why it did not answer; `None` where no program of the
    /// environment runs (supervisord is not needed there) or `sudo` failed.
    pub supervisord: Option<String>,
    /// The host's own name (`hostname`).
    pub hostname: Option<String>,
    /// `uptime`'s line.
    pub uptime: Option<String>,
    /// Everything passed.
    pub ok: bool,
    /// What failed, in words (empty when `ok`).
    pub problem: String,
    /// Wall time for the host.
    pub duration_ms: u64,
}

/// The first command: who answers, and whether `sudo` works (as the login user, no `become`).
pub fn login_command() -> RemoteCommand {
    RemoteCommand::shell(
        "printf 'hostname=%s\\n' \"$(hostname 2>/dev/null)\"; printf 'uptime=%s\\n' \"$(uptime 2>/dev/null)\"; \
         if sudo -n true >/dev/null 2>&1; then echo sudo=ok; else echo sudo=no; fi",
    )
}

/// Whether supervisord is expected on `host`: it runs a program of the environment.
pub fn needs_supervisord(env: &Environment, host: &str) -> bool {
    !crate::services::programs::programs_for_host(env, host).is_empty()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::trim)
}

/// Pings one host.
async fn ping_one(env: &Environment, transport: &dyn Transport, host: &str) -> Ping {
    let start = Instant::now();
    let entry = env.host_or_address(host);
    let mut p = Ping {
        host: host.to_owned(),
        address: entry.address,
        reachable: false,
        sudo: None,
        supervisord: None,
        hostname: None,
        uptime: None,
        ok: false,
        problem: String::new(),
        duration_ms: 0,
    };
    let mut problems = Vec::new();
    match transport.exec(host, &login_command()).await {
        Err(e) => {
            // A host that answers but runs nothing is reachable; a connection error is not.
            p.reachable = e.kind() != ErrorKind::Connection;
            problems.push(e.message().to_owned());
        }
        Ok(out) => {
            p.reachable = true;
            let text = out.stdout_str();
            p.hostname = field(&text, "hostname")
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            p.uptime = field(&text, "uptime")
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let sudo = field(&text, "sudo") == Some("ok");
            p.sudo = Some(sudo);
            if !out.success() {
                problems.push(format!(
                    "the check failed with exit code {:?}: {}",
                    out.exit_code,
                    out.stderr_str().trim()
                ));
            } else if !sudo {
                problems.push(format!(
                    "`sudo -n true` fails for the login user `{}`",
                    entry.user.as_deref().unwrap_or_default()
                ));
            } else if needs_supervisord(env, host) {
                // Without arguments there is no value to refuse: the call always encodes.
                let body =
                    crate::services::xmlrpc::call("supervisor.getState", &[]).unwrap_or_default();
                match crate::services::supervisor::rpc(
                    transport,
                    host,
                    &env.profile.supervisor_socket,
                    &[body],
                )
                .await
                {
                    Ok(answers) => match answers.into_iter().next() {
                        Some(Ok(v)) => {
                            let state = v
                                .get("statename")
                                .and_then(|s| s.as_str())
                                .unwrap_or("unknown")
                                .to_owned();
                            if state != "RUNNING" {
                                problems.push(format!("supervisord is {state}"));
                            }
                            p.supervisord = Some(state);
                        }
                        Some(Err(f)) => {
                            p.supervisord = Some("fault".to_owned());
                            problems.push(format!("supervisord answered a fault: {}", f.string));
                        }
                        None => {
                            p.supervisord = Some("no answer".to_owned());
                            problems.push("supervisord gave no answer".to_owned());
                        }
                    },
                    Err(e) => {
                        p.supervisord = Some("not answering".to_owned());
                        problems.push(e.message().to_owned());
                    }
                }
            }
        }
    }
    p.ok = problems.is_empty();
    p.problem = problems.join("; ");
    p.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    p
}

/// Pings `hosts`, at most `forks` at once; results in the order of `hosts`. `Started` /
/// `Finished` events (step `ping`) let a caller show progress.
pub async fn ping(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
    forks: usize,
    events: &dyn EventSink,
) -> Vec<Ping> {
    let each = hosts.iter().map(|h| async move {
        events.emit(&Event::Started {
            host: h.clone(),
            step: "ping".to_owned(),
        });
        let p = ping_one(env, transport, h).await;
        events.emit(&Event::Finished {
            host: h.clone(),
            step: "ping".to_owned(),
            ok: p.ok,
            duration_ms: p.duration_ms,
        });
        p
    });
    crate::fanout::bounded(each, forks).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NullSink;
    use crate::transport::Output;
    use crate::transport::memory::MemoryTransport;

    fn env() -> Environment {
        crate::fixture_env("test")
    }

    fn running() -> Output {
        let xml = "<?xml version='1.0'?><methodResponse><params><param><value><struct>\
                   <member><name>statecode</name><value><int>1</int></value></member>\
                   <member><name>statename</name><value><string>RUNNING</string></value></member>\
                   </struct></value></param></params></methodResponse>";
        Output::new(
            0,
            format!("{xml}\n{}\n", crate::services::supervisor::RPC_SEPARATOR),
            "",
        )
    }

    fn fleet(env: &Environment) -> MemoryTransport {
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        t.respond_with(None, |c| {
            c.inner_shell()
                .contains("sudo -n true")
                .then(|| Output::new(0, "hostname=h\nuptime= 10:00 up 1 day\nsudo=ok\n", ""))
        });
        t.respond(None, "RPC2", running());
        t
    }

    #[tokio::test]
    async fn a_healthy_host_passes_and_supervisord_is_asked_only_where_programs_run() {
        let env = env();
        let t = fleet(&env);
        let hosts = vec!["cloud_worker_2".to_owned(), "redis.fake".to_owned()];
        let res = ping(&env, &t, &hosts, 4, &NullSink).await;
        assert!(res.iter().all(|p| p.ok), "{res:?}");
        assert_eq!(res[0].supervisord.as_deref(), Some("RUNNING"));
        assert_eq!(res[1].supervisord, None, "no program runs on redis.fake");
        assert_eq!(res[0].uptime.as_deref(), Some("10:00 up 1 day"));
        assert_eq!(t.commands_on("redis.fake").len(), 1);
        // The supervisord question goes as root, through sudo.
        assert!(
            t.calls()
                .iter()
                .any(|c| c.host == "cloud_worker_2" && c.command.become_as() == Some("root"))
        );
    }

    #[tokio::test]
    async fn each_failure_is_named() {
        let env = env();
        let t = fleet(&env);
        t.set_reachable("cloud_worker_3", false);
        t.respond_with(Some("cloud_worker_4"), |c| {
            c.inner_shell()
                .contains("sudo -n true")
                .then(|| Output::new(0, "hostname=x\nsudo=no\n", ""))
        });
        t.respond(
            Some("cloud_worker_5"),
            "RPC2",
            Output::new(1, "", "cannot connect to /var/run/supervisor.sock"),
        );
        let hosts: Vec<String> = [
            "cloud_worker_2",
            "cloud_worker_3",
            "cloud_worker_4",
            "cloud_worker_5",
        ]
        .map(String::from)
        .to_vec();
        let res = ping(&env, &t, &hosts, 2, &NullSink).await;
        assert!(res[0].ok);
        assert!(
            !res[1].reachable && !res[1].ok && res[1].problem.contains("cloud_worker_3"),
            "{:?}",
            res[1]
        );
        assert_eq!(res[2].sudo, Some(false));
        assert!(
            res[2].problem.contains("sudo -n true") && res[2].problem.contains("admin"),
            "{:?}",
            res[2]
        );
        assert_eq!(res[2].supervisord, None, "not asked without sudo");
        assert_eq!(res[3].supervisord.as_deref(), Some("not answering"));
        assert!(
            res[3]
                .problem
                .contains("supervisord on `cloud_worker_5` does not answer"),
            "{:?}",
            res[3]
        );
    }
}
