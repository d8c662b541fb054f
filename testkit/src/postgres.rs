//! A PostgreSQL database of its own for one test, dropped when the test ends.
//!
//! The server is, in order: the one `BATCHGRID_TEST_POSTGRES_URL` names; one on 127.0.0.1:5432
//! that lets user `postgres` in without a password; a throwaway cluster made with `initdb` and
//! `pg_ctl` in a temporary directory, stopped when the database is dropped. When none can be
//! had the test panics saying what to install: a skipped test would look like a passing one.
//!
//! [`TestDatabase::with_password_auth`] always makes a throwaway cluster, one that checks
//! passwords: the servers above may trust every local user, and a test of wrong or changed
//! passwords against them would pass whatever the code does.

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

/// The variable naming a server to use instead of looking for one.
pub const URL_VARIABLE: &str = "BATCHGRID_TEST_POSTGRES_URL";

/// Where a locally installed server usually listens, with the trust authentication of a
/// development setup.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const INSTALL_HINT: &str = "install PostgreSQL's server binaries (Debian/Ubuntu: `apt-get install postgresql`; \
     macOS: `brew install postgresql`) so the tests can run a throwaway cluster, or start a server on \
     127.0.0.1:5432 that accepts user `postgres` without a password, or set BATCHGRID_TEST_POSTGRES_URL \
     to a server where the user may create databases";

