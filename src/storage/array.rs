//! storage::array: how is a binary part laid out, and how is it read without copying it?
//!
//! [`ArrayFile`] is the container of every binary part: a checked header, then little-endian
//! arrays. A file is opened by mapping it ([`Mapped`]); an array is then used in place
//! ([`Array`]) where the platform is little-endian and the array is aligned for its element
//! type, and copied otherwise, so opening costs one pass of checksum over the mapped bytes
//! and no copy. Arrays written with [`ArrayWriter::aligned`] start on a 64-byte boundary, so
//! structures laid out one cache line per block keep that layout when mapped.
//!
//! Mapping is safe here because genret never changes a written file in place: every write
//! is a new file renamed over the old one ([`super::write_atomic`]), which leaves a mapping
//! of the old file intact. Another program truncating a mapped file in place would make the
//! process fault (SIGBUS), as with any memory-mapped index.

use std::fs::File;
use std::io::Write;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileSum, write_atomic_with};
use crate::error::{Error, Result};

/// Size of the fixed [`ArrayFile`] header in bytes.
const HEADER_BYTES: usize = 32;

/// A file mapped read-only into memory, and whether its bytes were verified whole against
/// the sum recorded when it was written.
pub struct Mapped {
    /// `None` for an empty file, which cannot be mapped.
    map: Option<memmap2::Mmap>,
    path: PathBuf,
    verified: bool,
}

impl Mapped {
    /// Maps `path`. With `sum`, checks its length and XXH3-64 over the mapping (one pass at
    /// memory speed, no copy) and fails with [`Error::Corrupt`] naming the file on mismatch.
    pub fn open(path: &Path, sum: Option<&FileSum>) -> Result<Arc<Mapped>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        // SAFETY: genret never changes a written file in place (see the module doc), so the
        // mapped bytes do not change under the references handed out below.
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        let mut mapped = Mapped {
            map,
            path: path.to_path_buf(),
            verified: false,
        };
        if let Some(sum) = sum {
            sum.check(&FileSum::of_bytes(mapped.bytes()), path)?;
            mapped.verified = true;
        }
        Ok(Arc::new(mapped))
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether every byte was checked against a recorded sum when the file was mapped.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// An error about this file's content.
    pub fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// An element type an [`Array`] may hold: plain data, every bit pattern valid, read from its
/// little-endian form by [`Plain::swap_le`].
pub trait Plain: bytemuck::Pod + Send + Sync {
    /// The value whose little-endian bytes `self` holds (and back: on a big-endian machine
    /// it swaps the bytes, on a little-endian one it does nothing).
    fn swap_le(self) -> Self;
}

macro_rules! plain_int {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            fn swap_le(self) -> Self {
                <$t>::from_le(self)
            }
        }
    )*};
}
plain_int!(u8, u16, u32, u64, i64);

/// A read-only array, owned or used in place inside a [`Mapped`] file. Dereferences to a
/// slice at no cost beyond one branch.
pub struct Array<T: Plain> {
    inner: Inner<T>,
}

enum Inner<T> {
    Owned(Vec<T>),
    /// `len` elements at `ptr`, inside `_file`'s mapping, which the `Arc` keeps alive.
    Mapped {
        ptr: *const T,
        len: usize,
        _file: Arc<Mapped>,
    },
}

// SAFETY: a mapped array is immutable memory owned by the `Arc`; sharing it across threads is
// as safe as sharing a `&[T]`.
unsafe impl<T: Plain> Send for Array<T> {}
unsafe impl<T: Plain> Sync for Array<T> {}

impl<T: Plain> Array<T> {
    /// `bytes` (little-endian elements inside `file`) in place when the platform is
    /// little-endian and the bytes are aligned for `T`, else a converted copy.
    fn of_bytes(file: &Arc<Mapped>, bytes: &[u8]) -> Array<T> {
        let n = bytes.len() / size_of::<T>();
        let in_place = cfg!(target_endian = "little")
            && (bytes.as_ptr() as usize).is_multiple_of(align_of::<T>());
        if in_place {
            return Array {
                inner: Inner::Mapped {
                    ptr: bytes.as_ptr().cast(),
                    len: n,
                    _file: Arc::clone(file),
                },
            };
        }
        let values: Vec<T> = bytes
            .chunks_exact(size_of::<T>())
            .map(|c| bytemuck::pod_read_unaligned::<T>(c).swap_le())
            .collect();
        Array::from(values)
    }

    /// Whether the elements are used in place in a mapped file (for tests and statistics).
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped { .. })
    }
}

impl<T: Plain> From<Vec<T>> for Array<T> {
    fn from(values: Vec<T>) -> Self {
        Array {
            inner: Inner::Owned(values),
        }
    }
}

