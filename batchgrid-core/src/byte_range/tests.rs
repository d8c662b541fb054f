use proptest::prelude::*;

use super::*;

/// An input held in memory, counting the bytes read.
struct Memory(Vec<u8>, std::sync::atomic::AtomicU64);

impl Memory {
    fn new(data: &[u8]) -> Self {
        Self(data.to_vec(), std::sync::atomic::AtomicU64::new(0))
    }
}

#[async_trait]
impl RangeRead for Memory {
    async fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let (start, end) = (start.min(self.0.len() as u64) as usize, end.min(self.0.len() as u64) as usize);
        self.1.fetch_add((end - start) as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(self.0[start..end].to_vec())
    }
}

/// Every chunk of `input` cut every `range_bytes`, with the header split off when `header`.
fn chunks(input: &[u8], range_bytes: u64, header: bool) -> Vec<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let source = Memory::new(input);
        let size = input.len() as u64;
        let (body_start, header_text) = if header {
            let end = header_end(input, size).expect("a header line");
            (end, Some(String::from_utf8_lossy(&input[..end as usize]).into_owned()))
        } else {
            (0, None)
        };
        let mut out = Vec::new();
        for (start, end) in plan(body_start, size, range_bytes) {
            let range = InputRange {
                source: RangeSource::File(PathBuf::new()),
                start,
                end,
                body_start,
                size,
                header: header_text.clone(),
            };
            out.push(read_chunk(&source, &range).await.expect("read"));
        }
        out
    })
}

/// The chunks without their headers, concatenated.
fn joined(chunks: &[Vec<u8>], header: &[u8]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.strip_prefix(header).unwrap_or(c).to_vec()).collect()
}

#[test]
fn chunks_concatenate_to_the_input_at_every_edge() {
    let cases: &[(&str, &[u8], u64)] = &[
        ("a boundary on a newline", b"ab\ncd\nef\n", 3),
        ("a boundary just after a newline", b"ab\ncd\nef\n", 4),
        ("inside a multi-byte character", "é€😀\nçà\n日本語\n".as_bytes(), 5),
        ("a last line without a newline", b"one\ntwo\nthree", 4),
        ("CRLF line ends", b"a,b\r\nc,d\r\ne,f\r\n", 3),
        ("a line longer than a range", b"x\nyyyyyyyyyyyyyyyyyyyy\nz\n", 3),
        ("an empty file", b"", 4),
        ("one byte ranges", b"1\n22\n333\n\n4444\n", 1),
        ("a range wider than the input", b"1\n2\n", 100),
        ("empty lines", b"\n\n\n", 1),
    ];
    for (what, input, range) in cases {
        let got = chunks(input, *range, false);
        assert_eq!(joined(&got, b""), input.to_vec(), "{what}");
        for chunk in got.iter().filter(|c| !c.is_empty()) {
            // Each chunk holds whole lines: it ends at a newline or at the input's end.
            assert!(chunk.ends_with(b"\n") || input.ends_with(chunk), "{what}: {chunk:?}");
        }
    }
    assert!(chunks(b"", 4, false).is_empty(), "an empty file has no ranges");
}

#[test]
fn a_line_longer_than_a_range_is_read_once_by_the_range_it_starts_in() {
    let got = chunks(b"x\nyyyyyyyyyy\nz\n", 3, false);
    assert_eq!(got[0], b"x\nyyyyyyyyyy\n".to_vec(), "the first range reads on to the end of the long line");
    assert!(got[1..got.len() - 1].iter().all(Vec::is_empty), "the ranges inside it read nothing: {got:?}");
    assert_eq!(got.concat(), b"x\nyyyyyyyyyy\nz\n".to_vec());
}

#[test]
fn the_header_leads_every_chunk_and_only_once() {
    let input = b"id,amount\n1,10\n2,20\n3,30\n";
    let got = chunks(input, 6, true);
    assert!(got.iter().filter(|c| !c.is_empty()).all(|c| c.starts_with(b"id,amount\n")), "{got:?}");
    assert_eq!(joined(&got, b"id,amount\n"), b"1,10\n2,20\n3,30\n".to_vec());
    assert!(chunks(b"id,amount\n", 6, true).is_empty(), "a header only has no body to split");
    assert!(chunks(b"id,amount", 6, true).is_empty(), "nor a header without its newline");
}

#[test]
fn a_header_line_is_found_or_reported_too_long() {
    assert_eq!(header_end(b"h1,h2\nrow", 100), Some(6));
    assert_eq!(header_end(b"h1,h2", 5), Some(5), "the whole input is the header");
    assert_eq!(header_end(b"h1,h2", 500), None, "no newline within the bytes read");
}

#[test]
fn ranges_cover_the_body_once() {
    assert_eq!(plan(4, 14, 4), vec![(4, 8), (8, 12), (12, 14)]);
    assert_eq!(plan(0, 0, 4), vec![]);
    assert_eq!(plan(0, 3, 0), vec![(0, 1), (1, 2), (2, 3)], "a zero width is one byte");
}

#[test]
fn a_split_cuts_ranges_of_equal_size_no_wider_than_asked() {
    let input = |body_start, size| RangeInput { size, body_start, header: None };
    let ranges = super::local::byte_ranges;
    // 10 bytes at most 4 wide: three ranges (not 4, 4, 2), within a byte of each other.
    assert_eq!(ranges(&input(4, 14), 4), vec![(4, 8), (8, 11), (11, 14)]);
    assert_eq!(ranges(&input(0, 12), 4), vec![(0, 4), (4, 8), (8, 12)], "an exact fit is unchanged");
    assert_eq!(ranges(&input(0, 0), 4), vec![]);
    assert_eq!(ranges(&input(6, 6), 4), vec![], "a header only");
    assert_eq!(ranges(&input(0, 3), 0), vec![(0, 1), (1, 2), (2, 3)], "a zero width is one byte");
    // The claims example at 1,000,000 rows: 16 MiB asked, four ranges of about 12.7 MB.
    let sizes: Vec<u64> = ranges(&input(0, 50_864_139), 16 << 20).iter().map(|(a, b)| b - a).collect();
    assert_eq!(sizes.len(), 4);
    assert!(sizes.iter().max().zip(sizes.iter().min()).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
}

#[test]
fn a_range_reads_little_more_than_itself() {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n".repeat(10_000);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let source = Memory::new(&line);
    let size = line.len() as u64;
    let read = runtime.block_on(read_aligned(&source, 0, size, 100_000, 200_000)).expect("read");
    assert!(!read.is_empty());
    let bytes_read = source.1.load(std::sync::atomic::Ordering::Relaxed);
    assert!(bytes_read <= 100_001 + OVERREAD, "read {bytes_read} bytes for a 100,000-byte range");
}

proptest! {
    #[test]
    fn any_cuts_of_any_lines_concatenate_to_the_input(
        lines in proptest::collection::vec("[a-zé€\r]{0,12}", 0..40),
        last_newline in any::<bool>(),
        range in 1u64..40,
        header in any::<bool>(),
    ) {
        let mut input = lines.join("\n");
        if last_newline && !input.is_empty() {
            input.push('\n');
        }
        let input = input.into_bytes();
        let header_line =
            if header { input.iter().position(|&b| b == b'\n').map(|at| input[..=at].to_vec()) } else { None };
        match header_line {
            Some(head) => {
                let got = chunks(&input, range, true);
                let mut expected = input.clone();
                expected.drain(..head.len());
                prop_assert_eq!(joined(&got, &head), expected);
            }
            None => prop_assert_eq!(chunks(&input, range, false).concat(), input),
        }
    }
}
