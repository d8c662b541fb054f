//! The [`AnalyticsStore`] contract.

use crate::analytics::rollup::bucket_of;
use crate::analytics::{
    actor, AnalyticsStore, AttemptOutcome, AttemptRecord, AttemptSpans, GridSample, JobQuery, JobRecord, JobState,
    RequestCount, RunningTask, StageRecord, WorkerActivity, WorkerRecord, MAX_RUNNING_RECORDED,
};
use crate::spec::StageKind;

/// Runs every analytics check against an empty store.
pub async fn run_all(store: &dyn AnalyticsStore) {
    job_lifecycle(store).await;
    transitions_allowed_and_refused(store).await;
    terminal_states_are_never_left(store).await;
    a_cancel_wins_over_a_concurrent_transition(store).await;
    history_records_every_applied_transition(store).await;
    a_task_that_runs_twice_counts_once(store).await;
    retries_then_success(store).await;
    final_failure_then_redrive(store).await;
    a_failed_job_is_reopened_for_its_failed_tasks_only(store).await;
    workers_and_totals(store).await;
    rollups_count_each_done_task_once(store).await;
    job_lists_filter_and_page(store).await;
    grid_samples_are_kept_for_a_while(store).await;
    request_counts_are_cumulative_per_process(store).await;
    worker_activity_is_grouped_by_worker_and_slot(store).await;
    super::schedules::run_all(store).await;
}

fn job(id: &str) -> JobRecord {
    JobRecord {
        id: id.to_owned(),
        name: "conformance".into(),
        state: JobState::Submitted,
        spec: "{}".into(),
        submitted_at: 1_000,
        started_at: None,
        finished_at: None,
        error: None,
    }
}

fn stages() -> Vec<StageRecord> {
    vec![
        StageRecord { stage: 0, name: "map".into(), kind: StageKind::Map },
        StageRecord { stage: 1, name: "reduce".into(), kind: StageKind::Reduce },
    ]
}

fn attempt(job: &str, task: &str, number: u32, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        job_id: job.into(),
        stage: 0,
        task_id: task.into(),
        attempt: number,
        worker_id: "w1".into(),
        started_at: 10_000,
        ended_at: 10_000 + 100 * i64::from(number),
        outcome,
        exit_status: Some(if outcome == AttemptOutcome::Succeeded { 0 } else { 1 }),
        bytes_in: 10,
        bytes_out: 5,
        error: (outcome != AttemptOutcome::Succeeded).then(|| format!("boom {number}")),
    }
}

async fn job_lifecycle(store: &dyn AnalyticsStore) {
    store.create_job(&job("life"), &stages()).await.expect("create");
    store.create_job(&job("life"), &stages()).await.expect("creating the same job again is harmless");
    assert!(store.transition("life", JobState::Running, None, actor::MANAGER).await.expect("running"));
    let running = store.job("life").await.expect("job").expect("exists");
    assert_eq!(running.state, JobState::Running);
    assert!(running.started_at.is_some(), "running stamps started_at");
    assert!(store.transition("life", JobState::Failed, Some("because"), actor::MANAGER).await.expect("failed"));
    let failed = store.job("life").await.expect("job").expect("exists");
    assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("because")));
    assert!(failed.finished_at.is_some(), "a terminal state stamps finished_at");
    assert!(store.job("nope").await.expect("lookup").is_none());
    assert!(
        store.transition("nope", JobState::Running, None, actor::MANAGER).await.is_err(),
        "unknown jobs are an error"
    );
    assert!(store.jobs().await.expect("jobs").iter().any(|j| j.id == "life"));
    assert!(
        !store.active_jobs().await.expect("active jobs").iter().any(|j| j.id == "life"),
        "an ended job is not active"
    );
    store.create_job(&job("live"), &stages()).await.expect("create");
    assert!(store.transition("live", JobState::Splitting, None, actor::MANAGER).await.expect("splitting"));
    let active: Vec<String> = store.active_jobs().await.expect("active jobs").into_iter().map(|j| j.id).collect();
    assert!(active.contains(&"live".to_owned()) && !active.contains(&"life".to_owned()), "{active:?}");
    store.set_stage_expected("life", 0, 7).await.expect("expected");
    let progress = store.stages("life").await.expect("stages");
    assert_eq!(progress.len(), 2);
    assert_eq!((progress[0].expected, progress[1].expected), (Some(7), None));
    assert_eq!(progress[1].kind, StageKind::Reduce);
}

