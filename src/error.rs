//! The one error type of the library.
//!
//! Every variant that concerns user input names the file (and line, where there is one) and
//! says what to do about it. The binary wraps these in `anyhow` for context; the library never
//! panics on bad input.

use std::path::PathBuf;

/// Result alias used throughout genret.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in genret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line of an input file could not be understood.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// An input line is not valid UTF-8.
    #[error(
        "{path}:{line}: invalid UTF-8 at byte {column} of the line; re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
    )]
    NonUtf8 {
        path: PathBuf,
        line: u64,
        column: usize,
    },

    /// The same id appears twice in a corpus or query file.
    #[error(
        "{path}:{line}: duplicate id {id:?} (first seen on line {first_line}); ids must be unique"
    )]
    DuplicateId {
        path: PathBuf,
        line: u64,
        id: String,
        first_line: u64,
    },

    /// A relevance judgment names a document that the corpus does not contain.
    #[error(
        "{path}:{line}: unknown document id {id:?}; it is not in the corpus (drop --strict to skip such lines with a warning)"
    )]
    UnknownDocument {
        path: PathBuf,
        line: u64,
        id: String,
    },

    /// A document id given by the user is not in the index.
    #[error(
        "unknown document id {id:?}: the index holds {docs} documents (their ids are in docs.jsonl)"
    )]
    UnknownDocId { id: String, docs: usize },

    /// A file in an index is damaged: bad magic, truncated, checksum mismatch, inconsistent sizes.
    #[error("{path}: corrupted index file: {message}; rebuild the index with `genret index`")]
    Corrupt { path: PathBuf, message: String },

    /// A file in an index was written by an incompatible version of genret.
    #[error(
        "{path}: format version {found} is not supported (this genret reads versions {oldest} to {expected}); rebuild the index with `genret index`"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
        oldest: u32,
    },

    /// An index directory lacks a part that the operation needs.
    #[error("{dir}: the index has no {part} (file {file}); {hint}")]
    MissingPart {
        dir: PathBuf,
        part: String,
        file: String,
        hint: String,
    },

    /// The model could not be built, loaded or run (a tensor is missing or mis-shaped, a
    /// config is unsupported, or candle failed).
    #[error("model: {0}")]
    Model(String),

    /// The tokenizers library reported an error.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An argument is out of range or inconsistent with the data.
    #[error("{0}")]
    InvalidInput(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is the user's to fix (bad input, bad arguments, damaged files) rather
    /// than an internal failure. The CLI maps this to its exit code.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Tokenizer(_) | Error::Model(_))
    }
}

/// A candle failure as genret's error (model code maps every candle call with it).
pub(crate) fn cerr(e: candle_core::Error) -> Error {
    Error::Model(e.to_string())
}
