//! The conformance suite every [`Transport`] passes: memory, local and ssh (against the fleet).
//!
//! Call [`check`] from a test with a transport, a host it reaches and a scratch directory on that
//! host. Each check panics with a message naming what broke, so a failing run reads like a list
//! of broken promises.

use futures::future::join_all;

use super::{FileWrite, ReadOptions, Transport, WriteOptions};
use crate::command::RemoteCommand;
use crate::error::ErrorKind;

/// What the suite may assume about the host under test.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A directory the connecting user may create files in (it is created if missing).
    pub scratch_dir: String,
    /// A user to `become` (through sudo) for the `become` checks; skipped when `None`.
    pub become_user: Option<String>,
    /// What `hostname` prints on the host, when known.
    pub expected_hostname: Option<String>,
}

/// Arguments that break naive quoting.
pub const NASTY_ARGS: &[&str] = &[
    "plain",
    "",
    " leading and trailing ",
    "it's",
    "\"double\"",
    "$(touch /tmp/cchq-pwned)",
    "`id`",
    "a; rm -rf /",
    "x && y || z",
    "line1\nline2\n",
    "tab\there",
    "$HOME ${PATH} $1 $@",
    "back\\slash\\",
    "glob * ? [a-z]",
    "<>|&()",
    "unicode: ñ é 漢字 🚀",
    "\u{7f}\u{1}\u{1b}[31m",
    "-n",
    "--",
    "%s %d %%",
];

async fn printed_args(t: &dyn Transport, host: &str, cmd: RemoteCommand) -> Vec<String> {
    let out = t.exec(host, &cmd).await.expect("printf runs");
    assert!(out.success(), "printf failed on {host}: {out:?}");
    let mut parts: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.pop();
    parts
}

