use super::*;
use proptest::prelude::*;

/// A file of `tests/fixtures/ansible-vault/`, read once (through the fixtures helper).
fn fixture(name: &str) -> &'static [u8] {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    static FILES: LazyLock<Mutex<HashMap<String, &'static [u8]>>> = LazyLock::new(Mutex::default);
    let mut files = FILES.lock().unwrap();
    files.entry(name.to_owned()).or_insert_with(|| {
        let bytes = std::fs::read(cchq_testsupport::fixtures::ansible_vault().join(name)).unwrap();
        Box::leak(bytes.into_boxed_slice())
    })
}

fn vault_1_1() -> &'static str {
    std::str::from_utf8(fixture("vault.yml")).unwrap()
}

fn vault_1_2() -> &'static str {
    std::str::from_utf8(fixture("vault-with-id.yml")).unwrap()
}

fn password_file() -> &'static [u8] {
    fixture("password.txt")
}

fn plain() -> &'static [u8] {
    fixture("plain.yml")
}

fn password() -> &'static [u8] {
    password_file().strip_suffix(b"\n").unwrap()
}

/// Every variable cchq reads a vault password (or its file) from is scrubbed from children.
#[test]
fn every_password_source_variable_is_scrubbed() {
    for v in [
        PASSWORD_ENV,
        PASSWORD_FILE_ENV,
        "ANSIBLE_VAULT_PASSWORD_FILE",
    ] {
        assert!(SCRUBBED_ENV.contains(&v), "{v}");
    }
    let mut cmd = std::process::Command::new("env");
    cmd.env(PASSWORD_FILE_ENV, "/x").env(PASSWORD_ENV, "y");
    scrub_env(&mut cmd);
    let removed: Vec<_> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.to_owned())
        .collect();
    assert!(
        removed.iter().any(|k| k == PASSWORD_FILE_ENV) && removed.iter().any(|k| k == PASSWORD_ENV),
        "{removed:?}"
    );
}

fn fixture_salt(text: &str) -> Vec<u8> {
    match parse(text) {
        Ok(envelope) => envelope.salt,
        Err(err) => panic!("{err}"),
    }
}

fn ansible_vault() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("ansible-vault"))
        .find(|p| is_executable(p))
}

#[test]
fn decrypts_ansible_vault_1_1_byte_for_byte() {
    assert_eq!(decrypt(vault_1_1(), password()).unwrap(), plain());
    assert_eq!(
        decrypt_str(vault_1_1(), password()).unwrap().as_bytes(),
        plain()
    );
}

#[test]
fn decrypts_ansible_vault_1_2_with_id_byte_for_byte() {
    assert_eq!(decrypt(vault_1_2(), password()).unwrap(), plain());
}

#[test]
fn reads_headers() {
    assert!(is_encrypted(vault_1_1()) && is_encrypted(vault_1_2()));
    assert!(!is_encrypted(std::str::from_utf8(plain()).unwrap()));
    assert!(!is_encrypted("$ANSIBLE_VAULT"));
    assert_eq!(
        header(vault_1_1()),
        Some(Header {
            version: "1.1".into(),
            cipher: "AES256".into(),
            vault_id: None
        })
    );
    let h = header(vault_1_2()).unwrap();
    assert_eq!(
        h,
        Header {
            version: "1.2".into(),
            cipher: "AES256".into(),
            vault_id: Some("prod".into())
        }
    );
    assert_eq!(h.to_string(), "$ANSIBLE_VAULT;1.2;AES256;prod");
    assert_eq!(header("secrets: {}"), None);
    assert_eq!(header("$ANSIBLE_VAULT;1.1"), None);
}

#[test]
fn encrypting_with_ansibles_salt_gives_ansibles_bytes() {
    let ours = encrypt_with_salt(plain(), password(), None, &fixture_salt(vault_1_1())).unwrap();
    assert_eq!(ours, vault_1_1());
    let ours = encrypt_with_salt(
        plain(),
        password(),
        Some("prod"),
        &fixture_salt(vault_1_2()),
    )
    .unwrap();
    assert_eq!(ours, vault_1_2());
}

#[test]
fn wrong_password_is_a_vault_error_without_secrets() {
    let err = decrypt(vault_1_1(), b"not-the-password").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Vault);
    assert!(err.message().contains("wrong vault password"), "{err}");
    assert!(err.hint().is_some());
    let everything = format!("{err} {:?} {}", err, err.hint().unwrap_or_default());
    assert!(!everything.contains("not-the-password"));
    assert!(!everything.contains("fixture-vault-password"));
    assert!(!everything.contains("fixture-django-secret-key"));
    assert!(!everything.contains("secrets"));
}

#[test]
fn empty_password_is_refused() {
    assert_eq!(
        decrypt(vault_1_1(), b"").unwrap_err().kind(),
        ErrorKind::Vault
    );
    assert_eq!(
        encrypt(b"x", b"", None).unwrap_err().kind(),
        ErrorKind::Vault
    );
}

