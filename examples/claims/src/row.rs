//! One CSV row of the claims file: the [`Claim`] type, the strict [`parse_row`] validator and
//! the stable [`RejectReason`] codes.
//!
//! The input format is deliberately simple: six comma-separated fields, no quoting, no
//! whitespace. Anything that deviates is rejected with a short, stable reason code; the
//! first failing field (in column order) decides the reason, so the result is deterministic.

use std::fmt;

/// The exact header line of a claims CSV file.
pub const HEADER: &str = "claim_id,provider_id,member_id,service_date,procedure_code,amount";

/// Number of fields in a data row.
pub const FIELD_COUNT: usize = 6;

/// A provider identifier: `P` followed by exactly four digits (stored as its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(pub u16);

impl ProviderId {
    /// Parses `P` + 4 digits; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        fixed_digits(s, b'P', 4).map(|n| ProviderId(n as u16))
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{:04}", self.0)
    }
}

/// A calendar date (proleptic Gregorian), always valid once constructed by [`Date::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, 1..=9999.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=days in that month.
    pub day: u8,
}

/// Why a `YYYY-MM-DD` string is not a [`Date`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Not of the shape `DDDD-DD-DD` (digits and dashes).
    Format,
    /// Right shape, but not a real calendar date (e.g. `2026-02-30`).
    Invalid,
}

impl Date {
    /// Parses a strict `YYYY-MM-DD` date, checking month lengths and leap years.
    pub fn parse(s: &str) -> Result<Self, DateError> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(DateError::Format);
        }
        let year = digits_value(&b[0..4]).ok_or(DateError::Format)?;
        let month = digits_value(&b[5..7]).ok_or(DateError::Format)?;
        let day = digits_value(&b[8..10]).ok_or(DateError::Format)?;
        if year == 0 || !(1..=12).contains(&month) {
            return Err(DateError::Invalid);
        }
        let (year, month) = (year as u16, month as u8);
        if day == 0 || day > u64::from(days_in_month(year, month)) {
            return Err(DateError::Invalid);
        }
        Ok(Date { year, month, day: day as u8 })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: u16) -> bool {
    // Written with a match (not `is_multiple_of`) to keep the workspace MSRV (1.80).
    matches!((year % 4, year % 100, year % 400), (_, _, 0) | (0, 1.., _))
}

/// Number of days in `month` (1..=12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// One valid claim row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The number in `C` + 10 digits.
    pub claim_number: u64,
    /// The provider the claim is billed by.
    pub provider: ProviderId,
    /// The number in `M` + 7 digits.
    pub member_number: u32,
    /// Date of service.
    pub service_date: Date,
    /// Five-digit procedure code.
    pub procedure_code: u32,
    /// Claimed amount in cents (always > 0).
    pub amount_cents: u64,
}

