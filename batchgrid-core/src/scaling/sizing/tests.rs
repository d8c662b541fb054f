use std::time::Duration;

use super::*;

fn settings() -> SizingSettings {
    SizingSettings {
        tasks_per_instance: 2,
        target_completion: Duration::from_secs(15 * 60),
        scale_in_delay: Duration::from_secs(10 * 60),
        assumed_task_time: Duration::from_secs(60),
    }
}

fn group(min: u32, max: u32, desired: u32) -> GroupState {
    GroupState { min, max, desired }
}

fn job(remaining: u64, secs: Option<u64>) -> JobWork {
    JobWork { remaining, mean_task_time: secs.map(Duration::from_secs) }
}

fn input(jobs: Vec<JobWork>, queued: u64, group: GroupState, idle_for: Option<Duration>) -> SizingInput {
    SizingInput { jobs, queued, group, idle_for, warm_up: None }
}

fn desired(decision: &Decision, current: u32) -> u32 {
    match decision {
        Decision::Set { desired, .. } => *desired,
        Decision::Hold { .. } => current,
    }
}

fn stage(stage: u32, kind: StageKind, expected: Option<u64>, done: u64, failed: u64) -> StageProgress {
    StageProgress { stage, name: format!("s{stage}"), kind, expected, done, failed, retrying: 0 }
}

#[test]
fn remaining_counts_stages_not_yet_opened() {
    // map 20 (5 done, 1 failed) -> map (unopened) -> reduce (unopened)
    let stages = [
        stage(0, StageKind::Map, Some(20), 5, 1),
        stage(1, StageKind::Map, None, 2, 0),
        stage(2, StageKind::Reduce, None, 0, 0),
    ];
    // stage 0: 14 left; stage 1: 19 will come, 2 done: 17; reduce: 1.
    assert_eq!(remaining_tasks(&stages), 14 + 17 + 1);
    // Still splitting: only what is known so far.
    let splitting = [stage(0, StageKind::Map, None, 3, 0), stage(1, StageKind::Reduce, None, 0, 0)];
    assert_eq!(remaining_tasks(&splitting), 1);
    let finished = [stage(0, StageKind::Map, Some(4), 4, 0), stage(1, StageKind::Reduce, Some(1), 1, 0)];
    assert_eq!(remaining_tasks(&finished), 0);
}

#[test]
fn a_group_at_zero_scales_out_the_moment_tasks_are_queued() {
    // A job still splitting: no task count yet, but its first tasks are in the queue.
    let decision = decide(&input(vec![job(0, None)], 10, group(0, 10, 0), None), &settings());
    assert!(matches!(decision, Decision::Set { desired: 1, .. }), "{decision:?}");
}

#[test]
fn ten_tasks_get_one_instance_per_two_tasks_at_most() {
    // 10 tasks of an hour each: time alone asks for 20 instances, but only 5 can be busy.
    let decision = decide(&input(vec![job(10, Some(3600))], 10, group(0, 50, 0), None), &settings());
    assert_eq!(desired(&decision, 0), 5);
    // 10 tasks of a second: one instance finishes them long before the target.
    let decision = decide(&input(vec![job(10, Some(1))], 10, group(0, 50, 0), None), &settings());
    assert_eq!(desired(&decision, 0), 1);
}

#[test]
fn a_million_tasks_are_capped_at_max_size() {
    let decision = decide(&input(vec![job(1_000_000, Some(30))], 1_000, group(0, 50, 0), None), &settings());
    match decision {
        Decision::Set { desired, reason } => {
            assert_eq!(desired, 50);
            assert!(reason.contains("capped at max_size 50"), "{reason}");
        }
        other => panic!("expected a scale-out, got {other:?}"),
    }
    // And at the minimum when the work is small: a group that keeps 3 warm stays at 3.
    let decision = decide(&input(vec![job(2, Some(1))], 2, group(3, 50, 3), None), &settings());
    assert_eq!(desired(&decision, 3), 3);
}

#[test]
fn the_observed_task_time_replaces_the_assumption() {
    // 6,000 tasks: assumed 60 s -> 6000*60/(2*900) = 200 instances; observed 3 s -> 10.
    let assumed = instances_needed(&[job(6_000, None)], 0, &settings());
    let observed = instances_needed(&[job(6_000, Some(3))], 0, &settings());
    assert_eq!((assumed, observed), (200, 10));
}

#[test]
fn queued_messages_beyond_the_known_tasks_count_as_work() {
    // Nothing attributed to a job (its task count unknown), 40 messages queued.
    // 40 x 60 s assumed = 2,400 s of work over 2 slots x 900 s: 2 instances.
    assert_eq!(instances_needed(&[], 40, &settings()), 2);
    assert_eq!(instances_needed(&[], 0, &settings()), 0);
}

#[test]
fn no_scale_in_while_work_remains() {
    let decision = decide(&input(vec![job(3, Some(60))], 3, group(0, 10, 8), None), &settings());
    assert!(matches!(decision, Decision::Hold { .. }), "{decision:?}");
}

