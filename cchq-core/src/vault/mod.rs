//! Ansible Vault compatible encryption: read and write `$ANSIBLE_VAULT;1.1;AES256` and
//! `$ANSIBLE_VAULT;1.2;AES256;<vault-id>` data, find the vault password, and keep secrets out of output.
//!
//! The format is Ansible's `VaultAES256` (`lib/ansible/parsing/vault/__init__.py`):
//!
//! - a header line, `$ANSIBLE_VAULT;1.1;AES256`, or `$ANSIBLE_VAULT;1.2;AES256;<vault-id>` when a vault id is set;
//! - then the body, hex-encoded and wrapped at 80 columns, with a trailing newline;
//! - the body, once hex-decoded, is three lines joined by `\n`: hex(salt), hex(HMAC), hex(ciphertext);
//! - PBKDF2-HMAC-SHA256(password, salt, 10000 rounds) gives 80 bytes: the AES-256 key, the HMAC-SHA256 key
//!   and the initial counter block of AES-256-CTR (128-bit big-endian counter);
//! - the plaintext is PKCS#7-padded to 16 bytes before encryption; the HMAC is over the raw ciphertext.
//!
//! [`encrypt`] writes exactly what `ansible-vault encrypt` writes (given the same salt), and [`decrypt`] reads
//! anything `ansible-vault` writes in formats 1.1 and 1.2. Errors never contain the password or the plaintext.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit as _, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, ErrorKind, Result};

pub mod edit;

/// A vault password: its bytes are overwritten with zeros when it is dropped.
pub type Password = Zeroizing<Vec<u8>>;

/// How every vault-encrypted text starts.
pub const HEADER_PREFIX: &str = "$ANSIBLE_VAULT;";

/// The only cipher Ansible writes and reads (format 1.0's `AES` is long gone).
pub const CIPHER: &str = "AES256";

/// The environment variable holding the vault password (as commcare-cloud reads it).
pub const PASSWORD_ENV: &str = "ANSIBLE_VAULT_PASSWORD";

/// Environment variables that hold a vault password or say where to find one: cchq reads them
/// ([`PASSWORD_ENV`], [`PASSWORD_FILE_ENV`]; the others are Ansible's or old names), and removes
/// them from the environment of every process it starts (local commands, git, an editor, an
/// interactive `ssh`), so that `run-shell-command all env` on a local host, or any program cchq
/// runs, never sees them.
pub const SCRUBBED_ENV: &[&str] = &[
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    "CCHQ_VAULT_PASSWORD",
    "ANSIBLE_VAULT_PASSWORD_FILE",
];

/// Removes [`SCRUBBED_ENV`] from what `cmd` will inherit.
pub fn scrub_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// The vault id Ansible uses when none is given; encrypting with it writes format 1.1.
pub const DEFAULT_VAULT_ID: &str = "default";

const FORMAT_ID: &str = "$ANSIBLE_VAULT";
const PBKDF2_ROUNDS: u32 = 10_000;
const SALT_LEN: usize = 32;
const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;
const HMAC_LEN: usize = 32;
const BLOCK_LEN: usize = 16;
const LINE_WIDTH: usize = 80;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;
type HmacSha256 = Hmac<Sha256>;

const MALFORMED_HINT: &str = "the vault data is damaged or was not written by ansible-vault; restore it from version control";

/// The header line of vault-encrypted data, for example `$ANSIBLE_VAULT;1.2;AES256;prod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version: `1.1` or `1.2` for anything ansible-vault writes.
    pub version: String,
    /// The cipher name: `AES256`.
    pub cipher: String,
    /// The vault id (format 1.2), if any.
    pub vault_id: Option<String>,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FORMAT_ID};{};{}", self.version, self.cipher)?;
        if let Some(id) = &self.vault_id {
            write!(f, ";{id}")?;
        }
        Ok(())
    }
}

/// Whether `text` is vault-encrypted: it starts (after any leading whitespace) with `$ANSIBLE_VAULT;`.
///
/// Ansible itself does not allow the leading whitespace; it is accepted here so that the indented
/// value of a YAML `!vault |` block works as is.
pub fn is_encrypted(text: &str) -> bool {
    text.trim_start().starts_with(HEADER_PREFIX)
}

