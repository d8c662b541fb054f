//! Showing a running job: a progress bar on a terminal, a plain line a second otherwise, JSON
//! lines with `--json`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use batchgrid_core::manager::JobProgress;
use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
pub enum ProgressView {
    /// An indicatif bar on stderr.
    Bar(ProgressBar),
    /// A text line on stderr now and then.
    Lines { last: Option<Instant>, every: Duration },
    /// A JSON object per line on stderr now and then.
    Json { last: Option<Instant>, every: Duration },
}

impl ProgressView {
    /// Picks the view for this terminal and flags.
    pub fn new(json: bool) -> Self {
        if json {
            return ProgressView::Json { last: None, every: Duration::from_secs(1) };
        }
        if !std::io::stderr().is_terminal() {
            return ProgressView::Lines { last: None, every: Duration::from_secs(2) };
        }
        let bar = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        ProgressView::Bar(bar)
    }

    fn summary(progress: &JobProgress) -> String {
        progress
            .stages
            .iter()
            .map(|s| {
                let total = s.expected.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
                let failed = if s.failed > 0 { format!(" ({} failed)", s.failed) } else { String::new() };
                format!("{} {}/{}{}", s.name, s.done, total, failed)
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    /// Shows one tick's progress.
    pub fn update(&mut self, job: &str, progress: &JobProgress) {
        self.update_with_eta(job, progress, None);
    }

    /// Shows one tick's progress with the manager's estimate of the time left.
    pub fn update_with_eta(&mut self, job: &str, progress: &JobProgress, eta: Option<Duration>) {
        let eta_text = eta.map(|left| format!("  ETA {}", humantime::format_duration(left))).unwrap_or_default();
        let due = |last: &mut Option<Instant>, every: Duration| {
            let now = Instant::now();
            let due = last.is_none_or(|l| now - l >= every) || progress.state.is_terminal();
            if due {
                *last = Some(now);
            }
            due
        };
        match self {
            ProgressView::Bar(bar) => {
                bar.set_length(progress.known_total());
                bar.set_position(progress.done() + progress.failed());
                bar.set_message(format!("{}  {}{eta_text}", progress.state, Self::summary(progress)));
            }
            ProgressView::Lines { last, every } => {
                if due(last, *every) {
                    eprintln!("{job} {}: {}{eta_text}", progress.state, Self::summary(progress));
                }
            }
            ProgressView::Json { last, every } => {
                if due(last, *every) {
                    let line = serde_json::json!({
                        "job": job, "state": progress.state, "stages": progress.stages,
                        "eta_seconds": eta.map(|left| left.as_secs()),
                    });
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Prints a note without tearing the bar.
    pub fn note(&self, text: &str) {
        match self {
            ProgressView::Bar(bar) => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let ProgressView::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
