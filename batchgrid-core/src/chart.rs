//! Charts as server-side SVG, shared by the dashboard and the HTML report: the manager runs in a
//! private subnet, so nothing may come from a CDN, and an SVG drawn here needs no script at all
//! (the pages' policy allows none).

use maud::{html, Markup};

/// Drawing area, in SVG user units (the element scales to its container).
const WIDTH: f64 = 600.0;
/// Drawing height.
const HEIGHT: f64 = 200.0;
/// Room for the axis labels.
const MARGIN: f64 = 36.0;

/// Tasks done over time: one step up per completion, from the first to the last (or `now`).
/// `times` are Unix milliseconds, ascending; `None` when there is nothing to draw.
pub fn completions(times: &[i64], now: i64) -> Option<Markup> {
    let (&first, &last) = (times.first()?, times.last()?);
    let end = now.max(last);
    let span = (end - first).max(1) as f64;
    let total = times.len() as f64;
    let x = |t: i64| MARGIN + (t - first) as f64 / span * (WIDTH - 2.0 * MARGIN);
    let y = |n: f64| HEIGHT - MARGIN - n / total * (HEIGHT - 2.0 * MARGIN);
    let mut points = vec![format!("{:.1},{:.1}", x(first), y(0.0))];
    for (index, &t) in times.iter().enumerate() {
        points.push(format!("{:.1},{:.1}", x(t), y(index as f64 + 1.0)));
    }
    points.push(format!("{:.1},{:.1}", x(end), y(total)));
    let path = format!("M{}", points.join(" L"));
    Some(frame(
        "tasks done over time",
        &format!("{}", times.len()),
        &format!("{:.0} s", (end - first) as f64 / 1000.0),
        html! { path class="line" data-points=(times.len()) d=(path) {} },
    ))
}

/// A histogram of task times in milliseconds, ascending, in `BINS` equal bins from the
/// shortest to the longest; `None` when there is nothing to draw.
pub fn histogram(sorted_ms: &[u64]) -> Option<Markup> {
    const BINS: usize = 20;
    let (&low, &high) = (sorted_ms.first()?, sorted_ms.last()?);
    let width = ((high - low) as f64 / BINS as f64).max(1.0);
    let mut counts = [0u64; BINS];
    for &value in sorted_ms {
        let bin = (((value - low) as f64 / width) as usize).min(BINS - 1);
        counts[bin] += 1;
    }
    let tallest = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bar = (WIDTH - 2.0 * MARGIN) / BINS as f64;
    let bars = html! {
        @for (index, &count) in counts.iter().enumerate() {
            @let h = count as f64 / tallest * (HEIGHT - 2.0 * MARGIN);
            rect class="bar" x=(format!("{:.1}", MARGIN + index as f64 * bar + 1.0))
                y=(format!("{:.1}", HEIGHT - MARGIN - h)) width=(format!("{:.1}", bar - 2.0))
                height=(format!("{:.1}", h)) {
                title { (count) " tasks, " (ms(low as f64 + index as f64 * width)) "–" (ms(low as f64 + (index + 1) as f64 * width)) }
            }
        }
    };
    Some(frame("task time", &format!("{}", tallest as u64), &ms(high as f64), bars))
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

/// The axes, their extreme labels and `body`.
fn frame(title: &str, y_max: &str, x_max: &str, body: Markup) -> Markup {
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            path class="axis" d=(format!("M{left},{top} L{left},{bottom} L{right},{bottom}")) {}
            text x=(left - 4.0) y=(top + 4.0) text-anchor="end" { (y_max) }
            text x=(left - 4.0) y=(bottom) text-anchor="end" { "0" }
            text x=(right) y=(bottom + 16.0) text-anchor="end" { (x_max) }
            text x=(left) y=(bottom + 16.0) { "0" }
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
        assert!(histogram(&[]).is_none());
    }

    #[test]
    fn a_line_has_a_point_per_completion() {
        let svg = completions(&[1_000, 2_000, 4_000], 5_000).map(|m| m.into_string()).unwrap_or_default();
        assert!(svg.contains("data-points=\"3\""), "{svg}");
        // Start, three steps, and the end at `now`.
        let line = svg.split("class=\"line\"").nth(1).unwrap_or_default();
        assert_eq!(line.matches(" L").count(), 4, "{svg}");
    }

    #[test]
    fn every_value_lands_in_a_bin() {
        let svg = histogram(&[10, 20, 20, 5_000]).map(|m| m.into_string()).unwrap_or_default();
        assert_eq!(svg.matches("<rect").count(), 20);
        assert!(svg.contains("3 tasks"), "{svg}");
        assert!(svg.contains("1 tasks"), "{svg}");
    }
}
