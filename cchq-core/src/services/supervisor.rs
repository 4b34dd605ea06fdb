//! supervisord: program config files rendered from the profile, program control through
//! supervisord's XML-RPC socket ([`call`]), and the parsing of `supervisorctl status` (still used
//! where supervisord itself may have to be started first).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::Action;
use super::backend::{Backend, ServiceBackend, UnitState};
use super::programs::{Program, ProgramKind, programs_for_host};
use super::xmlrpc;
use crate::command::RemoteCommand;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::templates::Renderer;
use crate::transport::{Output, Transport};

/// The program file template (supervisor INI), overridable per environment in
/// `<env>/templates/supervisor_program.conf.hbs`.
pub const PROGRAM_TEMPLATE: &str =
    include_str!("../../profiles/commcare/templates/supervisor_program.conf.hbs");

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

    /// `name`'s status among `states`, or `MISSING` when supervisord does not know it.
    pub fn of(states: &[ProgramStatus], name: &str) -> ProgramStatus {
        states
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| ProgramStatus {
                name: name.to_owned(),
                state: "MISSING".into(),
                pid: None,
                uptime_secs: None,
                detail: "supervisord does not know it (run `update-supervisor-confs`)".into(),
            })
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
        let (state, detail) =
            if line.contains("(no such process)") || line.contains("no such process") {
                (
                    "MISSING".to_owned(),
                    "supervisor does not know this program".to_owned(),
                )
            } else {
                match rest.split_first() {
                    Some((s, d)) => ((*s).to_owned(), d.join(" ")),
                    None => ("UNKNOWN".to_owned(), String::new()),
                }
            };
        let name = name.trim_end_matches(':').to_owned();
        let pid = detail
            .strip_prefix("pid ")
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.trim().parse().ok());
        let uptime_secs = detail.split("uptime ").nth(1).and_then(parse_uptime);
        out.push(ProgramStatus {
            name,
            state,
            pid,
            uptime_secs,
            detail,
        });
    }
    out
}

/// `0:01:02` or `2 days, 3:04:05` -> seconds.
fn parse_uptime(s: &str) -> Option<u64> {
    let s = s.trim();
    let (days, hms) = match s.split_once(" day") {
        Some((d, rest)) => (
            d.trim().parse::<u64>().ok()?,
            rest.trim_start_matches('s').trim_start_matches(',').trim(),
        ),
        None => (0, s),
    };
    let mut total = 0u64;
    for part in hms.split(':') {
        total = total * 60 + part.trim().parse::<u64>().ok()?;
    }
    Some(days * 86_400 + total)
}

/// Where supervisord listens when `cchq.yml` does not say ([`crate::profile::DEFAULT_SUPERVISOR_SOCKET`]).
pub use crate::profile::DEFAULT_SUPERVISOR_SOCKET as DEFAULT_SOCKET;

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
///
/// The requests of one call run under a host-wide lock (`flock` on
/// `/run/lock/cchq-supervisor.lock`, where the host has both), so that the sequence of a run that
/// was killed (its relay goes on on the host: nothing tells it its client is gone) finishes
/// before the next run's sequence starts, instead of interleaving with it (a late `stopProcess`
/// of the killed run stopping what the resume just started).
pub fn rpc_command(socket: &str, bodies: &[String]) -> RemoteCommand {
    let batches: Vec<Vec<String>> = bodies.iter().map(|b| vec![b.clone()]).collect();
    rpc_batches_command(socket, &batches)
}

/// What separates two batches in the relay's arguments (an XML-RPC body never is this).
const BATCH_END: &str = ";";

/// [`rpc_command`] for requests in batches: a batch's requests are sent together (each on its own
/// connection, so that supervisord waits for them side by side: every `stopProcess(name, true)`
/// of a restart at once, then every `startProcess(name, true)`, as its own
/// `stopAllProcesses`/`startAllProcesses` do for all of its programs), the next batch once every
/// answer of the one before is in. The answers are printed in the order of the requests; the
/// first request that could not be sent ends the relay (the later batches are not sent).
pub fn rpc_batches_command(socket: &str, batches: &[Vec<String>]) -> RemoteCommand {
    let lock = "if command -v flock >/dev/null 2>&1 && [ -d /run/lock ]; then \
                exec 9>>/run/lock/cchq-supervisor.lock && flock -w 300 9; fi;";
    let curl = "curl -sS --unix-socket \"$s\" -H 'Content-Type: text/xml' --data-binary \"$b\" \
                http://localhost/RPC2";
    let args = relay_args(batches);
    let relay = if batches.iter().all(|b| b.len() <= 1) {
        // One request at a time: no files, no background jobs.
        let bodies: Vec<&String> = batches.iter().flatten().collect();
        format!(
            "for b in {b}; do {curl} || exit $?; printf '\\n{sep}\\n'; done;",
            b = crate::command::join(&bodies),
            sep = RPC_SEPARATOR,
        )
    } else {
        // Each answer and curl's status to a file of its own, printed in order when the batch
        // is done.
        format!(
            "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; i=0; j=0; \
             flush() {{ wait; while [ $j -lt $i ]; do j=$((j + 1)); cat \"$d/$j\"; \
               read -r r <\"$d/$j.rc\"; [ \"$r\" = 0 ] || exit \"$r\"; printf '\\n{sep}\\n'; done; }}; \
             for b in {a}; do if [ \"$b\" = '{end}' ]; then flush; else i=$((i + 1)); \
               {{ {curl} >\"$d/$i\"; echo $? >\"$d/$i.rc\"; }} & fi; done; flush;",
            a = crate::command::join(&args),
            end = BATCH_END,
            sep = RPC_SEPARATOR,
        )
    };
    let script = format!(
        "{lock} s={s}; if command -v curl >/dev/null 2>&1; then {relay} \
         else exec python3 -I -S -c {py} \"$s\" {a}; fi",
        s = crate::command::quote(socket),
        a = crate::command::join(&args),
        py = crate::command::quote(PY_RELAY),
    );
    RemoteCommand::shell(script).become_user("root")
}

/// [`rpc_command`] without the `curl` branch (the fallback, on its own, for tests).
pub fn rpc_command_python(socket: &str, bodies: &[String]) -> RemoteCommand {
    let batches: Vec<Vec<String>> = bodies.iter().map(|b| vec![b.clone()]).collect();
    RemoteCommand::new("python3")
        .args(["-I", "-S", "-c", PY_RELAY, socket])
        .args(relay_args(&batches))
        .become_user("root")
}

/// The relays' arguments: the batches' bodies in order, [`BATCH_END`] between two batches.
fn relay_args(batches: &[Vec<String>]) -> Vec<String> {
    let mut args = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            args.push(BATCH_END.to_owned());
        }
        args.extend(batch.iter().cloned());
    }
    args
}

/// HTTP/1.0 POSTs over a unix socket, one per argument after the socket, the arguments between
/// two `;` sent together (a thread each); prints each response body and a separator line, in
/// the order of the arguments.
const PY_RELAY: &str = "import socket,sys,threading
def post(b,out,i):
 try:
  s=socket.socket(socket.AF_UNIX)
  try:s.connect(sys.argv[1])
  except OSError as e:out[i]=SystemExit('cannot connect to %s: %s'%(sys.argv[1],e));return
  b=b.encode()
  s.sendall(b'POST /RPC2 HTTP/1.0\\r\\nHost: localhost\\r\\nContent-Type: text/xml\\r\\nContent-Length: %d\\r\\n\\r\\n'%len(b)+b)
  r=[]
  while 1:
   d=s.recv(65536)
   if not d:break
   r.append(d)
  s.close()
  out[i]=b''.join(r).split(b'\\r\\n\\r\\n',1)[-1].decode('utf-8','replace')
 except Exception as e:out[i]=SystemExit('%s: %s'%(sys.argv[1],e))
batches=[[]]
for a in sys.argv[2:]:
 if a==';':batches.append([])
 else:batches[-1].append(a)
for bs in batches:
 out=[None]*len(bs)
 ts=[threading.Thread(target=post,args=(b,out,i)) for i,b in enumerate(bs)]
 for t in ts:t.start()
 for t in ts:t.join()
 for o in out:
  if isinstance(o,SystemExit):raise o
  sys.stdout.write(o+'\\n--cchq-rpc--\\n')
 sys.stdout.flush()
";

/// The XML-RPC requests for `action` (`start`, `stop`, `restart`, `status`) of `programs`, by
/// name, then `getAllProcessInfo`, in the order they are sent (see [`action_batches`]).
///
/// Never `stopAllProcesses` / `startAllProcesses`: a host's supervisord may also run programs of
/// other environments or of the operator, and cchq acts only on the programs it was given. An
/// empty `programs` acts on nothing (only the states are read).
///
/// # Errors
/// A program name holding a control character XML-RPC cannot carry (`Config`, naming it).
pub fn action_bodies(action: &str, programs: &[String]) -> Result<Vec<String>> {
    Ok(action_batches(action, programs)?.concat())
}

/// [`action_bodies`] in the batches [`rpc_batches_command`] sends: each `stopProcess` on its own,
/// then every `startProcess` together (each waits for its program's `startsecs`, side by side: a
/// restart of ten programs waits about one `startsecs`, not ten), then `getAllProcessInfo`.
///
/// The stops stay one after the other: a stop that reaches supervisord while it is spawning the
/// program (its own start at boot, an autorestart) is lost when the program stops as a group
/// (`stopasgroup`: the group does not exist yet), and supervisord then waits the program's whole
/// `stopwaitsecs` (two minutes for a pillow) before it kills it. Sent together, every program of
/// a host that was just booted is in that window at once (measured on the fleet: one resume in
/// two after a host came back took two minutes more).
///
/// # Errors
/// As [`action_bodies`].
pub fn action_batches(action: &str, programs: &[String]) -> Result<Vec<Vec<String>>> {
    use xmlrpc::Value as V;
    let body =
        |method: &str, p: &String| xmlrpc::call(method, &[V::from(p.as_str()), V::Bool(true)]);
    let mut batches = Vec::new();
    if matches!(action, "stop" | "restart") {
        for p in programs {
            batches.push(vec![body("supervisor.stopProcess", p)?]);
        }
    }
    if matches!(action, "start" | "restart") && !programs.is_empty() {
        batches.push(
            programs
                .iter()
                .map(|p| body("supervisor.startProcess", p))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    batches.push(vec![xmlrpc::call("supervisor.getAllProcessInfo", &[])?]);
    Ok(batches)
}

/// Sends `bodies` to supervisord on `host`, one after the other, and returns each answer (a
/// value or a fault).
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
    rpc_answers(host, socket, &out)
}

/// [`rpc`] for requests in batches ([`rpc_batches_command`]); the answers in the order of the
/// requests.
///
/// # Errors
/// As [`rpc`].
pub async fn rpc_batches(
    t: &dyn crate::transport::Transport,
    host: &str,
    socket: &str,
    batches: &[Vec<String>],
) -> Result<Vec<std::result::Result<xmlrpc::Value, xmlrpc::Fault>>> {
    let out = t.exec(host, &rpc_batches_command(socket, batches)).await?;
    rpc_answers(host, socket, &out)
}

/// The answers in the relay's output ([`rpc_command`] on `host`, supervisord at `socket`).
///
/// # Errors
/// supervisord not answering (not running, wrong socket, refused) or answering what is not
/// XML-RPC, as a `CommandFailed` error naming the host and socket.
pub fn rpc_answers(
    host: &str,
    socket: &str,
    out: &crate::transport::Output,
) -> Result<Vec<std::result::Result<xmlrpc::Value, xmlrpc::Fault>>> {
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
        return Err(err(if why.is_empty() {
            format!("exit {:?}", out.exit_code)
        } else {
            why
        }));
    }
    let text = out.stdout_str();
    let parts: Vec<&str> = text
        .split(&format!("\n{RPC_SEPARATOR}\n"))
        .filter(|p| !p.trim().is_empty())
        .collect();
    if parts.is_empty() {
        return Err(err("no answer".into()));
    }
    parts
        .into_iter()
        .map(|p| xmlrpc::parse_response(p).map_err(&err))
        .collect()
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
    let answers = rpc_batches(t, host, socket, &action_batches(action, programs)?).await?;
    call_answer(host, &answers)
}