async fn a_task_that_runs_twice_counts_once(store: &dyn AnalyticsStore) {
    store.create_job(&job("twice"), &stages()).await.expect("create");
    let success = attempt("twice", "t1", 1, AttemptOutcome::Succeeded);
    store.record_attempts(std::slice::from_ref(&success)).await.expect("record");
    store.record_attempts(std::slice::from_ref(&success)).await.expect("record the same attempt again");
    let mut second_run = attempt("twice", "t1", 2, AttemptOutcome::Succeeded);
    second_run.worker_id = "w2".into();
    store.record_attempts(&[second_run.clone(), second_run]).await.expect("a duplicate in one batch");
    let progress = store.stages("twice").await.expect("stages");
    assert_eq!(progress[0].done, 1, "a task that runs twice is done once");
    assert_eq!(
        store.attempts("twice", 0, "t1").await.expect("attempts").len(),
        2,
        "each delivery's attempt is kept once"
    );
    let task = store.task("twice", 0, "t1").await.expect("task").expect("exists");
    assert_eq!(task.worker_id.as_deref(), Some("w1"), "the first success wins");
    store.record_attempts(&[attempt("twice", "t0", 1, AttemptOutcome::Retrying)]).await.expect("record");
    let statuses = store.task_statuses("twice", 0).await.expect("statuses");
    let expected = vec![("t0".to_owned(), "retrying".to_owned()), ("t1".to_owned(), "done".to_owned())];
    assert_eq!(statuses, expected, "one entry per task, by id, with its status (what the watchdog compares)");
    assert!(store.task_statuses("twice", 1).await.expect("statuses").is_empty());
}

async fn retries_then_success(store: &dyn AnalyticsStore) {
    store.create_job(&job("retry"), &stages()).await.expect("create");
    store.record_attempts(&[attempt("retry", "t", 1, AttemptOutcome::Retrying)]).await.expect("first");
    assert_eq!(store.stages("retry").await.expect("stages")[0].retrying, 1);
    store.record_attempts(&[attempt("retry", "t", 2, AttemptOutcome::Retrying)]).await.expect("second");
    store.record_attempts(&[attempt("retry", "t", 3, AttemptOutcome::Succeeded)]).await.expect("third");
    let progress = &store.stages("retry").await.expect("stages")[0];
    assert_eq!(
        (progress.done, progress.failed, progress.retrying),
        (1, 0, 0),
        "failed twice then succeeded counts once"
    );
    let task = store.task("retry", 0, "t").await.expect("task").expect("exists");
    assert_eq!(task.attempts, 3);
    // A late failure report must not undo a success.
    store.record_attempts(&[attempt("retry", "t", 4, AttemptOutcome::Failed)]).await.expect("late");
    assert_eq!(store.task("retry", 0, "t").await.expect("task").expect("exists").status, "done", "done is final");
}

async fn final_failure_then_redrive(store: &dyn AnalyticsStore) {
    store.create_job(&job("fail"), &stages()).await.expect("create");
    store.record_attempts(&[attempt("fail", "t", 1, AttemptOutcome::Failed)]).await.expect("fail");
    let failed = store.failed_tasks("fail").await.expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("boom 1"), "the last error is kept");
    assert_eq!(store.stages("fail").await.expect("stages")[0].failed, 1);
    store.record_attempts(&[attempt("fail", "t", 2, AttemptOutcome::Succeeded)]).await.expect("redriven success");
    let progress = &store.stages("fail").await.expect("stages")[0];
    assert_eq!((progress.done, progress.failed), (1, 0), "a redriven task that succeeds is done, not failed");
}

