//! Charts as server-side SVG, shared by the dashboard and the HTML report: the manager runs in a
//! private subnet, so nothing may come from a CDN, and an SVG drawn here needs no script at all
//! (the pages' policy allows none).

use maud::{html, Markup};

use crate::analytics::rollup::{bucket_bounds, SLOT_MS};
use crate::analytics::TimeHistogram;

/// Drawing area, in SVG user units (the element scales to its container).
const WIDTH: f64 = 600.0;
/// Drawing height.
const HEIGHT: f64 = 200.0;
/// Room for the axis labels.
const MARGIN: f64 = 36.0;

/// Points a line is drawn with at most: a long job's seconds are merged to this many.
const MAX_POINTS: usize = 600;
/// Bars a histogram is drawn with at most.
const MAX_BARS: usize = 40;

/// Tasks done over time, cumulative, from tasks done per second (`(second's start in Unix
/// milliseconds, tasks)`, ascending) up to `end`; `None` when there is nothing to draw.
pub fn completions(slots: &[(i64, u64)], end: i64) -> Option<Markup> {
    let first = slots.first()?.0;
    let last = slots.last()?.0 + SLOT_MS;
    let end = end.max(last);
    let span = (end - first).max(1) as f64;
    let total: u64 = slots.iter().map(|&(_, tasks)| tasks).sum();
    let x = |t: i64| MARGIN + (t - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
    let y = |n: u64| HEIGHT - MARGIN - n as f64 / total.max(1) as f64 * (HEIGHT - 2.0 * MARGIN);
    // Merge neighbouring seconds so a day-long job is still a few hundred points.
    let per_point = slots.len().div_ceil(MAX_POINTS).max(1);
    let mut points = vec![format!("{:.1},{:.1}", x(first), y(0))];
    let mut done = 0;
    for group in slots.chunks(per_point) {
        done += group.iter().map(|&(_, tasks)| tasks).sum::<u64>();
        let at = group.last().map_or(first, |&(slot, _)| slot + SLOT_MS);
        points.push(format!("{:.1},{:.1}", x(at), y(done)));
    }
    points.push(format!("{:.1},{:.1}", x(end), y(total)));
    let path = format!("M{}", points.join(" L"));
    Some(frame(
        "tasks done over time",
        &format!("{total}"),
        &format!("{:.0} s", (end - first) as f64 / 1000.0),
        html! { path class="line" data-tasks=(total) d=(path) {} },
    ))
}

/// A histogram of task times on a log scale, from the store's buckets (neighbours merged to
/// at most [`MAX_BARS`] bars); `None` when there is nothing to draw.
pub fn histogram(times: &TimeHistogram) -> Option<Markup> {
    let (&lowest, _) = times.buckets.first_key_value()?;
    let (&highest, _) = times.buckets.last_key_value()?;
    let span = (highest - lowest + 1) as usize;
    let per_bar = span.div_ceil(MAX_BARS).max(1);
    let bars: Vec<(u64, u64, u64)> = (0..span.div_ceil(per_bar))
        .map(|index| {
            let from = lowest + (index * per_bar) as u32;
            let to = (from + per_bar as u32 - 1).min(highest);
            let count = times.buckets.range(from..=to).map(|(_, &(tasks, _))| tasks).sum();
            (bucket_bounds(from).0, bucket_bounds(to).1, count)
        })
        .collect();
    let tallest = bars.iter().map(|&(_, _, count)| count).max().unwrap_or(1).max(1) as f64;
    let bar = (WIDTH - 2.0 * MARGIN) / bars.len() as f64;
    let drawn = html! {
        @for (index, &(low, high, count)) in bars.iter().enumerate() {
            @let h = count as f64 / tallest * (HEIGHT - 2.0 * MARGIN);
            rect class="bar" x=(format!("{:.1}", MARGIN + index as f64 * bar + 1.0))
                y=(format!("{:.1}", HEIGHT - MARGIN - h)) width=(format!("{:.1}", (bar - 2.0).max(0.5)))
                height=(format!("{:.1}", h)) {
                title { (count) " tasks, " (ms(low as f64)) "–" (ms(high as f64)) }
            }
        }
    };
    let first = bars.first().map_or(0, |&(low, _, _)| low);
    let last = bars.last().map_or(0, |&(_, high, _)| high);
    Some(frame_x("task time (log scale)", &format!("{}", tallest as u64), &ms(first as f64), &ms(last as f64), drawn))
}

/// Milliseconds as a short human duration.
pub fn ms(millis: f64) -> String {
    if millis < 1000.0 {
        format!("{millis:.0} ms")
    } else if millis < 120_000.0 {
        format!("{:.1} s", millis / 1000.0)
    } else {
        format!("{:.1} min", millis / 60_000.0)
    }
}

/// The axes, their extreme labels and `body`, the x axis from 0.
fn frame(title: &str, y_max: &str, x_max: &str, body: Markup) -> Markup {
    frame_x(title, y_max, "0", x_max, body)
}

/// The axes, their extreme labels and `body`.
fn frame_x(title: &str, y_max: &str, x_min: &str, x_max: &str, body: Markup) -> Markup {
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            path class="axis" d=(format!("M{left},{top} L{left},{bottom} L{right},{bottom}")) {}
            text x=(left - 4.0) y=(top + 4.0) text-anchor="end" { (y_max) }
            text x=(left - 4.0) y=(bottom) text-anchor="end" { "0" }
            text x=(right) y=(bottom + 16.0) text-anchor="end" { (x_max) }
            text x=(left) y=(bottom + 16.0) { (x_min) }
            (body)
        }
    }
}

