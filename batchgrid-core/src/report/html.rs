//! The job report as one self-contained HTML page: inline CSS and inline SVG, no script and
//! nothing fetched (a report is opened on laptops without access to the grid's subnet, or
//! attached to a ticket). Every value goes through maud, which escapes it.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::compare::Comparison;
use super::distribution::{self, TimeBucket};
use super::workers::WorkerTimeline;
use super::{format_ms, JobReport, Percentiles};
use crate::chart;
use crate::spec::StageKind;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:60em}\
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .75em;border-bottom:1px solid #ddd;text-align:right}\
th:first-child,td:first-child{text-align:left}.worse{color:#b00}.better{color:#070}\
svg{width:100%;max-width:40em;height:auto}.bar{fill:#4a7bd0}.bar.before{fill:#bbb}\
.axis{stroke:#888;fill:none}text{font-size:11px;fill:#444}.line.before{stroke:#999;stroke-width:1.5;fill:none}\
.busy{fill:#4a7bd0}";

/// The page: the report, its task-time chart, and the comparison when there is one
/// (`before` is the compared run's report, drawn beside this run's percentiles).
pub fn render(report: &JobReport, comparison: Option<(&Comparison, &JobReport)>) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "batchgrid report: " (report.name) " " (report.job_id) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Job " (report.name) }
                p { "Job " code { (report.job_id) } " " strong { (report.state.to_string()) } " in " (format_ms(report.wall_ms)) "." }
                @if let Some(error) = &report.error { p.worse { "Reason: " (error) } }
                (summary(report))
                @let before = comparison.map(|(_, before)| before);
                h2 { "Throughput" }
                (or_not_recorded(throughput_chart(report, before)))
                h2 { "Task time" }
                (or_not_recorded(histogram_chart(&report.task_time_histogram, before.map(|b| b.task_time_histogram.as_slice()))))
                (percentile_chart(&report.task_ms, before.map(|b| &b.task_ms)))
                @if let Some((comparison, _)) = comparison { (comparison_table(comparison)) }
                h2 { "Workers" }
                (or_not_recorded(timeline_chart(&report.worker_timeline)))
                (stages(report))
                @if !report.failures.is_empty() {
                    h2 { "Failures" }
                    table {
                        tr { th { "stage" } th { "task" } th { "attempts" } th { "last error" } }
                        @for f in &report.failures { tr { td { (f.stage) } td { (f.task) } td { (f.attempts) } td { (f.error) } } }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// A chart, or a word on why there is none (a report stored before the series was kept, or a
/// job that did no task).
fn or_not_recorded(chart: Option<Markup>) -> Markup {
    chart.unwrap_or_else(|| html! { p { "Nothing recorded for this chart." } })
}

/// Tasks done per second over the run; the compared run's as a line when it has one.
fn throughput_chart(report: &JobReport, before: Option<&JobReport>) -> Option<Markup> {
    let before = before.map(|b| (b.throughput.slot_ms, b.throughput.done.as_slice()));
    chart::throughput(report.throughput.slot_ms, &report.throughput.done, before)
}

/// The full task-time distribution; the compared run's beside it, on the same buckets.
fn histogram_chart(after: &[TimeBucket], before: Option<&[TimeBucket]>) -> Option<Markup> {
    let bars: Vec<chart::Bucket> = match before.filter(|b| !b.is_empty()) {
        Some(before) => distribution::aligned(after, before)
            .into_iter()
            .map(|(b, earlier)| chart::Bucket {
                low_ms: b.low_ms,
                high_ms: b.high_ms,
                count: b.count,
                before: Some(earlier),
            })
            .collect(),
        None => after
            .iter()
            .map(|b| chart::Bucket { low_ms: b.low_ms, high_ms: b.high_ms, count: b.count, before: None })
            .collect(),
    };
    chart::buckets(&bars)
}

/// One row per worker, each slot shaded by its busy time against the slot's width, or against
/// the busiest worker-slot when workers ran several tasks at once; the summed row of the other
/// workers against its own busiest slot.
fn timeline_chart(timeline: &WorkerTimeline) -> Option<Markup> {
    let width = timeline.slot_ms.max(1) as f64;
    let peak = |busy: &[u64]| busy.iter().copied().max().unwrap_or(0).max(1) as f64;
    let busiest = timeline.workers.iter().map(|w| peak(&w.busy_ms)).fold(width, f64::max);
    let fractions = |busy: &[u64], of: f64| busy.iter().map(|&ms| ms as f64 / of).collect::<Vec<_>>();
    let mut rows: Vec<(String, Vec<f64>)> =
        timeline.workers.iter().map(|w| (w.worker_id.clone(), fractions(&w.busy_ms, busiest))).collect();
    if let Some(others) = &timeline.others {
        rows.push((format!("{} other workers", others.workers), fractions(&others.busy_ms, peak(&others.busy_ms))));
    }
    chart::busy_rows(timeline.slot_ms, &rows)
}

fn summary(report: &JobReport) -> Markup {
    html! {
        table {
            tr { th { "tasks done" } td { (report.tasks_done) } }
            tr { th { "tasks failed" } td { (report.tasks_failed) } }
            tr { th { "attempts (failed)" } td { (report.attempts) " (" (report.failed_attempts) ")" } }
            tr { th { "throughput" } td { (format!("{:.2} tasks/s", report.tasks_per_second)) } }
            tr { th { "cost" } td { (format!("${:.4}", report.request_cost_usd + report.instance_cost_usd)) } }
        }
    }
}

fn stages(report: &JobReport) -> Markup {
    html! {
        h2 { "Stages" }
        table {
            tr { th { "stage" } th { "kind" } th { "tasks" } th { "done" } th { "failed" } }
            @for s in &report.stages {
                tr {
                    td { (s.name) }
                    td { (match s.kind { StageKind::Map => "map", StageKind::Reduce => "reduce" }) }
                    td { (s.expected.map_or_else(|| "-".to_owned(), |n| n.to_string())) }
                    td { (s.done) }
                    td { (s.failed) }
                }
            }
        }
    }
}

fn comparison_table(comparison: &Comparison) -> Markup {
    html! {
        h2 { "Compared with " code { (comparison.before_id) } }
        table.comparison {
            tr { th { "" } th { "before" } th { "after" } th { "change" } th { "%" } }
            @for f in &comparison.figures {
                tr {
                    td { (f.label) }
                    td { (f.unit.format(f.before)) }
                    td { (f.unit.format(f.after)) }
                    td { (f.unit.format_change(f.change())) }
                    td { (f.percent_text()) }
                }
            }
        }
    }
}

/// Task-time percentiles as bars (grey: the compared run), under the distribution they come from.
fn percentile_chart(after: &Percentiles, before: Option<&Percentiles>) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 200.0;
    const M: f64 = 30.0;
    let rows = |p: &Percentiles| [("p50", p.p50), ("p90", p.p90), ("p99", p.p99), ("max", p.max)];
    let tallest =
        rows(after).iter().chain(before.map(rows).iter().flatten()).map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let group = (W - 2.0 * M) / 4.0;
    let bar = group / 3.0;
    let height = |v: u64| v as f64 / tallest * (H - 2.0 * M);
    html! {
        svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label="task-time percentiles" xmlns="http://www.w3.org/2000/svg" {
            path.axis d=(format!("M{M},{M} L{M},{b} L{r},{b}", b = H - M, r = W - M)) {}
            @for (index, (label, value)) in rows(after).into_iter().enumerate() {
                @let x = M + index as f64 * group + bar / 2.0;
                @if let Some(before) = before {
                    @let v = rows(before)[index].1;
                    rect.bar.before x=(format!("{x:.1}")) y=(format!("{:.1}", H - M - height(v))) width=(format!("{bar:.1}")) height=(format!("{:.1}", height(v))) {
                        title { (label) " before: " (format_ms(v)) }
                    }
                }
                rect.bar x=(format!("{:.1}", x + bar)) y=(format!("{:.1}", H - M - height(value))) width=(format!("{bar:.1}")) height=(format!("{:.1}", height(value))) {
                    title { (label) ": " (format_ms(value)) }
                }
                text x=(format!("{:.1}", x + bar)) y=(format!("{:.1}", H - M + 14.0)) text-anchor="middle" { (label) " " (format_ms(value)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::JobState;
    use crate::report::slots::Throughput;
    use crate::report::workers::WorkerRow;
    use crate::report::FailedTask;

    fn report(id: &str, wall_ms: u64, done: u64) -> JobReport {
        JobReport {
            job_id: id.to_owned(),
            name: "claims <month-end> & \"co\"".to_owned(),
            state: JobState::Completed,
            error: None,
            wall_ms,
            stages: Vec::new(),
            tasks_done: done,
            tasks_failed: 1,
            attempts: done + 1,
            failed_attempts: 1,
            tasks_per_second: done as f64 * 1000.0 / wall_ms as f64,
            task_ms: Percentiles { p50: 10, p90: 20, p99: 30, max: 40 },
            bytes_in: 0,
            bytes_out: 0,
            failures: vec![FailedTask {
                stage: "work".to_owned(),
                task: "t1".to_owned(),
                attempts: 1,
                error: "<script>alert(1)</script><b>".to_owned(),
            }],
            skipped_stages: Vec::new(),
            output: None,
            requests: Vec::new(),
            request_cost_usd: 0.0,
            instance_cost_usd: 0.0,
            instance_usage: Vec::new(),
            throughput: Throughput::default(),
            task_time_histogram: Vec::new(),
            worker_timeline: WorkerTimeline::default(),
            waiting: crate::report::Waiting::default(),
        }
    }

    /// Nothing the page could fetch or run: every reference outside the page is refused (the
    /// SVG namespace is a name, never fetched).
    fn assert_self_contained(page: &str) {
        let lower = page.to_lowercase().replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for needle in ["http://", "https://", "src=", "<script", "<link", "url(", "@import"] {
            assert!(!lower.contains(needle), "{needle} in the page:\n{page}");
        }
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_every_value() {
        let page = render(&report("01B", 2000, 10), None);
        assert_self_contained(&page);
        assert!(
            page.contains("claims &lt;month-end&gt; &amp; &quot;co&quot;")
                || page.contains("claims &lt;month-end&gt; &amp; \"co\"")
        );
        assert!(page.contains("&lt;script"), "the error is escaped");
        assert!(page.contains("<svg"), "a chart is drawn");
        assert!(!page.contains("Compared with"));
    }

    #[test]
    fn the_page_carries_the_comparison() {
        let before = report("01A", 4000, 8);
        let after = report("01B", 2000, 10);
        let comparison = Comparison::of(&before, &after);
        let page = render(&after, Some((&comparison, &before)));
        assert_self_contained(&page);
        assert!(page.contains("Compared with <code>01A</code>"), "{page}");
        assert!(page.contains("<td>duration</td><td>4.00s</td><td>2.00s</td><td>-2.00s</td><td>-50.0%</td>"), "{page}");
        assert!(page.contains("<td>tasks done</td><td>8</td><td>10</td><td>+2</td><td>+25.0%</td>"), "{page}");
        assert!(page.contains("<td>cost</td><td>$0.0000</td><td>$0.0000</td><td>$0.0000</td><td>n/a</td>"), "{page}");
        assert!(page.contains("bar before"), "the earlier run is drawn too");
    }

    /// A report with every series: 3 slots of throughput, two buckets, two workers.
    fn plotted(id: &str, wall_ms: u64, done: u64) -> JobReport {
        JobReport {
            throughput: Throughput { start_ms: 0, slot_ms: 1_000, done: vec![3, 0, done] },
            task_time_histogram: distribution::histogram(&[12, 14, 400]),
            worker_timeline: WorkerTimeline {
                slot_ms: 1_000,
                workers: vec![
                    WorkerRow { worker_id: "w-1".to_owned(), attempts: 2, busy_ms: vec![1_000, 500, 0] },
                    WorkerRow { worker_id: "w-2 <b>".to_owned(), attempts: 1, busy_ms: vec![0, 0, 250] },
                ],
                others: None,
            },
            ..report(id, wall_ms, done)
        }
    }

    #[test]
    fn the_page_plots_throughput_the_distribution_and_the_workers() {
        let page = render(&plotted("01B", 3000, 4), None);
        assert_self_contained(&page);
        assert!(page.contains("data-chart=\"throughput\" data-slots=\"3\" data-done=\"7\""), "{page}");
        assert!(page.contains("data-chart=\"task-time\""), "{page}");
        assert!(page.contains("data-tasks=\"3\""), "{page}");
        assert!(page.contains("data-chart=\"workers\" data-workers=\"2\" data-slots=\"3\""), "{page}");
        assert!(page.contains("w-2 &lt;b&gt;"), "worker ids are escaped");
        assert!(!page.contains("Nothing recorded"), "{page}");
        assert!(!page.contains("line before"), "no earlier run, no line");
    }

    #[test]
    fn an_older_report_without_series_still_renders() {
        let page = render(&report("01B", 2000, 10), None);
        assert_eq!(page.matches("Nothing recorded for this chart.").count(), 3, "{page}");
    }

    #[test]
    fn the_compared_run_is_overlaid() {
        let before = plotted("01A", 4000, 1);
        let after = plotted("01B", 3000, 4);
        let comparison = Comparison::of(&before, &after);
        let page = render(&after, Some((&comparison, &before)));
        assert_self_contained(&page);
        assert!(page.contains("class=\"line before\""), "the earlier throughput: {page}");
        assert!(page.contains("tasks before,"), "the earlier distribution: {page}");
    }
}
