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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `cchq` with a clean colour environment (none of the caller's NO_COLOR, CLICOLOR...).
fn cchq_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cchq"));
    c.arg("--environments").arg(root).args(args);
    for v in ["CCHQ_ENVIRONMENTS", "NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CCHQ_PROGRESS", "COLUMNS", "COMPLETE"] {
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
    assert!(err(&[], &["--color=always"]).starts_with(ESC), "{:?}", err(&[], &["--color=always"]));
    assert!(err(&[("CLICOLOR_FORCE", "1")], &[]).contains(ESC));
    // NO_COLOR counts only when non-empty, and wins over CLICOLOR_FORCE.
    assert!(!err(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &[]).contains(ESC));
    assert!(err(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")], &[]).contains(ESC));
    // The command line wins over the environment.
    assert!(!err(&[("CLICOLOR_FORCE", "1")], &["--color", "never"]).contains(ESC));
    assert!(err(&[("NO_COLOR", "1")], &["--color", "always"]).contains(ESC));
    // clap's own usage errors follow --color too.
    let out = cchq(&root, &["development", "hosts", "--nosuchflag", "--color", "always"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(ESC), "{}", text(&out.stderr));
    let out = cchq(&root, &["development", "hosts", "--nosuchflag"], &[]);
    assert!(!text(&out.stderr).contains(ESC), "{}", text(&out.stderr));
    let out = cchq(&root, &["development", "hosts", "--color", "sometimes"], &[]);
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
    let script =
        format!("if mkdir {g} 2>/dev/null; then sleep 3; touch {d}; echo slow; else echo fast; fi", g = gate.display(), d = done.display());
    let mut child =
        cchq_cmd(&root, &["loc", "run-shell-command", "extra", &script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("==> ") && first.contains("| ok | rc=0"), "{first}");
    assert_eq!(lines.next().unwrap().unwrap(), "fast");
    assert!(!done.exists() && start.elapsed() < Duration::from_secs(3), "the first block came only after the slow host finished");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert_eq!(rest[3], "slow", "the slow host's block comes last: {rest:?}");

    let out = cchq(&root, &["loc", "run-shell-command", "extra", "echo hi", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hosts: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["host"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hosts, ["fast1", "slow", "fast2"]);
}

/// Live progress on a real terminal (a pty from `script`, when installed), naming the hosts
/// still running; none with TERM=dumb, `--json`, `CCHQ_PROGRESS=0`, or without a terminal.
#[test]
fn progress_only_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = local_env(tmp.path());
    let out = cchq(&root, &["loc", "run-shell-command", "extra", "sleep 0.5"], &[]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("hosts done"), "{}", text(&out.stderr));
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the pty part: no `script` (util-linux)");
        return;
    }
    let run = |term: &str, extra: &str, vars: &[(&str, &str)]| {
        let line =
            format!("{} --environments {} loc run-shell-command extra 'sleep 1' {extra}", env!("CARGO_BIN_EXE_cchq"), root.display());
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"]).env("TERM", term).stdin(Stdio::null());
        for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CCHQ_PROGRESS", "COLUMNS"] {
            c.env_remove(v);
        }
        c.envs(vars.iter().copied());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stdout));
        text(&out.stdout)
    };
    let screen = run("xterm", "", &[]);
    assert!(screen.contains("run-shell-command") && screen.contains("/3 hosts done") && screen.contains("slowest: "), "{screen}");
    assert!(screen.contains(ESC) && screen.contains("3 ok, 0 failed"), "{screen}");
    for (term, extra, vars) in [("dumb", "", &[][..]), ("xterm", "--json", &[]), ("xterm", "", &[("CCHQ_PROGRESS", "0")])] {
        let screen = run(term, extra, vars);
        assert!(!screen.contains("hosts done"), "{term} {extra} {vars:?}: {screen}");
    }
}

/// Tables fit `$COLUMNS` (or the terminal); `--json` keeps every character.
#[test]
fn tables_fit_the_width() {
    let root = fixture_root();
    let wide = cchq(&root, &["upstream-prod", "hosts"], &[]);
    assert!(wide.status.success(), "{}", text(&wide.stderr));
    let widest = text(&wide.stdout).lines().map(|l| l.chars().count()).max().unwrap();
    let narrow = cchq(&root, &["upstream-prod", "hosts"], &[("COLUMNS", "60")]);
    let t = text(&narrow.stdout);
    assert!(widest > 60, "the fixture's table is narrow ({widest}): pick a wider one");
    for l in t.lines() {
        assert!(l.chars().count() <= 60, "{l:?}");
    }
    assert!(t.contains('…'), "{t}");
}
