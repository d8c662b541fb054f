//! The retry decisions without a server: a fake error carries the SQLSTATE a server would send,
//! and a fake "server" accepts only the user the rotating source last handed out.

use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;

use super::*;

/// A database error with just a SQLSTATE, as the driver would surface it.
#[derive(Debug)]
struct Coded(&'static str);

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQLSTATE {}", self.0)
    }
}

impl std::error::Error for Coded {}

impl sqlx::error::DatabaseError for Coded {
    fn message(&self) -> &str {
        "fake"
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.0))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

fn coded(code: &'static str) -> AnalyticsError {
    AnalyticsError::from(sqlx::Error::Database(Box::new(Coded(code))))
}

#[test]
fn refused_credentials_and_ended_sessions_are_told_from_other_errors() {
    assert_eq!(classify(&coded("28P01")), Failure::Credentials);
    assert_eq!(classify(&coded("28000")), Failure::Credentials, "RDS's answer to an expired IAM token");
    assert_eq!(classify(&coded("57P01")), Failure::SessionEnded);
    assert_eq!(classify(&coded("23505")), Failure::Other, "a unique violation is not retried");
    assert_eq!(classify(&AnalyticsError::JobNotFound("j".into())), Failure::Other);
    assert_eq!(classify(&AnalyticsError::from(sqlx::Error::PoolTimedOut)), Failure::Other);
    // Refused while migrating at start: the driver's error is a cause of the migrator's.
    let migrating = sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(Box::new(Coded("28P01"))));
    assert_eq!(classify(&AnalyticsError::Backend(Box::new(migrating))), Failure::Credentials);
}

#[test]
fn reads_are_throttled_and_skipped_when_another_task_just_read() {
    let min = Duration::from_secs(2);
    assert_eq!(plan_read(3, 4, Duration::ZERO, min), ReadPlan::AlreadyFresh);
    assert_eq!(plan_read(4, 4, Duration::from_millis(500), min), ReadPlan::ReadAfter(Duration::from_millis(1500)));
    assert_eq!(plan_read(4, 4, Duration::from_secs(60), min), ReadPlan::ReadAfter(Duration::ZERO));
}

#[test]
fn ssl_modes_parse_and_print_their_libpq_names() {
    for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
        assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
    }
    assert!("tls".parse::<SslMode>().is_err());
    assert_eq!(SslMode::default(), SslMode::Require, "RDS wants TLS unless told otherwise");
}

#[test]
fn fixed_urls_never_print_their_password() {
    let source = FixedUrl::parse("postgres://u:hunter2@h/db").expect("url");
    assert!(!format!("{source:?} {}", source.origin()).contains("hunter2"));
}

/// A secret store whose user changes on `rotate`; counts its reads.
#[derive(Debug, Default)]
struct Rotating {
    user: Mutex<String>,
    reads: AtomicUsize,
    rotates: bool,
    max_age: Option<Duration>,
}

impl Rotating {
    fn new(user: &str, rotates: bool) -> Arc<Self> {
        Arc::new(Self { user: Mutex::new(user.to_owned()), reads: AtomicUsize::new(0), rotates, max_age: None })
    }

    /// A source whose options expire, as an IAM token's do.
    fn expiring(user: &str, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            user: Mutex::new(user.to_owned()),
            reads: AtomicUsize::new(0),
            rotates: true,
            max_age: Some(max_age),
        })
    }

    fn set(&self, user: &str) {
        *self.user.lock().expect("lock") = user.to_owned();
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CredentialsSource for Rotating {
    async fn connect_options(&self) -> Result<PgConnectOptions, CredentialsError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let user = self.user.lock().expect("lock").clone();
        Ok(PgConnectOptions::new_without_pgpass().host("db.invalid").username(&user))
    }

    fn rotates(&self) -> bool {
        self.rotates
    }

    fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    fn origin(&self) -> String {
        "a test source".to_owned()
    }
}

fn fast() -> ReconnectSettings {
    ReconnectSettings { retries: 3, backoff: Duration::from_millis(1), min_read_interval: Duration::from_millis(20) }
}

/// One operation against a "server" that accepts only `accepted`'s user.
async fn operate(
    reconnect: &Reconnect,
    accepted: &Mutex<String>,
    installed: &AtomicUsize,
) -> Result<(), AnalyticsError> {
    let install = |_: PgConnectOptions| {
        installed.fetch_add(1, Ordering::SeqCst);
    };
    reconnect
        .run(install, || async {
            let wanted = accepted.lock().expect("lock").clone();
            if reconnect.options().get_username() == wanted {
                Ok(())
            } else {
                Err(coded("28P01"))
            }
        })
        .await
}

