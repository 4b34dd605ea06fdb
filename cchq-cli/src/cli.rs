//! The command-line grammar (clap). Names and flags follow commcare-cloud's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Environments:
  An environment is a directory holding public.yml, one inventory (inventory.ini, inventory.csv
  or inventory/), meta.yml, app-processes.yml, fab-settings.yml, postgresql.yml, proxy.yml,
  vault.yml and known_hosts, exactly as commcare-cloud has them. The directory holding the
  environments comes from --environments, else $CCHQ_ENVIRONMENTS, else
  $COMMCARE_CLOUD_ENVIRONMENTS.

Other commands:
  cchq completions <bash|zsh|fish|elvish|powershell>
                                     print the shell completion script (and how to install it)

Exit codes:
  0  success
  1  the work ran and something failed (a host's command, a check)
  2  bad command-line usage
  3  a configuration file is missing, malformed or inconsistent
  4  an environment, host, group or pattern that does not exist or selects nothing
  5  a host could not be reached
  6  the vault could not be read (wrong password?)
  7  a deploy lock is held by someone else
  8  a deploy failed part way (resume it with --resume)
  70 a bug in cchq
  130 interrupted";

/// Manage CommCare HQ deployments: services, deploys, configuration, ad-hoc commands.
#[derive(Debug, Parser)]
#[command(name = "cchq", version, about, after_help = AFTER_HELP, arg_required_else_help = true)]
pub struct Cli {
    /// The directory holding the environments (default: $CCHQ_ENVIRONMENTS, then $COMMCARE_CLOUD_ENVIRONMENTS)
    #[arg(long, global = true, value_name = "DIR")]
    pub environments: Option<PathBuf>,

    /// When to use colours: `auto` (a terminal, unless NO_COLOR is set and non-empty or
    /// TERM=dumb; CLICOLOR_FORCE forces them), `always` or `never`
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        default_value = "auto",
        value_enum
    )]
    pub color: clap::ColorChoice,

    /// The environment to act on (a directory under the environments root)
    #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::env_names))]
    pub env: String,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)] // `RunShellCommand` is commcare-cloud's name
pub enum Command {
    /// Check that the environment's files load and agree with each other
    #[command(name = "validate-environment-settings")]
    Validate,