/// What [`action_bodies`]' answers say: what the action reported (`ERROR (...)` lines, empty
/// when everything went as asked) and the state of every program.
///
/// # Errors
/// No answer; a fault from `getAllProcessInfo`.
pub fn call_answer(
    host: &str,
    answers: &[std::result::Result<xmlrpc::Value, xmlrpc::Fault>],
) -> Result<(String, Vec<ProgramStatus>)> {
    let (info, actions) = answers
        .split_last()
        .ok_or_else(|| crate::error::Error::internal("no answer from supervisord"))?;
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
                    if item
                        .get("status")
                        .and_then(xmlrpc::Value::as_i64)
                        .is_some_and(|s| s != 80 && s != 60 && s != 70)
                    {
                        let name = item
                            .get("name")
                            .and_then(xmlrpc::Value::as_str)
                            .unwrap_or("?");
                        let desc = item
                            .get("description")
                            .and_then(xmlrpc::Value::as_str)
                            .unwrap_or("");
                        said.push_str(&format!("{name}: ERROR ({desc})\n"));
                    }
                }
            }
        }
    }
    let info = info.as_ref().map_err(|f| {
        crate::error::Error::new(
            crate::error::ErrorKind::CommandFailed,
            format!("supervisord on `{host}`: fault {}: {}", f.code, f.string),
        )
    })?;
    Ok((
        said,
        info.as_array()
            .unwrap_or_default()
            .iter()
            .map(status_of)
            .collect(),
    ))
}

/// supervisord programs ([`ServiceBackend`]): the programs of `kinds` that `app-processes.yml`
/// puts on a host, acted on **by name** over supervisord's XML-RPC socket in one round trip
/// ([`rpc_command`] with [`action_bodies`]: `stopProcess`/`startProcess` of each, then
/// `getAllProcessInfo`), never `stopAllProcesses`/`startAllProcesses` (a host's supervisord may
/// run other environments' programs too). A host's programs of every service share that round
/// trip; web workers restart in rolling, health-checked batches ([`super::execute`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    /// The kinds of program that make up the service.
    pub kinds: Vec<ProgramKind>,
    /// supervisord's XML-RPC socket on the hosts (`supervisor_socket` in cchq.yml).
    pub socket: String,
}

impl Supervisor {
    /// The programs of `kinds`, through supervisord at `socket`.
    pub fn new(kinds: &[ProgramKind], socket: impl Into<String>) -> Self {
        Self {
            kinds: kinds.to_vec(),
            socket: socket.into(),
        }
    }

    /// The programs it is given by name (of any kind), through supervisord at `socket`.
    pub fn at(socket: impl Into<String>) -> Self {
        Self::new(&[], socket)
    }
}

#[async_trait::async_trait]
impl ServiceBackend for Supervisor {
    fn describe(&self) -> Backend {
        Backend::Supervisor {
            kinds: self.kinds.clone(),
        }
    }

    /// The host's programs ([`programs_for_host`]) of its kinds.
    fn programs(&self, env: &Environment, host: &str) -> Option<Vec<Program>> {
        Some(
            programs_for_host(env, host)
                .into_iter()
                .filter(|p| self.kinds.contains(&p.kind))
                .collect(),
        )
    }

    /// A restart of web workers (`django`) rolls.
    fn rolls(&self, action: Action) -> bool {
        action == Action::Restart && self.kinds.contains(&ProgramKind::Django)
    }

    /// The action on `names` by name, then `getAllProcessInfo` (an empty `names` only reads the
    /// states), relayed to the socket by `curl` or `python3`.
    fn command(&self, action: Action, names: &[String]) -> Result<RemoteCommand> {
        Ok(rpc_batches_command(
            &self.socket,
            &action_batches(action.word(), names)?,
        ))
    }

    /// Each name's state in `getAllProcessInfo` (`MISSING` when supervisord does not know it);
    /// the faults of the action (`ERROR (...)`) are the note.
    fn states(
        &self,
        host: &str,
        _action: Action,
        names: &[String],
        answer: &Output,
    ) -> Result<Vec<UnitState>> {
        let (said, statuses) = call_answer(host, &rpc_answers(host, &self.socket, answer)?)?;
        let note = said.trim().replace('\n', "; ");
        Ok(names
            .iter()
            .map(|n| {
                let st = ProgramStatus::of(&statuses, n);
                UnitState {
                    name: n.clone(),
                    state: st.state,
                    detail: st.detail,
                    note: note.clone(),
                }
            })
            .collect())
    }

    /// Waits out `STARTING`, `STOPPING` and `BACKOFF` ([`settle`]).
    async fn settle(
        &self,
        transport: &dyn Transport,
        host: &str,
        states: Vec<UnitState>,
    ) -> Vec<UnitState> {
        let names: Vec<String> = states.iter().map(|s| s.name.clone()).collect();
        let now = states
            .iter()
            .map(|s| ProgramStatus {
                name: s.name.clone(),
                state: s.state.clone(),
                pid: None,
                uptime_secs: None,
                detail: s.detail.clone(),
            })
            .collect();
        let settled = settle(transport, host, &self.socket, &names, now).await;
        states
            .into_iter()
            .map(|s| {
                let st = ProgramStatus::of(&settled, &s.name);
                UnitState {
                    state: st.state,
                    detail: st.detail,
                    ..s
                }
            })
            .collect()
    }
}

/// Programs in a transitional state (`STARTING`, `STOPPING`, `BACKOFF`) settle within seconds:
/// looks again (every half second, for up to ten seconds) until none of `programs` is in one, and
/// returns the last states read.
pub async fn settle(
    transport: &dyn Transport,
    host: &str,
    socket: &str,
    programs: &[String],
    mut statuses: Vec<ProgramStatus>,
) -> Vec<ProgramStatus> {
    let transitional = |s: &[ProgramStatus]| {
        s.iter().any(|p| {
            programs.contains(&p.name)
                && matches!(p.state.as_str(), "STARTING" | "STOPPING" | "BACKOFF")
        })
    };
    let mut tries = 0;
    while transitional(&statuses) && tries < 20 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        match call(transport, host, socket, "status", &[]).await {
            Ok((_, s)) => statuses = s,
            Err(_) => break,
        }
    }
    statuses
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
                (
                    "description",
                    V::from(if running {
                        "pid 100, uptime 0:10:00"
                    } else {
                        ""
                    }),
                ),
                ("pid", V::Int(if running { 100 } else { 0 })),
                ("start", V::Int(1000)),
                ("now", V::Int(1600)),
            ])
        })
        .collect();
    let mut out = String::from("<?xml version='1.0'?><methodResponse><params><param>");
    // Test data: the names are plain.
    V::Array(infos)
        .encode_into(&mut out)
        .unwrap_or_else(|e| panic!("fake_answer: {e}"));
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
        name: if group.is_empty() || group == name {
            name
        } else {
            format!("{group}:{name}")
        },
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
    let paths = env.paths();
    let www_home = paths.www_home().to_owned();
    let code_home = paths.current();
    let target = env.ssh_target(host);
    m.insert("deploy_env".into(), J::from(env.meta.deploy_env.clone()));
    m.insert("env".into(), J::from(env.name.clone()));
    m.insert("host".into(), J::from(host));
    m.insert("inventory_hostname".into(), J::from(host));
    m.insert("host_address".into(), J::from(target.address));
    m.insert("www_home".into(), J::from(www_home.clone()));
    m.insert(
        "service_home".into(),
        J::from(format!("{www_home}/services")),
    );
    m.insert(
        "celery_bash_runner".into(),
        J::from(celery_runner_path(env)),
    );
    m.insert("code_home".into(), J::from(code_home.clone()));
    m.insert("log_dir".into(), J::from(paths.log_dir()));
    m.insert(
        "python_env".into(),
        J::from(format!("{code_home}/python_env")),
    );
    m.insert(
        "python".into(),
        J::from(format!("{code_home}/python_env/bin/python")),
    );
    m.insert("app_user".into(), J::from(env.profile.app_user.clone()));
    if let Some(ap) = &env.app_processes {
        let hv = env.inventory.host_vars(host);
        let vcpus = hv
            .get("vcpus")
            .or_else(|| hv.get("ansible_processor_vcpus"))
            .and_then(crate::Value::as_u64)
            .unwrap_or(1);
        let workers = u64::from(ap.gunicorn_workers_static_factor)
            + vcpus * u64::from(ap.gunicorn_workers_factor);
        m.insert("gunicorn_workers".into(), J::from(workers.max(1)));
        m.insert(
            "gunicorn_max_requests".into(),
            J::from(ap.gunicorn_max_requests),
        );
        m.insert(
            "gunicorn_max_requests_jitter".into(),
            J::from(ap.gunicorn_max_requests / 2),
        );
        m.insert(
            "gunicorn_graceful_timeout".into(),
            J::from(ap.gunicorn_graceful_timeout),
        );
        m.insert("django_bind".into(), J::from(ap.django_bind.clone()));
        m.insert("django_port".into(), J::from(ap.django_port));
        m.insert("flower_port".into(), J::from(ap.flower_port));
        m.insert(
            "formplayer_memory".into(),
            J::from(ap.formplayer_memory.clone()),
        );
        m.insert(
            "celery_command_prefix".into(),
            J::from(ap.celery_command_prefix.clone()),
        );
        // Settings of commcare-cloud's `AppProcessesConfig` that cchq keeps as written (defaults
        // from `environmental-defaults/app-processes.yml`).
        for key in [
            "django_command_prefix",
            "flower_max_tasks",
            "formplayer_command_args",
            "formplayer_g1heapregionsize",
            "formplayer_maxmetaspacesize",
        ] {
            let v = ap
                .other
                .get(key)
                .and_then(crate::services::programs::python_str)
                .unwrap_or_default();
            m.insert(key.into(), J::from(v));
        }
    }
    m.insert("project".into(), J::from(env.fab_settings.project.clone()));
    // commcarehq role: `formplayer_java: "{{ formplayer_java_version | default('java') }}"`,
    // `extra_formplayer_args: ''` (both overridable in public.yml).
    let public = |k: &str, default: &str| {
        env.public_var(k)
            .and_then(crate::services::programs::python_str)
            .unwrap_or_else(|| default.to_owned())
    };
    m.insert(
        "formplayer_java".into(),
        J::from(public("formplayer_java_version", "java")),
    );
    m.insert(
        "extra_formplayer_args".into(),
        J::from(public("extra_formplayer_args", "")),
    );
    m
}

