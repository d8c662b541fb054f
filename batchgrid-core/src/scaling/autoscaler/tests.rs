use std::sync::Mutex;

use super::*;
use crate::analytics::{JobRecord, StageRecord};
use crate::grid::{EmbeddedGridSettings, Grid};
use crate::scaling::GroupState;
use crate::spec::StageKind;

const START: GroupState = GroupState { min: 0, max: 4, desired: 0 };

/// A group that records what it was asked for, and can be made to fail.
#[derive(Default)]
struct FakeGroup {
    state: Mutex<Option<GroupState>>,
    calls: Mutex<Vec<u32>>,
    fail: Mutex<bool>,
}

#[async_trait::async_trait]
impl WorkerGroup for FakeGroup {
    async fn state(&self) -> Result<GroupState, GroupError> {
        if *self.fail.lock().expect("lock") {
            return Err(GroupError::Api { group: "fake".into(), message: "Throttling: Rate exceeded".into() });
        }
        Ok(self.state.lock().expect("lock").unwrap_or(START))
    }

    async fn set_desired(&self, desired: u32) -> Result<(), GroupError> {
        self.calls.lock().expect("lock").push(desired);
        let mut state = self.state.lock().expect("lock");
        let current = state.unwrap_or(START);
        *state = Some(GroupState { desired, ..current });
        Ok(())
    }
}

fn job(id: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        name: "scaling".into(),
        state: JobState::Submitted,
        spec: "{}".into(),
        submitted_at: 1,
        started_at: None,
        finished_at: None,
        error: None,
    }
}

fn one_map_stage() -> [StageRecord; 1] {
    [StageRecord { stage: 0, name: "map".into(), kind: StageKind::Map }]
}

