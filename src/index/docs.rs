//! index::docs: what are document d's id, title and text, without reading the others?
//!
//! `docs.jsonl` holds one [`DocEntry`] per line, in index order: plain UTF-8 that a person or
//! `jq` can read. Beside it, `docs.lines` ([`LINES_FILE`], an [`ArrayFile`]) holds where each
//! line starts and an XXH3-64 checksum of every [`BLOCK_BYTES`] block of `docs.jsonl`.
//! [`DocStore`] maps `docs.jsonl` and parses one line when asked for it, so opening costs
//! O(documents / 8) bytes of reading (the line starts) whatever the size of the texts.
//!
//! Guarantee: no byte of `docs.jsonl` is used before the blocks it lies in have matched
//! their recorded checksums (each block is checked once per process, on first use); a
//! changed block is an [`Error::Corrupt`] naming the file. `docs.lines` itself is verified
//! whole against the manifest when it is mapped. Opening an index written before
//! `docs.lines` existed verifies `docs.jsonl` whole and finds the line starts by a scan.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Array, ArrayFile, ArrayWriter, AtomicFile, Mapped, check_len};

/// Name of the document store inside an index directory.
pub const DOCS_FILE: &str = "docs.jsonl";
/// Name of the line starts and block checksums of [`DOCS_FILE`].
pub const LINES_FILE: &str = "docs.lines";
/// Manifest name of the [`LINES_FILE`] part.
pub const LINES_PART: &str = "doclines";
/// Bytes of `docs.jsonl` under one checksum: small enough that reading one document checks
/// little else (~10 us), large enough that the checksums are a negligible part (1/8192).
pub const BLOCK_BYTES: u64 = 64 << 10;

const MAGIC: &[u8; 8] = b"GRLINES\0";
const FORMAT_VERSION: u32 = 1;

/// One line of `docs.jsonl`: a document as indexed, in index order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DocEntry {
    pub id: String,
    pub title: String,
    pub text: String,
    /// Number of tokens the document has in the FM-index.
    pub tokens: u32,
}

#[cfg(test)]
impl DocEntry {
    /// A document of `text` alone (no id, title or tokens), for unit tests.
    pub(crate) fn of_text(text: &str) -> DocEntry {
        DocEntry {
            id: String::new(),
            title: String::new(),
            text: text.into(),
            tokens: 0,
        }
    }
}

/// Only the id of a line, for callers that need no text.
#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Writes `docs` as the files `jsonl` and `lines` (a `docs.jsonl` and its `docs.lines`),
/// each atomically, streaming: the documents are never all in memory as text. Returns the
/// number written.
pub fn write_as(
    jsonl: &Path,
    lines_file: &Path,
    docs: impl IntoIterator<Item = DocEntry>,
) -> Result<u64> {
    let mut w = DocsWriter::create(jsonl, lines_file)?;
    for doc in docs {
        w.push(&doc)?;
    }
    w.finish()
}

/// Writes a `docs.jsonl` and its `docs.lines` one document at a time, each file atomically
/// when [`DocsWriter::finish`]ed; dropped unfinished, it leaves neither.
pub struct DocsWriter {
    jsonl: AtomicFile,
    lines: Lines,
    lines_file: PathBuf,
    line: Vec<u8>,
}

impl DocsWriter {
    pub fn create(jsonl: &Path, lines_file: &Path) -> Result<DocsWriter> {
        Ok(DocsWriter {
            jsonl: AtomicFile::create(jsonl)?,
            lines: Lines::default(),
            lines_file: lines_file.to_path_buf(),
            line: Vec::new(),
        })
    }

    /// Appends the next document.
    pub fn push(&mut self, doc: &DocEntry) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, doc)
            .map_err(|e| Error::io(self.jsonl.path(), e.into()))?;
        self.line.push(b'\n');
        self.lines.push(&self.line);
        let written = self.jsonl.writer().write_all(&self.line);
        written.map_err(|e| Error::io(self.jsonl.path(), e))
    }

    /// Puts both files in place; returns the number of documents.
    pub fn finish(self) -> Result<u64> {
        self.jsonl.commit()?;
        let n = self.lines.starts.len() as u64 - 1;
        self.lines.save(&self.lines_file)?;
        Ok(n)
    }
}

