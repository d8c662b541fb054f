//! A model-based test of the task queue contract on the SQLite queue: random interleavings of
//! send, receive, heartbeat, retry, release, final failure, acknowledgement (current, repeated
//! and stale), worker crash and redrive, each checked against a small reference model of what
//! the contract promises (see `batchgrid_core::queue`).
//!
//! Visibility is either zero (release, retry without backoff) or an hour (nothing expires while
//! a case runs), so the model needs no clock: a crashed worker's messages stay in flight.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use batchgrid_core::queue::sqlite::open_queue_database;
use batchgrid_core::queue::{Receipt, SqliteQueue, TaskQueue};
use proptest::prelude::*;

const MAX_RECEIVES: u32 = 3;
const LONG: Duration = Duration::from_secs(3600);

/// One step a worker or the manager takes.
#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Receive(usize),
    Heartbeat(usize),
    Retry(usize),
    Release(usize),
    FailForGood(usize),
    Ack(usize),
    AckAgain(usize),
    StaleHeartbeat(usize),
    StaleAck(usize),
    Crash,
    Redrive,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=3).prop_map(Op::Send),
        4 => (1usize..=4).prop_map(Op::Receive),
        2 => any::<usize>().prop_map(Op::Heartbeat),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::FailForGood),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckAgain),
        1 => any::<usize>().prop_map(Op::StaleHeartbeat),
        1 => any::<usize>().prop_map(Op::StaleAck),
        1 => Just(Op::Crash),
        1 => Just(Op::Redrive),
    ]
}

/// Where a message is, as the contract says it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Visible,
    Held,
    /// Held by a worker that crashed: in flight until its visibility times out.
    Abandoned,
    Dead,
    Deleted,
}

#[derive(Debug)]
struct Message {
    at: Where,
    /// Deliveries so far (the dead-letter queue keeps the count; redrive resets it).
    count: u32,
    /// Deliveries ever, never reset: a receipt belongs to one of them.
    deliveries: u32,
}

#[derive(Default, Debug)]
struct Model {
    messages: BTreeMap<String, Message>,
    /// Receipts a live worker holds: (body, receipt, the delivery it belongs to).
    held: Vec<(String, Receipt, u32)>,
    /// Receipts no live worker holds any more (released, retried, crashed, failed for good).
    issued: Vec<(String, Receipt, u32)>,
    /// Receipts of messages acknowledged since.
    acked: Vec<Receipt>,
    sent: usize,
}

impl Model {
    fn count(&self, at: Where) -> u64 {
        self.messages.values().filter(|m| m.at == at).count() as u64
    }

    fn take_held(&mut self, index: usize) -> Option<(String, Receipt, u32)> {
        (!self.held.is_empty()).then(|| {
            let i = index % self.held.len();
            self.held.remove(i)
        })
    }
}

