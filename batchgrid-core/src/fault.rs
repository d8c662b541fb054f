//! Fault-injection points, compiled only with the `fault-injection` feature (test builds): the
//! fault suite makes a process crash at a chosen point to show the grid repairs what it left.
//!
//! `BATCHGRID_FAULT=POINT:MARKER` crashes the first process to reach `POINT`, once: the marker
//! file, created atomically, records that the crash has happened.

/// In a worker: after a batch of attempts is recorded, before the batch's results are
/// forwarded to the next stage.
pub const AFTER_RECORD: &str = "after-record";

/// The environment variable that arms a fault.
pub const FAULT_ENV: &str = "BATCHGRID_FAULT";

/// Aborts the process (no destructors, no flushing: a crash) if the armed fault is `point`
/// and has not fired yet.
pub fn crash_point(point: &str) {
    let Ok(armed) = std::env::var(FAULT_ENV) else { return };
    let Some((wanted, marker)) = armed.split_once(':') else { return };
    if wanted != point {
        return;
    }
    if std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() {
        eprintln!("fault injection: crashing at {point}");
        std::process::abort();
    }
}
