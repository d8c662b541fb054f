//! Output files and their exact formats, shared by `validate`, `merge` and `reference` so the
//! grid's result and the reference are byte-for-byte comparable.
//!
//! * `aggregates.csv` (per chunk): `provider_id,claims,amount_cents`, sorted by provider.
//! * `rejects.csv`: `claim_id,reason,row`, `row` always quoted, sorted by `(claim_id, row)`.
//! * `totals.csv`: `provider_id,claims,amount` (`D.CC`), sorted, then `TOTAL,<claims>,<amount>`.
//! * `summary.txt`: `valid_rows=N`, `rejected_rows=N`, `providers=N`, one per line.
//!
//! All files use `\n` line ends and are written atomically (temporary file, then rename).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::row::{format_cents, ProviderId};

/// File name of a chunk's per-provider aggregates.
pub const AGGREGATES_FILE: &str = "aggregates.csv";
/// File name of the malformed rows (per chunk and merged).
pub const REJECTS_FILE: &str = "rejects.csv";
/// File name of the merged per-provider totals.
pub const TOTALS_FILE: &str = "totals.csv";
/// File name of the merged summary counts.
pub const SUMMARY_FILE: &str = "summary.txt";

/// Header of `aggregates.csv`.
pub const AGGREGATES_HEADER: &str = "provider_id,claims,amount_cents";
/// Header of `rejects.csv`.
pub const REJECTS_HEADER: &str = "claim_id,reason,row";
/// Header of `totals.csv`.
pub const TOTALS_HEADER: &str = "provider_id,claims,amount";

/// Claim count and amount of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderTotal {
    /// The provider.
    pub provider: ProviderId,
    /// Number of valid claims.
    pub claims: u64,
    /// Sum of their amounts in cents.
    pub amount_cents: u128,
}

/// One malformed row as recorded in `rejects.csv`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reject {
    /// First comma-separated field of the raw row (may be empty).
    pub claim_id: String,
    /// The raw row, without its line end.
    pub row: String,
    /// The reason code.
    pub reason: String,
}

impl Reject {
    /// Builds a reject from a raw row (line end already removed) and its reason code.
    pub fn from_raw(row: &str, reason: &str) -> Self {
        let claim_id = row.split(',').next().unwrap_or_default();
        Reject { claim_id: claim_id.to_owned(), row: row.to_owned(), reason: reason.to_owned() }
    }
}

/// Sorts rejects by `(claim_id, row)` (then reason, to be total).
pub fn sort_rejects(rejects: &mut [Reject]) {
    rejects.sort_unstable();
}

/// Summary counts written to `summary.txt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of valid rows (claims) aggregated.
    pub valid_rows: u64,
    /// Number of rejected rows.
    pub rejected_rows: u64,
    /// Number of distinct providers with at least one valid claim.
    pub providers: u64,
}

/// Appends `field` CSV-style: quoted (inner quotes doubled) if `always` or if needed.
pub fn push_csv_field(out: &mut String, field: &str, always: bool) {
    let needs = always || field.contains([',', '"', '\r', '\n']);
    if !needs {
        out.push_str(field);
        return;
    }
    out.push('"');
    for ch in field.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
}

/// Formats one `rejects.csv` line (without the `\n`).
pub fn format_reject(r: &Reject) -> String {
    let mut line = String::with_capacity(r.row.len() + r.claim_id.len() + 24);
    push_csv_field(&mut line, &r.claim_id, false);
    line.push(',');
    push_csv_field(&mut line, &r.reason, false);
    line.push(',');
    push_csv_field(&mut line, &r.row, true);
    line
}

/// Splits one CSV line into fields, honouring double-quoted fields with `""` escapes.
pub fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_owned()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("quote inside unquoted field".to_owned()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Reads `path` line by line (bytes, `\n` removed, one trailing `\r` removed), calling
/// `f(line_number, bytes)` with 1-based line numbers. Errors name the file.
pub fn for_each_line(path: &Path, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let mut line = buf.as_slice();
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest;
        }
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        f(line_no, line)?;
    }
}

/// Creates `dir` (and parents) if missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))
}

/// Writes `path` atomically: `write` fills a temporary sibling file which is then renamed.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| -> io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        drop(w);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `aggregates.csv` (amounts in cents) from totals already sorted by provider.
pub fn write_aggregates(path: &Path, totals: &[ProviderTotal]) -> Result<()> {
    check_sorted(totals)?;
    write_atomically(path, |w| {
        writeln!(w, "{AGGREGATES_HEADER}")?;
        for t in totals {
            writeln!(w, "{},{},{}", t.provider, t.claims, t.amount_cents)?;
        }
        Ok(())
    })
}

