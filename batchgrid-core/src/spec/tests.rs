use super::*;

fn parse(text: &str) -> Result<JobSpec, SpecError> {
    let dir = std::env::temp_dir();
    let input = dir.join("batchgrid-spec-test-input.csv");
    std::fs::write(&input, "a\nb\n").expect("write input");
    let text = text.replace("INPUT", &input.display().to_string());
    parse_job(&text, "job.yaml", &dir, &Overrides::default())
}

const GOOD: &str = "\
name: claims
input:
  path: INPUT
split:
  lines: 100
  header: true
stages:
  - name: validate
    command: [sh, -c, 'cp {input} {output}/']
    timeout: 5m
  - name: merge
    kind: reduce
    processor: noop
    params: {x: 1}
output:
  path: ../elsewhere/./out
retry:
  max_attempts: 4
  backoff: 1s
";

#[test]
fn accepts_a_full_job() {
    let spec = parse(GOOD).expect("valid");
    assert_eq!(spec.name, "claims");
    assert_eq!(spec.stages.len(), 2);
    assert_eq!(spec.stages[0].timeout, Duration::from_secs(300));
    assert_eq!(spec.stages[1].kind, StageKind::Reduce);
    assert_eq!(spec.retry.max_attempts, 4);
    assert!(matches!(spec.split, SplitSpec::Lines { header: true, .. }));
    assert!(spec.output.path.is_absolute());
    assert!(!spec.output.path.to_string_lossy().contains(".."), "{}", spec.output.path.display());
}

fn error_of(text: &str) -> String {
    let error = parse(text).expect_err("must be rejected");
    let line = error.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn unknown_key_names_line_and_field() {
    let line = error_of(&GOOD.replace("    timeout: 5m\n", "    timeout: 5m\n    retries: 3\n"));
    assert!(line.starts_with("job.yaml:11:"), "{line}");
    assert!(line.contains("stages[0]") && line.contains("retries"), "{line}");
}

#[test]
fn wrong_type_names_line_and_field() {
    let line = error_of(&GOOD.replace("max_attempts: 4", "max_attempts: many"));
    assert!(line.starts_with("job.yaml:18:"), "{line}");
    assert!(line.contains("retry.max_attempts"), "{line}");
}

#[test]
fn missing_input_names_line_and_field() {
    let line = error_of(&GOOD.replace("path: INPUT", "path: /nonexistent/claims.csv"));
    assert!(line.starts_with("job.yaml:3:3: input.path: "), "{line}");
    assert!(line.contains("does not exist"), "{line}");
}

#[test]
fn zero_chunk_size_names_line_and_field() {
    let line = error_of(&GOOD.replace("lines: 100", "lines: 0"));
    assert!(line.starts_with("job.yaml:5:3: split.lines: "), "{line}");
}

#[test]
fn impossible_combinations_are_rejected() {
    let both = error_of(&GOOD.replace("    processor: noop\n", "    processor: noop\n    command: [true]\n"));
    assert!(both.contains("stages[1]: a stage needs exactly one"), "{both}");
    let reduce_first = error_of(&GOOD.replace("  - name: validate\n", "  - name: validate\n    kind: reduce\n"));
    assert!(reduce_first.contains("stages[0].kind"), "{reduce_first}");
    let duplicate = error_of(&GOOD.replace("name: merge", "name: validate"));
    assert!(duplicate.contains("stages[1].name"), "{duplicate}");
    let program = error_of(&GOOD.replace("command: [sh,", "command: [no-such-program-xyz,"));
    assert!(program.contains("stages[0].command[0]") && program.contains("not on PATH"), "{program}");
    let attempts = error_of(&GOOD.replace("max_attempts: 4", "max_attempts: 0"));
    assert!(attempts.contains("retry.max_attempts"), "{attempts}");
}

#[test]
fn byte_sizes_parse_with_units() {
    assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_byte_size("10KB"), Ok(10_000));
    assert_eq!(parse_byte_size("512"), Ok(512));
    assert!(parse_byte_size("12 parsecs").is_err());
    let spec = parse(&GOOD.replace("lines: 100", "bytes: 1MiB")).expect("valid");
    assert_eq!(spec.split, SplitSpec::Bytes { bytes: NonZeroU64::new(1 << 20).expect("nonzero"), header: true });
}

