//! A task's command writes only its scratch directory, and on the grid's instances runs as a
//! user of its own, kept from the instance metadata service, with the worker holding only the
//! three capabilities its unit grants. The instance is stood in for by what runs here: the
//! shipped nftables rule in a network namespace, `nobody` for `batchgrid-task`, and `setpriv`
//! giving an unprivileged worker exactly the unit's ambient capabilities.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{batchgrid, run_job_with_env, write_lines, RunResult};

/// The user tasks run as here: `batchgrid-task` exists only on the image.
const TASK_USER: &str = "nobody";
/// The unprivileged user the worker runs as in the capability test (no passwd entry needed).
const WORKER_UID: &str = "64123";

/// A job over `lines` one-line tasks running `command`.
fn job(dir: &Path, lines: usize, command: &str) -> String {
    write_lines(&dir.join("input.txt"), lines);
    format!(
        "name: task-sandbox\ninput:\n  path: {input}\nsplit:\n  lines: 1\nstages:\n  - name: work\n    command: {command}\noutput:\n  path: {output}\nretry:\n  max_attempts: 1\n",
        input = dir.join("input.txt").display(),
        output = dir.join("out").display(),
    )
}

/// A temp dir others can traverse (not list), as `/var/lib` is: a task user must reach the
/// scratch directory under it.
fn traversable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

/// A task writes its output, its `TMPDIR` and `/dev/null`; a task that writes anywhere else
/// (the test's own directory, the grid's state directory where other jobs' specs live, `/tmp`)
/// fails with "Permission denied" and leaves nothing there, although the worker's user (root
/// here) could write all three.
#[test]
fn a_task_writes_only_its_scratch_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside = dir.path().join("escaped.txt");
    let in_tmp = format!("/tmp/batchgrid-escape-{}", std::process::id());
    let command = format!(
        r#"[sh, -c, 'echo kept > "$1/result.txt" && echo scratch > "$TMPDIR/tmp.txt" && echo quiet > /dev/null && case "$BATCHGRID_TASK_ID" in 000001) echo x > {outside} ;; 000002) echo x > {in_tmp} ;; 000003) echo x > "$STATE/forged-spec.json" ;; esac', "{{input}}", "{{output}}"]"#,
        outside = outside.display(),
    );
    let state = dir.path().join("state");
    let yaml = job(dir.path(), 4, &command)
        .replace("    command:", &format!("    env:\n      STATE: {}\n    command:", state.display()));
    let result = run_job_with_env(dir.path(), &yaml, &["--workers", "1"], &[]);
    assert_eq!(result.code, Some(1), "three tasks fail; stderr: {}", result.stderr);
    let failures = result.report["failures"].as_array().expect("failures");
    let mut failed: Vec<&str> = failures.iter().filter_map(|f| f["task"].as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, ["000001", "000002", "000003"], "{failures:?}");
    for failure in failures {
        let error = failure["error"].as_str().unwrap_or_default();
        assert!(error.contains("Permission denied"), "{error}");
    }
    assert!(!outside.exists(), "a task wrote outside its scratch directory");
    assert!(!Path::new(&in_tmp).exists(), "a task wrote in /tmp");
    assert!(!state.join("forged-spec.json").exists(), "a task wrote into the grid's state");
    // The job failed, so its results stay in the grid's store: task 000000's is there.
    let found = Command::new("find").arg(&state).args(["-name", "result.txt"]).output().expect("find");
    let found = String::from_utf8_lossy(&found.stdout).to_string();
    assert_eq!(found.lines().count(), 1, "{found}");
    assert_eq!(read(PathBuf::from(found.trim())), "kept");
}

/// Runs `batchgrid run` on `yaml` inside a new network namespace where the shipped metadata
/// rule is loaded for `nobody` and a listener on 169.254.169.254:80 stands in for the metadata
/// service; tasks run as `nobody`. Returns the run and what the script said.
fn run_in_namespace(dir: &Path, yaml: &str) -> (RunResult, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("packaging/nftables/batchgrid-task.nft")).expect("rule");
    let rule = dir.join("rule.nft");
    std::fs::write(&rule, shipped.replace("\"batchgrid-task\"", &format!("\"{TASK_USER}\""))).expect("write rule");
    let job_path = dir.join("job.yaml");
    std::fs::write(&job_path, yaml).expect("write job");
    let state = dir.join("state");
    let script = format!(
        r#"set -eu
nft -f {rule}
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
python3 -c 'import socket, time; s = socket.socket(); s.bind(("169.254.169.254", 80)); s.listen(); time.sleep(120)' &
for _ in $(seq 50); do (exec 3<>/dev/tcp/169.254.169.254/80) 2>/dev/null && break; sleep 0.1; done
(exec 3<>/dev/tcp/169.254.169.254/80) && echo "worker side: connected" >&2
status=0
"$@" || status=$?
kill %1
exit $status
"#,
        rule = rule.display()
    );
    let output = Command::new("unshare")
        .args(["--net", "bash", "-c", &script, "namespace"])
        .arg(env!("CARGO_BIN_EXE_batchgrid"))
        .args(["run", "--json", "--keep-state", "--workers", "1", "--state-dir"])
        .arg(&state)
        .arg(&job_path)
        .env("BATCHGRID_TASK_USER", TASK_USER)
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); this test needs root and nftables, as `make test` has; exit {:?}\n{stdout}\n{stderr}",
            output.status.code()
        )
    });
    (RunResult { code: output.status.code(), report, stderr: stderr.clone(), state_dir: state }, stderr)
}

