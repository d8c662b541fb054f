//! TLS for the crate's own HTTP clients (presigned S3 downloads, EC2's Query API): rustls over
//! aws-lc-rs with the platform's root certificates, the stack the AWS SDK already builds.
//! reqwest's bundled TLS features would compile `ring` beside it, so reqwest is given this
//! configuration ready-made instead.

use std::sync::Arc;

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No usable root certificate was found on this machine.
    #[error(
        "no root certificates found ({0}); install the `ca-certificates` package, or point \
         SSL_CERT_FILE at a PEM bundle"
    )]
    NoRoots(String),
    /// rustls refused the protocol versions (it should not).
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls client configuration trusting the platform's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured, as OpenSSL does).
pub fn client_config() -> Result<rustls::ClientConfig, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsError::NoRoots(if errors.is_empty() { "none listed".into() } else { errors.join("; ") }));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // reqwest's own constructors (`reqwest::Client::new()`) look for a process-wide provider
    // and panic without one; with this one installed they work too. An earlier install wins.
    let _ = rustls::crypto::CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `builder` speaking HTTPS with [`client_config`].
pub fn with_tls(builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(builder.use_preconfigured_tls(client_config()?))
}

/// A reqwest client builder speaking HTTPS with [`client_config`]: the one to start from, since
/// `reqwest::Client::builder()` alone has no TLS provider in this build.
pub fn builder() -> Result<reqwest::ClientBuilder, TlsError> {
    with_tls(reqwest::Client::builder())
}
