//! The [`ScheduleStore`] contract, run by the analytics suite on every backend.

use crate::analytics::{AnalyticsStore, OccurrenceRecord, OccurrenceState, ScheduleRecord};

/// Runs every schedule check against an empty store.
pub async fn run_all(store: &dyn AnalyticsStore) {
    schedules_are_kept_by_name(store).await;
    two_managers_fire_an_occurrence_exactly_once(store).await;
    watermarks_never_move_back(store).await;
    pause_resume_and_delete(store).await;
}

fn schedule(name: &str) -> ScheduleRecord {
    ScheduleRecord {
        name: name.to_owned(),
        spec: "{}".into(),
        paused: false,
        watermark: 1_000,
        created_at: 1_000,
        updated_at: 1_000,
    }
}

fn occurrence(schedule: &str, fire_time: i64) -> OccurrenceRecord {
    OccurrenceRecord {
        schedule: schedule.to_owned(),
        fire_time,
        state: OccurrenceState::Claimed,
        job_id: None,
        manual: false,
        reason: None,
        created_at: fire_time,
    }
}

async fn schedules_are_kept_by_name(store: &dyn AnalyticsStore) {
    assert!(store.create_schedule(&schedule("month-end")).await.expect("create"), "a new name is added");
    let mut other = schedule("month-end");
    other.spec = "{\"changed\":true}".into();
    assert!(!store.create_schedule(&other).await.expect("create again"), "a taken name is refused");
    let stored = store.schedule("month-end").await.expect("read").expect("present");
    assert_eq!(stored, schedule("month-end"), "the refused insert changed nothing");
    assert!(store.create_schedule(&schedule("nightly")).await.expect("create"));
    let names: Vec<String> = store.schedules().await.expect("list").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["month-end", "nightly"]);
    assert_eq!(store.schedule("none").await.expect("read"), None);
}

async fn two_managers_fire_an_occurrence_exactly_once(store: &dyn AnalyticsStore) {
    store.create_schedule(&schedule("race")).await.expect("create");
    // Two managers, then eight, claim the same occurrences at the same time: one wins each.
    for fire_time in [2_000, 3_000] {
        let claim = occurrence("race", fire_time);
        let (a, b) = futures::join!(store.claim_occurrence(&claim), store.claim_occurrence(&claim));
        let wins = [a.expect("claim a"), b.expect("claim b")];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "fire time {fire_time}: {wins:?}");
    }
    let claim = occurrence("race", 4_000);
    let claims = (0..8).map(|_| store.claim_occurrence(&claim));
    let wins: Vec<bool> = futures::future::join_all(claims).await.into_iter().map(|r| r.expect("claim")).collect();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    // A late claim, after the winner started the job, still loses and changes nothing.
    let (claimed, started) = (OccurrenceState::Claimed, OccurrenceState::Started);
    assert!(store.move_occurrence("race", 2_000, claimed, started, Some("job-1"), None).await.expect("move"));
    // A second move from `claimed` finds it started: refused, nothing changes.
    assert!(!store
        .move_occurrence("race", 2_000, claimed, OccurrenceState::Skipped, None, Some("x"))
        .await
        .expect("cas"));
    assert!(!store.claim_occurrence(&occurrence("race", 2_000)).await.expect("late claim"));
    let occurrences = store.occurrences("race", 10).await.expect("list");
    let times: Vec<i64> = occurrences.iter().map(|o| o.fire_time).collect();
    assert_eq!(times, [4_000, 3_000, 2_000], "one row each, newest first");
    let started = &occurrences[2];
    assert_eq!((started.state, started.job_id.as_deref()), (OccurrenceState::Started, Some("job-1")));
    assert_eq!(store.occurrences("race", 1).await.expect("limited").len(), 1);
}

async fn watermarks_never_move_back(store: &dyn AnalyticsStore) {
    store.create_schedule(&schedule("marks")).await.expect("create");
    store.advance_watermark("marks", 5_000).await.expect("advance");
    store.advance_watermark("marks", 4_000).await.expect("a stale manager");
    assert_eq!(store.schedule("marks").await.expect("read").expect("present").watermark, 5_000);
}

async fn pause_resume_and_delete(store: &dyn AnalyticsStore) {
    store.create_schedule(&schedule("paused")).await.expect("create");
    assert!(store.set_schedule_paused("paused", true, 2_000).await.expect("pause"));
    let paused = store.schedule("paused").await.expect("read").expect("present");
    assert!(paused.paused);
    assert_eq!((paused.watermark, paused.updated_at), (1_000, 2_000));
    // Resuming drops what passed while paused: the watermark moves to the resume time.
    assert!(store.set_schedule_paused("paused", false, 9_000).await.expect("resume"));
    let resumed = store.schedule("paused").await.expect("read").expect("present");
    assert!(!resumed.paused);
    assert_eq!(resumed.watermark, 9_000);
    assert!(!store.set_schedule_paused("none", true, 1).await.expect("no such schedule"));

    store.claim_occurrence(&occurrence("paused", 9_500)).await.expect("claim");
    assert!(store.delete_schedule("paused").await.expect("delete"));
    assert!(!store.delete_schedule("paused").await.expect("delete again"));
    assert_eq!(store.schedule("paused").await.expect("read"), None);
    assert!(store.occurrences("paused", 10).await.expect("list").is_empty(), "its occurrences went with it");
    // The name is free again, and its old occurrences do not block new ones.
    store.create_schedule(&schedule("paused")).await.expect("create again");
    assert!(store.claim_occurrence(&occurrence("paused", 9_500)).await.expect("claim again"));
}
