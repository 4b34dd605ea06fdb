//! `cchq <env> secrets view [NAME]` and `cchq <env> secrets edit NAME`: the vault's secrets, and
//! the vault password (environment, password file, or a prompt that does not echo); with
//! `secrets_backend: aws-secrets`, AWS Secrets Manager's (`cchq_core::secrets::aws`).

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

use cchq_core::environment::Vault;
use cchq_core::secrets::aws::{AwsEnv, AwsSecrets};
use cchq_core::vault::edit::{self as vault_edit, VaultFormat};
use cchq_core::{Environment, Error, ErrorKind, Value};

use super::ExitStatus;
use crate::render;

/// `secrets`.
#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    /// What to do
    #[command(subcommand)]
    pub action: SecretsAction,
}

/// `secrets view` / `secrets edit`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsAction {
    /// Print the vault (YAML), or one secret: a top-level key or a dotted path (`secrets.POSTGRES_USERS`)
    #[command(
        after_help = "With `secrets_backend: aws-secrets` in meta.yml: every secret `commcare-<env>/NAME` of AWS Secrets \
Manager by name, or one (`SECRET_KEY`, `POSTGRES_USERS.commcare.password`; `localsettings_private.SECRET_KEY` names `SECRET_KEY`). \
Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws, then the EC2 instance role; region: terraform.yml \
`region`, else AWS_REGION."
    )]
    View {
        /// A top-level key or a dotted path; the whole vault when omitted
        name: Option<String>,
    },
    /// Set one secret and write the vault back in its own format
    #[command(
        after_help = "The value comes from --value, --from-stdin, or else $VISUAL/$EDITOR (default `vi`) editing the current \
value as YAML. An ansible-vault file is re-encrypted with the same password and vault id (format 1.1, or 1.2 with its id), so \
ansible-vault still reads it; a plaintext vault.yml stays plaintext. The file is replaced atomically and keeps its mode. Only the \
secret's line changes when it can; otherwise the YAML is written out again and comments are lost (cchq says so).\n\n\
Examples:\n  cchq prod secrets edit localsettings_private.SECRET_KEY --from-stdin < new-key.txt\n  cchq prod secrets edit \
secrets.POSTGRES_USERS.commcare.password\n\nWith `secrets_backend: aws-secrets`, the secret `commcare-<env>/NAME` of AWS Secrets \
Manager is written JSON-encoded (PutSecretValue, or CreateSecret for a new one), as commcare-cloud stores it."
    )]
    Edit {
        /// A top-level key or a dotted path (missing mappings are created)
        name: String,
        /// The new value (visible to `ps` and shell history: prefer --from-stdin or the editor)
        #[arg(long, conflicts_with = "from_stdin")]
        value: Option<String>,
        /// Read the new value from standard input (one trailing newline is removed)
        #[arg(long)]
        from_stdin: bool,
        /// Read the value of --value/--from-stdin as YAML (a number, a list, a mapping) rather than as a string
        #[arg(long)]
        yaml: bool,
    },
}

/// The vault password: `ANSIBLE_VAULT_PASSWORD`, else the file `CCHQ_VAULT_PASSWORD_FILE` (run
/// when executable), else a prompt on the terminal that does not echo. Zeroed when dropped.
pub fn password(env_name: &str) -> Result<cchq_core::vault::Password, Error> {
    if let Some(p) = cchq_core::vault::password_from_environment()? {
        return Ok(p);
    }
    let none = || {
        Error::new(ErrorKind::Vault, "the vault is encrypted and no password was given")
            .with_hint("set ANSIBLE_VAULT_PASSWORD or CCHQ_VAULT_PASSWORD_FILE, or run cchq on a terminal to be asked")
    };
    if !std::io::stdin().is_terminal() {
        return Err(none());
    }
    match rpassword::prompt_password(format!("Vault password for `{env_name}`: ")) {
        Ok(p) if !p.is_empty() => Ok(cchq_core::vault::Password::new(p.into_bytes())),
        Ok(_) => Err(Error::new(ErrorKind::Vault, "the vault password is empty")
            .with_hint("type the vault password at the prompt")),
        Err(e) => Err(none().with_source(e)),
    }
}

