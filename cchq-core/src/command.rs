//! Remote commands, built from argv and rendered to one shell string in exactly one place.
//!
//! Every transport runs a [`RemoteCommand`] by handing [`RemoteCommand::to_shell`] to a POSIX
//! shell (the login shell of the SSH user, or `/bin/sh -c` locally). Quoting, `cd`, environment
//! variables and `become` (`sudo -iu <user>`) are all decided here, so that an argument — quotes,
//! `$()`, `;`, newlines, any byte but NUL — reaches the remote program unchanged.

use std::fmt;
use std::time::Duration;

/// A command to run on a host: argv, working directory, environment, `become` user, stdin, timeout.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RemoteCommand {
    argv: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    become_user: Option<String>,
    /// `become` without the user's login shell (`sudo -u`, not `sudo -iu`).
    become_plain: bool,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    secret: bool,
}

impl RemoteCommand {
    /// A command from its program and no arguments yet.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            argv: vec![program.into()],
            ..Self::default()
        }
    }

    /// A command from a whole argv (the first element is the program).
    ///
    /// # Panics
    /// Never; an empty argv renders as `true`.
    pub fn from_argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A shell snippet run by `/bin/sh -c` (what `run-shell-command` and Ansible's `shell` module do).
    pub fn shell(script: impl Into<String>) -> Self {
        Self::from_argv(["/bin/sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// A shell snippet run as `user` without a login shell ([`Self::without_login`]): how cchq's
    /// own commands on an app's files (lock, checkout, switch, listing, probes) run.
    pub fn shell_as(user: impl Into<String>, script: impl Into<String>) -> Self {
        Self::shell(script).become_user(user).without_login()
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// Appends several arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs in `dir` (the command fails with 127-style shell error if it does not exist).
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable for the command.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs as `user` through `sudo -iu <user>` (a login shell of that user, as operators do by
    /// hand); as `root`, through plain `sudo` (no login shell).
    #[must_use]
    pub fn become_user(mut self, user: impl Into<String>) -> Self {
        self.become_user = Some(user.into());
        self
    }

    /// Runs as `user` when `Some`, as the connecting user otherwise.
    #[must_use]
    pub fn maybe_become(mut self, user: Option<&str>) -> Self {
        self.become_user = user.map(str::to_owned);
        self
    }

    /// Makes `become` skip the user's login shell: `sudo -n -u <user> -H -- /bin/sh -c ...`.
    /// For cchq's own file work (reads, writes, probes), which needs the user's rights and home
    /// but not its profile, and is then cheaper by a login shell per command.
    #[must_use]
    pub fn without_login(mut self) -> Self {
        self.become_plain = true;
        self
    }

    /// Feeds `data` to the command's standard input.
    #[must_use]
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Fails the command with a timeout error when it runs longer than `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks the command as carrying secrets: its rendering is masked wherever it is shown.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The working directory, if set.
    pub fn working_dir(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// The environment variables set for the command.
    pub fn envs(&self) -> &[(String, String)] {
        &self.env
    }

    /// The `become` user, if any.
    pub fn become_as(&self) -> Option<&str> {
        self.become_user.as_deref()
    }

    /// The data for standard input, if any.
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The timeout, if any.
    pub fn timeout_after(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the command carries secrets.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The command without `become`: `cd DIR && env K=V argv...`, each word quoted.
    pub fn inner_shell(&self) -> String {
        let mut out = String::new();
        if let Some(dir) = &self.cwd {
            out.push_str("cd ");
            out.push_str(&quote(dir));
            out.push_str(" && ");
        }
        if !self.env.is_empty() {
            out.push_str("env");
            for (k, v) in &self.env {
                out.push(' ');
                out.push_str(&quote(&format!("{k}={v}")));
            }
            out.push(' ');
        }
        if self.argv.is_empty() {
            out.push_str("true");
        } else {
            out.push_str(&join(&self.argv));
        }
        out
    }

    /// The one string a POSIX shell runs to execute this command, `become` included.
    ///
    /// `sudo -i` hands its arguments to the target user's login shell after escaping them with
    /// backslashes, which loses newlines and leaves `$` unescaped. Where the inner command holds
    /// such bytes it is sent base64-encoded and decoded on the host, so it still arrives intact.
    pub fn to_shell(&self) -> String {
        let inner = self.inner_shell();
        let Some(user) = &self.become_user else {
            return inner;
        };
        if self.become_plain && user != "root" {
            // No login shell: sudo passes the argument through untouched, as for root.
            return format!(
                "sudo -n -u {} -H -- /bin/sh -c {}",
                quote(user),
                quote(&inner)
            );
        }
        if user == "root" {
            // No login shell for root: sudo passes the argument through untouched, and root's
            // profile (often slow: pyenv, motd scripts) is not sourced for every command.
            return format!("sudo -n -- /bin/sh -c {}", quote(&inner));
        }
        let safe = inner
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'$');
        let payload = if safe {
            quote(&inner)
        } else {
            let encoded = base64(inner.as_bytes());
            quote(&format!("eval \"$(echo {encoded} | base64 -d)\""))
        };
        format!("sudo -n -iu {} -- /bin/sh -c {payload}", quote(user))
    }
}

impl fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            return f.write_str("RemoteCommand(<secret>)");
        }
        f.debug_struct("RemoteCommand")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("env", &self.env)
            .field("become_user", &self.become_user)
            .field("stdin_len", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Display for RemoteCommand {
    /// The command as an operator would type it; secrets masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            let program = self.argv.first().map_or("true", String::as_str);
            return write!(f, "{} <arguments hidden: secret>", quote(program));
        }
        if let Some(user) = &self.become_user {
            write!(f, "[as {user}] ")?;
        }
        f.write_str(&self.inner_shell())
    }
}

/// Characters that never need quoting in a POSIX shell word.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b)
}

/// Quotes one word for a POSIX shell so that the shell yields exactly `word`.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(is_plain) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes and joins words with spaces.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(w.as_ref()));
    }
    out
}

/// Standard base64 (RFC 4648, with padding), as `base64 -d` reads it.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional, ASCII whitespace ignored), as `base64 -w0` writes
/// it; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if !clean.len().is_multiple_of(4) && clean.len() != body.len() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sh(script: &str) -> Vec<u8> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn plain_words_stay_plain() {
        assert_eq!(quote("supervisorctl"), "supervisorctl");
        assert_eq!(quote("/home/cchq/www"), "/home/cchq/www");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn rendering_includes_cwd_env_and_become() {
        let cmd = RemoteCommand::new("ls")
            .arg("-la")
            .cwd("/tmp/x y")
            .env("A", "1 2")
            .become_user("cchq");
        assert_eq!(cmd.inner_shell(), "cd '/tmp/x y' && env 'A=1 2' ls -la");
        assert_eq!(
            cmd.to_shell(),
            "sudo -n -iu cchq -- /bin/sh -c 'cd '\\''/tmp/x y'\\'' && env '\\''A=1 2'\\'' ls -la'"
        );
        assert_eq!(
            cmd.to_string(),
            "[as cchq] cd '/tmp/x y' && env 'A=1 2' ls -la"
        );
    }

    #[test]
    fn become_root_uses_plain_sudo() {
        let cmd = RemoteCommand::new("id").arg("-un").become_user("root");
        assert_eq!(cmd.to_shell(), "sudo -n -- /bin/sh -c 'id -un'");
    }

    #[test]
    fn become_with_dollar_or_newline_is_encoded() {
        let cmd = RemoteCommand::new("printf")
            .arg("%s")
            .arg("$HOME\n")
            .become_user("cchq");
        let s = cmd.to_shell();
        assert!(s.contains("base64 -d"), "{s}");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn secrets_are_masked_in_display_and_debug() {
        let cmd = RemoteCommand::new("mount")
            .arg("passphrase=hunter2")
            .secret();
        assert!(!cmd.to_string().contains("hunter2"));
        assert!(!format!("{cmd:?}").contains("hunter2"));
    }

    #[test]
    fn base64_matches_coreutils() {
        for s in ["", "a", "ab", "abc", "abcd", "hello\nworld$(x)'\""] {
            let encoded = base64(s.as_bytes());
            let decoded = sh(&format!("printf %s {encoded} | base64 -d"));
            assert_eq!(decoded, s.as_bytes());
        }
    }

    #[test]
    fn become_without_login_is_plain_sudo() {
        let cmd = RemoteCommand::shell("echo \"$HOME\"\nid")
            .become_user("cchq")
            .without_login();
        assert_eq!(
            cmd.to_shell(),
            format!(
                "sudo -n -u cchq -H -- /bin/sh -c {}",
                quote(&cmd.inner_shell())
            )
        );
        assert_eq!(cmd.become_as(), Some("cchq"));
        // With a login shell (the default) it stays `sudo -iu`.
        assert!(
            RemoteCommand::new("id")
                .become_user("cchq")
                .to_shell()
                .starts_with("sudo -n -iu cchq")
        );
    }

    #[test]
    fn base64_decodes_what_coreutils_writes() {
        for s in ["", "a", "ab", "abc", "abcd", "hello\nworld$(x)'\""] {
            let encoded =
                String::from_utf8(sh(&format!("printf %s {} | base64 -w0", quote(s)))).unwrap();
            assert_eq!(
                base64_decode(&encoded).as_deref(),
                Some(s.as_bytes()),
                "{encoded}"
            );
        }
        for bad in ["a", "ab!c", "abcde", "=abc"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(base64_decode(&base64(&data)), Some(data));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Any argument (no NUL) survives a real shell byte for byte.
        #[test]
        fn any_argument_survives_a_real_shell(args in proptest::collection::vec("[^\u{0}]{0,24}", 1..4)) {
            let cmd = RemoteCommand::new("printf").arg("%s\\0").args(args.clone());
            let out = sh(&cmd.to_shell());
            let mut expected = Vec::new();
            for a in &args { expected.extend_from_slice(a.as_bytes()); expected.push(0); }
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn nasty_ascii_survives(args in proptest::collection::vec(r#"[ -~\t\n\r]{0,16}|\$\([a-z]+\)|;|'|""#, 1..4)) {
            let cmd = RemoteCommand::new("printf").arg("%s\\0").args(args.clone());
            let out = sh(&cmd.to_shell());
            let mut expected = Vec::new();
            for a in &args { expected.extend_from_slice(a.as_bytes()); expected.push(0); }
            prop_assert_eq!(out, expected);
        }
    }
}
