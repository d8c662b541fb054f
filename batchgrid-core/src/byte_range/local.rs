//! Ranges of a local input file, for the embedded grid: `bytes:` splits from the file's size
//! alone, `lines:` splits from one read of the file for its line starts (so each chunk has
//! exactly the lines asked for); either way nothing is written and workers read their ranges
//! from the file itself.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::lines::LineCutter;
use super::{RangeError, RangeInput, MAX_HEADER_BYTES};

/// Read buffer of the line scan.
const SCAN_BUFFER: usize = 1 << 20;

/// The input's size and, when `header`, its first line.
pub fn describe(input: &Path, header: bool) -> Result<RangeInput, RangeError> {
    let size = std::fs::metadata(input)?.len();
    if !header {
        return Ok(RangeInput { size, body_start: 0, header: None });
    }
    let mut prefix = Vec::new();
    File::open(input)?.take(MAX_HEADER_BYTES).read_to_end(&mut prefix)?;
    RangeInput::with_header(&prefix, size)
}

/// Ranges of at most `range_bytes` over the body, from the size alone, as few as that allows
/// and of equal sizes (within a byte): a short last range would leave a worker idle while
/// another runs a full one, and that tail is the job's critical path.
pub fn byte_ranges(input: &RangeInput, range_bytes: u64) -> Vec<(u64, u64)> {
    let body = input.size.saturating_sub(input.body_start);
    let count = body.div_ceil(range_bytes.max(1)).max(1);
    let (base, longer) = (body / count, body % count);
    let mut ranges = Vec::new();
    let mut start = input.body_start;
    for index in 0..count {
        let end = start + base + u64::from(index < longer);
        if end > start {
            ranges.push((start, end));
        }
        start = end;
    }
    ranges
}

/// Ranges of exactly `lines` lines (the last one fewer) over the body, found by reading the
/// file once; each is handed to `sink` as soon as it is found.
pub fn line_ranges<E: From<io::Error>>(
    path: &Path,
    input: &RangeInput,
    lines: u64,
    mut sink: impl FnMut(u64, u64) -> Result<(), E>,
) -> Result<u64, E> {
    let mut file = File::open(path)?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(input.body_start))?;
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut cutter = LineCutter::new(input.body_start, lines);
    let mut ranges = 0u64;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        let length = buffer.len();
        for (start, end) in cutter.cuts(buffer) {
            sink(start, end)?;
            ranges += 1;
        }
        reader.consume(length);
    }
    if let Some((start, end)) = cutter.finish() {
        sink(start, end)?;
        ranges += 1;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges_of(text: &[u8], header: bool, lines: u64) -> (RangeInput, Vec<(u64, u64)>) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("input.csv");
        std::fs::write(&path, text).expect("write");
        let input = describe(&path, header).expect("describe");
        let mut ranges = Vec::new();
        line_ranges::<io::Error>(&path, &input, lines, |start, end| {
            ranges.push((start, end));
            Ok(())
        })
        .expect("scan");
        (input, ranges)
    }

    #[test]
    fn line_ranges_hold_exactly_n_lines() {
        let text = b"h\n1\n22\n333\n4444\n55555";
        let (input, ranges) = ranges_of(text, true, 2);
        assert_eq!(input.header.as_deref(), Some("h\n"));
        assert_eq!(ranges, vec![(2, 7), (7, 16), (16, 21)], "1,22 | 333,4444 | 55555");
        let (_, one) = ranges_of(b"a\nb\nc\n", false, 1);
        assert_eq!(one, vec![(0, 2), (2, 4), (4, 6)], "one task per line, nothing left over");
        let (_, none) = ranges_of(b"", false, 3);
        assert!(none.is_empty(), "an empty input has no ranges");
        let (header_only, rest) = ranges_of(b"h\n", true, 3);
        assert_eq!((header_only.body_start, rest.len()), (2, 0), "a header only has no body");
    }

    #[test]
    fn a_header_must_be_text_of_bounded_length() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("binary");
        std::fs::write(&path, b"\xff\xfe\n1\n").expect("write");
        assert!(matches!(describe(&path, true), Err(RangeError::Header)));
        assert_eq!(describe(&path, false).expect("no header").size, 5);
    }
}
