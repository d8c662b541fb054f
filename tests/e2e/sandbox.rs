//! What a task and an API caller cannot reach: the API takes inputs only from the grid's raw
//! bucket; a task sees an allowlisted environment, leaves no process behind and keeps its
//! output out of the worker's log.

use std::time::Duration;

use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::InputPolicy;

const TOKEN: &str = "sandbox-test-token";
const RAW: &str = "grid-raw-bucket";

/// A manager's API on the embedded grid, admitting only `s3://grid-raw-bucket/...` inputs as a
/// manager on AWS does; its secrets file sits beside it, as `/etc/batchgrid/manager.env` would.
struct Api {
    client: ApiClient,
    grid: Grid,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 10 }).await.expect("grid");
        let manager = Manager::new(grid.clone(), spool_dir(&state));
        let policy = InputPolicy::RawBucket(RAW.to_owned());
        let service = JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), policy);
        std::fs::write(dir.path().join("manager.env"), "BATCHGRID_DATABASE_URL=postgres://secret\n").expect("env");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, service, Secret::new(TOKEN.to_owned()), async move {
            let _ = stopped.await;
        }));
        let client = ApiClient::new(&format!("http://{address}"), Secret::new(TOKEN.to_owned())).expect("client");
        Self { client, grid, dir, stop: Some(stop) }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn job(input: &str) -> String {
    format!("name: probe\ninput:\n  path: {input}\nstages:\n  - name: s\n    command: [cat, \"{{input}}\"]\noutput:\n  path: out\n")
}

/// `input.path` (or `?input=`) outside the raw bucket gets a 400 naming the field and line and
/// telling nothing of the manager's disk; nothing is recorded or enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_only_inputs_in_the_raw_bucket_and_leaks_nothing() {
    let api = Api::start().await;
    let secrets = api.dir.path().join("manager.env");
    let secrets = secrets.to_str().expect("utf-8 path");
    let refused_inputs = [
        "/etc/passwd",
        "/proc/self/environ",
        "../x",
        secrets,
        "/no/such/file",
        "file:///etc/passwd",
        "s3://another-bucket/data.csv",
        "s3://grid-raw-bucketx/data.csv",
        "s3://grid-raw-bucket/../other/x",
    ];
    let mut answers = Vec::new();
    for input in refused_inputs {
        let refused = api.client.submit(&job(input), "probe.yaml", None).await.expect_err(input);
        let batchgrid_core::service::client::ClientError::Refused { status, body } = &refused else {
            panic!("{input}: not a refusal: {refused}");
        };
        assert_eq!(status.as_u16(), 400, "{input}: {refused}");
        assert_eq!(body.field.as_deref(), Some("input.path"), "{input}: {refused}");
        assert_eq!(body.line, Some(3), "{input}: {refused}");
        assert!(body.error.contains(RAW), "{input}: names the bucket to use: {refused}");
        for leak in ["exist", "No such", "denied", "permission", "/etc", "/proc", "passwd", "environ", "manager.env"] {
            assert!(!body.error.contains(leak), "{input}: `{leak}` says something of the disk: {}", body.error);
        }
        // Existing and missing files, readable or not, are refused alike.
        answers.push(body.error.clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "every refusal reads the same: {answers:#?}");

    // The `?input=` query is held to the same rule.
    let good = job("s3://grid-raw-bucket/data.csv");
    for input in ["/etc/passwd", "/proc/self/environ", "../x", "s3://another-bucket/x"] {
        let refused = api.client.submit(&good, "probe.yaml", Some(input)).await.expect_err(input);
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(400), "{input}: {refused}");
        let message = refused.to_string();
        assert!(message.contains("field ?input="), "{input}: {message}");
        assert!(!message.contains("passwd") && !message.contains("environ"), "{input}: {message}");
    }

    assert!(api.client.jobs().await.expect("jobs").is_empty(), "no refused job was recorded");
    let depth = api.grid.tasks.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 0), "nothing was enqueued");

    // A command's program is not looked up on the manager's disk either: an existing and a
    // missing one are treated alike (a missing program fails the task on the worker).
    for program in ["/etc/shadow", "/no/such/program"] {
        let document = good.replace("[cat,", &format!("[{program},"));
        api.client.submit(&document, "probe.yaml", None).await.expect(program);
    }
}