/// Refuses `text` that starts with a UTF-8 byte order mark. ansible-vault does not look past one:
/// a vault file with a BOM before `$ANSIBLE_VAULT;` is not a vault to it (it would be read as
/// plain YAML holding one long string), so cchq refuses it rather than guess. The caller adds
/// the file name with [`Error::context`].
pub fn refuse_bom(text: &str) -> Result<()> {
    let Some(rest) = text.strip_prefix('\u{feff}') else {
        return Ok(());
    };
    let what = if is_encrypted(rest) {
        format!(
            "starts with a UTF-8 byte order mark before `{HEADER_PREFIX}`, so ansible-vault does not read it as a vault"
        )
    } else {
        "starts with a UTF-8 byte order mark".to_owned()
    };
    Err(Error::new(ErrorKind::Config, what)
        .with_hint("remove the first 3 bytes (EF BB BF), e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' vault.yml`, and save it without a BOM"))
}

/// The header of vault-encrypted `text`, or `None` if `text` is not vault-encrypted or its header line is malformed.
///
/// The version and cipher are returned as written, even if [`decrypt`] does not support them.
pub fn header(text: &str) -> Option<Header> {
    if !is_encrypted(text) {
        return None;
    }
    parse_header(text.trim_start().lines().next().unwrap_or_default(), 1).ok()
}

/// Decrypts vault-encrypted `text` (formats 1.1 and 1.2, cipher AES256) with `password`.
///
/// A wrong password is an [`ErrorKind::Vault`] error "wrong vault password (HMAC mismatch)"; malformed data is an
/// [`ErrorKind::Vault`] error naming what is malformed (the header, a line of the body, the salt, the HMAC...).
/// The caller should add the file name with [`Error::context`].
pub fn decrypt(text: &str, password: &[u8]) -> Result<Vec<u8>> {
    check_password(password)?;
    let envelope = parse(text)?;
    let keys = Keys::derive(password, &envelope.salt);
    let mut mac = keys.mac()?;
    mac.update(&envelope.ciphertext);
    mac.verify_slice(&envelope.hmac).map_err(|_| {
        Error::new(ErrorKind::Vault, "wrong vault password (HMAC mismatch)").with_hint(format!(
            "check the vault password (`{PASSWORD_ENV}` or the vault password file); \
             the data may also have been encrypted with another password or vault id"
        ))
    })?;
    let mut buf = envelope.ciphertext;
    keys.cipher().apply_keystream(&mut buf);
    unpad(&mut buf)?;
    Ok(buf)
}

/// Decrypts like [`decrypt`] and checks that the plaintext is UTF-8 (as YAML must be).
pub fn decrypt_str(text: &str, password: &[u8]) -> Result<String> {
    String::from_utf8(decrypt(text, password)?).map_err(|err| {
        Error::new(
            ErrorKind::Vault,
            format!(
                "the decrypted vault data is not UTF-8 (invalid byte at offset {})",
                err.utf8_error().valid_up_to()
            ),
        )
        .with_hint("the vault holds binary data; it cannot be read as YAML")
    })
}

/// Encrypts `plaintext` with `password` exactly as `ansible-vault encrypt` does, with a fresh random salt.
///
/// Without a vault id (or with an empty one, or `default`) the format is 1.1; with one it is 1.2 and the id is
/// written in the header. The output is the header line, then the body in 80-column lines, with a trailing newline.
/// The vault id must not contain `;` or line breaks, nor start or end with whitespace.
pub fn encrypt(plaintext: &[u8], password: &[u8], vault_id: Option<&str>) -> Result<String> {
    let salt = random_salt()?;
    encrypt_with_salt(plaintext, password, vault_id, &salt)
}

fn encrypt_with_salt(
    plaintext: &[u8],
    password: &[u8],
    vault_id: Option<&str>,
    salt: &[u8],
) -> Result<String> {
    check_password(password)?;
    let vault_id = check_vault_id(vault_id)?;
    let keys = Keys::derive(password, salt);

    let mut buf = pad(plaintext);
    keys.cipher().apply_keystream(&mut buf);
    let mut mac = keys.mac()?;
    mac.update(&buf);
    let tag = mac.finalize().into_bytes();

    let inner = format!(
        "{}\n{}\n{}",
        hex::encode(salt),
        hex::encode(tag),
        hex::encode(&buf)
    );
    let body = hex::encode(inner.as_bytes());

    let header = Header {
        version: if vault_id.is_some() { "1.2" } else { "1.1" }.to_owned(),
        cipher: CIPHER.to_owned(),
        vault_id,
    };
    let mut out = String::with_capacity(body.len() + body.len() / LINE_WIDTH + 64);
    out.push_str(&header.to_string());
    out.push('\n');
    // `body` is ASCII hex, so any byte offset is a char boundary.
    let mut rest = body.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(LINE_WIDTH));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    Ok(out)
}

