//! Shell completion: `cchq completions <shell>` prints the script that registers cchq with the
//! shell (bash, zsh, fish, elvish, powershell); at each Tab the shell runs `COMPLETE=<shell> cchq
//! -- <words>` and clap_complete's engine answers, asking the completers below for environment
//! names, host patterns (hosts and groups of the environment being typed), services, actions
//! and `--only` names. The environments root is the one the command line names
//! (`--environments`), else `$CCHQ_ENVIRONMENTS`, else `$COMMCARE_CLOUD_ENVIRONMENTS`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use cchq_core::Environment;
use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::Shells;

use super::ExitStatus;
use crate::cli::Cli;
use crate::render;

/// The variable the registration scripts set when they ask for completions.
const VAR: &str = "COMPLETE";

const HELP: &str = "\
Print the script that completes cchq's commands in a shell: subcommands and options, environment
names, host patterns (hosts and groups of the environment), services and their actions, and
--only names. It calls cchq at each Tab, so it follows the environments as they change.

Usage: cchq completions <bash|zsh|fish|elvish|powershell>

Install:
  bash:        echo 'source <(cchq completions bash)' >> ~/.bashrc
  zsh:         echo 'source <(cchq completions zsh)' >> ~/.zshrc
  fish:        echo 'cchq completions fish | source' > ~/.config/fish/completions/cchq.fish
  elvish:      echo 'eval (cchq completions elvish | slurp)' >> ~/.config/elvish/rc.elv
  powershell:  Add-Content $PROFILE 'cchq completions powershell | Out-String | Invoke-Expression'

(`COMPLETE=<shell> cchq` prints the same script.)";

/// `cchq completions <shell>`: the registration script of `shell`.
pub fn run(args: &[OsString]) -> ExitStatus {
    let shell = args.get(2).and_then(|s| s.to_str()).unwrap_or("");
    if matches!(shell, "" | "-h" | "--help") {
        crate::outln!("{HELP}");
        return if shell.is_empty() {
            ExitStatus::Usage
        } else {
            ExitStatus::Success
        };
    }
    let shells = Shells::builtins();
    let Some(completer) = shells.completer(shell) else {
        let names: Vec<&str> = shells.names().collect();
        render::error(
            &cchq_core::Error::usage(format!("unknown shell `{shell}`"))
                .with_hint(format!("use one of `{}`", names.join("`, `"))),
        );
        return ExitStatus::Usage;
    };
    let mut buf = Vec::new();
    match completer.write_registration(VAR, "cchq", "cchq", &completer_path(args), &mut buf) {
        Ok(()) => {
            render::out(&String::from_utf8_lossy(&buf));
            ExitStatus::Success
        }
        Err(e) => {
            render::error(&cchq_core::Error::io(
                "cannot write the completion script",
                e,
            ));
            ExitStatus::Error(cchq_core::ErrorKind::Io)
        }
    }
}

/// The program the script calls back: as cchq was invoked (a name found on `PATH` stays a name;
/// a relative path is made absolute).
fn completer_path(args: &[OsString]) -> String {
    let mut p = PathBuf::from(args.first().cloned().unwrap_or_else(|| "cchq".into()));
    if p.components().count() > 1
        && let Ok(cwd) = std::env::current_dir()
    {
        p = cwd.join(p);
    }
    p.to_string_lossy().into_owned()
}

/// Answers a shell's completion request (`COMPLETE=<shell> cchq -- <words>`); `false` when this
/// is no such request (a normal run).
pub fn complete_env(args: &[OsString]) -> bool {
    if std::env::var_os(VAR).is_none_or(|v| v.is_empty() || v == "0") {
        return false;
    }
    let cwd = std::env::current_dir().ok();
    match clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .bin("cchq")
        .try_complete(args.to_vec(), cwd.as_deref())
    {
        Ok(done) => done,
        Err(e) => {
            let _ = e.print();
            true
        }
    }
}

/// What the command line being completed names so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Context {
    /// `--environments DIR`.
    root: Option<PathBuf>,
    /// The environment (the first word that is not an option).
    env: Option<String>,
}

/// The context of the words being completed: those after `--` (the shell's words, the program
/// first) when there is one, else all of `args`.
fn context(args: &[OsString]) -> Context {
    let words = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => args,
    };
    let mut ctx = Context::default();
    let mut it = words
        .iter()
        .skip(1)
        .map(|w| w.to_string_lossy().into_owned());
    while let Some(w) = it.next() {
        if w == "--environments" {
            ctx.root = it.next().map(PathBuf::from);
        } else if let Some(d) = w.strip_prefix("--environments=") {
            ctx.root = Some(PathBuf::from(d));
        } else if w == "--color" {
            it.next();
        } else if !w.starts_with('-') && ctx.env.is_none() {
            ctx.env = Some(w);
        }
    }
    ctx
}

/// The environment being completed, loaded (`None` when it does not load).
fn environment() -> Option<Environment> {
    let ctx = context(&std::env::args_os().collect::<Vec<_>>());
    let root = cchq_core::environment::environments_root(ctx.root.as_deref()).ok()?;
    Environment::load(&root, ctx.env.as_deref()?).ok()
}

/// `(value, help)` pairs that start with `current`, each prefixed by `prefix`.
fn candidates(
    prefix: &str,
    current: &str,
    items: impl IntoIterator<Item = (String, &'static str)>,
) -> Vec<CompletionCandidate> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .into_iter()
        .filter(|(v, _)| v.starts_with(current) && seen.insert(v.clone()))
        .map(|(v, help)| CompletionCandidate::new(format!("{prefix}{v}")).help(Some(help.into())))
        .collect()
}

