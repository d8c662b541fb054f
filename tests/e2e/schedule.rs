//! `batchgrid schedule next`: fire times printed without any grid; bad input named, no panic.

use std::process::Output;

use crate::harness::batchgrid;

fn schedule_next(args: &[&str]) -> Output {
    batchgrid().args(["schedule", "next"]).args(args).output().expect("run batchgrid")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// The one stderr line of a refused command, after checking it failed cleanly.
fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn prints_month_ends_across_daylight_saving_with_offsets() {
    let output =
        schedule_next(&["--cron", "0 2 L * *", "--tz", "Europe/Paris", "--from", "2026-09-15T00:00:00Z", "-n", "3"]);
    assert_eq!(
        stdout_lines(&output),
        ["2026-09-30T02:00:00+02:00", "2026-10-31T02:00:00+01:00", "2026-11-30T02:00:00+01:00"]
    );
}

#[test]
fn the_spring_gap_fires_once_right_after_it() {
    let output = schedule_next(&[
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T12:00:00-05:00",
        "-n",
        "2",
    ]);
    assert_eq!(stdout_lines(&output), ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]);
}

#[test]
fn a_holiday_file_rolls_the_last_business_day_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let holidays = dir.path().join("holidays.txt");
    std::fs::write(&holidays, "# year-end\n2026-12-31\n").expect("holidays");
    let output = schedule_next(&[
        "--cron",
        "0 18 LW * *",
        "--tz",
        "Europe/Paris",
        "--from",
        "2026-12-01T00:00:00+01:00",
        "-n",
        "2",
        "--exclude",
        holidays.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(stdout_lines(&output), ["2026-12-30T18:00:00+01:00", "2027-01-29T18:00:00+01:00"]);
}

#[test]
fn without_from_it_starts_now() {
    let output = schedule_next(&["--cron", "* * * * *", "--tz", "UTC", "-n", "2"]);
    let lines = stdout_lines(&output);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.ends_with(":00+00:00")), "{lines:?}");
}

#[test]
fn bad_input_names_the_field_and_exits_non_zero() {
    let line = refused(&schedule_next(&["--cron", "0 2 X * *", "--tz", "Europe/Paris"]));
    assert!(line.starts_with("error: --cron: `0 2 X * *`: "), "{line}");
    let line = refused(&schedule_next(&["--cron", "0 2 30 2 *", "--tz", "UTC"]));
    assert_eq!(line, "error: --cron: `0 2 30 2 *` never fires");
    let line = refused(&schedule_next(&["--cron", "0 2 L * *", "--tz", "Europe/Pariss"]));
    assert_eq!(line, "error: --tz: `Europe/Pariss` is not an IANA time zone (such as Europe/Paris or UTC)");
    let line = refused(&schedule_next(&["--cron", "0 2 L * *", "--tz", "UTC", "--from", "tomorrow"]));
    assert!(line.starts_with("error: --from: `tomorrow` is not an RFC 3339 time"), "{line}");

    let dir = tempfile::tempdir().expect("temp dir");
    let holidays = dir.path().join("holidays.txt");
    std::fs::write(&holidays, "2026-12-25\n\n2026-12-32 # typo\n").expect("holidays");
    let path = holidays.to_str().expect("utf-8 path");
    let line = refused(&schedule_next(&["--cron", "0 2 LW * *", "--tz", "UTC", "--exclude", path]));
    assert_eq!(line, format!("error: --exclude: {path}:3: `2026-12-32` is not a date (YYYY-MM-DD)"));
    let line = refused(&schedule_next(&["--cron", "0 2 LW * *", "--tz", "UTC", "--exclude", "/no/such/holidays.txt"]));
    assert!(line.starts_with("error: --exclude: /no/such/holidays.txt: cannot read holiday file"), "{line}");
}

#[test]
fn submit_at_a_past_or_offsetless_time_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.txt"), "a\n").expect("input");
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, "name: later\ninput:\n  path: in.txt\nstages:\n  - name: copy\n    command: [cat, \"{input}\"]\noutput:\n  path: out\n")
        .expect("job");
    // No manager listens there: the refusal comes before any call.
    let submit = |extra: &[&str]| {
        batchgrid()
            .arg("submit")
            .arg(&job)
            .args(extra)
            .args(["--manager", "http://127.0.0.1:9"])
            .output()
            .expect("run batchgrid")
    };
    let past = refused(&submit(&["--at", "2020-01-01T00:00+01:00"]));
    assert!(past.contains("--at: 2019-12-31T23:00:00+00:00 is in the past"), "{past}");
    let bare = refused(&submit(&["--at", "2027-01-01T00:00"]));
    assert!(bare.contains("--at: `2027-01-01T00:00` is not a time with an offset"), "{bare}");
    let zero = refused(&submit(&["--in", "0s"]));
    assert!(zero.contains("is in the past"), "{zero}");
}