async fn dead_bodies(queue: &SqliteQueue) -> HashSet<String> {
    queue.dead_letters(10_000).await.expect("dead letters").into_iter().map(|d| d.body).collect()
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("dir");
    let pool = open_queue_database(&dir.path().join("queue.db")).await.expect("queue database");
    let queue = SqliteQueue::new(pool, "input", MAX_RECEIVES);
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Send(n) => {
                let bodies: Vec<String> = (0..n).map(|i| format!("m{}", model.sent + i)).collect();
                model.sent += n;
                queue.send_batch(&bodies).await.expect("send");
                for body in bodies {
                    model.messages.insert(body, Message { at: Where::Visible, count: 0, deliveries: 0 });
                }
            }
            Op::Receive(max) => {
                let got = queue.receive(max, LONG, Duration::ZERO).await.expect("receive");
                prop_assert!(got.len() <= max, "at most {max} messages, got {}", got.len());
                let mut returned = HashSet::new();
                for message in got {
                    let Some(model_message) = model.messages.get_mut(&message.body) else {
                        return Err(TestCaseError::fail(format!("unknown message {}", message.body)));
                    };
                    prop_assert_eq!(model_message.at, Where::Visible, "only visible messages are delivered");
                    prop_assert_eq!(message.receive_count, model_message.count + 1, "the count rises by one");
                    prop_assert!(message.receive_count <= MAX_RECEIVES, "no delivery past max_receives");
                    model_message.count += 1;
                    model_message.at = Where::Held;
                    returned.insert(message.body.clone());
                    model_message.deliveries += 1;
                    let delivery = model_message.deliveries;
                    model.held.push((message.body, message.receipt, delivery));
                }
                // A visible message not delivered either waits, or was claimed once too often
                // and moved to the dead-letter queue.
                let dead = dead_bodies(&queue).await;
                for (body, message) in model.messages.iter_mut() {
                    if message.at == Where::Visible && !returned.contains(body) && dead.contains(body) {
                        prop_assert_eq!(message.count, MAX_RECEIVES, "dead-lettered only past max_receives");
                        message.at = Where::Dead;
                    }
                }
            }
            Op::Heartbeat(i) => {
                if let Some((body, receipt, delivery)) = model.take_held(i) {
                    let failures = queue.change_visibility(&[(receipt.clone(), LONG)]).await.expect("heartbeat");
                    prop_assert!(failures.is_empty(), "a current receipt's heartbeat succeeds: {failures:?}");
                    model.held.push((body, receipt, delivery));
                }
            }
            Op::Retry(i) | Op::Release(i) => {
                // A retry without backoff and a release are the same to the queue: visible now.
                if let Some((body, receipt, delivery)) = model.take_held(i) {
                    let failures =
                        queue.change_visibility(&[(receipt.clone(), Duration::ZERO)]).await.expect("release");
                    prop_assert!(failures.is_empty(), "{failures:?}");
                    if let Some(message) = model.messages.get_mut(&body) {
                        message.at = Where::Visible;
                    }
                    model.issued.push((body, receipt, delivery));
                }
            }
            Op::FailForGood(i) => {
                if let Some((body, receipt, delivery)) = model.take_held(i) {
                    queue.dead_letter(&receipt, "failed for good").await.expect("dead letter");
                    if let Some(message) = model.messages.get_mut(&body) {
                        message.at = Where::Dead;
                    }
                    model.issued.push((body, receipt, delivery));
                }
            }
            Op::Ack(i) => {
                if let Some((body, receipt, _)) = model.take_held(i) {
                    let failures = queue.delete_batch(std::slice::from_ref(&receipt)).await.expect("delete");
                    prop_assert!(failures.is_empty(), "{failures:?}");
                    if let Some(message) = model.messages.get_mut(&body) {
                        message.at = Where::Deleted;
                    }
                    model.issued.retain(|(b, _, _)| b != &body);
                    model.acked.push(receipt);
                }
            }
            Op::AckAgain(i) => {
                if !model.acked.is_empty() {
                    let receipt = model.acked[i % model.acked.len()].clone();
                    let failures = queue.delete_batch(&[receipt]).await.expect("delete again");
                    prop_assert!(failures.is_empty(), "deleting a deleted message succeeds: {failures:?}");
                }
            }
            Op::StaleHeartbeat(i) | Op::StaleAck(i) => {
                // Receipts of a delivery that has been superseded (the message was delivered
                // again since) or of a message now in the dead-letter queue. A receipt whose
                // message was only released, not delivered again, is still its latest (as on SQS).
                let stale: Vec<(String, Receipt)> = model
                    .issued
                    .iter()
                    .filter(|(body, _, delivery)| {
                        model.messages.get(body).is_some_and(|m| m.at == Where::Dead || m.deliveries > *delivery)
                    })
                    .map(|(body, receipt, _)| (body.clone(), receipt.clone()))
                    .collect();
                if !stale.is_empty() {
                    let (body, receipt) = stale[i % stale.len()].clone();
                    let dead = model.messages.get(&body).is_some_and(|m| m.at == Where::Dead);
                    let (failures, refused) = if matches!(op, Op::StaleAck(_)) {
                        // To the queue a dead letter is gone, and deleting what is gone succeeds.
                        (queue.delete_batch(std::slice::from_ref(&receipt)).await.expect("stale delete"), !dead)
                    } else {
                        (queue.change_visibility(&[(receipt.clone(), LONG)]).await.expect("stale heartbeat"), true)
                    };
                    prop_assert_eq!(
                        failures.0.len(),
                        usize::from(refused),
                        "receipt {:?} of {} (dead: {}): refused when superseded",
                        receipt,
                        body,
                        dead
                    );
                }
            }
            Op::Crash => {
                for (body, receipt, delivery) in std::mem::take(&mut model.held) {
                    if let Some(message) = model.messages.get_mut(&body) {
                        message.at = Where::Abandoned;
                    }
                    model.issued.push((body, receipt, delivery));
                }
            }
            Op::Redrive => {
                let moved = queue.redrive().await.expect("redrive");
                prop_assert_eq!(moved, model.count(Where::Dead), "every dead letter goes back");
                for message in model.messages.values_mut().filter(|m| m.at == Where::Dead) {
                    message.at = Where::Visible;
                    message.count = 0;
                }
                // Receipts of dead-lettered messages are stale; they stay stale after redrive.
            }
        }
        let depth = queue.depth().await.expect("depth");
        let expected = (
            model.count(Where::Visible),
            model.count(Where::Held) + model.count(Where::Abandoned),
            model.count(Where::Dead),
        );
        prop_assert_eq!((depth.visible, depth.in_flight, depth.dead), expected, "depth after {:?}", op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_sqlite_queue_follows_the_contract_under_random_interleavings(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run_case(ops))?;
    }
}
