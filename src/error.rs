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
    /// An operating-system error on a named file. (The OS error is part of the message, not
    /// a `source`, so that printing the chain does not say it twice.)
    #[error("{path}: {err}{}", io_advice(err))]
    Io { path: PathBuf, err: std::io::Error },

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

    /// A file genret wrote is damaged: bad magic, truncated, checksum mismatch, inconsistent
    /// sizes. The advice depends on what the file belongs to (index, model or checkpoint).
    #[error("{path}: damaged file: {message}; {}", corrupt_advice(path))]
    Corrupt { path: PathBuf, message: String },

    /// Another genret process is writing the directory.
    #[error(
        "{path}: another genret process is writing this directory ({holder}); wait for it to finish, or stop it"
    )]
    Busy { path: PathBuf, holder: String },

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

    /// A name genret does not know: a method, mode, metric, docid scheme or qrels split.
    #[error("unknown {what} {got:?}: use {expected}")]
    UnknownName {
        what: &'static str,
        got: String,
        expected: String,
    },

    /// A number outside the range it must lie in.
    #[error("{name} must be {expected} (got {got})")]
    OutOfRange {
        name: &'static str,
        expected: String,
        got: String,
    },

    /// A model or file named by the user is not there.
    #[error("no {what} at {name:?}: {hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: String,
    },

    /// Two things made for each other do not fit: a model and the index or encoder it is
    /// used with, a checkpoint and the index it was made for.
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },

    /// A query that cannot be answered as given (empty, control characters).
    #[error("{0}")]
    BadQuery(String),

    /// Any other input that is inconsistent or cannot be used; the message says why.
    #[error("{0}")]
    InvalidInput(String),

    /// genret itself failed, in a library it builds on (libsais, tantivy) or a thread it
    /// started: not the user's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    /// A document number `doc` at or past `docs`, the documents there are.
    pub fn no_such_doc(doc: u32, docs: usize) -> Self {
        Error::OutOfRange {
            name: "document number",
            expected: format!("below {docs}, the index's documents"),
            got: doc.to_string(),
        }
    }

    /// Whether the error is the user's to fix (bad input, bad arguments, damaged files) rather
    /// than an internal failure. The CLI maps this to its exit code.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Tokenizer(_) | Error::Model(_) | Error::Internal(_) => false,
            // The machine, not the input: a full disk, a file too large for the system.
            Error::Io { err, .. } => !is_out_of_space(err),
            _ => true,
        }
    }
}

fn is_out_of_space(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(err.kind(), StorageFull | QuotaExceeded | FileTooLarge)
}

fn io_advice(err: &std::io::Error) -> &'static str {
    if is_out_of_space(err) {
        "; free some space and run the command again (what was there before is untouched)"
    } else {
        ""
    }
}

/// What to do about a damaged file, from where it lives: a checkpoint is only resumed from, a
/// model can be retrained, anything else belongs to the index.
fn corrupt_advice(path: &std::path::Path) -> &'static str {
    let within = |name: &str| path.components().any(|c| c.as_os_str() == name);
    let hub = path
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with("models--"));
    if hub {
        "fetch the model again (a Hugging Face cache entry)"
    } else if within("checkpoint") || within("checkpoint.tmp") {
        "train without --resume to start afresh (the checkpoint is replaced)"
    } else if within("model") {
        "train the model again with `genret train`"
    } else if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".safetensors") || n == "config.json")
    {
        "replace it with a complete copy of the model"
    } else {
        "rebuild the index with `genret index`"
    }
}

/// A candle failure as genret's error (model code maps every candle call with it).
pub(crate) fn cerr(e: candle_core::Error) -> Error {
    Error::Model(e.to_string())
}
