//! Fuzzing at the entry points, on stable, inside the normal `cargo test` run: environments loaded
//! from mutated copies of the fixture environments, host patterns, server specs, ssh arguments,
//! inventories and vault data from arbitrary text. Every input gives `Ok` or `Err`; none panics.
//! (The CLI's clap grammar is fuzzed in `cchq-cli/src/cli.rs`.)
//!
//! Case counts are small so that the suite stays fast on 2 cores; `CCHQ_FUZZ_CASES=5000 cargo
//! test --test fuzz_inputs` runs more cases, and `CCHQ_FUZZ_SECS=300` runs every target for five
//! minutes (batches of new random cases until the time is up; see `cchq_tests::fuzz_batches`).
//! A failure is shrunk by proptest and printed as the smallest input that panics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use cchq_core::environment::{Environment, Vault};
use cchq_core::inventory::{Inventory, ServerSpec};
use cchq_core::settings::SettingsRenderer;
use cchq_core::transport::ssh::SshOptions;
use proptest::prelude::*;

/// Runs a fuzz target, `default` cases (`CCHQ_FUZZ_CASES`), or batches of them for
/// `CCHQ_FUZZ_SECS` seconds ([`cchq_tests::fuzz_batches`]).
fn fuzz(default: u32, mut target: impl FnMut(ProptestConfig)) {
    // No regression files: a failure prints its shrunk input, which goes into a unit test.
    cchq_tests::fuzz_batches(default, |cases| {
        target(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        })
    });
}

/// The files of an environment that the fuzzer mutates.
const FILES: &[&str] = &[
    "public.yml",
    "inventory.ini",
    "app-processes.yml",
    "vault.yml",
    "meta.yml",
    "postgresql.yml",
    "proxy.yml",
    "fab-settings.yml",
];

/// An environment's name and its files' names and bytes.
type Fixture = (String, Vec<(String, Vec<u8>)>);

/// The fixture environments' files, read once.
static FIXTURES: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    let root = cchq_tests::fixture_root();
    ["development", "test"]
        .iter()
        .map(|env| {
            let dir = root.join(env);
            let files = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            ((*env).to_owned(), files)
        })
        .collect()
});

