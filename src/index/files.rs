//! Files of an index: atomic writes and the checksummed array container.
//!
//! Every file is written atomically: to a temporary file in the same directory, flushed and
//! synced, then renamed over the target, so a crash leaves either the old file or the new one,
//! never half of one. Binary parts share one container format ([`ArrayFile`]): a header with
//! magic, format version and an XXH3-64 checksum of the payload, then little-endian arrays,
//! each 8-byte aligned. Opening a damaged or foreign file is an error, never a panic.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams a file into place atomically: `fill` writes to a buffered temp file which is renamed
/// over `path` only when `fill` succeeds.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Size of the fixed [`ArrayFile`] header in bytes.
const HEADER_BYTES: usize = 32;

/// A binary container of little-endian arrays behind a checked header.
///
/// Layout: `magic[8] | version u32 | arrays u32 | payload_bytes u64 | xxh3_64(payload) u64`,
/// then for each array `bytes u64 | data | zero padding to 8`. Reading verifies magic,
/// version, length and checksum before anything is parsed, so a truncated, corrupted or
/// foreign file is rejected up front: O(file size) to open.
pub struct ArrayFile;

/// Builds the payload of an [`ArrayFile`] in memory.
#[derive(Default)]
pub struct ArrayWriter {
    payload: Vec<u8>,
    arrays: u32,
}

impl ArrayWriter {
    pub fn new() -> Self {
        Self::default()
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.payload
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.payload.extend_from_slice(bytes);
        let pad = (8 - bytes.len() % 8) % 8;
        self.payload.extend(std::iter::repeat_n(0u8, pad));
        self.arrays += 1;
    }

    pub fn u64s(&mut self, values: &[u64]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&bytes);
        self
    }

    pub fn u32s(&mut self, values: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&bytes);
        self
    }

    pub fn i64s(&mut self, values: &[i64]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&bytes);
        self
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path, magic: &[u8; 8], version: u32) -> Result<()> {
        let checksum = xxhash_rust::xxh3::xxh3_64(&self.payload);
        write_atomic_with(path, |w| {
            w.write_all(magic)?;
            w.write_all(&version.to_le_bytes())?;
            w.write_all(&self.arrays.to_le_bytes())?;
            w.write_all(&(self.payload.len() as u64).to_le_bytes())?;
            w.write_all(&checksum.to_le_bytes())?;
            w.write_all(&self.payload)
        })
    }
}

/// Reads the arrays of a verified [`ArrayFile`] in order.
pub struct ArrayReader {
    path: PathBuf,
    payload: Vec<u8>,
    pos: usize,
    remaining: u32,
}

impl ArrayFile {
    /// Opens and verifies a file. `versions` is the inclusive range of readable versions;
    /// returns the reader and the file's version.
    pub fn open(
        path: &Path,
        magic: &[u8; 8],
        versions: std::ops::RangeInclusive<u32>,
    ) -> Result<(ArrayReader, u32)> {
        let corrupt = |message: String| Error::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut header = [0u8; HEADER_BYTES];
        let mut got = 0;
        while got < HEADER_BYTES {
            let n = file
                .read(&mut header[got..])
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                return Err(corrupt(format!(
                    "truncated: {got} bytes, the header alone is {HEADER_BYTES}"
                )));
            }
            got += n;
        }
        if &header[0..8] != magic {
            return Err(corrupt(format!(
                "wrong magic bytes {:?}, expected {:?}",
                String::from_utf8_lossy(&header[0..8]),
                String::from_utf8_lossy(magic)
            )));
        }
        let le32 = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        let version = le32(&header[8..12]);
        if !versions.contains(&version) {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found: version,
                expected: *versions.end(),
                oldest: *versions.start(),
            });
        }
        let arrays = le32(&header[12..16]);
        let payload_len = le64(&header[16..24]);
        let checksum = le64(&header[24..32]);
        let actual_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if actual_len != HEADER_BYTES as u64 + payload_len {
            return Err(corrupt(format!(
                "file is {actual_len} bytes, header says {}",
                HEADER_BYTES as u64 + payload_len
            )));
        }
        let mut payload = Vec::with_capacity(payload_len as usize);
        file.read_to_end(&mut payload)
            .map_err(|e| Error::io(path, e))?;
        if payload.len() as u64 != payload_len {
            return Err(corrupt("file changed while reading".into()));
        }
        if xxhash_rust::xxh3::xxh3_64(&payload) != checksum {
            return Err(corrupt("checksum mismatch".into()));
        }
        Ok((
            ArrayReader {
                path: path.to_path_buf(),
                payload,
                pos: 0,
                remaining: arrays,
            },
            version,
        ))
    }
}

impl ArrayReader {
    /// An error about this file's content.
    pub fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn next_bytes(&mut self, elem: usize) -> Result<&[u8]> {
        if self.remaining == 0 {
            return Err(self.corrupt("fewer arrays than expected"));
        }
        let end_len = self.pos.checked_add(8).filter(|&e| e <= self.payload.len());
        let Some(start) = end_len else {
            return Err(self.corrupt("array length runs past the end"));
        };
        let len = u64::from_le_bytes(self.payload[self.pos..start].try_into().unwrap()) as usize;
        let padded = len.checked_add((8 - len % 8) % 8);
        let end = padded.and_then(|p| start.checked_add(p));
        match end {
            Some(end) if end <= self.payload.len() && len.is_multiple_of(elem) => {
                self.pos = end;
                self.remaining -= 1;
                Ok(&self.payload[start..start + len])
            }
            _ => Err(self.corrupt("array runs past the end of the file")),
        }
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>> {
        let bytes = self.next_bytes(8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        let bytes = self.next_bytes(4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    pub fn i64s(&mut self) -> Result<Vec<i64>> {
        let bytes = self.next_bytes(8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Fails unless every array was read: trailing data means a foreign layout.
    pub fn finish(self) -> Result<()> {
        if self.remaining != 0 || self.pos != self.payload.len() {
            return Err(self.corrupt("more arrays than expected"));
        }
        Ok(())
    }
}
