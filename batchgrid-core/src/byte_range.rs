//! Splits without copying, as Hadoop's input splits: a first-stage task names a byte range of
//! the original input, and the worker reads its range itself.
//!
//! The manager cuts ranges from the input's size alone ([`plan`]), anywhere, even inside a
//! line or a multi-byte character. A line belongs to the range holding its first byte, so the
//! reader ([`read_aligned`]) of `[start, end)` skips to the first line start at or after
//! `start` (unless `start` is the body's start) and reads past `end` to the end of the line
//! holding byte `end - 1`. Every line lands in exactly one range, whatever the cuts: the
//! ranges' chunks concatenate to exactly the input's body. A range holding no line start (a
//! line longer than a range) reads nothing.

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Bytes read past a range's end per request while looking for the end of its last line.
const OVERREAD: u64 = 64 * 1024;
/// Longest header line accepted.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// A byte range of a job's input, as a task message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRange {
    /// Where the input is.
    pub source: RangeSource,
    /// First byte of the range.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
    /// Where the body starts (after the header line, when the split keeps one): a range
    /// starting there starts at a line start.
    pub body_start: u64,
    /// The input's size.
    pub size: u64,
    /// The header line (newline included) to put before the chunk, when the split keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// Where a range's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeSource {
    /// A file on the worker's machine (an embedded grid: manager and workers share the disk).
    File(PathBuf),
    /// An object in S3.
    Object {
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
}

/// Reads bytes of one input.
#[async_trait]
pub trait RangeRead: Send + Sync {
    /// Bytes `[start, end)`, fewer only at the end of the input.
    async fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>>;
}

/// What every range of one input shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeInput {
    /// The input's size.
    pub size: u64,
    /// Where the body starts (after the header line, when kept).
    pub body_start: u64,
    /// The header line, newline included, when the split keeps one.
    pub header: Option<String>,
}

/// Why an input cannot be split into ranges.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// Reading the input failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The header line is longer than [`MAX_HEADER_BYTES`] or is not UTF-8 text.
    #[error("the header line is not UTF-8 text of at most {MAX_HEADER_BYTES} bytes")]
    Header,
}

impl RangeInput {
    /// An input whose body starts after its header line, from its first bytes (up to
    /// [`MAX_HEADER_BYTES`] of them, or all of a shorter input).
    pub fn with_header(prefix: &[u8], size: u64) -> Result<Self, RangeError> {
        let end = header_end(prefix, size).ok_or(RangeError::Header)?;
        let text = std::str::from_utf8(&prefix[..end as usize]).map_err(|_| RangeError::Header)?;
        Ok(Self { size, body_start: end, header: Some(text.to_owned()) })
    }
}

/// Cuts `[body_start, size)` into ranges of `range_bytes` (the last one shorter).
pub fn plan(body_start: u64, size: u64, range_bytes: u64) -> Vec<(u64, u64)> {
    let step = range_bytes.max(1);
    let mut ranges = Vec::new();
    let mut start = body_start;
    while start < size {
        let end = start.saturating_add(step).min(size);
        ranges.push((start, end));
        start = end;
    }
    ranges
}

/// The end of the header line (one past its newline, or the input's end) from the input's
/// first bytes; `None` when no newline is within `prefix` and the input goes on past it.
pub fn header_end(prefix: &[u8], size: u64) -> Option<u64> {
    match prefix.iter().position(|&b| b == b'\n') {
        Some(at) => Some(at as u64 + 1),
        None if prefix.len() as u64 >= size => Some(size),
        None => None,
    }
}

/// The chunk of `range`: its lines, whole, as [`read_aligned`] defines them, with the header
/// first when there is one (and the chunk is not empty).
pub async fn read_chunk(source: &dyn RangeRead, range: &InputRange) -> io::Result<Vec<u8>> {
    let body = read_aligned(source, range.body_start, range.size, range.start, range.end).await?;
    Ok(match &range.header {
        Some(header) if !body.is_empty() => {
            let mut chunk = Vec::with_capacity(header.len() + body.len());
            chunk.extend_from_slice(header.as_bytes());
            chunk.extend_from_slice(&body);
            chunk
        }
        _ => body,
    })
}

/// The lines whose first byte is in `[start, end)`, of an input of `size` bytes whose body
/// starts at `body_start` (a line start).
pub async fn read_aligned(
    source: &dyn RangeRead,
    body_start: u64,
    size: u64,
    start: u64,
    end: u64,
) -> io::Result<Vec<u8>> {
    let end = end.min(size);
    if start >= end {
        return Ok(Vec::new());
    }
    // From byte start - 1: if it is a newline, start is a line start; otherwise the first
    // line start is just past the next newline.
    let from = if start > body_start { start - 1 } else { start };
    let mut data = source.read(from, end).await?;
    let first = if start > body_start {
        match data.iter().position(|&b| b == b'\n') {
            Some(at) => at + 1,
            // No line starts in this range: the line from before runs through it.
            None => return Ok(Vec::new()),
        }
    } else {
        0
    };
    // The last line: through the first newline at or after byte end - 1.
    let mut next = from + data.len() as u64;
    let last_byte_is_newline = data.last() == Some(&b'\n');
    if !last_byte_is_newline && first < data.len() {
        while next < size {
            let more = source.read(next, next.saturating_add(OVERREAD).min(size)).await?;
            if more.is_empty() {
                break;
            }
            next += more.len() as u64;
            match more.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    data.extend_from_slice(&more[..=at]);
                    break;
                }
                None => data.extend_from_slice(&more),
            }
        }
    }
    if first >= data.len() {
        return Ok(Vec::new());
    }
    data.drain(..first);
    Ok(data)
}

/// A local file's bytes.
#[derive(Debug, Clone)]
pub struct FileRange(pub PathBuf);

#[async_trait]
impl RangeRead for FileRange {
    async fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(&self.0).await?;
        file.seek(io::SeekFrom::Start(start)).await?;
        let mut data = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        file.take(end.saturating_sub(start)).read_to_end(&mut data).await?;
        Ok(data)
    }
}

pub mod copy;
pub mod lines;
pub mod local;
pub mod object;

#[cfg(test)]
mod tests;
