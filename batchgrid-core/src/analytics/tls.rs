//! TLS to the analytics database: the `sslmode` and, for the modes that check the server's
//! certificate, the certificate authorities to check it against.
//!
//! The roots are read once, when the settings are made (at startup), so that a verifying mode
//! without a readable bundle fails there, naming the file, instead of on the first connection
//! or, worse, by falling back to a trust store that happens to be on the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;

use super::credentials::SslMode;

/// What starts a PEM certificate.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A verifying mode was asked for without the authorities to verify with.
    #[error(
        "sslmode {0} checks the server's certificate and needs the certificate authorities to trust (sslrootcert)"
    )]
    MissingRootCert(&'static str),
    /// The root certificate file could not be read.
    #[error("sslrootcert {path} cannot be read")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The root certificate file holds no PEM certificate.
    #[error("sslrootcert {0}: holds no PEM certificate (`{PEM_CERTIFICATE}`)")]
    NoCertificate(PathBuf),
}

/// A validated TLS setting: a verifying mode always comes with certificates to verify against.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseTls {
    mode: SslMode,
    root: Option<RootCert>,
}

/// The trusted authorities: where they came from, and their PEM text as read at startup.
#[derive(Clone, PartialEq, Eq)]
struct RootCert {
    path: PathBuf,
    pem: Arc<[u8]>,
    certificates: usize,
}

impl std::fmt::Debug for DatabaseTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path and a count, not the PEM text.
        f.debug_struct("DatabaseTls")
            .field("mode", &self.mode)
            .field("root_cert", &self.root.as_ref().map(|r| (&r.path, r.certificates)))
            .finish()
    }
}

impl Default for DatabaseTls {
    /// [`SslMode::default`] (`require`), which needs no roots.
    fn default() -> Self {
        Self { mode: SslMode::default(), root: None }
    }
}

impl DatabaseTls {
    /// `mode`, with the PEM bundle at `root_cert`, read now. A verifying mode without a
    /// readable bundle holding at least one certificate is an error; the other modes take a
    /// bundle if given (and do not use it, as the driver ignores it outside verification).
    pub fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<Self, TlsError> {
        let root = match root_cert {
            Some(path) => Some(read_root(path)?),
            None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(TlsError::MissingRootCert(mode.as_str()));
            }
            None => None,
        };
        Ok(Self { mode, root })
    }

    /// No TLS (a database on loopback).
    pub fn disabled() -> Self {
        Self { mode: SslMode::Disable, root: None }
    }

    /// The mode.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Where the trusted authorities were read from, if any.
    pub fn root_cert(&self) -> Option<&Path> {
        self.root.as_ref().map(|root| root.path.as_path())
    }

    /// `options` with this mode and these authorities (the text read at startup, not the file
    /// again).
    pub fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        let options = options.ssl_mode(self.mode.to_pg());
        match &self.root {
            Some(root) => options.ssl_root_cert_from_pem(root.pem.to_vec()),
            None => options,
        }
    }
}

fn read_root(path: &Path) -> Result<RootCert, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Unreadable { path: path.to_path_buf(), source })?;
    let certificates = String::from_utf8_lossy(&pem).matches(PEM_CERTIFICATE).count();
    if certificates == 0 {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(RootCert { path: path.to_path_buf(), pem: pem.into(), certificates })
}

#[cfg(test)]
mod tests;
