//! supervisord: program config files rendered from the profile, program control through
//! supervisord's XML-RPC socket ([`call`]), and the parsing of `supervisorctl status` (still used
//! where supervisord itself may have to be started first).

use serde::Serialize;

use super::programs::{ProgramKind, programs_for_host};
use super::xmlrpc;
use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
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

/// The line the relay prints after each response.
pub const RPC_SEPARATOR: &str = "--cchq-rpc--";

/// Sends `bodies` (XML-RPC requests, one HTTP request each, in order) to supervisord's unix socket
/// on the host, as root, in one round trip, and prints each response followed by a
/// [`RPC_SEPARATOR`] line: with `curl` where the host has it, else with a few lines of `python3`
/// (isolated, no `site`), so no `supervisorctl` (a quarter of a second of CPU per call) runs.
///
/// One request per call rather than one `system.multicall`: supervisord looks at a multicall's
/// waiting calls (`startProcess(name, true)`, ...) only once per turn of its main loop, which adds
/// up to a second to each of them.
pub fn rpc_command(socket: &str, bodies: &[String]) -> RemoteCommand {
    let script = format!(
        "s={s}; if command -v curl >/dev/null 2>&1; then \
           for b in {b}; do curl -sS --unix-socket \"$s\" -H 'Content-Type: text/xml' --data-binary \"$b\" http://localhost/RPC2 || exit $?; \
           printf '\\n{sep}\\n'; done; \
         else exec python3 -I -S -c {py} \"$s\" {b}; fi",
        s = crate::command::quote(socket),
        b = crate::command::join(bodies),
        py = crate::command::quote(PY_RELAY),
        sep = RPC_SEPARATOR,
    );
    RemoteCommand::shell(script).become_user("root")
}

/// [`rpc_command`] without the `curl` branch (the fallback, on its own, for tests).
pub fn rpc_command_python(socket: &str, bodies: &[String]) -> RemoteCommand {
    RemoteCommand::new("python3").args(["-I", "-S", "-c", PY_RELAY, socket]).args(bodies.iter().cloned()).become_user("root")
}

/// HTTP/1.0 POSTs over a unix socket, one per argument after the socket; prints each response
/// body and a separator line.
const PY_RELAY: &str = "import socket,sys
for b in sys.argv[2:]:
 s=socket.socket(socket.AF_UNIX)
 try:s.connect(sys.argv[1])
 except OSError as e:sys.exit('cannot connect to %s: %s'%(sys.argv[1],e))
 b=b.encode()
 s.sendall(b'POST /RPC2 HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Type: text/xml\\r\\nContent-Length: %d\\r\\n\\r\\n'%len(b)+b)
 r=[]
 while 1:
  d=s.recv(65536)
  if not d:break
  r.append(d)
 s.close()
 sys.stdout.write(b''.join(r).split(b'\\r\\n\\r\\n',1)[-1].decode('utf-8','replace')+'\\n--cchq-rpc--\\n')
";

/// The XML-RPC requests for `action` (`start`, `stop`, `restart`, `status`) of `programs`, by
/// name, then `getAllProcessInfo`.
///
/// Never `stopAllProcesses` / `startAllProcesses`: a host's supervisord may also run programs of
/// other environments or of the operator, and cchq acts only on the programs it was given. An
/// empty `programs` acts on nothing (only the states are read).
pub fn action_bodies(action: &str, programs: &[String]) -> Vec<String> {
    use xmlrpc::Value as V;
    let (stop, start) = (matches!(action, "stop" | "restart"), matches!(action, "start" | "restart"));
    let mut bodies = Vec::new();
    for (wanted, method) in [(stop, "supervisor.stopProcess"), (start, "supervisor.startProcess")] {
        if wanted {
            bodies.extend(programs.iter().map(|p| xmlrpc::call(method, &[V::from(p.as_str()), V::Bool(true)])));
        }
    }
    bodies.push(xmlrpc::call("supervisor.getAllProcessInfo", &[]));
    bodies
}

/// Sends `bodies` to supervisord on `host` and returns each answer (a value or a fault).
///
/// # Errors
/// Connection errors as the transport reports them; supervisord not answering (not running, wrong
/// socket, refused) or answering what is not XML-RPC, as a `CommandFailed` error naming the host
/// and socket.
pub async fn rpc(
    t: &dyn crate::transport::Transport,
    host: &str,
    socket: &str,
    bodies: &[String],
) -> Result<Vec<std::result::Result<xmlrpc::Value, xmlrpc::Fault>>> {
    let out = t.exec(host, &rpc_command(socket, bodies)).await?;
    let err = |why: String| {
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
        return Err(err(if why.is_empty() { format!("exit {:?}", out.exit_code) } else { why }));
    }
    let text = out.stdout_str();
    let parts: Vec<&str> = text.split(&format!("\n{RPC_SEPARATOR}\n")).filter(|p| !p.trim().is_empty()).collect();
    if parts.is_empty() {
        return Err(err("no answer".into()));
    }
    parts.into_iter().map(|p| xmlrpc::parse_response(p).map_err(&err)).collect()
}

