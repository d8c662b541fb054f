use super::*;

#[test]
fn durations_fall_in_the_first_bucket_that_holds_them_and_the_rest_in_inf() {
    let times = TimeHistogram::of(&[0, 90, 99, 200, 3_000_000, 3_600_001]);
    let buckets = duration_buckets(&times);
    let count = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).map(|(_, c)| *c);
    assert_eq!(count(0.1), Some(2), "0 and 90 ms");
    assert_eq!(count(0.25), Some(2), "99 ms (its store bucket, 96..104 ms, straddles 0.1 s) and 200 ms");
    assert_eq!(count(3600.0), Some(1));
    assert_eq!(count(f64::MAX), Some(1), "beyond the last bound");
    assert_eq!(buckets.iter().map(|(_, c)| c).sum::<u64>(), 6, "every duration counted once");
}

#[test]
fn an_empty_grid_still_declares_every_family() {
    let body = MetricsSnapshot::default().encode().expect("encode");
    for family in
        ["jobs", "tasks", "task_duration_seconds", "queue_messages", "workers", "aws_requests", "manager_errors"]
    {
        assert!(body.contains(&format!("# TYPE batchgrid_{family} ")), "{family}: {body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
}
