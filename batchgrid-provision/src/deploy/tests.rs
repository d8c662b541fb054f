//! The deploy logic against scripted CloudFormation responses: no server.

use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::types::{Change, Output, ResourceChange, ResourceStatus, Stack, StackEvent};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

use super::*;

fn stack(status: StackStatus) -> DescribeStacksOutput {
    let stack = Stack::builder()
        .stack_name("grid")
        .stack_status(status)
        .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
        .outputs(Output::builder().output_key("RawBucketName").output_value("raw-1").build())
        .build();
    DescribeStacksOutput::builder().stacks(stack).build()
}

fn missing() -> DescribeStacksError {
    DescribeStacksError::generic(
        ErrorMetadata::builder().code("ValidationError").message("Stack with id grid does not exist").build(),
    )
}

fn event(id: &str, logical: &str, status: ResourceStatus, reason: Option<&str>) -> StackEvent {
    StackEvent::builder()
        .event_id(id)
        .stack_id("grid-id")
        .stack_name("grid")
        .logical_resource_id(logical)
        .resource_status(status)
        .set_resource_status_reason(reason.map(str::to_owned))
        .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
        .build()
}

fn change_set_with(changes: Vec<Change>) -> DescribeChangeSetOutput {
    DescribeChangeSetOutput::builder().status(ChangeSetStatus::CreateComplete).set_changes(Some(changes)).build()
}

fn add(logical: &str) -> Change {
    Change::builder()
        .resource_change(
            ResourceChange::builder()
                .action(ChangeAction::Add)
                .logical_resource_id(logical)
                .resource_type("AWS::SQS::Queue")
                .build(),
        )
        .build()
}

/// A deployer whose CloudFormation answers by `rules` (S3 is never called).
pub(crate) fn deployer(rules: &[&Rule]) -> Deployer {
    let cfn = mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, rules);
    let s3_config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("eu-west-1"))
        .build();
    Deployer::new(cfn, aws_sdk_s3::Client::from_conf(s3_config), Duration::ZERO)
}

fn request() -> DeployRequest {
    DeployRequest { stack: "grid".into(), template: "Resources: {}\n".into(), tags: BTreeMap::new(), protected: false }
}

fn common_rules() -> (Rule, Rule, Rule) {
    (
        mock!(Client::create_change_set).then_output(|| CreateChangeSetOutput::builder().id("cs").build()),
        mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build()),
        mock!(Client::delete_change_set).then_output(|| DeleteChangeSetOutput::builder().build()),
    )
}

#[tokio::test]
async fn create_waits_through_in_progress_and_returns_outputs() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .error(missing)
        .output(|| stack(StackStatus::CreateInProgress))
        .times(2)
        .output(|| stack(StackStatus::CreateComplete))
        .repeatedly()
        .build();
    let create_kind = mock!(Client::create_change_set)
        .match_requests(|r| r.change_set_type() == Some(&ChangeSetType::Create))
        .then_output(|| CreateChangeSetOutput::builder().id("cs").build());
    let change_set = mock!(Client::describe_change_set)
        .sequence()
        .output(|| DescribeChangeSetOutput::builder().status(ChangeSetStatus::CreatePending).build())
        .output(|| change_set_with(vec![add("InputQueue")]))
        .build();
    let events = mock!(Client::describe_stack_events).then_output(|| {
        DescribeStackEventsOutput::builder()
            .stack_events(event("e1", "InputQueue", ResourceStatus::CreateComplete, None))
            .build()
    });
    let (_, execute, _) = common_rules();
    let deployer = deployer(&[&describe, &create_kind, &change_set, &events, &execute]);
    let mut shown = Vec::new();
    let mut seen_events = Vec::new();
    let (outcome, outputs) = deployer
        .deploy(
            &request(),
            &mut |changes| {
                shown.extend_from_slice(changes);
                true
            },
            &mut |e| seen_events.push(e.clone()),
        )
        .await
        .expect("deploy");
    assert_eq!(outcome, DeployOutcome::Applied(shown.clone()));
    assert_eq!(shown[0].to_string(), "add      InputQueue (AWS::SQS::Queue)");
    assert_eq!(outputs.get("RawBucketName").map(String::as_str), Some("raw-1"));
    assert_eq!(create_kind.num_calls(), 1, "a new stack gets a CREATE change set");
    assert_eq!(execute.num_calls(), 1);
    assert!(describe.num_calls() >= 4, "polled through IN_PROGRESS twice");
}

