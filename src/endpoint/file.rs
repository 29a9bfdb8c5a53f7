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
    /// The registry stored at `path`: empty when the file does not exist yet (it is created on
    /// the first change), an `InvalidData` error when it is not a ledger this crate wrote, a
    /// `WouldBlock` error while another registry, in this process or another, has it open.
    /// The directory must exist.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock = lock(&path)?;
        let ledger = match fs::read(&path) {
            Ok(bytes) => Ledger::from_json(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ledger::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            core: Core::new(ledger),
            path,
            _lock: lock,
        })
    }

    /// Where the ledger is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn persist(&self, ledger: &Ledger) -> io::Result<()> {
        let temporary = beside(&self.path, ".tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&ledger.to_json())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &self.path)?;
        // The rename should reach the disk before the change is acknowledged. Once it is done
        // the file holds the change, so a failure here cannot undo it: the change stands (a
        // crash before the directory is written could still lose it).
        #[cfg(unix)]
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The ledger's lock file, locked for this registry alone.
fn lock(path: &Path) -> io::Result<File> {
    let lock_path = beside(path, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
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