async fn a_failed_job_is_reopened_for_its_failed_tasks_only(store: &dyn AnalyticsStore) {
    store.create_job(&job("reopen"), &stages()).await.expect("create");
    let tasks = |names: &[&str]| names.iter().map(|t| (0, (*t).to_owned())).collect::<Vec<_>>();
    assert_eq!(
        store.reopen_tasks("reopen", &tasks(&["a"]), "retry", actor::OPERATOR).await.expect("submitted"),
        None,
        "a job that has not run is not reopened"
    );
    store.transition("reopen", JobState::Running, None, actor::MANAGER).await.expect("run");
    store.set_stage_expected("reopen", 0, 3).await.expect("expected");
    store
        .record_attempts(&[
            attempt("reopen", "a", 1, AttemptOutcome::Failed),
            attempt("reopen", "b", 1, AttemptOutcome::Failed),
            attempt("reopen", "c", 1, AttemptOutcome::Succeeded),
        ])
        .await
        .expect("attempts");
    store.transition("reopen", JobState::Failed, Some("failed tasks"), actor::MANAGER).await.expect("fail");

    // `c` is done and `z` unknown: only the failed ones move, and the job runs again.
    let reopened = store.reopen_tasks("reopen", &tasks(&["a", "b", "c", "z"]), "retry: 2", actor::OPERATOR).await;
    assert_eq!(reopened.expect("reopen"), Some(2));
    let job = store.job("reopen").await.expect("job").expect("exists");
    assert_eq!((job.state, job.finished_at, job.error), (JobState::Running, None, None));
    let progress = &store.stages("reopen").await.expect("stages")[0];
    assert_eq!((progress.done, progress.failed, progress.retrying), (1, 0, 2));
    assert!(!progress.is_finished(), "the reopened tasks are awaited");
    let last = store.history("reopen").await.expect("history").pop().expect("an entry");
    assert_eq!((last.from, last.to), (Some(JobState::Failed), JobState::Running));
    assert_eq!((last.reason.as_deref(), last.actor.as_str()), (Some("retry: 2"), actor::OPERATOR));

    // Run again, each task counts once: one succeeds, one fails again.
    store
        .record_attempts(&[
            attempt("reopen", "a", 1, AttemptOutcome::Succeeded),
            attempt("reopen", "b", 1, AttemptOutcome::Failed),
        ])
        .await
        .expect("second run");
    let progress = &store.stages("reopen").await.expect("stages")[0];
    assert_eq!((progress.done, progress.failed, progress.retrying), (2, 1, 0));

    // A running job stays running, with the action in its history; an ended one is not reopened.
    let again = store.reopen_tasks("reopen", &tasks(&["b"]), "redrive", actor::OPERATOR).await.expect("again");
    assert_eq!(again, Some(1));
    let last = store.history("reopen").await.expect("history").pop().expect("an entry");
    assert_eq!((last.from, last.to), (Some(JobState::Running), JobState::Running));
    store.transition("reopen", JobState::Cancelled, None, actor::OPERATOR).await.expect("cancel");
    let cancelled = store.reopen_tasks("reopen", &tasks(&["b"]), "retry", actor::OPERATOR).await.expect("cancelled");
    assert_eq!(cancelled, None, "a cancelled job stays cancelled");
    assert!(store.reopen_tasks("nobody", &[], "retry", actor::OPERATOR).await.is_err(), "an unknown job is an error");
}

