//! The fault suite: infrastructure faults neither fail nor hang a job. On the embedded grid, a
//! worker fails between recording a task and forwarding it; on the local stack (the
//! emulator's S3 and SQS, and a PostgreSQL the test starts and stops), the database goes away
//! for 90 s, the manager is SIGKILLed while splitting and while tasks run, the workers are
//! SIGKILLed every 2 s, and a cancel arrives while splitting. Each ends with exact totals (or `cancelled`, and still so later).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::{AnalyticsStore, JobState, PgAnalytics};
use batchgrid_core::service::JobStatus;

use crate::harness::{batchgrid, block_on, write_lines};
use crate::local_stack::{Credentials, LocalStack, TOKEN};

/// A worker fails after recording a batch of tasks done and before forwarding them to the next
/// map stage (the injected fault loses that batch as a crash would), on every delivery up to
/// the last allowed one (the queue's receive limit): the queue dead-letters them, and the
/// manager's watchdog finds the next stage short with nothing queued and re-sends the lost
/// tasks from the done ones. The job completes with every task counted once.
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
        // Every delivery of a first-stage batch loses its forwards, so those tasks reach their
        // last allowed delivery done but never forwarded: only the watchdog can repair them.
        .env("BATCHGRID_FAULT", format!("after-record:{}:every", marker.display()))
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

/// 150 tasks that all end in the dead-letter queue, more than the 100 letters the manager used
/// to read per scan: the job ends `failed` naming every one, and the dead-letter queue is left
/// empty, each letter consumed once it was recorded.
#[test]
fn a_job_whose_150_tasks_are_dead_lettered_fails_naming_all_150() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 150);
    let job = format!(
        "name: doomed\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    \
         command: [sh, -c, 'echo \"bad row in $0\" >&2; exit 3', \"{{input}}\"]\noutput:\n  path: {output}\n\
         retry:\n  max_attempts: 1\n",
        input = dir.path().join("input.txt").display(),
        output = dir.path().join("out").display(),
    );
    let result = crate::harness::run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(1), "a failed job exits non-zero; stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "failed");
    let failures = result.report["failures"].as_array().expect("failures");
    let named: std::collections::BTreeSet<&str> = failures.iter().filter_map(|f| f["task"].as_str()).collect();
    assert_eq!(named.len(), 150, "every failed task is named: {failures:?}");
    assert!(failures.iter().all(|f| f["error"].as_str().is_some_and(|e| e.contains("exit status 3"))), "{failures:?}");
    let letters = block_on(async {
        use batchgrid_core::queue::TaskQueue;
        let db = result.state_dir.join("queue.db");
        let pool = batchgrid_core::queue::sqlite::open_queue_database(&db).await.expect("queue db");
        let queue = batchgrid_core::queue::SqliteQueue::new(pool, batchgrid_core::grid::TASK_QUEUE, 1);
        queue.dead_letters(200).await.expect("dead letters")
    });
    assert!(letters.is_empty(), "every dead letter consumed: {} left", letters.len());
}

