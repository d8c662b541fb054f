//! Result paths and ids in URL paths: each segment percent-encoded, `/` kept, so a name holding
//! `#`, `?`, `%` or a space reaches the manager as itself instead of ending the path early.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What stays literal: RFC 3986's unreserved characters, and `/` between segments.
const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// `path` percent-encoded for a URL path, its `/` kept.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_are_encoded_and_slashes_kept() {
        assert_eq!(encode_path("sub/a #b?c%20.txt"), "sub/a%20%23b%3Fc%2520.txt");
        assert_eq!(encode_path("plain-name_1.csv~"), "plain-name_1.csv~");
        assert_eq!(encode_path("é"), "%C3%A9");
        // A job id or result path in a dashboard link (maud escapes it for HTML on top).
        assert_eq!(encode_path("a/b c?d#e%"), "a/b%20c%3Fd%23e%25");
    }
}
