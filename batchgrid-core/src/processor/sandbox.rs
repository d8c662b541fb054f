//! What a task command may touch: it writes only its own scratch directory (and the paths the
//! operator lists), runs as a user that is not the worker's when one is configured, and can
//! never gain privileges (no set-user-id program, no file capability).
//!
//! - **Files: Landlock.** A Landlock ruleset, built per task in the worker, lets the command
//!   write beneath its scratch slot and write to `/dev/null`-like devices, nothing else; reads
//!   are not restricted (it needs the system's programs and libraries, and reads its input in
//!   place). Landlock needs no privilege, so the embedded grid (a developer's `batchgrid run`)
//!   gets the same rule as an instance. A Landlock domain also keeps the command from tracing
//!   the worker or reading its `/proc/PID/environ`, even under the same user.
//! - **User: `setuid`.** With a task user (`--task-user`, `batchgrid-task` on the grid's
//!   instances), the command's process switches to it after it has left the supervisor (the
//!   supervisor stays the worker's, so the task cannot signal or trace it). The worker needs
//!   `CAP_SETUID`, `CAP_SETGID` (to switch) and `CAP_KILL` (so the supervisor can kill the
//!   task's processes): its unit grants those three as ambient capabilities, which the command
//!   loses (they are cleared before `exec`). The task user is what the instance's nftables rule
//!   matches to keep tasks from the metadata service.
//! - **Files between the two users.** The worker and the task share the task user's group: the
//!   scratch run directory belongs to that group with the set-group-id bit (everything created
//!   under it is the group's), and both use umask 007. So the task reads its inputs, the worker
//!   reads its outputs and empties its slot; what a task hides from the group (a `chmod 700`)
//!   is reclaimed by removing it as the task user.
//!
//! Where the kernel has no Landlock, a worker without a task user (a developer's machine) warns
//! once and runs tasks unconfined; with a task user (an instance) it refuses to start.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use landlock::{AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};

/// The newest Landlock ABI whose rights we ask for; older kernels get what they support.
const LANDLOCK_ABI: ABI = ABI::V5;

/// Devices every program expects to write to (`> /dev/null`).
const WRITABLE_DEVICES: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