/// Tasks done per second in each slot of `slot_ms`, as bars, with an earlier run's (`before`:
/// its slot width and counts) as a grey step line on the same elapsed-time axis, since the two
/// runs' slots differ; `None` when neither run did a task.
pub fn throughput(slot_ms: u64, done: &[u64], before: Option<(u64, &[u64])>) -> Option<Markup> {
    let before = before.filter(|(_, counts)| counts.iter().any(|&n| n > 0));
    let total: u64 = done.iter().sum();
    if total == 0 && before.is_none() {
        return None;
    }
    let rate = |count: u64, width: u64| count as f64 * 1000.0 / width.max(1) as f64;
    let span = |width: u64, counts: &[u64]| width.max(1) as f64 * counts.len() as f64;
    let end = before.map_or(0.0, |(w, c)| span(w, c)).max(span(slot_ms, done)).max(1.0);
    let peak = done
        .iter()
        .map(|&n| rate(n, slot_ms))
        .chain(before.into_iter().flat_map(|(w, c)| c.iter().map(move |&n| rate(n, w))))
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |elapsed: f64| MARGIN + elapsed / end * (WIDTH - 2.0 * MARGIN);
    let y = |per_second: f64| HEIGHT - MARGIN - per_second / peak * (HEIGHT - 2.0 * MARGIN);
    let bar = x(slot_ms.max(1) as f64) - MARGIN;
    let line = before.map(|(width, counts)| {
        let mut points = Vec::with_capacity(counts.len() * 2);
        for (slot, &count) in counts.iter().enumerate() {
            let from = slot as f64 * width.max(1) as f64;
            points.push(format!("{:.1},{:.1}", x(from), y(rate(count, width))));
            points.push(format!("{:.1},{:.1}", x(from + width.max(1) as f64), y(rate(count, width))));
        }
        format!("M{}", points.join(" L"))
    });
    let body = html! {
        g data-chart="throughput" data-slots=(done.len()) data-done=(total) {
            @for (slot, &count) in done.iter().enumerate() {
                @if count > 0 {
                    @let top = y(rate(count, slot_ms));
                    rect class="bar" x=(format!("{:.1}", MARGIN + slot as f64 * bar))
                        y=(format!("{top:.1}")) width=(format!("{:.2}", (bar * 0.9).max(0.5)))
                        height=(format!("{:.1}", HEIGHT - MARGIN - top)) {
                        title { (count) " tasks in " (ms(slot as f64 * slot_ms as f64)) "–" (ms((slot + 1) as f64 * slot_ms as f64)) }
                    }
                }
            }
            @if let Some(path) = line { path class="line before" d=(path) { title { "the earlier run" } } }
        }
    };
    Some(frame("tasks done per second", &format!("{peak:.1}/s"), &ms(end), body))
}

