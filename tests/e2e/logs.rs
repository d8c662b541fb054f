//! What `batchgrid run` writes to its log files.

use crate::harness::{run_job, write_lines};

#[test]
fn worker_log_files_carry_no_terminal_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 4);
    let job = format!(
        "name: logs\ninput:\n  path: {}\nsplit:\n  lines: 1\nstages:\n  - name: \"true\"\n    command: [\"true\"]\n\
         output:\n  path: {}\n",
        dir.path().join("input.txt").display(),
        dir.path().join("out").display(),
    );
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    let logs = result.state_dir.join("logs");
    let mut read = 0;
    for entry in std::fs::read_dir(&logs).expect("log directory") {
        let path = entry.expect("log entry").path();
        let text = std::fs::read_to_string(&path).expect("log file");
        assert!(!text.contains("\x1b["), "{} has colour codes:\n{text}", path.display());
        if text.contains("worker started") {
            read += 1;
        }
    }
    assert_eq!(read, 2, "both workers logged to their files in {}", logs.display());
}