#[test]
fn idle_groups_return_to_the_minimum_after_the_delay_only() {
    let s = settings();
    let early = decide(&input(vec![], 0, group(1, 10, 6), Some(Duration::from_secs(599))), &s);
    assert!(matches!(early, Decision::Hold { .. }), "{early:?}");
    let due = decide(&input(vec![], 0, group(1, 10, 6), Some(Duration::from_secs(600))), &s);
    assert_eq!(desired(&due, 6), 1);
    let at_min = decide(&input(vec![], 0, group(1, 10, 1), Some(Duration::from_secs(3600))), &s);
    assert!(matches!(at_min, Decision::Hold { .. }), "{at_min:?}");
}

/// Month-end: a week idle, 100,000 tasks of 20 s arrive, they drain, idle again. Simulated in
/// steps of one minute; instances take two minutes to boot and each runs 2 tasks at once.
#[test]
fn a_month_end_trace_scales_from_zero_to_max_and_back() {
    let s = settings();
    let step = Duration::from_secs(60);
    let task_secs = 20;
    let (min, max) = (0, 40);
    let mut desired_now = 0u32;
    let mut booting: Vec<(u32, u32)> = vec![]; // (ready at minute, count)
    let mut running = 0u32;
    let mut remaining = 0u64;
    let mut idle_since: Option<u32> = Some(0);
    let mut peak = 0;
    let mut minutes_to_drain = None;
    let mut back_to_min_at = None;
    let mut history = vec![];

    for minute in 0..24 * 60u32 {
        if minute == 600 {
            remaining = 100_000; // the month-end batch arrives
        }
        // Instances that finished booting join; a lowered target removes idle instances.
        running += booting.iter().filter(|(at, _)| *at == minute).map(|(_, n)| n).sum::<u32>();
        booting.retain(|(at, _)| *at > minute);
        let pending: u32 = booting.iter().map(|(_, n)| n).sum();
        if running + pending > desired_now {
            running = desired_now.saturating_sub(pending);
        }
        // Work done this minute.
        let capacity = u64::from(running) * u64::from(s.tasks_per_instance) * (60 / task_secs);
        remaining = remaining.saturating_sub(capacity);
        if remaining == 0 && minute >= 600 && minutes_to_drain.is_none() {
            minutes_to_drain = Some(minute - 600);
        }
        match (remaining, idle_since) {
            (0, None) => idle_since = Some(minute),
            (n, _) if n > 0 => idle_since = None,
            _ => {}
        }
        let observed = (minute > 600).then_some(task_secs);
        let jobs = if remaining > 0 { vec![job(remaining, observed)] } else { vec![] };
        let queued = remaining.min(1_000);
        let idle_for = idle_since.map(|since| step * (minute - since));
        let decision = decide(&input(jobs, queued, group(min, max, desired_now), idle_for), &s);
        let next = desired(&decision, desired_now);
        assert!((min..=max).contains(&next), "minute {minute}: {next} outside {min}..={max}");
        if remaining > 0 {
            assert!(next >= desired_now, "minute {minute}: scaled in while {remaining} tasks remain");
        }
        if next > desired_now {
            booting.push((minute + 2, next - desired_now));
        }
        if next < desired_now && minute > 600 && back_to_min_at.is_none() && next == min {
            back_to_min_at = Some(minute);
        }
        desired_now = next;
        peak = peak.max(desired_now);
        history.push(desired_now);
    }

    assert!(history[..600].iter().all(|&d| d == 0), "idle before the batch: no instance");
    assert_eq!(history[600], max, "the batch arrives with the assumed task time: straight to max_size");
    assert_eq!(peak, max);
    // 100,000 tasks of 20 s on 40 instances x 2 slots: 25,000 s, about 417 minutes plus boot.
    let drained = minutes_to_drain.expect("the batch drains");
    assert!((417..=422).contains(&drained), "drained in {drained} minutes");
    let back = back_to_min_at.expect("the group returns to its minimum");
    let delay = (s.scale_in_delay.as_secs() / 60) as u32;
    assert_eq!(back, 600 + drained + delay, "back to min exactly one scale-in delay after the work ran out");
    assert!(history[back as usize..].iter().all(|&d| d == min), "idle after the batch: no instance");
}

#[test]
fn a_warm_up_raises_the_group_before_any_work_and_holds_it_against_scale_in() {
    let settings = SizingSettings { scale_in_delay: Duration::from_secs(60), ..SizingSettings::default() };
    let warm = crate::scaling::warm_up::WarmUp {
        instances: 6,
        schedule: "month-end".into(),
        fire_time: chrono::DateTime::UNIX_EPOCH,
    };
    let group = GroupState { min: 0, max: 4, desired: 0 };
    let idle = SizingInput { warm_up: Some(warm.clone()), ..input(vec![], 0, group, Some(Duration::from_secs(3600))) };
    match decide(&idle, &settings) {
        Decision::Set { desired, reason } => {
            assert_eq!(desired, 4, "capped at max_size");
            assert!(reason.contains("month-end"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // At that size, however long idle: held, not scaled in.
    let held = SizingInput { group: GroupState { desired: 4, ..group }, ..idle };
    assert!(matches!(decide(&held, &settings), Decision::Hold { .. }));
    // Work larger than the warm-up sizes the group as usual.
    let busy = SizingInput {
        warm_up: Some(crate::scaling::warm_up::WarmUp { instances: 1, ..warm }),
        ..input(vec![job(100, Some(60))], 0, GroupState { min: 0, max: 10, desired: 0 }, None)
    };
    assert!(matches!(decide(&busy, &settings), Decision::Set { desired: 4, .. }));
}