pub fn run(env: &Environment, args: &SecretsArgs) -> Result<ExitStatus, Error> {
    if let Vault::Aws(aws) = &env.vault {
        return run_aws(aws, args);
    }
    let path = env.dir.join("vault.yml");
    if !path.is_file() {
        return Err(
            Error::not_found(format!("environment `{}` has no vault.yml", env.name)).with_hint(
                format!("create `{}` (ansible-vault create) first", path.display()),
            ),
        );
    }
    match &args.action {
        SecretsAction::View { name } => view(env, &path, name.as_deref()),
        SecretsAction::Edit {
            name,
            value,
            from_stdin,
            yaml,
        } => edit(env, &path, name, value.as_deref(), *from_stdin, *yaml),
    }
}

/// `secrets_backend: aws-secrets`: every secret `commcare-<env>/<NAME>` of AWS Secrets Manager.
fn run_aws(aws: &AwsSecrets, args: &SecretsArgs) -> Result<ExitStatus, Error> {
    let aenv = AwsEnv::process();
    match &args.action {
        SecretsAction::View { name: None } => {
            let all = aws.fetch_all(&aenv)?;
            if all.is_empty() {
                render::info(&format!(
                    "AWS Secrets Manager holds no secret `{}/...`",
                    aws.prefix
                ));
                return Ok(ExitStatus::Success);
            }
            render::out(&vault_edit::to_yaml(&Value::Mapping(
                all.into_iter()
                    .map(|(k, v)| (Value::String(k), v))
                    .collect(),
            ))?);
        }
        SecretsAction::View { name: Some(name) } => {
            render::out(&vault_edit::to_yaml(&aws.view(&aenv, name)?)?)
        }
        SecretsAction::Edit {
            name,
            value,
            from_stdin,
            yaml,
        } => {
            let new = match new_value(name, value.as_deref(), *from_stdin, *yaml, || {
                aws.get(&aenv, name)
            })? {
                Some(v) => v,
                None => {
                    render::info(&format!("`{name}` unchanged"));
                    return Ok(ExitStatus::Success);
                }
            };
            let existed = aws.set(&aenv, name, new)?;
            let (secret, _) = cchq_core::secrets::split_secret_path(name);
            render::info(&format!(
                "{} `{name}` in AWS Secrets Manager (secret `{}`)",
                if existed { "updated" } else { "created" },
                aws.secret_id(&secret)
            ));
        }
    }
    Ok(ExitStatus::Success)
}

/// The new value: `--value`, `--from-stdin` (one trailing newline removed), else the editor on
/// the current value (`None`: left unchanged).
fn new_value(
    name: &str,
    value: Option<&str>,
    from_stdin: bool,
    yaml: bool,
    current: impl FnOnce() -> Result<Option<Value>, Error>,
) -> Result<Option<Value>, Error> {
    if let Some(v) = value {
        return parse_value(v, yaml).map(Some);
    }
    if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| Error::io("reading the new value from standard input", e))?;
        let trimmed = buf
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&buf);
        return parse_value(trimmed, yaml).map(Some);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage("no terminal for an editor")
            .with_hint("give the value with `--value` or `--from-stdin`"));
    }
    edit_in_editor(name, current()?.as_ref())
}

fn view(env: &Environment, path: &Path, name: Option<&str>) -> Result<ExitStatus, Error> {
    let (_, plain, _) = vault_edit::read(path, || password(&env.name))?;
    let Some(name) = name else {
        render::out(&plain);
        if !plain.is_empty() && !plain.ends_with('\n') {
            render::out("\n");
        }
        return Ok(ExitStatus::Success);
    };
    let root = vault_edit::parse(path, &plain)?;
    let value = vault_edit::lookup(&root, name).ok_or_else(|| not_found(env, &root, name))?;
    let text = vault_edit::to_yaml(value)?;
    render::out(&text);
    Ok(ExitStatus::Success)
}