    /// List the inventory hosts a pattern selects (inventory order): name, address, groups
    #[command(
        after_help = "Patterns follow Ansible: `a:b` or `a,b` (union), `a:&b` (intersection), `a:!b` (exclusion), \
`*` wildcards, `~regex`, `group[0]`, `group[1:3]`, `group[-1]`, `all`.\n\nExamples:\n  cchq prod hosts webworkers\n  cchq prod hosts 'celery:&webworkers' --json"
    )]
    Hosts(HostsArgs),

    /// Print the address of a server (`[user@]group[index]`, `-` for `django_manage[0]`)
    Lookup {
        /// The server: a host, a group (every host of it), `group[N]`, or `-`
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::servers))]
        server: String,
    },

    /// Open an interactive ssh session on a server; extra arguments go to ssh
    #[command(trailing_var_arg = true, allow_hyphen_values = true)]
    Ssh {
        /// The server: a host, a group of one host, `group[N]`, `user@group[N]`, or `-`
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::servers))]
        server: String,
        /// Arguments passed to ssh after the host (e.g. a remote command)
        ssh_args: Vec<String>,
    },

    /// Start, stop, restart or show the status of services on their hosts
    #[command(after_help = SERVICE_HELP)]
    Service(ServiceArgs),

    /// Render the supervisor program files on every app host and apply them (reread + update)
    #[command(name = "update-supervisor-confs", after_help = crate::commands::update_supervisor_confs::AFTER_HELP)]
    UpdateSupervisorConfs(crate::commands::update_supervisor_confs::UpdateSupervisorConfsArgs),

    /// Deploy a new release of the code to every host: build everywhere, then switch all at once
    #[command(after_help = DEPLOY_HELP)]
    Deploy(DeployArgs),

    /// Switch back to an earlier complete release and restart (no migrations are reversed)
    Rollback {
        /// The release to go back to (default: the newest complete release older than current)
        #[arg(long)]
        to: Option<String>,
        /// `commcare` (default) or `formplayer`
        #[arg(default_value = "commcare", value_parser = ["commcare", "formplayer"])]
        component: String,
        /// Answer yes to the confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        /// JSON events while it runs and a summary at the end, one object per line
        #[arg(long)]
        json: bool,
        /// Send no start/success/failure notifications (the email and webhooks of `notify:` in cchq.yml)
        #[arg(long)]
        no_notify: bool,
    },

    /// Build a release on django_manage and start preindex_everything in it in the background,
    /// ahead of the deploy of that revision
    #[command(
        name = "preindex-views",
        after_help = "The release is private (not switched, kept a day). While the preindex runs,\n\
`django-manage --release <name> preindex_everything --check` prints nothing; once it prints\n\
that everything is up to date, deploy the same revision.\n\nExample:\n  cchq prod preindex-views --commcare-rev v2.3 --yes"
    )]
    PreindexViews {
        /// The revision to preindex: branch, tag or commit (default: the environment's default branch)
        #[arg(long, value_name = "REV")]
        commcare_rev: Option<String>,
        /// Answer yes to the confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        /// JSON events while it runs and a summary at the end, one object per line
        #[arg(long)]
        json: bool,
    },

    /// List the releases on each host: name, commit, complete, current, keep-until
    #[command(name = "list-releases")]
    ListReleases {
        /// Only these hosts (a host pattern)
        #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
        limit: Option<String>,
        /// `commcare` (default) or `formplayer`
        #[arg(long, default_value = "commcare", value_parser = ["commcare", "formplayer"])]
        component: String,
        /// One JSON object per host and release per line
        #[arg(long)]
        json: bool,
    },

    /// Delete old releases, keeping the newest N (never current, excluded or dated ones)
    #[command(name = "clean-releases")]
    CleanReleases {
        /// How many releases to keep besides current and dated ones
        #[arg(short = 'k', long, default_value_t = 3)]
        keep: usize,
        /// Never delete this release (repeatable)
        #[arg(short = 'x', long = "exclude")]
        exclude: Vec<String>,
        /// `commcare` (default) or `formplayer`
        #[arg(long, default_value = "commcare", value_parser = ["commcare", "formplayer"])]
        component: String,
        /// Answer yes to the confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Show, wait for or release the deploy lock (`status`, `wait`, `release`)
    #[command(
        after_help = "status: who holds the lock, since when, the age of its heartbeat (refreshed by the running \
deploy) and when it would be considered stale.\n\
wait: waits until no running deploy holds the lock (free, or its holder gone), at most `--timeout` seconds (exit 7 when \
it is still held). It takes nothing: `deploy --lock-wait SECONDS` waits and takes the lock at once.\n\
release: frees a lock whose holder is gone (its process dead on this machine, or no heartbeat for 3 intervals, 90 s by \
default); `--force` frees a lock whose holder may still run. A deploy takes over the lock of a gone holder by itself \
(`deploy --resume RELEASE` continues an interrupted one).\n\n\
Examples:\n  cchq prod lock status\n  cchq prod lock wait --timeout 600"
    )]
    Lock {
        /// `status`, `wait` or `release`
        #[arg(value_parser = ["status", "wait", "release"])]
        action: String,
        /// With `wait`: how long to wait, in seconds
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        timeout: u64,
        /// Answer yes to the confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        /// With `release`: free the lock even though its holder may still be running
        #[arg(long)]
        force: bool,
    },

    /// Stop every CommCare service for maintenance, and bring them back (`start`, `end`, `status`)
    #[command(
        after_help = "start: records the downtime on the environment's hosts (who, when, message, until when) so every \
operator sees it, stops the `commcare` services, then looks for processes of the app user that linger and offers: \
abort (start everything again, cancel the downtime), wait (look again after a pause), continue, or kill.\n\
end: starts the services, checks they run, closes the record. status: shows the current record.\n\n\
Examples:\n  cchq prod downtime start -m 'postgres upgrade' -d 2\n  cchq prod downtime start --yes --on-lingering kill\n  cchq prod downtime end"
    )]
    Downtime(DowntimeArgs),

    /// Bring rebooted hosts back: unlock the encrypted volume, start supervisord and services
    #[command(
        name = "after-reboot",
        after_help = "Requires --limit. On each host: mounts the ecryptfs data volume where \
`root_encryption_mode: ecryptfs` (passphrase from the vault), makes sure supervisord runs and starts its programs, starts \
the host's systemd/monit services where installed, and reports the host's state.\n\nExample:\n  cchq prod after-reboot --limit web3 all"
    )]
    AfterReboot {
        /// The host pattern (intersected with --limit), usually `all`
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
        pattern: String,
        /// The rebooted host(s): an inventory name, address, or group
        #[arg(long, short = 'l', required = true, add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
        limit: String,
        /// One JSON object per host per line
        #[arg(long)]
        json: bool,
    },

    /// Check every service on every host (process state and a TCP probe); list what is wrong
    #[command(name = "check-services")]
    CheckServices {
        /// Only these services (default: every service of the environment)
        #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::services))]
        services: Vec<String>,
        /// Only these hosts (a host pattern)
        #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
        limit: Option<String>,
        /// Show passing checks too
        #[arg(long, short = 'v')]
        verbose: bool,
        /// One JSON object per check per line
        #[arg(long)]
        json: bool,
    },

    /// Render the settings files (localsettings.py, application.properties) and apply them to the live release
    #[command(name = "update-config", after_help = crate::commands::update_config::AFTER_HELP)]
    UpdateConfig(crate::commands::update_config::UpdateConfigArgs),

    /// View or change the vault's secrets (re-encrypted in the vault's own format)
    Secrets(crate::commands::secrets::SecretsArgs),

    /// Run a Django management command (manage.py) as the app user on `django_manage[0]` or `--server`
    #[command(name = "django-manage", after_help = crate::commands::django_manage::AFTER_HELP)]
    DjangoManage(crate::commands::django_manage::DjangoManageArgs),

    /// Check every host: it answers over ssh, sudo works, supervisord answers (a table)
    #[command(after_help = crate::commands::ping::AFTER_HELP)]
    Ping(PingArgs),

    /// Attach (or create) a named tmux session as the app user on a server, over ssh -t
    #[command(after_help = crate::commands::tmux::AFTER_HELP)]
    Tmux(TmuxArgs),

    /// Copy one file between this machine and hosts, or run a plan: hosts pull with rsync from hosts
    #[command(name = "copy-files", visible_alias = "scp", after_help = crate::commands::copy_files::AFTER_HELP)]
    CopyFiles(CopyArgs),

    /// Fetch the hosts' ssh keys into the environment's known_hosts, showing what changed
    #[command(name = "update-local-known-hosts", after_help = crate::commands::update_local_known_hosts::AFTER_HELP)]
    UpdateLocalKnownHosts(KnownHostsArgs),

    /// Find (and kill) celery workers of this environment still running from an old release
    #[command(name = "kill-stale-celery-workers", after_help = crate::commands::kill_stale_celery_workers::AFTER_HELP)]
    KillStaleCeleryWorkers(StaleArgs),

    /// List the PostgreSQL databases postgresql.yml puts on each host (--compare: and what is there)
    #[command(name = "list-postgresql-dbs", after_help = crate::commands::list_postgresql_dbs::AFTER_HELP)]
    ListPostgresqlDbs {
        /// Also ask each PostgreSQL host which databases it has: missing and additional ones
        #[arg(long)]
        compare: bool,
        /// One JSON object per database (with --compare: per host) per line
        #[arg(long)]
        json: bool,
    },

    /// Run an Ansible playbook with the environment's inventory, vault, ssh settings and variables
    #[command(name = "ansible-playbook", visible_alias = "ap", after_help = crate::commands::ansible_playbook::AFTER_HELP)]
    AnsiblePlaybook(ApArgs),

    /// Run a shell command on every host a pattern selects, in parallel
    #[command(
        name = "run-shell-command",
        after_help = "Each host's output is printed as a block when that host finishes (fastest first): \
`==> HOST | ok | rc=0 | 12 ms` and its output; its standard error goes to stderr, each line prefixed \
`HOST stderr:`. On a terminal a live line shows the hosts done, failed and still running. --json prints \
one object per host in inventory order once every host finished. The exit code is 1 when the command \
fails on any host, 5 when a host cannot be reached.\n\nExamples:\n  cchq prod run-shell-command all 'df -h /'\n  \
cchq prod run-shell-command webworkers 'supervisorctl status' -b --json\n  \
cchq prod run-shell-command 'celery:&webworkers' uptime --forks 20 --timeout 30"
    )]
    RunShellCommand(RunShellArgs),
}