fn check_password(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::new(ErrorKind::Vault, "the vault password is empty")
            .with_hint(format!("set `{PASSWORD_ENV}`, pass a vault password file, or type the password at the prompt")));
    }
    Ok(())
}

/// `None` for no id, an empty id or `default` (format 1.1), like Ansible's `format_vaulttext_envelope`.
fn check_vault_id(vault_id: Option<&str>) -> Result<Option<String>> {
    let Some(id) = vault_id.filter(|id| !id.is_empty() && *id != DEFAULT_VAULT_ID) else {
        return Ok(None);
    };
    if id.contains([';', '\n', '\r']) || id.trim() != id {
        return Err(Error::new(
            ErrorKind::Vault,
            format!("invalid vault id `{}`", id.escape_debug()),
        )
        .with_hint(
            "a vault id must not contain `;` or line breaks, nor start or end with whitespace",
        ));
    }
    Ok(Some(id.to_owned()))
}

/// A salt from the operating system's random source (`getrandom(2)`, which also works where
/// `/dev` is not mounted, as in some containers and chroots).
fn random_salt() -> Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|err| {
        Error::new(
            ErrorKind::Io,
            format!("cannot get a random salt from the operating system: {err}"),
        )
        .with_source(err)
        .with_hint("the system's random source (getrandom) is unavailable; nothing was written")
    })?;
    Ok(salt)
}

/// The three keys PBKDF2 derives from the password and the salt (zeroed when dropped).
struct Keys {
    cipher: [u8; KEY_LEN],
    mac: [u8; KEY_LEN],
    iv: [u8; IV_LEN],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.cipher.zeroize();
        self.mac.zeroize();
        self.iv.zeroize();
    }
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8]) -> Self {
        let mut derived = Zeroizing::new([0u8; 2 * KEY_LEN + IV_LEN]);
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, PBKDF2_ROUNDS, &mut *derived);
        let mut keys = Keys {
            cipher: [0; KEY_LEN],
            mac: [0; KEY_LEN],
            iv: [0; IV_LEN],
        };
        keys.cipher.copy_from_slice(&derived[..KEY_LEN]);
        keys.mac.copy_from_slice(&derived[KEY_LEN..2 * KEY_LEN]);
        keys.iv.copy_from_slice(&derived[2 * KEY_LEN..]);
        keys
    }

    fn cipher(&self) -> Aes256Ctr {
        Aes256Ctr::new(&self.cipher.into(), &self.iv.into())
    }

    fn mac(&self) -> Result<HmacSha256> {
        HmacSha256::new_from_slice(&self.mac)
            .map_err(|_| Error::internal("HMAC-SHA256 rejected a 32-byte key"))
    }
}

/// PKCS#7 padding to the AES block size: always 1 to 16 bytes, each the count of padding bytes.
fn pad(plaintext: &[u8]) -> Vec<u8> {
    let n = BLOCK_LEN - plaintext.len() % BLOCK_LEN;
    let mut buf = Vec::with_capacity(plaintext.len() + n);
    buf.extend_from_slice(plaintext);
    // `n` is in 1..=16, so it fits in a byte.
    buf.resize(plaintext.len() + n, n as u8);
    buf
}

fn unpad(buf: &mut Vec<u8>) -> Result<()> {
    let n = buf.last().copied().map_or(0, usize::from);
    let valid = (1..=BLOCK_LEN).contains(&n)
        && n <= buf.len()
        && buf[buf.len() - n..].iter().all(|&b| usize::from(b) == n);
    if !valid {
        return Err(malformed("the decrypted data has invalid padding"));
    }
    buf.truncate(buf.len() - n);
    Ok(())
}

fn malformed(what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Vault, format!("malformed vault data: {what}")).with_hint(MALFORMED_HINT)
}

/// A field of the header for an error message: escaped and cut short.
fn shown(field: &str) -> String {
    const MAX: usize = 40;
    let mut s: String = field.chars().take(MAX).collect();
    if field.chars().count() > MAX {
        s.push_str("...");
    }
    s.escape_debug().to_string()
}

