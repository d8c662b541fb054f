//! Sets `BATCHGRID_GIT_REVISION` for `batchgrid --version` and the machine image's tags: the
//! short hash of `HEAD`, or `unknown` outside a git checkout (a source tarball). Setting
//! `BATCHGRID_GIT_REVISION` in the build's environment overrides it.
//!
//! Kept cheap: one `git rev-parse`, rerun only when `HEAD`, the branch it points to or the
//! packed refs change (not on every edit of the source).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Without any rerun-if line cargo would rerun this on every change in the package.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BATCHGRID_GIT_REVISION");
    let revision = match std::env::var("BATCHGRID_GIT_REVISION") {
        Ok(revision) if !revision.is_empty() => revision,
        _ => {
            let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            watch_head(&manifest_dir);
            git_revision(&manifest_dir).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=BATCHGRID_GIT_REVISION={revision}");
}

fn git_revision(dir: &Path) -> Option<String> {
    let output = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(dir).output().ok()?;
    let revision = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !revision.is_empty()).then_some(revision)
}

/// Asks cargo to rerun when the checked-out commit changes: `.git/HEAD` (a checkout), the ref
/// it names (a commit on the branch) and `packed-refs` (where that ref may live instead).
fn watch_head(dir: &Path) {
    let Some(git_dir) = git_dir(dir) else {
        // Not a checkout: nothing can change the answer but a new build.
        return;
    };
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    if let Some(reference) =
        std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
    {
        // A worktree keeps HEAD to itself but shares refs with the main repository. The
        // branch's folder is watched rather than its file, which a commit may create (after
        // `git pack-refs`); a path that does not exist would rerun this script every build.
        let common = std::fs::read_to_string(git_dir.join("commondir"))
            .map(|c| git_dir.join(c.trim()))
            .unwrap_or_else(|_| git_dir.clone());
        let branch = common.join(&reference);
        for path in [branch.parent().map(Path::to_path_buf), Some(common.join("packed-refs"))].into_iter().flatten() {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// The git directory of the checkout holding `dir`: `.git`, or where a `.git` file (a
/// worktree, a submodule) points.
fn git_dir(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.ancestors().map(|d| d.join(".git")).find(|p| p.exists())?;
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(if target.is_absolute() { target } else { dot_git.parent()?.join(target) })
}
