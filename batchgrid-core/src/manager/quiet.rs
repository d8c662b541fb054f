//! A quiet manager lets the analytics database go. Aurora Serverless v2 pauses only after minutes
//! without any connection, and the manager's periodic loops (the schedule pass, the autoscaler,
//! the dashboard's samples) would otherwise read the store every few seconds for ever. So the
//! manager keeps in memory what those loops would find, and while it is *quiet* they do not
//! look: the pool then closes its idle connections, and the database can pause.
//!
//! The rule ([`verdict`]) is a pure function of an [`Outlook`]: the manager is quiet when it
//! drives no job, the worker group (if it watches one) wants no instance, and no schedule or
//! one-off run is due within the horizon; until the horizon before the next one. Anything not
//! known yet (the schedules before their first read, the group before its first look, either
//! after a failed read) keeps it busy: an unknown is never a reason to sleep.
//!
//! [`Activity`] holds the outlook and a wake signal shared by every loop: a job starting or
//! ending, an API call that writes, and the group gaining instances each wake all loops at
//! once, and each makes one pass before it may rest again ([`Cadence`]). The manager is the
//! only process that creates jobs and schedules (through its API and its own schedule firing),
//! so nothing else can make work appear that it would not hear of.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// How long before a due schedule or one-off run the loops start looking again by default:
/// enough for a paused Aurora to resume (about 15 s) before the fire time.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(60);
/// The longest a quiet loop sleeps before it looks at the clock again (no database read).
const RECHECK: Duration = Duration::from_secs(30);

/// What the manager knows of the worker group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupView {
    /// No group is watched (the embedded grid, `--no-autoscale`): it does not keep the manager busy.
    Unwatched,
    /// Watched, but not read yet or its last read failed.
    Unknown,
    /// The capacity the group is asked to have.
    Desired(u32),
}

/// What the manager knows of its schedules' next fire times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextDue {
    /// Not read yet, or the last read failed.
    Unknown,
    /// No schedule or one-off run will fire.
    Never,
    /// The earliest time one needs the manager (a fire time, less its warm-up if it has one).
    At(DateTime<Utc>),
}

/// Everything the quiet rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    /// Jobs this process is driving.
    pub jobs: usize,
    /// The worker group.
    pub group: GroupView,
    /// The schedules' next due time.
    pub next_due: NextDue,
}

/// Why the manager is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// It drives at least one job.
    Jobs(usize),
    /// The group wants this many instances.
    Workers(u32),
    /// The group has not been read (yet).
    GroupUnknown,
    /// The schedules have not been read (yet).
    SchedulesUnknown,
    /// A schedule or one-off run is due at this time, within the horizon.
    Due(DateTime<Utc>),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Jobs(n) => write!(f, "{n} job(s) active"),
            Busy::Workers(n) => write!(f, "the worker group wants {n} instance(s)"),
            Busy::GroupUnknown => write!(f, "the worker group has not been read"),
            Busy::SchedulesUnknown => write!(f, "the schedules have not been read"),
            Busy::Due(at) => write!(f, "a schedule is due at {}", at.to_rfc3339()),
        }
    }
}

/// The rule's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The loops look as often as they are set to.
    Busy(Busy),
    /// The loops need not touch the store until `until` (`None`: until woken).
    Quiet {
        /// When the next due time comes within the horizon.
        until: Option<DateTime<Utc>>,
    },
}

impl Verdict {
    /// Whether the loops may rest.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Verdict::Quiet { .. })
    }
}

/// The quiet rule: busy while a job is driven, while the group wants instances, while anything
/// is unknown, or while a schedule is due within `horizon` of `now`; otherwise quiet until
/// `horizon` before the next due time.
pub fn verdict(outlook: &Outlook, now: DateTime<Utc>, horizon: Duration) -> Verdict {
    if outlook.jobs > 0 {
        return Verdict::Busy(Busy::Jobs(outlook.jobs));
    }
    match outlook.group {
        GroupView::Unknown => return Verdict::Busy(Busy::GroupUnknown),
        GroupView::Desired(n) if n > 0 => return Verdict::Busy(Busy::Workers(n)),
        GroupView::Desired(_) | GroupView::Unwatched => {}
    }
    let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    match outlook.next_due {
        NextDue::Unknown => Verdict::Busy(Busy::SchedulesUnknown),
        NextDue::Never => Verdict::Quiet { until: None },
        NextDue::At(at) => match at.checked_sub_signed(horizon) {
            Some(wake) if wake > now => Verdict::Quiet { until: Some(wake) },
            // Within the horizon, or so far in the past that the horizon overflows.
            _ => Verdict::Busy(Busy::Due(at)),
        },
    }
}

/// The time now, by the system's clock (schedules' times are wall-clock times).
pub fn wall_clock() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Settings of the quiet rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietSettings {
    /// How long before a due time the loops look again.
    pub horizon: Duration,
}

impl Default for QuietSettings {
    fn default() -> Self {
        Self { horizon: DEFAULT_HORIZON }
    }
}

#[derive(Debug)]
struct Inner {
    outlook: Mutex<Outlook>,
    /// Whether the last verdict logged was quiet (transitions are logged once).
    logged_quiet: Mutex<bool>,
    settings: QuietSettings,
    /// Bumped on every wake; each loop remembers the last value it acted on.
    wakes: watch::Sender<u64>,
}

/// The manager's activity, shared by its loops, its job drivers and its API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Arc<Inner>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new(QuietSettings::default())
    }
}

