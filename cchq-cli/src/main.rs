//! The `cchq` command line: `cchq [--environments DIR] <env> <command> ...`.

// A failure is an `Error` with a kind and a hint, never a panic (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;
mod commands;
mod progress;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    let status = commands::main(std::env::args_os().collect());
    ExitCode::from(status.code())
}