/// The proxy variables commcare-cloud's `webworkers.yml`, `celery.yml` and `formplayer.yml` give
/// their programs when `public.yml` sets `http_proxy_address`: `http_proxy`, `https_proxy` and
/// `no_proxy` (every inventory host, then `additional_no_proxy_hosts`).
fn proxy_env(env: &Environment) -> Vec<(String, crate::Value)> {
    let Some(address) = env
        .public_var("http_proxy_address")
        .and_then(crate::services::programs::python_str)
    else {
        return Vec::new();
    };
    let port = env
        .public_var("http_proxy_port")
        .and_then(crate::services::programs::python_str)
        .unwrap_or_default();
    let hosts: Vec<&str> = env.inventory.hosts().map(|h| h.name.as_str()).collect();
    let extra = env
        .app_processes
        .as_ref()
        .and_then(|ap| ap.other.get("additional_no_proxy_hosts"))
        .and_then(crate::services::programs::python_str)
        .unwrap_or_default();
    vec![
        (
            "http_proxy".to_owned(),
            format!("http://{address}:{port}").into(),
        ),
        (
            "https_proxy".to_owned(),
            format!("https://{address}:{port}").into(),
        ),
        (
            "no_proxy".to_owned(),
            format!("{},{extra}", hosts.join(",")).into(),
        ),
    ]
}

/// Where the celery bash runner of the environment lives on its hosts, as commcare-cloud writes
/// it: `<service_home>/<deploy_env>_celery_bash_runner.sh`, `service_home` being
/// `<www_home>/services` (`group_vars/all.yml`, `supervisor_service_files.celery_bash_runner`).
pub fn celery_runner_path(env: &Environment) -> String {
    format!(
        "{}/services/{}_celery_bash_runner.sh",
        env.paths().www_home().trim_end_matches('/'),
        env.meta.deploy_env
    )
}

/// The celery bash runner (`bash <runner> ARGS`, what the `commcare` profile's celery programs
/// run): the behaviour of commcare-cloud's `celery_bash_runner.sh.j2`, written for cchq.
///
/// It starts `<prefix><celery> -A corehq worker --hostname=<name>.<start time>_timestamp ARGS` in
/// the background (the `--hostname=`/`-n=` argument first, the others after it, in their order;
/// `prefix` is `celery_command_prefix`, shell text as written) and waits for it. On TERM or INT
/// (supervisord stopping the program: `stopasgroup`/`killasgroup` are off for it, so only bash
/// gets the signal) it runs `<python> <manage_py> shutdown_celery_worker_by_hostname
/// celery@<name>.<start time>_timestamp`, which asks that worker for a warm shutdown, and exits:
/// the worker finishes its tasks on its own while supervisord may already start a new one (whose
/// start time, so name, differs).
pub fn celery_runner_script(python: &str, manage_py: &str, celery: &str, prefix: &str) -> String {
    use crate::command::quote;
    format!(
        r#"#!/bin/bash
# Written by cchq (update-supervisor-confs): starts one celery worker for supervisord.
# `bash <this file> --hostname=NAME ARGS...` runs (after celery_command_prefix, if any)
#   {celery} -A corehq worker --hostname=NAME.<start time>_timestamp ARGS...
# in the background. Stopping the program (TERM or INT) asks that worker for a warm shutdown
# (manage.py shutdown_celery_worker_by_hostname) and ends this script at once, so that
# supervisord can start the next worker while the old one finishes its tasks.

cchq_python={python}
cchq_manage={manage}

hostname_arg=
args=()
for arg in "$@"; do
    case $arg in
        --hostname=*|-n=*) hostname_arg=$arg ;;
        *) args+=("$arg") ;;
    esac
done
hostname_arg="$hostname_arg.$(date +%s)_timestamp"
worker_name=${{hostname_arg#*=}}

stop_worker() {{
    echo "Stopping celery@$worker_name (pid $worker_pid)"
    "$cchq_python" "$cchq_manage" shutdown_celery_worker_by_hostname "celery@$worker_name"
    echo "Asked celery@$worker_name (pid $worker_pid) to shut down"
}}
trap stop_worker TERM INT

{prefix}{celery} -A corehq worker "$hostname_arg" "${{args[@]}}" &
worker_pid=$!
echo "Started celery@$worker_name, pid $worker_pid"
# Returns early, with a status above 128, when a trapped signal arrives.
wait -n "$worker_pid"
status=$?
echo "Runner $$ exits ($status)"
exit "$status"
"#,
        python = quote(python),
        manage = quote(manage_py),
    )
}

