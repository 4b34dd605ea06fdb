//! `django-manage`: `manage.py` of a release, run with the release's Python as the app user on
//! `django_manage[0]` or a server given. [`Manage`] builds the commands; the command line adds a
//! terminal (or tmux) around them, the Python bindings run them without one ([`Manage::run`]).

use crate::command::{RemoteCommand, quote};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::inventory::ServerSpec;
use crate::transport::{Output, Transport};

/// A management command to run: where, in which release, as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manage {
    /// The inventory host it runs on.
    pub host: String,
    /// The login user the server spec named (`user@group[N]`), if any.
    pub login_user: Option<String>,
    /// The release directory: `<www_root>/<deploy_env>/current`, or `.../releases/<release>`.
    pub dir: String,
    /// The release asked for (`None`: the live one, `current`).
    pub release: Option<String>,
    /// The app user it runs as.
    pub app_user: String,
    /// The management command and its arguments, passed to `manage.py` unchanged.
    pub argv: Vec<String>,
    /// A file (relative to the release directory) that also gets the output; never overwritten.
    pub tee: Option<String>,
    /// `DJANGO_SETTINGS_MODULE` to run with (the `django` profile's `cchq_settings`), if any.
    pub settings_module: Option<String>,
}

/// Whether `name` can be a release directory's name.
fn valid_release_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn manage_py(argv: &[String], settings_module: Option<&str>) -> RemoteCommand {
    let mut head: Vec<String> = Vec::new();
    if let Some(m) = settings_module {
        head.extend(["env".to_owned(), format!("DJANGO_SETTINGS_MODULE={m}")]);
    }
    head.extend(["python_env/bin/python".to_owned(), "manage.py".to_owned()]);
    RemoteCommand::from_argv(head).args(argv.iter().cloned())
}

impl Manage {
    /// `argv` on `server` (a server spec: a host, `group[N]`, `user@group[N]`, `-`; default `-`,
    /// the first `django_manage` host), in `release` (default `current`), with its output also
    /// written to `tee` on the host. Warnings about the server spec (deprecated forms) go to
    /// `on_warning`, also when this fails.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Usage`] for an empty command or a bad release name; those of
    /// [`ServerSpec::parse`] and of resolving it; [`crate::ErrorKind::NotFound`] for a host that
    /// is not in the inventory.
    pub fn new(
        env: &Environment,
        server: Option<&str>,
        release: Option<&str>,
        tee: Option<&str>,
        argv: Vec<String>,
        on_warning: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        if argv.is_empty() {
            return Err(Error::usage("no management command given")
                .with_hint("give the command and its arguments, e.g. `check`"));
        }
        let spec = ServerSpec::parse(server.unwrap_or("-"))?;
        for w in &spec.warnings {
            on_warning(w);
        }
        let host = env.inventory.resolve(&spec)?;
        if env.inventory.host(&host).is_none() {
            return Err(
                Error::not_found(format!("`{host}` is not a host of `{}`", env.name))
                    .with_hint("name an inventory host or group"),
            );
        }
        let paths = env.paths();
        let dir = match release {
            None => paths.current(),
            Some(n) if valid_release_name(n) => format!("{}/{n}", paths.releases()),
            Some(n) => {
                return Err(Error::usage(format!("`{n}` is not a release name"))
                    .with_hint("release names are like `2026-11-26_16.00.00`"));
            }
        };
        Ok(Self {
            host,
            login_user: spec.user,
            dir,
            release: release.map(str::to_owned),
            app_user: env.app_user().to_owned(),
            argv,
            tee: tee.map(str::to_owned),
            settings_module: (env.profile.name == "django")
                .then(|| crate::settings::django::SETTINGS_MODULE.to_owned()),
        })
    }

    /// The check run first, as the app user: exit 3 (listing the releases) when the release
    /// directory does not exist, 4 when the `tee` file does.
    pub fn check_command(&self, env: &Environment) -> RemoteCommand {
        let releases = env.paths().releases();
        let d = quote(&self.dir);
        let mut s = format!(
            "if [ ! -d {d} ]; then ls -1 {r} 2>/dev/null; exit 3; fi",
            r = quote(&releases)
        );
        if let Some(f) = &self.tee {
            s.push_str(&format!(
                "; cd {d} && if [ -e {f} ]; then exit 4; fi",
                f = quote(f)
            ));
        }
        RemoteCommand::shell(s).become_user(self.app_user.clone())
    }

