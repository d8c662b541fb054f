//! Parking and resuming against scripted CloudFormation, RDS and S3 answers: the snapshot the
//! emulator cannot take (its RDS has no database), in the order that keeps the data.

use std::sync::{Arc, Mutex};

use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stack_resources::DescribeStackResourcesOutput;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::types::{
    Change, ChangeAction, ChangeSetStatus, Output, ResourceChange, ResourceStatus, Stack, StackResource, StackStatus,
};
use aws_sdk_rds::operation::create_db_cluster_snapshot::CreateDbClusterSnapshotOutput;
use aws_sdk_rds::operation::create_db_snapshot::CreateDbSnapshotOutput;
use aws_sdk_rds::operation::delete_db_cluster_snapshot::{DeleteDBClusterSnapshotError, DeleteDbClusterSnapshotOutput};
use aws_sdk_rds::operation::delete_db_snapshot::{DeleteDBSnapshotError, DeleteDbSnapshotOutput};
use aws_sdk_rds::operation::describe_db_cluster_snapshots::DescribeDbClusterSnapshotsOutput;
use aws_sdk_rds::operation::describe_db_clusters::DescribeDbClustersOutput;
use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
use aws_sdk_rds::operation::modify_db_cluster::ModifyDbClusterOutput;
use aws_sdk_rds::operation::modify_db_instance::ModifyDbInstanceOutput;
use aws_sdk_rds::types::{DbCluster, DbClusterSnapshot, DbInstance, DbSnapshot};
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

use super::*;

/// What the scripted services were asked, in order.
type Calls = Arc<Mutex<Vec<String>>>;

fn note(calls: &Calls, what: impl Into<String>) {
    calls.lock().expect("calls").push(what.into());
}

fn noted(calls: &Calls) -> Vec<String> {
    calls.lock().expect("calls").clone()
}

fn stack() -> DescribeStacksOutput {
    let stack = Stack::builder()
        .stack_name("grid")
        .stack_status(StackStatus::UpdateComplete)
        .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
        .outputs(Output::builder().output_key("RawBucketName").output_value("raw-1").build())
        .outputs(Output::builder().output_key("ResultsBucketName").output_value("results-1").build())
        .build();
    DescribeStacksOutput::builder().stacks(stack).build()
}

fn resources() -> DescribeStackResourcesOutput {
    let resource = |logical: &str, physical: &str, kind: &str| {
        StackResource::builder()
            .logical_resource_id(logical)
            .physical_resource_id(physical)
            .resource_type(kind)
            .resource_status(ResourceStatus::CreateComplete)
            .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
            .build()
    };
    // Both kinds of database, so a test sees which one parking picks by its kind.
    DescribeStackResourcesOutput::builder()
        .stack_resources(resource("RawBucket", "raw-1", "AWS::S3::Bucket"))
        .stack_resources(resource("Database", "grid-db-1", "AWS::RDS::DBInstance"))
        .stack_resources(resource("AuroraCluster", "grid-cluster-1", "AWS::RDS::DBCluster"))
        .build()
}

fn removal(logical: &str, kind: &str) -> Change {
    Change::builder()
        .resource_change(
            ResourceChange::builder()
                .action(ChangeAction::Remove)
                .logical_resource_id(logical)
                .resource_type(kind)
                .build(),
        )
        .build()
}

