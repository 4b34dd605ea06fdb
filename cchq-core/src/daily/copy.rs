//! `copy-files` / `scp`: one file between this machine (the controller) and hosts, or from one
//! host to others through the controller, over the environment's own connections (its users,
//! keys, `known_hosts` and ssh settings) and with `become` to read or write as another user.
//!
//! An endpoint is `SERVER:PATH` (a host, `group[N]`, `-` for `django_manage[0]`; as a target, a
//! group without an index is every host of it) or a local path (one with a `/` before any `:`,
//! or no `:` at all). As commcare-cloud's `scp`: when neither side names a server, the source is
//! on `django_manage[0]`. A target that ends with `/`, or is a directory, gets the source's file
//! name. The file keeps its permission bits unless a mode is given. The whole file passes
//! through the controller's memory: this is for configuration files, dumps of a few hundred MB
//! at most, not for data migrations.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::inventory::ServerSpec;
use crate::transport::{ReadOptions, Transport, WriteOptions};

/// One side of a copy, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine.
    Local(PathBuf),
    /// A path on the hosts a server spec names.
    Remote {
        /// The server spec (`webworkers[0]`, `-`, a host).
        server: String,
        /// The path there.
        path: String,
    },
}

impl Endpoint {
    /// Reads `SERVER:PATH` or a local path.
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for an empty path or server, or a `user@` (cchq logs in as the
    /// environment says; `--become-user` reads and writes as another user).
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::usage("an empty path").with_hint("give a local path or SERVER:PATH"));
        }
        match text.split_once(':') {
            Some((server, path)) if !server.contains('/') => {
                if server.is_empty() {
                    return Err(Error::usage(format!("`{text}` names no server before `:`"))
                        .with_hint("write SERVER:PATH (e.g. `webworkers[0]:/tmp/x`), or `./{text}` for a local file"));
                }
                if server.contains('@') {
                    return Err(Error::usage(format!(
                        "`{text}`: cchq logs in as the environment's user, not `{server}`"
                    ))
                    .with_hint(
                        "drop the `user@`; --become-user USER reads or writes the file as USER",
                    ));
                }
                if path.is_empty() {
                    return Err(Error::usage(format!("`{text}` names no path after `:`"))
                        .with_hint("write SERVER:PATH, e.g. `-:/tmp/dump.sql`"));
                }
                Ok(Self::Remote {
                    server: server.to_owned(),
                    path: path.to_owned(),
                })
            }
            _ => Ok(Self::Local(PathBuf::from(text))),
        }
    }
}

/// A resolved place: this machine, or a path on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The inventory host; `None` for this machine.
    pub host: Option<String>,
    /// The path.
    pub path: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{h}:{}", self.path),
            None => write!(f, "{}", self.path),
        }
    }
}

/// What to copy where, resolved against the inventory before anything is read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The source (one host, or this machine).
    pub source: Place,
    /// The targets (this machine, or every host a target spec names).
    pub targets: Vec<Place>,
}

/// Resolves `source` and `target` (see the module's documentation).
///
/// # Errors
/// Both local with a source that is not on `django_manage[0]` cannot happen (the default);
/// a source spec naming several hosts ([`ErrorKind::Usage`]); unknown servers (their
/// [`ErrorKind::NotFound`] / [`ErrorKind::Pattern`]); a target that would be the source.
pub fn plan(env: &Environment, source: &Endpoint, target: &Endpoint) -> Result<Plan> {
    let source = match (source, target) {
        (Endpoint::Local(p), Endpoint::Local(_)) => Endpoint::Remote {
            server: "-".to_owned(),
            path: p.display().to_string(),
        },
        (s, _) => s.clone(),
    };
    let src = match &source {
        Endpoint::Local(p) => Place {
            host: None,
            path: p.display().to_string(),
        },
        Endpoint::Remote { server, path } => {
            let spec = ServerSpec::parse(server)?;
            let hosts = env.inventory.resolve_all(&spec)?;
            if hosts.len() != 1 {
                return Err(Error::usage(format!(
                    "the source `{server}` is {} hosts: {}",
                    hosts.len(),
                    hosts.join(", ")
                ))
                .with_hint(format!("copy from one host, e.g. `{server}[0]:{path}`")));
            }
            Place {
                host: Some(hosts[0].clone()),
                path: path.clone(),
            }
        }
    };
    let targets = match target {
        Endpoint::Local(p) => vec![Place {
            host: None,
            path: p.display().to_string(),
        }],
        Endpoint::Remote { server, path } => {
            let spec = ServerSpec::parse(server)?;
            env.inventory
                .resolve_all(&spec)?
                .into_iter()
                .map(|h| Place {
                    host: Some(h),
                    path: path.clone(),
                })
                .collect()
        }
    };
    if targets
        .iter()
        .any(|t| t.host == src.host && t.path == src.path)
    {
        return Err(
            Error::usage(format!("`{src}` is both the source and a target"))
                .with_hint("give another target path"),
        );
    }
    Ok(Plan {
        source: src,
        targets,
    })
}

