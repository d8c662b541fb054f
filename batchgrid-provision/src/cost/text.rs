//! An [`Estimate`] as text: the itemised month idle, the month parked, stored data, and each
//! worker's hour; and the before/after line `diff` prints.

use std::fmt::Write;

use super::estimate::{Estimate, Line};

/// An hourly price, to a hundredth of a cent.
fn hourly(value: f64) -> String {
    format!("${value:.4}")
}

fn lines(out: &mut String, lines: &[Line]) {
    let width = lines.iter().map(|l| l.item.len()).max().unwrap_or(0);
    for line in lines {
        let _ = writeln!(out, "  {:<width$}  {:>9}  {}", line.item, format!("${:.2}", line.monthly), line.detail);
    }
}

/// The whole estimate for `title` (the stack's name).
pub fn render(title: &str, estimate: &Estimate) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{title} in {}, at list prices of {} ({})",
        estimate.region,
        estimate.prices_date,
        super::prices::TABLE_PATH
    );
    let _ = writeln!(out, "\ndeployed and idle: ${:.2} a month", estimate.idle_monthly());
    lines(&mut out, &estimate.idle);
    if let Some(awake) = &estimate.idle_database_awake {
        let _ = writeln!(
            out,
            "  if the database never paused: ${:.2} a month ({} {}: +${:.2})\n    it is awake while a job or a \
             worker runs and while someone reads the dashboard or the API; with none of these the manager lets it \
             go, and it pauses",
            estimate.idle_monthly() + awake.monthly,
            awake.item,
            awake.detail,
            awake.monthly
        );
    }
    let _ = writeln!(
        out,
        "\nparked: ${:.2} a month fixed, plus stored data below (no instance, database, NAT gateway or address runs)",
        estimate.parked_monthly()
    );
    lines(&mut out, &estimate.parked);
    let _ = writeln!(out, "\nstored data, a GB-month:");
    for rate in &estimate.stored_data {
        let bound = rate.at_most_gb.map_or(String::new(), |gb| {
            format!(" (at most {gb} GB, the allocated size: ≤ ${:.2} a month)", gb * rate.per_gb_month)
        });
        let _ = writeln!(out, "  {}  ${:.3}{bound}", rate.item, rate.per_gb_month);
    }
    let _ = writeln!(out, "\neach running worker, an hour (instance; volume and address on top):");
    for worker in &estimate.workers {
        let spot = format!(
            "spot {}–{}",
            hourly(worker.spot_low_hourly + worker.extras_hourly),
            hourly(worker.spot_high_hourly + worker.extras_hourly)
        );
        let (low, high) = worker.hourly_range();
        let _ = writeln!(
            out,
            "  {} {}: on demand {} ({} + {}), {spot}; {} runs {}; all {} at once: ${:.2}–${:.2} an hour",
            worker.group,
            worker.kind,
            hourly(worker.on_demand_hourly + worker.extras_hourly),
            hourly(worker.on_demand_hourly),
            hourly(worker.extras_hourly),
            worker.group,
            if worker.spot { "spot" } else { "on demand" },
            worker.max,
            low * f64::from(worker.max),
            high * f64::from(worker.max),
        );
    }
    let _ = writeln!(out, "\nnot counted (billed by use): {}", estimate.not_counted.join("; "));
    out
}

/// How a change moves the idle cost: `before` is what is deployed (`None`: nothing is).
pub fn idle_change(before: Option<&Estimate>, after: &Estimate) -> String {
    let old = before.map_or(0.0, Estimate::idle_monthly);
    let new = after.idle_monthly();
    let change = new - old;
    let sign = if change < 0.0 { "-" } else { "+" };
    let from = if before.is_some() { format!("${old:.2}") } else { "$0.00 (not deployed)".to_owned() };
    format!("idle cost: {from} -> ${new:.2} a month ({sign}${:.2})", change.abs())
}
