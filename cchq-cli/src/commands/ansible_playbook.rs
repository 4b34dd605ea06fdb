//! `cchq <env> ansible-playbook PLAYBOOK [ARGS...]` (alias `ap`): Ansible with the environment's
//! inventory, vault, ssh settings and variables.

use cchq_core::daily::ansible::{Options, PasswordPipe, Workdir, invocation, not_installed, which};
use cchq_core::{Environment, Error, ErrorKind};

use super::ExitStatus;
use crate::cli::ApArgs;
use crate::render;

pub const AFTER_HELP: &str = "\
As commcare-cloud's `ansible-playbook`: the playbook runs with `-i <the environment's inventory>
-e @public.yml -e @<generated variables> -e @vault.yml --diff -u <commcare_cloud_remote_user>
--ssh-common-args=<commcare_cloud_ssh_args, the environment's known_hosts>`, and `--limit`
(plus `!ansible_skip` when that group exists). By default it first runs with --check, shows the
result and asks whether to apply; --skip-check applies without the check (after asking), --yes
answers the questions; `--check` among the arguments runs the check only.

cchq's options go before the playbook; everything after it goes to ansible-playbook as it is,
except a --limit, which is taken as cchq's (Ansible would keep only the last one).
A relative playbook not found here is looked up in --ansible-dir ($CCHQ_ANSIBLE_DIR), the
`src/commcare_cloud/ansible` directory of a commcare-cloud checkout, whose ansible.cfg is used.

The vault password (ANSIBLE_VAULT_PASSWORD, CCHQ_VAULT_PASSWORD_FILE or a prompt) reaches Ansible
through a private named pipe: never a command line, a file or an environment variable. The
generated variables (commcare-cloud's .generated.yml: deploy_env, dev_users, app_processes_config,
CELERY_*, ES_SETTINGS, postgresql.yml's postgresql_dbs, proxy.yml's SITE_HOST and nginx settings,
the database names, each secret's vault expression, ...) go to a private temporary file, removed
afterwards; --dry-run shows them. Ansible itself is not
part of cchq: install ansible-core (pip) where you run cchq. --dry-run prints the command line.

Examples:
  cchq prod ansible-playbook --ansible-dir ~/commcare-cloud/src/commcare_cloud/ansible deploy_proxy.yml --limit=proxy
  cchq prod ap --limit webworkers --skip-check --yes ./fix-ulimits.yml -e ulimit=65536
  cchq prod ap --dry-run site.yml --tags users";

pub fn run(env: &Environment, args: &ApArgs) -> Result<ExitStatus, Error> {
    let env = &*super::factory_auth(env, args.use_factory_auth)?;
    let explicit_check = cchq_core::daily::ansible::has_arg(&args.ansible_args, &["-C", "--check"]);
    let opts = Options {
        playbook: args.playbook.clone(),
        ansible_dir: args.ansible_dir.clone(),
        limit: args.limit.clone(),
        check: false,
        extra: args.ansible_args.clone(),
    };
    let work = Workdir::new()?;
    let (generated, pipe_path) = (work.generated(), work.pipe());
    let apply = invocation(env, &opts, &generated, &pipe_path)?;
    let check = invocation(
        env,
        &Options {
            check: true,
            ..opts.clone()
        },
        &generated,
        &pipe_path,
    )?;
    if args.dry_run {
        let shown = if args.skip_check || explicit_check {
            &apply
        } else {
            &check
        };
        crate::outln!("{}", shown.display());
        if !args.skip_check && !explicit_check {
            crate::outln!("{}", apply.display());
        }
        render::info(&format!("generated variables:\n{}", apply.generated));
        return Ok(ExitStatus::Success);
    }
    let program = which("ansible-playbook").ok_or_else(not_installed)?;
    work.write_generated(&apply.generated)?;
    let password = if apply.needs_password {
        let pw = super::secrets::password(&env.name)?;
        // A wrong password stops here, before Ansible starts.
        env.vault_value(|| Ok(pw.clone()))?;
        Some(pw)
    } else {
        None
    };
    let run_one = |inv: &cchq_core::daily::ansible::Invocation| -> Result<i32, Error> {
        // A pipe per run: each ansible-playbook reads the password once.
        let pipe = match &password {
            Some(p) => Some(PasswordPipe::serve(&pipe_path, p.clone())?),
            None => None,
        };
        let argv = &inv.argv;
        render::info(&format!("$ {}", cchq_core::command::join(argv)));
        let mut cmd = std::process::Command::new(&program);
        cchq_core::vault::scrub_env(&mut cmd).args(&argv[1..]);
        for (k, v) in &inv.env {
            cmd.env(k, v);
        }
        let status = cmd
            .status()
            .map_err(|e| Error::io(format!("cannot run `{}`", program.display()), e))?;
        drop(pipe);
        Ok(status.code().unwrap_or(1))
    };
    let code = |c: i32| ExitStatus::Code(u8::try_from(c).unwrap_or(1));
    if explicit_check {
        let c = run_one(&apply)?;
        return Ok(if c == 0 { ExitStatus::Success } else { code(c) });
    }
    if args.skip_check {
        if !render::confirm("apply without running the check first?", args.yes)? {
            return Ok(ExitStatus::Failure);
        }
    } else {
        let c = run_one(&check)?;
        let question = if c == 0 {
            render::info("check completed (exit 0)");
            "apply these changes?"
        } else {
            render::warning(&format!("the check failed (exit {c})"));
            "apply anyway?"
        };
        if !render::confirm(question, args.yes)? {
            render::info("nothing applied");
            return Ok(if c == 0 { ExitStatus::Success } else { code(c) });
        }
    }
    let c = run_one(&apply)?;
    if c != 0 {
        render::error(
            &Error::new(
                ErrorKind::CommandFailed,
                format!("ansible-playbook failed (exit {c})"),
            )
            .with_hint("read Ansible's output above"),
        );
        return Ok(code(c));
    }
    render::info("applied (exit 0)");
    Ok(ExitStatus::Success)
}
