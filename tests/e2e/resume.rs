//! `batchgrid run --resume`: a run whose process was killed with SIGKILL is finished by a new
//! one, with exact results, and the killed run's workers do not outlive it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::claims::{claims_job_split, generate, reference};
use crate::harness::{analytics, assert_same_tree, batchgrid};
use batchgrid_core::analytics::AnalyticsStore;

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let output = Command::new("pgrep").args(["-f", marker]).output().expect("run pgrep");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn a_killed_run_is_resumed_to_exact_results_and_leaves_no_worker_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate(dir.path(), 100_000);
    let expected = reference(dir.path(), &input);
    // Ten chunks of half a second each on 2 workers x 1 slot: the run is killed part-way.
    let slow =
        "command: [sh, -c, 'sleep 0.5; exec batchgrid-claims validate \"$0\" \"$1\"', \"{input}\", \"{output}\"]";
    let job = claims_job_split(dir.path(), "lines: 10000")
        .replace("command: [batchgrid-claims, validate, \"{input}\", \"{output}\"]", slow);
    let job_path = dir.path().join("job.yaml");
    std::fs::write(&job_path, job).expect("job");
    // The state directory's path marks this test's processes for pgrep.
    let state_dir = dir.path().join(format!("state-{}", ulid::Ulid::new()));
    let marker = state_dir.display().to_string();

    let mut first = batchgrid()
        .arg("run")
        .arg(&job_path)
        .args(["--workers", "2", "--concurrency", "1", "--json", "--state-dir"])
        .arg(&state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the run");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        assert!(Instant::now() < deadline, "the first run made no progress in 60 s");
        std::thread::sleep(Duration::from_millis(200));
        if !state_dir.join("run.json").exists() || !state_dir.join("analytics.db").exists() {
            continue;
        }
        let store = runtime.block_on(analytics(&state_dir));
        let jobs = runtime.block_on(store.jobs()).expect("jobs");
        let Some(job) = jobs.first() else { continue };
        let stages = runtime.block_on(store.stages(&job.id)).expect("stages");
        let done = stages.first().map_or(0, |s| s.done);
        if done >= 2 {
            break done;
        }
    };
    first.kill().expect("SIGKILL the run");
    first.wait().expect("reap the run");
    assert!(done < 10, "killed part-way ({done} of 10 chunks done)");

    // Its workers notice they are orphaned and stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "workers of the killed run still running: {:?}", processes_with(&marker));
        std::thread::sleep(Duration::from_millis(200));
    }

    let resumed = batchgrid().arg("run").arg("--resume").arg(&state_dir).arg("--json").output().expect("resume");
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "resume failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("resuming job"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("report JSON");
    assert_eq!(report["state"], "completed");
    assert_eq!(report["stages"][0]["done"], 10, "every chunk counted once");
    assert_eq!(report["stages"][1]["done"], 1);
    assert_same_tree(&expected, &dir.path().join("results"));
    assert!(processes_with(&marker).is_empty(), "the resumed run stopped its workers");

    // Resuming a finished run only prints its report.
    let again = batchgrid().arg("run").arg("--resume").arg(&state_dir).arg("--json").output().expect("again");
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("had already ended"));
}

#[test]
fn resuming_a_directory_that_holds_no_run_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = batchgrid().arg("run").arg("--resume").arg(dir.path()).output().expect("resume");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("holds no run to resume"), "{stderr}");
}