impl<T: Plain> Deref for Array<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match &self.inner {
            Inner::Owned(v) => v,
            // SAFETY: `ptr` is aligned and `len` elements lie inside the mapping (checked in
            // `of_bytes`), which lives as long as `self` through the `Arc`.
            Inner::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Plain> Clone for Array<T> {
    fn clone(&self) -> Self {
        match &self.inner {
            Inner::Owned(v) => Array::from(v.clone()),
            Inner::Mapped { ptr, len, _file } => Array {
                inner: Inner::Mapped {
                    ptr: *ptr,
                    len: *len,
                    _file: Arc::clone(_file),
                },
            },
        }
    }
}

impl<T: Plain + PartialEq> PartialEq for Array<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Plain + Eq> Eq for Array<T> {}

/// The first elements and the length: an index's arrays hold millions.
impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 8;
        let mut list = f.debug_list();
        list.entries(self.iter().take(SHOWN));
        if self.len() > SHOWN {
            list.entry(&format_args!("... {} in all", self.len()));
        }
        list.finish()
    }
}

/// A binary container of little-endian arrays behind a checked header.
///
/// Layout: `magic[8] | version u32 | arrays u32 | payload_bytes u64 | xxh3_64(payload) u64`,
/// then for each array `bytes u64 | data | zero padding to 8`. Reading verifies magic,
/// version, length and checksum before anything is parsed, so a truncated, corrupted or
/// foreign file is rejected up front: O(file size) to open, at memory speed (the file is
/// mapped, not copied).
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

    fn push_le<T: Plain>(&mut self, values: &[T]) {
        if cfg!(target_endian = "little") {
            self.push_bytes(bytemuck::cast_slice(values));
        } else {
            // `swap_le` is its own inverse.
            let le: Vec<T> = values.iter().map(|v| v.swap_le()).collect();
            self.push_bytes(bytemuck::cast_slice(&le));
        }
    }

    /// Appends one array of any [`Plain`] type, read back with [`ArrayReader::array`].
    pub fn array<T: Plain>(&mut self, values: &[T]) -> &mut Self {
        self.push_le(values);
        self
    }

    pub fn u64s(&mut self, values: &[u64]) -> &mut Self {
        self.push_le(values);
        self
    }

    pub fn u32s(&mut self, values: &[u32]) -> &mut Self {
        self.push_le(values);
        self
    }

    pub fn i64s(&mut self, values: &[i64]) -> &mut Self {
        self.push_le(values);
        self
    }

    pub fn bytes(&mut self, values: &[u8]) -> &mut Self {
        self.push_bytes(values);
        self
    }

    /// Appends `values` so that its data starts on a 64-byte boundary of the file: a padding
    /// array (zeros) first, then the array. Read back with [`ArrayReader::aligned`].
    pub fn aligned<T: Plain>(&mut self, values: &[T]) -> &mut Self {
        let data_at = HEADER_BYTES + self.payload.len() + 16;
        let pad = (64 - data_at % 64) % 64;
        self.push_bytes(&[0u8; 64][..pad]);
        self.push_le(values);
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
    file: Arc<Mapped>,
    pos: usize,
    remaining: u32,
}

impl ArrayFile {
    /// Maps and verifies a file. `versions` is the inclusive range of readable versions;
    /// returns the reader and the file's version.
    pub fn open(
        path: &Path,
        magic: &[u8; 8],
        versions: std::ops::RangeInclusive<u32>,
    ) -> Result<(ArrayReader, u32)> {
        ArrayFile::read(Mapped::open(path, None)?, magic, versions)
    }

    /// Reads a mapped file: checks magic, version and length, and the payload's checksum
    /// unless the whole file was already verified when it was mapped ([`Mapped::verified`]).
    pub fn read(
        file: Arc<Mapped>,
        magic: &[u8; 8],
        versions: std::ops::RangeInclusive<u32>,
    ) -> Result<(ArrayReader, u32)> {
        let bytes = file.bytes();
        if bytes.len() < HEADER_BYTES {
            return Err(file.corrupt(format!(
                "truncated: {} bytes, the header alone is {HEADER_BYTES}",
                bytes.len()
            )));
        }
        let header = &bytes[..HEADER_BYTES];
        if &header[0..8] != magic {
            return Err(file.corrupt(format!(
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
                path: file.path().to_path_buf(),
                found: version,
                expected: *versions.end(),
                oldest: *versions.start(),
            });
        }
        let arrays = le32(&header[12..16]);
        let payload_len = le64(&header[16..24]);
        let checksum = le64(&header[24..32]);
        if bytes.len() as u64 != HEADER_BYTES as u64 + payload_len {
            return Err(file.corrupt(format!(
                "file is {} bytes, header says {}",
                bytes.len(),
                HEADER_BYTES as u64 + payload_len
            )));
        }
        if !file.verified() && xxhash_rust::xxh3::xxh3_64(&bytes[HEADER_BYTES..]) != checksum {
            return Err(file.corrupt("checksum mismatch"));
        }
        Ok((
            ArrayReader {
                file,
                pos: HEADER_BYTES,
                remaining: arrays,
            },
            version,
        ))
    }
}

impl ArrayReader {
    /// An error about this file's content.
    pub fn corrupt(&self, message: impl Into<String>) -> Error {
        self.file.corrupt(message)
    }

