//! The task queue: how tasks reach workers.
//!
//! # Contract
//! The semantics are SQS's, so the embedded queue and SQS are interchangeable:
//! - Delivery is at least once. A received message is invisible to other receivers for the
//!   visibility timeout given to `receive`; if it is not deleted by then it is delivered again,
//!   with `receive_count` one higher.
//! - `change_visibility` with the latest receipt sets how long from now the message stays
//!   invisible: a heartbeat extends it, zero releases it at once, a delay is a retry backoff.
//! - `delete_batch` acknowledges. Deleting a message that is already gone succeeds (idempotent);
//!   with a receipt from an earlier delivery of a message that has since been delivered again
//!   (a redrive included) the message stays, and the entry fails (SQS may report success).
//!   `change_visibility` with such a receipt fails for that entry.
//! - A message received more than `max_receives` times without being deleted moves to the
//!   dead-letter queue instead of being delivered; `dead_letter` moves one there at once with a
//!   reason; `redrive` sends every dead letter back with its count reset, `redrive_matching`
//!   only those a predicate picks (by job, stage, task or reason), the others left in place.
//! - `take_dead_letters` hides the dead letters it returns for `hold`, so successive calls walk
//!   the whole dead-letter queue however long it is; `delete_dead_letters` removes taken ones
//!   (idempotently). A taken letter that is not deleted comes back after `hold`, so a consumer
//!   that records each letter before deleting it misses none.
//! - Batches hold at most [`MAX_BATCH`] entries and a body at most [`MAX_BODY_BYTES`].
//! - `receive` waits up to `wait` for a message (long polling) and returns as soon as one is
//!   there; it returns at most `max` messages, possibly fewer than are available.

pub mod sqlite;
#[cfg(feature = "aws")]
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;

pub use sqlite::SqliteQueue;
#[cfg(feature = "aws")]
pub use sqs::SqsQueue;

/// Deliveries a queue must allow beyond a job's `retry.max_attempts`.
///
/// `max_attempts` counts failed runs, decided by the worker from the task's recorded failures;
/// the queue's receive limit (`max_receives`, SQS's `maxReceiveCount`) counts deliveries, which
/// also rise when a task is released unfinished (SIGTERM drain, spot notice, lifecycle drain,
/// a prefetched message given back) or its worker dies. The receive limit stays as a safety net
/// for tasks whose workers never finish them, and it must leave room for this many such
/// deliveries above the failures, so a job is refused at submit when
/// `max_attempts > max_receives - RELEASE_MARGIN`.
pub const RELEASE_MARGIN: u32 = 2;

/// The most attempts a queue dead-lettering after `max_receives` deliveries can honour.
pub fn max_honoured_attempts(max_receives: u32) -> u32 {
    max_receives.saturating_sub(RELEASE_MARGIN)
}

/// Most entries in one send, delete or visibility batch (SQS's limit).
pub const MAX_BATCH: usize = 10;

/// Largest message body (SQS's limit).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Proof of a particular delivery of a message, needed to delete it or change its visibility.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A delivered message.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    /// Stable id of the message across deliveries.
    pub id: String,
    /// The payload.
    pub body: String,
    /// This delivery's receipt.
    pub receipt: Receipt,
    /// How many times the message has been delivered, this time included.
    pub receive_count: u32,
}

/// A message waiting in the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Stable id of the message.
    pub id: String,
    /// The payload.
    pub body: String,
    /// Deliveries before it was dead-lettered.
    pub receive_count: u32,
    /// Why it was dead-lettered, where known.
    pub reason: Option<String>,
    /// Proof of this read, to delete the letter with.
    pub receipt: Receipt,
}

/// How many messages a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted, or waiting out a delay.
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// Per-entry failures of a batch call: (index into the batch, reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchFailures(pub Vec<(usize, String)>);

