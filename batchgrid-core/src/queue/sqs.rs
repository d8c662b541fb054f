//! The task queue on SQS: a standard queue whose redrive policy names its dead-letter queue.
//!
//! The contract maps onto SQS directly (receive, visibility, batch delete, redrive policy). Two
//! operations SQS has no call for are built from others:
//! - `dead_letter` sends the body to the dead-letter queue with the reason as a message
//!   attribute, then deletes the original. SQS cannot read a message by receipt, so the queue
//!   remembers the bodies of the messages it delivered until they are deleted or released.
//! - `dead_letters` peeks by receiving from the dead-letter queue with a zero visibility timeout,
//!   and `redrive` moves messages back by send-then-delete.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::{
    check_batch, BatchFailures, DeadLetter, QueueDepth, QueueError, QueueMessage, Receipt, TaskQueue, MAX_BATCH,
    MAX_BODY_BYTES,
};
use crate::aws::error_text;

/// Message attribute that carries why a message was dead-lettered.
const REASON_ATTRIBUTE: &str = "batchgrid-reason";
/// SQS's limits on wait and visibility, in seconds.
const MAX_WAIT_SECONDS: u64 = 20;
const MAX_VISIBILITY_SECONDS: u64 = 12 * 60 * 60;
/// Deliveries remembered for `dead_letter` are forgotten after this long (a message released by
/// a heartbeat that then stopped, for example).
const REMEMBER_FOR: Duration = Duration::from_secs(13 * 60 * 60);
/// Tries of the entries of a send batch that SQS failed on its side.
const SEND_TRIES: u32 = 4;

/// An SQS failure, as text with its causes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqsFailure(String);

/// An SQS queue and its dead-letter queue as a [`TaskQueue`].
#[derive(Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    url: String,
    dead_letter_url: String,
    /// The redrive policy's `maxReceiveCount`.
    max_receives: Option<u32>,
    delivered: Mutex<HashMap<String, (String, Instant)>>,
}

/// A batch answer's failed entries, by their index in the batch (entry ids are indices).
fn batch_failures(failed: Vec<BatchResultErrorEntry>) -> BatchFailures {
    BatchFailures(
        failed
            .into_iter()
            .filter_map(|f| Some((f.id.parse().ok()?, format!("{}: {}", f.code, f.message.unwrap_or_default()))))
            .collect(),
    )
}

/// Whole seconds, rounded up, capped at `max`.
fn seconds(duration: Duration, max: u64) -> i32 {
    let mut secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs += 1;
    }
    secs.min(max) as i32
}

