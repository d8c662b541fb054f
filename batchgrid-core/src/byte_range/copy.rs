//! A local file's chunk copied into a task's scratch file by the kernel (`copy_file_range`),
//! never through the worker's memory: on the embedded grid this is the one copy a byte-range
//! task makes of its input. Only the bytes around the range's two ends are read, to find its
//! first and last lines; the chunk is the one [`super::read_chunk`] returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::InputRange;

/// Bytes read at a time while looking for a line's end.
const LOOK_AHEAD: usize = 64 * 1024;

/// Writes the chunk of `range` of the local file `source` (the header first, when there is one
/// and the chunk is not empty) into `target`, over what was there without truncating it first
/// (so its blocks are reused task after task); returns the chunk's size.
pub fn copy_chunk(source: &Path, range: &InputRange, target: &Path) -> io::Result<u64> {
    let mut input = File::open(source)?;
    let mut output = OpenOptions::new().write(true).create(true).truncate(false).open(target)?;
    let mut written = 0;
    if let Some((from, to)) = aligned_bounds(&input, range.body_start, range.size, range.start, range.end)? {
        if let Some(header) = &range.header {
            output.write_all(header.as_bytes())?;
            written += header.len() as u64;
        }
        input.seek(SeekFrom::Start(from))?;
        // std copies a `Take<&File>` into a `File` with copy_file_range (or sendfile).
        let copied = io::copy(&mut (&input).take(to - from), &mut output)?;
        if copied != to - from {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the input file shrank while being read"));
        }
        written += copied;
    }
    output.set_len(written)?;
    Ok(written)
}

/// `[from, to)`: the lines whose first byte is in `[start, end)` of an input of `size` bytes
/// whose body starts at `body_start`, as [`super::read_aligned`] defines them; `None` when no
/// line starts there.
fn aligned_bounds(input: &File, body_start: u64, size: u64, start: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    let end = end.min(size);
    if start >= end {
        return Ok(None);
    }
    // Past the newline at or after byte start - 1, unless the range starts the body.
    let from = if start > body_start {
        match newline_at_or_after(input, start - 1, end)? {
            Some(at) => at + 1,
            None => return Ok(None),
        }
    } else {
        start
    };
    if from >= end {
        return Ok(None);
    }
    // Through the newline at or after byte end - 1, or to the end of the input.
    let to = newline_at_or_after(input, end - 1, size)?.map_or(size, |at| at + 1);
    Ok(Some((from, to)))
}

/// The offset of the first newline in `[from, limit)`.
fn newline_at_or_after(input: &File, from: u64, limit: u64) -> io::Result<Option<u64>> {
    let mut buffer = vec![0u8; LOOK_AHEAD];
    let mut offset = from;
    while offset < limit {
        let want = usize::try_from(limit - offset).unwrap_or(usize::MAX).min(LOOK_AHEAD);
        let read = input.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            break;
        }
        if let Some(at) = memchr::memchr(b'\n', &buffer[..read]) {
            return Ok(Some(offset + at as u64));
        }
        offset += read as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::byte_range::{local, read_chunk, FileRange, RangeSource};

    /// Every range of every size over `text` copies exactly what `read_chunk` reads.
    async fn copies_as_read(text: &[u8], header: bool) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("input.csv");
        std::fs::write(&path, text).expect("write");
        let target = dir.path().join("chunk");
        // A longer file first: the copy must replace it, not leave its tail.
        std::fs::write(&target, vec![b'x'; text.len() + 100]).expect("write");
        let described = local::describe(&path, header).expect("describe");
        for range_bytes in [1, 2, 3, 5, 8, 64, 1 << 20] {
            let mut joined = Vec::new();
            for (start, end) in local::byte_ranges(&described, range_bytes) {
                let range = InputRange {
                    source: RangeSource::File(path.clone()),
                    start,
                    end,
                    body_start: described.body_start,
                    size: described.size,
                    header: described.header.clone(),
                };
                let read = read_chunk(&FileRange(path.clone()), &range).await.expect("read");
                let size = copy_chunk(&path, &range, &target).expect("copy");
                let copied = std::fs::read(&target).expect("read copy");
                assert_eq!(copied, read, "range {start}..{end} of {range_bytes} bytes over {text:?}");
                assert_eq!(size, copied.len() as u64);
                let header_len = described.header.as_ref().map_or(0, |h| h.len());
                joined.extend_from_slice(&copied[copied.len().min(header_len)..]);
            }
            assert_eq!(joined, text[described.body_start as usize..], "ranges of {range_bytes} bytes rejoin the body");
        }
    }

    #[tokio::test]
    async fn a_copied_chunk_is_the_chunk_read_for_every_edge_case() {
        let cases: [&[u8]; 8] = [
            b"a\nbb\nccc\n",
            b"a\nbb\nccc",              // the last line without a newline
            b"a\r\nbb\r\n\r\nccc\r\n",  // CRLF line ends and an empty line
            "é\nüü\n日本\n".as_bytes(), // multi-byte characters across range ends
            b"short\nthis line is longer than several ranges\nx\n",
            b"",                            // an empty file
            b"\n\n\n",                      // only newlines
            b"one line, no newline at all", // one line longer than every small range
        ];
        for text in cases {
            copies_as_read(text, false).await;
        }
        copies_as_read(b"id,amount\n1,2\n3,4\n5,6", true).await;
        copies_as_read(b"id,amount\n", true).await; // a header only
    }
}
