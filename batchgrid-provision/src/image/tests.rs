use super::*;
use crate::environment::load;

/// The version and revision every golden image template is rendered with.
const VERSION: &str = "0.0.0-test";
const REVISION: &str = "0000000";
const ENVIRONMENTS: [&str; 4] = ["local", "dev", "ci", "prod"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn lookup(name: &str) -> Option<String> {
    (name == "PIPELINE_ID").then(|| "golden".to_owned())
}

fn environment(name: &str) -> Environment {
    load(&root().join("environments"), name, &lookup).expect("environment")
}

fn templates() -> Handlebars<'static> {
    engine(&root().join("templates")).expect("engine")
}

fn rendered_with(env: &Environment, version: &str, revision: &str) -> String {
    render_image(&templates(), "dev", env, version, revision).expect("render")
}

fn parse(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("YAML")
}

/// Every environment's image stack renders to its checked-in template; `UPDATE_GOLDEN=1`
/// rewrites them.
#[test]
fn every_environment_matches_its_golden_image_template() {
    let engine = templates();
    for name in ENVIRONMENTS {
        let text = render_image(&engine, name, &environment(name), VERSION, REVISION).expect("render");
        let path = golden_dir().join(format!("image-{name}.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).expect("write golden");
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(text == expected, "{name} differs from {}; review and rerun with UPDATE_GOLDEN=1", path.display());
    }
}

/// Every golden image template, and the bucket-only first deploy rendered into `dir`.
fn image_templates(dir: &Path) -> Vec<PathBuf> {
    let bucket_only = dir.join("image-bucket-only.yaml");
    let text = render_deployment_bucket(&templates(), "dev", &environment("dev")).expect("render").expect("bucket");
    std::fs::write(&bucket_only, text).expect("write");
    let mut files: Vec<PathBuf> = ENVIRONMENTS.iter().map(|n| golden_dir().join(format!("image-{n}.yaml"))).collect();
    files.push(bucket_only);
    files
}

/// cfn-lint on every golden image template, and on the bucket-only first deploy: no errors
/// and no warnings. `make test` installs it.
#[test]
fn image_templates_pass_cfn_lint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = image_templates(dir.path());
    crate::render::assert_cfn_lint_clean(&files);
}

/// checkov (pinned, from `make tools`) on every golden image template and on the bucket-only
/// first deploy: no failed check, and every skipped one explained on its resource.
#[test]
fn image_templates_pass_checkov() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = image_templates(dir.path());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        crate::render::assert_checkov_skips_explained(&file.display().to_string(), &text);
    }
    crate::render::assert_checkov_clean(&files);
}

#[test]
fn the_image_is_built_for_the_grids_architecture() {
    let arm = parse(&rendered_with(&environment("dev"), VERSION, REVISION));
    let recipe = &arm["Resources"]["ImageRecipe"]["Properties"];
    assert_eq!(
        recipe["ParentImage"].as_str(),
        Some("ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64")
    );
    let types = &arm["Resources"]["InfrastructureConfiguration"]["Properties"]["InstanceTypes"];
    assert_eq!(types, &parse("[m7g.large, c7g.large]"));

    let mut intel = environment("dev");
    intel.grid.instance_types = vec!["m7i.large".into(), "c6in.xlarge".into()];
    intel.image.build_instance_types = vec!["c7i.xlarge".into()];
    let intel = parse(&rendered_with(&intel, VERSION, REVISION));
    assert!(intel["Resources"]["ImageRecipe"]["Properties"]["ParentImage"]
        .as_str()
        .is_some_and(|p| p.ends_with("kernel-default-x86_64")));
    assert_eq!(intel["Resources"]["InfrastructureConfiguration"]["Properties"]["InstanceTypes"], parse("[c7i.xlarge]"));
}

#[test]
fn version_and_revision_are_tagged_and_checked_by_the_build() {
    let text = parse(&rendered_with(&environment("dev"), "1.2.3-rc.1", "abcdef0"));
    let resources = &text["Resources"];
    for (resource, tags) in [("Image", "Tags"), ("ImageRecipe", "AmiTags"), ("ImageIdParameter", "Tags")] {
        let tags = &resources[resource]["Properties"][tags];
        assert_eq!(tags["batchgrid:version"].as_str(), Some("1.2.3-rc.1"), "{resource}");
        assert_eq!(tags["batchgrid:revision"].as_str(), Some("abcdef0"), "{resource}");
    }
    assert_eq!(resources["InstallComponent"]["Properties"]["Version"].as_str(), Some("1.2.3"));
    assert_eq!(resources["ImageRecipe"]["Properties"]["Version"].as_str(), Some("1.2.3"));
    let sub = resources["InstallComponent"]["Properties"]["Data"].clone();
    let serde_yaml::Value::Tagged(sub) = sub else { panic!("Data is a !Sub: {sub:?}") };
    let document = sub.value[0].as_str().expect("document");
    let component: serde_yaml::Value = serde_yaml::from_str(document).expect("the component document is YAML");
    assert_eq!(component["phases"][1]["name"].as_str(), Some("validate"));
    assert!(document.contains("s3://${Bucket}/artifacts/${Version}/"), "{document}");
    assert!(document.contains("\"batchgrid ${Version} (rev ${Revision})\""), "{document}");
    assert!(!document.contains("systemctl enable") && !document.contains("systemctl start"), "the user data starts");
    assert_eq!(sub.value[1]["Version"].as_str(), Some("1.2.3-rc.1"));
    assert_eq!(sub.value[1]["Revision"].as_str(), Some("abcdef0"));
    assert_eq!(resources["ImageIdParameter"]["Properties"]["Name"].as_str(), Some("/batchgrid-dev/image-id"));
    assert_eq!(image_id_parameter("dev", &environment("dev")), "/batchgrid-dev/image-id");
    assert_eq!(image_stack_name("ci", &environment("ci")), "batchgrid-ci-golden-image");
}

