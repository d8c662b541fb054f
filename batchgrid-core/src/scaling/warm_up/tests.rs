use chrono::TimeZone;

use super::*;
use crate::schedule::{parse_zone, Calendar, CronExpr};

fn month_end(warm_up: Duration, last_run: Option<JobWork>) -> WarmSchedule {
    let schedule = Schedule::new(
        CronExpr::parse("0 2 L * *").expect("cron"),
        parse_zone("Europe/Paris").expect("zone"),
        Calendar::default(),
    );
    WarmSchedule { name: "month-end".into(), schedule, warm_up, last_run }
}

/// 2026-12-31 02:00 in Paris is 01:00 UTC.
fn fire() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 31, 1, 0, 0).single().expect("time")
}

fn minutes(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::minutes(n)
}

#[test]
fn the_group_is_raised_only_within_the_warm_up_before_a_fire_time() {
    let settings = SizingSettings::default();
    let schedules = [month_end(Duration::from_secs(600), None)];
    assert_eq!(warm_up_at(&schedules, fire() - minutes(11), &settings), None, "too early");
    let warm = warm_up_at(&schedules, fire() - minutes(10), &settings).expect("in the window");
    assert_eq!(warm, WarmUp { instances: 1, schedule: "month-end".into(), fire_time: fire() });
    assert!(warm_up_at(&schedules, fire() - minutes(1), &settings).is_some());
    // Once it has fired, the next fire time is a month away: the job itself sizes the group.
    assert_eq!(warm_up_at(&schedules, fire(), &settings), None);
}

#[test]
fn the_size_is_what_the_previous_run_needed() {
    // 12,000 tasks of 60 s over 2 slots an instance and a 15-minute target: 400 instances.
    let settings = SizingSettings::default();
    let last = JobWork { remaining: 12_000, mean_task_time: Some(Duration::from_secs(60)) };
    let schedules = [month_end(Duration::from_secs(600), Some(last))];
    let warm = warm_up_at(&schedules, fire() - minutes(5), &settings).expect("warm");
    assert_eq!(warm.instances, 400);
}

#[test]
fn without_warm_up_or_far_from_a_fire_time_nothing_is_held() {
    let settings = SizingSettings::default();
    assert_eq!(warm_up_at(&[], fire(), &settings), None);
    let schedules = [month_end(Duration::ZERO, None)];
    assert_eq!(warm_up_at(&schedules, fire() - minutes(1), &settings), None, "a zero warm-up holds nothing early");
}

#[test]
fn the_largest_warm_up_in_force_wins() {
    let settings = SizingSettings::default();
    let small = month_end(Duration::from_secs(600), None);
    let large = WarmSchedule {
        name: "big".into(),
        last_run: Some(JobWork { remaining: 100, mean_task_time: Some(Duration::from_secs(900)) }),
        ..month_end(Duration::from_secs(600), None)
    };
    let warm = warm_up_at(&[small, large], fire() - minutes(2), &settings).expect("warm");
    assert_eq!((warm.schedule.as_str(), warm.instances), ("big", 50));
}