/// `current` split after its last separator among `seps`: what stays, what is being typed.
fn split_last<'a>(current: &'a str, seps: &[char]) -> (&'a str, &'a str) {
    match current.rfind(seps) {
        Some(i) => {
            let mut j = i + 1;
            // `a:&b`, `a:!b`: the operator belongs to what stays.
            while current[j..].starts_with(['&', '!']) {
                j += 1;
            }
            current.split_at(j)
        }
        None => {
            let j = current.len() - current.trim_start_matches(['&', '!', '~']).len();
            current.split_at(j)
        }
    }
}

/// Environment names under the environments root.
pub fn env_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let ctx = context(&std::env::args_os().collect::<Vec<_>>());
    let Ok(root) = cchq_core::environment::environments_root(ctx.root.as_deref()) else {
        return Vec::new();
    };
    let names = cchq_core::environment::list_environments(&root).unwrap_or_default();
    candidates("", &current, names.into_iter().map(|n| (n, "environment")))
}

/// The environment's hosts and groups.
fn hosts_and_groups(env: &Environment) -> Vec<(String, &'static str)> {
    let mut items: Vec<(String, &'static str)> = env
        .inventory
        .groups()
        .map(|g| (g.name.clone(), "group"))
        .collect();
    items.extend(env.inventory.hosts().map(|h| (h.name.clone(), "host")));
    items
}

/// A host pattern: the hosts and groups of the environment, after any `:` `,` `:&` `:!`.
pub fn patterns(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(env) = environment() else {
        return Vec::new();
    };
    let current = current.to_string_lossy();
    let (prefix, word) = split_last(&current, &[':', ',']);
    candidates(prefix, word, hosts_and_groups(&env))
}

/// A server: a host, a group (`group[N]` is typed by hand), `-`, with an optional `user@`.
pub fn servers(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(env) = environment() else {
        return Vec::new();
    };
    let current = current.to_string_lossy();
    let (prefix, word) = match current.split_once('@') {
        Some((u, w)) => (format!("{u}@"), w.to_owned()),
        None => (String::new(), current.clone().into_owned()),
    };
    let mut items = vec![("-".to_owned(), "the first django_manage host")];
    items.extend(hosts_and_groups(&env));
    candidates(&prefix, &word, items)
}

/// The service actions.
const ACTIONS: [&str; 6] = ["start", "stop", "restart", "status", "logs", "help"];

/// The environment's services (those whose hosts exist) and `commcare`.
fn service_names(env: &Environment) -> Vec<(String, &'static str)> {
    let mut items = vec![("commcare".to_owned(), "every app service")];
    for s in cchq_core::services::catalog(env) {
        items.push((
            s.name.clone(),
            if s.app { "app service" } else { "service" },
        ));
    }
    items
}

/// `service`'s words: services, then actions.
pub fn service_words(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let mut items: Vec<(String, &'static str)> =
        environment().map(|e| service_names(&e)).unwrap_or_default();
    items.extend(ACTIONS.iter().map(|a| ((*a).to_owned(), "action")));
    candidates("", &current, items)
}

/// `check-services`' services.
pub fn services(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(env) = environment() else {
        return Vec::new();
    };
    candidates("", &current.to_string_lossy(), service_names(&env))
}

/// `--only` names: celery queues, pillows, `beat`, `flower`, kinds and program names, after any `,`.
pub fn only_names(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(env) = environment() else {
        return Vec::new();
    };
    let current = current.to_string_lossy();
    let (prefix, word) = split_last(&current, &[',']);
    let mut items: Vec<(String, &'static str)> =
        vec![("beat".into(), "celery beat"), ("flower".into(), "flower")];
    let mut programs = Vec::new();
    for h in env.inventory.hosts() {
        for p in cchq_core::services::programs::programs_for_host(&env, &h.name) {
            items.extend(
                p.sub
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.to_owned(), p.kind.slug())),
            );
            items.push((p.kind.slug().to_owned(), "every program of this kind"));
            programs.push((p.name.clone(), "program"));
        }
    }
    items.extend(programs);
    candidates(prefix, word, items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_context_is_the_environment_and_root_typed() {
        let c = context(&os(&[
            "cchq",
            "--",
            "cchq",
            "--environments",
            "/e",
            "--color",
            "never",
            "prod",
            "hosts",
            "we",
        ]));
        assert_eq!(
            c,
            Context {
                root: Some("/e".into()),
                env: Some("prod".into())
            }
        );
        let c = context(&os(&["cchq", "prod", "hosts", "--environments=/x"]));
        assert_eq!(
            c,
            Context {
                root: Some("/x".into()),
                env: Some("prod".into())
            }
        );
        assert_eq!(
            context(&os(&["cchq", "--", "cchq", ""])).env.as_deref(),
            Some("")
        );
    }

    #[test]
    fn patterns_complete_their_last_part() {
        assert_eq!(split_last("web", &[':', ',']), ("", "web"));
        assert_eq!(split_last("celery:we", &[':', ',']), ("celery:", "we"));
        assert_eq!(split_last("celery:&we", &[':', ',']), ("celery:&", "we"));
        assert_eq!(split_last("a,b:!c", &[':', ',']), ("a,b:!", "c"));
        assert_eq!(split_last("!c", &[':', ',']), ("!", "c"));
        assert_eq!(split_last("q1,", &[',']), ("q1,", ""));
    }
}
