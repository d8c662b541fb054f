//! Helpers: temp dirs, the binaries under test, running jobs and reading their reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The directory holding the workspace's binaries (`make test` builds them all first).
pub fn bin_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_batchgrid"));
    exe.parent().expect("binary directory").to_path_buf()
}

/// The claims example's binary.
pub fn claims_bin() -> PathBuf {
    let path = bin_dir().join("batchgrid-claims");
    assert!(
        path.is_file(),
        "{} is missing: build every binary first (`cargo build --workspace --bins`, which `make test` does)",
        path.display()
    );
    path
}

/// PATH with the workspace's binaries first, so job files can name `batchgrid-claims`.
pub fn path_env() -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", bin_dir().display())
}

/// A `batchgrid` command with PATH set.
pub fn batchgrid() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgrid"));
    command.env("PATH", path_env()).env_remove("BATCHGRID_STATE_DIR");
    command
}

/// A `batchgrid` command pointed at an AWS endpoint on loopback, with dummy credentials and
/// no instance-metadata lookups (which would leave the machine).
pub fn batchgrid_against(endpoint: &str) -> Command {
    let mut command = batchgrid();
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// `batchgrid ARGS --environments DIR --templates TEMPLATES --out DIR/build` against an AWS
/// endpoint: a provisioning command on environment files of a test's own.
pub fn provision_command(endpoint: &str, args: &[&str], environments: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = batchgrid_against(endpoint);
    command
        .args(args)
        .arg("--environments")
        .arg(environments)
        .arg("--templates")
        .arg(root.join("templates"))
        .arg("--out")
        .arg(environments.join("build"));
    command
}

/// The outcome of `batchgrid run --json`.
pub struct RunResult {
    /// Exit status code.
    pub code: Option<i32>,
    /// The parsed report (stdout).
    pub report: Value,
    /// Everything on stderr.
    pub stderr: String,
    /// The state directory, kept.
    pub state_dir: PathBuf,
}

/// Writes `job` into `dir/job.yaml` and runs it with `--json --keep-state` and extra args.
pub fn run_job(dir: &Path, job: &str, extra: &[&str]) -> RunResult {
    run_job_with_env(dir, job, extra, &[])
}

/// As [`run_job`], with extra variables in the environment of `run` (and so of its workers).
pub fn run_job_with_env(dir: &Path, job: &str, extra: &[&str], env: &[(&str, &str)]) -> RunResult {
    let job_path = dir.join("job.yaml");
    std::fs::write(&job_path, job).expect("write job");
    let state_dir = dir.join("state");
    let output: Output = batchgrid()
        .envs(env.iter().copied())
        .arg("run")
        .arg(&job_path)
        .arg("--json")
        .arg("--keep-state")
        .arg("--state-dir")
        .arg(&state_dir)
        .args(extra)
        .output()
        .expect("run batchgrid");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("report is not JSON ({e}); exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status.code())
    });
    RunResult { code: output.status.code(), report, stderr, state_dir }
}

/// Lines of input, one per task when split by one line.
pub fn write_lines(path: &Path, count: usize) {
    let text: String = (0..count).map(|i| format!("line-{i}\n")).collect();
    std::fs::write(path, text).expect("write input");
}

/// Runs `diff -r` and panics with its output when the trees differ.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let output = Command::new("diff").arg("-r").arg(expected).arg(actual).output().expect("run diff");
    assert!(
        output.status.success(),
        "{} and {} differ:\n{}",
        expected.display(),
        actual.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Opens the analytics store of a kept state directory.
pub async fn analytics(state_dir: &Path) -> batchgrid_core::analytics::SqliteAnalytics {
    batchgrid_core::analytics::SqliteAnalytics::open(&state_dir.join("analytics.db")).await.expect("open analytics")
}

/// Runs a future on a runtime of its own, in a thread of its own, so that synchronous helpers
/// can call async APIs even when a test's runtime is running on the calling thread.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            runtime.block_on(future)
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
