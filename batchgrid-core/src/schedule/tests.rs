//! The schedule rules, each on a fixed clock: no test sleeps or reads the time.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use super::catch_up::{plan, CatchUp, CatchUpPolicy, MAX_BATCH};
use super::overlap::{decide, may_start_queued, Overlap, OverlapDecision};
use super::vars::Occurrence;
use super::*;

fn at(text: &str) -> DateTime<Utc> {
    parse_instant(text).expect("test time")
}

fn date(text: &str) -> NaiveDate {
    calendar::parse_date(text).expect("test date")
}

fn schedule(cron: &str, zone: &str, excluded: &[&str]) -> Schedule {
    let calendar = Calendar::from_dates(excluded.iter().map(|d| date(d)));
    Schedule::new(CronExpr::parse(cron).expect("valid cron"), parse_zone(zone).expect("valid zone"), calendar)
}

/// The next `n` fire times after `from`, as RFC 3339 with offsets.
fn next(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
    schedule.iter_after(at(from)).take(n).map(|t| t.expect("fire time").to_rfc3339()).collect()
}

// ---- expressions and calendars ---------------------------------------------------------------

#[test]
fn last_day_of_february_in_leap_and_common_years() {
    let s = schedule("0 2 L * *", "Europe/Paris", &[]);
    assert_eq!(next(&s, "2027-02-01T00:00:00Z", 1), ["2027-02-28T02:00:00+01:00"]);
    assert_eq!(next(&s, "2028-02-01T00:00:00Z", 1), ["2028-02-29T02:00:00+01:00"]);
    // 2100 is not a leap year (divisible by 100, not by 400); 2000 was.
    assert_eq!(next(&s, "2100-02-01T00:00:00Z", 1), ["2100-02-28T02:00:00+01:00"]);
    assert_eq!(next(&s, "2000-02-01T00:00:00Z", 1), ["2000-02-29T02:00:00+01:00"]);
}

#[test]
fn lw_when_the_month_ends_on_a_weekend_is_the_friday_before() {
    let s = schedule("0 18 LW * *", "Europe/Paris", &[]);
    // February 2026 ends on a Saturday, May 2026 on a Sunday, August 2026 on a Monday.
    assert_eq!(next(&s, "2026-02-01T00:00:00Z", 1), ["2026-02-27T18:00:00+01:00"]);
    assert_eq!(next(&s, "2026-05-01T00:00:00Z", 1), ["2026-05-29T18:00:00+02:00"]);
    assert_eq!(next(&s, "2026-08-01T00:00:00Z", 1), ["2026-08-31T18:00:00+02:00"]);
}

#[test]
fn lw_without_exclusions_agrees_with_crons_own_lw() {
    // Our LW is evaluated against the calendar; with no holidays it must be croner's LW.
    let ours = schedule("0 0 LW * *", "UTC", &[]);
    let croner = croner::parser::CronParser::builder().build().parse("0 0 LW * *").expect("croner parses LW");
    let mut from = at("2026-01-01T00:00:00Z").naive_utc();
    for (i, time) in ours.iter_after(at("2026-01-01T00:00:00Z")).take(36).enumerate() {
        let expected = croner.find_next_occurrence(&from, false).expect("croner next");
        assert_eq!(time.expect("fire time").naive_local(), expected, "month {i}");
        from = expected;
    }
}

#[test]
fn an_excluded_holiday_rolls_the_last_business_day_back() {
    // 31 December 2026 is a Thursday: excluded, the run moves to Wednesday the 30th.
    let s = schedule("0 2 LW * *", "Europe/Paris", &["2026-12-31"]);
    assert_eq!(next(&s, "2026-12-01T00:00:00Z", 2), ["2026-12-30T02:00:00+01:00", "2027-01-29T02:00:00+01:00"]);
    // May 2026 ends on a Sunday and its Friday is excluded: back over the weekend to Thursday.
    let s = schedule("0 2 LW * *", "Europe/Paris", &["2026-05-29"]);
    assert_eq!(next(&s, "2026-05-01T00:00:00Z", 1), ["2026-05-28T02:00:00+02:00"]);
    // Several holidays in a row roll back over all of them, never into the month before.
    let s = schedule("0 2 LW * *", "UTC", &["2026-12-31", "2026-12-30", "2026-12-29"]);
    assert_eq!(next(&s, "2026-12-01T00:00:00Z", 1), ["2026-12-28T02:00:00+00:00"]);
}

