//! The deploy lock on the local transport (real `sh`, `mkdir`, `flock` and files in a temporary
//! www root; "other holders" are other processes, or records of other controllers), and its
//! commands on the memory transport.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::*;
use crate::deploy::tests::local_env;
use crate::events::NullSink;
use crate::transport::Output;
use crate::transport::memory::MemoryTransport;

fn dir(env: &Environment) -> PathBuf {
    PathBuf::from(lock_dir(env))
}

fn holder(release: &str, token: &Token) -> Holder {
    Holder::new(
        crate::identity::operator(),
        release,
        "deploy commcare",
        token,
        HEARTBEAT_INTERVAL,
    )
}

/// Writes a holder record as another deploy would have, its heartbeat `age` seconds old.
fn plant(env: &Environment, h: &Holder, age: u64) {
    let d = dir(env);
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("holder.json");
    std::fs::write(&f, serde_json::to_string(h).unwrap()).unwrap();
    set_age(&f, age);
}

fn set_age(path: &Path, age: u64) {
    let at = crate::clock::now() - age;
    let o = Command::new("touch")
        .arg("-d")
        .arg(format!("@{at}"))
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Another deploy process on this machine (a `sleep`), killed and reaped on drop.
struct OtherProcess(Child);

impl OtherProcess {
    fn start() -> Self {
        Self(Command::new("sleep").arg("300").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn token_on_host(env: &Environment) -> Option<String> {
    let text = std::fs::read_to_string(dir(env).join("holder.json")).ok()?;
    serde_json::from_str::<Holder>(&text).ok().map(|h| h.token)
}

/// A deploy still running on this machine (its process alive) keeps its lock against a resume of
/// its own release; once its process is dead, the resume takes it over; the first deploy's
/// release (its token) then leaves the new holder's lock alone.
#[tokio::test]
async fn a_running_holder_keeps_its_lock_against_a_resume_and_its_unlock_spares_the_taker() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    let mut a = OtherProcess::start();
    let a_token = Token::new();
    let mut a_holder = holder("r1", &a_token);
    a_holder.pid = a.pid();
    plant(&env, &a_holder, 0);

    // B resumes r1 while A runs: refused, even when waiting a little.
    let b_token = Token::new();
    let err = acquire(&env, &t, &holder("r1", &b_token), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld, "{err}");
    assert!(
        err.message()
            .contains(&format!("process {} runs on this machine", a.pid())),
        "{err}"
    );
    let start = Instant::now();
    let err = acquire(
        &env,
        &t,
        &holder("r1", &b_token),
        Some(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld);
    assert!(start.elapsed() >= Duration::from_secs(2), "it waited");
    assert_eq!(
        token_on_host(&env).as_deref(),
        Some(a_token.as_str()),
        "A still holds it"
    );

    // A dies: B takes over.
    a.kill();
    let got = acquire(&env, &t, &holder("r1", &b_token), None)
        .await
        .unwrap();
    let prev = got.taken_over.as_ref().expect("a takeover");
    assert!(
        prev.liveness.why().contains("is dead"),
        "{:?}",
        prev.liveness
    );
    assert_eq!(prev.holder.as_ref().unwrap().token, a_token.as_str());
    assert_eq!(token_on_host(&env).as_deref(), Some(b_token.as_str()));

    // A's unlock (say, its Ctrl-C handler, late) does not remove B's lock.
    match release(&env, &t, &a_token).await.unwrap() {
        Released::NotOurs(state) => {
            assert_eq!((*state).unwrap().holder.unwrap().token, b_token.as_str())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        token_on_host(&env).as_deref(),
        Some(b_token.as_str()),
        "B keeps it"
    );
    // A third deploy is refused: B (this process, running) holds it.
    let err = acquire(&env, &t, &holder("r2", &Token::new()), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld, "{err}");
    assert_eq!(
        release(&env, &t, &b_token).await.unwrap(),
        Released::Released
    );
    assert!(!dir(&env).exists());
    assert_eq!(
        release(&env, &t, &b_token).await.unwrap(),
        Released::NotLocked
    );
}

/// The whole deploy: a `--resume` of the release a running deploy holds is refused before
/// anything is done, and the lock stays the running deploy's.
#[tokio::test]
async fn deploy_resume_does_not_take_the_lock_of_a_running_deploy() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    let a = OtherProcess::start();
    let a_token = Token::new();
    let mut a_holder = holder("2026-01-01_00.00.00", &a_token);
    a_holder.pid = a.pid();
    plant(&env, &a_holder, 0);
    let opts = crate::deploy::Options {
        resume: Some("2026-01-01_00.00.00".into()),
        notify: false,
        ..Default::default()
    };
    let err = crate::deploy::deploy(&env, &t, &opts, &NullSink)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld, "{err}");
    assert!(
        err.hint().unwrap().contains("lock release --force"),
        "{err:?}"
    );
    assert_eq!(token_on_host(&env).as_deref(), Some(a_token.as_str()));
}

/// A lock directory without a holder record (a kill between `mkdir` and the write) is a lock
/// with an unknown holder: waited on, reported as such, and taken over once the directory is
/// older than the heartbeat expiry.
#[tokio::test]
async fn a_lock_without_holder_record_is_waited_on_reported_and_taken_over_once_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    std::fs::create_dir_all(dir(&env)).unwrap();
    let token = Token::new();
    let start = Instant::now();
    let err = acquire(&env, &t, &holder("r", &token), Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_secs(2), "it waited");
    assert_eq!(err.kind(), ErrorKind::LockHeld, "{err}");
    assert!(
        err.message().contains("unknown holder") && err.message().contains("no holder record"),
        "{err}"
    );
    let s = status(&env, &t).await.unwrap().expect("locked");
    assert!(s.holder.is_none() && !s.liveness.is_gone(), "{s:?}");
    assert_eq!(
        s.stale_after_secs,
        HEARTBEAT_INTERVAL.as_secs() * STALE_AFTER_BEATS
    );

    set_age(&dir(&env), s.stale_after_secs + 5);
    let s = status(&env, &t).await.unwrap().unwrap();
    assert!(s.liveness.is_gone() && s.stale_in_secs() == 0, "{s:?}");
    let got = acquire(&env, &t, &holder("r", &token), None).await.unwrap();
    assert!(got.taken_over.as_ref().is_some_and(|p| p.holder.is_none()));
    assert_eq!(token_on_host(&env).as_deref(), Some(token.as_str()));
}

fn other_controller(token: &Token, heartbeat_secs: u64) -> Holder {
    Holder {
        controller: "another-controller".into(),
        machine_id: Some("0123456789abcdef".into()),
        pid: 1,
        heartbeat_secs,
        ..Holder::new(
            "alice@another-controller",
            "r0",
            "deploy commcare",
            token,
            HEARTBEAT_INTERVAL,
        )
    }
}

/// A holder on another controller is alive while its heartbeat is fresh, and taken over once it
/// is older than 3 intervals; status says so, with the ages.
#[tokio::test]
async fn a_stale_heartbeat_from_another_controller_is_taken_over_and_a_fresh_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    let theirs = Token::new();
    plant(&env, &other_controller(&theirs, 10), 5);
    let s = status(&env, &t).await.unwrap().expect("locked");
    assert_eq!(s.holder.as_ref().unwrap().by, "alice@another-controller");
    assert!((5..=7).contains(&s.heartbeat_age_secs), "{s:?}");
    assert_eq!(s.stale_after_secs, 30);
    assert!(
        !s.liveness.is_gone() && s.liveness.why().contains("heartbeat"),
        "{s:?}"
    );
    let mine = Token::new();
    let err = acquire(&env, &t, &holder("r0", &mine), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld);
    assert!(
        err.hint().unwrap().contains("without a heartbeat"),
        "{err:?}"
    );

    set_age(&dir(&env).join("holder.json"), 31);
    let s = status(&env, &t).await.unwrap().unwrap();
    assert!(s.liveness.is_gone(), "{s:?}");
    let got = acquire(&env, &t, &holder("r0", &mine), None).await.unwrap();
    assert!(
        got.taken_over
            .unwrap()
            .liveness
            .why()
            .contains("no heartbeat from `another-controller`")
    );
    assert_eq!(token_on_host(&env).as_deref(), Some(mine.as_str()));
}

/// A record from an older cchq (no token, no heartbeat) is never taken over by itself.
#[tokio::test]
async fn a_record_of_an_older_cchq_is_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    std::fs::create_dir_all(dir(&env)).unwrap();
    let f = dir(&env).join("holder.json");
    std::fs::write(
        &f,
        r#"{"by":"bob@vm","at":1,"release":"r","message":"deploy commcare"}"#,
    )
    .unwrap();
    set_age(&f, 100_000);
    let err = acquire(&env, &t, &holder("r", &Token::new()), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld);
    assert!(err.message().contains("older cchq"), "{err}");
}

