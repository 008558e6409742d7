//! storage: how does genret write a file or a directory so that a crash, a full disk or a
//! changed byte can never be read back as valid data?
//!
//! - Every file is written atomically ([`write_atomic`]): to a temporary file in the same
//!   directory, flushed and synced, renamed over the target, and the directory synced, so a
//!   crash leaves either the old file or the new one, never half of one.
//! - Binary parts share one container format ([`ArrayFile`]): a header with magic, format
//!   version and an XXH3-64 checksum of the payload, then little-endian arrays, each 8-byte
//!   aligned, mapped and used in place where possible ([`Array`]). Opening a damaged or
//!   foreign file is an error, never a panic.
//! - Any other file is verified against a [`FileSum`] recorded when it was written: by the
//!   index manifest for index parts, by a sealed directory's `checksums.json` ([`seal_dir`],
//!   [`verify_dir`]) for models and checkpoints.
//! - A directory is replaced whole ([`replace_dir`]): built beside the target and swapped in
//!   with one rename, so readers see the old directory or the new one.
//! - One writer at a time per directory ([`DirLock`]), released by the OS when the process
//!   dies, so a `kill -9` never leaves a stale lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod array;

pub use array::{Array, ArrayFile, ArrayReader, ArrayWriter, Mapped, Plain};

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams a file into place atomically: `fill` writes to a buffered temp file which is renamed
/// over `path` only when `fill` succeeds.
///
/// Only regular files are replaced: `-` is standard output; a FIFO, a device or a socket (say
/// `/dev/stdout`) is written directly; a symbolic link is followed, and its target replaced,
/// so the link stays.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let special = path == Path::new("-")
        || std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if special {
        let target = if path == Path::new("-") {
            Path::new("/dev/stdout")
        } else {
            path
        };
        let direct = || -> std::io::Result<()> {
            let file = std::fs::OpenOptions::new().write(true).open(target)?;
            let mut w = BufWriter::new(file);
            fill(&mut w)?;
            w.flush()
        };
        return direct().map_err(|e| Error::io(path, e));
    }
    let resolved;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = link_target(path).map_err(|e| Error::io(path, e))?;
        resolved.as_path()
    } else {
        path
    };
    let mut file = AtomicFile::create(path)?;
    fill(file.writer()).map_err(|e| Error::io(path, e))?;
    file.commit()
}

/// A regular file written in place of `path` atomically, for writers that push to it piece by
/// piece: a temp file in the same directory, renamed over `path` by [`AtomicFile::commit`];
/// dropped uncommitted (an error, a panic), it is removed and `path` is untouched.
pub struct AtomicFile {
    path: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(path, e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The file this becomes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("not committed")
    }

    /// Flushes, syncs and renames the file into place, and syncs its directory.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("committed once");
        let result = (|| {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)?;
            sync_dir(&self.dir)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The file a chain of symbolic links ends at (which need not exist yet).
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Ok(path);
        }
        let next = std::fs::read_link(&path)?;
        path = match path.parent() {
            Some(parent) if next.is_relative() => parent.join(next),
            _ => next,
        };
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Makes a rename inside `dir` durable (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The length and XXH3-64 checksum of a file as genret wrote it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSum {
    pub bytes: u64,
    /// XXH3-64 of the content, 16 hex digits.
    #[serde(with = "hex64")]
    pub xxh3: u64,
}

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

impl FileSum {
    /// Reads `path` whole and sums it: O(file size), at memory speed once cached.
    pub fn of(path: &Path) -> Result<FileSum> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileSum {
            bytes,
            xxh3: hasher.digest(),
        })
    }

    /// The length and sum of bytes already in memory.
    pub fn of_bytes(bytes: &[u8]) -> FileSum {
        FileSum {
            bytes: bytes.len() as u64,
            xxh3: xxhash_rust::xxh3::xxh3_64(bytes),
        }
    }

    /// Fails with [`Error::Corrupt`] naming `path` unless the file still has this sum.
    pub fn verify(&self, path: &Path) -> Result<()> {
        self.check(&FileSum::of(path)?, path)
    }

    /// Fails with [`Error::Corrupt`] naming `path` unless `found` (the sum of what `path`
    /// holds now) is this sum.
    pub fn check(&self, found: &FileSum, path: &Path) -> Result<()> {
        check_len(path, found.bytes, self.bytes)?;
        if found.xxh3 != self.xxh3 {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: "checksum mismatch: the file changed after genret wrote it".into(),
            });
        }
        Ok(())
    }
}

/// Fails with [`Error::Corrupt`] naming `path` unless the file is `written` bytes long, as
/// genret wrote it (`found`: its length now).
pub fn check_len(path: &Path, found: u64, written: u64) -> Result<()> {
    if found == written {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: path.to_path_buf(),
        message: format!(
            "the file is {found} bytes but was written with {written} (truncated or changed)"
        ),
    })
}