/// How files are read and written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Read and write on hosts as this user (`sudo`); `None`: the login user.
    pub become_user: Option<String>,
    /// The target's permission bits; `None`: the source's.
    pub mode: Option<u32>,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Where from.
    pub source: String,
    /// Where to (a directory target has the file name added).
    pub target: String,
    /// How many bytes.
    pub bytes: usize,
    /// The mode written, in octal.
    pub mode: String,
}

fn file_name(path: &str) -> Result<&str> {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::usage(format!("`{path}` names no file"))
                .with_hint("give the path of a file, not a directory")
        })
}

/// The mode and kind of a path on a host: `f 644`, `d 755`, or nothing when it does not exist.
fn stat_command(path: &str, become_user: Option<&str>) -> RemoteCommand {
    RemoteCommand::shell(format!(
        "p={p}; if [ -d \"$p\" ]; then printf 'd %s\\n' \"$(stat -c %a \"$p\")\"; \
         elif [ -e \"$p\" ]; then printf 'f %s\\n' \"$(stat -c %a \"$p\")\"; fi",
        p = quote(path)
    ))
    .maybe_become(become_user)
    .without_login()
}

async fn remote_stat(
    t: &dyn Transport,
    host: &str,
    path: &str,
    become_user: Option<&str>,
) -> Result<Option<(bool, u32)>> {
    let cmd = stat_command(path, become_user);
    let out = t.exec(host, &cmd).await?.check(host, &cmd)?;
    let text = out.stdout_str();
    let Some((kind, mode)) = text.trim().split_once(' ') else {
        return Ok(None);
    };
    Ok(Some((
        kind == "d",
        u32::from_str_radix(mode, 8).unwrap_or(0o644),
    )))
}

/// Copies the file: reads the source once (refusing a directory or a missing file before anything
/// is written), then writes it to every target (atomically: a temporary file, then a rename).
///
/// # Errors
/// A missing source or a directory ([`ErrorKind::NotFound`] / [`ErrorKind::Usage`], nothing
/// written); connection and permission errors naming the host and path. Targets written before
/// a failing one stay written; the error names the one that failed.
pub async fn copy(transport: &dyn Transport, plan: &Plan, opts: &Options) -> Result<Vec<Copied>> {
    let become_user = opts.become_user.as_deref();
    let src = &plan.source;
    let (data, src_mode) = match &src.host {
        None => {
            let p = Path::new(&src.path);
            let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::new(
                    ErrorKind::NotFound,
                    format!("`{}` does not exist on this machine", src.path),
                ),
                _ => Error::io(format!("cannot read `{}`", src.path), e),
            })?;
            if meta.is_dir() {
                return Err(Error::usage(format!("`{}` is a directory", src.path))
                    .with_hint("copy-files copies one file; make a tar file first"));
            }
            let data = std::fs::read(p)
                .map_err(|e| Error::io(format!("cannot read `{}`", src.path), e))?;
            (
                data,
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            )
        }
        Some(host) => {
            let (is_dir, mode) = remote_stat(transport, host, &src.path, become_user)
                .await?
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("`{}` does not exist on `{host}`", src.path),
                    )
                })?;
            if is_dir {
                return Err(Error::usage(format!("`{src}` is a directory"))
                    .with_hint("copy-files copies one file; make a tar file first"));
            }
            let ro = ReadOptions {
                become_user: opts.become_user.clone(),
            };
            let data = transport
                .read_file(host, &src.path, &ro)
                .await?
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("`{}` does not exist on `{host}`", src.path),
                    )
                })?;
            (data, mode)
        }
    };
    let mode = opts.mode.unwrap_or(src_mode);
    let name = file_name(&src.path)?;
    let mut done = Vec::new();
    for t in &plan.targets {
        let path = match &t.host {
            None => {
                let p = Path::new(&t.path);
                let path = if t.path.ends_with('/') || p.is_dir() {
                    p.join(name)
                } else {
                    p.to_path_buf()
                };
                write_local(&path, &data, mode)?;
                path.display().to_string()
            }
            Some(host) => {
                let dir = t.path.ends_with('/')
                    || remote_stat(transport, host, &t.path, become_user)
                        .await?
                        .is_some_and(|(d, _)| d);
                let path = if dir {
                    format!("{}/{name}", t.path.trim_end_matches('/'))
                } else {
                    t.path.clone()
                };
                let wo = WriteOptions {
                    mode: Some(mode),
                    become_user: opts.become_user.clone(),
                };
                transport
                    .write_file(host, &path, &data, &wo)
                    .await
                    .map_err(|e| e.context(format!("writing `{host}:{path}`")))?;
                format!("{host}:{path}")
            }
        };
        done.push(Copied {
            source: src.to_string(),
            target: path,
            bytes: data.len(),
            mode: format!("{mode:04o}"),
        });
    }
    Ok(done)
}

