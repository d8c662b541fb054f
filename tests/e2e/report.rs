//! `batchgrid report` against a manager on the embedded grid: two runs of the claims job, then
//! `--compare previous` as text, as a self-contained HTML file with its three plots, and as
//! JSON, through the CLI binary.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::processor::sandbox::TaskSandbox;
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::secret::Secret;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{InputPolicy, Overrides};
use batchgrid_core::worker::{Worker, WorkerSettings};
use tokio::sync::oneshot;

use crate::claims::{claims_job_split, generate};
use crate::harness::{batchgrid, claims_bin};

/// The claims job over `rows` rows in `dir`, in chunks of 5,000, naming the binary by its path.
fn claims(dir: &Path, rows: u64) -> String {
    std::fs::create_dir_all(dir).expect("run directory");
    generate(dir, rows);
    let bin = claims_bin().display().to_string();
    claims_job_split(dir, "lines: 5000").replace("[batchgrid-claims,", &format!("[{bin},"))
}

async fn run(service: &Arc<JobService>, text: &str) -> String {
    let id = service.submit(text, "job.yaml", &Overrides::default()).await.expect("submit");
    let analytics = service.manager().grid().analytics.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = analytics.job(&id).await.expect("read").expect("job");
        if job.state.is_terminal() {
            return id;
        }
        assert!(Instant::now() < deadline, "job {id} did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `batchgrid report ARGS` against `base`; (success, stdout, stderr).
async fn report(base: &str, args: Vec<String>) -> (bool, String, String) {
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = batchgrid()
            .arg("report")
            .args(&args)
            .env("BATCHGRID_MANAGER_URL", &base)
            .env("BATCHGRID_API_TOKEN", "s3cret")
            .output()
            .expect("run batchgrid report");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("report command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_compare_previous_shows_the_changes_between_two_claims_runs() {
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

    let first = run(&service, &claims(&dir.path().join("march"), 10_000)).await;
    let (ok, _, stderr) = report(&base, vec![first.clone(), "--compare".into(), "previous".into()]).await;
    assert!(!ok && stderr.contains("--compare") && stderr.contains("claims"), "{stderr}");
    let second = run(&service, &claims(&dir.path().join("april"), 20_000)).await;

    let (ok, stdout, stderr) = report(&base, vec![second.clone(), "--compare".into(), "previous".into()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("job {second} (claims) completed")), "{stdout}");
    assert!(stdout.contains(&format!("compared with job {first}")), "{stdout}");
    // 2 + 1 tasks (validate, merge) the first time, 4 + 1 the second.
    let tasks = stdout.lines().find(|l| l.trim_start().starts_with("tasks done")).expect("tasks row");
    let cells: Vec<&str> = tasks.split_whitespace().collect();
    assert_eq!(cells[2..], ["3", "5", "+2", "+66.7%"], "{stdout}");
    for figure in ["duration", "throughput", "tasks failed", "cost"] {
        assert!(stdout.contains(figure), "{figure} in {stdout}");
    }

    let page = dir.path().join("report.html");
    let path = page.display().to_string();
    let (ok, _, stderr) =
        report(&base, vec![second.clone(), "--html".into(), path, "--compare".into(), "previous".into()]).await;
    assert!(ok, "{stderr}");
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.contains(&format!("Compared with <code>{first}</code>")), "{html}");
    assert!(html.contains("<td>tasks done</td><td>3</td><td>5</td><td>+2</td><td>+66.7%</td>"), "{html}");
    let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in ["http://", "https://", "src=", "href=", "<script", "<link", "url(", "@import"] {
        assert!(!outside.contains(needle), "{needle} in {html}");
    }
    // The three plots, each with data: throughput (every done task in a slot), the full
    // distribution (one count per done task: 4 + 1), the timeline (the one worker).
    assert!(attribute(&html, "data-chart=\"throughput\" data-slots") > 0, "{html}");
    assert!(attribute(&html, "data-done") >= 5, "{html}");
    assert!(html.contains("data-chart=\"task-time\""), "{html}");
    assert_eq!(attribute(&html, "data-tasks"), 5, "{html}");
    assert_eq!(attribute(&html, "data-chart=\"workers\" data-workers"), 1, "{html}");
    assert!(html.contains(">w-report</text>"), "the worker's row: {html}");
    assert!(html.contains("class=\"busy\""), "its busy slots are shaded: {html}");
    assert!(html.contains("class=\"line before\""), "the first run's throughput overlaid: {html}");
    assert!(!html.contains("Nothing recorded"), "{html}");

    let (ok, stdout, stderr) =
        report(&base, vec![second.clone(), "--json".into(), "--compare".into(), "previous".into()]).await;
    assert!(ok, "{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(value["report"]["job_id"], second.as_str(), "{value}");
    assert_eq!(value["compared_with"]["job_id"], first.as_str(), "{value}");
    assert_eq!(value["comparison"]["before_id"], first.as_str(), "{value}");
    let figures = value["comparison"]["figures"].as_array().expect("figures");
    let tasks = figures.iter().find(|f| f["label"] == "tasks done").expect("tasks done");
    assert_eq!((tasks["before"].as_f64(), tasks["after"].as_f64()), (Some(3.0), Some(5.0)), "{value}");
    assert_eq!(tasks["change"].as_f64(), Some(2.0), "{value}");
    assert!(tasks["percent"].as_f64().is_some_and(|p| (p - 66.666).abs() < 0.01), "{value}");
    for label in ["duration", "throughput", "tasks failed", "failed attempts", "cost"] {
        assert!(figures.iter().any(|f| f["label"] == label), "{label} in {value}");
    }
    let done: u64 = value["report"]["throughput"]["done"]
        .as_array()
        .expect("throughput")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(done >= 5, "{value}");
    assert_eq!(value["report"]["worker_timeline"]["workers"][0]["worker_id"], "w-report", "{value}");
    assert!(!value["report"]["task_time_histogram"].as_array().expect("histogram").is_empty(), "{value}");
}

/// The number in `prefix="N"` in `page` (0 when absent).
fn attribute(page: &str, prefix: &str) -> u64 {
    page.split(&format!("{prefix}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
