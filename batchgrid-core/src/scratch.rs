//! Scratch directories for tasks, reused: a worker keeps one directory per concurrent task and
//! empties it after each task, instead of creating and removing a directory per task (on ext4
//! the directory churn cost more than a short command itself).

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::processor::sandbox::TaskSandbox;

/// Top-level files of a slot whose names start with this are left in place when the slot is
/// emptied: the next task overwrites the same inode and blocks (inline inputs use it). Removing
/// or truncating them costs an inode or block allocation, and on ext4 a flush, per task.
pub const REUSED_PREFIX: &str = "input";

/// The reused file a task's input named `input` (an object key) is written to in its scratch
/// directory: [`REUSED_PREFIX`] with the input's extension, which commands may go by.
pub fn reused_input_name(input: &str) -> String {
    let name = input.rsplit('/').next().unwrap_or_default();
    let extension =
        std::path::Path::new(name).extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    format!("{REUSED_PREFIX}{extension}")
}

/// A worker's pool of scratch directories under one root.
#[derive(Debug)]
pub struct ScratchSlots {
    root: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    created: AtomicUsize,
    sandbox: Arc<TaskSandbox>,
    /// Set once the run directory exists (with the task user's group, when there is one).
    prepared: OnceLock<()>,
}

impl ScratchSlots {
    /// A pool for one run of a worker: slots live under `owner/run-<unique>` (created on first
    /// use; removed with [`ScratchSlots::remove`]).
    ///
    /// Whatever is already under `owner` is removed: it is what a crashed predecessor with the
    /// same worker id left behind, and a reused slot with its stale outputs would leak them into
    /// the next task's results. The run directory is new on every start, so a late write by a
    /// dead predecessor's task (one still dying) lands in a directory no task of ours uses, or
    /// fails because it was removed, and never in a slot of ours.
    ///
    /// With a task user in `sandbox`, the run directory belongs to the task user's group, with
    /// the set-group-id bit, so the worker and its tasks share what is created under it.
    pub fn new(owner: PathBuf, sandbox: Arc<TaskSandbox>) -> Arc<Self> {
        let _ = sandbox.remove_tree(&owner);
        let run = ulid::Ulid::new().to_string().to_lowercase();
        let root = owner.join(format!("run-{run}"));
        Arc::new(Self {
            root,
            free: Mutex::new(Vec::new()),
            created: AtomicUsize::new(0),
            sandbox,
            prepared: OnceLock::new(),
        })
    }

    /// Creates the run directory: with a task user, the directories above it can be traversed
    /// (not listed) by it, and the run directory is shared with its group.
    fn prepare(&self) -> io::Result<()> {
        if self.prepared.get().is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root)?;
        if self.sandbox.user().is_some() {
            use std::os::unix::fs::PermissionsExt;
            // The scratch directory above it was opened to the task user by whoever set the
            // sandbox up (the worker's start-up check runs there first).
            if let Some(owner) = self.root.parent() {
                std::fs::set_permissions(owner, std::fs::Permissions::from_mode(0o711))?;
            }
            self.sandbox.share(&self.root)?;
        }
        let _ = self.prepared.set(());
        Ok(())
    }

    /// The directory this run's slots are under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An empty directory for one task, returned to the pool (emptied) when dropped.
    pub fn acquire(self: &Arc<Self>) -> io::Result<ScratchSlot> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        let path = match reused {
            Some(path) => path,
            None => {
                let index = self.created.fetch_add(1, Ordering::Relaxed) + 1;
                // New slots are new directories: `new` cleared whatever a predecessor left.
                let path = self.root.join(format!("slot-{index}"));
                self.prepare()?;
                std::fs::create_dir(&path)?;
                path
            }
        };
        Ok(ScratchSlot { path: Some(path), pool: self.clone() })
    }

    /// Removes the whole pool directory (and the owner's, when nothing else is left in it).
    pub fn remove(&self) {
        let _ = self.sandbox.remove_tree(&self.root);
        if let Some(owner) = self.root.parent() {
            let _ = std::fs::remove_dir(owner);
        }
    }
}

