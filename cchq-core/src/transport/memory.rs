//! An in-memory fake fleet: files, scripted command results and a log of every call.
//!
//! Each host has its own file table and call log. A command is answered by the first scripted
//! responder that matches it, else by a handful of built-in programs (`true`, `false`, `echo`,
//! `printf`, `cat`, `hostname`, `pwd`, `env`, `exit`, `sh -c` with `;`/`&&`-joined simple
//! commands and `>&2`), else with exit 127. Hosts can be made unreachable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{FileWrite, Output, ReadOptions, Transport, WriteOptions, unknown_host};
use crate::command::RemoteCommand;
use crate::error::{Error, Result};

type ResponderFn = dyn Fn(&RemoteCommand) -> Option<Output> + Send + Sync;

/// One call recorded by the memory transport.
#[derive(Debug, Clone)]
pub struct Call {
    /// The host it ran on.
    pub host: String,
    /// The command.
    pub command: RemoteCommand,
}

#[derive(Default)]
struct HostState {
    files: BTreeMap<String, (Vec<u8>, u32)>,
    reachable: bool,
}

#[derive(Default)]
struct State {
    hosts: BTreeMap<String, HostState>,
    order: Vec<String>,
    responders: Vec<(Option<String>, Arc<ResponderFn>)>,
    log: Vec<Call>,
    /// No call log (benchmarks: the log would be most of the memory measured).
    no_log: bool,
    /// `(host, needle)`: the next command on `host` whose shell rendering contains `needle` fails
    /// with a lost connection (once), see [`MemoryTransport::drop_connection_on`].
    drops: Vec<(String, String)>,
}

impl State {
    fn record(&mut self, call: Call) {
        if !self.no_log {
            self.log.push(call);
        }
    }
}

/// The in-memory fake. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("hosts", &self.lock().order)
            .finish()
    }
}

impl MemoryTransport {
    /// A fake fleet of `hosts`, all reachable and empty.
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let t = Self::default();
        {
            let mut st = t.lock();
            for h in hosts {
                let h = h.into();
                if !st.hosts.contains_key(&h) {
                    st.order.push(h.clone());
                    st.hosts.insert(
                        h,
                        HostState {
                            reachable: true,
                            ..HostState::default()
                        },
                    );
                }
            }
        }
        t
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers commands whose shell rendering (without `become`) contains `needle` with `output`,
    /// on `host` or, when `host` is `None`, on every host. Later responders take precedence.
    pub fn respond(&self, host: Option<&str>, needle: &str, output: Output) {
        let needle = needle.to_owned();
        self.respond_with(host, move |cmd| {
            cmd.inner_shell().contains(&needle).then(|| output.clone())
        });
    }

    /// Answers commands with a function; `None` lets the next responder or the built-ins answer.
    pub fn respond_with(
        &self,
        host: Option<&str>,
        f: impl Fn(&RemoteCommand) -> Option<Output> + Send + Sync + 'static,
    ) {
        self.lock()
            .responders
            .insert(0, (host.map(str::to_owned), Arc::new(f)));
    }

    /// The next command on `host` whose shell rendering (without `become`) contains `needle`
    /// fails with a connection error, as when the connection drops while it runs; later commands
    /// reach the host again (the transport reconnects). What the command did on the host is up to
    /// the test: answer the commands that read the state afterwards.
    pub fn drop_connection_on(&self, host: &str, needle: &str) {
        self.lock().drops.push((host.to_owned(), needle.to_owned()));
    }

    /// Makes `host` unreachable (every call fails with a connection error) or reachable again.
    pub fn set_reachable(&self, host: &str, reachable: bool) {
        if let Some(h) = self.lock().hosts.get_mut(host) {
            h.reachable = reachable;
        }
    }

    /// Keeps no log of calls from now on ([`MemoryTransport::calls`] stays empty): for
    /// benchmarks that measure the controller's memory, which the log would swell.
    pub fn without_call_log(&self) {
        let mut st = self.lock();
        st.no_log = true;
        st.log = Vec::new();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().log.clone()
    }

