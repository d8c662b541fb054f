//! The grid on the local stack: the `local` environment deployed into the moto emulator, a
//! PostgreSQL database of the test's own, and the manager and workers as real processes talking
//! to S3 and SQS, driven through the CLI and the API like a user would.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_testkit::postgres::TestDatabase;
use batchgrid_testkit::{MetadataServer, Moto};

use crate::claims::{claims_job_split, generate, reference};
use crate::harness::{assert_same_tree, batchgrid_against, block_on};

pub(crate) const TOKEN: &str = "local-stack-test-token";
/// The login the grid uses when its credentials are kept in Secrets Manager.
pub(crate) const GRID_USER: &str = "batchgrid_grid";
/// Its first password.
pub(crate) const FIRST_PASSWORD: &str = "first-pass:@/?#";
/// The database role workers log in as (migration 0007).
pub(crate) const WORKER_ROLE: &str = "batchgrid_worker";
/// The region of the `local` environment.
pub(crate) const REGION: &str = "us-east-1";

/// How the stack's processes reach their analytics database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// `BATCHGRID_DATABASE_URL`, to a database on whatever server the testkit finds.
    Url,
    /// `BATCHGRID_DATABASE_HOST` and `BATCHGRID_DATABASE_SECRET_ARN`: the credentials of a
    /// login role in the emulator's Secrets Manager, on a server that checks passwords.
    Secret,
    /// `BATCHGRID_DATABASE_URL`, to a throwaway cluster of the test's own that it can stop
    /// and start ([`TestDatabase::stop`]).
    Throwaway,
}

