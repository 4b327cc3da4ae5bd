//! Real durability under sled.
//!
//! sled 0.34's `flush` ends with `sync_file_range`, which survives a process crash but not a
//! power loss: it flushes neither the drive's cache nor the file's metadata. And values too
//! large for a log segment go to files under `blobs/` that sled never syncs. So after each
//! sled flush the flusher also calls `fdatasync` on sled's data file (fsync applies to the
//! file, whichever descriptor wrote it) and on every new blob file, then on the blob
//! directory. That is one real fsync per group commit, shared by every write in it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Syncs what sled wrote.
pub(crate) struct DiskSync {
    data: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl DiskSync {
    /// For the sled database at `path` (already opened, so its files exist).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let data = File::open(path.join("db"))?;
        // The directory entries sled created must be durable too.
        File::open(path)?.sync_all()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(DiskSync {
            data,
            blobs: path.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    /// Makes everything sled has flushed durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.data.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // Collected by sled since the listing: nothing to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}
