//! The one I/O seam: how cchq reaches hosts.
//!
//! A [`Transport`] runs [`RemoteCommand`]s and moves files on the hosts it was built for, named by
//! their inventory names. Implementations: [`ssh::SshTransport`] (OpenSSH, one ControlMaster per
//! host), [`local::LocalTransport`] (processes on the control machine), [`memory::MemoryTransport`]
//! (an in-memory fake for tests) and, with the `mock` feature (or in cchq-core's own tests),
//! `MockTransport` (mockall). Behaviour is added by wrapping: [`dry_run::DryRun`] prints instead of
//! running (concurrency is bounded by [`crate::fanout`]). `conformance` (the `testing` feature) is
//! the suite every implementation passes.
//!
//! A non-zero exit status is a normal [`Output`], not an error; [`Output::check`] turns it into one.

#[cfg(feature = "testing")]
pub mod conformance;
pub mod counting;
pub mod dry_run;
pub mod local;
pub mod memory;
pub mod routed;
pub mod ssh;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::command::{RemoteCommand, base64_decode, quote};
use crate::error::{Error, ErrorKind, Result};

/// What a finished command produced.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// The exit code; `None` when the process was killed by a signal.
    pub exit_code: Option<i32>,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// An output with exit code `code` and the given streams.
    pub fn new(code: i32, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            exit_code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Standard output as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok(self)` when the command succeeded, else a [`ErrorKind::CommandFailed`] error naming the
    /// host, the command and the tail of its standard error.
    pub fn check(self, host: &str, cmd: &RemoteCommand) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let code = self
            .exit_code
            .map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"));
        let stderr = self.stderr_str();
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut msg = format!("`{cmd}` failed on `{host}` with {code}");
        if !tail.is_empty() {
            msg.push_str(":\n  ");
            msg.push_str(&tail.join("\n  "));
        }
        Err(Error::new(ErrorKind::CommandFailed, msg))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("exit_code", &self.exit_code)
            .field("stdout", &self.stdout_str())
            .field("stderr", &self.stderr_str())
            .finish()
    }
}

/// How a file is written by [`Transport::write_file`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// Octal permission bits, e.g. `0o600`; `None` keeps an existing file's mode (0644 for new files).
    pub mode: Option<u32>,
    /// Write as this user (through `become`), so that the file is owned by it.
    pub become_user: Option<String>,
}

/// One file of a [`Transport::write_files`] batch.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct FileWrite {
    /// Where it goes on the host.
    pub path: String,
    /// What it holds.
    pub contents: Vec<u8>,
    /// Its permission bits; `None` takes the batch's [`WriteOptions::mode`].
    pub mode: Option<u32>,
}

impl fmt::Debug for FileWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Contents are often secrets: never shown.
        f.debug_struct("FileWrite")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &self.mode)
            .finish()
    }
}

/// How a file is read by [`Transport::read_file`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// Read as this user (through `become`).
    pub become_user: Option<String>,
}

/// How cchq reaches hosts. Object-safe: use it as `Arc<dyn Transport>`.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// The hosts this transport can reach, by inventory name.
    fn hosts(&self) -> Vec<String>;

    /// Runs `cmd` on `host`. A non-zero exit is `Ok`; connection problems and unknown hosts are `Err`.
    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output>;

    /// As [`Transport::exec`], calling `on_line` with each line of its output (stdout and
    /// stderr, without the newline) as it arrives, for progress. The default runs `exec` and then
    /// gives its lines; the SSH and local transports give them as the command prints them.
    async fn exec_lines(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: &dyn LineSink,
    ) -> Result<Output> {
        let out = self.exec(host, cmd).await?;
        for l in out.stdout_str().lines() {
            on_line.line(Stream::Stdout, l);
        }
        for l in out.stderr_str().lines() {
            on_line.line(Stream::Stderr, l);
        }
        Ok(out)
    }

    /// Writes `contents` to `path` on `host` atomically (a temporary file in the same directory,
    /// then a rename), creating missing parent directories.
    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        let script = write_script(path, opts.mode);
        let cmd = RemoteCommand::shell(script)
            .maybe_become(opts.become_user.as_deref())
            .without_login()
            .stdin(contents.to_vec());
        self.exec(host, &cmd)
            .await?
            .check(host, &RemoteCommand::new("write").arg(path))
            .map(|_| ())
    }

    /// Reads `path` on `host`; `Ok(None)` when it does not exist.
    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        let script = format!(
            "if [ -e {p} ]; then cat {p}; else exit 66; fi",
            p = quote(path)
        );
        let cmd = RemoteCommand::shell(script)
            .maybe_become(opts.become_user.as_deref())
            .without_login();
        let out = self.exec(host, &cmd).await?;
        match out.exit_code {
            Some(0) => Ok(Some(out.stdout)),
            Some(66) => Ok(None),
            _ => out
                .check(host, &RemoteCommand::new("cat").arg(path))
                .map(|o| Some(o.stdout)),
        }
    }

    /// Reads every path of `paths` on `host` in one command; `None` for those that do not exist.
    /// The default sends one shell script; transports whose [`Transport::read_file`] does not run
    /// commands override it.
    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = RemoteCommand::shell(read_files_script(paths))
            .maybe_become(opts.become_user.as_deref())
            .without_login();
        let out = self.exec(host, &cmd).await?;
        let out = out.check(
            host,
            &RemoteCommand::new("read").args(paths.iter().cloned()),
        )?;
        parse_read_files(host, paths, &out.stdout_str())
    }

    /// Writes every file of `files` on `host` in one command, as [`Transport::write_file`] does
    /// each: every file is first written to a temporary file beside it, then all are renamed into
    /// place, so a failure leaves every old file as it was. The contents travel on the command's
    /// stdin, one after the other, never in its argv (where `ps` on either machine shows them).
    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        if files.len() <= 1 {
            for f in files {
                let o = WriteOptions {
                    mode: f.mode.or(opts.mode),
                    become_user: opts.become_user.clone(),
                };
                self.write_file(host, &f.path, &f.contents, &o).await?;
            }
            return Ok(());
        }
        let stdin: Vec<u8> = files
            .iter()
            .flat_map(|f| f.contents.iter().copied())
            .collect();
        let cmd = RemoteCommand::shell(write_files_script(files, opts.mode))
            .maybe_become(opts.become_user.as_deref())
            .without_login()
            .stdin(stdin)
            .secret();
        let what = RemoteCommand::new("write").args(files.iter().map(|f| f.path.clone()));
        self.exec(host, &cmd).await?.check(host, &what).map(|_| ())
    }

    /// Closes every connection this transport holds. Idempotent.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// The script behind the default [`Transport::read_files`]: per path, a line `y<base64>` or `n`.
fn read_files_script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "for p in {}; do if [ -e \"$p\" ]; then printf y; base64 -w0 < \"$p\" || exit 3; echo; else echo n; fi; done",
        list.join(" ")
    )
}

fn parse_read_files(host: &str, paths: &[String], text: &str) -> Result<Vec<Option<Vec<u8>>>> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != paths.len() {
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!("reading {} file(s) on `{host}` returned {} answer(s)", paths.len(), lines.len()),
        )
        .with_hint("the host's shell printed something unexpected (a profile script?); check `base64` is installed there"));
    }
    paths
        .iter()
        .zip(lines)
        .map(|(p, line)| match line.strip_prefix('y') {
            Some(b64) => base64_decode(b64).map(Some).ok_or_else(|| {
                Error::new(
                    ErrorKind::CommandFailed,
                    format!("reading `{p}` on `{host}` returned something that is not base64"),
                )
            }),
            None if line == "n" => Ok(None),
            None => Err(Error::new(
                ErrorKind::CommandFailed,
                format!("reading `{p}` on `{host}` returned `{line}`"),
            )),
        })
        .collect()
}

/// The script behind the default [`Transport::write_files`]: every file to a temporary file in
/// its directory, its bytes read from stdin (exactly its length, with `dd iflag=fullblock`, which
/// never reads past them), then every rename; temporary files are removed on failure. The script
/// holds paths, lengths and modes only.
///
/// It starts as few processes as it can, since a fan-out runs it on every host at once: the
/// directory is computed here (no `dirname`) and made only when missing, each temporary file is
/// made by the shell itself under a random name (`set -C`, so an existing one is never followed or
/// reused, under
/// `umask 077` as `mktemp` would, then the caller's umask again for the directories), and
/// temporary files that take the same mode get it in one `chmod`.
fn write_files_script(files: &[FileWrite], default_mode: Option<u32>) -> String {
    let mut s = String::from("set -e; u=$(umask); ");
    let temps: Vec<String> = (0..files.len())
        .map(|i| format!("${{t{i}:+\"$t{i}\"}}"))
        .collect();
    let unset: Vec<String> = (0..files.len()).map(|i| format!("t{i}=")).collect();
    s.push_str(&format!(
        "{}; trap 'rm -f {}' EXIT; ",
        unset.join(" "),
        temps.join(" ")
    ));
    // A name no earlier run left behind (a crashed one's temporary file stays): random, from here.
    let mut token = [0u8; 8];
    if getrandom::fill(&mut token).is_err() {
        token.copy_from_slice(&crate::clock::now_nanos().to_le_bytes()[..8]);
    }
    let token = hex::encode(token);
    let mut by_mode: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    let mut by_reference = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let dir = match std::path::Path::new(&f.path).parent() {
            Some(d) if d.as_os_str().is_empty() => ".".to_owned(),
            Some(d) => d.to_string_lossy().into_owned(),
            None => "/".to_owned(),
        };
        match f.mode.or(default_mode) {
            Some(m) => by_mode.entry(m).or_default().push(i),
            None => by_reference.push(i),
        }
        let fill = fill_from_stdin(&format!("\"$t{i}\""), f.contents.len());
        s.push_str(&format!(
            "p{i}={p}; d={d}; [ -d \"$d\" ] || mkdir -p \"$d\"; \
             umask 077; set -C; : > \"$d/.cchq-tmp.{token}.{i}\"; set +C; umask \"$u\"; \
             t{i}=\"$d/.cchq-tmp.{token}.{i}\"; {fill}; ",
            p = quote(&f.path),
            d = quote(&dir),
        ));
    }
    for (mode, idx) in &by_mode {
        let list: Vec<String> = idx.iter().map(|i| format!("\"$t{i}\"")).collect();
        s.push_str(&format!("chmod {mode:o} {}; ", list.join(" ")));
    }
    for i in by_reference {
        s.push_str(&format!(
            "if [ -e \"$p{i}\" ]; then chmod --reference=\"$p{i}\" \"$t{i}\"; else chmod 644 \"$t{i}\"; fi; "
        ));
    }
    for i in 0..files.len() {
        s.push_str(&format!("mv -f \"$t{i}\" \"$p{i}\"; "));
    }
    s.push_str("trap - EXIT");
    s
}

/// Stdin-only file contents: the shell commands that fill `target` (a shell word, e.g. `"$t0"`
/// or a quoted path) with exactly the next `len` bytes of the command's standard input
/// (`dd iflag=fullblock` never reads past them), failing (the last command's status) when fewer
/// arrive. Several files' contents are sent one after the other on the same stdin, each read by
/// its own fill, so a whole batch costs one command whose argv holds paths and lengths only.
/// [`Transport::write_files`], the supervisor program files
/// ([`crate::services::supervisor::apply_confs`]) and the deploy lock's holder record use it.
pub(crate) fn fill_from_stdin(target: &str, len: usize) -> String {
    match len {
        0 => format!(": > {target}"),
        n => format!(
            "dd bs={n} count=1 iflag=fullblock status=none of={target}; [ \"$(wc -c < {target})\" -eq {n} ]"
        ),
    }
}

/// The shell script behind the default [`Transport::write_file`]: temp file, mode, rename.
fn write_script(path: &str, mode: Option<u32>) -> String {
    let set_mode = match mode {
        Some(m) => format!("chmod {m:o} \"$t\""),
        None => "if [ -e \"$p\" ]; then chmod --reference=\"$p\" \"$t\"; else chmod 644 \"$t\"; fi"
            .to_owned(),
    };
    format!(
        "set -e; p={p}; d=$(dirname \"$p\"); mkdir -p \"$d\"; t=$(mktemp \"$d/.cchq-tmp.XXXXXX\"); \
         trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; {set_mode}; mv -f \"$t\" \"$p\"; trap - EXIT",
        p = quote(path)
    )
}

/// Conveniences over any [`Transport`]; implemented for every transport, never by hand.
#[async_trait]
pub trait TransportExt: Transport {
    /// Runs `cmd` and turns a non-zero exit into an error.
    async fn exec_checked(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        self.exec(host, cmd).await?.check(host, cmd)
    }

    /// Runs a shell snippet with `/bin/sh -c`.
    async fn shell(&self, host: &str, script: &str) -> Result<Output> {
        self.exec(host, &RemoteCommand::shell(script)).await
    }
}

impl<T: Transport + ?Sized> TransportExt for T {}

#[cfg(any(test, feature = "mock"))]
mockall::mock! {
    /// A mock of [`Transport`] (feature `mock`). [`Transport::exec_lines`] is not mocked: it
    /// runs the mocked `exec` and gives its lines.
    pub Transport {}

    #[async_trait]
    impl Transport for Transport {
        fn hosts(&self) -> Vec<String>;
        async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output>;
        async fn write_file(&self, host: &str, path: &str, contents: &[u8], opts: &WriteOptions) -> Result<()>;
        async fn read_file(&self, host: &str, path: &str, opts: &ReadOptions) -> Result<Option<Vec<u8>>>;
        async fn read_files(&self, host: &str, paths: &[String], opts: &ReadOptions) -> Result<Vec<Option<Vec<u8>>>>;
        async fn write_files(&self, host: &str, files: &[FileWrite], opts: &WriteOptions) -> Result<()>;
        async fn close(&self) -> Result<()>;
    }
}

#[cfg(any(test, feature = "mock"))]
impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockTransport")
    }
}

/// A shared, dynamically dispatched transport.
pub type DynTransport = Arc<dyn Transport>;

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn hosts(&self) -> Vec<String> {
        (**self).hosts()
    }
    async fn exec(&self, host: &str, cmd: &RemoteCommand) -> Result<Output> {
        (**self).exec(host, cmd).await
    }
    async fn exec_lines(
        &self,
        host: &str,
        cmd: &RemoteCommand,
        on_line: &dyn LineSink,
    ) -> Result<Output> {
        (**self).exec_lines(host, cmd, on_line).await
    }
    async fn write_file(
        &self,
        host: &str,
        path: &str,
        contents: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        (**self).write_file(host, path, contents, opts).await
    }
    async fn read_file(
        &self,
        host: &str,
        path: &str,
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        (**self).read_file(host, path, opts).await
    }
    async fn read_files(
        &self,
        host: &str,
        paths: &[String],
        opts: &ReadOptions,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).read_files(host, paths, opts).await
    }
    async fn write_files(
        &self,
        host: &str,
        files: &[FileWrite],
        opts: &WriteOptions,
    ) -> Result<()> {
        (**self).write_files(host, files, opts).await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives each line of a command's output as it arrives ([`Transport::exec_lines`]); any
/// `Fn(Stream, &str)` is one.
pub trait LineSink: Send + Sync {
    /// One line, without its newline.
    fn line(&self, stream: Stream, text: &str);
}

impl<F: Fn(Stream, &str) + Send + Sync> LineSink for F {
    fn line(&self, stream: Stream, text: &str) {
        self(stream, text);
    }
}

/// Reads `reader` to its end, returning every byte; with `on_line`, also calls it with each
/// complete line as soon as it is read (lossily decoded, without its newline; a last line
/// without a newline at the end).
pub(crate) async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    stream: Stream,
    on_line: Option<&dyn LineSink>,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let Some(mut r) = reader else { return Ok(buf) };
    let mut chunk = [0u8; 8192];
    let mut from = 0;
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(f) = on_line {
            while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
                let line = &buf[from..from + i];
                f.line(stream, String::from_utf8_lossy(line).trim_end_matches('\r'));
                from += i + 1;
            }
        }
    }
    if let Some(f) = on_line
        && from < buf.len()
    {
        f.line(
            stream,
            String::from_utf8_lossy(&buf[from..]).trim_end_matches('\r'),
        );
    }
    Ok(buf)
}

/// The error for a host a transport was not built for.
pub(crate) fn unknown_host(host: &str, known: &[String]) -> Error {
    let mut e = Error::not_found(format!("unknown host `{host}`"));
    if !known.is_empty() {
        let shown: Vec<&str> = known.iter().take(8).map(String::as_str).collect();
        e = e.with_hint(format!(
            "known hosts: {}{}",
            shown.join(", "),
            if known.len() > 8 { ", ..." } else { "" }
        ));
    }
    e
}

/// Awaits `fut`, failing with a timeout error when `cmd` has a timeout and it passes first.
pub(crate) async fn with_timeout<F: std::future::Future>(
    host: &str,
    cmd: &RemoteCommand,
    fut: F,
) -> Result<F::Output> {
    match cmd.timeout_after() {
        None => Ok(fut.await),
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| {
            Error::new(
                ErrorKind::CommandFailed,
                format!("`{cmd}` on `{host}` timed out after {limit:?}"),
            )
            .with_hint("raise the timeout or check what the command is waiting for on that host")
        }),
    }
}
