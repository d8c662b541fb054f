//! Single-process reference: computes the final result directly from the whole CSV file.
//!
//! It shares the row parser and the output writers with the grid path, but has its own
//! reading and aggregation loop (a `BTreeMap`), so the grid's merged output can be checked
//! against it byte for byte (`diff -r`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

use crate::output::{sort_rejects, write_final, ProviderTotal, Reject, Summary};
use crate::row::{classify_line, Line, ProviderId, RejectReason};

/// Computes `totals.csv`, `rejects.csv` and `summary.txt` for `input` into `out_dir`.
pub fn reference(input: &Path, out_dir: &Path) -> Result<Summary> {
    let file = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut reader = BufReader::new(file);
    let mut per_provider: BTreeMap<ProviderId, ProviderTotal> = BTreeMap::new();
    let mut rejects: Vec<Reject> = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = reader.read_until(b'\n', &mut raw).with_context(|| format!("cannot read {}", input.display()))?;
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end_matches('\n');
        let line = line.strip_suffix('\r').unwrap_or(line);
        if std::str::from_utf8(&raw).is_err() {
            rejects.push(Reject::from_raw(line, RejectReason::NotUtf8.as_str()));
            continue;
        }
        match classify_line(line) {
            Line::Skip => {}
            Line::Valid(claim) => {
                let total = per_provider.entry(claim.provider).or_insert(ProviderTotal {
                    provider: claim.provider,
                    claims: 0,
                    amount_cents: 0,
                });
                total.claims += 1;
                total.amount_cents += u128::from(claim.amount_cents);
            }
            Line::Rejected(reason) => rejects.push(Reject::from_raw(line, reason.as_str())),
        }
    }
    sort_rejects(&mut rejects);
    let totals: Vec<ProviderTotal> = per_provider.into_values().collect();
    write_final(out_dir, &totals, &rejects)
}