/// Text that tends to reach the interesting branches of the parsers.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[0",
    "[1:]",
    ":",
    ",",
    "-",
    "-oProxyCommand=true",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\u{feff}",
    "é",
    "中",
    "\0",
    "'",
    "\"",
    "\\",
    "{{",
    "}}",
    "{{ x }}",
    "{{#each groups}}",
    "$ANSIBLE_VAULT;1.1;AES256\n",
    "ansible_port=99999",
    "ansible_port=0",
    "ansible_host=-x",
    "ansible_connection=local",
    "[web:children]\n",
    "[all:vars]\n",
    "web[0:9999999999]",
    "web[a:z]",
    "- ",
    "- [",
    "&a ",
    "*a",
    "!!binary ",
    "? ",
    "{",
    "}",
    "~",
    "null",
    "99999999999999999999999",
    "1e309",
    "localsettings:\n  ",
    "pillows:\n  ",
    "celery_processes:\n  ",
    "\n[program:x]\n",
];

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Insert `TOKENS[t]` at a relative position.
    Token(usize, f64),
    /// Insert raw bytes at a relative position.
    Bytes(Vec<u8>, f64),
    /// Flip bits of the byte at a relative position.
    Flip(u8, f64),
    /// Keep only the start (a relative length).
    Truncate(f64),
    /// Remove a run of bytes.
    Remove(f64, usize),
    /// Repeat a run of bytes a few times.
    Repeat(f64, usize, usize),
    /// Replace the whole file.
    Replace(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        6 => (0..TOKENS.len(), at.clone()).prop_map(|(t, a)| Mutation::Token(t, a)),
        2 => (proptest::collection::vec(any::<u8>(), 1..8), at.clone()).prop_map(|(b, a)| Mutation::Bytes(b, a)),
        2 => (1..=255u8, at.clone()).prop_map(|(m, a)| Mutation::Flip(m, a)),
        1 => at.clone().prop_map(Mutation::Truncate),
        1 => (at.clone(), 1..40usize).prop_map(|(a, n)| Mutation::Remove(a, n)),
        1 => (at, 1..40usize, 2..5usize).prop_map(|(a, n, k)| Mutation::Repeat(a, n, k)),
        1 => prop_oneof![
            Just(Vec::new()),
            Just(b"- a\n- b\n".to_vec()),
            Just(b"just text\n".to_vec()),
            Just(b"\xef\xbb\xbf$ANSIBLE_VAULT;1.1;AES256\n6162\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
        .prop_map(Mutation::Replace),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let pos = |a: f64, len: usize| ((a * len as f64) as usize).min(len);
    match m {
        Mutation::Token(t, a) => {
            let p = pos(*a, bytes.len());
            bytes.splice(p..p, TOKENS[*t].bytes());
        }
        Mutation::Bytes(b, a) => {
            let p = pos(*a, bytes.len());
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Flip(mask, a) => {
            if !bytes.is_empty() {
                let p = pos(*a, bytes.len() - 1);
                bytes[p] ^= mask;
            }
        }
        Mutation::Truncate(a) => bytes.truncate(pos(*a, bytes.len())),
        Mutation::Remove(a, n) => {
            let p = pos(*a, bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Repeat(a, n, k) => {
            let p = pos(*a, bytes.len());
            let end = (p + n).min(bytes.len());
            let run = bytes[p..end].to_vec();
            for _ in 1..*k {
                bytes.splice(end..end, run.iter().copied());
            }
        }
        Mutation::Replace(b) => bytes.clone_from(b),
    }
}

/// Writes environment `env` with `mutations` applied to its files into `root/<env>`.
fn write_env(root: &Path, env: usize, mutations: &[(usize, Mutation)]) -> PathBuf {
    let (name, files) = &FIXTURES[env % FIXTURES.len()];
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in files {
        let mut bytes = bytes.clone();
        for (f, m) in mutations {
            if FILES[f % FILES.len()] == file {
                apply(&mut bytes, m);
            }
        }
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

/// Everything a command does with a loaded environment before it reaches a host, on some hosts.
fn exercise(env: &Environment, patterns: &[String]) {
    let all: BTreeSet<String> = env.inventory.hosts().map(|h| h.name.clone()).collect();
    for p in patterns.iter().map(String::as_str).chain([
        "all",
        "webworkers",
        "django_manage[0]",
        "webworkers[0",
    ]) {
        if let Ok(sel) = env.inventory.select(p) {
            assert!(
                sel.hosts.iter().all(|h| all.contains(h)),
                "{p}: {:?}",
                sel.hosts
            );
        }
        if let Ok(spec) = ServerSpec::parse(p) {
            let _ = env.inventory.resolve(&spec);
            let _ = env.inventory.resolve_all(&spec);
        }
    }
    let _ = env.ssh_options();
    let vault = env.vault.plain();
    let renderer = SettingsRenderer::new(env, vault.as_ref());
    for h in all.iter().take(3) {
        let t = env.ssh_target(h);
        assert!(
            !t.address.starts_with('-') && !t.user.as_deref().unwrap_or("").starts_with('-'),
            "{t:?}"
        );
        let _ = env.is_local(h);
        let _ = renderer.render(h, Some("r1"));
    }
    let _ = cchq_core::validate::check(env);
    if let Vault::Encrypted(_) = env.vault {
        let _ = env.vault_value(|| Ok(b"password".to_vec().into()));
    }
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_0-9\\[\\]:,!&~*?. \\-]{0,24}",
        proptest::sample::select(TOKENS).prop_map(str::to_owned),
        (
            "(webworkers|django_manage|celery|proxy|all|redis|192\\.168\\.33\\.1[0-9])",
            "(\\[[0-9:\\-]{0,5}\\]?)?",
            "([:,][!&]?[a-z]{0,8})?"
        )
            .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
    ]
}

/// Environments from mutated fixture files load or fail with an error; a loaded one never
/// makes a pattern, a server spec, the ssh settings or the settings renderer panic.
#[test]
fn mutated_environments_load_or_fail_cleanly() {
    fuzz(160, |config| {
        proptest!(config, |(
            env in 0usize..2,
            mutations in proptest::collection::vec((0..FILES.len(), mutation()), 1..5),
            patterns in proptest::collection::vec(pattern(), 0..4),
        )| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = write_env(tmp.path(), env, &mutations);
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            match Environment::load(tmp.path(), &name) {
                Ok(env) => exercise(&env, &patterns),
                Err(e) => {
                    prop_assert!(!e.message().is_empty());
                    // The vault's contents never reach a message.
                    prop_assert!(!e.message().contains("sekrit") && !e.hint().unwrap_or("").contains("sekrit"));
                }
            }
        });
    });
}

/// The fixture environments, loaded once.
static ENVS: LazyLock<Vec<Environment>> = LazyLock::new(|| {
    ["development", "test"]
        .iter()
        .map(|e| Environment::load(&cchq_tests::fixture_root(), e).unwrap())
        .collect()
});

/// Patterns and server specs never panic, and never select a host the inventory lacks.
#[test]
fn patterns_and_specs_never_panic() {
    fuzz(512, |config| {
        proptest!(config, |(patterns in proptest::collection::vec(pattern(), 1..6))| {
            for env in ENVS.iter() {
                exercise_patterns(env, &patterns);
            }
        });
    });
}

/// A service name for [`services_plans_never_panic`]: one the catalog knows, `commcare`, or not.
fn service() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&[
            "commcare", "webworker", "celery", "pillowtop", "formplayer", "nginx", "postgresql", "pgbouncer", "redis",
            "couchdb2", "elasticsearch", "kafka", "zookeeper", "rabbitmq",
        ][..]).prop_map(str::to_owned),
        1 => "[a-z_]{0,10}",
        1 => any::<String>(),
    ]
}

/// An `--only` item: a program name `--only` takes (with or without `:N`), or anything.
fn only_item() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (
            proptest::sample::select(&[
                "beat", "flower", "celery", "email_queue", "background_queue", "reminder_case_update_queue", "celery_periodic",
                "ucr_queue", "AppDbChangeFeedPillow", "kafka-ucr-main", "django", "formplayer", "pillowtop", "management_command",
            ][..]),
            "(:[0-9]{1,2})?",
        ).prop_map(|(n, num)| format!("{n}{num}")),
        1 => "[a-zA-Z0-9_:,;$() -]{0,12}",
        1 => any::<String>(),
    ]
}

