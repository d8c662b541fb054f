//! The [`TaskQueue`] contract. Visibility timeouts are whole seconds here because SQS counts
//! them in seconds.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::{QueueError, QueueMessage, TaskQueue, MAX_BATCH};

/// The `max_receives` every queue handed to [`run_all`] must be configured with.
pub const MAX_RECEIVES: u32 = 3;

const SECOND: Duration = Duration::from_secs(1);

/// Runs every queue check; `new_queue` must return a fresh, empty queue (with its dead-letter
/// queue) configured with [`MAX_RECEIVES`].
pub async fn run_all<F, Fut>(mut new_queue: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn TaskQueue>>,
{
    send_receive_delete(new_queue().await.as_ref()).await;
    receive_respects_max(new_queue().await.as_ref()).await;
    visibility_hides_then_redelivers(new_queue().await.as_ref()).await;
    change_visibility_extends_and_releases(new_queue().await.as_ref()).await;
    delete_is_idempotent(new_queue().await.as_ref()).await;
    max_receives_dead_letters_and_redrive(new_queue().await.as_ref()).await;
    explicit_dead_letter_keeps_reason(new_queue().await.as_ref()).await;
    dead_letters_are_consumed_completely(new_queue().await.as_ref()).await;
    batch_limits(new_queue().await.as_ref()).await;
    long_poll_returns_when_a_message_arrives(new_queue().await).await;
    a_receipt_from_before_a_redrive_is_stale(new_queue().await.as_ref()).await;
    a_filtered_redrive_moves_only_the_picked_letters(new_queue().await.as_ref()).await;
}

/// Receives until `count` messages have arrived or `deadline` passes.
async fn receive_n(queue: &dyn TaskQueue, count: usize, visibility: Duration) -> Vec<QueueMessage> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        let want = (count - got.len()).min(MAX_BATCH);
        got.extend(queue.receive(want, visibility, SECOND).await.expect("receive"));
    }
    got
}

async fn send_receive_delete(queue: &dyn TaskQueue) {
    let bodies: Vec<String> = (0..3).map(|i| format!("body-{i}")).collect();
    queue.send_batch(&bodies).await.expect("send");
    let got = receive_n(queue, 3, 30 * SECOND).await;
    let received: BTreeSet<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(received, bodies.iter().cloned().collect(), "every sent body is received");
    assert!(got.iter().all(|m| m.receive_count == 1), "first delivery has receive_count 1");
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    assert!(queue.delete_batch(&receipts).await.expect("delete").is_empty(), "deletes succeed");
    assert!(queue.receive(10, SECOND, Duration::ZERO).await.expect("receive").is_empty(), "deleted is gone");
}

async fn receive_respects_max(queue: &dyn TaskQueue) {
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    queue.send_batch(&bodies).await.expect("send");
    let got = queue.receive(3, 30 * SECOND, SECOND).await.expect("receive");
    assert!(!got.is_empty() && got.len() <= 3, "receive returns between 1 and max messages, got {}", got.len());
}

async fn visibility_hides_then_redelivers(queue: &dyn TaskQueue) {
    queue.send_batch(&["v".to_owned()]).await.expect("send");
    let first = receive_n(queue, 1, SECOND).await;
    assert_eq!(first.len(), 1);
    assert!(
        queue.receive(10, SECOND, Duration::ZERO).await.expect("receive").is_empty(),
        "a received message is hidden"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = receive_n(queue, 1, 30 * SECOND).await;
    assert_eq!(again.len(), 1, "an unacknowledged message is delivered again after its visibility timeout");
    assert_eq!(again[0].id, first[0].id, "redelivery keeps the message id");
    assert_eq!(again[0].receive_count, 2, "redelivery increments receive_count");
}

async fn change_visibility_extends_and_releases(queue: &dyn TaskQueue) {
    queue.send_batch(&["c".to_owned()]).await.expect("send");
    let got = receive_n(queue, 1, SECOND).await;
    let receipt = got[0].receipt.clone();
    let failures = queue.change_visibility(&[(receipt.clone(), 5 * SECOND)]).await.expect("extend");
    assert!(failures.is_empty(), "extending a held message succeeds");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        queue.receive(10, SECOND, Duration::ZERO).await.expect("receive").is_empty(),
        "an extended message stays hidden past its first timeout"
    );
    queue.change_visibility(&[(receipt, Duration::ZERO)]).await.expect("release");
    assert_eq!(receive_n(queue, 1, 30 * SECOND).await.len(), 1, "visibility zero releases the message at once");
}