/// Of several deploys that find the same gone holder at once, exactly one takes the lock over.
#[tokio::test]
async fn of_concurrent_takers_of_a_gone_lock_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    plant(&env, &other_controller(&Token::new(), 1), 60);
    let tokens: Vec<Token> = (0..6).map(|_| Token::new()).collect();
    let holders: Vec<Holder> = tokens.iter().map(|k| holder("r", k)).collect();
    let results =
        futures::future::join_all(holders.iter().map(|h| acquire(&env, &t, h, None))).await;
    let won: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(
        token_on_host(&env).as_deref(),
        Some(tokens[won[0]].as_str())
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::LockHeld);
    }
}

/// The heartbeat refreshes the holder's record while it holds the lock, and `keep_alive` ends
/// (an error) as soon as the lock is someone else's.
#[tokio::test]
async fn the_heartbeat_refreshes_the_lock_and_notices_it_was_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    let mine = Token::new();
    let _held = acquire(&env, &t, &holder("r", &mine), None).await.unwrap();
    set_age(&dir(&env).join("holder.json"), 50);
    assert!(heartbeat(&env, &t, &mine).await.unwrap());
    let s = status(&env, &t).await.unwrap().unwrap();
    assert!(s.heartbeat_age_secs <= 1, "{s:?}");
    assert!(
        !s.liveness.is_gone(),
        "this process's running deploy: {s:?}"
    );

    // Still ours: keep_alive keeps going.
    let beat = keep_alive(&env, &t, &mine, Duration::from_millis(100), "r", &NullSink);
    let r = tokio::time::timeout(Duration::from_millis(500), beat).await;
    assert!(
        r.is_err(),
        "keep_alive runs for as long as the lock is ours"
    );

    // Taken by someone else (say, released by force and taken again).
    plant(&env, &other_controller(&Token::new(), 30), 0);
    let beat = keep_alive(&env, &t, &mine, Duration::from_millis(100), "r", &NullSink);
    let err = tokio::time::timeout(Duration::from_secs(5), beat)
        .await
        .expect("keep_alive stops");
    assert_eq!(err.kind(), ErrorKind::LockHeld);
    assert!(
        err.message().contains("no longer held") && err.hint().unwrap().contains("--resume r"),
        "{err:?}"
    );
    assert!(!heartbeat(&env, &t, &mine).await.unwrap());
}

