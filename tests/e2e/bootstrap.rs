//! What an instance runs at boot: the rendered user data writes the environment file the
//! systemd unit reads, and the service started that way resolves the stack's names. Each
//! environment's template is rendered, its user data run through CloudFormation's `Fn::Sub`
//! with made-up resource values, and the real binary's configuration loader is run on the result.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::batchgrid;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A value CloudFormation would substitute for `${name}`, made up but recognisable.
fn substitute(name: &str, resources: &serde_yaml::Mapping) -> String {
    let resource = name.split('.').next().unwrap_or(name);
    assert!(
        name.starts_with("AWS::") || resources.contains_key(resource),
        "user data refers to `${{{name}}}`, which is no resource of the template"
    );
    match name {
        "AWS::Region" => "eu-west-1".into(),
        "AWS::StackName" => "stack-under-test".into(),
        _ => format!("value-of-{name}"),
    }
}

/// `Fn::Sub` of a template string: every `${...}` replaced.
fn fn_sub(text: &str, resources: &serde_yaml::Mapping) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed reference") + start;
        out.push_str(&substitute(&rest[start + 2..end], resources));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The user data of a resource, after `Fn::Sub`.
fn user_data(template: &serde_yaml::Value, path: &[&str]) -> String {
    let resources = template["Resources"].as_mapping().expect("resources");
    let mut node = &template["Resources"];
    for key in path {
        node = &node[*key];
    }
    let serde_yaml::Value::Tagged(sub) = &node["UserData"]["Fn::Base64"] else {
        panic!("user data is not `Fn::Base64: !Sub`: {node:?}")
    };
    assert_eq!(sub.tag, "!Sub");
    fn_sub(sub.value.as_str().expect("a string"), resources)
}