fn parse_header(line: &str, line_no: usize) -> Result<Header> {
    let fields: Vec<&str> = line.trim().split(';').map(str::trim).collect();
    if fields[0] != FORMAT_ID {
        return Err(malformed(format!(
            "bad header on line {line_no}: it does not start with `{HEADER_PREFIX}`"
        )));
    }
    if !(3..=4).contains(&fields.len()) {
        return Err(malformed(format!(
            "bad header on line {line_no}: expected `{FORMAT_ID};<version>;<cipher>[;<vault id>]`, found {} fields",
            fields.len()
        )));
    }
    Ok(Header {
        version: fields[1].to_owned(),
        cipher: fields[2].to_owned(),
        vault_id: fields
            .get(3)
            .filter(|id| !id.is_empty())
            .map(|id| (*id).to_owned()),
    })
}

/// Vault data taken apart, not yet authenticated.
struct Envelope {
    salt: Vec<u8>,
    hmac: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse(text: &str) -> Result<Envelope> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with(HEADER_PREFIX) {
        return Err(Error::new(
            ErrorKind::Vault,
            format!("not vault-encrypted data: it does not start with `{HEADER_PREFIX}`"),
        )
        .with_hint("encrypt it with `ansible-vault encrypt`, or read it as plain text"));
    }
    // Line numbers count from the start of `text`, leading blank lines included.
    let first_line = 1 + text[..text.len() - trimmed.len()].matches('\n').count();
    let mut lines = trimmed.lines();
    let header = parse_header(lines.next().unwrap_or_default(), first_line)?;
    if header.version != "1.1" && header.version != "1.2" {
        return Err(malformed(format!(
            "unsupported format version `{}` on line {first_line}",
            shown(&header.version)
        ))
        .with_hint("only formats 1.1 and 1.2 (what ansible-vault writes) are supported"));
    }
    if header.cipher != CIPHER {
        return Err(malformed(format!(
            "unsupported cipher `{}` on line {first_line}",
            shown(&header.cipher)
        ))
        .with_hint(format!("only `{CIPHER}` is supported, as in Ansible")));
    }

    let mut body = String::with_capacity(trimmed.len());
    for (i, line) in lines.enumerate() {
        let line = line.trim();
        if !line.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(format!(
                "line {} is not hexadecimal",
                first_line + 1 + i
            )));
        }
        body.push_str(line);
    }
    if body.is_empty() {
        return Err(malformed(
            "nothing follows the header (the data may be truncated)",
        ));
    }
    if body.len() % 2 == 1 {
        return Err(malformed(
            "the body has an odd number of hex digits (the data may be truncated)",
        ));
    }
    let body = hex::decode(&body)
        .map_err(|err| malformed(format!("the body is not hexadecimal: {err}")))?;

    let mut parts = body.splitn(3, |&b| b == b'\n');
    let (Some(salt), Some(hmac), Some(ciphertext)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "the decoded body does not have the three lines salt, HMAC and ciphertext (the data may be truncated)",
        ));
    };
    let salt = hex::decode(salt).map_err(|_| malformed("the salt is not hexadecimal"))?;
    let hmac = hex::decode(hmac).map_err(|_| malformed("the HMAC is not hexadecimal"))?;
    if hmac.len() != HMAC_LEN {
        return Err(malformed(format!(
            "the HMAC is {} bytes long, not {HMAC_LEN}",
            hmac.len()
        )));
    }
    let ciphertext = hex::decode(ciphertext)
        .map_err(|_| malformed("the ciphertext is not hexadecimal (the data may be truncated)"))?;
    if ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
        return Err(malformed(format!(
            "the ciphertext is {} bytes long, not a positive multiple of {BLOCK_LEN} (the data may be truncated)",
            ciphertext.len()
        )));
    }
    Ok(Envelope {
        salt,
        hmac,
        ciphertext,
    })
}

/// Where the vault password comes from, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The `ANSIBLE_VAULT_PASSWORD` environment variable (used as is, when set and not empty).
    Env,
    /// A vault password file: its content, without surrounding whitespace (as Ansible reads it).
    File(PathBuf),
    /// An executable vault password file: it is run (standard input and error left to the terminal, so it can
    /// prompt) and its standard output, without surrounding line breaks, is the password (as Ansible does).
    Script(PathBuf),
    /// None of the above: the caller should prompt for the password.
    Prompt,
}

impl PasswordSource {
    /// The source that will be used: `ANSIBLE_VAULT_PASSWORD` if set and not empty, else `file` (a script if it is
    /// executable), else the prompt.
    pub fn detect(file: Option<&Path>) -> Self {
        Self::detect_with(std::env::var_os(PASSWORD_ENV), file)
    }

    fn detect_with(env: Option<OsString>, file: Option<&Path>) -> Self {
        if env.is_some_and(|v| !v.is_empty()) {
            Self::Env
        } else if let Some(file) = file {
            if is_executable(file) {
                Self::Script(file.to_owned())
            } else {
                Self::File(file.to_owned())
            }
        } else {
            Self::Prompt
        }
    }