#[tokio::test]
async fn a_failed_create_reports_the_reasons() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .error(missing)
        .output(|| stack(StackStatus::RollbackInProgress))
        .output(|| stack(StackStatus::RollbackComplete))
        .repeatedly()
        .build();
    let change_set = mock!(Client::describe_change_set).then_output(|| change_set_with(vec![add("Database")]));
    // Before execution the stack has no events; afterwards, the failure.
    let events = mock!(Client::describe_stack_events)
        .sequence()
        .output(|| DescribeStackEventsOutput::builder().build())
        .output(|| {
            DescribeStackEventsOutput::builder()
                .stack_events(event(
                    "e2",
                    "Database",
                    ResourceStatus::CreateFailed,
                    Some("DB instance class db.x1 is not supported"),
                ))
                .build()
        })
        .repeatedly()
        .build();
    let (create, execute, _) = common_rules();
    let deployer = deployer(&[&describe, &create, &change_set, &events, &execute]);
    let error = deployer.deploy(&request(), &mut |_| true, &mut |_| {}).await.expect_err("must fail");
    let text = error.to_string();
    assert!(
        text.contains("ROLLBACK_COMPLETE") && text.contains("Database: DB instance class db.x1 is not supported"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stack_in_rollback_complete_is_deleted_and_created_again() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::RollbackComplete))
        .output(|| stack(StackStatus::DeleteInProgress))
        .error(missing)
        .output(|| stack(StackStatus::CreateComplete))
        .repeatedly()
        .build();
    let delete = mock!(Client::delete_stack).then_output(|| DeleteStackOutput::builder().build());
    let create_kind = mock!(Client::create_change_set)
        .match_requests(|r| r.change_set_type() == Some(&ChangeSetType::Create))
        .then_output(|| CreateChangeSetOutput::builder().id("cs").build());
    let change_set = mock!(Client::describe_change_set).then_output(|| change_set_with(vec![add("InputQueue")]));
    let events = mock!(Client::describe_stack_events).then_output(|| DescribeStackEventsOutput::builder().build());
    let (_, execute, _) = common_rules();
    let deployer = deployer(&[&describe, &delete, &create_kind, &change_set, &events, &execute]);
    let (outcome, _) = deployer.deploy(&request(), &mut |_| true, &mut |_| {}).await.expect("deploy");
    assert!(matches!(outcome, DeployOutcome::Applied(_)));
    assert_eq!(delete.num_calls(), 1, "the dead stack was deleted first");
    assert_eq!(create_kind.num_calls(), 1, "then created anew");
}

#[tokio::test]
async fn no_changes_is_success() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let change_set = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::Failed)
            .status_reason("The submitted information didn't contain changes. Submit different information to create a change set.")
            .build()
    });
    let (create, execute, delete_cs) = common_rules();
    let deployer = deployer(&[&describe, &create, &change_set, &execute, &delete_cs]);
    let mut asked = false;
    let (outcome, outputs) = deployer
        .deploy(
            &request(),
            &mut |_| {
                asked = true;
                true
            },
            &mut |_| {},
        )
        .await
        .expect("deploy");
    assert_eq!(outcome, DeployOutcome::Unchanged);
    assert!(!asked, "nothing to confirm");
    assert_eq!(execute.num_calls(), 0, "nothing executed");
    assert_eq!(delete_cs.num_calls(), 1, "the empty change set is removed");
    assert_eq!(outputs.len(), 1);
}

#[tokio::test]
async fn drift_waits_for_detection_and_lists_drifted_resources() {
    use aws_sdk_cloudformation::operation::describe_stack_drift_detection_status::DescribeStackDriftDetectionStatusOutput;
    use aws_sdk_cloudformation::operation::describe_stack_resource_drifts::DescribeStackResourceDriftsOutput;
    use aws_sdk_cloudformation::operation::detect_stack_drift::DetectStackDriftOutput;
    use aws_sdk_cloudformation::types::{
        StackDriftDetectionStatus, StackDriftStatus, StackResourceDrift, StackResourceDriftStatus,
    };
    let detect = mock!(Client::detect_stack_drift)
        .then_output(|| DetectStackDriftOutput::builder().stack_drift_detection_id("d1").build());
    let status = mock!(Client::describe_stack_drift_detection_status)
        .sequence()
        .output(|| {
            DescribeStackDriftDetectionStatusOutput::builder()
                .stack_id("grid-id")
                .stack_drift_detection_id("d1")
                .detection_status(StackDriftDetectionStatus::DetectionInProgress)
                .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                .build()
        })
        .output(|| {
            DescribeStackDriftDetectionStatusOutput::builder()
                .stack_id("grid-id")
                .stack_drift_detection_id("d1")
                .detection_status(StackDriftDetectionStatus::DetectionComplete)
                .stack_drift_status(StackDriftStatus::Drifted)
                .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                .build()
        })
        .build();
    let drifts = mock!(Client::describe_stack_resource_drifts).then_output(|| {
        DescribeStackResourceDriftsOutput::builder()
            .stack_resource_drifts(
                StackResourceDrift::builder()
                    .stack_id("grid-id")
                    .logical_resource_id("InputQueue")
                    .resource_type("AWS::SQS::Queue")
                    .stack_resource_drift_status(StackResourceDriftStatus::Modified)
                    .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                    .build(),
            )
            .build()
    });
    let deployer = deployer(&[&detect, &status, &drifts]);
    let drift = deployer.drift("grid").await.expect("drift");
    assert_eq!(drift.status, "DRIFTED");
    assert_eq!(drift.resources.len(), 1);
    assert_eq!(
        (drift.resources[0].logical_id.as_str(), drift.resources[0].status.as_str()),
        ("InputQueue", "MODIFIED")
    );
    assert_eq!(status.num_calls(), 2, "waited while detection was in progress");
}