/// CloudFormation for a running stack whose parked change set removes the database and the
/// manager; the execution is noted in `calls`.
fn cloudformation(calls: &Calls) -> Vec<Rule> {
    let executed = calls.clone();
    vec![
        mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(stack),
        mock!(aws_sdk_cloudformation::Client::describe_stack_resources).then_output(resources),
        mock!(aws_sdk_cloudformation::Client::create_change_set)
            .then_output(|| CreateChangeSetOutput::builder().id("cs").build()),
        mock!(aws_sdk_cloudformation::Client::describe_change_set).then_output(|| {
            DescribeChangeSetOutput::builder()
                .status(ChangeSetStatus::CreateComplete)
                .changes(removal("Database", "AWS::RDS::DBInstance"))
                .changes(removal("Manager", "AWS::EC2::Instance"))
                .build()
        }),
        mock!(aws_sdk_cloudformation::Client::delete_change_set)
            .then_output(|| DeleteChangeSetOutput::builder().build()),
        mock!(aws_sdk_cloudformation::Client::describe_stack_events)
            .then_output(|| DescribeStackEventsOutput::builder().build()),
        mock!(aws_sdk_cloudformation::Client::execute_change_set)
            .match_requests(move |_| {
                note(&executed, "stack shrunk");
                true
            })
            .then_output(|| ExecuteChangeSetOutput::builder().build()),
    ]
}

/// RDS with a deletion-protected instance `grid-db-1`, whose snapshots take one poll to
/// become available; every change is noted in `calls`.
fn rds(calls: &Calls) -> Vec<Rule> {
    let (snapshot, modify, delete) = (calls.clone(), calls.clone(), calls.clone());
    vec![
        mock!(aws_sdk_rds::Client::create_db_snapshot)
            .match_requests(move |r| {
                note(
                    &snapshot,
                    format!(
                        "snapshot {} of {}",
                        r.db_snapshot_identifier().unwrap_or_default(),
                        r.db_instance_identifier().unwrap_or_default()
                    ),
                );
                true
            })
            .then_output(|| CreateDbSnapshotOutput::builder().build()),
        mock!(aws_sdk_rds::Client::describe_db_snapshots)
            .sequence()
            .output(|| {
                DescribeDbSnapshotsOutput::builder()
                    .db_snapshots(DbSnapshot::builder().status("creating").build())
                    .build()
            })
            .output(|| {
                DescribeDbSnapshotsOutput::builder()
                    .db_snapshots(DbSnapshot::builder().status("available").build())
                    .build()
            })
            .build(),
        mock!(aws_sdk_rds::Client::describe_db_instances).then_output(|| {
            DescribeDbInstancesOutput::builder()
                .db_instances(
                    DbInstance::builder().db_instance_identifier("grid-db-1").deletion_protection(true).build(),
                )
                .build()
        }),
        mock!(aws_sdk_rds::Client::modify_db_instance)
            .match_requests(move |r| {
                note(&modify, format!("deletion protection {:?}", r.deletion_protection()));
                true
            })
            .then_output(|| ModifyDbInstanceOutput::builder().build()),
        mock!(aws_sdk_rds::Client::delete_db_snapshot)
            .match_requests(move |r| {
                note(&delete, format!("delete snapshot {}", r.db_snapshot_identifier().unwrap_or_default()));
                true
            })
            .then_output(|| DeleteDbSnapshotOutput::builder().build()),
    ]
}

/// S3 holding `record` (none: NoSuchKey) in the results bucket; writes are kept in `written`
/// and noted in `calls`.
fn s3(calls: &Calls, record: Option<ParkingRecord>, written: &Arc<Mutex<Vec<ParkingRecord>>>) -> Vec<Rule> {
    let (put, deleted, written) = (calls.clone(), calls.clone(), written.clone());
    let get = match record {
        Some(record) => mock!(aws_sdk_s3::Client::get_object).then_output(move || {
            GetObjectOutput::builder().body(serde_json::to_vec(&record).expect("record JSON").into()).build()
        }),
        None => mock!(aws_sdk_s3::Client::get_object)
            .then_error(|| GetObjectError::NoSuchKey(aws_sdk_s3::types::error::NoSuchKey::builder().build())),
    };
    vec![
        get,
        mock!(aws_sdk_s3::Client::put_object)
            .match_requests(move |r| {
                let body = r.body().bytes().unwrap_or_default();
                let record: ParkingRecord = serde_json::from_slice(body).expect("a parking record is written");
                note(
                    &put,
                    format!(
                        "record {:?} in {}/{}",
                        record.state,
                        r.bucket().unwrap_or_default(),
                        r.key().unwrap_or_default()
                    ),
                );
                written.lock().expect("written").push(record);
                true
            })
            .then_output(|| PutObjectOutput::builder().build()),
        mock!(aws_sdk_s3::Client::delete_object)
            .match_requests(move |r| {
                note(&deleted, format!("record deleted from {}", r.bucket().unwrap_or_default()));
                true
            })
            .then_output(|| DeleteObjectOutput::builder().build()),
    ]
}

