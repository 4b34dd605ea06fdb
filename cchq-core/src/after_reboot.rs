//! `after-reboot`: what brings a rebooted host back, as commcare-cloud's `after-reboot` tag does:
//! unlock the encrypted data volume where the host has one (`root_encryption_mode: ecryptfs`),
//! make sure supervisord runs and its programs are started, start the host's other services.

use serde::Serialize;

use crate::command::{RemoteCommand, quote};
use crate::environment::{Environment, Vault};
use crate::error::{Error, ErrorKind, Result};
use crate::services::{ServiceBackend, catalog, supervisor};
use crate::transport::Transport;
use crate::{Value, yaml};

/// The directory commcare-cloud encrypts with ecryptfs.
pub const ENCRYPTED_ROOT: &str = "/opt/data";

/// One step's outcome on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The step.
    pub step: String,
    /// Whether it succeeded (or had nothing to do).
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// The outcome on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// The host.
    pub host: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The supervisor programs' states at the end.
    pub programs: Vec<supervisor::ProgramStatus>,
}

impl HostReport {
    /// Whether every step worked and every program runs.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
            && self.programs.iter().all(supervisor::ProgramStatus::running)
    }
}

/// The host's `root_encryption_mode` (host vars over `public.yml`), `none` when unset.
pub fn encryption_mode(env: &Environment, host: &str) -> String {
    env.inventory
        .host_vars(host)
        .get("root_encryption_mode")
        .or_else(|| env.public_var("root_encryption_mode"))
        .and_then(yaml::scalar_to_string)
        .unwrap_or_else(|| "none".to_owned())
}

/// The ecryptfs passphrase from the vault (`secrets.ECRYPTFS_PASSWORD`).
pub fn ecryptfs_password(env: &Environment, vault: Option<&Value>) -> Result<String> {
    let v = match (vault, &env.vault) {
        (Some(v), _) | (None, Vault::Plain(v)) => v,
        (None, Vault::Encrypted(_)) => {
            return Err(Error::new(
                ErrorKind::Vault,
                "the vault is encrypted and no password was given",
            )
            .with_hint("set ANSIBLE_VAULT_PASSWORD"));
        }
        (None, Vault::Aws(a)) => {
            return Err(Error::new(
                ErrorKind::Vault,
                format!(
                    "the secrets of `{}` (AWS Secrets Manager, `{}/...`) were not fetched",
                    env.name, a.prefix
                ),
            )
            .with_hint("fetch them first (`Environment::vault_value`)"));
        }
        (None, Vault::Missing) => {
            return Err(Error::config(format!(
                "environment `{}` has no vault.yml with `secrets.ECRYPTFS_PASSWORD`",
                env.name
            )));
        }
    };
    v.get("secrets")
        .and_then(|s| s.get("ECRYPTFS_PASSWORD"))
        .and_then(yaml::scalar_to_string)
        .ok_or_else(|| {
            Error::config("the vault has no `secrets.ECRYPTFS_PASSWORD`")
                .with_hint("add it to vault.yml")
        })
}

/// The commands that mount the ecryptfs data volume, as commcare-cloud's role runs them. The
/// passphrase travels on stdin only, in a command marked secret: never in logs, never in any
/// process's argv (`ps` on the host) nor in a file on disk. The shell's `printf` builtin hands it
/// to `ecryptfs-add-passphrase` and, as `passphrase_passwd=...`, to `mount.ecryptfs`, which reads
/// it from its standard input (`key=passphrase:passphrase_passwd_fd=0`).
pub fn ecryptfs_command(password: &str) -> RemoteCommand {
    let root = quote(ENCRYPTED_ROOT);
    let script = format!(
        "set -e; if grep -q {root}' ecryptfs' /etc/mtab; then echo 'already mounted'; exit 0; fi; mkdir -p {root}; \
         pw=$(cat); sig=$(printf '%s' \"$pw\" | ecryptfs-add-passphrase | sed -n 's/.*\\[\\(.*\\)\\].*/\\1/p' | tail -n1); \
         printf '%s=%s\\n' passphrase_passwd \"$pw\" | \
         mount -t ecryptfs -o \"key=passphrase:passphrase_passwd_fd=0,ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_unlink_sigs,ecryptfs_enable_filename_crypto=y,ecryptfs_passthrough=n,ecryptfs_fnek_sig=$sig,no_sig_cache\" {root} {root}; \
         echo mounted"
    );
    RemoteCommand::shell(script)
        .become_user("root")
        .stdin(password.as_bytes().to_vec())
        .secret()
}

