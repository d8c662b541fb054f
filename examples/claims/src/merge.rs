//! Stage 2 of the grid job: merge every chunk's `aggregates.csv` and `rejects.csv` found
//! under a directory into `totals.csv`, `rejects.csv` and `summary.txt`.
//!
//! Directories are walked recursively with `std::fs`, entries sorted by name, symlinked
//! directories not followed, and the output directory skipped if it lies inside the input.
//! Input files are checked strictly: any malformed line is an error naming file and line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::output::{
    ensure_dir, for_each_line, sort_rejects, split_csv_line, write_final, ProviderTotal, Reject, Summary,
    AGGREGATES_FILE, AGGREGATES_HEADER, REJECTS_FILE, REJECTS_HEADER,
};
use crate::row::{ProviderId, RejectReason};

/// The partial-result files found under an input directory, in sorted walk order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartialFiles {
    /// Every `aggregates.csv`.
    pub aggregates: Vec<PathBuf>,
    /// Every `rejects.csv`.
    pub rejects: Vec<PathBuf>,
}

/// Recursively finds `aggregates.csv` and `rejects.csv` under `dir`, skipping `skip_dir`.
pub fn find_partials(dir: &Path, skip_dir: Option<&Path>) -> Result<PartialFiles> {
    let mut found = PartialFiles::default();
    walk(dir, skip_dir, &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, skip_dir: Option<&Path>, found: &mut PartialFiles) -> Result<()> {
    let read_err = || format!("cannot read directory {}", dir.display());
    let mut entries =
        fs::read_dir(dir).with_context(read_err)?.collect::<std::io::Result<Vec<_>>>().with_context(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().with_context(|| format!("cannot stat {}", path.display()))?;
        if file_type.is_dir() {
            let canonical = fs::canonicalize(&path).with_context(|| format!("cannot resolve {}", path.display()))?;
            if Some(canonical.as_path()) != skip_dir {
                walk(&path, skip_dir, found)?;
            }
            continue;
        }
        let name = entry.file_name();
        let list = if name == AGGREGATES_FILE {
            &mut found.aggregates
        } else if name == REJECTS_FILE {
            &mut found.rejects
        } else {
            continue;
        };
        // Symlinks to files are read; symlinks to directories are not followed.
        if fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
            list.push(path);
        }
    }
    Ok(())
}

/// Merges all partial results under `input_dir` and writes the final files to `out_dir`.
pub fn merge_dir(input_dir: &Path, out_dir: &Path) -> Result<Summary> {
    if !input_dir.is_dir() {
        bail!("input directory {} does not exist", input_dir.display());
    }
    ensure_dir(out_dir)?;
    let out_canonical = fs::canonicalize(out_dir).with_context(|| format!("cannot resolve {}", out_dir.display()))?;
    let partials = find_partials(input_dir, Some(&out_canonical))?;
    if partials.aggregates.is_empty() {
        bail!("no {AGGREGATES_FILE} found under {}", input_dir.display());
    }

    let mut totals: BTreeMap<ProviderId, (u64, u128)> = BTreeMap::new();
    for path in &partials.aggregates {
        for t in read_aggregates(path)? {
            let slot = totals.entry(t.provider).or_default();
            slot.0 = slot
                .0
                .checked_add(t.claims)
                .ok_or_else(|| anyhow!("claim count overflow merging {}", path.display()))?;
            slot.1 = slot
                .1
                .checked_add(t.amount_cents)
                .ok_or_else(|| anyhow!("amount overflow merging {}", path.display()))?;
        }
    }
    let mut rejects = Vec::new();
    for path in &partials.rejects {
        rejects.extend(read_rejects(path)?);
    }
    sort_rejects(&mut rejects);

    let totals: Vec<ProviderTotal> = totals
        .into_iter()
        .map(|(provider, (claims, amount_cents))| ProviderTotal { provider, claims, amount_cents })
        .collect();
    write_final(out_dir, &totals, &rejects)
}

