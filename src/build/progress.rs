//! Showing a build as it happens: bars on a terminal, plain lines otherwise, JSON events
//! on stdout with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use keel_engine::{Event, Status};

use crate::output::{Output, error_line};

/// Renders engine events.
pub struct Progress {
    out: Output,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    running: HashMap<String, ProgressBar>,
}

impl Progress {
    pub fn new(out: Output) -> Progress {
        let bars = (!out.json && !out.quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            total.set_prefix("Building");
            total.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                total,
                running: HashMap::new(),
            }
        });
        Progress { out, bars }
    }

    pub fn event(&mut self, e: &Event) {
        if self.out.json {
            // A closed stdout must not stop the build; the summary reports the end.
            let _ = self.out.json_value(e);
            return;
        }
        match &mut self.bars {
            Some(b) => b.event(e),
            None => self.plain(e),
        }
    }

    fn plain(&self, e: &Event) {
        if self.out.quiet {
            if let Event::ActionFinished {
                name,
                status: Status::Failed { error },
                ..
            } = e
            {
                error_line(&format!("error: {name} failed: {error}"));
            }
            return;
        }
        match e {
            Event::ActionStarted { name, reasons, .. } => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                error_line(&format!("{:>12} {name} ({})", "Running", why.join("; ")));
            }
            Event::ActionFinished {
                name,
                status,
                duration_ms,
                ..
            } => match status {
                Status::Ran => error_line(&format!(
                    "{:>12} {name} in {}",
                    "Finished",
                    secs(*duration_ms)
                )),
                Status::CutOff => error_line(&format!(
                    "{:>12} {name} in {} (output unchanged: dependents cut off)",
                    "Finished",
                    secs(*duration_ms)
                )),
                Status::Failed { error } => {
                    error_line(&format!("{:>12} {name}: {error}", "Failed"));
                }
                _ => {}
            },
            _ => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bars.take() {
            b.total.finish_and_clear();
            for (_, bar) in b.running {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
    }
}

impl Bars {
    fn event(&mut self, e: &Event) {
        match e {
            Event::BuildStarted { actions, .. } => self.total.set_length(*actions as u64),
            Event::ActionStarted { name, reasons, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12.green} {msg} {elapsed}")
                        .expect("valid template"),
                );
                bar.set_prefix("Running");
                let why = reasons.first().map(ToString::to_string).unwrap_or_default();
                bar.set_message(format!("{name} ({why})"));
                bar.enable_steady_tick(Duration::from_millis(200));
                self.running.insert(name.clone(), bar);
            }
            Event::ActionFinished {
                name,
                status,
                duration_ms,
                ..
            } => {
                self.total.inc(1);
                if let Some(bar) = self.running.remove(name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let line = match status {
                    Status::Ran => Some(format!(
                        "{:>12} {name} in {}",
                        "Finished",
                        secs(*duration_ms)
                    )),
                    Status::CutOff => Some(format!(
                        "{:>12} {name} in {} (output unchanged: dependents cut off)",
                        "Finished",
                        secs(*duration_ms)
                    )),
                    Status::Failed { error } => Some(format!("{:>12} {name}: {error}", "Failed")),
                    _ => None,
                };
                if let Some(l) = line {
                    let _ = self.multi.println(l);
                }
            }
            Event::BuildFinished { .. } => {}
        }
    }
}

/// `1.2 s` / `35 ms`.
pub fn secs(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}