/// `dir.join(name)` if `name` is a plain relative path that stays inside `dir` (no `..`, no
/// root, no symbolic link leading out); else [`Error::Corrupt`] naming `listed_in`, the file
/// that gave the name.
pub fn inside(dir: &Path, name: &str, listed_in: &Path) -> Result<PathBuf> {
    let outside = |why: &str| Error::Corrupt {
        path: listed_in.to_path_buf(),
        message: format!(
            "the file name {name:?} {why}; genret only reads files inside {}",
            dir.display()
        ),
    };
    let relative = Path::new(name);
    if name.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(outside("is not a plain relative path"));
    }
    let path = dir.join(relative);
    if let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize())
        && !real.starts_with(&root)
    {
        return Err(outside("leads outside the directory (a symbolic link)"));
    }
    Ok(path)
}

/// Name of the checksum list inside a sealed directory.
pub const SEAL_FILE: &str = "checksums.json";

/// The content of a sealed directory's `checksums.json`: every file's sum, and the
/// fingerprint of the index the directory belongs to (models and checkpoints record it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Seal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub files: BTreeMap<String, FileSum>,
}

/// Sums every file under `dir` (recursively) and writes `checksums.json` last, atomically:
/// a directory without it was never finished. O(directory size).
pub fn seal_dir(dir: &Path, index: Option<&str>) -> Result<Seal> {
    let mut files = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let here = dir.join(&rel);
        for entry in std::fs::read_dir(&here).map_err(|e| Error::io(&here, e))? {
            let entry = entry.map_err(|e| Error::io(&here, e))?;
            let name = rel.join(entry.file_name());
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if kind.is_dir() {
                pending.push(name);
            } else if name != Path::new(SEAL_FILE) {
                let key = name.to_string_lossy().replace('\\', "/");
                files.insert(key, FileSum::of(&entry.path())?);
            }
        }
    }
    let seal = Seal {
        index: index.map(str::to_string),
        files,
    };
    let json = serde_json::to_vec_pretty(&seal).expect("seal serializes");
    write_atomic(&dir.join(SEAL_FILE), &json)?;
    Ok(seal)
}

/// Verifies every file a sealed directory lists and returns its seal; [`Error::Corrupt`]
/// naming the first damaged, missing or foreign file. O(directory size).
pub fn verify_dir(dir: &Path) -> Result<Seal> {
    let seal_path = dir.join(SEAL_FILE);
    let bytes = std::fs::read(&seal_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Corrupt {
                path: seal_path.clone(),
                message: "missing: the directory was not finished by genret (or is from a \
                          genret without checksums)"
                    .into(),
            }
        } else {
            Error::io(&seal_path, e)
        }
    })?;
    let seal: Seal = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: seal_path.clone(),
        message: format!("not a checksum list: {e}"),
    })?;
    for (name, sum) in &seal.files {
        let path = inside(dir, name, &seal_path)?;
        if !path.is_file() {
            return Err(Error::Corrupt {
                path,
                message: "listed in checksums.json but missing".into(),
            });
        }
        sum.verify(&path)?;
    }
    Ok(seal)
}

