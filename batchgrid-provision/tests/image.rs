//! The image stack against the local AWS emulator, as far as the emulator goes. moto has no
//! EC2 Image Builder: its CloudFormation skips the Image Builder resources and then fails the
//! change set on `!GetAtt Image.ImageId` ("references undefined resource Image"), so the full
//! stack cannot be deployed there. What can is the first step of `batchgrid image`: the stack
//! with only its deployment bucket, and the artifacts uploaded under `artifacts/VERSION/`.

use std::path::Path;
use std::time::Duration;

use batchgrid_provision::deploy::{DeployOutcome, DeployRequest, Deployer};
use batchgrid_provision::{aws, environment, image};
use batchgrid_testkit::moto;

fn project() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

async fn object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let object = s3.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("{key}: {e}"));
    object.body.collect().await.expect("body").into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_land_in_the_image_stacks_bucket_under_their_version() {
    let moto = moto::Moto::start();
    let config = moto.sdk_config("us-east-1").await;
    let deployer = Deployer::new(aws::cloudformation(&config), aws::s3(&config), Duration::from_millis(200));
    let env = environment::load(&project().join("environments"), "local", &|_| None).expect("local environment");
    let engine = image::engine(&project().join("templates")).expect("templates");

    // 1. The stack with its bucket only (the environment names no bucket of its own).
    let template =
        image::render_deployment_bucket(&engine, "local", &env).expect("render").expect("a bucket to create");
    let request = DeployRequest {
        stack: image::image_stack_name("local", &env),
        template,
        tags: [("Environment".to_owned(), "local".to_owned())].into(),
        protected: false,
    };
    assert_eq!(request.stack, "batchgrid-local-image");
    let (outcome, outputs) = deployer.deploy(&request, &mut |_| true, &mut |_| {}).await.expect("deploy the bucket");
    assert!(matches!(outcome, DeployOutcome::Applied(_)), "{outcome:?}");
    let bucket = outputs.get("DeploymentBucketName").expect("bucket output").clone();

    // 2. The artifacts: a binary, two units and a stray file that is not a unit.
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = dir.path().join("batchgrid");
    std::fs::write(&binary, b"\x7fELF not really").expect("binary");
    let units = dir.path().join("packaging/systemd");
    std::fs::create_dir_all(&units).expect("mkdir");
    std::fs::write(units.join("batchgrid-worker.service"), "[Unit]\nDescription=worker\n").expect("unit");
    std::fs::write(units.join("batchgrid-manager.service"), "[Unit]\nDescription=manager\n").expect("unit");
    std::fs::write(units.join("notes.txt"), "not a unit").expect("stray");
    let artifacts = image::collect_artifacts(&binary, &dir.path().join("packaging")).expect("artifacts");
    let s3 = aws::s3(&config);
    let keys = image::upload_artifacts(&s3, &bucket, "0.0.0-test", &artifacts).await.expect("upload");
    let expected = [
        "artifacts/0.0.0-test/batchgrid",
        "artifacts/0.0.0-test/defaults.env",
        "artifacts/0.0.0-test/systemd/batchgrid-manager.service",
        "artifacts/0.0.0-test/systemd/batchgrid-worker.service",
        "artifacts/0.0.0-test/sysusers.d/batchgrid.conf",
        "artifacts/0.0.0-test/nftables/batchgrid-task.nft",
    ];
    assert_eq!(keys, expected);
    let listed = s3.list_objects_v2().bucket(&bucket).prefix("artifacts/").send().await.expect("list");
    let mut stored: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    stored.sort_unstable();
    let mut sorted = expected;
    sorted.sort_unstable();
    assert_eq!(stored, sorted);
    assert_eq!(object(&s3, &bucket, expected[0]).await, b"\x7fELF not really");
    assert_eq!(object(&s3, &bucket, expected[1]).await, image::DEFAULT_CONFIG.as_bytes());

    // 3. Uploading the same version again installs exactly the new set: a dropped unit goes.
    std::fs::remove_file(units.join("batchgrid-manager.service")).expect("drop a unit");
    let artifacts = image::collect_artifacts(&binary, &dir.path().join("packaging")).expect("artifacts");
    image::upload_artifacts(&s3, &bucket, "0.0.0-test", &artifacts).await.expect("upload again");
    let listed = s3.list_objects_v2().bucket(&bucket).prefix("artifacts/0.0.0-test/").send().await.expect("list");
    assert!(
        !listed.contents().iter().any(|o| o.key() == Some(expected[2])),
        "the dropped unit is gone: {:?}",
        listed.contents()
    );
    assert_eq!(listed.contents().len(), expected.len() - 1);

    // 4. Another version has a prefix of its own.
    image::upload_artifacts(&s3, &bucket, "0.0.1", &artifacts).await.expect("upload a new version");
    let old = s3.list_objects_v2().bucket(&bucket).prefix("artifacts/0.0.0-test/").send().await.expect("list");
    assert_eq!(old.contents().len(), expected.len() - 1, "an earlier version's artifacts stay");
}