const SERVICE_HELP: &str = "\
Services:
  commcare       every app service below (webworker, celery, pillowtop, formplayer)
  webworker      Django web workers (supervisor; restart is rolling and health-checked)
  celery         celery workers, beat, flower, management commands (supervisor)
  pillowtop      pillows (supervisor)
  formplayer     the form player (supervisor)
  nginx, elasticsearch, kafka, zookeeper, rabbitmq    (`service`: systemd, or the init script)
  postgresql, pgbouncer, redis, couchdb2              (monit; postgresql's check is postgresql_<version>)
  Only services whose host groups exist in the inventory are available.

Actions: start, stop, restart, status, logs (log file paths), help (hosts and programs).

--only takes `name` or `name:N` items, comma separated: a celery queue, a pillow name,
`beat`, `flower`, or a program name; `:N` picks the worker/process number.

On a terminal a live line shows the hosts done, failed and running, then each rolling batch of
web workers (not with --json). Tables fit the terminal: long program names are cut in the middle
with `…`; --json has them whole.

Exit codes: 0 when every program ends in the wanted state, 1 when any does not, 5 when a host
could not be reached (the others still complete).

Examples:
  cchq prod service commcare status
  cchq prod service celery restart --only background_queue
  cchq prod service pillowtop stop --only AppDbChangeFeedPillow:0 --limit pillow3
  cchq prod service webworker restart";

/// `service`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// One or more services, then the action: `commcare status`, `celery pillowtop restart`
    #[arg(required = true, num_args = 1.., value_name = "SERVICE... ACTION", add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::service_words))]
    pub words: Vec<String>,
    /// Only these programs: `name[:N],...` (celery queue, pillow, beat, flower, program)
    #[arg(long, add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::only_names))]
    pub only: Option<String>,
    /// Only these hosts (a host pattern)
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// One JSON object per program per line: host, program, state, detail, ok
    #[arg(long)]
    pub json: bool,
    /// `restart`: restart web workers together with everything else, on every host at once,
    /// without rolling batches or health checks (faster; every web worker is down at the same time)
    #[arg(long)]
    pub all_at_once: bool,
}