macro_rules! reject_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $code:literal,)*) => {
        /// Why a data row was rejected; [`RejectReason::as_str`] gives the stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum RejectReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl RejectReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant,)*];

            /// The short, stable reason code written to `rejects.csv`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RejectReason::$variant => $code,)*
                }
            }

            /// Looks a reason up by its code.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(RejectReason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reject_reasons! {
    /// The line is not valid UTF-8.
    NotUtf8 => "not_utf8",
    /// Not exactly six comma-separated fields.
    FieldCount => "field_count",
    /// Empty claim_id.
    ClaimIdMissing => "claim_id_missing",
    /// claim_id is not `C` + 10 digits.
    ClaimIdFormat => "claim_id_format",
    /// Empty provider_id.
    ProviderMissing => "provider_missing",
    /// provider_id is not `P` + 4 digits.
    ProviderFormat => "provider_format",
    /// Empty member_id.
    MemberMissing => "member_missing",
    /// member_id is not `M` + 7 digits.
    MemberFormat => "member_format",
    /// Empty service_date.
    DateMissing => "date_missing",
    /// service_date is not of the shape `YYYY-MM-DD`.
    DateFormat => "date_format",
    /// service_date has the right shape but is not a calendar date.
    DateInvalid => "date_invalid",
    /// Empty procedure_code.
    ProcedureMissing => "procedure_missing",
    /// procedure_code is not exactly 5 digits.
    ProcedureFormat => "procedure_format",
    /// Empty amount.
    AmountMissing => "amount_missing",
    /// Amount contains something other than digits and one decimal point.
    AmountNotNumeric => "amount_not_numeric",
    /// Amount is a negative number.
    AmountNegative => "amount_negative",
    /// Amount does not have exactly two fraction digits.
    AmountPrecision => "amount_precision",
    /// Amount has no integer digits (e.g. `.50`).
    AmountFormat => "amount_format",
    /// Amount is zero (amounts must be positive).
    AmountZero => "amount_zero",
    /// Amount does not fit in 64-bit cents.
    AmountTooLarge => "amount_too_large",
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one input line is: nothing to do, a valid claim, or a rejected row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The header line or an empty line: skipped, neither valid nor rejected.
    Skip,
    /// A valid data row.
    Valid(Claim),
    /// A malformed data row.
    Rejected(RejectReason),
}

/// Removes one trailing `\r` (from `\r\n` line ends).
pub fn trim_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// Classifies a line (without its `\n`): header and empty lines are skipped, the rest parsed.
pub fn classify_line(line: &str) -> Line {
    let line = trim_cr(line);
    if line.is_empty() || line == HEADER {
        return Line::Skip;
    }
    match parse_row(line) {
        Ok(claim) => Line::Valid(claim),
        Err(reason) => Line::Rejected(reason),
    }
}

/// Strictly parses one data row (a trailing `\r` is ignored); use [`classify_line`] to skip headers.
pub fn parse_row(line: &str) -> Result<Claim, RejectReason> {
    use RejectReason as R;
    let line = trim_cr(line);
    let mut fields = [""; FIELD_COUNT];
    let mut n = 0;
    for field in line.split(',') {
        if n == FIELD_COUNT {
            return Err(R::FieldCount);
        }
        fields[n] = field;
        n += 1;
    }
    if n != FIELD_COUNT {
        return Err(R::FieldCount);
    }
    let [claim_id, provider_id, member_id, service_date, procedure_code, amount] = fields;

    let claim_number = required(claim_id, R::ClaimIdMissing)?;
    let claim_number = fixed_digits(claim_number, b'C', 10).ok_or(R::ClaimIdFormat)?;

    let provider = required(provider_id, R::ProviderMissing)?;
    let provider = ProviderId::parse(provider).ok_or(R::ProviderFormat)?;

    let member = required(member_id, R::MemberMissing)?;
    let member_number = fixed_digits(member, b'M', 7).ok_or(R::MemberFormat)? as u32;

    let date = required(service_date, R::DateMissing)?;
    let service_date = Date::parse(date).map_err(|e| match e {
        DateError::Format => R::DateFormat,
        DateError::Invalid => R::DateInvalid,
    })?;

    let code = required(procedure_code, R::ProcedureMissing)?;
    let procedure_code = if code.len() == 5 {
        digits_value(code.as_bytes()).ok_or(R::ProcedureFormat)? as u32
    } else {
        return Err(R::ProcedureFormat);
    };

    let amount_cents = parse_amount(amount)?;

    Ok(Claim { claim_number, provider, member_number, service_date, procedure_code, amount_cents })
}