/// `release_seen` (`lock release`) removes the lock only if it is still the one that was shown.
#[tokio::test]
async fn a_release_by_hand_removes_only_the_lock_that_was_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    plant(&env, &other_controller(&Token::new(), 1), 60);
    let seen = status(&env, &t).await.unwrap().unwrap();
    // Meanwhile someone else takes it.
    let mine = Token::new();
    let _held = acquire(&env, &t, &holder("r", &mine), None).await.unwrap();
    assert!(!release_seen(&env, &t, &seen).await.unwrap());
    assert_eq!(token_on_host(&env).as_deref(), Some(mine.as_str()));
    let seen = status(&env, &t).await.unwrap().unwrap();
    assert!(release_seen(&env, &t, &seen).await.unwrap());
    assert!(status(&env, &t).await.unwrap().is_none());
}

/// A record written by this process under a token whose deploy has ended (its future dropped,
/// say by a Python `KeyboardInterrupt`) is gone; one whose deploy runs is alive.
#[test]
fn records_of_this_process_are_judged_by_their_running_deploys() {
    let token = Token::new();
    let h = holder("r", &token);
    assert!(judge(Some(&h), 0, 90).is_gone());
    let active = Active::new(token.as_str());
    assert!(!judge(Some(&h), 1000, 90).is_gone());
    drop(active);
    assert!(judge(Some(&h), 0, 90).is_gone());
}

