use super::*;
use crate::environment::load;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lookup(name: &str) -> Option<String> {
    (name == "PIPELINE_ID").then(|| "golden".to_owned())
}

fn rendered(name: &str) -> String {
    let env = load(&root().join("environments"), name, &lookup).expect("environment");
    render(&engine(&root().join("templates")).expect("engine"), name, &env).expect("render")
}

#[test]
fn subnets_quarter_the_vpc() {
    assert_eq!(quarter("10.40.0.0/16"), ["10.40.0.0/18", "10.40.64.0/18", "10.40.128.0/18", "10.40.192.0/18"]);
    assert_eq!(quarter("192.168.1.0/26"), ["192.168.1.0/28", "192.168.1.16/28", "192.168.1.32/28", "192.168.1.48/28"]);
}

#[test]
fn rendering_is_pure() {
    assert_eq!(rendered("prod"), rendered("prod"));
}

/// Every environment renders to its checked-in template; `UPDATE_GOLDEN=1` rewrites them.
#[test]
fn every_environment_matches_its_golden_template() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for name in ["local", "dev", "ci", "prod"] {
        let text = rendered(name);
        let path = golden_dir.join(format!("{name}.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden_dir).expect("mkdir");
            std::fs::write(&path, &text).expect("write golden");
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(text == expected, "{name} differs from {}; review and rerun with UPDATE_GOLDEN=1", path.display());
    }
}

/// The parked and resumed shapes checked in beside the environments' own renders: `dev` with
/// its serverless (Aurora cluster) database, `prod` with its RDS instance.
const SHAPED: [(&str, &str); 4] =
    [("dev-parked", "dev"), ("dev-resumed", "dev"), ("prod-parked", "prod"), ("prod-resumed", "prod")];

/// The snapshot the resumed goldens restore from (prod's; dev's is named the same way).
const PARKED_SNAPSHOT: &str = "batchgrid-prod-parked-1764561600";

fn rendered_shaped(golden: &str, name: &str) -> String {
    let env = load(&root().join("environments"), name, &lookup).expect("environment");
    let snapshot = PARKED_SNAPSHOT.replace("-prod-", &format!("-{name}-"));
    let shape =
        if golden.ends_with("-parked") { Shape::Parked } else { Shape::Resumed { snapshot: snapshot.as_str() } };
    render_shape(&engine(&root().join("templates")).expect("engine"), name, &env, shape).expect("render")
}

/// The parked and resumed shapes render to their checked-in templates; `UPDATE_GOLDEN=1`
/// rewrites them.
#[test]
fn parked_and_resumed_shapes_match_their_golden_templates() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (golden, name) in SHAPED {
        let text = rendered_shaped(golden, name);
        let path = golden_dir.join(format!("{golden}.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).expect("write golden");
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(text == expected, "{golden} differs from {}; review and rerun with UPDATE_GOLDEN=1", path.display());
    }
}

fn resources(template: &str) -> serde_yaml::Mapping {
    let parsed: serde_yaml::Value = serde_yaml::from_str(template).expect("YAML");
    parsed["Resources"].as_mapping().expect("resources").clone()
}

/// A parked stack holds nothing billed by the hour (no instance, group, database, NAT gateway
/// or address), and keeps its buckets, queues and log group exactly as the running stack
/// declares them: the same logical ids and bodies, so CloudFormation keeps the same buckets.
#[test]
fn a_parked_stack_keeps_its_data_as_declared_and_nothing_billed_by_the_hour() {
    for name in ["dev", "prod", "local"] {
        let running = resources(&rendered(name));
        let parked = resources(&rendered_shaped(&format!("{name}-parked"), name));
        let hourly = [
            "AWS::EC2::Instance",
            "AWS::AutoScaling::AutoScalingGroup",
            "AWS::RDS::DBInstance",
            "AWS::RDS::DBCluster",
            "AWS::EC2::NatGateway",
            "AWS::EC2::EIP",
        ];
        for (id, body) in &parked {
            let kind = body["Type"].as_str().unwrap_or_default();
            assert!(!hourly.contains(&kind), "{name}: parked stack keeps {id:?} ({kind})");
            assert_eq!(running.get(id), Some(body), "{name}: {id:?} is declared as in the running stack");
        }
        for id in ["RawBucket", "ResultsBucket", "InputQueue", "OutputQueue", "LogGroup"] {
            assert!(parked.contains_key(id), "{name}: parked stack keeps {id}");
        }
    }
}

/// A resumed stack is the running one with its database restored from the snapshot: only the
/// database differs, and it names the snapshot and none of what a restore refuses beside it.
#[test]
fn a_resumed_stack_restores_its_database_from_the_snapshot() {
    let running = resources(&rendered("prod"));
    let resumed = resources(&rendered_shaped("prod-resumed", "prod"));
    assert_eq!(running.keys().collect::<Vec<_>>(), resumed.keys().collect::<Vec<_>>());
    for (id, body) in &resumed {
        if id.as_str() != Some("Database") {
            assert_eq!(running.get(id), Some(body), "{id:?} is as in the running stack");
        }
    }
    let database = &resumed["Database"]["Properties"];
    assert_eq!(database["DBSnapshotIdentifier"].as_str(), Some(PARKED_SNAPSHOT));
    for refused in ["DBName", "MasterUsername", "StorageEncrypted"] {
        assert!(database.get(refused).is_none(), "{refused} beside DBSnapshotIdentifier");
    }
    assert_eq!(resumed["Database"]["DeletionPolicy"].as_str(), Some("Snapshot"), "prod still keeps a final snapshot");
}

/// A resumed serverless stack (dev) restores its Aurora cluster from the parked DB cluster
/// snapshot: only the cluster differs from the running stack, it names the snapshot and none of
/// what CloudFormation says not to give beside it (MasterUsername, StorageEncrypted of an
/// encrypted snapshot) or what a restore does not create (DatabaseName), and it keeps its
/// managed secret, scaling and protection settings.
#[test]
fn a_resumed_serverless_stack_restores_its_cluster_from_the_snapshot() {
    let running = resources(&rendered("dev"));
    let resumed = resources(&rendered_shaped("dev-resumed", "dev"));
    assert_eq!(running.keys().collect::<Vec<_>>(), resumed.keys().collect::<Vec<_>>());
    for (id, body) in &resumed {
        if id.as_str() != Some("AuroraCluster") {
            assert_eq!(running.get(id), Some(body), "{id:?} is as in the running stack");
        }
    }
    assert!(!resumed.contains_key("Database"), "no RDS instance besides the cluster");
    let cluster = &resumed["AuroraCluster"]["Properties"];
    assert_eq!(cluster["SnapshotIdentifier"].as_str(), Some("batchgrid-dev-parked-1764561600"));
    for refused in ["MasterUsername", "MasterUserPassword", "StorageEncrypted", "DatabaseName", "KmsKeyId"] {
        assert!(cluster.get(refused).is_none(), "{refused} beside SnapshotIdentifier");
    }
    let before = &running["AuroraCluster"]["Properties"];
    for kept in [
        "Engine",
        "EngineVersion",
        "ManageMasterUserPassword",
        "EnableIAMDatabaseAuthentication",
        "ServerlessV2ScalingConfiguration",
        "DeletionProtection",
        "DBSubnetGroupName",
        "VpcSecurityGroupIds",
    ] {
        assert_eq!(cluster.get(kept), before.get(kept), "{kept} as in the running stack");
    }
}

#[test]
fn hostile_values_cannot_change_the_structure() {
    let mut env = load(&root().join("environments"), "dev", &lookup).expect("environment");
    let hostile = [
        "a: b",
        "quote \" and ' here",
        "line\nbreak: x\n  - y",
        "{{name}} and {{> tags}}",
        "!Ref Vpc",
        "# not a comment",
    ];
    for (i, value) in hostile.iter().enumerate() {
        env.tags.insert(format!("Hostile{i}"), (*value).to_owned());
    }
    env.cost_centre = "cc: {{evil}}\n".to_owned();
    let text = render(&engine(&root().join("templates")).expect("engine"), "dev", &env).expect("render");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("still YAML");
    let tags = parsed["Resources"]["RawBucket"]["Properties"]["Tags"].as_sequence().expect("tags list").clone();
    for (i, value) in hostile.iter().enumerate() {
        let found = tags.iter().find(|t| t["Key"].as_str() == Some(&format!("Hostile{i}"))).expect("tag present");
        assert_eq!(found["Value"].as_str(), Some(*value), "value kept verbatim as one scalar");
    }
    let centre = tags.iter().find(|t| t["Key"].as_str() == Some("CostCentre")).expect("cost centre");
    assert_eq!(centre["Value"].as_str(), Some("cc: {{evil}}\n"));
    let resources = parsed["Resources"].as_mapping().expect("resources");
    let clean = serde_yaml::from_str::<serde_yaml::Value>(&rendered("dev")).expect("clean");
    assert_eq!(resources.len(), clean["Resources"].as_mapping().expect("resources").len(), "no resource added or lost");
}

#[test]
fn an_existing_network_replaces_the_created_one() {
    let mut env = load(&root().join("environments"), "dev", &lookup).expect("environment");
    env.network.existing = Some(crate::environment::ExistingNetwork {
        vpc_id: "vpc-0abc".into(),
        private_subnet_ids: vec!["subnet-01".into(), "subnet-02".into()],
    });
    let text = render(&engine(&root().join("templates")).expect("engine"), "dev", &env).expect("render");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    assert!(parsed["Resources"].get("Vpc").is_none() && parsed["Resources"].get("NatGateway").is_none());
    assert_eq!(parsed["Resources"]["WorkerSecurityGroup"]["Properties"]["VpcId"].as_str(), Some("vpc-0abc"));
}

/// cfn-lint on every golden template: no errors and no warnings. `make test` installs it.
#[test]
fn golden_templates_pass_cfn_lint() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let files: Vec<PathBuf> = ["local", "dev", "ci", "prod"]
        .into_iter()
        .chain(SHAPED.map(|(golden, _)| golden))
        .map(|n| golden_dir.join(format!("{n}.yaml")))
        .collect();
    assert_cfn_lint_clean(&files);
}

/// The Makefile installs the checkov version the tests expect.
#[test]
fn the_makefile_pins_the_checkov_the_tests_expect() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    let pinned = makefile.lines().find_map(|l| l.strip_prefix("CHECKOV_VERSION := ")).map(str::trim);
    assert_eq!(pinned, Some(crate::render::CHECKOV_VERSION));
}

