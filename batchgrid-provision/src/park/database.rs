//! The seam between parking and the two kinds of database a stack creates: an RDS DB instance
//! (`analytics.provider: rds`) and an Aurora DB cluster (`serverless`). Parking does the same
//! steps for both; only the RDS calls differ (DB snapshots of an instance, DB cluster snapshots
//! of a cluster), and they are all here.

use aws_sdk_rds::Client as RdsClient;
use serde::{Deserialize, Serialize};

use super::{aws, ParkError};
use crate::environment::Analytics;

/// Which kind of database a snapshot is of, and so which RDS calls take, await and delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseKind {
    /// An RDS DB instance: DB snapshots (the default, so records written before clusters could
    /// be parked still read as what they are).
    #[default]
    Instance,
    /// An Aurora DB cluster: DB cluster snapshots.
    Cluster,
}

impl DatabaseKind {
    /// The kind of database the environment's stack creates; `None` with an external one.
    pub fn of(analytics: &Analytics) -> Option<Self> {
        if analytics.is_serverless() {
            Some(Self::Cluster)
        } else if analytics.creates_database() {
            Some(Self::Instance)
        } else {
            None
        }
    }

    /// The database's logical id in the grid's template (its physical id is the identifier
    /// RDS knows it by).
    pub fn logical_id(self) -> &'static str {
        match self {
            Self::Instance => super::DATABASE,
            Self::Cluster => super::AURORA_CLUSTER,
        }
    }

    /// Whether the database has deletion protection on (DescribeDBInstances/DescribeDBClusters).
    pub(super) async fn deletion_protected(self, rds: &RdsClient, database: &str) -> Result<bool, ParkError> {
        Ok(match self {
            Self::Instance => rds
                .describe_db_instances()
                .db_instance_identifier(database)
                .send()
                .await
                .map_err(|e| aws("DescribeDBInstances")(e.into_service_error()))?
                .db_instances()
                .first()
                .and_then(|i| i.deletion_protection()),
            Self::Cluster => rds
                .describe_db_clusters()
                .db_cluster_identifier(database)
                .send()
                .await
                .map_err(|e| aws("DescribeDBClusters")(e.into_service_error()))?
                .db_clusters()
                .first()
                .and_then(|c| c.deletion_protection()),
        }
        .unwrap_or(false))
    }

    /// Turns the database's deletion protection on or off, at once (ModifyDBInstance/Cluster).
    pub(super) async fn set_deletion_protection(
        self,
        rds: &RdsClient,
        database: &str,
        on: bool,
    ) -> Result<(), ParkError> {
        match self {
            Self::Instance => {
                rds.modify_db_instance()
                    .db_instance_identifier(database)
                    .deletion_protection(on)
                    .apply_immediately(true)
                    .send()
                    .await
                    .map_err(|e| aws("ModifyDBInstance")(e.into_service_error()))?;
            }
            Self::Cluster => {
                rds.modify_db_cluster()
                    .db_cluster_identifier(database)
                    .deletion_protection(on)
                    .apply_immediately(true)
                    .send()
                    .await
                    .map_err(|e| aws("ModifyDBCluster")(e.into_service_error()))?;
            }
        }
        Ok(())
    }

    /// Starts snapshot `snapshot` of `database` (CreateDBSnapshot/CreateDBClusterSnapshot).
    pub(super) async fn create_snapshot(
        self,
        rds: &RdsClient,
        database: &str,
        snapshot: &str,
    ) -> Result<(), ParkError> {
        match self {
            Self::Instance => {
                rds.create_db_snapshot()
                    .db_instance_identifier(database)
                    .db_snapshot_identifier(snapshot)
                    .send()
                    .await
                    .map_err(|e| aws("CreateDBSnapshot")(e.into_service_error()))?;
            }
            Self::Cluster => {
                rds.create_db_cluster_snapshot()
                    .db_cluster_identifier(database)
                    .db_cluster_snapshot_identifier(snapshot)
                    .send()
                    .await
                    .map_err(|e| aws("CreateDBClusterSnapshot")(e.into_service_error()))?;
            }
        }
        Ok(())
    }

    /// The snapshot's status, `None` while RDS does not list it yet
    /// (DescribeDBSnapshots/DescribeDBClusterSnapshots).
    pub(super) async fn snapshot_status(self, rds: &RdsClient, snapshot: &str) -> Result<Option<String>, ParkError> {
        Ok(match self {
            Self::Instance => rds
                .describe_db_snapshots()
                .db_snapshot_identifier(snapshot)
                .send()
                .await
                .map_err(|e| aws("DescribeDBSnapshots")(e.into_service_error()))?
                .db_snapshots()
                .first()
                .and_then(|s| s.status())
                .map(str::to_owned),
            Self::Cluster => rds
                .describe_db_cluster_snapshots()
                .db_cluster_snapshot_identifier(snapshot)
                .send()
                .await
                .map_err(|e| aws("DescribeDBClusterSnapshots")(e.into_service_error()))?
                .db_cluster_snapshots()
                .first()
                .and_then(|s| s.status())
                .map(str::to_owned),
        })
    }

    /// Deletes a snapshot (DeleteDBSnapshot/DeleteDBClusterSnapshot); says whether it was there.
    pub(super) async fn delete_snapshot(self, rds: &RdsClient, snapshot: &str) -> Result<bool, ParkError> {
        match self {
            Self::Instance => match rds.delete_db_snapshot().db_snapshot_identifier(snapshot).send().await {
                Ok(_) => Ok(true),
                Err(error) => {
                    let error = error.into_service_error();
                    if error.is_db_snapshot_not_found_fault() {
                        Ok(false)
                    } else {
                        Err(aws("DeleteDBSnapshot")(error))
                    }
                }
            },
            Self::Cluster => {
                match rds.delete_db_cluster_snapshot().db_cluster_snapshot_identifier(snapshot).send().await {
                    Ok(_) => Ok(true),
                    Err(error) => {
                        let error = error.into_service_error();
                        if error.is_db_cluster_snapshot_not_found_fault() {
                            Ok(false)
                        } else {
                            Err(aws("DeleteDBClusterSnapshot")(error))
                        }
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Instance => "RDS DB instance",
            Self::Cluster => "Aurora DB cluster",
        })
    }
}
