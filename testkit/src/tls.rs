//! Certificates for tests, made with the `openssl` command in a temporary directory: a
//! certificate authority of the test's own and server certificates it issues (P-256 keys, v3
//! extensions, as rustls requires). Nothing here is trusted outside the test that made it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority living in a temporary directory, removed with it.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
    name: String,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (unencrypted).
    pub key: PathBuf,
}

/// Runs `openssl` with `args` in `dir`; panics with its output, or with how to install it.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run openssl ({e}): install it with `apt-get install -y openssl` (make test does)")
    });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestCa {
    /// A new self-signed authority with common name `name`, valid for two days.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("batchgrid-ca-").tempdir().expect("temp dir for a test CA");
        let subject = format!("/CN={name}");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self { dir, name: name.to_owned() }
    }

    /// The authority's certificate (what a client trusts).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a server certificate for the DNS names `dns_names` (the first is its common
    /// name), into this authority's directory.
    pub fn issue(&self, dns_names: &[&str]) -> ServerCert {
        let first = dns_names.first().expect("at least one name");
        let stem = format!("{}-{}", first.replace(['*', '/'], "_"), ulid::Ulid::new());
        let (key, csr, cert, ext) =
            (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.pem"), format!("{stem}.ext"));
        let names: Vec<String> = dns_names.iter().map(|name| format!("DNS:{name}")).collect();
        let extensions = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectAltName={}\n",
            names.join(",")
        );
        std::fs::write(self.dir.path().join(&ext), extensions).expect("extensions file");
        let subject = format!("/CN={first}");
        openssl(
            self.dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subject,
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        ServerCert { cert: self.dir.path().join(cert), key: self.dir.path().join(key) }
    }

    /// The authority's common name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