const DEPLOY_HELP: &str = "\
Phases: lock -> resolve the revision once (on this machine) -> checkout and settings on every host
in parallel -> the profile's steps before the switch -> switch `current` on every host (atomic per
host; if any host fails, the others switch back) -> restart (web workers rolling, health-checked)
-> the profile's steps after the restart -> record -> clean old releases -> unlock.
Every step leaves a marker in the release: `--resume NAME` continues a failed or interrupted
deploy, running each step once; `--resume` with an older complete release is a rollback.

Steps: the `commcare` profile runs commcare-cloud's deploy steps (virtualenv, kafka_checkpoints,
node_modules, yarn_install, staticfiles_collect, staticfiles_compress, update_translations,
migrate, staticfiles_pull_manifest, preindex, check; record_deploy_success after the restart);
the `django` profile (`profile: django` in cchq.yml) a plain Django project's (virtualenv,
collectstatic, migrate, check). cchq.yml's `steps:` adds, replaces, removes and reorders them
(docs/deploy-steps.md). `--plan` prints the steps of this environment with their hosts and
commands, and stops.

On a terminal, a live line per phase shows its hosts done, failed and running, the time since
the phase started and the slowest hosts (not with --json, nor when output is not a terminal).

Stopping it: SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the deploy at the next safe point (never in
the middle of the switch); programs its restart had stopped are started again (by name), the lock
is released, and it exits 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP), resumable with `--resume`.
The same signal again stops it at once (still starting stopped programs and releasing the lock).
A closed stdout (`deploy --json | head -1`) does not stop it: the rest of the output goes to
stderr, and the exit status is the deploy's.

--rollback-on-failure (or `rollback_on_failure: true` in cchq.yml): when the new release fails to
start after the switch, every host switches back to the release that was live and restarts it;
the deploy still fails (exit 8), saying what failed and which release is live.

