//! Schedules fired by the manager service on the embedded grid, on a clock the test sets: each
//! occurrence once however many managers run, each catch-up and overlap policy through the
//! real submit path, and the occurrence's month filled into the job it submits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchgrid_core::analytics::{AnalyticsStore, OccurrenceState};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::schedule::chrono::{DateTime, Utc};
use batchgrid_core::schedule::parse_instant;
use batchgrid_core::service::JobService;
use batchgrid_core::spec::{InputPolicy, InputSpec, JobSpec};

fn at(text: &str) -> DateTime<Utc> {
    parse_instant(text).expect("test time")
}

/// A month-end job reading `DIR/{period}.csv`; `SCHEDULE_EXTRA` adds lines to its block.
fn job(extra: &str) -> String {
    format!(
        "name: month-end\ninput:\n  path: \"{{period}}.csv\"\nstages:\n  - name: copy\n    command: [cat, \"{{input}}\"]\n\
         output:\n  path: out/{{period}}\nschedule:\n  cron: 0 2 L * *\n  tz: Europe/Paris\n{extra}"
    )
}

/// A manager service on the embedded grid under `state_dir` (several may share one).
async fn service(state_dir: &Path, base_dir: &Path) -> Arc<JobService> {
    let settings = EmbeddedGridSettings { max_receives: 5 };
    let grid = Grid::open_embedded(state_dir, &settings).await.expect("grid");
    let manager = Manager::new(grid, spool_dir(state_dir));
    JobService::new(manager, Duration::from_millis(50), base_dir.to_path_buf(), InputPolicy::Operator)
}

fn analytics(service: &JobService) -> Arc<dyn AnalyticsStore> {
    service.manager().grid().analytics.clone()
}

/// The months' inputs the job reads.
fn inputs(dir: &Path) {
    for month in ["2026-08", "2026-09", "2026-10", "2026-11"] {
        std::fs::write(dir.join(format!("{month}.csv")), "a\n").expect("input");
    }
}

