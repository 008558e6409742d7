//! index: here is an index directory, which parts does it have and are they intact?
//!
//! An index directory holds `manifest.json` (format version, corpus fingerprint, tokenizer,
//! indexed fields, and one entry per part) beside the parts themselves (`tokenizer.json`,
//! `docs.jsonl`, `stats.json`, `fmindex.bin`, ...), each with its length and checksum. A
//! build writes a complete directory beside the old one and swaps it in whole
//! ([`crate::storage::replace_dir`]), so an interrupted rebuild leaves the old index usable.
//! A part is verified against its checksum before it is read, and must lie inside the
//! directory. [`build`] makes an index from a corpus; [`Index`] opens one for queries.

mod add;
mod build;
mod docs;
mod tokens;

pub use add::{AddConfig, add};
pub use build::{
    BuildConfig, CorpusSource, FMINDEX_FILE, Index, IndexStats, STATS_FILE, TOKENIZER_FILE,
    TokenizerSource, build, build_from, document_tokens, open_documents,
};
pub use docs::{BLOCK_BYTES, DOCS_FILE, DocEntry, DocStore, LINES_FILE, LINES_PART};
pub use tokens::{TOKENS_FILE, TOKENS_PART, TokenStore};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{FileSum, Mapped, check_len, dir_bytes, inside, write_atomic};

/// Version of the index directory layout (`manifest.json`). Bump on incompatible change.
/// Version 2 records a checksum for every file part; version 1 directories are still read,
/// with a warning that their parts cannot be verified. Version 3 has parts an older genret
/// would not know to read (the FM-index in several shards); an index without them is still
/// written as version 2, so older builds keep reading it.
pub const FORMAT_VERSION: u32 = 3;
/// The version an index without shards is written as, which older builds read; one with
/// shards is written as [`FORMAT_VERSION`].
pub const PLAIN_FORMAT_VERSION: u32 = 2;
/// Oldest index directory layout this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Name of the manifest inside an index directory.
pub const MANIFEST: &str = "manifest.json";

/// Name of a trained model's directory within its run's directory: `INDEX/model` (SEAL),
/// `INDEX/dsi/model` (DSI).
pub const MODEL_DIR: &str = "model";

/// What the manifest says about the corpus an index was built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorpusInfo {
    /// Path the corpus was read from, as given.
    pub source: String,
    /// [`crate::corpus::fingerprint`] of the corpus.
    pub fingerprint: String,
    pub docs: u64,
    pub empty_docs: u64,
    /// Tokens over all indexed documents (markers included).
    pub tokens: u64,
}

/// What the manifest says about the tokenizer (`tokenizer.json` in the directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizerInfo {
    pub file: String,
    /// `bpe`, `unigram`, or `external` for a tokenizer supplied by the user.
    pub kind: String,
    pub vocab_size: u64,
    pub lowercase: bool,
    pub specials: crate::tokenize::SpecialIds,
}

/// Which document fields are indexed and how they are joined into one token sequence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldsInfo {
    /// Fields in indexing order, e.g. `["title", "text"]`.
    pub indexed: Vec<String>,
    /// The token layout of one document, e.g. `<title> {title} </title> {text}`; the title
    /// markers are omitted for a document with an empty title.
    pub layout: String,
}

/// One part of an index directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartInfo {
    /// Path relative to the index directory.
    pub file: String,
    pub bytes: u64,
    /// XXH3-64 of a file part (16 hex digits), verified before the part is read; absent for
    /// a directory part (which carries its own `checksums.json`) and in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
    /// Free-form facts about the part (sizes, parameters), for `genret` and for people.
    #[serde(default)]
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub genret_version: String,
    pub corpus: CorpusInfo,
    pub tokenizer: TokenizerInfo,
    pub fields: FieldsInfo,
    pub parts: BTreeMap<String, PartInfo>,
    /// Corpora whose documents were appended after the build (`genret index --add`), in
    /// order; each batch is its own document, token-store and FM-index parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<CorpusInfo>,
}

impl Manifest {
    /// What identifies the documents the index holds, for the parts derived from all of them
    /// (BM25, dense embeddings) and `genret bench`'s reuse of an index: the corpus's
    /// fingerprint, combined with those of the corpora added since.
    pub fn documents_fingerprint(&self) -> String {
        if self.added.is_empty() {
            return self.corpus.fingerprint.clone();
        }
        let mut key = self.corpus.fingerprint.clone();
        for a in &self.added {
            key.push('+');
            key.push_str(&a.fingerprint);
        }
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
    }

