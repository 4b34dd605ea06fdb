//! `ansible-playbook` / `ap`: runs an Ansible playbook (commcare-cloud's provisioning playbooks,
//! which cchq does not replace, or an operator's own) with the environment's inventory, vault,
//! SSH settings and variables, as commcare-cloud's `run_ansible_playbook` does:
//!
//! `ansible-playbook PLAYBOOK -i <inventory> -e @public.yml -e @<generated.yml> [-e @vault.yml
//! --vault-password-file <pipe>] --diff [--limit L,!ansible_skip] [--check] -u <remote user>
//! --ssh-common-args=<the environment's ssh args, its known_hosts> <extra arguments>`
//!
//! Differences: the generated variables (commcare-cloud's `.generated.yml`:
//! [`crate::daily::generated`]) go to a private temporary file; the vault password never reaches a
//! command line, a file or an environment variable: Ansible reads it from a named pipe in a
//! private (0700) temporary directory, written by cchq for as long as the run lasts. A relative
//! playbook that does not exist in the current directory is looked up in the Ansible directory
//! (`--ansible-dir`, `$CCHQ_ANSIBLE_DIR`: commcare-cloud's `src/commcare_cloud/ansible`), whose
//! `ansible.cfg` is then used (`ANSIBLE_CONFIG`).

use std::path::{Path, PathBuf};

use crate::command::join;
use crate::environment::{Environment, InventorySource, Vault};
use crate::error::{Error, ErrorKind, Result};

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The playbook (a path; relative ones are looked up here, then in `ansible_dir`).
    pub playbook: String,
    /// commcare-cloud's Ansible directory (for relative playbooks and its `ansible.cfg`).
    pub ansible_dir: Option<PathBuf>,
    /// `--limit`.
    pub limit: Option<String>,
    /// Add `--check`.
    pub check: bool,
    /// Arguments passed on to `ansible-playbook` as they are.
    pub extra: Vec<String>,
}

/// A ready command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The argv, program first.
    pub argv: Vec<String>,
    /// Variables set for the process (on top of the scrubbed environment).
    pub env: Vec<(String, String)>,
    /// The text of the generated variables file (`argv` names it).
    pub generated: String,
    /// Whether the vault needs its password (`argv` names the pipe).
    pub needs_password: bool,
}

impl Invocation {
    /// The command line as a shell would take it.
    pub fn display(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::command::quote(v)))
            .collect();
        if env.is_empty() {
            join(&self.argv)
        } else {
            format!("{} {}", env.join(" "), join(&self.argv))
        }
    }
}

/// Whether `args` holds one of `names` (`-u`, `--user`, `--user=x`, `-ux`).
pub fn has_arg(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| {
        names.iter().any(|n| {
            a == n
                || (n.starts_with("--") && a.starts_with(&format!("{n}=")))
                || (!n.starts_with("--") && a.len() > 2 && a.starts_with(n))
        })
    })
}

/// Takes `--limit X`, `--limit=X`, `-l X` or `-lX` out of `args` (Ansible would keep only the
/// last `--limit`, so cchq's own, with `!ansible_skip`, must be the only one).
///
/// # Errors
/// A `--limit` without its value, or more than one ([`ErrorKind::Usage`]).
pub fn take_limit(args: &[String]) -> Result<(Option<String>, Vec<String>)> {
    let mut limit = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--limit" || a == "-l" {
            Some(it.next().cloned().ok_or_else(|| {
                Error::usage(format!("`{a}` needs a value")).with_hint("e.g. --limit webworkers")
            })?)
        } else if let Some(v) = a.strip_prefix("--limit=") {
            Some(v.to_owned())
        } else {
            a.strip_prefix("-l")
                .filter(|v| !v.is_empty() && !a.starts_with("--"))
                .map(str::to_owned)
        };
        match value {
            Some(v) if limit.is_some() => {
                return Err(Error::usage(format!(
                    "two limits: `{}` and `{v}`",
                    limit.unwrap_or_default()
                ))
                .with_hint("give one --limit (patterns combine: `a:&b`, `a:!b`)"));
            }
            Some(v) => limit = Some(v),
            None => rest.push(a.clone()),
        }
    }
    Ok((limit, rest))
}

