//! Two runs side by side: the figures a platform team compares after each month-end (duration,
//! throughput, tasks, failures, cost), each with its change. Pure: the reports come from the
//! caller, and which earlier run is "the previous one" is decided here from a job listing.

use std::fmt::Write as _;

use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};

use super::{format_ms, JobReport};
use crate::service::JobStatus;

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds, shown as a duration.
    Millis,
    /// Tasks per second.
    PerSecond,
    /// A count.
    Count,
    /// US dollars.
    Dollars,
}

impl Unit {
    /// `value` in this unit, for people.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Millis => format_ms(value.max(0.0).round() as u64),
            Self::PerSecond => format!("{value:.2}/s"),
            Self::Count => format!("{value:.0}"),
            Self::Dollars => format!("${value:.4}"),
        }
    }

    /// A signed change in this unit.
    pub fn format_change(self, change: f64) -> String {
        let sign = if change > 0.0 {
            "+"
        } else if change < 0.0 {
            "-"
        } else {
            ""
        };
        format!("{sign}{}", self.format(change.abs()))
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What it is.
    pub label: &'static str,
    /// How it is shown.
    pub unit: Unit,
    /// In the earlier (compared) run.
    pub before: f64,
    /// In this run.
    pub after: f64,
}

impl Figure {
    /// `after - before`.
    pub fn change(&self) -> f64 {
        self.after - self.before
    }

    /// The change as a percentage of `before`; `None` when `before` is zero (no percentage
    /// of nothing), whatever `after` is.
    pub fn percent(&self) -> Option<f64> {
        (self.before != 0.0).then(|| self.change() / self.before * 100.0)
    }

    /// The percentage for people: `+12.5%`, or `n/a` when there is none.
    pub fn percent_text(&self) -> String {
        match self.percent() {
            Some(p) if p.is_finite() => format!("{p:+.1}%"),
            _ => "n/a".to_owned(),
        }
    }
}

/// Serialized with its change, absolute and in percent (`null` when `before` is zero), for
/// tools that read `batchgrid report --json`.
impl Serialize for Figure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut figure = serializer.serialize_struct("Figure", 6)?;
        figure.serialize_field("label", self.label)?;
        figure.serialize_field("unit", &self.unit)?;
        figure.serialize_field("before", &self.before)?;
        figure.serialize_field("after", &self.after)?;
        figure.serialize_field("change", &self.change())?;
        figure.serialize_field("percent", &self.percent().filter(|p| p.is_finite()))?;
        figure.end()
    }
}

/// This run against an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The earlier run's id.
    pub before_id: String,
    /// This run's id.
    pub after_id: String,
    /// Duration, throughput, tasks, failures, cost.
    pub figures: Vec<Figure>,
}

impl Comparison {
    /// `after` against `before`.
    pub fn of(before: &JobReport, after: &JobReport) -> Self {
        let figure =
            |label, unit, get: fn(&JobReport) -> f64| Figure { label, unit, before: get(before), after: get(after) };
        Self {
            before_id: before.job_id.clone(),
            after_id: after.job_id.clone(),
            figures: vec![
                figure("duration", Unit::Millis, |r| r.wall_ms as f64),
                figure("throughput", Unit::PerSecond, |r| r.tasks_per_second),
                figure("tasks done", Unit::Count, |r| r.tasks_done as f64),
                figure("tasks failed", Unit::Count, |r| r.tasks_failed as f64),
                figure("failed attempts", Unit::Count, |r| r.failed_attempts as f64),
                figure("cost", Unit::Dollars, |r| r.request_cost_usd + r.instance_cost_usd),
            ],
        }
    }

    /// The comparison as a text table.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "compared with job {} (before) -> {} (after)", self.before_id, self.after_id);
        let _ = writeln!(out, "  {:<16} {:>12} {:>12} {:>12} {:>9}", "", "before", "after", "change", "%");
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {:<16} {:>12} {:>12} {:>12} {:>9}",
                f.label,
                f.unit.format(f.before),
                f.unit.format(f.after),
                f.unit.format_change(f.change()),
                f.percent_text()
            );
        }
        out
    }
}

/// The most recent job listed before `current` with its name that has ended: the run to compare
/// `current` with under `--compare previous`.
pub fn previous<'a>(jobs: &'a [JobStatus], current: &JobStatus) -> Option<&'a JobStatus> {
    jobs.iter()
        .filter(|j| j.id != current.id && j.name == current.name && j.state.is_terminal())
        .filter(|j| (j.submitted_at, &j.id) < (current.submitted_at, &current.id))
        .max_by_key(|j| (j.submitted_at, j.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(before: f64, after: f64) -> Figure {
        Figure { label: "x", unit: Unit::Count, before, after }
    }

    #[test]
    fn changes_are_absolute_and_relative_to_the_earlier_run() {
        let f = figure(200.0, 150.0);
        assert_eq!(f.change(), -50.0);
        assert_eq!(f.percent(), Some(-25.0));
        assert_eq!(f.percent_text(), "-25.0%");
        assert_eq!(figure(4.0, 5.0).percent_text(), "+25.0%");
        assert_eq!(Unit::Millis.format_change(-1500.0), "-1.50s");
        assert_eq!(Unit::Count.format_change(3.0), "+3");
    }

    #[test]
    fn a_figure_serializes_with_its_change() {
        let value = serde_json::to_value(Figure { label: "duration", unit: Unit::Millis, before: 200.0, after: 150.0 });
        assert_eq!(
            value.ok(),
            Some(serde_json::json!({
                "label": "duration", "unit": "millis", "before": 200.0, "after": 150.0, "change": -50.0, "percent": -25.0
            }))
        );
        let none = serde_json::to_value(figure(0.0, 7.0)).ok();
        assert_eq!(none.as_ref().and_then(|v| v.get("percent")), Some(&serde_json::Value::Null));
    }

    #[test]
    fn no_percentage_of_zero() {
        let f = figure(0.0, 7.0);
        assert_eq!(f.change(), 7.0);
        assert_eq!(f.percent(), None);
        assert_eq!(f.percent_text(), "n/a");
        assert_eq!(figure(0.0, 0.0).percent_text(), "n/a");
    }

    fn status(id: &str, name: &str, state: &str, submitted_at: i64) -> JobStatus {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "state": state, "submitted_at": submitted_at
        }))
        .expect("a job status")
    }

    #[test]
    fn previous_is_the_latest_earlier_ended_run_of_the_same_name() {
        let current = status("j5", "claims", "completed", 500);
        let jobs = vec![
            status("j1", "claims", "completed", 100),
            status("j2", "claims", "failed", 200),
            status("j3", "invoices", "completed", 300),
            status("j4", "claims", "running", 400),
            current.clone(),
            status("j6", "claims", "completed", 600),
        ];
        assert_eq!(previous(&jobs, &current).map(|j| j.id.as_str()), Some("j2"), "ended, earlier, same name");
        assert_eq!(previous(&jobs, &jobs[0]), None, "nothing before the first run");
    }
}