async fn setup(dir: &std::path::Path, delay: Duration) -> (Grid, Arc<FakeGroup>, Autoscaler) {
    let grid = Grid::open_embedded(dir, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let group = Arc::new(FakeGroup::default());
    let settings = SizingSettings { scale_in_delay: delay, ..SizingSettings::default() };
    let queues = vec![grid.tasks.clone(), grid.chain.clone()];
    let scaler = Autoscaler::new(grid.analytics.clone(), queues, group.clone(), settings);
    (grid, group, scaler)
}

#[tokio::test]
async fn a_job_being_split_raises_a_group_at_zero_and_queued_tasks_raise_it_further() {
    let dir = tempfile::tempdir().expect("dir");
    let (grid, group, mut scaler) = setup(dir.path(), Duration::from_millis(300)).await;
    assert!(matches!(scaler.pass().await.expect("pass"), Decision::Hold { .. }), "no jobs: hold at zero");

    grid.analytics.create_job(&job("j1"), &one_map_stage()).await.expect("job");
    grid.analytics.transition("j1", JobState::Splitting, None, "test").await.expect("splitting");
    let decision = scaler.pass().await.expect("pass");
    assert!(matches!(decision, Decision::Set { desired: 1, .. }), "{decision:?}");
    assert_eq!(*group.calls.lock().expect("lock"), vec![1]);

    // Tasks queued while splitting push the estimate up: 200 tasks x 60 s assumed over
    // 2 slots x 900 s is 7 instances, capped at the group's max of 4.
    let bodies: Vec<String> = (0..10).map(|i| format!("task {i}")).collect();
    for _ in 0..20 {
        grid.tasks.send_batch(&bodies).await.expect("send");
    }
    scaler.pass().await.expect("pass");
    assert_eq!(group.calls.lock().expect("lock").last(), Some(&4));

    // A job that ended counts nothing, but messages a worker still holds do: the group holds.
    grid.analytics.transition("j1", JobState::Cancelled, None, "test").await.expect("ended");
    while !grid.tasks.receive(10, Duration::from_secs(60), Duration::ZERO).await.expect("receive").is_empty() {}
    assert!(matches!(scaler.pass().await.expect("pass"), Decision::Hold { .. }));
    assert_eq!(group.calls.lock().expect("lock").len(), 2, "no call while holding");
}

#[tokio::test]
async fn an_idle_group_goes_back_to_its_minimum_only_after_the_delay() {
    let dir = tempfile::tempdir().expect("dir");
    let (_grid, group, mut scaler) = setup(dir.path(), Duration::from_millis(300)).await;
    *group.state.lock().expect("lock") = Some(GroupState { min: 1, max: 4, desired: 3 });
    let started = Instant::now();
    loop {
        match scaler.pass().await.expect("pass") {
            Decision::Set { desired, .. } => {
                assert_eq!(desired, 1);
                assert!(started.elapsed() >= Duration::from_millis(300), "not before the delay");
                break;
            }
            Decision::Hold { .. } => {
                assert!(started.elapsed() < Duration::from_secs(10), "never scaled in");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(*group.calls.lock().expect("lock"), vec![1]);
}

#[tokio::test]
async fn a_failed_pass_is_an_error_and_the_next_pass_recovers() {
    let dir = tempfile::tempdir().expect("dir");
    let (grid, group, mut scaler) = setup(dir.path(), Duration::from_secs(600)).await;
    grid.analytics.create_job(&job("j2"), &one_map_stage()).await.expect("job");
    *group.fail.lock().expect("lock") = true;
    let error = scaler.pass().await.expect_err("the group is unreachable");
    assert!(error.to_string().contains("Throttling"), "{error}");
    *group.fail.lock().expect("lock") = false;
    assert!(matches!(scaler.pass().await.expect("pass"), Decision::Set { desired: 1, .. }));
}

/// A stored schedule firing every minute, warming up two minutes ahead: always in its window.
fn warm_schedule(name: &str, paused: bool) -> crate::analytics::ScheduleRecord {
    let job = "name: nightly\ninput:\n  path: s3://raw/in/\nstages:\n  - name: copy\n    command: [cat, '{input}']\n\
               output:\n  path: results\nschedule:\n  cron: '* * * * *'\n  tz: UTC\n  warm_up: 2m\n";
    let spec =
        crate::spec::parse_job(job, "nightly.yaml", std::path::Path::new("."), &Default::default()).expect("job file");
    crate::analytics::ScheduleRecord {
        name: name.into(),
        spec: serde_json::to_string(&spec).expect("json"),
        paused,
        watermark: 0,
        created_at: 0,
        updated_at: 0,
    }
}

#[tokio::test]
async fn a_schedule_in_its_warm_up_raises_an_idle_group_and_a_paused_one_does_not() {
    let dir = tempfile::tempdir().expect("dir");
    let (grid, group, mut scaler) = setup(dir.path(), Duration::from_millis(1)).await;
    grid.analytics.create_schedule(&warm_schedule("paused", true)).await.expect("schedule");
    let decision = scaler.pass().await.expect("pass");
    assert!(matches!(decision, Decision::Hold { .. }), "a paused schedule warms nothing up: {decision:?}");

    grid.analytics.create_schedule(&warm_schedule("nightly", false)).await.expect("schedule");
    match scaler.pass().await.expect("pass") {
        Decision::Set { desired: 1, reason } => assert!(reason.contains("nightly"), "{reason}"),
        other => panic!("the group warms up before any job exists: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let decision = scaler.pass().await.expect("pass");
    assert!(matches!(decision, Decision::Hold { .. }), "held through the warm-up, no scale-in: {decision:?}");
    assert_eq!(*group.calls.lock().expect("lock"), vec![1]);
}

#[tokio::test]
async fn a_job_waiting_for_its_upstream_asks_for_no_instance() {
    let dir = tempfile::tempdir().expect("dir");
    let (grid, group, mut scaler) = setup(dir.path(), Duration::from_millis(300)).await;
    let waiting = JobRecord { spec: r#"{"name":"load","after":["extract-01"]}"#.into(), ..job("load") };
    grid.analytics.create_job(&waiting, &one_map_stage()).await.expect("job");
    assert!(matches!(scaler.pass().await.expect("pass"), Decision::Hold { .. }), "nothing to run yet");
    assert!(group.calls.lock().expect("lock").is_empty());
    // Its upstream done, the manager starts splitting it: now it counts.
    grid.analytics.transition("load", JobState::Splitting, None, "test").await.expect("splitting");
    assert!(matches!(scaler.pass().await.expect("pass"), Decision::Set { desired: 1, .. }));
}
