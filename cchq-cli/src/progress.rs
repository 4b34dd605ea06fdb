//! Live progress lines on the terminal (indicatif), fed by the core's events: one line per deploy
//! phase (or per step where there are no phases: `run-shell-command`, `service`) with the hosts
//! done, failed and running, the time since it started, and the slowest hosts still running.
//!
//! Only on a terminal: never with `--json`, nor when stdout or stderr is not a terminal, nor with
//! `TERM=dumb` ([`enabled`]). Everything else cchq writes to the terminal meanwhile goes above
//! the lines ([`suspend`], which `render` calls for every write).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cchq_core::events::{Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::render::{self, Stream};

/// The live lines being shown, if any: writes go above them.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `f` (which writes to the terminal) with the live lines cleared, then draws them again.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let mp = ACTIVE.lock().ok().and_then(|g| g.clone());
    match mp {
        Some(mp) => mp.suspend(f),
        None => f(),
    }
}

/// Whether live progress is shown: not with `--json`, only when stdout and stderr are both
/// terminals and `TERM` is not `dumb`; `CCHQ_PROGRESS=0` turns it off.
pub fn enabled(json: bool) -> bool {
    !json
        && std::env::var_os("CCHQ_PROGRESS").is_none_or(|v| v != "0")
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
}

/// The state of one line.
#[derive(Debug)]
struct Line {
    /// What the line is about: a phase, or a step when there are no phases.
    label: String,
    /// The step whose hosts are counted (the latest one started in the phase).
    step: String,
    started: Instant,
    /// The number of hosts, when known.
    total: Option<usize>,
    done: usize,
    failed: usize,
    /// Hosts running the step, and since when.
    running: BTreeMap<String, Instant>,
    /// The last line each running host printed.
    last: BTreeMap<String, String>,
}

impl Line {
    fn new(label: &str, total: Option<usize>) -> Self {
        Self {
            label: label.to_owned(),
            step: String::new(),
            started: Instant::now(),
            total,
            done: 0,
            failed: 0,
            running: BTreeMap::new(),
            last: BTreeMap::new(),
        }
    }

    /// The text of the line (without the spinner), at `now`.
    fn text(&self, now: Instant) -> String {
        let mut out = self.label.clone();
        if !self.step.is_empty()
            && self.step != self.label
            && !self.label.ends_with(&format!("({})", self.step))
        {
            out.push_str(&format!(" [{}]", self.step));
        }
        out.push_str(&format!(" {}", clock(now.duration_since(self.started))));
        let finished = self.done + self.failed;
        if finished + self.running.len() > 0 || self.total.is_some() {
            match self.total {
                Some(t) => out.push_str(&format!(" · {finished}/{t} hosts done")),
                None => out.push_str(&format!(" · {finished} hosts done")),
            }
            if self.failed > 0 {
                out.push_str(&format!(", {} failed", self.failed));
            }
            out.push_str(&format!(", {} running", self.running.len()));
        }
        let mut slow: Vec<(&String, &Instant)> = self.running.iter().collect();
        slow.sort_by_key(|(h, t)| (**t, (*h).clone()));
        if !slow.is_empty() {
            let names: Vec<String> = slow
                .iter()
                .take(3)
                .map(|(h, t)| {
                    let mut s = format!("{h} {}", clock(now.duration_since(**t)));
                    // What the slowest host printed last, when the step prints.
                    if let Some(l) = self.last.get(*h).filter(|l| !l.trim().is_empty()) {
                        s.push_str(&format!(" «{}»", render::fit(l.trim(), 40)));
                    }
                    s
                })
                .collect();
            out.push_str(&format!(" · slowest: {}", names.join(", ")));
        }
        out
    }
}

/// `m:ss` (or `h:mm:ss`).
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[derive(Debug, Default)]
struct State {
    lines: HashMap<String, Line>,
    /// The phase running (deploys), whose line gets the steps' hosts.
    phase: Option<String>,
}

/// Live progress lines, updated from events (it is an [`EventSink`]). Cleared when dropped.
pub struct Live {
    mp: MultiProgress,
    state: Arc<Mutex<State>>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// The number of hosts of a step, when the caller knows it.
    total: Option<usize>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Live lines when [`enabled`] (`total`: the number of hosts each step runs on, if known).
    pub fn start(json: bool, total: Option<usize>) -> Option<Self> {
        if !enabled(json) {
            return None;
        }
        console::set_colors_enabled_stderr(render::colors(Stream::Stderr));
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        if let Ok(mut g) = ACTIVE.lock() {
            *g = Some(mp.clone());
        }
        Some(Self {
            mp,
            state: Arc::new(Mutex::new(State::default())),
            bars: Mutex::new(HashMap::new()),
            total,
        })
    }

