//! Splitting: the job's input staged in the object store and cut into first-stage tasks. While
//! the manager drives jobs, the tasks wait in the analytics store for [`super::admission`],
//! which lets them into the queue by priority and fair share; otherwise (a manager that only
//! splits, as `batchgrid split` and embedders driving workers themselves) they are enqueued at
//! once, in batches of ten with several batches in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::{Manager, ManagerError, SEND_CONCURRENCY, SPLIT_AHEAD};

use crate::analytics::{actor, JobState, PendingTask};
use crate::byte_range::object::{blocks, BlockReads};
use crate::byte_range::{header_end, InputRange, RangeInput, RangeSource, MAX_HEADER_BYTES};
use crate::manifest::ManifestReader;
use crate::queue::{TaskQueue, MAX_BATCH};
use crate::spec::{InputSpec, JobSpec, SplitSpec};
use crate::split::{
    split_input, split_manifest, split_object_lines, split_object_prefix, split_ranges, Chunk, ChunkData, SplitError,
};
use crate::store::StoreError;
use crate::task::{chunk_task_id, input_key, InputObject, TaskMessage, MAX_INLINE_BYTES};

/// The longest a cut task waits for others to fill a batch before it is handed over.
const HAND_OVER_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// The running splitter: the number of chunks it cut, once done.
type Splitter = tokio::task::JoinHandle<Result<u64, SplitError>>;

/// A splitter of a local file (blocking work) into staged chunks, or into byte ranges when
/// `ranged` describes the input (a local file, or an S3 object whose name is `input`).
fn file_splitter(
    input: PathBuf,
    split: SplitSpec,
    ranged: Option<(RangeSource, RangeInput)>,
    spool: PathBuf,
    chunks: tokio::sync::mpsc::Sender<Chunk>,
) -> (Splitter, Option<(RangeSource, RangeInput)>) {
    let described = ranged.as_ref().map(|(_, described)| described.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let send = |chunk| chunks.blocking_send(chunk).map_err(|_| SplitError::Stopped("the enqueuer stopped".into()));
        match &described {
            Some(described) => split_ranges(&input, split, described, send),
            None => split_input(&input, split, &spool, send),
        }
    });
    (handle, ranged)
}