/// Line starts and block checksums of a `docs.jsonl`, accumulated as it is written.
struct Lines {
    starts: Vec<u64>,
    sums: Vec<u64>,
    block: xxhash_rust::xxh3::Xxh3,
    /// Bytes fed to `block` so far.
    in_block: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            starts: vec![0],
            sums: Vec::new(),
            block: xxhash_rust::xxh3::Xxh3::new(),
            in_block: 0,
        }
    }
}

impl Lines {
    fn push(&mut self, mut bytes: &[u8]) {
        let end = self.starts.last().unwrap() + bytes.len() as u64;
        self.starts.push(end);
        while !bytes.is_empty() {
            let take = ((BLOCK_BYTES - self.in_block) as usize).min(bytes.len());
            self.block.update(&bytes[..take]);
            self.in_block += take as u64;
            bytes = &bytes[take..];
            if self.in_block == BLOCK_BYTES {
                self.sums.push(self.block.digest());
                self.block.reset();
                self.in_block = 0;
            }
        }
    }

    fn save(mut self, path: &Path) -> Result<()> {
        if self.in_block > 0 {
            self.sums.push(self.block.digest());
        }
        let file_bytes = *self.starts.last().unwrap();
        ArrayWriter::new()
            .u64s(&[self.starts.len() as u64 - 1, BLOCK_BYTES, file_bytes])
            .u64s(&self.starts)
            .u64s(&self.sums)
            .write(path, MAGIC, FORMAT_VERSION)
    }
}

/// The documents of an index, read one line at a time from their mapped `docs.jsonl` files:
/// the build's, then one per addition (`genret index --add`), numbered on from the last.
pub struct DocStore {
    parts: Vec<DocFile>,
    /// Number of each part's first document; one extra entry: the total.
    first: Vec<usize>,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.parts).finish()
    }
}

impl DocStore {
    /// Opens `docs` (mapped, not verified) with its verified `lines` file. O(documents) to
    /// check that the line starts rise and end at the file's end; no text is read.
    pub fn open(docs: Arc<Mapped>, lines: Arc<Mapped>) -> Result<DocStore> {
        Ok(DocStore::of(DocFile::open(docs, lines)?))
    }

    /// Opens a `docs.jsonl` that has no `docs.lines` (an index from before it), which must
    /// have been verified whole when mapped: its line starts are found by one scan.
    pub fn scan(docs: Arc<Mapped>) -> Result<DocStore> {
        Ok(DocStore::of(DocFile::scan(docs)?))
    }

    fn of(part: DocFile) -> DocStore {
        DocStore {
            first: vec![0, part.len()],
            parts: vec![part],
        }
    }

    /// The documents of `stores`, one after another.
    pub fn concat(stores: Vec<DocStore>) -> DocStore {
        let parts: Vec<DocFile> = stores.into_iter().flat_map(|s| s.parts).collect();
        let mut first = vec![0];
        for p in &parts {
            first.push(first.last().unwrap() + p.len());
        }
        DocStore { parts, first }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        *self.first.last().unwrap()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Document `d`: its line checked and parsed. O(line length); an error names the file
    /// and line if the line is damaged, and `d` past the end is an [`Error::Internal`].
    pub fn get(&self, d: usize) -> Result<DocEntry> {
        let (part, local) = self.part_of(d)?;
        part.parse(local)
    }

    /// The id of document `d` (the line is checked and scanned, the text not kept).
    pub fn id(&self, d: usize) -> Result<String> {
        let (part, local) = self.part_of(d)?;
        Ok(part.parse::<IdOnly>(local)?.id)
    }

    /// Every document, in index order, parsed in parallel: O(corpus).
    pub fn all(&self) -> Result<Vec<DocEntry>> {
        (0..self.len())
            .into_par_iter()
            .map(|d| self.get(d))
            .collect()
    }

    /// Every document's id, in index order, parsed in parallel: O(corpus).
    pub fn ids(&self) -> Result<Vec<String>> {
        (0..self.len())
            .into_par_iter()
            .map(|d| self.id(d))
            .collect()
    }

    /// Checks every block not checked yet: O(file size). For `genret check`-style callers
    /// that want the whole file vouched for now rather than as it is read.
    pub fn verify_all(&self) -> Result<()> {
        self.parts.iter().try_for_each(DocFile::verify_all)
    }

    /// The part holding document `d` and its line number there.
    fn part_of(&self, d: usize) -> Result<(&DocFile, usize)> {
        if d >= self.len() {
            return Err(Error::Internal(format!(
                "document {d} asked of a store of {} documents",
                self.len()
            )));
        }
        let p = self.first.partition_point(|&f| f <= d) - 1;
        Ok((&self.parts[p], d - self.first[p]))
    }
}

/// One `docs.jsonl` with its line starts and block checksums.
struct DocFile {
    file: Arc<Mapped>,
    /// Start of each line, then the file's length: `len + 1` entries.
    starts: Array<u64>,
    /// XXH3-64 of each `block_bytes` block of the file (the last one shorter).
    sums: Array<u64>,
    block_bytes: u64,
    /// One bit per block: checked against its sum already.
    checked: Vec<AtomicU64>,
}

impl std::fmt::Debug for DocFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocFile")
            .field("file", &self.file.path())
            .field("docs", &self.len())
            .finish()
    }
}

