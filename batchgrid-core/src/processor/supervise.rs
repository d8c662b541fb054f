//! Tying a task's processes to the task: a task command runs under a tiny supervisor, forked
//! from the worker, that kills every process the command started, whatever it did to detach
//! (`setsid`, double forks, a new process group), when the command exits, when the worker asks
//! ([`stop`]: the task timed out or was given up), and when the worker process is gone (even by
//! SIGKILL, which runs no cleanup of ours).
//!
//! How:
//! - The supervisor is the process the worker spawns (so `Child` and its exit status are the
//!   supervisor's, which relays the command's). It makes itself a *child subreaper*
//!   (`PR_SET_CHILD_SUBREAPER`) before forking the command: any process the command starts
//!   that loses its parent is re-parented to the supervisor, not to init, so however it
//!   detaches it stays a descendant the supervisor can find.
//! - The command runs in a process group of its own (not the supervisor's), so the supervisor
//!   can SIGKILL the whole group at once without killing itself.
//! - To end the task, the supervisor kills the command's group, then, until it has no child
//!   left, SIGKILLs every child it has (`/proc/thread-self/children`; killed processes'
//!   children are re-parented to it in turn) and reaps them. Pids from that list are its own
//!   unreaped children, so none can have been reused by an unrelated process.
//! - It waits for the command on a pidfd, which wakes it as the command exits, and watches
//!   for the worker's death by polling `getppid()` every [`POLL`]: the parent of a
//!   process changes only when the parent *process* dies (threads do not count).
//!   `PR_SET_PDEATHSIG` would fire when the *thread* that forked it exits (a tokio blocking
//!   thread retires after 10 s idle, killing healthy tasks). cgroups need a delegated
//!   hierarchy, which neither a developer's `batchgrid run` nor every container has.
//! - The worker asks it to stop with SIGTERM; its handler only sets a flag (and interrupts the
//!   sleep), and `exec` resets the handler to the default in the command.
//!
//! - The command's own process then confines itself ([`Confinement`], built by
//!   [`super::sandbox`]): no new privileges, the task user, its umask, the Landlock ruleset.
//!   The supervisor stays the worker's user, out of the task's reach.
//!
//! Everything in the supervisor runs between `fork` and `exec` of a multi-threaded process,
//! so it calls only async-signal-safe functions (`fork`, `waitpid`, `getppid`, `nanosleep`,
//! `poll`, `kill`, `prctl`, `sigaction`, `open`/`read`/`close`, `setuid` and kin, `umask`,
//! `syscall`, `_exit`) and never allocates.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::sandbox::Confinement;

/// `prctl` operation on the ambient capability set, and its "clear all" (linux/prctl.h; the
/// libc crate has them for Android only).
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

/// How often the supervisor checks that the worker is alive.
const POLL: Duration = Duration::from_millis(50);

/// Set in the supervisor by SIGTERM: the worker wants the task stopped.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes `command` run under a supervisor that kills everything it started when it ends, when
/// [`stop`] is called on the spawned process's id, or when this process dies, and confined by
/// `confinement` (whose ruleset descriptor must stay open until the spawn returns). The
/// supervisor should lead a process group of its own (`process_group(0)`), away from the
/// worker's. A confinement that cannot be applied fails the spawn with its OS error.
pub fn die_with_worker(command: &mut tokio::process::Command, confinement: Confinement) {
    let worker = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child before `exec`; it only calls
    // async-signal-safe libc functions on values already on its stack (see the module docs).
    unsafe {
        command.pre_exec(move || {
            supervise(worker);
            confine(&confinement)
        });
    }
}

