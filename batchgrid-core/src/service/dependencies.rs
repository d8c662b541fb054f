//! `after:` at submission: each entry, a job name or id, becomes the id of the job it names,
//! so the stored spec says exactly which runs the job waits for. A name means its newest job.

use super::{JobService, ServiceError};
use crate::spec::{locate, FieldPath, JobSpec, SpecError};

/// Where the `after` entries being resolved came from, to name them in errors.
pub(super) struct AfterOrigin<'a> {
    /// The document's name (file, schedule).
    pub origin: &'a str,
    /// The document, to say on which line an entry is; `None` when the entries came from
    /// the query (`?after=`), which then is the field named.
    pub text: Option<&'a str>,
}

impl JobService {
    /// Replaces each of `spec.after` with the id of the job it names; an entry naming no job
    /// is a [`ServiceError::BadJob`] naming the field.
    pub(super) async fn resolve_after(&self, spec: &mut JobSpec, from: &AfterOrigin<'_>) -> Result<(), ServiceError> {
        if spec.after.is_empty() {
            return Ok(());
        }
        let analytics = &self.manager.grid().analytics;
        // Read once, newest first, only when some entry is not an id.
        let mut all_jobs = None;
        let mut resolved = Vec::with_capacity(spec.after.len());
        for (index, entry) in spec.after.iter().enumerate() {
            if analytics.job(entry).await?.is_some() {
                resolved.push(entry.clone());
                continue;
            }
            if all_jobs.is_none() {
                all_jobs = Some(analytics.jobs().await?);
            }
            let newest = all_jobs.iter().flatten().find(|job| job.name == *entry);
            match newest {
                Some(job) => resolved.push(job.id.clone()),
                None => {
                    let (field, position) = match from.text {
                        Some(text) => {
                            let path = FieldPath::root().key("after").index(index);
                            (path.to_string(), locate::locate_exact(text, &path))
                        }
                        None => ("after".to_owned(), None),
                    };
                    return Err(ServiceError::BadJob(SpecError {
                        origin: from.origin.to_owned(),
                        position,
                        field,
                        message: format!("no job is named `{entry}` or has that id"),
                    }));
                }
            }
        }
        spec.after = resolved;
        Ok(())
    }
}
