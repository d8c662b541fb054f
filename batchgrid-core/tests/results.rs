//! Results through the manager's API: names with `#`, `?` and `%` download byte-identical,
//! pages list every name once, a second download fetches nothing, names that leave the results
//! are refused with 400; on S3 (the moto emulator) files come straight from presigned URLs and
//! the manager's only S3 requests are one LIST per page.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchgrid_core::analytics::{JobRecord, JobState, StageRecord};
use batchgrid_core::aws::{s3_client, RequestMeter};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::download::{download_results, list_all, DownloadSettings};
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::{parse_job, InputPolicy, Overrides};
use batchgrid_core::store::S3Store;
use batchgrid_core::task::stage_prefix;
use batchgrid_testkit::moto::Moto;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "r3sults";
const ODD: &str = "a #b?c%20.txt";

/// A manager service over `grid`, its API on a loopback port; returns its address.
async fn serve(grid: Grid, dir: &Path) -> (Arc<JobService>, String) {
    let manager = Manager::new(grid, spool_dir(&dir.join("state")));
    let service = JobService::new(manager, Duration::from_millis(50), dir.to_path_buf(), InputPolicy::Operator);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(api::serve(listener, service.clone(), Secret::new(TOKEN.to_owned()), std::future::pending()));
    (service, address)
}

async fn embedded(dir: &Path) -> Grid {
    Grid::open_embedded(&dir.join("state"), &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid")
}

/// Records a completed one-stage job (nothing runs it, so the manager touches the store only
/// when asked) and writes `names` as its results straight into the store, each its name then a
/// body that differs per file; returns the job's id.
async fn job_with_results(service: &JobService, dir: &Path, names: &[String]) -> String {
    let job = "name: res\ninput:\n  path: in.txt\nstages:\n  - name: work\n    command: [cat]\noutput:\n  path: out\n";
    std::fs::write(dir.join("in.txt"), "one\n").expect("input");
    let spec = parse_job(job, "job.yaml", dir, &Overrides::default()).expect("job");
    let id = format!("res-{}", ulid::Ulid::new().to_string().to_lowercase());
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
    let store = service.manager().grid().store.clone();
    futures::future::try_join_all(names.iter().map(|name| {
        let (store, key) = (store.clone(), format!("{prefix}{name}"));
        async move { store.put(&key, Bytes::from(body_of(name))).await }
    }))
    .await
    .expect("results");
    id
}

fn body_of(name: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.extend((0..name.len() * 97).map(|i| (i % 256) as u8));
    body
}

fn client(address: &str) -> ApiClient {
    ApiClient::new(&format!("http://{address}"), Secret::new(TOKEN.to_owned())).expect("client")
}

fn assert_identical(dir: &Path, names: &[String]) {
    for name in names {
        let got = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, body_of(name), "{name} downloads byte-identical");
    }
}