/// The program files for `host`: `(file name, contents)`, one file per kind of program,
/// named `<deploy_env>_supervisor_<kind>.conf` as commcare-cloud names them; then, when one of
/// the host's celery programs runs [`celery_runner_path`] (the `commcare` profile's command does;
/// a `cchq.yml` `programs.celery` may not), the runner ([`celery_runner_script`]), named by its
/// absolute path.
pub fn render_confs(
    env: &Environment,
    host: &str,
    renderer: &Renderer,
) -> Result<Vec<(String, String)>> {
    let programs = programs_for_host(env, host);
    let base = host_context(env, host);
    let proxy = proxy_env(env);
    let runner = celery_runner_path(env);
    let mut runner_used = false;
    let mut files: Vec<(ProgramKind, String)> = Vec::new();
    for p in &programs {
        let mut ctx = base.clone();
        if p.kind == ProgramKind::Formplayer {
            // formplayer runs from its own releases (`deploy formplayer`), not commcare's.
            let home = env.paths().formplayer_current();
            ctx.insert("python_env".into(), format!("{home}/python_env").into());
            ctx.insert(
                "python".into(),
                format!("{home}/python_env/bin/python").into(),
            );
            ctx.insert("code_home".into(), home.into());
        }
        ctx.insert("env_vars".into(), serde_json::Map::new().into());
        for (k, v) in &p.vars {
            ctx.insert(k.clone(), v.clone());
        }
        if matches!(
            p.kind,
            ProgramKind::Django | ProgramKind::Celery | ProgramKind::Formplayer
        ) && !proxy.is_empty()
        {
            // The proxy is the task file's: the program's own `env_vars` win.
            let own = ctx
                .get("env_vars")
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut merged = match crate::services::programs::env_vars(&[], [proxy.clone()]) {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            merged.extend(own);
            ctx.insert("env_vars".into(), merged.into());
        }
        let name = command_template_name(p.kind.slug());
        let command = if renderer.has(&name) {
            renderer.render(&name, &ctx)?
        } else {
            let template = env
                .profile
                .program_commands
                .get(p.kind.slug())
                .cloned()
                .unwrap_or_default();
            renderer.render_str(&name, &template, &ctx)?
        };
        ctx.insert("name".into(), p.name.clone().into());
        ctx.insert("kind".into(), p.kind.slug().into());
        // Through the runner, supervisord signals bash only (not the worker it leaves to shut
        // down) and waits 30 seconds for it, as commcare-cloud's `supervisor_celery_workers.conf.j2`.
        let through_runner =
            p.kind == ProgramKind::Celery && command.split_whitespace().any(|w| w == runner);
        runner_used |= through_runner;
        ctx.insert(
            "command".into(),
            command
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .into(),
        );
        ctx.insert("stopwaitsecs".into(), p.kind.stopwaitsecs().into());
        ctx.insert(
            "startsecs".into(),
            (if through_runner { 10 } else { 1 }).into(),
        );
        ctx.insert("stopasgroup".into(), (!through_runner).into());
        ctx.insert("killasgroup".into(), (!through_runner).into());
        let text = renderer.render("supervisor_program.conf", &ctx)?;
        match files.iter_mut().find(|(k, _)| *k == p.kind) {
            Some((_, t)) => {
                t.push('\n');
                t.push_str(&text);
            }
            None => files.push((p.kind, text)),
        }
    }
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|(k, t)| {
            (
                format!("{}_supervisor_{}.conf", env.meta.deploy_env, k.slug()),
                t,
            )
        })
        .collect();
    if runner_used {
        let field = |k: &str| {
            base.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let python_env = field("python_env");
        let script = celery_runner_script(
            &format!("{python_env}/bin/python"),
            &format!("{}/manage.py", field("code_home")),
            &format!("{python_env}/bin/celery"),
            &field("celery_command_prefix"),
        );
        out.push((runner, script));
    }
    Ok(out)
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
        Ok(text) => r
            .add("supervisor_program.conf", &text)
            .map_err(|e| e.context(path.display()))?,
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
        assert_eq!(
            (s[3].name.as_str(), s[3].state.as_str()),
            ("nope", "MISSING")
        );
        assert_eq!(s[4].uptime_secs, Some(2 * 86_400 + 3 * 3600 + 4 * 60 + 5));
    }

    #[test]
    fn action_bodies_name_every_program_and_end_with_the_states() {
        let bodies = action_bodies("restart", &[]).unwrap();
        assert_eq!(
            bodies.len(),
            1,
            "nothing selected: only the states are read"
        );
        assert!(bodies[0].contains("<methodName>supervisor.getAllProcessInfo</methodName>"));
        let bodies = action_bodies("restart", &["a".into(), "b".into()]).unwrap();
        assert!(
            bodies
                .iter()
                .all(|b| !b.contains("AllProcesses</methodName>")),
            "{bodies:?}"
        );
        assert_eq!(bodies.len(), 5);
        let bodies = action_bodies("stop", &["a".into(), "b c".into()]).unwrap();
        assert_eq!(bodies.len(), 3);
        assert!(
            bodies[1].contains("supervisor.stopProcess")
                && bodies[1].contains("<string>b c</string>"),
            "{bodies:?}"
        );
        assert_eq!(action_bodies("status", &["a".into()]).unwrap().len(), 1);
        let e = action_bodies("stop", &["web\u{1b}[2J".into()]).unwrap_err();
        assert!(
            e.to_string().contains("web\\u{1b}[2J") && e.to_string().contains("U+001B"),
            "{e}"
        );
        let cmd = rpc_command("/run/supervisor.sock", &bodies);
        assert_eq!(cmd.become_as(), Some("root"));
        assert!(
            cmd.inner_shell().contains("--unix-socket"),
            "{}",
            cmd.inner_shell()
        );
        let (_, st) = split_action_output("a: stopped\n--cchq-status--\na STOPPED Nov 26\n");
        assert_eq!(st[0].state, "STOPPED");
    }

    /// Runs `cmd`'s script with a real `/bin/sh`, a stand-in `curl` (the shell script `curl`,
    /// given `{dir}`: the folder it lives in, for its own files) first on `PATH`; returns what
    /// ran and the folder (kept while the result lives).
    fn with_stand_in_curl(
        curl: &str,
        cmd: &RemoteCommand,
    ) -> (std::process::Output, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curl");
        let script = curl.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(
            &path,
            format!("#!/bin/sh\nfor a; do prev2=$prev; prev=$a; done\n{script}"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd.inner_shell())
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        (out, dir)
    }

    /// The relay script, run by a real `/bin/sh` with a stand-in `curl` on PATH: one request per
    /// body, in order, each answer followed by the separator.
    #[test]
    fn the_relay_sends_one_request_per_body_in_order() {
        let cmd = rpc_command(
            "/nowhere.sock",
            &action_bodies("restart", &["x'y".into()]).unwrap(),
        );
        let (out, _dir) = with_stand_in_curl(
            "echo \"$prev2\" | sed 's/.*<methodName>\\(.*\\)<\\/methodName>.*/\\1/'\n",
            &cmd,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            methods_in(&text),
            [
                "supervisor.stopProcess",
                "supervisor.startProcess",
                "supervisor.getAllProcessInfo"
            ],
            "{text}"
        );
    }

    /// The methods named in a relay's output, in order.
    fn methods_in(text: &str) -> Vec<String> {
        text.split(&format!("\n{RPC_SEPARATOR}\n"))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A restart's requests in batches, through the `curl` relay run by a real `/bin/sh` with a
    /// stand-in `curl`: a start waits (up to five seconds) for another start to be in flight
    /// before it answers "together"; a stop answers "alone" when no other stop was in flight
    /// while it ran. Each stop alone, then the starts together, the states last; the answers in
    /// order.
    #[test]
    fn the_relay_sends_a_batch_together_and_the_batches_in_order() {
        let batches = action_batches("restart", &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1, 2, 1],
            "each stop, the starts together, the states"
        );
        let (out, dir) = with_stand_in_curl(
            "m=$(echo \"$prev2\" | sed 's/.*<methodName>\\(.*\\)<\\/methodName>.*/\\1/')\n\
             echo \"$m\" >>{dir}/log\n\
             if [ \"$m\" = supervisor.getAllProcessInfo ]; then echo \"$m\"; exit 0; fi\n\
             if [ \"$m\" = supervisor.stopProcess ]; then busy={dir}/stop\n\
               if [ -e $busy ]; then echo \"$m overlapping\"; exit 0; fi\n\
               touch $busy; sleep 0.3; rm -f $busy; echo \"$m alone\"; exit 0; fi\n\
             n=0; while [ \"$(grep -c \"^$m$\" {dir}/log)\" -lt 2 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done\n\
             if [ \"$(grep -c \"^$m$\" {dir}/log)\" -ge 2 ]; then echo \"$m together\"; else echo \"$m alone\"; fi\n",
            &rpc_batches_command("/nowhere.sock", &batches),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            methods_in(&text),
            [
                "supervisor.stopProcess alone",
                "supervisor.stopProcess alone",
                "supervisor.startProcess together",
                "supervisor.startProcess together",
                "supervisor.getAllProcessInfo"
            ],
            "{text}"
        );
        let sent = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let order: Vec<&str> = sent.lines().collect();
        assert_eq!(
            order,
            [
                "supervisor.stopProcess",
                "supervisor.stopProcess",
                "supervisor.startProcess",
                "supervisor.startProcess",
                "supervisor.getAllProcessInfo"
            ],
            "no start before every stop is answered"
        );
    }

    /// A request that cannot be sent ends the batched relay with curl's status: the answers of
    /// its batch before it are printed, no later batch is sent.
    #[test]
    fn the_batched_relay_stops_at_a_request_that_cannot_be_sent() {
        let batches = action_batches("restart", &["good".into(), "bad".into()]).unwrap();
        let (out, dir) = with_stand_in_curl(
            "case \"$prev2\" in *'<string>bad</string>'*) echo refused >&2; exit 7 ;; esac\n\
             echo sent >>{dir}/log; echo ok\n",
            &rpc_batches_command("/nowhere.sock", &batches),
        );
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(methods_in(&String::from_utf8_lossy(&out.stdout)), ["ok"]);
        let sent = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(sent.lines().count(), 1, "only the good stop: {sent}");
    }

    /// The `python3` fallback against a real unix socket: the requests of a batch are in flight
    /// together (the server answers none until both starts arrived), the batches in order, the
    /// answers in the order of the requests.
    #[test]
    fn the_python_relay_sends_a_batch_together() {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixListener;
        if std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        // The next connection within ten seconds, its request read.
        let next = move |l: &UnixListener| -> Option<(std::os::unix::net::UnixStream, String)> {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut buf = vec![0u8; 65536];
                        let n = c.read(&mut buf).unwrap();
                        return Some((c, String::from_utf8_lossy(&buf[..n]).to_string()));
                    }
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(_) => return None,
                }
            }
        };
        let server = std::thread::spawn(move || {
            let mut order = Vec::new();
            // The two starts: both in before either is answered (a relay sending one at a time
            // would wait for its first answer: the second never comes).
            let mut held = Vec::new();
            while held.len() < 2 {
                let Some((c, req)) = next(&listener) else {
                    order.push("alone".to_owned());
                    break;
                };
                let who = if req.contains("<string>a</string>") {
                    "a"
                } else {
                    "b"
                };
                order.push(format!("start {who}"));
                held.push((c, who));
            }
            // Answered b first: the relay prints them in the order of the requests all the same.
            held.sort_by_key(|(_, w)| *w == "a");
            for (mut c, who) in held {
                let body = format!(
                    "<?xml version='1.0'?><methodResponse><params><param><value><string>stopped {who}</string></value></param></params></methodResponse>"
                );
                write!(c, "HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n{body}").unwrap();
            }
            if let Some((mut c, req)) = next(&listener) {
                order.push(
                    if req.contains("getAllProcessInfo") {
                        "states"
                    } else {
                        "other"
                    }
                    .to_owned(),
                );
                write!(
                    c,
                    "HTTP/1.0 200 OK\r\n\r\n<?xml version='1.0'?><methodResponse><params><param><value><array><data></data></array></value></param></params></methodResponse>"
                )
                .unwrap();
            }
            order
        });
        let batches = action_batches("start", &["a".into(), "b".into()]).unwrap();
        let cmd = rpc_batches_command(sock.to_str().unwrap(), &batches);
        // The python branch, whether the machine has curl or not.
        let py = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(
                cmd.inner_shell()
                    .replace("if command -v curl >/dev/null 2>&1;", "if false;"),
            )
            .output()
            .unwrap();
        let order = server.join().unwrap();
        assert_eq!(order.len(), 3, "{order:?}");
        assert!(
            order[..2].iter().all(|o| o.starts_with("start ")),
            "{order:?}"
        );
        assert_eq!(order[2], "states", "{order:?}");
        let answers = rpc_answers(
            "h",
            "s",
            &crate::transport::Output {
                exit_code: py.status.code(),
                stdout: py.stdout.clone(),
                stderr: py.stderr.clone(),
            },
        )
        .unwrap();
        let said: Vec<String> = answers
            .iter()
            .map(|a| {
                a.as_ref()
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            said,
            ["stopped a", "stopped b", ""],
            "in the order of the requests"
        );
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
        assert_eq!(
            (st.name.as_str(), st.state.as_str(), st.pid, st.uptime_secs),
            ("web", "RUNNING", Some(7), Some(5))
        );
        let info = V::structure([
            ("name", V::from("w_0")),
            ("group", V::from("w")),
            ("statename", V::from("FATAL")),
            ("pid", V::Int(0)),
        ]);
        let st = status_of(&info);
        assert_eq!(
            (st.name.as_str(), st.pid, st.uptime_secs),
            ("w:w_0", None, None)
        );
    }

    #[test]
    fn confs_render_for_the_fixture() {
        let env = crate::fixture_env("test");
        let r = renderer(&env).unwrap();
        let files = render_confs(&env, "cloud_worker_5", &r).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let runner = "/home/cchq/www/test/services/test_celery_bash_runner.sh";
        assert_eq!(celery_runner_path(&env), runner);
        assert_eq!(
            names,
            [
                "test_supervisor_celerybeat.conf",
                "test_supervisor_celery.conf",
                "test_supervisor_flower.conf",
                runner
            ]
        );
        let celery = &files[1].1;
        assert!(
            celery.contains("[program:commcare-hq-test-celery_background_queue"),
            "{celery}"
        );
        assert!(
            celery.contains(&format!(
                "command=/bin/bash {runner} --events --loglevel=INFO --without-gossip --queues="
            )),
            "{celery}"
        );
        assert!(celery.contains("--autoscale=1,0 -Ofair"), "{celery}");
        assert!(
            celery.contains("directory=/home/cchq/www/test/current"),
            "{celery}"
        );
        assert!(celery.contains("user=cchq"), "{celery}");
        // Through the runner, as upstream's `supervisor_celery_workers.conf.j2`.
        for line in [
            "startsecs=10",
            "stopasgroup=false",
            "killasgroup=false",
            "stopwaitsecs=30",
        ] {
            assert!(celery.lines().any(|l| l == line), "{line} in {celery}");
        }
        let beat = &files[0].1;
        for line in ["startsecs=1", "stopasgroup=true", "killasgroup=true"] {
            assert!(beat.lines().any(|l| l == line), "{line} in {beat}");
        }
        let script = &files[3].1;
        assert!(script.starts_with("#!/bin/bash\n"), "{script}");
        assert!(
            script.contains("/home/cchq/www/test/current/python_env/bin/celery -A corehq worker"),
            "{script}"
        );
        // A host without celery workers has no runner.
        let web = render_confs(&env, "cloud_worker_2", &r).unwrap();
        assert!(!web.is_empty());
        assert!(
            web.iter().all(|(n, _)| !n.contains("bash_runner")),
            "{web:?}"
        );
    }

    /// An environment whose `cchq.yml` overrides `programs.celery` (a command that does not run
    /// the runner) gets no runner, and its celery programs keep the process-group settings.
    #[test]
    fn a_celery_command_of_its_own_has_no_runner() {
        let mut env = crate::fixture_env("test");
        env.profile.program_commands.insert(
            "celery".into(),
            "{{python_env}}/bin/celery -A app worker -Q {{queues}}".into(),
        );
        let files = render_confs(&env, "cloud_worker_5", &renderer(&env).unwrap()).unwrap();
        assert!(files.iter().all(|(n, _)| !n.starts_with('/')), "{files:?}");
        let celery = &files
            .iter()
            .find(|(n, _)| n == "test_supervisor_celery.conf")
            .unwrap()
            .1;
        assert!(
            celery.contains("stopasgroup=true") && celery.contains("startsecs=1"),
            "{celery}"
        );
    }

    /// The runner, run by a real bash with stand-ins for celery and python in a temporary
    /// directory: it starts celery through `celery_command_prefix` with the hostname suffixed by
    /// its start time and the other arguments after it; on TERM it runs
    /// `manage.py shutdown_celery_worker_by_hostname celery@<that hostname>` and exits, leaving the
    /// worker running.
    #[test]
    fn the_runner_starts_celery_and_asks_it_to_shut_down_on_term() {
        use std::os::unix::fs::PermissionsExt;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let exe = |name: &str, body: &str| {
            let p = format!("{d}/{name}");
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        // The stand-in worker records its prefix's mark, its arguments and its pid, then runs on
        // (ignoring TERM, as a worker in its warm shutdown would not die at once).
        let celery = exe(
            "celery",
            &format!(
                "trap '' TERM; echo \"$PREFIXED\" > {d}/prefix; printf '%s\\n' \"$@\" > {d}/celery.args; echo $$ > {d}/celery.pid; exec sleep 30\n"
            ),
        );
        let python = exe(
            "python",
            &format!("printf '%s\\n' \"$@\" > {d}/python.args\n"),
        );
        let script =
            celery_runner_script(&python, "/srv/code/manage.py", &celery, "env PREFIXED=yes ");
        let runner = format!("{d}/runner.sh");
        std::fs::write(&runner, &script).unwrap();
        let mut child = std::process::Command::new("/bin/bash")
            .args([
                &runner,
                "--events",
                "--queues=q1,q2",
                "--hostname=h_q1,q2_0",
                "--prefetch-multiplier=4",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let wait_for = |f: &str| {
            let t = Instant::now();
            while !std::path::Path::new(&format!("{d}/{f}")).exists() {
                assert!(t.elapsed() < Duration::from_secs(20), "{f} never appeared");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        wait_for("celery.pid");
        let read = |f: &str| std::fs::read_to_string(format!("{d}/{f}")).unwrap();
        let worker_pid = read("celery.pid").trim().to_owned();
        let args: Vec<String> = read("celery.args").lines().map(str::to_owned).collect();
        assert_eq!(
            read("prefix").trim(),
            "yes",
            "celery_command_prefix applied"
        );
        assert_eq!(args[..3], ["-A", "corehq", "worker"]);
        let hostname = args[3]
            .strip_prefix("--hostname=")
            .unwrap_or_else(|| panic!("{args:?}"))
            .to_owned();
        let stamp = hostname
            .strip_prefix("h_q1,q2_0.")
            .and_then(|s| s.strip_suffix("_timestamp"))
            .unwrap_or_else(|| panic!("{hostname}"));
        assert!(
            !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit()),
            "{hostname}"
        );
        assert_eq!(
            args[4..],
            ["--events", "--queues=q1,q2", "--prefetch-multiplier=4"]
        );

        let kill = |sig: &str, pid: &str| {
            std::process::Command::new("kill")
                .args([sig, pid])
                .status()
                .unwrap()
        };
        assert!(kill("-TERM", &child.id().to_string()).success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the runner did not exit on TERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let worker_alive = kill("-0", &worker_pid).success();
        kill("-KILL", &worker_pid);
        assert!(
            !status.success(),
            "exits with wait's status (above 128): {status:?}"
        );
        assert_eq!(
            read("python.args").lines().collect::<Vec<_>>(),
            [
                "/srv/code/manage.py",
                "shutdown_celery_worker_by_hostname",
                &format!("celery@{hostname}")
            ]
        );
        assert!(worker_alive, "the worker is left to its warm shutdown");
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut said).unwrap();
        assert!(
            said.contains(&format!("Started celery@{hostname}, pid {worker_pid}")),
            "{said}"
        );
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

/// What `update-supervisor-confs` would do on one host: its program files as the environment
/// renders them, compared with this environment's program files in the host's supervisor
/// directory (`<deploy_env>_supervisor_*.conf`), and its celery bash runner
/// ([`celery_runner_path`], named by that absolute path, in [`ConfPlan::files`] when the host's
/// celery programs run it) with the one the host has.
#[derive(Debug, Clone, Serialize)]
pub struct ConfPlan {
    /// The host.
    pub host: String,
    /// Every file the host should have, `(name, contents)`.
    #[serde(skip)]
    pub files: Vec<(String, String)>,
    /// Files to write that the host does not have.
    pub new: Vec<String>,
    /// Files to write over different contents.
    pub changed: Vec<String>,
    /// Files the host has as they should be.
    pub unchanged: Vec<String>,
    /// This environment's files on the host that it should not have: removed, with their
    /// programs, by [`apply_confs`] (and only those).
    pub remove: Vec<String>,
}

impl ConfPlan {
    /// Whether applying the plan changes anything on the host.
    pub fn changes(&self) -> bool {
        !(self.new.is_empty() && self.changed.is_empty() && self.remove.is_empty())
    }

    /// Whether the plan removes every program file the host has and gives it none: what a host key
    /// that no longer names the host does, so [`apply_confs`] does it only when allowed. (Removing
    /// only the celery runner of a host without programs is not.)
    pub fn empties_host(&self) -> bool {
        self.files.is_empty() && self.remove.iter().any(|n| !n.starts_with('/'))
    }
}

/// What [`apply_confs`] may do beyond writing and removing what a plan lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// Apply plans that remove every program file of a host ([`ConfPlan::empties_host`]).
    pub empty_hosts: bool,
}

/// The script that lists this environment's program files in `dir` with their sha256 (nothing
/// when the directory does not exist), then the celery runner at `runner` (an absolute path, so
/// listed under it), when there is one.
fn probe_script(dir: &str, prefix: &str, runner: &str) -> String {
    use crate::command::quote;
    format!(
        "if cd {d} 2>/dev/null; then for f in {p}*.conf; do [ -f \"$f\" ] || continue; sha256sum -- \"$f\" || exit 1; done; fi; \
         if [ -f {r} ]; then sha256sum -- {r} || exit 1; fi",
        d = quote(dir),
        p = quote(prefix),
        r = quote(runner)
    )
}

/// Parses [`probe_script`]'s output: `(file name, sha256 hex)`.
fn parse_probe(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            // `sha256sum` marks a name it had to escape with a leading backslash.
            let l = l.strip_prefix('\\').unwrap_or(l);
            let (hash, name) = l.split_once("  ")?;
            Some((name.to_owned(), hash.to_owned()))
        })
        .collect()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The plan of one host: `files` (rendered) against `current` (from the probe).
fn conf_plan(host: &str, files: Vec<(String, String)>, current: &[(String, String)]) -> ConfPlan {
    let mut plan = ConfPlan {
        host: host.to_owned(),
        files: Vec::new(),
        new: Vec::new(),
        changed: Vec::new(),
        unchanged: Vec::new(),
        remove: Vec::new(),
    };
    for (name, text) in &files {
        match current.iter().find(|(n, _)| n == name) {
            None => plan.new.push(name.clone()),
            Some((_, hash)) if *hash == sha256_hex(text) => plan.unchanged.push(name.clone()),
            Some(_) => plan.changed.push(name.clone()),
        }
    }
    plan.remove = current
        .iter()
        .filter(|(n, _)| !files.iter().any(|(f, _)| f == n))
        .map(|(n, _)| n.clone())
        .collect();
    plan.files = files;
    plan
}

/// Where this environment's program files live and how they are named, and where its celery
/// runner lives.
struct ConfDir {
    dir: String,
    prefix: String,
    log_dir: String,
    /// [`celery_runner_path`].
    runner: String,
}

impl ConfDir {
    fn of(env: &Environment) -> Self {
        Self {
            dir: env
                .profile
                .supervisor_conf_dir
                .trim_end_matches('/')
                .to_owned(),
            prefix: format!("{}_supervisor_", env.meta.deploy_env),
            log_dir: env.paths().log_dir(),
            runner: celery_runner_path(env),
        }
    }
}

/// What `update-supervisor-confs` would do on each of `hosts`, changing nothing: every host's
/// program files rendered first (a template error stops everything), then one probe per host
/// (all in parallel) for the files it has.
///
/// # Errors
/// The environment does not validate ([`crate::validate::require_valid`]: a host key that
/// cannot be read would plan no programs for its hosts, and remove their files); a template that
/// does not render. A host that cannot be probed is an error in its own entry.
pub async fn plan_confs(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    hosts: &[String],
) -> Result<Vec<(String, Result<ConfPlan>)>> {
    plan_confs_probed(env, transport, hosts, &BTreeMap::new()).await
}

/// Where [`embedded_probe`]'s answer starts and ends in a command's output.
const PROBE_START: &str = "CCHQ_SUPERVISOR_PROBE";
const PROBE_END: &str = "CCHQ_SUPERVISOR_PROBE_END";

/// The probe of [`plan_confs`] as a part of another command (the deploy's checkout, run as the
/// app user): it never fails that command; its answer is complete only when [`embedded_answer`]
/// finds it whole (a conf directory the user cannot read answers nothing, and is probed again).
pub fn embedded_probe(env: &Environment) -> String {
    let cd = ConfDir::of(env);
    // A directory there but not readable by this user would read as empty: no answer instead.
    let d = crate::command::quote(&cd.dir);
    format!(
        "echo {PROBE_START}; if [ ! -d {d} ] || {{ [ -r {d} ] && [ -x {d} ]; }}; then ( {} ) && echo {PROBE_END}; fi; true",
        probe_script(&cd.dir, &cd.prefix, &cd.runner)
    )
}

/// The answer of [`embedded_probe`] in `output`, when it is whole.
pub fn embedded_answer(output: &str) -> Option<String> {
    let (_, rest) = output.split_once(&format!("{PROBE_START}\n"))?;
    let (answer, _) = rest
        .split_once(&format!("{PROBE_END}\n"))
        .or_else(|| rest.strip_suffix(PROBE_END).map(|a| (a, "")))?;
    Some(answer.to_owned())
}

/// [`plan_confs`], with the probe answers already read (`probed`: host -> [`embedded_answer`]);
/// hosts without one are probed now.
///
/// # Errors
/// As [`plan_confs`].
pub async fn plan_confs_probed(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    hosts: &[String],
    probed: &BTreeMap<String, String>,
) -> Result<Vec<(String, Result<ConfPlan>)>> {
    crate::validate::require_valid(env, "updating the supervisor program files")?;
    let r = renderer(env)?;
    let mut rendered = Vec::new();
    for h in hosts {
        rendered.push((
            h.clone(),
            render_confs(env, h, &r).map_err(|e| e.context(format!("host `{h}`")))?,
        ));
    }
    let cd = ConfDir::of(env);
    let probe =
        RemoteCommand::shell(probe_script(&cd.dir, &cd.prefix, &cd.runner)).become_user("root");
    let futs = rendered.into_iter().map(|(host, files)| {
        let probe = &probe;
        async move {
            let res = async {
                if let Some(answer) = probed.get(&host) {
                    return Ok(conf_plan(&host, files, &parse_probe(answer)));
                }
                let out = transport.exec(&host, probe).await?.check(&host, probe)?;
                Ok(conf_plan(&host, files, &parse_probe(&out.stdout_str())))
            }
            .await;
            (host, res)
        }
    });
    Ok(crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await)
}

/// The script that writes `files` into `dir` (as root, mode 0644, temp file + rename) where they
/// differ and removes exactly `remove` (names from a [`ConfPlan`], never a pattern, so a file
/// that appeared since the plan stays); prints `changed <file>` / `removed <file>` for what it did.
/// Returns the script and its standard input: the files' contents travel on stdin, one after the
/// other, as [`crate::transport::Transport::write_files`] sends them, never in the script (the
/// argv of `sh -c`, `sudo` and `ssh`, which `ps` shows).
///
/// The celery runner (the file named [`ConfDir::runner`], and only it among absolute names) is
/// the app user's, as commcare-cloud's (`owner: cchq_user`, mode 0644): its directory is created,
/// and it is written (temp file + rename, where it differs) and removed, by the app user, who
/// reads its bytes from a pipe that root's `dd` fills with exactly its length from stdin (root
/// never writes into the app user's directory).
fn sync_script(
    cd: &ConfDir,
    app_user: &str,
    files: &[(String, String)],
    remove: &[String],
) -> (String, Vec<u8>) {
    use crate::command::quote;
    let as_user = |inner: &str| format!("sudo -n -u {} sh -c {}", quote(app_user), quote(inner));
    let mut script = format!(
        "set -e; mkdir -p {d}; [ -d {l} ] || sudo -n -u {u} mkdir -p {l} </dev/null; cd {d}; ",
        d = quote(&cd.dir),
        u = quote(app_user),
        l = quote(&cd.log_dir)
    );
    let mut stdin = Vec::with_capacity(files.iter().map(|(_, t)| t.len()).sum());
    for (name, text) in files {
        if name.starts_with('/') {
            if *name != cd.runner {
                continue;
            }
            let (dir, file) = name.rsplit_once('/').unwrap_or(("/", name));
            let (d, n, t) = (
                quote(if dir.is_empty() { "/" } else { dir }),
                quote(file),
                quote(&format!(".{file}.cchq-tmp")),
            );
            let len = text.len();
            stdin.extend_from_slice(text.as_bytes());
            let feed = if len == 0 {
                ": ".to_owned()
            } else {
                format!("dd bs={len} count=1 iflag=fullblock status=none")
            };
            let write = as_user(&format!(
                "set -e; cd {d}; cat > {t}; [ \"$(wc -c < {t})\" -eq {len} ]; chmod 0644 {t}; \
                 if cmp -s {t} {n}; then rm -f {t}; else mv -f {t} {n}; echo {said}; fi",
                said = quote(&format!("changed {name}"))
            ));
            script.push_str(&format!(
                "[ -d {d} ] || {} </dev/null; {feed} | {write}; ",
                as_user(&format!("mkdir -p {d}"))
            ));
            continue;
        }
        let (n, t) = (quote(name), quote(&format!(".{name}.cchq-tmp")));
        let fill = crate::transport::fill_from_stdin(&t, text.len());
        stdin.extend_from_slice(text.as_bytes());
        script.push_str(&format!(
            "{fill}; chmod 0644 {t}; if cmp -s {t} {n}; then rm -f {t}; else mv -f {t} {n}; echo \"changed {name}\"; fi; "
        ));
    }
    for name in remove {
        if *name == cd.runner {
            let r = quote(name);
            let rm = as_user(&format!("rm -f -- {r}"));
            script.push_str(&format!(
                "if [ -e {r} ] || [ -L {r} ]; then {rm} </dev/null; echo {}; fi; ",
                quote(&format!("removed {name}"))
            ));
            continue;
        }
        // Only this environment's program files, whatever the plan says.
        if name.starts_with(&cd.prefix) && name.ends_with(".conf") && !name.contains('/') {
            let n = quote(name);
            // `was NAME`: the process groups the file declared, so that only they are
            // updated in supervisord after the reload.
            script.push_str(&format!(
                "if [ -e {n} ]; then sed -n 's/^\\[program:\\(.*\\)\\][[:space:]]*$/was \\1/p; s/^\\[group:\\(.*\\)\\][[:space:]]*$/was \\1/p' {n}; \
                 rm -f -- {n}; echo \"removed {name}\"; fi; "
            ));
        }
    }
    script.push_str("true");
    (script, stdin)
}

/// The process group names a supervisor file declares (`[program:NAME]`, `[group:NAME]`).
pub fn section_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.strip_suffix(']')?;
            inner
                .strip_prefix("program:")
                .or_else(|| inner.strip_prefix("group:"))
                .map(|n| n.trim().to_owned())
        })
        .collect()
}

