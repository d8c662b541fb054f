//! Every IAM role the templates create, held against a checked-in allowlist
//! (`tests/iam_allowlist.yaml`): each role's trusted service, managed policies, and each
//! statement's effect, actions, resources and condition. The test renders every environment
//! (and the variants that switch roles and policies on: `grid.shell_access`,
//! `grid.task_role_arn`, enhanced monitoring) plus the image stack, and fails on anything the allowlist does not name, so a
//! widening of a role shows in review as a change to that file. It also fails when something
//! the allowlist names is rendered by no environment, so the list stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use batchgrid_provision::{environment, image, render};
use serde::Deserialize;
use serde_yaml::Value;

const ENVIRONMENTS: [&str; 4] = ["local", "dev", "ci", "prod"];
/// The task role of the `grid.task_role_arn` variant, written `{task_role_arn}` in the allowlist.
const TASK_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/batch/tasks";

/// The allowlist file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowlist {
    roles: BTreeMap<String, AllowedRole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedRole {
    assumed_by: String,
    #[serde(default)]
    managed_policies: BTreeSet<String>,
    #[serde(default)]
    statements: BTreeMap<String, AllowedStatement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedStatement {
    effect: String,
    actions: BTreeSet<String>,
    resources: BTreeSet<String>,
    #[serde(default)]
    condition: Option<String>,
}

/// One rendered template, the name it is reported by, and its stack's name (written
/// `{stack}` in the allowlist, so one entry holds for every environment).
struct Rendered {
    label: String,
    text: String,
    stack: String,
}

fn project() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn lookup(name: &str) -> Option<String> {
    (name == "PIPELINE_ID").then(|| "pipeline-42".to_owned())
}

/// Every render whose roles the allowlist covers: each environment as shipped, the variants
/// that add to roles, and each environment's image stack.
fn renders() -> Vec<Rendered> {
    let templates = project().join("templates");
    let engine = render::engine(&templates).expect("templates");
    let image_engine = image::engine(&templates).expect("image templates");
    let mut out = Vec::new();
    for name in ENVIRONMENTS {
        let env = environment::load(&project().join("environments"), name, &lookup).expect("environment");
        let stack = render::stack_name(name, &env);
        let text = render::render(&engine, name, &env).expect("render");
        out.push(Rendered { label: name.to_owned(), text, stack: stack.clone() });
        let text = image::render_image(&image_engine, name, &env, "1.2.3", "abc1234").expect("render image");
        out.push(Rendered { label: format!("image-{name}"), text, stack });
    }
    let mut shell = environment::load(&project().join("environments"), "dev", &lookup).expect("dev");
    shell.grid.shell_access = true;
    out.push(Rendered {
        label: "dev with grid.shell_access".into(),
        text: render::render(&engine, "dev", &shell).expect("render"),
        stack: render::stack_name("dev", &shell),
    });
    let mut tasks = environment::load(&project().join("environments"), "dev", &lookup).expect("dev");
    tasks.grid.task_role_arn = Some(TASK_ROLE_ARN.to_owned());
    out.push(Rendered {
        label: "dev with grid.task_role_arn".into(),
        text: render::render(&engine, "dev", &tasks).expect("render"),
        stack: render::stack_name("dev", &tasks),
    });
    out
}

/// A compact, stable text for a rendered value: `!GetAtt InputQueue.Arn`,
/// `!Sub ${ResultsBucket.Arn}/jobs/*`, `{Fn::GetAtt: [Database, MasterUserSecret.SecretArn]}`.
fn canonical(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(", ")),
        Value::Mapping(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", canonical(k), canonical(v))).collect::<Vec<_>>().join(", ")
        ),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, canonical(&tagged.value)),
    }
}

/// A value that may be one item or a list of them, as IAM writes Action and Resource.
fn one_or_many(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().map(canonical).collect(),
        Value::Null => Vec::new(),
        other => vec![canonical(other)],
    }
}

/// What was rendered, gathered over every render: role -> (managed policies, sid -> statement).
#[derive(Default)]
struct Seen {
    managed: BTreeMap<String, BTreeSet<String>>,
    actions: BTreeSet<(String, String, String)>,
    resources: BTreeSet<(String, String, String)>,
}

