//! The provisioning commands through the real binary against the local AWS emulator: deploy
//! saves outputs, a second deploy has nothing to do, diff prices the deployed template against
//! the rendered one, teardown removes the stack.

use crate::harness::{batchgrid_against, provision_command};
use batchgrid_testkit::moto;

#[test]
fn deploy_outputs_and_teardown_of_the_local_environment() {
    let emulator = moto::Moto::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        let output = batchgrid_against(&emulator.endpoint)
            .args(args)
            .arg("local")
            .arg("--environments")
            .arg(root.join("environments"))
            .arg("--templates")
            .arg(root.join("templates"))
            .arg("--out")
            .arg(dir.path().join("build"))
            .output()
            .expect("run batchgrid");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    let first = run(&["deploy"]);
    assert!(first.contains("applied"), "{first}");
    let saved = dir.path().join("build/local/outputs.json");
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).expect("outputs saved")).expect("json");
    assert!(outputs["InputQueueUrl"].as_str().is_some_and(|u| u.contains("InputQueue")), "{outputs}");
    let again = run(&["deploy"]);
    assert!(again.contains("up to date: nothing to do"), "{again}");
    // diff prices what is deployed (read back with GetTemplate) against the rendered template.
    let diff = run(&["diff"]);
    assert!(diff.contains("idle cost: $15.06 -> $15.06 a month (+$0.00)"), "{diff}");
    let cost = run(&["cost"]);
    assert!(cost.contains("deployed and idle: $15.06 a month") && cost.contains("us-east-1"), "{cost}");
    let listed = run(&["outputs"]);
    assert!(listed.contains("RawBucketName"), "{listed}");
    let gone = run(&["teardown"]);
    assert!(gone.contains("deleted"), "{gone}");
    assert!(!saved.exists(), "saved outputs go with the stack");
}

/// With `grid.ami: image` and no image of this version, deploy stops with one line naming
/// `make image` before it creates anything (the emulator has no Image Builder, so no image).
#[test]
fn deploy_without_the_image_stops_before_touching_the_stack() {
    let emulator = moto::Moto::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(root.join("environments/base.yaml"), dir.path().join("base.yaml")).expect("base");
    let local = std::fs::read_to_string(root.join("environments/local.yaml")).expect("local");
    let imaged: String =
        local.lines().filter(|l| !l.trim_start().starts_with("ami:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("imaged.yaml"), imaged).expect("env");
    let run = |command: &str| {
        provision_command(&emulator.endpoint, &[command, "imaged"], dir.path()).output().expect("run batchgrid")
    };
    for command in ["deploy", "diff"] {
        let output = run(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {stderr}");
        let expected = format!(
            "error: no image of batchgrid {} for imaged: stack batchgrid-imaged-image does not exist; run `make image ENV=imaged` first",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(stderr.trim_end(), expected, "{command}");
    }
    let status = run("outputs");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success() && stderr.contains("does not exist"), "no grid stack was created: {stderr}");
}

/// A protected environment's teardown needs its name, then deletes the stack (termination
/// protection off first) and leaves the retained buckets with their data.
#[test]
fn a_protected_teardown_keeps_the_buckets_and_their_data() {
    let emulator = moto::Moto::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(root.join("environments/base.yaml"), dir.path().join("base.yaml")).expect("base");
    let local = std::fs::read_to_string(root.join("environments/local.yaml")).expect("local");
    std::fs::write(dir.path().join("kept.yaml"), format!("{local}protected: true\n")).expect("env");
    let run = |args: &[&str]| provision_command(&emulator.endpoint, args, dir.path()).output().expect("run batchgrid");
    // moto creates the stack but has no UpdateTerminationProtection, the deploy's last step for
    // a protected environment (the teardown's use of it is tested on scripted answers).
    let deployed = run(&["deploy", "kept", "--yes"]);
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(deployed.status.success() || stderr.contains("UpdateTerminationProtection"), "{stderr}");
    let listed = run(&["outputs", "kept"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let outputs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("outputs JSON");
    let raw = outputs["RawBucketName"].as_str().expect("raw bucket").to_owned();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s3 = aws_sdk_s3::Client::new(&runtime.block_on(emulator.sdk_config("us-east-1")));
    runtime
        .block_on(s3.put_object().bucket(&raw).key("jobs/keep/input.csv").body(b"a,b\n".to_vec().into()).send())
        .expect("put");

    let refused = run(&["teardown", "kept"]);
    assert!(!refused.status.success(), "a protected teardown needs --confirm");
    let gone = run(&["teardown", "kept", "--confirm", "kept"]);
    let stdout = String::from_utf8_lossy(&gone.stdout);
    assert!(gone.status.success(), "{stdout}{}", String::from_utf8_lossy(&gone.stderr));
    assert!(stdout.contains("buckets stay with their data") && stdout.contains(&raw), "{stdout}");
    let stack = run(&["outputs", "kept"]);
    assert!(!stack.status.success(), "the stack is gone");
    let listed = runtime.block_on(s3.list_objects_v2().bucket(&raw).send()).expect("the bucket is still there");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["jobs/keep/input.csv"], "its data too");
}