/// The XML-RPC requests that do what `supervisorctl update` does with the result of
/// `reloadConfig` (`[[added, changed, removed]]`): stop and remove removed groups, stop, remove and
/// re-add changed ones, add new ones (which start when `autostart`).
///
/// # Errors
/// A group name holding a control character XML-RPC cannot carry (`Config`, naming it).
pub fn update_bodies(
    added: &[String],
    changed: &[String],
    removed: &[String],
) -> Result<Vec<String>> {
    use xmlrpc::Value as V;
    let mut calls = Vec::new();
    for g in removed.iter().chain(changed) {
        calls.push(xmlrpc::call(
            "supervisor.stopProcessGroup",
            &[V::from(g.as_str()), V::Bool(true)],
        )?);
        calls.push(xmlrpc::call(
            "supervisor.removeProcessGroup",
            &[V::from(g.as_str())],
        )?);
    }
    for g in changed.iter().chain(added) {
        calls.push(xmlrpc::call(
            "supervisor.addProcessGroup",
            &[V::from(g.as_str())],
        )?);
    }
    Ok(calls)
}

/// Applies `plans` (from [`plan_confs`]): on each host that changes, writes the files that differ
/// and removes those the plan lists, then has supervisord reload its configuration and add,
/// update or remove the process groups (what `supervisorctl reread` + `update` do, over its
/// socket). A host that does not change costs nothing; one that does, three round trips.
///
/// A plan that would remove every program file of its host ([`ConfPlan::empties_host`]) is
/// refused, as that host's error, unless `allow.empty_hosts`.
pub async fn apply_confs(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    plans: &[ConfPlan],
    allow: Allow,
) -> Vec<(String, Result<ConfUpdate>)> {
    let cd = ConfDir::of(env);
    let socket = env.profile.supervisor_socket.as_str();
    let futs = plans.iter().map(|plan| {
        let host = plan.host.clone();
        let (script, stdin) = sync_script(&cd, &env.profile.app_user, &plan.files, &plan.remove);
        async move {
            let res: Result<ConfUpdate> = async {
                let files = plan.files.iter().map(|(n, _)| n.clone()).collect();
                if !plan.changes() {
                    return Ok(ConfUpdate { host: host.clone(), files, output: String::new() });
                }
                if plan.empties_host() && !allow.empty_hosts {
                    return Err(Error::config(format!(
                        "refusing to remove every supervisor program file of `{host}` ({}): the environment gives it no programs",
                        plan.remove.join(", ")
                    ))
                    .with_hint(
                        "check that app-processes.yml and the inventory still name this host; if it should run nothing, \
                         `update-supervisor-confs --limit <host> --empty-hosts --yes` removes them",
                    ));
                }
                let cmd = RemoteCommand::shell(script).become_user("root").stdin(stdin);
                let out = transport.exec(&host, &cmd).await?.check(&host, &cmd)?;
                // The process groups that are this environment's: those of its files, and those of
                // the files just removed (`was NAME`). supervisord's reload also reports other
                // environments' and the operator's changed files: those are left alone.
                let stdout = out.stdout_str();
                let mut ours: std::collections::HashSet<String> = plan.files.iter().flat_map(|(_, text)| section_names(text)).collect();
                ours.extend(stdout.lines().filter_map(|l| l.strip_prefix("was ")).map(|n| n.trim().to_owned()));
                let mut output: String = stdout.lines().filter(|l| !l.starts_with("was ")).map(|l| format!("{l}\n")).collect();
                if !output.trim().is_empty() {
                    output.push_str(&reload(transport, &host, socket, &ours).await?);
                }
                Ok(ConfUpdate { host: host.clone(), files, output })
            }
            .await;
            (host, res)
        }
    });
    crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await
}

