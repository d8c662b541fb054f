//! The image preflight against scripted CloudFormation responses: no server.

use std::path::Path;

use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
use aws_sdk_cloudformation::types::{Output, Stack, StackStatus};
use aws_sdk_cloudformation::Client;
use aws_smithy_mocks::mock;

use super::*;
use crate::deploy::tests::deployer;
use crate::environment::load;

fn environment(ami: &str) -> Environment {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../environments");
    let mut env = load(&dir, "dev", &|_| None).expect("dev environment");
    env.grid.ami = ami.to_owned();
    env
}

fn image_stack(status: StackStatus, outputs: &[(&str, &str)]) -> DescribeStacksOutput {
    let mut stack = Stack::builder()
        .stack_name("batchgrid-dev-image")
        .stack_status(status)
        .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0));
    for (key, value) in outputs {
        stack = stack.outputs(Output::builder().output_key(*key).output_value(*value).build());
    }
    DescribeStacksOutput::builder().stacks(stack.build()).build()
}

fn missing() -> DescribeStacksError {
    DescribeStacksError::generic(
        ErrorMetadata::builder()
            .code("ValidationError")
            .message("Stack with id batchgrid-dev-image does not exist")
            .build(),
    )
}

const BUILT: [(&str, &str); 3] = [("ImageId", "ami-0abc"), ("ImageVersion", "1.2.3"), ("ImageRevision", "abcdef0")];

#[tokio::test]
async fn an_image_of_this_version_lets_the_deploy_go_on() {
    let describe = mock!(Client::describe_stacks)
        .match_requests(|r| r.stack_name() == Some("batchgrid-dev-image"))
        .then_output(|| image_stack(StackStatus::CreateComplete, &BUILT));
    let deployer = deployer(&[&describe]);
    let found = check_image(&deployer, "dev", &environment(IMAGE_AMI), "1.2.3").await.expect("found");
    assert_eq!(
        found,
        Some(ImageFound {
            stack: "batchgrid-dev-image".into(),
            image_id: "ami-0abc".into(),
            revision: Some("abcdef0".into())
        })
    );
}

#[tokio::test]
async fn a_missing_image_stack_names_make_image() {
    let describe = mock!(Client::describe_stacks).then_error(missing);
    let deployer = deployer(&[&describe]);
    let error = check_image(&deployer, "dev", &environment(IMAGE_AMI), "1.2.3").await.expect_err("no image");
    let line = error.to_string();
    assert_eq!(
        line,
        "no image of batchgrid 1.2.3 for dev: stack batchgrid-dev-image does not exist; run `make image ENV=dev` first"
    );
}

#[tokio::test]
async fn an_image_of_another_version_is_not_used() {
    let describe = mock!(Client::describe_stacks).then_output(|| image_stack(StackStatus::UpdateComplete, &BUILT));
    let deployer = deployer(&[&describe]);
    let line = check_image(&deployer, "dev", &environment(IMAGE_AMI), "1.3.0").await.expect_err("old").to_string();
    assert!(line.contains("holds the image of batchgrid 1.2.3 (ami-0abc)"), "{line}");
    assert!(line.ends_with("run `make image ENV=dev` first") && !line.contains('\n'), "{line}");
    // An image stack from before images recorded their version is not trusted either.
    let unrecorded = mock!(Client::describe_stacks)
        .then_output(|| image_stack(StackStatus::CreateComplete, &[("ImageId", "ami-0abc")]));
    let deployer = self::deployer(&[&unrecorded]);
    let line = check_image(&deployer, "dev", &environment(IMAGE_AMI), "1.2.3").await.expect_err("unknown").to_string();
    assert!(line.contains("unrecorded version"), "{line}");
}

#[tokio::test]
async fn a_build_in_progress_or_failed_is_no_image() {
    for (status, expected) in [
        (StackStatus::CreateInProgress, "is CREATE_IN_PROGRESS (wait for the image build to finish)"),
        (StackStatus::RollbackComplete, "is ROLLBACK_COMPLETE with no image in it"),
    ] {
        let describe = mock!(Client::describe_stacks).then_output(move || image_stack(status.clone(), &[]));
        let deployer = deployer(&[&describe]);
        let line = check_image(&deployer, "dev", &environment(IMAGE_AMI), "1.2.3").await.expect_err("none").to_string();
        assert!(line.contains(expected), "{line}");
    }
}

#[tokio::test]
async fn a_fixed_ami_is_not_checked() {
    let describe = mock!(Client::describe_stacks).then_error(missing);
    let deployer = deployer(&[&describe]);
    let found = check_image(&deployer, "dev", &environment("ami-0123456789abcdef0"), "1.2.3").await.expect("fixed");
    assert_eq!(found, None);
    assert_eq!(describe.num_calls(), 0, "nothing asked");
}