#[tokio::test]
async fn a_declined_change_set_changes_nothing() {
    let describe = mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let change_set = mock!(Client::describe_change_set).then_output(|| change_set_with(vec![add("OutputQueue")]));
    let (create, execute, delete_cs) = common_rules();
    let deployer = deployer(&[&describe, &create, &change_set, &execute, &delete_cs]);
    let error = deployer.deploy(&request(), &mut |_| false, &mut |_| {}).await.expect_err("declined");
    assert!(matches!(error, DeployError::Declined));
    assert_eq!(execute.num_calls(), 0);
}

mod teardown {
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};

    use super::*;

    fn deployer(cfn_rules: &[&Rule], s3_rules: &[&Rule]) -> Deployer {
        let cfn = mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, cfn_rules);
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3_rules);
        Deployer::new(cfn, s3, Duration::ZERO)
    }

    /// The stack exists, is being deleted, then is gone.
    fn stack_going() -> (Rule, Rule, Rule) {
        let describe = mock!(Client::describe_stacks)
            .sequence()
            .output(|| stack(StackStatus::UpdateComplete))
            .output(|| stack(StackStatus::DeleteInProgress))
            .error(missing)
            .repeatedly()
            .build();
        let delete = mock!(Client::delete_stack).then_output(|| DeleteStackOutput::builder().build());
        let events = mock!(Client::describe_stack_events).then_output(|| DescribeStackEventsOutput::builder().build());
        (describe, delete, events)
    }

    fn page(keys: &[&str]) -> ListObjectVersionsOutput {
        let mut out = ListObjectVersionsOutput::builder();
        for key in keys {
            out = out.versions(ObjectVersion::builder().key(*key).version_id("v1").build());
        }
        out.build()
    }

    fn buckets() -> Vec<String> {
        vec!["raw-1".to_owned(), "results-1".to_owned()]
    }

    #[tokio::test]
    async fn a_protected_teardown_leaves_the_buckets_and_their_data() {
        let (describe, delete, events) = stack_going();
        let list = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| page(&["jobs/a/input.csv"]));
        let delete_objects =
            mock!(aws_sdk_s3::Client::delete_objects).then_output(|| DeleteObjectsOutput::builder().build());
        let deployer = deployer(&[&describe, &delete, &events], &[&list, &delete_objects]);
        let mut shown = Vec::new();
        let done = deployer
            .teardown("grid", &buckets(), Buckets::Keep, &mut |e| shown.push(e.clone()))
            .await
            .expect("teardown");
        assert_eq!(done, Teardown { removed: 0, kept: buckets() });
        assert_eq!(list.num_calls() + delete_objects.num_calls(), 0, "no object was listed or deleted");
        assert_eq!(delete.num_calls(), 1, "the stack itself goes");
        assert!(shown.iter().any(|e| e.logical_id == "raw-1" && e.status.contains("kept")), "{shown:?}");
    }

    #[tokio::test]
    async fn termination_protection_comes_off_before_the_delete() {
        use aws_sdk_cloudformation::operation::update_termination_protection::UpdateTerminationProtectionOutput;
        let describe = mock!(Client::describe_stacks)
            .sequence()
            .output(|| {
                let mut out = stack(StackStatus::UpdateComplete);
                if let Some(stacks) = out.stacks.as_mut() {
                    stacks[0].enable_termination_protection = Some(true);
                }
                out
            })
            .output(|| stack(StackStatus::DeleteInProgress))
            .error(missing)
            .repeatedly()
            .build();
        let (_, delete, events) = stack_going();
        let unprotect = mock!(Client::update_termination_protection)
            .match_requests(|r| r.enable_termination_protection() == Some(false))
            .then_output(|| UpdateTerminationProtectionOutput::builder().build());
        let deployer = deployer(&[&describe, &delete, &events, &unprotect], &[]);
        let done = deployer.teardown("grid", &[], Buckets::Keep, &mut |_| {}).await.expect("teardown");
        assert_eq!(done, Teardown::default());
        assert_eq!((unprotect.num_calls(), delete.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn an_unprotected_teardown_empties_every_version_then_deletes() {
        let (describe, delete, events) = stack_going();
        let list = mock!(aws_sdk_s3::Client::list_object_versions)
            .sequence()
            .output(|| {
                let mut out = page(&["a.csv", "b.csv"]);
                out.delete_markers = Some(vec![DeleteMarkerEntry::builder().key("c.csv").version_id("m1").build()]);
                out
            })
            .output(|| page(&[]))
            .output(|| page(&[]))
            .build();
        let delete_objects = mock!(aws_sdk_s3::Client::delete_objects)
            .match_requests(|r| r.delete().is_some_and(|d| d.objects().len() == 3 && d.quiet() == Some(true)))
            .then_output(|| DeleteObjectsOutput::builder().build());
        let deployer = deployer(&[&describe, &delete, &events], &[&list, &delete_objects]);
        let done = deployer.teardown("grid", &buckets(), Buckets::Empty, &mut |_| {}).await.expect("teardown");
        assert_eq!(done, Teardown { removed: 3, kept: Vec::new() });
        assert_eq!(delete_objects.num_calls(), 1);
        assert_eq!(delete.num_calls(), 1);
    }

    #[tokio::test]
    async fn refused_deletions_stop_with_the_keys_instead_of_looping() {
        let (describe, delete, events) = stack_going();
        // S3 lists the locked object again on every call: the loop must not ask twice.
        let list = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| page(&["locked.csv", "free.csv"]));
        let delete_objects = mock!(aws_sdk_s3::Client::delete_objects).then_output(|| {
            DeleteObjectsOutput::builder()
                .errors(
                    aws_sdk_s3::types::Error::builder()
                        .key("locked.csv")
                        .version_id("v1")
                        .code("AccessDenied")
                        .message("Access Denied because object protected by object lock.")
                        .build(),
                )
                .build()
        });
        let deployer = deployer(&[&describe, &delete, &events], &[&list, &delete_objects]);
        let error = deployer.teardown("grid", &buckets(), Buckets::Empty, &mut |_| {}).await.expect_err("refused");
        assert_eq!(
            error.to_string(),
            "bucket raw-1: could not delete 1 object(s): locked.csv (version v1) AccessDenied: \
             Access Denied because object protected by object lock."
        );
        assert_eq!(list.num_calls(), 1, "stopped after the first refused page");
        assert_eq!(delete.num_calls(), 0, "the stack is left for the user to sort out");
    }

    #[test]
    fn many_refusals_name_the_first_keys_and_count_the_rest() {
        let failures: Vec<aws_sdk_s3::types::Error> = (0..25)
            .map(|i| aws_sdk_s3::types::Error::builder().key(format!("k{i}")).code("AccessDenied").build())
            .collect();
        let text = not_emptied("raw-1", &failures).to_string();
        assert!(text.starts_with("bucket raw-1: could not delete 25 object(s): k0 AccessDenied; k1 "), "{text}");
        assert!(text.ends_with("k9 AccessDenied; and 15 more"), "{text}");
    }
}

/// `diff` prices what is deployed: the stack's template as it was sent (GetTemplate), or
/// nothing when there is no stack.
#[tokio::test]
async fn the_deployed_template_is_read_back_or_none_without_a_stack() {
    use aws_sdk_cloudformation::operation::get_template::{GetTemplateError, GetTemplateOutput};
    let found = mock!(Client::get_template)
        .match_requests(|r| r.stack_name() == Some("grid"))
        .then_output(|| GetTemplateOutput::builder().template_body("Resources: {}\n").build());
    let gone = mock!(Client::get_template).match_requests(|r| r.stack_name() == Some("gone")).then_error(|| {
        GetTemplateError::generic(
            ErrorMetadata::builder().code("ValidationError").message("Stack with id gone does not exist").build(),
        )
    });
    let deployer = deployer(&[&found, &gone]);
    assert_eq!(deployer.deployed_template("grid").await.expect("template").as_deref(), Some("Resources: {}\n"));
    assert_eq!(deployer.deployed_template("gone").await.expect("no stack"), None);
}