/// One bucket of [`buckets`]: tasks whose time fell in `[low_ms, high_ms)`, in this run and,
/// when compared, in an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Lower bound, milliseconds.
    pub low_ms: u64,
    /// Upper bound, milliseconds (`u64::MAX` for an open last bucket).
    pub high_ms: u64,
    /// Tasks of this run.
    pub count: u64,
    /// Tasks of the earlier run, drawn grey beside them.
    pub before: Option<u64>,
}

/// A task-time distribution in given (log-spaced) buckets, one bar each and a grey one beside
/// it for an earlier run; the axis is labelled at powers of ten. `None` when there is none.
pub fn buckets(buckets: &[Bucket]) -> Option<Markup> {
    let (first, last) = (buckets.first()?, buckets.last()?);
    let tallest = buckets.iter().map(|b| b.count.max(b.before.unwrap_or(0))).max().unwrap_or(0).max(1) as f64;
    let compared = buckets.iter().any(|b| b.before.is_some());
    let group = (WIDTH - 2.0 * MARGIN) / buckets.len() as f64;
    let bar = if compared { group * 0.45 } else { group * 0.9 };
    let height = |count: u64| count as f64 / tallest * (HEIGHT - 2.0 * MARGIN);
    let bound = |b: &Bucket| if b.high_ms == u64::MAX { "more".to_owned() } else { ms(b.high_ms as f64) };
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let body = html! {
        g data-chart="task-time" data-buckets=(buckets.len()) data-tasks=(total) {
            @for (index, b) in buckets.iter().enumerate() {
                @let left = MARGIN + index as f64 * group;
                @if let Some(before) = b.before.filter(|&n| n > 0) {
                    rect class="bar before" x=(format!("{left:.1}")) y=(format!("{:.1}", HEIGHT - MARGIN - height(before)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", height(before))) {
                        title { (before) " tasks before, " (ms(b.low_ms as f64)) "–" (bound(b)) }
                    }
                }
                @if b.count > 0 {
                    rect class="bar" x=(format!("{:.1}", if compared { left + bar } else { left }))
                        y=(format!("{:.1}", HEIGHT - MARGIN - height(b.count)))
                        width=(format!("{bar:.1}")) height=(format!("{:.1}", height(b.count))) {
                        title { (b.count) " tasks, " (ms(b.low_ms as f64)) "–" (bound(b)) }
                    }
                }
                @if index > 0 && b.low_ms.to_string().trim_start_matches('1').bytes().all(|d| d == b'0') {
                    text x=(format!("{left:.1}")) y=(HEIGHT - MARGIN + 16.0) text-anchor="middle" { (ms(b.low_ms as f64)) }
                }
            }
        }
    };
    Some(frame_x("task time", &format!("{}", tallest as u64), &ms(first.low_ms as f64), &bound(last), body))
}

/// One row per worker, each time slot shaded by how busy the worker was in it (`rows`: a label
/// and a fraction from 0 to 1 per slot, slots of `slot_ms`); `None` when there are no rows.
/// Neighbouring slots of the same shade are one rectangle, so a page of 64 workers by 120
/// slots stays small.
pub fn busy_rows(slot_ms: u64, rows: &[(String, Vec<f64>)]) -> Option<Markup> {
    const LABELS: f64 = 120.0;
    const SHADES: f64 = 10.0;
    let slots = rows.iter().map(|(_, cells)| cells.len()).max().filter(|&n| n > 0)?;
    let row = if rows.len() > 24 { 7.0 } else { 14.0 };
    let (top, bottom) = (8.0, 8.0 + rows.len() as f64 * row);
    let height = bottom + 20.0;
    let cell = (WIDTH - LABELS - MARGIN) / slots as f64;
    // A busy slot is never drawn blank: any work shows as the lightest shade.
    let shade = |fraction: f64| (fraction.clamp(0.0, 1.0) * SHADES).ceil() as u32;
    let runs = |cells: &[f64]| {
        let mut runs: Vec<(usize, usize, u32)> = Vec::new();
        for (slot, &fraction) in cells.iter().enumerate() {
            let level = shade(fraction);
            match runs.last_mut() {
                Some((_, end, last)) if *end == slot && *last == level => *end = slot + 1,
                _ => runs.push((slot, slot + 1, level)),
            }
        }
        runs.retain(|&(_, _, level)| level > 0);
        runs
    };
    let label = |text: &str| {
        if text.chars().count() > 20 {
            format!("{}…", text.chars().take(19).collect::<String>())
        } else {
            text.to_owned()
        }
    };
    let span = ms(slot_ms as f64 * slots as f64);
    Some(html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="busy time per worker" xmlns="http://www.w3.org/2000/svg" {
            title { "busy time per worker" }
            g data-chart="workers" data-workers=(rows.len()) data-slots=(slots) {
                @for (index, (name, cells)) in rows.iter().enumerate() {
                    @let y = top + index as f64 * row;
                    @let mean = cells.iter().sum::<f64>() / slots as f64;
                    g {
                        title { (name) ": " (format!("{:.0}", mean * 100.0)) "% of the busiest" }
                        text x=(LABELS - 4.0) y=(format!("{:.1}", y + row * 0.8)) text-anchor="end" font-size=(format!("{:.0}", row - 1.0)) { (label(name)) }
                        @for (from, to, level) in runs(cells) {
                            rect class="busy" x=(format!("{:.1}", LABELS + from as f64 * cell)) y=(format!("{:.1}", y + 0.5))
                                width=(format!("{:.1}", (to - from) as f64 * cell)) height=(format!("{:.1}", row - 1.0))
                                fill-opacity=(format!("{:.1}", f64::from(level) / SHADES)) {}
                        }
                    }
                }
            }
            path class="axis" d=(format!("M{LABELS},{top} L{LABELS},{bottom} L{},{bottom}", WIDTH - MARGIN)) {}
            text x=(LABELS) y=(bottom + 16.0) { "0" }
            text x=(WIDTH - MARGIN) y=(bottom + 16.0) text-anchor="end" { (span) }
        }
    })
}

