//! Tying a task's processes to the worker's life: a task command runs under a tiny supervisor,
//! forked from the worker, that kills the task's whole process group the moment the worker
//! process is gone (even by SIGKILL, which runs no cleanup of ours).
//!
//! Why a supervisor polling `getppid()` and not the alternatives:
//! - `prctl(PR_SET_PDEATHSIG, SIGKILL)` on the child alone fires when the *thread* that forked
//!   it exits (a tokio blocking thread retires after 10 s idle, killing healthy tasks), and it
//!   only kills the direct child: a shell's own children would survive it.
//! - cgroups need a delegated hierarchy, which neither a developer's `batchgrid run` nor every
//!   container has.
//! - The supervisor is the process the worker spawns (so `Child` and its exit status are the
//!   supervisor's, which relays the command's). It forks the command into the same process
//!   group, then waits for it and checks every [`POLL`] whether its parent changed: the parent
//!   of a process changes only when the parent *process* dies (threads do not count). It then
//!   kills the group, itself included, with SIGKILL. A dead worker's task therefore outlives it
//!   by at most [`POLL`], far less than the visibility timeout after which another worker could
//!   receive the task again.
//!
//! Everything in the supervisor runs between `fork` and `exec` of a multi-threaded process,
//! so it calls only async-signal-safe functions (`fork`, `waitpid`, `getppid`, `nanosleep`,
//! `kill`, `close_range`/`close`, `_exit`) and never allocates.
#![allow(unsafe_code)]

use std::time::Duration;

/// How often the supervisor checks that the worker is alive.
const POLL: Duration = Duration::from_millis(50);

/// Makes `command` run under a supervisor that kills its process group when this process dies.
/// The command must be put in a process group of its own (`process_group(0)`), which the
/// supervisor leads.
pub fn die_with_worker(command: &mut tokio::process::Command) {
    let worker = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the forked child before `exec`; it only calls
    // async-signal-safe libc functions on values already on its stack (see the module docs).
    unsafe {
        command.pre_exec(move || {
            supervise(worker);
            Ok(())
        });
    }
}

/// In the forked child: returns in the command's process (which then `exec`s); the supervisor
/// itself never returns.
fn supervise(worker: i32) {
    // SAFETY: async-signal-safe calls only; see the module docs.
    unsafe {
        if libc::getppid() != worker {
            libc::_exit(137); // The worker died while spawning us.
        }
        let task = libc::fork();
        if task == 0 {
            return; // The command: go on to exec.
        }
        if task < 0 {
            return; // No supervisor possible; run the command unsupervised rather than not at all.
        }
        // Let go of every descriptor, so the worker sees the spawn's error pipe and the
        // command's stdio close when the command does, not when the supervisor exits.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..65_536 {
                libc::close(fd);
            }
        }
        let pause = libc::timespec { tv_sec: 0, tv_nsec: POLL.as_nanos() as libc::c_long };
        loop {
            let mut status = 0;
            if libc::waitpid(task, &mut status, libc::WNOHANG) == task {
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
            }
            if libc::getppid() != worker {
                // The worker is gone: the whole group goes, this supervisor last.
                libc::kill(-libc::getpid(), libc::SIGKILL);
                libc::_exit(137);
            }
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}
