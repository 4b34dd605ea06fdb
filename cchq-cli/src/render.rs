//! How errors, warnings and tables reach the terminal: data on stdout, everything else on stderr.

use std::io::IsTerminal;

use cchq_core::Error;

/// Sets the colour choice of `--color` for the whole process: `always`, `never`, or `auto` (the
/// default), which colours a stream that is a terminal unless `NO_COLOR` is set and non-empty,
/// `CLICOLOR=0` or `TERM=dumb`, and colours any stream with `CLICOLOR_FORCE` set and non-empty
/// (anstream's rules, the ones clap's own help and errors follow).
pub fn set_color(choice: clap::ColorChoice) {
    let c = match choice {
        clap::ColorChoice::Always => anstream::ColorChoice::Always,
        clap::ColorChoice::Never => anstream::ColorChoice::Never,
        clap::ColorChoice::Auto => anstream::ColorChoice::Auto,
    };
    c.write_global();
}

/// `--color` as written on a command line that did not parse (so that clap's error and help
/// follow it too): the last `--color WHEN` / `--color=WHEN` before a `--`.
pub fn color_from_args(args: &[std::ffi::OsString]) -> Option<clap::ColorChoice> {
    use clap::ValueEnum as _;
    let mut found = None;
    let mut it = args.iter().skip(1).map(|a| a.to_str().unwrap_or(""));
    while let Some(a) = it.next() {
        let value = match a {
            "--" => break,
            "--color" => it.next(),
            _ => a.strip_prefix("--color="),
        };
        if let Some(v) = value {
            found = clap::ColorChoice::from_str(v, false).ok().or(found);
        }
    }
    found
}

/// Which stream a text is written to, for [`colors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Data.
    Stdout,
    /// Messages, progress.
    Stderr,
}

/// The one place that decides whether cchq writes colours on `stream` (see [`set_color`]).
/// Only cchq's own words are coloured; what hosts print is passed on byte for byte.
pub fn colors(stream: Stream) -> bool {
    let choice = match stream {
        Stream::Stdout => anstream::AutoStream::choice(&std::io::stdout()),
        Stream::Stderr => anstream::AutoStream::choice(&std::io::stderr()),
    };
    choice != anstream::ColorChoice::Never
}

/// The styles cchq uses.
pub mod style {
    use anstyle::{AnsiColor, Style};

    /// `error:`
    pub const ERROR: Style = AnsiColor::Red.on_default().bold();
    /// `warning:`
    pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
    /// `hint:`
    pub const HINT: Style = AnsiColor::Cyan.on_default().bold();
    /// Something that worked.
    pub const OK: Style = AnsiColor::Green.on_default();
    /// Something that failed.
    pub const FAILED: Style = AnsiColor::Red.on_default().bold();
}

/// `text` in `style` when [`colors`] says so for `stream`.
pub fn paint(stream: Stream, style: anstyle::Style, text: &str) -> String {
    if colors(stream) {
        format!("{style}{text}{style:#}")
    } else {
        text.to_owned()
    }
}

/// Writes a line on stderr. A stderr that cannot be written (the terminal went away with
/// SIGHUP, a closed pipe) is not an error: `eprintln!` would panic, in the middle of a deploy.
fn err_line(text: &str) {
    err(&format!("{text}\n"));
}

/// Writes `text` (its own line ends) on stderr, above the live progress lines when they show;
/// never panics (see [`err_line`]).
pub fn err(text: &str) {
    use std::io::Write as _;
    crate::progress::suspend(|| {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes()).and_then(|()| e.flush());
    });
}

/// Prints `error: ...` and, when there is one, `hint: ...`.
pub fn error(err: &Error) {
    err_line(&format!(
        "{} {}",
        paint(Stream::Stderr, style::ERROR, "error:"),
        err.message()
    ));
    if let Some(hint) = err.hint() {
        err_line(&format!(
            "{} {hint}",
            paint(Stream::Stderr, style::HINT, "hint:")
        ));
    }
}

/// Prints `error: <host>: ...`, one host's error among others, without its hint (which would
/// repeat for every host).
pub fn host_error(host: &str, err: &Error) {
    err_line(&format!(
        "{} {host}: {}",
        paint(Stream::Stderr, style::ERROR, "error:"),
        err.message()
    ));
}

/// Prints `warning: ...`.
pub fn warning(message: &str) {
    err_line(&format!(
        "{} {message}",
        paint(Stream::Stderr, style::WARNING, "warning:")
    ));
}

/// Prints a progress/info line on stderr.
pub fn info(message: &str) {
    err_line(message);
}

/// How many columns a table on stdout may take: the terminal's width when stdout is a terminal,
/// else `$COLUMNS` when set, else no limit (a file or a pipe gets every character; `--json`
/// always does).
pub fn table_width() -> Option<usize> {
    if std::io::stdout().is_terminal()
        && let Some((_, w)) = console::Term::stdout().size_checked()
    {
        return Some(usize::from(w));
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&w: &usize| w > 0)
}

