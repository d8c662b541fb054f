//! Parking a grid between peaks and resuming it.
//!
//! Parking snapshots the analytics database (an RDS instance's DB snapshot, or an Aurora
//! cluster's DB cluster snapshot: [`DatabaseKind`]), then shrinks the stack to its data
//! ([`crate::render::Shape::Parked`]): the buckets, queues and log group stay, and everything
//! billed by the hour goes. What was kept is written to the parking record, an object in the
//! results bucket ([`RECORD_KEY`]), before the stack shrinks. A deploy that finds the record
//! renders the whole grid again with the database restored from the recorded snapshot
//! ([`crate::render::Shape::Resumed`]), in the same stack, so the same buckets.

use std::time::{Duration, SystemTime};

use aws_sdk_rds::Client as RdsClient;
use serde::{Deserialize, Serialize};

use crate::deploy::{error_message, DeployError, DeployRequest, Deployer, Event, PlannedChange};

mod database;

pub use database::DatabaseKind;

/// Where the parking record lives in the results bucket: outside `jobs/`, which expires.
pub const RECORD_KEY: &str = "batchgrid/parking.json";

/// Parking errors. AWS errors are carried as text: no SDK types in this crate's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParkError {
    /// An AWS call failed.
    #[error("{operation}: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// AWS's code and message.
        message: String,
    },
    /// The parking record is not one this version reads.
    #[error("s3://{bucket}/{RECORD_KEY}: not a parking record: {message}")]
    Record {
        /// The bucket holding it.
        bucket: String,
        /// What is wrong.
        message: String,
    },
    /// The snapshot ended in a state other than `available`.
    #[error("snapshot {snapshot} of {database} is {status}, not available")]
    SnapshotFailed {
        /// The snapshot.
        snapshot: String,
        /// The database instance or cluster.
        database: String,
        /// Its last status.
        status: String,
    },
    /// The parked snapshot is of another kind of database than the environment now creates
    /// (its `analytics.provider` changed while parked), so the template cannot restore it.
    #[error(
        "stack {stack} was parked with a snapshot of an {parked} ({snapshot}), but the environment now \
         creates an {wanted}: set analytics.provider back to resume it"
    )]
    KindMismatch {
        /// The stack.
        stack: String,
        /// The parked snapshot.
        snapshot: String,
        /// What it is a snapshot of.
        parked: DatabaseKind,
        /// What the environment creates now.
        wanted: DatabaseKind,
    },
    /// Waiting took longer than allowed.
    #[error("gave up waiting for {0}")]
    Timeout(String),
    /// The stack names no buckets, so there is nothing to park or resume from.
    #[error("stack {0} has no RawBucketName and ResultsBucketName outputs")]
    NoBuckets(String),
    /// The stack could not be read or changed.
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

fn aws<E: aws_sdk_rds::error::ProvideErrorMetadata + std::error::Error>(
    operation: &'static str,
) -> impl Fn(E) -> ParkError {
    move |error| ParkError::Aws { operation, message: error_message(&error) }
}

/// Whether the grid is parked now or was resumed from the record's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkState {
    /// Only the data stands; `deploy` resumes it.
    Parked,
    /// Running again, its database restored from `snapshot`.
    Resumed,
}

/// What parking kept, and where a resume takes the database from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkingRecord {
    /// Parked or resumed.
    pub state: ParkState,
    /// The CloudFormation stack.
    pub stack: String,
    /// When it was parked (RFC 3339).
    pub parked_at: String,
    /// When it was resumed (RFC 3339), once it was.
    #[serde(default)]
    pub resumed_at: Option<String>,
    /// The snapshot the database is restored from; none with an external database.
    pub snapshot: Option<String>,
    /// What `snapshot` is: a DB snapshot of an instance or a DB cluster snapshot (records from
    /// before clusters could be parked have no such field and are of an instance).
    #[serde(default)]
    pub snapshot_kind: DatabaseKind,
    /// The database instance the snapshot was taken of (kind `instance`).
    #[serde(default)]
    pub database_instance: Option<String>,
    /// The Aurora cluster the snapshot was taken of (kind `cluster`).
    #[serde(default)]
    pub database_cluster: Option<String>,
    /// The raw input bucket, kept with its data.
    pub raw_bucket: String,
    /// The results bucket, kept with its data (and this record).
    pub results_bucket: String,
}

