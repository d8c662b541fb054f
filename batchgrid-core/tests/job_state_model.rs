//! A model-based test of the job state machine on the SQLite analytics store: random
//! sequences of transitions (the splitter's `splitting` and `running`, a pass's `completed`
//! and `failed`, an operator's `cancel`), some of them racing each other, checked against a
//! reference model written from the lifecycle in the design, not from the implementation:
//! submitted -> splitting -> running -> completed | failed | cancelled, failed and cancelled
//! from every live state, terminal states never left, and racing transitions serialisable, so a
//! cancel is never overwritten by the splitter's `running` or a pass's `completed`.

use batchgrid_core::analytics::{actor, AnalyticsStore, JobRecord, JobState, SqliteAnalytics, StageRecord};
use batchgrid_core::spec::StageKind;
use proptest::prelude::*;

const STATES: [JobState; 6] = [
    JobState::Submitted,
    JobState::Splitting,
    JobState::Running,
    JobState::Completed,
    JobState::Failed,
    JobState::Cancelled,
];

/// The lifecycle as the design states it.
fn model_allows(from: JobState, to: JobState) -> bool {
    use JobState::*;
    matches!(
        (from, to),
        (Submitted, Splitting)
            | (Submitted | Splitting, Running)
            | (Running, Completed)
            | (Submitted | Splitting | Running, Failed | Cancelled)
    )
}

#[derive(Debug, Clone)]
enum Op {
    /// One transition, by the manager or (for a cancel) an operator.
    Move(usize),
    /// Two transitions at once, from two connections' worth of tasks.
    Race(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..STATES.len()).prop_map(Op::Move),
        1 => (0usize..STATES.len(), 0usize..STATES.len()).prop_map(|(a, b)| Op::Race(a, b)),
    ]
}

fn who(to: JobState) -> &'static str {
    if to == JobState::Cancelled {
        actor::OPERATOR
    } else {
        actor::MANAGER
    }
}

/// The state after applying `moves` in order, from `state`, and how many applied.
fn sequential(mut state: JobState, moves: &[JobState]) -> (JobState, usize) {
    let mut applied = 0;
    for &to in moves {
        if model_allows(state, to) {
            state = to;
            applied += 1;
        }
    }
    (state, applied)
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteAnalytics::open(&dir.path().join("analytics.db")).await.expect("store");
    let job = JobRecord {
        id: "job".into(),
        name: "model".into(),
        state: JobState::Submitted,
        spec: "{}".into(),
        submitted_at: 1,
        started_at: None,
        finished_at: None,
        error: None,
    };
    store.create_job(&job, &[StageRecord { stage: 0, name: "s".into(), kind: StageKind::Map }]).await.expect("create");
    let mut state = JobState::Submitted;
    let mut entries = 1; // the submission

    for op in ops {
        match op {
            Op::Move(to) => {
                let to = STATES[to];
                let applied = store.transition("job", to, Some("model"), who(to)).await.expect("transition");
                prop_assert_eq!(applied, model_allows(state, to), "{} -> {}", state, to);
                if applied {
                    state = to;
                    entries += 1;
                }
            }
            Op::Race(a, b) => {
                let (a, b) = (STATES[a], STATES[b]);
                let (ra, rb) = tokio::join!(
                    store.transition("job", a, Some("race a"), who(a)),
                    store.transition("job", b, Some("race b"), who(b)),
                );
                let applied = usize::from(ra.expect("a")) + usize::from(rb.expect("b"));
                let stored = store.job("job").await.expect("job").expect("exists").state;
                // Serialisable: the outcome is one of the two orders.
                let ab = sequential(state, &[a, b]);
                let ba = sequential(state, &[b, a]);
                prop_assert!(
                    (stored, applied) == ab || (stored, applied) == ba,
                    "{state}: {a} racing {b} gave {stored} with {applied} applied; orders give {ab:?} or {ba:?}"
                );
                // So a cancel allowed when the race began is never overwritten by what it raced:
                // it loses only to another ending (completed, failed) that applied first.
                if (a == JobState::Cancelled || b == JobState::Cancelled) && model_allows(state, JobState::Cancelled) {
                    prop_assert!(stored.is_terminal(), "a cancel left the job {}", stored);
                }
                state = stored;
                entries += applied;
            }
        }
        let stored = store.job("job").await.expect("job").expect("exists");
        prop_assert_eq!(stored.state, state);
        let history = store.history("job").await.expect("history");
        prop_assert_eq!(history.len(), entries, "one history entry per applied transition");
        prop_assert_eq!(history.last().map(|h| h.to), Some(state), "the history ends in the current state");
        for pair in history.windows(2) {
            prop_assert_eq!(pair[1].from, Some(pair[0].to), "each entry leaves the state the one before entered");
        }
        if state.is_terminal() {
            prop_assert!(stored.finished_at.is_some(), "an ended job has its end time");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_job_state_machine_follows_the_lifecycle_under_random_and_racing_transitions(
        ops in proptest::collection::vec(op(), 1..16)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(run_case(ops))?;
    }
}