async fn occurrence_states(service: &JobService) -> Vec<(String, OccurrenceState)> {
    let occurrences = analytics(service).occurrences("month-end", 100).await.expect("occurrences");
    occurrences
        .into_iter()
        .rev()
        .map(|o| {
            let time = DateTime::<Utc>::from_timestamp_millis(o.fire_time).expect("time");
            (time.to_rfc3339(), o.state)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_fire_a_month_end_once_with_its_month_in_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    inputs(dir.path());
    let state = dir.path().join("state");
    let (a, b) = (service(&state, dir.path()).await, service(&state, dir.path()).await);
    a.add_schedule(&job(""), "job.yaml", at("2026-11-15T00:00:00Z")).await.expect("added");

    let now = at("2026-11-30T01:00:05Z"); // 02:00:05 in Paris on the last day of November
    let (fired_a, fired_b) = tokio::join!(a.fire_schedules(now), b.fire_schedules(now));
    assert_eq!(fired_a.expect("a") + fired_b.expect("b"), 1, "one manager fires it");
    // Both look again, later: nothing more.
    assert_eq!(a.fire_schedules(at("2026-11-30T01:00:30Z")).await.expect("again"), 0);
    assert_eq!(b.fire_schedules(at("2026-11-30T01:00:30Z")).await.expect("again"), 0);

    let jobs = analytics(&a).jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let spec: JobSpec = serde_json::from_str(&jobs[0].spec).expect("spec");
    assert_eq!(spec.input, InputSpec::Local(dir.path().join("2026-11.csv")));
    assert!(spec.output.path.ends_with("out/2026-11"));
    assert_eq!(occurrence_states(&a).await, [("2026-11-30T01:00:00+00:00".to_owned(), OccurrenceState::Started)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_missed_month_ends_are_caught_up_by_policy() {
    for (extra, expected) in [
        ("  catch_up: skip\n", 0),
        ("  catch_up: latest\n  catch_up_window: 30d\n", 1),
        ("  catch_up: all\n  catch_up_window: 100d\n  overlap: allow\n", 3),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        inputs(dir.path());
        let service = service(&dir.path().join("state"), dir.path()).await;
        service.add_schedule(&job(extra), "job.yaml", at("2026-08-15T00:00:00Z")).await.expect("added");
        // The manager was away from mid-August to mid-November.
        let fired = service.fire_schedules(at("2026-11-15T12:00:00Z")).await.expect("pass");
        assert_eq!(fired, expected, "{extra}");
        assert_eq!(analytics(&service).jobs().await.expect("jobs").len(), expected, "{extra}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_and_queue_with_a_run_still_going() {
    // No worker runs here, so the first month's job is still running at the next month-end.
    let dir = tempfile::tempdir().expect("temp dir");
    inputs(dir.path());
    let skip = service(&dir.path().join("skip"), dir.path()).await;
    skip.add_schedule(&job(""), "job.yaml", at("2026-09-15T00:00:00Z")).await.expect("added");
    skip.fire_schedules(at("2026-09-30T00:00:10Z")).await.expect("september");
    skip.fire_schedules(at("2026-10-31T01:00:10Z")).await.expect("october");
    let states = occurrence_states(&skip).await;
    assert_eq!(states.iter().map(|s| s.1).collect::<Vec<_>>(), [OccurrenceState::Started, OccurrenceState::Skipped]);
    assert_eq!(analytics(&skip).jobs().await.expect("jobs").len(), 1);

    let queue = service(&dir.path().join("queue"), dir.path()).await;
    queue.add_schedule(&job("  overlap: queue\n"), "job.yaml", at("2026-09-15T00:00:00Z")).await.expect("added");
    queue.fire_schedules(at("2026-09-30T00:00:10Z")).await.expect("september");
    queue.fire_schedules(at("2026-10-31T01:00:10Z")).await.expect("october");
    let states: Vec<_> = occurrence_states(&queue).await.into_iter().map(|s| s.1).collect();
    assert_eq!(states, [OccurrenceState::Started, OccurrenceState::Queued]);
    // September's run ends: October's starts on the next pass.
    let september = analytics(&queue).jobs().await.expect("jobs").remove(0).id;
    queue.manager().cancel(&september).await.expect("cancel");
    queue.fire_schedules(at("2026-10-31T01:00:20Z")).await.expect("next pass");
    let states: Vec<_> = occurrence_states(&queue).await.into_iter().map(|s| s.1).collect();
    assert_eq!(states, [OccurrenceState::Started, OccurrenceState::Started]);
    let jobs = analytics(&queue).jobs().await.expect("jobs");
    let october: JobSpec = serde_json::from_str(&jobs[0].spec).expect("spec");
    assert_eq!(october.input, InputSpec::Local(dir.path().join("2026-10.csv")), "the queued run reads its own month");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_pause_trigger_and_delete() {
    let dir = tempfile::tempdir().expect("temp dir");
    inputs(dir.path());
    let service = service(&dir.path().join("state"), dir.path()).await;
    service
        .add_schedule(&job("  overlap: cancel_previous\n"), "job.yaml", at("2026-09-15T00:00:00Z"))
        .await
        .expect("added");
    service.fire_schedules(at("2026-09-30T00:00:10Z")).await.expect("september");
    service.fire_schedules(at("2026-10-31T01:00:10Z")).await.expect("october");
    let jobs = analytics(&service).jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 2);
    let september = jobs.iter().find(|j| j.spec.contains("2026-09")).expect("september's job");
    let state = analytics(&service).job(&september.id).await.expect("job").expect("present").state;
    assert_eq!(state.as_str(), "cancelled", "the previous run was cancelled");

    // Paused over November's month-end, resumed after it: November is not caught up.
    service.pause_schedule("month-end", true, at("2026-11-15T00:00:00Z")).await.expect("pause");
    assert_eq!(service.fire_schedules(at("2026-11-30T01:00:10Z")).await.expect("paused"), 0);
    service.pause_schedule("month-end", false, at("2026-11-30T06:00:00Z")).await.expect("resume");
    assert_eq!(service.fire_schedules(at("2026-11-30T06:00:10Z")).await.expect("resumed"), 0);
    let status = service.schedule("month-end", at("2026-11-30T06:00:10Z")).await.expect("show");
    assert_eq!(status.next[0], "2026-12-31T02:00:00+01:00");

    // A trigger fires now, with now's variables.
    let occurrence = service.trigger_schedule("month-end", at("2026-11-30T12:00:00Z")).await.expect("trigger");
    assert!(occurrence.manual);
    assert_eq!(occurrence.state, OccurrenceState::Started);

    service.delete_schedule("month-end").await.expect("delete");
    assert!(service.schedules(at("2026-12-01T00:00:00Z")).await.expect("list").is_empty());
    assert!(service.delete_schedule("month-end").await.is_err(), "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_is_refused_as_a_one_off_and_a_job_without_schedule_cannot_be_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    inputs(dir.path());
    let service = service(&dir.path().join("state"), dir.path()).await;
    let error = service.submit(&job(""), "job.yaml", &Default::default()).await.expect_err("one-off refused");
    assert!(error.to_string().contains("schedule: this job runs on its schedule"), "{error}");
    let plain = "name: once\ninput:\n  path: 2026-11.csv\nstages:\n  - name: copy\n    command: [cat, \"{input}\"]\noutput:\n  path: out\n";
    let error = service.add_schedule(plain, "once.yaml", at("2026-11-01T00:00:00Z")).await.expect_err("no schedule");
    assert!(error.to_string().contains("once.yaml: schedule: the job has no `schedule:` block"), "{error}");
    service.add_schedule(&job(""), "job.yaml", at("2026-11-01T00:00:00Z")).await.expect("added");
    let error = service.add_schedule(&job(""), "job.yaml", at("2026-11-01T00:00:00Z")).await.expect_err("twice");
    assert!(error.to_string().contains("a schedule named `month-end` exists"), "{error}");
}