    /// The next array's bytes, as a range of the file.
    fn next_range(&mut self, elem: usize) -> Result<std::ops::Range<usize>> {
        let total = self.file.bytes().len();
        if self.remaining == 0 {
            return Err(self.corrupt("fewer arrays than expected"));
        }
        let Some(start) = self.pos.checked_add(8).filter(|&e| e <= total) else {
            return Err(self.corrupt("array length runs past the end"));
        };
        let len_bytes = &self.file.bytes()[self.pos..start];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let padded = len.checked_add((8 - len % 8) % 8);
        let end = padded.and_then(|p| start.checked_add(p));
        match end {
            Some(end) if end <= total && len.is_multiple_of(elem) => {
                self.pos = end;
                self.remaining -= 1;
                Ok(start..start + len)
            }
            _ => Err(self.corrupt("array runs past the end of the file")),
        }
    }

    /// The next array, in place where possible (see [`Array`]).
    pub fn array<T: Plain>(&mut self) -> Result<Array<T>> {
        let range = self.next_range(size_of::<T>())?;
        Ok(Array::of_bytes(&self.file, &self.file.bytes()[range]))
    }

    /// The next array written by [`ArrayWriter::aligned`]: its padding, then the array.
    pub fn aligned<T: Plain>(&mut self) -> Result<Array<T>> {
        let pad = self.next_range(1)?;
        if pad.len() >= 64 || self.file.bytes()[pad].iter().any(|&b| b != 0) {
            return Err(self.corrupt("bad padding before an aligned array"));
        }
        self.array()
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>> {
        Ok(self.array()?.to_vec())
    }

    pub fn u32s(&mut self) -> Result<Vec<u32>> {
        Ok(self.array()?.to_vec())
    }

    pub fn i64s(&mut self) -> Result<Vec<i64>> {
        Ok(self.array()?.to_vec())
    }

    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        Ok(self.array()?.to_vec())
    }

    /// Fails unless every array was read: trailing data means a foreign layout.
    pub fn finish(self) -> Result<()> {
        if self.remaining != 0 || self.pos != self.file.bytes().len() {
            return Err(self.corrupt("more arrays than expected"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_in_place_and_aligned() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.bin");
        let words: Vec<u64> = (0..100).map(|i| i * 0x0101_0101_0101).collect();
        let small: Vec<u32> = vec![7, 8, 9];
        ArrayWriter::new()
            .u32s(&small)
            .bytes(b"abc")
            .aligned(&words)
            .i64s(&[-1, 2])
            .write(&path, b"TESTFILE", 3)
            .unwrap();
        let (mut r, version) = ArrayFile::open(&path, b"TESTFILE", 1..=3).unwrap();
        assert_eq!(version, 3);
        assert_eq!(r.u32s().unwrap(), small);
        assert_eq!(r.bytes().unwrap(), b"abc");
        let mapped: Array<u64> = r.aligned().unwrap();
        assert_eq!(*mapped, words[..]);
        assert!(mapped.is_mapped() || cfg!(target_endian = "big"));
        assert!((mapped.as_ptr() as usize).is_multiple_of(64));
        assert_eq!(r.i64s().unwrap(), [-1, 2]);
        r.finish().unwrap();
        // The array outlives its reader and file handle.
        let again = mapped.clone();
        drop(mapped);
        assert_eq!(again[99], words[99]);
    }

    #[test]
    fn a_verified_mapping_skips_the_payload_sum_and_a_wrong_sum_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.bin");
        ArrayWriter::new()
            .u64s(&[1, 2, 3])
            .write(&path, b"TESTFILE", 1)
            .unwrap();
        let sum = FileSum::of(&path).unwrap();
        let file = Mapped::open(&path, Some(&sum)).unwrap();
        assert!(file.verified());
        let (mut r, _) = ArrayFile::read(file, b"TESTFILE", 1..=1).unwrap();
        assert_eq!(r.u64s().unwrap(), [1, 2, 3]);
        let wrong = FileSum {
            bytes: sum.bytes,
            xxh3: sum.xxh3 ^ 1,
        };
        let err = Mapped::open(&path, Some(&wrong)).err().unwrap().to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("a.bin"),
            "{err}"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = ArrayFile::open(&path, b"TESTFILE", 1..=1).err().unwrap();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        std::fs::write(&path, &bytes[..10]).unwrap();
        let err = ArrayFile::open(&path, b"TESTFILE", 1..=1).err().unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(ArrayFile::open(&path, b"TESTFILE", 1..=1).is_err());
    }
}
