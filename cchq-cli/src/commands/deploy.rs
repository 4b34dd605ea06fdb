//! `deploy`, `rollback`, `list-releases`, `clean-releases` and `lock`: releases of the code.

use std::time::Duration;

use cchq_core::deploy::{self, Component, Options, Outcome, lock as dlock, releases};
use cchq_core::events::{Event, EventSink};
use cchq_core::identity::Frontend;
use cchq_core::notify::{Notice, Notifier, Stage};
use cchq_core::{Environment, Error, ErrorKind, Value};

use super::{ExitStatus, runtime};
use crate::cli::DeployArgs;
use crate::render;

/// Renders deploy events: JSON lines on stdout with `--json`, progress lines on stderr otherwise.
/// Once stdout is closed (`deploy --json | head -1`), `--json` progress goes to stderr instead:
/// the deploy carries on, and whoever still watches sees it.
/// On a terminal (and without `--json`), a live line per phase shows its hosts meanwhile.
struct Progress {
    json: bool,
    /// Set once the switch to stderr was announced.
    fell_back: std::sync::atomic::AtomicBool,
    live: Option<crate::progress::Live>,
    /// What every `--json` event belongs to, as the JSON text appended to each event's object:
    /// `,"component":…` and `,"release":…` where known (a rollback without `--to` learns its
    /// target from its phases). No event has these keys of its own.
    context: String,
}

impl Progress {
    fn new(json: bool, component: deploy::Component, release: Option<&str>) -> Self {
        let mut context = format!(
            ",\"component\":{}",
            serde_json::Value::from(component.as_str())
        );
        if let Some(r) = release {
            context.push_str(&format!(",\"release\":{}", serde_json::Value::from(r)));
        }
        Self {
            json,
            fell_back: std::sync::atomic::AtomicBool::new(false),
            live: crate::progress::Live::start(json, None),
            context,
        }
    }
}

impl EventSink for Progress {
    fn emit(&self, e: &Event) {
        if let Some(live) = &self.live {
            live.event(e);
        }
        if self.json {
            // Every event, the lines steps print included, one JSON object per line.
            // The event's own keys in their order, then the context's (appended as text: a
            // `Value` would sort the keys, and readers match lines as printed).
            let mut line = serde_json::to_string(e).unwrap_or_default();
            if line.ends_with('}') {
                line.insert_str(line.len() - 1, &self.context);
            }
            crate::outln!("{line}");
            if !render::stdout_gone() {
                return;
            }
            if !self
                .fell_back
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                render::warning("stdout is closed: the deploy carries on, its progress on stderr");
            }
        }
        match e {
            Event::Phase {
                phase,
                ok: None,
                detail,
                ..
            } => render::info(&format!(
                "--> {phase}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            )),
            Event::Phase {
                phase,
                ok: Some(ok),
                duration_ms,
                ..
            } => {
                render::info(&format!(
                    "    {phase} {} in {} ms",
                    if *ok { "done" } else { "FAILED" },
                    duration_ms.unwrap_or(0)
                ));
            }
            Event::Finished {
                host,
                step,
                ok: false,
                ..
            } => render::info(&format!("    {host}: {step} failed")),
            Event::Output { host, step, text } => {
                for line in text
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    render::info(&format!("    {host} [{step}] {line}"));
                }
            }
            Event::Warning { message, .. } => render::warning(message),
            Event::Notification {
                stage,
                channel,
                target,
                ok: true,
            } => render::info(&format!("    notified ({stage}) by {channel}: {target}")),
            _ => {}
        }
    }
}

/// The first 12 characters of a commit (characters: a commit read from a host's records may be
/// anything, and a byte index inside a character panics).
fn short(c: &str) -> &str {
    c.char_indices().nth(12).map_or(c, |(i, _)| &c[..i])
}