#[test]
fn other_expressions_drop_an_excluded_date_without_moving() {
    let s = schedule("0 2 L * *", "UTC", &["2026-12-31"]);
    assert_eq!(next(&s, "2026-12-01T00:00:00Z", 1), ["2027-01-31T02:00:00+00:00"]);
    let s = schedule("0 9 * * MON-FRI", "UTC", &["2026-12-25"]);
    assert_eq!(next(&s, "2026-12-24T12:00:00Z", 1), ["2026-12-28T09:00:00+00:00"]);
}

#[test]
fn nth_weekday_and_nearest_weekday_and_seconds() {
    // The second Tuesday of November 2026 is the 10th.
    assert_eq!(next(&schedule("0 6 * * 2#2", "UTC", &[]), "2026-11-01T00:00:00Z", 1), ["2026-11-10T06:00:00+00:00"]);
    // 15W: 15 November 2026 is a Sunday, so Monday the 16th.
    assert_eq!(next(&schedule("0 6 15W * *", "UTC", &[]), "2026-11-01T00:00:00Z", 1), ["2026-11-16T06:00:00+00:00"]);
    // Six fields: seconds first.
    assert_eq!(
        next(&schedule("30 0 2 * * *", "UTC", &[]), "2026-11-01T00:00:00Z", 2),
        ["2026-11-01T02:00:30+00:00", "2026-11-02T02:00:30+00:00"]
    );
}

#[test]
fn bad_expressions_and_zones_name_the_field() {
    for bad in ["", "0 2 L *", "0 2 L * * * 2026", "61 2 * * *", "0 2 X * *", "0 2 LW * MON"] {
        let error = CronExpr::parse(bad).expect_err(bad);
        assert_eq!(error.field, ScheduleField::Cron, "{bad}: {error}");
        assert!(error.to_string().starts_with("cron: "), "{error}");
    }
    let error = parse_zone("Europe/Pariss").expect_err("unknown zone");
    assert_eq!(error.to_string(), "tz: `Europe/Pariss` is not an IANA time zone (such as Europe/Paris or UTC)");
    assert_eq!(parse_instant("2026-11-30 02:00").expect_err("no offset").field, ScheduleField::From);
}

#[test]
fn holiday_files_take_comments_and_name_file_and_line_on_error() {
    let mut calendar = Calendar::default();
    calendar
        .add_holidays("# French bank holidays\n2026-12-25  # Noël\n\n  2027-01-01\n", "fr.txt")
        .expect("valid file");
    assert_eq!(calendar.dates().collect::<Vec<_>>(), [date("2026-12-25"), date("2027-01-01")]);
    let error = calendar.add_holidays("2026-12-25\n# ok\n2026-13-01\n", "fr.txt").expect_err("bad month");
    assert_eq!(error.to_string(), "exclude: fr.txt:3: `2026-13-01` is not a date (YYYY-MM-DD)");
    let error = calendar.add_holidays("25/12/2026\n", "fr.txt").expect_err("wrong format");
    assert!(error.to_string().starts_with("exclude: fr.txt:1: "), "{error}");
    let error = Calendar::default().add_holiday_file(std::path::Path::new("/nonexistent/h.txt")).expect_err("missing");
    assert!(error.to_string().starts_with("exclude: /nonexistent/h.txt: cannot read"), "{error}");
}

// ---- daylight saving -------------------------------------------------------------------------

#[test]
fn spring_gap_fires_once_right_after_the_gap_in_paris() {
    // 29 March 2026: Paris clocks jump from 02:00 to 03:00.
    let s = schedule("30 2 * * *", "Europe/Paris", &[]);
    assert_eq!(
        next(&s, "2026-03-28T12:00:00Z", 3),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    );
    // Every gap time of a dense expression fires as one, right after the gap.
    let s = schedule("*/15 * * * *", "Europe/Paris", &[]);
    assert_eq!(
        next(&s, "2026-03-29T00:40:00Z", 3),
        ["2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"]
    );
    // A search starting right at the end of the gap does not fire it again.
    assert_eq!(
        next(&schedule("30 2 * * *", "Europe/Paris", &[]), "2026-03-29T03:00:00+02:00", 1),
        ["2026-03-30T02:30:00+02:00"]
    );
}