/// The rollups the dashboard reads: a task counts in its stage's time bucket and its second
/// once, when it becomes done (not while retrying, not again when recorded twice, and when a
/// failed task later succeeds).
async fn rollups_count_each_done_task_once(store: &dyn AnalyticsStore) {
    store.create_job(&job("rollup"), &stages()).await.expect("create");
    let timed = |task: &str, stage: u32, number: u32, outcome: AttemptOutcome, started: i64, ended: i64| {
        AttemptRecord { stage, started_at: started, ended_at: ended, ..attempt("rollup", task, number, outcome) }
    };
    let first = [
        timed("a", 0, 1, AttemptOutcome::Succeeded, 1_000, 1_050),
        timed("b", 0, 1, AttemptOutcome::Retrying, 1_000, 1_900),
        timed("c", 0, 1, AttemptOutcome::Failed, 1_000, 1_300),
        timed("r", 1, 1, AttemptOutcome::Succeeded, 2_000, 4_500),
    ];
    store.record_attempts(&first).await.expect("record");
    store.record_attempts(&first[..1]).await.expect("the same again");
    store
        .record_attempts(&[
            timed("b", 0, 2, AttemptOutcome::Succeeded, 1_900, 2_950),
            timed("c", 0, 2, AttemptOutcome::Succeeded, 1_300, 1_350),
        ])
        .await
        .expect("later successes");
    let times = store.task_times("rollup").await.expect("times");
    assert_eq!(times.iter().map(|t| t.stage).collect::<Vec<_>>(), vec![0, 1], "one entry per stage, in order");
    let map = &times[0].histogram;
    assert_eq!((map.count(), map.sum_ms()), (3, 50 + 1_050 + 50), "a, b and c, each once");
    assert_eq!(map.buckets.get(&bucket_of(50)), Some(&(2, 100)));
    assert_eq!(map.buckets.get(&bucket_of(1_050)), Some(&(1, 1_050)));
    assert_eq!(times[1].histogram.count(), 1);
    assert_eq!(store.mean_task_millis("rollup").await.expect("mean"), Some((50 + 1_050 + 50 + 2_500) / 4));
    assert_eq!(
        store.completions("rollup").await.expect("completions"),
        vec![(1_000, 2), (2_000, 1), (4_000, 1)],
        "done tasks per second by end time: a and c at 1.05 s and 1.35 s, b at 2.95 s, r at 4.5 s"
    );
    assert!(store.task_times("no-such-job").await.expect("times").is_empty());
    let task_ms = store.task_ms_of(&["rollup".to_owned(), "no-such-job".to_owned()]).await.expect("task time");
    assert_eq!(task_ms, std::collections::HashMap::from([("rollup".to_owned(), 50 + 1_050 + 50 + 2_500)]));
}

/// The grid over time: samples in time order, a repeated time replaced, old ones forgotten.
async fn grid_samples_are_kept_for_a_while(store: &dyn AnalyticsStore) {
    let sample = |at: i64, visible: u64| GridSample { at, visible, in_flight: 2, dead: 1, workers: 3, tasks_held: 4 };
    store.record_grid_sample(&sample(1_000, 10), 0).await.expect("record");
    store.record_grid_sample(&sample(3_000, 30), 0).await.expect("record");
    store.record_grid_sample(&sample(2_000, 20), 0).await.expect("record");
    store.record_grid_sample(&sample(2_000, 21), 0).await.expect("the same time again");
    let samples = store.grid_samples(1_500).await.expect("samples");
    assert_eq!(samples, vec![sample(2_000, 21), sample(3_000, 30)], "since 1.5 s, oldest first, the later replacing");
    store.record_grid_sample(&sample(4_000, 40), 2_500).await.expect("record and forget");
    let kept = store.grid_samples(0).await.expect("samples");
    assert_eq!(kept.iter().map(|s| s.at).collect::<Vec<_>>(), vec![3_000, 4_000], "those before 2.5 s forgotten");
}

