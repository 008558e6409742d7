//! index: here is an index directory, which parts does it have and are they intact?
//!
//! An index directory holds `manifest.json` (format version, corpus fingerprint, tokenizer,
//! indexed fields, and one entry per part) beside the parts themselves (`tokenizer.json`,
//! `docs.jsonl`, `stats.json`, `fmindex.bin`, ...). The manifest is written last, so a
//! directory whose build was interrupted is not mistaken for an index. [`build`] makes an index
//! from a corpus; [`Index`] opens one for queries.

mod build;
mod files;

pub use build::{
    BuildConfig, DOCS_FILE, DocEntry, FMINDEX_FILE, Index, IndexStats, STATS_FILE, TOKENIZER_FILE,
    TokenizerSource, build, document_tokens,
};
pub use files::{ArrayFile, ArrayReader, ArrayWriter, write_atomic, write_atomic_with};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the index directory layout (`manifest.json`). Bump on incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// Oldest index directory layout this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Name of the manifest inside an index directory.
pub const MANIFEST: &str = "manifest.json";

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
    pub file: String,
    pub bytes: u64,
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
}

/// An index directory on disk with its manifest.
#[derive(Debug, Clone)]
pub struct IndexDir {
    path: PathBuf,
    pub manifest: Manifest,
}

impl IndexDir {
    /// Prepares `path` for a new index: creates it, or accepts an existing empty directory or
    /// an existing genret index (whose parts will be replaced). Refuses a non-empty directory
    /// that is not a genret index, so a typo never clobbers user files.
    pub fn prepare(path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        if path.exists() {
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
        } else {
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        }
        Ok(path.to_path_buf())
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
    /// that every part it lists exists.
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
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| Error::Corrupt {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let dir = IndexDir { path, manifest };
        for (name, part) in &dir.manifest.parts {
            if !dir.path.join(&part.file).exists() {
                return Err(Error::MissingPart {
                    dir: dir.path.clone(),
                    part: name.clone(),
                    file: part.file.clone(),
                    hint: "the manifest lists it but the file is gone; rebuild with `genret index`"
                        .into(),
                });
            }
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

    /// Path of a part the manifest lists, or a [`Error::MissingPart`] whose message says how
    /// to build it.
    pub fn part(&self, name: &str, hint: &str) -> Result<PathBuf> {
        match self.manifest.parts.get(name) {
            Some(part) => Ok(self.path.join(&part.file)),
            None => Err(Error::MissingPart {
                dir: self.path.clone(),
                part: name.to_string(),
                file: "-".into(),
                hint: hint.to_string(),
            }),
        }
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

    /// Records a part (its file must already be written) and rewrites the manifest.
    pub fn add_part(
        &mut self,
        name: &str,
        file: &str,
        meta: BTreeMap<String, serde_json::Value>,
    ) -> Result<()> {
        let bytes = std::fs::metadata(self.path.join(file))
            .map_err(|e| Error::io(self.path.join(file), e))?
            .len();
        self.manifest.parts.insert(
            name.to_string(),
            PartInfo {
                file: file.to_string(),
                bytes,
                meta,
            },
        );
        self.write_manifest()
    }

    /// Total bytes of all parts.
    pub fn bytes(&self) -> u64 {
        self.manifest.parts.values().map(|p| p.bytes).sum()
    }

    fn write_manifest(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        write_atomic(&self.path.join(MANIFEST), &json)
    }
}
