//! A job's results as its final stage left them: pages of names for listings, and one name's
//! object key found without listing anything (a download of N files costs N reads, not N lists).

use super::{Manager, ManagerError};
use crate::spec::{JobSpec, StageKind};
use crate::store::{validate_key, ObjectMeta};
use crate::task::{stage_prefix, REDUCE_TASK_ID};

/// A name that cannot be one of a job's results (a way out of them, or not a relative path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a result name: names are relative paths of non-empty segments, none of them `.` or `..`")]
pub struct ResultNameError(pub String);

/// One page of a job's results.
#[derive(Debug, Clone, Default)]
pub struct ResultPage {
    /// (name relative to the job's output, object), sorted by name.
    pub entries: Vec<(String, ObjectMeta)>,
    /// The name to list after for the next page, when there is one.
    pub next: Option<String>,
}

/// Where the final stage's result names start: the stage's prefix, and under a reduce stage
/// its one task's directory (a reduce's output is the job's output as it stands).
pub fn names_prefix(job_id: &str, spec: &JobSpec) -> String {
    let last = spec.last_stage();
    let stage = &spec.stages[last];
    let prefix = stage_prefix(job_id, last as u32, &stage.name);
    match stage.kind {
        StageKind::Reduce => format!("{prefix}{REDUCE_TASK_ID}/"),
        _ => prefix,
    }
}

/// The object key of the result `name`, checked to stay inside the job's results.
pub fn result_key(job_id: &str, spec: &JobSpec, name: &str) -> Result<String, ResultNameError> {
    // The store's key rules refuse empty, `.` and `..` segments, so a checked name cannot climb
    // out of the prefix, and a leading `/` is an empty first segment.
    validate_key(name).map_err(|_| ResultNameError(name.to_owned()))?;
    Ok(format!("{}{name}", names_prefix(job_id, spec)))
}

impl Manager {
    /// At most `limit` of the final stage's results whose names sort after `after`.
    pub async fn result_page(
        &self,
        job_id: &str,
        spec: &JobSpec,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ResultPage, ManagerError> {
        let prefix = names_prefix(job_id, spec);
        let start = after.map(|name| format!("{prefix}{name}"));
        let page = self.grid.store.list_page(&prefix, start.as_deref(), limit).await?;
        let entries: Vec<(String, ObjectMeta)> = page
            .objects
            .into_iter()
            .filter_map(|object| Some((object.key.strip_prefix(&prefix)?.to_owned(), object)))
            .collect();
        let next = if page.more { entries.last().map(|(name, _)| name.clone()) } else { None };
        Ok(ResultPage { entries, next })
    }

    /// The final stage's results: (path relative to the job's output, object), sorted.
    pub async fn result_objects(
        &self,
        job_id: &str,
        spec: &JobSpec,
    ) -> Result<Vec<(String, ObjectMeta)>, ManagerError> {
        let prefix = names_prefix(job_id, spec);
        let objects = self.grid.store.list(&prefix).await?;
        Ok(objects
            .into_iter()
            .filter_map(|object| Some((object.key.strip_prefix(&prefix)?.to_owned(), object)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_job, Overrides};

    fn spec(stage: &str) -> JobSpec {
        let job =
            format!("name: r\ninput:\n  path: in.txt\nstages:\n  - name: last\n    {stage}\noutput:\n  path: out\n");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("in.txt"), "x\n").expect("input");
        parse_job(&job, "job.yaml", dir.path(), &Overrides::default()).expect("job")
    }

    #[test]
    fn names_map_to_keys_under_the_final_stage() {
        let map = spec("command: [cat]");
        assert_eq!(
            result_key("j", &map, "000001/a #b?c%20.txt").as_deref(),
            Ok("jobs/j/stages/00-last/000001/a #b?c%20.txt")
        );
    }

    #[test]
    fn names_that_leave_the_results_are_refused() {
        let map = spec("command: [cat]");
        for name in ["", "..", "../spec.json", "a/../../b", "/etc/passwd", "a//b", "./a", "a/.", "a\0b"] {
            assert_eq!(result_key("j", &map, name), Err(ResultNameError(name.to_owned())), "{name:?}");
        }
    }
}