/// The dashboard's job list: filtered by state and by a part of the name (case-insensitive,
/// `%` and `_` taken literally), newest first, limited, with the count of all that match.
async fn job_lists_filter_and_page(store: &dyn AnalyticsStore) {
    for (id, name, at) in [
        ("list-1", "Claims_Monthly", 5_000_001),
        ("list-2", "claims-daily", 5_000_002),
        ("list-3", "100% media", 5_000_003),
    ] {
        store
            .create_job(&JobRecord { name: name.into(), submitted_at: at, ..job(id) }, &stages())
            .await
            .expect("create");
    }
    store.transition("list-2", JobState::Running, None, actor::MANAGER).await.expect("run");
    let list = |state: Option<JobState>, name: Option<&str>, limit: u32| JobQuery {
        state,
        name: name.map(str::to_owned),
        limit,
    };

    let all = store.job_list(&list(None, Some("claims"), 10)).await.expect("list");
    assert_eq!(all.total, 2);
    assert_eq!(all.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["list-2", "list-1"], "newest first");
    let first = store.job_list(&list(None, Some("CLAIMS"), 1)).await.expect("list");
    assert_eq!((first.total, first.jobs.len()), (2, 1), "the total counts past the limit");
    let count_only = store.job_list(&list(None, Some("claims"), 0)).await.expect("count");
    assert_eq!((count_only.total, count_only.jobs.len()), (2, 0), "a limit of 0 counts and lists nothing");
    let running = store.job_list(&list(Some(JobState::Running), Some("claims"), 10)).await.expect("list");
    assert_eq!(running.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["list-2"]);
    let literal = store.job_list(&list(None, Some("s_m"), 10)).await.expect("list");
    assert_eq!(literal.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["list-1"], "_ is not a wildcard");
    let percent = store.job_list(&list(None, Some("0%"), 10)).await.expect("list");
    assert_eq!(percent.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec!["list-3"], "% is not a wildcard");

    let ids = vec!["list-1".to_owned(), "list-3".to_owned(), "nobody".to_owned()];
    let stages = store.stages_of(&ids).await.expect("stages");
    assert_eq!(stages.len(), 2, "an unknown job has no entry");
    assert_eq!(stages["list-1"], store.stages("list-1").await.expect("stages"), "the same as one job's read");
}

fn running(job: &str, stage: u32, task: &str, started_at: i64) -> RunningTask {
    RunningTask { job_id: job.into(), stage, task_id: task.into(), started_at }
}

async fn workers_and_totals(store: &dyn AnalyticsStore) {
    let worker = WorkerRecord {
        id: "w-stats".into(),
        host: "h".into(),
        pid: 1,
        started_at: 1,
        last_seen: 1,
        state: "running".into(),
        tasks_done: 0,
        tasks_failed: 0,
        current_tasks: 3,
        running: vec![running("totals", 0, "late", 900), running("totals", 1, "<early>", 500)],
    };
    store.upsert_worker(&worker).await.expect("worker");
    store.create_job(&job("totals"), &stages()).await.expect("create");
    let mut records = vec![
        attempt("totals", "a", 1, AttemptOutcome::Succeeded),
        attempt("totals", "b", 1, AttemptOutcome::Retrying),
        attempt("totals", "b", 2, AttemptOutcome::Succeeded),
    ];
    for record in &mut records {
        record.worker_id = "w-stats".into();
    }
    store.record_attempts(&records).await.expect("record");
    let totals = store.attempt_totals("totals").await.expect("totals");
    assert_eq!((totals.attempts, totals.failed_attempts, totals.bytes_in), (3, 1, 20));
    assert_eq!(store.task_durations("totals").await.expect("durations"), vec![100, 200], "ascending durations");
    assert_eq!(store.mean_task_millis("totals").await.expect("mean"), Some(150), "mean of the done tasks");
    assert_eq!(
        store.completion_times("totals").await.expect("completions"),
        vec![10_100, 10_200],
        "end times of succeeded attempts only, ascending"
    );
    assert_eq!(store.mean_task_millis("no-such-job").await.expect("mean"), None, "no done task, no mean");
    // Overlapping attempts leave no gap; one started after every earlier one ended does.
    store.create_job(&job("spans"), &stages()).await.expect("create");
    let spans =
        [("a", 1_000, 1_100), ("b", 1_050, 1_150), ("c", 1_300, 1_400), ("d", 1_390, 1_500), ("e", 1_420, 1_440)];
    let records: Vec<AttemptRecord> = spans
        .iter()
        .map(|&(task, started_at, ended_at)| AttemptRecord {
            started_at,
            ended_at,
            ..attempt("spans", task, 1, AttemptOutcome::Succeeded)
        })
        .collect();
    store.record_attempts(&records).await.expect("record");
    assert_eq!(
        store.attempt_spans("spans").await.expect("spans"),
        AttemptSpans { first_start: Some(1_000), last_end: Some(1_500), gaps_ms: 150 },
        "the one gap is 1,150 to 1,300"
    );
    assert_eq!(store.attempt_spans("no-such-job").await.expect("spans"), AttemptSpans::default(), "no attempts");
    let stats = store.workers().await.expect("workers").into_iter().find(|w| w.id == "w-stats").expect("listed");
    assert_eq!((stats.tasks_done, stats.tasks_failed), (2, 1), "worker statistics count attempts");
    assert!(stats.last_seen >= 10_100, "recording attempts refreshes last_seen");

    assert!(!store.drain_requested("w-stats").await.expect("read"), "no drain asked yet");
    assert!(store.request_drain("w-stats", 5).await.expect("drain"), "a known worker");
    assert!(store.request_drain("w-stats", 9).await.expect("again"), "asking twice is harmless");
    assert!(store.drain_requested("w-stats").await.expect("read"), "the worker sees it");
    assert_eq!(stats.current_tasks, 3, "the tasks it held at its heartbeat");
    assert_eq!(
        stats.running,
        vec![running("totals", 1, "<early>", 500), running("totals", 0, "late", 900)],
        "the tasks it was running, the longest running first"
    );
    let now_running = vec![running("totals", 2, "next", 1_200)];
    store
        .upsert_worker(&WorkerRecord {
            state: "draining".into(),
            current_tasks: 1,
            running: now_running.clone(),
            ..worker.clone()
        })
        .await
        .expect("heartbeat");
    assert!(store.drain_requested("w-stats").await.expect("read"), "a heartbeat keeps the request");
    let stats = store.workers().await.expect("workers").into_iter().find(|w| w.id == "w-stats").expect("listed");
    assert_eq!((stats.state.as_str(), stats.current_tasks), ("draining", 1), "each heartbeat replaces the count");
    assert_eq!(stats.running, now_running, "and the running tasks");

    // A worker running more than a heartbeat records keeps the longest running.
    let many: Vec<RunningTask> =
        (0..MAX_RUNNING_RECORDED as i64 + 5).rev().map(|at| running("totals", 0, &format!("t{at}"), at)).collect();
    store.upsert_worker(&WorkerRecord { running: many, ..worker.clone() }).await.expect("heartbeat");
    let stats = store.workers().await.expect("workers").into_iter().find(|w| w.id == "w-stats").expect("listed");
    assert_eq!(stats.running.len(), MAX_RUNNING_RECORDED, "capped");
    assert_eq!(stats.running.first().map(|t| t.started_at), Some(0), "the longest running kept");
    store.upsert_worker(&WorkerRecord { state: "stopped".into(), running: Vec::new(), ..worker }).await.expect("stop");
    let stats = store.workers().await.expect("workers").into_iter().find(|w| w.id == "w-stats").expect("listed");
    assert!(stats.running.is_empty(), "an empty list replaces the last one");
    assert!(!store.request_drain("nobody", 5).await.expect("unknown"), "an unknown worker is not found");
    assert!(!store.drain_requested("nobody").await.expect("unknown"));
}