impl DocFile {
    fn open(docs: Arc<Mapped>, lines: Arc<Mapped>) -> Result<DocFile> {
        let (mut r, _) = ArrayFile::read(lines, MAGIC, 1..=FORMAT_VERSION)?;
        let head = r.u64s()?;
        let [n, block_bytes, file_bytes] = head[..] else {
            return Err(r.corrupt("bad scalar header"));
        };
        let starts: Array<u64> = r.array()?;
        let sums: Array<u64> = r.array()?;
        let blocks_ok = block_bytes.is_power_of_two()
            && (1 << 10..=1 << 30).contains(&block_bytes)
            && sums.len() as u64 == file_bytes.div_ceil(block_bytes);
        let starts_ok = starts.len() as u64 == n + 1
            && starts.first() == Some(&0)
            && starts.last() == Some(&file_bytes)
            && starts.par_windows(2).all(|w| w[0] < w[1]);
        if !blocks_ok || !starts_ok {
            return Err(r.corrupt("line starts or block sums disagree with each other"));
        }
        r.finish()?;
        check_len(docs.path(), docs.bytes().len() as u64, file_bytes)?;
        let checked = (0..sums.len().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(DocFile {
            file: docs,
            starts,
            sums,
            block_bytes,
            checked,
        })
    }

    fn scan(docs: Arc<Mapped>) -> Result<DocFile> {
        if !docs.verified() {
            return Err(docs.corrupt("cannot be read unverified without its docs.lines"));
        }
        let bytes = docs.bytes();
        let mut starts = vec![0u64];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i as u64 + 1),
        );
        if *starts.last().unwrap() != bytes.len() as u64 {
            starts.push(bytes.len() as u64); // a last line without its newline
        }
        let blocks = (bytes.len() as u64).div_ceil(BLOCK_BYTES) as usize;
        Ok(DocFile {
            file: docs,
            starts: Array::from(starts),
            sums: Array::from(vec![0; blocks]),
            block_bytes: BLOCK_BYTES,
            // Verified whole: every block is checked already.
            checked: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
        })
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn verify_all(&self) -> Result<()> {
        (0..self.sums.len())
            .into_par_iter()
            .try_for_each(|b| self.check_block(b))
    }

    /// Line `d` (in range), its blocks checked, parsed.
    fn parse<T: serde::de::DeserializeOwned>(&self, d: usize) -> Result<T> {
        let (lo, hi) = (self.starts[d], self.starts[d + 1]);
        for b in lo / self.block_bytes..=(hi - 1) / self.block_bytes {
            self.check_block(b as usize)?;
        }
        let line = &self.file.bytes()[lo as usize..hi as usize];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        serde_json::from_slice(line).map_err(|e| Error::Parse {
            path: self.file.path().to_path_buf(),
            line: d as u64 + 1,
            message: format!("malformed document entry: {e}"),
        })
    }