/// Parses a positive amount matching `^\d+\.\d{2}$` into cents.
pub fn parse_amount(s: &str) -> Result<u64, RejectReason> {
    use RejectReason as R;
    if s.is_empty() {
        return Err(R::AmountMissing);
    }
    let numeric_shape = |t: &str| {
        t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && t.bytes().filter(|&b| b == b'.').count() <= 1
    };
    if let Some(rest) = s.strip_prefix('-') {
        return Err(if numeric_shape(rest) { R::AmountNegative } else { R::AmountNotNumeric });
    }
    if !numeric_shape(s) {
        return Err(R::AmountNotNumeric);
    }
    let (int, frac) = s.split_once('.').ok_or(R::AmountPrecision)?;
    if frac.len() != 2 {
        return Err(R::AmountPrecision);
    }
    if int.is_empty() {
        return Err(R::AmountFormat);
    }
    let mut cents: u64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        cents = cents.checked_mul(10).and_then(|c| c.checked_add(u64::from(b - b'0'))).ok_or(R::AmountTooLarge)?;
    }
    if cents == 0 {
        return Err(R::AmountZero);
    }
    Ok(cents)
}

/// Formats cents as `D.CC` (e.g. `123456` -> `1234.56`).
pub fn format_cents(cents: u128) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn required(field: &str, missing: RejectReason) -> Result<&str, RejectReason> {
    if field.is_empty() {
        Err(missing)
    } else {
        Ok(field)
    }
}

/// `prefix` followed by exactly `width` ASCII digits; returns the number.
fn fixed_digits(s: &str, prefix: u8, width: usize) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != width + 1 || b[0] != prefix {
        return None;
    }
    digits_value(&b[1..])
}

