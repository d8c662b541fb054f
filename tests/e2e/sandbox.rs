//! What a task and an API caller cannot reach: the API takes inputs only from the grid's raw
//! bucket; a task sees an allowlisted environment, leaves no process behind and keeps its
//! output out of the worker's log.

use std::time::Duration;

use batchgrid_core::grid::{EmbeddedGridSettings, Grid};
use batchgrid_core::manager::{spool_dir, Manager};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::{api, JobService};
use batchgrid_core::spec::InputPolicy;

use crate::harness::{run_job, run_job_with_env, write_lines};

const TOKEN: &str = "sandbox-test-token";
const RAW: &str = "grid-raw-bucket";

/// A manager's API on the embedded grid, admitting only `s3://grid-raw-bucket/...` inputs as a
/// manager on AWS does; its secrets file sits beside it, as `/etc/batchgrid/manager.env` would.
struct Api {
    client: ApiClient,
    grid: Grid,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        Self::over(dir, &state, InputPolicy::RawBucket(RAW.to_owned())).await
    }

    /// The API over the embedded grid in `state`.
    async fn over(dir: tempfile::TempDir, state: &std::path::Path, policy: InputPolicy) -> Self {
        let grid = Grid::open_embedded(state, &EmbeddedGridSettings { max_receives: 10 }).await.expect("grid");
        let manager = Manager::new(grid.clone(), spool_dir(state));
        let service = JobService::new(manager, Duration::from_millis(100), dir.path().to_path_buf(), policy);
        std::fs::write(dir.path().join("manager.env"), "BATCHGRID_DATABASE_URL=postgres://secret\n").expect("env");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, service, Secret::new(TOKEN.to_owned()), async move {
            let _ = stopped.await;
        }));
        let client = ApiClient::new(&format!("http://{address}"), Secret::new(TOKEN.to_owned())).expect("client");
        Self { client, grid, dir, stop: Some(stop) }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn job(input: &str) -> String {
    format!("name: probe\ninput:\n  path: {input}\nstages:\n  - name: s\n    command: [cat, \"{{input}}\"]\noutput:\n  path: out\n")
}

/// `input.path` (or `?input=`) outside the raw bucket gets a 400 naming the field and line and
/// telling nothing of the manager's disk; nothing is recorded or enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_only_inputs_in_the_raw_bucket_and_leaks_nothing() {
    let api = Api::start().await;
    let secrets = api.dir.path().join("manager.env");
    let secrets = secrets.to_str().expect("utf-8 path");
    let refused_inputs = [
        "/etc/passwd",
        "/proc/self/environ",
        "../x",
        secrets,
        "/no/such/file",
        "file:///etc/passwd",
        "s3://another-bucket/data.csv",
        "s3://grid-raw-bucketx/data.csv",
        "s3://grid-raw-bucket/../other/x",
    ];
    let mut answers = Vec::new();
    for input in refused_inputs {
        let refused = api.client.submit(&job(input), "probe.yaml", None).await.expect_err(input);
        let batchgrid_core::service::client::ClientError::Refused { status, body } = &refused else {
            panic!("{input}: not a refusal: {refused}");
        };
        assert_eq!(status.as_u16(), 400, "{input}: {refused}");
        assert_eq!(body.field.as_deref(), Some("input.path"), "{input}: {refused}");
        assert_eq!(body.line, Some(3), "{input}: {refused}");
        assert!(body.error.contains(RAW), "{input}: names the bucket to use: {refused}");
        for leak in ["exist", "No such", "denied", "permission", "/etc", "/proc", "passwd", "environ", "manager.env"] {
            assert!(!body.error.contains(leak), "{input}: `{leak}` says something of the disk: {}", body.error);
        }
        // Existing and missing files, readable or not, are refused alike.
        answers.push(body.error.clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "every refusal reads the same: {answers:#?}");
    // A manifest is held to the same rule, and refused with the same words.
    for input in ["/etc/passwd", secrets, "/no/such/file", "s3://another-bucket/list.txt"] {
        let document = job(input).replacen("  path: ", "  manifest: ", 1);
        let refused = api.client.submit(&document, "probe.yaml", None).await.expect_err(input);
        let batchgrid_core::service::client::ClientError::Refused { status, body } = &refused else {
            panic!("{input}: not a refusal: {refused}");
        };
        assert_eq!((status.as_u16(), body.field.as_deref()), (400, Some("input.manifest")), "{input}: {refused}");
        let as_path = answers[0].replace("input.path", "input.manifest");
        assert_eq!(body.error, as_path, "{input}: a manifest's refusal reads as a path's");
    }

    // The `?input=` query is held to the same rule.
    let good = job("s3://grid-raw-bucket/data.csv");
    for input in ["/etc/passwd", "/proc/self/environ", "../x", "s3://another-bucket/x"] {
        let refused = api.client.submit(&good, "probe.yaml", Some(input)).await.expect_err(input);
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(400), "{input}: {refused}");
        let message = refused.to_string();
        assert!(message.contains("field ?input="), "{input}: {message}");
        assert!(!message.contains("passwd") && !message.contains("environ"), "{input}: {message}");
    }

    assert!(api.client.jobs().await.expect("jobs").is_empty(), "no refused job was recorded");
    let depth = api.grid.tasks.depth().await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 0), "nothing was enqueued");

    // A command's program is not looked up on the manager's disk either: an existing and a
    // missing one are treated alike (a missing program fails the task on the worker).
    for program in ["/etc/shadow", "/no/such/program"] {
        let document = good.replace("[cat,", &format!("[{program},"));
        api.client.submit(&document, "probe.yaml", None).await.expect(program);
    }
}

