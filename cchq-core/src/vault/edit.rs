//! Reading and changing one secret of `vault.yml`, keeping its format: an ansible-vault file is
//! re-encrypted with the same password and vault id (so `ansible-vault` still reads it), a
//! plaintext one stays plaintext, and the file is replaced atomically with its mode kept.
//!
//! Where it can, a change edits only the line of the secret, so comments and layout survive; the
//! result is always parsed back and compared with the intended value, and when the line edit does
//! not give exactly that, the whole YAML is written out again ([`SetOutcome::reformatted`]).

use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::{Value, vault};

/// How `vault.yml` is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultFormat {
    /// Plain YAML.
    Plain,
    /// ansible-vault (format 1.1, or 1.2 with a vault id).
    Encrypted {
        /// The vault id of a 1.2 file.
        vault_id: Option<String>,
    },
}

/// Reads `path`: its format and its plaintext. `password` is called only when it is encrypted.
///
/// # Errors
/// A wrong password is an [`ErrorKind::Vault`] error (exit code 6 in the CLI).
pub fn read(
    path: &Path,
    password: impl FnOnce() -> Result<vault::Password>,
) -> Result<(VaultFormat, String, Option<vault::Password>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
    vault::refuse_bom(&text).map_err(|e| e.context(path.display()))?;
    if !vault::is_encrypted(&text) {
        return Ok((VaultFormat::Plain, text, None));
    }
    let header = vault::header(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::Vault,
            format!("{}: malformed ansible-vault header", path.display()),
        )
        .with_hint("restore the file from version control")
    })?;
    let pw = password()?;
    let plain = vault::decrypt_str(&text, &pw).map_err(|e| e.context(path.display()))?;
    Ok((
        VaultFormat::Encrypted {
            vault_id: header.vault_id,
        },
        plain,
        Some(pw),
    ))
}

/// Parses the plaintext of a vault (never echoing its contents in an error).
pub fn parse(path: &Path, plaintext: &str) -> Result<Value> {
    if plaintext.trim().is_empty() {
        return Ok(Value::Null);
    }
    // As Ansible reads it (YAML 1.1: a plain `no` is false).
    crate::yaml::load_value(plaintext).map_err(|e| {
        let loc = e
            .location()
            .map_or_else(String::new, |l| format!(":{}:{}", l.line(), l.column()));
        Error::config(format!(
            "{}{loc}: the vault is not valid YAML",
            path.display()
        ))
    })
}

/// `v` as YAML text that Ansible reads back as `v` (a string `no` is written `'no'`).
pub fn to_yaml(v: &Value) -> Result<String> {
    crate::yaml::to_string(v)
        .map_err(|e| Error::internal(format!("cannot write YAML: {e}")).with_source(e))
}

/// A new value typed by the operator: the text itself, or its YAML reading when `yaml` (an error
/// never echoes the text).
pub fn value_from_text(text: &str, yaml: bool) -> Result<Value> {
    if !yaml {
        return Ok(Value::String(text.to_owned()));
    }
    crate::yaml::load_value(text).map_err(|e| {
        let loc = e.location().map_or_else(String::new, |l| {
            format!(" (line {}, column {})", l.line(), l.column())
        });
        Error::usage(format!("the new value is not valid YAML{loc}"))
    })
}

/// The path segments `name` stands for in `root`: the top-level key `name` when there is one
/// (keys may contain dots), else `name` split on dots.
pub fn segments<'a>(root: &Value, name: &'a str) -> Vec<&'a str> {
    if let Value::Mapping(m) = root
        && m.contains_key(Value::String(name.to_owned()))
    {
        return vec![name];
    }
    name.split('.').collect()
}

/// The value at `name` (a top-level key or a dotted path), if any.
pub fn lookup<'v>(root: &'v Value, name: &str) -> Option<&'v Value> {
    let mut cur = root;
    for seg in segments(root, name) {
        match cur {
            Value::Mapping(m) => cur = m.get(Value::String(seg.to_owned()))?,
            Value::Sequence(s) => cur = s.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        }
    }
    Some(cur)
}

