//! Fault-injection points, compiled only with the `fault-injection` feature (test builds): the
//! fault suite makes a process fail at a chosen point to show the grid repairs what it left.
//!
//! `BATCHGRID_FAULT=POINT:MARKER` arms `POINT` once: the first process to reach it fires it and
//! creates the marker file (atomically), which disarms it for every process.
//! `BATCHGRID_FAULT=POINT:MARKER:every` fires it every time (the marker still shows it fired):
//! a task whose every delivery meets the fault reaches its last one, as the worst case needs.

/// In a worker: after a batch of attempts is recorded, before the batch's results are
/// forwarded to the next stage. Firing it loses the batch as a crash there would (nothing
/// forwarded, nothing acknowledged, no more visibility renewals) while the rest of the process
/// goes on, so tasks the worker holds in other batches are not lost with it.
pub const AFTER_RECORD: &str = "after-record";

/// The environment variable that arms a fault.
pub const FAULT_ENV: &str = "BATCHGRID_FAULT";

/// Whether the armed fault is `point` and fires now (once, across processes).
pub fn fires(point: &str) -> bool {
    let Ok(armed) = std::env::var(FAULT_ENV) else { return false };
    let Some((wanted, marker)) = armed.split_once(':') else { return false };
    if wanted != point {
        return false;
    }
    let (marker, every) = marker.strip_suffix(":every").map_or((marker, false), |m| (m, true));
    let fired = std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() || every;
    if fired {
        eprintln!("fault injection: {point} fired");
    }
    fired
}

/// In the manager: after each group of first-stage tasks is enqueued while splitting.
pub const SPLIT_BATCH: &str = "split-batch";

/// The environment variable that slows a point down: `POINT:DURATION`, e.g. `split-batch:2s`.
pub const SLOW_ENV: &str = "BATCHGRID_SLOW";

/// Pauses for the armed duration if `point` is the one slowed down, so a test can act (kill,
/// cancel) while the process is at that point.
pub async fn slow_point(point: &str) {
    let Ok(armed) = std::env::var(SLOW_ENV) else { return };
    let Some((wanted, pause)) = armed.split_once(':') else { return };
    if wanted != point {
        return;
    }
    if let Ok(pause) = humantime::parse_duration(pause) {
        tokio::time::sleep(pause).await;
    }
}
