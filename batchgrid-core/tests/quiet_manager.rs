//! A quiet manager lets its database go, so that Aurora Serverless v2 can pause. The manager
//! service with its loops as `batchgrid manager` starts them (schedules, samples, the
//! autoscaler at their production intervals, the autoscaler over a worker group of its own),
//! its API on loopback, and PostgreSQL behind a proxy that counts the manager's connections:
//! after a job, the manager holds no connection and opens none; a job submitted through the API
//! wakes it (the pool connects again, as a paused database resumes), and a one-off run due
//! while it is quiet fires on time, woken by nothing but its own due time.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgrid_core::analytics::{AnalyticsStore, JobState, PgAnalytics, PoolSettings};
use batchgrid_core::grid::{Grid, CHAIN_QUEUE, TASK_QUEUE};
use batchgrid_core::manager::{spool_dir, Manager, QuietSettings};
use batchgrid_core::processor::ProcessorRegistry;
use batchgrid_core::queue::SqliteQueue;
use batchgrid_core::scaling::{Autoscaler, GroupError, GroupState, SizingSettings, WorkerGroup};
use batchgrid_core::schedule::chrono::{DateTime, Utc};
use batchgrid_core::secret::Secret;
use batchgrid_core::service::client::ApiClient;
use batchgrid_core::service::{api, loops, JobService};
use batchgrid_core::spec::InputPolicy;
use batchgrid_core::worker::{Worker, WorkerSettings};
use batchgrid_testkit::postgres::TestDatabase;
use batchgrid_testkit::StallingProxy;

const TOKEN: &str = "quiet-test-token";
/// The quiet rule's horizon here: the loops look again this long before a due time.
const HORIZON: Duration = Duration::from_secs(2);
/// How long the manager must leave the database alone to count as letting it go.
const LEFT_ALONE: Duration = Duration::from_secs(5);

/// A worker group in memory: what the autoscaler asked for, and the most it ever asked for.
#[derive(Debug, Default)]
struct MemoryGroup {
    desired: AtomicU32,
    most: AtomicU32,
}

#[async_trait::async_trait]
impl WorkerGroup for MemoryGroup {
    async fn state(&self) -> Result<GroupState, GroupError> {
        Ok(GroupState { min: 0, max: 4, desired: self.desired.load(Ordering::SeqCst) })
    }

    async fn set_desired(&self, desired: u32) -> Result<(), GroupError> {
        self.desired.store(desired, Ordering::SeqCst);
        self.most.fetch_max(desired, Ordering::SeqCst);
        Ok(())
    }
}

fn job_document(dir: &Path) -> String {
    std::fs::write(dir.join("input.txt"), "a\nb\n").expect("input");
    // Long enough for the autoscaler (a pass every 2 s) to see the job and raise the group.
    "name: quiet\ninput:\n  path: input.txt\nstages:\n  - name: copy\n    command: [sh, -c, 'sleep 3; cat \"$0\"', \"{input}\"]\n\
     output:\n  path: out\n"
        .to_owned()
}