#[test]
fn tokens_are_random_hex() {
    let (a, b) = (Token::new(), Token::new());
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 32);
    assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(
        !format!("{a:?}").contains(a.as_str()),
        "Debug does not show the whole token"
    );
}

/// On the memory transport: the release checks the token and removes the lock in one command,
/// under the host-side mutex.
#[tokio::test]
async fn release_is_one_guarded_command_that_checks_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, _) = local_env(tmp.path());
    let t = MemoryTransport::new(["web1"]);
    t.respond(
        Some("web1"),
        "echo RELEASED",
        Output::new(0, "RELEASED\n", ""),
    );
    let token = Token::new();
    assert_eq!(release(&env, &t, &token).await.unwrap(), Released::Released);
    let calls = t.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = calls[0].command.to_shell();
    assert!(c.contains("flock -w") && c.contains("rm -rf"), "{c}");
    assert!(
        c.find("flock -w") < c.find("read -r tok"),
        "the mutex is taken before the check: {c}"
    );
    // The token is checked from stdin, never in argv.
    assert!(!c.contains(token.as_str()), "{c}");
    assert_eq!(
        calls[0].command.stdin_data(),
        Some(format!("\"token\":\"{}\"\n", token.as_str()).as_bytes())
    );
}

/// The holder record (with its token) travels on the command's stdin, never in its argv (what
/// `ps` shows on either machine): taking the lock, and taking a gone one over, are still one
/// command each; on a real shell the record lands whole.
#[tokio::test]
async fn the_holder_record_travels_on_stdin_not_in_argv() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, local) = local_env(tmp.path());
    let t = MemoryTransport::new(["web1"]);
    t.respond(Some("web1"), "echo TAKEN", Output::new(0, "TAKEN\n", ""));
    let token = Token::new();
    let h = holder("r1", &token);
    let _held = acquire(&env, &t, &h, None).await.unwrap();
    let calls = t.calls();
    assert_eq!(calls.len(), 1, "one round trip: {calls:?}");
    let cmd = &calls[0].command;
    let record = serde_json::to_string(&h).unwrap();
    assert_eq!(cmd.stdin_data(), Some(record.as_bytes()));
    for word in cmd
        .argv()
        .iter()
        .chain([&cmd.to_shell(), &cmd.inner_shell()])
    {
        assert!(
            !word.contains(token.as_str()) && !word.contains("\"release\":\"r1\""),
            "the holder record in argv: {word}"
        );
    }
    // Nor do the heartbeat and the release show the token: they read it from stdin.
    t.respond(Some("web1"), "echo ALIVE", Output::new(0, "ALIVE\n", ""));
    assert!(heartbeat(&env, &t, &token).await.unwrap());
    let _ = release(&env, &t, &token).await;
    let calls = t.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls[1..] {
        assert!(
            !c.command.to_shell().contains(token.as_str()),
            "{}",
            c.command.to_shell()
        );
        assert_eq!(
            c.command.stdin_data(),
            Some(token_line(token.as_str()).as_slice())
        );
    }

    // On the local transport (real sh, dd): the record on the host is exactly what was sent.
    let _mine = acquire(&env, &local, &h, None).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir(&env).join("holder.json")).unwrap(),
        record
    );
    assert!(!dir(&env).join("holder.json.tmp").exists());
    // Taken over (a gone holder of another controller): the new record, also from stdin.
    let gone = other_controller(&Token::new(), 1);
    plant(&env, &gone, 3600);
    let taker = Token::new();
    let h2 = holder("r2", &taker);
    let taken = acquire(&env, &local, &h2, None).await.unwrap();
    assert!(taken.taken_over.is_some());
    assert_eq!(token_on_host(&env).as_deref(), Some(taker.as_str()));
    // The token read from stdin by the real shell: the holder's beats, another's does not.
    assert!(heartbeat(&env, &local, &taker).await.unwrap());
    assert!(!heartbeat(&env, &local, &token).await.unwrap());
    assert!(matches!(
        release(&env, &local, &token).await.unwrap(),
        Released::NotOurs(_)
    ));
    assert_eq!(
        release(&env, &local, &taker).await.unwrap(),
        Released::Released
    );
}

