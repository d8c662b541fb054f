//! Downloading a job's results, measured against the moto emulator in one run:
//!
//! 1. A plain parallel GET loop: the SDK's `GetObject` over the same keys, [`PARALLEL`] at a
//!    time, each body written to a file. It knows the keys already, so it lists nothing: the
//!    floor a downloader can reach.
//! 2. `batchgrid results ID --download DIR` as the client does it
//!    ([`download_results`](batchgrid_core::service::download::download_results)): the pages
//!    from the manager's API, then each file straight from S3 through its presigned URL, as many
//!    at a time. Requests per file are counted on both sides: the client's (pages and GETs) and
//!    the manager's S3 requests (one LIST per page and the report's GET); the target is at most
//!    1.01 per file plus the listing pages.
//! 3. The same through the manager (`--through-manager`): every body streamed by the manager.
//! 4. A second download into the first directory, which must fetch nothing.
//!
//! The job's [`FILES`] results are written straight into the results bucket under the job's
//! final stage, the job recorded as completed, so the manager serves them as that job's results
//! without running it. Run with `cargo bench -p batchgrid-core --bench results_download` (or
//! `make bench`); it needs `moto_server` (`make tools`). `BENCH_RESULT_FILES` changes the 10,000.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::{JobRecord, JobState, StageRecord};
use batchgrid_core::aws::{s3_client, RequestMeter};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::download::{download_results, DownloadSettings, DownloadSummary};
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{parse_job, InputPolicy, Overrides};
use batchgrid_core::store::S3Store;
use batchgrid_core::task::stage_prefix;
use batchgrid_testkit::moto::Moto;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

const REGION: &str = "us-east-1";
const BUCKET: &str = "batchgrid-bench-results";
const TOKEN: &str = "bench";
/// Result files of the job.
const FILES: usize = 10_000;
/// Bytes per result file.
const FILE_SIZE: usize = 4096;
/// Files in flight, for the client and the baseline alike (the client's default).
const PARALLEL: usize = batchgrid_core::service::download::DEFAULT_PARALLEL;
/// Objects written at once while setting up.
const PUT_PARALLEL: usize = 32;
/// Above this many requests per file (listing pages aside) the bench says so.
const TARGET_PER_FILE: f64 = 1.01;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let files: usize = std::env::var("BENCH_RESULT_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(FILES);
        let moto = Moto::start();
        let config = moto.sdk_config(REGION).await;
        let plain = s3_client(&config, &RequestMeter::new());
        plain.create_bucket().bucket(BUCKET).send().await.expect("create bucket");
        let dir = tempfile::tempdir().expect("temp dir");

        let manager_meter = RequestMeter::new();
        let mut grid = Grid::open_embedded(&dir.path().join("state"), &EmbeddedGridSettings { max_receives: 5 })
            .await
            .expect("grid");
        grid.store = Arc::new(S3Store::new(s3_client(&config, &manager_meter), BUCKET, ""));
        let manager = Manager::new(grid, spool_dir(&dir.path().join("state")));
        let service = JobService::new(manager, Duration::from_secs(1), dir.path().to_path_buf(), InputPolicy::Operator);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(api::serve(listener, service.clone(), Secret::new(TOKEN.to_owned()), std::future::pending()));
        let client = ApiClient::new(&format!("http://{address}"), Secret::new(TOKEN.to_owned())).expect("client");

        let started = Instant::now();
        let (id, keys) = job_with_results(&service, &plain, dir.path(), files).await;
        eprintln!("results: {files} result files of {FILE_SIZE} bytes written in {:.1}s", started.elapsed().as_secs_f64());

        let started = Instant::now();
        plain_gets(&plain, &keys, &dir.path().join("plain")).await;
        let plain_s = started.elapsed().as_secs_f64();

        let direct_dir = dir.path().join("direct");
        let before = manager_meter.total_for("S3");
        let started = Instant::now();
        let direct = download_results(&client, &id, &direct_dir, &DownloadSettings::default()).await.expect("download");
        let direct_s = started.elapsed().as_secs_f64();
        let direct_manager_s3 = manager_meter.total_for("S3") - before;
        check(&direct, files);
        assert_eq!(direct.direct, files, "every file straight from S3: {direct:?}");

        let before = manager_meter.total_for("S3");
        let started = Instant::now();
        let settings = DownloadSettings { through_manager: true, ..DownloadSettings::default() };
        let through = download_results(&client, &id, &dir.path().join("through"), &settings).await.expect("through");
        let through_s = started.elapsed().as_secs_f64();
        let through_manager_s3 = manager_meter.total_for("S3") - before;
        check(&through, files);

        let again = download_results(&client, &id, &direct_dir, &DownloadSettings::default()).await.expect("again");
        assert_eq!((again.fetched, again.skipped), (0, files), "a second download fetches nothing: {again:?}");

        let per_file = |summary: &DownloadSummary| (summary.requests - summary.pages) as f64 / files as f64;
        let direct_per_file = per_file(&direct);
        println!(
            "results: {files} files, {PARALLEL} at a time, on moto: plain parallel GetObject loop {plain_s:.1}s \
             ({:.0} files/s)",
            files as f64 / plain_s
        );
        println!(
            "results: download via presigned URLs {direct_s:.1}s ({:.2}x the plain loop): client {} requests = \
             {direct_per_file:.3} per file + {} listing pages (target <= {TARGET_PER_FILE} per file); manager's S3 \
             requests {direct_manager_s3} (one LIST per page and the report)",
            direct_s / plain_s,
            direct.requests,
            direct.pages,
        );
        println!(
            "results: download through the manager {through_s:.1}s ({:.2}x the plain loop): client {} requests = \
             {:.3} per file + {} pages; manager's S3 requests {through_manager_s3} = {:.3} per file",
            through_s / plain_s,
            through.requests,
            per_file(&through),
            through.pages,
            through_manager_s3 as f64 / files as f64,
        );
        println!("results: a second download fetched {} files with {} requests (the pages)", again.fetched, again.requests);
        if direct_per_file > TARGET_PER_FILE {
            println!("results: above target");
        }
        println!(
            "RESULT results_download files={files} requests_per_file={direct_per_file:.3} pages={} direct_s={direct_s:.2} \
             plain_s={plain_s:.2} ratio={:.2} through_manager_s={through_s:.2}",
            direct.pages,
            direct_s / plain_s
        );
    });
}