/// Starts supervisord when it is not answering on `socket` (systemd, SysV service, or directly;
/// after waiting for one that is still shutting down); prints what it did. The environment's
/// programs are started afterwards, by name ([`run`]): never `start all`, which would start
/// other environments' programs on a shared host too.
pub fn supervisor_command(socket: &str) -> RemoteCommand {
    RemoteCommand::shell(format!(
        "s={s}; up() {{ supervisorctl -s \"unix://$s\" pid >/dev/null 2>&1; }}; \
         if ! up; then \
           i=0; while pgrep -x supervisord >/dev/null && [ $i -lt 300 ]; do sleep 0.5; i=$((i+1)); done; \
           (systemctl start supervisor 2>/dev/null || service supervisor start 2>/dev/null || supervisord -c /etc/supervisor/supervisord.conf) >/dev/null 2>&1; \
           for i in 1 2 3 4 5 6 7 8 9 10; do up && break; sleep 0.5; done; \
           if up; then echo 'supervisord started'; else echo \"supervisord does not answer at $s\"; exit 1; fi; \
         else echo 'supervisord running'; fi",
        s = quote(socket)
    ))
    .become_user("root")
}

/// Starts a system service (its systemd unit, or its init script on a host without systemd) or
/// monit service where it is installed: what its backend says
/// ([`ServiceBackend::start_after_reboot`]); `None` for supervisor programs, which [`run`] starts
/// after supervisord.
pub fn unit_start_command(backend: &dyn ServiceBackend) -> Option<RemoteCommand> {
    backend.start_after_reboot()
}