/// Image Builder versions are immutable: a new revision must get a new component and recipe
/// (so CloudFormation replaces the image), while a tag change must not rebuild.
#[test]
fn names_change_with_what_is_built_and_only_with_it() {
    let env = environment("dev");
    let names = |text: &str| {
        let parsed = parse(text);
        let name = |id: &str| parsed["Resources"][id]["Properties"]["Name"].as_str().expect("name").to_owned();
        (name("InstallComponent"), name("ImageRecipe"))
    };
    let first = names(&rendered_with(&env, "0.1.0", "aaaaaaa"));
    assert!(first.0.starts_with("batchgrid-dev-image-install-") && first.1.starts_with("batchgrid-dev-image-"));
    assert_eq!(first, names(&rendered_with(&env, "0.1.0", "aaaaaaa")), "pure");
    let revised = names(&rendered_with(&env, "0.1.0", "bbbbbbb"));
    assert!(revised.0 != first.0 && revised.1 != first.1, "{first:?} {revised:?}");
    let mut retagged = env.clone();
    retagged.cost_centre = "research".into();
    assert_eq!(first, names(&rendered_with(&retagged, "0.1.0", "aaaaaaa")), "tags update in place");
}

#[test]
fn an_existing_bucket_is_used_instead_of_creating_one() {
    let mut env = environment("dev");
    env.image.deployment_bucket = "shared-artifacts".into();
    let text = parse(&rendered_with(&env, VERSION, REVISION));
    assert!(text["Resources"].get("DeploymentBucket").is_none());
    assert_eq!(text["Outputs"]["DeploymentBucketName"]["Value"].as_str(), Some("shared-artifacts"));
    assert_eq!(render_deployment_bucket(&templates(), "dev", &env).expect("render"), None, "nothing to create first");
}

#[test]
fn the_first_deploy_creates_only_the_bucket() {
    let text = render_deployment_bucket(&templates(), "dev", &environment("dev")).expect("render").expect("bucket");
    let parsed = parse(&text);
    let resources: Vec<&str> =
        parsed["Resources"].as_mapping().expect("resources").keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(resources, ["DeploymentBucket", "DeploymentBucketPolicy"]);
    let outputs: Vec<&str> =
        parsed["Outputs"].as_mapping().expect("outputs").keys().filter_map(|k| k.as_str()).collect();
    assert_eq!(outputs, ["DeploymentBucketName"]);
}

#[test]
fn hostile_tags_stay_values() {
    let mut env = environment("dev");
    env.tags.insert("Team".into(), "a: b\n  - {{evil}} # x".into());
    let text = parse(&rendered_with(&env, VERSION, REVISION));
    let tags = &text["Resources"]["Image"]["Properties"]["Tags"];
    assert_eq!(tags["Team"].as_str(), Some("a: b\n  - {{evil}} # x"));
    let tags = text["Resources"]["BuildRole"]["Properties"]["Tags"].as_sequence().expect("list").clone();
    assert!(tags.iter().any(|t| t["Value"].as_str() == Some("a: b\n  - {{evil}} # x")));
}

#[test]
fn versions_and_revisions_are_checked() {
    assert_eq!(semantic_version("0.1.0").expect("plain"), "0.1.0");
    assert_eq!(semantic_version("1.20.3-rc.1+build.5").expect("suffix"), "1.20.3");
    assert_eq!(semantic_version("01.2.0").expect("leading zero"), "1.2.0");
    for bad in ["", "1.2", "1.2.3.4", "v1.2.3", "1.2.3-", "1.2.3-$(reboot)", "1.2.3 x", "1.2.3-a/b"] {
        assert!(semantic_version(bad).is_err(), "{bad:?}");
    }
    assert!(check_revision("abcdef0").is_ok() && check_revision("unknown").is_ok());
    for bad in ["", "abc def", "abc'", "a\"b", "$(x)"] {
        assert!(check_revision(bad).is_err(), "{bad:?}");
    }
    let error = render_image(&templates(), "dev", &environment("dev"), "1.0", REVISION).expect_err("bad version");
    assert!(error.to_string().contains("version `1.0`"), "{error}");
}

