use super::*;

fn project_environments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../environments")
}

fn with_pipeline(name: &str) -> Option<String> {
    (name == "PIPELINE_ID").then(|| "pipeline-42".to_owned())
}

#[test]
fn every_shipped_environment_loads() {
    for name in ["local", "dev", "ci", "prod"] {
        let env = load(&project_environments(), name, &with_pipeline).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(env.project, "batchgrid");
        if name == "ci" {
            assert_eq!(env.name_suffix, "pipeline-42", "${{PIPELINE_ID}} is expanded");
        }
        if name == "prod" {
            assert!(env.protected && env.analytics.deletion_protection && env.analytics.multi_az);
            assert_eq!(env.grid.instance_types, ["m7g.xlarge", "m6g.xlarge"], "lists are replaced, not appended");
            assert_eq!(env.queues.max_receives, 5, "unset keys keep the base's value");
            assert!(env.storage.access_logs && env.analytics.enhanced_monitoring_seconds == 60);
        }
        if name != "prod" {
            assert!(!env.storage.access_logs && env.analytics.enhanced_monitoring_seconds == 0);
        }
        assert!(!env.grid.shell_access, "no environment opens shells on workers by default");
        assert_eq!(env.grid.task_role_arn, None, "tasks get no AWS credentials unless a role is named");
    }
}

/// Writes base.yaml (the shipped one, optionally edited) and `test.yaml`, loads `test`.
fn load_with(base_edit: impl Fn(String) -> String, overrides: &str) -> Result<Environment, EnvironmentError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = std::fs::read_to_string(project_environments().join("base.yaml")).expect("base");
    std::fs::write(dir.path().join("base.yaml"), base_edit(base)).expect("write base");
    std::fs::write(dir.path().join("test.yaml"), overrides).expect("write env");
    load(dir.path(), "test", &with_pipeline).map_err(|mut e| {
        e.file = PathBuf::from(e.file.file_name().expect("file name"));
        e
    })
}

fn error(base_edit: impl Fn(String) -> String, overrides: &str) -> String {
    let line = load_with(base_edit, overrides).expect_err("must be rejected").to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let line = error(|b| b, "grid:\n  max_size: 4\n  maximum: 9\n");
    assert!(line.starts_with("test.yaml:3:3: grid.maximum: unknown field `maximum`"), "{line}");
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let line = error(|b| b, "queues:\n  retention_days: four\n");
    assert!(line.starts_with("test.yaml:2:3: queues.retention_days: invalid type"), "{line}");
}

#[test]
fn min_above_max_is_blamed_on_the_file_that_set_it() {
    let line = error(|b| b, "grid:\n  min_size: 20\n  max_size: 5\n");
    assert!(line.starts_with("test.yaml:2:3: grid.min_size: min_size 20 is above max_size 5"), "{line}");
    let in_base = error(|b| b.replace("desired_size: 0", "desired_size: 99"), "region: eu-west-1\n");
    assert!(in_base.starts_with("base.yaml:"), "the base set it: {in_base}");
    assert!(in_base.contains("grid.desired_size: desired_size 99 is outside"), "{in_base}");
}

#[test]
fn unset_variable_names_its_key() {
    let line = error(|b| b, "cost_centre: ${TEAM_BUDGET}\n");
    assert_eq!(line, "test.yaml:1:1: cost_centre: environment variable `TEAM_BUDGET` is not set");
}

#[test]
fn missing_base_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dev.yaml"), "region: eu-west-1\n").expect("write");
    let line = load(dir.path(), "dev", &with_pipeline).expect_err("no base").to_string();
    assert!(line.contains("base.yaml: (file): cannot read"), "{line}");
}