/// A one-line-per-task job over `lines` lines running `command`, with `extra` stage keys.
fn command_job(dir: &std::path::Path, lines: usize, command: &str, extra: &str) -> String {
    write_lines(&dir.join("input.txt"), lines);
    format!(
        "name: sandbox\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: {command}\n{extra}output:\n  path: {output}\nretry:\n  max_attempts: 1\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    )
}

/// A task's environment is built from an allowlist: the worker's secrets and credentials are not
/// in it; the task variables, `PATH`, `HOME` and the stage's `env` are.
#[test]
fn a_task_sees_no_secret_of_the_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = r#"[sh, -c, 'env > "$1/env.txt"', "{input}", "{output}"]"#;
    let job = command_job(dir.path(), 1, command, "    env:\n      STAGE_SETTING: from-the-job\n");
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-marker"),
        ("AWS_ACCESS_KEY_ID", "aws-key-marker"),
        ("AWS_SESSION_TOKEN", "aws-session-marker"),
        ("BATCHGRID_DATABASE_URL", "postgres://user:db-password-marker@db/grid"),
        ("BATCHGRID_API_TOKEN", "api-token-marker"),
        ("SANDBOX_TEST_MARKER", "inherited-marker"),
    ];
    let result = run_job_with_env(dir.path(), &job, &["--workers", "1"], &secrets);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    let env = std::fs::read_to_string(dir.path().join("out/000000/env.txt")).expect("the task's env dump");
    for (name, value) in secrets {
        assert!(!env.contains(name), "{name} reached the task:\n{env}");
        assert!(!env.contains(value), "the value of {name} reached the task:\n{env}");
    }
    assert!(!env.lines().any(|l| l.starts_with("AWS_")), "no AWS_ variable at all:\n{env}");
    let job_id = result.report["job_id"].as_str().expect("job id");
    for expected in [
        format!("BATCHGRID_JOB_ID={job_id}"),
        "BATCHGRID_STAGE=work".to_owned(),
        "BATCHGRID_TASK_ID=000000".to_owned(),
        "BATCHGRID_ATTEMPT=1".to_owned(),
        "STAGE_SETTING=from-the-job".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == expected), "`{expected}` is missing:\n{env}");
    }
    for prefix in ["BATCHGRID_INPUT=/", "BATCHGRID_OUTPUT_DIR=/", "PATH=", "HOME=/"] {
        assert!(env.lines().any(|l| l.starts_with(prefix)), "`{prefix}...` is missing:\n{env}");
    }
    let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
    let allowed = |n: &str| {
        n.starts_with("BATCHGRID_")
            || ["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "STAGE_SETTING", "PWD", "SHLVL", "_", "OLDPWD"]
                .contains(&n)
    };
    assert!(names.iter().all(|n| allowed(n)), "only allowlisted variables: {names:?}");
}

/// Whether any process's command line holds `marker`.
fn running(marker: &str) -> bool {
    let output = std::process::Command::new("pgrep").arg("-f").arg(marker).output().expect("run pgrep");
    output.status.success()
}

/// A marker unique to this test run, written as a number so `sleep` takes it as an argument
/// (it sums them) and every process of the task carries it on its command line.
fn marker() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("0.0000{}{nanos}", std::process::id())
}

/// A command that detaches sleepers with `setsid` (their own session and process group), one of
/// them two levels down, then runs `then`.
fn detaching(marker: &str, then: &str) -> String {
    format!(
        r#"[sh, -c, 'setsid sh -c "sleep 300 {marker}1" & setsid sh -c "sh -c \"sleep 300 {marker}2\" & sleep 300 {marker}3" & sleep 0.3; {then}']"#
    )
}