The lock: one deploy per environment at a time. It belongs to the deploy that took it (a random
token; only that deploy releases it) and is refreshed by a heartbeat while the deploy runs. A
deploy, resumed or not, takes over a lock only when its holder is gone: its process is dead (same
machine), or its heartbeat is older than 3 intervals (90 s; another machine). `--lock-wait` waits
for a running one; `lock status` shows the holder and its heartbeat.

--update-config renders fresh settings into the new release behind the drift guard of
update-config: when a host's settings were applied from an environment commit your checkout does
not contain, or were edited by hand since, the deploy stops before building anything (exit 3),
naming who applied what; pull the environment and deploy again, or pass --force to overwrite.

The vault: settings are rendered for any host that has none (a first deploy, a new host) and with
--update-config, so an encrypted vault is opened before anything starts (ANSIBLE_VAULT_PASSWORD,
CCHQ_VAULT_PASSWORD_FILE, or a prompt on a terminal); without its password the deploy stops
(exit 6) and changes nothing. preindex-views does the same; rollback opens it when it can.

Notifications: when the environment's cchq.yml has a `notify:` section, the start (after the lock),
the success and any failure (with the `--resume` command) are sent by email over SMTP and/or to
webhooks (JSON POST with a Slack-compatible `text`); `email_enabled: False` in fab-settings.yml
turns email off. Each destination gets at most `notify.timeout_secs` (5 s); a notification that
cannot be sent is a warning, never a failed deploy. `--no-notify` sends none. See
docs/notifications.md.

Examples:
  cchq prod deploy
  cchq prod deploy --commcare-rev v2.3.1 --yes --json
  cchq prod deploy --resume 2026-11-26_16.05.12
  cchq prod deploy --private --limit webworkers[0]
  cchq prod deploy formplayer
  cchq prod deploy --plan";

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// What to deploy: `commcare` (default) and/or `formplayer`
    #[arg(value_parser = ["commcare", "formplayer"])]
    pub components: Vec<String>,
    /// The revision to deploy: branch, tag or commit (default: the environment's default branch)
    #[arg(long, value_name = "REV")]
    pub commcare_rev: Option<String>,
    /// Continue the deploy of release NAME (or switch back to it)
    #[arg(long, value_name = "NAME")]
    pub resume: Option<String>,
    /// Build a release on django_manage (or --limit) only, without switching
    #[arg(long)]
    pub private: bool,
    /// Hosts for a private release (only with --private)
    #[arg(long, short = 'l', requires = "private", add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// Keep this release at least N days
    #[arg(long, value_name = "N")]
    pub keep_days: Option<u32>,
    /// Releases kept by the cleanup after the deploy
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Do not record the deploy (leaves out the profile's `record_deploy_success` step)
    #[arg(long)]
    pub skip_record: bool,
    /// Deploy even when pillows' Kafka checkpoints are not safe (the `kafka_checkpoints` step only
    /// prints them; default: `ignore_kafka_checkpoint_warning` in fab-settings.yml)
    #[arg(long)]
    pub ignore_kafka_checkpoint_warning: bool,
    /// Print the steps this deploy would run (where, on which hosts, which command) and stop;
    /// nothing is contacted
    #[arg(long)]
    pub plan: bool,
    /// Render fresh settings into the new release instead of copying the current ones
    #[arg(long)]
    pub update_config: bool,
    /// With --update-config: write the settings even where the drift guard would stop (settings
    /// applied from a newer environment, or edited by hand on a host)
    #[arg(long, requires = "update_config")]
    pub force: bool,
    /// Wait up to this many seconds for another deploy's lock
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
    /// Restart web workers on every host at once instead of in rolling, health-checked batches
    /// (faster; every web worker is down at the same time: for deploys during a downtime)
    #[arg(long)]
    pub all_at_once: bool,
    /// Send no start/success/failure notifications (the email and webhooks of `notify:` in cchq.yml)
    #[arg(long)]
    pub no_notify: bool,
    /// When the new release fails to start (a program FATAL or unhealthy after the switch): switch
    /// back to the previous release and restart it; the deploy still fails (exit 8), naming both
    /// (default: `rollback_on_failure` in cchq.yml, else off)
    #[arg(long, overrides_with = "no_rollback_on_failure")]
    pub rollback_on_failure: bool,
    /// Leave a release that fails to start live, whatever cchq.yml says
    #[arg(long, overrides_with = "rollback_on_failure")]
    pub no_rollback_on_failure: bool,
    /// Answer yes to the confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// JSON events while it runs and a summary at the end, one object per line
    #[arg(long)]
    pub json: bool,
}

