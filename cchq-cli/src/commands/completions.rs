//! `cchq completions <shell>`: a completion script for bash, zsh or fish.

use std::ffi::OsString;

use clap::CommandFactory;
use clap_complete::Shell;

use super::ExitStatus;
use crate::cli::Cli;
use crate::render;

pub fn run(args: &[OsString]) -> ExitStatus {
    let shell = args.get(2).and_then(|s| s.to_str()).unwrap_or("");
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        "-h" | "--help" | "" => {
            crate::outln!(
                "Print a shell completion script.\n\nUsage: cchq completions <bash|zsh|fish>\n\nExample:\n  cchq completions bash > ~/.local/share/bash-completion/completions/cchq"
            );
            return if shell.is_empty() { ExitStatus::Usage } else { ExitStatus::Success };
        }
        other => {
            render::error(&cchq_core::Error::usage(format!("unknown shell `{other}`")).with_hint("use one of `bash`, `zsh`, `fish`"));
            return ExitStatus::Usage;
        }
    };
    clap_complete::generate(shell, &mut Cli::command(), "cchq", &mut std::io::stdout());
    ExitStatus::Success
}