impl ParkingRecord {
    /// The database the snapshot was taken of, instance or cluster as the kind says.
    pub fn database(&self) -> Option<&str> {
        match self.snapshot_kind {
            DatabaseKind::Instance => self.database_instance.as_deref(),
            DatabaseKind::Cluster => self.database_cluster.as_deref(),
        }
    }

    /// Refuses to resume from a snapshot of another kind of database than the environment now
    /// creates (`wanted`; `None` for an external database, which restores nothing).
    pub fn check_resumable(&self, wanted: Option<DatabaseKind>) -> Result<(), ParkError> {
        match (&self.snapshot, wanted) {
            (Some(snapshot), Some(wanted)) if wanted != self.snapshot_kind => Err(ParkError::KindMismatch {
                stack: self.stack.clone(),
                snapshot: snapshot.clone(),
                parked: self.snapshot_kind,
                wanted,
            }),
            _ => Ok(()),
        }
    }
}

/// Now, in RFC 3339 to the second.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The identifier of the snapshot parking takes at `unix_seconds`: the stack's name (letters,
/// digits and single hyphens, as RDS wants) and the time, so each parking has its own.
pub fn snapshot_id(stack: &str, unix_seconds: u64) -> String {
    format!("{stack}-parked-{unix_seconds}")
}

/// The parking record in `bucket`, or `None` when there is none (a grid never parked).
pub async fn read_record(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Option<ParkingRecord>, ParkError> {
    let answer = match s3.get_object().bucket(bucket).key(RECORD_KEY).send().await {
        Ok(answer) => answer,
        Err(error) => {
            let error = error.into_service_error();
            if error.is_no_such_key() {
                return Ok(None);
            }
            return Err(ParkError::Aws { operation: "GetObject", message: error_message(&error) });
        }
    };
    let bytes = answer
        .body
        .collect()
        .await
        .map_err(|e| ParkError::Aws { operation: "GetObject", message: e.to_string() })?
        .into_bytes();
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ParkError::Record { bucket: bucket.to_owned(), message: e.to_string() })
}

/// Writes the parking record into its results bucket.
pub async fn write_record(s3: &aws_sdk_s3::Client, record: &ParkingRecord) -> Result<(), ParkError> {
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| ParkError::Record { bucket: record.results_bucket.clone(), message: e.to_string() })?;
    s3.put_object()
        .bucket(&record.results_bucket)
        .key(RECORD_KEY)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map_err(|e| ParkError::Aws { operation: "PutObject", message: error_message(&e.into_service_error()) })?;
    Ok(())
}

/// The analytics database's snapshots, through RDS, for one kind of database.
#[derive(Debug, Clone)]
pub struct Snapshots {
    rds: RdsClient,
    kind: DatabaseKind,
    poll: Duration,
    max_polls: u32,
}

impl Snapshots {
    /// Snapshots of `kind` through this client, polling every `poll` for at most two hours.
    pub fn new(rds: RdsClient, kind: DatabaseKind, poll: Duration) -> Self {
        let max_polls = u32::try_from(7200 / poll.as_secs().max(1)).unwrap_or(u32::MAX);
        Self { rds, kind, poll, max_polls }
    }

    /// The kind of database these snapshots are of.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The same client for snapshots of another kind (a record written by an earlier parking
    /// names its own).
    pub fn of_kind(&self, kind: DatabaseKind) -> Self {
        Self { kind, ..self.clone() }
    }

    /// Turns the database's deletion protection off when it is on, so the parked stack can
    /// delete it (its data is in the snapshot by then); says whether it was on.
    pub async fn allow_deletion(&self, database: &str) -> Result<bool, ParkError> {
        let protected = self.kind.deletion_protected(&self.rds, database).await?;
        if protected {
            self.set_deletion_protection(database, false).await?;
        }
        Ok(protected)
    }