/// With a task user, the task runs as that user, the shipped rule (loaded for real, in a
/// network namespace) refuses it the metadata address that the worker's side reaches, and it
/// cannot read the worker's environment through `/proc`.
#[test]
fn a_task_runs_as_the_task_user_and_cannot_reach_the_metadata_service() {
    let dir = traversable_dir();
    let command = r#"[bash, -c, 'id -u > "$1/uid.txt"; if (exec 3<>/dev/tcp/169.254.169.254/80) 2>/dev/null; then echo reached; else echo refused; fi > "$1/metadata.txt"; if cat /proc/$PPID/environ > /dev/null 2>&1; then echo readable; else echo unreadable; fi > "$1/environ.txt"', "{input}", "{output}"]"#;
    let (result, said) = run_in_namespace(dir.path(), &job(dir.path(), 2, command));
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert!(said.contains("worker side: connected"), "the stand-in metadata service must be up: {said}");
    let nobody = Command::new("id").args(["-u", TASK_USER]).output().expect("id");
    for task in ["000000", "000001"] {
        let out = dir.path().join("out").join(task);
        assert_eq!(read(out.join("uid.txt")), String::from_utf8_lossy(&nobody.stdout).trim(), "task {task}'s user");
        assert_eq!(read(out.join("metadata.txt")), "refused", "task {task} reached the metadata address");
        assert_eq!(read(out.join("environ.txt")), "unreadable", "task {task} read its supervisor's environment");
    }
}

/// The worker as its unit runs it: an unprivileged user holding only CAP_SETUID, CAP_SETGID and
/// CAP_KILL (ambient), in the task user's group. It runs tasks as the task user, shares files
/// with them through the group (inputs in, outputs out), and empties even a slot a task closed
/// to it. Without the capabilities, the start-up check stops it with a message naming them.
#[test]
fn an_unprivileged_worker_with_the_units_capabilities_runs_tasks_as_the_task_user() {
    let dir = traversable_dir();
    std::os::unix::fs::chown(dir.path(), Some(WORKER_UID.parse().expect("uid")), None).expect("chown");
    // The binary, where the worker's user can run it (the target directory is under /root).
    let binary = dir.path().join("batchgrid");
    std::fs::copy(env!("CARGO_BIN_EXE_batchgrid"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let nogroup = String::from_utf8_lossy(&Command::new("id").args(["-g", TASK_USER]).output().expect("id").stdout)
        .trim()
        .to_owned();
    let setpriv = |capabilities: bool| {
        let mut command = Command::new("setpriv");
        command.args([
            &format!("--reuid={WORKER_UID}"),
            &format!("--regid={WORKER_UID}"),
            &format!("--groups={nogroup}"),
        ]);
        if capabilities {
            command.args([
                "--inh-caps=+setuid,+setgid,+kill",
                "--ambient-caps=+setuid,+setgid,+kill",
                "--bounding-set=-all,+setuid,+setgid,+kill",
            ]);
        } else {
            command.args(["--inh-caps=-all", "--bounding-set=-all"]);
        }
        command.arg("--no-new-privs").arg(&binary).env("HOME", dir.path()).env("BATCHGRID_TASK_USER", TASK_USER);
        command
    };

    // The image's check, as its validate phase runs it.
    let check = dir.path().join("check");
    std::fs::create_dir(&check).expect("mkdir");
    std::os::unix::fs::chown(&check, Some(WORKER_UID.parse().expect("uid")), None).expect("chown");
    let refused =
        setpriv(false).args(["worker", "--check-sandbox", "--scratch-dir"]).arg(&check).output().expect("setpriv");
    assert!(!refused.status.success(), "a worker without the capabilities must not start: {}", text(&refused));
    assert!(text(&refused).contains("CAP_SETUID"), "the error names what is missing: {}", text(&refused));
    let checked =
        setpriv(true).args(["worker", "--check-sandbox", "--scratch-dir"]).arg(&check).output().expect("setpriv");
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains(&format!("tasks run as {TASK_USER} user")), "{}", text(&checked));

    // A whole job: the first task also hides a directory from the worker in its slot.
    let command = r#"[sh, -c, 'id -u > "$1/uid.txt" && cat "$0" > "$1/copy.txt" && mkdir "$TMPDIR/hidden" && echo x > "$TMPDIR/hidden/f" && chmod 000 "$TMPDIR/hidden"', "{input}", "{output}"]"#;
    std::fs::write(dir.path().join("job.yaml"), job(dir.path(), 3, command)).expect("write job");
    let output = setpriv(true)
        .args(["run", "--json", "--keep-state", "--workers", "1", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg(dir.path().join("job.yaml"))
        .output()
        .expect("setpriv");
    assert!(output.status.success(), "{}", text(&output));
    let nobody = String::from_utf8_lossy(&Command::new("id").args(["-u", TASK_USER]).output().expect("id").stdout)
        .trim()
        .to_owned();
    for (n, task) in ["000000", "000001", "000002"].iter().enumerate() {
        let out = dir.path().join("out").join(task);
        assert_eq!(read(out.join("uid.txt")), nobody, "task {task}'s user");
        assert_eq!(read(out.join("copy.txt")), format!("line-{n}"), "task {task} read its input");
    }
    let scratch = dir.path().join("state/scratch");
    let leftovers =
        Command::new("find").arg(&scratch).args(["-mindepth", "1", "-not", "-type", "d"]).output().expect("find");
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "the slots were emptied, hidden directories too: {}",
        text(&leftovers)
    );
}

/// `batchgrid worker --print-config` says how tasks are sandboxed.
#[test]
fn the_worker_config_names_the_task_sandbox() {
    let output = batchgrid()
        .args(["worker", "--print-config", "--state-dir", "/nonexistent", "--task-user", "batchgrid-task"])
        .output()
        .expect("run");
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(config["task_user"], "batchgrid-task");
    assert_eq!(config["task_files"], "enforced", "this machine's kernel confines tasks (Landlock)");
}
