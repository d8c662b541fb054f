//! The worker on an instance: its metadata served from loopback, the Auto Scaling calls
//! scripted (the emulator has no CompleteLifecycleAction or RecordLifecycleActionHeartbeat).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::operation::complete_lifecycle_action::CompleteLifecycleActionOutput;
use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;
use aws_sdk_autoscaling::operation::set_instance_protection::SetInstanceProtectionOutput;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::instance::{InstanceAgent, InstanceMetadata, InstanceSettings, Interruption};
use batchgrid_core::manager::Manager;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::spec::{parse_job, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use batchgrid_testkit::MetadataServer;

/// A grid holding a job of `tasks` tasks that each take `seconds`.
async fn grid_with_job(dir: &std::path::Path, tasks: usize, seconds: f32) -> Grid {
    let grid = Grid::open_embedded(&dir.join("state"), &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let input = dir.join("input.txt");
    std::fs::write(&input, (0..tasks).map(|i| format!("line-{i}\n")).collect::<String>()).expect("input");
    let yaml = format!(
        "name: slow\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, 'sleep {seconds}; cp \"$0\" \"$1/\"', \"{{input}}\", \"{{output}}\"]\noutput:\n  path: out\n",
        input.display()
    );
    let spec = parse_job(&yaml, "slow.yaml", dir, &Overrides::default()).expect("job");
    let manager = Manager::new(grid.clone(), dir.join("spool"));
    let id = manager.submit(&spec).await.expect("submit");
    manager.split(&id, &spec, |_| {}).await.expect("split");
    grid
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Terminating (the lifecycle hook's wait state in the metadata): the worker stops receiving,
/// finishes what it runs while sending lifecycle heartbeats, and only then completes the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_instance_drains_then_completes_its_lifecycle_action() {
    let dir = tempfile::tempdir().expect("temp dir");
    let grid = grid_with_job(dir.path(), 6, 1.5).await;
    let imds = MetadataServer::start("i-0123456789abcdef0");
    let mut settings = WorkerSettings::new("w-terminating", dir.path().join("scratch"));
    settings.concurrency = 2;
    settings.prefetch = Some(0);
    let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());

    let drained = worker.clone();
    let complete = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .match_requests(move |r| {
            // Only a drained worker may let its instance go.
            drained.held_count() == 0
                && r.auto_scaling_group_name() == Some("grid")
                && r.lifecycle_hook_name() == Some("drain")
                && r.instance_id() == Some("i-0123456789abcdef0")
                && r.lifecycle_action_result() == Some("CONTINUE")
        })
        .then_output(|| CompleteLifecycleActionOutput::builder().build());
    let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
        .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
    let protect = mock!(aws_sdk_autoscaling::Client::set_instance_protection)
        .then_output(|| SetInstanceProtectionOutput::builder().build());
    let client = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&complete, &heartbeat, &protect]);

    let settings = InstanceSettings {
        group: Some("grid".into()),
        lifecycle_hook: Some("drain".into()),
        poll: Duration::from_millis(100),
        lifecycle_heartbeat: Duration::from_millis(200),
        protection_interval: Duration::ZERO,
        ..InstanceSettings::default()
    };
    let metadata = InstanceMetadata::new(&imds.endpoint()).expect("metadata client");
    let agent = Arc::new(InstanceAgent::start(metadata, client, settings).await.expect("agent"));
    let run = tokio::spawn(agent.run_worker(worker.clone(), std::future::pending()));

    wait_until("the worker is busy", || worker.held_count() > 0).await;
    wait_until("protection is set", || protect.num_calls() >= 1).await;
    imds.set("autoscaling/target-lifecycle-state", "Terminated");
    let (reason, stats) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("join")
        .expect("worker");
    assert_eq!(reason, Interruption::Terminating);
    assert_eq!(complete.num_calls(), 1, "the lifecycle action is completed once, after the drain");
    assert!(heartbeat.num_calls() >= 1, "lifecycle heartbeats are sent while draining");
    assert_eq!(stats.released, 0, "running tasks were finished, not abandoned: {stats:?}");
    assert!(stats.succeeded >= 1 && stats.succeeded < 6, "it stopped taking tasks: {stats:?}");
}

/// A spot notice: the worker stops what runs shortly before the interruption and releases it,
/// so another worker can start it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_releases_running_tasks_within_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let grid = grid_with_job(dir.path(), 4, 60.0).await;
    let imds = MetadataServer::start("i-0fedcba9876543210");
    let mut settings = WorkerSettings::new("w-spot", dir.path().join("scratch"));
    settings.concurrency = 2;
    let worker = Worker::new(settings, grid.clone(), ProcessorRegistry::with_builtins());
    let protect = mock!(aws_sdk_autoscaling::Client::set_instance_protection)
        .then_output(|| SetInstanceProtectionOutput::builder().build());
    let client = mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&protect]);
    let settings = InstanceSettings {
        group: Some("grid".into()),
        poll: Duration::from_millis(100),
        spot_margin: Duration::from_secs(118),
        ..InstanceSettings::default()
    };
    let metadata = InstanceMetadata::new(&imds.endpoint()).expect("metadata client");
    let agent = Arc::new(InstanceAgent::start(metadata, client, settings).await.expect("agent"));
    let run = tokio::spawn(agent.run_worker(worker.clone(), std::future::pending()));
    wait_until("the worker runs two hour-long tasks", || worker.held_count() >= 2).await;

    let at = std::time::SystemTime::now() + Duration::from_secs(120);
    let notice = format!(r#"{{"action": "terminate", "time": "{}"}}"#, humantime::format_rfc3339_seconds(at));
    let noticed = Instant::now();
    imds.set("spot/instance-action", &notice);
    let (reason, stats) = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the worker stops within seconds")
        .expect("join")
        .expect("worker");
    assert!(matches!(reason, Interruption::Spot(_)), "{reason:?}");
    assert!(noticed.elapsed() < Duration::from_secs(10), "released within seconds: {:?}", noticed.elapsed());
    assert!(stats.released >= 2, "the running tasks were released: {stats:?}");
    let depth = grid.tasks.depth().await.expect("depth");
    assert_eq!(depth.visible, 4, "every task is ready for another worker at once: {depth:?}");
}
