//! The daily commands around a deploy that operators run from commcare-cloud: `ping`, `tmux`,
//! `copy-files` / `scp`, `update-local-known-hosts`, `kill-stale-celery-workers`,
//! `list-postgresql-dbs` and `ansible-playbook`. Each decides and builds its remote commands
//! here; the CLI only parses and renders.

pub mod ansible;
pub mod celery;
pub mod copy;
pub mod copy_plan;
pub mod generated;
pub mod known_hosts;
pub mod pg_dbs;
pub mod ping;
pub mod tmux;
