//! Worker faults: releases use no attempt, a stalled database lets no task run twice, SIGKILLed
//! workers leave no task process behind and lose nothing, many dead letters are all reported,
//! and a failed stage stops (or, by choice, does not stop) the stages after it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::{AttemptOutcome, JobState};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::sandbox::TaskSandbox;
use batchgrid_core::spec::{parse_job, InputPolicy, JobSpec, Overrides};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{batchgrid, run_job, write_lines};

/// Starts `batchgrid worker` on the embedded grid in `state`. The visibility timeout is short
/// so that tasks held by a killed worker come back well within the 2 s its successor lives.
fn spawn_worker(state: &Path, max_receives: u32) -> Child {
    batchgrid()
        .args(["worker", "--visibility-timeout", "1s", "--drain-deadline", "200ms", "--poll-wait", "200ms"])
        .arg("--max-receives")
        .arg(max_receives.to_string())
        .arg("--state-dir")
        .arg(state)
        // Tasks count their runs in a file beside the state directory.
        .env("BATCHGRID_TASK_WRITABLE", state.parent().unwrap_or(state))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker")
}

fn signal(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).expect("pid");
    kill(Pid::from_raw(pid), signal).expect("signal the worker");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Waits up to `limit` for `done`, polling.
async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ticks the manager until the job ends (at most `limit`). A failed tick (the database is
/// stalled) is tried again: what is tested here is the worker, not the manager.
async fn drive(manager: &Manager, job_id: &str, spec: &JobSpec, limit: Duration) -> JobState {
    let deadline = Instant::now() + limit;
    loop {
        match manager.tick(job_id, spec).await {
            Ok(progress) if progress.state.is_terminal() => return progress.state,
            Ok(_) => {}
            Err(error) => eprintln!("tick failed, trying again: {error}"),
        }
        assert!(Instant::now() < deadline, "the job did not end in {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A one-line-per-task job running `command`, parsed from `dir/job.yaml`.
fn one_stage_job(dir: &Path, name: &str, command: &str, lines: usize, retry: &str) -> (String, JobSpec) {
    write_lines(&dir.join("input.txt"), lines);
    let text = format!(
        "name: {name}\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: {command}\noutput:\n  path: {output}\nretry:\n{retry}\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    );
    let spec = parse_job(&text, "job.yaml", dir, &Overrides::default()).expect("valid job");
    (text, spec)
}

async fn embedded(state: &Path, max_receives: u32) -> (Grid, Manager) {
    let grid = Grid::open_embedded(state, &EmbeddedGridSettings { max_receives }).await.expect("grid");
    let manager = Manager::new(grid.clone(), spool_dir(state));
    (grid, manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_tasks_still_get_every_failed_attempt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = dir.path().join("runs.log");
    let command =
        format!(r#"[sh, -c, 'echo run >> {runs}; sleep 1; echo "bad row" >&2; exit 5']"#, runs = runs.display());
    let (_, spec) = one_stage_job(dir.path(), "releases", &command, 1, "  max_attempts: 3\n  backoff: 100ms");
    let state = dir.path().join("state");
    // Room for 3 failures and the 3 releases below (and more).
    let (grid, manager) = embedded(&state, 10).await;
    let job_id = manager.submit(&spec).await.expect("submit");
    manager.split(&job_id, &spec, |_| {}).await.expect("split");

    for release in 1..=3 {
        let mut worker = spawn_worker(&state, 10);
        wait_for(Duration::from_secs(20), "the task to start", || lines(&runs).len() == release).await;
        signal(&worker, Signal::SIGTERM);
        assert_eq!(worker.wait().expect("wait").code(), Some(0), "a drained worker exits 0");
    }
    let attempts = grid.analytics.attempts(&job_id, 0, "000000").await.expect("attempts");
    assert!(attempts.is_empty(), "a release is no attempt: {attempts:?}");

    let mut worker = spawn_worker(&state, 10);
    let state_at_end = drive(&manager, &job_id, &spec, Duration::from_secs(40)).await;
    signal(&worker, Signal::SIGTERM);
    let _ = worker.wait();
    assert_eq!(state_at_end, JobState::Failed);
    let attempts = grid.analytics.attempts(&job_id, 0, "000000").await.expect("attempts");
    let outcomes: Vec<AttemptOutcome> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Retrying, AttemptOutcome::Retrying, AttemptOutcome::Failed],
        "all max_attempts failures were run, after three releases"
    );
    assert_eq!(lines(&runs).len(), 6, "three released runs, three failed ones");
    assert!(attempts[2].error.as_deref().is_some_and(|e| e.contains("bad row")), "{attempts:?}");
}

#[tokio::test]
async fn a_job_asking_more_attempts_than_the_grid_honours_is_refused_at_submit() {
    use batchgrid_core::service::{JobService, ServiceError};
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let (_, manager) = embedded(&state, 5).await;
    let service = JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), InputPolicy::Operator);
    write_lines(&dir.path().join("input.txt"), 1);
    let text = format!(
        "name: greedy\ninput:\n  path: {}\nstages:\n  - name: work\n    command: [cat]\noutput:\n  path: out\nretry:\n  max_attempts: 4\n",
        dir.path().join("input.txt").display()
    );
    let error = service.submit(&text, "greedy.yaml", &Overrides::default()).await.expect_err("refused");
    let ServiceError::BadJob(error) = error else { panic!("not a job error: {error}") };
    assert_eq!(error.field, "retry.max_attempts");
    assert_eq!(error.position.map(|p| p.line), Some(10));
    assert!(error.to_string().starts_with("greedy.yaml:10"), "{error}");
    assert!(service.jobs().await.expect("jobs").is_empty(), "nothing was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_database_lets_no_task_run_twice() {
    use batchgrid_core::analytics::PgAnalytics;
    use batchgrid_core::processor::ProcessorRegistry;
    use batchgrid_core::queue::SqliteQueue;
    use batchgrid_core::worker::{Worker, WorkerSettings};
    use batchgrid_testkit::postgres::TestDatabase;
    use batchgrid_testkit::StallingProxy;

    let dir = tempfile::tempdir().expect("temp dir");
    let database = TestDatabase::new();
    let (host, port) = database.address();
    let proxy = StallingProxy::start(&format!("{host}:{port}"));
    let url = database.url().replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{}", proxy.port()), 1);
    assert_ne!(url, database.url(), "the analytics store goes through the proxy");

    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let queue_db = batchgrid_core::queue::sqlite::open_queue_database(&state.join("queue.db")).await.expect("queue");
    let grid = Grid {
        store: Arc::new(batchgrid_core::store::LocalStore::open(state.join("objects")).expect("store")),
        tasks: Arc::new(SqliteQueue::new(queue_db.clone(), batchgrid_core::grid::TASK_QUEUE, 5)),
        chain: Arc::new(SqliteQueue::new(queue_db, batchgrid_core::grid::CHAIN_QUEUE, 5)),
        analytics: Arc::new(PgAnalytics::connect(&url, 4).await.expect("analytics")),
        meter: batchgrid_core::metering::RequestMeter::new(),
    };
    let runs = dir.path().join("runs.log");
    let command = format!(
        r#"[sh, -c, 'echo "$BATCHGRID_TASK_ID" >> {runs}; sleep 3; cp "$0" "$1/"', "{{input}}", "{{output}}"]"#,
        runs = runs.display()
    );
    let (_, spec) = one_stage_job(dir.path(), "stall", &command, 2, "  max_attempts: 3");
    let manager = Manager::new(grid.clone(), spool_dir(&state));
    let job_id = manager.submit(&spec).await.expect("submit");
    manager.split(&job_id, &spec, |_| {}).await.expect("split");

    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for n in 0..2 {
        let mut settings = WorkerSettings::new(format!("stall-{n}"), state.join("scratch"));
        settings.concurrency = 1;
        settings.prefetch = Some(0);
        settings.visibility = Duration::from_secs(2);
        settings.poll_wait = Duration::from_millis(200);
        settings.drain_deadline = Duration::from_secs(1);
        // Tasks count their runs in the test's directory.
        settings.sandbox = Arc::new(TaskSandbox::new(None, vec![dir.path().to_path_buf()]).expect("sandbox"));
        let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        workers.push(tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        })));
    }
    wait_for(Duration::from_secs(20), "both tasks to start", || lines(&runs).len() == 2).await;
    // Every reply of the database waits 40 s: 20 visibility timeouts.
    let stalled = Instant::now();
    proxy.hold_replies_for(Duration::from_secs(40));
    let state_at_end = drive(&manager, &job_id, &spec, Duration::from_secs(90)).await;
    assert!(stalled.elapsed() >= Duration::from_secs(39), "the stall really held the job up");
    for stop in stops {
        let _ = stop.send(());
    }
    for worker in workers {
        worker.await.expect("worker task").expect("worker");
    }
    assert_eq!(state_at_end, JobState::Completed);
    let mut started = lines(&runs);
    started.sort();
    assert_eq!(started, ["000000", "000001"], "each task ran once although the database stalled for 40 s");
    let totals = grid.analytics.attempt_totals(&job_id).await.expect("totals");
    assert_eq!(totals.attempts, 2);
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let output = std::process::Command::new("pgrep").arg("-a").arg("-f").arg(marker).output().expect("pgrep");
    String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.contains("pgrep")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sigkilled_every_two_seconds_lose_nothing_and_leave_no_task_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = format!("bgmarker-{}", ulid::Ulid::new().to_string().to_lowercase());
    // The marker is in the command's line and in its child's, which is no direct child of the
    // worker's: both must die with the worker.
    let command =
        format!(r#"[sh, -c, 'sh -c "sleep 1; true" child-$2; cp "$0" "$1/"', "{{input}}", "{{output}}", "{marker}"]"#);
    // Tasks of 1 s: long enough that a task of a killed worker would still be running when
    // the survivors are counted, short enough that every 2 s round finishes some.
    let tasks = 24;
    let (_, spec) = one_stage_job(dir.path(), "killed", &command, tasks, "  max_attempts: 3");
    let state = dir.path().join("state");
    // Every kill is a delivery of each task its worker held: a generous receive limit.
    let (grid, manager) = embedded(&state, 1000).await;
    let job_id = manager.submit(&spec).await.expect("submit");
    manager.split(&job_id, &spec, |_| {}).await.expect("split");

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    let final_state = loop {
        let mut workers: Vec<Child> = (0..2).map(|_| spawn_worker(&state, 1000)).collect();
        let round = Instant::now();
        let mut ended = None;
        while round.elapsed() < Duration::from_secs(2) {
            let progress = manager.tick(&job_id, &spec).await.expect("tick");
            if progress.state.is_terminal() {
                ended = Some(progress.state);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let progress = manager.tick(&job_id, &spec).await.expect("tick");
        eprintln!("round {kills}: {} of {tasks} done", progress.done());
        for worker in &mut workers {
            signal(worker, Signal::SIGKILL);
            let _ = worker.wait();
        }
        kills += 1;
        // The supervisors notice within 50 ms; give them a little more, well under the 1 s a
        // task's processes would otherwise live on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = processes_with(&marker);
        assert!(left.is_empty(), "task processes outlived their SIGKILLed worker: {left:?}");
        if let Some(state) = ended {
            break state;
        }
        assert!(Instant::now() < deadline, "the job did not end in time");
    };
    assert_eq!(final_state, JobState::Completed);
    assert!(kills >= 2, "the workers were killed while the job ran ({kills} rounds)");
    let stages = grid.analytics.stages(&job_id).await.expect("stages");
    assert_eq!((stages[0].done, stages[0].failed), (tasks as u64, 0), "every task counted once");
    let outputs: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("out")).expect("results").map(|e| e.expect("entry").path()).collect();
    assert_eq!(outputs.len(), tasks, "one result per task: {outputs:?}");
    for i in 0..tasks {
        let text = std::fs::read_to_string(dir.path().join(format!("out/{i:06}/input.txt")))
            .or_else(|_| {
                // The chunk's file name is the task's input name; find it whatever it is.
                let task_dir = dir.path().join(format!("out/{i:06}"));
                let file = std::fs::read_dir(&task_dir)?.next().ok_or(std::io::ErrorKind::NotFound)??;
                std::fs::read_to_string(file.path())
            })
            .expect("a task's result");
        assert_eq!(text, format!("line-{i}\n"), "task {i}'s result is its own line, written once");
    }
}

#[test]
fn a_job_of_150_tasks_that_all_fail_ends_failed_naming_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 150);
    let job = format!(
        "name: allfail\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, 'echo \"no good\" >&2; exit 4']\noutput:\n  path: {}\nretry:\n  max_attempts: 1\n",
        dir.path().join("input.txt").display(),
        dir.path().join("out").display()
    );
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(1), "stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "failed");
    let failures = result.report["failures"].as_array().expect("failures");
    let mut named: Vec<&str> = failures.iter().map(|f| f["task"].as_str().expect("task")).collect();
    named.sort_unstable();
    named.dedup();
    let expected: Vec<String> = (0..150).map(|i| format!("{i:06}")).collect();
    assert_eq!(named, expected.iter().map(String::as_str).collect::<Vec<_>>(), "all 150 named, once each");
    assert!(failures.iter().all(|f| f["error"].as_str().is_some_and(|e| e.contains("no good"))));
    let error = result.report["error"].as_str().expect("reason");
    assert!(error.contains("150 in `work`"), "{error}");
}

/// map -> map -> reduce where task 000001 of the first stage always fails, with `policy`.
fn three_stages(dir: &Path, policy: Option<&str>) -> crate::harness::RunResult {
    write_lines(&dir.join("input.txt"), 6);
    let policy = policy.map(|p| format!("on_stage_failure: {p}\n")).unwrap_or_default();
    let job = format!(
        r#"name: stages
input:
  path: {input}
split:
  lines: 1
{policy}stages:
  - name: parse
    command: [sh, -c, 'if grep -q line-1 "$0"; then echo "cannot parse" >&2; exit 3; fi; sleep 0.5; cp "$0" "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: enrich
    command: [sh, -c, 'cp "$0/part.txt" "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: total
    kind: reduce
    command: [sh, -c, 'cat "$0"/*/part.txt > "$1/all.txt"', "{{input}}", "{{output}}"]
output:
  path: {output}
retry:
  max_attempts: 1
"#,
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    );
    // One worker: it learns of the failure at once, so no later-stage task starts after it.
    run_job(dir, &job, &["--workers", "1", "--concurrency", "6"])
}

fn stage_counts(report: &serde_json::Value) -> Vec<(u64, u64)> {
    let stages = report["stages"].as_array().expect("stages");
    stages.iter().map(|s| (s["done"].as_u64().unwrap_or(0), s["failed"].as_u64().unwrap_or(0))).collect()
}

#[test]
fn a_failed_stage_stops_every_later_stage_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let result = three_stages(dir.path(), None);
    assert_eq!(result.code, Some(1), "stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "failed");
    assert_eq!(stage_counts(&result.report), [(5, 1), (0, 0), (0, 0)], "no task of a later stage ran");
    assert_eq!(result.report["skipped_stages"], serde_json::json!(["enrich", "total"]));
    let error = result.report["error"].as_str().expect("reason");
    assert!(
        error.contains("1 in `parse`")
            && error.contains("`enrich`, `total` (stage `parse` has failed tasks; on_stage_failure: stop)"),
        "{error}"
    );
}

#[test]
fn with_continue_map_stages_go_on_and_the_reduce_is_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let result = three_stages(dir.path(), Some("continue"));
    assert_eq!(result.code, Some(1), "stderr: {}", result.stderr);
    assert_eq!(result.report["state"], "failed");
    assert_eq!(stage_counts(&result.report), [(5, 1), (5, 0), (0, 0)], "the map stage went on, the reduce did not");
    assert_eq!(result.report["skipped_stages"], serde_json::json!(["total"]));
    let error = result.report["error"].as_str().expect("reason");
    assert!(error.contains("`total` (a reduce does not run over partial data)"), "{error}");
}