/// The playbook's path: as given when it exists (or is absolute), else under `ansible_dir`.
///
/// # Errors
/// [`ErrorKind::NotFound`] naming every place looked at.
pub fn find_playbook(playbook: &str, ansible_dir: Option<&Path>) -> Result<PathBuf> {
    let p = PathBuf::from(playbook);
    if p.is_file() {
        return Ok(p);
    }
    let mut looked = vec![format!("`{}`", p.display())];
    if p.is_relative()
        && let Some(dir) = ansible_dir
    {
        let q = dir.join(&p);
        if q.is_file() {
            return Ok(q);
        }
        looked.push(format!("`{}`", q.display()));
    }
    Err(Error::new(ErrorKind::NotFound, format!("playbook `{playbook}` not found (looked at {})", looked.join(", "))).with_hint(
        "give the playbook's path, or point --ansible-dir (or $CCHQ_ANSIBLE_DIR) at commcare-cloud's `src/commcare_cloud/ansible`",
    ))
}

/// The generated variables (YAML) commcare-cloud writes to `.generated.yml` for its playbooks
/// ([`crate::daily::generated`]).
///
/// # Errors
/// A users file, app-processes.yml or postgresql.yml failing.
pub fn generated_variables(env: &Environment) -> Result<String> {
    let m = crate::daily::generated::variables(env)?;
    // JSON is YAML; Ansible reads it with `-e @file`.
    serde_json::to_string_pretty(&serde_json::Value::Object(m))
        .map_err(|e| Error::internal(e.to_string()).with_source(e))
}

/// The ssh options for `--ssh-common-args` (commcare-cloud's `get_common_ssh_args`): the
/// environment's `commcare_cloud_ssh_args`, then `UserKnownHostsFile` when it has a
/// `known_hosts` (else `StrictHostKeyChecking=no` when it turns strict checking off).
pub fn ssh_common_args(env: &Environment) -> Vec<String> {
    // Factory auth first, as commcare-cloud's `add_factory_auth_cmd`: the pem as a key.
    let mut args: Vec<String> = match env.pem().filter(|_| env.factory_auth) {
        Some(pem) => vec!["-i".to_owned(), pem.display().to_string()],
        None => Vec::new(),
    };
    args.extend(match env.public_var("commcare_cloud_ssh_args") {
        Some(crate::Value::Sequence(s)) => {
            s.iter().filter_map(crate::yaml::scalar_to_string).collect()
        }
        Some(other) => crate::yaml::scalar_to_string(other).into_iter().collect(),
        None => Vec::new(),
    });
    let given = |name: &str| args.iter().any(|a| a.contains(&format!("{name}=")));
    if let Some(kh) = &env.known_hosts {
        if !given("UserKnownHostsFile") {
            args.extend([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", kh.display()),
            ]);
        }
    } else if env
        .public_var("commcare_cloud_strict_host_key_checking")
        .map(crate::yaml::truthy)
        == Some(false)
        && !given("StrictHostKeyChecking")
    {
        args.extend(["-o".to_owned(), "StrictHostKeyChecking=no".to_owned()]);
    }
    args
}

