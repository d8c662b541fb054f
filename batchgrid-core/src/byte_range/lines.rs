//! The one line scanner of `lines:` splits: it is fed an input's body block by block, in
//! order, from any source (a local file's read buffer, an object's ranged GETs) and cuts it
//! into byte ranges of exactly N lines each with memchr, so the ranges do not depend on how
//! the source's blocks fall.

/// Cuts a body into ranges of exactly `lines` lines (the last one fewer).
#[derive(Debug, Clone)]
pub struct LineCutter {
    lines: u64,
    /// Where the open range starts.
    start: u64,
    /// One past the last byte fed.
    offset: u64,
    /// Newlines in the open range so far.
    counted: u64,
}

impl LineCutter {
    /// A cutter of ranges of `lines` lines (at least one) over a body starting at `body_start`.
    pub fn new(body_start: u64, lines: u64) -> Self {
        Self { lines: lines.max(1), start: body_start, offset: body_start, counted: 0 }
    }

    /// The ranges that end within `block`, the body's next bytes, in order. The returned
    /// iterator must be run to its end before the next block is fed.
    pub fn cuts<'a>(&'a mut self, block: &'a [u8]) -> Cuts<'a> {
        let base = self.offset;
        self.offset += block.len() as u64;
        Cuts { cutter: self, newlines: memchr::memchr_iter(b'\n', block), base }
    }

    /// The last range, once every block has been fed: the lines after the last full range,
    /// the last perhaps without a newline; `None` when there are none.
    pub fn finish(self) -> Option<(u64, u64)> {
        (self.start < self.offset).then_some((self.start, self.offset))
    }
}

/// The ranges ending within one block (see [`LineCutter::cuts`]).
pub struct Cuts<'a> {
    cutter: &'a mut LineCutter,
    newlines: memchr::Memchr<'a>,
    base: u64,
}

impl Iterator for Cuts<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        for at in self.newlines.by_ref() {
            self.cutter.counted += 1;
            if self.cutter.counted == self.cutter.lines {
                let end = self.base + at as u64 + 1;
                let range = (self.cutter.start, end);
                (self.cutter.start, self.cutter.counted) = (end, 0);
                return Some(range);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges of `body` fed in blocks of `block` bytes.
    fn cut(body: &[u8], block: usize, lines: u64) -> Vec<(u64, u64)> {
        let mut cutter = LineCutter::new(0, lines);
        let mut ranges = Vec::new();
        for piece in body.chunks(block.max(1)) {
            ranges.extend(cutter.cuts(piece));
        }
        ranges.extend(cutter.finish());
        ranges
    }

    #[test]
    fn the_ranges_do_not_depend_on_where_blocks_fall() {
        let body = b"1\n22\n\n4444\r\n55555\n6";
        let whole = cut(body, body.len(), 2);
        assert_eq!(whole, vec![(0, 5), (5, 12), (12, 19)], "1,22 | empty,4444 | 55555,6");
        for block in 1..body.len() {
            assert_eq!(cut(body, block, 2), whole, "blocks of {block}");
        }
    }
}
