//! The fault suite: infrastructure faults neither fail nor hang a job. On the embedded grid, a
//! worker crashes between recording a task and forwarding it; on the local stack (the
//! emulator's S3 and SQS, and a PostgreSQL the test starts and stops), the database goes away
//! for 90 s, the manager is SIGKILLed while splitting and while tasks run, and a cancel arrives
//! while splitting. Each ends with exact totals (or `cancelled`, and still so later).

use std::process::Output;

use crate::harness::{batchgrid, write_lines};

/// A crash after a worker records tasks done and before it forwards them to the next map
/// stage, on their last allowed delivery (`max_attempts: 1`): the queue dead-letters them on
/// redelivery, and the manager's watchdog finds the next stage short with nothing queued and
/// re-sends the lost tasks from the done ones. The job completes with every task counted once.
#[test]
fn a_crash_between_record_and_forward_is_repaired() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 12);
    let job = format!(
        r#"name: forward
input:
  path: {input}
split:
  lines: 1
stages:
  - name: upper
    command: [sh, -c, 'tr a-z A-Z < "$0" > "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: tag
    command: [sh, -c, 'sed "s/^/$BATCHGRID_TASK_ID:/" "$0/part.txt" > "$1/part.txt"', "{{input}}", "{{output}}"]
output:
  path: {output}
retry:
  max_attempts: 1
"#,
        input = dir.path().join("input.txt").display(),
        output = dir.path().join("out").display(),
    );
    let job_path = dir.path().join("job.yaml");
    std::fs::write(&job_path, job).expect("write job");
    let marker = dir.path().join("crashed");
    let started = std::time::Instant::now();
    let output: Output = batchgrid()
        .env("BATCHGRID_FAULT", format!("after-record:{}", marker.display()))
        .env("BATCHGRID_LOG", "warn")
        .args(["run", "--json", "--keep-state", "--workers", "2", "--visibility-timeout", "1s", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg(&job_path)
        .output()
        .expect("run batchgrid");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(marker.exists(), "the fault fired; stderr:\n{stderr}");
    assert_eq!(output.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("report");
    let done: Vec<u64> =
        report["stages"].as_array().expect("stages").iter().map(|s| s["done"].as_u64().expect("done")).collect();
    assert_eq!(done, [12, 12], "every task of both stages done, each once; stderr:\n{stderr}");
    assert_eq!(report["tasks_failed"], 0, "{report}");
    let parts = std::fs::read_dir(dir.path().join("out")).expect("output").count();
    assert_eq!(parts, 12, "one result per task");
    assert!(stderr.contains("re-sent"), "the watchdog repaired the lost forwards; stderr:\n{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "bounded in time");
}