fn refs(rules: &[Rule]) -> Vec<&Rule> {
    rules.iter().collect()
}

fn parked_request() -> DeployRequest {
    DeployRequest {
        stack: "grid".into(),
        template: "Resources: {}\n".into(),
        tags: std::collections::BTreeMap::new(),
        protected: false,
    }
}

fn resumed_earlier() -> ParkingRecord {
    ParkingRecord {
        state: ParkState::Resumed,
        stack: "grid".into(),
        parked_at: "2026-10-01T00:00:00Z".into(),
        resumed_at: Some("2026-10-28T00:00:00Z".into()),
        snapshot: Some("grid-parked-1".into()),
        snapshot_kind: DatabaseKind::Instance,
        database_instance: Some("grid-db-0".into()),
        database_cluster: None,
        raw_bucket: "raw-1".into(),
        results_bucket: "results-1".into(),
    }
}

/// The snapshot is available, and the record that names it written, before the stack loses its
/// database; deletion protection comes off for that; the snapshot an earlier resume came from
/// goes once the new one holds the data.
#[tokio::test]
async fn parking_snapshots_then_records_then_shrinks_the_stack() {
    let calls: Calls = Arc::default();
    let written = Arc::default();
    let (cfn_rules, rds_rules, s3_rules) =
        (cloudformation(&calls), rds(&calls), s3(&calls, Some(resumed_earlier()), &written));
    let deployer = Deployer::new(
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &refs(&cfn_rules)),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, &refs(&s3_rules)),
        Duration::ZERO,
    );
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &refs(&rds_rules)),
        DatabaseKind::Instance,
        Duration::ZERO,
    );
    let mut events = Vec::new();
    let parked =
        park(&deployer, Some(&snapshots), &parked_request(), "", &mut |_| true, &mut |e| events.push(e.clone()))
            .await
            .expect("park");

    let snapshot = parked.record.snapshot.clone().expect("a snapshot");
    assert!(snapshot.starts_with("grid-parked-"), "{snapshot}");
    assert_eq!(
        noted(&calls),
        [
            format!("snapshot {snapshot} of grid-db-1"),
            "deletion protection Some(false)".to_owned(),
            "record Parked in results-1/batchgrid/parking.json".to_owned(),
            "stack shrunk".to_owned(),
            "delete snapshot grid-parked-1".to_owned(),
        ]
    );
    let record = &written.lock().expect("written")[0];
    assert_eq!(record, &parked.record);
    assert_eq!((record.raw_bucket.as_str(), record.results_bucket.as_str()), ("raw-1", "results-1"));
    assert_eq!(record.database_instance.as_deref(), Some("grid-db-1"));
    assert!(parked.deletion_protection_lifted);
    assert_eq!(parked.superseded_snapshot.as_deref(), Some("grid-parked-1"));
    assert_eq!(parked.removed.iter().map(|c| c.logical_id.as_str()).collect::<Vec<_>>(), ["Database", "Manager"]);
    assert!(events.iter().any(|e| e.status == "snapshot available"), "{events:?}");
}

