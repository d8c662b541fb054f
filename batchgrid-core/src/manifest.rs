//! Input manifests (`input.manifest:`): a file or an S3 object listing a job's inputs, one per
//! line, each becoming one first-stage task (per-file semantics). Read as a stream, line by
//! line, so a manifest of millions of objects is never held in memory.
//!
//! Two formats:
//! - `lines`: one `s3://bucket/key` (or, for a local manifest on the embedded grid, a local
//!   path, relative to the manifest's directory) per line; blank lines and lines starting with
//!   `#` are skipped.
//! - `s3-inventory`: an S3 Inventory CSV report: every field quoted, the bucket first and the
//!   key second, URL-encoded as S3 Inventory writes it (`+` for a space, `%XX` otherwise); the
//!   other columns are ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest manifest line accepted (an S3 key is at most 1,024 bytes).
pub const MAX_LINE_BYTES: u64 = 64 * 1024;

/// How a manifest lists its inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestFormat {
    /// One `s3://bucket/key` or local path per line.
    Lines,
    /// An S3 Inventory CSV report.
    S3Inventory,
}

impl ManifestFormat {
    /// The format a manifest named `name` has when none is given: an S3 Inventory report for
    /// a `.csv`, a plain list otherwise.
    pub fn for_name(name: &str) -> Self {
        if name.to_ascii_lowercase().ends_with(".csv") {
            ManifestFormat::S3Inventory
        } else {
            ManifestFormat::Lines
        }
    }
}

/// One input a manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestEntry {
    /// An object in S3.
    Object {
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
    /// A local file, as written (the caller resolves it against the manifest's directory).
    Local(PathBuf),
}

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading it failed.
    #[error("manifest {manifest}: {source}")]
    Read {
        /// The manifest.
        manifest: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// One of its lines is not an input.
    #[error("manifest {manifest}, line {line}: {message}")]
    Line {
        /// The manifest.
        manifest: String,
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses one line (its end of line removed); `None` for a line that lists nothing.
pub fn parse_line(format: ManifestFormat, line: &str) -> Result<Option<ManifestEntry>, String> {
    match format {
        ManifestFormat::Lines => {
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                return Ok(None);
            }
            match text.strip_prefix("s3://") {
                Some(rest) => object(rest.split_once('/').unwrap_or((rest, ""))).map(Some),
                None => Ok(Some(ManifestEntry::Local(PathBuf::from(text)))),
            }
        }
        ManifestFormat::S3Inventory => {
            if line.trim().is_empty() {
                return Ok(None);
            }
            let fields = csv_fields(line)?;
            let [bucket, key, ..] = fields.as_slice() else {
                return Err("an S3 Inventory line needs a bucket and a key".into());
            };
            let key = inventory_key(key)?;
            object((bucket, &key)).map(Some)
        }
    }
}

/// An object entry, checked: a valid bucket name and a key naming one object.
fn object((bucket, key): (&str, &str)) -> Result<ManifestEntry, String> {
    match crate::spec::InputSpec::parse_s3(&format!("s3://{bucket}/"))
        .unwrap_or_else(|| Err(format!("`{bucket}` is not a bucket")))
    {
        Err(message) => Err(message),
        Ok(_) if key.is_empty() || key.ends_with('/') => {
            Err(format!("`s3://{bucket}/{key}` names no object (a key is needed, not a prefix)"))
        }
        Ok(_) => Ok(ManifestEntry::Object { bucket: bucket.to_owned(), key: key.to_owned() }),
    }
}

/// A CSV line's fields, each quoted (`""` inside for a quote) or bare.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("text after a quoted field".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// A key as S3 Inventory writes it (form URL-encoded), decoded.
fn inventory_key(encoded: &str) -> Result<String, String> {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| format!("key `{encoded}` does not decode to UTF-8"))
}

