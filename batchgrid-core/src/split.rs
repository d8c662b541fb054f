//! Cutting a job's input into first-stage tasks, streaming: one file per task, or chunks of N
//! lines or about N bytes cut after a newline. Memory use does not depend on the input's size
//! (nor on its line lengths): bytes are copied from the read buffer into the chunk, which stays
//! in memory while small (no file to create and delete per chunk) and moves to a spool file past
//! [`SPOOL_THRESHOLD`].

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::spec::SplitSpec;

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
    let extension = input.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
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
                ChunkData::Range { .. } => panic!("split_input stages chunks; split_ranges makes ranges"),
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
}