#[test]
fn spring_gap_fires_once_right_after_the_gap_in_new_york() {
    // 8 March 2026: New York clocks jump from 02:00 to 03:00.
    let s = schedule("0 2 * * *", "America/New_York", &[]);
    assert_eq!(
        next(&s, "2026-03-07T12:00:00Z", 3),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-10T02:00:00-04:00"]
    );
    // With seconds: 02:59:59 is in the gap too.
    assert_eq!(
        next(&schedule("59 59 2 * * *", "America/New_York", &[]), "2026-03-08T00:00:00Z", 1),
        ["2026-03-08T03:00:00-04:00"]
    );
}

#[test]
fn autumn_repeat_fires_once_in_paris() {
    // 25 October 2026: Paris clocks go back from 03:00 to 02:00; 02:30 happens twice.
    let s = schedule("30 2 * * *", "Europe/Paris", &[]);
    assert_eq!(next(&s, "2026-10-24T12:00:00Z", 2), ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]);
    // A dense expression fires each wall-clock time once: no second pass through the hour.
    let s = schedule("*/30 * * * *", "Europe/Paris", &[]);
    assert_eq!(
        next(&s, "2026-10-24T23:10:00Z", 4),
        [
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
    // A manager that looks again during the second pass finds nothing to repeat.
    assert_eq!(next(&s, "2026-10-25T02:10:00+01:00", 1), ["2026-10-25T03:00:00+01:00"]);
}

#[test]
fn autumn_repeat_fires_once_in_new_york() {
    // 1 November 2026: New York clocks go back from 02:00 to 01:00; 01:30 happens twice.
    let s = schedule("30 1 * * *", "America/New_York", &[]);
    assert_eq!(next(&s, "2026-10-31T12:00:00Z", 2), ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]);
    let s = schedule("0 * * * *", "America/New_York", &[]);
    assert_eq!(
        next(&s, "2026-11-01T04:30:00Z", 3),
        ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"]
    );
}

// ---- catch-up --------------------------------------------------------------------------------

/// Month-ends at 02:00 Paris; the manager was away from mid-August to mid-November: the
/// month-ends of August, September and October were missed.
fn three_missed_month_ends(mode: CatchUp, window_days: u64, now: &str) -> Vec<String> {
    let s = schedule("0 2 L * *", "Europe/Paris", &[]);
    let policy = CatchUpPolicy { mode, window: Duration::from_secs(window_days * 86_400) };
    let plan = plan(&s, &policy, at("2026-08-15T00:00:00Z"), at(now)).expect("plan");
    assert_eq!(plan.watermark, at(now));
    plan.fire.iter().map(|t| t.to_rfc3339()).collect()
}

#[test]
fn three_missed_month_ends_under_each_catch_up_policy() {
    let back = "2026-11-01T00:30:00+01:00"; // 22.5 hours after October's month-end
    let late = "2026-11-15T12:00:00+01:00"; // 15 days after it
    assert!(three_missed_month_ends(CatchUp::Skip, 1, back).is_empty());
    assert!(three_missed_month_ends(CatchUp::Skip, 100, late).is_empty());
    assert_eq!(three_missed_month_ends(CatchUp::Latest, 1, back), ["2026-10-31T02:00:00+01:00"]);
    assert!(three_missed_month_ends(CatchUp::Latest, 1, late).is_empty(), "older than the window");
    assert_eq!(three_missed_month_ends(CatchUp::Latest, 30, late), ["2026-10-31T02:00:00+01:00"]);
    assert_eq!(three_missed_month_ends(CatchUp::All, 1, back), ["2026-10-31T02:00:00+01:00"]);
    assert_eq!(
        three_missed_month_ends(CatchUp::All, 100, late),
        ["2026-08-31T02:00:00+02:00", "2026-09-30T02:00:00+02:00", "2026-10-31T02:00:00+01:00"]
    );
    assert_eq!(
        three_missed_month_ends(CatchUp::All, 50, late),
        ["2026-09-30T02:00:00+02:00", "2026-10-31T02:00:00+01:00"],
        "August's is older than 50 days"
    );
}

#[test]
fn the_default_is_the_latest_within_a_day() {
    assert_eq!(CatchUpPolicy::default(), CatchUpPolicy { mode: CatchUp::Latest, window: Duration::from_secs(86_400) });
}