/// Reads and strictly checks one `aggregates.csv`.
pub fn read_aggregates(path: &Path) -> Result<Vec<ProviderTotal>> {
    let mut out: Vec<ProviderTotal> = Vec::new();
    let mut seen = BTreeMap::new();
    let mut saw_header = false;
    for_each_line(path, |no, bytes| {
        let at = || format!("{}:{no}", path.display());
        let line = std::str::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", at()))?;
        if no == 1 {
            if line != AGGREGATES_HEADER {
                bail!("{}: bad header {line:?}, expected {AGGREGATES_HEADER:?}", at());
            }
            saw_header = true;
            return Ok(());
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [provider, claims, cents] = fields[..] else {
            bail!("{}: expected 3 fields, got {line:?}", at());
        };
        let provider = ProviderId::parse(provider).ok_or_else(|| anyhow!("{}: bad provider_id {provider:?}", at()))?;
        let claims: u64 = parse_count(claims).ok_or_else(|| anyhow!("{}: bad claims count {claims:?}", at()))?;
        let amount_cents: u128 = parse_count(cents).ok_or_else(|| anyhow!("{}: bad amount_cents {cents:?}", at()))?;
        if claims == 0 || amount_cents < u128::from(claims) {
            bail!("{}: inconsistent totals for {provider} ({claims} claims, {amount_cents} cents)", at());
        }
        if let Some(first) = seen.insert(provider, no) {
            bail!("{}: duplicate provider {provider} (first on line {first})", at());
        }
        out.push(ProviderTotal { provider, claims, amount_cents });
        Ok(())
    })?;
    if !saw_header {
        bail!("{}: empty file, expected header {AGGREGATES_HEADER:?}", path.display());
    }
    Ok(out)
}

/// Reads and strictly checks one `rejects.csv`.
pub fn read_rejects(path: &Path) -> Result<Vec<Reject>> {
    let mut out = Vec::new();
    let mut saw_header = false;
    for_each_line(path, |no, bytes| {
        let at = || format!("{}:{no}", path.display());
        let line = std::str::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", at()))?;
        if no == 1 {
            if line != REJECTS_HEADER {
                bail!("{}: bad header {line:?}, expected {REJECTS_HEADER:?}", at());
            }
            saw_header = true;
            return Ok(());
        }
        let fields = split_csv_line(line).map_err(|e| anyhow!("{}: {e}", at()))?;
        let [claim_id, reason, row] =
            <[String; 3]>::try_from(fields).map_err(|f| anyhow!("{}: expected 3 fields, got {}", at(), f.len()))?;
        if RejectReason::from_code(&reason).is_none() {
            bail!("{}: unknown reason {reason:?}", at());
        }
        let reject = Reject::from_raw(&row, &reason);
        if reject.claim_id != claim_id {
            bail!("{}: claim_id {claim_id:?} is not the row's first field", at());
        }
        out.push(reject);
        Ok(())
    })?;
    if !saw_header {
        bail!("{}: empty file, expected header {REJECTS_HEADER:?}", path.display());
    }
    Ok(out)
}

fn parse_count<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{SUMMARY_FILE, TOTALS_FILE};

    fn write(path: &Path, text: &str) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, text)?;
        Ok(())
    }

    #[test]
    fn merges_nested_partials() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("in");
        write(&input.join("b/aggregates.csv"), "provider_id,claims,amount_cents\nP0001,2,1050\nP0003,1,1\n")?;
        write(&input.join("a/x/aggregates.csv"), "provider_id,claims,amount_cents\nP0001,1,50\n")?;
        write(&input.join("a/x/rejects.csv"), "claim_id,reason,row\nC2,field_count,\"C2,x\"\n")?;
        write(&input.join("b/rejects.csv"), "claim_id,reason,row\nC1,field_count,\"C1,y\"\n,provider_missing,\",\"\n")?;
        write(&input.join("b/other.csv"), "ignored")?;
        // Output inside the input: must not be read back on a second run.
        let out = input.join("merged");
        for _ in 0..2 {
            let summary = merge_dir(&input, &out)?;
            assert_eq!(summary, Summary { valid_rows: 4, rejected_rows: 3, providers: 2 });
        }
        assert_eq!(
            fs::read_to_string(out.join(TOTALS_FILE))?,
            "provider_id,claims,amount\nP0001,3,11.00\nP0003,1,0.01\nTOTAL,4,11.01\n"
        );
        assert_eq!(
            fs::read_to_string(out.join(REJECTS_FILE))?,
            "claim_id,reason,row\n,provider_missing,\",\"\nC1,field_count,\"C1,y\"\nC2,field_count,\"C2,x\"\n"
        );
        assert_eq!(fs::read_to_string(out.join(SUMMARY_FILE))?, "valid_rows=4\nrejected_rows=3\nproviders=2\n");
        Ok(())
    }

    #[test]
    fn malformed_aggregates_are_errors_naming_file_and_line() -> Result<()> {
        let cases = [
            ("provider_id,claims,amount\nP0001,1,1\n", ":1:"),
            ("", "empty file"),
            ("provider_id,claims,amount_cents\nP0001,1,1\nP0002,x,1\n", ":3:"),
            ("provider_id,claims,amount_cents\nP0001,1,-1\n", ":2:"),
            ("provider_id,claims,amount_cents\nP001,1,1\n", ":2:"),
            ("provider_id,claims,amount_cents\nP0001,1\n", ":2:"),
            ("provider_id,claims,amount_cents\nP0001,1,1\nP0001,1,1\n", ":3:"),
            ("provider_id,claims,amount_cents\nP0001,0,0\n", ":2:"),
            ("provider_id,claims,amount_cents\n\n", ":2:"),
        ];
        for (text, want) in cases {
            let dir = tempfile::tempdir()?;
            let input = dir.path().join("in");
            write(&input.join("c1/aggregates.csv"), text)?;
            let err = merge_dir(&input, &dir.path().join("out")).expect_err(text);
            let msg = format!("{err:#}");
            assert!(msg.contains("c1/aggregates.csv"), "{msg}");
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
        Ok(())
    }

    #[test]
    fn malformed_rejects_are_errors() -> Result<()> {
        let cases = [
            "claim_id,reason\n",
            "claim_id,reason,row\nC1,field_count,\"C1,x\n",
            "claim_id,reason,row\nC1,bogus,\"C1,x\"\n",
            "claim_id,reason,row\nC9,field_count,\"C1,x\"\n",
            "claim_id,reason,row\nC1,field_count\n",
        ];
        for text in cases {
            let dir = tempfile::tempdir()?;
            let input = dir.path().join("in");
            write(&input.join("c1/aggregates.csv"), "provider_id,claims,amount_cents\n")?;
            write(&input.join("c1/rejects.csv"), text)?;
            let err = merge_dir(&input, &dir.path().join("out")).expect_err(text);
            assert!(format!("{err:#}").contains("c1/rejects.csv"), "{err:#}");
        }
        Ok(())
    }

    #[test]
    fn no_partials_is_an_error() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let err = merge_dir(dir.path(), &dir.path().join("out")).expect_err("empty");
        assert!(format!("{err:#}").contains("no aggregates.csv"), "{err:#}");
        let err = merge_dir(&dir.path().join("missing"), &dir.path().join("out")).expect_err("missing");
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
        Ok(())
    }
}