    /// Shows the line `key` (made with `label` if new).
    fn open(&self, key: &str, label: &str, total: Option<usize>) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        if bars.contains_key(key) {
            return;
        }
        if let Ok(mut st) = self.state.lock() {
            st.lines.insert(key.to_owned(), Line::new(label, total));
        }
        let (state, k) = (Arc::clone(&self.state), key.to_owned());
        let width = console::Term::stderr()
            .size_checked()
            .map_or(100, |(_, w)| usize::from(w))
            .saturating_sub(3)
            .max(20);
        let template = if render::colors(Stream::Stderr) {
            "{spinner:.cyan} {line}"
        } else {
            "{spinner} {line}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "line",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let text = state
                        .lock()
                        .ok()
                        .and_then(|s| s.lines.get(&k).map(|l| l.text(Instant::now())))
                        .unwrap_or_default();
                    let _ = w.write_str(&render::fit(&text, width));
                },
            );
        let bar = self.mp.add(ProgressBar::new_spinner().with_style(style));
        bar.enable_steady_tick(Duration::from_millis(200));
        bars.insert(key.to_owned(), bar);
    }

    /// Removes the line `key`.
    fn close(&self, key: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(key)) {
            bar.finish_and_clear();
        }
        if let Ok(mut st) = self.state.lock() {
            st.lines.remove(key);
        }
    }

    /// Takes an event into the lines.
    pub fn event(&self, e: &Event) {
        match e {
            Event::Phase {
                phase,
                ok: None,
                detail,
                ..
            } => {
                let label = if detail.is_empty() {
                    phase.clone()
                } else {
                    format!("{phase} ({detail})")
                };
                self.open(phase, &label, None);
                if let Ok(mut st) = self.state.lock() {
                    st.phase = Some(phase.clone());
                }
            }
            Event::Phase {
                phase, ok: Some(_), ..
            } => {
                self.close(phase);
                if let Ok(mut st) = self.state.lock()
                    && st.phase.as_deref() == Some(phase.as_str())
                {
                    st.phase = None;
                }
            }
            Event::Started { host, step } => {
                let key = self
                    .state
                    .lock()
                    .ok()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| step.clone());
                self.open(&key, step, self.total);
                if let Ok(mut st) = self.state.lock()
                    && let Some(line) = st.lines.get_mut(&key)
                {
                    if line.step != *step {
                        // A new step of the phase: its hosts are counted afresh.
                        line.step = step.clone();
                        line.done = 0;
                        line.failed = 0;
                    }
                    line.running.insert(host.clone(), Instant::now());
                }
            }
            Event::Finished { host, step, ok, .. } => {
                let key = self
                    .state
                    .lock()
                    .ok()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| step.clone());
                let mut all_done = false;
                if let Ok(mut st) = self.state.lock()
                    && let Some(line) = st.lines.get_mut(&key)
                    && line.step == *step
                {
                    line.running.remove(host);
                    line.last.remove(host);
                    if *ok {
                        line.done += 1;
                    } else {
                        line.failed += 1;
                    }
                    // A step of its own (no phase) ends when its hosts are done: all of them
                    // when their number is known, else when none runs any more.
                    all_done = key == *step
                        && line.running.is_empty()
                        && line.total.is_none_or(|t| line.done + line.failed >= t);
                }
                if all_done {
                    self.close(&key);
                }
            }
            Event::Line { host, text, .. } => {
                let key = self.state.lock().ok().and_then(|s| s.phase.clone());
                if let Ok(mut st) = self.state.lock()
                    && let Some(line) = key.as_ref().and_then(|k| st.lines.get_mut(k))
                    && line.running.contains_key(host)
                {
                    line.last.insert(host.clone(), text.clone());
                }
            }
            _ => {}
        }
    }
}

impl EventSink for Live {
    fn emit(&self, event: &Event) {
        self.event(event);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        }
        let _ = self.mp.clear();
        if let Ok(mut g) = ACTIVE.lock() {
            *g = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_counts_hosts_and_names_the_slowest() {
        let t0 = Instant::now();
        let mut l = Line::new("build", Some(5));
        l.started = t0;
        l.step = "virtualenv".into();
        l.done = 2;
        l.failed = 1;
        l.running.insert("web2".into(), t0 + Duration::from_secs(3));
        l.running.insert("web1".into(), t0);
        let text = l.text(t0 + Duration::from_secs(65));
        assert_eq!(
            text,
            "build [virtualenv] 1:05 · 3/5 hosts done, 1 failed, 2 running · slowest: web1 1:05, web2 1:02"
        );
        // The last line a slow host printed comes with it.
        l.last
            .insert("web1".into(), "  Collecting django==5.1".into());
        let text = l.text(t0 + Duration::from_secs(65));
        assert!(
            text.ends_with("slowest: web1 1:05 «Collecting django==5.1», web2 1:02"),
            "{text}"
        );
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn no_progress_with_json() {
        assert!(!enabled(true));
    }
}