/// Runs every check against `host`.
///
/// # Panics
/// On the first broken promise, with a message that names it.
pub async fn check(t: &dyn Transport, host: &str, opts: &Options) {
    assert!(
        t.hosts().iter().any(|h| h == host),
        "transport does not list `{host}` among its hosts"
    );

    // Exit codes are results, not errors.
    let out = t
        .exec(host, &RemoteCommand::new("true"))
        .await
        .expect("`true` runs");
    assert_eq!(out.exit_code, Some(0), "`true` exits 0");
    let out = t
        .exec(host, &RemoteCommand::new("false"))
        .await
        .expect("`false` is a result, not an error");
    assert_eq!(out.exit_code, Some(1), "`false` exits 1");
    let out = t
        .exec(host, &RemoteCommand::shell("exit 7"))
        .await
        .expect("`exit 7` runs");
    assert_eq!(out.exit_code, Some(7), "exit code 7 comes back");
    let err = out
        .clone()
        .check(host, &RemoteCommand::shell("exit 7"))
        .expect_err("check() turns exit 7 into an error");
    assert_eq!(err.kind(), ErrorKind::CommandFailed);

    // 127 ("command not found") is a result like any other, with its output.
    let out = t
        .exec(host, &RemoteCommand::shell("echo gone >&2; exit 127"))
        .await
        .expect("exit 127 is a result, not an error");
    assert_eq!(
        (out.exit_code, out.stderr_str()),
        (Some(127), "gone\n".to_owned()),
        "exit 127 keeps its stderr"
    );

    // Streams are kept apart.
    let out = t
        .exec(
            host,
            &RemoteCommand::shell("echo out; echo err >&2; exit 3"),
        )
        .await
        .expect("script runs");
    assert_eq!(
        (out.exit_code, out.stdout_str(), out.stderr_str()),
        (Some(3), "out\n".into(), "err\n".into()),
        "stdout and stderr are separate"
    );

    // Arguments arrive byte for byte.
    let cmd = RemoteCommand::new("printf")
        .arg("%s\\0")
        .args(NASTY_ARGS.iter().copied());
    assert_eq!(
        printed_args(t, host, cmd).await,
        NASTY_ARGS,
        "arguments reach the program unchanged"
    );

    // Standard input.
    let data = b"line one\n\0binary\xff\xfe tail".to_vec();
    let out = t
        .exec(host, &RemoteCommand::new("cat").stdin(data.clone()))
        .await
        .expect("cat runs");
    assert_eq!(out.stdout, data, "stdin reaches the program byte for byte");

    // Working directory and environment.
    let out = t
        .exec(host, &RemoteCommand::new("pwd").cwd("/tmp"))
        .await
        .expect("pwd runs");
    assert_eq!(out.stdout_str().trim_end(), "/tmp", "cwd is honoured");
    let out = t
        .exec(
            host,
            &RemoteCommand::new("env").env("CCHQ_CONFORMANCE", "a b $c"),
        )
        .await
        .expect("env runs");
    assert!(
        out.stdout_str()
            .lines()
            .any(|l| l == "CCHQ_CONFORMANCE=a b $c"),
        "env is set: {out:?}"
    );

    if let Some(name) = &opts.expected_hostname {
        let out = t
            .exec(host, &RemoteCommand::new("hostname"))
            .await
            .expect("hostname runs");
        assert_eq!(out.stdout_str().trim(), name, "hostname is the host's own");
    }

    // Files: atomic write, read back, missing file, parents created.
    let dir = opts.scratch_dir.trim_end_matches('/');
    let path = format!("{dir}/sub dir/it's a file.bin");
    let contents: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    t.write_file(
        host,
        &path,
        &contents,
        &WriteOptions {
            mode: Some(0o600),
            become_user: None,
        },
    )
    .await
    .expect("write_file works");
    let back = t
        .read_file(host, &path, &ReadOptions::default())
        .await
        .expect("read_file works");
    assert_eq!(
        back.as_deref(),
        Some(&contents[..]),
        "a written file reads back byte for byte"
    );
    t.write_file(host, &path, b"second", &WriteOptions::default())
        .await
        .expect("overwrite works");
    let back = t
        .read_file(host, &path, &ReadOptions::default())
        .await
        .expect("read_file works");
    assert_eq!(
        back.as_deref(),
        Some(&b"second"[..]),
        "an overwrite replaces the file"
    );
    let missing = t
        .read_file(
            host,
            &format!("{dir}/does-not-exist"),
            &ReadOptions::default(),
        )
        .await
        .expect("reading a missing file is not an error");
    assert_eq!(missing, None, "a missing file reads as None");

    // Batches: several files written in one go (modes per file), read back in one go.
    let batch = vec![
        FileWrite {
            path: format!("{dir}/batch/a b.txt"),
            contents: b"alpha\n$(x) 'q'".to_vec(),
            mode: Some(0o600),
        },
        FileWrite {
            path: format!("{dir}/batch/deeper/empty"),
            contents: Vec::new(),
            mode: None,
        },
        FileWrite {
            path: format!("{dir}/batch/bin"),
            contents: (0..=255u8).collect(),
            mode: Some(0o640),
        },
    ];
    t.write_files(host, &batch, &WriteOptions::default())
        .await
        .expect("write_files works");
    let mut paths: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
    paths.push(format!("{dir}/batch/missing"));
    let back = t
        .read_files(host, &paths, &ReadOptions::default())
        .await
        .expect("read_files works");
    assert_eq!(back.len(), 4, "read_files answers every path");
    for (f, b) in batch.iter().zip(&back) {
        assert_eq!(
            b.as_deref(),
            Some(&f.contents[..]),
            "`{}` reads back byte for byte from a batch",
            f.path
        );
    }
    assert_eq!(back[3], None, "a missing file in a batch reads as None");
    assert!(
        t.read_files(host, &[], &ReadOptions::default())
            .await
            .expect("an empty batch")
            .is_empty()
    );
    // A batch too large for one command still works (file by file).
    let big = vec![
        FileWrite {
            path: format!("{dir}/batch/big1"),
            contents: contents.clone(),
            mode: None,
        },
        FileWrite {
            path: format!("{dir}/batch/big2"),
            contents: b"small".to_vec(),
            mode: None,
        },
    ];
    t.write_files(host, &big, &WriteOptions::default())
        .await
        .expect("a large batch is written");
    let back = t
        .read_files(
            host,
            &[big[0].path.clone(), big[1].path.clone()],
            &ReadOptions::default(),
        )
        .await
        .expect("read back");
    assert_eq!(
        back[0].as_deref(),
        Some(&contents[..]),
        "a large batch's file reads back byte for byte"
    );

    // Unknown hosts are errors, not empty results.
    let err = t
        .exec("no-such-host.invalid", &RemoteCommand::new("true"))
        .await
        .expect_err("an unknown host is an error");
    assert_eq!(err.kind(), ErrorKind::NotFound, "unknown host error kind");

    // Many commands at once on one host (channels multiplexed, bounded by MaxSessions).
    let cmds: Vec<RemoteCommand> = (0..25)
        .map(|i| RemoteCommand::new("echo").arg(i.to_string()))
        .collect();
    let outs = join_all(cmds.iter().map(|c| t.exec(host, c))).await;
    for (i, out) in outs.into_iter().enumerate() {
        let out = out.expect("concurrent exec works");
        assert_eq!(
            out.stdout_str(),
            format!("{i}\n"),
            "concurrent exec {i} gets its own output"
        );
    }

    // Become.
    if let Some(user) = &opts.become_user {
        let out = t
            .exec(
                host,
                &RemoteCommand::new("whoami").become_user(user.clone()),
            )
            .await
            .expect("become runs");
        assert_eq!(
            out.stdout_str().trim(),
            user,
            "become switches user: {out:?}"
        );
        let cmd = RemoteCommand::new("printf")
            .arg("%s\\0")
            .args(NASTY_ARGS.iter().copied())
            .become_user(user.clone());
        assert_eq!(
            printed_args(t, host, cmd).await,
            NASTY_ARGS,
            "arguments survive become unchanged"
        );
        let out = t
            .exec(
                host,
                &RemoteCommand::new("cat")
                    .stdin(data.clone())
                    .become_user(user.clone()),
            )
            .await
            .expect("cat runs");
        assert_eq!(out.stdout, data, "stdin survives become");
        // Batches as that user: written files are its own, and read back through it.
        let home = t
            .exec(
                host,
                &RemoteCommand::shell("cd && pwd").become_user(user.clone()),
            )
            .await
            .expect("home");
        let base = format!("{}/.cchq-conformance", home.stdout_str().trim());
        let batch = vec![
            FileWrite {
                path: format!("{base}/one"),
                contents: b"1 $HOME 'x'\n".to_vec(),
                mode: Some(0o600),
            },
            FileWrite {
                path: format!("{base}/two"),
                contents: data.clone(),
                mode: None,
            },
        ];
        let wo = WriteOptions {
            mode: None,
            become_user: Some(user.clone()),
        };
        t.write_files(host, &batch, &wo)
            .await
            .expect("write_files as another user works");
        let ro = ReadOptions {
            become_user: Some(user.clone()),
        };
        let back = t
            .read_files(host, &[batch[0].path.clone(), batch[1].path.clone()], &ro)
            .await
            .expect("read_files as another user");
        assert_eq!(
            back[0].as_deref(),
            Some(&batch[0].contents[..]),
            "a batch written as another user reads back"
        );
        assert_eq!(
            back[1].as_deref(),
            Some(&data[..]),
            "a batch written as another user reads back"
        );
        let owner = t
            .exec(
                host,
                &RemoteCommand::new("stat")
                    .arg("-c")
                    .arg("%U %a")
                    .arg(&batch[0].path)
                    .become_user(user.clone()),
            )
            .await;
        if let Ok(o) = owner
            && o.success()
        {
            assert_eq!(
                o.stdout_str().trim(),
                format!("{user} 600"),
                "batch files belong to the user, with their mode"
            );
        }
        let _ = t
            .exec(
                host,
                &RemoteCommand::new("rm")
                    .arg("-rf")
                    .arg(&base)
                    .become_user(user.clone()),
            )
            .await;
    }
}
