//! [`FileRegistry`]: endpoints that survive a restart, in one JSON file replaced atomically.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fs4::TryLockError;

use super::ledger::Ledger;
use super::registry::{Core, registry_over_core};

/// A registry kept in one JSON file, so endpoints and the names of deleted ones survive a
/// restart of the gateway.
///
/// Each change writes the whole ledger to a temporary file beside it, `fsync`s it, renames it
/// over the old one and `fsync`s the directory: after a crash the file holds the ledger before
/// or after the change, never a torn one. A change that cannot be written is not made, and the
/// API answers 500. Lookups read memory only.
///
/// Why a file and not an embedded database: the ledger is small (an account has ten endpoints
/// by default) and changes only through the management API, so rewriting it whole costs
/// microseconds plus one `fsync`, needs no dependency, and leaves a file an operator can read
/// and back up. One registry owns the file: [`open`](Self::open) takes an exclusive lock on a
/// file beside it (`<path>.lock`, kept after the registry is gone) for as long as the registry
/// lives, so a second gateway pointed at the same ledger, which would overwrite the first's
/// changes with its own, fails to start instead. Several gateway replicas need a shared store.
///
/// ```
/// use tower_maas::endpoint::FileRegistry;
///
/// # let dir = std::env::temp_dir().join(format!("tower-maas-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("endpoints.json");
/// // In production, say, /var/lib/maas-gateway/endpoints.json.
/// let registry = FileRegistry::open(&path)?;
/// // A second registry on the same ledger is refused while the first lives.
/// let second = FileRegistry::open(&path).err().unwrap();
/// assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
/// drop(registry);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FileRegistry {
    core: Core,
    path: PathBuf,
    /// Held locked while the registry lives; closing it lets the lock go.
    _lock: File,
}

impl FileRegistry {
    /// The registry stored at `path` (symbolic links followed): empty when the file does not
    /// exist yet (it is written at once, empty), a `NotFound` error when it is gone though a
    /// registry kept it there (its lock file remains: deleted names must not become free
    /// again), an `InvalidData` error when it is not a ledger this crate wrote, a `WouldBlock`
    /// error while another registry, in this process or another, has it open (under any name
    /// that leads to it). The directory must exist. Each change keeps the file's permissions
    /// (a new ledger is readable by its owner alone).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        // The ledger's real place: written through a symbolic link, the rename would replace
        // the link, and locked through another name, two registries would share one ledger.
        let path = resolved(path.as_ref())?;
        let lock_path = beside(&path, ".lock");
        let kept_before = lock_path.exists();
        let lock = lock(&path, &lock_path)?;
        let ledger = match fs::read(&path) {
            Ok(bytes) => Ledger::from_json(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            // A registry kept it here, and it is gone (a volume not mounted, a path mistyped):
            // starting empty would hand out every retired name again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && kept_before => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{}: missing, though its lock file shows a registry kept it: restore it, or remove {} to start an empty registry",
                        path.display(),
                        lock_path.display()
                    ),
                ));
            }
            // A new registry: its ledger exists from now on, so that a later start can tell
            // a missing one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let ledger = Ledger::new();
                persist(&path, &ledger)?;
                ledger
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            core: Core::new(ledger),
            path,
            _lock: lock,
        })
    }

    /// Where the ledger is kept (symbolic links followed).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn persist(&self, ledger: &Ledger) -> io::Result<()> {
        persist(&self.path, ledger)
    }
}

/// `path` with its symbolic links followed; the file itself need not exist yet, its directory
/// must.
fn resolved(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(path) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let name = path.file_name().ok_or(e)?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            Ok(fs::canonicalize(dir)?.join(name))
        }
        Err(e) => Err(e),
    }
}

/// Writes `ledger` to `path` (a [`resolved`] one) whole: a temporary file beside it, `fsync`ed,
/// renamed over it.
fn persist(path: &Path, ledger: &Ledger) -> io::Result<()> {
    let temporary = beside(path, ".tmp");
    // One left by a crash; and a new one is made, never opened: a link planted in its place
    // is not written through.
    let _ = fs::remove_file(&temporary);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    // The ledger's permissions, not the umask's: an operator's `chmod` outlives a change.
    if let Ok(kept) = fs::metadata(path) {
        file.set_permissions(kept.permissions())?;
    }
    file.write_all(&ledger.to_json())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    // The rename should reach the disk before the change is acknowledged. Once it is done
    // the file holds the change, so a failure here cannot undo it: the change stands (a
    // crash before the directory is written could still lose it).
    // (`path` is resolved, so it has its directory.)
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The ledger's lock file, locked for this registry alone.
fn lock(path: &Path, lock_path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)?;
    // Named in full: on Rust 1.89 and later `File::try_lock` is std's own, with another error.
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{}: in use by another registry ({} is locked)",
                path.display(),
                lock_path.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

impl fmt::Debug for FileRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegistry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

registry_over_core!(FileRegistry, |this, ledger| this.persist(ledger));