/// Reads a manifest's entries one at a time, keeping only the current line.
pub struct ManifestReader<R> {
    reader: R,
    format: ManifestFormat,
    name: String,
    line: u64,
    buffer: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> ManifestReader<R> {
    /// A reader of the manifest `name` (for errors) in `format`.
    pub fn new(reader: R, format: ManifestFormat, name: impl Into<String>) -> Self {
        Self { reader, format, name: name.into(), line: 0, buffer: Vec::new() }
    }

    /// The next entry with its line number, or `None` at the end.
    pub async fn next_entry(&mut self) -> Result<Option<(u64, ManifestEntry)>, ManifestError> {
        loop {
            self.buffer.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut self.buffer)
                .await
                .map_err(|source| ManifestError::Read { manifest: self.name.clone(), source })?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            let fail = |message: String| ManifestError::Line { manifest: self.name.clone(), line: self.line, message };
            if self.buffer.len() as u64 > MAX_LINE_BYTES {
                return Err(fail(format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            let text = std::str::from_utf8(&self.buffer).map_err(|_| fail("not UTF-8 text".into()))?;
            let text = text.strip_suffix('\n').unwrap_or(text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if let Some(entry) = parse_line(self.format, text).map_err(fail)? {
                return Ok(Some((self.line, entry)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str, format: ManifestFormat) -> Result<Vec<(u64, ManifestEntry)>, ManifestError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let mut reader = ManifestReader::new(text.as_bytes(), format, "inputs.txt");
            let mut entries = Vec::new();
            while let Some(entry) = reader.next_entry().await? {
                entries.push(entry);
            }
            Ok(entries)
        })
    }

    fn object(bucket: &str, key: &str) -> ManifestEntry {
        ManifestEntry::Object { bucket: bucket.into(), key: key.into() }
    }

    #[test]
    fn a_plain_list_skips_blanks_and_comments() {
        let text =
            "# month-end inputs\ns3://raw-bucket/a/1.csv\n\n  s3://raw-bucket/a/2 b.csv  \r\nlocal/3.csv\n# done";
        let entries = read_all(text, ManifestFormat::Lines).expect("read");
        assert_eq!(
            entries,
            vec![
                (2, object("raw-bucket", "a/1.csv")),
                (4, object("raw-bucket", "a/2 b.csv")),
                (5, ManifestEntry::Local(PathBuf::from("local/3.csv"))),
            ]
        );
        assert!(read_all("", ManifestFormat::Lines).expect("empty").is_empty());
    }

    #[test]
    fn an_inventory_report_decodes_its_keys() {
        let text = "\"raw-bucket\",\"media/a+b%2Bc.mp4\",\"1024\"\n\"raw-bucket\",\"caf%C3%A9/%23x%3F.csv\",\"7\"\n";
        let entries = read_all(text, ManifestFormat::S3Inventory).expect("read");
        assert_eq!(
            entries,
            vec![(1, object("raw-bucket", "media/a b+c.mp4")), (2, object("raw-bucket", "café/#x?.csv"))]
        );
        assert_eq!(ManifestFormat::for_name("s3://b/inventory/data/1.CSV"), ManifestFormat::S3Inventory);
        assert_eq!(ManifestFormat::for_name("inputs.txt"), ManifestFormat::Lines);
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let cases = [
            ("s3://raw-bucket/ok\ns3://Bad_Bucket/x\n", ManifestFormat::Lines, 2, "not a valid S3 bucket"),
            ("# c\n\ns3://raw-bucket/prefix/\n", ManifestFormat::Lines, 3, "names no object"),
            ("\"raw-bucket\",\"k\"\n\"raw-bucket\n", ManifestFormat::S3Inventory, 2, "not closed"),
            ("\"raw-bucket\"\n", ManifestFormat::S3Inventory, 1, "a bucket and a key"),
            ("\"raw-bucket\",\"%FF\"\n", ManifestFormat::S3Inventory, 1, "UTF-8"),
        ];
        for (text, format, line, says) in cases {
            let error = read_all(text, format).expect_err(text).to_string();
            assert!(error.contains(&format!("inputs.txt, line {line}:")) && error.contains(says), "{text:?}: {error}");
        }
        let long = format!("s3://raw-bucket/{}\n", "k".repeat(MAX_LINE_BYTES as usize));
        let error = read_all(&long, ManifestFormat::Lines).expect_err("too long").to_string();
        assert!(error.contains("line 1: longer than"), "{error}");
    }
}
