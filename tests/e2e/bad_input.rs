//! Bad job files: one line naming file, line and field; a non-zero exit; no panic. Bad
//! manifests: the job fails naming the manifest and the line.

use crate::harness::{batchgrid, provision_command};

const GOOD: &str = "name: bad\ninput:\n  path: INPUT\nsplit:\n  lines: 10\nstages:\n  - name: work\n    command: [cat, \"{input}\"]\noutput:\n  path: out\n";

fn reject(job: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "a\n").expect("input");
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, job.replace("INPUT", &input.display().to_string())).expect("job");
    let output =
        batchgrid().arg("run").arg(&path).arg("--state-dir").arg(dir.path().join("state")).output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(!dir.path().join("state").exists(), "nothing was started");
    lines[0].replace(&format!("{}", path.display()), "job.yaml")
}

#[test]
fn good_job_is_accepted_by_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "a\n").expect("input");
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, GOOD.replace("INPUT", &input.display().to_string())).expect("job");
    let output = batchgrid().arg("validate").arg(&path).output().expect("validate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn unknown_key() {
    let line = reject(&GOOD.replace("  lines: 10\n", "  lines: 10\n  chunks: 3\n"));
    assert!(line.starts_with("error: job.yaml:6:3: split.chunks: unknown field `chunks`, expected one of"), "{line}");
}

#[test]
fn wrong_type() {
    let line = reject(&GOOD.replace("lines: 10", "lines: ten"));
    assert!(line.starts_with("error: job.yaml:5:10: split.lines: invalid type"), "{line}");
}

#[test]
fn missing_input() {
    let line = reject(&GOOD.replace("path: INPUT", "path: /no/such/claims.csv"));
    assert!(line.starts_with("error: job.yaml:3:3: input.path: input `/no/such/claims.csv` does not exist"), "{line}");
}

#[test]
fn zero_chunk_size() {
    let line = reject(&GOOD.replace("lines: 10", "lines: 0"));
    assert!(line.starts_with("error: job.yaml:5:3: split.lines: chunk size must be at least 1"), "{line}");
}

#[test]
fn not_yaml_at_all() {
    let line = reject("name: [unclosed\n");
    assert!(line.starts_with("error: job.yaml:"), "{line}");
}