fn requests(service: &str, operation: &str, count: u64) -> RequestCount {
    RequestCount { service: service.into(), operation: operation.into(), count }
}

async fn request_counts_are_cumulative_per_process(store: &dyn AnalyticsStore) {
    assert!(store.request_totals().await.expect("totals").is_empty(), "no requests recorded yet");
    store.record_requests("p1", &[]).await.expect("nothing to record");
    store
        .record_requests("p1", &[requests("SQS", "SendMessage", 4), requests("S3", "PutObject", 5)])
        .await
        .expect("first report");
    store.record_requests("p2", &[requests("S3", "PutObject", 3)]).await.expect("another process");
    // Cumulative: a later report replaces the count, and a late smaller one never lowers it.
    store
        .record_requests("p1", &[requests("S3", "PutObject", 7), requests("SQS", "SendMessage", 2)])
        .await
        .expect("second report");
    store.record_requests("p1", &[requests("S3", "PutObject", 7)]).await.expect("the same report again");
    // A repeated key in one report keeps its largest count; byte order puts `multipart` last.
    store
        .record_requests("p2", &[requests("S3", "multipart", 1), requests("S3", "multipart", 2)])
        .await
        .expect("a duplicate in one report");
    assert_eq!(
        store.request_totals().await.expect("totals"),
        vec![requests("S3", "PutObject", 10), requests("S3", "multipart", 2), requests("SQS", "SendMessage", 4)],
        "totals sum each process's largest count, by service then operation in byte order"
    );
}