    /// Turns the database's deletion protection on or off, at once.
    pub async fn set_deletion_protection(&self, database: &str, on: bool) -> Result<(), ParkError> {
        self.kind.set_deletion_protection(&self.rds, database, on).await
    }

    /// Takes snapshot `snapshot` of `database` and waits until it is available.
    pub async fn take(&self, database: &str, snapshot: &str) -> Result<(), ParkError> {
        self.kind.create_snapshot(&self.rds, database, snapshot).await?;
        for _ in 0..self.max_polls {
            let status = self.kind.snapshot_status(&self.rds, snapshot).await?;
            match status.as_deref().unwrap_or("creating") {
                "available" => return Ok(()),
                "creating" | "copying" | "pending" => tokio::time::sleep(self.poll).await,
                other => {
                    return Err(ParkError::SnapshotFailed {
                        snapshot: snapshot.to_owned(),
                        database: database.to_owned(),
                        status: other.to_owned(),
                    })
                }
            }
        }
        Err(ParkError::Timeout(format!("snapshot {snapshot}")))
    }

    /// Deletes a snapshot; one already gone is no error. Says whether it was there.
    pub async fn delete(&self, snapshot: &str) -> Result<bool, ParkError> {
        self.kind.delete_snapshot(&self.rds, snapshot).await
    }
}

/// Deletes the snapshot a parking record names, of the kind it names (teardown of a parked
/// grid: nothing restores from it any more). Says which snapshot went; `None` when the record
/// names none or it was gone already.
pub async fn delete_parked_snapshot(
    snapshots: &Snapshots,
    record: &ParkingRecord,
) -> Result<Option<String>, ParkError> {
    let Some(snapshot) = &record.snapshot else { return Ok(None) };
    let deleted = snapshots.of_kind(record.snapshot_kind).delete(snapshot).await?;
    Ok(deleted.then(|| snapshot.clone()))
}

/// The logical id of the analytics database (an RDS instance) in the grid's template.
pub const DATABASE: &str = "Database";

/// The logical id of the analytics database with `analytics.provider: serverless` (an Aurora
/// cluster) in the grid's template.
pub const AURORA_CLUSTER: &str = "AuroraCluster";

/// What parking did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The record written (state parked).
    pub record: ParkingRecord,
    /// What the stack lost.
    pub removed: Vec<PlannedChange>,
    /// Whether the database's deletion protection had to come off.
    pub deletion_protection_lifted: bool,
    /// An earlier parking's snapshot deleted now that a newer one holds the data.
    pub superseded_snapshot: Option<String>,
}

/// The stack's two buckets, from its outputs (`running_template` reads them on the emulator).
async fn buckets(deployer: &Deployer, stack: &str, running_template: &str) -> Result<(String, String), ParkError> {
    let outputs = deployer.outputs_for(stack, running_template).await?;
    match (outputs.get("RawBucketName"), outputs.get("ResultsBucketName")) {
        (Some(raw), Some(results)) => Ok((raw.clone(), results.clone())),
        _ => Err(ParkError::NoBuckets(stack.to_owned())),
    }
}

