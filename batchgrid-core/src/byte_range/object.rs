//! An object read once, in order, by ranged GETs of a few MiB with a few in flight: how the
//! manager finds the line starts of an `s3://` input's `lines:` split without downloading it
//! to disk. Memory stays at most `block × in_flight` whatever the object's size.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::plan;
use crate::store::{ObjectStore, StoreError};

/// How an object is read block by block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockReads {
    /// Bytes per ranged GET.
    pub block_bytes: u64,
    /// GETs in flight at once (their blocks are still handed over in order).
    pub in_flight: usize,
}

impl Default for BlockReads {
    /// 8 MiB per GET (a few per second per connection on S3), 4 in flight: at most 32 MiB held.
    fn default() -> Self {
        Self { block_bytes: 8 << 20, in_flight: 4 }
    }
}

/// Bytes `[start, size)` of `key`, as consecutive blocks in order.
pub fn blocks(
    store: Arc<dyn ObjectStore>,
    key: String,
    start: u64,
    size: u64,
    reads: BlockReads,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send {
    futures::stream::iter(plan(start, size, reads.block_bytes))
        .map(move |(from, to)| {
            let (store, key) = (store.clone(), key.clone());
            async move { store.get_range(&key, from, to).await }
        })
        .buffered(reads.in_flight.max(1))
}