/// `action` of `programs` (by name; empty: none) through supervisord's socket, then the state of every
/// program, in one round trip. Returns what the action reported (`ERROR (...)` lines, empty when
/// everything went as asked) and the states.
///
/// # Errors
/// As [`rpc`]; a fault from `getAllProcessInfo`.
pub async fn call(
    t: &dyn crate::transport::Transport,
    host: &str,
    socket: &str,
    action: &str,
    programs: &[String],
) -> Result<(String, Vec<ProgramStatus>)> {
    let answers = rpc(t, host, socket, &action_bodies(action, programs)).await?;
    let (info, actions) = answers.split_last().ok_or_else(|| crate::error::Error::internal("no answer from supervisord"))?;
    let mut said = String::new();
    for r in actions {
        match r {
            // Stopping what is not running or starting what runs is what `restart` expects.
            Err(f) if f.code == 60 || f.code == 70 => {}
            Err(f) => said.push_str(&format!("ERROR ({})\n", f.string)),
            // startProcess/stopProcess answer `true` (a group's `name:*` form answers one
            // status per process, 80 = success).
            Ok(v) => {
                for item in v.as_array().unwrap_or_default() {
                    if item.get("status").and_then(xmlrpc::Value::as_i64).is_some_and(|s| s != 80 && s != 60 && s != 70) {
                        let name = item.get("name").and_then(xmlrpc::Value::as_str).unwrap_or("?");
                        let desc = item.get("description").and_then(xmlrpc::Value::as_str).unwrap_or("");
                        said.push_str(&format!("{name}: ERROR ({desc})\n"));
                    }
                }
            }
        }
    }
    let info = info.as_ref().map_err(|f| {
        crate::error::Error::new(crate::error::ErrorKind::CommandFailed, format!("supervisord on `{host}`: fault {}: {}", f.code, f.string))
    })?;
    Ok((said, info.as_array().unwrap_or_default().iter().map(status_of).collect()))
}

/// What supervisord answers to the last of [`action_bodies`] (`getAllProcessInfo`) when the
/// programs are in `states` (`(name, STATE)`), as the relay prints it: for tests on the memory
/// transport.
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
    V::Array(infos).encode_into(&mut out);
    out.push_str("</param></params></methodResponse>\n");
    out.push_str(RPC_SEPARATOR);
    out.push('\n');
    out
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
    fn action_bodies_name_every_program_and_end_with_the_states() {
        let bodies = action_bodies("restart", &[]);
        assert_eq!(bodies.len(), 1, "nothing selected: only the states are read");
        assert!(bodies[0].contains("<methodName>supervisor.getAllProcessInfo</methodName>"));
        let bodies = action_bodies("restart", &["a".into(), "b".into()]);
        assert!(bodies.iter().all(|b| !b.contains("AllProcesses</methodName>")), "{bodies:?}");
        assert_eq!(bodies.len(), 5);
        let bodies = action_bodies("stop", &["a".into(), "b c".into()]);
        assert_eq!(bodies.len(), 3);
        assert!(bodies[1].contains("supervisor.stopProcess") && bodies[1].contains("<string>b c</string>"), "{bodies:?}");
        assert_eq!(action_bodies("status", &["a".into()]).len(), 1);
        let cmd = rpc_command("/run/supervisor.sock", &bodies);
        assert_eq!(cmd.become_as(), Some("root"));
        assert!(cmd.inner_shell().contains("--unix-socket"), "{}", cmd.inner_shell());
        let (_, st) = split_action_output("a: stopped\n--cchq-status--\na STOPPED Nov 26\n");
        assert_eq!(st[0].state, "STOPPED");
    }

    /// The relay script, run by a real `/bin/sh` with a stand-in `curl` on PATH: one request per
    /// body, in order, each answer followed by the separator.
    #[test]
    fn the_relay_sends_one_request_per_body_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let curl = dir.path().join("curl");
        std::fs::write(&curl, "#!/bin/sh\nfor a; do last=$a; prev2=$prev; prev=$a; done\necho \"$prev2\" | sed 's/.*<methodName>\\(.*\\)<\\/methodName>.*/\\1/'\n").unwrap();
        std::fs::set_permissions(&curl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cmd = rpc_command("/nowhere.sock", &action_bodies("restart", &["x'y".into()]));
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd.inner_shell())
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let methods: Vec<&str> = text.split(&format!("\n{RPC_SEPARATOR}\n")).map(str::trim).filter(|s| !s.is_empty()).collect();
        assert_eq!(methods, ["supervisor.stopProcess", "supervisor.startProcess", "supervisor.getAllProcessInfo"], "{text}");
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
    /// The files the host should have (written only where they differed).
    pub files: Vec<String>,
    /// What changed: files written or removed, process groups added, updated or removed.
    pub output: String,
}