/// A freshly created, uniquely named database, dropped (with its throwaway server, if one was
/// started) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    /// A connection URL for another database of the same server, from which to create and drop.
    admin_url: String,
    name: String,
    /// Dropped after the database, by field order: the server must outlive it.
    cluster: Option<Cluster>,
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDatabase {
    /// Finds or starts a server and creates a new database on it; panics if neither works.
    pub fn new() -> Self {
        let (admin_url, cluster) = server();
        Self::create(admin_url, cluster)
    }

    /// Starts a throwaway cluster that authenticates every connection with a password
    /// (scram-sha-256), its superuser's included, and creates a database on it; panics if
    /// `initdb` and `pg_ctl` cannot be found or fail.
    pub fn with_password_auth() -> Self {
        let password = ulid::Ulid::new().to_string();
        match Cluster::start(Some(&password), false) {
            Ok(cluster) => Self::create(cluster.url(), Some(cluster)),
            Err(error) => {
                panic!("no PostgreSQL cluster with password authentication ({error}). To fix, {INSTALL_HINT}.")
            }
        }
    }

    /// Starts a throwaway cluster (trust authentication) that offers TLS with `server`'s
    /// certificate and key (`ssl = on`; clients may still connect without TLS), and creates a
    /// database on it; panics if `initdb` and `pg_ctl` cannot be found or fail.
    pub fn with_tls(server: &crate::tls::ServerCert) -> Self {
        match Cluster::start_with(None, false, Some(server)) {
            Ok(cluster) => Self::create(cluster.url(), Some(cluster)),
            Err(error) => panic!("no throwaway PostgreSQL cluster with TLS ({error}). To fix, {INSTALL_HINT}."),
        }
    }

    /// Always starts a throwaway cluster (trust authentication) of the test's own, which
    /// [`TestDatabase::stop`] and [`TestDatabase::start`] can take away and bring back. Its
    /// commits are synchronous, as on RDS: a commit acknowledged before a stop survives it
    /// (the other clusters trade that away for speed). Panics
    /// if `initdb` and `pg_ctl` cannot be found or fail.
    pub fn throwaway() -> Self {
        match Cluster::start(None, true) {
            Ok(cluster) => Self::create(cluster.url(), Some(cluster)),
            Err(error) => panic!("no throwaway PostgreSQL cluster ({error}). To fix, {INSTALL_HINT}."),
        }
    }

    /// Stops the server at once, as a crash or a failover would (`pg_ctl stop -m immediate`):
    /// every connection breaks and new ones are refused until [`TestDatabase::start`]. Panics
    /// unless the database is on a throwaway cluster ([`TestDatabase::throwaway`]).
    pub fn stop(&self) {
        let cluster = self.cluster.as_ref().expect("stop() needs a throwaway cluster: use TestDatabase::throwaway()");
        if let Err(error) = cluster.stop() {
            panic!("could not stop the throwaway PostgreSQL cluster: {error}");
        }
    }

    /// Starts the server again on the same port, after [`TestDatabase::stop`].
    pub fn start(&self) {
        let cluster = self.cluster.as_ref().expect("start() needs a throwaway cluster: use TestDatabase::throwaway()");
        if let Err(error) = cluster.restart() {
            panic!("could not start the throwaway PostgreSQL cluster again: {error}");
        }
    }

    fn create(admin_url: String, cluster: Option<Cluster>) -> Self {
        let name = format!("batchgrid_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let statement = format!(r#"CREATE DATABASE "{name}""#);
        if let Err(error) = block_on(admin(&admin_url, &[statement])) {
            panic!("could not create test database `{name}` on {}: {error}", redact(&admin_url));
        }
        Self { admin_url, name, cluster }
    }

    /// The URL of the test database, as the superuser.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// The URL of the test database as `user`, without a password (for a server that trusts
    /// local users; a role such as the workers' `batchgrid_worker` that the migrations create).
    pub fn url_as(&self, user: &str) -> String {
        as_user(&self.url(), user)
    }

    /// The test database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's host and port.
    pub fn address(&self) -> (String, u16) {
        match PgConnectOptions::from_str(&self.admin_url) {
            Ok(options) => (options.get_host().to_owned(), options.get_port()),
            Err(error) => panic!("{}: {error}", redact(&self.admin_url)),
        }
    }

    /// Runs `statements` one by one in the test database as the superuser, outside a
    /// transaction (to create roles, change passwords, end sessions).
    pub fn execute(&self, statements: &[&str]) -> Result<(), String> {
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        block_on(admin(&self.url(), &statements))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE (PostgreSQL 13+) ends connections a pool being dropped may still hold open;
        // older servers get the plain statement. Best effort: a leftover database is harmless.
        let force = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let plain = format!(r#"DROP DATABASE IF EXISTS "{}""#, self.name);
        if block_on(admin(&self.admin_url, &[force])).is_err() {
            if let Err(error) = block_on(admin(&self.admin_url, &[plain])) {
                eprintln!("warning: could not drop test database `{}`: {error}", self.name);
            }
        }
    }
}

/// The server to use, as an admin URL, and the throwaway cluster behind it when there is one.
fn server() -> (String, Option<Cluster>) {
    if let Ok(url) = std::env::var(URL_VARIABLE) {
        // Named explicitly, so it must work: no fallback that would hide a typo.
        if let Err(error) = block_on(probe(&url)) {
            panic!("{URL_VARIABLE} is set, but {} does not accept connections: {error}", redact(&url));
        }
        // Any database of the server will do to create and drop others from.
        return (url, None);
    }
    let local = match block_on(probe(LOCAL_URL)) {
        Ok(()) => return (LOCAL_URL.to_owned(), None),
        Err(error) => error,
    };
    match Cluster::start(None, false) {
        Ok(cluster) => (cluster.url(), Some(cluster)),
        Err(error) => panic!(
            "no PostgreSQL for the tests: nothing usable at {LOCAL_URL} ({local}), and no throwaway cluster \
             ({error}). To fix, {INSTALL_HINT}."
        ),
    }
}

/// Connects and disconnects, quickly failing when nothing listens.
async fn probe(url: &str) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let connect = PgConnection::connect_with(&options);
    let conn = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())
}

/// Runs `statements` one by one outside a transaction (`CREATE DATABASE` cannot run in one).
async fn admin(url: &str, statements: &[String]) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?.disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options).await.map_err(|e| e.to_string())?;
    for statement in statements {
        conn.execute(statement.as_str()).await.map_err(|e| e.to_string())?;
    }
    conn.close().await.map_err(|e| e.to_string())
}