/// checkov (pinned, from `make tools`) on every golden template: no failed check, and every
/// skipped one explained on its resource.
#[test]
fn golden_templates_pass_checkov() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let files: Vec<PathBuf> = ["local", "dev", "ci", "prod"]
        .into_iter()
        .chain(SHAPED.map(|(golden, _)| golden))
        .map(|n| golden_dir.join(format!("{n}.yaml")))
        .collect();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        crate::render::assert_checkov_skips_explained(&file.display().to_string(), &text);
    }
    crate::render::assert_checkov_clean(&files);
}

/// `grid.ami: image`: workers launch from the parameter `make image` writes, resolved by EC2 at
/// every launch; the manager's instance resolves it at deploy time. cfn-lint accepts both.
#[test]
fn the_built_image_is_read_from_its_parameter() {
    let mut env = load(&root().join("environments"), "dev", &lookup).expect("environment");
    env.grid.ami = crate::environment::IMAGE_AMI.into();
    let text = render(&engine(&root().join("templates")).expect("engine"), "dev", &env).expect("render");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let resources = &parsed["Resources"];
    let worker = &resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["ImageId"];
    assert_eq!(worker.as_str(), Some("resolve:ssm:/batchgrid-dev/image-id"));
    let manager = &resources["Manager"]["Properties"]["ImageId"];
    assert_eq!(manager.as_str(), Some("{{resolve:ssm:/batchgrid-dev/image-id}}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("image-ami.yaml");
    std::fs::write(&file, &text).expect("write");
    assert_cfn_lint_clean(&[file]);
}

/// The user data of a resource (`Fn::Base64: !Sub |` text), as rendered.
fn user_data(properties: &serde_yaml::Value) -> &str {
    let data = &properties["UserData"]["Fn::Base64"];
    let text = match data {
        serde_yaml::Value::Tagged(tagged) => tagged.value.as_str(),
        other => other.as_str(),
    };
    text.unwrap_or_else(|| panic!("no user data in {properties:?}"))
}

/// `grid.task_role_arn`: the worker role may assume exactly that role (no other `sts:` action,
/// no session tags), its user data names it, the manager's does not; without it neither
/// appears. The stack names its worker role for the task role's trust policy. cfn-lint and
/// checkov pass on the render with the role.
#[test]
fn a_task_role_is_assumable_only_when_named_and_only_that_one() {
    let templates = root().join("templates");
    let engine = engine(&templates).expect("engine");
    let mut env = load(&root().join("environments"), "dev", &lookup).expect("environment");
    let sts_statements = |text: &str| -> (Vec<serde_yaml::Value>, serde_yaml::Value) {
        let parsed: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
        let worker = &parsed["Resources"]["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
        let statements = worker.as_sequence().expect("statements").clone();
        let sts = statements.into_iter().filter(|s| format!("{:?}", s["Action"]).contains("sts:")).collect();
        (sts, parsed)
    };

    let plain = render(&engine, "dev", &env).expect("render");
    let (sts, parsed) = sts_statements(&plain);
    assert!(sts.is_empty(), "no role to assume, no sts: action: {sts:?}");
    let resources = &parsed["Resources"];
    assert!(!user_data(&resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]).contains("TASK_ROLE"));
    assert_eq!(
        parsed["Outputs"]["WorkerRoleArn"]["Value"],
        serde_yaml::from_str::<serde_yaml::Value>("!GetAtt WorkerRole.Arn").expect("tag")
    );

    let arn = "arn:aws:iam::123456789012:role/batch/tasks";
    env.grid.task_role_arn = Some(arn.to_owned());
    let with_role = render(&engine, "dev", &env).expect("render");
    let (sts, parsed) = sts_statements(&with_role);
    assert_eq!(sts.len(), 1, "{sts:?}");
    assert_eq!(sts[0]["Sid"].as_str(), Some("AssumeTaskRole"));
    assert_eq!(sts[0]["Effect"].as_str(), Some("Allow"));
    assert_eq!(sts[0]["Action"].as_str(), Some("sts:AssumeRole"), "only AssumeRole: no TagSession, no wildcard");
    assert_eq!(sts[0]["Resource"].as_str(), Some(arn), "that role and no other");
    let resources = &parsed["Resources"];
    let worker = user_data(&resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]);
    assert!(worker.lines().any(|l| l.trim() == format!("BATCHGRID_TASK_ROLE_ARN={arn}")), "{worker}");
    assert!(!user_data(&resources["Manager"]["Properties"]).contains("TASK_ROLE"), "no task runs on the manager");
    let without = plain.lines().count();
    assert_eq!(
        with_role.lines().count(),
        without + 7,
        "the statement, its comment and the user data line, nothing else"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dev-task-role.yaml");
    std::fs::write(&file, &with_role).expect("write");
    assert_cfn_lint_clean(std::slice::from_ref(&file));
    crate::render::assert_checkov_skips_explained("dev with a task role", &with_role);
    crate::render::assert_checkov_clean(&[file]);
}

/// `network.egress: public` (dev): no NAT gateway, address or private default route; the
/// workers launch in the public subnets with a public address, the manager too, neither
/// security group lets anything in, and the database stays in the private subnets. S3 traffic
/// keeps its gateway endpoint from both route tables. `nat` (ci) keeps today's layout.
#[test]
fn public_egress_drops_the_nat_gateway_and_keeps_the_database_private() {
    let parsed: serde_yaml::Value = serde_yaml::from_str(&rendered("dev")).expect("YAML");
    let resources = &parsed["Resources"];
    for gone in ["NatGateway", "NatAddress", "PrivateDefaultRoute"] {
        assert!(resources.get(gone).is_none(), "{gone} with public egress");
    }
    let reference = |value: &serde_yaml::Value| match value {
        serde_yaml::Value::Tagged(tagged) => tagged.value.as_str().map(str::to_owned),
        _ => None,
    };
    let refs = |list: &serde_yaml::Value| -> Vec<String> {
        list.as_sequence().expect("list").iter().filter_map(reference).collect()
    };
    let group = &resources["WorkerGroup"]["Properties"];
    assert_eq!(refs(&group["VPCZoneIdentifier"]), ["PublicSubnet1", "PublicSubnet2"]);
    let data = &resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"];
    assert_eq!(data["NetworkInterfaces"][0]["AssociatePublicIpAddress"].as_bool(), Some(true));
    assert!(data.get("SecurityGroupIds").is_none(), "groups go on the interface");
    let manager = &resources["Manager"]["Properties"];
    assert_eq!(manager["NetworkInterfaces"][0]["AssociatePublicIpAddress"].as_bool(), Some(true));
    assert_eq!(reference(&manager["NetworkInterfaces"][0]["SubnetId"]).as_deref(), Some("PublicSubnet1"));
    for group in ["WorkerSecurityGroup", "ManagerSecurityGroup"] {
        assert!(resources[group]["Properties"].get("SecurityGroupIngress").is_none(), "{group} lets nothing in");
    }
    assert_eq!(
        refs(&resources["DatabaseSubnetGroup"]["Properties"]["SubnetIds"]),
        ["PrivateSubnet1", "PrivateSubnet2"]
    );
    for subnet in ["PublicSubnet1", "PublicSubnet2"] {
        assert_eq!(resources[subnet]["Properties"]["MapPublicIpOnLaunch"].as_bool(), Some(false), "asked per launch");
    }
    let endpoint = &resources["S3GatewayEndpoint"]["Properties"]["RouteTableIds"];
    assert_eq!(refs(endpoint), ["PrivateRouteTable", "PublicRouteTable"]);

    let nat: serde_yaml::Value = serde_yaml::from_str(&rendered("ci")).expect("YAML");
    let resources = &nat["Resources"];
    assert!(resources.get("NatGateway").is_some() && resources.get("PrivateDefaultRoute").is_some());
    assert_eq!(
        refs(&resources["WorkerGroup"]["Properties"]["VPCZoneIdentifier"]),
        ["PrivateSubnet1", "PrivateSubnet2"]
    );
    assert!(resources["Manager"]["Properties"].get("NetworkInterfaces").is_none());
}

/// `analytics.provider: serverless` (dev): an Aurora PostgreSQL Serverless v2 cluster from 0
/// ACUs (auto-pause) to max_acu, encrypted, private, IAM auth and a managed secret; one
/// db.serverless instance; the workers' `rds-db:connect` names the cluster's resource id, and
/// the outputs and the manager's secret name the cluster. No RDS instance besides.
#[test]
fn serverless_analytics_is_an_aurora_cluster_that_pauses() {
    let text = rendered("dev");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let resources = &parsed["Resources"];
    assert!(resources.get("Database").is_none());
    let cluster = &resources["AuroraCluster"];
    assert_eq!(cluster["Type"].as_str(), Some("AWS::RDS::DBCluster"));
    let properties = &cluster["Properties"];
    assert_eq!(properties["Engine"].as_str(), Some("aurora-postgresql"));
    let scaling = &properties["ServerlessV2ScalingConfiguration"];
    assert_eq!(scaling["MinCapacity"].as_f64(), Some(0.0));
    assert_eq!(scaling["MaxCapacity"].as_f64(), Some(2.0));
    assert_eq!(scaling["SecondsUntilAutoPause"].as_u64(), Some(300));
    for flag in ["StorageEncrypted", "ManageMasterUserPassword", "EnableIAMDatabaseAuthentication"] {
        assert_eq!(properties[flag].as_bool(), Some(true), "{flag}");
    }
    assert_eq!(cluster["DeletionPolicy"].as_str(), Some("Delete"), "dev is not protected");
    let instance = &resources["AuroraInstance"]["Properties"];
    assert_eq!(instance["DBInstanceClass"].as_str(), Some("db.serverless"));
    assert_eq!(instance["PubliclyAccessible"].as_bool(), Some(false));
    assert!(text.contains("dbuser:${AuroraCluster.DBClusterResourceId}/batchgrid_worker"));
    assert!(text.contains("BATCHGRID_DATABASE_HOST=${AuroraCluster.Endpoint.Address}"));
    assert!(text.contains("BATCHGRID_DATABASE_SECRET_ARN=${AuroraCluster.MasterUserSecret.SecretArn}"));
    assert!(!text.contains("Database."), "nothing names the RDS instance");
    let outputs = &parsed["Outputs"];
    assert_eq!(outputs["DatabaseEndpoint"]["Value"]["Fn::GetAtt"][0].as_str(), Some("AuroraCluster"));
    assert_eq!(outputs["DatabaseSecretArn"]["Value"]["Fn::GetAtt"][0].as_str(), Some("AuroraCluster"));

    // Protected: deletion protection and a final snapshot of the cluster.
    let mut env = load(&root().join("environments"), "dev", &lookup).expect("environment");
    env.protected = true;
    env.analytics.deletion_protection = true;
    let protected = render(&engine(&root().join("templates")).expect("engine"), "dev", &env).expect("render");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&protected).expect("YAML");
    let cluster = &parsed["Resources"]["AuroraCluster"];
    assert_eq!(cluster["DeletionPolicy"].as_str(), Some("Snapshot"));
    assert_eq!(cluster["Properties"]["DeletionProtection"].as_bool(), Some(true));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dev-protected.yaml");
    std::fs::write(&file, &protected).expect("write");
    assert_cfn_lint_clean(std::slice::from_ref(&file));
    crate::render::assert_checkov_skips_explained("dev protected", &protected);
    crate::render::assert_checkov_clean(&[file]);
}