/// Every (from, to) pair: the guarded transition applies exactly when the state machine allows
/// it, and a refused one leaves the state and the history as they were.
async fn transitions_allowed_and_refused(store: &dyn AnalyticsStore) {
    use JobState::*;
    let all = [Submitted, Splitting, Running, Completed, Failed, Cancelled];
    // The shortest way to reach each state from `submitted`.
    let path = |state: JobState| -> Vec<JobState> {
        match state {
            Submitted => vec![],
            Splitting => vec![Splitting],
            Running => vec![Splitting, Running],
            Completed => vec![Splitting, Running, Completed],
            Failed => vec![Failed],
            Cancelled => vec![Cancelled],
        }
    };
    let allowed = [
        (Submitted, Splitting),
        (Submitted, Running),
        (Submitted, Failed),
        (Submitted, Cancelled),
        (Splitting, Running),
        (Splitting, Failed),
        (Splitting, Cancelled),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
    ];
    for from in all {
        for to in all {
            let id = format!("sm-{from}-{to}");
            store.create_job(&job(&id), &stages()).await.expect("create");
            for step in path(from) {
                assert!(store.transition(&id, step, None, actor::MANAGER).await.expect("step"), "{id}: to {step}");
            }
            let before = store.history(&id).await.expect("history").len();
            let applied = store.transition(&id, to, Some("test"), actor::MANAGER).await.expect("transition");
            let expected = allowed.contains(&(from, to));
            assert_eq!(applied, expected, "{from} -> {to}");
            assert_eq!(from.can_move_to(to), expected, "JobState::can_move_to({from}, {to})");
            let state = store.job(&id).await.expect("job").expect("exists").state;
            assert_eq!(state, if expected { to } else { from }, "{from} -> {to}");
            let after = store.history(&id).await.expect("history").len();
            assert_eq!(after, before + usize::from(expected), "{from} -> {to}: history grows only when applied");
        }
    }
}

async fn terminal_states_are_never_left(store: &dyn AnalyticsStore) {
    for end in [JobState::Completed, JobState::Failed, JobState::Cancelled] {
        assert!(end.allowed_from().iter().all(|s| !s.is_terminal()), "{end} is entered only from live states");
        for state in [JobState::Submitted, JobState::Splitting, JobState::Running, JobState::Completed] {
            assert!(!end.can_move_to(state), "{end} -> {state} must be refused");
        }
    }
    store.create_job(&job("ended"), &stages()).await.expect("create");
    assert!(store.transition("ended", JobState::Cancelled, Some("stop"), actor::OPERATOR).await.expect("cancel"));
    assert!(!store.transition("ended", JobState::Completed, None, actor::MANAGER).await.expect("refused"));
    assert!(!store.transition("ended", JobState::Failed, Some("late"), actor::MANAGER).await.expect("refused"));
    let job = store.job("ended").await.expect("job").expect("exists");
    assert_eq!(
        (job.state, job.error.as_deref()),
        (JobState::Cancelled, Some("stop")),
        "a refused change writes nothing"
    );
}

/// A cancel and the manager's own transitions race; whatever the interleaving, the job ends
/// `cancelled`: the splitter's `running` and a tick's `completed` cannot overwrite it.
async fn a_cancel_wins_over_a_concurrent_transition(store: &dyn AnalyticsStore) {
    for round in 0..20 {
        let id = format!("race-{round}");
        store.create_job(&job(&id), &stages()).await.expect("create");
        assert!(store.transition(&id, JobState::Splitting, None, actor::MANAGER).await.expect("splitting"));
        let manager = async {
            let _ = store.transition(&id, JobState::Running, None, actor::MANAGER).await.expect("running");
            let _ = store.transition(&id, JobState::Completed, None, actor::MANAGER).await.expect("completed");
        };
        let cancel = async {
            assert!(
                store.transition(&id, JobState::Cancelled, Some("stop"), actor::OPERATOR).await.expect("cancel")
                    || store.job(&id).await.expect("job").expect("exists").state == JobState::Completed,
                "a cancel is refused only by a job that already ended"
            );
        };
        futures::join!(manager, cancel);
        let state = store.job(&id).await.expect("job").expect("exists").state;
        assert!(state == JobState::Cancelled || state == JobState::Completed, "{state}");
        if state == JobState::Cancelled {
            assert!(!store.transition(&id, JobState::Completed, None, actor::MANAGER).await.expect("late tick"));
            assert_eq!(store.job(&id).await.expect("job").expect("exists").state, JobState::Cancelled);
        }
        let history = store.history(&id).await.expect("history");
        let seqs: Vec<u64> = history.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, (1..=history.len() as u64).collect::<Vec<_>>(), "one entry per applied change");
        assert_eq!(history.last().map(|h| h.to), Some(state), "the history ends in the job's state");
    }
}