#[test]
fn encrypt_output_has_the_right_shape() {
    let plaintext = vec![b'x'; 300];
    for (id, first) in [
        (None, "$ANSIBLE_VAULT;1.1;AES256"),
        (Some("default"), "$ANSIBLE_VAULT;1.1;AES256"),
        (Some(""), "$ANSIBLE_VAULT;1.1;AES256"),
        (Some("prod"), "$ANSIBLE_VAULT;1.2;AES256;prod"),
    ] {
        let out = encrypt(&plaintext, b"pw", id).unwrap();
        assert!(out.ends_with('\n') && !out.ends_with("\n\n"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], first);
        let (last, full) = lines[1..].split_last().unwrap();
        assert!(!full.is_empty());
        assert!(full.iter().all(|l| {
            l.len() == 80
                && l.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }));
        assert!((1..=80).contains(&last.len()));
        assert_eq!(decrypt(&out, b"pw").unwrap(), plaintext);
    }
    // A fresh salt every time.
    assert_ne!(
        encrypt(b"same", b"pw", None).unwrap(),
        encrypt(b"same", b"pw", None).unwrap()
    );
}

#[test]
fn bad_vault_ids_are_refused() {
    for id in ["a;b", "a\nb", " a", "a "] {
        assert_eq!(
            encrypt(b"x", b"pw", Some(id)).unwrap_err().kind(),
            ErrorKind::Vault,
            "{id:?}"
        );
    }
}

#[test]
fn ansible_vault_decrypts_our_output() {
    let Some(ansible_vault) = ansible_vault() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret pass\n").unwrap();
    for id in [None, Some("prod")] {
        let file = dir.path().join("vault.yml");
        std::fs::write(&file, encrypt(plain(), b"s3cret pass", id).unwrap()).unwrap();
        let out = Command::new(&ansible_vault)
            .arg("decrypt")
            .arg("--vault-password-file")
            .arg(&pw)
            .arg("--output")
            .arg("-")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, plain());
    }
}

#[test]
fn malformed_inputs_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("secrets: {}", "not vault-encrypted"),
        ("$ANSIBLE_VAULT;1.1\n00", "line 1"),
        ("$ANSIBLE_VAULT;1.1;AES256;id;extra\n00", "line 1"),
        ("$ANSIBLE_VAULT;2.0;AES256\n00", "version `2.0`"),
        ("$ANSIBLE_VAULT;1.1;AES\n00", "cipher `AES`"),
        ("$ANSIBLE_VAULT;1.1;AES256\n", "nothing follows"),
        ("$ANSIBLE_VAULT;1.1;AES256\n0a0\n", "odd number"),
        ("$ANSIBLE_VAULT;1.1;AES256\n0a0b\nzz\n", "line 3"),
        ("\n\n$ANSIBLE_VAULT;1.1;AES256\n0a0b\nzz\n", "line 5"),
        ("$ANSIBLE_VAULT;1.1;AES256\n61620a6364\n", "three lines"),
        ("$ANSIBLE_VAULT;1.1;AES256\n7a7a0a61620a6364\n", "salt"),
        (
            "$ANSIBLE_VAULT;1.1;AES256\n61620a61620a6364\n",
            "HMAC is 1 bytes",
        ),
    ];
    for (text, expected) in cases {
        let err = decrypt(text, b"pw").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Vault, "{text:?}");
        assert!(err.message().contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn truncated_vaults_are_errors() {
    let full = vault_1_1().trim_end();
    for cut in [
        1,
        2,
        3,
        33,
        80,
        81,
        161,
        500,
        full.len() - 26,
        full.len() - 30,
    ] {
        let text = &full[..full.len() - cut];
        let err = decrypt(text, password()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Vault, "cut {cut}: {err}");
    }
    // Losing only the trailing newline or gaining CRLF line ends is harmless.
    assert_eq!(decrypt(full, password()).unwrap(), plain());
    assert_eq!(
        decrypt(&vault_1_2().replace('\n', "\r\n"), password()).unwrap(),
        plain()
    );
}

#[test]
fn indented_yaml_block_values_decrypt() {
    let indented: String = vault_1_1().lines().map(|l| format!("    {l}\n")).collect();
    assert_eq!(decrypt(&indented, password()).unwrap(), plain());
}

#[test]
fn password_sources_are_tried_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "x").unwrap();
    assert_eq!(
        PasswordSource::detect_with(Some("pw".into()), Some(&file)),
        PasswordSource::Env
    );
    assert_eq!(
        PasswordSource::detect_with(Some("".into()), Some(&file)),
        PasswordSource::File(file.clone())
    );
    assert_eq!(
        PasswordSource::detect_with(None, Some(&file)),
        PasswordSource::File(file.clone())
    );
    assert_eq!(
        PasswordSource::detect_with(None, None),
        PasswordSource::Prompt
    );
    assert_eq!(PasswordSource::Prompt.read().unwrap(), None);
    assert!(
        PasswordSource::File(file.clone())
            .to_string()
            .contains("vault password file")
    );
}

