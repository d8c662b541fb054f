//! The conformance suites against S3 and SQS on the moto emulator, plus what only S3 has
//! (multipart uploads) and the request meter.

use std::sync::Arc;

use batchgrid_core::aws::{s3_client, sqs_client, RequestMeter};
use batchgrid_core::conformance;
use batchgrid_core::queue::{SqsQueue, TaskQueue};
use batchgrid_core::store::{ObjectStore, S3Store};
use batchgrid_testkit::moto::{create_queue_pair, Moto};

async fn bucket(moto: &Moto, meter: &RequestMeter, name: &str) -> aws_sdk_s3::Client {
    let client = s3_client(&moto.sdk_config("us-east-1").await, meter);
    client.create_bucket().bucket(name).send().await.expect("create bucket");
    client
}

#[tokio::test]
async fn s3_store_conforms() {
    let moto = Moto::start();
    let client = bucket(&moto, &RequestMeter::new(), "conformance").await;
    conformance::store::run_all(&S3Store::new(client.clone(), "conformance", "")).await;
    // The same again under a key prefix, which must stay invisible to callers.
    conformance::store::run_all(&S3Store::new(client, "conformance", "some/prefix/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_conforms() {
    let moto = Moto::start();
    let client = sqs_client(&moto.sdk_config("us-east-1").await, &RequestMeter::new());
    let mut next = 0;
    conformance::queue::run_all(|| {
        next += 1;
        let (client, name) = (client.clone(), format!("q{next}"));
        async move {
            let url = create_queue_pair(&client, &name, conformance::queue::MAX_RECEIVES).await;
            let queue: Arc<dyn TaskQueue> = Arc::new(SqsQueue::open(client, &url).await.expect("open queue"));
            queue
        }
    })
    .await;
}

/// Files above the threshold go up in parts (moto enforces S3's 5 MiB minimum part size) and
/// come back byte for byte.
#[tokio::test]
async fn large_files_upload_in_parts() {
    let moto = Moto::start();
    let meter = RequestMeter::new();
    let client = bucket(&moto, &meter, "multipart").await;
    let store = S3Store::new(client, "multipart", "").with_multipart(6 << 20, 5 << 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(12u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&source, &data).expect("write");
    assert_eq!(store.put_file("big/object", &source).await.expect("put"), data.len() as u64);
    let back = dir.path().join("back.bin");
    assert_eq!(store.get_to_file("big/object", &back).await.expect("get"), data.len() as u64);
    assert!(std::fs::read(&back).expect("read") == data, "the object comes back byte for byte");
    let parts = meter.snapshot().iter().find(|c| c.operation == "UploadPart").map(|c| c.count);
    assert_eq!(parts, Some(3), "12 MiB in 5 MiB parts is three parts: {:?}", meter.snapshot());
}

/// Every request is counted by service and operation.
#[tokio::test]
async fn the_meter_counts_every_request() {
    let moto = Moto::start();
    let meter = RequestMeter::new();
    let client = sqs_client(&moto.sdk_config("us-east-1").await, &meter);
    let url = create_queue_pair(&client, "metered", 3).await;
    let queue = SqsQueue::open(client, &url).await.expect("open");
    let before = meter.total_for("SQS");
    let bodies: Vec<String> = (0..25).map(|i| i.to_string()).collect();
    for batch in bodies.chunks(10) {
        queue.send_batch(batch).await.expect("send");
    }
    let sends = meter.snapshot().iter().find(|c| c.operation == "SendMessageBatch").map(|c| c.count);
    assert_eq!(sends, Some(3), "25 messages in batches of 10 are three requests");
    assert_eq!(meter.total_for("SQS") - before, 3);
}

/// `grid scale`, `pause` and `resume` change the group on the emulator's Auto Scaling API:
/// impossible bounds are refused with the group untouched, a pause holds it at zero with its
/// bounds kept on the group, and a resume restores them.
#[tokio::test]
async fn grid_control_changes_the_group_on_auto_scaling() {
    use batchgrid_core::aws::autoscaling_client;
    use batchgrid_core::scaling::control::{Bounds, ControlError, ScaleRequest};
    use batchgrid_core::scaling::AutoScalingGroup;

    let moto = Moto::start();
    let client = autoscaling_client(&moto.sdk_config("us-east-1").await, &RequestMeter::new());
    client
        .create_launch_configuration()
        .launch_configuration_name("workers")
        .image_id("ami-12345678")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("launch configuration");
    client
        .create_auto_scaling_group()
        .auto_scaling_group_name("grid-workers")
        .launch_configuration_name("workers")
        .min_size(0)
        .max_size(4)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("group");
    let group = AutoScalingGroup::new(client.clone(), "grid-workers");

    let scaled = group.scale(&ScaleRequest { min: Some(1), desired: Some(2), max: None }).await.expect("scale");
    assert_eq!(scaled, Bounds { min: 1, desired: 2, max: 4 });
    let view = group.view().await.expect("view");
    assert_eq!(view.bounds, scaled, "the group itself says so");
    assert_eq!(view.instances.len(), 2, "the emulator launched the desired instances: {view:?}");
    assert!(view.instances.iter().all(|i| i.instance_type == "t3.micro" && !i.protected), "{view:?}");

    let refused = group.scale(&ScaleRequest { min: None, desired: Some(5), max: None }).await;
    assert!(matches!(refused, Err(ControlError::Invalid(ref m)) if m.contains("--desired 5")), "{refused:?}");
    assert_eq!(group.view().await.expect("view").bounds, scaled, "a refused scale changes nothing");

    let kept = group.pause().await.expect("pause");
    assert_eq!(kept, Bounds { min: 1, desired: 1, max: 4 });
    let paused = group.view().await.expect("view");
    assert_eq!(paused.bounds, Bounds { min: 0, desired: 0, max: 0 });
    assert_eq!(paused.paused, Some(kept));
    let while_paused = group.scale(&ScaleRequest { desired: Some(1), ..ScaleRequest::default() }).await;
    assert!(matches!(while_paused, Err(ControlError::State(_))), "{while_paused:?}");

    assert_eq!(group.resume().await.expect("resume"), kept);
    let resumed = group.view().await.expect("view");
    assert_eq!((resumed.bounds, resumed.paused), (kept, None));
    assert!(matches!(group.resume().await, Err(ControlError::State(_))), "resuming twice is refused");
}

/// The EC2 Query client (signed form posts, XML answers) and the job report's pricing against
/// the emulator: the group's instances are described by EC2 with their type and zone, the
/// emulator's spot price history is read, and the report prices what ran.
#[tokio::test]
async fn worker_instances_are_described_and_priced_on_the_emulator() {
    use batchgrid_core::aws::autoscaling_client;
    use batchgrid_core::aws::ec2::Ec2Client;
    use batchgrid_core::instance::cost::usage;
    use batchgrid_core::report::{PricedBy, Purchase};

    const HOUR: i64 = 3_600_000;
    let moto = Moto::start();
    let config = moto.sdk_config("us-east-1").await;
    let meter = RequestMeter::new();
    let autoscaling = autoscaling_client(&config, &meter);
    autoscaling
        .create_launch_configuration()
        .launch_configuration_name("workers")
        .image_id("ami-12345678")
        .instance_type("m7g.xlarge")
        .send()
        .await
        .expect("launch configuration");
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name("grid-workers")
        .launch_configuration_name("workers")
        .min_size(0)
        .max_size(2)
        .desired_capacity(2)
        .availability_zones("us-east-1b")
        .send()
        .await
        .expect("group");
    let groups = autoscaling.describe_auto_scaling_groups().send().await.expect("groups");
    let ids: Vec<String> = groups
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| i.instance_id())
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2, "the emulator launched the group's instances");

    let ec2 = Ec2Client::new(&config, &meter).expect("EC2 client");
    let mut asked = ids.clone();
    asked.push("i-0000000000000dead".into());
    let described = ec2.describe_instances(&asked).await.expect("described");
    assert_eq!(described.len(), 2, "an id EC2 does not know is left out, not an error: {described:?}");
    assert!(
        described.iter().all(|i| i.instance_type == "m7g.xlarge" && i.zone.as_deref() == Some("us-east-1b") && !i.spot),
        "{described:?}"
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let history = ec2.spot_price_history("m7g.xlarge", "us-east-1b", now - HOUR, now).await.expect("history");
    assert!(!history.is_empty() && history.iter().all(|c| c.usd_per_hour > 0.0), "{history:?}");

    // A group without a mixed-instances policy buys on-demand, and EC2 agrees.
    let used = usage(&autoscaling, Some(&ec2), "grid-workers", "m7g.large", now - HOUR, now).await.expect("usage");
    assert_eq!(used.len(), 1, "{used:?}");
    let line = &used[0];
    assert_eq!((line.instance_type.as_str(), line.zone.as_deref()), ("m7g.xlarge", Some("us-east-1b")));
    assert_eq!((line.purchase, line.priced_by, line.instances), (Purchase::OnDemand, PricedBy::OnDemandList, 2));
    assert!((line.cost_usd.expect("priced") - 0.1632 * line.hours).abs() < 1e-9, "{line:?}");
    assert!(meter.total_for("EC2") >= 3, "EC2 requests are counted: {:?}", meter.snapshot());
}
