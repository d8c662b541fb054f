//! A worker told to stop (SIGTERM, as on scale-in) finishes or releases what it holds and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchgrid_core::queue::{SqliteQueue, TaskQueue};

use crate::harness::{batchgrid, write_lines};

#[tokio::test]
async fn sigterm_releases_unfinished_tasks_at_the_drain_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 1);
    let job = format!(
        "name: drain\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: slow\n    command: [sleep, '60']\noutput:\n  path: out\n",
        dir.path().join("input.txt").display()
    );
    std::fs::write(dir.path().join("job.yaml"), job).expect("job");
    let state = dir.path().join("state");
    let split = batchgrid()
        .arg("split")
        .arg(dir.path().join("job.yaml"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("split");
    assert!(split.status.success(), "{}", String::from_utf8_lossy(&split.stderr));

    let mut worker = batchgrid()
        .args(["worker", "--drain-deadline", "1s", "--visibility-timeout", "60s", "--state-dir"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let pool = batchgrid_core::queue::sqlite::open_queue_database(&state.join("queue.db")).await.expect("queue db");
    let queue = SqliteQueue::new(pool, batchgrid_core::grid::TASK_QUEUE, 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue.depth().await.expect("depth").in_flight == 0 {
        assert!(Instant::now() < deadline, "the worker never took the task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped = Instant::now();
    let status = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status().expect("kill");
    assert!(status.success());
    let exit = worker.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "a drained worker exits 0");
    assert!(stopped.elapsed() < Duration::from_secs(10), "it stopped at its drain deadline, not the task's end");
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (1, 0), "the unfinished task was released for another worker at once");
}