/// In the command's process, before `exec`: applies `confinement`. An error (an OS error, no
/// allocation) makes the spawn fail; the supervisor then sees the command exit and ends too.
unsafe fn confine(confinement: &Confinement) -> std::io::Result<()> {
    let check = |result: libc::c_long| if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    // Nothing the task runs can gain privileges (set-user-id programs, file capabilities);
    // Landlock requires it too.
    check(
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
        .into(),
    )?;
    if let Some((uid, gid)) = confinement.user {
        // Group first: after setuid there is no privilege left to change it.
        check(libc::setgroups(1, &gid).into())?;
        check(libc::setgid(gid).into())?;
        check(libc::setuid(uid).into())?;
        // The worker's ambient capabilities would survive `exec` into the task; older kernels
        // have none to clear (EINVAL).
        libc::prctl(
            PR_CAP_AMBIENT,
            PR_CAP_AMBIENT_CLEAR_ALL,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
    if let Some(mask) = confinement.umask {
        libc::umask(mask as libc::mode_t);
    }
    if let Some(ruleset) = confinement.ruleset {
        check(libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32))?;
    }
    Ok(())
}

/// Asks the supervisor `pid` (the id of the process [`die_with_worker`] spawned) to kill its
/// task and everything the task started, then exit. Only call it while that process is not yet
/// reaped, so the id cannot belong to another process.
pub fn stop(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
}

/// In the forked child: returns in the command's process (which then `exec`s); the supervisor
/// itself never returns.
fn supervise(worker: i32) {
    // SAFETY: async-signal-safe calls only; see the module docs.
    unsafe {
        if libc::getppid() != worker {
            libc::_exit(137); // The worker died while spawning us.
        }
        // Before the command exists, so nothing it starts can be re-parented past us. Failure
        // (a kernel before 3.4) leaves the process-group kill as the only one.
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        let task = libc::fork();
        if task == 0 {
            // The command: a group of its own, so it can be killed whole without us.
            libc::setpgid(0, 0);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            return; // Go on to exec.
        }
        if task < 0 {
            // No supervisor possible; run the command unsupervised rather than not at all.
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            return;
        }
        // Let go of every descriptor, so the worker sees the spawn's error pipe and the
        // command's stdio close when the command does, not when the supervisor exits.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..65_536 {
                libc::close(fd);
            }
        }
        let pause = libc::timespec { tv_sec: 0, tv_nsec: POLL.as_nanos() as libc::c_long };
        // A pidfd turns readable the moment the command exits, so the task ends then, not at
        // the next poll (on average half a [`POLL`] later, per task). Kernels before 5.3 have
        // none (-1): sleeping between polls is the fallback.
        let exited = libc::syscall(libc::SYS_pidfd_open, task, 0u32) as libc::c_int;
        loop {
            // WNOWAIT: the exited command stays a zombie, so its group id cannot be reused
            // before the group is killed.
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let waited =
                libc::waitid(libc::P_PID, task as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
            if waited == 0 && info.si_pid() == task {
                let status = end_task(task);
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                if libc::WIFSIGNALED(status) {
                    // Die the same way, so the worker reports "killed by signal N".
                    let signal = libc::WTERMSIG(status);
                    libc::signal(signal, libc::SIG_DFL);
                    libc::kill(libc::getpid(), signal);
                    libc::_exit(128 + signal);
                }
                libc::_exit(1);
            }
            if libc::getppid() != worker || STOP.load(Ordering::SeqCst) {
                // The worker is gone or gave the task up: everything goes, this supervisor last.
                end_task(task);
                libc::_exit(137);
            }
            if exited >= 0 {
                // Also returns early (EINTR) on SIGTERM, the worker's request to stop.
                let mut watched = libc::pollfd { fd: exited, events: libc::POLLIN, revents: 0 };
                libc::poll(&mut watched, 1, POLL.as_millis() as libc::c_int);
            } else {
                libc::nanosleep(&pause, std::ptr::null_mut());
            }
        }
    }
}

/// Kills the command (exited or not), its process group and every other descendant, reaps them
/// all, and returns the command's wait status.
unsafe fn end_task(task: libc::pid_t) -> libc::c_int {
    libc::kill(-task, libc::SIGKILL);
    libc::kill(task, libc::SIGKILL);
    let mut status = 0;
    while libc::waitpid(task, &mut status, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
    let pause = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
    loop {
        kill_children();
        loop {
            let mut ignored = 0;
            let reaped = libc::waitpid(-1, &mut ignored, libc::WNOHANG);
            if reaped > 0 {
                continue;
            }
            if reaped < 0 && *libc::__errno_location() == libc::ECHILD {
                return status; // No child left: nothing the task started survives.
            }
            break;
        }
        libc::nanosleep(&pause, std::ptr::null_mut());
    }
}

/// SIGKILLs every current child of this (single-threaded) process, as listed by the kernel.
unsafe fn kill_children() {
    let fd = libc::open(c"/proc/thread-self/children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return; // Without /proc, only the group kill and reaping remain.
    }
    let mut buffer = [0u8; 512];
    let mut pid: libc::pid_t = 0;
    loop {
        let read = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
        if read <= 0 {
            break;
        }
        for &byte in &buffer[..read as usize] {
            if byte.is_ascii_digit() {
                pid = pid.saturating_mul(10).saturating_add(libc::pid_t::from(byte - b'0'));
            } else {
                if pid > 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
                pid = 0;
            }
        }
    }
    if pid > 0 {
        libc::kill(pid, libc::SIGKILL);
    }
    libc::close(fd);
}

/// Runs `program` with `args` in `dir`, confined like a task (no supervisor), and waits for it:
/// the worker's start-up check that it can sandbox tasks at all.
pub fn run_confined(
    program: &str,
    args: &[&std::ffi::OsStr],
    dir: &std::path::Path,
    confinement: Confinement,
) -> std::io::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command.args(args).current_dir(dir).env_clear().env("PATH", "/usr/bin:/bin").stdin(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before `exec` and calls only
    // async-signal-safe functions on values on its stack (see `confine`).
    unsafe {
        command.pre_exec(move || confine(&confinement));
    }
    command.output()
}
