use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
}

const MINUTE: Duration = Duration::from_secs(60);

fn idle() -> Outlook {
    Outlook { jobs: 0, group: GroupView::Desired(0), next_due: NextDue::Never }
}

#[test]
fn nothing_to_do_is_quiet_until_woken() {
    let now = at("2026-12-01T08:00:00Z");
    assert_eq!(verdict(&idle(), now, MINUTE), Verdict::Quiet { until: None });
    let unwatched = Outlook { group: GroupView::Unwatched, ..idle() };
    assert_eq!(verdict(&unwatched, now, MINUTE), Verdict::Quiet { until: None }, "no group watched");
}

#[test]
fn a_driven_job_or_a_wanted_worker_keeps_it_busy() {
    let now = at("2026-12-01T08:00:00Z");
    let job = Outlook { jobs: 2, ..idle() };
    assert_eq!(verdict(&job, now, MINUTE), Verdict::Busy(Busy::Jobs(2)));
    let workers = Outlook { group: GroupView::Desired(3), ..idle() };
    assert_eq!(verdict(&workers, now, MINUTE), Verdict::Busy(Busy::Workers(3)));
    let job_and_workers = Outlook { jobs: 1, group: GroupView::Desired(3), ..idle() };
    assert!(!verdict(&job_and_workers, now, MINUTE).is_quiet());
}

#[test]
fn what_is_not_known_keeps_it_busy() {
    let now = at("2026-12-01T08:00:00Z");
    let group = Outlook { group: GroupView::Unknown, ..idle() };
    assert_eq!(verdict(&group, now, MINUTE), Verdict::Busy(Busy::GroupUnknown));
    let schedules = Outlook { next_due: NextDue::Unknown, ..idle() };
    assert_eq!(verdict(&schedules, now, MINUTE), Verdict::Busy(Busy::SchedulesUnknown));
}

#[test]
fn quiet_ends_a_horizon_before_the_next_due_time() {
    let now = at("2026-12-01T08:00:00Z");
    let due = |text: &str| Outlook { next_due: NextDue::At(at(text)), ..idle() };
    assert_eq!(
        verdict(&due("2026-12-01T08:10:00Z"), now, MINUTE),
        Verdict::Quiet { until: Some(at("2026-12-01T08:09:00Z")) }
    );
    // Within the horizon, at its edge, and past (a fire time not yet fired): busy.
    for text in ["2026-12-01T08:00:30Z", "2026-12-01T08:01:00Z", "2026-12-01T07:59:00Z"] {
        assert_eq!(verdict(&due(text), now, MINUTE), Verdict::Busy(Busy::Due(at(text))), "{text}");
    }
    // Just past the edge: quiet for a second.
    assert_eq!(
        verdict(&due("2026-12-01T08:01:01Z"), now, MINUTE),
        Verdict::Quiet { until: Some(at("2026-12-01T08:00:01Z")) }
    );
    // A horizon too large for the calendar is busy, not a panic.
    assert!(!verdict(&due("2026-12-01T08:10:00Z"), now, Duration::MAX).is_quiet());
}

#[tokio::test]
async fn a_job_keeps_the_activity_busy_while_its_guard_lives() {
    let activity = Activity::new(QuietSettings { horizon: MINUTE });
    activity.set_next_due(NextDue::Never);
    assert!(activity.verdict(wall_clock()).is_quiet());
    let guard = activity.job_started();
    assert_eq!(activity.verdict(wall_clock()), Verdict::Busy(Busy::Jobs(1)));
    drop(guard);
    assert!(activity.verdict(wall_clock()).is_quiet());
    activity.watch_group();
    assert_eq!(activity.verdict(wall_clock()), Verdict::Busy(Busy::GroupUnknown));
    activity.observe_group(Some(0));
    assert!(activity.verdict(wall_clock()).is_quiet());
    activity.observe_group(None);
    assert!(!activity.verdict(wall_clock()).is_quiet(), "a failed read is not a reason to rest");
}

#[tokio::test]
async fn a_quiet_loop_rests_until_woken_and_a_busy_one_keeps_its_pace() {
    // Real time, in short steps with wide margins (the crate's tokio has no paused clock).
    let every = Duration::from_millis(50);
    let activity = Activity::new(QuietSettings { horizon: MINUTE });
    let mut cadence = activity.cadence();
    // Schedules unknown: busy, one interval.
    let started = tokio::time::Instant::now();
    cadence.pace(every).await;
    assert!(started.elapsed() < Duration::from_millis(400), "a busy loop keeps its pace");
    // Reading the schedules wakes the loops once; the pass after it comes at its interval.
    activity.set_next_due(NextDue::Never);
    let started = tokio::time::Instant::now();
    cadence.pace(every).await;
    assert!(started.elapsed() < Duration::from_millis(400), "the wake is served by one pass");
    // Quiet, nothing wakes it: it rests.
    let rest = tokio::time::timeout(Duration::from_millis(600), cadence.pace(every)).await;
    assert!(rest.is_err(), "a quiet loop made a pass");
    // A wake ends the rest at once.
    let waker = activity.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        waker.wake();
    });
    let started = tokio::time::Instant::now();
    cadence.pace(every).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(900), "{waited:?}");
    // Quiet until a due time: it rests until the horizon before it, then passes.
    let soon = Activity::new(QuietSettings { horizon: Duration::from_secs(1) });
    let mut cadence_soon = soon.cadence();
    soon.set_next_due(NextDue::At(wall_clock() + chrono::Duration::milliseconds(1600)));
    cadence_soon.pace(every).await; // the wake of the read
    let started = tokio::time::Instant::now();
    cadence_soon.pace(every).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(1000), "{waited:?}");
    // The autoscaler's step says whether it may only glance.
    assert_eq!(cadence.step(every).await, Step::Quiet);
    let _job = activity.job_started();
    assert_eq!(cadence.step(every).await, Step::Pass, "woken by the job");
    assert_eq!(cadence.step(every).await, Step::Pass, "busy with it");
}