    /// The shell renderings of the calls made on `host`, in order.
    pub fn commands_on(&self, host: &str) -> Vec<String> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.host == host)
            .map(|c| c.command.to_string())
            .collect()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.lock().log.clear();
    }

    /// A file's contents on `host`.
    pub fn file(&self, host: &str, path: &str) -> Option<Vec<u8>> {
        self.lock()
            .hosts
            .get(host)?
            .files
            .get(path)
            .map(|(d, _)| d.clone())
    }

    /// A file's mode on `host`.
    pub fn file_mode(&self, host: &str, path: &str) -> Option<u32> {
        self.lock()
            .hosts
            .get(host)?
            .files
            .get(path)
            .map(|(_, m)| *m)
    }

    /// Puts a file on `host`.
    pub fn put_file(&self, host: &str, path: &str, contents: impl Into<Vec<u8>>) {
        if let Some(h) = self.lock().hosts.get_mut(host) {
            h.files.insert(path.to_owned(), (contents.into(), 0o644));
        }
    }

    fn check_host(st: &State, host: &str) -> Result<()> {
        match st.hosts.get(host) {
            None => Err(unknown_host(host, &st.order)),
            Some(h) if !h.reachable => Err(Error::connection(format!(
                "cannot connect to `{host}`: host is unreachable (memory transport)"
            ))),
            Some(_) => Ok(()),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn hosts(&self) -> Vec<String> {
        self.lock().order.clone()
    }

    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        let responders = {
            let mut st = self.lock();
            Self::check_host(&st, host)?;
            st.record(Call {
                host: host.to_owned(),
                command: cmd.clone(),
            });
            if let Some(i) = st
                .drops
                .iter()
                .position(|(h, n)| h == host && cmd.inner_shell().contains(n.as_str()))
            {
                st.drops.remove(i);
                return Err(Error::connection(format!(
                    "connection to `{host}` lost (memory transport)"
                )));
            }
            st.responders.clone()
        };
        for (h, f) in responders {
            if h.as_deref().is_none_or(|h| h == host)
                && let Some(out) = f(cmd)
            {
                return Ok(out);
            }
        }
        // `rm -f PATH...` removes files of the host's store (the one built-in that changes it).
        let argv = cmd.argv();
        if argv.first().is_some_and(|p| p == "rm") && argv.get(1).is_some_and(|a| a == "-f") {
            let mut st = self.lock();
            if let Some(h) = st.hosts.get_mut(host) {
                for path in &argv[2..] {
                    h.files.remove(path);
                }
            }
            return Ok(Output::new(0, Vec::new(), Vec::new()));
        }
        Ok(builtin(host, cmd))
    }

    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        let mut st = self.lock();
        Self::check_host(&st, host)?;
        st.record(Call {
            host: host.to_owned(),
            command: RemoteCommand::new("write-file").arg(path),
        });
        let h = st
            .hosts
            .get_mut(host)
            .ok_or_else(|| Error::internal("host vanished"))?;
        let mode = opts
            .mode
            .or_else(|| h.files.get(path).map(|(_, m)| *m))
            .unwrap_or(0o644);
        h.files.insert(path.to_owned(), (contents.to_vec(), mode));
        Ok(())
    }

    async fn read_file(
        &self,
        host: &str,
        path: &str,
        _opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        let mut st = self.lock();
        Self::check_host(&st, host)?;
        st.record(Call {
            host: host.to_owned(),
            command: RemoteCommand::new("read-file").arg(path),
        });
        Ok(st
            .hosts
            .get(host)
            .and_then(|h| h.files.get(path))
            .map(|(d, _)| d.clone()))
    }

    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            out.push(self.read_file(host, p, opts).await?);
        }
        Ok(out)
    }

    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        // Check first so that an unreachable host gets nothing, as with the one-command default.
        Self::check_host(&self.lock(), host)?;
        for f in files {
            let o = WriteOptions {
                mode: f.mode.or(opts.mode),
                become_user: opts.become_user.clone(),
            };
            self.write_file(host, &f.path, &f.contents, &o).await?;
        }
        Ok(())
    }
}

/// The built-in programs of a memory host.
fn builtin(host: &str, cmd: &RemoteCommand) -> Output {
    let argv = cmd.argv();
    if argv.len() == 3 && (argv[0] == "/bin/sh" || argv[0] == "sh") && argv[1] == "-c" {
        return run_script(host, cmd, &argv[2]);
    }
    let mut out = Output::new(0, Vec::new(), Vec::new());
    run_simple(host, cmd, argv, &mut out);
    out
}

/// Runs `a; b && c` scripts of simple commands, each optionally ending in `>&2`.
fn run_script(host: &str, cmd: &RemoteCommand, script: &str) -> Output {
    let mut out = Output::new(0, Vec::new(), Vec::new());
    for (i, part) in script.split(';').enumerate() {
        for (j, simple) in part.split("&&").enumerate() {
            if j > 0 && !out.success() {
                break;
            }
            let _ = i;
            let Some(words) = split_words(simple.trim()) else {
                return Output::new(
                    2,
                    Vec::new(),
                    b"memory host: cannot parse script\n".to_vec(),
                );
            };
            if words.is_empty() {
                continue;
            }
            if words[0] == "exit" {
                out.exit_code = Some(words.get(1).and_then(|c| c.parse().ok()).unwrap_or(0));
                return out;
            }
            let (words, to_stderr) = match words.last().map(String::as_str) {
                Some(">&2") => (&words[..words.len() - 1], true),
                _ => (&words[..], false),
            };
            let mut one = Output::new(0, Vec::new(), Vec::new());
            run_simple(host, cmd, words, &mut one);
            if to_stderr {
                out.stderr.extend(one.stdout);
            } else {
                out.stdout.extend(one.stdout);
            }
            out.stderr.extend(one.stderr);
            out.exit_code = one.exit_code;
        }
    }
    out
}

