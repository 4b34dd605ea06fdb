//! The `cchq` command line: `cchq [--environments DIR] <env> <command> ...`.

mod cli;
mod commands;
mod progress;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    let status = commands::main(std::env::args_os().collect());
    ExitCode::from(status.code())
}
