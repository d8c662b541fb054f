//! Failing tasks: retries counted once, dead letters reported, long tasks not duplicated.

use batchgrid_core::analytics::AnalyticsStore;
use batchgrid_core::queue::{SqliteQueue, TaskQueue};

use crate::harness::{analytics, run_job, run_job_with_env, write_lines};

fn job(dir: &std::path::Path, command: &str, retry: &str) -> String {
    format!(
        "name: failures\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: {command}\noutput:\n  path: {output}\nretry:\n{retry}\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    )
}

#[tokio::test]
async fn a_task_that_fails_twice_then_succeeds_is_counted_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 4);
    let command = r#"[sh, -c, 'if [ "$BATCHGRID_ATTEMPT" -lt 3 ]; then echo "flaky $BATCHGRID_ATTEMPT" >&2; exit 7; fi; cp "$0" "$1/"', "{input}", "{output}"]"#;
    let job = job(dir.path(), command, "  max_attempts: 3\n  backoff: 100ms");
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert_eq!(result.report["tasks_done"], 4, "each task counted once");
    assert_eq!(result.report["attempts"], 12, "three attempts per task recorded");
    assert_eq!(result.report["failed_attempts"], 8);
    let store = analytics(&result.state_dir).await;
    let job_id = result.report["job_id"].as_str().expect("job id");
    let attempts = store.attempts(job_id, 0, "000000").await.expect("attempts");
    let errors: Vec<_> = attempts.iter().map(|a| a.error.clone().unwrap_or_default()).collect();
    assert!(errors[0].contains("exit status 7") && errors[0].contains("flaky 1"), "{errors:?}");
    assert_eq!(store.stages(job_id).await.expect("stages")[0].done, 4);
}

#[tokio::test]
async fn a_task_that_always_fails_is_dead_lettered_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 3);
    let command = r#"[sh, -c, 'if grep -q line-1 "$0"; then echo "cannot parse row 17" >&2; exit 3; fi; cp "$0" "$1/"', "{input}", "{output}"]"#;
    let job = job(dir.path(), command, "  max_attempts: 2\n  backoff: 100ms");
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(1), "a failed job exits non-zero; stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "failed");
    let failures = result.report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["task"], "000001");
    assert_eq!(failures[0]["attempts"], 2);
    let error = failures[0]["error"].as_str().expect("error");
    assert!(error.contains("exit status 3") && error.contains("cannot parse row 17"), "{error}");
    assert_eq!(result.report["tasks_done"], 2, "the other tasks still ran");

    let pool =
        batchgrid_core::queue::sqlite::open_queue_database(&result.state_dir.join("queue.db")).await.expect("db");
    let queue = SqliteQueue::new(pool, batchgrid_core::grid::TASK_QUEUE, 2);
    let letters = queue.dead_letters(10).await.expect("dead letters");
    assert!(letters.is_empty(), "the manager consumed the dead letter once it was recorded: {letters:?}");
}

#[tokio::test]
async fn a_task_whose_worker_always_dies_is_dead_lettered_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 2);
    let command = r#"[sh, -c, 'if grep -q line-1 "$0"; then sleep 0.5; kill -9 $(ps -o ppid= -p $PPID); sleep 5; fi', "{input}"]"#;
    // The command's parent is its supervisor; the supervisor's parent is the worker.
    let job = job(dir.path(), command, "  max_attempts: 2\n  backoff: 100ms");
    // One task per worker, so the dying task takes no innocent one with it.
    let result = run_job(dir.path(), &job, &["--workers", "2", "--concurrency", "1", "--visibility-timeout", "1s"]);
    assert_eq!(result.code, Some(1), "stderr: {}", result.stderr);
    let failures = result.report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["task"], "000001");
    let error = failures[0]["error"].as_str().expect("error");
    assert!(error.contains("worker never finished it"), "{error}");
    assert_eq!(result.report["tasks_done"], 1);
}

#[tokio::test]
async fn a_task_longer_than_the_visibility_timeout_runs_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 2);
    let runs = dir.path().join("runs.log");
    let command = format!(
        r#"[sh, -c, 'echo "$BATCHGRID_TASK_ID" >> {runs}; sleep 5; cp "$0" "$1/"', "{{input}}", "{{output}}"]"#,
        runs = runs.display()
    );
    let job = job(dir.path(), &command, "  max_attempts: 3");
    let writable = [("BATCHGRID_TASK_WRITABLE", dir.path().to_str().expect("utf-8 path"))];
    let result = run_job_with_env(dir.path(), &job, &["--workers", "2", "--visibility-timeout", "2s"], &writable);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    let log = std::fs::read_to_string(&runs).expect("runs log");
    let mut started: Vec<&str> = log.lines().collect();
    started.sort();
    assert_eq!(started, ["000000", "000001"], "each task started exactly once while its worker lived");
    assert_eq!(result.report["attempts"], 2);
}