/// A raw request line, so that no client library tidies `..` away before the manager sees it.
async fn raw_status(address: &str, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn odd_names() -> Vec<String> {
    vec![ODD.to_owned(), format!("sub/dir/{ODD}"), "plain.csv".to_owned()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_download_through_the_manager_and_a_second_run_fetches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (service, address) = serve(embedded(dir.path()).await, dir.path()).await;
    let names = odd_names();
    let id = job_with_results(&service, dir.path(), &names).await;
    let client = client(&address);
    let out = dir.path().join("download");

    let first = download_results(&client, &id, &out, &DownloadSettings::default()).await.expect("download");
    assert_eq!((first.files, first.fetched, first.skipped, first.direct), (3, 3, 0, 0), "{first:?}");
    assert_eq!(first.requests, first.pages + 3, "one request per file plus the pages");
    assert_identical(&out, &names);
    assert!(!out.join(format!("{ODD}.part")).exists(), "parts are renamed into place");

    let second = download_results(&client, &id, &out, &DownloadSettings::default()).await.expect("again");
    assert_eq!((second.fetched, second.skipped, second.requests), (0, 3, second.pages), "{second:?}");

    // A file cut short (an interrupted run without parts) is fetched again, and only it.
    std::fs::write(out.join("plain.csv"), b"cut").expect("truncate");
    let third = download_results(&client, &id, &out, &DownloadSettings::default()).await.expect("resume");
    assert_eq!((third.fetched, third.skipped), (1, 2), "{third:?}");
    assert_identical(&out, &names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_every_name_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (service, address) = serve(embedded(dir.path()).await, dir.path()).await;
    let names: Vec<String> = (0..250).map(|i| format!("{:03}/part-{i}.csv", i % 7)).collect();
    let id = job_with_results(&service, dir.path(), &names).await;
    let client = client(&address);
    let settings = DownloadSettings { page_size: Some(40), ..DownloadSettings::default() };
    let (objects, pages) = list_all(&client, &id, &settings).await.expect("pages");
    assert_eq!(pages, 7, "250 names at 40 a page");
    let listed: Vec<String> = objects.iter().map(|o| o.path.clone()).collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no name twice");
    assert_eq!(unique, names.iter().collect::<BTreeSet<_>>(), "every name");
    assert!(objects.iter().all(|o| o.url.is_none()), "a directory store has no URLs");

    let page = client.results_page(&id, None, Some(40), false).await.expect("first page");
    assert_eq!(page.next.as_deref(), Some(listed[39].as_str()), "next is the last name of the page");
    let refused = client.results_page(&id, None, Some(0), false).await.expect_err("limit 0");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(400));
    let refused = client.results_page(&id, None, Some(1001), false).await.expect_err("limit 1001");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(400));

    // The dashboard's job page shows the first page of them, and how to fetch the rest.
    let page = batchgrid_core::aws::https::builder()
        .expect("TLS")
        .build()
        .expect("HTTP client")
        .get(format!("http://{address}/ui/jobs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("job page")
        .text()
        .await
        .expect("body");
    let listed = page.split("id=\"results\"").nth(1).unwrap_or_default().split("</ul>").next().unwrap_or_default();
    assert_eq!(listed.matches("<li>").count(), 200, "the first 200 of 250: {page}");
    assert!(page.contains("--download DIR"), "how to get them all: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_leave_the_results_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (service, address) = serve(embedded(dir.path()).await, dir.path()).await;
    let id = job_with_results(&service, dir.path(), &odd_names()).await;
    let base = format!("/v1/jobs/{id}/results");
    for path in [
        "../../spec.json",
        "%2e%2e/%2e%2e/spec.json",
        "a%2F..%2F..%2F..%2Fspec.json",
        "%2Fetc%2Fpasswd",
        "sub//dir",
        "./plain.csv",
    ] {
        assert_eq!(raw_status(&address, &format!("{base}/{path}")).await, 400, "{path}");
    }
    assert_eq!(raw_status(&address, &format!("{base}/missing.txt")).await, 404);
    assert_eq!(raw_status(&address, &format!("{base}/plain.csv")).await, 200);
    assert_eq!(raw_status(&address, &format!("{base}/a%20%23b%3Fc%2520.txt")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_files_come_from_presigned_urls() {
    let moto = Moto::start();
    let config = moto.sdk_config("us-east-1").await;
    let meter = RequestMeter::new();
    let s3 = s3_client(&config, &meter);
    s3.create_bucket().bucket("results").send().await.expect("bucket");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut grid = embedded(dir.path()).await;
    grid.store = Arc::new(S3Store::new(s3, "results", "grid/"));
    let (service, address) = serve(grid, dir.path()).await;
    let names = odd_names();
    let id = job_with_results(&service, dir.path(), &names).await;
    let client = client(&address);
    let count =
        |operation: &str| meter.snapshot().iter().filter(|c| c.operation == operation).map(|c| c.count).sum::<u64>();

    let (lists, gets) = (count("ListObjectsV2"), count("GetObject"));
    let out = dir.path().join("direct");
    let direct = download_results(&client, &id, &out, &DownloadSettings::default()).await.expect("download");
    assert_eq!((direct.fetched, direct.direct), (3, 3), "{direct:?}");
    assert_identical(&out, &names);
    assert_eq!(count("GetObject") - gets, 1, "the manager reads no result, only the report (the first page's)");
    assert_eq!(count("ListObjectsV2") - lists, direct.pages, "one LIST per page");

    let (lists, gets) = (count("ListObjectsV2"), count("GetObject"));
    let out = dir.path().join("through");
    let settings = DownloadSettings { through_manager: true, ..DownloadSettings::default() };
    let through = download_results(&client, &id, &out, &settings).await.expect("through the manager");
    assert_eq!((through.fetched, through.direct), (3, 0), "{through:?}");
    assert_identical(&out, &names);
    assert_eq!(count("GetObject") - gets, 1 + 3, "the report, then one GET per file and no listing per file");
    assert_eq!(count("ListObjectsV2") - lists, through.pages, "one LIST per page");
}

/// Presigned URLs are HTTPS on AWS (the emulator's are plain HTTP, so the tests above cannot
/// show it): the client downloads over TLS from a server whose certificate the trusted roots
/// vouch for, and refuses a server they do not. `openssl s_server -www` stands in for S3;
/// SSL_CERT_FILE names the roots, as it does for OpenSSL.
#[tokio::test]
async fn presigned_https_downloads_trust_the_platform_roots_and_only_them() {
    use batchgrid_testkit::tls::TestCa;

    let ca = TestCa::new("batchgrid-https-test");
    let server_cert = ca.issue(&["localhost"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&server_cert.cert)
        .arg("-key")
        .arg(&server_cert.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server (make test installs openssl)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "openssl s_server did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("https://localhost:{port}/");

    // Only this binary's tests read the variable, and none of the others speaks HTTPS.
    std::env::set_var("SSL_CERT_FILE", ca.cert());
    let client = ApiClient::new("http://127.0.0.1:9", Secret::new(TOKEN.to_owned())).expect("client");
    let size = client.download_presigned(&url, &dir.path().join("page")).await.expect("an HTTPS download");
    let page = std::fs::read_to_string(dir.path().join("page")).expect("downloaded");
    assert!(size > 0 && page.contains("s_server"), "openssl's status page came back: {page}");

    let stranger = TestCa::new("another-ca");
    std::env::set_var("SSL_CERT_FILE", stranger.cert());
    let client = ApiClient::new("http://127.0.0.1:9", Secret::new(TOKEN.to_owned())).expect("client");
    let refused = client.download_presigned(&url, &dir.path().join("again")).await.expect_err("untrusted");
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
    std::env::remove_var("SSL_CERT_FILE");
    let _ = server.kill();
    let _ = server.wait();
}