/// A declined parking leaves everything as it was: no record (it is deleted again), deletion
/// protection back on, the stack untouched. The snapshot taken stays (it is only a copy).
#[tokio::test]
async fn a_declined_parking_puts_the_record_and_the_protection_back() {
    let calls: Calls = Arc::default();
    let written = Arc::default();
    let (cfn_rules, rds_rules, s3_rules) = (cloudformation(&calls), rds(&calls), s3(&calls, None, &written));
    let deployer = Deployer::new(
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &refs(&cfn_rules)),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, &refs(&s3_rules)),
        Duration::ZERO,
    );
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &refs(&rds_rules)),
        DatabaseKind::Instance,
        Duration::ZERO,
    );
    let error = park(&deployer, Some(&snapshots), &parked_request(), "", &mut |_| false, &mut |_| {})
        .await
        .expect_err("declined");
    assert!(matches!(error, ParkError::Deploy(DeployError::Declined)), "{error}");
    let calls = noted(&calls);
    assert_eq!(
        calls[1..],
        [
            "deletion protection Some(false)".to_owned(),
            "record Parked in results-1/batchgrid/parking.json".to_owned(),
            "record deleted from results-1".to_owned(),
            "deletion protection Some(true)".to_owned(),
        ],
        "{calls:?}"
    );
}

/// Resuming reads the record from the stack's results bucket; a stack never parked has none.
#[tokio::test]
async fn the_record_is_read_from_the_results_bucket() {
    let calls: Calls = Arc::default();
    let written = Arc::default();
    for (stored, expected) in [(Some(resumed_earlier()), Some(resumed_earlier())), (None, None)] {
        let (cfn_rules, s3_rules) = (cloudformation(&calls), s3(&calls, stored, &written));
        let deployer = Deployer::new(
            mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &refs(&cfn_rules)),
            mock_client!(aws_sdk_s3, RuleMode::MatchAny, &refs(&s3_rules)),
            Duration::ZERO,
        );
        assert_eq!(parking_record(&deployer, "grid", "").await.expect("record"), expected);
    }
}

#[tokio::test]
async fn a_record_that_is_not_one_names_its_place() {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .then_output(|| GetObjectOutput::builder().body(b"{\"state\": \"napping\"}".to_vec().into()).build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&get]);
    let error = read_record(&s3, "results-1").await.expect_err("not a record");
    assert!(error.to_string().starts_with("s3://results-1/batchgrid/parking.json: not a parking record"), "{error}");
}

#[tokio::test]
async fn a_failed_snapshot_stops_the_parking_with_its_status() {
    let create =
        mock!(aws_sdk_rds::Client::create_db_snapshot).then_output(|| CreateDbSnapshotOutput::builder().build());
    let describe = mock!(aws_sdk_rds::Client::describe_db_snapshots).then_output(|| {
        DescribeDbSnapshotsOutput::builder().db_snapshots(DbSnapshot::builder().status("failed").build()).build()
    });
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&create, &describe]),
        DatabaseKind::Instance,
        Duration::ZERO,
    );
    let error = snapshots.take("grid-db-1", "grid-parked-9").await.expect_err("failed");
    assert_eq!(error.to_string(), "snapshot grid-parked-9 of grid-db-1 is failed, not available");
}

#[tokio::test]
async fn deleting_a_snapshot_already_gone_is_no_error() {
    let delete = mock!(aws_sdk_rds::Client::delete_db_snapshot).then_error(|| {
        DeleteDBSnapshotError::DbSnapshotNotFoundFault(
            aws_sdk_rds::types::error::DbSnapshotNotFoundFault::builder().build(),
        )
    });
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&delete]),
        DatabaseKind::Instance,
        Duration::ZERO,
    );
    assert!(!snapshots.delete("grid-parked-1").await.expect("gone already"));
}

#[test]
fn snapshot_ids_are_what_rds_accepts() {
    let id = snapshot_id("batchgrid-prod", 1_764_561_600);
    assert_eq!(id, "batchgrid-prod-parked-1764561600");
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !id.contains("--"));
}