impl Manager {
    /// Stages the input and hands the first stage's tasks to admission (or, when this manager
    /// drives no job, to the queue) as the chunks are cut; returns how many. `on_task` is called
    /// with the running count. The job is running from the first batch, so workers start
    /// before the split ends.
    ///
    /// Restartable: task ids and object keys are deterministic and progress is an upsert per
    /// task, so a split cut short (by a crash or an infrastructure error) is simply run again
    /// from the start; tasks sent twice run twice and count once. A job that ends meanwhile
    /// (cancelled) stops the split at the next batch.
    pub async fn split(&self, job_id: &str, spec: &JobSpec, on_task: impl Fn(u64) + Send) -> Result<u64, ManagerError> {
        let analytics = &self.grid.analytics;
        // Refused unless still `submitted`: a re-split after a restart keeps the state it finds.
        analytics.transition(job_id, JobState::Splitting, Some("splitting the input"), actor::MANAGER).await?;
        if self.job_has_ended(job_id).await? {
            return Ok(0);
        }
        let spool = self.spool.join(job_id);
        std::fs::create_dir_all(&spool).map_err(|source| ManagerError::Spool { path: spool.clone(), source })?;
        // The splitter reads the input (blocking file work, or S3 requests) and hands chunks
        // through a small bounded channel.
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Chunk>(SPLIT_AHEAD);
        let (splitter, ranged) = match self.start_splitter(job_id, spec, &spool, chunk_tx).await {
            Ok(started) => started,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&spool);
                return Err(error);
            }
        };

        let admitting = self.admission.is_active();
        let mut pending: Vec<PendingTask> = Vec::with_capacity(MAX_BATCH * SEND_CONCURRENCY);
        let mut staged = 0u64;
        let mut started = false;
        let mut failure: Option<ManagerError> = None;
        // When the oldest task not yet handed over was cut.
        let mut oldest: Option<tokio::time::Instant> = None;
        loop {
            let next = match oldest {
                // Tasks are waiting: if the next is slow to come, they go now, so workers start
                // on a big or slow input without waiting for a full batch.
                Some(since) => tokio::time::timeout_at(since + HAND_OVER_AFTER, chunk_rx.recv()).await.ok(),
                None => Some(chunk_rx.recv().await),
            };
            match next {
                Some(Some(chunk)) => match self.pending_task(job_id, spec, ranged.as_ref(), chunk).await {
                    Ok(task) => {
                        pending.push(task);
                        staged += 1;
                        oldest.get_or_insert_with(tokio::time::Instant::now);
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                },
                Some(None) => break,
                None => {} // The oldest has waited long enough.
            }
            // The first task goes at once: idle workers are waiting for it.
            let waited = oldest.is_some_and(|since| !started || since.elapsed() >= HAND_OVER_AFTER);
            if pending.len() >= MAX_BATCH * SEND_CONCURRENCY || (waited && !pending.is_empty()) {
                oldest = None;
                if let Err(error) = self.hand_over(job_id, admitting, std::mem::take(&mut pending)).await {
                    failure = Some(error);
                    break;
                }
                if !started {
                    started = true;
                    analytics.transition(job_id, JobState::Running, Some("first tasks queued"), actor::MANAGER).await?;
                }
                on_task(staged);
                #[cfg(feature = "fault-injection")]
                crate::fault::slow_point(crate::fault::SPLIT_BATCH).await;
                if self.job_has_ended(job_id).await? {
                    tracing::info!(job = %job_id, "job ended while splitting; split stopped");
                    break;
                }
            }
        }
        drop(chunk_rx);
        let split_result = splitter.await.map_err(|e| SplitError::Stopped(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&spool);
        if let Some(error) = failure {
            return Err(error);
        }
        if self.job_has_ended(job_id).await? {
            return Ok(staged);
        }
        let count = split_result?;
        self.hand_over(job_id, admitting, pending).await?;
        on_task(staged);
        analytics.set_stage_expected(job_id, 0, count).await?;
        // Refused if the job ended meanwhile (a cancel wins) or is already running.
        analytics.transition(job_id, JobState::Running, Some("input split"), actor::MANAGER).await?;
        tracing::info!(job = %job_id, tasks = count, "split complete");
        Ok(count)
    }

    /// Stages one chunk (unless it is a byte range or small enough to travel in its message)
    /// and returns its first-stage task.
    async fn pending_task(
        &self,
        job_id: &str,
        spec: &JobSpec,
        ranged: Option<&(RangeSource, RangeInput)>,
        chunk: Chunk,
    ) -> Result<PendingTask, ManagerError> {
        let task = chunk_task_id(chunk.index);
        let key = input_key(job_id, &task, &chunk.file_name, spec.split == SplitSpec::PerFile);
        let mut inline = None;
        let mut range = None;
        let mut object = None;
        match chunk.data {
            ChunkData::Object { bucket, key } => object = Some(InputObject { bucket, key }),
            ChunkData::Range { start, end } => {
                if let Some((source, described)) = ranged {
                    range = Some(InputRange {
                        source: source.clone(),
                        start,
                        end,
                        body_start: described.body_start,
                        size: described.size,
                        header: described.header.clone(),
                    });
                }
            }
            ChunkData::Memory(bytes) if bytes.len() <= MAX_INLINE_BYTES => match String::from_utf8(bytes) {
                Ok(text) => inline = Some(text),
                Err(not_text) => self.grid.store.put(&key, Bytes::from(not_text.into_bytes())).await?,
            },
            ChunkData::Memory(bytes) => self.grid.store.put(&key, Bytes::from(bytes)).await?,
            ChunkData::File { path, spooled } => {
                let stored = self.grid.store.put_file(&key, &path).await.map(|_| ());
                if spooled {
                    let _ = std::fs::remove_file(&path);
                }
                stored?
            }
        }
        let body = TaskMessage {
            job: job_id.to_owned(),
            stage: 0,
            task: task.clone(),
            input: key,
            data: inline,
            range,
            object,
        }
        .encode();
        Ok(PendingTask { stage: 0, task_id: task, seq: chunk.index, body })
    }

    /// An S3 input's size and, when the split keeps one, its header line, in at most two
    /// requests (HEAD, and a ranged GET of the first line).
    async fn describe_object(
        &self,
        store: &dyn crate::store::ObjectStore,
        bucket: &str,
        key: &str,
        header: bool,
    ) -> Result<RangeInput, ManagerError> {
        let input = || format!("s3://{bucket}/{key}");
        let size = match store.size(key).await {
            Err(StoreError::NotFound(_)) => {
                return Err(ManagerError::Input { input: input(), message: "no such object".into() })
            }
            other => other?,
        };
        if !header {
            return Ok(RangeInput { size, body_start: 0, header: None });
        }
        // A header line is short: 64 KiB first, the longest accepted only if it must.
        let mut prefix = store.get_range(key, 0, size.min(64 * 1024)).await?;
        if header_end(&prefix, size).is_none() {
            prefix = store.get_range(key, 0, size.min(MAX_HEADER_BYTES)).await?;
        }
        RangeInput::with_header(&prefix, size)
            .map_err(|e| ManagerError::Input { input: input(), message: e.to_string() })
    }

    /// Starts the splitter of the job's input, which hands its chunks to `chunks`; with the
    /// input's description when the chunks are byte ranges of it. Nothing of an `s3://`
    /// input is downloaded: a `bytes:` split is planned from its size, a `lines:` split from
    /// one streamed read, and a per-file split or a manifest names the objects where they lie.
    async fn start_splitter(
        &self,
        job_id: &str,
        spec: &JobSpec,
        spool: &Path,
        chunks: tokio::sync::mpsc::Sender<Chunk>,
    ) -> Result<(Splitter, Option<(RangeSource, RangeInput)>), ManagerError> {
        match &spec.input {
            InputSpec::Local(input) => {
                // A local file split by lines or bytes becomes byte ranges of itself.
                let ranged = match spec.split {
                    SplitSpec::Lines { header, .. } | SplitSpec::Bytes { header, .. } if input.is_file() => {
                        match crate::byte_range::local::describe(input, header) {
                            Ok(described) => Some((
                                RangeSource::File(std::path::absolute(input).unwrap_or_else(|_| input.clone())),
                                described,
                            )),
                            Err(error) => {
                                tracing::info!(job = %job_id, %error, "staging chunks instead of byte ranges");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                Ok(file_splitter(input.clone(), spec.split, ranged, spool.to_path_buf(), chunks))
            }
            InputSpec::S3 { bucket, key } => {
                let store = self.input_bucket(bucket, key)?;
                match spec.split {
                    SplitSpec::Bytes { header, .. } => {
                        let described = self.describe_object(store.as_ref(), bucket, key, header).await?;
                        let source = RangeSource::Object { bucket: bucket.clone(), key: key.clone() };
                        // Only the key's name is used: the chunks' extension.
                        Ok(file_splitter(
                            PathBuf::from(key),
                            spec.split,
                            Some((source, described)),
                            spool.to_path_buf(),
                            chunks,
                        ))
                    }
                    SplitSpec::Lines { lines, header } => {
                        let described = self.describe_object(store.as_ref(), bucket, key, header).await?;
                        let source = RangeSource::Object { bucket: bucket.clone(), key: key.clone() };
                        let (key, scanned) = (key.clone(), described.clone());
                        let handle = tokio::spawn(async move {
                            split_object_lines(store, &key, &scanned, lines.get(), BlockReads::default(), &chunks).await
                        });
                        Ok((handle, Some((source, described))))
                    }
                    SplitSpec::PerFile => {
                        let (bucket, key) = (bucket.clone(), key.clone());
                        let handle =
                            tokio::spawn(
                                async move { split_object_prefix(store.as_ref(), &bucket, &key, &chunks).await },
                            );
                        Ok((handle, None))
                    }
                }
            }
            InputSpec::Manifest { location, format } => {
                let name = location.describe();
                let handle = match location.as_ref() {
                    InputSpec::Local(path) => {
                        let file = tokio::fs::File::open(path)
                            .await
                            .map_err(|e| ManagerError::Input { input: name.clone(), message: e.to_string() })?;
                        let reader = ManifestReader::new(tokio::io::BufReader::new(file), *format, name.clone());
                        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                        let objects = self.buckets.is_some();
                        tokio::spawn(async move { split_manifest(reader, &name, Some(&base), objects, &chunks).await })
                    }
                    InputSpec::S3 { bucket, key } => {
                        let store = self.input_bucket(bucket, key)?;
                        let size = match store.size(key).await {
                            Err(StoreError::NotFound(_)) => {
                                return Err(ManagerError::Input { input: name, message: "no such object".into() })
                            }
                            other => other?,
                        };
                        let bytes = blocks(store, key.clone(), 0, size, BlockReads::default())
                            .map(|block| block.map_err(std::io::Error::other));
                        let reader = tokio_util::io::StreamReader::new(Box::pin(bytes));
                        let reader = ManifestReader::new(reader, *format, name.clone());
                        tokio::spawn(async move { split_manifest(reader, &name, None, true, &chunks).await })
                    }
                    InputSpec::Manifest { .. } => {
                        return Err(ManagerError::Input {
                            input: name,
                            message: "a manifest cannot list manifests".into(),
                        })
                    }
                };
                Ok((handle, None))
            }
        }
    }

    /// The store of an `s3://` input's bucket.
    fn input_bucket(&self, bucket: &str, key: &str) -> Result<Arc<dyn crate::store::ObjectStore>, ManagerError> {
        match &self.buckets {
            Some(opener) => Ok(opener(bucket)),
            None => Err(ManagerError::Input {
                input: format!("s3://{bucket}/{key}"),
                message: "s3:// inputs need a grid on AWS".into(),
            }),
        }
    }

    /// Gives first-stage tasks to admission, or sends them straight to the queue.
    async fn hand_over(&self, job_id: &str, admitting: bool, tasks: Vec<PendingTask>) -> Result<(), ManagerError> {
        if admitting {
            // A split run again (after a restart) adds only the tasks not known yet.
            self.grid.analytics.add_pending(job_id, &tasks).await?;
            self.admission.tasks_added();
            Ok(())
        } else {
            self.enqueue(&self.grid.tasks, tasks.into_iter().map(|task| task.body).collect()).await
        }
    }

    /// Sends bodies in batches of ten, several batches in flight.
    pub(super) async fn enqueue(&self, queue: &Arc<dyn TaskQueue>, bodies: Vec<String>) -> Result<(), ManagerError> {
        let batches: Vec<Vec<String>> = bodies.chunks(MAX_BATCH).map(<[String]>::to_vec).collect();
        let mut sends = futures::stream::iter(batches.into_iter().map(|batch| {
            let queue = queue.clone();
            async move { queue.send_batch(&batch).await }
        }))
        .buffer_unordered(SEND_CONCURRENCY);
        while let Some(result) = sends.next().await {
            result?;
        }
        Ok(())
    }

    async fn job_has_ended(&self, job_id: &str) -> Result<bool, ManagerError> {
        let job = self.grid.analytics.job(job_id).await?;
        Ok(job.is_none_or(|job| job.state.is_terminal()))
    }
}