/// A deployed local stack with a manager and workers running against it.
pub(crate) struct LocalStack {
    pub(crate) moto: Moto,
    pub(crate) database: TestDatabase,
    /// The credentials secret's ARN, with [`Credentials::Secret`].
    pub(crate) secret_arn: Option<String>,
    pub(crate) dir: tempfile::TempDir,
    manager: Option<Child>,
    manager_url: String,
    manager_port: u16,
    manager_args: Vec<String>,
    /// Manager processes started so far, for their log names.
    manager_starts: usize,
    /// Extra environment of manager processes started from now on.
    manager_env: Vec<(String, String)>,
    /// Workers' `--visibility-timeout`.
    worker_visibility: String,
    workers: Vec<Child>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl LocalStack {
    /// Deploys the stack and starts the manager and `workers` workers.
    pub(crate) fn start(workers: usize) -> Self {
        Self::start_with(workers, &[])
    }

    /// As [`LocalStack::start`], with extra arguments for the manager.
    fn start_with(workers: usize, manager_args: &[&str]) -> Self {
        Self::launch(workers, manager_args, Credentials::Url)
    }

    /// As [`LocalStack::start`], reaching the analytics database as `credentials` says.
    pub(crate) fn start_with_credentials(workers: usize, credentials: Credentials) -> Self {
        Self::launch(workers, &[], credentials)
    }

    pub(crate) fn launch(workers: usize, manager_args: &[&str], credentials: Credentials) -> Self {
        let moto = Moto::start();
        let (database, secret_arn) = match credentials {
            Credentials::Url => (TestDatabase::new(), None),
            Credentials::Throwaway => (TestDatabase::throwaway(), None),
            Credentials::Secret => {
                let database = TestDatabase::with_password_auth();
                let arn = grid_login(&moto, &database);
                (database, Some(arn))
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut stack = Self {
            moto,
            database,
            secret_arn,
            dir,
            manager: None,
            manager_url: format!("http://127.0.0.1:{port}"),
            manager_port: port,
            manager_args: manager_args.iter().map(|a| (*a).to_owned()).collect(),
            manager_starts: 0,
            manager_env: vec![],
            worker_visibility: "2s".to_owned(),
            workers: vec![],
        };
        let deploy = stack
            .command()
            .args(["deploy", "local", "--templates"])
            .arg(root().join("templates"))
            .args(stack.place_args())
            .output()
            .expect("run deploy");
        assert!(deploy.status.success(), "deploy failed: {}", String::from_utf8_lossy(&deploy.stderr));

        stack.start_manager();
        for index in 0..workers {
            stack.start_worker(index);
        }
        stack
    }

    /// Starts a manager process and waits until it listens.
    fn start_manager(&mut self) {
        let name = match self.manager_starts {
            0 => "manager".to_owned(),
            n => format!("manager-{n}"),
        };
        self.manager_starts += 1;
        let port = self.manager_port;
        let log = self.log(&name);
        let manager = self
            .command()
            .args(["manager", "--env", "local", "--tick", "300ms", "--listen", &format!("127.0.0.1:{port}")])
            .args(self.place_args())
            .arg("--spool")
            .arg(self.dir.path().join("spool"))
            .args(&self.manager_args)
            .envs(self.manager_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the manager");
        self.manager = Some(manager);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.manager.as_mut().and_then(|m| m.try_wait().ok().flatten()) {
                panic!("the manager exited ({status}):\n{}", self.read_log(&name));
            }
            assert!(Instant::now() < deadline, "the manager did not listen within 60s:\n{}", self.read_log(&name));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the manager with SIGKILL (no shutdown of any kind), waits for it to be gone, and
    /// starts a new one on the same address.
    pub(crate) fn kill_and_restart_manager(&mut self) {
        if let Some(mut manager) = self.manager.take() {
            let _ = manager.kill();
            let _ = manager.wait();
        }
        self.start_manager();
    }

    /// Kills every worker with SIGKILL, waits for each to be gone, and starts as many again
    /// (each with fresh scratch directories of its own, as a restarted worker gets).
    pub(crate) fn kill_and_restart_workers(&mut self) {
        let count = self.workers.len();
        for mut worker in std::mem::take(&mut self.workers) {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        for index in 0..count {
            self.start_worker(index);
        }
    }

    /// Stops the manager and every worker (SIGKILL), as the grid's instances go when it is
    /// parked.
    pub(crate) fn stop_processes(&mut self) {
        for mut child in std::mem::take(&mut self.workers).into_iter().chain(self.manager.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a manager and `workers` workers again, as a resumed grid's instances start.
    pub(crate) fn start_processes(&mut self, workers: usize) {
        self.start_manager();
        for index in 0..workers {
            self.start_worker(index);
        }
    }

    /// Sets a variable in the environment of manager processes started from now on.
    pub(crate) fn set_manager_env(&mut self, key: &str, value: &str) {
        self.manager_env.push((key.to_owned(), value.to_owned()));
    }

    /// Every manager log so far, oldest first.
    pub(crate) fn manager_logs(&self) -> String {
        let mut logs = self.read_log("manager");
        for n in 1..self.manager_starts {
            logs.push_str(&format!("\n--- manager-{n} ---\n{}", self.read_log(&format!("manager-{n}"))));
        }
        logs
    }

    /// Starts `count` more workers with `--visibility-timeout visibility`.
    pub(crate) fn start_workers_with_visibility(&mut self, count: usize, visibility: &str) {
        self.worker_visibility = visibility.to_owned();
        let first = self.workers.len();
        for index in first..first + count {
            self.start_worker(index);
        }
    }

    fn start_worker(&mut self, index: usize) {
        self.start_worker_with(index, &[]);
    }

    fn start_worker_with(&mut self, index: usize, extra: &[String]) {
        let log = self.log(&format!("worker-{index}"));
        let mut command = self.command();
        if self.secret_arn.is_none() {
            // As on the grid's instances, workers log in as the role the migrations create, with
            // only the grants a worker needs: every job on the stack proves those are enough.
            command.env("BATCHGRID_DATABASE_URL", self.database.url_as(WORKER_ROLE));
        }
        let worker = command
            .args(["worker", "--env", "local", "--visibility-timeout", &self.worker_visibility, "--concurrency", "2"])
            .args(["--id", &format!("local-worker-{index}"), "--drain-deadline", "5s"])
            .arg("--scratch-dir")
            .arg(self.dir.path().join(format!("scratch-{index}")))
            .args(self.place_args())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a worker");
        self.workers.push(worker);
    }

    pub(crate) fn place_args(&self) -> Vec<PathBuf> {
        vec!["--environments".into(), root().join("environments"), "--out".into(), self.dir.path().join("build")]
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file")
    }

    pub(crate) fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `batchgrid` with the emulator, the database, the token and the manager's address.
    pub(crate) fn command(&self) -> Command {
        let mut command = batchgrid_against(&self.moto.endpoint);
        match &self.secret_arn {
            None => command.env("BATCHGRID_DATABASE_URL", self.database.url()),
            Some(arn) => {
                let (host, port) = self.database.address();
                command
                    .env_remove("BATCHGRID_DATABASE_URL")
                    .env("BATCHGRID_DATABASE_HOST", format!("{host}:{port}"))
                    .env("BATCHGRID_DATABASE_SECRET_ARN", arn)
                    // The throwaway cluster has no TLS; RDS would keep the default, `require`.
                    .env("BATCHGRID_DATABASE_SSLMODE", "disable")
            }
        };
        command
            .env("BATCHGRID_API_TOKEN", TOKEN)
            .env("BATCHGRID_MANAGER_URL", &self.manager_url)
            // Tests' tasks may leave markers in the test's own directory.
            .env("BATCHGRID_TASK_WRITABLE", self.dir.path())
            .env_remove("BATCHGRID_ENV");
        command
    }

    pub(crate) fn client(&self, token: &str) -> ApiClient {
        ApiClient::new(&self.manager_url, Secret::new(token)).expect("client")
    }

    pub(crate) fn outputs(&self) -> serde_json::Value {
        let path = self.dir.path().join("build/local/outputs.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("outputs")).expect("json")
    }

    /// `batchgrid submit --watch --json` against this stack, missing only `--download DIR JOB`.
    pub(crate) fn submit_command(&self) -> Command {
        let mut command = self.command();
        command.args(["submit", "--env", "local", "--watch", "--json"]).args(self.place_args());
        command
    }

    /// Submits a job file and follows it to its end, downloading results; returns the exit
    /// code and the JSON report.
    pub(crate) fn submit_and_watch(&self, job: &Path, results: &Path) -> (Option<i32>, serde_json::Value) {
        let output = self.submit_command().arg("--download").arg(results).arg(job).output().expect("run submit");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}\nmanager log:\n{}\nworker-0 log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.read_log("manager"),
                self.read_log("worker-0")
            )
        });
        (output.status.code(), report)
    }
}

/// Creates the grid's login role, owner of the test database, and keeps its credentials in the
/// emulator's Secrets Manager in the format of a secret made by hand (RDS's managed one has
/// only `username` and `password`); returns the secret's ARN.
fn grid_login(moto: &Moto, database: &TestDatabase) -> String {
    let role = format!("CREATE ROLE {GRID_USER} LOGIN PASSWORD '{}'", FIRST_PASSWORD.replace('\'', "''"));
    let owner = format!(r#"ALTER DATABASE "{}" OWNER TO {GRID_USER}"#, database.name());
    database.execute(&[&role, &owner]).expect("create the grid's login");
    let (host, port) = database.address();
    let secret = serde_json::json!({
        "username": GRID_USER, "password": FIRST_PASSWORD, "host": host, "port": port, "dbname": database.name(),
    });
    block_on(async {
        let client = secrets_client(moto).await;
        let created = client
            .create_secret()
            .name(format!("batchgrid-local-db-{}", ulid::Ulid::new()))
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("create the credentials secret");
        created.arn.expect("secret ARN")
    })
}

/// A Secrets Manager client of the emulator.
pub(crate) async fn secrets_client(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto.sdk_config(REGION).await)
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.manager.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The claims job through the emulator's S3 and SQS with PostgreSQL analytics: the same totals
/// as the single-process reference, and a report that counts and prices its requests.
#[test]
fn claims_on_the_local_stack_equal_the_reference() {
    let stack = LocalStack::start(2);
    let dir = stack.dir.path();
    let input = generate(dir, 120_000);
    let expected = reference(dir, &input);
    let job = dir.join("claims.yaml");
    std::fs::write(&job, claims_job_split(dir, "lines: 20000")).expect("write job");
    let (code, report) = stack.submit_and_watch(&job, &dir.join("results"));
    assert_eq!(code, Some(0), "report: {report}");
    assert_eq!(report["state"], "completed");
    assert_eq!(report["stages"][0]["done"], 6, "120,000 rows in chunks of 20,000");
    assert_same_tree(&expected, &dir.join("results"));
    assert_eq!(staged_inputs(&stack, report["job_id"].as_str().expect("job id")), 0, "byte ranges: nothing staged");
    let requests = report["requests"].as_array().expect("the report lists requests");
    for service in ["S3", "SQS"] {
        assert!(requests.iter().any(|r| r["service"] == service), "{service} requests are counted: {report}");
    }
    assert!(report["request_cost_usd"].as_f64().is_some_and(|c| c > 0.0), "requests are priced: {report}");

    // The other client commands see the same job and both workers.
    let cli = |args: &[&str]| -> serde_json::Value {
        let output = stack.command().args(args).output().expect("run batchgrid");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("JSON")
    };
    let jobs = cli(&["status", "--json"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(jobs[0]["state"], "completed");
    let job_id = report["job_id"].as_str().expect("job id");
    let status = cli(&["status", job_id, "--json"]);
    assert_eq!(status["stages"][1]["done"], 1, "{status}");
    let results = cli(&["results", job_id, "--json"]);
    assert_eq!(results["objects"].as_array().map(Vec::len), Some(3), "totals, rejects and summary: {results}");
    // `submit --download` took the files straight from S3; again into the same directory, the
    // download fetches nothing, and through the manager it gives the same files.
    let download = |target: &Path, extra: &[&str]| -> String {
        let output = stack
            .command()
            .args(["results", job_id, "--download"])
            .arg(target)
            .args(extra)
            .output()
            .expect("run batchgrid results");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let again = download(&dir.join("results"), &[]);
    assert!(again.contains("0 fetched") && again.contains("3 already complete"), "{again}");
    let through = download(&dir.join("through"), &["--through-manager"]);
    assert!(through.contains("3 fetched (0 straight from S3"), "{through}");
    assert_same_tree(&expected, &dir.join("through"));
    let workers = cli(&["workers", "--json"]);
    let done: u64 = workers.as_array().expect("workers").iter().filter_map(|w| w["tasks_done"].as_u64()).sum();
    assert_eq!(workers.as_array().map(Vec::len), Some(2), "{workers}");
    assert_eq!(done, 7, "every task counted once, by the worker that ran it: {workers}");
}

/// A `bytes:` split of an s3:// input is planned from the object's size and header line alone:
/// workers read their byte ranges from the raw bucket (ranged GETs), the manager downloads
/// nothing, and the results still equal the single-process reference.
#[test]
fn claims_split_by_byte_ranges_of_the_s3_object_equal_the_reference() {
    let stack = LocalStack::start(2);
    let dir = stack.dir.path();
    let input = generate(dir, 120_000);
    let expected = reference(dir, &input);
    let size = std::fs::metadata(&input).expect("input").len();
    let job = dir.join("claims.yaml");
    // About seven ranges, cut anywhere: inside lines, inside fields.
    let range = size / 7 + 13;
    std::fs::write(&job, claims_job_split(dir, &format!("bytes: {range}"))).expect("write job");
    let (code, report) = stack.submit_and_watch(&job, &dir.join("results"));
    assert_eq!(code, Some(0), "report: {report}");
    // One task per range of the body (the header line is not split).
    let tasks = report["stages"][0]["done"].as_u64().unwrap_or(0);
    assert!(tasks == size.div_ceil(range) || tasks + 1 == size.div_ceil(range), "{tasks} tasks: {report}");
    assert_same_tree(&expected, &dir.join("results"));
}

/// Per-file and manifest jobs over S3 objects copy nothing: the manager lists the prefix or
/// reads the manifest, each task names its object, and the workers read it from the raw bucket;
/// nothing is staged under the job's input prefix, and every listed object is run once.
#[test]
fn per_file_and_manifest_jobs_read_the_s3_objects_where_they_lie() {
    let stack = LocalStack::start(2);
    let dir = stack.dir.path();
    let outputs = stack.outputs();
    let raw = outputs["RawBucketName"].as_str().expect("raw bucket").to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s3 = aws_sdk_s3::Client::new(&runtime.block_on(stack.moto.sdk_config(REGION)));
    let put = |key: &str, body: String| {
        runtime
            .block_on(s3.put_object().bucket(&raw).key(key).body(body.into_bytes().into()).send())
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    };
    for (key, body) in [("media/a b.txt", "alpha\n"), ("media/b.txt", "beta\n"), ("media/deep/c.txt", "gamma\n")] {
        put(key, body.to_owned());
    }
    put("lists/media.txt", format!("# two of the three\ns3://{raw}/media/a b.txt\n\ns3://{raw}/media/deep/c.txt\n"));
    // As S3 Inventory writes it: every field quoted, the key URL-encoded (a space as `+`).
    put("lists/inventory.csv", format!("\"{raw}\",\"media/a+b.txt\",\"6\"\n\"{raw}\",\"media/b.txt\",\"5\"\n"));

    let cases = [
        ("per-file", format!("path: s3://{raw}/media/"), vec!["alpha", "beta", "gamma"]),
        ("manifest", format!("manifest: s3://{raw}/lists/media.txt"), vec!["alpha", "gamma"]),
        ("inventory", format!("manifest: s3://{raw}/lists/inventory.csv"), vec!["alpha", "beta"]),
    ];
    for (name, input, expected) in cases {
        let job = dir.join(format!("{name}.yaml"));
        let out = dir.join(format!("{name}-results"));
        let text = format!(
            "name: {name}\ninput: {{{input}}}\nstages:\n  - name: copy\n    command: [cp, \"{{input}}\", \"{{output}}/\"]\noutput: {{path: {}}}\n",
            out.display()
        );
        std::fs::write(&job, text).expect("write job");
        let (code, report) = stack.submit_and_watch(&job, &out);
        assert_eq!(code, Some(0), "{name}: {report}");
        assert_eq!(report["stages"][0]["done"].as_u64(), Some(expected.len() as u64), "{name}: {report}");
        let mut got: Vec<String> = walk(&out)
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("result").trim_end().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, expected, "{name}: each listed object ran once, read whole");
        assert_eq!(staged_inputs(&stack, report["job_id"].as_str().expect("job id")), 0, "{name}: nothing staged");
    }
}

/// How many objects the manager staged under a job's input prefix in the results bucket.
fn staged_inputs(stack: &LocalStack, job_id: &str) -> i32 {
    let results = stack.outputs()["ResultsBucketName"].as_str().expect("results bucket").to_owned();
    let moto = &stack.moto;
    block_on(async move {
        let s3 = aws_sdk_s3::Client::new(&moto.sdk_config(REGION).await);
        let listed = s3.list_objects_v2().bucket(&results).prefix(format!("jobs/{job_id}/input/")).send().await;
        listed.expect("list").key_count().unwrap_or(-1)
    })
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A worker killed with SIGKILL in the middle of a task: its messages come back after the
/// visibility timeout, the other worker runs them, and the totals are still exact.
#[test]
fn a_worker_killed_mid_task_on_the_local_stack_loses_nothing() {
    let stack = LocalStack::start(2);
    let dir = stack.dir.path();
    let input = generate(dir, 120_000);
    let expected = reference(dir, &input);
    let marker = dir.join("killed-once");
    let killer = format!(
        "command: [sh, -c, 'if [ \"$BATCHGRID_TASK_ID\" = 000001 ] && [ ! -e {marker} ]; then touch {marker}; kill -9 $(ps -o ppid= -p $PPID); sleep 1; exit 1; fi; exec batchgrid-claims validate \"$0\" \"$1\"', \"{{input}}\", \"{{output}}\"]",
        marker = marker.display()
    );
    let job = dir.join("claims.yaml");
    let text = claims_job_split(dir, "lines: 20000")
        .replace("command: [batchgrid-claims, validate, \"{input}\", \"{output}\"]", &killer);
    std::fs::write(&job, text).expect("write job");
    let (code, report) = stack.submit_and_watch(&job, &dir.join("results"));
    assert_eq!(code, Some(0), "report: {report}");
    assert!(marker.exists(), "the kill happened");
    assert_same_tree(&expected, &dir.join("results"));
    assert_eq!(report["stages"][0]["done"], 6, "every chunk counted exactly once");
    let job_id = report["job_id"].as_str().expect("job id").to_owned();
    let url = stack.database.url();
    let task = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
        use batchgrid_core::analytics::AnalyticsStore;
        let store = batchgrid_core::analytics::PgAnalytics::connect(&url, 1).await.expect("analytics");
        store.task(&job_id, 0, "000001").await.expect("task").expect("recorded")
    });
    assert_eq!(task.status, "done");
    assert_eq!(task.attempts, 2, "the killed delivery was the first; the second finished it");
}

/// Every call wants the token; an invalid job is refused with 400 naming its field, and nothing
/// of it is recorded or enqueued.
#[tokio::test]
async fn the_api_wants_its_token_and_refuses_bad_jobs_before_enqueueing() {
    let stack = tokio::task::spawn_blocking(|| LocalStack::start(0)).await.expect("stack");
    let port = stack.manager_url.rsplit(':').next().expect("port").to_owned();
    // No Authorization header at all.
    let bare = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
        stream.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: manager\r\nConnection: close\r\n\r\n").expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .expect("request");
    assert!(bare.starts_with("HTTP/1.1 401"), "no token is 401: {bare}");
    let wrong = stack.client("not-the-token").jobs().await.expect_err("a wrong token is refused");
    assert_eq!(wrong.status().map(|s| s.as_u16()), Some(401), "{wrong}");

    let client = stack.client(TOKEN);
    // Inputs in the grid's own raw bucket, the only ones the API takes, so each case fails on
    // the field it is about.
    let raw = stack.outputs()["RawBucketName"].as_str().expect("raw bucket").to_owned();
    let cases = [
        ("name: bad\ninput: {path: s3://raw-bucket/x}\nstages:\n  - {name: s, command: [true]}\noutput: {path: out}\nsurprise: 1\n", "surprise"),
        ("name: bad\ninput: {path: s3://raw-bucket/x}\nsplit: {lines: 0}\nstages:\n  - {name: s, command: [true]}\noutput: {path: out}\n", "split.lines"),
        ("name: bad\ninput: {path: s3://raw-bucket/x}\nstages: []\noutput: {path: out}\n", "stages"),
        ("name: bad\ninput: {path: s3://raw-bucket/x}\nstages:\n  - {name: s, command: [true], timeout: soon}\noutput: {path: out}\n", "stages[0].timeout"),
    ];
    for (document, field) in cases {
        let document = document.replace("s3://raw-bucket/", &format!("s3://{raw}/"));
        let refused = client.submit(&document, "bad.yaml", None).await.expect_err("an invalid job is refused");
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(400), "{refused}");
        let message = refused.to_string();
        assert!(message.contains(field), "the error names `{field}`: {message}");
        assert!(message.contains("bad.yaml"), "and the document: {message}");
    }
    // The manager's disk is out of reach: local paths and other buckets are refused alike.
    for input in ["/etc/passwd", "/proc/self/environ", "../x", "s3://another-bucket/x"] {
        let document = format!(
            "name: probe\ninput:\n  path: {input}\nstages:\n  - {{name: s, command: [cat]}}\noutput: {{path: out}}\n"
        );
        let refused = client.submit(&document, "probe.yaml", None).await.expect_err(input);
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(400), "{refused}");
        let message = refused.to_string();
        assert!(message.contains("field input.path, line 3"), "{input}: {message}");
        assert!(!message.contains("exist") && !message.contains("passwd") && !message.contains("environ"), "{message}");
    }
    assert!(client.jobs().await.expect("jobs").is_empty(), "no job was recorded");
    let outputs = stack.outputs();
    let config = stack.moto.sdk_config("us-east-1").await;
    let sqs = batchgrid_core::aws::sqs_client(&config, &Default::default());
    let url = outputs["InputQueueUrl"].as_str().expect("queue url");
    let queue = batchgrid_core::queue::SqsQueue::open(sqs, url).await.expect("queue");
    let depth = batchgrid_core::queue::TaskQueue::depth(&queue).await.expect("depth");
    assert_eq!((depth.visible, depth.in_flight), (0, 0), "nothing was enqueued");
    tokio::task::spawn_blocking(move || drop(stack)).await.expect("stop");
}

/// Whether the emulator's group shows `instance` protected from scale-in.
async fn protected(autoscaling: &aws_sdk_autoscaling::Client, instance: &str) -> bool {
    let answer = autoscaling.describe_auto_scaling_instances().instance_ids(instance).send().await.expect("describe");
    answer.auto_scaling_instances().first().is_some_and(|i| i.protected_from_scale_in() == Some(true))
}

async fn wait_for(stack: &LocalStack, what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; worker-0 log:\n{}",
            stack.read_log("worker-0")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker on an instance of the emulator's Auto Scaling group, its metadata served from
/// loopback: protection is set while it is busy and cleared once it is idle; then a spot notice
/// makes it release its running tasks within seconds, another worker completes them, and the
/// totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_an_instance_protects_it_while_busy_and_hands_its_tasks_over_on_a_spot_notice() {
    let mut stack = tokio::task::spawn_blocking(|| LocalStack::start(0)).await.expect("stack");
    let group = stack.outputs()["WorkerGroupName"].as_str().expect("group").to_owned();
    let config = stack.moto.sdk_config("us-east-1").await;
    let autoscaling = batchgrid_core::aws::autoscaling_client(&config, &Default::default());
    autoscaling.set_desired_capacity().auto_scaling_group_name(&group).desired_capacity(1).send().await.expect("scale");
    let groups =
        autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(&group).send().await.expect("group");
    let instance = groups.auto_scaling_groups()[0].instances()[0].instance_id().expect("instance").to_owned();
    let imds = MetadataServer::start(&instance);
    let agent_args: Vec<String> = [
        "--instance-agent",
        "--metadata-endpoint",
        &imds.endpoint(),
        "--group",
        &group,
        "--metadata-poll",
        "200ms",
        "--idle-grace",
        "1s",
        "--protection-interval",
        "500ms",
        "--spot-margin",
        "115s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    stack.start_worker_with(0, &agent_args);
    assert!(!protected(&autoscaling, &instance).await, "an idle instance starts unprotected");

    // Job 1: the worker is busy for a few seconds, then idle.
    let dir = stack.dir.path().to_path_buf();
    let input = generate(&dir, 120_000);
    let expected = reference(&dir, &input);
    let slow = "command: [sh, -c, 'sleep 1; case \"$PWD\" in *scratch-0*) [ -e SLOW ] && sleep 120;; esac; exec batchgrid-claims validate \"$0\" \"$1\"', \"{input}\", \"{output}\"]";
    let job = dir.join("claims.yaml");
    let text = claims_job_split(&dir, "lines: 20000")
        .replace("command: [batchgrid-claims, validate, \"{input}\", \"{output}\"]", slow);
    std::fs::write(&job, text.replace("SLOW", &dir.join("slow").display().to_string())).expect("job");
    let first = {
        let (job, results, stack_command) = (job.clone(), dir.join("results-1"), stack.submit_command());
        tokio::task::spawn_blocking(move || run_submit(stack_command, &job, &results))
    };
    wait_for(&stack, "the busy instance is protected", Duration::from_secs(30), async || {
        protected(&autoscaling, &instance).await
    })
    .await;
    let (code, report) = first.await.expect("first job");
    assert_eq!(code, Some(0), "{report}");
    assert_same_tree(&expected, &dir.join("results-1"));
    wait_for(&stack, "the idle instance is unprotected", Duration::from_secs(15), async || {
        !protected(&autoscaling, &instance).await
    })
    .await;

    // Job 2: the same, but this worker's tasks now take minutes; a spot notice arrives.
    std::fs::write(dir.join("slow"), "").expect("slow marker");
    let second = {
        let (job, results, stack_command) = (job.clone(), dir.join("results-2"), stack.submit_command());
        tokio::task::spawn_blocking(move || run_submit(stack_command, &job, &results))
    };
    wait_for(&stack, "the instance is busy again", Duration::from_secs(30), async || {
        protected(&autoscaling, &instance).await
    })
    .await;
    let at = std::time::SystemTime::now() + Duration::from_secs(120);
    imds.set(
        "spot/instance-action",
        &format!(r#"{{"action": "terminate", "time": "{}"}}"#, humantime::format_rfc3339_seconds(at)),
    );
    let noticed = Instant::now();
    let worker = &mut stack.workers[0];
    while worker.try_wait().expect("worker state").is_none() {
        assert!(noticed.elapsed() < Duration::from_secs(15), "the noticed worker stops within seconds");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = stack.read_log("worker-0");
    assert!(log.contains("spot interruption notice"), "{log}");
    stack.start_worker(1);
    let (code, report) = second.await.expect("second job");
    assert_eq!(code, Some(0), "{report}");
    assert_same_tree(&expected, &dir.join("results-2"));
    assert_eq!(report["stages"][0]["done"], 6, "every chunk counted exactly once");
    assert!(!protected(&autoscaling, &instance).await, "the stopped worker left its instance unprotected");
    tokio::task::spawn_blocking(move || drop(stack)).await.expect("stop");
}

/// `worker drain` of a worker on an instance of the emulator's group: the worker exits, and
/// the instance leaves the group with its desired capacity lowered (no replacement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_on_an_instance_leaves_the_group() {
    let mut stack = tokio::task::spawn_blocking(|| LocalStack::start(0)).await.expect("stack");
    let group = stack.outputs()["WorkerGroupName"].as_str().expect("group").to_owned();
    let config = stack.moto.sdk_config("us-east-1").await;
    let autoscaling = batchgrid_core::aws::autoscaling_client(&config, &Default::default());
    autoscaling.set_desired_capacity().auto_scaling_group_name(&group).desired_capacity(1).send().await.expect("scale");
    let groups =
        autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(&group).send().await.expect("group");
    let instance = groups.auto_scaling_groups()[0].instances()[0].instance_id().expect("instance").to_owned();
    let imds = MetadataServer::start(&instance);
    let agent_args: Vec<String> =
        ["--instance-agent", "--metadata-endpoint", &imds.endpoint(), "--group", &group, "--metadata-poll", "200ms"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    stack.start_worker_with(0, &agent_args);

    let client = stack.client(TOKEN);
    wait_for(&stack, "the worker has registered and takes the drain", Duration::from_secs(30), async || {
        client.drain_worker("local-worker-0").await.is_ok()
    })
    .await;
    let asked = Instant::now();
    let worker = &mut stack.workers[0];
    while worker.try_wait().expect("worker state").is_none() {
        assert!(asked.elapsed() < Duration::from_secs(20), "the drained worker exits within seconds");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = stack.read_log("worker-0");
    assert!(log.contains("drain requested"), "{log}");
    wait_for(&stack, "the instance has left the group", Duration::from_secs(15), async || {
        let groups =
            autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(&group).send().await.expect("group");
        let group = &groups.auto_scaling_groups()[0];
        group.desired_capacity() == Some(0)
            && group.instances().iter().all(|i| i.instance_id() != Some(instance.as_str()))
    })
    .await;
    tokio::task::spawn_blocking(move || drop(stack)).await.expect("stop");
}

/// Runs a prepared `batchgrid submit --watch` command; returns its exit code and report.
fn run_submit(mut command: Command, job: &Path, results: &Path) -> (Option<i32>, serde_json::Value) {
    let output = command.arg("--download").arg(results).arg(job).output().expect("run submit");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    (output.status.code(), report)
}

/// The worker group's desired capacity in the emulator.
async fn desired_capacity(autoscaling: &aws_sdk_autoscaling::Client, group: &str) -> i32 {
    let groups =
        autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(group).send().await.expect("group");
    groups.auto_scaling_groups()[0].desired_capacity().expect("desired capacity")
}

/// The manager sizes the emulator's worker group from the work: a job submitted to a group at
/// zero raises its desired capacity within 5 s, and the group returns to its minimum once the
/// job has ended and the scale-in delay has passed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_scales_the_group_from_zero_with_a_job_and_back_after_the_delay() {
    let delay = Duration::from_secs(4);
    let stack = tokio::task::spawn_blocking(move || {
        LocalStack::start_with(1, &["--scale-in-delay", "4s", "--scale-interval", "250ms"])
    })
    .await
    .expect("stack");
    let group = stack.outputs()["WorkerGroupName"].as_str().expect("group").to_owned();
    let config = stack.moto.sdk_config("us-east-1").await;
    let autoscaling = batchgrid_core::aws::autoscaling_client(&config, &Default::default());
    assert_eq!(desired_capacity(&autoscaling, &group).await, 0, "the local grid starts at zero");

    let dir = stack.dir.path().to_path_buf();
    let input = generate(&dir, 60_000);
    let expected = reference(&dir, &input);
    let job = dir.join("claims.yaml");
    // Slow tasks keep the job running long enough to see the group held while work remains.
    let slow = "command: [sh, -c, 'sleep 1; exec batchgrid-claims validate \"$0\" \"$1\"', \"{input}\", \"{output}\"]";
    let text = claims_job_split(&dir, "lines: 10000")
        .replace("command: [batchgrid-claims, validate, \"{input}\", \"{output}\"]", slow);
    std::fs::write(&job, text).expect("job");
    let submitted = Instant::now();
    let running = {
        let (job, results, command) = (job.clone(), dir.join("results"), stack.submit_command());
        tokio::task::spawn_blocking(move || run_submit(command, &job, &results))
    };
    wait_for(&stack, "the group leaves zero", Duration::from_secs(5), async || {
        desired_capacity(&autoscaling, &group).await >= 1
    })
    .await;
    let raised_after = submitted.elapsed();
    let (code, report) = running.await.expect("job");
    assert_eq!(code, Some(0), "{report}");
    assert_same_tree(&expected, &dir.join("results"));
    let job_id = report["job_id"].as_str().expect("job id").to_owned();
    let finished_at = stack.client(TOKEN).status(&job_id).await.expect("status").finished_at.expect("finished");
    wait_for(&stack, "the group is back at its minimum", delay + Duration::from_secs(10), async || {
        desired_capacity(&autoscaling, &group).await == 0
    })
    .await;
    // Measured from the job's end as the manager recorded it (the client sees it later).
    let lowered_after =
        Duration::from_millis(u64::try_from(batchgrid_core::db::now_millis() - finished_at).unwrap_or(0));
    assert!(lowered_after >= delay, "scaled in {lowered_after:?} after the job, before the {delay:?} delay");
    let log = stack.read_log("manager");
    assert!(log.contains("worker group resized"), "the manager logs its decisions:\n{log}");
    eprintln!(
        "desired capacity raised {raised_after:?} after submission, lowered {lowered_after:?} after the job ended"
    );
    tokio::task::spawn_blocking(move || drop(stack)).await.expect("stop");
}

/// `make deploy ENV=local && make smoke ENV=local`, less the build step `make` adds: the local
/// environment deployed into the emulator, then the script `make smoke ENV=local` runs, which
/// starts a manager and a worker in place of the instances and runs `batchgrid smoke local`.
#[test]
fn deploy_then_smoke_on_the_local_stack_passes() {
    let moto = Moto::start();
    let database = TestDatabase::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("build");
    let places = |command: &mut Command| {
        command.arg("--environments").arg(root().join("environments")).arg("--out").arg(&out);
    };
    let mut deploy = batchgrid_against(&moto.endpoint);
    deploy.args(["deploy", "local"]);
    places(&mut deploy);
    let deployed = deploy.output().expect("run deploy");
    assert!(deployed.status.success(), "deploy failed: {}", String::from_utf8_lossy(&deployed.stderr));

    let output = Command::new("bash")
        .arg(root().join("scripts/smoke-local.sh"))
        .current_dir(root())
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("BIN", crate::harness::bin_dir())
        .env("OUT", &out)
        .env("ENVIRONMENTS", root().join("environments"))
        .env("MANAGER_PORT", free_port().to_string())
        .env("BATCHGRID_DATABASE_URL", database.url())
        .env("SMOKE_TIMEOUT", "90s")
        .env_remove("BATCHGRID_API_TOKEN")
        .output()
        .expect("run scripts/smoke-local.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs = |name: &str| std::fs::read_to_string(out.join("smoke-local").join(name)).unwrap_or_default();
    assert!(
        output.status.success() && stdout.contains("smoke: passed"),
        "smoke failed ({}):\n{stdout}\n{stderr}\nmanager:\n{}\nworker:\n{}",
        output.status,
        logs("manager.log"),
        logs("worker.log")
    );
}