/// Builds the command line. `generated_path` and `password_pipe` are where the caller puts the
/// generated variables and serves the vault password.
///
/// # Errors
/// A playbook not found; an inventory Ansible cannot read (commcare-cloud's CSV inventory needs
/// its own plugin) or secrets in AWS Secrets Manager ([`ErrorKind::Config`]).
pub fn invocation(
    env: &Environment,
    opts: &Options,
    generated_path: &Path,
    password_pipe: &Path,
) -> Result<Invocation> {
    let playbook = find_playbook(&opts.playbook, opts.ansible_dir.as_deref())?;
    let inventory = match &env.inventory_source {
        InventorySource::Ini(p) | InventorySource::Dir(p) => p.clone(),
        InventorySource::Csv(p) => {
            return Err(Error::config(format!("`{}`: ansible-playbook cannot read commcare-cloud's CSV inventory", p.display()))
                .with_hint("commcare-cloud reads it with its own inventory plugin; run its `commcare-cloud ENV ansible-playbook`, or keep an inventory.ini"));
        }
    };
    let mut argv = vec![
        "ansible-playbook".to_owned(),
        playbook.display().to_string(),
    ];
    argv.extend(["-i".to_owned(), inventory.display().to_string()]);
    argv.extend([
        "-e".to_owned(),
        format!("@{}", env.dir.join("public.yml").display()),
    ]);
    argv.extend(["-e".to_owned(), format!("@{}", generated_path.display())]);
    let mut needs_password = false;
    match &env.vault {
        Vault::Missing => {}
        Vault::Plain(_) => argv.extend([
            "-e".to_owned(),
            format!("@{}", env.dir.join("vault.yml").display()),
        ]),
        Vault::Encrypted(_) => {
            argv.extend([
                "-e".to_owned(),
                format!("@{}", env.dir.join("vault.yml").display()),
            ]);
            argv.push(format!("--vault-password-file={}", password_pipe.display()));
            needs_password = true;
        }
        Vault::Aws(_) => {
            return Err(Error::config(format!("environment `{}` keeps its secrets in AWS Secrets Manager", env.name))
                .with_hint("cchq passes only ansible-vault secrets to Ansible; run commcare-cloud's `ansible-playbook` (its lookup plugin reads AWS) for this environment"));
        }
    }
    argv.push("--diff".to_owned());
    // A limit among the arguments for ansible-playbook (`ap site.yml --limit=proxy`, as
    // commcare-cloud takes it anywhere) is cchq's limit too.
    let (extra_limit, extra) = take_limit(&opts.extra)?;
    let given = match (&opts.limit, extra_limit) {
        (Some(a), Some(b)) => {
            return Err(Error::usage(format!("two limits: `{a}` and `{b}`"))
                .with_hint("give one --limit (patterns combine: `a:&b`, `a:!b`)"));
        }
        (a, b) => a.clone().or(b),
    };
    let mut limit: Vec<String> = given
        .iter()
        .flat_map(|l| l.split([',', ':']))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if env.inventory.group_hosts("ansible_skip").is_some() {
        limit.push("!ansible_skip".to_owned());
    }
    if !limit.is_empty() {
        argv.extend(["--limit".to_owned(), limit.join(",")]);
    }
    if opts.check && !has_arg(&extra, &["-C", "--check"]) {
        argv.push("--check".to_owned());
    }
    if !has_arg(&extra, &["-u", "--user"]) {
        argv.extend(["-u".to_owned(), env.login_user()]);
    }
    let ssh = ssh_common_args(env);
    if !ssh.is_empty() {
        argv.push(format!("--ssh-common-args={}", join(&ssh)));
    }
    argv.extend(extra);
    let mut vars = Vec::new();
    if let Some(dir) = &opts.ansible_dir {
        let cfg = dir.join("ansible.cfg");
        if cfg.is_file() {
            vars.push(("ANSIBLE_CONFIG".to_owned(), cfg.display().to_string()));
        }
    }
    Ok(Invocation {
        argv,
        env: vars,
        generated: generated_variables(env)?,
        needs_password,
    })
}

/// Where `program` is on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

/// The error when `ansible-playbook` is not installed.
pub fn not_installed() -> Error {
    Error::new(ErrorKind::NotFound, "`ansible-playbook` is not installed on this machine (not on PATH)").with_hint(
        "install Ansible, e.g. `python3 -m venv ~/.venvs/ansible && ~/.venvs/ansible/bin/pip install ansible-core`, then put ~/.venvs/ansible/bin on PATH",
    )
}

/// `O_NONBLOCK` on Linux.
const O_NONBLOCK: i32 = 0o4000;

/// A private (0700) temporary directory for one run: the generated variables and the password
/// pipe. Removed when dropped.
#[derive(Debug)]
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    /// Makes the directory.
    ///
    /// # Errors
    /// It cannot be made ([`ErrorKind::Io`]).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cchq-ansible.")
            .tempdir()
            .map_err(|e| Error::io("cannot make a temporary directory", e))?;
        Ok(Self { dir })
    }

    /// Where the generated variables go.
    pub fn generated(&self) -> PathBuf {
        self.dir.path().join("generated.yml")
    }

    /// Where the password pipe goes.
    pub fn pipe(&self) -> PathBuf {
        self.dir.path().join("vault-password")
    }

    /// Writes the generated variables.
    ///
    /// # Errors
    /// The file cannot be written ([`ErrorKind::Io`]).
    pub fn write_generated(&self, text: &str) -> Result<()> {
        std::fs::write(self.generated(), text)
            .map_err(|e| Error::io(format!("cannot write `{}`", self.generated().display()), e))
    }
}