/// `downtime`.
#[derive(Debug, Args)]
pub struct DowntimeArgs {
    /// `start`, `end` or `status`
    #[arg(value_parser = ["start", "end", "status"])]
    pub action: String,
    /// Why (shown to every operator)
    #[arg(short = 'm', long, default_value = "")]
    pub message: String,
    /// How long it is meant to last, in hours
    #[arg(short = 'd', long, default_value_t = 24.0)]
    pub duration: f64,
    /// What to do about lingering processes without asking
    #[arg(long, value_parser = ["abort", "wait", "continue", "kill"])]
    pub on_lingering: Option<String>,
    /// Seconds between looks when waiting for lingering processes
    #[arg(long, default_value_t = 30)]
    pub wait_seconds: u64,
    /// Answer yes to every confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `hosts`.
#[derive(Debug, Args)]
pub struct HostsArgs {
    /// The host pattern (default: all)
    #[arg(default_value = "all", add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub pattern: String,
    /// One JSON object per host per line: name, address, port, user, groups
    #[arg(long)]
    pub json: bool,
}

/// `run-shell-command`.
#[derive(Debug, Args)]
pub struct RunShellArgs {
    /// The host pattern
    #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub pattern: String,
    /// The shell command (run by /bin/sh -c on each host)
    pub command: String,
    /// Run as root (sudo)
    #[arg(short = 'b', long = "become")]
    pub become_root: bool,
    /// Run as this user (sudo -iu USER)
    #[arg(long, value_name = "USER", conflicts_with = "become_root")]
    pub become_user: Option<String>,
    /// One JSON object per host per line (inventory order, at the end): host, exit_code, stdout,
    /// stderr, error, duration_ms
    #[arg(long)]
    pub json: bool,
    /// How many hosts to work on at once
    #[arg(long, default_value_t = cchq_core::fanout::DEFAULT_FORKS)]
    pub forks: usize,
    /// Give up on a host after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Print the commands instead of running them
    #[arg(long)]
    pub dry_run: bool,
    /// Do not warn about `sudo` in the command
    #[arg(long)]
    pub silence_warnings: bool,
    /// Log in as commcare-cloud's factory auth does, to bootstrap new hosts: with public.yml's
    /// `commcare_cloud_pem`, as `commcare_cloud_remote_user`, else `commcare_cloud_root_user`
    /// (default root)
    #[arg(long)]
    pub use_factory_auth: bool,
}

/// `ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The host pattern (default: all)
    #[arg(default_value = "all", add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub pattern: String,
    /// How many hosts to check at once
    #[arg(long, default_value_t = cchq_core::fanout::DEFAULT_FORKS)]
    pub forks: usize,
    /// One JSON object per host per line (inventory order): host, address, reachable, sudo,
    /// supervisord, hostname, uptime, ok, problem, duration_ms
    #[arg(long)]
    pub json: bool,
}

/// `tmux`.
#[derive(Debug, Args)]
pub struct TmuxArgs {
    /// The server: a host, a group of one host, `group[N]`, or `-` (`django_manage[0]`)
    #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::servers))]
    pub server: String,
    /// A command to run in a new window of the session (a shell stays open after it)
    pub command: Option<String>,
    /// The session's name (default: `cchq-<deploy_env>-<your login>`)
    #[arg(long, short = 's')]
    pub session: Option<String>,
    /// Start the window (or the session) and return without attaching; needs no terminal
    #[arg(long, short = 'd')]
    pub detach: bool,
}