#[test]
fn impossible_values_are_rejected() {
    let cases = [
        ("network:\n  vpc_cidr: 10.40.0.1/16\n", "network.vpc_cidr"),
        ("network:\n  vpc_cidr: 10.40.0.0/8\n", "network.vpc_cidr"),
        ("queues:\n  retention_days: 15\n", "queues.retention_days"),
        ("logs:\n  retention_days: 8\n", "logs.retention_days"),
        ("protected: true\n", "analytics.deletion_protection"),
        ("grid:\n  instance_types: [large]\n", "grid.instance_types[0]"),
        ("name_suffix: Has Spaces\n", "name_suffix"),
        ("tags:\n  Project: other\n", "tags.Project"),
        ("template_bucket: My_Bucket\n", "template_bucket"),
        ("grid:\n  ami: ubuntu\n", "grid.ami"),
        ("grid:\n  tasks_per_instance: 0\n", "grid.tasks_per_instance"),
        ("analytics:\n  enhanced_monitoring_seconds: 2\n", "analytics.enhanced_monitoring_seconds"),
        ("grid:\n  shell_access: sometimes\n", "grid.shell_access"),
        ("storage:\n  access_logs: 1\n", "storage.access_logs"),
        ("grid:\n  target_completion: 30s\n", "grid.target_completion"),
        ("grid:\n  target_completion: 2days\n", "grid.target_completion"),
        ("grid:\n  scale_in_delay: 25h\n", "grid.scale_in_delay"),
        ("grid:\n  scale_in_delay: soon\n", "grid.scale_in_delay"),
        (
            "network:\n  existing: {vpc_id: vpc-12, private_subnet_ids: [subnet-1]}\n",
            "network.existing.private_subnet_ids",
        ),
    ];
    for (overrides, key) in cases {
        let line = error(|b| b, overrides);
        assert!(line.contains(&format!(": {key}: ")), "{overrides:?} -> {line}");
    }
}

#[test]
fn a_task_role_must_be_an_iam_role_arn_named_with_file_and_line() {
    let line =
        error(|b| b, "region: eu-west-1\ngrid:\n  max_size: 4\n  task_role_arn: arn:aws:iam::12345:user/tasks\n");
    assert!(
        line.starts_with("test.yaml:4:3: grid.task_role_arn: `arn:aws:iam::12345:user/tasks` is not an IAM role ARN"),
        "{line}"
    );
    let line = error(|b| b, "grid:\n  task_role_arn: [arn]\n");
    assert!(line.starts_with("test.yaml:2:3: grid.task_role_arn: invalid type"), "{line}");
    let arn = "arn:aws:iam::123456789012:role/batch/tasks";
    let env = load_with(|b| b, &format!("grid:\n  task_role_arn: {arn}\n")).expect("a role");
    assert_eq!(env.grid.task_role_arn.as_deref(), Some(arn));
    let unset = load_with(
        |b| b.replace("task_role_arn: null", &format!("task_role_arn: {arn}")),
        "grid:\n  task_role_arn: null\n",
    )
    .expect("an override unsets the base's role");
    assert_eq!(unset.grid.task_role_arn, None);
}

#[test]
fn cidrs_parse_strictly() {
    assert!(parse_cidr("10.0.0.0/16").is_ok());
    assert!(parse_cidr("10.0.0.0").is_err());
    assert!(parse_cidr("300.0.0.0/16").is_err());
    assert!(parse_cidr("10.0.0.0/27").is_err());
}

#[test]
fn the_image_section_has_defaults_and_is_strict() {
    let env = load_with(|b| b, "region: eu-west-1\n").expect("defaults");
    assert_eq!(env.image, ImageSettings::default());
    assert_eq!(env.build_instance_types(), ["m7g.large", "c7g.large"], "picked for the grid's arm64");
    let without = load_with(|b| b[..b.find("\nimage:").expect("image section")].to_owned() + "\n", "{}\n")
        .expect("a base without the image section");
    assert_eq!(without.image, ImageSettings::default());

    let line = error(|b| b, "image:\n  deployment_bucket: artifacts\n  instance_type: m7g.large\n");
    assert!(line.starts_with("test.yaml:3:3: image.instance_type: unknown field `instance_type`"), "{line}");
    let line = error(|b| b, "image:\n  build_instance_types: [m7g.large, m7i.large]\n");
    assert!(line.starts_with("test.yaml:2:"), "{line}");
    assert!(line.contains(": image.build_instance_types[1]: `m7i.large` is x86_64 but the grid is arm64"), "{line}");
    let line = error(|b| b, "image:\n  deployment_bucket: Not_A_Bucket\n");
    assert!(line.starts_with("test.yaml:2:3: image.deployment_bucket: "), "{line}");
    let named = load_with(|b| b, "image:\n  deployment_bucket: team-artifacts\n").expect("named bucket");
    assert_eq!(named.image.deployment_bucket, "team-artifacts");
}