fn run_simple(host: &str, cmd: &RemoteCommand, argv: &[String], out: &mut Output) {
    let Some(program) = argv.first() else { return };
    let args = &argv[1..];
    match program.as_str() {
        "true" | ":" => {}
        "false" => out.exit_code = Some(1),
        "exit" => out.exit_code = Some(args.first().and_then(|c| c.parse().ok()).unwrap_or(0)),
        "echo" => {
            out.stdout.extend(args.join(" ").as_bytes());
            out.stdout.push(b'\n');
        }
        "printf" => {
            if let Some((fmt, rest)) = args.split_first() {
                out.stdout.extend(printf(fmt, rest));
            }
        }
        "cat" if args.is_empty() => out.stdout.extend(cmd.stdin_data().unwrap_or_default()),
        "hostname" => {
            out.stdout.extend(host.as_bytes());
            out.stdout.push(b'\n');
        }
        "pwd" => {
            out.stdout
                .extend(cmd.working_dir().unwrap_or("/").as_bytes());
            out.stdout.push(b'\n');
        }
        "env" if args.is_empty() => {
            for (k, v) in cmd.envs() {
                out.stdout.extend(format!("{k}={v}\n").as_bytes());
            }
        }
        "whoami" => {
            out.stdout
                .extend(cmd.become_as().unwrap_or("ansible").as_bytes());
            out.stdout.push(b'\n');
        }
        _ => {
            out.exit_code = Some(127);
            out.stderr
                .extend(format!("memory host: {program}: command not found\n").as_bytes());
        }
    }
}

/// POSIX `printf` for `%s`, `%%` and the escapes `\n`, `\t`, `\0`, `\\`; the format is reused
/// while arguments remain.
fn printf(fmt: &str, args: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut idx = 0;
    loop {
        let mut consumed = false;
        let mut chars = fmt.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => out.push(b'\n'),
                    Some('t') => out.push(b'\t'),
                    Some('0') => out.push(0),
                    Some('\\') => out.push(b'\\'),
                    Some(o) => {
                        out.push(b'\\');
                        out.extend(o.to_string().as_bytes());
                    }
                    None => out.push(b'\\'),
                },
                '%' => match chars.next() {
                    Some('s') => {
                        consumed = true;
                        if let Some(a) = args.get(idx) {
                            out.extend(a.as_bytes());
                        }
                        idx += 1;
                    }
                    Some('%') => out.push(b'%'),
                    Some(o) => {
                        out.push(b'%');
                        out.extend(o.to_string().as_bytes());
                    }
                    None => out.push(b'%'),
                },
                c => out.extend(c.to_string().as_bytes()),
            }
        }
        if !consumed || idx >= args.len() {
            break;
        }
    }
    out
}

/// Splits a simple command into words: whitespace, single and double quotes, backslash escapes.
fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn responders_take_precedence_and_calls_are_logged() {
        let t = MemoryTransport::new(["a", "b"]);
        t.respond(
            Some("a"),
            "supervisorctl status",
            Output::new(3, "x RUNNING\n", ""),
        );
        let cmd = RemoteCommand::new("supervisorctl")
            .arg("status")
            .become_user("root");
        assert_eq!(t.exec("a", &cmd).await.unwrap().exit_code, Some(3));
        assert_eq!(t.exec("b", &cmd).await.unwrap().exit_code, Some(127));
        assert_eq!(
            t.commands_on("a"),
            vec!["[as root] supervisorctl status".to_owned()]
        );
    }

    #[tokio::test]
    async fn scripts_of_simple_commands_run() {
        let t = MemoryTransport::new(["a"]);
        let out = t
            .exec(
                "a",
                &RemoteCommand::shell("echo out; echo 'e r' >&2 && exit 3"),
            )
            .await
            .unwrap();
        assert_eq!(out, Output::new(3, "out\n", "e r\n"));
    }

    #[tokio::test]
    async fn unreachable_hosts_fail_with_connection_errors() {
        let t = MemoryTransport::new(["a"]);
        t.set_reachable("a", false);
        let err = t.exec("a", &RemoteCommand::new("true")).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Connection);
    }
}