/// Why tasks cannot be sandboxed as configured.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The task user does not exist.
    #[error("task user `{0}`: no such user on this machine")]
    NoSuchUser(String),
    /// The task user is the worker's own (or root), which would defeat the point.
    #[error("task user `{0}` must differ from the worker's user and from root")]
    SameUser(String),
    /// The user database could not be read.
    #[error("task user `{user}`: {source}")]
    UserLookup {
        /// The user.
        user: String,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// Landlock is required (a task user is set) but the kernel cannot enforce it.
    #[error("this kernel cannot confine tasks to their scratch directory (Landlock is {0}); a worker with a task user refuses to run unconfined tasks")]
    NoLandlock(&'static str),
    /// Building a task's ruleset failed.
    #[error("building the task's sandbox: {0}")]
    Ruleset(String),
    /// The start-up probe found the sandbox not working.
    #[error("tasks cannot be sandboxed: {0}")]
    Probe(String),
    /// An extra writable path is unusable.
    #[error("task writable path {path}: {source}")]
    WritablePath {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The user tasks run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id, shared with the worker.
    pub gid: u32,
}

/// How a worker sandboxes its task commands; built once per worker. The default runs tasks as
/// the worker's user, confined to their scratch directory where the kernel allows.
#[derive(Debug)]
pub struct TaskSandbox {
    user: Option<TaskUser>,
    writable: Vec<PathBuf>,
    /// The rules every task's ruleset holds besides its scratch directory (the writable paths
    /// and devices), opened once here rather than on every task; empty without Landlock.
    fixed_rules: Vec<(PathFd, BitFlags<AccessFs>)>,
    landlock: bool,
}

impl Default for TaskSandbox {
    fn default() -> Self {
        let landlock = landlock_support().map_err(warn_unconfined).is_ok();
        Self {
            user: None,
            writable: Vec::new(),
            fixed_rules: if landlock { device_rules() } else { Vec::new() },
            landlock,
        }
    }
}

/// Says, once per worker, that tasks are not confined (`state`: why).
fn warn_unconfined(state: &'static str) {
    tracing::warn!(
        landlock = state,
        "tasks can write outside their scratch directory: this kernel cannot confine them"
    );
}

/// The write rules of [`WRITABLE_DEVICES`]; a machine without one of them simply has nothing
/// to allow there.
fn device_rules() -> Vec<(PathFd, BitFlags<AccessFs>)> {
    let device = AccessFs::from_write(LANDLOCK_ABI) & (AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev);
    WRITABLE_DEVICES.into_iter().filter_map(|path| PathFd::new(path).ok()).map(|fd| (fd, device)).collect()
}

/// What the command's process applies to itself between `fork` and `exec`: plain values, so
/// the code there allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Confinement {
    /// A Landlock ruleset to enforce.
    pub ruleset: Option<RawFd>,
    /// User and group to switch to.
    pub user: Option<(u32, u32)>,
    /// The umask the command starts with.
    pub umask: Option<u32>,
}

/// One task's sandbox: keep it alive until the command has been spawned.
#[derive(Debug)]
pub struct TaskConfinement {
    ruleset: Option<OwnedFd>,
    user: Option<(u32, u32)>,
}

impl TaskConfinement {
    /// The values the forked command applies.
    pub fn confinement(&self) -> Confinement {
        Confinement {
            ruleset: self.ruleset.as_ref().map(AsRawFd::as_raw_fd),
            user: self.user,
            umask: self.user.map(|_| TASK_UMASK),
        }
    }
}

/// The umask of the worker and its tasks when they run as different users: the group (theirs
/// in common) may read and write, others nothing.
pub const TASK_UMASK: u32 = 0o007;

impl TaskSandbox {
    /// A sandbox running tasks as `task_user` (none: as the worker's user), letting them also
    /// write under `writable`. Fails when the user is unusable, or when a task user is set and
    /// the kernel has no Landlock; without a task user, a missing Landlock is warned about.
    pub fn new(task_user: Option<&str>, writable: Vec<PathBuf>) -> Result<Self, SandboxError> {
        let user = task_user.map(resolve_user).transpose()?;
        for path in &writable {
            std::fs::metadata(path).map_err(|source| SandboxError::WritablePath { path: path.clone(), source })?;
        }
        let landlock = match landlock_support() {
            Ok(()) => true,
            Err(state) if user.is_some() => return Err(SandboxError::NoLandlock(state)),
            Err(state) => {
                warn_unconfined(state);
                false
            }
        };
        let mut fixed_rules = Vec::new();
        if landlock {
            let write = AccessFs::from_write(LANDLOCK_ABI);
            for path in &writable {
                let fd = PathFd::new(path).map_err(|e| SandboxError::Ruleset(e.to_string()))?;
                fixed_rules.push((fd, write));
            }
            fixed_rules.extend(device_rules());
        }
        Ok(Self { user, writable, fixed_rules, landlock })
    }

    /// The user tasks run as, if not the worker's.
    pub fn user(&self) -> Option<&TaskUser> {
        self.user.as_ref()
    }

    /// Whether tasks are confined to their scratch directory.
    pub fn confines_files(&self) -> bool {
        self.landlock
    }

    /// The confinement of one task whose scratch directory is `scratch`.
    pub fn for_task(&self, scratch: &Path) -> Result<TaskConfinement, SandboxError> {
        let ruleset = if self.landlock { Some(self.ruleset(scratch)?) } else { None };
        Ok(TaskConfinement { ruleset, user: self.user.as_ref().map(|u| (u.uid, u.gid)) })
    }

    fn ruleset(&self, scratch: &Path) -> Result<OwnedFd, SandboxError> {
        let failed = |e: &dyn std::fmt::Display| SandboxError::Ruleset(e.to_string());
        let write = AccessFs::from_write(LANDLOCK_ABI);
        let mut created =
            Ruleset::default().handle_access(write).map_err(|e| failed(&e))?.create().map_err(|e| failed(&e))?;
        let slot = PathFd::new(scratch).map_err(|e| failed(&e))?;
        created = created.add_rule(PathBeneath::new(slot, write)).map_err(|e| failed(&e))?;
        for (fd, access) in &self.fixed_rules {
            created = created.add_rule(PathBeneath::new(fd, *access)).map_err(|e| failed(&e))?;
        }
        let fd: Option<OwnedFd> = created.into();
        fd.ok_or_else(|| SandboxError::Ruleset("the kernel stopped supporting Landlock".to_owned()))
    }

    /// Shares `dir` with the task user's group (set-group-id, 2770), so what either side
    /// creates under it belongs to both; nothing to do without a task user.
    pub fn share(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(user) = &self.user else { return Ok(()) };
        std::os::unix::fs::chown(dir, None, Some(user.gid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770))
    }

    /// Removes `path` and everything under it; what a task closed to the worker is removed as
    /// the task user. A missing `path` is already removed.
    pub fn remove_tree(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(_) if path.exists() => self.reclaim(path),
            _ => Ok(()),
        }
    }

    /// Removes `path` as the task user, for what a task made unremovable by the worker (a
    /// directory it closed to its group). Without a task user there is nothing more to try.
    fn reclaim(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        let Some(user) = &self.user else {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        };
        // It may have closed directories to itself too (`chmod 000`): open them first.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"chmod -R u+rwX -- "$1" 2>/dev/null; exec rm -rf --one-file-system -- "$1""#)
            .arg("reclaim")
            .arg(path)
            .uid(user.uid)
            .gid(user.gid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("rm as {} ended with {status}", user.name)))
        }
    }
}

