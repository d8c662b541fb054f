//! A job's results into a local directory: the pages are listed first, then the files are
//! fetched several at a time, each straight from S3 through the presigned URL the manager put
//! in its page, or streamed through the manager where there is none (an embedded grid) or the
//! caller has no S3 access. One request per file plus one per page.
//!
//! Resumable: a file already there with its listed size is skipped, and a file is written as
//! `NAME.part` and renamed when complete, so a file with the right name and size is finished.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::TryStreamExt;

use super::api::ResultObject;
use super::client::{ApiClient, ClientError};

/// Files fetched at once unless told otherwise.
pub const DEFAULT_PARALLEL: usize = 8;

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    /// Files fetched at once.
    pub parallel: usize,
    /// Stream every file through the manager, never from S3 directly.
    pub through_manager: bool,
    /// Names per listing page (the manager's maximum when `None`).
    pub page_size: Option<usize>,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self { parallel: DEFAULT_PARALLEL, through_manager: false, page_size: None }
    }
}

/// What a download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadSummary {
    /// Result files the job has.
    pub files: usize,
    /// Files fetched now.
    pub fetched: usize,
    /// Files already complete, left alone.
    pub skipped: usize,
    /// Of the fetched, those that came straight from S3.
    pub direct: usize,
    /// Bytes fetched now.
    pub bytes: u64,
    /// Listing pages asked for.
    pub pages: u64,
    /// HTTP requests made, pages included.
    pub requests: u64,
}

/// Download failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The manager or S3 refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The manager listed a name that would land outside the directory.
    #[error("the manager listed an unsafe result path `{0}`")]
    UnsafePath(String),
    /// The local directory could not be written.
    #[error("{path}: {source}")]
    Local {
        /// Where.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file came back with another size than its listing's.
    #[error("{path}: got {got} bytes, the listing says {expected}")]
    Size {
        /// Where.
        path: PathBuf,
        /// The listed size.
        expected: u64,
        /// The bytes received.
        got: u64,
    },
}

/// Every result object of job `id`, listed page by page.
pub async fn list_all(
    client: &ApiClient,
    id: &str,
    settings: &DownloadSettings,
) -> Result<(Vec<ResultObject>, u64), ClientError> {
    let mut objects = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client.results_page(id, after.as_deref(), settings.page_size, !settings.through_manager).await?;
        pages += 1;
        objects.extend(page.objects);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((objects, pages)),
        }
    }
}

/// Downloads job `id`'s results into `dir`, leaving complete files alone.
pub async fn download_results(
    client: &ApiClient,
    id: &str,
    dir: &Path,
    settings: &DownloadSettings,
) -> Result<DownloadSummary, DownloadError> {
    let (objects, pages) = list_all(client, id, settings).await?;
    let requests = AtomicU64::new(pages);
    let (fetched, direct) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let bytes = AtomicU64::new(0);
    let mut pending = Vec::new();
    for object in &objects {
        let target = target_of(dir, &object.path)?;
        if is_complete(&target, object.size) {
            continue;
        }
        pending.push((object, target));
    }
    let skipped = objects.len() - pending.len();
    futures::stream::iter(pending.into_iter().map(Ok::<_, DownloadError>))
        .try_for_each_concurrent(settings.parallel.max(1), |(object, target)| {
            let (requests, fetched, direct, bytes) = (&requests, &fetched, &direct, &bytes);
            async move {
                let (got, straight) = fetch_one(client, id, object, &target, requests).await?;
                fetched.fetch_add(1, Ordering::Relaxed);
                direct.fetch_add(usize::from(straight), Ordering::Relaxed);
                bytes.fetch_add(got, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
    Ok(DownloadSummary {
        files: objects.len(),
        fetched: fetched.into_inner(),
        skipped,
        direct: direct.into_inner(),
        bytes: bytes.into_inner(),
        pages,
        requests: requests.into_inner(),
    })
}

/// Where result `path` goes under `dir`; names that would leave it are refused, whatever the
/// manager says.
fn target_of(dir: &Path, path: &str) -> Result<PathBuf, DownloadError> {
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") || path.contains('\0') {
        return Err(DownloadError::UnsafePath(path.to_owned()));
    }
    Ok(dir.join(path))
}

fn is_complete(target: &Path, size: u64) -> bool {
    std::fs::metadata(target).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// `NAME.part` beside `target`.
fn part_of(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

/// Fetches one file into place; returns its size and whether it came straight from S3.
async fn fetch_one(
    client: &ApiClient,
    id: &str,
    object: &ResultObject,
    target: &Path,
    requests: &AtomicU64,
) -> Result<(u64, bool), DownloadError> {
    let local = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Local { path, source }
    };
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(local(parent))?;
    }
    let part = part_of(target);
    let mut straight = false;
    let mut got = None;
    if let Some(url) = &object.url {
        requests.fetch_add(1, Ordering::Relaxed);
        match client.download_presigned(url, &part).await {
            Ok(size) => (got, straight) = (Some(size), true),
            // An expired or refused URL still leaves the manager's way.
            Err(error @ ClientError::Refused { .. }) => {
                tracing::warn!(path = %object.path, %error, "presigned GET refused; fetching through the manager");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let got = match got {
        Some(size) => size,
        None => {
            requests.fetch_add(1, Ordering::Relaxed);
            client.download_result(id, &object.path, &part).await?
        }
    };
    if got != object.size {
        return Err(DownloadError::Size { path: target.to_path_buf(), expected: object.size, got });
    }
    tokio::fs::rename(&part, target).await.map_err(local(target))?;
    Ok((got, straight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused_and_parts_sit_beside_their_file() {
        let dir = Path::new("/out");
        for path in ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", ""] {
            assert!(matches!(target_of(dir, path), Err(DownloadError::UnsafePath(_))), "{path:?}");
        }
        let target = target_of(dir, "sub/a #b?c%20.txt").expect("safe");
        assert_eq!(part_of(&target), Path::new("/out/sub/a #b?c%20.txt.part"));
    }
}