#[test]
fn the_architecture_comes_from_the_instance_types() {
    for (kind, arch) in [
        ("m7g.large", Architecture::Arm64),
        ("c7gn.2xlarge", Architecture::Arm64),
        ("t4g.small", Architecture::Arm64),
        ("im4gn.large", Architecture::Arm64),
        ("hpc7g.4xlarge", Architecture::Arm64),
        ("a1.medium", Architecture::Arm64),
        ("g5g.xlarge", Architecture::Arm64),
        ("m7i.large", Architecture::X86_64),
        ("c6in.xlarge", Architecture::X86_64),
        ("g4dn.xlarge", Architecture::X86_64),
        ("m5.large", Architecture::X86_64),
        ("c7i-flex.large", Architecture::X86_64),
    ] {
        assert_eq!(Architecture::of_instance_type(kind), arch, "{kind}");
    }
    let intel =
        load_with(|b| b, "grid:\n  instance_types: [m7i.large, c7i.large]\nmanager:\n  instance_type: t3.small\n")
            .expect("x86 grid");
    assert_eq!(intel.architecture(), Architecture::X86_64);
    assert_eq!(intel.build_instance_types(), ["m7i.large", "c7i.large"]);
    let line = error(|b| b, "grid:\n  instance_types: [m7g.large, m7i.large]\n");
    assert!(line.starts_with("test.yaml:2:"), "{line}");
    assert!(line.contains(": grid.instance_types[1]: `m7i.large` is x86_64 but `m7g.large` is arm64"), "{line}");
}

#[test]
fn the_grid_can_run_the_built_image() {
    let env = load_with(|b| b, "grid:\n  ami: image\n").expect("image");
    assert_eq!(env.grid.ami, IMAGE_AMI);
    // The manager boots the same AMI, so it must share the grid's architecture.
    let line = error(|b| b, "grid:\n  ami: image\nmanager:\n  instance_type: t3.small\n");
    assert!(line.starts_with("test.yaml:4:3: manager.instance_type: `t3.small` is x86_64"), "{line}");
    let line = error(|b| b, "tags:\n  batchgrid:version: x\n");
    assert!(line.contains(": tags.batchgrid:version: "), "{line}");
}

#[test]
fn an_empty_environment_file_names_the_file() {
    for text in ["", "   \n\t\n", "# only a comment\n\n# and another\n", "---\n"] {
        let line = error(|b| b, text);
        assert!(line.starts_with("test.yaml: (file): is empty"), "{text:?} -> {line}");
    }
    // `{}` takes every default on purpose.
    let env = load_with(|b| b, "{}\n").expect("explicit defaults");
    assert!(!env.protected);
}

#[test]
fn a_stock_image_reference_is_refused_at_its_line() {
    let line = error(|b| b, "region: eu-west-1\ngrid:\n  ami: \"{{resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64}}\"\n");
    assert!(line.starts_with("test.yaml:3:3: grid.ami: "), "{line}");
    assert!(line.contains("stock image without batchgrid") && line.contains("make image"), "{line}");
    let fixed = load_with(|b| b, "grid:\n  ami: ami-0123456789abcdef0\n").expect("a fixed id");
    assert_eq!(fixed.grid.ami, "ami-0123456789abcdef0");
    let default = load_with(|b| b, "{}\n").expect("defaults");
    assert_eq!(default.grid.ami, IMAGE_AMI, "the grid runs the built image unless told otherwise");
}