fn not_found(env: &Environment, root: &Value, name: &str) -> Error {
    Error::not_found(format!("the vault of `{}` has no `{name}`", env.name)).with_hint(format!(
        "top-level keys: {}; use a dotted path for nested keys",
        vault_edit::top_level_keys(root).join(", ")
    ))
}

fn parse_value(text: &str, yaml: bool) -> Result<Value, Error> {
    vault_edit::value_from_text(text, yaml)
}

fn edit(
    env: &Environment,
    path: &Path,
    name: &str,
    value: Option<&str>,
    from_stdin: bool,
    yaml: bool,
) -> Result<ExitStatus, Error> {
    // Decrypt first: a wrong password fails here, before anything is asked or written.
    let (format, plain, pw) = vault_edit::read(path, || password(&env.name))?;
    let root = vault_edit::parse(path, &plain)?;
    let Some(new) = new_value(name, value, from_stdin, yaml, || {
        Ok(vault_edit::lookup(&root, name).cloned())
    })?
    else {
        render::info(&format!("`{name}` unchanged"));
        return Ok(ExitStatus::Success);
    };
    let outcome = vault_edit::set(path, &plain, name, new)?;
    vault_edit::write(
        path,
        &format,
        &outcome.plaintext,
        pw.as_ref().map(|p| p.as_slice()),
    )?;
    let how = match &format {
        VaultFormat::Plain => "plaintext".to_owned(),
        VaultFormat::Encrypted { vault_id: Some(id) } => {
            format!("ansible-vault 1.2, vault id `{id}`")
        }
        VaultFormat::Encrypted { vault_id: None } => "ansible-vault 1.1".to_owned(),
    };
    render::info(&format!(
        "{} `{name}` in `{}` ({how})",
        if outcome.existed { "updated" } else { "added" },
        path.display()
    ));
    if outcome.reformatted {
        render::warning(
            "the vault's YAML was written out again: its comments and layout were not kept",
        );
    }
    Ok(ExitStatus::Success)
}

/// Opens the current value (as YAML) in the editor; `None` when it was left unchanged.
fn edit_in_editor(name: &str, current: Option<&Value>) -> Result<Option<Value>, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage("no terminal for an editor")
            .with_hint("give the value with `--value` or `--from-stdin`"));
    }
    let initial = match current {
        Some(v) => vault_edit::to_yaml(v)?,
        None => String::new(),
    };
    let dir = private_dir()?;
    let file = dir.join("secret.yml");
    let result = (|| {
        let header = format!(
            "# The value of `{name}` (YAML). Save and quit to set it; lines starting with # are ignored.\n"
        );
        write_private(&file, format!("{header}{initial}").as_bytes())?;
        let editor = std::env::var("VISUAL")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty()));
        let editor = editor.unwrap_or_else(|| "vi".to_owned());
        let status = cchq_core::vault::scrub_env(&mut std::process::Command::new("/bin/sh"))
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&file)
            .status()
            .map_err(|e| Error::io(format!("running the editor `{editor}`"), e))?;
        if !status.success() {
            return Err(Error::new(
                ErrorKind::CommandFailed,
                format!("the editor `{editor}` failed ({status}): the vault is unchanged"),
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(file.display(), e))?;
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        if body.trim() == initial.trim() {
            return Ok(None);
        }
        if body.trim().is_empty() {
            return Err(Error::usage("the value is empty: the vault is unchanged")
                .with_hint("to set an empty string, use `--value ''`"));
        }
        parse_value(&body, true).map(Some)
    })();
    let _ = std::fs::write(&file, vec![0u8; 64]);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A new directory only the current user can read, in memory where possible.
fn private_dir() -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        });
    let base = base.unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("cchq-secret-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(dir.display(), e))?;
    Ok(dir)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))?;
    f.write_all(data).map_err(|e| Error::io(path.display(), e))
}