/// The script that brings `dir` to exactly `files` (for this environment's prefix): each file is
/// written (as root, mode 0644, temp file + rename) only when it differs, stale files are removed;
/// prints `changed <file>` / `removed <file>` for what it did.
fn sync_script(dir: &str, prefix: &str, log_dir: &str, app_user: &str, files: &[(String, String)]) -> String {
    use crate::command::quote;
    let mut script = format!(
        "set -e; mkdir -p {d}; [ -d {l} ] || sudo -n -u {u} mkdir -p {l}; cd {d}; ",
        d = quote(dir),
        u = quote(app_user),
        l = quote(log_dir)
    );
    for (name, text) in files {
        let b64 = crate::command::base64(text.as_bytes());
        let (n, t) = (quote(name), quote(&format!(".{name}.cchq-tmp")));
        script.push_str(&format!(
            "printf %s {b64} | base64 -d > {t}; chmod 0644 {t}; if cmp -s {t} {n}; then rm -f {t}; else mv -f {t} {n}; echo \"changed {name}\"; fi; "
        ));
    }
    let keep: Vec<String> = files.iter().map(|(n, _)| crate::command::quote(n)).collect();
    let case = if keep.is_empty() { "''".to_owned() } else { keep.join("|") };
    script.push_str(&format!(
        "for f in {p}*.conf; do [ -e \"$f\" ] || continue; case \"$f\" in {case}) ;; *) \
           sed -n 's/^\\[program:\\(.*\\)\\][[:space:]]*$/was \\1/p; s/^\\[group:\\(.*\\)\\][[:space:]]*$/was \\1/p' \"$f\"; \
           rm -f -- \"$f\"; echo \"removed $f\";; esac; done",
        p = quote(prefix)
    ));
    script
}

/// The process group names a supervisor file declares (`[program:NAME]`, `[group:NAME]`).
pub fn section_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.strip_suffix(']')?;
            inner.strip_prefix("program:").or_else(|| inner.strip_prefix("group:")).map(|n| n.trim().to_owned())
        })
        .collect()
}

/// The XML-RPC requests that do what `supervisorctl update` does with the result of
/// `reloadConfig` (`[[added, changed, removed]]`): stop and remove removed groups, stop, remove and
/// re-add changed ones, add new ones (which start when `autostart`).
pub fn update_bodies(added: &[String], changed: &[String], removed: &[String]) -> Vec<String> {
    use xmlrpc::Value as V;
    let mut calls = Vec::new();
    for g in removed.iter().chain(changed) {
        calls.push(xmlrpc::call("supervisor.stopProcessGroup", &[V::from(g.as_str()), V::Bool(true)]));
        calls.push(xmlrpc::call("supervisor.removeProcessGroup", &[V::from(g.as_str())]));
    }
    for g in changed.iter().chain(added) {
        calls.push(xmlrpc::call("supervisor.addProcessGroup", &[V::from(g.as_str())]));
    }
    calls
}

