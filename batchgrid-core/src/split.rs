//! Cutting a job's input into first-stage tasks, streaming: one file per task, or chunks of N
//! lines or about N bytes cut after a newline. Memory use does not depend on the input's size
//! (nor on its line lengths): bytes are copied from the read buffer into the chunk, which stays
//! in memory while small (no file to create and delete per chunk) and moves to a spool file past
//! [`SPOOL_THRESHOLD`].
//!
//! Where the input can be read in place, tasks name byte ranges of it ([`split_ranges`],
//! [`split_object_lines`]) or whole S3 objects ([`split_object_prefix`], [`split_manifest`])
//! instead, and nothing is copied.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::byte_range::lines::LineCutter;
use crate::byte_range::object::{blocks, BlockReads};
use crate::byte_range::RangeInput;
use crate::manifest::{ManifestEntry, ManifestError, ManifestReader};
use crate::spec::SplitSpec;
use crate::store::{ObjectStore, StoreError};

/// Objects asked for per listing request of an `s3://` prefix (S3's most).
const LIST_PAGE: usize = 1000;

/// Chunks larger than this are written to a spool file instead of kept in memory.
pub const SPOOL_THRESHOLD: usize = 4 * 1024 * 1024;

/// Longest header line accepted when `header` is set.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Where a chunk's bytes are.
#[derive(Debug)]
pub enum ChunkData {
    /// Small chunks: in memory.
    Memory(Vec<u8>),
    /// A file: a spool file the consumer removes once staged, or (not spooled) the user's own.
    File {
        /// The file.
        path: PathBuf,
        /// Whether it is a spool file to remove.
        spooled: bool,
    },
    /// Bytes `[start, end)` of the input itself, which the worker reads: nothing is copied.
    Range {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// A whole object in S3, which the worker reads where it is: nothing is copied.
    Object {
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
}

/// One piece of input, ready to be staged.
#[derive(Debug)]
pub struct Chunk {
    /// Position in the input, from 0.
    pub index: u64,
    /// The chunk's bytes.
    pub data: ChunkData,
    /// Name the staged object gets.
    pub file_name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Splitting errors.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Reading the input or writing a chunk failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The header line is unreasonably long.
    #[error("{0}: header line exceeds {MAX_HEADER_BYTES} bytes")]
    HeaderTooLong(PathBuf),
    /// The consumer stopped accepting chunks.
    #[error("splitting stopped: {0}")]
    Stopped(String),
    /// Reading or listing an S3 input failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: StoreError,
    },
    /// A manifest cannot be read, or lists something that is not an input.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The input holds nothing to split.
    #[error("{0}: no objects to split")]
    Empty(String),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SplitError {
    let context = context.into();
    move |source| SplitError::Io { context, source }
}

/// Splits `input` as `split` says, handing each chunk to `sink` as soon as it is complete.
/// Chunk files are written into `spool`; the sink owns them. Returns the number of chunks.
pub fn split_input(
    input: &Path,
    split: SplitSpec,
    spool: &Path,
    mut sink: impl FnMut(Chunk) -> Result<(), SplitError>,
) -> Result<u64, SplitError> {
    match split {
        SplitSpec::PerFile => per_file(input, &mut sink),
        SplitSpec::Lines { lines, header } => chunked(input, Limit::Lines(lines.get()), header, spool, &mut sink),
        SplitSpec::Bytes { bytes, header } => chunked(input, Limit::Bytes(bytes.get()), header, spool, &mut sink),
    }
}

fn per_file(input: &Path, sink: &mut impl FnMut(Chunk) -> Result<(), SplitError>) -> Result<u64, SplitError> {
    let mut files = Vec::new();
    if input.is_dir() {
        let mut pending = vec![input.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io_error(format!("reading {}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(io_error(format!("reading {}", dir.display())))?;
                let kind = entry.file_type().map_err(io_error(format!("reading {}", dir.display())))?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
    } else {
        files.push(input.to_path_buf());
    }
    let count = files.len() as u64;
    for (index, path) in files.into_iter().enumerate() {
        let bytes = std::fs::metadata(&path).map_err(io_error(format!("reading {}", path.display())))?.len();
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("input").to_owned();
        sink(Chunk { index: index as u64, data: ChunkData::File { path, spooled: false }, file_name, bytes })?;
    }
    Ok(count)
}

#[derive(Clone, Copy)]
enum Limit {
    Lines(u64),
    Bytes(u64),
}

enum ChunkSink {
    Memory(Vec<u8>),
    File(BufWriter<File>, PathBuf),
}

struct OpenChunk {
    sink: ChunkSink,
    file_name: String,
    lines: u64,
    bytes: u64,
    /// Bytes written after the last newline (a line still being copied).
    partial: bool,
}

impl OpenChunk {
    fn write(&mut self, data: &[u8], spool: &Path) -> Result<(), SplitError> {
        if let ChunkSink::Memory(buffer) = &mut self.sink {
            if buffer.len() + data.len() <= SPOOL_THRESHOLD {
                buffer.extend_from_slice(data);
                return Ok(());
            }
            let path = spool.join(&self.file_name);
            let file = File::create(&path).map_err(io_error(format!("creating {}", path.display())))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            writer.write_all(buffer).map_err(io_error(format!("writing {}", path.display())))?;
            self.sink = ChunkSink::File(writer, path);
        }
        if let ChunkSink::File(writer, path) = &mut self.sink {
            writer.write_all(data).map_err(io_error(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

fn chunked(
    input: &Path,
    limit: Limit,
    header: bool,
    spool: &Path,
    sink: &mut impl FnMut(Chunk) -> Result<(), SplitError>,
) -> Result<u64, SplitError> {
    let name = input.display().to_string();
    let file = File::open(input).map_err(io_error(format!("opening {name}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let header_line = if header { read_header(&mut reader, input)? } else { Vec::new() };
    let extension = input.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();

    let mut index = 0u64;
    let mut current: Option<OpenChunk> = None;
    loop {
        let buffer = reader.fill_buf().map_err(io_error(format!("reading {name}")))?;
        if buffer.is_empty() {
            break;
        }
        let chunk = match current.as_mut() {
            Some(chunk) => chunk,
            None => current.insert(OpenChunk {
                sink: ChunkSink::Memory(header_line.clone()),
                file_name: format!("part-{index:06}{extension}"),
                lines: 0,
                bytes: 0,
                partial: false,
            }),
        };
        let (take, line_ended) = match memchr::memchr(b'\n', buffer) {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        chunk.write(&buffer[..take], spool)?;
        chunk.bytes += take as u64;
        chunk.partial = !line_ended;
        reader.consume(take);
        if line_ended {
            chunk.lines += 1;
            let full = match limit {
                Limit::Lines(n) => chunk.lines >= n,
                Limit::Bytes(n) => chunk.bytes >= n,
            };
            if full {
                if let Some(done) = current.take() {
                    finish(done, index, sink)?;
                    index += 1;
                }
            }
        }
    }
    if let Some(done) = current.take() {
        if done.lines > 0 || done.partial {
            finish(done, index, sink)?;
            index += 1;
        }
    }
    Ok(index)
}

fn read_header(reader: &mut BufReader<File>, input: &Path) -> Result<Vec<u8>, SplitError> {
    let mut header = Vec::new();
    let mut limited = std::io::Read::take(reader, MAX_HEADER_BYTES as u64 + 1);
    limited.read_until(b'\n', &mut header).map_err(io_error(format!("reading {}", input.display())))?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(SplitError::HeaderTooLong(input.to_path_buf()));
    }
    if !header.is_empty() && !header.ends_with(b"\n") {
        header.push(b'\n');
    }
    Ok(header)
}

fn finish(
    chunk: OpenChunk,
    index: u64,
    sink: &mut impl FnMut(Chunk) -> Result<(), SplitError>,
) -> Result<(), SplitError> {
    let OpenChunk { sink: chunk_sink, file_name, .. } = chunk;
    let (data, bytes) = match chunk_sink {
        ChunkSink::Memory(buffer) => {
            let bytes = buffer.len() as u64;
            (ChunkData::Memory(buffer), bytes)
        }
        ChunkSink::File(writer, path) => {
            let context = format!("writing {}", path.display());
            let file =
                writer.into_inner().map_err(|e| SplitError::Io { context: context.clone(), source: e.into_error() })?;
            let bytes = file.metadata().map_err(io_error(context))?.len();
            (ChunkData::File { path, spooled: true }, bytes)
        }
    };
    sink(Chunk { index, data, file_name, bytes })
}

/// Splits a local input file into byte ranges of itself instead of chunks (see
/// [`crate::byte_range`]): `bytes:` from its size, `lines:` from one read for its line starts.
/// Each range goes to `sink` as a [`ChunkData::Range`] chunk, named as [`split_input`] names
/// its chunks. Returns the number of ranges.
pub fn split_ranges(
    input: &Path,
    split: SplitSpec,
    described: &crate::byte_range::RangeInput,
    mut sink: impl FnMut(Chunk) -> Result<(), SplitError>,
) -> Result<u64, SplitError> {
    let extension = extension_of(input);
    let mut index = 0u64;
    let mut emit = |start: u64, end: u64| -> Result<(), SplitError> {
        let file_name = format!("part-{index:06}{extension}");
        sink(Chunk { index, data: ChunkData::Range { start, end }, file_name, bytes: end - start })?;
        index += 1;
        Ok(())
    };
    match split {
        SplitSpec::Bytes { bytes, .. } => {
            for (start, end) in crate::byte_range::local::byte_ranges(described, bytes.get()) {
                emit(start, end)?;
            }
            Ok(index)
        }
        SplitSpec::Lines { lines, .. } => {
            let scan = |e: io::Error| SplitError::Io { context: format!("reading {}", input.display()), source: e };
            crate::byte_range::local::line_ranges(input, described, lines.get(), |start, end| {
                emit(start, end).map_err(RangeScanError::Split)
            })
            .map_err(|e| match e {
                RangeScanError::Io(error) => scan(error),
                RangeScanError::Split(error) => error,
            })
        }
        SplitSpec::PerFile => Ok(0),
    }
}

/// `.ext` of a path's name, or nothing: the extension chunks keep.
fn extension_of(input: &Path) -> String {
    input.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default()
}

/// The name a task's copy of an object gets: its key's last segment, unless that could
/// leave the task's directory (`.`, `..`), which becomes `input`.
fn object_file_name(key: &str) -> String {
    match key.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_owned(),
        _ => "input".to_owned(),
    }
}

/// Hands a chunk to the enqueuer, waiting while it is busy.
async fn hand(chunks: &mpsc::Sender<Chunk>, chunk: Chunk) -> Result<(), SplitError> {
    chunks.send(chunk).await.map_err(|_| SplitError::Stopped("the enqueuer stopped".into()))
}

/// Splits the object `key` of `store` into byte ranges of exactly `lines` lines, reading it
/// once, in order, by ranged GETs (`reads`) and writing nothing: the same scan as a local
/// file's ([`LineCutter`]), over another source. Ranges go to `chunks` as [`split_ranges`]
/// names them. Returns their number.
pub async fn split_object_lines(
    store: Arc<dyn ObjectStore>,
    key: &str,
    described: &RangeInput,
    lines: u64,
    reads: BlockReads,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<u64, SplitError> {
    let extension = extension_of(Path::new(key));
    let mut cutter = LineCutter::new(described.body_start, lines);
    let mut index = 0u64;
    let mut source = std::pin::pin!(blocks(store, key.to_owned(), described.body_start, described.size, reads));
    while let Some(block) = source.next().await {
        let block = block.map_err(|source| SplitError::Store { context: format!("reading {key}"), source })?;
        for (start, end) in cutter.cuts(&block) {
            let file_name = format!("part-{index:06}{extension}");
            hand(chunks, Chunk { index, data: ChunkData::Range { start, end }, file_name, bytes: end - start }).await?;
            index += 1;
        }
    }
    if let Some((start, end)) = cutter.finish() {
        let file_name = format!("part-{index:06}{extension}");
        hand(chunks, Chunk { index, data: ChunkData::Range { start, end }, file_name, bytes: end - start }).await?;
        index += 1;
    }
    Ok(index)
}

/// One task per object under `prefix` of `bucket`, each naming the object where it is (no
/// download), found by listing page by page: at most one page is held. Returns the count.
pub async fn split_object_prefix(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<u64, SplitError> {
    let describe = || format!("s3://{bucket}/{prefix}");
    let mut after: Option<String> = None;
    let mut index = 0u64;
    loop {
        let page = store
            .list_page(prefix, after.as_deref(), LIST_PAGE)
            .await
            .map_err(|source| SplitError::Store { context: format!("listing {}", describe()), source })?;
        after = page.objects.last().map(|o| o.key.clone());
        for object in page.objects {
            if object.key.ends_with('/') {
                continue; // A "directory" marker, not an input.
            }
            let file_name = object_file_name(&object.key);
            let data = ChunkData::Object { bucket: bucket.to_owned(), key: object.key };
            hand(chunks, Chunk { index, data, file_name, bytes: object.size }).await?;
            index += 1;
        }
        if !page.more || after.is_none() {
            break;
        }
    }
    if index == 0 {
        return Err(SplitError::Empty(describe()));
    }
    Ok(index)
}

/// One task per input a manifest lists, read line by line: objects are named where they are
/// (when `objects`, the grid reads S3), local files (relative to `base`, the directory of a
/// local manifest) as per-file inputs are. Returns the count.
pub async fn split_manifest<R: tokio::io::AsyncBufRead + Unpin>(
    mut manifest: ManifestReader<R>,
    name: &str,
    base: Option<&Path>,
    objects: bool,
    chunks: &mpsc::Sender<Chunk>,
) -> Result<u64, SplitError> {
    let mut index = 0u64;
    while let Some((line, entry)) = manifest.next_entry().await? {
        let bad = |message: String| ManifestError::Line { manifest: name.to_owned(), line, message };
        let chunk = match entry {
            ManifestEntry::Object { .. } if !objects => {
                return Err(bad("this grid reads no s3:// objects (a grid on AWS does)".into()).into());
            }
            ManifestEntry::Object { bucket, key } => {
                let file_name = object_file_name(&key);
                Chunk { index, data: ChunkData::Object { bucket, key }, file_name, bytes: 0 }
            }
            ManifestEntry::Local(path) => {
                let Some(base) = base else {
                    return Err(bad("an S3 manifest lists s3:// objects only".into()).into());
                };
                let path = base.join(path);
                let bytes = match tokio::fs::metadata(&path).await {
                    Ok(meta) if meta.is_file() => meta.len(),
                    Ok(_) => return Err(bad(format!("{} is not a file", path.display())).into()),
                    Err(e) => return Err(bad(format!("{}: {e}", path.display())).into()),
                };
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("input").to_owned();
                Chunk { index, data: ChunkData::File { path, spooled: false }, file_name, bytes }
            }
        };
        hand(chunks, chunk).await?;
        index += 1;
    }
    if index == 0 {
        return Err(SplitError::Empty(format!("manifest {name}")));
    }
    Ok(index)
}

/// The line scan's failures: its own reads, or the sink's.
enum RangeScanError {
    Io(io::Error),
    Split(SplitError),
}

impl From<io::Error> for RangeScanError {
    fn from(error: io::Error) -> Self {
        RangeScanError::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    fn run(content: &str, split: SplitSpec) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.csv");
        std::fs::write(&input, content).expect("write");
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).expect("spool");
        let mut chunks = Vec::new();
        let count = split_input(&input, split, &spool, |chunk| {
            assert_eq!(chunk.index, chunks.len() as u64);
            chunks.push(match chunk.data {
                ChunkData::Memory(bytes) => String::from_utf8(bytes).expect("utf-8"),
                ChunkData::File { path, .. } => std::fs::read_to_string(path).expect("read chunk"),
                other => panic!("split_input stages chunks, not {other:?}"),
            });
            Ok(())
        })
        .expect("split");
        assert_eq!(count, chunks.len() as u64);
        chunks
    }

    fn lines(n: u64, header: bool) -> SplitSpec {
        SplitSpec::Lines { lines: NonZeroU64::new(n).expect("nonzero"), header }
    }

    #[test]
    fn lines_with_header_repeat_it_in_every_chunk() {
        let chunks = run("h\n1\n2\n3\n4\n5\n", lines(2, true));
        assert_eq!(chunks, vec!["h\n1\n2\n", "h\n3\n4\n", "h\n5\n"]);
    }

    #[test]
    fn last_line_without_newline_is_kept() {
        assert_eq!(run("1\n2\n3", lines(2, false)), vec!["1\n2\n", "3"]);
        assert_eq!(run("", lines(2, false)), Vec::<String>::new());
        assert_eq!(run("h\n", lines(2, true)), Vec::<String>::new());
    }

    #[test]
    fn bytes_cut_only_after_newlines() {
        let bytes = |n| SplitSpec::Bytes { bytes: NonZeroU64::new(n).expect("nonzero"), header: false };
        assert_eq!(run("aaaa\nb\ncc\n", bytes(3)), vec!["aaaa\n", "b\ncc\n"]);
        let long = "x".repeat(3 << 20) + "\ny\n";
        let chunks = run(&long, bytes(10));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks.concat(), long);
    }

    #[test]
    fn chunks_reassemble_the_input() {
        let content: String = (0..10_000).map(|i| format!("row-{i}\n")).collect();
        assert_eq!(run(&content, lines(333, false)).concat(), content);
    }

    #[test]
    fn per_file_walks_directories_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("b")).expect("mkdir");
        std::fs::write(dir.path().join("b/2.txt"), "two").expect("write");
        std::fs::write(dir.path().join("a.txt"), "one").expect("write");
        let mut names = Vec::new();
        split_input(dir.path(), SplitSpec::PerFile, dir.path(), |c| {
            names.push((c.file_name, matches!(c.data, ChunkData::File { spooled: true, .. })));
            Ok(())
        })
        .expect("split");
        assert_eq!(names, vec![("a.txt".to_owned(), false), ("2.txt".to_owned(), false)]);
    }

    /// A `lines:` split gives the same chunks whether staged or read from byte ranges.
    #[test]
    fn line_ranges_read_back_as_the_staged_chunks() {
        let content = "id,amount\n1,10\n2,20\n3,30\n4,40\n5,50";
        for (n, header) in [(1, false), (2, true), (4, true), (10, false)] {
            let dir = tempfile::tempdir().expect("dir");
            let input = dir.path().join("in.csv");
            std::fs::write(&input, content).expect("write");
            let split = lines(n, header);
            let described = crate::byte_range::local::describe(&input, header).expect("describe");
            let mut ranges = Vec::new();
            split_ranges(&input, split, &described, |chunk| {
                if let ChunkData::Range { start, end } = chunk.data {
                    ranges.push((start, end));
                }
                Ok(())
            })
            .expect("ranges");
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let read: Vec<String> = ranges
                .iter()
                .map(|&(start, end)| {
                    let range = crate::byte_range::InputRange {
                        source: crate::byte_range::RangeSource::File(input.clone()),
                        start,
                        end,
                        body_start: described.body_start,
                        size: described.size,
                        header: described.header.clone(),
                    };
                    let source = crate::byte_range::FileRange(input.clone());
                    let chunk = runtime.block_on(crate::byte_range::read_chunk(&source, &range)).expect("read");
                    String::from_utf8(chunk).expect("utf-8")
                })
                .collect();
            assert_eq!(read, run(content, split), "lines {n}, header {header}");
        }
    }

    /// Every chunk `split` hands over, run on a runtime of its own.
    fn collect<F>(split: impl FnOnce(mpsc::Sender<Chunk>) -> F) -> (Result<u64, SplitError>, Vec<Chunk>)
    where
        F: std::future::Future<Output = Result<u64, SplitError>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(4);
            let splitting = split(tx);
            let receiving = async {
                let mut chunks = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    chunks.push(chunk);
                }
                chunks
            };
            futures::join!(splitting, receiving)
        })
    }

    /// An S3 object's `lines:` ranges, found by ranged GETs of every size, are the local scan's.
    #[test]
    fn object_line_ranges_equal_the_local_scan_however_the_blocks_fall() {
        let cases: &[(&str, &[u8], bool)] = &[
            ("a block boundary on a newline", b"ab\ncd\nef\ngh\n", false),
            ("CRLF line ends", b"id,v\r\n1,a\r\n2,b\r\n3,c\r\n", true),
            ("a last line without a newline", b"one\ntwo\nthree", false),
            ("a line longer than a block", b"x\nyyyyyyyyyyyyyyyyyyyyyyyyy\nz\n", false),
            ("an empty object", b"", false),
            ("a header only", b"id,amount\n", true),
            ("a header without its newline", b"id,amount", true),
            ("empty lines", b"\n\n\n\n", false),
        ];
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn ObjectStore> = Arc::new(crate::store::LocalStore::open(dir.path()).expect("store"));
        for (what, text, header) in cases {
            let path = dir.path().join("input.csv");
            std::fs::write(&path, text).expect("write");
            let described = crate::byte_range::local::describe(&path, *header).expect("describe");
            for lines in [1, 2, 3] {
                let split = SplitSpec::Lines { lines: NonZeroU64::new(lines).expect("nonzero"), header: *header };
                let mut local = Vec::new();
                split_ranges(&path, split, &described, |chunk| {
                    local.push((chunk.index, chunk.file_name, format!("{:?}", chunk.data)));
                    Ok(())
                })
                .expect("local scan");
                for block_bytes in [1, 2, 3, 7, 64] {
                    let reads = BlockReads { block_bytes, in_flight: 3 };
                    let (count, chunks) = collect(|tx| {
                        let (store, described) = (store.clone(), described.clone());
                        async move { split_object_lines(store, "input.csv", &described, lines, reads, &tx).await }
                    });
                    let got: Vec<_> =
                        chunks.into_iter().map(|c| (c.index, c.file_name, format!("{:?}", c.data))).collect();
                    assert_eq!(got, local, "{what}: lines {lines}, blocks of {block_bytes}");
                    assert_eq!(count.expect("scan"), local.len() as u64, "{what}");
                }
            }
        }
    }

    #[test]
    fn a_prefix_becomes_one_task_per_object_where_it_lies() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::store::LocalStore::open(dir.path()).expect("store");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for key in ["media/b.mp4", "media/a.mp4", "media/deep/c.mp4", "other/d.mp4"] {
            runtime.block_on(store.put(key, bytes::Bytes::from_static(b"x"))).expect("put");
        }
        let (count, chunks) = collect(|tx| {
            let store = &store;
            async move { split_object_prefix(store, "raw-bucket", "media/", &tx).await }
        });
        assert_eq!(count.expect("split"), 3);
        let got: Vec<_> = chunks.iter().map(|c| (c.file_name.as_str(), format!("{:?}", c.data))).collect();
        let object = |key: &str| format!("{:?}", ChunkData::Object { bucket: "raw-bucket".into(), key: key.into() });
        assert_eq!(
            got,
            vec![
                ("a.mp4", object("media/a.mp4")),
                ("b.mp4", object("media/b.mp4")),
                ("c.mp4", object("media/deep/c.mp4"))
            ]
        );
        let (empty, _) = collect(|tx| {
            let store = &store;
            async move { split_object_prefix(store, "raw-bucket", "nothing/", &tx).await }
        });
        assert!(matches!(empty, Err(SplitError::Empty(_))), "{empty:?}");
    }

    #[test]
    fn a_manifest_names_objects_and_local_files_and_its_bad_lines() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("local.csv"), "1\n2\n").expect("write");
        let text = "# inputs\ns3://raw-bucket/a.csv\nlocal.csv\n";
        let manifest = |text: &'static str| {
            ManifestReader::new(text.as_bytes(), crate::manifest::ManifestFormat::Lines, "inputs.txt")
        };
        let base = dir.path().to_path_buf();
        let (count, chunks) = collect(|tx| {
            let base = base.clone();
            async move { split_manifest(manifest(text), "inputs.txt", Some(&base), true, &tx).await }
        });
        assert_eq!(count.expect("split"), 2);
        assert!(
            matches!(&chunks[0].data, ChunkData::Object { bucket, key } if bucket == "raw-bucket" && key == "a.csv")
        );
        assert!(matches!(&chunks[1].data, ChunkData::File { path, spooled: false } if *path == base.join("local.csv")));
        assert_eq!(chunks[1].bytes, 4);
        let (missing, _) = collect(|tx| {
            let base = base.clone();
            async move {
                split_manifest(manifest("s3://raw-bucket/a\nnot-there.csv\n"), "inputs.txt", Some(&base), true, &tx)
                    .await
            }
        });
        let message = missing.expect_err("a missing file").to_string();
        assert!(message.contains("inputs.txt, line 2"), "{message}");
        let (from_s3, _) =
            collect(|tx| async move { split_manifest(manifest("local.csv\n"), "s3://b/m", None, true, &tx).await });
        assert!(from_s3.expect_err("an S3 manifest lists objects").to_string().contains("line 1"));
        let (embedded, _) = collect(|tx| {
            let base = base.clone();
            async move {
                split_manifest(manifest("local.csv\ns3://raw-bucket/a\n"), "inputs.txt", Some(&base), false, &tx).await
            }
        });
        let message = embedded.expect_err("no S3 on this grid").to_string();
        assert!(message.contains("line 2") && message.contains("reads no s3://"), "{message}");
    }
}