/// Value of a non-empty all-ASCII-digit slice of at most 19 digits.
fn digits_value(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RejectReason as R;

    const VALID: &str = "C0000000042,P0123,M0001234,2026-03-15,99213,1234.56";

    fn with_field(i: usize, value: &str) -> String {
        let mut f: Vec<&str> = VALID.split(',').collect();
        f[i] = value;
        f.join(",")
    }

    #[test]
    fn valid_row_parses() {
        let c = parse_row(VALID).expect("valid row");
        assert_eq!(c.claim_number, 42);
        assert_eq!(c.provider, ProviderId(123));
        assert_eq!(c.provider.to_string(), "P0123");
        assert_eq!(c.member_number, 1234);
        assert_eq!(c.service_date, Date { year: 2026, month: 3, day: 15 });
        assert_eq!(c.procedure_code, 99213);
        assert_eq!(c.amount_cents, 123_456);
    }

    #[test]
    fn crlf_is_accepted() {
        let line = format!("{VALID}\r");
        assert_eq!(parse_row(&line), parse_row(VALID));
        assert!(matches!(classify_line(&line), Line::Valid(_)));
    }

    #[test]
    fn header_and_empty_lines_are_skipped() {
        assert_eq!(classify_line(HEADER), Line::Skip);
        assert_eq!(classify_line(&format!("{HEADER}\r")), Line::Skip);
        assert_eq!(classify_line(""), Line::Skip);
        assert_eq!(classify_line("\r"), Line::Skip);
        // A header that is not exactly the header is a malformed row.
        assert_eq!(
            classify_line("claim_id,provider_id,member_id,service_date,procedure_code,Amount"),
            Line::Rejected(R::ClaimIdFormat)
        );
    }

    #[test]
    fn field_count() {
        assert_eq!(parse_row("C0000000042,P0123,M0001234,2026-03-15,1234.56"), Err(R::FieldCount));
        assert_eq!(parse_row(&format!("{VALID},x")), Err(R::FieldCount));
        assert_eq!(parse_row(&format!("{VALID},")), Err(R::FieldCount));
        assert_eq!(parse_row("garbage"), Err(R::FieldCount));
        assert_eq!(parse_row(" "), Err(R::FieldCount));
    }

    #[test]
    fn claim_id() {
        assert_eq!(parse_row(&with_field(0, "")), Err(R::ClaimIdMissing));
        for bad in ["C000000042", "C00000000420", "D0000000042", "C00000000x2", "c0000000042"] {
            assert_eq!(parse_row(&with_field(0, bad)), Err(R::ClaimIdFormat), "{bad}");
        }
    }

    #[test]
    fn provider() {
        assert_eq!(parse_row(&with_field(1, "")), Err(R::ProviderMissing));
        for bad in ["P123", "P12345", "X1234", "p1234", "P12A4", "\"P1234\"", " P1234"] {
            assert_eq!(parse_row(&with_field(1, bad)), Err(R::ProviderFormat), "{bad}");
        }
        assert!(parse_row(&with_field(1, "P0000")).is_ok());
        assert!(parse_row(&with_field(1, "P9999")).is_ok());
    }

    #[test]
    fn member() {
        assert_eq!(parse_row(&with_field(2, "")), Err(R::MemberMissing));
        for bad in ["M123456", "M12345678", "N1234567", "M12345a7"] {
            assert_eq!(parse_row(&with_field(2, bad)), Err(R::MemberFormat), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_row(&with_field(3, "")), Err(R::DateMissing));
        for bad in ["2026/03/15", "2026-3-15", "26-03-15", "2026-03-1a", "2026-03-150"] {
            assert_eq!(parse_row(&with_field(3, bad)), Err(R::DateFormat), "{bad}");
        }
        for bad in [
            "2026-02-29",
            "2026-02-30",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-01-32",
            "1900-02-29",
            "0000-01-01",
        ] {
            assert_eq!(parse_row(&with_field(3, bad)), Err(R::DateInvalid), "{bad}");
        }
        for good in ["2026-01-01", "2026-12-31", "2026-02-28", "2024-02-29", "2000-02-29"] {
            assert!(parse_row(&with_field(3, good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2026));
    }

    #[test]
    fn procedure() {
        assert_eq!(parse_row(&with_field(4, "")), Err(R::ProcedureMissing));
        for bad in ["9921", "992133", "9921a", "-9921"] {
            assert_eq!(parse_row(&with_field(4, bad)), Err(R::ProcedureFormat), "{bad}");
        }
    }

    #[test]
    fn amounts() {
        let cases: &[(&str, Result<u64, RejectReason>)] = &[
            ("1234.56", Ok(123_456)),
            ("0.01", Ok(1)),
            ("007.50", Ok(750)),
            ("", Err(R::AmountMissing)),
            ("n/a", Err(R::AmountNotNumeric)),
            ("12O.50", Err(R::AmountNotNumeric)),
            ("1.2.3", Err(R::AmountNotNumeric)),
            ("$45.00", Err(R::AmountNotNumeric)),
            ("1e3", Err(R::AmountNotNumeric)),
            ("+12.00", Err(R::AmountNotNumeric)),
            (" 12.00", Err(R::AmountNotNumeric)),
            (".", Err(R::AmountNotNumeric)),
            ("-abc", Err(R::AmountNotNumeric)),
            ("-12.00", Err(R::AmountNegative)),
            ("-0.01", Err(R::AmountNegative)),
            ("123.456", Err(R::AmountPrecision)),
            ("123.4", Err(R::AmountPrecision)),
            ("123", Err(R::AmountPrecision)),
            ("123.", Err(R::AmountPrecision)),
            (".50", Err(R::AmountFormat)),
            ("0.00", Err(R::AmountZero)),
            ("184467440737095516.16", Err(R::AmountTooLarge)),
            ("184467440737095516.15", Ok(u64::MAX)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_amount(s), *want, "{s:?}");
            let row = with_field(5, s);
            assert_eq!(parse_row(&row).map(|c| c.amount_cents), *want, "{row:?}");
        }
    }

    #[test]
    fn first_bad_field_decides() {
        assert_eq!(parse_row("C0000000042,,M0001234,2026-02-30,99213,-1.00"), Err(R::ProviderMissing));
    }

    #[test]
    fn reason_codes_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for &r in RejectReason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate code {r}");
            assert_eq!(RejectReason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(RejectReason::from_code("nope"), None);
    }

    #[test]
    fn cents_format() {
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(123_456), "1234.56");
    }
}
