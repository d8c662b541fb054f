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

/// The longest a cut task waits for others to fill a batch before it is handed over.
const HAND_OVER_AFTER: std::time::Duration = std::time::Duration::from_millis(10);
use crate::analytics::{actor, JobState, PendingTask};
use crate::byte_range::{header_end, InputRange, RangeInput, RangeSource, MAX_HEADER_BYTES};
use crate::queue::{TaskQueue, MAX_BATCH};
use crate::spec::{InputSpec, JobSpec, SplitSpec};
use crate::split::{split_input, split_ranges, Chunk, ChunkData, SplitError};
use crate::store::StoreError;
use crate::task::{chunk_task_id, input_key, TaskMessage, MAX_INLINE_BYTES};

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
        // An s3:// input split by bytes is planned from its size (and header line) alone:
        // workers read their ranges from the object, and nothing lands on this disk.
        let s3_ranges = match (&spec.input, spec.split, &self.buckets) {
            (InputSpec::S3 { bucket, key }, SplitSpec::Bytes { header, .. }, Some(opener)) => {
                match self.describe_object(opener(bucket).as_ref(), bucket, key, header).await {
                    Ok(described) => {
                        Some((RangeSource::Object { bucket: bucket.clone(), key: key.clone() }, described))
                    }
                    Err(error) => {
                        let _ = std::fs::remove_dir_all(&spool);
                        return Err(error);
                    }
                }
            }
            _ => None,
        };
        let input = match (&spec.input, &s3_ranges) {
            (InputSpec::Local(path), _) => path.clone(),
            // Only its name is used: the chunks' extension.
            (InputSpec::S3 { key, .. }, Some(_)) => PathBuf::from(key),
            (InputSpec::S3 { bucket, key }, None) => match self.fetch_input(bucket, key, spec.split, &spool).await {
                Ok(path) => path,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&spool);
                    return Err(error);
                }
            },
        };
        let input = &input;
        // A local file split by lines or bytes becomes byte ranges of itself: nothing copied.
        let ranged = match (&spec.input, spec.split) {
            (InputSpec::Local(_), SplitSpec::Lines { header, .. } | SplitSpec::Bytes { header, .. })
                if input.is_file() =>
            {
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
            _ => s3_ranges,
        };

        // The splitter is blocking file work; chunks come through a small bounded channel.
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Chunk>(SPLIT_AHEAD);
        let splitter = {
            let (input, split, spool, ranged) = (input.clone(), spec.split, spool.clone(), ranged.clone());
            tokio::task::spawn_blocking(move || {
                let send = |chunk| {
                    chunk_tx.blocking_send(chunk).map_err(|_| SplitError::Stopped("the enqueuer stopped".into()))
                };
                match &ranged {
                    Some((_, described)) => split_ranges(&input, split, described, send),
                    None => split_input(&input, split, &spool, send),
                }
            })
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
        match chunk.data {
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
        let body =
            TaskMessage { job: job_id.to_owned(), stage: 0, task: task.clone(), input: key, data: inline, range }
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

    /// Downloads an `s3://` input into the spool: the one object for a chunked split, every
    /// object under the prefix otherwise (keeping their relative paths). Returns the local path.
    async fn fetch_input(
        &self,
        bucket: &str,
        key: &str,
        split: SplitSpec,
        spool: &Path,
    ) -> Result<PathBuf, ManagerError> {
        let describe = || format!("s3://{bucket}/{key}");
        let Some(opener) = &self.buckets else {
            return Err(ManagerError::Input { input: describe(), message: "s3:// inputs need a grid on AWS".into() });
        };
        let store = opener(bucket);
        let root = spool.join("input");
        let objects: Vec<String> = if split == SplitSpec::PerFile {
            store.list(key).await?.into_iter().map(|o| o.key).filter(|k| !k.ends_with('/')).collect()
        } else {
            vec![key.to_owned()]
        };
        if objects.is_empty() {
            return Err(ManagerError::Input { input: describe(), message: "no objects under this prefix".into() });
        }
        let base = match key.rfind('/') {
            Some(i) => &key[..=i],
            None => "",
        };
        let spool_error = |path: &Path, source| ManagerError::Spool { path: path.to_path_buf(), source };
        let mut single = None;
        for object in &objects {
            let relative = object.strip_prefix(base).unwrap_or(object);
            let target = root.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| spool_error(parent, e))?;
            }
            match store.get_to_file(object, &target).await {
                Err(StoreError::NotFound(_)) => {
                    return Err(ManagerError::Input { input: describe(), message: "no such object".into() })
                }
                other => other?,
            };
            single = Some(target);
        }
        // One object named exactly by the key is a file input; anything else a directory.
        Ok(match single {
            Some(path) if objects.len() == 1 && objects[0] == key => path,
            _ => root,
        })
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