/// The display width of `text` in a terminal's columns (`é` is 1, `中` is 2).
pub fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` cut to at most `max` columns, ending in `…` when cut.
pub fn fit(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in text.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `text` cut in the middle to at most `max` columns (`commcare-hq-…_queue:0`): program names
/// differ at both ends.
pub fn elide_middle(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    if max < 5 {
        return fit(text, max);
    }
    let budget = max - 1;
    let (head_w, tail_w) = (budget - budget / 2, budget / 2);
    let (mut head, mut w) = (String::new(), 0);
    for c in text.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw > head_w {
            break;
        }
        head.push(c);
        w += cw;
    }
    let (mut tail, mut w) = (Vec::new(), 0);
    for c in text.chars().rev() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw > tail_w {
            break;
        }
        tail.push(c);
        w += cw;
    }
    format!("{head}…{}", tail.into_iter().rev().collect::<String>())
}

/// Formats rows as aligned columns (the last column is not padded), as wide as the terminal at
/// most ([`table_width`]).
pub fn table(rows: &[Vec<String>]) -> String {
    table_within(rows, table_width())
}

/// The narrowest a column is made to fit a table in its width (narrower cells stay as they are).
const MIN_COLUMN: usize = 12;

/// [`table`] within `max` columns: when the table is wider, the widest columns are narrowed
/// (never below [`MIN_COLUMN`]) and their longer cells cut in the middle with `…`.
pub fn table_within(rows: &[Vec<String>], max: Option<usize>) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(width(c));
        }
    }
    if let Some(max) = max {
        let seps = 2 * cols.saturating_sub(1);
        let total = |cap: usize| {
            widths
                .iter()
                .map(|&w| w.min(cap.max(MIN_COLUMN)))
                .sum::<usize>()
                + seps
        };
        if total(usize::MAX) > max {
            // The largest cap on every column's width that fits (binary search: `total` grows with it).
            let (mut lo, mut hi) = (0, widths.iter().copied().max().unwrap_or(0));
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if total(mid) <= max {
                    lo = mid
                } else {
                    hi = mid - 1
                }
            }
            let cap = lo.max(MIN_COLUMN);
            for w in &mut widths {
                *w = (*w).min(cap);
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let cell = elide_middle(c, widths[i]);
            line.push_str(&cell);
            if i + 1 < r.len() {
                // Padded by hand: a `{:<w$}` width above 65,535 panics (issue 12).
                let pad = widths[i].saturating_sub(width(&cell)) + 2;
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
    let written = crate::progress::suspend(|| {
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes()).and_then(|()| o.flush())
    });
    if let Err(e) = written
        && !STDOUT_GONE.swap(true, Ordering::Relaxed)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        warning(&format!(
            "cannot write to stdout ({e}): carrying on without output"
        ));
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
    use std::io::BufRead as _;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    err(&format!("{question} "));
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
        None => Err(
            cchq_core::Error::usage(format!("{question}: no terminal to ask"))
                .with_hint("pass `--yes` to confirm non-interactively"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["ddd".to_owned(), "é".to_owned(), "f".to_owned()],
        ];
        assert_eq!(table_within(&rows, None), "a    bb  c\nddd  é   f\n");
        assert_eq!(table_within(&[], None), "");
        assert_eq!(table_within(&[vec!["x".to_owned()], vec![]], None), "x\n\n");
        // Width in columns, not characters: `中` takes two.
        let rows = vec![
            vec!["中文".to_owned(), "x".to_owned()],
            vec!["ab".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table_within(&rows, None), "中文  x\nab    y\n");
    }

    /// Issue 12: a cell wider than 65,535 characters panicked (`format!` widths are `u16`).
    #[test]
    fn tables_with_huge_cells_do_not_panic() {
        let wide = "x".repeat(70_000);
        let out = table_within(
            &[
                vec![wide.clone(), "b".to_owned()],
                vec!["a".to_owned(), "c".to_owned()],
            ],
            None,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("{wide}  b"));
        assert_eq!(lines[1].len(), 70_000 + 2 + 1);
    }

    /// Issue 16: a celery program name of 200+ characters does not make a 230-column table; the
    /// widest columns are narrowed and cut in the middle (ends kept), the others stay whole.
    #[test]
    fn wide_cells_are_cut_to_the_width() {
        let program = format!(
            "commcare-hq-prod-celery_{}:0",
            "background_queue,".repeat(12)
        );
        let rows = vec![
            vec![
                "HOST".to_owned(),
                "PROGRAM".to_owned(),
                "STATE".to_owned(),
                "DETAIL".to_owned(),
            ],
            vec![
                "celery1".to_owned(),
                program.clone(),
                "RUNNING".to_owned(),
                "pid 123, uptime 0:01:02".to_owned(),
            ],
        ];
        let out = table_within(&rows, Some(80));
        for line in out.lines() {
            assert!(width(line) <= 80, "{line:?} is {} wide", width(line));
        }
        let line = out.lines().nth(1).unwrap();
        assert!(
            line.starts_with("celery1  commcare-hq-prod-c") && line.contains("_queue,:0  RUNNING"),
            "{line}"
        );
        assert!(line.contains("…") && line.contains("RUNNING"), "{line}");
        assert!(
            table_within(&rows, None).contains(&program),
            "no limit: whole"
        );
        assert_eq!(elide_middle("abcdefghij", 7), "abc…hij");
        assert_eq!(elide_middle("中文中文中文", 7), "中…文");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