/// Writes a local file atomically (a temporary file beside it, then a rename) with `mode`.
fn write_local(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cchq-copy.")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot write in `{}`", dir.display()), e))?;
    tmp.write_all(data)
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(|e| Error::io(format!("cannot set the mode of `{}`", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Output;
    use crate::transport::memory::MemoryTransport;

    fn env() -> Environment {
        crate::fixture_env("test")
    }

    fn fleet(env: &Environment) -> MemoryTransport {
        let t = MemoryTransport::new(env.inventory.hosts().map(|h| h.name.clone()));
        // `stat`: `/tmp` and `/srv` are directories, two known files are 0640 files, nothing
        // else exists.
        t.respond_with(None, move |c| {
            let s = c.inner_shell();
            if !s.contains("stat -c %a") {
                return None;
            }
            let kind = |p: &str| s.contains(&format!("p={p};"));
            Some(Output::new(
                0,
                if kind("/tmp") || kind("/srv") {
                    "d 755\n"
                } else if kind("/etc/app.conf") || kind("/tmp/dump.sql") {
                    "f 640\n"
                } else {
                    ""
                },
                "",
            ))
        });
        t
    }

    #[test]
    fn endpoints_parse_as_scp_reads_them() {
        assert_eq!(
            Endpoint::parse("webworkers[0]:/tmp/x").unwrap(),
            Endpoint::Remote {
                server: "webworkers[0]".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(
            Endpoint::parse("-:/tmp/x").unwrap(),
            Endpoint::Remote {
                server: "-".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(
            Endpoint::parse("./a:b").unwrap(),
            Endpoint::Local("./a:b".into())
        );
        assert_eq!(
            Endpoint::parse("file.txt").unwrap(),
            Endpoint::Local("file.txt".into())
        );
        for bad in [":x", "web:", "root@web:/x", ""] {
            assert_eq!(
                Endpoint::parse(bad).unwrap_err().kind(),
                ErrorKind::Usage,
                "{bad}"
            );
        }
    }

    #[test]
    fn plans_resolve_servers_and_default_to_django_manage() {
        let env = env();
        let p = plan(
            &env,
            &Endpoint::parse("/tmp/dump.sql").unwrap(),
            &Endpoint::parse(".").unwrap(),
        )
        .unwrap();
        assert_eq!(
            p.source,
            Place {
                host: Some("cloud_worker_1".into()),
                path: "/tmp/dump.sql".into()
            }
        );
        let p = plan(
            &env,
            &Endpoint::parse("x.conf").unwrap(),
            &Endpoint::parse("webworkers:/tmp/").unwrap(),
        )
        .unwrap();
        assert_eq!(p.targets.len(), 3, "a group target is every host of it");
        let e = plan(
            &env,
            &Endpoint::parse("webworkers:/tmp/x").unwrap(),
            &Endpoint::parse(".").unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.message().contains("3 hosts"), "{e}");
        assert!(
            plan(
                &env,
                &Endpoint::parse("nosuch:/x").unwrap(),
                &Endpoint::parse(".").unwrap()
            )
            .is_err()
        );
        let e = plan(
            &env,
            &Endpoint::parse("-:/tmp/x").unwrap(),
            &Endpoint::parse("django_manage:/tmp/x").unwrap(),
        )
        .unwrap_err();
        assert!(e.message().contains("both the source and a target"), "{e}");
    }

    #[tokio::test]
    async fn host_to_hosts_through_the_controller_keeps_the_mode_and_adds_the_name_to_directories()
    {
        let env = env();
        let t = fleet(&env);
        t.put_file("cloud_worker_1", "/etc/app.conf", "x=1\n");
        let p = plan(
            &env,
            &Endpoint::parse("-:/etc/app.conf").unwrap(),
            &Endpoint::parse("webworkers:/srv").unwrap(),
        )
        .unwrap();
        let done = copy(
            &t,
            &p,
            &Options {
                become_user: Some("cchq".into()),
                mode: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(done.len(), 3);
        for h in ["cloud_worker_2", "cloud_worker_3", "cloud_worker_4"] {
            assert_eq!(
                t.file(h, "/srv/app.conf").as_deref(),
                Some(&b"x=1\n"[..]),
                "{h}"
            );
            assert_eq!(t.file_mode(h, "/srv/app.conf"), Some(0o640));
        }
        assert_eq!(done[0].target, "cloud_worker_2:/srv/app.conf");
        assert_eq!(done[0].mode, "0640");
        let stats: Vec<_> = t
            .calls()
            .into_iter()
            .filter(|c| c.command.inner_shell().contains("stat -c"))
            .collect();
        assert!(
            !stats.is_empty() && stats.iter().all(|c| c.command.become_as() == Some("cchq")),
            "looks as the given user: {stats:?}"
        );
    }

    #[tokio::test]
    async fn controller_to_host_and_back() {
        let env = env();
        let t = fleet(&env);
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("dump.sql");
        std::fs::write(&local, "select 1;\n").unwrap();
        let p = plan(
            &env,
            &Endpoint::Local(local.clone()),
            &Endpoint::parse("cloud_worker_5:/tmp/dump.sql").unwrap(),
        )
        .unwrap();
        copy(
            &t,
            &p,
            &Options {
                mode: Some(0o600),
                ..Options::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            t.file("cloud_worker_5", "/tmp/dump.sql").as_deref(),
            Some(&b"select 1;\n"[..])
        );
        assert_eq!(t.file_mode("cloud_worker_5", "/tmp/dump.sql"), Some(0o600));
        let back = dir.path().join("back");
        std::fs::create_dir(&back).unwrap();
        let p = plan(
            &env,
            &Endpoint::parse("cloud_worker_5:/tmp/dump.sql").unwrap(),
            &Endpoint::Local(back.clone()),
        )
        .unwrap();
        let done = copy(&t, &p, &Options::default()).await.unwrap();
        assert_eq!(
            std::fs::read(back.join("dump.sql")).unwrap(),
            b"select 1;\n"
        );
        assert_eq!(done[0].mode, "0640");
    }

    #[tokio::test]
    async fn a_missing_source_writes_nothing() {
        let env = env();
        let t = fleet(&env);
        let p = plan(
            &env,
            &Endpoint::parse("-:/nope").unwrap(),
            &Endpoint::parse("webworkers:/srv/").unwrap(),
        )
        .unwrap();
        let e = copy(&t, &p, &Options::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message()
                .contains("`/nope` does not exist on `cloud_worker_1`"),
            "{e}"
        );
        assert!(t.file("cloud_worker_2", "/srv/nope").is_none());
        let p = plan(
            &env,
            &Endpoint::parse("-:/srv").unwrap(),
            &Endpoint::parse(".").unwrap(),
        )
        .unwrap();
        assert_eq!(
            copy(&t, &p, &Options::default()).await.unwrap_err().kind(),
            ErrorKind::Usage
        );
    }
}