impl SqsQueue {
    /// Opens the queue at `url`; its dead-letter queue is found through its redrive policy.
    pub async fn open(client: aws_sdk_sqs::Client, url: &str) -> Result<Self, QueueError> {
        let name = url.rsplit('/').next().unwrap_or(url).to_owned();
        let fail = |message: String| QueueError::Backend { queue: name.clone(), source: Box::new(SqsFailure(message)) };
        let attributes = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| fail(error_text(&e)))?;
        let policy = attributes
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned())
            .ok_or_else(|| fail("the queue has no redrive policy, so it has no dead-letter queue".into()))?;
        let policy: serde_json::Value =
            serde_json::from_str(&policy).map_err(|e| fail(format!("unreadable redrive policy: {e}")))?;
        // A number, or a number in a string, as CloudFormation writes it.
        let max_receives = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let target = policy["deadLetterTargetArn"]
            .as_str()
            .ok_or_else(|| fail("the redrive policy names no deadLetterTargetArn".into()))?;
        // arn:aws:sqs:REGION:ACCOUNT:NAME
        let mut parts = target.rsplitn(2, ':');
        let dead_name = parts.next().unwrap_or_default();
        let account = parts.next().and_then(|rest| rest.rsplit(':').next()).unwrap_or_default();
        let dead = client
            .get_queue_url()
            .queue_name(dead_name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| fail(format!("dead-letter queue {dead_name}: {}", error_text(&e))))?;
        Ok(Self {
            client,
            name,
            url: url.to_owned(),
            dead_letter_url: dead.queue_url.unwrap_or_default(),
            max_receives,
            delivered: Mutex::new(HashMap::new()),
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn fail<E: std::error::Error>(&self, action: &str, error: &E) -> QueueError {
        QueueError::Backend {
            queue: self.name.clone(),
            source: Box::new(SqsFailure(format!("{action}: {}", error_text(error)))),
        }
    }

    fn fail_text(&self, message: String) -> QueueError {
        QueueError::Backend { queue: self.name.clone(), source: Box::new(SqsFailure(message)) }
    }

    fn remember(&self, messages: &[QueueMessage]) {
        if let Ok(mut delivered) = self.delivered.lock() {
            let now = Instant::now();
            delivered.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_FOR);
            for message in messages {
                delivered.insert(message.receipt.0.clone(), (message.body.clone(), now));
            }
        }
    }

    fn forget(&self, receipts: impl IntoIterator<Item = String>) {
        if let Ok(mut delivered) = self.delivered.lock() {
            for receipt in receipts {
                delivered.remove(&receipt);
            }
        }
    }

    /// Sends bodies to `url`, splitting by SQS's 256 KiB limit on a whole batch and retrying
    /// entries that failed on SQS's side.
    async fn send_to(&self, url: &str, bodies: &[(String, Option<String>)]) -> Result<(), QueueError> {
        let mut start = 0;
        while start < bodies.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len() && end - start < MAX_BATCH && bytes + bodies[end].0.len() <= MAX_BODY_BYTES {
                bytes += bodies[end].0.len();
                end += 1;
            }
            self.send_chunk(url, &bodies[start..end]).await?;
            start = end;
        }
        Ok(())
    }

    async fn send_chunk(&self, url: &str, bodies: &[(String, Option<String>)]) -> Result<(), QueueError> {
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        for attempt in 1..=SEND_TRIES {
            let mut entries = Vec::with_capacity(pending.len());
            for &index in &pending {
                let (body, reason) = &bodies[index];
                let mut entry = SendMessageBatchRequestEntry::builder().id(index.to_string()).message_body(body);
                if let Some(reason) = reason {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(reason)
                        .build()
                        .map_err(|e| self.fail("send", &e))?;
                    entry = entry.message_attributes(REASON_ATTRIBUTE, value);
                }
                entries.push(entry.build().map_err(|e| self.fail("send", &e))?);
            }
            let output = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.fail("send", &e))?;
            let failed = output.failed;
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(fault) = failed.iter().find(|f| f.sender_fault) {
                return Err(self.fail_text(format!(
                    "send refused: {}: {}",
                    fault.code,
                    fault.message.clone().unwrap_or_default()
                )));
            }
            pending = failed.iter().filter_map(|f| f.id.parse().ok()).collect();
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        Err(self.fail_text(format!("{} message(s) not accepted after {SEND_TRIES} tries", pending.len())))
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<(QueueMessage, Option<String>)>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(seconds(visibility, MAX_VISIBILITY_SECONDS))
            .wait_time_seconds(seconds(wait, MAX_WAIT_SECONDS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(REASON_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| self.fail("receive", &e))?;
        let mut messages = Vec::new();
        for message in output.messages.unwrap_or_default() {
            let receive_count = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            let reason = message
                .message_attributes
                .as_ref()
                .and_then(|a| a.get(REASON_ATTRIBUTE))
                .and_then(|v| v.string_value.clone());
            let (Some(id), Some(receipt)) = (message.message_id, message.receipt_handle) else { continue };
            let body = message.body.unwrap_or_default();
            messages.push((QueueMessage { id, body, receipt: Receipt(receipt), receive_count }, reason));
        }
        Ok(messages)
    }

    /// Message-count attributes of the queue at `url`.
    async fn counts(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<Option<HashMap<QueueAttributeName, String>>, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| self.fail("depth", &e))?;
        Ok(output.attributes)
    }

    async fn delete_from(&self, url: &str, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        if receipts.is_empty() {
            return Ok(BatchFailures::default());
        }
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&r.0).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail("delete", &e))?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail("delete", &e))?;
        Ok(batch_failures(output.failed))
    }
}

/// A message read from the dead-letter queue, with the reason its worker gave.
fn dead_letter(message: QueueMessage, reason: Option<String>) -> DeadLetter {
    DeadLetter {
        id: message.id,
        body: message.body,
        receive_count: message.receive_count,
        reason,
        receipt: message.receipt,
    }
}