/// Runs a future to completion on a runtime of its own, in a thread of its own: the callers
/// (constructors and `Drop`) may themselves be running inside a test's runtime, where blocking
/// on another one panics.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime for setup");
            runtime.block_on(future)
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `url` with its database (the path) replaced by `database`, query string kept.
/// `url` with its user (and password) replaced by `user`.
fn as_user(url: &str, user: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let host_start = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => at + 1,
        (Some(at), None) => at + 1,
        _ => 0,
    };
    format!("{}{user}@{}", &url[..authority_start], &rest[host_start..])
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(options) => {
            let mut shown = options.to_url_lossy();
            let _ = shown.set_password(None);
            shown.to_string()
        }
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// A PostgreSQL cluster in a temporary directory, on a free loopback port, with trust
/// authentication or, given a superuser password, scram-sha-256; stopped and deleted on drop.
#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    /// Runs the server binaries as `postgres`: `initdb` refuses to run as root.
    as_postgres: bool,
    data: PathBuf,
    port: u16,
    /// The superuser's password, when passwords are checked.
    password: Option<String>,
    /// Dropped last, after the server has stopped.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `durable`: commits are acknowledged only once written, so an immediate stop loses none.
    fn start(password: Option<&str>, durable: bool) -> Result<Self, String> {
        Self::start_with(password, durable, None)
    }

    /// [`Cluster::start`], offering TLS with `tls`'s certificate when given.
    fn start_with(password: Option<&str>, durable: bool, tls: Option<&crate::tls::ServerCert>) -> Result<Self, String> {
        let bin = server_binaries().ok_or("`initdb` and `pg_ctl` are not in PATH nor in /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::Builder::new()
            .prefix("batchgrid-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let as_postgres = std::fs::metadata(dir.path()).map_err(|e| e.to_string())?.uid() == 0;
        if as_postgres {
            hand_to_postgres_user(dir.path())?;
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("superuser-password");
        let mut cluster = Cluster { bin, as_postgres, data, port: 0, password: password.map(str::to_owned), _dir: dir };
        let data_arg = cluster.data.display().to_string();
        let mut initdb = vec!["-D", &data_arg, "-U", "postgres", "-E", "UTF8", "--no-sync"];
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        match password {
            None => initdb.extend(["-A", "trust"]),
            Some(password) => {
                // Read by initdb as `postgres`: the file is world-readable, in a directory
                // only `postgres` (and root) can enter.
                std::fs::write(&pwfile, password).map_err(|e| format!("writing {}: {e}", pwfile.display()))?;
                initdb.extend(["-A", "scram-sha-256", &pwfile_arg]);
            }
        }
        let initialised = cluster.run("initdb", &initdb);
        let _ = std::fs::remove_file(&pwfile);
        initialised?;
        // Loopback only, no Unix socket (its directory may not be writable), and little durability:
        // the cluster dies with the test.
        let mut settings = "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n\
                            full_page_writes = off\n"
            .to_owned();
        // fsync off still writes the WAL to the kernel at commit, which a server crash keeps;
        // asynchronous commit does not even write it.
        settings.push_str(if durable { "synchronous_commit = on\n" } else { "synchronous_commit = off\n" });
        if let Some(tls) = tls {
            // The server's default file names, in its data directory; the key must belong to
            // the server's user and be private to it, or the server refuses to start.
            for (from, to) in [(&tls.cert, "server.crt"), (&tls.key, "server.key")] {
                let target = cluster.data.join(to);
                std::fs::copy(from, &target).map_err(|e| format!("copying {} to {}: {e}", from.display(), to))?;
                std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(|e| format!("chmod {to}: {e}"))?;
                if cluster.as_postgres {
                    let (uid, gid) = postgres_ids()?;
                    std::os::unix::fs::chown(&target, Some(uid), Some(gid)).map_err(|e| format!("chown {to}: {e}"))?;
                }
            }
            settings.push_str("ssl = on\n");
        }
        let conf = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;

        // The port is free when chosen but another process may take it before the server
        // binds it, so a failed start is retried on a new one.
        let log = cluster.data.join("server.log").display().to_string();
        let mut last_error = String::new();
        for _ in 0..3 {
            cluster.port = free_port()?;
            let port_option = format!("-p {}", cluster.port);
            match cluster.run("pg_ctl", &["-D", &data_arg, "-l", &log, "-o", &port_option, "-w", "-t", "60", "start"]) {
                Ok(()) => return Ok(cluster),
                Err(error) => {
                    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = format!("{error}\nserver log:\n{server_log}");
                }
            }
        }
        // Nothing to stop: make Drop skip pg_ctl.
        cluster.port = 0;
        Err(last_error)
    }

    fn url(&self) -> String {
        match &self.password {
            // A ULID: nothing in it needs escaping in a URL.
            Some(password) => format!("postgres://postgres:{password}@127.0.0.1:{}/postgres", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    fn stop(&self) -> Result<(), String> {
        let data_arg = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data_arg, "-m", "immediate", "-w", "stop"])
    }

    /// Starts the stopped server again on its port.
    fn restart(&self) -> Result<(), String> {
        let data_arg = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        let port_option = format!("-p {}", self.port);
        self.run("pg_ctl", &["-D", &data_arg, "-l", &log, "-o", &port_option, "-w", "-t", "60", "start"])
    }

    /// Runs one of the server binaries, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command =
                Command::new(runuser().ok_or(
                    "running as root, where initdb refuses to run, and `runuser` (util-linux) is not installed",
                )?);
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        // A working directory the `postgres` user can enter, or the binaries complain.
        command.args(args).current_dir(self.data.parent().unwrap_or(Path::new("/")));
        let output = command.output().map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        check(program, &output)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        // Best effort: the test may have stopped it already.
        if let Err(error) = self.stop() {
            eprintln!("warning: could not stop the throwaway PostgreSQL cluster: {error}");
        }
    }
}

fn check(program: &str, output: &Output) -> Result<(), String> {
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The directory holding `initdb` and `pg_ctl` (and the `postgres` binary `pg_ctl` starts,
/// which it finds beside itself): PATH first, then Debian's versioned directories, newest first.
fn server_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| dir.join("initdb").is_file())
        // A symlink into the real installation: use the directory it points into.
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok()?.parent().map(Path::to_path_buf))
        .find(|dir| has_both(dir));
    from_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_both(bin))
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

fn runuser() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("runuser")).find(|p| p.is_file()));
    in_path.or_else(|| ["/usr/sbin/runuser", "/sbin/runuser"].into_iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id").args([flag, "postgres"]).output().map_err(|e| format!("cannot run id: {e}"))?;
        check("id", &output).map_err(|_| {
            "running as root, where initdb refuses to run, and there is no `postgres` user to run it as".to_owned()
        })?;
        String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|e| format!("id {flag} postgres: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Gives `dir` to the `postgres` user, who will own the cluster in it.
fn hand_to_postgres_user(dir: &Path) -> Result<(), String> {
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to the postgres user: {e}", dir.display()))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|addr| addr.port()).map_err(|e| e.to_string())
}

#[test]
fn as_user_replaces_only_the_user() {
    assert_eq!(as_user("postgres://u:p@h:1/db?sslmode=require", "w"), "postgres://w@h:1/db?sslmode=require");
    assert_eq!(as_user("postgres://h:1/db", "w"), "postgres://w@h:1/db");
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(with_database("postgres://u:p@h:1/db?sslmode=require", "x"), "postgres://u:p@h:1/x?sslmode=require");
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    assert_eq!(with_database("postgresql://u@h/", "x"), "postgresql://u@h/x");
}