#[test]
fn the_manager_sizing_settings_have_defaults_and_bounds() {
    let env = load_with(|b| b, "{}\n").expect("defaults");
    assert_eq!(env.grid.tasks_per_instance, 2);
    assert_eq!(env.grid.target_completion, Duration::from_secs(15 * 60));
    assert_eq!(env.grid.scale_in_delay, Duration::from_secs(10 * 60));
    let set = load_with(|b| b, "grid:\n  tasks_per_instance: 8\n  target_completion: 1h 30m\n  scale_in_delay: 0s\n")
        .expect("overridden");
    assert_eq!(set.grid.tasks_per_instance, 8);
    assert_eq!(set.grid.target_completion, Duration::from_secs(5400));
    assert_eq!(set.grid.scale_in_delay, Duration::ZERO);
    let line = error(|b| b, "grid:\n  target_completion: 30s\n");
    assert_eq!(line, "test.yaml:2:3: grid.target_completion: must be between 1m and 24h");
    let line = error(|b| b, "grid:\n  scale_in_delay: later\n");
    assert!(line.starts_with("test.yaml:2:3: grid.scale_in_delay: "), "{line}");
}

#[test]
fn durations_are_written_as_one_humantime_word() {
    for (seconds, text) in [(900, "15m"), (5400, "1h30m"), (0, "0s"), (90, "1m30s")] {
        let duration = Duration::from_secs(seconds);
        assert_eq!(duration_text(duration), text);
        assert_eq!(humantime::parse_duration(&duration_text(duration)).expect("parses back"), duration);
    }
}

/// The serverless and public-egress options: their own bounds, each error at its file, line
/// and key; `dev` uses both.
#[test]
fn serverless_and_public_egress_are_checked() {
    let dev = load(&project_environments(), "dev", &with_pipeline).expect("dev");
    assert!(dev.analytics.is_serverless() && dev.network.egress == Egress::Public);
    let prod = load(&project_environments(), "prod", &with_pipeline).expect("prod");
    assert!(prod.analytics.provider == PROVIDER_RDS && prod.network.egress == Egress::Nat, "defaults: rds and nat");
    let serverless = "analytics:\n  provider: serverless\n";
    let cases = [
        (format!("{serverless}  max_acu: 0.5\n"), "test.yaml:3:3: analytics.max_acu: "),
        (format!("{serverless}  max_acu: 2.25\n"), "test.yaml:3:3: analytics.max_acu: "),
        (format!("{serverless}  auto_pause_seconds: 60\n"), "test.yaml:3:3: analytics.auto_pause_seconds: "),
        (format!("{serverless}  backup_retention_days: 0\n"), "test.yaml:3:3: analytics.backup_retention_days: "),
        (format!("{serverless}  multi_az: true\n"), "test.yaml:3:3: analytics.multi_az: "),
        (format!("protected: true\n{serverless}"), "base.yaml"),
        (
            "analytics:\n  provider: aurora\n".to_owned(),
            "test.yaml:2:3: analytics.provider: `aurora`: use `rds`, `serverless`",
        ),
        ("network:\n  egress: direct\n".to_owned(), "test.yaml:2:3: network.egress: unknown variant `direct`"),
        (
            "network:\n  internet: false\n  s3_gateway_endpoint: false\n  egress: public\n".to_owned(),
            "test.yaml:4:3: network.egress: ",
        ),
        ("manager:\n  volume_gb: 4\n".to_owned(), "test.yaml:2:3: manager.volume_gb: "),
    ];
    for (overrides, expected) in cases {
        let line = error(|b| b, &overrides);
        assert!(line.contains(expected), "{overrides:?} -> {line}");
    }
    let line = error(|b| b, &format!("protected: true\n{serverless}"));
    assert!(
        line.contains("analytics.deletion_protection: a protected environment needs deletion protection"),
        "{line}"
    );
    let ok = load_with(|b| b, &format!("{serverless}  max_acu: 2.5\n  auto_pause_seconds: 3600\n")).expect("valid");
    assert_eq!((ok.analytics.max_acu, ok.analytics.auto_pause_seconds), (2.5, 3600));
}
