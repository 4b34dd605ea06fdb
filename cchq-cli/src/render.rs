//! How errors, warnings and tables reach the terminal: data on stdout, everything else on stderr.

use std::io::IsTerminal;

use cchq_core::Error;

/// Whether stderr is a terminal (colour and progress only then).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    if stderr_is_tty() && std::env::var_os("NO_COLOR").is_none() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
}

/// Writes a line on stderr. A stderr that cannot be written (the terminal went away with
/// SIGHUP, a closed pipe) is not an error: `eprintln!` would panic, in the middle of a deploy.
fn err_line(text: &str) {
    use std::io::Write as _;
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes()).and_then(|()| e.write_all(b"\n")).and_then(|()| e.flush());
}

/// Prints `error: ...` and, when there is one, `hint: ...`.
pub fn error(err: &Error) {
    err_line(&format!("{} {}", paint("1;31", "error:"), err.message()));
    if let Some(hint) = err.hint() {
        err_line(&format!("{} {hint}", paint("1;36", "hint:")));
    }
}

/// Prints `warning: ...`.
pub fn warning(message: &str) {
    err_line(&format!("{} {message}", paint("1;33", "warning:")));
}

/// Prints a progress/info line on stderr.
pub fn info(message: &str) {
    err_line(message);
}

/// Formats rows as aligned columns (the last column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                // Padded by hand: a `{:<w$}` width above 65,535 panics (issue 12).
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Set once stdout could not be written: nothing more is written to it.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stdout could not be written (its reader went away): what is left is not written.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes data to stdout. When the reader went away (`cchq ... | head -1`: EPIPE, as Rust ignores
/// SIGPIPE) or stdout fails otherwise, the rest of the output is dropped and the work carries on:
/// a command, above all a deploy, must never end half done (nor exit 0) because nobody reads it.
/// A closed pipe is normal (`| head`) and silent; another failure is a warning, once.
pub fn out(text: &str) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if stdout_gone() {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|()| o.flush())
        && !STDOUT_GONE.swap(true, Ordering::Relaxed)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        warning(&format!("cannot write to stdout ({e}): carrying on without output"));
    }
}

/// `println!` for data: through [`out`], so that a closed pipe is not a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::render::out(&format!("{}\n", format_args!($($arg)*))) };
}

/// Whether questions can be asked (stdin is a terminal).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks a question on the terminal; `None` when stdin is not a terminal (the caller then needs a
/// flag such as `--yes`).
pub fn ask(question: &str) -> Option<String> {
    use std::io::{BufRead as _, Write as _};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question} ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    Some(line.trim().to_owned())
}

/// A yes/no confirmation: `yes` (from `--yes`) answers it; otherwise the terminal is asked.
pub fn confirm(question: &str, yes: bool) -> Result<bool, cchq_core::Error> {
    if yes {
        return Ok(true);
    }
    match ask(&format!("{question} [y/N]")) {
        Some(a) => Ok(matches!(a.to_lowercase().as_str(), "y" | "yes")),
        None => {
            Err(cchq_core::Error::usage(format!("{question}: no terminal to ask")).with_hint("pass `--yes` to confirm non-interactively"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()], vec!["ddd".to_owned(), "é".to_owned(), "f".to_owned()]];
        assert_eq!(table(&rows), "a    bb  c\nddd  é   f\n");
        assert_eq!(table(&[]), "");
        assert_eq!(table(&[vec!["x".to_owned()], vec![]]), "x\n\n");
    }

    /// Issue 12: a cell wider than 65,535 characters panicked (`format!` widths are `u16`).
    #[test]
    fn tables_with_huge_cells_do_not_panic() {
        let wide = "x".repeat(70_000);
        let out = table(&[vec![wide.clone(), "b".to_owned()], vec!["a".to_owned(), "c".to_owned()]]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("{wide}  b"));
        assert_eq!(lines[1].len(), 70_000 + 2 + 1);
    }
}
