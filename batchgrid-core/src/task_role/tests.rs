use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::*;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn at(minutes: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + minutes * 60)
}

#[test]
fn credentials_are_renewed_before_they_could_expire_under_a_task() {
    let issued = at(0);
    let expires = issued + HOUR;
    let timeout = 15 * MIN;
    // An hour's session serves 15-minute tasks for 40 minutes: they need 15 + 5 left.
    assert!(!needs_refresh(issued, expires, timeout, MAX_SESSION), "fresh credentials serve");
    assert!(!needs_refresh(at(40), expires, timeout, MAX_SESSION), "20 minutes left is enough");
    assert!(needs_refresh(at(40) + Duration::from_secs(1), expires, timeout, MAX_SESSION), "just under 20 left");
    assert!(needs_refresh(at(60), expires, timeout, MAX_SESSION), "expired");
    assert!(needs_refresh(at(90), expires, timeout, MAX_SESSION), "long expired (no underflow)");
    // A longer task needs more left: the same credentials are renewed sooner for it.
    assert!(needs_refresh(at(10), expires, 50 * MIN, MAX_SESSION));
    assert!(!needs_refresh(at(5), expires, 50 * MIN, MAX_SESSION));
    // Even a task with no timeout to speak of gets at least the margin.
    assert!(needs_refresh(at(56), expires, Duration::ZERO, MAX_SESSION));
    assert!(!needs_refresh(at(54), expires, Duration::ZERO, MAX_SESSION));
}

#[test]
fn a_role_with_short_sessions_is_renewed_every_few_minutes_not_every_task() {
    // Tasks of 3 hours on a role allowing 1-hour sessions: renewed once 55 minutes are left,
    // that is 5 minutes after issue, and not before.
    let expires = at(0) + HOUR;
    assert!(!needs_refresh(at(0), expires, 3 * HOUR, HOUR));
    assert!(!needs_refresh(at(4), expires, 3 * HOUR, HOUR));
    assert!(needs_refresh(at(6), expires, 3 * HOUR, HOUR));
}

#[test]
fn sessions_last_an_hour_or_as_long_as_a_task_needs_within_what_the_role_allows() {
    assert_eq!(session_duration(15 * MIN, MAX_SESSION), HOUR);
    assert_eq!(session_duration(Duration::ZERO, MAX_SESSION), HOUR);
    // Three hours of task, the margin and half an hour of reuse.
    assert_eq!(session_duration(3 * HOUR, MAX_SESSION), 3 * HOUR + 35 * MIN);
    assert_eq!(
        session_duration(3 * HOUR + Duration::from_millis(1), MAX_SESSION),
        3 * HOUR + 35 * MIN + Duration::from_secs(1)
    );
    assert_eq!(session_duration(3 * HOUR, HOUR), HOUR, "no more than the role allows");
    assert_eq!(session_duration(24 * HOUR, MAX_SESSION), MAX_SESSION, "no more than STS grants");
    // A fresh session of the asked length never needs renewing at once.
    for timeout in [Duration::ZERO, 15 * MIN, HOUR, 3 * HOUR, 11 * HOUR] {
        let length = session_duration(timeout, MAX_SESSION);
        assert!(!needs_refresh(at(0), at(0) + length, timeout, MAX_SESSION), "{timeout:?}");
    }
}

#[test]
fn session_names_fit_sts() {
    assert_eq!(session_name("ip-10-0-1-5-4242-ab12cd"), "batchgrid-ip-10-0-1-5-4242-ab12cd");
    assert_eq!(session_name("host name/with:odd*chars"), "batchgrid-host-name-with-odd-chars");
    let long = format!("{}-4242-ab12cd", "h".repeat(100));
    let name = session_name(&long);
    assert_eq!(name.len(), 64);
    assert!(name.starts_with(SESSION_PREFIX) && name.ends_with("-4242-ab12cd"), "keeps the unique end: {name}");
    let name = session_name("wörker");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)), "{name}");
}