/// `reloadConfig`, then the `update` of the groups it reports; says what was done.
/// Has supervisord reload its configuration, then adds, updates or removes the process groups
/// among `ours` that it reports (other environments' and the operator's are left as they are,
/// even when their files changed).
async fn reload(
    transport: &dyn crate::transport::Transport,
    host: &str,
    socket: &str,
    ours: &std::collections::HashSet<String>,
) -> Result<String> {
    let mut output = String::new();
    let reload = vec![xmlrpc::call("supervisor.reloadConfig", &[])?];
    let answer = rpc(transport, host, socket, &reload).await?.pop();
    let v = match answer {
        Some(Ok(v)) => v,
        Some(Err(f)) => {
            return Err(Error::new(
                ErrorKind::CommandFailed,
                format!("reloadConfig on `{host}`: {}", f.string),
            ));
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
        .map(|l| {
            l.as_array()
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .collect();
    let mine = |l: &Vec<String>| -> Vec<String> {
        l.iter().filter(|n| ours.contains(*n)).cloned().collect()
    };
    let (added, changed, removed) = match lists.as_slice() {
        [a, c, r] => (mine(a), mine(c), mine(r)),
        _ => (Vec::new(), Vec::new(), Vec::new()),
    };
    if !(added.is_empty() && changed.is_empty() && removed.is_empty()) {
        for answer in rpc(
            transport,
            host,
            socket,
            &update_bodies(&added, &changed, &removed)?,
        )
        .await?
        {
            if let Err(f) = answer {
                output.push_str(&format!("ERROR ({})\n", f.string));
            }
        }
    }
    for (what, names) in [
        ("added", &added),
        ("updated", &changed),
        ("removed", &removed),
    ] {
        for n in names {
            output.push_str(&format!("{n}: {what} process group\n"));
        }
    }
    Ok(output)
}

/// [`plan_confs`] then [`apply_confs`] without [`Allow::empty_hosts`]: what a deploy runs. Stale
/// files of a host that keeps programs are removed; a host the environment gives no programs
/// while it has some keeps them, and is an error.
///
/// # Errors
/// As [`plan_confs`] (nothing is written then).
pub async fn update_confs(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    hosts: &[String],
) -> Result<Vec<(String, Result<ConfUpdate>)>> {
    update_confs_probed(env, transport, hosts, &BTreeMap::new()).await
}

/// [`update_confs`] with the probe answers already read (see [`plan_confs_probed`]).
///
/// # Errors
/// As [`update_confs`].
pub async fn update_confs_probed(
    env: &Environment,
    transport: &dyn crate::transport::Transport,
    hosts: &[String],
    probed: &BTreeMap<String, String>,
) -> Result<Vec<(String, Result<ConfUpdate>)>> {
    let planned = plan_confs_probed(env, transport, hosts, probed).await?;
    let mut out = Vec::new();
    let mut plans = Vec::new();
    for (host, p) in planned {
        match p {
            Ok(p) => plans.push(p),
            Err(e) => out.push((host, Err(e))),
        }
    }
    out.extend(apply_confs(env, transport, &plans, Allow::default()).await);
    // In `hosts` order.
    out.sort_by_key(|(h, _)| hosts.iter().position(|x| x == h));
    Ok(out)
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
        assert_eq!(
            crate::command::base64(b"[program:a]\ncommand=x 'y' \"$z\"\n"),
            "W3Byb2dyYW06YV0KY29tbWFuZD14ICd5JyAiJHoiCg=="
        );
    }

    fn conf_dir(d: &str) -> ConfDir {
        ConfDir {
            dir: d.to_owned(),
            prefix: "e_supervisor_".to_owned(),
            log_dir: format!("{d}/log"),
            runner: format!("{d}/svc/e_celery_bash_runner.sh"),
        }
    }

    fn sh(script: &str) -> String {
        sh_in(script, b"")
    }

    /// Runs `script` with `/bin/sh -c`, `stdin` on its standard input.
    fn sh_in(script: &str, stdin: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The script may stop reading early (and fail): a broken pipe is its answer, not ours.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sync script, run by a real `/bin/sh` in a temporary directory: writes what differs,
    /// leaves what is the same, removes the files it is given and nothing else (a file that
    /// appeared after the plan, another environment's, a name outside this environment's).
    #[test]
    fn the_sync_script_writes_only_what_differs_and_removes_only_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        std::fs::create_dir(format!("{d}/log")).unwrap();
        for f in [
            "e_supervisor_old.conf",
            "e_supervisor_new_since_plan.conf",
            "other_supervisor_x.conf",
        ] {
            std::fs::write(format!("{d}/{f}"), "old").unwrap();
        }
        let cd = conf_dir(&d);
        let run = |files: &[(String, String)], remove: &[&str]| {
            let remove: Vec<String> = remove.iter().map(|s| (*s).to_owned()).collect();
            let (script, stdin) = sync_script(&cd, "nobody", files, &remove);
            for (_, text) in files.iter().filter(|(_, t)| !t.is_empty()) {
                assert!(
                    !script.contains(text.as_str()),
                    "file contents go on stdin, not in the script: {script}"
                );
            }
            sh_in(&script, &stdin)
        };
        let files = vec![(
            "e_supervisor_web.conf".to_owned(),
            "[program:web]\ncommand=run 'it'\n".to_owned(),
        )];
        let said = run(
            &files,
            &[
                "e_supervisor_old.conf",
                "other_supervisor_x.conf",
                "../e_supervisor_x.conf",
            ],
        );
        assert_eq!(
            said,
            "changed e_supervisor_web.conf\nremoved e_supervisor_old.conf\n"
        );
        assert_eq!(
            std::fs::read_to_string(format!("{d}/e_supervisor_web.conf")).unwrap(),
            files[0].1
        );
        for kept in [
            "e_supervisor_new_since_plan.conf",
            "other_supervisor_x.conf",
        ] {
            assert!(
                std::path::Path::new(&format!("{d}/{kept}")).exists(),
                "{kept} stays"
            );
        }
        assert_eq!(
            run(&files, &["e_supervisor_old.conf"]),
            "",
            "nothing differs the second time"
        );
        let files = vec![(
            "e_supervisor_web.conf".to_owned(),
            "[program:web]\ncommand=other\n".to_owned(),
        )];
        assert_eq!(run(&files, &[]), "changed e_supervisor_web.conf\n");
        // Several files, one empty, one with bytes a shell would mangle: each gets exactly its own.
        let files = vec![
            (
                "e_supervisor_a.conf".to_owned(),
                "[program:a]\ncommand=x 'y' \"$z\" `w` \\\n".to_owned(),
            ),
            ("e_supervisor_empty.conf".to_owned(), String::new()),
            (
                "e_supervisor_web.conf".to_owned(),
                "[program:web]\ncommand=third\n".to_owned(),
            ),
        ];
        assert_eq!(
            run(&files, &[]),
            "changed e_supervisor_a.conf\nchanged e_supervisor_empty.conf\nchanged e_supervisor_web.conf\n"
        );
        for (name, text) in &files {
            assert_eq!(
                &std::fs::read_to_string(format!("{d}/{name}")).unwrap(),
                text,
                "{name}"
            );
        }
        assert!(!std::fs::read_dir(&d).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("cchq-tmp")
        }));
    }

    /// The probe, run by a real `/bin/sh`, against files on disk: the plan says what is new,
    /// changed, unchanged and to remove; a missing directory is an empty host.
    #[test]
    fn the_probe_and_the_plan_compare_the_hosts_files_with_the_rendered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        std::fs::write(format!("{d}/e_supervisor_same.conf"), "same\n").unwrap();
        std::fs::write(format!("{d}/e_supervisor_diff.conf"), "before\n").unwrap();
        std::fs::write(format!("{d}/e_supervisor_celery.conf"), "stale\n").unwrap();
        std::fs::write(format!("{d}/other_supervisor_x.conf"), "theirs\n").unwrap();
        let current = parse_probe(&sh(&probe_script(
            &d,
            "e_supervisor_",
            &format!("{d}/svc/e_celery_bash_runner.sh"),
        )));
        assert_eq!(current.len(), 3, "{current:?}");
        let files = vec![
            ("e_supervisor_same.conf".to_owned(), "same\n".to_owned()),
            ("e_supervisor_diff.conf".to_owned(), "after\n".to_owned()),
            ("e_supervisor_web.conf".to_owned(), "web\n".to_owned()),
        ];
        let plan = conf_plan("h", files, &current);
        assert_eq!(
            (plan.new, plan.changed, plan.unchanged, plan.remove),
            (
                vec!["e_supervisor_web.conf".to_owned()],
                vec!["e_supervisor_diff.conf".to_owned()],
                vec!["e_supervisor_same.conf".to_owned()],
                vec!["e_supervisor_celery.conf".to_owned()]
            )
        );
        assert!(
            parse_probe(&sh(&probe_script(
                &format!("{d}/nowhere"),
                "e_supervisor_",
                &format!("{d}/nowhere/r.sh")
            )))
            .is_empty()
        );
        let empty = conf_plan("h", Vec::new(), &current);
        assert!(empty.empties_host() && empty.changes());
        assert!(!conf_plan("h", Vec::new(), &[]).changes());
    }

    /// The `test` fixture with `app-processes.yml` replaced by `text`.
    fn fixture_with(text: &str) -> Environment {
        let mut env = crate::fixture_env("test");
        env.app_processes = Some(
            crate::app_processes::AppProcesses::load(
                text,
                std::path::Path::new("app-processes.yml"),
            )
            .unwrap(),
        );
        env
    }

    /// A memory fleet whose hosts answer the probe with `files` (name -> contents) and record
    /// every other command.
    fn fleet_with(
        hosts: &[&str],
        files: &[(&str, &str)],
    ) -> crate::transport::memory::MemoryTransport {
        let t = crate::transport::memory::MemoryTransport::new(hosts.iter().copied());
        let listing: String = files
            .iter()
            .map(|(n, c)| format!("{}  {n}\n", sha256_hex(c)))
            .collect();
        t.respond_with(None, move |cmd| {
            let s = cmd.inner_shell();
            if s.contains("sha256sum") {
                Some(crate::transport::Output::new(0, listing.clone(), ""))
            } else {
                Some(crate::transport::Output::new(0, "", ""))
            }
        });
        t
    }

    /// Issue 13: `celery_a1,celery_b1:` once read as one unknown host planned nothing for the
    /// celery host and removed its celery programs. Now the environment does not validate, and
    /// nothing is probed, written or removed.
    #[tokio::test]
    async fn an_environment_that_does_not_validate_is_not_touched() {
        let env = fixture_with(
            "celery_processes:\n  celery,celery_b1:\n    beat: {}\n    celery: {}\npillows:\n  pillowtop: {P: {}}\n",
        );
        let t = fleet_with(&["cloud_worker_5"], &[("test_supervisor_celery.conf", "x")]);
        let hosts = vec!["cloud_worker_5".to_owned()];
        for err in [
            plan_confs(&env, &t, &hosts).await.unwrap_err(),
            update_confs(&env, &t, &hosts).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(
                err.message().contains("does not validate") && err.message().contains("celery_b1"),
                "{err}"
            );
            assert!(
                err.hint()
                    .unwrap()
                    .contains("validate-environment-settings"),
                "{err}"
            );
        }
        assert!(t.calls().is_empty(), "nothing ran: {:?}", t.calls());
    }

    /// A host that the environment gives no programs while it has program files keeps them (the
    /// deploy's `update_confs` reports it); stale files of a host that keeps programs go, and
    /// only the ones the plan listed.
    #[tokio::test]
    async fn a_host_is_never_emptied_without_being_allowed() {
        // cloud_worker_5 (celery) keeps its programs; cloud_worker_7 (proxy) has none.
        let env = fixture_with(
            "management_commands:\n  celery:\ncelery_processes:\n  celery:\n    beat: {}\n    flower: {}\npillows:\n  pillowtop: {P: {}}\n",
        );
        let files = [
            ("test_supervisor_celery.conf", "old workers"),
            ("test_supervisor_celerybeat.conf", "old beat"),
        ];
        let t = fleet_with(&["cloud_worker_5", "cloud_worker_7"], &files);
        let hosts = vec!["cloud_worker_5".to_owned(), "cloud_worker_7".to_owned()];
        let plans: Vec<ConfPlan> = plan_confs(&env, &t, &hosts)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.unwrap())
            .collect();
        assert_eq!(plans[0].remove, ["test_supervisor_celery.conf"]);
        assert!(plans[1].empties_host(), "{:?}", plans[1]);
        t.clear_calls();
        let results = update_confs(&env, &t, &hosts).await.unwrap();
        assert!(results[0].1.is_ok(), "{:?}", results[0].1);
        let err = results[1].1.as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message()
                .contains("refusing to remove every supervisor program file of `cloud_worker_7`"),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("--empty-hosts"), "{err}");
        let syncs: Vec<String> = t
            .calls()
            .into_iter()
            .map(|c| (c.host, c.command.inner_shell()))
            .filter(|(_, s)| s.contains("set -e"))
            .map(|(h, s)| format!("{h} {s}"))
            .collect();
        assert_eq!(syncs.len(), 1, "one host written: {syncs:?}");
        assert!(
            syncs[0].starts_with("cloud_worker_5 ")
                && syncs[0].contains("rm -f -- test_supervisor_celery.conf"),
            "{}",
            syncs[0]
        );
        // The program files travel on the command's stdin, never in its argv; one command per host.
        let sync = t
            .calls()
            .into_iter()
            .find(|c| c.command.inner_shell().contains("set -e"))
            .unwrap()
            .command;
        let stdin = String::from_utf8(sync.stdin_data().unwrap().to_vec()).unwrap();
        assert!(
            stdin.contains("[program:") && stdin.contains("command="),
            "{stdin}"
        );
        let lines: Vec<&str> = stdin.lines().filter(|l| l.len() > 12).collect();
        for word in sync.argv().iter().chain([&sync.to_shell()]) {
            assert!(
                !word.contains("command=") && !word.contains("base64"),
                "file contents in argv: {word}"
            );
            assert!(
                lines.iter().all(|l| !word.contains(l)),
                "file contents in argv: {word}"
            );
        }
        assert!(
            !syncs[0].contains("rm -f -- test_supervisor_celerybeat.conf"),
            "the beat file is kept: {}",
            syncs[0]
        );

        t.clear_calls();
        let results = apply_confs(&env, &t, &plans[1..], Allow { empty_hosts: true }).await;
        assert!(results[0].1.is_ok());
        let sync = t
            .calls()
            .into_iter()
            .map(|c| c.command.inner_shell())
            .find(|s| s.contains("set -e"))
            .unwrap();
        assert!(
            sync.contains("rm -f -- test_supervisor_celery.conf")
                && sync.contains("rm -f -- test_supervisor_celerybeat.conf"),
            "{sync}"
        );
    }

    /// The celery runner in the sync script, run by a real `/bin/sh` as root: written by the app
    /// user (`nobody` here) into its own directory, mode 0644, only where it differs, next to a
    /// program file whose bytes follow its own on stdin; removed when the plan lists it.
    #[test]
    #[allow(clippy::print_stderr, reason = "a skipped test says why")]
    fn the_sync_script_writes_and_removes_the_runner_as_the_app_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if own_uid() != 0 {
            eprintln!("SKIPPED: needs root (sudo -u nobody)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(format!("{d}/log")).unwrap();
        std::fs::create_dir(format!("{d}/svc")).unwrap();
        std::os::unix::fs::chown(format!("{d}/svc"), Some(65534), Some(65534)).unwrap();
        let cd = conf_dir(&d);
        let run = |files: &[(String, String)], remove: &[String]| {
            let (script, stdin) = sync_script(&cd, "nobody", files, remove);
            assert!(
                !script.contains("corehq worker"),
                "the runner's contents go on stdin: {script}"
            );
            sh_in(&script, &stdin)
        };
        let runner = cd.runner.clone();
        let files = vec![
            (
                runner.clone(),
                "#!/bin/bash\necho 'corehq worker' \"$@\"\n".to_owned(),
            ),
            (
                "e_supervisor_celery.conf".to_owned(),
                "[program:w]\ncommand=/bin/bash r\n".to_owned(),
            ),
        ];
        assert_eq!(
            run(&files, &[]),
            format!("changed {runner}\nchanged e_supervisor_celery.conf\n")
        );
        let meta = std::fs::metadata(&runner).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (65534, 0o644),
            "the app user's, 0644"
        );
        assert_eq!(std::fs::read_to_string(&runner).unwrap(), files[0].1);
        assert_eq!(
            std::fs::read_to_string(format!("{d}/e_supervisor_celery.conf")).unwrap(),
            files[1].1
        );
        assert_eq!(run(&files, &[]), "", "unchanged the second time");
        // Another runner path, a relative one, are not this environment's: left alone.
        std::fs::write(format!("{d}/svc/other_celery_bash_runner.sh"), "theirs").unwrap();
        let said = run(
            &files[1..],
            &[
                format!("{d}/svc/other_celery_bash_runner.sh"),
                runner.clone(),
            ],
        );
        assert_eq!(said, format!("removed {runner}\n"));
        assert!(!std::path::Path::new(&runner).exists());
        assert!(std::path::Path::new(&format!("{d}/svc/other_celery_bash_runner.sh")).exists());
        assert!(!std::fs::read_dir(format!("{d}/svc")).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("cchq-tmp")
        }));
        // The probe lists it under its path.
        run(&files, &[]);
        let current = parse_probe(&sh(&probe_script(&d, "e_supervisor_", &runner)));
        assert!(
            current
                .iter()
                .any(|(n, h)| *n == runner && *h == sha256_hex(&files[0].1)),
            "{current:?}"
        );
    }

    fn own_uid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap_or(u32::MAX)
    }

    /// On the memory transport: a host with celery workers gets the runner in its plan (new, then
    /// unchanged once the host has it); a host without workers that has it gets it removed (which
    /// does not empty the host); written and removed by the app user.
    #[tokio::test]
    async fn the_runner_is_planned_where_celery_workers_run_and_removed_elsewhere() {
        let env = fixture_with(
            "celery_processes:\n  celery:\n    beat: {}\n    q1: {}\npillows:\n  pillowtop: {P: {}}\n",
        );
        let runner = celery_runner_path(&env);
        assert_eq!(
            runner,
            "/home/cchq/www/test/services/test_celery_bash_runner.sh"
        );
        let hosts = vec!["cloud_worker_5".to_owned(), "cloud_worker_2".to_owned()];
        let t = fleet_with(&["cloud_worker_5", "cloud_worker_2"], &[]);
        let plans: Vec<ConfPlan> = plan_confs(&env, &t, &hosts)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.unwrap())
            .collect();
        assert!(plans[0].new.contains(&runner), "{:?}", plans[0]);
        assert!(
            plans[1].files.iter().all(|(n, _)| *n != runner) && !plans[1].new.contains(&runner),
            "{:?}",
            plans[1]
        );
        let script = plans[0]
            .files
            .iter()
            .find(|(n, _)| *n == runner)
            .unwrap()
            .1
            .clone();

        // Both hosts have it as rendered.
        let t = fleet_with(
            &["cloud_worker_5", "cloud_worker_2"],
            &[(runner.as_str(), script.as_str())],
        );
        let plans: Vec<ConfPlan> = plan_confs(&env, &t, &hosts)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, p)| p.unwrap())
            .collect();
        assert!(
            plans[0].unchanged.contains(&runner) && !plans[0].remove.contains(&runner),
            "{:?}",
            plans[0]
        );
        assert_eq!(plans[1].remove, std::slice::from_ref(&runner));
        assert!(
            !plans[1].empties_host(),
            "removing the runner alone does not empty a host"
        );
        let probes: Vec<String> = t
            .calls()
            .into_iter()
            .map(|c| c.command.inner_shell())
            .filter(|s| s.contains("sha256sum"))
            .collect();
        assert_eq!(probes.len(), 2, "one probe per host");
        assert!(
            probes.iter().all(|p| p.contains(&runner)),
            "the probe looks for the runner: {probes:?}"
        );
        t.clear_calls();
        let results = apply_confs(&env, &t, &plans, Allow::default()).await;
        assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
        let syncs: Vec<(String, String)> = t
            .calls()
            .into_iter()
            .map(|c| (c.host, c.command.inner_shell()))
            .filter(|(_, s)| s.contains("set -e"))
            .collect();
        let on = |h: &str| {
            syncs
                .iter()
                .find(|(x, _)| x == h)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let w2 = on("cloud_worker_2");
        assert!(
            w2.contains("sudo -n -u cchq sh -c") && w2.contains(&format!("rm -f -- {runner}")),
            "{syncs:?}"
        );
        assert!(
            on("cloud_worker_5").contains("sudo -n -u cchq sh -c"),
            "written by the app user: {syncs:?}"
        );
        assert!(on("cloud_worker_5").contains("dd bs="), "{syncs:?}");
    }

    #[test]
    fn update_bodies_follow_supervisorctl_update() {
        let body = update_bodies(&["new".into()], &["chg".into()], &["gone".into()])
            .unwrap()
            .join("\n");
        let order: Vec<usize> = ["stopProcessGroup", "removeProcessGroup", "addProcessGroup"]
            .iter()
            .map(|m| body.find(m).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{body}");
        assert_eq!(
            body.matches("supervisor.addProcessGroup").count(),
            2,
            "changed and added groups are added"
        );
        assert_eq!(
            body.matches("supervisor.removeProcessGroup").count(),
            2,
            "changed and removed groups are removed"
        );
    }
}
