//! The claims example end to end: the demo's run, and a worker killed mid-task.

use std::process::Command;

use crate::harness::{analytics, assert_same_tree, claims_bin, run_job, run_job_with_env};
use batchgrid_core::analytics::AnalyticsStore;

/// Generates `rows` claims with seed 42 into DIR/claims.csv.
pub fn generate(dir: &std::path::Path, rows: u64) -> std::path::PathBuf {
    let input = dir.join("claims.csv");
    let status = Command::new(claims_bin())
        .args(["generate", "--rows", &rows.to_string(), "--seed", "42", "--out"])
        .arg(&input)
        .status()
        .expect("generate");
    assert!(status.success());
    input
}

/// The single-process reference results of `input`, in DIR/reference.
pub fn reference(dir: &std::path::Path, input: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("reference");
    let status = Command::new(claims_bin()).arg("reference").arg(input).arg(&out).status().expect("reference");
    assert!(status.success());
    out
}

/// The example job's split line, which [`claims_job_split`] replaces.
const EXAMPLE_SPLIT: &str = "  bytes: 16MiB\n";

/// The example's job file with its input and output under `dir`.
pub fn claims_job(dir: &std::path::Path) -> String {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/claims/job.yaml");
    let text = std::fs::read_to_string(example).expect("read example job");
    text.replace("../../build/demo/claims.csv", &dir.join("claims.csv").display().to_string())
        .replace("../../build/demo/results", &dir.join("results").display().to_string())
}

/// The example's job file split by `split` (`lines: 20000`) instead: tests use smaller inputs
/// than the demo and want several tasks of them.
pub fn claims_job_split(dir: &std::path::Path, split: &str) -> String {
    let text = claims_job(dir);
    // Loud, not a silent no-op, if the example's split changes.
    assert!(text.contains(EXAMPLE_SPLIT), "the example job no longer splits by `{}`", EXAMPLE_SPLIT.trim());
    text.replace(EXAMPLE_SPLIT, &format!("  {split}\n"))
}

/// What `make demo` does, asserted: 1,000,000 claims on 2 workers, totals equal to the
/// single-process reference, malformed rows included.
#[test]
fn demo_totals_equal_the_single_process_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path(), 1_000_000);
    let expected = reference(dir.path(), &input);
    let result = run_job(dir.path(), &claims_job(dir.path()), &["--workers", "2"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "completed");
    assert_eq!(result.report["stages"][0]["done"], 4, "1,000,000 rows (51 MB) in ranges of at most 16 MiB");
    assert_eq!(result.report["stages"][1]["done"], 1);
    assert_same_tree(&expected, &dir.path().join("results"));
    let summary = std::fs::read_to_string(dir.path().join("results/summary.txt")).expect("summary");
    assert!(!summary.contains("rejected_rows=0"), "malformed rows were planted and rejected: {summary}");
}

/// A worker killed with SIGKILL in the middle of a task loses nothing: the task is redelivered
/// to another worker and the totals are still exact.
#[tokio::test]
async fn a_worker_killed_mid_task_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path(), 120_000);
    let expected = reference(dir.path(), &input);
    let marker = dir.path().join("killed-once");
    // The first delivery of chunk 000001 kills its own worker (the shell's parent) mid-task.
    let killer = format!(
        "command: [sh, -c, 'if [ \"$BATCHGRID_TASK_ID\" = 000001 ] && [ ! -e {marker} ]; then touch {marker}; kill -9 $(ps -o ppid= -p $PPID); sleep 1; exit 1; fi; exec batchgrid-claims validate \"$0\" \"$1\"', \"{{input}}\", \"{{output}}\"]",
        marker = marker.display()
    );
    let job = claims_job_split(dir.path(), "lines: 20000")
        .replace("command: [batchgrid-claims, validate, \"{input}\", \"{output}\"]", &killer);
    // The task leaves its marker in the test's directory.
    let writable = [("BATCHGRID_TASK_WRITABLE", dir.path().to_str().expect("utf-8 path"))];
    let result = run_job_with_env(dir.path(), &job, &["--workers", "2", "--visibility-timeout", "2s"], &writable);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert!(marker.exists(), "the kill happened");
    assert!(result.stderr.contains("worker") && result.stderr.contains("restarted"), "stderr: {}", result.stderr);
    assert_same_tree(&expected, &dir.path().join("results"));

    let store = analytics(&result.state_dir).await;
    let job_id = result.report["job_id"].as_str().expect("job id");
    let task = store.task(job_id, 0, "000001").await.expect("task").expect("recorded");
    assert_eq!(task.status, "done");
    assert_eq!(task.attempts, 2, "the killed delivery was the first; the second finished it");
    assert_eq!(result.report["stages"][0]["done"], 6, "every chunk counted exactly once");
}