#[tokio::test]
async fn after_a_rotation_the_credentials_are_read_again_and_the_operation_succeeds() {
    let source = Rotating::new("old", true);
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let server = Mutex::new("old".to_owned());
    let installed = AtomicUsize::new(0);
    operate(&reconnect, &server, &installed).await.expect("before the rotation");
    assert_eq!(source.reads(), 1, "read once at start");

    // The password changes on the server and in the store.
    *server.lock().expect("lock") = "new".to_owned();
    source.set("new");
    operate(&reconnect, &server, &installed).await.expect("the rotation is absorbed");
    assert_eq!(source.reads(), 2, "one more read");
    assert_eq!(installed.load(Ordering::SeqCst), 1, "the pool got the new options");
}

#[tokio::test]
async fn without_a_refresh_the_refused_credentials_surface() {
    // A fixed URL cannot change: its first 28P01 is the answer, with no read and no retry.
    let source = Rotating::new("old", false);
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let server = Mutex::new("new".to_owned());
    let installed = AtomicUsize::new(0);
    let error = operate(&reconnect, &server, &installed).await.expect_err("refused");
    assert_eq!(classify(&error), Failure::Credentials, "{error}");
    assert_eq!(source.reads(), 1);
    assert_eq!(installed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_wrong_secret_is_read_a_bounded_number_of_times_and_then_surfaces() {
    let source = Rotating::new("stale", true);
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let server = Mutex::new("new".to_owned());
    let installed = AtomicUsize::new(0);
    let started = Instant::now();
    let error = operate(&reconnect, &server, &installed).await.expect_err("still refused");
    assert_eq!(classify(&error), Failure::Credentials, "{error}");
    assert_eq!(source.reads(), 1 + 3, "one read per retry, no more");
    assert!(started.elapsed() >= Duration::from_millis(60), "reads were kept 20 ms apart: {:?}", started.elapsed());
}

#[tokio::test]
async fn concurrent_failures_read_the_secret_once() {
    let source = Rotating::new("old", true);
    let settings = ReconnectSettings { min_read_interval: Duration::from_millis(50), ..fast() };
    let reconnect = Reconnect::start(source.clone(), settings).await.expect("start");
    let server = Mutex::new("new".to_owned());
    source.set("new");
    let installed = AtomicUsize::new(0);
    let results = futures::future::join_all((0..8).map(|_| operate(&reconnect, &server, &installed))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(source.reads(), 2, "the start, then one refresh shared by all eight");
}

#[tokio::test]
async fn an_ended_session_is_retried_without_reading_the_credentials() {
    let source = Rotating::new("old", true);
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let tries = AtomicUsize::new(0);
    reconnect
        .run(
            |_| {},
            || async {
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(coded("57P01"))
                } else {
                    Ok(())
                }
            },
        )
        .await
        .expect("retried");
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    assert_eq!(source.reads(), 1);
    let other = reconnect.run(|_| {}, || async { Err::<(), _>(coded("23505")) }).await.expect_err("not retried");
    assert_eq!(classify(&other), Failure::Other);
}

#[tokio::test]
async fn expiring_options_are_renewed_before_an_operation_once_they_are_too_old() {
    let source = Rotating::expiring("token-1", Duration::from_millis(80));
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let server = Mutex::new("token-1".to_owned());
    let installed = AtomicUsize::new(0);
    operate(&reconnect, &server, &installed).await.expect("fresh");
    operate(&reconnect, &server, &installed).await.expect("still fresh");
    assert_eq!(source.reads(), 1, "young options are not read again");

    // The token ages past its life; the server would refuse it, and a new one is signed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    source.set("token-2");
    *server.lock().expect("lock") = "token-2".to_owned();
    operate(&reconnect, &server, &installed).await.expect("renewed before the try");
    assert_eq!(source.reads(), 2, "one renewal, not a refused try and a refresh");
    assert_eq!(installed.load(Ordering::SeqCst), 1, "the pool got the renewed options");
    assert_eq!(reconnect.options().get_username(), "token-2");
}

#[tokio::test]
async fn options_without_an_age_limit_are_never_renewed_unasked() {
    let source = Rotating::new("old", true);
    let reconnect = Reconnect::start(source.clone(), fast()).await.expect("start");
    let server = Mutex::new("old".to_owned());
    let installed = AtomicUsize::new(0);
    tokio::time::sleep(Duration::from_millis(30)).await;
    operate(&reconnect, &server, &installed).await.expect("ok");
    assert_eq!(source.reads(), 1);
}
