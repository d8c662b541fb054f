//! `batchgrid-claims`: the example job of the batch grid, on synthetic insurance claims.
//!
//! * [`generate()`] writes a deterministic claims CSV with planted malformed rows.
//! * [`validate_chunk`] (stage 1, once per chunk on many workers) validates rows and
//!   aggregates claim counts and amounts per provider, recording malformed rows.
//! * [`merge_dir`] (stage 2) merges all partial results into the final files.
//! * [`reference()`] computes the same final files in one process, for comparison.
//!
//! Output formats are documented in [`output`]; all amounts are integer cents, never floats.

pub mod generate;
pub mod merge;
pub mod output;
pub mod reference;
pub mod row;
pub mod validate;

pub use generate::{generate, GenerateOptions, GenerateStats, MalformedKind, SplitMix64};
pub use merge::merge_dir;
pub use output::Summary;
pub use reference::reference;
pub use row::{classify_line, parse_row, Claim, Line, ProviderId, RejectReason, HEADER};
pub use validate::validate_chunk;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use std::fs;
    use std::io::BufWriter;
    use std::path::Path;

    fn read_tree(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            files.push((entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path())?));
        }
        files.sort();
        Ok(files)
    }

    /// Generate, split into chunks by lines (header copied into each), validate each chunk
    /// into its own directory, merge, and compare with the reference byte for byte.
    #[test]
    fn grid_equals_reference() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("claims.csv");
        let stats = {
            let mut w = BufWriter::new(fs::File::create(&input)?);
            generate(&GenerateOptions { rows: 20_000, seed: 2026, malformed_per_million: 5_000 }, &mut w)?
        };
        assert!(stats.malformed > 0);

        let text = fs::read_to_string(&input)?;
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let rows: Vec<&str> = lines.collect();
        // Uneven chunk sizes; the last chunk without the header and with CRLF line ends.
        let bounds = [0, 1, 4_999, 11_000, 17_321, rows.len()];
        let partials = dir.path().join("partials");
        for (i, pair) in bounds.windows(2).enumerate() {
            let chunk = dir.path().join(format!("chunk-{i}.csv"));
            let last = i == bounds.len() - 2;
            let mut body = String::new();
            if !last {
                body.push_str(HEADER);
                body.push('\n');
            }
            for row in &rows[pair[0]..pair[1]] {
                body.push_str(row);
                body.push_str(if last { "\r\n" } else { "\n" });
            }
            fs::write(&chunk, body)?;
            validate_chunk(&chunk, &partials.join(format!("task-{i:03}")))?;
        }

        let grid = dir.path().join("grid");
        let reference_dir = dir.path().join("reference");
        let merged = merge_dir(&partials, &grid)?;
        let expected = reference(&input, &reference_dir)?;
        assert_eq!(merged, expected);
        assert_eq!(merged.rejected_rows, stats.malformed);
        assert_eq!(merged.valid_rows + merged.rejected_rows, 20_000);

        let grid_files = read_tree(&grid)?;
        let names: Vec<&str> = grid_files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["rejects.csv", "summary.txt", "totals.csv"]);
        assert_eq!(grid_files, read_tree(&reference_dir)?);

        let totals = fs::read_to_string(grid.join("totals.csv"))?;
        let last = totals.lines().last().unwrap_or_default();
        assert!(last.starts_with(&format!("TOTAL,{},", merged.valid_rows)), "{last}");
        Ok(())
    }
}
