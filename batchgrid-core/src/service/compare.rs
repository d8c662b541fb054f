//! Fetching the two reports `batchgrid report --compare` sets side by side, through the
//! manager's API: a named job, or the previous ended run of the same job name.

use super::client::{ApiClient, ClientError};
use crate::report::compare::{previous, Comparison};
use crate::report::JobReport;

/// Which run to compare with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Against {
    /// The most recent earlier run of the same name that has ended.
    Previous,
    /// This job id.
    Job(String),
}

impl std::str::FromStr for Against {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(if text == "previous" { Self::Previous } else { Self::Job(text.to_owned()) })
    }
}

/// Why the reports could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The job has no report yet (it has not ended).
    #[error("job {0} has no report yet: it has not ended")]
    NoReport(String),
    /// `--compare previous` found no earlier ended run.
    #[error("--compare previous: no earlier run of job name {name:?} has ended before {id}")]
    NoPrevious {
        /// The job name.
        name: String,
        /// The job compared.
        id: String,
    },
}

/// The report of `id`.
pub async fn report_of(client: &ApiClient, id: &str) -> Result<JobReport, CompareError> {
    client.results(id).await?.report.ok_or_else(|| CompareError::NoReport(id.to_owned()))
}

/// The report of `id`, and with `against` the compared run's report and the comparison.
pub async fn reports(
    client: &ApiClient,
    id: &str,
    against: Option<&Against>,
) -> Result<(JobReport, Option<(Comparison, JobReport)>), CompareError> {
    let report = report_of(client, id).await?;
    let before_id = match against {
        None => return Ok((report, None)),
        Some(Against::Job(other)) => other.clone(),
        Some(Against::Previous) => {
            let current = client.status(id).await?;
            let jobs = client.jobs().await?;
            previous(&jobs, &current)
                .map(|j| j.id.clone())
                .ok_or_else(|| CompareError::NoPrevious { name: current.name.clone(), id: id.to_owned() })?
        }
    };
    let before = report_of(client, &before_id).await.map_err(|e| match e {
        CompareError::NoReport(id) => CompareError::NoReport(format!("{id} (given to --compare)")),
        other => other,
    })?;
    let comparison = Comparison::of(&before, &report);
    Ok((report, Some((comparison, before))))
}