/// Renders every host's program files, writes those that differ (as root, atomically) into the
/// profile's supervisor directory, removes this environment's stale files there, and when anything
/// changed has supervisord reload its configuration and add, update or remove the process groups
/// (what `supervisorctl reread` + `update` do, over its socket). Rendering happens for every host
/// before anything is written, so a template error changes nothing. One round trip per host when
/// nothing changed, three when something did.
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
    let prefix = format!("{}_supervisor_", env.meta.deploy_env);
    let socket = env.profile.supervisor_socket.clone();
    let futs = rendered.into_iter().map(|(host, files)| {
        let script = sync_script(&dir, &prefix, &log_dir, &env.profile.app_user, &files);
        let socket = socket.clone();
        async move {
            let res: Result<ConfUpdate> = async {
                let cmd = RemoteCommand::shell(script).become_user("root");
                let out = transport.exec(&host, &cmd).await?.check(&host, &cmd)?;
                // The process groups that are this environment's: those of its files, and those of
                // the files just removed (`was NAME`). supervisord's reload also reports other
                // environments' and the operator's changed files: those are left alone.
                let stdout = out.stdout_str();
                let mut ours: std::collections::HashSet<String> = files.iter().flat_map(|(_, text)| section_names(text)).collect();
                ours.extend(stdout.lines().filter_map(|l| l.strip_prefix("was ")).map(|n| n.trim().to_owned()));
                let mut output: String = stdout.lines().filter(|l| !l.starts_with("was ")).map(|l| format!("{l}\n")).collect();
                if !output.trim().is_empty() {
                    let reload = vec![xmlrpc::call("supervisor.reloadConfig", &[])];
                    let answer = rpc(transport, &host, &socket, &reload).await?.pop();
                    let v = match answer {
                        Some(Ok(v)) => v,
                        Some(Err(f)) => {
                            return Err(Error::new(ErrorKind::CommandFailed, format!("reloadConfig on `{host}`: {}", f.string)));
                        }
                        None => xmlrpc::Value::Nil,
                    };
                    // `[[added, changed, removed]]`
                    let outer = v.as_array().unwrap_or_default();
                    let lists: Vec<Vec<String>> = outer
                        .first()
                        .and_then(xmlrpc::Value::as_array)
                        .unwrap_or_default()
                        .iter()
                        .map(|l| l.as_array().unwrap_or_default().iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                        .collect();
                    let mine = |l: &Vec<String>| -> Vec<String> { l.iter().filter(|n| ours.contains(*n)).cloned().collect() };
                    let (added, changed, removed) = match lists.as_slice() {
                        [a, c, r] => (mine(a), mine(c), mine(r)),
                        _ => (Vec::new(), Vec::new(), Vec::new()),
                    };
                    if !(added.is_empty() && changed.is_empty() && removed.is_empty()) {
                        for answer in rpc(transport, &host, &socket, &update_bodies(&added, &changed, &removed)).await? {
                            if let Err(f) = answer {
                                output.push_str(&format!("ERROR ({})\n", f.string));
                            }
                        }
                    }
                    for (what, names) in [("added", &added), ("updated", &changed), ("removed", &removed)] {
                        for n in names {
                            output.push_str(&format!("{n}: {what} process group\n"));
                        }
                    }
                }
                Ok(ConfUpdate { host: host.clone(), files: files.into_iter().map(|(n, _)| n).collect(), output })
            }
            .await;
            (host, res)
        }
    });
    Ok(futures::future::join_all(futs).await)
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(crate::command::base64(b""), "");
        assert_eq!(crate::command::base64(b"f"), "Zg==");
        assert_eq!(crate::command::base64(b"fo"), "Zm8=");
        assert_eq!(crate::command::base64(b"foo"), "Zm9v");
        assert_eq!(crate::command::base64(b"[program:a]\ncommand=x 'y' \"$z\"\n"), "W3Byb2dyYW06YV0KY29tbWFuZD14ICd5JyAiJHoiCg==");
    }

    /// The sync script, run by a real `/bin/sh` in a temporary directory: writes what differs,
    /// leaves what is the same, removes this environment's stale files and nothing else.
    #[test]
    fn the_sync_script_writes_only_what_differs_and_removes_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let log = format!("{d}/log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(format!("{d}/e_supervisor_old.conf"), "old").unwrap();
        std::fs::write(format!("{d}/other_supervisor_x.conf"), "keep").unwrap();
        let run = |files: &[(String, String)]| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(sync_script(&d, "e_supervisor_", &log, "nobody", files))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let files = vec![("e_supervisor_web.conf".to_owned(), "[program:web]\ncommand=run 'it'\n".to_owned())];
        let said = run(&files);
        assert!(said.contains("changed e_supervisor_web.conf") && said.contains("removed e_supervisor_old.conf"), "{said}");
        assert_eq!(std::fs::read_to_string(format!("{d}/e_supervisor_web.conf")).unwrap(), files[0].1);
        assert_eq!(run(&files), "", "nothing differs the second time");
        assert!(std::path::Path::new(&format!("{d}/other_supervisor_x.conf")).exists(), "another environment's file stays");
        let files = vec![("e_supervisor_web.conf".to_owned(), "[program:web]\ncommand=other\n".to_owned())];
        assert_eq!(run(&files), "changed e_supervisor_web.conf\n");
    }

    #[test]
    fn update_bodies_follow_supervisorctl_update() {
        let body = update_bodies(&["new".into()], &["chg".into()], &["gone".into()]).join("\n");
        let order: Vec<usize> =
            ["stopProcessGroup", "removeProcessGroup", "addProcessGroup"].iter().map(|m| body.find(m).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{body}");
        assert_eq!(body.matches("supervisor.addProcessGroup").count(), 2, "changed and added groups are added");
        assert_eq!(body.matches("supervisor.removeProcessGroup").count(), 2, "changed and removed groups are removed");
    }
}