/// Parks the stack: snapshots its database (when `snapshots` is given and the stack has one),
/// records what it keeps, then applies `parked` (the stack rendered as
/// [`crate::render::Shape::Parked`]). The record is written before the database goes, and put
/// back as it was when the stack change is declined or fails, so a deploy never restores from
/// a snapshot older than a database still standing.
pub async fn park(
    deployer: &Deployer,
    snapshots: Option<&Snapshots>,
    parked: &DeployRequest,
    running_template: &str,
    confirm: &mut dyn FnMut(&[PlannedChange]) -> bool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Parked, ParkError> {
    let stack = parked.stack.as_str();
    if deployer.status(stack).await?.is_none() {
        return Err(DeployError::NoStack(stack.to_owned()).into());
    }
    let (raw_bucket, results_bucket) = buckets(deployer, stack, running_template).await?;
    let previous = read_record(deployer.s3(), &results_bucket).await?;
    let database = match snapshots {
        Some(snapshots) => deployer.physical_id(stack, snapshots.kind().logical_id()).await?,
        None => None,
    };
    let mut lifted = false;
    let (snapshot, kind, database, fresh) = match (snapshots, database) {
        (Some(snapshots), Some(database)) => {
            let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let id = snapshot_id(stack, unix);
            on_event(&Event { logical_id: database.clone(), status: format!("snapshotting to {id}"), reason: None });
            snapshots.take(&database, &id).await?;
            lifted = snapshots.allow_deletion(&database).await?;
            on_event(&Event { logical_id: id.clone(), status: "snapshot available".into(), reason: None });
            (Some(id), snapshots.kind(), Some(database), true)
        }
        // Parked already (or no database of its own): the data is where the record says.
        _ => match &previous {
            Some(r) => (r.snapshot.clone(), r.snapshot_kind, r.database().map(str::to_owned), false),
            None => (None, DatabaseKind::default(), None, false),
        },
    };
    let record = ParkingRecord {
        state: ParkState::Parked,
        stack: stack.to_owned(),
        parked_at: now_text(),
        resumed_at: None,
        snapshot: snapshot.clone(),
        snapshot_kind: kind,
        database_instance: database.clone().filter(|_| kind == DatabaseKind::Instance),
        database_cluster: database.filter(|_| kind == DatabaseKind::Cluster),
        raw_bucket,
        results_bucket,
    };
    write_record(deployer.s3(), &record).await?;
    let removed = match deployer.deploy(parked, confirm, on_event).await {
        Ok((crate::deploy::DeployOutcome::Applied(changes), _)) => changes,
        Ok((crate::deploy::DeployOutcome::Unchanged, _)) => Vec::new(),
        Err(error) => {
            restore_record(deployer.s3(), &record.results_bucket, previous.as_ref()).await?;
            if let (Some(snapshots), Some(database), true) = (snapshots, record.database(), lifted) {
                snapshots.set_deletion_protection(database, true).await?;
            }
            return Err(error.into());
        }
    };
    // The database made from an earlier parking's snapshot is gone and a newer snapshot holds
    // its data: the older one would only cost storage.
    // It is deleted as the kind its own record names.
    let mut superseded = None;
    if let (Some(snapshots), true, Some(previous)) = (snapshots, fresh, previous) {
        if previous.snapshot != snapshot {
            superseded = delete_parked_snapshot(snapshots, &previous).await?;
        }
    }
    Ok(Parked { record, removed, deletion_protection_lifted: lifted, superseded_snapshot: superseded })
}

/// Puts the record back as it was before a parking that did not happen.
async fn restore_record(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    previous: Option<&ParkingRecord>,
) -> Result<(), ParkError> {
    match previous {
        Some(record) => write_record(s3, record).await,
        None => {
            s3.delete_object().bucket(bucket).key(RECORD_KEY).send().await.map_err(|e| ParkError::Aws {
                operation: "DeleteObject",
                message: error_message(&e.into_service_error()),
            })?;
            Ok(())
        }
    }
}

/// The stack's parking record, or `None` when the stack does not exist or was never parked.
pub async fn parking_record(
    deployer: &Deployer,
    stack: &str,
    running_template: &str,
) -> Result<Option<ParkingRecord>, ParkError> {
    if deployer.status(stack).await?.is_none() {
        return Ok(None);
    }
    let (_, results) = buckets(deployer, stack, running_template).await?;
    read_record(deployer.s3(), &results).await
}

/// Marks a parked record resumed, after the deploy that restored the grid.
pub async fn mark_resumed(s3: &aws_sdk_s3::Client, record: &ParkingRecord) -> Result<ParkingRecord, ParkError> {
    let resumed = ParkingRecord { state: ParkState::Resumed, resumed_at: Some(now_text()), ..record.clone() };
    write_record(s3, &resumed).await?;
    Ok(resumed)
}

#[cfg(test)]
mod tests;