/// `copy-files` / `scp`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where from: a local path, or SERVER:PATH (one host; `-:PATH` is `django_manage[0]`'s); or a plan file (PLAN.yml)
    #[arg(allow_hyphen_values = true, value_name = "SOURCE|PLAN.yml")]
    pub source: String,
    /// Where to: a local path, or SERVER:PATH (a group without an index is every host of it); after a plan: prepare, copy or cleanup
    #[arg(allow_hyphen_values = true, value_name = "TARGET|ACTION")]
    pub target: String,
    /// With a plan: only the targets this host pattern selects
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// With a plan's `copy`: only rsync's --dry-run (what would be transferred)
    #[arg(long, conflicts_with = "skip_check")]
    pub check: bool,
    /// With a plan's `copy`: copy without the --dry-run first (still asks, unless --yes)
    #[arg(long)]
    pub skip_check: bool,
    /// With a plan's `copy`: answer yes (copy after the dry run)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Read and write on the hosts as root (sudo)
    #[arg(short = 'b', long = "become")]
    pub become_root: bool,
    /// Read and write on the hosts as this user (sudo -u USER)
    #[arg(long, value_name = "USER", conflicts_with = "become_root")]
    pub become_user: Option<String>,
    /// The target's permission bits in octal, e.g. 0600 (default: the source's)
    #[arg(long, value_name = "OCTAL")]
    pub mode: Option<String>,
    /// One JSON object per file written (source, target, bytes, mode); with a plan, per step done
    #[arg(long)]
    pub json: bool,
}

/// `update-local-known-hosts`.
#[derive(Debug, Args)]
pub struct KnownHostsArgs {
    /// Only these hosts (a host pattern; default: every host)
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// Trust keys that changed: replace the old ones (check the new fingerprints first)
    #[arg(long)]
    pub replace: bool,
    /// Show what would change and write nothing (exit 1 when something would)
    #[arg(long)]
    pub check: bool,
    /// Also remove the keys of names that are no inventory host's (not with --limit)
    #[arg(long, conflicts_with = "limit")]
    pub prune: bool,
    /// One JSON object per key per line: host, name, key_type, status, old, new (and failed hosts)
    #[arg(long)]
    pub json: bool,
}

/// `kill-stale-celery-workers`.
#[derive(Debug, Args)]
pub struct StaleArgs {
    /// Only these hosts (a host pattern; default: the celery hosts)
    #[arg(long, short = 'l', add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::patterns))]
    pub limit: Option<String>,
    /// List them and stop (exit 1 when there are any)
    #[arg(long)]
    pub list: bool,
    /// The signal: KILL (default: workers stuck in their warm shutdown) or TERM (a warm shutdown)
    #[arg(long, default_value = "KILL", value_parser = ["KILL", "TERM"])]
    pub signal: String,
    /// Answer yes to the confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// One JSON object per worker per line: host, pid, release, args (and killed)
    #[arg(long)]
    pub json: bool,
}

