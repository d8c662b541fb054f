//! Parking a grid between peaks and resuming it.
//!
//! Parking snapshots the analytics database (RDS CreateDBSnapshot), then shrinks the stack to
//! its data ([`crate::render::Shape::Parked`]): the buckets, queues and log group stay, and
//! everything billed by the hour goes. What was kept is written to the parking record, an
//! object in the results bucket ([`RECORD_KEY`]), before the stack shrinks. A deploy that
//! finds the record renders the whole grid again with the database restored from the recorded
//! snapshot ([`crate::render::Shape::Resumed`]), in the same stack, so the same buckets.

use std::time::{Duration, SystemTime};

use aws_sdk_rds::Client as RdsClient;
use serde::{Deserialize, Serialize};

use crate::deploy::{error_message, DeployError, DeployRequest, Deployer, Event, PlannedChange};

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
    #[error("snapshot {snapshot} of {instance} is {status}, not available")]
    SnapshotFailed {
        /// The snapshot.
        snapshot: String,
        /// The database instance.
        instance: String,
        /// Its last status.
        status: String,
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
    /// The DB snapshot the database is restored from; none with an external database.
    pub snapshot: Option<String>,
    /// The database instance the snapshot was taken of.
    #[serde(default)]
    pub database_instance: Option<String>,
    /// The raw input bucket, kept with its data.
    pub raw_bucket: String,
    /// The results bucket, kept with its data (and this record).
    pub results_bucket: String,
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

/// The analytics database's snapshots, through RDS.
#[derive(Debug, Clone)]
pub struct Snapshots {
    rds: RdsClient,
    poll: Duration,
    max_polls: u32,
}

impl Snapshots {
    /// Snapshots through this client, polling every `poll` for at most two hours.
    pub fn new(rds: RdsClient, poll: Duration) -> Self {
        let max_polls = u32::try_from(7200 / poll.as_secs().max(1)).unwrap_or(u32::MAX);
        Self { rds, poll, max_polls }
    }

    /// Turns the instance's deletion protection off when it is on, so the parked stack can
    /// delete it (its data is in the snapshot by then); says whether it was on.
    pub async fn allow_deletion(&self, instance: &str) -> Result<bool, ParkError> {
        let described = self
            .rds
            .describe_db_instances()
            .db_instance_identifier(instance)
            .send()
            .await
            .map_err(|e| aws("DescribeDBInstances")(e.into_service_error()))?;
        let protected = described.db_instances().first().and_then(|i| i.deletion_protection()).unwrap_or(false);
        if protected {
            self.set_deletion_protection(instance, false).await?;
        }
        Ok(protected)
    }

    /// Turns the instance's deletion protection on or off, at once.
    pub async fn set_deletion_protection(&self, instance: &str, on: bool) -> Result<(), ParkError> {
        self.rds
            .modify_db_instance()
            .db_instance_identifier(instance)
            .deletion_protection(on)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| aws("ModifyDBInstance")(e.into_service_error()))?;
        Ok(())
    }

    /// Takes snapshot `snapshot` of `instance` and waits until it is available.
    pub async fn take(&self, instance: &str, snapshot: &str) -> Result<(), ParkError> {
        self.rds
            .create_db_snapshot()
            .db_instance_identifier(instance)
            .db_snapshot_identifier(snapshot)
            .send()
            .await
            .map_err(|e| aws("CreateDBSnapshot")(e.into_service_error()))?;
        for _ in 0..self.max_polls {
            let described = self
                .rds
                .describe_db_snapshots()
                .db_snapshot_identifier(snapshot)
                .send()
                .await
                .map_err(|e| aws("DescribeDBSnapshots")(e.into_service_error()))?;
            let status = described.db_snapshots().first().and_then(|s| s.status()).unwrap_or("creating");
            match status {
                "available" => return Ok(()),
                "creating" | "copying" | "pending" => tokio::time::sleep(self.poll).await,
                other => {
                    return Err(ParkError::SnapshotFailed {
                        snapshot: snapshot.to_owned(),
                        instance: instance.to_owned(),
                        status: other.to_owned(),
                    })
                }
            }
        }
        Err(ParkError::Timeout(format!("snapshot {snapshot}")))
    }

    /// Deletes a snapshot; one already gone is no error. Says whether it was there.
    pub async fn delete(&self, snapshot: &str) -> Result<bool, ParkError> {
        match self.rds.delete_db_snapshot().db_snapshot_identifier(snapshot).send().await {
            Ok(_) => Ok(true),
            Err(error) => {
                let error = error.into_service_error();
                if error.is_db_snapshot_not_found_fault() {
                    Ok(false)
                } else {
                    Err(aws("DeleteDBSnapshot")(error))
                }
            }
        }
    }
}

/// The logical id of the analytics database in the grid's template.
pub const DATABASE: &str = "Database";

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
    let instance = match snapshots {
        Some(_) => deployer.physical_id(stack, DATABASE).await?,
        None => None,
    };
    let mut lifted = false;
    let (snapshot, fresh) = match (snapshots, &instance) {
        (Some(snapshots), Some(instance)) => {
            let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let id = snapshot_id(stack, unix);
            on_event(&Event { logical_id: instance.clone(), status: format!("snapshotting to {id}"), reason: None });
            snapshots.take(instance, &id).await?;
            lifted = snapshots.allow_deletion(instance).await?;
            on_event(&Event { logical_id: id.clone(), status: "snapshot available".into(), reason: None });
            (Some(id), true)
        }
        // Parked already (or no database of its own): the data is where the record says.
        _ => (previous.as_ref().and_then(|r| r.snapshot.clone()), false),
    };
    let record = ParkingRecord {
        state: ParkState::Parked,
        stack: stack.to_owned(),
        parked_at: now_text(),
        resumed_at: None,
        snapshot: snapshot.clone(),
        database_instance: instance.or_else(|| previous.as_ref().and_then(|r| r.database_instance.clone())),
        raw_bucket,
        results_bucket,
    };
    write_record(deployer.s3(), &record).await?;
    let removed = match deployer.deploy(parked, confirm, on_event).await {
        Ok((crate::deploy::DeployOutcome::Applied(changes), _)) => changes,
        Ok((crate::deploy::DeployOutcome::Unchanged, _)) => Vec::new(),
        Err(error) => {
            restore_record(deployer.s3(), &record.results_bucket, previous.as_ref()).await?;
            if let (Some(snapshots), Some(instance), true) = (snapshots, &record.database_instance, lifted) {
                snapshots.set_deletion_protection(instance, true).await?;
            }
            return Err(error.into());
        }
    };
    // The database made from an earlier parking's snapshot is gone and a newer snapshot holds
    // its data: the older one would only cost storage.
    let mut superseded = None;
    if let (Some(snapshots), true, Some(old)) = (snapshots, fresh, previous.and_then(|r| r.snapshot)) {
        if Some(&old) != snapshot.as_ref() && snapshots.delete(&old).await? {
            superseded = Some(old);
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