#[test]
fn alias_bomb_is_refused_quickly() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = (b'a' + i - 1) as char;
        let this = (b'a' + i) as char;
        text.push_str(&format!("{this}: &{this} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    text.push_str("name: *l\n");
    let started = std::time::Instant::now();
    let error = parse(&text).expect_err("rejected");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(error.to_string().starts_with("job.yaml"), "{error}");
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let started = std::time::Instant::now();
    let text = format!("name: {}{}\n", "[".repeat(500_000), "]".repeat(500_000));
    let error = parse(&text).expect_err("rejected");
    assert!(error.to_string().contains("job.yaml:1:71: (document): nesting deeper than 64"), "{error}");
    let quoted = format!("name: don't\nother: {}{}\n", "{".repeat(100), "}".repeat(100));
    assert!(
        parse(&quoted).expect_err("rejected").to_string().contains("nesting deeper"),
        "apostrophes do not hide depth"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn retry_delay_doubles_up_to_the_cap() {
    let policy = RetryPolicy { max_attempts: 5, backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(5) };
    assert_eq!(policy.delay_after(1), Duration::from_secs(1));
    assert_eq!(policy.delay_after(2), Duration::from_secs(2));
    assert_eq!(policy.delay_after(3), Duration::from_secs(4));
    assert_eq!(policy.delay_after(4), Duration::from_secs(5));
    assert_eq!(policy.delay_after(400), Duration::from_secs(5));
}

#[test]
fn more_attempts_than_the_grid_honours_are_refused_naming_field_and_line() {
    let spec = parse(GOOD).expect("valid");
    assert_eq!(spec.retry.max_attempts, 4);
    let text = GOOD.replace("INPUT", "x");
    spec.check_against_grid(Some(4 + crate::queue::RELEASE_MARGIN), Some(&text), "job.yaml")
        .expect("room for releases");
    spec.check_against_grid(None, Some(&text), "job.yaml").expect("an unknown limit is no limit");
    let error = spec.check_against_grid(Some(5), Some(&text), "job.yaml").expect_err("refused");
    let line = text.lines().position(|l| l.contains("max_attempts")).expect("line") + 1;
    assert_eq!(error.field, "retry.max_attempts");
    assert_eq!(error.position.map(|p| p.line), Some(line));
    let message = error.to_string();
    assert!(message.contains(&format!("job.yaml:{line}")) && message.contains("at most 3"), "{message}");
}

#[test]
fn on_stage_failure_defaults_to_stop_and_is_validated() {
    assert_eq!(parse(GOOD).expect("valid").on_stage_failure, StageFailurePolicy::Stop);
    let text = format!("{GOOD}on_stage_failure: continue\n");
    assert_eq!(parse(&text).expect("valid").on_stage_failure, StageFailurePolicy::Continue);
    let text = format!("{GOOD}on_stage_failure: sometimes\n");
    let error = parse(&text).expect_err("an unknown policy");
    assert_eq!(error.field, "on_stage_failure");
    assert_eq!(error.position.map(|p| p.line), Some(text.lines().count()));
    assert!(error.message.contains("stop") && error.message.contains("continue"), "{error}");
}

#[test]
fn deadline_is_a_duration_from_submission() {
    let spec = parse(&format!("{GOOD}deadline: 2h\n")).expect("valid");
    assert_eq!(spec.deadline, Some(Duration::from_secs(7200)));
    assert_eq!(parse(GOOD).expect("valid").deadline, None, "no deadline unless asked");
}

#[test]
fn bad_deadline_names_line_and_field() {
    let line = error_of(&format!("{GOOD}deadline: soon\n"));
    assert!(line.starts_with("job.yaml:20:") && line.contains("deadline"), "{line}");
    let line = error_of(&format!("{GOOD}deadline: 0s\n"));
    assert!(line.starts_with("job.yaml:20:") && line.contains("deadline") && line.contains("more than zero"), "{line}");
}

#[test]
fn priority_defaults_to_the_middle_and_is_checked_with_its_line() {
    assert_eq!(parse(GOOD).expect("valid").priority, 50);
    let spec = parse(&format!("{GOOD}priority: 90\n")).expect("valid");
    assert_eq!(spec.priority, 90);
    let line = error_of(&format!("{GOOD}priority: 101\n"));
    assert!(line.starts_with("job.yaml:20:") && line.contains("priority") && line.contains("0 and 100"), "{line}");
    let line = error_of(&format!("{GOOD}priority: -1\n"));
    assert!(line.contains("priority"), "{line}");
    let overrides = Overrides { priority: Some(7), ..Overrides::default() };
    let dir = std::env::temp_dir();
    let text = format!("{GOOD}priority: 90\n")
        .replace("INPUT", &dir.join("batchgrid-spec-test-input.csv").display().to_string());
    std::fs::write(dir.join("batchgrid-spec-test-input.csv"), "a\n").expect("input");
    assert_eq!(parse_job(&text, "job.yaml", &dir, &overrides).expect("valid").priority, 7, "the flag wins");
    // A stored spec from before priorities reads with the default.
    let mut stored = serde_json::to_value(parse(GOOD).expect("valid")).expect("json");
    stored.as_object_mut().expect("object").remove("priority");
    assert_eq!(serde_json::from_value::<JobSpec>(stored).expect("old spec").priority, 50);
}

#[test]
fn a_manifest_lists_the_inputs_instead_of_a_path() {
    let manifest = |input: &str, split: &str| {
        GOOD.replace("  path: INPUT\n", input).replace("split:\n  lines: 100\n  header: true\n", split)
    };
    let spec = parse(&manifest("  manifest: s3://raw-bucket/lists/month.txt\n", "")).expect("a manifest job");
    let location = Box::new(InputSpec::S3 { bucket: "raw-bucket".into(), key: "lists/month.txt".into() });
    assert_eq!(spec.input, InputSpec::Manifest { location, format: crate::manifest::ManifestFormat::Lines });
    assert_eq!(spec.split, SplitSpec::PerFile);
    let inventory = parse(&manifest("  manifest: s3://inventory/data/0.csv\n", "")).expect("inventory");
    assert!(matches!(
        inventory.input,
        InputSpec::Manifest { format: crate::manifest::ManifestFormat::S3Inventory, .. }
    ));
    let told = parse(&manifest("  manifest: s3://raw-bucket/list\n  format: s3-inventory\n", "")).expect("told");
    assert!(matches!(told.input, InputSpec::Manifest { format: crate::manifest::ManifestFormat::S3Inventory, .. }));

    let cases = [
        (manifest("  path: INPUT\n  manifest: s3://raw-bucket/list.txt\n", ""), "input:", "exactly one of `path`"),
        (manifest("  format: lines\n", ""), "input.format", "describes a `manifest`"),
        (
            manifest("  manifest: s3://raw-bucket/list.txt\n", "split:\n  lines: 10\n"),
            "split",
            "one task per listed object",
        ),
        (manifest("  manifest: s3://raw-bucket/lists/\n", ""), "input.manifest", "not a prefix"),
        (manifest("  manifest: s3://raw-bucket/l.txt\n  format: xml\n", ""), "format", "unknown variant"),
    ];
    for (text, field, says) in cases {
        let line = error_of(&text);
        assert!(line.contains(field) && line.contains(says), "{field}: {line}");
    }
}