/// The file a heredoc in the script writes: (path, KEY=VALUE pairs).
fn env_file(script: &str) -> (String, BTreeMap<String, String>) {
    let line = script.lines().find(|l| l.starts_with("cat > /etc/batchgrid/") && l.contains(".env")).expect("env file");
    let path = line.trim_start_matches("cat > ").split_whitespace().next().expect("path").to_owned();
    let body = script.split_once(&format!("{line}\n")).expect("heredoc").1;
    let values = body
        .lines()
        .take_while(|l| *l != "ENV")
        .map(|l| {
            let (key, value) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    (path, values)
}

/// The unit's environment files and its command's arguments after the binary.
fn unit(name: &str) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(root().join("packaging/systemd").join(name)).expect("unit file");
    let files = text.lines().filter_map(|l| l.strip_prefix("EnvironmentFile=")).map(str::to_owned).collect();
    let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/batchgrid"), "the image installs the binary there");
    (files, words.map(str::to_owned).collect())
}

/// Runs the unit's command with the environment the unit would give it, plus `--print-config`.
/// The image's RDS bundle (not on this machine) is stood in for by `bundle`, once the defaults
/// are shown to point where the image installs it.
fn print_config(unit_name: &str, script: &str, bundle: &Path) -> serde_json::Value {
    let (path, values) = env_file(script);
    let (files, args) = unit(unit_name);
    assert!(files.contains(&path), "{unit_name} reads {files:?}, the user data writes {path}");
    assert!(!script.contains("BATCHGRID_API_TOKEN=") && !script.contains("PASSWORD"), "no secret in user data");
    let defaults = std::fs::read_to_string(root().join("packaging/defaults.env")).expect("defaults");
    let mut command = batchgrid();
    command.env_clear().env("PATH", crate::harness::path_env()).env("AWS_EC2_METADATA_DISABLED", "true");
    for line in defaults.lines().filter(|l| !l.starts_with('#') && l.contains('=')) {
        let (key, value) = line.split_once('=').expect("KEY=VALUE");
        if key == "BATCHGRID_DATABASE_SSLROOTCERT" {
            assert_eq!(value, batchgrid_provision::image::DATABASE_CA_BUNDLE, "the bundle the image installs");
            command.env(key, bundle);
        } else {
            command.env(key, value);
        }
    }
    let output = command.envs(&values).args(&args).arg("--print-config").output().expect("run batchgrid");
    assert!(output.status.success(), "{unit_name}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON configuration")
}

#[test]
fn user_data_and_units_start_the_services_with_the_stacks_names() {
    let engine = batchgrid_provision::render::engine(&root().join("templates")).expect("engine");
    let ca = batchgrid_testkit::tls::TestCa::new("stand-in for the RDS bundle");
    let bundle = ca.cert();
    for name in ["dev", "ci", "prod"] {
        let lookup = |_: &str| Some("value".to_owned());
        let environment =
            batchgrid_provision::environment::load(&root().join("environments"), name, &lookup).expect("environment");
        let text = batchgrid_provision::render::render(&engine, name, &environment).expect("render");
        let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template YAML");

        let script = user_data(&template, &["WorkerLaunchTemplate", "Properties", "LaunchTemplateData"]);
        let worker = print_config("batchgrid-worker.service", &script, &bundle);
        assert_eq!(worker["grid"]["region"], "eu-west-1", "{name}: {worker}");
        assert_eq!(worker["grid"]["input_queue_url"], "value-of-InputQueue");
        assert_eq!(worker["grid"]["output_queue_url"], "value-of-OutputQueue");
        assert_eq!(worker["grid"]["results_bucket"], "value-of-ResultsBucket");
        // The RDS instance, or with analytics.provider serverless (dev) the Aurora cluster.
        let database_resource = if environment.analytics.is_serverless() { "AuroraCluster" } else { "Database" };
        assert_eq!(
            worker["grid"]["database"]["host"],
            format!("value-of-{database_resource}.Endpoint.Address").as_str(),
            "{name}"
        );
        let database = &worker["grid"]["database"];
        assert_eq!(database["auth"], "iam", "{name}: workers never read the master secret: {database}");
        assert_eq!(database["user"], "batchgrid_worker", "the role migration 0007 creates");
        assert_eq!(database["database"], "batchgrid", "the database the stack creates (DBName)");
        assert!(database.get("secret_arn").is_none() && !script.contains("MasterUserSecret"), "{script}");
        assert_eq!(database["sslmode"], "verify-full", "RDS's certificate and name are checked: {database}");
        assert_eq!(database["sslrootcert"].as_str(), bundle.to_str(), "against the image's bundle");
        assert_eq!(worker["instance_agent"], true);
        let group = template["Resources"]["WorkerGroup"]["Properties"]["AutoScalingGroupName"].as_str();
        assert_eq!(worker["group"].as_str(), group, "{name}: the agent protects instances of the stack's group");
        let hook = &template["Resources"]["WorkerGroup"]["Properties"]["LifecycleHookSpecificationList"][0];
        assert_eq!(
            worker["lifecycle_hook"].as_str(),
            hook["LifecycleHookName"].as_str(),
            "{name}: it completes the stack's hook"
        );
        assert_eq!(worker["scratch_dir"], "/var/lib/batchgrid/scratch");

        let script = user_data(&template, &["Manager", "Properties"]);
        let manager = print_config("batchgrid-manager.service", &script, &bundle);
        assert_eq!(manager["input_queue_url"], "value-of-InputQueue", "{name}: {manager}");
        assert!(script.contains("BATCHGRID_DATABASE_SECRET_ARN="), "the manager owns the database: {script}");
        assert!(script.contains("BATCHGRID_DATABASE_NAME=batchgrid"), "{script}");
        assert_eq!(manager["api_token"]["secret_arn"], "value-of-ApiToken", "the token comes from its secret");
        assert_eq!(manager["listen"], "127.0.0.1:8080", "private: reached through an SSM port forward");
        assert_eq!(manager["group"].as_str(), group, "{name}: instance-hours come from the stack's group");
        let first_type = &environment.grid.instance_types[0];
        assert_eq!(manager["instance_type"].as_str(), Some(first_type.as_str()));
        let sizing = &manager["autoscale"];
        assert_eq!(sizing["tasks_per_instance"], environment.grid.tasks_per_instance, "{name}: {manager}");
        let text = |d| humantime::format_duration(d).to_string();
        assert_eq!(sizing["target_completion"].as_str(), Some(text(environment.grid.target_completion).as_str()));
        assert_eq!(sizing["scale_in_delay"].as_str(), Some(text(environment.grid.scale_in_delay).as_str()));
        // Well under Aurora's 5 minutes without a connection, so a quiet manager lets it pause.
        assert_eq!(manager["database_idle_timeout"], "1m", "{name}: {manager}");
        assert_eq!(manager["quiet_horizon"], "1m", "{name}: {manager}");
    }
}

/// shellcheck on the script every instance runs at boot, per environment and role, after
/// `Fn::Sub` (`make test` installs shellcheck).
#[test]
fn user_data_passes_shellcheck() {
    use std::io::Write;
    let engine = batchgrid_provision::render::engine(&root().join("templates")).expect("engine");
    for name in ["local", "dev", "ci", "prod"] {
        let lookup = |_: &str| Some("value".to_owned());
        let environment =
            batchgrid_provision::environment::load(&root().join("environments"), name, &lookup).expect("environment");
        let text = batchgrid_provision::render::render(&engine, name, &environment).expect("render");
        let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template YAML");
        for (role, path) in [
            ("worker", &["WorkerLaunchTemplate", "Properties", "LaunchTemplateData"][..]),
            ("manager", &["Manager", "Properties"][..]),
        ] {
            let script = user_data(&template, path);
            let mut child = std::process::Command::new("shellcheck")
                .arg("-")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run shellcheck ({e}): install it with `apt-get install -y shellcheck` (make test does)"
                    )
                });
            child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write the script");
            let output = child.wait_with_output().expect("shellcheck");
            assert!(
                output.status.success(),
                "{name} {role} user data:\n{script}\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
    }
}