async fn delete_is_idempotent(queue: &dyn TaskQueue) {
    queue.send_batch(&["d".to_owned()]).await.expect("send");
    let got = receive_n(queue, 1, 30 * SECOND).await;
    let receipts = vec![got[0].receipt.clone()];
    assert!(queue.delete_batch(&receipts).await.expect("delete").is_empty());
    assert!(queue.delete_batch(&receipts).await.expect("delete again").is_empty(), "deleting twice succeeds");
}

async fn max_receives_dead_letters_and_redrive(queue: &dyn TaskQueue) {
    queue.send_batch(&["poison".to_owned()]).await.expect("send");
    for delivery in 1..=MAX_RECEIVES {
        let got = receive_n(queue, 1, 30 * SECOND).await;
        assert_eq!(got.len(), 1, "delivery {delivery} of {MAX_RECEIVES} happens");
        assert_eq!(got[0].receive_count, delivery);
        queue.change_visibility(&[(got[0].receipt.clone(), Duration::ZERO)]).await.expect("release");
    }
    let after = queue.receive(10, 30 * SECOND, 2 * SECOND).await.expect("receive");
    assert!(after.is_empty(), "a message past max_receives is not delivered again");
    let letters = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "it is in the dead-letter queue");
    assert_eq!(letters[0].body, "poison");
    assert_eq!(queue.depth().await.expect("depth").dead, 1);
    assert_eq!(queue.redrive().await.expect("redrive"), 1, "redrive moves it back");
    let back = receive_n(queue, 1, 30 * SECOND).await;
    assert_eq!(back.len(), 1, "a redriven message is delivered");
    assert_eq!(back[0].body, "poison");
}

async fn explicit_dead_letter_keeps_reason(queue: &dyn TaskQueue) {
    queue.send_batch(&["bad".to_owned()]).await.expect("send");
    let got = receive_n(queue, 1, 30 * SECOND).await;
    queue.dead_letter(&got[0].receipt, "exit status 3").await.expect("dead letter");
    let letters = queue.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("exit status 3"), "the reason travels with the dead letter");
    assert!(queue.receive(10, SECOND, Duration::ZERO).await.expect("receive").is_empty());
}

/// A redrive resets the receive count, not the identity of deliveries: the receipt a worker
/// kept from before it must not extend or delete the message's next delivery.
async fn a_receipt_from_before_a_redrive_is_stale(queue: &dyn TaskQueue) {
    queue.send_batch(&["again".to_owned()]).await.expect("send");
    let first = receive_n(queue, 1, 30 * SECOND).await;
    queue.dead_letter(&first[0].receipt, "failed").await.expect("dead letter");
    assert_eq!(queue.redrive().await.expect("redrive"), 1);
    let second = receive_n(queue, 1, 30 * SECOND).await;
    assert_eq!(second[0].receive_count, 1, "the count starts again");
    let old = first[0].receipt.clone();
    let refused = queue.change_visibility(&[(old.clone(), 30 * SECOND)]).await.expect("change visibility");
    assert_eq!(refused.0.len(), 1, "the old receipt does not extend the new delivery");
    // SQS answers a delete with an old receipt with success ("the message might not be
    // deleted"): what both queues promise is that the message stays.
    queue.delete_batch(&[old]).await.expect("delete");
    assert_eq!(queue.depth().await.expect("depth").in_flight, 1, "nor delete it");
    let done = queue.delete_batch(&[second[0].receipt.clone()]).await.expect("delete");
    assert!(done.is_empty(), "the current receipt deletes it");
}

async fn batch_limits(queue: &dyn TaskQueue) {
    let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    assert!(matches!(queue.send_batch(&eleven).await, Err(QueueError::BatchTooLarge(11))), "sends hold at most 10");
    assert!(matches!(queue.receive(11, SECOND, Duration::ZERO).await, Err(QueueError::BatchTooLarge(11))));
    let huge = "x".repeat(crate::queue::MAX_BODY_BYTES + 1);
    assert!(matches!(queue.send_batch(&[huge]).await, Err(QueueError::BodyTooLarge(_))), "bodies are size-limited");
}

async fn long_poll_returns_when_a_message_arrives(queue: Arc<dyn TaskQueue>) {
    let sender = queue.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send_batch(&["late".to_owned()]).await.expect("send");
    });
    let started = Instant::now();
    let got = queue.receive(1, 30 * SECOND, 10 * SECOND).await.expect("receive");
    send.await.expect("sender");
    assert_eq!(got.len(), 1, "a long poll receives a message sent while it waits");
    assert!(started.elapsed() < Duration::from_secs(8), "a long poll returns when a message arrives, not at its end");
}

