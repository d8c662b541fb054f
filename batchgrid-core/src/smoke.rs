//! The smoke test a pipeline runs after a deploy: a tiny job whose every task stamps the time
//! it started and upper-cases its line, and the check of its results. Everything here is pure;
//! `batchgrid smoke` uploads the input, submits the job and reads the results.

use std::collections::BTreeMap;

/// The job's name (and the prefix of its input in the raw bucket).
pub const JOB_NAME: &str = "smoke";

/// The lines of the smoke job's input: one task each.
pub const INPUT_LINES: [&str; 3] = ["alpha", "bravo", "charlie"];

/// The input file's text.
pub fn input_text() -> String {
    INPUT_LINES.iter().map(|line| format!("{line}\n")).collect()
}

/// The job document. Its one stage needs only `sh`, `date` and `tr` on the grid's image, and
/// records when the task started on the worker (milliseconds since the epoch) so the time to
/// the first task includes everything before it: queueing, scaling from zero, booting.
pub fn job_document() -> String {
    format!(
        r#"# batchgrid smoke: one task per line; each stamps its start and upper-cases its line.
name: {JOB_NAME}
input:
  path: input.txt
split:
  lines: 1
stages:
  - name: stamp
    command: [sh, -c, 'date +%s%3N > "$1/started" && tr a-z A-Z < "$0" > "$1/upper.txt"', "{{input}}", "{{output}}"]
    timeout: 2m
output:
  path: smoke-results
retry:
  max_attempts: 3
  backoff: 1s
"#
    )
}

/// What the results show, once they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeResults {
    /// The earliest task start, Unix milliseconds (the worker's clock).
    pub first_start_ms: i64,
}

/// Why the results do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmokeError {
    /// A task's output is missing or wrong.
    #[error("the smoke job's results are wrong: {0}")]
    Results(String),
}

/// Checks the final stage's result objects (path relative to the job's output, contents):
/// one `upper.txt` per input line holding that line upper-cased, and a `started` stamp beside
/// each.
pub fn check(objects: &BTreeMap<String, Vec<u8>>) -> Result<SmokeResults, SmokeError> {
    let fail = |message: String| Err(SmokeError::Results(message));
    let mut uppers: Vec<String> = Vec::new();
    let mut starts: Vec<i64> = Vec::new();
    for (path, bytes) in objects {
        let text = String::from_utf8_lossy(bytes).trim().to_owned();
        if path.ends_with("upper.txt") {
            uppers.push(text);
        } else if path.ends_with("started") {
            match text.parse::<i64>() {
                Ok(ms) if ms > 0 => starts.push(ms),
                _ => return fail(format!("`{path}` holds `{text}`, not a time in milliseconds")),
            }
        }
    }
    uppers.sort();
    let mut expected: Vec<String> = INPUT_LINES.iter().map(|l| l.to_uppercase()).collect();
    expected.sort();
    if uppers != expected {
        return fail(format!("expected outputs {expected:?}, got {uppers:?}"));
    }
    if starts.len() != INPUT_LINES.len() {
        return fail(format!("expected {} start stamps, got {}", INPUT_LINES.len(), starts.len()));
    }
    let first_start_ms = starts.into_iter().min().unwrap_or_default();
    Ok(SmokeResults { first_start_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_job, Overrides};

    fn good() -> BTreeMap<String, Vec<u8>> {
        let mut objects = BTreeMap::new();
        for (i, line) in INPUT_LINES.iter().enumerate() {
            objects.insert(format!("t{i}/upper.txt"), format!("{}\n", line.to_uppercase()).into_bytes());
            objects.insert(format!("t{i}/started"), format!("{}\n", 1_700_000_000_000i64 + i as i64).into_bytes());
        }
        objects
    }

    #[test]
    fn the_job_document_is_a_valid_job() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("input.txt"), input_text()).expect("input");
        let spec = parse_job(&job_document(), "smoke.yaml", dir.path(), &Overrides::default()).expect("valid job");
        assert_eq!(spec.name, JOB_NAME);
    }

    #[test]
    fn good_results_pass_and_give_the_first_start() {
        assert_eq!(check(&good()), Ok(SmokeResults { first_start_ms: 1_700_000_000_000 }));
    }

    #[test]
    fn wrong_missing_or_unstamped_results_fail() {
        let mut wrong = good();
        wrong.insert("t1/upper.txt".into(), b"bravo\n".to_vec());
        assert!(check(&wrong).is_err());
        let mut missing = good();
        missing.remove("t2/upper.txt");
        assert!(check(&missing).is_err());
        let mut unstamped = good();
        unstamped.insert("t0/started".into(), b"%3N\n".to_vec());
        let error = check(&unstamped).expect_err("a `date` without %N fails");
        assert!(error.to_string().contains("not a time"), "{error}");
    }
}