/// Whether this kernel enforces Landlock; otherwise why not (for the message).
fn landlock_support() -> Result<(), &'static str> {
    let probe = Ruleset::default()
        .handle_access(AccessFs::from_write(LANDLOCK_ABI))
        .and_then(|ruleset| ruleset.create())
        .map_err(|_| "unusable")?;
    let fd: Option<OwnedFd> = probe.into();
    fd.map(drop).ok_or("not available on this kernel")
}

fn resolve_user(name: &str) -> Result<TaskUser, SandboxError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|source| SandboxError::UserLookup { user: name.to_owned(), source })?
        .ok_or_else(|| SandboxError::NoSuchUser(name.to_owned()))?;
    let uid = user.uid.as_raw();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Err(SandboxError::SameUser(name.to_owned()));
    }
    Ok(TaskUser { name: name.to_owned(), uid, gid: user.gid.as_raw() })
}

/// How Landlock stands on this kernel, for `--print-config` and the image's checks.
pub fn landlock_status() -> &'static str {
    match landlock_support() {
        Ok(()) => "enforced",
        Err(state) => state,
    }
}

impl TaskSandbox {
    /// Runs a confined probe in `dir` (a directory the worker made for it, as it makes scratch
    /// slots): it must run as the task user, write in `dir`, and fail to write in `dir`'s
    /// parent (unless the operator let tasks write there). The worker checks this at start, so a
    /// missing capability or a kernel without Landlock stops it there, not at its first task.
    pub fn probe(&self, dir: &Path) -> Result<(), SandboxError> {
        let failed = |what: String| SandboxError::Probe(what);
        self.share(dir).map_err(|e| failed(format!("sharing {}: {e}", dir.display())))?;
        let confinement = self.for_task(dir)?;
        let script = "id -u; echo ok > probe-inside && { (echo x > ../probe-outside) 2>/dev/null && echo escaped || echo confined; }";
        let output = super::supervise::run_confined(
            "sh",
            &[std::ffi::OsStr::new("-c"), std::ffi::OsStr::new(script)],
            dir,
            confinement.confinement(),
        )
        .map_err(|e| {
            failed(format!(
                "starting a confined process: {e} (a worker with a task user needs CAP_SETUID, CAP_SETGID and CAP_KILL, as batchgrid-worker.service grants)"
            ))
        })?;
        let said = String::from_utf8_lossy(&output.stdout);
        let mut lines = said.lines();
        let uid = lines.next().unwrap_or_default();
        let outcome = lines.next().unwrap_or_default();
        let _ = std::fs::remove_file(dir.join("probe-inside"));
        if !output.status.success() {
            return Err(failed(format!(
                "the probe ended with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        if let Some(user) = &self.user {
            if uid != user.uid.to_string() {
                return Err(failed(format!("the probe ran as uid {uid}, not {} ({})", user.uid, user.name)));
            }
        }
        // Where the operator lets tasks write around the probe's directory, escaping is allowed.
        let parent_writable = self.writable.iter().any(|path| dir.starts_with(path));
        if outcome == "escaped" {
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_file(parent.join("probe-outside"));
            }
        }
        if self.landlock && !parent_writable && outcome != "confined" {
            return Err(failed(format!("the probe wrote outside its directory ({outcome})")));
        }
        Ok(())
    }
}
