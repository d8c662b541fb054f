//! Tokens checked against botocore's `generate_db_auth_token` (the AWS CLI's own code, installed
//! with moto by `make tools`) at a fixed time: the same key, date and request must give the same
//! signature. RDS's side of the check (the `rds_iam` role, PAM) needs a real instance.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2018-07-31T23:52:09Z, the time of the example in the AWS CLI's documentation.
const SIGNED_AT: u64 = 1_533_081_129;

fn target() -> TokenTarget {
    TokenTarget {
        host: "grid-db.abc123.eu-west-1.rds.amazonaws.com".into(),
        port: 5432,
        region: "eu-west-1".into(),
        user: "batchgrid_worker".into(),
    }
}

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SIGNED_AT)
}

/// botocore's token for the same inputs, its clock held at [`SIGNED_AT`].
fn botocore_token(target: &TokenTarget, key: &str, secret: &str, session: Option<&str>) -> String {
    let script = r#"
import datetime, sys
import botocore.auth, botocore.session
fixed = datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc).replace(tzinfo=None)
botocore.auth.get_current_datetime = lambda *a, **k: fixed
session = botocore.session.get_session()
session.set_credentials(sys.argv[6], sys.argv[7], sys.argv[8] or None)
client = session.create_client("rds", region_name=sys.argv[4])
print(client.generate_db_auth_token(sys.argv[2], int(sys.argv[3]), sys.argv[5]))
"#;
    let output = Command::new("python3")
        .args(["-c", script, &SIGNED_AT.to_string(), &target.host, &target.port.to_string(), &target.region])
        .args([&target.user, key, secret, session.unwrap_or("")])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install python3 and moto (make tools installs botocore)")
        });
    assert!(
        output.status.success(),
        "botocore did not sign (install it with `python3 -m pip install 'moto[server]'`, as make tools does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A token's address and its decoded query, order aside.
fn parts(token: &str) -> (String, BTreeMap<String, String>) {
    let (address, query) = token.split_once("/?").unwrap_or_else(|| panic!("no query in {token}"));
    let params = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
        .collect();
    (address.to_owned(), params)
}

#[test]
fn tokens_match_botocore_with_and_without_a_session_token() {
    let key = "AKIAIOSFODNN7EXAMPLE";
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for session in [None, Some("FwoGZXIvYXdzEJr//////////wEaDOEXAMPLE+session/token=")] {
        let credentials = Credentials::new(key, secret, session.map(str::to_owned), None, "test");
        let ours = auth_token(&target(), &credentials, at()).expect("signed");
        let theirs = botocore_token(&target(), key, secret, session);
        assert!(!ours.starts_with("https://"), "RDS wants the token without a scheme: {ours}");
        let (our_address, our_params) = parts(&ours);
        let (their_address, their_params) = parts(&theirs);
        assert_eq!(our_address, their_address);
        assert_eq!(our_params, their_params, "\nours:   {ours}\ntheirs: {theirs}");
        assert_eq!(our_params.get("X-Amz-Expires").map(String::as_str), Some("900"));
        assert_eq!(our_params.get("X-Amz-Date").map(String::as_str), Some("20180731T235209Z"));
        assert_eq!(
            our_params.get("X-Amz-Credential").map(String::as_str),
            Some("AKIAIOSFODNN7EXAMPLE/20180731/eu-west-1/rds-db/aws4_request")
        );
    }
}

#[test]
fn another_key_or_time_gives_another_signature() {
    let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", "one", None, None, "test");
    let other_key = Credentials::new("AKIAIOSFODNN7EXAMPLE", "two", None, None, "test");
    let signature = |token: String| parts(&token).1.remove("X-Amz-Signature").expect("signature");
    let first = signature(auth_token(&target(), &credentials, at()).expect("signed"));
    assert_ne!(first, signature(auth_token(&target(), &other_key, at()).expect("signed")));
    assert_ne!(first, signature(auth_token(&target(), &credentials, at() + Duration::from_secs(1)).expect("signed")));
}

#[test]
fn user_names_that_are_not_plain_roles_are_refused() {
    let credentials = Credentials::new("AKIA", "s", None, None, "test");
    for user in ["", "worker&Action=other", "a b", "röle"] {
        let target = TokenTarget { user: user.into(), ..target() };
        assert!(matches!(auth_token(&target, &credentials, at()), Err(TokenError::User(_))), "{user:?}");
    }
}

#[tokio::test]
async fn the_options_log_in_as_the_role_with_a_fresh_token_as_password() {
    let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", "secret", None, None, "test");
    let source = RdsIamAuth::new(
        SharedCredentialsProvider::new(credentials.clone()),
        target(),
        "batchgrid",
        DatabaseTls::default(),
    );
    let options = source.options_at(at()).await.expect("options");
    assert_eq!(options.get_username(), "batchgrid_worker");
    assert_eq!(options.get_host(), target().host);
    assert_eq!(options.get_port(), 5432);
    assert_eq!(options.get_database(), Some("batchgrid"));
    assert_eq!(source.max_age(), Some(TOKEN_RENEW_AFTER));
    assert!(TOKEN_RENEW_AFTER < TOKEN_LIFETIME);
    let origin = source.origin();
    assert!(origin.contains("batchgrid_worker") && !origin.contains("secret"), "{origin}");
    assert!(!format!("{source:?}").contains("secret"));
}