#[async_trait]
impl TaskQueue for SqsQueue {
    fn max_receives(&self) -> Option<u32> {
        self.max_receives
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        check_batch(bodies)?;
        let bodies: Vec<(String, Option<String>)> = bodies.iter().map(|b| (b.clone(), None)).collect();
        self.send_to(&self.url, &bodies).await
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        if max > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(max));
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let messages: Vec<QueueMessage> =
            self.receive_from(&self.url, max, visibility, wait).await?.into_iter().map(|(m, _)| m).collect();
        self.remember(&messages);
        Ok(messages)
    }

    async fn change_visibility(&self, changes: &[(Receipt, Duration)]) -> Result<BatchFailures, QueueError> {
        if changes.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(changes.len()));
        }
        if changes.is_empty() {
            return Ok(BatchFailures::default());
        }
        let entries = changes
            .iter()
            .enumerate()
            .map(|(i, (receipt, visibility))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&receipt.0)
                    .visibility_timeout(seconds(*visibility, MAX_VISIBILITY_SECONDS))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail("change visibility", &e))?;
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.fail("change visibility", &e))?;
        // A released message will be delivered again, through another receipt.
        self.forget(changes.iter().filter(|(_, v)| v.is_zero()).map(|(r, _)| r.0.clone()));
        Ok(batch_failures(output.failed))
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipts.len()));
        }
        let failures = self.delete_from(&self.url, receipts).await?;
        self.forget(receipts.iter().map(|r| r.0.clone()));
        Ok(failures)
    }

    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), QueueError> {
        let body = self
            .delivered
            .lock()
            .ok()
            .and_then(|d| d.get(&receipt.0).map(|(body, _)| body.clone()))
            .ok_or_else(|| QueueError::InvalidReceipt(receipt.0.clone()))?;
        // SQS message attributes hold at most 256 KiB with the body; reasons are short lines.
        let reason: String = reason.chars().take(4096).collect();
        self.send_to(&self.dead_letter_url, &[(body, Some(reason))]).await?;
        let failures = self.delete_from(&self.url, std::slice::from_ref(receipt)).await?;
        self.forget([receipt.0.clone()]);
        match failures.0.into_iter().next() {
            None => Ok(()),
            Some((_, reason)) => Err(self.fail_text(format!("dead-lettered, but the original stays: {reason}"))),
        }
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut letters: Vec<DeadLetter> = Vec::new();
        // Zero visibility leaves them in place; receives sample, so ask until nothing new comes.
        while letters.len() < max {
            let want = (max - letters.len()).min(MAX_BATCH);
            let got = self.receive_from(&self.dead_letter_url, want, Duration::ZERO, Duration::ZERO).await?;
            let before = letters.len();
            for (message, reason) in got {
                if letters.iter().all(|l| l.id != message.id) {
                    letters.push(dead_letter(message, reason));
                }
            }
            if letters.len() == before {
                break;
            }
        }
        Ok(letters)
    }

    async fn take_dead_letters(&self, max: usize, hold: Duration) -> Result<Vec<DeadLetter>, QueueError> {
        let got = self.receive_from(&self.dead_letter_url, max.min(MAX_BATCH), hold, Duration::ZERO).await?;
        Ok(got.into_iter().map(|(message, reason)| dead_letter(message, reason)).collect())
    }

    async fn delete_dead_letters(&self, receipts: &[Receipt]) -> Result<BatchFailures, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipts.len()));
        }
        self.delete_from(&self.dead_letter_url, receipts).await
    }

    async fn redrive(&self) -> Result<u64, QueueError> {
        let mut moved = 0;
        loop {
            let got =
                self.receive_from(&self.dead_letter_url, MAX_BATCH, Duration::from_secs(60), Duration::ZERO).await?;
            if got.is_empty() {
                return Ok(moved);
            }
            let bodies: Vec<(String, Option<String>)> = got.iter().map(|(m, _)| (m.body.clone(), None)).collect();
            self.send_to(&self.url, &bodies).await?;
            let receipts: Vec<Receipt> = got.iter().map(|(m, _)| m.receipt.clone()).collect();
            self.delete_from(&self.dead_letter_url, &receipts).await?;
            moved += got.len() as u64;
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let count = |attributes: &Option<HashMap<QueueAttributeName, String>>, name: QueueAttributeName| -> u64 {
            attributes.as_ref().and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let main = self
            .counts(
                &self.url,
                &[
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                ],
            )
            .await?;
        let dead = self
            .counts(
                &self.dead_letter_url,
                &[
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                ],
            )
            .await?;
        Ok(QueueDepth {
            visible: count(&main, QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(&main, QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + count(&main, QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            dead: count(&dead, QueueAttributeName::ApproximateNumberOfMessages)
                + count(&dead, QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
    use aws_sdk_sqs::types::{DeleteMessageBatchResultEntry, SendMessageBatchResultEntry};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    fn queue(client: aws_sdk_sqs::Client) -> SqsQueue {
        SqsQueue {
            client,
            name: "q".into(),
            url: "https://sqs.example/123/q".into(),
            dead_letter_url: "https://sqs.example/123/q-dlq".into(),
            max_receives: Some(5),
            delivered: Mutex::new(HashMap::new()),
        }
    }

    fn sent(id: &str) -> SendMessageBatchResultEntry {
        SendMessageBatchResultEntry::builder()
            .id(id)
            .message_id(format!("m{id}"))
            .md5_of_message_body("x")
            .build()
            .expect("entry")
    }

    fn failed(id: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder().id(id).code("InternalError").sender_fault(sender_fault).build().expect("entry")
    }

    /// A partial failure on SQS's side is retried for the failed entries only.
    #[tokio::test]
    async fn entries_sqs_failed_are_sent_again_alone() {
        let partial = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 3)
            .then_output(|| {
                SendMessageBatchOutput::builder()
                    .successful(sent("0"))
                    .successful(sent("2"))
                    .failed(failed("1", false))
                    .build()
                    .expect("output")
            });
        let retry = mock!(aws_sdk_sqs::Client::send_message_batch)
            .match_requests(|r| r.entries().len() == 1 && r.entries()[0].message_body() == "b")
            .then_output(|| {
                SendMessageBatchOutput::builder()
                    .successful(sent("1"))
                    .set_failed(Some(vec![]))
                    .build()
                    .expect("output")
            });
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&partial, &retry]);
        let bodies = ["a", "b", "c"].map(String::from);
        queue(client).send_batch(&bodies).await.expect("sent in the end");
        assert_eq!((partial.num_calls(), retry.num_calls()), (1, 1));
    }

    /// A failure that is the sender's fault is not retried: it would fail the same way.
    #[tokio::test]
    async fn sender_faults_are_errors_at_once() {
        let refused = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
            SendMessageBatchOutput::builder().successful(sent("0")).failed(failed("1", true)).build().expect("output")
        });
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&refused]);
        let error = queue(client).send_batch(&["a".into(), "b".into()]).await.expect_err("refused");
        assert!(error.to_string().contains("InternalError"), "{error}");
        assert_eq!(refused.num_calls(), 1);
    }

    /// A delete batch that fails for some entries reports them by index.
    #[tokio::test]
    async fn partial_delete_failures_name_their_entries() {
        let partial = mock!(aws_sdk_sqs::Client::delete_message_batch).then_output(|| {
            DeleteMessageBatchOutput::builder()
                .successful(DeleteMessageBatchResultEntry::builder().id("0").build().expect("entry"))
                .failed(failed("1", true))
                .build()
                .expect("output")
        });
        let client = mock_client!(aws_sdk_sqs, RuleMode::Sequential, [&partial]);
        let receipts = [Receipt("r0".into()), Receipt("r1".into())];
        let failures = queue(client).delete_batch(&receipts).await.expect("delete");
        assert_eq!(failures.0.len(), 1);
        assert_eq!(failures.0[0].0, 1, "the second entry failed");
    }

    #[test]
    fn durations_round_up_to_whole_seconds_within_limits() {
        assert_eq!(seconds(Duration::ZERO, 20), 0);
        assert_eq!(seconds(Duration::from_millis(1), 20), 1);
        assert_eq!(seconds(Duration::from_secs(2), 20), 2);
        assert_eq!(seconds(Duration::from_secs(90), 20), 20);
    }
}