impl Activity {
    /// An activity with nothing known yet (busy until the schedules have been read).
    pub fn new(settings: QuietSettings) -> Self {
        let outlook = Outlook { jobs: 0, group: GroupView::Unwatched, next_due: NextDue::Unknown };
        let (wakes, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner { outlook: Mutex::new(outlook), logged_quiet: Mutex::new(false), settings, wakes }),
        }
    }

    /// The rule's settings.
    pub fn settings(&self) -> QuietSettings {
        self.inner.settings
    }

    /// Something may have changed (an API call wrote, a job ended): every loop makes one pass.
    pub fn wake(&self) {
        self.inner.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a job as driven until the guard is dropped; both ends wake the loops.
    pub fn job_started(&self) -> JobGuard {
        self.update(|outlook| outlook.jobs += 1);
        JobGuard { activity: self.clone() }
    }

    /// Records the schedules' next due time, as a schedule pass found it.
    pub fn set_next_due(&self, next_due: NextDue) {
        self.update(|outlook| outlook.next_due = next_due);
    }

    /// Records that a worker group is watched, not read yet.
    pub fn watch_group(&self) {
        self.update(|outlook| outlook.group = GroupView::Unknown);
    }

    /// Records what the group was asked to have, or `None` when reading it failed.
    pub fn observe_group(&self, desired: Option<u32>) {
        let view = desired.map_or(GroupView::Unknown, GroupView::Desired);
        self.update(|outlook| outlook.group = view);
    }

    /// The outlook now.
    pub fn outlook(&self) -> Outlook {
        self.inner.outlook.lock().map(|o| *o).unwrap_or(Outlook {
            jobs: 0,
            group: GroupView::Unknown,
            next_due: NextDue::Unknown,
        })
    }

    /// The rule applied to the outlook now; a change between busy and quiet is logged.
    pub fn verdict(&self, now: DateTime<Utc>) -> Verdict {
        let verdict = verdict(&self.outlook(), now, self.inner.settings.horizon);
        if let Ok(mut logged) = self.inner.logged_quiet.lock() {
            if *logged != verdict.is_quiet() {
                *logged = verdict.is_quiet();
                match verdict {
                    Verdict::Quiet { until: Some(until) } => tracing::info!(
                        until = %until.to_rfc3339(),
                        "manager quiet: its loops leave the analytics store alone until then"
                    ),
                    Verdict::Quiet { until: None } => {
                        tracing::info!("manager quiet: its loops leave the analytics store alone until woken")
                    }
                    Verdict::Busy(why) => tracing::info!(%why, "manager busy again"),
                }
            }
        }
        verdict
    }

    /// A pace for one loop.
    pub fn cadence(&self) -> Cadence {
        let mut wakes = self.inner.wakes.subscribe();
        wakes.borrow_and_update();
        Cadence { activity: self.clone(), wakes }
    }

    /// Changes the outlook and wakes the loops if it changed.
    fn update(&self, change: impl FnOnce(&mut Outlook)) {
        let changed = match self.inner.outlook.lock() {
            Ok(mut outlook) => {
                let before = *outlook;
                change(&mut outlook);
                before != *outlook
            }
            Err(_) => true,
        };
        if changed {
            self.wake();
        }
    }
}

/// Counts one driven job for as long as it lives.
#[derive(Debug)]
pub struct JobGuard {
    activity: Activity,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.activity.update(|outlook| outlook.jobs = outlook.jobs.saturating_sub(1));
    }
}

/// What a loop should do after its pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A full pass (busy, or woken since the last one).
    Pass,
    /// The manager is quiet and nothing woke it: only what touches no database, if anything.
    Quiet,
}

/// One loop's pace: its own interval while the manager is busy, and while it is quiet no pass
/// until something wakes it or the quiet ends.
#[derive(Debug)]
pub struct Cadence {
    activity: Activity,
    wakes: watch::Receiver<u64>,
}

impl Cadence {
    /// Waits `every`, then returns [`Step::Pass`] if the loop was woken meanwhile or the
    /// manager is busy, and [`Step::Quiet`] otherwise (the autoscaler still glances at the
    /// group then: that reads no database).
    pub async fn step(&mut self, every: Duration) -> Step {
        tokio::time::sleep(every).await;
        if self.take_wake() || !self.activity.verdict(wall_clock()).is_quiet() {
            Step::Pass
        } else {
            Step::Quiet
        }
    }

    /// Waits `every`, then for as long as the manager is quiet, until it is woken or its quiet
    /// ends: when this returns, the loop makes a pass.
    pub async fn pace(&mut self, every: Duration) {
        tokio::time::sleep(every).await;
        if self.take_wake() {
            return;
        }
        while let Verdict::Quiet { until } = self.activity.verdict(wall_clock()) {
            // The wall clock is looked at again now and then rather than trusted for one long
            // monotonic sleep: the two drift apart, and a suspended machine stops the latter.
            let rest = until.map_or(RECHECK, |until| (until - wall_clock()).to_std().unwrap_or_default().min(RECHECK));
            tokio::select! {
                // A wake (or the sender gone, which cannot happen while this cadence holds the
                // activity) means a pass.
                _ = self.wakes.changed() => return,
                () = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// Whether a wake came since the last pass (and forgets it).
    fn take_wake(&mut self) -> bool {
        let woken = self.wakes.has_changed().unwrap_or(true);
        if woken {
            self.wakes.borrow_and_update();
        }
        woken
    }
}

#[cfg(test)]
mod tests;