    /// Checks block `b` against its sum unless done before; concurrent first checks of one
    /// block may both hash it, which is harmless.
    fn check_block(&self, b: usize) -> Result<()> {
        let (word, bit) = (&self.checked[b / 64], 1u64 << (b % 64));
        if word.load(Ordering::Acquire) & bit != 0 {
            return Ok(());
        }
        let lo = b as u64 * self.block_bytes;
        let hi = (lo + self.block_bytes).min(self.file.bytes().len() as u64);
        let bytes = &self.file.bytes()[lo as usize..hi as usize];
        if xxhash_rust::xxh3::xxh3_64(bytes) != self.sums[b] {
            return Err(self.file.corrupt(format!(
                "bytes {lo}..{hi} changed after genret wrote them (block checksum mismatch); \
                 rebuild the index with `genret index`"
            )));
        }
        word.fetch_or(bit, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileSum;

    /// `docs` as `dir/docs.jsonl` and `dir/docs.lines`.
    fn write(dir: &Path, docs: Vec<DocEntry>) -> Result<u64> {
        write_as(&dir.join(DOCS_FILE), &dir.join(LINES_FILE), docs)
    }

    fn docs(n: usize) -> Vec<DocEntry> {
        (0..n)
            .map(|i| DocEntry {
                id: format!("d{i}"),
                title: "t".repeat(i % 5),
                text: "x \"y\" é ".repeat(i * 997 % 3000),
                tokens: i as u32,
            })
            .collect()
    }

    fn open(dir: &Path) -> DocStore {
        let lines = dir.join(LINES_FILE);
        let sum = FileSum::of(&lines).unwrap();
        DocStore::open(
            Mapped::open(&dir.join(DOCS_FILE), None).unwrap(),
            Mapped::open(&lines, Some(&sum)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn documents_read_back_one_at_a_time_across_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let want = docs(300);
        assert_eq!(write(tmp.path(), want.clone()).unwrap(), 300);
        let bytes = std::fs::metadata(tmp.path().join(DOCS_FILE)).unwrap().len();
        assert!(bytes > 20 * BLOCK_BYTES, "lines must span blocks: {bytes}");
        let store = open(tmp.path());
        assert_eq!(store.len(), 300);
        for d in [299, 0, 150, 7] {
            assert_eq!(store.get(d).unwrap(), want[d]);
            assert_eq!(store.id(d).unwrap(), want[d].id);
        }
        assert_eq!(store.all().unwrap(), want);
        assert!(matches!(store.get(300), Err(Error::Internal(_))));
        // The same lines as the format before docs.lines, found by a scan.
        let jsonl = tmp.path().join(DOCS_FILE);
        let sum = FileSum::of(&jsonl).unwrap();
        let scanned = DocStore::scan(Mapped::open(&jsonl, Some(&sum)).unwrap()).unwrap();
        assert_eq!(scanned.all().unwrap(), want);
        assert!(DocStore::scan(Mapped::open(&jsonl, None).unwrap()).is_err());
    }

    #[test]
    fn parts_read_as_one_store_numbered_on() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let want = docs(40);
        write(a.path(), want[..25].to_vec()).unwrap();
        write(b.path(), want[25..].to_vec()).unwrap();
        let store = DocStore::concat(vec![open(a.path()), open(b.path())]);
        assert_eq!(store.len(), 40);
        assert_eq!(store.get(25).unwrap(), want[25]);
        assert_eq!(store.id(24).unwrap(), want[24].id);
        assert_eq!(store.all().unwrap(), want);
        assert!(matches!(store.get(40), Err(Error::Internal(_))));
        store.verify_all().unwrap();
    }

    #[test]
    fn a_changed_block_is_refused_when_read_and_others_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let want = docs(300);
        write(tmp.path(), want.clone()).unwrap();
        let path = tmp.path().join(DOCS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // A letter inside document 150's text: still valid JSON, so only the sum sees it.
        let store = open(tmp.path());
        let text_at =
            store.parts[0].starts[150] as usize + r#"{"id":"d150","title":"","text":""#.len();
        let at = text_at + 44;
        assert_eq!(bytes[at], b'x');
        bytes[at] = b'z';
        std::fs::write(&path, &bytes).unwrap();
        let store = open(tmp.path());
        let err = store.get(150).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("docs.jsonl"), "{err}");
        assert!(store.verify_all().is_err());
        let far = (0..300)
            .find(|&d| store.parts[0].starts[d] > store.parts[0].starts[151] + 2 * BLOCK_BYTES)
            .unwrap();
        assert_eq!(store.get(far).unwrap(), want[far]);
        // A truncated file is refused at open.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let lines = tmp.path().join(LINES_FILE);
        let sum = FileSum::of(&lines).unwrap();
        let err = DocStore::open(
            Mapped::open(&path, None).unwrap(),
            Mapped::open(&lines, Some(&sum)).unwrap(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