    /// Number of document batches: the build's and one per addition.
    pub fn batches(&self) -> usize {
        1 + self.added.len()
    }
}

/// An index directory on disk with its manifest.
#[derive(Debug, Clone)]
pub struct IndexDir {
    path: PathBuf,
    pub manifest: Manifest,
}

impl IndexDir {
    /// Checks that `path` may receive a new index: it does not exist, or is an empty
    /// directory, or holds a genret index (which a finished build replaces). Refuses anything
    /// else, so a typo never clobbers user files.
    pub fn check_target(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if !path.exists() {
            return Ok(());
        }
        if !path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{}: exists and is not a directory; choose another --out",
                path.display()
            )));
        }
        let non_empty = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .next()
            .is_some();
        if non_empty && !path.join(MANIFEST).exists() {
            return Err(Error::InvalidInput(format!(
                "{}: directory is not empty and holds no genret index; refusing to write into it",
                path.display()
            )));
        }
        Ok(())
    }

    /// Writes a new manifest into `path` (atomically) and returns the directory.
    pub fn create(path: impl AsRef<Path>, manifest: Manifest) -> Result<IndexDir> {
        let dir = IndexDir {
            path: path.as_ref().to_path_buf(),
            manifest,
        };
        dir.write_manifest()?;
        Ok(dir)
    }

    /// Opens an index directory: reads and checks the manifest's format version, and checks
    /// that every part it lists is inside the directory and exists (parts are verified
    /// against their checksums when read, by [`IndexDir::part`]).
    pub fn open(path: impl AsRef<Path>) -> Result<IndexDir> {
        let path = path.as_ref().to_path_buf();
        let manifest_path = path.join(MANIFEST);
        let bytes = std::fs::read(&manifest_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::InvalidInput(format!(
                    "{}: not a genret index (no {MANIFEST}); build one with `genret index CORPUS --out {}`",
                    path.display(),
                    path.display()
                ))
            } else {
                Error::io(&manifest_path, e)
            }
        })?;
        let (bytes, sum_ok) = split_manifest_sum(&bytes);
        // Check the version before the full schema, so an old or future manifest gets a
        // version error rather than a confusing field error.
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: manifest_path.clone(),
                message: format!("not valid JSON: {e}"),
            })?;
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::Corrupt {
                path: manifest_path.clone(),
                message: "no format_version".into(),
            })? as u32;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(Error::Version {
                path: manifest_path,
                found,
                expected: FORMAT_VERSION,
                oldest: OLDEST_FORMAT_VERSION,
            });
        }
        // A checksum line binds whatever version the manifest claims, so editing the version
        // down to 1 cannot switch verification off.
        if sum_ok == Some(false) || (found >= 2 && sum_ok.is_none()) {
            return Err(Error::Corrupt {
                path: manifest_path,
                message: match sum_ok {
                    None => "it lacks its checksum line (edited by hand?)".into(),
                    _ => "checksum mismatch: the manifest changed after genret wrote it".into(),
                },
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| Error::Corrupt {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let dir = IndexDir { path, manifest };
        inside(&dir.path, &dir.manifest.tokenizer.file, &manifest_path)?;
        for (name, part) in &dir.manifest.parts {
            let file = inside(&dir.path, &part.file, &manifest_path)?;
            if found >= 2 && part.xxh3.is_none() && !file.is_dir() {
                return Err(Error::Corrupt {
                    path: manifest_path.clone(),
                    message: format!("part {name} has no checksum"),
                });
            }
            if !file.exists() {
                return Err(Error::MissingPart {
                    dir: dir.path.clone(),
                    part: name.clone(),
                    file: part.file.clone(),
                    hint: "the manifest lists it but the file is gone; rebuild with `genret index`"
                        .into(),
                });
            }
        }
        if found < 2 {
            tracing::warn!(
                "{}: built by an older genret that recorded no checksums; its files cannot be \
                 verified (rebuild it with `genret index` to have them checked)",
                dir.path.display()
            );
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Path of a part the manifest lists, verified against its recorded length and checksum
    /// (O(part size)), or a [`Error::MissingPart`] whose message says how to build it.
    pub fn part(&self, name: &str, hint: &str) -> Result<PathBuf> {
        let part = self.entry(name, hint)?;
        let path = inside(&self.path, &part.file, &self.path.join(MANIFEST))?;
        if let Some(sum) = part_sum(part, &self.path.join(MANIFEST))? {
            sum.verify(&path)?;
        }
        Ok(path)
    }

    /// Part `name` mapped into memory and verified against its recorded length and checksum
    /// in one pass over the mapping (no copy), or a [`Error::MissingPart`] saying how to build
    /// it. A part of a version 1 directory (no sum) is mapped unverified.
    pub fn map_part(&self, name: &str, hint: &str) -> Result<Arc<Mapped>> {
        let part = self.entry(name, hint)?;
        let path = inside(&self.path, &part.file, &self.path.join(MANIFEST))?;
        let sum = part_sum(part, &self.path.join(MANIFEST))?;
        Mapped::open(&path, sum.as_ref())
    }

    /// Part `name` mapped with only its length checked against the manifest: for a part
    /// whose content the caller verifies piecewise as it reads it ([`DocStore`]).
    pub fn map_part_unverified(&self, name: &str, hint: &str) -> Result<Arc<Mapped>> {
        let part = self.entry(name, hint)?;
        let path = inside(&self.path, &part.file, &self.path.join(MANIFEST))?;
        let file = Mapped::open(&path, None)?;
        check_len(&path, file.bytes().len() as u64, part.bytes)?;
        Ok(file)
    }

    /// Whether the manifest lists part `name` (not verified: [`IndexDir::part`] does that).
    pub fn has_part(&self, name: &str) -> bool {
        self.manifest.parts.contains_key(name)
    }

    /// The manifest entry of part `name`, or a [`Error::MissingPart`] saying how to build it.
    fn entry(&self, name: &str, hint: &str) -> Result<&PartInfo> {
        self.manifest
            .parts
            .get(name)
            .ok_or_else(|| Error::MissingPart {
                dir: self.path.clone(),
                part: name.to_string(),
                file: "-".into(),
                hint: hint.to_string(),
            })
    }

    /// Whether part `name` exists and its manifest entry has `meta[key] == value`: how
    /// derived parts (BM25, dense embeddings) tell that they were built from this input.
    pub fn part_meta_is(&self, name: &str, key: &str, value: &str) -> bool {
        self.manifest
            .parts
            .get(name)
            .and_then(|p| p.meta.get(key))
            .is_some_and(|v| v.as_str() == Some(value))
    }

    /// Records a part (its file must already be written) with its checksum, and rewrites the
    /// manifest, under the index's writer lock (taken here unless this process holds it).
    /// The parts another process recorded since this one opened the index are kept; if the
    /// index was rebuilt meanwhile, the part (made for the old one) is refused.
    pub fn add_part(
        &mut self,
        name: &str,
        file: &str,
        meta: BTreeMap<String, serde_json::Value>,
    ) -> Result<()> {
        let _lock = crate::storage::DirLock::acquire_unless_held(&self.path, "record a part")?;
        let current = IndexDir::open(&self.path)?;
        if current.fingerprint() != self.fingerprint() {
            return Err(Error::InvalidInput(format!(
                "{}: the index was rebuilt while this command ran; run it again",
                self.path.display()
            )));
        }
        self.manifest = current.manifest;
        let part = PartInfo::of(&self.path, file, meta)?;
        self.manifest.parts.insert(name.to_string(), part);
        self.write_manifest()
    }

    /// What identifies this build of the index for the models trained on it: the checksums
    /// of its tokenizer and documents and its token layout. A rebuild of a changed corpus or
    /// with another tokenizer gets another fingerprint; documents appended with `genret index
    /// --add` keep it (they leave the built documents, their token ids and docids as they
    /// were, so a trained model still reads and names them).
    pub fn fingerprint(&self) -> String {
        let sum = |name: &str| {
            self.manifest
                .parts
                .get(name)
                .and_then(|p| p.xxh3.clone())
                .unwrap_or_else(|| format!("{name}-unverified"))
        };
        let key = format!(
            "{}|{}|{}|{}",
            sum("tokenizer"),
            sum("docs"),
            self.manifest.fields.layout,
            self.manifest.corpus.fingerprint
        );
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
    }

    /// Total bytes of all parts.
    pub fn bytes(&self) -> u64 {
        self.manifest.parts.values().map(|p| p.bytes).sum()
    }

    /// Fails unless a sealed directory of this index (a model or a checkpoint) was written
    /// for this build of it: `what` names it in the message and `fix` says what to do.
    pub fn check_owner(&self, seal: &crate::storage::Seal, dir: &Path, fix: &str) -> Result<()> {
        let mine = self.fingerprint();
        match &seal.index {
            Some(fp) if *fp == mine => Ok(()),
            other => Err(Error::Mismatch {
                path: dir.to_path_buf(),
                message: format!(
                    "made for another build of this index (index fingerprint {}, this index is \
                     {mine}): the index was rebuilt or the directory copied from elsewhere; {fix}",
                    other.as_deref().unwrap_or("none")
                ),
            }),
        }
    }

    /// The verified directory `dir` (relative to the index) of the model that part `part`
    /// records: every file matches the checksums recorded when it was trained, for this build
    /// of the index. `train` is the command that makes one, for the messages. O(model size).
    pub fn model_dir(&self, part: &str, dir: &str, train: &str) -> Result<PathBuf> {
        // Only the entry: the directory's checksums.json covers the weights the entry names,
        // so checking them here too would read and hash them twice.
        self.entry(
            part,
            &format!("train one with `{train}` (or `genret bench`)"),
        )?;
        let dir = self.file(dir);
        if self.is_legacy_unsealed(&dir) {
            return Ok(dir);
        }
        let seal = crate::storage::verify_dir(&dir)?;
        self.check_owner(&seal, &dir, &format!("train it again with `{train}`"))?;
        Ok(dir)
    }

    /// Whether `dir` is a model or checkpoint of an index written before checksums (format
    /// version 1) and has none: read with a warning rather than refused, as its index is.
    pub fn is_legacy_unsealed(&self, dir: &Path) -> bool {
        let legacy =
            self.manifest.format_version < 2 && !dir.join(crate::storage::SEAL_FILE).exists();
        if legacy {
            tracing::warn!(
                "{}: written by an older genret without checksums; it cannot be verified",
                dir.display()
            );
        }
        legacy
    }

    fn write_manifest(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.manifest).expect("manifest serializes");
        let body = json.strip_prefix(b"{\n").expect("a JSON object");
        let sum = xxhash_rust::xxh3::xxh3_64(&json);
        let mut out = format!("{{\n  \"checksum\": \"{sum:016x}\",\n").into_bytes();
        out.extend_from_slice(body);
        write_atomic(&self.path.join(MANIFEST), &out)
    }
}

/// The first line of a manifest's object holds the checksum of the manifest without that
/// line: any edit to it is caught before it is believed.
const SUM_PREFIX: &[u8] = b"{\n  \"checksum\": \"";

/// The manifest's bytes without its checksum line, and whether that line was there and
/// matched (`None`: no checksum line, as in version 1). Malformed is a mismatch.
fn split_manifest_sum(bytes: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Option<bool>) {
    let Some(rest) = bytes.strip_prefix(SUM_PREFIX) else {
        return (bytes.into(), None);
    };
    let hex = rest
        .get(..16)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    let body = rest.get(16..).and_then(|r| r.strip_prefix(b"\",\n"));
    match (hex, body) {
        (Some(hex), Some(body)) => {
            let mut plain = b"{\n".to_vec();
            plain.extend_from_slice(body);
            let matches = xxhash_rust::xxh3::xxh3_64(&plain) == hex;
            (plain.into(), Some(matches))
        }
        _ => (bytes.into(), Some(false)),
    }
}

impl PartInfo {
    /// The entry of part `file` (relative to `dir`, already written): a file's length and
    /// checksum, or a directory's total length.
    pub fn of(
        dir: &Path,
        file: &str,
        meta: BTreeMap<String, serde_json::Value>,
    ) -> Result<PartInfo> {
        let path = dir.join(file);
        let info = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let (bytes, xxh3) = if info.is_dir() {
            (dir_bytes(&path), None)
        } else {
            let sum = FileSum::of(&path)?;
            (sum.bytes, Some(format!("{:016x}", sum.xxh3)))
        };
        Ok(PartInfo {
            file: file.to_string(),
            bytes,
            xxh3,
            meta,
        })
    }
}

/// The recorded sum of a file part, if it has one; a malformed one is a damaged manifest.
fn part_sum(part: &PartInfo, manifest: &Path) -> Result<Option<FileSum>> {
    let Some(hex) = &part.xxh3 else {
        return Ok(None);
    };
    let xxh3 = u64::from_str_radix(hex, 16).map_err(|_| Error::Corrupt {
        path: manifest.to_path_buf(),
        message: format!("part {} has a malformed checksum {hex:?}", part.file),
    })?;
    Ok(Some(FileSum {
        bytes: part.bytes,
        xxh3,
    }))
}