    /// Reads the password from this source: `Ok(None)` for [`PasswordSource::Prompt`] (and for `Env` if the
    /// variable has gone). A missing file is an [`ErrorKind::Io`] error; an empty password, or a script that fails,
    /// an [`ErrorKind::Vault`] error.
    pub fn read(&self) -> Result<Option<Password>> {
        match self {
            Self::Env => Ok(std::env::var_os(PASSWORD_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| Zeroizing::new(os_bytes(v)))),
            Self::File(path) => read_password_file(path).map(Some),
            Self::Script(path) => run_password_script(path).map(Some),
            Self::Prompt => Ok(None),
        }
    }
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => write!(f, "the `{PASSWORD_ENV}` environment variable"),
            Self::File(path) => write!(f, "the vault password file `{}`", path.display()),
            Self::Script(path) => write!(f, "the vault password script `{}`", path.display()),
            Self::Prompt => f.write_str("the password prompt"),
        }
    }
}

/// The vault password from `ANSIBLE_VAULT_PASSWORD`, else from `file` (run if executable), else `Ok(None)`: the
/// caller should prompt. See [`PasswordSource`].
pub fn password_from_env_or_file(file: Option<&Path>) -> Result<Option<Password>> {
    PasswordSource::detect(file).read()
}

/// The variable naming a vault password file (run when executable), as `--vault-password-file`.
pub const PASSWORD_FILE_ENV: &str = "CCHQ_VAULT_PASSWORD_FILE";

/// The vault password from `ANSIBLE_VAULT_PASSWORD`, else from the file `CCHQ_VAULT_PASSWORD_FILE`
/// names, else `Ok(None)`: the caller should prompt, or give up. See [`PasswordSource`].
pub fn password_from_environment() -> Result<Option<Password>> {
    let file = std::env::var_os(PASSWORD_FILE_ENV).map(PathBuf::from);
    password_from_env_or_file(file.as_deref())
}

#[cfg(unix)]
fn os_bytes(value: OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    value.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(value: OsString) -> Vec<u8> {
    value.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

/// `bytes` without the leading and trailing bytes in `set`.
fn strip<'a>(mut bytes: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let [first, rest @ ..] = bytes {
        if !set.contains(first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !set.contains(last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

fn read_password_file(path: &Path) -> Result<Password> {
    let content = Zeroizing::new(std::fs::read(path).map_err(|err| {
        Error::io(
            format_args!("vault password file `{}`", path.display()),
            err,
        )
        .with_hint(format!(
            "check the vault password file path, or set `{PASSWORD_ENV}`"
        ))
    })?);
    // Python's `bytes.strip()`, as Ansible's FileVaultSecret does.
    let password = strip(&content, b" \t\n\r\x0b\x0c");
    if password.is_empty() {
        return Err(Error::new(
            ErrorKind::Vault,
            format!("the vault password file `{}` is empty", path.display()),
        )
        .with_hint("write the vault password in it, on one line"));
    }
    Ok(Zeroizing::new(password.to_vec()))
}

fn run_password_script(path: &Path) -> Result<Password> {
    // Ansible runs the real path, never a name looked up in PATH.
    let program = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned());
    let output = scrub_env(&mut Command::new(&program))
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| {
            Error::io(
                format_args!("running the vault password script `{}`", path.display()),
                err,
            )
        })?;
    if !output.status.success() {
        return Err(Error::new(
            ErrorKind::Vault,
            format!(
                "the vault password script `{}` failed ({})",
                path.display(),
                output.status
            ),
        )
        .with_hint(
            "run it by hand to see why; it must print the vault password on its standard output",
        ));
    }
    let stdout = Zeroizing::new(output.stdout);
    let password = strip(&stdout, b"\r\n");
    if password.is_empty() {
        return Err(Error::new(
            ErrorKind::Vault,
            format!(
                "the vault password script `{}` printed no password",
                path.display()
            ),
        )
        .with_hint("it must print the vault password on its standard output"));
    }
    Ok(Zeroizing::new(password.to_vec()))
}

/// A secret string (a password, a key): its [`Debug`](fmt::Debug) and [`Display`](fmt::Display) print `<secret>`.
/// Use [`Secret::expose`] where the value is really needed. Its bytes are overwritten with zeros
/// when it is dropped.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret value, unwrapped (no longer zeroed on drop).
    pub fn into_inner(mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests;