/// Every fixture environment, loaded once.
static ALL_ENVS: LazyLock<Vec<Environment>> = LazyLock::new(|| {
    let root = cchq_tests::fixture_root();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // `_users` holds commcare-cloud's user lists, not an environment.
    names.retain(|n| !n.starts_with('_'));
    names.sort();
    names
        .iter()
        .map(|n| Environment::load(&root, n).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect()
});

/// `service <services> <action> --only ... --limit ...` planning on every fixture environment:
/// a plan or an error (unknown service, `--only` matching nothing, a bad pattern), never a
/// panic; a plan only names hosts of the inventory (within `--limit`), each with something to do.
#[test]
fn services_plans_never_panic() {
    use cchq_core::services::{Action, Request, parse_only, plan};
    assert!(ALL_ENVS.len() >= 5, "the fixture environments load");
    fuzz(128, |config| {
        proptest!(config, |(
            services in proptest::collection::vec(service(), 0..4),
            only in proptest::collection::vec(only_item(), 0..4),
            only_text in proptest::option::of("[a-zA-Z0-9_:,;$() -]{0,20}"),
            limit in proptest::option::of(pattern()),
            action in proptest::sample::select(&[Action::Start, Action::Stop, Action::Restart, Action::Status][..]),
        )| {
            // `--only` as typed (one comma-separated argument) when it parses, else the items.
            let only = only_text.and_then(|t| parse_only(&t).ok()).unwrap_or(only);
            let req = Request { services, only, limit };
            for env in ALL_ENVS.iter() {
                match plan(env, &req, action) {
                    Ok((plans, _warnings)) => {
                        let limited = req.limit.as_deref().map(|l| env.inventory.select(l).unwrap().hosts);
                        for p in &plans {
                            prop_assert!(env.inventory.hosts().any(|h| h.name == p.host), "{}", p.host);
                            prop_assert!(limited.as_ref().is_none_or(|l| l.contains(&p.host)), "{} outside --limit", p.host);
                            prop_assert!(!p.programs.is_empty() || !p.units.is_empty(), "{p:?}");
                        }
                    }
                    Err(e) => prop_assert!(!e.message().is_empty()),
                }
            }
        });
    });
}

/// Inventories from arbitrary text (INI and CSV) parse or fail; never panic.
#[test]
fn inventories_never_panic() {
    fuzz(512, |config| {
        proptest!(config, |(text in prop_oneof![
            any::<String>(),
            proptest::collection::vec(proptest::sample::select(TOKENS), 0..24).prop_map(|t| t.concat()),
            proptest::collection::vec(prop_oneof![proptest::sample::select(TOKENS).prop_map(str::to_owned), "[a-z0-9=_]{1,8}".prop_map(|s| s)], 0..30)
                .prop_map(|t| t.concat()),
        ])| {
            if let Ok(inv) = Inventory::parse_ini(&text, Path::new("inventory.ini")) {
                let _ = inv.select("all");
                for h in inv.hosts().take(5) {
                    let _ = inv.host_vars(&h.name);
                }
            }
            let _ = Inventory::parse_csv(&text, Path::new("inventory.csv"));
        });
    });
}

/// ssh arguments from `commcare_cloud_ssh_args` parse or fail; never panic.
#[test]
fn ssh_args_never_panic() {
    fuzz(512, |config| {
        proptest!(config, |(args in proptest::collection::vec(prop_oneof![
            any::<String>(),
            "-[a-zA-Z0-9é]{0,3}[ =]?[a-zA-Z0-9=é ]{0,8}",
            proptest::sample::select(TOKENS).prop_map(str::to_owned),
        ], 0..5))| {
            if let Ok(opts) = SshOptions::parse_ssh_args(&args) {
                for (k, v) in opts {
                    prop_assert!(!k.contains('\n') && !v.contains('\n'));
                }
            }
        });
    });
}

/// Vault data: mutated encrypted text is read (BOM check, header) or refused; never panics.
#[test]
fn vault_headers_never_panic() {
    fuzz(512, |config| {
        proptest!(config, |(m in proptest::collection::vec(mutation(), 0..4))| {
            let text = mutated_vault(&m);
            let _ = cchq_core::vault::refuse_bom(&text);
            let _ = cchq_core::vault::header(&text);
            let _ = cchq_core::vault::is_encrypted(&text);
        });
    });
}

/// Mutated encrypted text decrypts or fails without showing the plaintext; never panics.
#[test]
fn vault_decrypt_never_panics() {
    // Each decryption derives a key (PBKDF2, 10,000 rounds): slow in a debug build, so few cases.
    fuzz(24, |config| {
        proptest!(config, |(m in proptest::collection::vec(mutation(), 0..4))| {
            if let Err(e) = cchq_core::vault::decrypt(&mutated_vault(&m), b"password") {
                prop_assert!(!e.message().contains("sekrit"));
            }
        });
    });
}

/// An encrypted vault with `m` applied.
fn mutated_vault(m: &[Mutation]) -> String {
    static ENCRYPTED: LazyLock<String> = LazyLock::new(|| {
        cchq_core::vault::encrypt(b"a: sekrit\n", b"password", Some("prod")).unwrap()
    });
    let mut bytes = ENCRYPTED.as_bytes().to_vec();
    for x in m {
        apply(&mut bytes, x);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn exercise_patterns(env: &Environment, patterns: &[String]) {
    let all: BTreeSet<&str> = env.inventory.hosts().map(|h| h.name.as_str()).collect();
    for p in patterns {
        if let Ok(sel) = env.inventory.select(p) {
            assert!(
                sel.hosts.iter().all(|h| all.contains(h.as_str())),
                "{p}: {:?}",
                sel.hosts
            );
        }
        let joined = patterns.join(":");
        if let Ok(sel) = env.inventory.select(&joined) {
            assert!(
                sel.hosts.iter().all(|h| all.contains(h.as_str())),
                "{joined}"
            );
        }
        if let Ok(spec) = ServerSpec::parse(p) {
            if let Ok(h) = env.inventory.resolve(&spec) {
                assert!(!h.starts_with('-'), "{p} -> {h}");
            }
            let _ = env.inventory.resolve_all(&spec);
        }
    }
}