/// Everything a task started dies when it ends, however it detached.
#[test]
fn a_task_that_detaches_with_setsid_leaves_nothing_behind() {
    let marker = marker();
    let dir = tempfile::tempdir().expect("temp dir");
    let job = command_job(dir.path(), 2, &detaching(&marker, "exit 0"), "");
    let result = run_job(dir.path(), &job, &["--workers", "1"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    // The kill happens before the task is reported done, so nothing may be left now.
    assert!(!running(&marker), "a detached process of the task survived it");
}

/// A task that times out is killed with everything it started, detached or not.
#[test]
fn a_task_that_times_out_leaves_nothing_behind() {
    let marker = marker();
    let dir = tempfile::tempdir().expect("temp dir");
    let job = command_job(dir.path(), 1, &detaching(&marker, "sleep 300"), "    timeout: 1s\n");
    let started = std::time::Instant::now();
    let result = run_job(dir.path(), &job, &["--workers", "1"]);
    assert_eq!(result.code, Some(1), "the job fails; stderr: {}", result.stderr);
    let error = result.report["failures"][0]["error"].as_str().expect("error").to_owned();
    assert!(error.contains("timed out"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60), "the task did not hang the job");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while running(&marker) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running(&marker), "a process of the timed-out task survived it");
}

/// A task's stdout and stderr are its own: captured and stored under its log prefix (capped),
/// served by the API, never written into the worker's log, where a forged JSON line could pass
/// for the worker's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_output_is_captured_apart_from_the_worker_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let forged = r#"{"level":"INFO","fields":{"message":"forged-by-the-task"},"target":"batchgrid_core::worker"}"#;
    // Task 000000 forges a log line on both streams; 000001 prints 3 MiB; 000002 fails.
    let command = format!(
        r#"[sh, -c, 'case "$BATCHGRID_TASK_ID" in 000000) echo {q}{forged}{q}; echo {q}{forged}{q} >&2;; 000001) head -c 3145728 /dev/zero | tr "\\0" x;; *) echo "row 9 is bad" >&2; exit 4;; esac']"#,
        q = "''", // A quote inside YAML's single-quoted scalar: sh sees '{forged}'.
    );
    let job = command_job(dir.path(), 3, &command, "");
    let result = run_job(dir.path(), &job, &["--workers", "1"]);
    assert_eq!(result.code, Some(1), "task 000002 fails; stderr: {}", result.stderr);
    assert!(!result.stderr.contains("forged-by-the-task"), "not on run's own output either");
    let worker_log = std::fs::read_to_string(result.state_dir.join("logs/worker-0.log")).expect("worker log");
    assert!(!worker_log.contains("forged-by-the-task"), "the task wrote into the worker's log:\n{worker_log}");
    let error = result.report["failures"][0]["error"].as_str().expect("error").to_owned();
    assert!(
        error.contains("exit status 4") && error.contains("row 9 is bad"),
        "the stderr tail is in the report: {error}"
    );

    let job_id = result.report["job_id"].as_str().expect("job id").to_owned();
    let logs = result.state_dir.join(format!("objects/jobs/{job_id}/logs/00-work"));
    let read = |task: &str, name: &str| std::fs::read(logs.join(task).join(name)).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&read("000000", "stdout.txt")).trim(), forged);
    assert_eq!(String::from_utf8_lossy(&read("000000", "stderr.txt")).trim(), forged);
    let big = read("000001", "stdout.txt");
    let cap = batchgrid_core::processor::command::LOG_CAP;
    assert!(big.len() > cap && big.len() < cap + 200, "capped at 1 MiB and a note: {} bytes", big.len());
    let note = String::from_utf8_lossy(&big[cap..]).to_string();
    assert!(note.contains("truncated") && note.contains(&(3 * cap - cap).to_string()), "{note}");
    assert!(logs.join("000001").join("stderr.txt").metadata().is_err(), "an empty stream stores nothing");
    assert_eq!(String::from_utf8_lossy(&read("000002", "stderr.txt")).trim(), "row 9 is bad");
    let results: Vec<_> = walk(&dir.path().join("out"));
    assert!(results.iter().all(|p| !p.contains("stdout") && !p.contains("stderr")), "results untouched: {results:?}");

    // The API serves them.
    let api = Api::over(dir, &result.state_dir, InputPolicy::Operator).await;
    let stdout = api.client.task_log(&job_id, "work", "000000", "stdout").await.expect("stdout");
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), forged);
    let stderr = api.client.task_log(&job_id, "work", "000002", "stderr").await.expect("stderr");
    assert_eq!(String::from_utf8_lossy(&stderr).trim(), "row 9 is bad");
    for (stage, task, stream) in [
        ("work", "000001", "stderr"),
        ("work", "..", "stdout"),
        ("nope", "000000", "stdout"),
        ("work", "000000", "environ"),
    ] {
        let missing = api.client.task_log(&job_id, stage, task, stream).await.expect_err("no such log");
        assert_eq!(missing.status().map(|s| s.as_u16()), Some(404), "{stage}/{task}/{stream}: {missing}");
    }
}

/// Every file under `root`, as paths relative to it.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
            }
        }
    }
    found
}