/// Replaces directory `target` with the finished directory `built` (a sibling on the same
/// file system) in one step where the OS allows it, then removes the old content. A crash
/// leaves `target` old or new, never missing or half-written (on Linux; elsewhere a crash
/// between two renames leaves the old one beside it, which [`DirLock::acquire`] restores).
pub fn replace_dir(target: &Path, built: &Path) -> Result<()> {
    let parent = parent_of(target);
    if !target.exists() {
        std::fs::rename(built, target).map_err(|e| Error::io(target, e))?;
        return sync_dir(&parent).map_err(|e| Error::io(&parent, e));
    }
    if !exchange(built, target)? {
        let old = sibling(target, "old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
        std::fs::rename(built, target).map_err(|e| Error::io(target, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        // `built` now holds the old content.
        let _ = std::fs::remove_dir_all(built);
    }
    sync_dir(&parent).map_err(|e| Error::io(&parent, e))
}

/// Fills the fresh directory `tmp` (a sibling of `dir`, emptied first) with `fill`, seals it
/// for the index `owner` (if any) and swaps it in for `dir` ([`replace_dir`]): a crash or a
/// full disk leaves the previous `dir` whole, and a failure leaves nothing behind.
pub fn write_dir(
    dir: &Path,
    tmp: &Path,
    owner: Option<&str>,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    let result = std::fs::create_dir_all(tmp)
        .map_err(|e| Error::io(tmp, e))
        .and_then(|()| fill(tmp))
        .and_then(|()| seal_dir(tmp, owner))
        .and_then(|_| replace_dir(dir, tmp));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

/// Swaps two paths atomically; `Ok(false)` where the OS or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
    let (Some(ca), Some(cb)) = (c(a), c(b)) else {
        return Ok(false);
    };
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(Error::io(b, err)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> Result<bool> {
    Ok(false)
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A hidden sibling of `path` for genret's own use: `.NAME.genret-KIND`.
pub fn sibling(path: &Path, kind: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dir".into());
    parent_of(path).join(format!(".{name}.genret-{kind}"))
}

/// The one writer of a directory: an advisory lock on the hidden sibling `.NAME.genret-lock`,
/// held until dropped and released by the OS if the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

/// Directories whose lock this process holds, so that a write nested in a locked command
/// (a part recorded during `train`) does not refuse itself.
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|d| *d == self.dir) {
            held.swap_remove(i);
        }
    }
}

impl DirLock {
    /// Takes the lock for `dir` (which need not exist yet) on behalf of `command`, or fails at
    /// once naming the process that holds it. Also restores a directory left aside by a crash
    /// in [`replace_dir`] and removes what an interrupted writer left behind.
    pub fn acquire(dir: &Path, command: &str) -> Result<DirLock> {
        let dir = absolute(dir);
        let path = sibling(&dir, "lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::Busy {
                    path: dir.clone(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let _ = file.set_len(0);
        let _ = write!(file, "`genret {command}` (pid {})", std::process::id());
        let old = sibling(&dir, "old");
        if old.exists() {
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&old);
            } else {
                std::fs::rename(&old, &dir).map_err(|e| Error::io(&dir, e))?;
            }
        }
        let _ = std::fs::remove_dir_all(sibling(&dir, "build"));
        HELD.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        Ok(DirLock { _file: file, dir })
    }

    /// [`DirLock::acquire`], or `None` when this process already holds the lock (the caller
    /// runs inside a command that took it).
    pub fn acquire_unless_held(dir: &Path, command: &str) -> Result<Option<DirLock>> {
        let held = HELD
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&absolute(dir));
        if held {
            return Ok(None);
        }
        DirLock::acquire(dir, command).map(Some)
    }
}

/// `path` made absolute against the current directory (without resolving links), so that
/// `.` and `idx/` have a name and a parent.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if path.file_name().is_none() {
        // `/a/b/.` or `/a/b/..`: let the OS resolve it when it can.
        return path.canonicalize().unwrap_or(path);
    }
    path
}

/// Bytes of a file, or of every file under a directory (0 where unreadable): what a part
/// costs on disk.
pub fn dir_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| dir_bytes(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_file_appears_only_when_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.txt");
        std::fs::write(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.writer().write_all(b"new, half").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names = || std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(names(), 1, "the temp file is removed");
        let mut file = AtomicFile::create(&path).unwrap();
        file.writer().write_all(b"new").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(), 1);
    }

    #[test]
    fn a_sealed_directory_verifies_until_a_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.bin"), b"weights").unwrap();
        std::fs::write(dir.join("sub/b.json"), b"{}").unwrap();
        let seal = seal_dir(&dir, Some("fp")).unwrap();
        assert_eq!(seal.files.len(), 2);
        assert_eq!(verify_dir(&dir).unwrap(), seal);

        std::fs::write(dir.join("sub/b.json"), b"{ }").unwrap();
        let err = verify_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("b.json") && err.contains("was written with 2"),
            "{err}"
        );
        std::fs::write(dir.join("sub/b.json"), b"[]").unwrap();
        let err = verify_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        std::fs::remove_file(dir.join(SEAL_FILE)).unwrap();
        assert!(
            verify_dir(&dir)
                .unwrap_err()
                .to_string()
                .contains(SEAL_FILE)
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_devices_are_written_through_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.txt");
        std::fs::write(&real, "old").unwrap();
        let link = tmp.path().join("link.txt");
        std::os::unix::fs::symlink("real.txt", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        // A dangling link gets its target created.
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("made.txt")).unwrap(),
            "made"
        );
        // A device is written, not replaced.
        write_atomic(Path::new("/dev/null"), b"nothing").unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let listed = tmp.path().join("manifest.json");
        assert!(inside(tmp.path(), "docs.jsonl", &listed).is_ok());
        assert!(inside(tmp.path(), "model/config.json", &listed).is_ok());
        for bad in ["../x", "/etc/passwd", "", "a/../../b", "./x"] {
            assert!(inside(tmp.path(), bad, &listed).is_err(), "{bad}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", tmp.path().join("link")).unwrap();
            let err = inside(tmp.path(), "link/passwd", &listed).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
    }

    #[test]
    fn a_directory_is_replaced_whole_and_has_one_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("idx");
        let lock = DirLock::acquire(&target, "index").unwrap();
        let err = DirLock::acquire(&target, "train").unwrap_err().to_string();
        assert!(
            err.contains("another genret process") && err.contains("genret index"),
            "{err}"
        );
        for content in ["old", "new"] {
            let built = sibling(&target, "build");
            std::fs::create_dir(&built).unwrap();
            std::fs::write(built.join("f"), content).unwrap();
            replace_dir(&target, &built).unwrap();
            assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), content);
            assert!(!built.exists());
        }
        drop(lock);
        DirLock::acquire(&target, "train").unwrap();
    }
}