fn check(summary: &DownloadSummary, files: usize) {
    assert_eq!((summary.files, summary.fetched), (files, files), "every file fetched: {summary:?}");
    assert_eq!(summary.bytes, (files * FILE_SIZE) as u64, "every byte: {summary:?}");
}

/// Records a completed one-stage job and puts `files` results under its final stage; returns
/// its id and the results' keys.
async fn job_with_results(
    service: &JobService,
    s3: &aws_sdk_s3::Client,
    dir: &Path,
    files: usize,
) -> (String, Vec<String>) {
    std::fs::write(dir.join("in.txt"), "one\n").expect("input");
    let job = "name: bench-results\ninput:\n  path: in.txt\nstages:\n  - name: work\n    command: [cat]\n\
               output:\n  path: out\n";
    let spec = parse_job(job, "job.yaml", dir, &Overrides::default()).expect("job");
    let id = format!("bench-results-{}", ulid::Ulid::new().to_string().to_lowercase());
    let now = batchgrid_core::db::now_millis();
    let record = JobRecord {
        id: id.clone(),
        name: spec.name.clone(),
        state: JobState::Completed,
        spec: serde_json::to_string(&spec).expect("spec"),
        submitted_at: now,
        started_at: Some(now),
        finished_at: Some(now),
        error: None,
    };
    let stages = [StageRecord { stage: 0, name: "work".into(), kind: spec.stages[0].kind }];
    service.manager().grid().analytics.create_job(&record, &stages).await.expect("record the job");
    let prefix = stage_prefix(&id, 0, "work");
    let keys: Vec<String> = (0..files).map(|i| format!("{prefix}{:06}/part {i}.csv", i / 100)).collect();
    futures::stream::iter(keys.iter().enumerate())
        .map(|(i, key)| async move {
            let body = vec![b'a' + (i % 26) as u8; FILE_SIZE];
            s3.put_object().bucket(BUCKET).key(key).body(body.into()).send().await.map(|_| ())
        })
        .buffer_unordered(PUT_PARALLEL)
        .try_collect::<()>()
        .await
        .expect("put results");
    (id, keys)
}

/// The baseline: every key fetched with the SDK, `PARALLEL` at a time, into `dir`.
async fn plain_gets(s3: &aws_sdk_s3::Client, keys: &[String], dir: &Path) {
    std::fs::create_dir_all(dir).expect("baseline dir");
    futures::stream::iter(keys.iter().enumerate())
        .map(|(i, key)| async move {
            let output = s3.get_object().bucket(BUCKET).key(key).send().await.expect("get");
            let mut file = tokio::fs::File::create(dir.join(i.to_string())).await.expect("create");
            let mut body = output.body;
            while let Some(chunk) = body.try_next().await.expect("read") {
                file.write_all(&chunk).await.expect("write");
            }
            file.flush().await.expect("flush");
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
}