/// Polls the job through the API until it ends.
async fn wait_for_end(client: &ApiClient, id: &str, limit: Duration) -> JobState {
    let deadline = Instant::now() + limit;
    loop {
        let status = client.status(id).await.expect("job status");
        if status.state.is_terminal() {
            return status.state;
        }
        assert!(Instant::now() < deadline, "job {id} did not end within {limit:?}: {:?}", status.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the manager holds no connection; returns how long that took.
async fn wait_for_release(proxy: &StallingProxy, limit: Duration) -> Duration {
    let started = Instant::now();
    while proxy.open_connections() > 0 {
        assert!(
            started.elapsed() < limit,
            "the manager still holds {} connection(s) to the database after {limit:?}",
            proxy.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Whether for `span` from now the manager holds no connection and opens none; `Err` says
/// when it touched the database.
async fn left_alone_for(proxy: &StallingProxy, span: Duration) -> Result<(), String> {
    let opened = proxy.connections_opened();
    let started = Instant::now();
    while started.elapsed() < span {
        let (open, now_opened) = (proxy.open_connections(), proxy.connections_opened());
        if open > 0 || now_opened != opened {
            return Err(format!(
                "{:.1} s into {span:?} of quiet the manager holds {open} connection(s), {} opened since",
                started.elapsed().as_secs_f64(),
                now_opened - opened
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until the manager leaves the database alone for `span` (no connection held, none
/// opened), which must begin within `limit`; returns when it began, from now.
async fn wait_for_quiet(proxy: &StallingProxy, span: Duration, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        wait_for_release(proxy, limit.saturating_sub(started.elapsed())).await;
        let began = started.elapsed();
        assert!(began <= limit, "{what}: the manager did not let the database go within {limit:?}");
        match left_alone_for(proxy, span).await {
            Ok(()) => return began,
            Err(touched) if started.elapsed() < limit => eprintln!("{what}: not quiet yet: {touched}"),
            Err(touched) => panic!("{what}: the manager never left the database alone for {span:?}: {touched}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_manager_lets_the_database_go_and_wakes_for_submissions_and_due_runs() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let database = TestDatabase::new();
    let (host, port) = database.address();
    let proxy = StallingProxy::start(&format!("{host}:{port}"));
    let url = database.url().replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{}", proxy.port()), 1);
    assert_ne!(url, database.url(), "the manager's database goes through the proxy");

    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let queue_db = batchgrid_core::queue::sqlite::open_queue_database(&state.join("queue.db")).await.expect("queue");
    // A short idle timeout, so that the test need not wait the production minute.
    let pool = PoolSettings { max_connections: 4, idle_timeout: Duration::from_secs(1) };
    let grid = Grid {
        store: Arc::new(batchgrid_core::store::LocalStore::open(state.join("objects")).expect("store")),
        tasks: Arc::new(SqliteQueue::new(queue_db.clone(), TASK_QUEUE, 5)),
        chain: Arc::new(SqliteQueue::new(queue_db, CHAIN_QUEUE, 5)),
        analytics: Arc::new(PgAnalytics::connect_pool(&url, pool).await.expect("analytics through the proxy")),
        meter: batchgrid_core::metering::RequestMeter::new(),
    };
    // The worker, standing for a worker instance, reaches the database directly: only the
    // manager's connections are counted.
    let direct: Arc<dyn AnalyticsStore> = Arc::new(PgAnalytics::connect(&database.url(), 2).await.expect("analytics"));
    let worker_grid = Grid { analytics: direct.clone(), ..grid.clone() };
    let mut settings = WorkerSettings::new("quiet-worker", state.join("scratch"));
    settings.concurrency = 1;
    settings.poll_wait = Duration::from_millis(200);
    let worker = Worker::new(settings, worker_grid, ProcessorRegistry::with_builtins());
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = worker_stopped.await;
    }));

    let manager = Manager::new(grid.clone(), spool_dir(&state)).with_quiet(QuietSettings { horizon: HORIZON });
    let service = JobService::new(manager, Duration::from_millis(200), dir.path().to_path_buf(), InputPolicy::Operator);
    let group = Arc::new(MemoryGroup::default());
    let sizing = SizingSettings { scale_in_delay: Duration::from_secs(1), ..SizingSettings::default() };
    let autoscaler =
        Autoscaler::new(grid.analytics.clone(), vec![grid.tasks.clone(), grid.chain.clone()], group.clone(), sizing);
    // The autoscaler at its production interval (2 s); schedules and samples every second
    // rather than 5 s and 15 s, so that the passes a wake causes are over within seconds.
    let intervals = loops::LoopIntervals { schedules: Duration::from_secs(1), samples: Duration::from_secs(1) };
    let _loops = loops::start(&service, Some(autoscaler), intervals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the API");
    let address = listener.local_addr().expect("API address");
    tokio::spawn(api::serve(listener, service.clone(), Secret::new(TOKEN), std::future::pending()));
    let client = ApiClient::new(&format!("http://{address}"), Secret::new(TOKEN)).expect("client");
    let document = job_document(dir.path());

    // A job runs; then the manager lets the database go and leaves it alone.
    let first = client.submit(&document, "quiet.yaml", None).await.expect("submit");
    assert_eq!(wait_for_end(&client, &first, Duration::from_secs(60)).await, JobState::Completed);
    let quiet = wait_for_quiet(&proxy, LEFT_ALONE, Duration::from_secs(15), "after a job").await;
    eprintln!("the manager let the database go {:.1} s after the job's end was seen", quiet.as_secs_f64());
    assert!(group.most.load(Ordering::SeqCst) >= 1, "the autoscaler raised the group for the job");
    assert_eq!(group.desired.load(Ordering::SeqCst), 0, "and lowered it after");

    // A submission through the API wakes it: the pool connects again, and the job runs.
    let opened = proxy.connections_opened();
    let second = client.submit(&document, "quiet.yaml", None).await.expect("submit while quiet");
    assert_eq!(wait_for_end(&client, &second, Duration::from_secs(60)).await, JobState::Completed);
    assert!(proxy.connections_opened() > opened, "the manager connected again for the job");
    wait_for_quiet(&proxy, LEFT_ALONE, Duration::from_secs(15), "after the second job").await;
    // A one-off run stored now, due later: the manager rests until the horizon before it,
    // then fires it on time, though nothing calls the API meanwhile.
    let at = now() + chrono_seconds(14);
    let deferred =
        client.submit_at(&document, "quiet.yaml", None, &[], &at.to_rfc3339()).await.expect("submit a one-off run");
    // The write wakes every loop for one pass, each at its next interval (2 s at most here);
    // then their connections close, and nothing touches the database until the horizon.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wait_for_release(&proxy, Duration::from_secs(10)).await;
    let rest = (at - now()).to_std().expect("the run is still ahead") - HORIZON - Duration::from_millis(300);
    assert!(rest >= LEFT_ALONE, "the test's own steps took too long: only {rest:?} left before the horizon");
    eprintln!("left alone for the {:.1} s until the one-off run's horizon", rest.as_secs_f64());
    if let Err(touched) = left_alone_for(&proxy, rest).await {
        panic!("before the one-off run's horizon: {touched}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let fired = loop {
        let jobs = direct.jobs().await.expect("jobs");
        if let Some(job) = jobs.into_iter().find(|job| job.id != first && job.id != second) {
            break job;
        }
        assert!(Instant::now() < deadline, "the one-off run {} never fired", deferred.schedule);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let late = fired.submitted_at - at.timestamp_millis();
    eprintln!("the one-off run fired {late} ms after its time");
    assert!((0..1500).contains(&late), "fired {late} ms after its time");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = direct.job(&fired.id).await.expect("job").expect("the fired job");
        if job.state.is_terminal() {
            assert_eq!(job.state, JobState::Completed);
            break;
        }
        assert!(Instant::now() < deadline, "the one-off run's job did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_quiet(&proxy, LEFT_ALONE, Duration::from_secs(15), "after the one-off run").await;

    let _ = stop_worker.send(());
    worker.await.expect("worker task").expect("worker");
    eprintln!("quiet manager test took {:.1} s", test_started.elapsed().as_secs_f64());
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

fn chrono_seconds(seconds: i64) -> batchgrid_core::schedule::chrono::Duration {
    batchgrid_core::schedule::chrono::Duration::seconds(seconds)
}