/// RDS with a deletion-protected Aurora cluster `grid-cluster-1`, whose cluster snapshots take
/// one poll to become available. Only the cluster calls are scripted: an instance call fails
/// the test. Every change, and each status the poll sees, is noted in `calls`.
fn rds_cluster(calls: &Calls) -> Vec<Rule> {
    let (snapshot, modify, delete) = (calls.clone(), calls.clone(), calls.clone());
    let (creating, available) = (calls.clone(), calls.clone());
    vec![
        mock!(aws_sdk_rds::Client::create_db_cluster_snapshot)
            .match_requests(move |r| {
                note(
                    &snapshot,
                    format!(
                        "cluster snapshot {} of {}",
                        r.db_cluster_snapshot_identifier().unwrap_or_default(),
                        r.db_cluster_identifier().unwrap_or_default()
                    ),
                );
                true
            })
            .then_output(|| CreateDbClusterSnapshotOutput::builder().build()),
        mock!(aws_sdk_rds::Client::describe_db_cluster_snapshots)
            .sequence()
            .output(move || {
                note(&creating, "cluster snapshot creating");
                DescribeDbClusterSnapshotsOutput::builder()
                    .db_cluster_snapshots(DbClusterSnapshot::builder().status("creating").build())
                    .build()
            })
            .output(move || {
                note(&available, "cluster snapshot available");
                DescribeDbClusterSnapshotsOutput::builder()
                    .db_cluster_snapshots(DbClusterSnapshot::builder().status("available").build())
                    .build()
            })
            .build(),
        mock!(aws_sdk_rds::Client::describe_db_clusters).then_output(|| {
            DescribeDbClustersOutput::builder()
                .db_clusters(
                    DbCluster::builder().db_cluster_identifier("grid-cluster-1").deletion_protection(true).build(),
                )
                .build()
        }),
        mock!(aws_sdk_rds::Client::modify_db_cluster)
            .match_requests(move |r| {
                note(
                    &modify,
                    format!(
                        "cluster {} deletion protection {:?}",
                        r.db_cluster_identifier().unwrap_or_default(),
                        r.deletion_protection()
                    ),
                );
                true
            })
            .then_output(|| ModifyDbClusterOutput::builder().build()),
        mock!(aws_sdk_rds::Client::delete_db_cluster_snapshot)
            .match_requests(move |r| {
                note(
                    &delete,
                    format!("delete cluster snapshot {}", r.db_cluster_snapshot_identifier().unwrap_or_default()),
                );
                true
            })
            .then_output(|| DeleteDbClusterSnapshotOutput::builder().build()),
    ]
}

/// A grid with a serverless database, resumed earlier from the cluster snapshot `grid-parked-1`.
fn cluster_resumed_earlier() -> ParkingRecord {
    ParkingRecord {
        snapshot_kind: DatabaseKind::Cluster,
        database_instance: None,
        database_cluster: Some("grid-cluster-0".into()),
        ..resumed_earlier()
    }
}

fn cluster_snapshots(rules: &[Rule]) -> Snapshots {
    Snapshots::new(mock_client!(aws_sdk_rds, RuleMode::MatchAny, &refs(rules)), DatabaseKind::Cluster, Duration::ZERO)
}

