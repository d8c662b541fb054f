//! Control of jobs through the manager service on the embedded grid, with an in-process
//! worker: dependencies (`after:`), one-off runs at a time (`submit --at`), retry of a failed
//! job's failed tasks and a filtered redrive; and the schedules and control routes over HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::{actor, AnalyticsStore, JobRecord, JobState, OccurrenceState};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::RedriveFilter;
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::sandbox::TaskSandbox;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::schedule::chrono::{DateTime, Duration as ChronoDuration, Utc};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::api;
use batchgrid_core::service::client::{ApiClient, ClientError};
use batchgrid_core::service::{JobService, ServiceError};
use batchgrid_core::spec::{InputPolicy, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use reqwest::StatusCode;
use tokio::sync::oneshot;

/// A manager service on the embedded grid under `dir/state`.
async fn service(dir: &Path) -> Arc<JobService> {
    let state = dir.join("state");
    let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let manager = Manager::new(grid, spool_dir(&state));
    JobService::new(manager, Duration::from_millis(50), dir.to_path_buf(), InputPolicy::Operator)
}

fn analytics(service: &JobService) -> Arc<dyn AnalyticsStore> {
    service.manager().grid().analytics.clone()
}

/// A worker on the service's grid, running until the returned sender is dropped or fired;
/// its tasks may write under `dir/runs` (where the tests' commands log each run).
fn start_worker(service: &JobService, dir: &Path) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut settings = WorkerSettings::new("w-control", dir.join("scratch"));
    settings.concurrency = 2;
    settings.prefetch = Some(0);
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).expect("runs directory");
    settings.sandbox = Arc::new(TaskSandbox::new(None, vec![runs]).expect("sandbox"));
    let worker = Worker::new(settings, service.manager().grid().clone(), ProcessorRegistry::with_builtins());
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker.run(async move { drop(stopped.await) }).await.expect("worker");
    });
    (stop, handle)
}

/// A one-stage job `name` over `lines` lines, one task per line, whose task runs `script`
/// (`sh -c`, with the task's input as `$0` and output directory as `$1`).
fn job(dir: &Path, name: &str, lines: usize, script: &str, extra: &str) -> String {
    let input = dir.join(format!("{name}.txt"));
    std::fs::write(&input, (0..lines).map(|i| format!("line-{i}\n")).collect::<String>()).expect("input");
    format!(
        "name: {name}\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, '{script}', \"{{input}}\", \"{{output}}\"]\n\
         output:\n  path: out-{name}\nretry:\n  max_attempts: 1\n  backoff: 100ms\n{extra}",
        input.display()
    )
}

const COPY: &str = "sleep 0.3; cp \"$0\" \"$1/\"";

async fn submit(service: &Arc<JobService>, text: &str) -> Result<String, ServiceError> {
    service.submit(text, "job.yaml", &Overrides::default()).await
}

async fn job_record(service: &JobService, id: &str) -> JobRecord {
    analytics(service).job(id).await.expect("read").expect("job exists")
}