/// The top-level keys of the vault (names only, never values).
pub fn top_level_keys(root: &Value) -> Vec<String> {
    match root {
        Value::Mapping(m) => m.keys().filter_map(crate::yaml::scalar_to_string).collect(),
        _ => Vec::new(),
    }
}

fn set_in(cur: &mut Value, segs: &[&str], new: Value, name: &str) -> Result<()> {
    if cur.is_null() {
        *cur = Value::Mapping(yaml_serde::Mapping::new());
    }
    let Value::Mapping(m) = cur else {
        return Err(Error::usage(format!(
            "cannot set `{name}`: `{}` is not a mapping",
            segs[0]
        ))
        .with_hint("give the path of a key inside a mapping"));
    };
    let key = Value::String(segs[0].to_owned());
    if segs.len() == 1 {
        m.insert(key, new);
        return Ok(());
    }
    if !m.contains_key(&key) {
        m.insert(key.clone(), Value::Mapping(yaml_serde::Mapping::new()));
    }
    let child = m
        .get_mut(&key)
        .ok_or_else(|| Error::internal("key vanished"))?;
    set_in(child, &segs[1..], new, name)
}

/// What [`set`] produced.
#[derive(Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// The new plaintext.
    pub plaintext: String,
    /// Whether the whole YAML was written out again (comments and layout lost).
    pub reformatted: bool,
    /// Whether the key existed before.
    pub existed: bool,
}

impl std::fmt::Debug for SetOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetOutcome")
            .field("reformatted", &self.reformatted)
            .field("existed", &self.existed)
            .finish()
    }
}

/// Sets `name` (a top-level key or a dotted path; missing mappings are created) to `new` in the
/// vault plaintext `text`.
pub fn set(path: &Path, text: &str, name: &str, new: Value) -> Result<SetOutcome> {
    let root = parse(path, text)?;
    let existed = lookup(&root, name).is_some();
    let segs = segments(&root, name);
    if segs.iter().any(|s| s.is_empty()) {
        return Err(
            Error::usage(format!("`{name}` is not a key or a dotted path of keys"))
                .with_hint("e.g. `SECRET_KEY` or `secrets.POSTGRES_USERS.commcare.password`"),
        );
    }
    let mut expected = root.clone();
    set_in(&mut expected, &segs, new.clone(), name)?;
    let candidates = [
        line_edit(text, &segs, &new),
        append_top_level(text, &root, &segs, &new),
    ];
    for cand in candidates.into_iter().flatten() {
        if crate::yaml::load_value(&cand).ok().as_ref() == Some(&expected) {
            return Ok(SetOutcome {
                plaintext: cand,
                reformatted: false,
                existed,
            });
        }
    }
    let plaintext = to_yaml(&expected)?;
    Ok(SetOutcome {
        plaintext,
        reformatted: true,
        existed,
    })
}

/// A scalar as one line of YAML.
fn scalar_line(v: &Value) -> Option<String> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
            let s = crate::yaml::to_string(v).ok()?;
            let s = s.trim_end_matches('\n');
            (!s.contains('\n')).then(|| s.to_owned())
        }
        _ => None,
    }
}

/// The key of a block-mapping line (`key: ...`, `'key': ...`), and the length of its key text.
fn line_key(trimmed: &str) -> Option<(String, usize)> {
    let (key, len) = match trimmed.chars().next()? {
        q @ ('\'' | '"') => {
            let end = trimmed[1..].find(q)? + 1;
            (trimmed[1..end].to_owned(), end + 1)
        }
        '-' | '#' | '?' | '{' | '[' => return None,
        _ => {
            let mut idx = None;
            for (i, _) in trimmed.match_indices(':') {
                let after = &trimmed[i + 1..];
                if after.is_empty() || after.starts_with([' ', '\t']) {
                    idx = Some(i);
                    break;
                }
            }
            let i = idx?;
            (trimmed[..i].trim_end().to_owned(), i)
        }
    };
    let rest = &trimmed[len..];
    (rest.starts_with(':') && (rest.len() == 1 || rest[1..].starts_with([' ', '\t'])))
        .then_some((key, len))
}