/// More dead letters than one read returns: taking until nothing comes back, and deleting what
/// was taken, sees every letter exactly once and leaves the dead-letter queue empty; a letter
/// taken and not deleted comes back once its hold has passed.
async fn dead_letters_are_consumed_completely(queue: &dyn TaskQueue) {
    let total = 25;
    let bodies: Vec<String> = (0..total).map(|i| format!("dead-{i:02}")).collect();
    for chunk in bodies.chunks(MAX_BATCH) {
        queue.send_batch(chunk).await.expect("send");
    }
    for message in receive_n(queue, total, 60 * SECOND).await {
        queue.dead_letter(&message.receipt, "poison").await.expect("dead-letter");
    }
    let mut seen = Vec::new();
    let mut kept_back = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let letters = queue.take_dead_letters(MAX_BATCH, 2 * SECOND).await.expect("take");
        if letters.is_empty() {
            break;
        }
        assert!(letters.len() <= MAX_BATCH);
        let mut receipts = Vec::new();
        for letter in letters {
            assert_eq!(letter.reason.as_deref(), Some("poison"));
            // Keep one back, undeleted, to see it return after its hold.
            if kept_back.is_none() {
                kept_back = Some(letter.body.clone());
            } else {
                receipts.push(letter.receipt.clone());
            }
            seen.push(letter.body);
        }
        assert!(queue.delete_dead_letters(&receipts).await.expect("delete").is_empty(), "deletes succeed");
        assert!(queue.delete_dead_letters(&receipts).await.expect("delete again").is_empty(), "idempotent");
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), total, "each letter taken once within its hold: {seen:?}");
    assert_eq!(unique, bodies.iter().cloned().collect(), "every letter taken");

    let kept = kept_back.expect("one kept back");
    let mut returned = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while returned.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(SECOND / 2).await;
        returned = queue.take_dead_letters(MAX_BATCH, 60 * SECOND).await.expect("take");
    }
    assert_eq!(returned.iter().map(|l| l.body.clone()).collect::<Vec<_>>(), vec![kept], "an undeleted letter returns");
    let receipts: Vec<_> = returned.iter().map(|l| l.receipt.clone()).collect();
    assert!(queue.delete_dead_letters(&receipts).await.expect("delete").is_empty());
    assert!(queue.dead_letters(MAX_BATCH).await.expect("list").is_empty(), "nothing left");
}

/// A redrive that picks by body and reason moves exactly those letters back, each once, and
/// leaves the rest dead, visible again once the walk's hold has passed.
async fn a_filtered_redrive_moves_only_the_picked_letters(queue: &dyn TaskQueue) {
    let bodies: Vec<String> = (0..6).map(|i| format!("letter-{i}")).collect();
    queue.send_batch(&bodies).await.expect("send");
    for message in receive_n(queue, bodies.len(), 60 * SECOND).await {
        let index: usize = message.body.trim_start_matches("letter-").parse().expect("index");
        let reason = if index.is_multiple_of(2) { "timed out after 5s" } else { "exit status 1" };
        queue.dead_letter(&message.receipt, reason).await.expect("dead-letter");
    }
    let select = |letter: &crate::queue::DeadLetter| {
        letter.reason.as_deref().is_some_and(|r| r.contains("timed out")) && letter.body != "letter-4"
    };
    let moved = queue.redrive_matching(&select, 2 * SECOND).await.expect("redrive");
    assert_eq!(moved, 2, "letter-0 and letter-2 match");
    let back = receive_n(queue, 2, 30 * SECOND).await;
    let back: BTreeSet<String> = back.iter().map(|m| m.body.clone()).collect();
    assert_eq!(back, ["letter-0", "letter-2"].map(str::to_owned).into_iter().collect(), "only the picked come back");
    assert!(queue.receive(10, SECOND, SECOND).await.expect("receive").is_empty(), "and nothing else");

    let mut left = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while left.len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(SECOND / 2).await;
        left.extend(queue.dead_letters(MAX_BATCH).await.expect("list").into_iter().map(|l| l.body));
    }
    let expected: BTreeSet<String> = ["letter-1", "letter-3", "letter-4", "letter-5"].map(str::to_owned).into();
    assert_eq!(left, expected, "the others stay dead");
    assert_eq!(queue.redrive_matching(&|_| false, SECOND).await.expect("none picked"), 0);
}
