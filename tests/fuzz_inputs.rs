//! Fuzzing at the entry points, on stable, inside the normal `cargo test` run: environments loaded
//! from mutated copies of the fixture environments, host patterns, server specs, ssh arguments,
//! inventories and vault data from arbitrary text. Every input gives `Ok` or `Err`; none panics.
//! (The CLI's clap grammar is fuzzed in `cchq-cli/src/cli.rs`.)
//!
//! Case counts are small so that the suite stays fast on 2 cores; `CCHQ_FUZZ_CASES=5000 cargo
//! test --test fuzz_inputs` runs longer. A failure is shrunk by proptest and printed as the
//! smallest input that panics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use cchq_core::environment::{Environment, Vault};
use cchq_core::inventory::{Inventory, ServerSpec};
use cchq_core::settings::SettingsRenderer;
use cchq_core::transport::ssh::SshOptions;
use proptest::prelude::*;

/// Cases per fuzz target: `CCHQ_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("CCHQ_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    // No regression files: a failure prints its shrunk input, which goes into a unit test.
    ProptestConfig { cases: cases(default), failure_persistence: None, ..ProptestConfig::default() }
}

/// The files of an environment that the fuzzer mutates.
const FILES: &[&str] =
    &["public.yml", "inventory.ini", "app-processes.yml", "vault.yml", "meta.yml", "postgresql.yml", "proxy.yml", "fab-settings.yml"];

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
                .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
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
    for p in patterns.iter().map(String::as_str).chain(["all", "webworkers", "django_manage[0]", "webworkers[0"]) {
        if let Ok(sel) = env.inventory.select(p) {
            assert!(sel.hosts.iter().all(|h| all.contains(h)), "{p}: {:?}", sel.hosts);
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
        assert!(!t.address.starts_with('-') && !t.user.as_deref().unwrap_or("").starts_with('-'), "{t:?}");
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
        ("(webworkers|django_manage|celery|proxy|all|redis|192\\.168\\.33\\.1[0-9])", "(\\[[0-9:\\-]{0,5}\\]?)?", "([:,][!&]?[a-z]{0,8})?")
            .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
    ]
}

proptest! {
    #![proptest_config(config(160))]

    /// Environments from mutated fixture files load or fail with an error; a loaded one never
    /// makes a pattern, a server spec, the ssh settings or the settings renderer panic.
    #[test]
    fn mutated_environments_load_or_fail_cleanly(
        env in 0usize..2,
        mutations in proptest::collection::vec((0..FILES.len(), mutation()), 1..5),
        patterns in proptest::collection::vec(pattern(), 0..4),
    ) {
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
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Patterns and server specs never panic, and never select a host the inventory lacks.
    #[test]
    fn patterns_and_specs_never_panic(patterns in proptest::collection::vec(pattern(), 1..6)) {
        static ENVS: LazyLock<Vec<Environment>> = LazyLock::new(|| {
            ["development", "test"].iter().map(|e| Environment::load(&cchq_tests::fixture_root(), e).unwrap()).collect()
        });
        for env in ENVS.iter() {
            exercise_patterns(env, &patterns);
        }
    }

    /// Inventories from arbitrary text (INI and CSV) parse or fail; never panic.
    #[test]
    fn inventories_never_panic(text in prop_oneof![
        any::<String>(),
        proptest::collection::vec(proptest::sample::select(TOKENS), 0..24).prop_map(|t| t.concat()),
        proptest::collection::vec(prop_oneof![proptest::sample::select(TOKENS).prop_map(str::to_owned), "[a-z0-9=_]{1,8}".prop_map(|s| s)], 0..30)
            .prop_map(|t| t.concat()),
    ]) {
        if let Ok(inv) = Inventory::parse_ini(&text, Path::new("inventory.ini")) {
            let _ = inv.select("all");
            for h in inv.hosts().take(5) {
                let _ = inv.host_vars(&h.name);
            }
        }
        let _ = Inventory::parse_csv(&text, Path::new("inventory.csv"));
    }

    /// ssh arguments from `commcare_cloud_ssh_args` parse or fail; never panic.
    #[test]
    fn ssh_args_never_panic(args in proptest::collection::vec(prop_oneof![
        any::<String>(),
        "-[a-zA-Z0-9é]{0,3}[ =]?[a-zA-Z0-9=é ]{0,8}",
        proptest::sample::select(TOKENS).prop_map(str::to_owned),
    ], 0..5)) {
        if let Ok(opts) = SshOptions::parse_ssh_args(&args) {
            for (k, v) in opts {
                prop_assert!(!k.contains('\n') && !v.contains('\n'));
            }
        }
    }

    /// Vault data: mutated encrypted text is read (BOM check, header) or refused; never panics.
    #[test]
    fn vault_headers_never_panic(m in proptest::collection::vec(mutation(), 0..4)) {
        let text = mutated_vault(&m);
        let _ = cchq_core::vault::refuse_bom(&text);
        let _ = cchq_core::vault::header(&text);
        let _ = cchq_core::vault::is_encrypted(&text);
    }
}

proptest! {
    // Each decryption derives a key (PBKDF2, 10,000 rounds): slow in a debug build, so few cases.
    #![proptest_config(config(24))]

    /// Mutated encrypted text decrypts or fails without showing the plaintext; never panics.
    #[test]
    fn vault_decrypt_never_panics(m in proptest::collection::vec(mutation(), 0..4)) {
        if let Err(e) = cchq_core::vault::decrypt(&mutated_vault(&m), b"password") {
            prop_assert!(!e.message().contains("sekrit"));
        }
    }
}

/// An encrypted vault with `m` applied.
fn mutated_vault(m: &[Mutation]) -> String {
    static ENCRYPTED: LazyLock<String> = LazyLock::new(|| cchq_core::vault::encrypt(b"a: sekrit\n", b"password", Some("prod")).unwrap());
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
            assert!(sel.hosts.iter().all(|h| all.contains(h.as_str())), "{p}: {:?}", sel.hosts);
        }
        let joined = patterns.join(":");
        if let Ok(sel) = env.inventory.select(&joined) {
            assert!(sel.hosts.iter().all(|h| all.contains(h.as_str())), "{joined}");
        }
        if let Ok(spec) = ServerSpec::parse(p) {
            if let Ok(h) = env.inventory.resolve(&spec) {
                assert!(!h.starts_with('-'), "{p} -> {h}");
            }
            let _ = env.inventory.resolve_all(&spec);
        }
    }
}
