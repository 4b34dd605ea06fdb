//! supervisord: program config files rendered from the profile, program control through
//! supervisord's XML-RPC socket ([`call`]), and the parsing of `supervisorctl status` (still used
//! where supervisord itself may have to be started first).

use serde::Serialize;

use super::programs::{ProgramKind, programs_for_host};
use super::xmlrpc;
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

/// Where supervisord listens when `cchq.yml` does not say (`[unix_http_server] file` of the
/// Debian/Ubuntu package; `/var/run` is `/run`).
pub const DEFAULT_SOCKET: &str = "/var/run/supervisor.sock";

/// Sends `body` (an XML-RPC request) to supervisord's unix socket on the host, as root, and prints
/// the response body: with `curl` where the host has it, else with a few lines of `python3`
/// (isolated, no `site`), so no `supervisorctl` (a quarter of a second of CPU per call) runs.
pub fn rpc_command(socket: &str, body: &str) -> RemoteCommand {
    let script = format!(
        "s={s}; b={b}; if command -v curl >/dev/null 2>&1; then \
         exec curl -sS --unix-socket \"$s\" -H 'Content-Type: text/xml' --data-binary \"$b\" http://localhost/RPC2; \
         else exec python3 -I -S -c {py} \"$s\" \"$b\"; fi",
        s = crate::command::quote(socket),
        b = crate::command::quote(body),
        py = crate::command::quote(PY_RELAY),
    );
    RemoteCommand::shell(script).become_user("root")
}

/// [`rpc_command`] without the `curl` branch (the fallback, on its own, for tests).
pub fn rpc_command_python(socket: &str, body: &str) -> RemoteCommand {
    RemoteCommand::new("python3").args(["-I", "-S", "-c", PY_RELAY, socket, body]).become_user("root")
}

/// HTTP/1.0 POST over a unix socket; prints the response body.
const PY_RELAY: &str = "import socket,sys
s=socket.socket(socket.AF_UNIX)
try:s.connect(sys.argv[1])
except OSError as e:sys.exit('cannot connect to %s: %s'%(sys.argv[1],e))
b=sys.argv[2].encode()
s.sendall(b'POST /RPC2 HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Type: text/xml\\r\\nContent-Length: %d\\r\\n\\r\\n'%len(b)+b)
r=[]
while 1:
 d=s.recv(65536)
 if not d:break
 r.append(d)
sys.stdout.write(b''.join(r).split(b'\\r\\n\\r\\n',1)[-1].decode('utf-8','replace'))
";

/// The XML-RPC request for `action` (`start`, `stop`, `restart`, `status`) of `programs` (empty:
/// all of them), followed by `getAllProcessInfo`, as one `system.multicall`: one round trip.
pub fn action_body(action: &str, programs: &[String]) -> String {
    use xmlrpc::Value as V;
    let each = |method: &'static str| programs.iter().map(move |p| (method, vec![V::from(p.as_str()), V::Bool(true)]));
    let mut calls: Vec<(&str, Vec<V>)> = Vec::new();
    let (stop, start) = (matches!(action, "stop" | "restart"), matches!(action, "start" | "restart"));
    if programs.is_empty() {
        if stop {
            calls.push(("supervisor.stopAllProcesses", vec![V::Bool(true)]));
        }
        if start {
            calls.push(("supervisor.startAllProcesses", vec![V::Bool(true)]));
        }
    } else {
        if stop {
            calls.extend(each("supervisor.stopProcess"));
        }
        if start {
            calls.extend(each("supervisor.startProcess"));
        }
    }
    calls.push(("supervisor.getAllProcessInfo", vec![]));
    xmlrpc::multicall(&calls)
}