fn indent_of(line: &str) -> Option<usize> {
    let t = line.trim_end_matches(['\n', '\r']);
    let trimmed = t.trim_start_matches(' ');
    if trimmed.trim().is_empty() || trimmed.starts_with('#') {
        None
    } else {
        Some(t.len() - trimmed.len())
    }
}

/// Replaces the value on the line of `segs` when it is a one-line scalar.
fn line_edit(text: &str, segs: &[&str], new: &Value) -> Option<String> {
    let rendered = scalar_line(new)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let (mut start, mut end, mut parent) = (0usize, lines.len(), None::<usize>);
    let mut leaf = None;
    for (depth, seg) in segs.iter().enumerate() {
        let mut block = None;
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().take(end).skip(start) {
            let Some(ind) = indent_of(line) else { continue };
            let bi = *block.get_or_insert(ind);
            if parent.is_some_and(|p| bi <= p) || ind < bi {
                return None;
            }
            if ind == bi
                && let Some((k, len)) = line_key(line[ind..].trim_end_matches(['\n', '\r']))
                && k == *seg
            {
                hit = Some((i, ind, len));
                break;
            }
        }
        let (i, ind, len) = hit?;
        let mut j = i + 1;
        while j < end && indent_of(lines[j]).is_none_or(|x| x > ind) {
            j += 1;
        }
        if depth + 1 == segs.len() {
            leaf = Some((i, ind, len, j));
        } else {
            (start, end, parent) = (i + 1, j, Some(ind));
        }
    }
    let (i, ind, len, j) = leaf?;
    if (i + 1..j).any(|k| indent_of(lines[k]).is_some()) {
        return None;
    }
    let line = lines[i];
    let eol = &line[line.trim_end_matches(['\n', '\r']).len()..];
    let key_text = &line[ind..ind + len];
    let mut out = String::with_capacity(text.len() + rendered.len());
    for l in &lines[..i] {
        out.push_str(l);
    }
    out.push_str(&format!(
        "{}{key_text}: {rendered}{}",
        " ".repeat(ind),
        if eol.is_empty() { "\n" } else { eol }
    ));
    for l in &lines[i + 1..] {
        out.push_str(l);
    }
    Some(out)
}

/// Appends a new top-level key at the end.
fn append_top_level(text: &str, root: &Value, segs: &[&str], new: &Value) -> Option<String> {
    if segs.len() != 1 || !matches!(root, Value::Mapping(_)) || lookup(root, segs[0]).is_some() {
        return None;
    }
    let mut m = yaml_serde::Mapping::new();
    m.insert(Value::String(segs[0].to_owned()), new.clone());
    let block = crate::yaml::to_string(&Value::Mapping(m)).ok()?;
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&block);
    Some(out)
}

/// Writes `plaintext` to `path` in `format` (encrypting with `password` and the vault id for an
/// encrypted vault), atomically, keeping the file's mode (and owner, where permitted).
pub fn write(
    path: &Path,
    format: &VaultFormat,
    plaintext: &str,
    password: Option<&[u8]>,
) -> Result<()> {
    let data = match format {
        VaultFormat::Plain => plaintext.to_owned(),
        VaultFormat::Encrypted { vault_id } => {
            let pw = password
                .ok_or_else(|| Error::new(ErrorKind::Vault, "no vault password to encrypt with"))?;
            vault::encrypt(plaintext.as_bytes(), pw, vault_id.as_deref())?
        }
    };
    write_atomic(path, data.as_bytes())
}

