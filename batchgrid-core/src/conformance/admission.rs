//! The [`AdmissionStore`](crate::analytics::AdmissionStore) contract: pending tasks, their
//! counters, and each job's priority and pause flag with its history.

use crate::analytics::{
    actor, AnalyticsStore, AttemptOutcome, AttemptRecord, JobRecord, JobState, PendingTask, StageRecord,
};
use crate::spec::StageKind;

/// Runs every admission check against a store without jobs named `adm-*`.
pub async fn run_all(store: &dyn AnalyticsStore) {
    pending_tasks_are_added_once_and_taken_in_order(store).await;
    admitted_tasks_are_counted_once(store).await;
    given_back_and_lost_tasks_are_pending_again(store).await;
    pause_and_priority_are_recorded_in_history(store).await;
    ended_jobs_are_not_changed_and_forget_their_tasks(store).await;
}

async fn job(store: &dyn AnalyticsStore, id: &str, priority: u8) {
    let record = JobRecord {
        id: id.into(),
        name: id.into(),
        state: JobState::Submitted,
        spec: "{}".into(),
        submitted_at: 1_000,
        started_at: None,
        finished_at: None,
        error: None,
    };
    let stages = [
        StageRecord { stage: 0, name: "map".into(), kind: StageKind::Map },
        StageRecord { stage: 1, name: "more".into(), kind: StageKind::Map },
    ];
    store.create_job(&record, &stages).await.expect("create job");
    store.init_admission(id, priority).await.expect("init admission");
}

fn task(stage: u32, seq: u64) -> PendingTask {
    PendingTask { stage, task_id: format!("{seq:06}"), seq, body: format!("body-{stage}-{seq}") }
}

async fn figures(store: &dyn AnalyticsStore, id: &str) -> (u64, u64, u64) {
    let admission = store.admission(id).await.expect("admission").expect("known job");
    (admission.pending, admission.admitted, admission.settled)
}

async fn pending_tasks_are_added_once_and_taken_in_order(store: &dyn AnalyticsStore) {
    job(store, "adm-order", 70).await;
    let tasks: Vec<PendingTask> = (0..5).rev().map(|seq| task(0, seq)).collect();
    assert_eq!(store.add_pending("adm-order", &tasks).await.expect("add"), 5);
    assert_eq!(store.add_pending("adm-order", &tasks[..2]).await.expect("add again"), 0, "a known task is not added");
    store.add_pending("adm-order", &[task(1, 9)]).await.expect("a later stage's");
    let next = store.next_pending("adm-order", 3).await.expect("next");
    let keys: Vec<(u32, u64)> = next.iter().map(|t| (t.stage, t.seq)).collect();
    assert_eq!(keys, [(1, 9), (0, 0), (0, 1)], "later stages first, then by seq");
    assert_eq!(next[1].body, "body-0-0", "the body comes back as given");
    assert_eq!(store.next_pending("adm-order", 3).await.expect("again"), next, "next_pending changes nothing");
    assert_eq!(figures(store, "adm-order").await, (6, 0, 0));
    let listed = store.admissions().await.expect("admissions");
    let mine = listed.iter().find(|a| a.job_id == "adm-order").expect("a live job is listed");
    assert_eq!((mine.priority, mine.paused), (70, false));
}

async fn admitted_tasks_are_counted_once(store: &dyn AnalyticsStore) {
    job(store, "adm-count", 50).await;
    store.add_pending("adm-count", &(0..4).map(|seq| task(0, seq)).collect::<Vec<_>>()).await.expect("add");
    store.add_pending("adm-count", &[task(1, 7)]).await.expect("add later");
    let keys = vec![(0, "000000".to_owned()), (0, "000001".to_owned()), (1, "000007".to_owned())];
    assert_eq!(store.mark_admitted("adm-count", &keys).await.expect("mark"), 3);
    assert_eq!(store.mark_admitted("adm-count", &keys).await.expect("mark again"), 0, "each is counted once");
    assert_eq!(figures(store, "adm-count").await, (2, 2, 0), "first-stage admitted counted, later stages not");
    assert_eq!(store.add_pending("adm-count", &[task(0, 0)]).await.expect("re-split"), 0, "an admitted task stays");
    let next: Vec<u64> = store.next_pending("adm-count", 10).await.expect("next").iter().map(|t| t.seq).collect();
    assert_eq!(next, [2, 3]);
}