#[test]
fn artifacts_are_the_binary_the_units_and_a_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = dir.path().join("batchgrid");
    std::fs::write(&binary, b"\x7fELF").expect("binary");
    let packaging = dir.path().join("packaging");
    let without = collect_artifacts(&binary, &packaging).expect("no packaging folder");
    let names: Vec<&str> = without.files.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["batchgrid", "defaults.env", "sysusers.d/batchgrid.conf", "nftables/batchgrid-task.nft"]);
    assert_eq!(without.files[1].source, Source::BuiltIn(DEFAULT_CONFIG));
    assert_eq!(without.files[2].source, Source::BuiltIn(DEFAULT_SYSUSERS), "the units' user, always");
    assert_eq!(without.files[3].source, Source::BuiltIn(DEFAULT_TASK_FIREWALL), "no metadata for tasks, always");
    assert_eq!(without.missing_units, Some(packaging.join("systemd")));

    std::fs::create_dir_all(packaging.join("systemd")).expect("mkdir");
    for file in ["batchgrid-worker.service", "batchgrid-manager.service", "README.md"] {
        std::fs::write(packaging.join("systemd").join(file), "[Unit]\n").expect("unit");
    }
    std::fs::write(packaging.join("defaults.env"), "BATCHGRID_LOG=debug\n").expect("config");
    std::fs::create_dir_all(packaging.join("sysusers.d")).expect("mkdir");
    std::fs::write(packaging.join("sysusers.d/batchgrid.conf"), DEFAULT_SYSUSERS).expect("sysusers");
    let with = collect_artifacts(&binary, &packaging).expect("packaging folder");
    let names: Vec<&str> = with.files.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "batchgrid",
            "defaults.env",
            "systemd/batchgrid-manager.service",
            "systemd/batchgrid-worker.service",
            "sysusers.d/batchgrid.conf",
            "nftables/batchgrid-task.nft"
        ]
    );
    assert_eq!(with.files[1].source, Source::File(packaging.join("defaults.env")));
    assert_eq!(with.files[4].source, Source::File(packaging.join("sysusers.d/batchgrid.conf")));
    assert_eq!(with.missing_units, None);

    let missing = collect_artifacts(&dir.path().join("nope"), &packaging).expect_err("no binary");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn binaries_are_recognised_by_architecture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elf = |machine: u16| {
        let mut header = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        header.resize(18, 0);
        header.extend(machine.to_le_bytes());
        header.resize(64, 0);
        header
    };
    for (machine, expected) in [(0xb7, Some(Architecture::Arm64)), (0x3e, Some(Architecture::X86_64)), (0x28, None)] {
        let path = dir.path().join(format!("bin-{machine}"));
        std::fs::write(&path, elf(machine)).expect("write");
        assert_eq!(binary_architecture(&path).expect("read"), expected, "{machine:#x}");
    }
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").expect("write");
    assert_eq!(binary_architecture(&script).expect("read"), None);
}

/// The built-in user is the shipped one: an image built without the packaging folder's file
/// gets the same user.
#[test]
fn the_built_in_user_matches_the_shipped_sysusers_file() {
    let entries = |text: &str| -> Vec<String> {
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
    };
    let shipped = std::fs::read_to_string(root().join("packaging").join(names::SYSUSERS)).expect("shipped file");
    assert_eq!(entries(&shipped), entries(DEFAULT_SYSUSERS));
    assert_eq!(
        entries(DEFAULT_SYSUSERS).len(),
        3,
        "the units' user, the tasks' user (and their groups), the first in the second's group"
    );
}

/// The built-in task firewall is the shipped one: an image built without the packaging
/// folder's file still keeps tasks from the instance metadata service.
#[test]
fn the_built_in_task_firewall_matches_the_shipped_rule() {
    let rules = |text: &str| -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
    };
    let shipped = std::fs::read_to_string(root().join("packaging").join(names::TASK_FIREWALL)).expect("shipped rule");
    assert_eq!(rules(&shipped), rules(DEFAULT_TASK_FIREWALL));
}

/// An image built without the packaging folder's defaults still checks the database's
/// certificate against the bundle the component installs, as the shipped defaults do.
#[test]
fn the_built_in_defaults_verify_the_database_against_the_installed_bundle() {
    let settings = |text: &str| -> Vec<String> {
        text.lines().filter(|l| l.starts_with("BATCHGRID_DATABASE_")).map(str::to_owned).collect()
    };
    let shipped = std::fs::read_to_string(root().join("packaging").join(names::CONFIG)).expect("shipped defaults");
    let expected = [
        "BATCHGRID_DATABASE_SSLMODE=verify-full".to_owned(),
        format!("BATCHGRID_DATABASE_SSLROOTCERT={DATABASE_CA_BUNDLE}"),
    ];
    assert_eq!(settings(&shipped), expected);
    assert_eq!(settings(DEFAULT_CONFIG), expected);
    let rendered = rendered_with(&environment("dev"), "1.2.3", "abcdef0");
    assert!(rendered.contains(&format!("{DATABASE_CA_URL}\n")), "the component downloads the bundle");
    assert!(rendered.contains(&format!("/tmp/rds-ca.pem {DATABASE_CA_BUNDLE}\n")), "and installs it there");
}