#[test]
fn password_files_are_stripped_like_ansible() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, password_file()).unwrap();
    assert_eq!(
        PasswordSource::File(file.clone())
            .read()
            .unwrap()
            .as_ref()
            .map(|p| p.as_slice()),
        Some(password())
    );
    std::fs::write(&file, " \tpass word\r\n\n").unwrap();
    assert_eq!(read_password_file(&file).unwrap().as_slice(), b"pass word");
    std::fs::write(&file, " \n").unwrap();
    assert_eq!(
        read_password_file(&file).unwrap_err().kind(),
        ErrorKind::Vault
    );
    assert_eq!(
        read_password_file(&dir.path().join("missing"))
            .unwrap_err()
            .kind(),
        ErrorKind::Io
    );
}

/// Runs `f`, retrying while the freshly written script is "busy" (another test thread forked while it was open).
#[cfg(unix)]
fn retry_busy<T>(f: impl Fn() -> Result<T>) -> Result<T> {
    for _ in 0..20 {
        match f() {
            Err(err) if err.message().contains("busy") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => return other,
        }
    }
    f()
}

#[cfg(unix)]
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
#[test]
fn executable_password_files_are_run() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pw.sh");
    write_script(&script, "printf ' from script \\n\\n'");
    let source = PasswordSource::detect_with(None, Some(&script));
    assert_eq!(source, PasswordSource::Script(script.clone()));
    assert_eq!(
        retry_busy(|| source.read())
            .unwrap()
            .as_ref()
            .map(|p| p.as_slice()),
        Some(&b" from script "[..])
    );

    let failing = dir.path().join("fail.sh");
    write_script(&failing, "exit 3");
    let err = retry_busy(|| run_password_script(&failing)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Vault);
    assert!(err.message().contains("failed"), "{err}");

    let silent = dir.path().join("silent.sh");
    write_script(&silent, "echo");
    assert_eq!(
        retry_busy(|| run_password_script(&silent))
            .unwrap_err()
            .kind(),
        ErrorKind::Vault
    );
}

#[test]
fn secrets_do_not_print() {
    let s = Secret::new("hunter22");
    assert_eq!(format!("{s} {s:?}"), "<secret> <secret>");
    assert_eq!(s.expose(), "hunter22");
    let parsed: Secret = yaml_serde::from_str("hunter22").unwrap();
    assert_eq!(parsed, s);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_then_decrypt_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        password in proptest::collection::vec(any::<u8>(), 1..40),
        id in proptest::option::of("[a-z0-9_-]{1,12}"),
    ) {
        let text = encrypt(&plaintext, &password, id.as_deref()).unwrap();
        prop_assert!(is_encrypted(&text));
        prop_assert_eq!(header(&text).unwrap().vault_id, id.filter(|id| id != DEFAULT_VAULT_ID));
        prop_assert_eq!(decrypt(&text, &password).unwrap(), plaintext);
    }

    /// Well-formed hex bodies whose content is random reach the HMAC check and fail there, or earlier.
    #[test]
    fn random_hex_bodies_are_errors(
        salt in proptest::collection::vec(any::<u8>(), 0..40),
        hmac in proptest::collection::vec(any::<u8>(), 30..34),
        ciphertext in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let inner = format!("{}\n{}\n{}", hex::encode(salt), hex::encode(hmac), hex::encode(ciphertext));
        let text = format!("$ANSIBLE_VAULT;1.1;AES256\n{}\n", hex::encode(inner));
        prop_assert_eq!(decrypt(&text, b"pw").unwrap_err().kind(), ErrorKind::Vault);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Anything after a header is an error, never a panic.
    #[test]
    fn arbitrary_bodies_are_errors_not_panics(
        header in "\\$ANSIBLE_VAULT;(1\\.1|1\\.2|2\\.0|);(AES256|AES|)(;prod)?(;x)?",
        body in "(?s).{0,200}|[0-9a-fA-F\n]{0,200}",
    ) {
        let text = format!("{header}\n{body}");
        prop_assert_eq!(decrypt(&text, b"pw").unwrap_err().kind(), ErrorKind::Vault);
        let _ = super::header(&text);
    }
}

proptest! {
    // Most corruptions reach the HMAC check, so each case costs a PBKDF2.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Corrupting one character of a real vault is an error, never a panic and never wrong
    /// plaintext (a case change inside the inner hex is harmless: it decodes the same).
    #[test]
    fn corrupted_fixture_is_an_error(pos in 0usize..1400, c in "[\\x00-\\x7f]") {
        let mut bytes = vault_1_1().as_bytes().to_vec();
        let pos = pos % bytes.len();
        let c = c.as_bytes()[0];
        prop_assume!(bytes[pos] != c && !(bytes[pos].is_ascii_hexdigit() && bytes[pos].eq_ignore_ascii_case(&c)));
        // Whitespace for the final newline changes nothing.
        prop_assume!(!(pos == bytes.len() - 1 && c.is_ascii_whitespace()));
        bytes[pos] = c;
        let text = String::from_utf8(bytes).unwrap();
        if let Ok(plain) = decrypt(&text, password()) {
            prop_assert_eq!(plain, self::plain());
        }
    }
}
