use sqlx::postgres::PgSslMode;

use super::*;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn a_verifying_mode_needs_a_readable_bundle_of_certificates() {
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let error = DatabaseTls::new(mode, None).expect_err("no roots").to_string();
        assert!(error.contains(mode.as_str()) && error.contains("sslrootcert"), "{error}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.pem");
    let error = DatabaseTls::new(SslMode::VerifyFull, Some(&missing)).expect_err("missing file").to_string();
    assert!(error.contains("absent.pem"), "{error}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let error = DatabaseTls::new(SslMode::VerifyFull, Some(&empty)).expect_err("no certificate").to_string();
    assert!(error.contains("empty.pem") && error.contains("no PEM certificate"), "{error}");
    // Not only for verifying modes: a bundle named is a bundle checked.
    assert!(DatabaseTls::new(SslMode::Require, Some(&empty)).is_err());

    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, CERT.repeat(3)).expect("write");
    let tls = DatabaseTls::new(SslMode::VerifyFull, Some(&bundle)).expect("a bundle");
    assert_eq!((tls.mode(), tls.root_cert()), (SslMode::VerifyFull, Some(bundle.as_path())));
    assert!(format!("{tls:?}").contains('3') && !format!("{tls:?}").contains("MIIB"), "{tls:?}");
    // Read at startup: the file going away later changes nothing.
    std::fs::remove_file(&bundle).expect("remove");
    let options = tls.apply(PgConnectOptions::new_without_pgpass());
    assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
}

#[test]
fn modes_that_do_not_verify_need_no_bundle() {
    for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
        let tls = DatabaseTls::new(mode, None).expect("no roots needed");
        assert_eq!(tls.root_cert(), None);
    }
    assert_eq!(DatabaseTls::default().mode(), SslMode::Require);
    assert!(matches!(
        DatabaseTls::disabled().apply(PgConnectOptions::new_without_pgpass()).get_ssl_mode(),
        PgSslMode::Disable
    ));
}

/// The grid's own connect path (the RDS credentials source, Secrets Manager mocked, then the
/// analytics store connecting and migrating) against a throwaway PostgreSQL that offers TLS with
/// a certificate for `localhost` from a CA made here.
#[cfg(feature = "aws")]
mod against_a_tls_server {
    use std::sync::Arc;

    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use batchgrid_testkit::postgres::TestDatabase;
    use batchgrid_testkit::tls::TestCa;
    use sqlx::{Connection, Row};

    use crate::analytics::credentials::{ReconnectSettings, SslMode};
    use crate::analytics::postgres::PgAnalytics;
    use crate::analytics::tls::DatabaseTls;
    use crate::analytics::{AnalyticsError, AnalyticsStore};
    use crate::aws::secrets::DatabaseSecret;

    /// A Secrets Manager holding the cluster's credentials for `database`, read any number of times.
    fn secrets(database: &str) -> aws_sdk_secretsmanager::Client {
        let value = format!(r#"{{"username":"postgres","password":"unused","dbname":"{database}"}}"#);
        let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .then_output(move || GetSecretValueOutput::builder().secret_string(value.clone()).build());
        mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, &[&rule])
    }

    /// Connects (and migrates) through the secret, as the grid's processes do, at `host`.
    async fn connect(database: &TestDatabase, host: &str, tls: DatabaseTls) -> Result<PgAnalytics, AnalyticsError> {
        let (_, port) = database.address();
        let source = DatabaseSecret::new(secrets(database.name()), "arn:rds-secret", &format!("{host}:{port}"), tls)
            .expect("secret source");
        PgAnalytics::connect_with(Arc::new(source), 2, ReconnectSettings::default()).await
    }

    /// Whether every session on `database` but the asking one runs over TLS, and how many.
    async fn sessions_over_tls(database: &TestDatabase) -> (bool, i64) {
        let mut admin = sqlx::PgConnection::connect(&database.url()).await.expect("admin connection");
        let row = sqlx::query(
            "SELECT coalesce(bool_and(s.ssl), false) AS tls, count(*) AS sessions FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
        )
        .bind(database.name())
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_ssl");
        (row.get("tls"), row.get("sessions"))
    }

    fn failure(result: Result<PgAnalytics, AnalyticsError>, case: &str) -> String {
        match result {
            Ok(_) => panic!("{case}: connected"),
            Err(error) => {
                // The whole chain: the certificate error is a cause, not the top message.
                let mut text = error.to_string();
                let mut cause = std::error::Error::source(&error);
                while let Some(inner) = cause {
                    text.push_str(&format!(": {inner}"));
                    cause = inner.source();
                }
                text
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_full_accepts_only_the_trusted_ca_and_the_certificates_name() {
        let ca = TestCa::new("batchgrid test CA");
        let other = TestCa::new("some other CA");
        let database = TestDatabase::with_tls(&ca.issue(&["localhost"]));
        let trusted = DatabaseTls::new(SslMode::VerifyFull, Some(&ca.cert())).expect("tls");

        // The trusted CA and the certificate's name: connected, migrated, usable, over TLS.
        let analytics = connect(&database, "localhost", trusted.clone()).await.expect("verify-full with the CA");
        assert!(analytics.jobs().await.expect("an operation").is_empty());
        let (tls, sessions) = sessions_over_tls(&database).await;
        assert!(tls && sessions > 0, "the store's sessions run over TLS ({sessions} sessions)");
        drop(analytics);

        // Another CA: the server's certificate is refused.
        let untrusted = DatabaseTls::new(SslMode::VerifyFull, Some(&other.cert())).expect("tls");
        let error = failure(connect(&database, "localhost", untrusted).await, "verify-full with another CA");
        assert!(error.to_lowercase().contains("certificate"), "refused for its certificate: {error}");

        // The right CA, but a host the certificate does not name.
        let error = failure(connect(&database, "127.0.0.1", trusted.clone()).await, "verify-full by IP");
        assert!(error.to_lowercase().contains("certificate"), "refused for the name: {error}");

        // verify-ca: the trusted CA passes, another does not. (libpq's verify-ca skips the name;
        // sqlx 0.8.6 on rustls 0.23 checks it too, as rustls now reports a mismatch with a
        // variant sqlx does not excuse: stricter, never weaker. This shows if that changes.)
        let ca_only = DatabaseTls::new(SslMode::VerifyCa, Some(&ca.cert())).expect("tls");
        connect(&database, "localhost", ca_only.clone()).await.expect("verify-ca with the CA");
        failure(connect(&database, "127.0.0.1", ca_only).await, "verify-ca by IP (sqlx checks the name)");
        let other_ca_only = DatabaseTls::new(SslMode::VerifyCa, Some(&other.cert())).expect("tls");
        failure(connect(&database, "localhost", other_ca_only).await, "verify-ca with another CA");

        // require: encrypted, nothing checked, no CA needed.
        let require = DatabaseTls::new(SslMode::Require, None).expect("tls");
        let analytics = connect(&database, "127.0.0.1", require).await.expect("require without a CA");
        analytics.jobs().await.expect("an operation");
        assert!(sessions_over_tls(&database).await.0, "require is TLS too");
    }
}