async fn given_back_and_lost_tasks_are_pending_again(store: &dyn AnalyticsStore) {
    job(store, "adm-back", 50).await;
    store.add_pending("adm-back", &(0..3).map(|seq| task(0, seq)).collect::<Vec<_>>()).await.expect("add");
    let all: Vec<(u32, String)> = (0..3).map(|seq| (0, format!("{seq:06}"))).collect();
    store.mark_admitted("adm-back", &all).await.expect("mark");
    // A worker gives task 0 back (its job was paused), twice: counted once.
    store.return_pending("adm-back", &task(0, 0)).await.expect("give back");
    store.return_pending("adm-back", &task(0, 0)).await.expect("give back again");
    // A later-stage task it never saw pending.
    store.return_pending("adm-back", &task(1, 5)).await.expect("give back a later one");
    assert_eq!(figures(store, "adm-back").await, (2, 2, 0));
    // Task 1 is done; task 2 was lost from the queue: only task 2 comes back.
    let done = AttemptRecord {
        job_id: "adm-back".into(),
        stage: 0,
        task_id: "000001".into(),
        attempt: 1,
        worker_id: "w".into(),
        started_at: 1,
        ended_at: 2,
        outcome: AttemptOutcome::Succeeded,
        exit_status: Some(0),
        bytes_in: 0,
        bytes_out: 0,
        error: None,
    };
    store.record_attempts(&[done]).await.expect("record");
    assert_eq!(figures(store, "adm-back").await, (2, 2, 1), "settled is the first stage's done + failed");
    assert_eq!(store.requeue_unsettled("adm-back").await.expect("requeue"), 1);
    let next: Vec<(u32, u64)> =
        store.next_pending("adm-back", 10).await.expect("next").iter().map(|t| (t.stage, t.seq)).collect();
    assert_eq!(next, [(1, 5), (0, 0), (0, 2)]);
    assert_eq!(figures(store, "adm-back").await, (3, 1, 1));
}

async fn pause_and_priority_are_recorded_in_history(store: &dyn AnalyticsStore) {
    job(store, "adm-ctl", 50).await;
    assert!(store.set_paused("adm-ctl", true, actor::OPERATOR).await.expect("pause"));
    assert!(!store.set_paused("adm-ctl", true, actor::OPERATOR).await.expect("pause again"), "already paused");
    assert!(store.admission("adm-ctl").await.expect("read").expect("known").paused);
    assert!(store.set_paused("adm-ctl", false, actor::OPERATOR).await.expect("resume"));
    assert!(store.set_priority("adm-ctl", 90, actor::OPERATOR).await.expect("priority"));
    assert!(!store.set_priority("adm-ctl", 90, actor::OPERATOR).await.expect("same priority"));
    assert_eq!(store.admission("adm-ctl").await.expect("read").expect("known").priority, 90);
    let history = store.history("adm-ctl").await.expect("history");
    let actions: Vec<(Option<JobState>, JobState, String, String)> =
        history[1..].iter().map(|e| (e.from, e.to, e.reason.clone().unwrap_or_default(), e.actor.clone())).collect();
    let submitted = JobState::Submitted;
    assert_eq!(
        actions,
        [
            (Some(submitted), submitted, "paused: no new task starts until resumed".into(), "operator".into()),
            (Some(submitted), submitted, "resumed".into(), "operator".into()),
            (Some(submitted), submitted, "priority 50 -> 90".into(), "operator".into()),
        ],
        "each action once, the state unchanged"
    );
    assert!(matches!(
        store.set_paused("adm-none", true, actor::OPERATOR).await,
        Err(crate::analytics::AnalyticsError::JobNotFound(_))
    ));
}

async fn ended_jobs_are_not_changed_and_forget_their_tasks(store: &dyn AnalyticsStore) {
    job(store, "adm-end", 50).await;
    store.add_pending("adm-end", &[task(0, 0), task(0, 1)]).await.expect("add");
    assert!(store.transition("adm-end", JobState::Cancelled, Some("test"), actor::OPERATOR).await.expect("cancel"));
    assert!(!store.set_paused("adm-end", true, actor::OPERATOR).await.expect("pause an ended job"));
    assert!(!store.set_priority("adm-end", 1, actor::OPERATOR).await.expect("reprioritise an ended job"));
    assert_eq!(store.history("adm-end").await.expect("history").len(), 2, "nothing recorded for an ended job");
    assert!(store.admissions().await.expect("admissions").iter().all(|a| a.job_id != "adm-end"), "only live jobs");
    store.clear_pending("adm-end").await.expect("clear");
    assert!(store.next_pending("adm-end", 10).await.expect("next").is_empty());
    assert_eq!(figures(store, "adm-end").await, (0, 0, 0));
}