/// Runs the after-reboot steps on `hosts`, all in parallel.
pub async fn run(
    env: &Environment,
    transport: &dyn Transport,
    hosts: &[String],
    vault: Option<&Value>,
) -> Vec<(String, Result<HostReport>)> {
    let cat = catalog(env);
    let futs = hosts.iter().map(|host| {
        let cat = &cat;
        async move {
            let res: Result<HostReport> = async {
                let mut steps = Vec::new();
                if encryption_mode(env, host) == "ecryptfs" {
                    let pw = ecryptfs_password(env, vault)?;
                    let out = transport.exec(host, &ecryptfs_command(&pw)).await?;
                    let detail = if out.success() {
                        out.stdout_str().trim().to_owned()
                    } else {
                        crate::redact::mask(&out.stderr_str(), &[&pw])
                            .trim()
                            .to_owned()
                    };
                    steps.push(Step {
                        step: format!("unlock {ENCRYPTED_ROOT} (ecryptfs)"),
                        ok: out.success(),
                        detail,
                    });
                }
                let socket = &env.profile.supervisor_socket;
                let out = transport.exec(host, &supervisor_command(socket)).await?;
                let head = format!("{}{}", out.stdout_str().trim(), out.stderr_str().trim());
                steps.push(Step {
                    step: "supervisord".into(),
                    ok: out.success(),
                    detail: head,
                });
                // This environment's programs, by name; only theirs are reported.
                let names: Vec<String> = crate::services::programs::programs_for_host(env, host)
                    .into_iter()
                    .map(|p| p.name)
                    .collect();
                let mut programs = Vec::new();
                if out.success() && !names.is_empty() {
                    match supervisor::call(transport, host, socket, "start", &names).await {
                        Ok((said, states)) => {
                            let states =
                                crate::services::settle(transport, host, socket, &names, states)
                                    .await;
                            steps.push(Step {
                                step: "start programs".into(),
                                ok: said.is_empty(),
                                detail: said.trim().replace('\n', "; "),
                            });
                            programs = names
                                .iter()
                                .map(|n| supervisor::ProgramStatus::of(&states, n))
                                .collect();
                        }
                        Err(e) if e.kind() == ErrorKind::Connection => return Err(e),
                        Err(e) => steps.push(Step {
                            step: "start programs".into(),
                            ok: false,
                            detail: e.message().to_owned(),
                        }),
                    }
                }
                for svc in cat {
                    let Some(cmd) = unit_start_command(svc.backend.as_ref()) else {
                        continue;
                    };
                    let on_host = env
                        .inventory
                        .select(&svc.hosts)
                        .is_ok_and(|s| s.hosts.iter().any(|h| h == host));
                    if on_host {
                        let out = transport.exec(host, &cmd).await?;
                        steps.push(Step {
                            step: format!("start {}", svc.name),
                            ok: out.success(),
                            detail: format!(
                                "{}{}",
                                out.stdout_str().trim(),
                                out.stderr_str().trim()
                            ),
                        });
                    }
                }
                Ok(HostReport {
                    host: host.clone(),
                    steps,
                    programs,
                })
            }
            .await;
            (host.clone(), res)
        }
    });
    crate::fanout::bounded(futs, crate::fanout::DEFAULT_FORKS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ecryptfs_passphrase_never_shows() {
        let cmd = ecryptfs_command("s3cret-passphrase");
        assert!(!cmd.to_string().contains("s3cret"));
        assert!(!format!("{cmd:?}").contains("s3cret"));
        assert!(
            !cmd.to_shell().contains("s3cret"),
            "the passphrase goes on stdin, not in the command line"
        );
        assert_eq!(cmd.stdin_data(), Some(&b"s3cret-passphrase"[..]));
        assert!(cmd.to_shell().contains("mount -t ecryptfs"));
        // Nor does it go in `mount`'s options (its argv, which `ps` shows): mount.ecryptfs reads it from fd 0.
        let script = &cmd.argv()[2];
        assert!(
            script.contains("key=passphrase:passphrase_passwd_fd=0,"),
            "{script}"
        );
        assert!(
            !script.contains("passphrase_passwd="),
            "no `passphrase_passwd=<value>` on a command line: {script}"
        );
        assert!(
            !cmd.to_shell().contains("passphrase_passwd="),
            "{}",
            cmd.to_shell()
        );
    }

    /// The mount script run with stand-ins for `grep`, `mkdir`, `ecryptfs-add-passphrase` and
    /// `mount` that record their arguments and standard input: the passphrase reaches both
    /// programs on stdin, and neither's argv.
    #[cfg(unix)]
    #[test]
    fn the_ecryptfs_passphrase_reaches_mount_on_stdin_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fakes = [
            ("grep", "exit 1"),
            ("mkdir", "exit 0"),
            (
                "ecryptfs-add-passphrase",
                "echo \"$*\" > \"$OUT/add.args\"; cat > \"$OUT/add.stdin\"; echo 'Inserted auth tok with sig [0123456789abcdef] into the user session keyring'",
            ),
            (
                "mount",
                "echo \"$*\" > \"$OUT/mount.args\"; cat > \"$OUT/mount.stdin\"",
            ),
        ];
        for (name, body) in fakes {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cmd = ecryptfs_command("s3cret pass'phrase");
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd.argv()[2])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("OUT", tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), cmd.stdin_data().unwrap())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mounted"),
            "{out:?}"
        );
        let read = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap();
        assert_eq!(read("add.stdin"), "s3cret pass'phrase");
        assert_eq!(
            read("mount.stdin"),
            "passphrase_passwd=s3cret pass'phrase\n"
        );
        let args = read("mount.args");
        assert!(
            !args.contains("s3cret") && !read("add.args").contains("s3cret"),
            "{args}"
        );
        assert!(
            args.contains("key=passphrase:passphrase_passwd_fd=0,")
                && args.contains("ecryptfs_fnek_sig=0123456789abcdef,"),
            "{args}"
        );
    }

    /// A non-default `supervisor_socket` (cchq.yml): supervisord is checked and the programs are
    /// started on that socket, by name; never the default socket, never `start all`.
    #[tokio::test]
    async fn after_reboot_uses_the_configured_supervisor_socket() {
        use crate::transport::Output;
        use crate::transport::memory::MemoryTransport;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("development");
        std::fs::create_dir(&dir).unwrap();
        for entry in
            std::fs::read_dir(cchq_testsupport::fixtures::environment("development")).unwrap()
        {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        std::fs::write(dir.join("cchq.yml"), "supervisor_socket: /run/x.sock\n").unwrap();
        let env = Environment::load(tmp.path(), "development").unwrap();
        assert_eq!(env.profile.supervisor_socket, "/run/x.sock");
        let host = "192.168.33.15";
        let names: Vec<String> = crate::services::programs::programs_for_host(&env, host)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(!names.is_empty());
        let t = MemoryTransport::new([host]);
        t.respond(
            None,
            "systemctl",
            Output::new(0, "not managed here (no systemd unit or init script)\n", ""),
        );
        t.respond(
            None,
            "monit",
            Output::new(0, "not managed here (no monit)\n", ""),
        );
        t.respond(
            None,
            "supervisorctl",
            Output::new(0, "supervisord running\n", ""),
        );
        let states: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "RUNNING")).collect();
        t.respond(
            None,
            "supervisor.startProcess",
            Output::new(0, supervisor::fake_answer(&states), ""),
        );
        let res = run(&env, &t, &[host.to_owned()], None).await;
        let report = res[0].1.as_ref().unwrap();
        assert!(report.ok(), "{report:#?}");
        let supervisor_cmds: Vec<String> = t
            .calls()
            .into_iter()
            .map(|c| c.command.to_shell())
            .filter(|s| s.contains("supervisor"))
            .collect();
        assert!(supervisor_cmds.len() >= 2, "{supervisor_cmds:?}");
        for c in &supervisor_cmds {
            assert!(
                c.contains("/run/x.sock"),
                "not on the configured socket: {c}"
            );
            assert!(
                !c.contains(supervisor::DEFAULT_SOCKET),
                "the default socket: {c}"
            );
            assert!(
                !c.contains("start all") && !c.contains("AllProcesses"),
                "never `start all`: {c}"
            );
        }
        assert!(
            supervisor_cmds[0].contains("supervisorctl -s \"unix://$s\"")
                && supervisor_cmds[0].contains("s=/run/x.sock")
        );
        assert!(
            supervisor_cmds
                .iter()
                .any(|c| c.contains("supervisor.startProcess") && c.contains(&names[0])),
            "{supervisor_cmds:?}"
        );
    }

    #[tokio::test]
    async fn ecryptfs_hosts_are_unlocked_before_supervisor() {
        use crate::transport::{MockTransport, Output};
        let mut env = crate::fixture_env("development");
        env.public.insert(
            "root_encryption_mode".into(),
            Value::String("ecryptfs".into()),
        );
        let mut mock = MockTransport::new();
        let mut seq = mockall::Sequence::new();
        mock.expect_exec()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|_, c| c.is_secret() && c.to_shell().contains("ecryptfs"))
            .returning(|_, _| Ok(Output::new(0, "mounted\n", "")));
        mock.expect_exec()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|_, c| {
                c.to_shell().contains("supervisorctl -s") && !c.to_shell().contains("start all")
            })
            .returning(|_, _| Ok(Output::new(0, "supervisord running\n", "")));
        mock.expect_exec()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|_, c| {
                c.to_shell().contains("supervisor.startProcess")
                    && !c.to_shell().contains("AllProcesses")
            })
            .returning(|_, _| {
                let names = [
                    "commcare-hq-dev-django",
                    "commcare-hq-dev-formsplayer-spring",
                ];
                Ok(Output::new(
                    0,
                    supervisor::fake_answer(&names.map(|n| (n, "RUNNING"))),
                    "",
                ))
            });
        mock.expect_exec()
            .returning(|_, _| Ok(Output::new(0, "not managed here (no systemd unit)\n", "")));
        let res = run(&env, &mock, &["192.168.33.15".to_owned()], None).await;
        let report = res[0].1.as_ref().unwrap();
        assert_eq!(report.steps[0].step, "unlock /opt/data (ecryptfs)");
        assert!(report.ok(), "{report:#?}");
    }
}