/// Writes `totals.csv` (amounts as `D.CC`, plus the `TOTAL` line) from sorted totals.
pub fn write_totals(path: &Path, totals: &[ProviderTotal]) -> Result<()> {
    check_sorted(totals)?;
    let claims: u64 = totals.iter().map(|t| t.claims).sum();
    let cents: u128 = totals.iter().map(|t| t.amount_cents).sum();
    write_atomically(path, |w| {
        writeln!(w, "{TOTALS_HEADER}")?;
        for t in totals {
            writeln!(w, "{},{},{}", t.provider, t.claims, format_cents(t.amount_cents))?;
        }
        writeln!(w, "TOTAL,{claims},{}", format_cents(cents))
    })
}

/// Writes `rejects.csv`; `rejects` must already be sorted with [`sort_rejects`].
pub fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<()> {
    if !rejects.windows(2).all(|w| w[0] <= w[1]) {
        bail!("internal error: rejects for {} not sorted", path.display());
    }
    write_atomically(path, |w| {
        writeln!(w, "{REJECTS_HEADER}")?;
        for r in rejects {
            writeln!(w, "{}", format_reject(r))?;
        }
        Ok(())
    })
}

/// Writes `summary.txt`.
pub fn write_summary(path: &Path, s: &Summary) -> Result<()> {
    write_atomically(path, |w| {
        writeln!(w, "valid_rows={}", s.valid_rows)?;
        writeln!(w, "rejected_rows={}", s.rejected_rows)?;
        writeln!(w, "providers={}", s.providers)
    })
}

/// Writes the three final files (`totals.csv`, `rejects.csv`, `summary.txt`) into `dir`.
pub fn write_final(dir: &Path, totals: &[ProviderTotal], rejects: &[Reject]) -> Result<Summary> {
    ensure_dir(dir)?;
    let summary = Summary {
        valid_rows: totals.iter().map(|t| t.claims).sum(),
        rejected_rows: rejects.len() as u64,
        providers: totals.len() as u64,
    };
    write_totals(&dir.join(TOTALS_FILE), totals)?;
    write_rejects(&dir.join(REJECTS_FILE), rejects)?;
    write_summary(&dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

fn check_sorted(totals: &[ProviderTotal]) -> Result<()> {
    if !totals.windows(2).all(|w| w[0].provider < w[1].provider) {
        bail!("internal error: provider totals not strictly sorted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_line_quoting_round_trips() {
        let rows = ["C0000000001,P\"12\"34,M1,2026-01-01,1,1.00", "", "no comma at all", "\"quoted\",x", "a,\"\",b"];
        for row in rows {
            let r = Reject::from_raw(row, "field_count");
            let line = format_reject(&r);
            let fields = split_csv_line(&line).expect("parses");
            assert_eq!(fields, vec![r.claim_id.clone(), r.reason.clone(), r.row.clone()]);
        }
        let r = Reject::from_raw("C1,P1", "field_count");
        assert_eq!(format_reject(&r), "C1,field_count,\"C1,P1\"");
        let r = Reject::from_raw("\"x\",y", "field_count");
        assert_eq!(format_reject(&r), "\"\"\"x\"\"\",field_count,\"\"\"x\"\",y\"");
    }

    #[test]
    fn split_rejects_bad_quoting() {
        assert!(split_csv_line("\"abc").is_err());
        assert!(split_csv_line("\"abc\"x,y").is_err());
        assert!(split_csv_line("ab\"c,y").is_err());
        assert_eq!(split_csv_line("a,,\"\"").expect("ok"), vec!["a".to_owned(), String::new(), String::new()]);
    }

    #[test]
    fn rejects_sort_by_claim_id_then_row() {
        let mut v = vec![
            Reject::from_raw("C2,b", "field_count"),
            Reject::from_raw("C1,z", "field_count"),
            Reject::from_raw("C1,a", "field_count"),
            Reject::from_raw(",x", "field_count"),
        ];
        sort_rejects(&mut v);
        let rows: Vec<&str> = v.iter().map(|r| r.row.as_str()).collect();
        assert_eq!(rows, [",x", "C1,a", "C1,z", "C2,b"]);
    }
}