#[test]
fn role_arns_are_checked() {
    for good in [
        "arn:aws:iam::123456789012:role/batch-tasks",
        "arn:aws-cn:iam::123456789012:role/team/batch/tasks_1+=,.@-",
        "arn:aws-us-gov:iam::123456789012:role/x",
    ] {
        assert_eq!(check_role_arn(good), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("", "six"),
        ("batch-tasks", "six"),
        ("arn:aws:iam::123456789012:user/alice", "role/NAME"),
        ("arn:aws:iam::12345:role/x", "12 digits"),
        ("arn:aws:iam:eu-west-1:123456789012:role/x", "no region"),
        ("arn:aws:sts::123456789012:role/x", "iam"),
        ("arn:gcp:iam::123456789012:role/x", "arn:aws"),
        ("arn:aws:iam::123456789012:role/", "letters"),
        ("arn:aws:iam::123456789012:role/a b", "letters"),
        ("arn:aws:iam::123456789012:role/${AWS::Region}", "letters"),
        ("arn:aws:iam::123456789012:role/x\nBATCHGRID_X=1", "letters"),
    ] {
        let message = check_role_arn(bad).expect_err(bad);
        assert!(message.contains(why) && message.contains("not an IAM role ARN"), "{bad}: {message}");
    }
    let long = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
    assert!(check_role_arn(&long).is_err());
}

/// Hands out numbered credentials lasting what was asked (or refuses, as scripted).
#[derive(Debug, Default)]
struct FakeSts {
    calls: AtomicU32,
    asked: Mutex<Vec<Duration>>,
    /// Sessions longer than this are refused as too long.
    role_max: Option<Duration>,
    /// Fail every call.
    down: std::sync::atomic::AtomicBool,
    /// Lifetime granted, whatever was asked (to test renewals quickly).
    grant: Option<Duration>,
}

#[async_trait]
impl AssumeRole for FakeSts {
    async fn assume(&self, role_arn: &str, session: &str, duration: Duration) -> Result<RoleCredentials, AssumeError> {
        assert!(session.starts_with(SESSION_PREFIX) && role_arn.starts_with("arn:aws:iam::"));
        self.asked.lock().expect("lock").push(duration);
        if self.down.load(Ordering::SeqCst) {
            return Err(AssumeError::Failed("connection refused".into()));
        }
        if self.role_max.is_some_and(|max| duration > max) {
            return Err(AssumeError::DurationTooLong(duration));
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(RoleCredentials {
            access_key_id: Secret::new(format!("ASIA{n}")),
            secret_access_key: Secret::new(format!("secret-{n}")),
            session_token: Secret::new(format!("token-{n}")),
            expires_at: SystemTime::now() + self.grant.unwrap_or(duration),
        })
    }
}

const ARN: &str = "arn:aws:iam::123456789012:role/tasks";

fn role(sts: &Arc<FakeSts>) -> TaskRole {
    TaskRole::new(sts.clone(), ARN, "worker-1", "eu-west-1")
}

#[tokio::test]
async fn one_session_serves_many_tasks_and_concurrent_tasks_share_one_call() {
    let sts = Arc::new(FakeSts::default());
    let role = Arc::new(role(&sts));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let role = role.clone();
            tokio::spawn(async move { role.credentials(15 * MIN).await })
        })
        .collect();
    for handle in handles {
        let credentials = handle.await.expect("join").expect("credentials");
        assert_eq!(credentials.credentials.access_key_id.expose(), "ASIA1");
    }
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1, "one STS call for eight tasks");
    assert_eq!(*sts.asked.lock().expect("lock"), vec![HOUR]);

    let env = role.credentials(15 * MIN).await.expect("again");
    assert_eq!(
        env.env(),
        [
            ("AWS_ACCESS_KEY_ID", "ASIA1"),
            ("AWS_SECRET_ACCESS_KEY", "secret-1"),
            ("AWS_SESSION_TOKEN", "token-1"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
        ]
    );
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
    // A task whose timeout the cached session cannot cover gets a new, longer one.
    let long = role.credentials(2 * HOUR).await.expect("long task");
    assert_eq!(long.credentials.access_key_id.expose(), "ASIA2");
    assert_eq!(sts.asked.lock().expect("lock").last(), Some(&(2 * HOUR + 35 * MIN)));
}

#[tokio::test]
async fn credentials_close_to_expiry_are_renewed() {
    // Sessions granted for 21 minutes: fresh ones serve a 15-minute task, and are renewed
    // once less than 20 minutes are left.
    let sts = Arc::new(FakeSts { grant: Some(20 * MIN + Duration::from_millis(300)), ..FakeSts::default() });
    let role = role(&sts);
    assert_eq!(role.credentials(15 * MIN).await.expect("first").credentials.access_key_id.expose(), "ASIA1");
    assert_eq!(role.credentials(15 * MIN).await.expect("cached").credentials.access_key_id.expose(), "ASIA1");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(role.credentials(15 * MIN).await.expect("renewed").credentials.access_key_id.expose(), "ASIA2");
}

#[tokio::test]
async fn a_role_refusing_long_sessions_falls_back_to_an_hour_and_remembers() {
    let sts = Arc::new(FakeSts { role_max: Some(HOUR), ..FakeSts::default() });
    let role = role(&sts);
    let credentials = role.credentials(3 * HOUR).await.expect("an hour's session");
    assert_eq!(credentials.credentials.access_key_id.expose(), "ASIA1");
    assert_eq!(*sts.asked.lock().expect("lock"), vec![3 * HOUR + 35 * MIN, HOUR]);
    // Known now: the next renewal asks for an hour straight away.
    role.state.lock().await.current = None;
    role.credentials(3 * HOUR).await.expect("again");
    assert_eq!(sts.asked.lock().expect("lock").last(), Some(&HOUR));
    assert_eq!(sts.asked.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn without_credentials_the_task_gets_an_error_naming_the_role_and_no_keys() {
    let sts = Arc::new(FakeSts::default());
    sts.down.store(true, Ordering::SeqCst);
    let role = role(&sts);
    let error = role.credentials(15 * MIN).await.expect_err("STS is down");
    let message = error.to_string();
    assert!(
        message.contains(ARN) && message.contains("connection refused") && message.contains("did not run"),
        "{message}"
    );

    // Credentials that still outlive the margin serve while STS is down; expired ones never.
    sts.down.store(false, Ordering::SeqCst);
    role.credentials(15 * MIN).await.expect("STS is back");
    sts.down.store(true, Ordering::SeqCst);
    let held = role.credentials(2 * HOUR).await.expect("the current session, for want of a new one");
    assert_eq!(held.credentials.access_key_id.expose(), "ASIA1");
    if let Some(current) = role.state.lock().await.current.as_mut() {
        Arc::make_mut(current).credentials.expires_at = SystemTime::now() + MIN;
    }
    role.credentials(15 * MIN).await.expect_err("a minute left is not enough");
}

#[test]
fn debug_never_prints_keys() {
    let credentials = TaskCredentials {
        credentials: RoleCredentials {
            access_key_id: Secret::new("ASIAKEYMARKER"),
            secret_access_key: Secret::new("secret-marker"),
            session_token: Secret::new("token-marker"),
            expires_at: at(0),
        },
        region: "eu-west-1".into(),
    };
    let printed = format!("{credentials:?} {:?}", credentials.credentials);
    for marker in ["ASIAKEYMARKER", "secret-marker", "token-marker"] {
        assert!(!printed.contains(marker), "{printed}");
    }
}