/// Several series over the same times (Unix milliseconds, ascending) on one scale, each
/// `(name, class, values)`: the grid's queue depth and workers over time. `None` when there are
/// fewer than two times.
pub fn lines(times: &[i64], series: &[(&str, &str, Vec<u64>)]) -> Option<Markup> {
    let (&first, &last) = (times.first()?, times.last()?);
    if times.len() < 2 {
        return None;
    }
    let span = (last - first).max(1) as f64;
    let top = series.iter().flat_map(|(_, _, values)| values.iter().copied()).max().unwrap_or(0).max(1);
    let x = |t: i64| MARGIN + (t - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
    let y = |v: u64| HEIGHT - MARGIN - v as f64 / top as f64 * (HEIGHT - 2.0 * MARGIN);
    let per_point = times.len().div_ceil(MAX_POINTS).max(1);
    let drawn = html! {
        @for (index, (name, class, values)) in series.iter().enumerate() {
            @let points: Vec<String> = times.iter().zip(values).step_by(per_point)
                .map(|(&t, &v)| format!("{:.1},{:.1}", x(t), y(v))).collect();
            path class=(format!("series {class}")) data-points=(points.len()) d=(format!("M{}", points.join(" L"))) {}
            text class=(format!("legend {class}")) x=(MARGIN + 8.0 + index as f64 * 110.0) y=(MARGIN - 8.0) { (name) }
        }
    };
    Some(frame_x("over time", &top.to_string(), &format!("{} ago", ms(span)), "now", drawn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_draw_draws_nothing() {
        assert!(completions(&[], 0).is_none());
        assert!(histogram(&TimeHistogram::default()).is_none());
    }

    #[test]
    fn a_line_has_a_point_per_second_with_tasks() {
        let svg =
            completions(&[(1_000, 2), (2_000, 1), (4_000, 3)], 9_000).map(|m| m.into_string()).unwrap_or_default();
        assert!(svg.contains("data-tasks=\"6\""), "{svg}");
        // Start, three seconds, and the end.
        let line = svg.split("class=\"line\"").nth(1).unwrap_or_default();
        assert_eq!(line.matches(" L").count(), 4, "{svg}");
    }

    #[test]
    fn a_long_job_is_merged_to_a_bounded_line() {
        let slots: Vec<(i64, u64)> = (0..86_400).map(|s| (s * 1_000, 1)).collect();
        let svg = completions(&slots, 0).map(|m| m.into_string()).unwrap_or_default();
        let line = svg.split("class=\"line\"").nth(1).unwrap_or_default();
        assert!(line.matches(" L").count() <= MAX_POINTS + 2, "a day of seconds is at most {MAX_POINTS} points");
        assert!(svg.contains("data-tasks=\"86400\""));
    }

    #[test]
    fn every_task_lands_in_a_bar() {
        let svg = histogram(&TimeHistogram::of(&[10, 20, 20, 5_000])).map(|m| m.into_string()).unwrap_or_default();
        let bars = svg.matches("<rect").count();
        assert!((1..=MAX_BARS).contains(&bars), "{bars} bars");
        let counted: u64 =
            svg.split("<title>").skip(2).filter_map(|t| t.split(" tasks").next()?.parse::<u64>().ok()).sum();
        assert_eq!(counted, 4, "{svg}");
    }

    #[test]
    fn throughput_draws_a_bar_per_busy_slot_and_the_earlier_run_as_a_line() {
        assert!(throughput(100, &[0, 0], None).is_none());
        assert!(throughput(100, &[], Some((100, &[0]))).is_none());
        let svg =
            throughput(1_000, &[2, 0, 5], Some((500, &[1, 1, 1, 1]))).map(|m| m.into_string()).unwrap_or_default();
        assert!(svg.contains("data-slots=\"3\" data-done=\"7\""), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("5.0/s"), "the peak rate labels the axis: {svg}");
        assert!(svg.contains("class=\"line before\""), "{svg}");
    }

    #[test]
    fn buckets_draw_both_runs() {
        assert!(buckets(&[]).is_none());
        let bucket = |low_ms, high_ms, count, before| Bucket { low_ms, high_ms, count, before };
        let svg = buckets(&[bucket(70, 100, 2, Some(0)), bucket(100, 150, 0, Some(3)), bucket(150, 200, 4, Some(1))])
            .map(|m| m.into_string())
            .unwrap_or_default();
        assert!(svg.contains("data-buckets=\"3\" data-tasks=\"6\""), "{svg}");
        assert_eq!(svg.matches("class=\"bar\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"bar before\"").count(), 2, "{svg}");
        assert!(svg.contains(">100 ms</text>"), "a power of ten is labelled: {svg}");
    }

    #[test]
    fn busy_rows_merge_equal_neighbours() {
        assert!(busy_rows(100, &[]).is_none());
        let rows = vec![("w1".to_owned(), vec![1.0, 1.0, 0.0, 0.04]), ("w2".to_owned(), vec![0.5, 0.0, 0.0, 0.0])];
        let svg = busy_rows(100, &rows).map(|m| m.into_string()).unwrap_or_default();
        assert!(svg.contains("data-workers=\"2\" data-slots=\"4\""), "{svg}");
        assert_eq!(svg.matches("class=\"busy\"").count(), 3, "{svg}");
        assert!(svg.contains("fill-opacity=\"0.1\""), "a little work still shows: {svg}");
    }
}