/// Replaces `path` with `data` through a temporary file in the same directory and a rename,
/// keeping the mode and (where permitted) the owner of the file it replaces.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = std::fs::metadata(&path).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(".cchq-vault.")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir.display(), e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path().display(), e))?;
    if let Some(m) = &meta {
        std::fs::set_permissions(tmp.path(), m.permissions())
            .map_err(|e| Error::io(tmp.path().display(), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let _ = std::os::unix::fs::chown(tmp.path(), Some(m.uid()), Some(m.gid()));
        }
    }
    tmp.persist(&path)
        .map_err(|e| Error::io(path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        cchq_testsupport::fixtures::ansible_vault()
    }

    fn password() -> Vec<u8> {
        std::fs::read_to_string(fixtures().join("password.txt"))
            .unwrap()
            .trim()
            .as_bytes()
            .to_vec()
    }

    const TEXT: &str = "# the secrets\nsecrets:\n  ECRYPTFS_PASSWORD: 'old pass'  # rotated yearly\n  POSTGRES_USERS:\n    commcare:\n      username: commcarehq\n      password: \"p@ss\"\nlocalsettings_private:\n  SECRET_KEY: abc\nmulti: |\n  line one\n  line two\ndotted.key: x\n";

    #[test]
    fn a_line_edit_keeps_comments_and_layout() {
        let p = Path::new("vault.yml");
        let out = set(
            p,
            TEXT,
            "secrets.POSTGRES_USERS.commcare.password",
            Value::String("n3w: #pass".into()),
        )
        .unwrap();
        assert!(!out.reformatted && out.existed);
        assert!(
            out.plaintext.starts_with("# the secrets\n"),
            "{}",
            out.plaintext
        );
        assert!(out.plaintext.contains("# rotated yearly"));
        let v = parse(p, &out.plaintext).unwrap();
        assert_eq!(
            lookup(&v, "secrets.POSTGRES_USERS.commcare.password").and_then(Value::as_str),
            Some("n3w: #pass")
        );
        assert_eq!(
            lookup(&v, "secrets.POSTGRES_USERS.commcare.username").and_then(Value::as_str),
            Some("commcarehq")
        );
        // A key with dots is a top-level key first.
        let out = set(p, TEXT, "dotted.key", Value::String("y".into())).unwrap();
        assert!(!out.reformatted);
        assert_eq!(
            lookup(&parse(p, &out.plaintext).unwrap(), "dotted.key").and_then(Value::as_str),
            Some("y")
        );
    }

    #[test]
    fn new_keys_and_block_values_are_handled() {
        let p = Path::new("vault.yml");
        let out = set(p, TEXT, "NEW_TOKEN", Value::String("t0k".into())).unwrap();
        assert!(!out.reformatted && !out.existed);
        assert!(
            out.plaintext.starts_with(TEXT) && out.plaintext.ends_with("NEW_TOKEN: t0k\n"),
            "{}",
            out.plaintext
        );
        // A block scalar cannot be edited on one line: the YAML is written out again.
        let out = set(p, TEXT, "multi", Value::String("one line".into())).unwrap();
        assert!(out.reformatted);
        let v = parse(p, &out.plaintext).unwrap();
        assert_eq!(
            lookup(&v, "multi").and_then(Value::as_str),
            Some("one line")
        );
        assert_eq!(
            lookup(&v, "localsettings_private.SECRET_KEY").and_then(Value::as_str),
            Some("abc")
        );
        // A new nested key creates its mappings.
        let out = set(p, TEXT, "a.b.c", Value::Bool(true)).unwrap();
        assert_eq!(
            lookup(&parse(p, &out.plaintext).unwrap(), "a.b.c"),
            Some(&Value::Bool(true))
        );
        // Setting inside a scalar is refused.
        assert_eq!(
            set(p, TEXT, "localsettings_private.SECRET_KEY.x", Value::Null)
                .unwrap_err()
                .kind(),
            ErrorKind::Usage
        );
    }

    #[test]
    fn encrypted_vaults_round_trip_in_their_format() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, id) in [("vault.yml", None), ("vault-with-id.yml", Some("prod"))] {
            let path = tmp.path().join(name);
            std::fs::copy(fixtures().join(name), &path).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
                .unwrap();
            // A wrong password is a vault error and changes nothing.
            let before = std::fs::read(&path).unwrap();
            let err = read(&path, || Ok(b"wrong".to_vec().into())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Vault);
            assert_eq!(std::fs::read(&path).unwrap(), before);

            let (format, plain, pw) = read(&path, || Ok(password().into())).unwrap();
            assert_eq!(
                format,
                VaultFormat::Encrypted {
                    vault_id: id.map(str::to_owned)
                }
            );
            assert_eq!(
                plain,
                std::fs::read_to_string(fixtures().join("plain.yml")).unwrap()
            );
            let out = set(
                &path,
                &plain,
                "localsettings_private.SECRET_KEY",
                Value::String("rotated".into()),
            )
            .unwrap();
            assert!(!out.reformatted);
            write(
                &path,
                &format,
                &out.plaintext,
                pw.as_ref().map(|p| p.as_slice()),
            )
            .unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let header = vault::header(&text).unwrap();
            assert_eq!(header.vault_id.as_deref(), id);
            assert_eq!(header.version, if id.is_some() { "1.2" } else { "1.1" });
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o640);
            let again = vault::decrypt_str(&text, &password()).unwrap();
            assert_eq!(again, out.plaintext);
            assert_eq!(
                lookup(
                    &parse(&path, &again).unwrap(),
                    "localsettings_private.SECRET_KEY"
                )
                .and_then(Value::as_str),
                Some("rotated")
            );
        }
    }

    /// Issue 13: the vault is read as Ansible reads it, and a string that Ansible would read as
    /// a boolean or a number is written quoted, by a line edit or a rewrite.
    #[test]
    fn yaml_1_1_words_are_read_as_ansible_does_and_written_quoted() {
        let p = Path::new("vault.yml");
        let text = "A: no\nB: 'no'\nmulti: |\n  x\n";
        let v = parse(p, text).unwrap();
        assert_eq!(
            (lookup(&v, "A"), lookup(&v, "B")),
            (Some(&Value::Bool(false)), Some(&Value::String("no".into())))
        );
        let out = set(p, text, "A", Value::String("off".into())).unwrap();
        assert!(
            !out.reformatted && out.plaintext.starts_with("A: 'off'\n"),
            "{}",
            out.plaintext
        );
        let out = set(p, text, "NEW", Value::String("0755".into())).unwrap();
        assert!(
            out.plaintext.ends_with("NEW: '0755'\n"),
            "{}",
            out.plaintext
        );
        let out = set(p, text, "multi", Value::String("Yes".into())).unwrap();
        assert!(out.reformatted, "{}", out.plaintext);
        let v = parse(p, &out.plaintext).unwrap();
        assert_eq!(
            lookup(&v, "multi"),
            Some(&Value::String("Yes".into())),
            "{}",
            out.plaintext
        );
        assert_eq!(
            lookup(&v, "A"),
            Some(&Value::Bool(false)),
            "{}",
            out.plaintext
        );
        assert_eq!(value_from_text("on", true).unwrap(), Value::Bool(true));
        assert_eq!(
            value_from_text("on", false).unwrap(),
            Value::String("on".into())
        );
    }

    #[test]
    fn plaintext_vaults_stay_plaintext() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault.yml");
        std::fs::write(&path, TEXT).unwrap();
        let (format, plain, pw) = read(&path, || panic!("no password for a plain vault")).unwrap();
        assert_eq!((format.clone(), pw), (VaultFormat::Plain, None));
        let out = set(
            &path,
            &plain,
            "localsettings_private.SECRET_KEY",
            Value::String("def".into()),
        )
        .unwrap();
        write(&path, &format, &out.plaintext, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!vault::is_encrypted(&text));
        assert_eq!(text, TEXT.replace("SECRET_KEY: abc", "SECRET_KEY: def"));
    }
}
