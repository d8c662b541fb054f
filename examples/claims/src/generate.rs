//! Deterministic synthetic claims generator.
//!
//! The output depends only on `(rows, seed, malformed_per_million)`: a hand-written
//! SplitMix64 generator and integer-only arithmetic make the bytes identical on every
//! machine and every Rust version. Two independent streams are used, one for row content and
//! one for planting malformed rows, so the valid rows' content does not depend on the
//! malformed rate.
//!
//! Claim ids are `C` + the 1-based data row number, zero padded to 10 digits.

use std::io::{self, Write};

use crate::row::{RejectReason, HEADER};

/// The SplitMix64 pseudo-random generator (Steele, Lea & Flood), stable by construction.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; `n` must be > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Number of distinct providers the generator draws from.
pub const PROVIDERS: u64 = 500;

/// Default number of malformed rows planted per million rows.
pub const DEFAULT_MALFORMED_PER_MILLION: u32 = 1000;

/// The kinds of malformed rows the generator plants, used in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MalformedKind {
    /// One field too few or one too many.
    WrongFieldCount,
    /// Amount that is not a number (`n/a`, `12O.50`, ...).
    NonNumericAmount,
    /// Amount with a leading minus sign.
    NegativeAmount,
    /// Amount with three fraction digits.
    ThreeDecimals,
    /// Empty provider_id.
    EmptyProvider,
    /// Well-formed but impossible date (e.g. `2026-02-30`).
    InvalidDate,
    /// provider_id not of the form `P` + 4 digits.
    BadProviderFormat,
}

impl MalformedKind {
    /// All kinds, in rotation order.
    pub const ALL: [MalformedKind; 7] = [
        MalformedKind::WrongFieldCount,
        MalformedKind::NonNumericAmount,
        MalformedKind::NegativeAmount,
        MalformedKind::ThreeDecimals,
        MalformedKind::EmptyProvider,
        MalformedKind::InvalidDate,
        MalformedKind::BadProviderFormat,
    ];

    /// The reason [`crate::parse_row`] gives for rows of this kind.
    pub fn expected_reason(self) -> RejectReason {
        match self {
            MalformedKind::WrongFieldCount => RejectReason::FieldCount,
            MalformedKind::NonNumericAmount => RejectReason::AmountNotNumeric,
            MalformedKind::NegativeAmount => RejectReason::AmountNegative,
            MalformedKind::ThreeDecimals => RejectReason::AmountPrecision,
            MalformedKind::EmptyProvider => RejectReason::ProviderMissing,
            MalformedKind::InvalidDate => RejectReason::DateInvalid,
            MalformedKind::BadProviderFormat => RejectReason::ProviderFormat,
        }
    }
}

/// Parameters of one generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of data rows (the header is not counted).
    pub rows: u64,
    /// PRNG seed.
    pub seed: u64,
    /// Expected malformed rows per million (0..=1,000,000).
    pub malformed_per_million: u32,
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateStats {
    /// Data rows written.
    pub rows: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Malformed rows per kind, indexed like [`MalformedKind::ALL`].
    pub malformed_by_kind: [u64; 7],
    /// Bytes written, header included.
    pub bytes: u64,
}

const INVALID_DATES: [&str; 10] = [
    "2026-02-29",
    "2026-02-30",
    "2026-02-31",
    "2026-04-31",
    "2026-06-31",
    "2026-09-31",
    "2026-11-31",
    "2026-13-01",
    "2026-00-10",
    "2026-01-32",
];
const NON_NUMERIC_AMOUNTS: [&str; 5] = ["n/a", "12O.50", "1.2.3", "$45.00", "1e3"];
const BAD_PROVIDERS: [&str; 6] = ["P12345", "P123", "X1234", "p1234", "P12A4", "\"P1234\""];

/// Cumulative day counts at the start of each month of 2026 (not a leap year).
const MONTH_STARTS: [u16; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];

