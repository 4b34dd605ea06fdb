//! supervisord: program config files rendered from the profile, `supervisorctl` commands and the
//! parsing of `supervisorctl status`.

use serde::Serialize;

use super::programs::{Program, ProgramKind, programs_for_host};
use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::Result;
use crate::templates::Renderer;

/// The program file template (supervisor INI), overridable per environment in
/// `<env>/templates/supervisor_program.conf.hbs`.
pub const PROGRAM_TEMPLATE: &str = include_str!("../../profiles/commcare/templates/supervisor_program.conf.hbs");

/// One line of `supervisorctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStatus {
    /// The program name (`group:name` when in a group).
    pub name: String,
    /// `RUNNING`, `STOPPED`, `STARTING`, `BACKOFF`, `EXITED`, `FATAL`, `UNKNOWN`, or `MISSING`
    /// (supervisor does not know the program: `no such process`).
    pub state: String,
    /// The pid, when running.
    pub pid: Option<u32>,
    /// Seconds since start, when running.
    pub uptime_secs: Option<u64>,
    /// The rest of the line (uptime, exit description, stop time).
    pub detail: String,
}

impl ProgramStatus {
    /// Whether the state is `RUNNING`.
    pub fn running(&self) -> bool {
        self.state == "RUNNING"
    }
}

/// Parses `supervisorctl status` output.
pub fn parse_status(text: &str) -> Vec<ProgramStatus> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let rest: Vec<&str> = parts.collect();
        let (state, detail) = if line.contains("(no such process)") || line.contains("no such process") {
            ("MISSING".to_owned(), "supervisor does not know this program".to_owned())
        } else {
            match rest.split_first() {
                Some((s, d)) => ((*s).to_owned(), d.join(" ")),
                None => ("UNKNOWN".to_owned(), String::new()),
            }
        };
        let name = name.trim_end_matches(':').to_owned();
        let pid = detail.strip_prefix("pid ").and_then(|r| r.split(',').next()).and_then(|p| p.trim().parse().ok());
        let uptime_secs = detail.split("uptime ").nth(1).and_then(parse_uptime);
        out.push(ProgramStatus { name, state, pid, uptime_secs, detail });
    }
    out
}

/// `0:01:02` or `2 days, 3:04:05` -> seconds.
fn parse_uptime(s: &str) -> Option<u64> {
    let s = s.trim();
    let (days, hms) = match s.split_once(" day") {
        Some((d, rest)) => (d.trim().parse::<u64>().ok()?, rest.trim_start_matches('s').trim_start_matches(',').trim()),
        None => (0, s),
    };
    let mut total = 0u64;
    for part in hms.split(':') {
        total = total * 60 + part.trim().parse::<u64>().ok()?;
    }
    Some(days * 86_400 + total)
}

/// `supervisorctl <action> <programs|all>` then `supervisorctl status <same>`, as root, in one
/// round trip; the two outputs are separated by a marker line.
pub fn action_command(action: &str, programs: &[String]) -> RemoteCommand {
    let targets = if programs.is_empty() { "all".to_owned() } else { crate::command::join(programs) };
    let status_targets = if programs.is_empty() { String::new() } else { format!(" {targets}") };
    let script = if action == "status" {
        format!("supervisorctl status{status_targets}; true")
    } else {
        format!("supervisorctl {action} {targets}; rc=$?; echo {STATUS_MARKER}; supervisorctl status{status_targets}; exit $rc")
    };
    RemoteCommand::shell(script).become_user("root")
}

/// The line between an action's output and the status that follows it.
pub const STATUS_MARKER: &str = "--cchq-status--";

/// Splits the output of [`action_command`] into (action output, status lines).
pub fn split_action_output(stdout: &str) -> (String, Vec<ProgramStatus>) {
    match stdout.split_once(&format!("{STATUS_MARKER}\n")) {
        Some((a, s)) => (a.to_owned(), parse_status(s)),
        None => (String::new(), parse_status(stdout)),
    }
}