#[test]
fn an_on_time_fire_time_fires_under_every_policy() {
    let s = schedule("0 2 L * *", "Europe/Paris", &[]);
    for mode in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
        let policy = CatchUpPolicy { mode, ..Default::default() };
        let plan = plan(&s, &policy, at("2026-11-30T00:59:00Z"), at("2026-11-30T01:00:30Z")).expect("plan");
        assert_eq!(plan.fire.len(), 1, "{mode:?}");
        assert_eq!(plan.fire[0].to_rfc3339(), "2026-11-30T02:00:00+01:00");
        // The next pass, from the new watermark, fires nothing again.
        let again = super::catch_up::plan(&s, &policy, plan.watermark, at("2026-11-30T01:00:40Z")).expect("plan");
        assert!(again.fire.is_empty(), "{mode:?}");
    }
}

#[test]
fn catching_up_all_goes_on_in_batches_and_fires_each_time_once() {
    // A day of every-minute fire times: 1440, in batches, none twice, none lost.
    let s = schedule("* * * * *", "UTC", &[]);
    let policy = CatchUpPolicy { mode: CatchUp::All, window: Duration::from_secs(86_400) };
    let now = at("2026-11-30T00:00:00Z");
    let mut watermark = at("2026-11-29T00:00:00Z");
    let mut fired = Vec::new();
    for _ in 0..20 {
        let plan = plan(&s, &policy, watermark, now).expect("plan");
        assert!(plan.fire.len() <= MAX_BATCH);
        fired.extend(plan.fire);
        watermark = plan.watermark;
    }
    assert_eq!(fired.len(), 1440);
    assert!(fired.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(watermark, now);
}

// ---- overlap ---------------------------------------------------------------------------------

#[test]
fn each_overlap_policy() {
    let running = ["job-1"];
    let none: [&str; 0] = [];
    for policy in [Overlap::Skip, Overlap::Queue, Overlap::CancelPrevious, Overlap::Allow] {
        assert_eq!(decide(policy, &none, 0), OverlapDecision::Start, "{policy:?}: nothing running");
    }
    assert_eq!(decide(Overlap::Skip, &running, 0), OverlapDecision::Skip);
    assert_eq!(decide(Overlap::Queue, &running, 0), OverlapDecision::Queue);
    assert_eq!(decide(Overlap::CancelPrevious, &running, 0), OverlapDecision::CancelThenStart(vec!["job-1"]));
    assert_eq!(decide(Overlap::Allow, &running, 0), OverlapDecision::Start);
    // Queued occurrences keep their order: a new one waits behind them even when nothing runs.
    assert_eq!(decide(Overlap::Queue, &none, 1), OverlapDecision::Queue);
    assert!(!may_start_queued(1));
    assert!(may_start_queued(0));
    assert_eq!(Overlap::default(), Overlap::Skip);
}

// ---- occurrence variables --------------------------------------------------------------------

#[test]
fn occurrence_variables_come_from_the_local_fire_time() {
    let s = schedule("0 23 L * *", "America/New_York", &[]);
    let fire_time = s.next_after(at("2026-11-15T00:00:00Z")).expect("next").expect("fires");
    let occurrence = Occurrence { fire_time };
    // 23:00 in New York on 30 November is already 1 December in UTC: the local date counts.
    assert_eq!(occurrence.period(), "2026-11");
    assert_eq!(occurrence.date(), "2026-11-30");
    assert_eq!(occurrence.fire_time_text(), "2026-11-30T23:00:00-05:00");
    assert_eq!(
        occurrence.substitute("s3://raw/claims/{period}/{date}/run-{fire_time}", &[]).expect("known"),
        "s3://raw/claims/2026-11/2026-11-30/run-2026-11-30T23:00:00-05:00"
    );
    assert_eq!(
        occurrence.substitute("cp {input} {output}/{period}", &["input", "output"]).expect("known"),
        "cp {input} {output}/2026-11"
    );
    assert_eq!(occurrence.substitute("a{{b}} { x } {1} {", &[]).expect("not variables"), "a{{b}} { x } {1} {");
    let error = occurrence.substitute("s3://raw/{perod}/", &[]).expect_err("typo");
    assert!(error.contains("`{perod}`"), "{error}");
}
