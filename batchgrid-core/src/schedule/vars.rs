//! An occurrence's variables, substituted into its job: `{period}`, `{date}`, `{fire_time}`.
//!
//! All three come from the fire time in the schedule's zone:
//! - `{period}`: the year and month of its local date, `2026-11` for the November month-end
//!   run (a run on 1 December at 02:00 has `2026-12`);
//! - `{date}`: its local date, `2026-11-30`;
//! - `{fire_time}`: RFC 3339 with its offset, `2026-11-30T02:00:00+01:00`.
//!
//! `{name}` with a name of lowercase letters and `_` that is neither one of these nor one the
//! field itself knows (a command's `{input}`) is an error, so a typo cannot reach a path;
//! `{{` and anything else in braces (`{ x }`, `{1}`) are kept as written.

use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;

/// The variables of one occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The fire time, in the schedule's zone.
    pub fire_time: DateTime<Tz>,
}

/// The names substituted.
pub const NAMES: [&str; 3] = ["period", "date", "fire_time"];

impl Occurrence {
    /// `{period}`: `YYYY-MM` of the local date.
    pub fn period(&self) -> String {
        self.fire_time.format("%Y-%m").to_string()
    }

    /// `{date}`: `YYYY-MM-DD`, the local date.
    pub fn date(&self) -> String {
        self.fire_time.format("%Y-%m-%d").to_string()
    }

    /// `{fire_time}`: RFC 3339 with the zone's offset.
    pub fn fire_time_text(&self) -> String {
        self.fire_time.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    }

    fn value(&self, name: &str) -> Option<String> {
        match name {
            "period" => Some(self.period()),
            "date" => Some(self.date()),
            "fire_time" => Some(self.fire_time_text()),
            _ => None,
        }
    }

    /// `text` with the occurrence's variables substituted; `{name}`s in `passthrough` are kept
    /// as they are. The error names the unknown variable.
    pub fn substitute(&self, text: &str, passthrough: &[&str]) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            if let Some(escaped) = after.strip_prefix('{') {
                // `{{` is literal (with what follows), as in the templates users know.
                out.push_str("{{");
                rest = escaped;
                continue;
            }
            let name_len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
            let name = &after[..name_len];
            if name.is_empty() || !after[name_len..].starts_with('}') {
                // Not a variable (`{{`, `{ x }`, a lone brace): kept as written.
                out.push('{');
                rest = after;
                continue;
            }
            match self.value(name) {
                Some(value) => out.push_str(&value),
                None if passthrough.contains(&name) => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
                None => {
                    return Err(format!(
                        "unknown variable `{{{name}}}` (an occurrence has {{period}}, {{date}} and {{fire_time}})"
                    ))
                }
            }
            rest = &after[name_len + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