#[test]
fn command_line_paths_are_relative_to_the_working_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("jobs")).expect("mkdir");
    // One chunk big enough to be stored as an object, one small enough to travel inline.
    let lines: String = (0..3000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(dir.path().join("data.txt"), &lines).expect("input");
    let job = GOOD
        .replace("INPUT", "does-not-matter.txt")
        .replace("lines: 10", "lines: 2000")
        .replace("[cat, \"{input}\"]", "[cp, \"{input}\", \"{output}/\"]");
    std::fs::write(dir.path().join("jobs/job.yaml"), job).expect("job");
    let output = batchgrid()
        .current_dir(dir.path())
        .args(["run", "jobs/job.yaml", "--input", "data.txt", "--output", "results", "--state-dir", "state"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let mut copied = String::new();
    for task in ["000000", "000001"] {
        let task_dir = dir.path().join("results").join(task);
        for entry in std::fs::read_dir(&task_dir).expect("task results") {
            copied.push_str(&std::fs::read_to_string(entry.expect("entry").path()).expect("read"));
        }
    }
    assert_eq!(copied, lines, "both chunks were read from relative state and output paths");
    let missing = batchgrid()
        .current_dir(dir.path())
        .args(["run", "jobs/job.yaml", "--input", "nope.txt"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.starts_with("error: command line: --input: input `"), "{stderr}");
    assert!(stderr.contains(&format!("{}", dir.path().join("nope.txt").display())), "{stderr}");
}

#[test]
fn environments_are_checked_with_file_line_and_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let good = batchgrid()
        .current_dir(root)
        .env("PIPELINE_ID", "p-7")
        .args(["environment", "ci"])
        .output()
        .expect("environment");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&good.stdout).expect("json");
    assert_eq!(shown["name_suffix"], "p-7");

    let unset =
        batchgrid().current_dir(root).env_remove("PIPELINE_ID").args(["environment", "ci"]).output().expect("run");
    assert_eq!(unset.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(
        stderr
            .starts_with("error: environments/ci.yaml:2:1: name_suffix: environment variable `PIPELINE_ID` is not set"),
        "{stderr}"
    );
}

/// A bad environment stops every provisioning command before anything is sent to AWS.
#[test]
fn bad_environments_send_nothing_to_aws() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(root.join("environments/base.yaml"), dir.path().join("base.yaml")).expect("base");
    let cases = [
        ("grid:\n  max_size: 4\n  maximum: 9\n", "bad.yaml:3:3: grid.maximum: unknown field"),
        ("grid:\n  max_size: lots\n", "bad.yaml:2:3: grid.max_size: invalid type"),
        ("grid:\n  min_size: 9\n  max_size: 2\n", "bad.yaml:2:3: grid.min_size: min_size 9 is above max_size 2"),
        (
            "name_suffix: ${NOT_SET_ANYWHERE}\n",
            "bad.yaml:1:1: name_suffix: environment variable `NOT_SET_ANYWHERE` is not set",
        ),
        // An empty file would otherwise deploy the base's defaults, unprotected.
        ("  \n# nothing here\n", "bad.yaml: (file): is empty"),
        (
            "grid:\n  ami: \"{{resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64}}\"\n",
            "bad.yaml:2:3: grid.ami: ",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("bad.yaml"), text).expect("env");
        for command in ["diff", "deploy", "teardown", "cost"] {
            let output = provision_command(&endpoint, &[command, "bad"], dir.path())
                .env_remove("NOT_SET_ANYWHERE")
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{command}: one line: {stderr}");
            assert!(stderr.contains(expected), "{command}: {stderr}");
        }
    }
    let missing_base = tempfile::tempdir().expect("temp dir");
    std::fs::write(missing_base.path().join("bad.yaml"), "region: eu-west-1\n").expect("env");
    let output = batchgrid().args(["deploy", "bad", "--environments"]).arg(missing_base.path()).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("base.yaml: (file): cannot read"));
    assert!(listener.accept().is_err(), "no request reached the AWS endpoint");
}

/// A local manifest on the embedded grid: each listed file is one task; a line that lists no
/// input fails the job with an error naming the manifest and the line.
#[test]
fn a_local_manifest_runs_each_listed_file_and_names_a_bad_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("in")).expect("dir");
    for (name, text) in [("a.txt", "alpha\n"), ("b.txt", "beta\n"), ("c.txt", "gamma\n")] {
        std::fs::write(dir.path().join("in").join(name), text).expect("input");
    }
    let job = |manifest: &str, out: &str| {
        let list = dir.path().join(format!("{out}.txt"));
        std::fs::write(&list, manifest).expect("manifest");
        format!(
            "name: listed\ninput:\n  manifest: {}\nstages:\n  - name: copy\n    command: [cp, \"{{input}}\", \"{{output}}/\"]\noutput:\n  path: {}\n",
            list.display(),
            dir.path().join(out).display()
        )
    };
    let run = |name: &str, job: String| {
        let place = dir.path().join(format!("{name}-run"));
        std::fs::create_dir(&place).expect("run dir");
        crate::harness::run_job(&place, &job, &[])
    };
    let good = run("good", job("# two of three\nin/a.txt\n\nin/c.txt\n", "good"));
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    assert_eq!(good.report["stages"][0]["done"], 2, "{}", good.report);
    let mut copied: Vec<String> = ["a.txt", "c.txt"]
        .iter()
        .filter_map(|name| {
            walkdir(&dir.path().join("good"))
                .into_iter()
                .find(|p| p.ends_with(name))
                .map(|p| std::fs::read_to_string(p).expect("result"))
        })
        .collect();
    copied.sort();
    assert_eq!(copied, ["alpha\n", "gamma\n"]);

    let bad = run("bad", job("in/a.txt\nin/missing.txt\n", "bad"));
    assert_ne!(bad.code, Some(0), "{}", bad.report);
    let text = format!("{}{}", bad.report, bad.stderr);
    assert!(text.contains("bad.txt, line 2") && text.contains("missing.txt"), "{text}");
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
