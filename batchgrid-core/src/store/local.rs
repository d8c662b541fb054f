//! The embedded object store: a directory on disk, one file per object.
//!
//! Writes go to a temporary file in the same filesystem and are renamed into place, so they are
//! atomic. Blocking file work runs on tokio's blocking pool.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{validate_key, ObjectMeta, ObjectReader, ObjectStore, StoreError};

/// Directory name under the root for in-progress writes; never a valid listing result.
const STAGING: &str = ".staging";

/// Bytes read at a time from a streamed object.
const STREAM_CHUNK: usize = 256 * 1024;

/// An [`ObjectStore`] in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`, made absolute so that the paths it
    /// hands out stay valid from any working directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        std::fs::create_dir_all(root.join(STAGING))
            .map_err(|e| StoreError::backend(format!("creating {}", root.display()), e))?;
        Ok(Self { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        if key == STAGING || key.starts_with(".staging/") {
            return Err(StoreError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }

    fn staging_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        tempfile::NamedTempFile::new_in(self.root.join(STAGING))
            .map_err(|e| StoreError::backend("creating a staging file", e))
    }

    fn commit(staged: tempfile::NamedTempFile, target: &Path, key: &str) -> Result<(), StoreError> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::backend(format!("put {key}"), e))?;
        }
        staged.persist(target).map_err(|e| StoreError::backend(format!("put {key}"), e.error))?;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::backend("blocking task", io::Error::other(e.to_string())))?
}

fn not_found_or(key: &str, context: &str, error: io::Error) -> StoreError {
    if error.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound(key.to_owned())
    } else {
        StoreError::backend(format!("{context} {key}"), error)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let target = self.path_of(key)?;
        let staged = self.staging_file()?;
        let key = key.to_owned();
        blocking(move || {
            use std::io::Write;
            let mut staged = staged;
            staged.write_all(&data).map_err(|e| StoreError::backend(format!("put {key}"), e))?;
            Self::commit(staged, &target, &key)
        })
        .await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let target = self.path_of(key)?;
        let staged = self.staging_file()?;
        let source = path.to_path_buf();
        let key = key.to_owned();
        blocking(move || {
            let size = std::fs::copy(&source, staged.path())
                .map_err(|e| StoreError::backend(format!("put {key} from {}", source.display()), e))?;
            Self::commit(staged, &target, &key)?;
            Ok(size)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || std::fs::read(&path).map(Bytes::from).map_err(|e| not_found_or(&key, "get", e))).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let source = self.path_of(key)?;
        let target = path.to_path_buf();
        let key = key.to_owned();
        blocking(move || {
            if !source.is_file() {
                return Err(StoreError::NotFound(key));
            }
            std::fs::copy(&source, &target).map_err(|e| not_found_or(&key, "get", e))
        })
        .await
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        use futures::TryStreamExt;
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| not_found_or(key, "get", e))?;
        let metadata = file.metadata().await.map_err(|e| not_found_or(key, "get", e))?;
        if !metadata.is_file() {
            return Err(StoreError::NotFound(key.to_owned()));
        }
        let context = format!("read {key}");
        // The open file keeps its bytes readable even if a new version is renamed over it.
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, STREAM_CHUNK)
            .map_err(move |e| StoreError::backend(context.clone(), e));
        Ok(ObjectReader { size: metadata.len(), chunks: Box::pin(chunks) })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Walk only the deepest directory the prefix names, not the whole store.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            if !dir_part.is_empty() {
                validate_key(dir_part)?;
            }
            let start = if dir_part.is_empty() { root.clone() } else { root.join(dir_part) };
            let mut found = Vec::new();
            let mut pending = vec![start];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::backend(format!("list {}", dir.display()), e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| StoreError::backend("list", e))?;
                    let path = entry.path();
                    let Ok(relative) = path.strip_prefix(&root) else { continue };
                    let Some(key) = relative.to_str().map(|k| k.replace(std::path::MAIN_SEPARATOR, "/")) else {
                        continue;
                    };
                    if key == STAGING {
                        continue;
                    }
                    let file_type = entry.file_type().map_err(|e| StoreError::backend("list", e))?;
                    if file_type.is_dir() {
                        // Descend only where keys below could still match the prefix.
                        let as_prefix = format!("{key}/");
                        if as_prefix.starts_with(&prefix) || prefix.starts_with(&as_prefix) {
                            pending.push(path);
                        }
                    } else if key.starts_with(&prefix) {
                        let size = entry.metadata().map_err(|e| StoreError::backend("list", e))?.len();
                        found.push(ObjectMeta { key, size });
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        use std::io::{Read, Seek};
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || {
            let read = || -> std::io::Result<Vec<u8>> {
                let mut file = std::fs::File::open(&path)?;
                file.seek(std::io::SeekFrom::Start(start))?;
                let mut data = Vec::new();
                file.take(end.saturating_sub(start)).read_to_end(&mut data)?;
                Ok(data)
            };
            read().map(Bytes::from).map_err(|e| not_found_or(&key, "get_range", e))
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || std::fs::metadata(&path).map(|m| m.len()).map_err(|e| not_found_or(&key, "size", e))).await
    }

    fn is_local(&self) -> bool {
        true
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok().filter(|path| path.is_file())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let paths = keys.iter().map(|k| self.path_of(k).map(|p| (k.clone(), p))).collect::<Result<Vec<_>, _>>()?;
        blocking(move || {
            for (key, path) in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::backend(format!("delete {key}"), e)),
                }
            }
            Ok(())
        })
        .await
    }
}