/// A map stage of one task per input line, each sleeping `sleep` seconds, then a reduce over all.
fn write_job(dir: &Path, tasks: usize, sleep: &str) -> PathBuf {
    let input = dir.join("input.txt");
    write_lines(&input, tasks);
    let job = format!(
        r#"name: faults
input:
  path: {input}
split:
  lines: 1
stages:
  - name: upper
    command: [sh, -c, 'sleep {sleep}; tr a-z A-Z < "$0" > "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: gather
    kind: reduce
    command: [sh, -c, 'cat "$0"/*/part.txt | sort > "$1/all.txt"', "{{input}}", "{{output}}"]
output:
  path: {output}
"#,
        input = input.display(),
        output = dir.join("out").display(),
    );
    let path = dir.join("job.yaml");
    std::fs::write(&path, job).expect("write job");
    path
}

/// Submits a job file (uploading its input) without waiting; returns the job id.
fn submit(stack: &LocalStack, job: &Path) -> String {
    let mut command = stack.command();
    command.args(["submit", "--env", "local", "--json"]).args(stack.place_args()).arg(job);
    let output = command.output().expect("run submit");
    assert!(output.status.success(), "submit failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("submit answers JSON");
    answer["job_id"].as_str().expect("job id").to_owned()
}

/// The job's status, or `None` while the manager cannot answer (restarting, database away).
fn status(stack: &LocalStack, id: &str) -> Option<JobStatus> {
    block_on(stack.client(TOKEN).status(id)).ok()
}

/// Polls the job until `done` says so; panics with the manager's logs after `timeout`.
fn wait_until(
    stack: &LocalStack,
    id: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&JobStatus) -> bool,
) -> JobStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = status(stack, id) {
            if done(&status) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; manager logs:\n{}\nworker-0 log:\n{}\nworker-1 log:\n{}",
            stack.manager_logs(),
            stack.read_log("worker-0"),
            stack.read_log("worker-1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both workers SIGKILLed every 2 s while a job runs on the local stack, and restarted: the
/// killed workers' tasks come back after the visibility timeout and run again elsewhere, and
/// the job completes with exact totals, every task counted once.
#[test]
fn workers_killed_every_2s_lose_nothing() {
    let mut stack = LocalStack::launch(2, &[], Credentials::Url);
    let tasks = 24;
    let job = write_job(stack.dir.path(), tasks, "0.3");
    let id = submit(&stack, &job);
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut kills = 0;
    while !status(&stack, &id).is_some_and(|s| s.state.is_terminal()) {
        assert!(Instant::now() < deadline, "the job did not end within 150 s of kills; {}", stack.manager_logs());
        std::thread::sleep(Duration::from_secs(2));
        stack.kill_and_restart_workers();
        kills += 1;
    }
    assert!(kills >= 3, "the workers were killed {kills} times while the job ran");
    assert_exact(&stack, &id, tasks);
}

/// A local stack whose manager splits slowly (a test-only pause after each batch), with a job
/// of `tasks` tasks submitted and caught in the middle of its split.
fn submitted_mid_split(tasks: usize) -> (LocalStack, String) {
    let mut stack = LocalStack::launch(2, &[], Credentials::Throwaway);
    let job = write_job(stack.dir.path(), tasks, "0");
    stack.set_manager_env("BATCHGRID_SLOW", "split-batch:2s");
    stack.kill_and_restart_manager();
    let id = submit(&stack, &job);
    wait_until(&stack, &id, Duration::from_secs(60), "the split is under way", splitting);
    (stack, id)
}

/// Mid-split: the first tasks are queued, the first stage's size is not known yet.
fn splitting(status: &JobStatus) -> bool {
    !status.state.is_terminal()
        && status.stages.first().is_some_and(|s| s.expected.is_none())
        && status.state == JobState::Running
}

/// The job completed with exact totals: every task done once, none failed, every done task
/// with its attempts recorded, and the reduce saw each line exactly once.
fn assert_exact(stack: &LocalStack, id: &str, tasks: usize) {
    let status = wait_until(stack, id, Duration::from_secs(150), "the job ends", |s| s.state.is_terminal());
    assert_eq!(status.state, JobState::Completed, "{status:?}\nmanager logs:\n{}", stack.manager_logs());
    let counts: Vec<(Option<u64>, u64, u64)> = status.stages.iter().map(|s| (s.expected, s.done, s.failed)).collect();
    assert_eq!(counts, [(Some(tasks as u64), tasks as u64, 0), (Some(1), 1, 0)], "{status:?}");
    let url = stack.database.url();
    let id_owned = id.to_owned();
    let (statuses, unrecorded) = block_on(async move {
        let store = PgAnalytics::connect(&url, 2).await.expect("analytics");
        let statuses = store.task_statuses(&id_owned, 0).await.expect("tasks");
        let mut unrecorded = Vec::new();
        for (task, _) in &statuses {
            if store.attempts(&id_owned, 0, task).await.expect("attempts").is_empty() {
                unrecorded.push(task.clone());
            }
        }
        (statuses, unrecorded)
    });
    assert_eq!(statuses.len(), tasks, "one task row per task: no task counted twice");
    assert!(statuses.iter().all(|(_, s)| s == "done"), "{statuses:?}");
    assert!(unrecorded.is_empty(), "tasks done without a recorded attempt: {unrecorded:?}");
    let client = stack.client(TOKEN);
    let all = stack.dir.path().join("all.txt");
    block_on(client.download_result(id, "all.txt", &all)).expect("download the reduce's output");
    let text = std::fs::read_to_string(&all).expect("read all.txt");
    let lines: std::collections::BTreeSet<&str> = text.lines().collect();
    assert_eq!((text.lines().count(), lines.len()), (tasks, tasks), "each line once in the reduce's output");
}

/// PostgreSQL stopped for 90 s (an RDS failover takes one to two minutes) while a job runs,
/// then started: the manager reports itself degraded meanwhile, never fails the job, and the
/// job completes with exact totals.
///
/// The workers' visibility timeout is 2 s, far shorter than the outage: their heartbeat has a
/// loop of its own that never waits on the database, and finished tasks stay held while their
/// attempts are recorded again, so nothing is redelivered or dead-lettered meanwhile.
#[test]
fn the_database_away_for_90s_fails_no_job() {
    let mut stack = LocalStack::launch(0, &[], Credentials::Throwaway);
    stack.start_workers_with_visibility(2, "2s");
    let job = write_job(stack.dir.path(), 60, "1");
    let id = submit(&stack, &job);
    wait_until(&stack, &id, Duration::from_secs(60), "some tasks are done", |s| {
        s.stages.first().is_some_and(|s| s.done >= 8)
    });
    let stopped = Instant::now();
    stack.database.stop();
    // The manager says what is wrong while it retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let health = block_on(stack.client(TOKEN).health()).expect("health answers without the database");
        if health.faults.contains_key("analytics") {
            break health;
        }
        assert!(Instant::now() < deadline, "the manager never reported the database away: {health:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(health.status, "degraded");
    let output = stack.command().args(["status"]).output().expect("run status");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("analytics store unreachable since") && said.contains("retrying"), "{said}");
    std::thread::sleep(Duration::from_secs(90).saturating_sub(stopped.elapsed()));
    stack.database.start();
    assert_exact(&stack, &id, 60);
    let health = block_on(stack.client(TOKEN).health()).expect("health");
    assert_eq!(health.status, "ok", "{health:?}");
}

/// The manager SIGKILLed while it splits the input: the new manager splits it again from the
/// start, and the tasks sent twice run and count once.
#[test]
fn the_manager_killed_while_splitting_loses_nothing() {
    let (mut stack, id) = submitted_mid_split(200);
    stack.kill_and_restart_manager();
    assert_exact(&stack, &id, 200);
}

/// The manager SIGKILLed while tasks run: the new one picks the running job up.
#[test]
fn the_manager_killed_while_tasks_run_loses_nothing() {
    let mut stack = LocalStack::launch(2, &[], Credentials::Throwaway);
    let job = write_job(stack.dir.path(), 40, "0.3");
    let id = submit(&stack, &job);
    wait_until(&stack, &id, Duration::from_secs(60), "tasks are running", |s| {
        s.stages.first().is_some_and(|s| s.expected.is_some() && s.done >= 5)
    });
    stack.kill_and_restart_manager();
    assert_exact(&stack, &id, 40);
}

/// A cancel while the input is being split: the job ends `cancelled` and stays so; the
/// splitter's `running` and the reconciler's `completed` cannot overwrite it.
#[test]
fn a_cancel_while_splitting_stays_cancelled() {
    let (stack, id) = submitted_mid_split(200);
    block_on(stack.client(TOKEN).cancel(&id)).expect("cancel");
    let status = wait_until(&stack, &id, Duration::from_secs(30), "the job ends", |s| s.state.is_terminal());
    assert_eq!(status.state, JobState::Cancelled, "{status:?}");
    std::thread::sleep(Duration::from_secs(5));
    let later = status_of(&stack, &id);
    assert_eq!(later.state, JobState::Cancelled, "still cancelled 5 s later: {later:?}");
    let history = block_on(stack.client(TOKEN).history(&id)).expect("history");
    let last = history.last().expect("history entries");
    assert_eq!((last.to, last.actor.as_str()), (JobState::Cancelled, "operator"), "{history:?}");
    assert!(!history.iter().any(|h| h.to == JobState::Completed), "{history:?}");
    let output = stack.command().args(["history", &id]).output().expect("run history");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("-> cancelled") && printed.contains("by operator"), "{printed}");
}

fn status_of(stack: &LocalStack, id: &str) -> JobStatus {
    status(stack, id).expect("status")
}