/// Serves `password` once on a named pipe: the first open of the pipe for reading gets the
/// password and end of file (Ansible reads a `--vault-password-file` once, when it starts).
/// Dropped: the pipe goes.
pub struct PasswordPipe {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PasswordPipe {
    /// Makes the pipe at `path` (`mkfifo`, mode 0600; put it in a [`Workdir`]) and starts serving.
    ///
    /// # Errors
    /// The pipe cannot be made ([`ErrorKind::Io`]).
    pub fn serve(path: &Path, password: crate::vault::Password) -> Result<Self> {
        let status = crate::vault::scrub_env(&mut std::process::Command::new("mkfifo"))
            .arg("-m")
            .arg("600")
            .arg(path)
            .status()
            .map_err(|e| Error::io("cannot run `mkfifo`", e))?;
        if !status.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("`mkfifo {}` failed", path.display()),
            ));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let p = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            use std::io::Write as _;
            let mut data = password;
            data.push(b'\n');
            // (Zeroed when dropped.)
            // The open for writing waits for the reader (Ansible reads the file once, when it
            // starts); `Drop` opens one itself to end the wait when nobody came.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&p)
                && !flag.load(std::sync::atomic::Ordering::SeqCst)
            {
                let _ = f.write_all(&data);
            }
            drop(data);
        });
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The pipe's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PasswordPipe {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the writer blocked in its open: a non-blocking open for reading never waits.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Environment {
        crate::fixture_env(name)
    }

    #[test]
    fn the_command_line_carries_the_environment() {
        let env = env("test");
        let dir = tempfile::tempdir().unwrap();
        let pb = dir.path().join("site.yml");
        std::fs::write(&pb, "- hosts: all\n").unwrap();
        let opts = Options {
            playbook: pb.display().to_string(),
            limit: Some("webworkers:celery".into()),
            check: true,
            ..Options::default()
        };
        let inv = invocation(&env, &opts, Path::new("/tmp/g.yml"), Path::new("/tmp/pw")).unwrap();
        let a = &inv.argv;
        assert_eq!(a[0], "ansible-playbook");
        assert_eq!(a[1], pb.display().to_string());
        let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone());
        assert!(at("-i").unwrap().ends_with("test/inventory.ini"));
        assert_eq!(at("--limit").unwrap(), "webworkers,celery");
        assert_eq!(at("-u").unwrap(), "admin");
        assert!(a.contains(&"--check".to_owned()) && a.contains(&"--diff".to_owned()));
        assert!(
            a.iter()
                .any(|x| x.ends_with("test/public.yml") && x.starts_with('@'))
        );
        assert!(a.contains(&"@/tmp/g.yml".to_owned()));
        // The test vault is plaintext: given, no password.
        assert!(a.iter().any(|x| x.ends_with("test/vault.yml")));
        assert!(!inv.needs_password && !a.iter().any(|x| x.starts_with("--vault-password-file")));
        // Its ssh args, then StrictHostKeyChecking=no (no known_hosts? it has one: then that file).
        let ssh = a
            .iter()
            .find(|x| x.starts_with("--ssh-common-args="))
            .unwrap();
        assert!(ssh.contains("ProxyCommand=ssh"), "{ssh}");
        assert!(ssh.contains("UserKnownHostsFile="), "{ssh}");
        let g: serde_json::Value = serde_json::from_str(&inv.generated).unwrap();
        assert_eq!(g["deploy_env"], "test");
        assert!(g["postgresql_dbs"]["all"].as_array().unwrap().len() >= 3);
    }

    /// `--use-factory-auth`, as commcare-cloud's `add_factory_auth_cmd` and `get_user_arg`: the
    /// pem first among the ssh arguments, `-u` the factory user.
    #[test]
    fn factory_auth_passes_the_pem_and_the_factory_user() {
        let tmp = tempfile::tempdir().unwrap();
        let pem = tmp.path().join("factory.pem");
        std::fs::write(&pem, "key").unwrap();
        let mut env = env("development");
        env.public.insert(
            "commcare_cloud_pem".into(),
            crate::Value::String(pem.display().to_string()),
        );

        let pb = tmp.path().join("site.yml");
        std::fs::write(&pb, "- hosts: all\n").unwrap();
        let opts = Options {
            playbook: pb.display().to_string(),
            ..Options::default()
        };
        let plain = invocation(&env, &opts, Path::new("/g"), Path::new("/p")).unwrap();
        assert!(
            !plain
                .argv
                .iter()
                .any(|a| a.contains(&pem.display().to_string())),
            "{:?}",
            plain.argv
        );
        env.use_factory_auth().unwrap();
        let inv = invocation(&env, &opts, Path::new("/g"), Path::new("/p")).unwrap();
        let a = &inv.argv;
        let at = |flag: &str| a.iter().position(|x| x == flag).map(|i| a[i + 1].clone());
        assert_eq!(at("-u").unwrap(), env.login_user());
        let ssh = a
            .iter()
            .find(|x| x.starts_with("--ssh-common-args="))
            .unwrap();
        assert!(
            ssh.starts_with(&format!("--ssh-common-args=-i {}", pem.display())),
            "{ssh}"
        );
    }

    #[test]
    fn a_user_given_by_hand_wins_and_extra_args_come_last() {
        let env = env("test");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy_stack.yml"), "- hosts: all\n").unwrap();
        let opts = Options {
            playbook: "deploy_stack.yml".into(),
            ansible_dir: Some(dir.path().to_owned()),
            extra: vec!["--user=root".into(), "--tags".into(), "users".into()],
            ..Options::default()
        };
        let inv = invocation(&env, &opts, Path::new("/g"), Path::new("/p")).unwrap();
        assert!(!inv.argv.contains(&"-u".to_owned()));
        assert_eq!(
            &inv.argv[inv.argv.len() - 3..],
            ["--user=root", "--tags", "users"]
        );
        assert_eq!(
            inv.argv[1],
            dir.path().join("deploy_stack.yml").display().to_string()
        );
    }

    #[test]
    fn a_limit_among_ansible_s_arguments_is_the_only_limit() {
        let env = env("test");
        let dir = tempfile::tempdir().unwrap();
        let pb = dir.path().join("p.yml");
        std::fs::write(&pb, "- hosts: all\n").unwrap();
        let with = |limit: Option<&str>, extra: &[&str]| {
            let opts = Options {
                playbook: pb.display().to_string(),
                limit: limit.map(str::to_owned),
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
                ..Options::default()
            };
            invocation(&env, &opts, Path::new("/g"), Path::new("/p"))
        };
        for extra in [
            &["--limit=proxy", "-v"][..],
            &["--limit", "proxy", "-v"],
            &["-l", "proxy", "-v"],
            &["-lproxy", "-v"],
        ] {
            let inv = with(None, extra).unwrap();
            assert_eq!(
                inv.argv
                    .iter()
                    .filter(|a| a.starts_with("--limit") || a.starts_with("-l"))
                    .count(),
                1,
                "{extra:?}: {:?}",
                inv.argv
            );
            let i = inv.argv.iter().position(|a| a == "--limit").unwrap();
            assert_eq!(inv.argv[i + 1], "proxy");
            assert_eq!(inv.argv.last().unwrap(), "-v");
        }
        assert_eq!(
            with(Some("web"), &["--limit=proxy"]).unwrap_err().kind(),
            ErrorKind::Usage
        );
        assert_eq!(
            with(None, &["--limit"]).unwrap_err().kind(),
            ErrorKind::Usage
        );
    }

    #[test]
    fn a_missing_playbook_names_where_it_looked() {
        let e = find_playbook("nope.yml", Some(Path::new("/opt/cc/ansible"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("/opt/cc/ansible/nope.yml"), "{e}");
    }

    #[test]
    fn the_password_pipe_serves_its_reader_and_goes_away() {
        let w = Workdir::new().unwrap();
        let pipe = PasswordPipe::serve(&w.pipe(), b"s3cret".to_vec().into()).unwrap();
        let p = pipe.path().to_owned();
        let meta = std::fs::metadata(&p).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"s3cret\n");
        drop(pipe);
        assert!(!p.exists());
        // Never read: dropping does not hang.
        drop(PasswordPipe::serve(&w.pipe(), b"x".to_vec().into()).unwrap());
    }
}