/// `action` of `programs` (empty: all) through supervisord's socket, then the state of every
/// program, in one round trip. Returns what the action reported (`name: ERROR (...)` lines, empty
/// when everything went as asked) and the states.
///
/// # Errors
/// Connection errors as the transport reports them; supervisord not answering (not running, wrong
/// socket, refused) as a `Failed` error naming the host and socket.
pub async fn call(
    t: &dyn crate::transport::Transport,
    host: &str,
    socket: &str,
    action: &str,
    programs: &[String],
) -> Result<(String, Vec<ProgramStatus>)> {
    let cmd = rpc_command(socket, &action_body(action, programs));
    let out = t.exec(host, &cmd).await?;
    let unreachable = |why: String| {
        crate::error::Error::new(
            crate::error::ErrorKind::CommandFailed,
            format!("supervisord on `{host}` does not answer at `{socket}`: {why}"),
        )
        .with_hint(
            "is supervisord running there? `after-reboot --limit <host> all` starts it; the socket is `supervisor_socket` in cchq.yml",
        )
    };
    if !out.success() {
        let why = format!("{}{}", out.stderr_str().trim(), out.stdout_str().trim());
        return Err(unreachable(if why.is_empty() { format!("exit {:?}", out.exit_code) } else { why }));
    }
    let results = match xmlrpc::parse_response(&out.stdout_str()).map_err(&unreachable)? {
        Ok(v) => v,
        Err(f) => return Err(unreachable(format!("fault {}: {}", f.code, f.string))),
    };
    let results = results.as_array().unwrap_or_default();
    let (info, actions) = results.split_last().ok_or_else(|| unreachable("an empty multicall response".into()))?;
    let mut said = String::new();
    for r in actions {
        if let Some(f) = xmlrpc::fault_of(r) {
            // Stopping what is not running or starting what runs is what `restart` expects.
            if f.code != 60 && f.code != 70 {
                said.push_str(&format!("ERROR ({})\n", f.string));
            }
            continue;
        }
        // startAllProcesses/stopAllProcesses: one status per process (80 = success).
        for item in multicall_list(r) {
            if item.get("status").and_then(xmlrpc::Value::as_i64).is_some_and(|s| s != 80 && s != 60 && s != 70) {
                let name = item.get("name").and_then(xmlrpc::Value::as_str).unwrap_or("?");
                let desc = item.get("description").and_then(xmlrpc::Value::as_str).unwrap_or("");
                said.push_str(&format!("{name}: ERROR ({desc})\n"));
            }
        }
    }
    if let Some(f) = xmlrpc::fault_of(info) {
        return Err(unreachable(format!("fault {}: {}", f.code, f.string)));
    }
    let list = multicall_list(info);
    Ok((said, list.iter().map(status_of).collect()))
}

/// What supervisord answers to an [`action_body`] request when every action succeeded and the
/// programs are in `states` (`(name, STATE)`): for tests on the memory transport.
pub fn fake_answer(states: &[(&str, &str)]) -> String {
    use xmlrpc::Value as V;
    let infos = states
        .iter()
        .map(|(name, state)| {
            let running = *state == "RUNNING";
            V::structure([
                ("name", V::from(*name)),
                ("group", V::from(*name)),
                ("statename", V::from(*state)),
                ("description", V::from(if running { "pid 100, uptime 0:10:00" } else { "" })),
                ("pid", V::Int(if running { 100 } else { 0 })),
                ("start", V::Int(1000)),
                ("now", V::Int(1600)),
            ])
        })
        .collect();
    let mut out = String::from("<?xml version='1.0'?><methodResponse><params><param>");
    V::Array(vec![V::Array(infos)]).encode_into(&mut out);
    out.push_str("</param></params></methodResponse>");
    out
}

/// The array a multicall item holds: supervisord puts each call's result straight into the
/// multicall's answer, where the XML-RPC multicall convention wraps it in a one-item array;
/// both are read.
fn multicall_list(v: &xmlrpc::Value) -> &[xmlrpc::Value] {
    let list = v.as_array().unwrap_or_default();
    match list {
        [inner @ xmlrpc::Value::Array(_)] => inner.as_array().unwrap_or_default(),
        _ => list,
    }
}

