//! What an operator sees on the terminal: colours and `--color`, results streamed as hosts
//! finish, live progress only on a terminal, tables that fit, completions. Hosts are this
//! machine (`ansible_connection=local`): no fleet needed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cchq_tests::fixture_root;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `cchq` with a clean colour environment (none of the caller's NO_COLOR, CLICOLOR...).
fn cchq_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
    c.arg("--environments").arg(root).args(args);
    for v in [
        "CCHQ_ENVIRONMENTS",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "CCHQ_PROGRESS",
        "COLUMNS",
        "COMPLETE",
    ] {
        c.env_remove(v);
    }
    c.env("TERM", "xterm").stdin(Stdio::null());
    c
}

fn cchq(root: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut c = cchq_cmd(root, args);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The `local` example environment as `loc` in `<tmp>/envs`, with hosts `fast1`, `slow` and
/// `fast2` (all this machine) in a group `extra`.
fn local_env(tmp: &Path) -> PathBuf {
    let root = tmp.join("envs");
    let dir = root.join("loc");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(repo_root().join("examples/environments/local")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    let inv = std::fs::read_to_string(dir.join("inventory.ini")).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        format!("{inv}\n[extra]\nfast1 ansible_connection=local\nslow ansible_connection=local\nfast2 ansible_connection=local\n"),
    )
    .unwrap();
    root
}

const ESC: &str = "\x1b[";

#[test]
fn colours_follow_color_no_color_and_clicolor_force() {
    let root = fixture_root();
    let args = ["nosuchenv", "hosts"];
    let err = |vars: &[(&str, &str)], extra: &[&str]| {
        let out = cchq(&root, &[&args[..], extra].concat(), vars);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // Not a terminal: no colour by default.
    assert!(!err(&[], &[]).contains(ESC));
    assert!(err(&[], &["--color", "always"]).contains(ESC));
    assert!(
        err(&[], &["--color=always"]).starts_with(ESC),
        "{:?}",
        err(&[], &["--color=always"])
    );
    assert!(err(&[("CLICOLOR_FORCE", "1")], &[]).contains(ESC));
    // NO_COLOR counts only when non-empty, and wins over CLICOLOR_FORCE.
    assert!(!err(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &[]).contains(ESC));
    assert!(err(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")], &[]).contains(ESC));
    // The command line wins over the environment.
    assert!(!err(&[("CLICOLOR_FORCE", "1")], &["--color", "never"]).contains(ESC));
    assert!(err(&[("NO_COLOR", "1")], &["--color", "always"]).contains(ESC));
    // clap's own usage errors follow --color too.
    let out = cchq(
        &root,
        &["development", "hosts", "--nosuchflag", "--color", "always"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(ESC), "{}", text(&out.stderr));
    let out = cchq(&root, &["development", "hosts", "--nosuchflag"], &[]);
    assert!(!text(&out.stderr).contains(ESC), "{}", text(&out.stderr));
    let out = cchq(
        &root,
        &["development", "hosts", "--color", "sometimes"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Each host's block is printed when that host finishes: the fast hosts' blocks are read while
/// the slow host still runs. `--json` stays in inventory order, at the end.
#[test]
fn run_shell_command_streams_blocks_as_hosts_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let root = local_env(tmp.path());
    let gate = tmp.path().join("gate");
    let done = tmp.path().join("slow-done");
    // The first host to take the gate is the slow one (hosts are all this machine).
    let script = format!(
        "if mkdir {g} 2>/dev/null; then sleep 3; touch {d}; echo slow; else echo fast; fi",
        g = gate.display(),
        d = done.display()
    );
    let mut child = cchq_cmd(&root, &["loc", "run-shell-command", "extra", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("==> ") && first.contains("| ok | rc=0"),
        "{first}"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "fast");
    assert!(
        !done.exists() && start.elapsed() < Duration::from_secs(3),
        "the first block came only after the slow host finished"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert_eq!(
        rest[3], "slow",
        "the slow host's block comes last: {rest:?}"
    );

    let out = cchq(
        &root,
        &["loc", "run-shell-command", "extra", "echo hi", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hosts: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["host"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(hosts, ["fast1", "slow", "fast2"]);
}

/// Live progress on a real terminal (a pty from `script`, when installed), naming the hosts
/// still running; none with TERM=dumb, `--json`, `CCHQ_PROGRESS=0`, or without a terminal.
#[test]
fn progress_only_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = local_env(tmp.path());
    let out = cchq(
        &root,
        &["loc", "run-shell-command", "extra", "sleep 0.5"],
        &[],
    );
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("hosts done"),
        "{}",
        text(&out.stderr)
    );
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the pty part: no `script` (util-linux)");
        return;
    }
    let run = |term: &str, extra: &str, vars: &[(&str, &str)]| {
        let line = format!(
            "{} --environments {} loc run-shell-command extra 'sleep 1' {extra}",
            env!("CARGO_BIN_EXE_cchq"),
            root.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .env("TERM", term)
            .stdin(Stdio::null());
        for v in [
            "NO_COLOR",
            "CLICOLOR",
            "CLICOLOR_FORCE",
            "CCHQ_PROGRESS",
            "COLUMNS",
        ] {
            c.env_remove(v);
        }
        c.envs(vars.iter().copied());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stdout));
        text(&out.stdout)
    };
    let screen = run("xterm", "", &[]);
    assert!(
        screen.contains("run-shell-command")
            && screen.contains("/3 hosts done")
            && screen.contains("slowest: "),
        "{screen}"
    );
    assert!(
        screen.contains(ESC) && screen.contains("3 ok, 0 failed"),
        "{screen}"
    );
    for (term, extra, vars) in [
        ("dumb", "", &[][..]),
        ("xterm", "--json", &[]),
        ("xterm", "", &[("CCHQ_PROGRESS", "0")]),
    ] {
        let screen = run(term, extra, vars);
        assert!(
            !screen.contains("hosts done"),
            "{term} {extra} {vars:?}: {screen}"
        );
    }
}

/// Tables fit `$COLUMNS` (or the terminal); `--json` keeps every character.
#[test]
fn tables_fit_the_width() {
    let root = fixture_root();
    let wide = cchq(&root, &["upstream-prod", "hosts"], &[]);
    assert!(wide.status.success(), "{}", text(&wide.stderr));
    let widest = text(&wide.stdout)
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap();
    let narrow = cchq(&root, &["upstream-prod", "hosts"], &[("COLUMNS", "60")]);
    let t = text(&narrow.stdout);
    assert!(
        widest > 60,
        "the fixture's table is narrow ({widest}): pick a wider one"
    );
    for l in t.lines() {
        assert!(l.chars().count() <= 60, "{l:?}");
    }
    assert!(t.contains('…'), "{t}");
}

/// What the completion engine proposes for `words` (the last one being typed), as fish asks
/// for it: one `value<TAB>help` line per candidate; values only.
fn complete(vars: &[(&str, &str)], words: &[&str]) -> Vec<String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
    c.arg("--")
        .arg("cchq")
        .args(words)
        .env("COMPLETE", "fish")
        .env_remove("CCHQ_ENVIRONMENTS")
        .envs(vars.iter().copied());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect()
}

/// The completion engine proposes environment names and the environment's hosts, groups,
/// services and `--only` names from the environments root the command line (or
/// `$CCHQ_ENVIRONMENTS`) names.
#[test]
fn completions_propose_environments_hosts_and_services() {
    let root = fixture_root();
    let r = root.to_str().unwrap();
    assert_eq!(
        complete(&[], &["--environments", r, "dev"]),
        ["development"]
    );
    assert_eq!(complete(&[("CCHQ_ENVIRONMENTS", r)], &["te"]), ["test"]);
    let envs = complete(&[], &["--environments", r, ""]);
    assert!(
        envs.iter().any(|e| e == "upstream-prod") && envs.iter().any(|e| e == "hosts"),
        "{envs:?}"
    );
    assert_eq!(
        complete(&[], &["--environments", r, "test", "hos"]),
        ["hosts"]
    );
    let hosts = complete(
        &[],
        &["--environments", r, "test", "hosts", "cloud_worker_"],
    );
    assert_eq!(hosts.len(), 7, "{hosts:?}");
    assert!(hosts.contains(&"cloud_worker_1".to_owned()), "{hosts:?}");
    // The last part of a pattern, after `:`, `:&`, `,`.
    assert_eq!(
        complete(
            &[],
            &[
                "--environments",
                r,
                "development",
                "run-shell-command",
                "celery:&webw"
            ]
        ),
        ["celery:&webworkers"]
    );
    assert_eq!(
        complete(
            &[],
            &[
                "--environments",
                r,
                "development",
                "hosts",
                "--limit",
                "redis,webw"
            ]
        ),
        ["redis,webworkers"]
    );
    assert_eq!(
        complete(
            &[],
            &["--environments", r, "development", "lookup", "root@webw"]
        ),
        ["root@webworkers"]
    );
    let words = complete(&[], &["--environments", r, "development", "service", ""]);
    for w in ["commcare", "celery", "webworker", "restart", "status"] {
        assert!(words.iter().any(|x| x == w), "{w} not in {words:?}");
    }
    let only = complete(
        &[],
        &[
            "--environments",
            r,
            "development",
            "service",
            "celery",
            "restart",
            "--only",
            "beat,backg",
        ],
    );
    assert_eq!(only, ["beat,background_queue"]);
    // An environment that does not load, or no root: no candidates, no error.
    assert!(
        complete(
            &[],
            &["--environments", "/nonexistent", "prod", "hosts", "w"]
        )
        .is_empty()
    );
}

/// `cchq completions <shell>` prints a registration script for each shell; bash's, sourced,
/// completes hosts.
#[test]
fn completion_scripts_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cchq"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out.stdout).contains("COMPLETE"),
            "{shell}: {}",
            text(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cchq"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("powershell"),
        "{}",
        text(&out.stderr)
    );
    let root = fixture_root();
    let script = format!(
        "source <({bin} completions bash) && COMP_WORDS=(cchq --environments {r} test hosts cloud_worker_3) && COMP_CWORD=5 && COMP_TYPE=9 && \
         _clap_complete_cchq cchq cloud_worker_3 hosts 2>/dev/null; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bin = env!("CARGO_BIN_EXE_cchq"),
        r = root.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_remove("COMPLETE")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "cloud_worker_3",
        "{}",
        text(&out.stderr)
    );
}

/// The `loc` environment with a release under `<tmp>/www` whose `manage.py` runs `shell` from
/// its standard input and `stream` prints a line, waits, prints another. As this user (no sudo).
fn manage_env(tmp: &Path) -> PathBuf {
    let root = local_env(tmp);
    let login = cchq_core::identity::login_name();
    let dir = root.join("loc");
    let yml = std::fs::read_to_string(dir.join("cchq.yml")).unwrap();
    std::fs::write(
        dir.join("cchq.yml"),
        format!(
            "{yml}\nwww_root: {}\napp_user: {login}\n",
            tmp.join("www").display()
        ),
    )
    .unwrap();
    let current = tmp.join("www/local/releases/r1");
    std::fs::create_dir_all(current.join("python_env/bin")).unwrap();
    std::os::unix::fs::symlink(&current, tmp.join("www/local/current")).unwrap();
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3");
    std::fs::write(
        current.join("python_env/bin/python"),
        format!("#!/bin/sh\nexec {python} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        current.join("python_env/bin/python"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        current.join("manage.py"),
        "import sys, time\n\
         if sys.argv[1] == 'shell':\n    exec(sys.stdin.read())\n\
         elif sys.argv[1] == 'stream':\n    print('first', flush=True)\n    time.sleep(3)\n    print('second', flush=True)\n",
    )
    .unwrap();
    root
}

/// `echo 'print(1+1)' | cchq ENV django-manage shell` prints 2: piped input reaches the command;
/// without a terminal its output streams (the first line arrives while it still runs).
#[test]
fn django_manage_forwards_piped_stdin_and_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let root = manage_env(tmp.path());
    let mut child = cchq_cmd(&root, &["loc", "django-manage", "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"print(1+1)\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n", "{}", text(&out.stderr));

    let mut child = cchq_cmd(&root, &["loc", "django-manage", "-q", "stream"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "the first line came only at the end"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
}
