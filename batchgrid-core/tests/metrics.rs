//! `GET /metrics` over HTTP on the embedded grid: refused without the token; with it, a body that
//! the Prometheus project's own parser (`prometheus_client`'s OpenMetrics parser, installed by
//! `make tools`) reads, holding every series with the values the store and the queues hold.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use batchgrid_core::analytics::{
    AttemptOutcome, AttemptRecord, JobRecord, JobState, RequestCount, StageRecord, WorkerRecord,
};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{InputPolicy, StageKind};

const TOKEN: &str = "metrics-test-token";

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of an OpenMetrics body, as the Prometheus client library's parser reads them; it
/// refuses a body that breaks the format (a missing `# EOF`, a counter without `_total`, ...).
fn parse(body: &str) -> Vec<Sample> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.append([sample.name, sample.labels, sample.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); make tools installs prometheus-client"));
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("parser");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the body (install it with `python3 -m pip install prometheus-client`, as \
         make tools does): {}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON samples")
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, value)| *value)
}

fn attempt(task: &str, millis: i64, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        job_id: "claims-1".into(),
        stage: 0,
        task_id: task.into(),
        attempt: 1,
        worker_id: "w1".into(),
        started_at: 1_000,
        ended_at: 1_000 + millis,
        outcome,
        exit_status: Some(0),
        bytes_in: 0,
        bytes_out: 0,
        error: None,
    }
}

/// A grid with one running job (3 tasks: two done in 0.2 s and 45 s, one failed), messages in
/// both queues, a worker and some AWS requests.
async fn seeded(state: &std::path::Path) -> Grid {
    let grid = Grid::open_embedded(state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let job = JobRecord {
        id: "claims-1".into(),
        name: "claims".into(),
        state: JobState::Running,
        spec: "{}".into(),
        submitted_at: 1,
        started_at: None,
        finished_at: None,
        error: None,
    };
    let stages = [StageRecord { stage: 0, name: "validate".into(), kind: StageKind::Map }];
    grid.analytics.create_job(&job, &stages).await.expect("job");
    grid.analytics.set_stage_expected("claims-1", 0, 5).await.expect("expected");
    grid.analytics
        .record_attempts(&[
            attempt("t1", 200, AttemptOutcome::Succeeded),
            attempt("t2", 45_000, AttemptOutcome::Succeeded),
            attempt("t3", 10, AttemptOutcome::Failed),
        ])
        .await
        .expect("attempts");
    grid.tasks.send_batch(&["a".to_owned(), "b".to_owned()]).await.expect("send");
    grid.chain.send_batch(&["c".to_owned()]).await.expect("send");
    grid.analytics
        .upsert_worker(&WorkerRecord {
            id: "w1".into(),
            host: "h".into(),
            pid: 1,
            started_at: 1,
            last_seen: 2,
            state: "running".into(),
            tasks_done: 2,
            tasks_failed: 1,
            current_tasks: 2,
            running: Vec::new(),
        })
        .await
        .expect("worker");
    let requests = [
        RequestCount { service: "SQS".into(), operation: "SendMessageBatch".into(), count: 2_000_000 },
        RequestCount { service: "S3".into(), operation: "PutObject".into(), count: 1000 },
    ];
    grid.analytics.record_requests("w1", &requests).await.expect("requests");
    grid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_without_the_token_and_parse_with_every_series_with_it() {
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let grid = seeded(&state).await;
    let manager = Manager::new(grid, spool_dir(&state));
    let service = JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), InputPolicy::Operator);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("address"));
    tokio::spawn(api::serve(listener, service, Secret::new(TOKEN.to_owned()), std::future::pending()));

    let http = batchgrid_core::aws::https::builder().expect("TLS").build().expect("HTTP client");
    let anonymous = http.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status(), 401, "no token, no metrics");
    let wrong = http.get(&url).bearer_auth("guess").send().await.expect("request");
    assert_eq!(wrong.status(), 401);

    let response = http.get(&url).bearer_auth(TOKEN).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let body = response.text().await.expect("body");
    let samples = parse(&body);

    assert_eq!(value(&samples, "batchgrid_jobs", &[("state", "running")]), Some(1.0), "{body}");
    let task =
        |state| value(&samples, "batchgrid_tasks", &[("job", "claims-1"), ("stage", "validate"), ("state", state)]);
    assert_eq!((task("done"), task("failed"), task("waiting")), (Some(2.0), Some(1.0), Some(2.0)), "{body}");
    // The histogram: 0.2 s in the 0.25 bucket, 45 s in the 60 bucket; cumulative, with +Inf.
    let bucket = |le| value(&samples, "batchgrid_task_duration_seconds_bucket", &[("job", "claims-1"), ("le", le)]);
    assert_eq!(
        (bucket("0.1"), bucket("0.25"), bucket("30.0"), bucket("60.0")),
        (Some(0.0), Some(1.0), Some(1.0), Some(2.0))
    );
    assert_eq!(bucket("+Inf"), Some(2.0));
    assert_eq!(value(&samples, "batchgrid_task_duration_seconds_count", &[("job", "claims-1")]), Some(2.0));
    let sum = value(&samples, "batchgrid_task_duration_seconds_sum", &[("job", "claims-1")]).expect("sum");
    assert!((sum - 45.2).abs() < 1e-9, "{sum}");
    let queue = |queue, state| value(&samples, "batchgrid_queue_messages", &[("queue", queue), ("state", state)]);
    assert_eq!(
        (queue("input", "visible"), queue("output", "visible"), queue("input", "dead")),
        (Some(2.0), Some(1.0), Some(0.0))
    );
    assert_eq!(value(&samples, "batchgrid_workers", &[("state", "running")]), Some(1.0));
    let sent =
        value(&samples, "batchgrid_aws_requests_total", &[("service", "SQS"), ("operation", "SendMessageBatch")]);
    assert_eq!(sent, Some(2_000_000.0));
    // 2,000,000 SQS requests at $0.40 a million; 1,000 PUTs at $0.005 a thousand.
    let cost = |service| value(&samples, "batchgrid_aws_request_cost_dollars", &[("service", service)]).expect("cost");
    assert!((cost("SQS") - 0.8).abs() < 1e-9 && (cost("S3") - 0.005).abs() < 1e-9, "{body}");
    assert!(body.contains("# TYPE batchgrid_manager_errors counter"), "declared even before any error: {body}");
}