/// `ansible-playbook` / `ap`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ApArgs {
    /// Only these hosts (an Ansible pattern; `!ansible_skip` is added when that group exists)
    #[arg(long, short = 'l')]
    pub limit: Option<String>,
    /// Apply without running --check first (still asks, unless --yes)
    #[arg(long)]
    pub skip_check: bool,
    /// Answer yes to the questions (apply after the check)
    #[arg(long, short = 'y', alias = "quiet")]
    pub yes: bool,
    /// commcare-cloud's Ansible directory (`src/commcare_cloud/ansible`): relative playbooks are
    /// looked up there and its ansible.cfg is used (default: $CCHQ_ANSIBLE_DIR)
    #[arg(long, value_name = "DIR", env = "CCHQ_ANSIBLE_DIR")]
    pub ansible_dir: Option<PathBuf>,
    /// Print the ansible-playbook command line (and the generated variables) and stop
    #[arg(long)]
    pub dry_run: bool,
    /// Log in as commcare-cloud's factory auth does, to bootstrap new hosts: `-i` public.yml's
    /// `commcare_cloud_pem`, `-u` `commcare_cloud_remote_user`, else `commcare_cloud_root_user`
    /// (default root)
    #[arg(long)]
    pub use_factory_auth: bool,
    /// The playbook (.yml)
    pub playbook: String,
    /// Everything after the playbook goes to ansible-playbook as it is (`--tags x`, `-e k=v`, `-v`)
    #[arg(allow_hyphen_values = true)]
    pub ansible_args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--rollback-on-failure` and `--no-rollback-on-failure`: the last one given wins; neither
    /// leaves it to cchq.yml.
    #[test]
    fn rollback_on_failure_flags_override_each_other() {
        let deploy = |args: &[&str]| match Cli::try_parse_from(
            [&["cchq", "e", "deploy"][..], args].concat(),
        )
        .unwrap()
        .command
        {
            Command::Deploy(d) => (d.rollback_on_failure, d.no_rollback_on_failure),
            _ => unreachable!(),
        };
        assert_eq!(deploy(&[]), (false, false));
        assert_eq!(deploy(&["--rollback-on-failure"]), (true, false));
        assert_eq!(
            deploy(&["--rollback-on-failure", "--no-rollback-on-failure"]),
            (false, true)
        );
        assert_eq!(
            deploy(&["--no-rollback-on-failure", "--rollback-on-failure"]),
            (true, false)
        );
    }

    /// Splits an example line as a POSIX shell would (quotes; a `#` word starts a comment).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut cur, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => cur.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, '#') if !in_word => break,
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                (None, c) => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        words
    }

    /// The examples in every command's `--help` parse as they are written (`copy-files
    /// -:/tmp/x .` once did not: clap read `-:/tmp/x` as an option).
    #[test]
    fn help_examples_parse() {
        let cmd = Cli::command();
        let mut seen = 0;
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            let help = sub
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            for line in help.lines().filter(|l| l.trim_start().starts_with("cchq ")) {
                let words = shell_words(line);
                let parsed = Cli::try_parse_from(&words);
                assert!(
                    parsed.is_ok(),
                    "{name}: `{}` does not parse: {}",
                    line.trim(),
                    parsed.unwrap_err()
                );
                seen += 1;
            }
        }
        assert!(seen >= 24, "only {seen} examples found");
    }

    /// Every subcommand name and flag of the grammar, and values that reach the parsers.
    static WORDS: LazyLock<Vec<String>> = LazyLock::new(|| {
        fn walk(c: &clap::Command, out: &mut Vec<String>) {
            out.push(c.get_name().to_owned());
            for a in c.get_arguments() {
                out.extend(a.get_long().map(|l| format!("--{l}")));
                out.extend(a.get_short().map(|s| format!("-{s}")));
                out.extend(
                    a.get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_owned()),
                );
            }
            for s in c.get_subcommands() {
                walk(s, out);
            }
        }
        let mut out = Vec::new();
        walk(&Cli::command(), &mut out);
        let values = [
            "development",
            "test",
            "-",
            "--",
            "all",
            "webworkers[0",
            "webworkers[0]",
            "x=1",
            "=",
            "0",
            "-1",
            "99999999999999999999",
            "1e9",
            "é",
            "中",
            "",
            " ",
            "\n",
            "--environments=/nonexistent",
            "-oProxyCommand=true",
            "--help",
            "-h",
            "--version",
        ];
        out.extend(values.iter().map(|v| (*v).to_owned()));
        out.sort();
        out.dedup();
        out
    });

    fn args() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            prop_oneof![
                6 => proptest::sample::select(WORDS.clone()),
                1 => any::<String>(),
                1 => (proptest::sample::select(WORDS.clone()), "[=a-z0-9é\\-]{0,6}").prop_map(|(w, s)| format!("{w}{s}")),
            ],
            0..9,
        )
    }

    /// Issue 12: the command line, whatever it holds, parses or is a usage error; never a panic.
    /// 1024 cases (`CCHQ_FUZZ_CASES`), or batches of them for `CCHQ_FUZZ_SECS` seconds.
    #[test]
    fn random_command_lines_never_panic() {
        cchq_tests::fuzz_batches(1024, |cases| {
            let config = ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            };
            proptest!(config, |(words in args(), env_first in any::<bool>())| {
                let mut argv = vec!["cchq".to_owned()];
                if env_first {
                    argv.push("development".to_owned());
                }
                argv.extend(words);
                if let Err(e) = Cli::try_parse_from(&argv) {
                    // What `main` does with it: render the message and pick the exit code.
                    prop_assert!(!e.render().to_string().is_empty());
                    let _ = e.use_stderr();
                }
            });
        });
    }
}