/// One entry of `getAllProcessInfo` as a [`ProgramStatus`].
fn status_of(v: &xmlrpc::Value) -> ProgramStatus {
    use xmlrpc::Value as V;
    let s = |k: &str| v.get(k).and_then(V::as_str).unwrap_or_default().to_owned();
    let i = |k: &str| v.get(k).and_then(V::as_i64).unwrap_or(0);
    let (name, group) = (s("name"), s("group"));
    let state = s("statename");
    let running = state == "RUNNING";
    ProgramStatus {
        name: if group.is_empty() || group == name { name } else { format!("{group}:{name}") },
        pid: u32::try_from(i("pid")).ok().filter(|p| *p > 0 && running),
        uptime_secs: running.then(|| u64::try_from(i("now") - i("start")).unwrap_or(0)),
        detail: s("description"),
        state,
    }
}

/// The line between an action's output and the status that follows it.
pub const STATUS_MARKER: &str = "--cchq-status--";

/// Splits `<action output>`, [`STATUS_MARKER`], `supervisorctl status` output into (action output, status lines).
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
        if p.kind == ProgramKind::Formplayer {
            // formplayer runs from its own releases (`deploy formplayer`), not commcare's.
            let home = format!("{}/{}/formplayer_build/current", env.profile.www_root, env.meta.deploy_env);
            ctx.insert("python_env".into(), format!("{home}/python_env").into());
            ctx.insert("python".into(), format!("{home}/python_env/bin/python").into());
            ctx.insert("code_home".into(), home.into());
        }
        for (k, v) in &p.vars {
            ctx.insert(k.clone(), v.clone());
        }
        let template = env.profile.program_commands.get(p.kind.slug()).cloned().unwrap_or_default();
        let command = renderer.render_str(&format!("cchq.yml programs.{}", p.kind.slug()), &template, &ctx)?;
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

/// A renderer holding the supervisor program template (the environment's override, if any).
pub fn renderer(env: &Environment) -> Result<Renderer> {
    let mut r = Renderer::new();
    let path = env.dir.join("templates/supervisor_program.conf.hbs");
    match std::fs::read_to_string(&path) {
        Ok(text) => r.add("supervisor_program.conf", &text).map_err(|e| e.context(path.display()))?,
        Err(_) => r.add("supervisor_program.conf", PROGRAM_TEMPLATE)?,
    }
    Ok(r)
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
    fn action_bodies_collapse_to_all_and_end_with_the_states() {
        let body = action_body("restart", &[]);
        let stop = body.find("supervisor.stopAllProcesses").unwrap();
        let start = body.find("supervisor.startAllProcesses").unwrap();
        assert!(stop < start && start < body.find("supervisor.getAllProcessInfo").unwrap(), "{body}");
        let body = action_body("stop", &["a".into(), "b c".into()]);
        assert_eq!(body.matches("supervisor.stopProcess").count(), 2, "{body}");
        assert!(!body.contains("startProcess") && body.contains("<string>b c</string>"), "{body}");
        assert_eq!(action_body("status", &["a".into()]).matches("supervisor.").count(), 1);
        let cmd = rpc_command("/run/supervisor.sock", &body);
        assert_eq!(cmd.become_as(), Some("root"));
        assert!(cmd.inner_shell().contains("--unix-socket"), "{}", cmd.inner_shell());
        let (_, st) = split_action_output("a: stopped\n--cchq-status--\na STOPPED Nov 26\n");
        assert_eq!(st[0].state, "STOPPED");
    }

    #[test]
    fn process_info_becomes_a_status() {
        use xmlrpc::Value as V;
        let info = V::structure([
            ("name", V::from("web")),
            ("group", V::from("web")),
            ("statename", V::from("RUNNING")),
            ("description", V::from("pid 7, uptime 0:00:05")),
            ("pid", V::Int(7)),
            ("start", V::Int(100)),
            ("now", V::Int(105)),
        ]);
        let st = status_of(&info);
        assert_eq!((st.name.as_str(), st.state.as_str(), st.pid, st.uptime_secs), ("web", "RUNNING", Some(7), Some(5)));
        let info = V::structure([("name", V::from("w_0")), ("group", V::from("w")), ("statename", V::from("FATAL")), ("pid", V::Int(0))]);
        let st = status_of(&info);
        assert_eq!((st.name.as_str(), st.pid, st.uptime_secs), ("w:w_0", None, None));
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
