//! Stage 1 of the grid job: validate one chunk of the CSV and aggregate it per provider.
//!
//! The chunk may or may not start with the header line (header and empty lines are skipped
//! wherever they appear). Writes `aggregates.csv` and `rejects.csv` into the output directory.

use std::path::Path;

use anyhow::Result;

use crate::output::{
    ensure_dir, for_each_line, sort_rejects, write_aggregates, write_rejects, ProviderTotal, Reject, Summary,
    AGGREGATES_FILE, REJECTS_FILE,
};
use crate::row::{classify_line, Line, ProviderId, RejectReason};

/// Validates `input` and writes `aggregates.csv` and `rejects.csv` into `out_dir`.
pub fn validate_chunk(input: &Path, out_dir: &Path) -> Result<Summary> {
    // Provider ids are `P` + 4 digits, so a flat table indexed by the number is both the
    // fastest map and already sorted.
    let mut table = vec![(0u64, 0u128); 10_000];
    let mut rejects = Vec::new();
    let mut valid_rows = 0u64;

    for_each_line(input, |_, bytes| {
        match std::str::from_utf8(bytes) {
            Ok(line) => match classify_line(line) {
                Line::Skip => {}
                Line::Valid(claim) => {
                    let slot = &mut table[usize::from(claim.provider.0)];
                    slot.0 += 1;
                    slot.1 += u128::from(claim.amount_cents);
                    valid_rows += 1;
                }
                Line::Rejected(reason) => rejects.push(Reject::from_raw(line, reason.as_str())),
            },
            Err(_) => rejects.push(Reject::from_raw(&String::from_utf8_lossy(bytes), RejectReason::NotUtf8.as_str())),
        }
        Ok(())
    })?;

    let totals: Vec<ProviderTotal> = table
        .iter()
        .enumerate()
        .filter(|(_, &(claims, _))| claims > 0)
        .map(|(number, &(claims, amount_cents))| ProviderTotal {
            provider: ProviderId(number as u16),
            claims,
            amount_cents,
        })
        .collect();
    sort_rejects(&mut rejects);

    ensure_dir(out_dir)?;
    write_aggregates(&out_dir.join(AGGREGATES_FILE), &totals)?;
    write_rejects(&out_dir.join(REJECTS_FILE), &rejects)?;
    Ok(Summary { valid_rows, rejected_rows: rejects.len() as u64, providers: totals.len() as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::HEADER;
    use std::fs;

    #[test]
    fn chunk_without_header_with_crlf_and_junk() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("chunk.csv");
        let mut data = Vec::new();
        data.extend_from_slice(b"C0000000003,P0002,M0000001,2026-01-01,12345,1.50\r\n");
        data.extend_from_slice(b"C0000000001,P0001,M0000001,2026-01-01,12345,10.00\n");
        data.extend_from_slice(format!("{HEADER}\n").as_bytes());
        data.extend_from_slice(b"\n");
        data.extend_from_slice(b"C0000000002,P0001,M0000001,2026-02-30,12345,1.00\n");
        data.extend_from_slice(b"C0000000004,\"P0001\",M0000001,2026-01-01,12345,1.00\n");
        data.extend_from_slice(b"C0000000005,P0001,M0000001,2026-01-01,12345,1.\xff0\n");
        data.extend_from_slice(b"C0000000006,P0001,M0000001,2026-01-01,12345,2.25");
        fs::write(&input, data)?;

        let out = dir.path().join("nested/out");
        let summary = validate_chunk(&input, &out)?;
        assert_eq!(summary, Summary { valid_rows: 3, rejected_rows: 3, providers: 2 });
        assert_eq!(
            fs::read_to_string(out.join(AGGREGATES_FILE))?,
            "provider_id,claims,amount_cents\nP0001,2,1225\nP0002,1,150\n"
        );
        assert_eq!(
            fs::read_to_string(out.join(REJECTS_FILE))?,
            "claim_id,reason,row\n\
             C0000000002,date_invalid,\"C0000000002,P0001,M0000001,2026-02-30,12345,1.00\"\n\
             C0000000004,provider_format,\"C0000000004,\"\"P0001\"\",M0000001,2026-01-01,12345,1.00\"\n\
             C0000000005,not_utf8,\"C0000000005,P0001,M0000001,2026-01-01,12345,1.\u{fffd}0\"\n"
        );
        Ok(())
    }

    #[test]
    fn missing_input_names_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nope.csv");
        let err = validate_chunk(&missing, dir.path()).expect_err("must fail");
        assert!(format!("{err:#}").contains("nope.csv"), "{err:#}");
        Ok(())
    }
}