async fn wait_for_end(service: &JobService, id: &str) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = job_record(service, id).await;
        if job.state.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_unsplit_for_its_upstream_then_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let upstream = submit(&service, &job(dir.path(), "extract", 2, COPY, "")).await.expect("upstream");
    let downstream =
        submit(&service, &job(dir.path(), "load", 2, COPY, "after: [extract]\n")).await.expect("downstream");

    // No worker yet: the upstream cannot finish, so the downstream waits, with nothing enqueued.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(job_record(&service, &downstream).await.state, JobState::Submitted);
    let stages = analytics(&service).stages(&downstream).await.expect("stages");
    assert_eq!(stages[0].expected, None, "not split while waiting");
    let depth = service.manager().grid().tasks.depth().await.expect("depth");
    assert_eq!(depth.visible + depth.in_flight, 2, "only the upstream's tasks are queued: {depth:?}");
    let status = service.status(&downstream).await.expect("status");
    assert!(status.watchdog.as_deref().is_some_and(|n| n.contains(&upstream)), "{status:?}");

    let (stop, worker) = start_worker(&service, dir.path());
    let up = wait_for_end(&service, &upstream).await;
    let down = wait_for_end(&service, &downstream).await;
    let _ = stop.send(());
    worker.await.expect("worker stops");
    assert_eq!((up.state, down.state), (JobState::Completed, JobState::Completed), "{down:?}");
    let (Some(up_end), Some(down_start)) = (up.finished_at, down.started_at) else { panic!("times: {up:?} {down:?}") };
    assert!(down_start >= up_end, "the downstream started after the upstream completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_or_cancel_fails_the_waiting_job_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let broken = submit(&service, &job(dir.path(), "broken", 1, "exit 3", "")).await.expect("upstream");
    let waiting = submit(&service, &job(dir.path(), "report", 1, COPY, &format!("after: [{broken}]\n")))
        .await
        .expect("downstream by id");
    let idle = submit(&service, &job(dir.path(), "idle", 1, COPY, "")).await.expect("idle");
    let cancelled_after =
        submit(&service, &job(dir.path(), "tidy", 1, COPY, "after: [idle]\n")).await.expect("after idle");
    service.cancel(&idle).await.expect("cancel");

    let (stop, worker) = start_worker(&service, dir.path());
    assert_eq!(wait_for_end(&service, &broken).await.state, JobState::Failed);
    let failed = wait_for_end(&service, &waiting).await;
    let _ = stop.send(());
    worker.await.expect("worker stops");
    assert_eq!(failed.state, JobState::Failed);
    let reason = failed.error.expect("a reason");
    assert!(reason.starts_with(&format!("upstream job `{broken}` failed: failed tasks")), "{reason}");
    let history = analytics(&service).history(&waiting).await.expect("history");
    let last = history.last().expect("entries");
    assert_eq!(
        (last.from, last.to, last.actor.as_str()),
        (Some(JobState::Submitted), JobState::Failed, actor::MANAGER)
    );
    assert_eq!(last.reason.as_deref(), Some(reason.as_str()));
    assert_eq!(service.manager().grid().analytics.stages(&waiting).await.expect("stages")[0].expected, None);

    let tidy = wait_for_end(&service, &cancelled_after).await;
    assert_eq!(tidy.state, JobState::Failed);
    assert!(tidy.error.as_deref().is_some_and(|e| e.contains(&format!("`{idle}` was cancelled"))), "{tidy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_upstream_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let text = job(dir.path(), "orphan", 1, COPY, "after:\n  - nowhere\n");
    let Err(ServiceError::BadJob(error)) = submit(&service, &text).await else { panic!("must be refused") };
    assert_eq!(error.field, "after[0]");
    assert!(error.position.is_some_and(|p| p.line == 15), "{error}");
    assert!(error.to_string().contains("`nowhere`"), "{error}");
    let flag = Overrides { after: vec!["ghost".into()], ..Overrides::default() };
    let Err(ServiceError::BadJob(error)) = service.submit(&text, "job.yaml", &flag).await else { panic!("refused") };
    assert_eq!(error.field, "after");
    assert!(analytics(&service).jobs().await.expect("jobs").is_empty(), "nothing recorded");
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_run_fires_once_at_its_time_and_a_past_time_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (service(dir.path()).await, service(dir.path()).await);
    let text = job(dir.path(), "year-end", 1, COPY, "");
    let start = now();

    let past = a.submit_at(&text, "job.yaml", &Overrides::default(), start - ChronoDuration::minutes(1), start).await;
    let Err(ServiceError::BadJob(error)) = past else { panic!("a past time is refused") };
    assert_eq!(error.field, "at");
    assert!(error.message.contains("in the past"), "{error}");

    // Whole seconds: times are kept to the millisecond.
    let at = DateTime::<Utc>::from_timestamp(start.timestamp() + 7200, 0).expect("time");
    let deferred = a.submit_at(&text, "job.yaml", &Overrides::default(), at, start).await.expect("stored");
    assert_eq!(deferred.at, at.to_rfc3339());
    assert_eq!(a.fire_schedules(at - ChronoDuration::seconds(1)).await.expect("early pass"), 0);
    assert!(analytics(&a).jobs().await.expect("jobs").is_empty(), "nothing before its time");
    let listed = a.schedule(&deferred.schedule, start).await.expect("listed with the schedules");
    assert_eq!(listed.next, [at.to_rfc3339()]);

    let later = at + ChronoDuration::seconds(1);
    let (fired_a, fired_b) = tokio::join!(a.fire_schedules(later), b.fire_schedules(later));
    assert_eq!(fired_a.expect("a") + fired_b.expect("b"), 1, "one manager fires it");
    assert_eq!(a.fire_schedules(later + ChronoDuration::minutes(5)).await.expect("again"), 0);
    let jobs = analytics(&a).jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let shown = a.schedule(&deferred.schedule, later).await.expect("shown");
    assert!(shown.next.is_empty() && shown.paused, "done with: {shown:?}");
    assert_eq!(shown.occurrences.len(), 1);
    assert_eq!(shown.occurrences[0].job_id.as_deref(), Some(jobs[0].id.as_str()));
}

/// A job of four one-line tasks that logs each run under `dir/runs`; while `dir/marker`
/// exists, the task of line 1 exits 3 and the task of line 3 exits 4.
fn flaky_job(dir: &Path, name: &str) -> String {
    let (runs, marker) = (dir.join("runs"), dir.join("marker"));
    std::fs::create_dir_all(&runs).expect("runs directory");
    std::fs::write(&marker, "").expect("marker");
    let script = format!(
        "cat \"$0\" >> {runs}/log; if test -e {marker}; then grep -q line-1 \"$0\" && exit 3; \
         grep -q line-3 \"$0\" && exit 4; fi; cp \"$0\" \"$1/\"",
        runs = runs.display(),
        marker = marker.display()
    );
    job(dir, name, 4, &script, "")
}

/// How many times each line's task ran, from the runs log.
fn runs(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let log = std::fs::read_to_string(dir.join("runs").join("log")).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for line in log.lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> std::collections::BTreeMap<String, usize> {
    pairs.iter().map(|(line, n)| ((*line).to_owned(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_exactly_the_failed_tasks_into_the_same_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let (stop, worker) = start_worker(&service, dir.path());
    let id = submit(&service, &flaky_job(dir.path(), "nightly")).await.expect("submit");
    let failed = wait_for_end(&service, &id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert_eq!(runs(dir.path()), counts(&[("line-0", 1), ("line-1", 1), ("line-2", 1), ("line-3", 1)]));
    let Err(ServiceError::Refused(message)) =
        service.redrive(&id, &RedriveFilter { error: Some("no such error".into()), ..RedriveFilter::default() }).await
    else {
        panic!("a filter that picks nothing is refused")
    };
    assert!(message.contains("no failed task"), "{message}");

    std::fs::remove_file(dir.path().join("marker")).expect("fix the cause");
    let outcome = service.retry(&id).await.expect("retry");
    assert_eq!(outcome.tasks, 2, "{outcome:?}");
    assert!(outcome.lost.is_empty(), "{outcome:?}");
    let done = wait_for_end(&service, &id).await;
    let _ = stop.send(());
    worker.await.expect("worker stops");
    assert_eq!((done.state, done.error), (JobState::Completed, None));
    assert_eq!(
        runs(dir.path()),
        counts(&[("line-0", 1), ("line-1", 2), ("line-2", 1), ("line-3", 2)]),
        "only the failed tasks ran again"
    );
    let stage = &analytics(&service).stages(&id).await.expect("stages")[0];
    assert_eq!((stage.done, stage.failed, stage.retrying), (4, 0, 0), "each task counted once");
    let outputs = std::fs::read_dir(dir.path().join("out-nightly")).expect("results").count();
    assert_eq!(outputs, 4, "every result is in the job's output");

    let history = analytics(&service).history(&id).await.expect("history");
    let retried = history.iter().find(|e| e.from == Some(JobState::Failed)).expect("the retry is in the history");
    assert_eq!((retried.to, retried.actor.as_str()), (JobState::Running, actor::OPERATOR));
    assert_eq!(retried.reason.as_deref(), Some("retry: 2 failed task(s), every failed task"));
    assert_eq!(history.last().map(|e| e.to), Some(JobState::Completed));
    let Err(ServiceError::Refused(message)) = service.retry(&id).await else { panic!("a completed job is refused") };
    assert!(message.contains("is completed"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_redrive_runs_only_the_matching_tasks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let (stop, worker) = start_worker(&service, dir.path());
    let id = submit(&service, &flaky_job(dir.path(), "weekly")).await.expect("submit");
    assert_eq!(wait_for_end(&service, &id).await.state, JobState::Failed);

    std::fs::remove_file(dir.path().join("marker")).expect("fix the cause");
    let filter = RedriveFilter { stage: Some(0), task: None, error: Some("exit status 4".into()) };
    let outcome = service.redrive(&id, &filter).await.expect("redrive");
    assert_eq!(outcome.tasks, 1, "{outcome:?}");
    let ended = wait_for_end(&service, &id).await;
    let _ = stop.send(());
    worker.await.expect("worker stops");
    assert_eq!(
        runs(dir.path()),
        counts(&[("line-0", 1), ("line-1", 1), ("line-2", 1), ("line-3", 2)]),
        "only the task that failed with exit status 4 ran again"
    );
    assert_eq!(ended.state, JobState::Failed, "the other failed task stays failed");
    assert_eq!(ended.error.as_deref(), Some("failed tasks: 1 in `work`"));
    let failed = analytics(&service).failed_tasks(&id).await.expect("failed tasks");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].last_error.as_deref().is_some_and(|e| e.contains("exit status 3")), "{failed:?}");
    let history = analytics(&service).history(&id).await.expect("history");
    assert!(
        history.iter().any(
            |e| e.reason.as_deref() == Some("redrive: 1 failed task(s), stage 0, error containing `exit status 4`")
        ),
        "{history:?}"
    );
}

/// The API served on a loopback port over `service`, until the sender fires or drops.
async fn serve(service: Arc<JobService>) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move { drop(stopped.await) };
    tokio::spawn(api::serve(listener, service, Secret::new("s3cret"), shutdown));
    (format!("http://{address}"), stop)
}

/// `/v1/schedules` over HTTP: the token wanted, a bad document refused with its field and line,
/// then add, list, show, pause, resume, trigger and delete, each with its status code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_api_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let (base, _stop) = serve(service.clone()).await;
    let client = ApiClient::new(&base, Secret::new("s3cret")).expect("client");
    let stranger = ApiClient::new(&base, Secret::new("wrong")).expect("client");
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, "a\n").expect("input");
    let document = format!(
        "name: nightly\ninput:\n  path: {}\nstages:\n  - name: copy\n    command: [cat, \"{{input}}\"]\noutput:\n  path: out\n\
         schedule:\n  cron: 0 2 * * *\n  tz: Europe/Paris\n",
        input.display()
    );

    let refused = stranger.schedules().await.expect_err("no token, no answer");
    assert_eq!(refused.status(), Some(StatusCode::UNAUTHORIZED));
    let bad = client.add_schedule(&document.replace("0 2 * * *", "0 2 31 2 *"), "nightly.yaml").await;
    let Err(ClientError::Refused { status, body }) = bad else { panic!("30 February never fires") };
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!((body.field.as_deref(), body.line), (Some("schedule.cron"), Some(10)), "{}", body.error);

    let added = client.add_schedule(&document, "nightly.yaml").await.expect("added");
    assert_eq!((added.name.as_str(), added.tz.as_str(), added.paused), ("nightly", "Europe/Paris", false));
    assert_eq!(added.next.len(), 1, "{added:?}");
    assert!(added.next[0].contains("T02:00:00+0"), "{added:?}");
    let twice = client.add_schedule(&document, "nightly.yaml").await.expect_err("a second of that name");
    assert_eq!(twice.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(client.schedules().await.expect("list").len(), 1);

    client.schedule_action("nightly", "pause").await.expect("pause");
    let paused = client.schedule("nightly").await.expect("show");
    assert!(paused.paused && paused.next.is_empty(), "{paused:?}");
    client.schedule_action("nightly", "resume").await.expect("resume");
    assert_eq!(client.schedule("nightly").await.expect("show").next.len(), 5, "show gives five fire times");

    let occurrence = client.trigger_schedule("nightly").await.expect("trigger");
    assert_eq!(occurrence.state, OccurrenceState::Started, "{occurrence:?}");
    assert!(occurrence.manual);
    let job_id = occurrence.job_id.expect("a job");
    assert_eq!(client.status(&job_id).await.expect("its job").name, "nightly");

    client.schedule_action("nightly", "delete").await.expect("delete");
    let gone = client.schedule("nightly").await.expect_err("deleted");
    assert_eq!(gone.status(), Some(StatusCode::NOT_FOUND));
    let gone = client.schedule_action("nightly", "pause").await.expect_err("nothing to pause");
    assert_eq!(gone.status(), Some(StatusCode::NOT_FOUND));
}

/// `submit --at` and `--after` reach the service through the API's query, and a retry of a
/// job that has not failed is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_and_dependent_submissions_and_retry_over_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let (base, _stop) = serve(service.clone()).await;
    let client = ApiClient::new(&base, Secret::new("s3cret")).expect("client");
    let text = job(dir.path(), "later", 1, COPY, "");

    let at = (now() + ChronoDuration::hours(1)).to_rfc3339();
    let deferred = client.submit_at(&text, "later.yaml", None, &[], &at).await.expect("deferred");
    assert!(deferred.schedule.starts_with("later-at-"), "{deferred:?}");
    assert_eq!(client.schedule(&deferred.schedule).await.expect("listed").next.len(), 1);
    let past = client.submit_at(&text, "later.yaml", None, &[], "2020-01-01T00:00+01:00").await;
    let Err(ClientError::Refused { status, body }) = past else { panic!("a past time is refused") };
    assert_eq!((status, body.field.as_deref()), (StatusCode::BAD_REQUEST, Some("at")));
    let garbled = client.submit_at(&text, "later.yaml", None, &[], "next tuesday").await.expect_err("garbled");
    assert_eq!(garbled.status(), Some(StatusCode::BAD_REQUEST));

    let unknown = client.submit_after(&text, "later.yaml", None, &["nobody".to_owned()]).await;
    let Err(ClientError::Refused { status, body }) = unknown else { panic!("an unknown upstream is refused") };
    assert_eq!((status, body.field.as_deref()), (StatusCode::BAD_REQUEST, Some("after")));
    let first = client.submit(&text, "later.yaml", None).await.expect("first");
    let second =
        client.submit_after(&text, "later.yaml", None, std::slice::from_ref(&first)).await.expect("after the first");
    let stored = analytics(&service).job(&second).await.expect("read").expect("stored");
    assert!(stored.spec.contains(&first), "the stored spec names the upstream's id");

    let conflict = client.retry(&first).await.expect_err("not failed");
    assert_eq!(conflict.status(), Some(StatusCode::CONFLICT));
    let missing = client.retry("no-such-job").await.expect_err("unknown");
    assert_eq!(missing.status(), Some(StatusCode::NOT_FOUND));
}

/// `worker drain`: the worker finishes the tasks it holds, takes no new one, and exits; the
/// rest of the job stays queued for other workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_finishes_its_tasks_and_takes_no_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service(dir.path()).await;
    let id = submit(&service, &job(dir.path(), "long", 6, "sleep 1.5; cp \"$0\" \"$1/\"", "")).await.expect("submit");
    let mut settings = WorkerSettings::new("w-drained", dir.path().join("scratch"));
    settings.concurrency = 2;
    settings.prefetch = Some(0);
    let grid = service.manager().grid().clone();
    let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());
    let drain =
        batchgrid_core::drain::requested(grid.analytics.clone(), "w-drained".into(), Duration::from_millis(100));
    let run = tokio::spawn(worker.clone().run(drain));

    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.held_count() < 2 {
        assert!(Instant::now() < deadline, "the worker never got busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = service.drain_worker("no-such-worker").await;
    assert!(matches!(missing, Err(ServiceError::NotFound(_))), "{missing:?}");
    service.drain_worker("w-drained").await.expect("drain");
    let asked = Instant::now();
    // The heartbeat that says it is draining also says what it is still running (the tasks
    // sleep 1.5 s, so they are running when it is written).
    let draining = loop {
        let workers = analytics(&service).workers().await.expect("workers");
        if let Some(record) = workers.into_iter().find(|w| w.id == "w-drained" && w.state == "draining") {
            break record;
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "the worker never reported draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining.running.len(), 2, "both running tasks reported: {draining:?}");
    assert!(draining.running.iter().all(|t| t.job_id == id && t.stage == 0), "{draining:?}");
    assert!(draining.running.iter().all(|t| t.started_at <= batchgrid_core::db::now_millis()), "{draining:?}");
    let stats =
        tokio::time::timeout(Duration::from_secs(20), run).await.expect("it exits").expect("join").expect("run");
    assert!(asked.elapsed() < Duration::from_secs(5), "it exits after its current tasks: {:?}", asked.elapsed());
    assert_eq!(stats.released, 0, "its running tasks were finished, not given back: {stats:?}");
    assert!((2..6).contains(&stats.succeeded), "it finished what it held and took no more: {stats:?}");
    let stage = &analytics(&service).stages(&id).await.expect("stages")[0];
    assert!(stage.done < 6, "the rest waits for another worker: {stage:?}");
    let workers = analytics(&service).workers().await.expect("workers");
    let record = workers.iter().find(|w| w.id == "w-drained").expect("listed");
    assert_eq!(record.state, "stopped");
    assert!(record.running.is_empty(), "a stopped worker runs nothing: {record:?}");
}
