//! Task roles (`grid.task_role_arn`): a worker with `BATCHGRID_TASK_ROLE_ARN` assumes the role
//! through STS (the moto emulator's here) and gives its tasks that session's credentials,
//! never its own; without them a task does not run.

use std::collections::BTreeMap;

use batchgrid_testkit::Moto;

use crate::harness::{block_on, run_job_with_env, write_lines};

const ROLE: &str = "arn:aws:iam::123456789012:role/batchgrid-test-tasks";
const REGION: &str = "eu-west-1";
/// The worker's own credentials, which no task may see.
const WORKER_KEY: &str = "worker-key-marker";
const WORKER_SECRET: &str = "worker-secret-marker";

/// A job of `tasks` one-line tasks whose command dumps its environment, with a stage `env`
/// that tries to replace the role's credentials and region.
fn env_dump_job(dir: &std::path::Path, tasks: usize, extra: &str) -> String {
    write_lines(&dir.join("input.txt"), tasks);
    format!(
        "name: task-role\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: [sh, -c, 'touch {ran}; env > \"$1/env.txt\"', \"{{input}}\", \"{{output}}\"]\n    env:\n      AWS_ACCESS_KEY_ID: smuggled-key\n      AWS_SESSION_TOKEN: smuggled-token\n      AWS_REGION: smuggled-region\n      STAGE_SETTING: kept\n{extra}output:\n  path: {output}\nretry:\n  max_attempts: 1\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
        ran = dir.join("ran").display(),
    )
}

/// The worker's environment: its own (dummy) keys, the emulator, the task role.
fn worker_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", WORKER_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", WORKER_SECRET.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("BATCHGRID_REGION", REGION.to_owned()),
        ("BATCHGRID_TASK_ROLE_ARN", ROLE.to_owned()),
    ]
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Who STS (the emulator) says the holder of these keys is.
async fn caller_arn(endpoint: &str, key: &str, secret: &str, token: Option<&str>) -> String {
    let credentials =
        aws_sdk_sts::config::Credentials::new(key, secret, token.map(str::to_owned), None, "task-role-test");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    let identity = aws_sdk_sts::Client::new(&config).get_caller_identity().send().await.expect("GetCallerIdentity");
    identity.arn.expect("an ARN")
}

/// Every task sees the assumed role's credentials (one session for all of them, which STS
/// knows as the role's) and the grid's region; the worker's own keys and variables, and a
/// stage `env` that tries to replace them, do not get through.
#[test]
fn tasks_get_the_task_roles_credentials_and_never_the_workers() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let job = env_dump_job(dir.path(), 3, "");
    let env = worker_env(&moto.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let result = run_job_with_env(dir.path(), &job, &["--workers", "1"], &env);
    assert_eq!(result.code, Some(0), "report: {}\nstderr: {}", result.report, result.stderr);

    let dumps: Vec<BTreeMap<String, String>> = ["000000", "000001", "000002"]
        .iter()
        .map(|task| {
            let path = dir.path().join("out").join(task).join("env.txt");
            parse_env(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        })
        .collect();
    let first = &dumps[0];
    let key = first.get("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID").clone();
    let secret = first.get("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY").clone();
    let token = first.get("AWS_SESSION_TOKEN").expect("AWS_SESSION_TOKEN").clone();
    assert!(
        ![WORKER_KEY, "smuggled-key"].contains(&key.as_str()),
        "the role's key, not the worker's or the job's: {key}"
    );
    assert_ne!(secret, WORKER_SECRET);
    assert!(!token.is_empty() && token != "smuggled-token", "a session token: {token}");
    for dump in &dumps {
        assert_eq!(dump.get("AWS_REGION").map(String::as_str), Some(REGION), "{dump:?}");
        assert_eq!(dump.get("AWS_DEFAULT_REGION").map(String::as_str), Some(REGION), "{dump:?}");
        assert_eq!(dump.get("STAGE_SETTING").map(String::as_str), Some("kept"), "the rest of the stage's env stays");
        assert_eq!(dump.get("AWS_ACCESS_KEY_ID"), Some(&key), "one session serves every task of the worker");
        let aws: Vec<&String> = dump.keys().filter(|k| k.starts_with("AWS_")).collect();
        assert_eq!(
            aws,
            ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"],
            "no other AWS_ variable of the worker's (endpoint, metadata switch): {dump:?}"
        );
        for value in dump.values() {
            assert!(
                !value.contains(WORKER_KEY) && !value.contains(WORKER_SECRET),
                "the worker's keys leaked: {dump:?}"
            );
        }
        assert!(!dump.contains_key("BATCHGRID_TASK_ROLE_ARN"), "the worker's settings stay the worker's");
    }

    // STS knows the task's keys as a session of the role, named after the worker; the worker's
    // own keys are someone else.
    let endpoint = moto.endpoint.clone();
    let (task, worker) = block_on(async move {
        let task = caller_arn(&endpoint, &key, &secret, Some(&token)).await;
        let worker = caller_arn(&endpoint, WORKER_KEY, WORKER_SECRET, None).await;
        (task, worker)
    });
    assert!(
        task.starts_with("arn:aws:sts::123456789012:assumed-role/batchgrid-test-tasks/batchgrid-"),
        "the task acts as the role: {task}"
    );
    assert!(!worker.contains("assumed-role"), "the worker's own identity is not the role's: {worker}");
}

/// When the role cannot be assumed (STS unreachable), the task fails with an error naming the
/// role, and its command never starts: not with the worker's credentials, not with none.
#[test]
fn a_task_whose_role_cannot_be_assumed_does_not_run() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let dir = tempfile::tempdir().expect("temp dir");
    let job = env_dump_job(dir.path(), 1, "");
    let env = worker_env(&format!("http://{closed}"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let result = run_job_with_env(dir.path(), &job, &["--workers", "1"], &env);
    assert_eq!(result.code, Some(1), "the job fails; stderr: {}", result.stderr);
    let error = result.report["failures"][0]["error"].as_str().expect("a failure").to_owned();
    assert!(
        error.contains(&format!("could not assume the task role {ROLE}")) && error.contains("the task did not run"),
        "{error}"
    );
    assert!(!dir.path().join("ran").exists(), "the command never started");
}
