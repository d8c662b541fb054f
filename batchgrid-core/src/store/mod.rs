//! The object store: where raw input, staged chunks and results live.
//!
//! # Contract
//! - Keys are `/`-separated paths of non-empty segments without `.` or `..`; anything else is
//!   [`StoreError::InvalidKey`].
//! - `put` and `put_file` are atomic: a reader sees the old object or the new one, never a part.
//!   Writing a key again replaces it, which is what makes results idempotent: a task that runs
//!   twice writes the same deterministic keys.
//! - `get` of a missing key is [`StoreError::NotFound`].
//! - `list(prefix)` returns every object whose key starts with `prefix`, sorted by key.
//! - `delete` of a missing key succeeds.
//! - `list_page(prefix, after, limit)` returns at most `limit` of the objects `list(prefix)`
//!   would, those whose keys sort after `after`, and whether more follow; paging with the last
//!   key of each page visits every object once.
//! - `get_stream` of a missing key is [`StoreError::NotFound`], before any byte is read.
//! - `presigned_get` is `None` where the store has no URLs of its own (a directory).

pub mod local;
#[cfg(feature = "aws")]
pub mod s3;

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use local::LocalStore;
#[cfg(feature = "aws")]
pub use s3::S3Store;

/// What a listing returns for each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object's bytes as they arrive.
pub type ByteChunks = BoxStream<'static, Result<Bytes, StoreError>>;

/// An object being read: its size, known before the first byte, then its bytes.
pub struct ObjectReader {
    /// The object's size in bytes.
    pub size: u64,
    /// Its bytes, in order.
    pub chunks: ByteChunks,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader").field("size", &self.size).finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The objects, sorted by key.
    pub objects: Vec<ObjectMeta>,
    /// Whether objects follow the last one.
    pub more: bool,
}

/// Object store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key breaks the key rules.
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    /// No object has this key.
    #[error("object `{0}` not found")]
    NotFound(String),
    /// The backend failed.
    #[error("object store: {context}: {source}")]
    Backend {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error with what was being done.
    pub fn backend(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend { context: context.into(), source: Box::new(source) }
    }
}

/// Opens a store over another bucket of the grid's account: a worker reading its byte range of
/// an `s3://` input where it lies.
#[derive(Clone)]
pub struct Buckets(pub OpenBucket);

/// A function from a bucket's name to its store.
pub type OpenBucket = Arc<dyn Fn(&str) -> Arc<dyn ObjectStore> + Send + Sync>;

impl Buckets {
    /// The store of `bucket`.
    pub fn open(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        (self.0)(bucket)
    }
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Buckets")
    }
}

/// One object's bytes, for [`crate::byte_range::read_chunk`].
#[derive(Debug, Clone)]
pub struct ObjectRange {
    /// The object's store.
    pub store: Arc<dyn ObjectStore>,
    /// Its key.
    pub key: String,
}

#[async_trait]
impl crate::byte_range::RangeRead for ObjectRange {
    async fn read(&self, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
        self.store.get_range(&self.key, start, end).await.map(|b| b.to_vec()).map_err(std::io::Error::other)
    }
}

/// A key/value store of immutable-per-version objects (a directory, S3).
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` under `key`, replacing any object there.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Stores the file at `path` under `key`, streaming it; returns the bytes stored.
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Streams an object into a local file (created or truncated); returns the bytes written.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// Streams an object: its size first, then its bytes as they arrive, with no copy on the way.
    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError>;
    /// Every object under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// At most `limit` objects under `prefix` whose keys sort after `after`, sorted by key.
    /// The default lists everything and cuts; remote stores ask for one page.
    async fn list_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ListPage, StoreError> {
        let mut objects: Vec<ObjectMeta> =
            self.list(prefix).await?.into_iter().filter(|o| after.is_none_or(|a| o.key.as_str() > a)).collect();
        let more = objects.len() > limit;
        objects.truncate(limit);
        Ok(ListPage { objects, more })
    }
    /// A URL anyone holding it may GET the object from until `expires` has passed, where the
    /// store has such URLs (S3's presigned requests); `None` where it does not.
    async fn presigned_get(&self, _key: &str, _expires: Duration) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Removes objects; missing keys are not an error.
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;

    /// Bytes `[start, end)` of an object (fewer at its end): a byte-range task's chunk.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError>;
    /// An object's size, without reading it.
    async fn size(&self, key: &str) -> Result<u64, StoreError>;

    /// Whether the store is a directory of this machine's (the embedded grid), whose
    /// processes share one disk: only then may a task name a local file as its input.
    fn is_local(&self) -> bool {
        false
    }

    /// Where the object already is a local file, its path, to be read and never written.
    /// Stores on disk return one so that a task can read its input in place; remote stores
    /// return `None` and the caller downloads.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// Checks a key against the contract's rules.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let valid = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
        && !key.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}