    /// Reads what [`Manage::check_command`] gave back.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] for a missing release (the hint lists the releases there
    /// are), [`crate::ErrorKind::Usage`] for an existing `tee` file, else the check's failure.
    pub fn read_check(&self, env: &Environment, out: Output) -> Result<()> {
        let host = &self.host;
        match out.exit_code {
            Some(0) => Ok(()),
            Some(3) => {
                let list: Vec<String> = out
                    .stdout_str()
                    .lines()
                    .filter(|l| !l.starts_with('.'))
                    .map(str::to_owned)
                    .collect();
                let what = self
                    .release
                    .as_ref()
                    .map_or_else(|| format!("`{}`", self.dir), |n| format!("release `{n}`"));
                Err(
                    Error::not_found(format!("{what} does not exist on `{host}`")).with_hint(
                        if list.is_empty() {
                            format!(
                                "`{}` holds no release: deploy first",
                                env.paths().releases()
                            )
                        } else {
                            format!("releases on `{host}`: {}", list.join(", "))
                        },
                    ),
                )
            }
            Some(4) => Err(Error::usage(format!(
                "`{}` already exists on `{host}`: --tee does not overwrite",
                self.tee.as_deref().unwrap_or_default()
            ))
            .with_hint("give another file name, or remove that file first")),
            _ => out.check(host, &self.check_command(env)).map(drop),
        }
    }

    /// Runs the check ([`Manage::check_command`], [`Manage::read_check`]) on the host.
    ///
    /// # Errors
    /// Those of [`Manage::read_check`], and the transport's (an unreachable host).
    pub async fn verify(&self, env: &Environment, transport: &dyn Transport) -> Result<()> {
        let out = transport.exec(&self.host, &self.check_command(env)).await?;
        self.read_check(env, out)
    }

    /// The shell script run as the app user: `cd <dir> && python_env/bin/python manage.py ...`,
    /// or, with `tee`, the same through `tee` (refusing an existing file), keeping the command's
    /// exit code.
    pub fn script(&self) -> String {
        let cmd = manage_py(&self.argv, self.settings_module.as_deref()).inner_shell();
        match &self.tee {
            None => format!("cd {} && {cmd}", quote(&self.dir)),
            Some(file) => format!(
                "cd {d} || exit 1; set -C; true > {f} || exit 1; set +C; exec 4>&1; \
                 rc=$( {{ {{ {cmd} 2>&1; echo $? >&3; }} | tee -a {f} >&4; }} 3>&1 ); exit $rc",
                d = quote(&self.dir),
                f = quote(file)
            ),
        }
    }

    /// [`Manage::script`] as the app user.
    pub fn command(&self) -> RemoteCommand {
        RemoteCommand::shell(self.script()).become_user(self.app_user.clone())
    }

    /// The command as shown to the operator: `cd <dir> && python_env/bin/python manage.py ...`.
    pub fn shown(&self) -> String {
        manage_py(&self.argv, self.settings_module.as_deref())
            .cwd(&self.dir)
            .inner_shell()
    }

    /// Checks, then runs the command without a terminal and returns its output: a non-zero exit
    /// is an output, not an error.
    ///
    /// # Errors
    /// Those of [`Manage::verify`], and the transport's (an unreachable host).
    pub async fn run(&self, env: &Environment, transport: &dyn Transport) -> Result<Output> {
        self.verify(env, transport).await?;
        transport.exec(&self.host, &self.command()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::MemoryTransport;

    fn manage(argv: &[&str], tee: Option<&str>, dir: &str) -> Manage {
        Manage {
            host: "web1".into(),
            login_user: None,
            dir: dir.into(),
            release: None,
            app_user: "cchq".into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            tee: tee.map(str::to_owned),
            settings_module: None,
        }
    }

    #[test]
    fn scripts_quote_arguments_and_keep_exit_codes() {
        let s = manage(
            &["echo_args", "a b", "$(id)", "it's"],
            None,
            "/home/cchq/www/x/current",
        )
        .script();
        assert_eq!(
            s,
            "cd /home/cchq/www/x/current && python_env/bin/python manage.py echo_args 'a b' '$(id)' 'it'\\''s'"
        );
        // The tee form returns the command's code, not tee's, and refuses an existing file.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        std::fs::create_dir_all(tmp.path().join("python_env/bin")).unwrap();
        std::fs::write(
            tmp.path().join("python_env/bin/python"),
            "#!/bin/sh\necho \"ran $*\"; echo oops >&2; exit 7\n",
        )
        .unwrap();
        std::fs::set_permissions(
            tmp.path().join("python_env/bin/python"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let s = manage(&["x", "a b"], Some("out.log"), dir).script();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&s)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran manage.py x a b\noops\n"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("out.log")).unwrap(),
            "ran manage.py x a b\noops\n"
        );
        let again = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&s)
            .output()
            .unwrap();
        assert_eq!(
            again.status.code(),
            Some(1),
            "an existing tee file is refused"
        );
    }

    #[test]
    fn release_names_are_checked() {
        assert!(valid_release_name("2026-11-26_16.00.00"));
        for bad in ["", "../x", ".git_mirrors", "a b", "x;y", "a/b"] {
            assert!(!valid_release_name(bad), "{bad}");
        }
    }

    fn env(tmp: &std::path::Path) -> Environment {
        let dir = tmp.join("t");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("inventory.ini"),
            "[webworkers]\nweb1\nweb2\n[django_manage]\nweb2\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("meta.yml"),
            "deploy_env: tt\nenv_monitoring_id: tt\nusers: []\n",
        )
        .unwrap();
        std::fs::write(dir.join("public.yml"), "{}\n").unwrap();
        Environment::load(tmp, "t").unwrap()
    }