/// `analytics.provider: serverless`: the Aurora cluster's snapshot is taken and awaited until
/// available, the cluster's deletion protection comes off, the record (a cluster snapshot,
/// naming the cluster) is written, and only then does the stack shrink; the cluster snapshot an
/// earlier resume came from goes once the new one holds the data.
#[tokio::test]
async fn parking_a_cluster_snapshots_it_then_records_then_shrinks_the_stack() {
    let calls: Calls = Arc::default();
    let written = Arc::default();
    let (cfn_rules, rds_rules, s3_rules) =
        (cloudformation(&calls), rds_cluster(&calls), s3(&calls, Some(cluster_resumed_earlier()), &written));
    let deployer = Deployer::new(
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &refs(&cfn_rules)),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, &refs(&s3_rules)),
        Duration::ZERO,
    );
    let snapshots = cluster_snapshots(&rds_rules);
    let parked =
        park(&deployer, Some(&snapshots), &parked_request(), "", &mut |_| true, &mut |_| {}).await.expect("park");

    let snapshot = parked.record.snapshot.clone().expect("a snapshot");
    assert!(snapshot.starts_with("grid-parked-"), "{snapshot}");
    assert_eq!(
        noted(&calls),
        [
            format!("cluster snapshot {snapshot} of grid-cluster-1"),
            "cluster snapshot creating".to_owned(),
            "cluster snapshot available".to_owned(),
            "cluster grid-cluster-1 deletion protection Some(false)".to_owned(),
            "record Parked in results-1/batchgrid/parking.json".to_owned(),
            "stack shrunk".to_owned(),
            "delete cluster snapshot grid-parked-1".to_owned(),
        ]
    );
    let record = &written.lock().expect("written")[0];
    assert_eq!(record, &parked.record);
    assert_eq!(record.snapshot_kind, DatabaseKind::Cluster);
    assert_eq!(record.database_cluster.as_deref(), Some("grid-cluster-1"));
    assert_eq!(record.database_instance, None);
    assert!(parked.deletion_protection_lifted);
    assert_eq!(parked.superseded_snapshot.as_deref(), Some("grid-parked-1"));
    let json = serde_json::to_value(record).expect("JSON");
    assert_eq!(
        (json["snapshot_kind"].as_str(), json["database_cluster"].as_str()),
        (Some("cluster"), Some("grid-cluster-1"))
    );
}

/// A declined parking of a cluster leaves everything as it was: the record deleted again and
/// the cluster's deletion protection back on. The cluster snapshot taken stays (only a copy).
#[tokio::test]
async fn a_declined_cluster_parking_puts_the_record_and_the_cluster_protection_back() {
    let calls: Calls = Arc::default();
    let written = Arc::default();
    let (cfn_rules, rds_rules, s3_rules) = (cloudformation(&calls), rds_cluster(&calls), s3(&calls, None, &written));
    let deployer = Deployer::new(
        mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &refs(&cfn_rules)),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, &refs(&s3_rules)),
        Duration::ZERO,
    );
    let snapshots = cluster_snapshots(&rds_rules);
    let error = park(&deployer, Some(&snapshots), &parked_request(), "", &mut |_| false, &mut |_| {})
        .await
        .expect_err("declined");
    assert!(matches!(error, ParkError::Deploy(DeployError::Declined)), "{error}");
    let calls = noted(&calls);
    assert_eq!(
        calls[3..],
        [
            "cluster grid-cluster-1 deletion protection Some(false)".to_owned(),
            "record Parked in results-1/batchgrid/parking.json".to_owned(),
            "record deleted from results-1".to_owned(),
            "cluster grid-cluster-1 deletion protection Some(true)".to_owned(),
        ],
        "{calls:?}"
    );
}

/// A record written before clusters could be parked has no kind: it reads as an instance
/// snapshot, as it is.
#[test]
fn a_record_without_a_kind_is_of_an_instance() {
    let old = r#"{"state": "parked", "stack": "grid", "parked_at": "2026-10-01T00:00:00Z",
        "snapshot": "grid-parked-1", "database_instance": "grid-db-0",
        "raw_bucket": "raw-1", "results_bucket": "results-1"}"#;
    let record: ParkingRecord = serde_json::from_str(old).expect("an old record reads");
    assert_eq!(record.snapshot_kind, DatabaseKind::Instance);
    assert_eq!((record.database(), record.database_cluster.as_deref()), (Some("grid-db-0"), None));
    let cluster: ParkingRecord =
        serde_json::from_value(serde_json::to_value(cluster_resumed_earlier()).expect("JSON")).expect("round trip");
    assert_eq!(cluster.database(), Some("grid-cluster-0"));
}