impl BatchFailures {
    /// Whether every entry succeeded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Queue errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// More than [`MAX_BATCH`] entries.
    #[error("a batch holds at most {MAX_BATCH} entries, got {0}")]
    BatchTooLarge(usize),
    /// A body over [`MAX_BODY_BYTES`].
    #[error("message body of {0} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    BodyTooLarge(usize),
    /// A receipt that does not belong to this queue's current delivery.
    #[error("receipt `{0}` is not valid")]
    InvalidReceipt(String),
    /// The backend failed.
    #[error("queue {queue}: {source}")]
    Backend {
        /// Which queue.
        queue: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A queue of task messages with SQS semantics; see the module docs for the contract.
#[async_trait]
pub trait TaskQueue: Send + Sync + std::fmt::Debug {
    /// The queue's name, for logs and reports.
    fn name(&self) -> &str;
    /// Enqueues up to [`MAX_BATCH`] bodies.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError>;
    /// Receives up to `max` (at most [`MAX_BATCH`]) messages, hiding them for `visibility`.
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<QueueMessage>, QueueError>;
    /// Sets each message's remaining invisibility, counted from now.
    async fn change_visibility(&self, changes: &[(Receipt, Duration)]) -> Result<BatchFailures, QueueError>;
    /// Deletes (acknowledges) messages.
    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError>;
    /// Moves a received message to the dead-letter queue now, recording why.
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError>;
    /// Up to `max` dead letters, oldest first, left in place.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Up to `max` (at most [`MAX_BATCH`]) dead letters not taken in the last `hold`, hidden
    /// for `hold` from now; an empty answer means none is left to take.
    async fn take_dead_letters(&self, max: usize, hold: Duration) -> Result<Vec<DeadLetter>, QueueError>;
    /// Removes dead letters read by `take_dead_letters` or `dead_letters`; removing one
    /// already gone succeeds.
    async fn delete_dead_letters(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError>;
    /// Sends every dead letter back to the queue; returns how many.
    async fn redrive(&self) -> Result<u64, QueueError>;
    /// Sends back the dead letters `select` picks and leaves the others (SQS's own redrive
    /// moves a whole queue); returns how many moved. The walk takes letters as
    /// `take_dead_letters` does, so one looked at and not picked stays hidden for `hold`; a
    /// picked one is sent before it is deleted, so a crash in between delivers it twice,
    /// never loses it. Built on the other methods, the same on every backend.
    async fn redrive_matching(
        &self,
        select: &(dyn for<'a> Fn(&'a DeadLetter) -> bool + Send + Sync),
        hold: Duration,
    ) -> Result<u64, QueueError> {
        let mut moved = 0;
        loop {
            let letters = self.take_dead_letters(MAX_BATCH, hold).await?;
            if letters.is_empty() {
                return Ok(moved);
            }
            let picked: Vec<&DeadLetter> = letters.iter().filter(|&letter| select(letter)).collect();
            if picked.is_empty() {
                continue;
            }
            let bodies: Vec<String> = picked.iter().map(|letter| letter.body.clone()).collect();
            self.send_batch(&bodies).await?;
            let receipts: Vec<Receipt> = picked.iter().map(|letter| letter.receipt.clone()).collect();
            let failures = self.delete_dead_letters(&receipts).await?;
            if !failures.is_empty() {
                let source = format!("redriven letters could not be removed from the dead-letter queue: {failures:?}");
                return Err(QueueError::Backend { queue: self.name().to_owned(), source: source.into() });
            }
            moved += picked.len() as u64;
        }
    }
    /// Message counts.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
    /// Deliveries after which the queue dead-letters a message by itself, where known.
    fn max_receives(&self) -> Option<u32> {
        None
    }
}

/// Checks a batch against the contract's limits.
pub fn check_batch(bodies: &[String]) -> Result<(), QueueError> {
    if bodies.len() > MAX_BATCH {
        return Err(QueueError::BatchTooLarge(bodies.len()));
    }
    match bodies.iter().find(|b| b.len() > MAX_BODY_BYTES) {
        Some(body) => Err(QueueError::BodyTooLarge(body.len())),
        None => Ok(()),
    }
}