/// Writes the header and `opts.rows` rows to `out` (wrap it in a `BufWriter`).
pub fn generate<W: Write>(opts: &GenerateOptions, out: &mut W) -> io::Result<GenerateStats> {
    if opts.malformed_per_million > 1_000_000 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "--malformed-per-million must be at most 1000000"));
    }
    let mut content = SplitMix64::new(opts.seed);
    let mut faults = SplitMix64::new(opts.seed ^ 0x5DEE_CE66_D1CE_4E5B);
    let mut stats = GenerateStats::default();
    let mut line: Vec<u8> = Vec::with_capacity(128);

    out.write_all(HEADER.as_bytes())?;
    out.write_all(b"\n")?;
    stats.bytes = HEADER.len() as u64 + 1;

    let mut next_kind = 0usize;
    for index in 1..=opts.rows {
        let row = RowValues::draw(&mut content);
        line.clear();
        if faults.below(1_000_000) < u64::from(opts.malformed_per_million) {
            let kind = MalformedKind::ALL[next_kind];
            next_kind = (next_kind + 1) % MalformedKind::ALL.len();
            stats.malformed += 1;
            stats.malformed_by_kind[kind as usize] += 1;
            row.push_malformed(index, kind, &mut faults, &mut line);
        } else {
            row.push_valid(index, &mut line);
        }
        line.push(b'\n');
        out.write_all(&line)?;
        stats.bytes += line.len() as u64;
    }
    stats.rows = opts.rows;
    out.flush()?;
    Ok(stats)
}

/// The random content of one row.
struct RowValues {
    provider: u64,
    member: u64,
    day_of_year: u64,
    procedure: u64,
    cents: u64,
}

impl RowValues {
    fn draw(rng: &mut SplitMix64) -> Self {
        // Skewed provider choice: square a uniform 32-bit number, so low indices dominate
        // (index 0 gets ~4.5% of claims, index 499 ~0.1%), then scatter indices over
        // P1000..P9999 with a multiplicative permutation.
        let u = rng.next_u64() >> 32;
        let skewed = (u * u) >> 32;
        let index = (skewed * PROVIDERS) >> 32;
        let provider = 1000 + (index * 7919) % 9000;
        let member = rng.below(10_000_000);
        let day_of_year = rng.below(365);
        let procedure = 10_000 + rng.below(90_000);
        let band = rng.below(100);
        let cents = match band {
            0..=69 => 500 + rng.below(20_000),
            70..=94 => 5_000 + rng.below(200_000),
            _ => 50_000 + rng.below(5_000_000),
        };
        RowValues { provider, member, day_of_year, procedure, cents }
    }

    fn push_date(&self, line: &mut Vec<u8>) {
        let day = self.day_of_year as u16;
        let month = MONTH_STARTS.iter().rposition(|&s| s <= day).unwrap_or(0);
        let dom = day - MONTH_STARTS[month] + 1;
        line.extend_from_slice(b"2026-");
        push_padded(line, month as u64 + 1, 2);
        line.push(b'-');
        push_padded(line, u64::from(dom), 2);
    }

    fn push_amount(&self, line: &mut Vec<u8>) {
        push_padded(line, self.cents / 100, 1);
        line.push(b'.');
        push_padded(line, self.cents % 100, 2);
    }

    fn push_valid(&self, index: u64, line: &mut Vec<u8>) {
        line.push(b'C');
        push_padded(line, index, 10);
        line.extend_from_slice(b",P");
        push_padded(line, self.provider, 4);
        line.extend_from_slice(b",M");
        push_padded(line, self.member, 7);
        line.push(b',');
        self.push_date(line);
        line.push(b',');
        push_padded(line, self.procedure, 5);
        line.push(b',');
        self.push_amount(line);
    }