/// Teardown of a parked grid deletes the snapshot its record names, with the calls of the kind
/// the record names (not the client's): a cluster snapshot, and an old record's instance one.
#[tokio::test]
async fn teardown_deletes_the_parked_snapshot_of_the_kind_its_record_names() {
    let calls: Calls = Arc::default();
    let (cluster_rules, instance_rules) = (rds_cluster(&calls), rds(&calls));
    let parked_cluster = ParkingRecord { state: ParkState::Parked, ..cluster_resumed_earlier() };
    let by_instance_client = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &refs(&cluster_rules)),
        DatabaseKind::Instance,
        Duration::ZERO,
    );
    let deleted = delete_parked_snapshot(&by_instance_client, &parked_cluster).await.expect("deleted");
    assert_eq!(deleted.as_deref(), Some("grid-parked-1"));

    let parked_instance = ParkingRecord { state: ParkState::Parked, ..resumed_earlier() };
    let by_cluster_client = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &refs(&instance_rules)),
        DatabaseKind::Cluster,
        Duration::ZERO,
    );
    let deleted = delete_parked_snapshot(&by_cluster_client, &parked_instance).await.expect("deleted");
    assert_eq!(deleted.as_deref(), Some("grid-parked-1"));
    assert_eq!(noted(&calls), ["delete cluster snapshot grid-parked-1", "delete snapshot grid-parked-1"]);

    let external = ParkingRecord { snapshot: None, ..parked_instance };
    assert_eq!(delete_parked_snapshot(&by_cluster_client, &external).await.expect("nothing"), None);
}

#[tokio::test]
async fn a_failed_cluster_snapshot_stops_the_parking_with_its_status() {
    let create = mock!(aws_sdk_rds::Client::create_db_cluster_snapshot)
        .then_output(|| CreateDbClusterSnapshotOutput::builder().build());
    let describe = mock!(aws_sdk_rds::Client::describe_db_cluster_snapshots).then_output(|| {
        DescribeDbClusterSnapshotsOutput::builder()
            .db_cluster_snapshots(DbClusterSnapshot::builder().status("failed").build())
            .build()
    });
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&create, &describe]),
        DatabaseKind::Cluster,
        Duration::ZERO,
    );
    let error = snapshots.take("grid-cluster-1", "grid-parked-9").await.expect_err("failed");
    assert_eq!(error.to_string(), "snapshot grid-parked-9 of grid-cluster-1 is failed, not available");
}

#[tokio::test]
async fn deleting_a_cluster_snapshot_already_gone_is_no_error() {
    let delete = mock!(aws_sdk_rds::Client::delete_db_cluster_snapshot).then_error(|| {
        DeleteDBClusterSnapshotError::DbClusterSnapshotNotFoundFault(
            aws_sdk_rds::types::error::DbClusterSnapshotNotFoundFault::builder().build(),
        )
    });
    let snapshots = Snapshots::new(
        mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&delete]),
        DatabaseKind::Cluster,
        Duration::ZERO,
    );
    assert!(!snapshots.delete("grid-parked-1").await.expect("gone already"));
}

/// A grid parked with an instance's snapshot cannot resume as a cluster (or the other way):
/// the error says why and what to do. An external database restores nothing, so it resumes.
#[test]
fn resuming_refuses_a_snapshot_of_another_kind_of_database() {
    let parked = ParkingRecord { state: ParkState::Parked, ..resumed_earlier() };
    assert!(parked.check_resumable(Some(DatabaseKind::Instance)).is_ok());
    assert!(parked.check_resumable(None).is_ok());
    let error = parked.check_resumable(Some(DatabaseKind::Cluster)).expect_err("another kind");
    assert_eq!(
        error.to_string(),
        "stack grid was parked with a snapshot of an RDS DB instance (grid-parked-1), but the environment now \
         creates an Aurora DB cluster: set analytics.provider back to resume it"
    );
    assert!(cluster_resumed_earlier().check_resumable(Some(DatabaseKind::Cluster)).is_ok());
}