/// One task's scratch directory.
#[derive(Debug)]
pub struct ScratchSlot {
    path: Option<PathBuf>,
    pool: Arc<ScratchSlots>,
}

impl Deref for ScratchSlot {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
}

/// Removes everything inside `dir`, keeping `dir` and its first-level directories (which the
/// next task would create again) but emptying them.
fn empty_dir(dir: &Path, top_level: bool) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if top_level {
                empty_dir(&path, false)?;
            } else {
                std::fs::remove_dir_all(&path)?;
            }
        } else if top_level && kind.is_file() && entry.file_name().to_string_lossy().starts_with(REUSED_PREFIX) {
            // Overwritten by the next task that uses it.
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl Drop for ScratchSlot {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        match empty_dir(&path, true) {
            Ok(()) => {
                if let Ok(mut free) = self.pool.free.lock() {
                    free.push(path);
                }
            }
            Err(error) => {
                // A task closed part of its slot to the worker: the task user removes it (a
                // slot is abandoned only when that fails too; the pool makes a new one).
                if let Err(reclaim) = self.pool.sandbox.remove_tree(&path) {
                    tracing::warn!(%error, %reclaim, path = %path.display(), "could not empty a scratch directory");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_empty() {
        let root = tempfile::tempdir().expect("temp dir");
        let pool = ScratchSlots::new(root.path().join("w1"), Default::default());
        let first_path = {
            let slot = pool.acquire().expect("slot");
            std::fs::create_dir_all(slot.join("out/deep")).expect("mkdir");
            std::fs::write(slot.join("out/deep/file"), "x").expect("write");
            std::fs::write(slot.join("input.csv"), "x").expect("write");
            std::fs::write(slot.join("other.csv"), "x").expect("write");
            slot.to_path_buf()
        };
        let slot = pool.acquire().expect("slot again");
        assert_eq!(&*slot, first_path.as_path(), "reused");
        assert!(slot.join("out").is_dir(), "first-level directories are kept");
        assert_eq!(std::fs::read_dir(slot.join("out")).expect("read").count(), 0, "and emptied");
        assert!(!slot.join("other.csv").exists());
        assert!(slot.join("input.csv").is_file(), "reused files are kept for the next task to overwrite");
        let other = pool.acquire().expect("second slot");
        assert_ne!(&*other, &*slot, "concurrent tasks get different directories");
        drop((slot, other));
        pool.remove();
        assert!(!root.path().join("w1").exists(), "the run's and the owner's directories are removed");
    }

    /// A worker restarted under the same id must not hand its tasks the outputs its killed
    /// predecessor left in the slots (they ended up in a reduce stage's results).
    #[test]
    fn a_new_pool_starts_without_a_predecessors_leftovers() {
        let root = tempfile::tempdir().expect("temp dir");
        let stale = root.path().join("w1/slot-1/output");
        std::fs::create_dir_all(&stale).expect("mkdir");
        std::fs::write(stale.join("aggregates.csv"), "stale").expect("write");
        let pool = ScratchSlots::new(root.path().join("w1"), Default::default());
        let slot = pool.acquire().expect("slot");
        assert_eq!(std::fs::read_dir(&*slot).expect("read").count(), 0, "the slot starts empty");
        assert!(!stale.exists(), "the predecessor's slots are gone");
    }

    /// A dead worker's task still writing into its slot must never write into a slot of the
    /// restarted worker: every start of a worker gets directories no earlier start had.
    #[test]
    fn every_start_gets_fresh_slot_directories() {
        let root = tempfile::tempdir().expect("temp dir");
        let first = ScratchSlots::new(root.path().join("w1"), Default::default());
        let first_slot = first.acquire().expect("slot").to_path_buf();
        let second = ScratchSlots::new(root.path().join("w1"), Default::default());
        let second_slot = second.acquire().expect("slot").to_path_buf();
        assert_ne!(first_slot, second_slot);
        assert_ne!(first.root(), second.root());
        assert!(second_slot.starts_with(root.path().join("w1")));
    }
}
