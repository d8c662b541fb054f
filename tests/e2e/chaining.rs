//! Multi-stage jobs: map stages chained through the output queue, then a reduce at its barrier.

use crate::harness::{run_job, write_lines};

#[test]
fn map_map_reduce_chains_every_task_through_each_stage() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 30);
    let job = format!(
        r#"name: chain
input:
  path: {input}
split:
  lines: 4
stages:
  - name: upper
    command: [sh, -c, 'tr a-z A-Z < "$0" > "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: tag
    command: [sh, -c, 'sed "s/^/$BATCHGRID_TASK_ID:/" "$0/part.txt" > "$1/part.txt"', "{{input}}", "{{output}}"]
  - name: gather
    kind: reduce
    command: [sh, -c, 'cat "$0"/*/part.txt | sort > "$1/all.txt"', "{{input}}", "{{output}}"]
output:
  path: {output}
"#,
        input = dir.path().join("input.txt").display(),
        output = dir.path().join("out").display(),
    );
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    let stages = result.report["stages"].as_array().expect("stages");
    let done: Vec<u64> = stages.iter().map(|s| s["done"].as_u64().expect("done")).collect();
    assert_eq!(done, [8, 8, 1], "30 lines in chunks of 4: 8 map tasks per stage, one reduce");
    let all = std::fs::read_to_string(dir.path().join("out/all.txt")).expect("reduce output");
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 30, "every line went through both map stages once");
    assert!(lines.contains(&"000000:LINE-0") && lines.contains(&"000007:LINE-29"), "{all}");
}

#[test]
fn a_reduce_gets_a_directory_for_every_map_task_even_one_that_wrote_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_lines(&dir.path().join("input.txt"), 30);
    // Tasks with an odd id write nothing; the reduce lists the directories it was given.
    let job = format!(
        r#"name: sparse
input:
  path: {input}
split:
  lines: 4
stages:
  - name: some
    command: [sh, -c, 'case "$BATCHGRID_TASK_ID" in *[13579]) ;; *) cp "$0" "$1/part.txt" ;; esac', "{{input}}", "{{output}}"]
  - name: gather
    kind: reduce
    command: [sh, -c, 'cd "$0" && for d in */; do echo "${{d%/}} $(ls "$d" | wc -l)"; done > "$1/dirs.txt"', "{{input}}", "{{output}}"]
output:
  path: {output}
"#,
        input = dir.path().join("input.txt").display(),
        output = dir.path().join("out").display(),
    );
    let result = run_job(dir.path(), &job, &["--workers", "2"]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    let listing = std::fs::read_to_string(dir.path().join("out/dirs.txt")).expect("reduce output");
    let dirs: Vec<(&str, &str)> = listing.lines().filter_map(|line| line.split_once(' ')).collect();
    assert_eq!(dirs.len(), 8, "one directory per map task (30 lines in chunks of 4):\n{listing}");
    for (i, (task, files)) in dirs.iter().enumerate() {
        assert_eq!(*task, format!("{i:06}"), "{listing}");
        assert_eq!(*files, if i % 2 == 0 { "1" } else { "0" }, "odd tasks wrote nothing:\n{listing}");
    }
}