#[test]
fn every_role_stays_within_the_checked_in_allowlist() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/iam_allowlist.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let allowlist: Allowlist = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    let mut roles_seen = BTreeSet::new();

    for Rendered { label, text, stack } in renders() {
        let one_or_many = |value: &Value| -> Vec<String> {
            one_or_many(value)
                .into_iter()
                .map(|s| s.replace(&stack, "{stack}").replace(TASK_ROLE_ARN, "{task_role_arn}"))
                .collect()
        };
        let parsed: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{label}: not YAML: {e}"));
        let Some(resources) = parsed["Resources"].as_mapping() else { panic!("{label}: no Resources") };
        for (id, resource) in resources {
            if resource["Type"].as_str() != Some("AWS::IAM::Role") {
                // Inline policies only live on roles here: a separate policy resource would
                // escape this test, so it is refused.
                let kind = resource["Type"].as_str().unwrap_or_default();
                if kind.starts_with("AWS::IAM::") && kind != "AWS::IAM::InstanceProfile" {
                    problems.push(format!("{label}: {} is a {kind}; the allowlist covers roles only", canonical(id)));
                }
                continue;
            }
            let role = canonical(id);
            roles_seen.insert(role.clone());
            let Some(allowed) = allowlist.roles.get(&role) else {
                problems.push(format!("{label}: role {role} is not in the allowlist"));
                continue;
            };
            let properties = &resource["Properties"];
            for trust in properties["AssumeRolePolicyDocument"]["Statement"].as_sequence().into_iter().flatten() {
                let service = canonical(&trust["Principal"]["Service"]);
                if service != allowed.assumed_by {
                    problems.push(format!(
                        "{label}: {role} is assumed by {service}, allowlist says {}",
                        allowed.assumed_by
                    ));
                }
            }
            for arn in one_or_many(&properties["ManagedPolicyArns"]) {
                if !allowed.managed_policies.contains(&arn) {
                    problems.push(format!("{label}: {role} has managed policy {arn}, not in the allowlist"));
                }
                seen.managed.entry(role.clone()).or_default().insert(arn);
            }
            for policy in properties["Policies"].as_sequence().into_iter().flatten() {
                for statement in policy["PolicyDocument"]["Statement"].as_sequence().into_iter().flatten() {
                    let Some(sid) = statement["Sid"].as_str() else {
                        problems
                            .push(format!("{label}: {role} has a statement without a Sid: {}", canonical(statement)));
                        continue;
                    };
                    let Some(rule) = allowed.statements.get(sid) else {
                        problems.push(format!("{label}: {role} statement {sid} is not in the allowlist"));
                        continue;
                    };
                    let effect = canonical(&statement["Effect"]);
                    if effect != rule.effect {
                        problems.push(format!("{label}: {role}.{sid} is {effect}, allowlist says {}", rule.effect));
                    }
                    let condition = statement.get("Condition").map(canonical);
                    if condition != rule.condition {
                        problems.push(format!(
                            "{label}: {role}.{sid} has condition {condition:?}, allowlist says {:?}",
                            rule.condition
                        ));
                    }
                    for action in one_or_many(&statement["Action"]) {
                        if !rule.actions.contains(&action) {
                            problems.push(format!("{label}: {role}.{sid} allows {action}, not in the allowlist"));
                        }
                        seen.actions.insert((role.clone(), sid.to_owned(), action));
                    }
                    if !statement["NotAction"].is_null() || !statement["NotResource"].is_null() {
                        problems.push(format!(
                            "{label}: {role}.{sid} uses NotAction/NotResource, which an allowlist cannot hold"
                        ));
                    }
                    for resource in one_or_many(&statement["Resource"]) {
                        if !rule.resources.contains(&resource) {
                            problems.push(format!("{label}: {role}.{sid} reaches {resource}, not in the allowlist"));
                        }
                        seen.resources.insert((role.clone(), sid.to_owned(), resource));
                    }
                }
            }
        }
    }

    // The other way: whatever the allowlist names must still be rendered somewhere.
    for (role, allowed) in &allowlist.roles {
        if !roles_seen.contains(role) {
            problems.push(format!("allowlist names role {role}, which no render creates"));
        }
        for arn in &allowed.managed_policies {
            if !seen.managed.get(role).is_some_and(|s| s.contains(arn)) {
                problems.push(format!("allowlist gives {role} managed policy {arn}, which no render attaches"));
            }
        }
        for (sid, rule) in &allowed.statements {
            for action in &rule.actions {
                if !seen.actions.contains(&(role.clone(), sid.clone(), action.clone())) {
                    problems.push(format!("allowlist gives {role}.{sid} {action}, which no render allows"));
                }
            }
            for resource in &rule.resources {
                if !seen.resources.contains(&(role.clone(), sid.clone(), resource.clone())) {
                    problems.push(format!("allowlist gives {role}.{sid} resource {resource}, which no render names"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "IAM roles differ from {} ({} problems): review the change, then edit the allowlist\n{}",
        path.display(),
        problems.len(),
        problems.join("\n")
    );
}

/// Workers may assume a role only when the environment names a task role, and then only it.
#[test]
fn workers_assume_no_role_unless_a_task_role_is_named() {
    for rendered in renders() {
        let parsed: Value = serde_yaml::from_str(&rendered.text).expect("YAML");
        let policies = &parsed["Resources"]["WorkerRole"]["Properties"]["Policies"];
        let assumable: Vec<String> = policies
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_sequence().cloned().unwrap_or_default())
            .filter(|s| one_or_many(&s["Action"]).iter().any(|a| a.starts_with("sts:")))
            .flat_map(|s| one_or_many(&s["Resource"]))
            .collect();
        let named = rendered.label.contains("task_role_arn");
        let expected: Vec<String> = if named { vec![TASK_ROLE_ARN.to_owned()] } else { vec![] };
        assert_eq!(assumable, expected, "{}", rendered.label);
    }
}

/// Workers get no `AmazonSSMManagedInstanceCore` (which reads every SSM parameter) unless the
/// environment asks for shells; none of the shipped environments does.
#[test]
fn workers_have_no_ssm_unless_shell_access_is_asked_for() {
    for rendered in renders() {
        let parsed: Value = serde_yaml::from_str(&rendered.text).expect("YAML");
        let managed = one_or_many(&parsed["Resources"]["WorkerRole"]["Properties"]["ManagedPolicyArns"]);
        let has_ssm = managed.iter().any(|arn| arn.contains("AmazonSSMManagedInstanceCore"));
        let worker = !parsed["Resources"]["WorkerRole"].is_null();
        let asked = rendered.label.contains("shell_access");
        assert_eq!(has_ssm, worker && asked, "{}: worker SSM policy {managed:?}", rendered.label);
    }
}