/// The manager's user data carries the environment's sizing settings as humantime words.
#[test]
fn the_managers_user_data_carries_the_sizing_settings() {
    let engine = batchgrid_provision::render::engine(&root().join("templates")).expect("engine");
    let lookup = |_: &str| Some("value".to_owned());
    let environment =
        batchgrid_provision::environment::load(&root().join("environments"), "dev", &lookup).expect("environment");
    let text = batchgrid_provision::render::render(&engine, "dev", &environment).expect("render");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template YAML");
    let (_, values) = env_file(&user_data(&template, &["Manager", "Properties"]));
    assert_eq!(values.get("BATCHGRID_TASKS_PER_INSTANCE").map(String::as_str), Some("2"));
    assert_eq!(values.get("BATCHGRID_TARGET_COMPLETION").map(String::as_str), Some("15m"));
    assert_eq!(values.get("BATCHGRID_SCALE_IN_DELAY").map(String::as_str), Some("10m"));
    let (_, worker) = env_file(&user_data(&template, &["WorkerLaunchTemplate", "Properties", "LaunchTemplateData"]));
    assert!(!worker.contains_key("BATCHGRID_TARGET_COMPLETION"), "the workers do not size the group");
}

/// `grid.task_role_arn` reaches the worker as its unit would start it (user data, environment
/// file, `BATCHGRID_TASK_ROLE_ARN`), and the manager not at all; without it the worker has none.
#[test]
fn a_task_role_reaches_the_worker_through_its_user_data() {
    let engine = batchgrid_provision::render::engine(&root().join("templates")).expect("engine");
    let lookup = |_: &str| Some("value".to_owned());
    let mut environment =
        batchgrid_provision::environment::load(&root().join("environments"), "dev", &lookup).expect("environment");
    let worker_path = ["WorkerLaunchTemplate", "Properties", "LaunchTemplateData"];
    let ca = batchgrid_testkit::tls::TestCa::new("stand-in for the RDS bundle");
    let bundle = ca.cert();
    let plain = batchgrid_provision::render::render(&engine, "dev", &environment).expect("render");
    let template: serde_yaml::Value = serde_yaml::from_str(&plain).expect("template YAML");
    let worker = print_config("batchgrid-worker.service", &user_data(&template, &worker_path), &bundle);
    assert!(worker["task_role_arn"].is_null(), "no role named, none used: {worker}");

    let arn = "arn:aws:iam::123456789012:role/batch/tasks";
    environment.grid.task_role_arn = Some(arn.to_owned());
    let text = batchgrid_provision::render::render(&engine, "dev", &environment).expect("render");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template YAML");
    let worker = print_config("batchgrid-worker.service", &user_data(&template, &worker_path), &bundle);
    assert_eq!(worker["task_role_arn"].as_str(), Some(arn), "{worker}");
    let (_, manager) = env_file(&user_data(&template, &["Manager", "Properties"]));
    assert!(!manager.contains_key("BATCHGRID_TASK_ROLE_ARN"), "no task runs on the manager");
}

/// A verifying mode without a readable bundle stops the service at startup, naming the
/// setting; nothing falls back to another trust store. `disable` (the local stack) needs none.
#[test]
fn a_verifying_mode_without_a_readable_bundle_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.path().join("missing.pem");
    let run = |mode: &str, root_cert: Option<&Path>| {
        let mut command = batchgrid();
        command
            .env_clear()
            .env("PATH", crate::harness::path_env())
            .env("BATCHGRID_REGION", "eu-west-1")
            .env("BATCHGRID_RAW_BUCKET", "raw")
            .env("BATCHGRID_RESULTS_BUCKET", "results")
            .env("BATCHGRID_INPUT_QUEUE_URL", "http://queue/in")
            .env("BATCHGRID_OUTPUT_QUEUE_URL", "http://queue/out")
            .env("BATCHGRID_DATABASE_HOST", "db.example")
            .env("BATCHGRID_DATABASE_SECRET_ARN", "arn:secret")
            .env("BATCHGRID_DATABASE_SSLMODE", mode);
        if let Some(path) = root_cert {
            command.env("BATCHGRID_DATABASE_SSLROOTCERT", path);
        }
        command.args(["worker", "--print-config"]).output().expect("run batchgrid")
    };
    for (mode, root_cert, names) in [
        ("verify-full", None, vec!["BATCHGRID_DATABASE_SSLROOTCERT", "verify-full"]),
        ("verify-ca", None, vec!["BATCHGRID_DATABASE_SSLROOTCERT", "verify-ca"]),
        ("verify-full", Some(missing.as_path()), vec!["BATCHGRID_DATABASE_SSLROOTCERT", "missing.pem"]),
        ("verify-full", Some(empty.as_path()), vec!["BATCHGRID_DATABASE_SSLROOTCERT", "no PEM certificate"]),
    ] {
        let output = run(mode, root_cert);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{mode} {root_cert:?} started: {}", String::from_utf8_lossy(&output.stdout));
        for name in names {
            assert!(stderr.contains(name), "{mode} {root_cert:?}: the error names {name}: {stderr}");
        }
    }
    let output = run("disable", None);
    assert!(output.status.success(), "disable needs no bundle: {}", String::from_utf8_lossy(&output.stderr));
}