    #[test]
    fn hosts_releases_and_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(tmp.path());
        let m = Manage::new(&env, None, None, None, vec!["check".into()], &mut |_| {}).unwrap();
        assert_eq!(
            (m.host.as_str(), m.dir.as_str(), m.app_user.as_str()),
            ("web2", "/home/cchq/www/tt/current", "cchq")
        );
        assert_eq!(
            m.shown(),
            "cd /home/cchq/www/tt/current && python_env/bin/python manage.py check"
        );
        let m = Manage::new(
            &env,
            Some("webworkers[0]"),
            Some("r1"),
            None,
            vec!["check".into()],
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            (m.host.as_str(), m.dir.as_str()),
            ("web1", "/home/cchq/www/tt/releases/r1")
        );
        assert_eq!(
            Manage::new(
                &env,
                None,
                Some("../x"),
                None,
                vec!["check".into()],
                &mut |_| {}
            )
            .unwrap_err()
            .kind(),
            crate::ErrorKind::Usage
        );
        assert_eq!(
            Manage::new(&env, None, None, None, Vec::new(), &mut |_| {})
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Usage
        );
        assert!(
            Manage::new(
                &env,
                Some("web9"),
                None,
                None,
                vec!["check".into()],
                &mut |_| {}
            )
            .is_err()
        );

        // A missing release lists the ones there are; a failing command is an output.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = MemoryTransport::new(["web1", "web2"]);
        t.respond_with(Some("web1"), |cmd| {
            let s = cmd.inner_shell();
            s.contains("exit 3").then(|| {
                if s.contains("releases/r2") {
                    Output::new(3, ".cache\nr0\nr1\n", "")
                } else {
                    Output::new(0, "", "")
                }
            })
        });
        t.respond_with(Some("web1"), |cmd| {
            cmd.inner_shell()
                .contains("manage.py")
                .then(|| Output::new(2, "", "unknown command\n"))
        });
        let m = Manage::new(
            &env,
            Some("web1"),
            Some("r2"),
            None,
            vec!["nope".into()],
            &mut |_| {},
        )
        .unwrap();
        let e = rt.block_on(m.run(&env, &t)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(
            e.message()
                .contains("release `r2` does not exist on `web1`"),
            "{e}"
        );
        assert_eq!(e.hint(), Some("releases on `web1`: r0, r1"));
        let m = Manage::new(
            &env,
            Some("web1"),
            None,
            None,
            vec!["nope".into()],
            &mut |_| {},
        )
        .unwrap();
        let out = rt.block_on(m.run(&env, &t)).unwrap();
        assert_eq!(
            (out.exit_code, out.stderr_str().as_str()),
            (Some(2), "unknown command\n")
        );
        let ran = t.calls().last().unwrap().command.inner_shell();
        assert!(
            ran.contains("cd /home/cchq/www/tt/current && python_env/bin/python manage.py nope"),
            "{ran}"
        );
        t.set_reachable("web1", false);
        assert_eq!(
            rt.block_on(m.run(&env, &t)).unwrap_err().kind(),
            crate::ErrorKind::Connection
        );
    }
}
