//! A split of a 2 GiB S3 object on the moto emulator into about 10,000 byte-range tasks (a
//! `bytes:` split with a header line), then into about 10,000 tasks of exact line counts (a
//! `lines:` split, which reads the object once by ranged GETs), measured on the manager's side:
//! its peak RSS during each split, the bytes it read of the object, what it wrote under its
//! spool directory (where the staged path used to download the input and cut chunks), and the
//! split's time per 10,000 tasks. Targets: peak RSS under 100 MiB, nothing over 1 MiB on disk,
//! under 1% of the input read for `bytes:` (all of it, once, for `lines:`).
//!
//! Run with `cargo bench -p batchgrid-core --bench s3_split` (or `make bench`); set
//! `BENCH_S3_SPLIT_MIB` for another size than 2048.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use batchgrid_core::aws::{s3_client, RequestMeter};
use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::Manager;
use batchgrid_core::spec::{parse_job, Overrides};
use batchgrid_core::store::{ObjectMeta, ObjectReader, ObjectStore, S3Store, StoreError};
use batchgrid_testkit::moto::Moto;
use bytes::Bytes;

const REGION: &str = "us-east-1";
const RAW: &str = "bench-raw";
const KEY: &str = "inputs/claims.csv";
const TASKS: u64 = 10_000;

/// An S3 store that counts the bytes read through it.
#[derive(Debug)]
struct Counting {
    inner: S3Store,
    read: Arc<AtomicU64>,
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        self.inner.put_file(key, path).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let data = self.inner.get(key).await?;
        self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let bytes = self.inner.get_to_file(key, path).await?;
        self.read.fetch_add(bytes, Ordering::Relaxed);
        Ok(bytes)
    }
    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let reader = self.inner.get_stream(key).await?;
        // Counted whole: the split never streams an input.
        self.read.fetch_add(reader.size, Ordering::Relaxed);
        Ok(reader)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.inner.delete(keys).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let data = self.inner.get_range(key, start, end).await?;
        self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }
    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        self.inner.size(key).await
    }
}

/// A field of /proc/self/status or /proc/self/io, in its unit (kB for memory).
fn proc_field(file: &str, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The largest file under `dir` and the bytes of all of them.
fn disk_use(dir: &Path) -> (u64, u64) {
    let (mut largest, mut total) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => {
                    largest = largest.max(meta.len());
                    total += meta.len();
                }
                Err(_) => {}
            }
        }
    }
    (largest, total)
}

