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
}
