//! `batchgrid report --compare` against a manager on the embedded grid: two runs of one job
//! name (and one of another name between them), then the previous run is found through the
//! API's job list and the changes are shown, as text and as a self-contained HTML page.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::JobState;
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::sandbox::TaskSandbox;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::report::html;
use batchgrid_core::secret::Secret;
use batchgrid_core::service::api;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::compare::{reports, Against, CompareError};
use batchgrid_core::service::JobService;
use batchgrid_core::spec::{InputPolicy, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use tokio::sync::oneshot;

fn job(dir: &Path, name: &str, lines: usize) -> String {
    let input = dir.join(format!("{name}-{lines}.txt"));
    std::fs::write(&input, (0..lines).map(|i| format!("line-{i}\n")).collect::<String>()).expect("input");
    format!(
        "name: {name}\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, 'cp \"$0\" \"$1/\"', \"{{input}}\", \"{{output}}\"]\n\
         output:\n  path: out-{name}-{lines}\nretry:\n  max_attempts: 1\n  backoff: 100ms\n",
        input.display()
    )
}

async fn run(service: &Arc<JobService>, client: &ApiClient, text: &str) -> String {
    let id = service.submit(text, "job.yaml", &Overrides::default()).await.expect("submit");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.status(&id).await.expect("status");
        if status.state.is_terminal() {
            assert_eq!(status.state, JobState::Completed, "{status:?}");
            return id;
        }
        assert!(Instant::now() < deadline, "job {id} did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_previous_picks_the_earlier_run_of_the_same_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
    let service = JobService::new(
        Manager::new(grid, spool_dir(&state)),
        Duration::from_millis(50),
        dir.path().to_path_buf(),
        InputPolicy::Operator,
    );
    let mut settings = WorkerSettings::new("w-report", dir.path().join("scratch"));
    settings.concurrency = 2;
    settings.prefetch = Some(0);
    settings.sandbox = Arc::new(TaskSandbox::new(None, Vec::new()).expect("sandbox"));
    let worker = Worker::new(settings, service.manager().grid().clone(), ProcessorRegistry::with_builtins());
    let (_stop_worker, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move { worker.run(async move { drop(stopped.await) }).await.expect("worker") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (_stop_api, api_stopped) = oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, service.clone(), Secret::new("s3cret"), async move { drop(api_stopped.await) }));
    let client = ApiClient::new(&base, Secret::new("s3cret")).expect("client");

    let first = run(&service, &client, &job(dir.path(), "claims", 2)).await;
    let none = reports(&client, &first, Some(&Against::Previous)).await.expect_err("no earlier run");
    assert!(matches!(none, CompareError::NoPrevious { .. }), "{none:?}");
    assert!(none.to_string().contains("--compare"), "{none}");
    let other = run(&service, &client, &job(dir.path(), "invoices", 3)).await;
    let second = run(&service, &client, &job(dir.path(), "claims", 4)).await;

    let (report, compared) = reports(&client, &second, Some(&Against::Previous)).await.expect("reports");
    let (comparison, before) = compared.expect("a comparison");
    assert_eq!(report.job_id, second);
    assert_eq!(before.job_id, first, "the earlier claims run, not {other}");
    assert_eq!(comparison.before_id, first);
    let tasks = comparison.figures.iter().find(|f| f.label == "tasks done").expect("tasks figure");
    assert_eq!((tasks.before, tasks.after, tasks.change(), tasks.percent()), (2.0, 4.0, 2.0, Some(100.0)));
    let text = comparison.render_text();
    assert!(text.contains(&first) && text.contains("+100.0%"), "{text}");

    // A named job works too, and the page carries the same table.
    let (_, named) = reports(&client, &second, Some(&Against::Job(other.clone()))).await.expect("named");
    let (named, before) = named.expect("a comparison");
    assert_eq!(named.before_id, other);
    let page = html::render(&report, Some((&named, &before)));
    assert!(page.contains(&format!("Compared with <code>{other}</code>")), "{page}");
    let outside = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!outside.contains("http") && !outside.contains("<script") && !outside.contains("src="), "{page}");
}