fn summary(env: &Environment, o: &Outcome, json: bool) {
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({"event": "summary", "ok": true, "env": env.name, "outcome": o})
        );
        if !render::stdout_gone() {
            return;
        }
    }
    let prev = o
        .previous_commit
        .as_deref()
        .map_or_else(|| "nothing".to_owned(), |c| short(c).to_owned());
    let text = format!(
        "deployed release {} (commit {}, was {prev}) to {} host(s) of `{}` in {:.1} s{}",
        o.release,
        short(&o.commit),
        o.hosts.len(),
        env.name,
        o.duration_ms as f64 / 1000.0,
        if o.switched {
            ""
        } else {
            " (private: not switched)"
        }
    );
    if render::stdout_gone() {
        // Nobody reads stdout any more: whoever watches stderr learns how it ended.
        render::info(&text);
    } else {
        crate::outln!("{text}");
    }
}

/// What [`run_deploy`] runs.
enum Work {
    Deploy,
    Rollback(Option<String>),
    Preindex,
}

/// A runtime and a transport made once for the deploy diff and then the deploy of the same
/// hosts: a run without kept masters connects to every host once, not twice.
struct Conn {
    rt: tokio::runtime::Runtime,
    transport: cchq_core::transport::DynTransport,
    hosts: Vec<String>,
}

impl Conn {
    fn new(env: &Environment, hosts: Vec<String>) -> Result<Self, Error> {
        Ok(Self {
            transport: env.transport(Some(&hosts))?,
            rt: runtime()?,
            hosts,
        })
    }

    fn close(self) {
        let _ = self.rt.block_on(self.transport.close());
    }

    /// Closes the connections in `conn`, if any are left.
    fn close_left(conn: &mut Option<Self>) {
        if let Some(c) = conn.take() {
            c.close();
        }
    }
}

fn run_deploy(
    env: &Environment,
    opts: Options,
    json: bool,
    what: Work,
    conn: Option<Conn>,
) -> Result<ExitStatus, Error> {
    let hosts = deploy::connect_hosts(env, &opts)?;
    // The diff's connections when they are to the same hosts.
    let conn = match conn {
        Some(c) if c.hosts == hosts => c,
        mut other => {
            Conn::close_left(&mut other);
            Conn::new(env, hosts)?
        }
    };
    let Conn { rt, transport, .. } = conn;
    let name = opts.resume.clone().or_else(|| opts.name.clone());
    let to = match &what {
        Work::Rollback(to) => to.as_deref(),
        Work::Deploy | Work::Preindex => name.as_deref(),
    };
    let sink = Progress::new(json, opts.component, to);
    let res = rt.block_on(async {
        let mut signals = Signals::new()?;
        let mut forced = None;
        let r = {
            let work = async {
                match &what {
                    Work::Rollback(to) => deploy::rollback(env, transport.as_ref(), to.as_deref(), &opts, &sink).await.map(|o| (o, None)),
                    Work::Deploy => deploy::deploy(env, transport.as_ref(), &opts, &sink).await.map(|o| (o, None)),
                    Work::Preindex => {
                        deploy::preindex_views(env, transport.as_ref(), &opts, &sink).await.map(|p| (p.outcome.clone(), Some(p)))
                    }
                }
            };
            let mut work = std::pin::pin!(work);
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    sig = signals.recv() => {
                        if opts.cancel.is_cancelled() {
                            // A second signal: stop waiting for the safe point.
                            render::warning(&format!("{}: stopping at once", sig.name()));
                            forced = Some(sig);
                            break Err(Error::new(ErrorKind::Interrupted, String::new()));
                        }
                        render::warning(&format!(
                            "{}: stopping the deploy at the next safe point (programs its restart stopped are started again, the lock is released); send it again to stop at once",
                            sig.name()
                        ));
                        opts.cancel.cancel(sig.name());
                    }
                }
            }
        };
        let r = match forced {
            None => r,
            Some(sig) => {
                // The deploy's future is dropped (above): do what it could not. Start again what
                // its restart stopped, and free the lock if it is this deploy's (token checked on
                // the host), leaving it resumable: the markers hold what was done.
                deploy::abandoned(env, transport.as_ref(), &opts, &sink).await;
                if let Some(n) = &name
                    && opts.notify
                    && env.profile.notify.is_some()
                {
                    let mut notice = Notice::new(Stage::Failure, &env.name, opts.component, n, &opts.by);
                    notice.error = Some(format!("interrupted ({}, twice)", sig.name()));
                    notice.resume_command = Some(Notice::resume_command_for(&env.name, opts.component, n));
                    Notifier::from_env(env, opts.vault.as_ref()).send(&notice, &sink).await;
                }
                let n = name.clone().unwrap_or_default();
                Err(Error::new(ErrorKind::Interrupted, format!("deploy of `{n}` interrupted ({}, twice: stopped at once)", sig.name()))
                    .with_hint(format!("continue it with `deploy --resume {n}`")))
            }
        };
        let _ = transport.close().await;
        r
    });
    drop(sink);
    let signal = received_signal();
    match res {
        Ok((o, None)) => {
            summary(env, &o, json);
            Ok(ExitStatus::Success)
        }
        Ok((_, Some(p))) => {
            if json {
                crate::outln!(
                    "{}",
                    serde_json::json!({"event": "summary", "ok": true, "env": env.name, "preindex": p})
                );
            } else {
                crate::outln!(
                    "preindex_everything is running on {} in release {} (commit {}; pid {}, log {})\n\
                     check with: cchq {} django-manage --release {} preindex_everything --check   (no output: still running)",
                    p.host,
                    p.outcome.release,
                    short(&p.outcome.commit),
                    p.pid,
                    p.log,
                    env.name,
                    p.outcome.release
                );
            }
            Ok(ExitStatus::Success)
        }
        Err(e) => {
            if json {
                crate::outln!(
                    "{}",
                    serde_json::json!({"event": "summary", "ok": false, "env": env.name, "release": name, "error": e.message(), "hint": e.hint(), "signal": signal.map(Signal::name)})
                );
            }
            match signal {
                // Stopped by a signal: the shell's convention, 128 + its number.
                Some(sig) => {
                    render::error(&e);
                    Ok(ExitStatus::Code(sig.exit_code()))
                }
                None => Err(e),
            }
        }
    }
}

