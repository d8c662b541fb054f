//! Parking the grid between peaks on the local stack: deploy, run a job, park (the emulator then
//! holds the buckets, their objects and the parking record, and no instance, group or NAT
//! gateway of the grid), deploy again (the same buckets adopted), and the earlier job's status,
//! report and results come back through the API, and a new job runs.
//!
//! The local stack's analytics database is the test's PostgreSQL (`analytics.provider:
//! external`), which parking leaves alone: here the history survives because that database
//! does. The snapshot and restore of the stack's own RDS database, which the emulator cannot
//! exercise, are tested on scripted RDS answers (batchgrid-provision's `park` tests) and in
//! the rendered templates (the parked and resumed goldens, cfn-lint and checkov clean).

use std::path::Path;
use std::process::Command;

use crate::claims::{claims_job_split, generate, reference};
use crate::harness::{assert_same_tree, block_on};
use crate::local_stack::{LocalStack, REGION};

/// Runs `batchgrid ARGS` for the stack; returns stdout, failing with stderr.
fn cli(stack: &LocalStack, args: &[&str], place: bool) -> String {
    let mut command = stack.command();
    command.args(args);
    if place {
        command.arg("--templates").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"));
        command.args(stack.place_args());
    }
    let output = command.output().expect("run batchgrid");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// One EC2 query action against the emulator, its XML answer (no EC2 SDK in this crate: the
/// emulator reads the service and region from the credential scope and checks no signature).
fn ec2_query(endpoint: &str, action: &str) -> String {
    let scope = format!("Credential=testing/20260101/{REGION}/ec2/aws4_request, SignedHeaders=host, Signature=0");
    let output = Command::new("curl")
        .args(["-sS", "--fail", "-X", "POST", endpoint])
        .args(["-H", &format!("Authorization: AWS4-HMAC-SHA256 {scope}")])
        .args(["-d", &format!("Action={action}&Version=2016-11-15")])
        .output()
        .expect("run curl");
    assert!(output.status.success(), "{action}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Running or pending EC2 instances in the emulator.
fn live_instances(endpoint: &str) -> usize {
    let answer = ec2_query(endpoint, "DescribeInstances");
    answer.matches("<name>running</name>").count() + answer.matches("<name>pending</name>").count()
}

/// Every object key in `bucket`.
async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let listed = s3.list_objects_v2().bucket(bucket).send().await.expect("the bucket is there");
    listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

#[test]
fn a_parked_grid_keeps_its_data_and_resumes_with_its_history() {
    let mut stack = LocalStack::start(1);
    let dir = stack.dir.path().to_path_buf();
    let input = generate(&dir, 40_000);
    let expected = reference(&dir, &input);
    let job = dir.join("claims.yaml");
    std::fs::write(&job, claims_job_split(&dir, "lines: 20000")).expect("write job");
    let (code, report) = stack.submit_and_watch(&job, &dir.join("results"));
    assert_eq!(code, Some(0), "report: {report}");
    let job_id = report["job_id"].as_str().expect("job id").to_owned();
    let before = stack.outputs();
    let (raw, results) = (
        before["RawBucketName"].as_str().expect("raw bucket").to_owned(),
        before["ResultsBucketName"].as_str().expect("results bucket").to_owned(),
    );
    let group = before["WorkerGroupName"].as_str().expect("group").to_owned();
    let config = block_on(stack.moto.sdk_config(REGION));
    let s3 = aws_sdk_s3::Client::new(&config);
    let autoscaling = aws_sdk_autoscaling::Client::new(&config);
    let stored_before = block_on(keys(&s3, &results));
    assert!(stored_before.iter().any(|k| k.contains(&job_id)), "the job's results are in S3: {stored_before:?}");
    assert!(live_instances(&stack.moto.endpoint) >= 1, "the deployed grid has its manager instance");

    // Park: the processes standing in for the instances stop with them.
    stack.stop_processes();
    let parked = cli(&stack, &["park", "local"], true);
    assert!(parked.contains(&format!("kept buckets {raw} and {results}")), "{parked}");
    assert!(parked.contains("s3://") && parked.contains("batchgrid/parking.json"), "{parked}");

    let record = block_on(async {
        let object = s3.get_object().bucket(&results).key("batchgrid/parking.json").send().await.expect("record");
        object.body.collect().await.expect("body").into_bytes()
    });
    let record: serde_json::Value = serde_json::from_slice(&record).expect("record JSON");
    assert_eq!(record["state"], "parked", "{record}");
    assert_eq!((record["raw_bucket"].as_str(), record["results_bucket"].as_str()), (Some(&*raw), Some(&*results)));
    assert!(record["snapshot"].is_null(), "an external database has no snapshot: {record}");
    let stored_parked = block_on(keys(&s3, &results));
    for key in &stored_before {
        assert!(stored_parked.contains(key), "{key} kept while parked");
    }
    assert!(!block_on(keys(&s3, &raw)).is_empty(), "the raw input is kept");
    assert_eq!(live_instances(&stack.moto.endpoint), 0, "no instance of the grid while parked");
    assert!(!ec2_query(&stack.moto.endpoint, "DescribeNatGateways").contains("<state>available</state>"));
    let groups =
        block_on(autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(&group).send()).expect("groups");
    assert!(groups.auto_scaling_groups().is_empty(), "no worker group while parked");
    let outputs = cli(&stack, &["outputs", "local"], true);
    assert!(outputs.contains(&raw) && !outputs.contains("ManagerInstanceId"), "{outputs}");

    // Resume: the same buckets, the history and results back, new work runs.
    let resumed = cli(&stack, &["deploy", "local"], true);
    assert!(resumed.contains("resumed from parking"), "{resumed}");
    let after = stack.outputs();
    assert_eq!((after["RawBucketName"].as_str(), after["ResultsBucketName"].as_str()), (Some(&*raw), Some(&*results)));
    // The change set brings back what parking removed. (moto 5 does not create a resource again
    // once an earlier update removed it: its resource map keeps the deleted one. The processes
    // stand in for the instances here anyway.)
    for added in
        ["Manager (AWS::EC2::Instance)", "WorkerGroup (AWS::AutoScaling::AutoScalingGroup)", "Vpc (AWS::EC2::VPC)"]
    {
        assert!(resumed.contains(&format!("add      {added}")), "{added} comes back: {resumed}");
    }
    stack.start_processes(1);
    let status: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["status", &job_id, "--json"], false)).expect("status JSON");
    assert_eq!(status["state"], "completed", "{status}");
    let report: serde_json::Value =
        serde_json::from_str(&cli(&stack, &["report", &job_id, "--json"], false)).expect("report JSON");
    assert_eq!(report["report"]["job_id"], job_id.as_str(), "{report}");
    let downloaded = dir.join("after-resume");
    cli(&stack, &["results", &job_id, "--download", &downloaded.display().to_string()], false);
    assert_same_tree(&expected, &downloaded);
    let record = block_on(async {
        let object = s3.get_object().bucket(&results).key("batchgrid/parking.json").send().await.expect("record");
        object.body.collect().await.expect("body").into_bytes()
    });
    let record: serde_json::Value = serde_json::from_slice(&record).expect("record JSON");
    assert_eq!(record["state"], "resumed", "{record}");

    let (code, second) = stack.submit_and_watch(&job, &dir.join("results-2"));
    assert_eq!(code, Some(0), "a new job runs on the resumed grid: {second}");
    assert_same_tree(&expected, &dir.join("results-2"));
    let jobs: serde_json::Value = serde_json::from_str(&cli(&stack, &["status", "--json"], false)).expect("jobs JSON");
    assert_eq!(jobs.as_array().map(Vec::len), Some(2), "both runs in the history: {jobs}");
}