/// An unreachable lock host: the deploy's error says the lock is probably still held and how to
/// go on (resume once the host is back, or release it).
#[tokio::test]
async fn a_lock_host_lost_mid_deploy_says_the_lock_is_probably_still_held() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, _) = local_env(tmp.path());
    let t = MemoryTransport::new(["web1"]);
    t.respond(Some("web1"), "echo TAKEN", Output::new(0, "TAKEN\n", ""));
    let crash = t.clone();
    // The host crashes while the deploy, holding the lock, looks for its release (the second
    // probe: the first, before the lock, only tells whether there is anything to do).
    let probes = std::sync::atomic::AtomicUsize::new(0);
    t.respond_with(Some("web1"), move |cmd| {
        (cmd.inner_shell().contains("echo EXISTS")
            && probes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1)
            .then(|| {
                crash.set_reachable("web1", false);
                Output::new(255, "", "Connection reset by peer\n")
            })
    });
    let opts = crate::deploy::Options {
        resume: Some("r9".into()),
        notify: false,
        ..Default::default()
    };
    let err = crate::deploy::deploy(&env, &t, &opts, &NullSink)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeployFailed, "{err}");
    assert!(
        err.message().contains("could not be released")
            && err.message().contains("probably still held"),
        "{err}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("cchq t deploy --resume r9") && hint.contains("cchq t lock release"),
        "{hint}"
    );

    // And a lock command on the unreachable host says where the lock is.
    let err = status(&env, &t).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(
        err.message().contains("deploy lock of `t` on `web1`"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains(".deploy-lock"), "{err:?}");
}

/// The deploy's first probe rides on the lock's command (real shell): taken, the probe's output
/// comes back apart from the lock's; held by another, its state still parses (the probe's
/// output is not read as a part of the holder record), and the probe ran all the same.
#[tokio::test]
async fn the_first_probe_rides_on_the_lock_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    let mine = Token::new();
    let (_held, probed) =
        acquire_probing(&env, &t, &holder("r1", &mine), None, Some("echo probed-1"))
            .await
            .unwrap();
    assert_eq!(probed.as_deref().map(str::trim), Some("probed-1"));
    let other = Token::new();
    let h = holder("r2", &other);
    let d = quote(&lock_dir(&env));
    let info = serde_json::to_string(&h).unwrap();
    let take = format!(
        "if mkdir {d} 2>/dev/null; then echo TAKEN; else {}; fi; echo {PROBE_MARK}; echo probed-2",
        state_script(&d)
    );
    let (text, probed) = split_probe(&run(&env, &t, "take", &take).await.unwrap());
    assert_eq!(probed.as_deref().map(str::trim), Some("probed-2"));
    let state = parse_state(&text).expect("the lock's state parses");
    assert_eq!(
        state.holder.map(|h| h.token),
        Some(mine.as_str().to_owned()),
        "{info}"
    );
}

/// `wait_free`: a free lock answers at once; a running holder is waited on until it releases;
/// one still held after the wait is `LockHeld` naming the holder; a gone holder is reported.
#[tokio::test]
async fn wait_free_waits_for_the_holder_to_release() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, t) = local_env(tmp.path());
    assert!(wait_free(&env, &t, Duration::ZERO).await.unwrap().is_none());

    let mine = Token::new();
    let held = acquire(&env, &t, &holder("r", &mine), None).await.unwrap();
    let err = wait_free(&env, &t, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockHeld);
    assert!(err.message().contains("in progress"), "{err:?}");

    let started = Instant::now();
    let waiter = wait_free(&env, &t, Duration::from_secs(30));
    let releaser = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(release(&env, &t, &mine).await.unwrap(), Released::Released);
    };
    let (waited, ()) = tokio::join!(waiter, releaser);
    assert!(waited.unwrap().is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited for the release"
    );
    drop(held);

    // A holder that is gone (another controller, no heartbeat for long): reported, not waited on.
    plant(&env, &other_controller(&Token::new(), 1), 3600);
    let gone = wait_free(&env, &t, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the gone holder's lock");
    assert!(gone.liveness.is_gone());
}