    fn push_malformed(&self, index: u64, kind: MalformedKind, rng: &mut SplitMix64, line: &mut Vec<u8>) {
        let pick = |rng: &mut SplitMix64, options: &[&'static str]| options[rng.below(options.len() as u64) as usize];
        let mut fields: Vec<Vec<u8>> = Vec::with_capacity(7);
        let mut field = Vec::with_capacity(16);
        self.push_valid(index, &mut field);
        fields.extend(field.split(|&b| b == b',').map(<[u8]>::to_vec));
        match kind {
            MalformedKind::WrongFieldCount => {
                if rng.below(2) == 0 {
                    fields.remove(4);
                } else {
                    fields.push(b"EXTRA".to_vec());
                }
            }
            MalformedKind::NonNumericAmount => {
                fields[5] = pick(rng, &NON_NUMERIC_AMOUNTS).as_bytes().to_vec();
            }
            MalformedKind::NegativeAmount => fields[5].insert(0, b'-'),
            MalformedKind::ThreeDecimals => {
                fields[5].push(b'0' + rng.below(10) as u8);
            }
            MalformedKind::EmptyProvider => fields[1].clear(),
            MalformedKind::InvalidDate => {
                fields[3] = pick(rng, &INVALID_DATES).as_bytes().to_vec();
            }
            MalformedKind::BadProviderFormat => {
                fields[1] = pick(rng, &BAD_PROVIDERS).as_bytes().to_vec();
            }
        }
        line.extend_from_slice(&fields.join(&b","[..]));
    }
}

/// Appends `value` in decimal, zero padded to at least `width` digits.
fn push_padded(line: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let start = i.min(digits.len() - width.min(digits.len()));
    line.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{classify_line, parse_row, Line};

    fn gen(rows: u64, seed: u64, k: u32) -> (Vec<u8>, GenerateStats) {
        let mut out = Vec::new();
        let stats = generate(&GenerateOptions { rows, seed, malformed_per_million: k }, &mut out)
            .expect("generate into memory");
        (out, stats)
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn padding() {
        let mut v = Vec::new();
        push_padded(&mut v, 42, 10);
        v.push(b' ');
        push_padded(&mut v, 12345, 2);
        v.push(b' ');
        push_padded(&mut v, 0, 1);
        assert_eq!(v, b"0000000042 12345 0");
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, sa) = gen(5_000, 7, 1000);
        let (b, sb) = gen(5_000, 7, 1000);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.bytes, a.len() as u64);
    }

    #[test]
    fn different_seed_different_bytes() {
        let (a, _) = gen(5_000, 7, 1000);
        let (b, _) = gen(5_000, 8, 1000);
        assert_ne!(a, b);
    }

    #[test]
    fn valid_rows_do_not_depend_on_malformed_rate() {
        let (a, _) = gen(2_000, 3, 0);
        let (b, _) = gen(2_000, 3, 50_000);
        let a = String::from_utf8(a).expect("utf8");
        let b = String::from_utf8(b).expect("utf8");
        let mut differing = 0;
        for (x, y) in a.lines().zip(b.lines()) {
            if parse_row(y).is_ok() {
                assert_eq!(x, y);
            } else {
                differing += 1;
            }
        }
        assert!(differing > 0);
    }

    #[test]
    fn rows_are_well_formed_and_malformed_rows_are_planted() {
        let (out, stats) = gen(100_000, 42, 1000);
        let text = String::from_utf8(out).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let mut valid = 0u64;
        let mut rejected = std::collections::BTreeMap::new();
        let mut providers = std::collections::BTreeSet::new();
        for (i, line) in lines.enumerate() {
            assert!(line.starts_with(&format!("C{:010},", i + 1)), "{line}");
            match classify_line(line) {
                Line::Valid(c) => {
                    valid += 1;
                    assert_eq!(c.service_date.year, 2026);
                    providers.insert(c.provider);
                }
                Line::Rejected(r) => *rejected.entry(r).or_insert(0u64) += 1,
                Line::Skip => panic!("unexpected skip: {line:?}"),
            }
        }
        assert_eq!(valid + stats.malformed, 100_000);
        assert_eq!(rejected.values().sum::<u64>(), stats.malformed);
        // ~100 expected at 0.1%.
        assert!((50..=200).contains(&stats.malformed), "{}", stats.malformed);
        for (i, kind) in MalformedKind::ALL.iter().enumerate() {
            assert!(stats.malformed_by_kind[i] > 0, "{kind:?} never planted");
            assert_eq!(rejected.get(&kind.expected_reason()).copied(), Some(stats.malformed_by_kind[i]), "{kind:?}");
        }
        assert!(providers.len() > 400, "{} providers", providers.len());
        assert!(providers.len() <= PROVIDERS as usize);
    }

    #[test]
    fn no_malformed_when_rate_is_zero() {
        let (_, stats) = gen(20_000, 1, 0);
        assert_eq!(stats.malformed, 0);
    }

    #[test]
    fn rate_above_one_million_is_refused() {
        let mut out = Vec::new();
        let opts = GenerateOptions { rows: 1, seed: 1, malformed_per_million: 1_000_001 };
        assert!(generate(&opts, &mut out).is_err());
    }
}