async fn history_records_every_applied_transition(store: &dyn AnalyticsStore) {
    store.create_job(&job("hist"), &stages()).await.expect("create");
    store.create_job(&job("hist"), &stages()).await.expect("again");
    assert!(store.transition("hist", JobState::Splitting, None, actor::MANAGER).await.expect("splitting"));
    assert!(!store.transition("hist", JobState::Completed, None, actor::MANAGER).await.expect("refused"));
    assert!(store.transition("hist", JobState::Cancelled, Some("not needed"), actor::OPERATOR).await.expect("cancel"));
    let history = store.history("hist").await.expect("history");
    let steps: Vec<(Option<JobState>, JobState, Option<&str>, &str)> =
        history.iter().map(|h| (h.from, h.to, h.reason.as_deref(), h.actor.as_str())).collect();
    assert_eq!(
        steps,
        vec![
            (None, JobState::Submitted, None, actor::MANAGER),
            (Some(JobState::Submitted), JobState::Splitting, None, actor::MANAGER),
            (Some(JobState::Splitting), JobState::Cancelled, Some("not needed"), actor::OPERATOR),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].at <= w[1].at), "times never go back");
    assert!(store.history("nope").await.expect("history").is_empty());
}

/// Attempts grouped by worker and by the slots they started and ended in, every outcome
/// counted, other jobs' attempts left out, sums as offsets from `start`.
async fn worker_activity_is_grouped_by_worker_and_slot(store: &dyn AnalyticsStore) {
    store.create_job(&job("activity"), &stages()).await.expect("create");
    store.create_job(&job("activity-other"), &stages()).await.expect("create");
    let span = |job: &str, task: &str, worker: &str, started_at: i64, ended_at: i64, outcome| AttemptRecord {
        worker_id: worker.into(),
        started_at,
        ended_at,
        ..attempt(job, task, 1, outcome)
    };
    let records = vec![
        span("activity", "a", "w-a", 10_100, 10_400, AttemptOutcome::Succeeded),
        span("activity", "b", "w-a", 10_500, 10_900, AttemptOutcome::Retrying),
        span("activity", "c", "w-a", 10_800, 12_300, AttemptOutcome::Succeeded),
        span("activity", "d", "w-b", 11_000, 11_999, AttemptOutcome::Failed),
        span("activity-other", "a", "w-a", 10_000, 10_500, AttemptOutcome::Succeeded),
    ];
    store.record_attempts(&records).await.expect("record");
    let mut activity = store.worker_activity("activity", 10_000, 1_000).await.expect("activity");
    activity.sort_by(|a, b| (&a.worker_id, a.start_slot, a.end_slot).cmp(&(&b.worker_id, b.start_slot, b.end_slot)));
    let row = |worker: &str, start_slot, end_slot, attempts, started_sum, ended_sum| WorkerActivity {
        worker_id: worker.into(),
        start_slot,
        end_slot,
        attempts,
        started_sum,
        ended_sum,
    };
    assert_eq!(
        activity,
        vec![
            row("w-a", 0, 0, 2, 100 + 500, 400 + 900),
            row("w-a", 0, 2, 1, 800, 2_300),
            row("w-b", 1, 1, 1, 1_000, 1_999),
        ]
    );
    assert!(store.worker_activity("no-such-job", 0, 1_000).await.expect("activity").is_empty());
}