/// Splits the job `id`, printing the manager's peak RSS, the bytes it read of the input, the
/// largest file under its spool and the time per 10,000 tasks.
async fn measure(
    manager: &Manager,
    spool: &Path,
    read: &AtomicU64,
    id: &str,
    job: &batchgrid_core::spec::JobSpec,
    size: u64,
    kind: &str,
) {
    // The peak from here on: the split alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let written_before = proc_field("io", "write_bytes:");
    let largest_seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (spool, largest_seen) = (spool.to_path_buf(), largest_seen.clone());
        tokio::spawn(async move {
            loop {
                largest_seen.fetch_max(disk_use(&spool).0, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let tasks = manager.split(id, job, |_| {}).await.expect("split");
    let seconds = started.elapsed().as_secs_f64();
    watcher.abort();
    let peak_kib = proc_field("status", "VmHWM:");
    let written = proc_field("io", "write_bytes:").saturating_sub(written_before);
    let bytes_read = read.load(Ordering::Relaxed);
    let largest = largest_seen.load(Ordering::Relaxed).max(disk_use(spool).0);
    println!(
        "split of a {} MiB S3 object into {tasks} {kind} tasks in {seconds:.2} s ({:.2} s per 10,000 tasks): \
         peak RSS {} MiB (target < 100), read {bytes_read} bytes of the object ({:.3}%), largest \
         file under the spool {largest} bytes (target < 1 MiB); the process wrote {} KiB to disk in all (the \
         embedded queue and analytics databases, which are SQS and PostgreSQL on AWS)",
        size >> 20,
        seconds * 10_000.0 / tasks.max(1) as f64,
        peak_kib / 1024,
        bytes_read as f64 * 100.0 / size as f64,
        written / 1024
    );
    println!(
        "RESULT s3_split kind={kind} input_mib={} tasks={tasks} seconds={seconds:.2} per_10k_tasks_s={:.2} \
         peak_rss_mib={} read_pct={:.3} largest_spool_file_bytes={largest}",
        size >> 20,
        seconds * 10_000.0 / tasks.max(1) as f64,
        peak_kib / 1024,
        bytes_read as f64 * 100.0 / size as f64
    );
}

fn main() {
    let mib: u64 = std::env::var("BENCH_S3_SPLIT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let moto = Moto::start();
        let config = moto.sdk_config(REGION).await;
        let meter = RequestMeter::new();
        let s3 = s3_client(&config, &meter);
        s3.create_bucket().bucket(RAW).send().await.expect("bucket");

        // The input: synthetic claims lines, written once to a temporary file and uploaded.
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("claims.csv");
        let lines = {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("input"));
            writeln!(out, "claim_id,provider_id,member_id,amount,service_date").expect("write");
            let mut written = 0u64;
            let mut n = 0u64;
            while written < mib << 20 {
                let line = format!(
                    "C{n:010},P{:04},M{:08},{}.{:02},2026-11-{:02}\n",
                    n % 500,
                    n * 7 % 99_991,
                    n % 9_000,
                    n % 100,
                    n % 28 + 1
                );
                out.write_all(line.as_bytes()).expect("write");
                written += line.len() as u64;
                n += 1;
            }
            n
        };
        let size = std::fs::metadata(&file).expect("input").len();
        let upload = Instant::now();
        S3Store::new(s3.clone(), RAW, "").put_file(KEY, &file).await.expect("upload");
        std::fs::remove_file(&file).expect("remove the local copy");
        println!("uploaded {} MiB to the emulator in {:.0} s", size >> 20, upload.elapsed().as_secs_f64());

        let range = size / TASKS + 1;
        let job = parse_job(
            &format!(
                "name: bench-s3-split\ninput:\n  path: s3://{RAW}/{KEY}\nsplit:\n  bytes: {range}\n  header: true\n\
                 stages:\n  - name: noop\n    processor: noop\noutput:\n  path: out\n"
            ),
            "bench.yaml",
            dir.path(),
            &Overrides::default(),
        )
        .expect("job");

        // The manager: its queue and analytics are the embedded ones (moto's SQS takes minutes
        // over 10,000 messages, which would measure moto); on AWS they are SQS and PostgreSQL,
        // not its disk. Its spool is where the staged path downloaded the input and cut chunks.
        let state = dir.path().join("state");
        let grid = Grid::open_embedded(&state, &EmbeddedGridSettings { max_receives: 5 }).await.expect("grid");
        let read = Arc::new(AtomicU64::new(0));
        let opener = {
            let (s3, read) = (s3.clone(), read.clone());
            Arc::new(move |bucket: &str| {
                Arc::new(Counting { inner: S3Store::new(s3.clone(), bucket, ""), read: read.clone() })
                    as Arc<dyn ObjectStore>
            })
        };
        let spool = dir.path().join("spool");
        let manager = Manager::new(grid, &spool).with_buckets(opener);
        let id = manager.submit(&job).await.expect("submit");

        measure(&manager, &spool, &read, &id, &job, size, "byte-range").await;

        // The same object split by lines, for exact counts: read once, in ranged GETs, and
        // nothing written.
        let per_task = lines / TASKS + 1;
        let job = parse_job(
            &format!(
                "name: bench-s3-lines\ninput:\n  path: s3://{RAW}/{KEY}\nsplit:\n  lines: {per_task}\n  header: true\n\
                 stages:\n  - name: noop\n    processor: noop\noutput:\n  path: out\n"
            ),
            "bench.yaml",
            dir.path(),
            &Overrides::default(),
        )
        .expect("job");
        let id = manager.submit(&job).await.expect("submit");
        read.store(0, Ordering::Relaxed);
        measure(&manager, &spool, &read, &id, &job, size, "line-range").await;
    });
}
