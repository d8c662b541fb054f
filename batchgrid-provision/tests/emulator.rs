//! Deploy mechanics against the local AWS emulator: create, change, no change, teardown of
//! versioned buckets holding objects. (The emulator barely checks templates; cfn-lint and the
//! golden files do.)

use batchgrid_testkit::moto;
use std::path::Path;
use std::time::Duration;

use batchgrid_provision::deploy::{Buckets, DeployOutcome, DeployRequest, Deployer};
use batchgrid_provision::{aws, environment, render};

fn project() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn request(environments: &Path) -> DeployRequest {
    let env = environment::load(environments, "local", &|_| None).expect("local environment");
    let engine = render::engine(&project().join("templates")).expect("templates");
    DeployRequest {
        stack: render::stack_name("local", &env),
        template: render::render(&engine, "local", &env).expect("render"),
        tags: [("Environment".to_owned(), "local".to_owned())].into(),
        protected: env.protected,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_change_no_change_and_teardown_on_the_emulator() {
    let moto = moto::Moto::start();
    let config = moto.sdk_config("us-east-1").await;
    let deployer = Deployer::new(aws::cloudformation(&config), aws::s3(&config), Duration::from_millis(200));
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["base", "local"] {
        std::fs::copy(project().join(format!("environments/{name}.yaml")), dir.path().join(format!("{name}.yaml")))
            .expect("copy");
    }

    // 1. Create.
    let first = request(dir.path());
    let (outcome, outputs) = deployer.deploy(&first, &mut |_| true, &mut |_| {}).await.expect("first deploy");
    assert!(matches!(outcome, DeployOutcome::Applied(ref c) if !c.is_empty()), "{outcome:?}");
    for key in ["RawBucketName", "ResultsBucketName", "InputQueueUrl", "OutputQueueUrl", "WorkerGroupName"] {
        assert!(outputs.contains_key(key), "output {key} missing: {outputs:?}");
    }

    // 2. A changed value shows up in the change set and is applied.
    let local = dir.path().join("local.yaml");
    let text = std::fs::read_to_string(&local).expect("read");
    std::fs::write(&local, format!("{text}queues:\n  visibility_timeout_seconds: 120\n")).expect("write");
    let second = request(dir.path());
    let planned = deployer.diff(&second).await.expect("diff");
    assert!(planned.iter().any(|c| c.logical_id == "InputQueue" && c.action == "modify"), "{planned:?}");
    let (outcome, _) = deployer.deploy(&second, &mut |_| true, &mut |_| {}).await.expect("second deploy");
    assert!(
        matches!(outcome, DeployOutcome::Applied(ref c) if c.iter().any(|c| c.logical_id == "InputQueue")),
        "{outcome:?}"
    );

    // 3. Nothing changed: nothing to do, and that is success.
    let (outcome, _) =
        deployer.deploy(&second, &mut |_| panic!("nothing to confirm"), &mut |_| {}).await.expect("third deploy");
    assert_eq!(outcome, DeployOutcome::Unchanged);

    // 4. Teardown empties versioned buckets (versions and delete markers) and removes all.
    let s3 = aws::s3(&config);
    let raw = outputs["RawBucketName"].clone();
    // The emulator skips the template's versioning setting; turn it on as AWS would have.
    s3.put_bucket_versioning()
        .bucket(&raw)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    for body in ["one", "two"] {
        s3.put_object()
            .bucket(&raw)
            .key("jobs/x/input.csv")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put");
    }
    s3.delete_object().bucket(&raw).key("jobs/x/input.csv").send().await.expect("delete marker");
    let buckets = vec![raw.clone(), outputs["ResultsBucketName"].clone()];
    let done = deployer.teardown(&second.stack, &buckets, Buckets::Empty, &mut |_| {}).await.expect("teardown");
    let removed = done.removed;
    assert!(done.kept.is_empty());
    assert!(removed >= 3, "two versions and a delete marker removed, got {removed}");
    assert!(deployer.status(&second.stack).await.expect("status").is_none(), "no stack left");
    let left = s3.list_buckets().send().await.expect("list buckets");
    let names: Vec<&str> = left.buckets().iter().filter_map(|b| b.name()).collect();
    assert!(!names.contains(&raw.as_str()), "no bucket left: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_over_the_inline_limit_goes_through_the_bucket() {
    let moto = moto::Moto::start();
    let config = moto.sdk_config("us-east-1").await;
    let s3 = aws::s3(&config);
    s3.create_bucket().bucket("templates").send().await.expect("bucket");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(project().join("environments/base.yaml"), dir.path().join("base.yaml")).expect("copy");
    // Enough tags on every resource to pass 51,200 bytes.
    let tags: String = (0..40).map(|i| format!("  Team{i}: platform-engineering-{i}\n")).collect();
    let local = std::fs::read_to_string(project().join("environments/local.yaml")).expect("local");
    std::fs::write(dir.path().join("local.yaml"), format!("{local}template_bucket: templates\ntags:\n{tags}"))
        .expect("write");
    let big = request(dir.path());
    assert!(big.template.len() > batchgrid_provision::deploy::MAX_INLINE_TEMPLATE, "{} bytes", big.template.len());

    let inline_only = Deployer::new(aws::cloudformation(&config), aws::s3(&config), Duration::from_millis(200));
    let refused = inline_only.deploy(&big, &mut |_| true, &mut |_| {}).await.expect_err("no bucket, no deploy");
    assert!(refused.to_string().contains("template_bucket"), "{refused}");

    let deployer = inline_only.with_template_bucket(Some("templates".into()));
    let (outcome, _) = deployer.deploy(&big, &mut |_| true, &mut |_| {}).await.expect("deploy through the bucket");
    assert!(matches!(outcome, DeployOutcome::Applied(_)));
    let stored = s3.list_objects_v2().bucket("templates").send().await.expect("list");
    assert_eq!(stored.contents().len(), 1, "the template was uploaded once");
}