/// The variables every program template sees on `host`.
pub fn host_context(env: &Environment, host: &str) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value as J;
    let mut m = serde_json::Map::new();
    let www_home = format!("{}/{}", env.profile.www_root, env.meta.deploy_env);
    let code_home = format!("{www_home}/current");
    let target = env.ssh_target(host);
    m.insert("deploy_env".into(), J::from(env.meta.deploy_env.clone()));
    m.insert("env".into(), J::from(env.name.clone()));
    m.insert("host".into(), J::from(host));
    m.insert("inventory_hostname".into(), J::from(host));
    m.insert("host_address".into(), J::from(target.address));
    m.insert("www_home".into(), J::from(www_home.clone()));
    m.insert("code_home".into(), J::from(code_home.clone()));
    m.insert("log_dir".into(), J::from(format!("{www_home}/log")));
    m.insert("python_env".into(), J::from(format!("{code_home}/python_env")));
    m.insert("python".into(), J::from(format!("{code_home}/python_env/bin/python")));
    m.insert("app_user".into(), J::from(env.profile.app_user.clone()));
    if let Some(ap) = &env.app_processes {
        let hv = env.inventory.host_vars(host);
        let vcpus = hv.get("vcpus").or_else(|| hv.get("ansible_processor_vcpus")).and_then(crate::Value::as_u64).unwrap_or(1);
        let workers = u64::from(ap.gunicorn_workers_static_factor) + vcpus * u64::from(ap.gunicorn_workers_factor);
        m.insert("gunicorn_workers".into(), J::from(workers.max(1)));
        m.insert("gunicorn_max_requests".into(), J::from(ap.gunicorn_max_requests));
        m.insert("gunicorn_max_requests_jitter".into(), J::from(ap.gunicorn_max_requests / 2));
        m.insert("gunicorn_graceful_timeout".into(), J::from(ap.gunicorn_graceful_timeout));
        m.insert("django_bind".into(), J::from(ap.django_bind.clone()));
        m.insert("django_port".into(), J::from(ap.django_port));
        m.insert("flower_port".into(), J::from(ap.flower_port));
        m.insert("formplayer_memory".into(), J::from(ap.formplayer_memory.clone()));
    }
    m
}

/// The program files for `host`: `(file name, contents)`, one file per kind of program,
/// named `<deploy_env>_supervisor_<kind>.conf` as commcare-cloud names them.
pub fn render_confs(env: &Environment, host: &str, renderer: &Renderer) -> Result<Vec<(String, String)>> {
    let programs = programs_for_host(env, host);
    let base = host_context(env, host);
    let mut files: Vec<(ProgramKind, String)> = Vec::new();
    for p in &programs {
        let mut ctx = base.clone();
        for (k, v) in &p.vars {
            ctx.insert(k.clone(), v.clone());
        }
        let name = command_template_name(p.kind.slug());
        let command = if renderer.has(&name) {
            renderer.render(&name, &ctx)?
        } else {
            let template = env.profile.program_commands.get(p.kind.slug()).cloned().unwrap_or_default();
            renderer.render_str(&name, &template, &ctx)?
        };
        ctx.insert("name".into(), p.name.clone().into());
        ctx.insert("kind".into(), p.kind.slug().into());
        ctx.insert("command".into(), command.split_whitespace().collect::<Vec<_>>().join(" ").into());
        ctx.insert("stopwaitsecs".into(), p.kind.stopwaitsecs().into());
        let text = renderer.render("supervisor_program.conf", &ctx)?;
        match files.iter_mut().find(|(k, _)| *k == p.kind) {
            Some((_, t)) => {
                t.push('\n');
                t.push_str(&text);
            }
            None => files.push((p.kind, text)),
        }
    }
    Ok(files.into_iter().map(|(k, t)| (format!("{}_supervisor_{}.conf", env.meta.deploy_env, k.slug()), t)).collect())
}

/// The name a program kind's command template (`cchq.yml` `programs.<kind>`) renders under.
fn command_template_name(slug: &str) -> String {
    format!("cchq.yml programs.{slug}")
}

/// A renderer holding the supervisor program template (the environment's override, if any) and
/// the profile's program command templates, compiled once for every host and program.
pub fn renderer(env: &Environment) -> Result<Renderer> {
    let mut r = Renderer::new();
    let path = env.dir.join("templates/supervisor_program.conf.hbs");
    match std::fs::read_to_string(&path) {
        Ok(text) => r.add("supervisor_program.conf", &text).map_err(|e| e.context(path.display()))?,
        Err(_) => r.add("supervisor_program.conf", PROGRAM_TEMPLATE)?,
    }
    for (slug, template) in &env.profile.program_commands {
        // One that does not compile is left out: `render_confs` compiles it again where a host
        // uses it, and reports the error there, as before.
        let _ = r.add(&command_template_name(slug), template);
    }
    Ok(r)
}