/// The signals that cancel a deploy. SIGKILL cannot be caught; SIGPIPE is ignored (Rust's
/// default), so a closed stdout is a write error, which the output helpers absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Int,
    Term,
    Hup,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
            Self::Hup => "SIGHUP",
        }
    }

    /// 128 + the signal's number: 130, 143, 129.
    fn exit_code(self) -> u8 {
        match self {
            Self::Int => 130,
            Self::Term => 143,
            Self::Hup => 129,
        }
    }
}

/// The first signal this process received (0: none): a deploy that received one does not start
/// the next component.
static RECEIVED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn received_signal() -> Option<Signal> {
    match RECEIVED.load(std::sync::atomic::Ordering::SeqCst) {
        1 => Some(Signal::Hup),
        2 => Some(Signal::Int),
        15 => Some(Signal::Term),
        _ => None,
    }
}

/// SIGINT, SIGTERM and SIGHUP, received as a stream (their default action, ending the process
/// at once with the lock held and programs maybe stopped, is replaced while the runtime lives).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let on = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Error::io(format!("cannot handle {name}"), e))
        };
        Ok(Self {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal.
    async fn recv(&mut self) -> Signal {
        let sig = tokio::select! {
            _ = self.int.recv() => Signal::Int,
            _ = self.term.recv() => Signal::Term,
            _ = self.hup.recv() => Signal::Hup,
        };
        let n = match sig {
            Signal::Int => 2,
            Signal::Term => 15,
            Signal::Hup => 1,
        };
        let _ = RECEIVED.compare_exchange(
            0,
            n,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        sig
    }
}

pub fn run(env: &Environment, args: &DeployArgs) -> Result<ExitStatus, Error> {
    let request = request(args)?;
    let components = request.components(env)?;
    if args.plan {
        return print_plan(env, args.json, &request, &components);
    }
    let vault = deploy_vault(env)?;
    let mut conn = None;
    if args.resume.is_none() && !args.private && components.contains(&Component::Commcare) {
        // An environment read in part is refused before anything (the deploy checks it too).
        cchq_core::validate::require_valid(env, "deploy")?;
        let hosts =
            deploy::connect_hosts(env, &request.options(Component::Commcare, vault.clone()))?;
        let c = Conn::new(env, hosts)?;
        if let Err(e) = show_diff(env, args, &c) {
            c.close();
            return Err(e);
        }
        conn = Some(c);
    }
    let what = match (&args.resume, &args.commcare_rev) {
        (Some(r), _) => format!("resume release `{r}`"),
        (None, Some(rev)) => format!("deploy `{rev}`"),
        (None, None) => format!("deploy `{}`", env.profile.default_branch),
    };
    if !render::confirm(
        &format!(
            "{what} ({}) to `{}`?",
            components
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            env.name
        ),
        args.yes || !render::interactive() && args.json,
    )
    .inspect_err(|_| Conn::close_left(&mut conn))?
    {
        Conn::close_left(&mut conn);
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    for component in components {
        let shared = if component == Component::Commcare {
            conn.take()
        } else {
            None
        };
        let st = run_deploy(
            env,
            request.options(component, vault.clone()),
            args.json,
            Work::Deploy,
            shared,
        );
        let st = st.inspect_err(|_| Conn::close_left(&mut conn))?;
        if st != ExitStatus::Success {
            return Ok(st);
        }
        if let Some(sig) = received_signal() {
            // Finished, but asked to stop: the next component is not started.
            render::warning(&format!("{}: not deploying the next component", sig.name()));
            return Ok(ExitStatus::Code(sig.exit_code()));
        }
    }
    Ok(ExitStatus::Success)
}

/// The deploy `args` ask for; the core's [`deploy::Request`] applies the defaults.
fn request(args: &DeployArgs) -> Result<deploy::Request, Error> {
    let components = args
        .components
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<Component>, Error>>()?;
    Ok(deploy::Request {
        frontend: Frontend::Cli,
        // None named: the environment's default (clap gives no way to name an empty list).
        components: (!components.is_empty()).then_some(components),
        rev: args.commcare_rev.clone(),
        resume: args.resume.clone(),
        private: args.private,
        limit: args.limit.clone(),
        keep_days: args.keep_days,
        keep: args.keep,
        skip_record: args.skip_record,
        ignore_kafka_checkpoint_warning: args.ignore_kafka_checkpoint_warning,
        update_config: args.update_config,
        force_settings: args.force,
        lock_wait: args.lock_wait.map(Duration::from_secs),
        all_at_once: args.all_at_once,
        notify: !args.no_notify,
        rollback_on_failure: if args.rollback_on_failure {
            Some(true)
        } else if args.no_rollback_on_failure {
            Some(false)
        } else {
            None
        },
    })
}

/// The deploy diff, before the confirmation: what runs now -> what goes out, the log between,
/// warnings (not the default branch, the same commit again, going back). `--json`: one
/// `deploy_diff` event.
fn show_diff(env: &Environment, args: &DeployArgs, conn: &Conn) -> Result<(), Error> {
    let opts = Options {
        component: Component::Commcare,
        limit: args.limit.clone(),
        ..Options::default()
    };
    let hosts = deploy::component_hosts(env, &opts)?;
    let Some(first) = hosts.first().cloned() else {
        return Ok(());
    };
    // Over the deploy's own connections (`conn`), left open for it.
    let transport = conn.transport.as_ref();
    let (d, removals) = conn.rt.block_on(async {
        tokio::try_join!(
            deploy::diff::deploy_diff(env, transport, &first, args.commcare_rev.as_deref()),
            deploy::diff::program_removals(env, transport, &hosts),
        )
    })?;
    if args.json {
        let removes: serde_json::Map<String, serde_json::Value> = removals
            .iter()
            .map(|(h, f)| (h.clone(), serde_json::json!(f)))
            .collect();
        crate::outln!(
            "{}",
            serde_json::json!({"event": "deploy_diff", "diff": d, "removes_program_files": removes})
        );
        return Ok(());
    }
    let from = d.current_commit.as_deref().map_or_else(
        || "nothing (first deploy)".to_owned(),
        |c| short(c).to_owned(),
    );
    render::info(&format!(
        "{}: {from} -> {} ({})",
        env.name,
        short(&d.new_commit),
        d.rev
    ));
    for l in &d.log {
        render::info(&format!("    {l}"));
    }
    if d.more > 0 {
        render::info(&format!("    ... and {} more", d.more));
    }
    if let Some(why) = &d.log_unavailable {
        render::info(&format!("    (no log: {why})"));
    }
    for w in &d.warnings {
        render::warning(w);
    }
    for (host, files) in &removals {
        render::warning(&format!(
            "{host}: this deploy removes program file(s) {} and their programs",
            files.join(", ")
        ));
    }
    Ok(())
}

/// `deploy --plan`: the steps of each component, with their hosts and commands, with the options
/// the deploy would run with (no vault: nothing is rendered that needs one).
fn print_plan(
    env: &Environment,
    json: bool,
    request: &deploy::Request,
    components: &[Component],
) -> Result<ExitStatus, Error> {
    for &component in components {
        let steps = deploy::plan(env, &request.options(component, None))?;
        if json {
            for s in &steps {
                crate::outln!("{}", serde_json::json!({"component": component, "step": s}));
            }
            continue;
        }
        crate::outln!(
            "{component} on `{}` (profile `{}`):",
            env.name,
            env.profile.name
        );
        for (i, s) in steps.iter().enumerate() {
            let hosts = match s.hosts.len() {
                0 if s.on == "controller" => "this machine".to_owned(),
                0 => "no host: does not run".to_owned(),
                1..=3 => s.hosts.join(", "),
                n => format!("{n} hosts"),
            };
            let mut flags = Vec::new();
            if s.after_switch && s.from_profile {
                flags.push("after the restart".to_owned());
            }
            if let Some(t) = s.timeout_secs {
                flags.push(format!("timeout {t} s"));
            }
            if s.on_failure == deploy::steps::OnFailure::Warn {
                flags.push("failure only warns".to_owned());
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            crate::outln!("{:>3}. {:<26} {} ({hosts}){flags}", i + 1, s.name, s.on);
            if !s.description.is_empty() {
                crate::outln!("       {}", s.description);
            }
            if let Some(w) = &s.when {
                crate::outln!("       when: {w}");
            }
            match s.command.as_deref() {
                Some("") => crate::outln!("       (nothing to run with these options)"),
                Some(c) if c.chars().count() > 160 => {
                    crate::outln!(
                        "       $ {}... (whole in --json)",
                        c.chars().take(150).collect::<String>()
                    )
                }
                Some(c) => crate::outln!("       $ {c}"),
                None => {}
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// The vault's values for a deploy: settings are rendered for any host that has none (a first
/// deploy, a new host) and with `--update-config`, so an encrypted vault is opened before anything
/// starts (`ANSIBLE_VAULT_PASSWORD`, `CCHQ_VAULT_PASSWORD_FILE`, or a prompt on a terminal); without
/// a password this stops with the vault's error.
fn deploy_vault(env: &Environment) -> Result<Option<Value>, Error> {
    match &env.vault {
        cchq_core::environment::Vault::Missing => Ok(None),
        _ => super::vault_value(env).map(Some),
    }
}

/// Whether a vault password can be had: from the environment, or by asking on a terminal.
fn vault_password_given() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os(cchq_core::vault::PASSWORD_ENV).is_some_and(|v| !v.is_empty())
        || std::env::var_os(cchq_core::vault::PASSWORD_FILE_ENV).is_some()
        || std::io::stdin().is_terminal()
}

/// The decrypted vault when the notifications need a secret from it (an SMTP password, a webhook
/// URL); a vault that cannot be opened is a warning (those notifications are then skipped).
fn notify_vault(env: &Environment, notify: bool) -> Option<Value> {
    let needs = notify
        && env
            .profile
            .notify
            .as_ref()
            .is_some_and(|n| n.needs_vault(env.fab_settings.email_enabled));
    if !needs || !env.vault.needs_opening() {
        return None;
    }
    match super::vault_value(env) {
        Ok(v) => Some(v),
        Err(e) => {
            render::warning(&format!(
                "notifications: cannot open the vault ({}); those that need it are skipped",
                e.message()
            ));
            None
        }
    }
}

pub fn rollback(
    env: &Environment,
    to: Option<&str>,
    component: Component,
    yes: bool,
    json: bool,
    notify: bool,
) -> Result<ExitStatus, Error> {
    // Before asking: the core refuses too, but the question would be for nothing.
    cchq_core::validate::require_valid(env, "rollback")?;
    let target = to.map_or_else(
        || "the previous complete release".to_owned(),
        |t| format!("release `{t}`"),
    );
    if !render::confirm(
        &format!(
            "Roll `{}` ({component}) back to {target}? Migrations are not reversed.",
            env.name
        ),
        yes,
    )? {
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    // A rollback renders settings only for a host that has none (it then stops without the vault):
    // the vault is opened when a password can be had.
    let vault = match &env.vault {
        cchq_core::environment::Vault::Encrypted(_) if vault_password_given() => deploy_vault(env)?,
        cchq_core::environment::Vault::Aws(_) => match deploy_vault(env) {
            Ok(v) => v,
            Err(e) => {
                render::warning(&format!(
                    "cannot fetch the secrets ({}): a host without settings stops the rollback",
                    e.message()
                ));
                None
            }
        },
        _ => env.vault.plain().or_else(|| notify_vault(env, notify)),
    };
    let opts = Options {
        component,
        by: Frontend::Cli.operator(),
        vault,
        notify,
        ..Options::default()
    };
    run_deploy(env, opts, json, Work::Rollback(to.map(str::to_owned)), None)
}

/// `preindex-views`: a private release of `rev` on django_manage with `preindex_everything`
/// started in the background.
pub fn preindex_views(
    env: &Environment,
    rev: Option<&str>,
    yes: bool,
    json: bool,
) -> Result<ExitStatus, Error> {
    let what = rev.unwrap_or(&env.profile.default_branch);
    if !render::confirm(
        &format!(
            "Build `{what}` on django_manage and start preindex_everything there (`{}`)?",
            env.name
        ),
        yes || json,
    )? {
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    let vault = deploy_vault(env)?;
    let opts = Options {
        rev: rev.map(str::to_owned),
        name: Some(deploy::layout::release_name_now()),
        private: true,
        by: Frontend::Cli.operator(),
        vault,
        ..Options::default()
    };
    run_deploy(env, opts, json, Work::Preindex, None)
}

pub fn list_releases(
    env: &Environment,
    limit: Option<&str>,
    component: Component,
    json: bool,
) -> Result<ExitStatus, Error> {
    let opts = Options {
        component,
        ..Options::default()
    };
    let mut hosts = deploy::component_hosts(env, &opts)?;
    if let Some(l) = limit {
        let sel = super::select(env, l)?;
        hosts.retain(|h| sel.contains(h));
    }
    let transport = env.transport(Some(&hosts))?;
    let rels = runtime()?.block_on(async {
        let r = releases::list(env, transport.as_ref(), &hosts, component).await;
        let _ = transport.close().await;
        r
    })?;
    if json {
        for r in &rels {
            crate::outln!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return Ok(ExitStatus::Success);
    }
    let mut rows = vec![vec![
        "HOST".to_owned(),
        "RELEASE".to_owned(),
        "COMMIT".to_owned(),
        "STATE".to_owned(),
        "KEEP UNTIL".to_owned(),
    ]];
    for r in &rels {
        rows.push(vec![
            r.host.clone(),
            r.name.clone(),
            r.commit.chars().take(12).collect(),
            r.state().to_string(),
            r.keep_until.clone().unwrap_or_default(),
        ]);
    }
    render::out(&render::table(&rows));
    Ok(ExitStatus::Success)
}

pub fn clean_releases(
    env: &Environment,
    keep: usize,
    exclude: &[String],
    component: Component,
    yes: bool,
) -> Result<ExitStatus, Error> {
    let opts = Options {
        component,
        ..Options::default()
    };
    let hosts = deploy::component_hosts(env, &opts)?;
    cchq_core::validate::require_valid(env, "clean-releases")?;
    if !render::confirm(
        &format!(
            "Delete all but the newest {keep} releases (and never current) on {} host(s) of `{}`?",
            hosts.len(),
            env.name
        ),
        yes,
    )? {
        render::info("nothing done");
        return Ok(ExitStatus::Failure);
    }
    // The component's hosts and the deploy lock's, which the clean holds.
    let transport = env.transport(Some(&deploy::connect_hosts(env, &opts)?))?;
    let removed = runtime()?.block_on(async {
        let r = releases::clean(env, transport.as_ref(), &hosts, component, keep, exclude).await;
        let _ = transport.close().await;
        r
    })?;
    if removed.is_empty() {
        crate::outln!("nothing to clean");
    }
    for (h, names) in removed {
        crate::outln!("{h}: removed {}", names.join(", "));
    }
    Ok(ExitStatus::Success)
}

/// What `lock status` says about a taken lock.
fn describe_lock(env: &Environment, s: &dlock::LockState) -> String {
    let mut out = format!("`{}` is locked by {}", env.name, s.who());
    if let Some(h) = &s.holder {
        let here = if h.on_this_controller() {
            " (this machine)"
        } else {
            ""
        };
        if !h.controller.is_empty() {
            out.push_str(&format!(
                "\n  holder:    process {} on {}{here}",
                h.pid, h.controller
            ));
        }
    }
    match s.holder.as_ref().map(|h| h.heartbeat_secs) {
        None => out.push_str(&format!(
            "\n  age:       {} s (of the lock directory, which has no holder record); stale after {} s",
            s.heartbeat_age_secs, s.stale_after_secs
        )),
        Some(every) => {
            let beat = if every == 0 { "no heartbeat: an older cchq".to_owned() } else { format!("every {every} s") };
            out.push_str(&format!(
                "\n  heartbeat: {} s ago ({beat}); stale after {} s without one",
                s.heartbeat_age_secs, s.stale_after_secs
            ));
        }
    }
    match s.stale_in_secs() {
        0 => out.push_str(" (already)"),
        n => out.push_str(&format!(" (in {n} s)")),
    }
    let state = if s.liveness.is_gone() {
        "gone"
    } else {
        "running"
    };
    out.push_str(&format!("\n  holder is: {state}: {}", s.liveness.why()));
    out
}

pub fn lock(
    env: &Environment,
    action: &str,
    timeout: u64,
    yes: bool,
    force: bool,
) -> Result<ExitStatus, Error> {
    let h = dlock::host(env)?;
    let transport = env.transport(Some(std::slice::from_ref(&h)))?;
    let rt = runtime()?;
    rt.block_on(async {
        let r = async {
            if action == "status" {
                match dlock::status(env, transport.as_ref()).await? {
                    None => crate::outln!("`{}` is not locked", env.name),
                    Some(s) => crate::outln!("{}", describe_lock(env, &s)),
                }
                return Ok(ExitStatus::Success);
            }
            if action == "wait" {
                match dlock::wait_free(env, transport.as_ref(), Duration::from_secs(timeout)).await? {
                    None => crate::outln!("`{}` is not locked", env.name),
                    Some(s) => crate::outln!(
                        "`{}` is locked by {}, which is gone ({}): a deploy takes it over",
                        env.name,
                        s.who(),
                        s.liveness.why()
                    ),
                }
                return Ok(ExitStatus::Success);
            }
            let mut confirm = |s: &dlock::LockState| {
                let holder = s.who();
                let question = if s.liveness.is_gone() {
                    format!("Release the deploy lock held by {holder} ({})?", s.liveness.why())
                } else {
                    format!(
                        "Release the deploy lock held by {holder}, which may still be running ({})? Only do this when that deploy is dead.",
                        s.liveness.why()
                    )
                };
                render::confirm(&question, yes)
            };
            match dlock::release_by_hand(env, transport.as_ref(), force, &mut confirm).await? {
                dlock::HandReleased::NotLocked => crate::outln!("`{}` is not locked; nothing to release", env.name),
                dlock::HandReleased::Declined(_) => {
                    render::info("nothing done");
                    return Ok(ExitStatus::Failure);
                }
                dlock::HandReleased::Released(s) => crate::outln!("released the lock of `{}` (was held by {})", env.name, s.who()),
            }
            Ok(ExitStatus::Success)
        }
        .await;
        let _ = transport.close().await;
        r
    })
}