/// Programs of `host` as a list for [`action_command`]: empty (meaning `all`) when `selected`
/// covers every program the host has.
pub fn collapse(all: &[Program], selected: &[&Program]) -> Vec<String> {
    if !all.is_empty() && selected.len() == all.len() { Vec::new() } else { selected.iter().map(|p| p.name.clone()).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let text = "commcare-hq-fleet-django          RUNNING   pid 1234, uptime 0:01:02\n\
                    commcare-hq-fleet-celerybeat      STOPPED   Nov 26 03:00 PM\n\
                    commcare-hq-fleet-pillowtop-X-0   FATAL     Exited too quickly (process log may have details)\n\
                    nope: ERROR (no such process)\n\
                    web                               RUNNING   pid 9, uptime 2 days, 3:04:05\n";
        let s = parse_status(text);
        assert_eq!(s[0].state, "RUNNING");
        assert_eq!((s[0].pid, s[0].uptime_secs), (Some(1234), Some(62)));
        assert_eq!(s[1].state, "STOPPED");
        assert_eq!(s[2].state, "FATAL");
        assert_eq!((s[3].name.as_str(), s[3].state.as_str()), ("nope", "MISSING"));
        assert_eq!(s[4].uptime_secs, Some(2 * 86_400 + 3 * 3600 + 4 * 60 + 5));
    }

    #[test]
    fn action_commands_collapse_to_all_and_include_status() {
        let cmd = action_command("restart", &[]);
        assert!(cmd.inner_shell().contains("supervisorctl restart all"), "{}", cmd.inner_shell());
        assert_eq!(cmd.become_as(), Some("root"));
        let cmd = action_command("stop", &["a".into(), "b c".into()]);
        assert!(cmd.argv()[2].contains("supervisorctl stop a 'b c'"), "{:?}", cmd.argv());
        let (_, st) = split_action_output("a: stopped\n--cchq-status--\na STOPPED Nov 26\n");
        assert_eq!(st[0].state, "STOPPED");
    }

    #[test]
    fn confs_render_for_the_fixture() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/commcare-cloud/environments");
        let env = Environment::load(&root, "test").unwrap();
        let r = renderer(&env).unwrap();
        let files = render_confs(&env, "cloud_worker_5", &r).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["test_supervisor_celerybeat.conf", "test_supervisor_celery.conf", "test_supervisor_flower.conf"]);
        let celery = &files[1].1;
        assert!(celery.contains("[program:commcare-hq-test-celery_background_queue"), "{celery}");
        assert!(celery.contains("--autoscale=1,0 -Ofair"), "{celery}");
        assert!(celery.contains("directory=/home/cchq/www/test/current"), "{celery}");
        assert!(celery.contains("user=cchq"), "{celery}");
    }
}

/// What `update-supervisor-confs` did on one host.
#[derive(Debug, Serialize)]
pub struct ConfUpdate {
    /// The host.
    pub host: String,
    /// The files written.
    pub files: Vec<String>,
    /// What `supervisorctl reread`/`update` said (changed, added, removed programs).
    pub output: String,
}

/// Renders every host's program files, writes them (as root, atomically) into the profile's
/// supervisor directory, removes this environment's stale files there, and runs
/// `supervisorctl reread` + `update`. Rendering happens for every host before anything is
/// written, so a template error changes nothing.
///
/// # Errors
/// A template that does not render, for any host (nothing is written then).
pub async fn update_confs(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    hosts: &[String],
) -> Result<Vec<(String, Result<ConfUpdate>)>> {
    let r = renderer(env)?;
    let mut rendered = Vec::new();
    for h in hosts {
        rendered.push((h.clone(), render_confs(env, h, &r).map_err(|e| e.context(format!("host `{h}`")))?));
    }
    let dir = env.profile.supervisor_conf_dir.trim_end_matches('/').to_owned();
    let log_dir = format!("{}/{}/log", env.profile.www_root, env.meta.deploy_env);
    let app_user = env.profile.app_user.clone();
    let prefix = format!("{}_supervisor_", env.meta.deploy_env);
    let futs = rendered.into_iter().map(|(host, files)| {
        let (dir, log_dir, app_user, prefix) = (dir.clone(), log_dir.clone(), app_user.clone(), prefix.clone());
        async move {
            let res: Result<ConfUpdate> = async {
                let mk = RemoteCommand::new("mkdir").arg("-p").arg(&log_dir).become_user(app_user);
                transport.exec(&host, &mk).await?.check(&host, &mk)?;
                let opts = crate::transport::WriteOptions { mode: Some(0o644), become_user: Some("root".into()) };
                for (name, text) in &files {
                    transport.write_file(&host, &format!("{dir}/{name}"), text.as_bytes(), &opts).await?;
                }
                let keep: Vec<String> = files.iter().map(|(n, _)| crate::command::quote(n)).collect();
                let case = if keep.is_empty() { "''".to_owned() } else { keep.join("|") };
                let script = format!(
                    "cd {d} && for f in {p}*.conf; do [ -e \"$f\" ] || continue; case \"$f\" in {case}) ;; *) rm -f -- \"$f\"; echo \"removed $f\";; esac; done; \
                     supervisorctl reread && supervisorctl update",
                    d = crate::command::quote(&dir),
                    p = crate::command::quote(&prefix),
                );
                let cmd = RemoteCommand::shell(script).become_user("root");
                let out = transport.exec(&host, &cmd).await?.check(&host, &cmd)?;
                Ok(ConfUpdate { host: host.clone(), files: files.into_iter().map(|(n, _)| n).collect(), output: out.stdout_str() })
            }
            .await;
            (host, res)
        }
    });
    Ok(futures::future::join_all(futs).await)
}
