//! corpus: here is a folder or file of documents, queries and judgments; give them to me checked.
//!
//! Reads the formats IR people have on disk:
//! - a **BEIR folder**: `corpus.jsonl` (`{"_id", "title", "text"}`), `queries.jsonl`
//!   (`{"_id", "text"}`) and `qrels/<split>.tsv` (header `query-id corpus-id score`);
//! - a **TSV collection** (MS MARCO style): `id<TAB>text` or `id<TAB>title<TAB>text`, and
//!   queries as `id<TAB>text`;
//! - **TREC qrels**: `qid iteration docid relevance`, whitespace separated;
//! - **Pyserini JSONL**: `{"id", "contents"}` (read as `_id` and `text`).
//!
//! Any of these files may be gzip-compressed (a name ending in `.gz`: `corpus.jsonl.gz`,
//! `collection.tsv.gz`); a BEIR folder's `corpus.jsonl.gz` and `queries.jsonl.gz` are found
//! when the uncompressed files are absent.
//!
//! Files are streamed line by line, so memory holds the parsed records but never a whole raw
//! file. Every error names the file and the 1-based line and says what is wrong. Empty
//! documents are valid documents: they are kept and counted ([`Corpus::empty_docs`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One document of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    /// Empty when the collection has no titles.
    pub title: String,
    pub text: String,
}

impl Document {
    /// Whether the document has neither title nor text (after trimming whitespace).
    pub fn is_empty(&self) -> bool {
        self.title.trim().is_empty() && self.text.trim().is_empty()
    }
}

/// One query of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// A document collection with an id -> position map.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub docs: Vec<Document>,
    positions: HashMap<String, u32>,
    /// Source line of each document, to point at the first copy of a duplicate id.
    lines: Vec<u64>,
    /// How many documents have no title and no text.
    pub empty_docs: usize,
    /// The file the documents were read from.
    pub source: PathBuf,
}

impl Corpus {
    /// Builds a corpus from documents already in memory; fails on a duplicate id.
    pub fn from_docs(docs: Vec<Document>) -> Result<Corpus> {
        let mut corpus = Corpus::default();
        for (i, doc) in docs.into_iter().enumerate() {
            corpus.push(doc, Path::new("<memory>"), i as u64 + 1)?;
        }
        Ok(corpus)
    }

    fn push(&mut self, doc: Document, path: &Path, line: u64) -> Result<()> {
        let pos = self.docs.len() as u32;
        if let Some(&first) = self.positions.get(&doc.id) {
            return Err(Error::DuplicateId {
                path: path.to_path_buf(),
                line,
                id: doc.id,
                first_line: self.lines.get(first as usize).copied().unwrap_or(0),
            });
        }
        if doc.is_empty() {
            self.empty_docs += 1;
        }
        self.positions.insert(doc.id.clone(), pos);
        self.lines.push(line);
        self.docs.push(doc);
        Ok(())
    }

    /// The position of a document id, if the corpus has it. O(1).
    pub fn position(&self, id: &str) -> Option<u32> {
        self.positions.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

/// Relevance judgments: query id -> document id -> grade (> 0 is relevant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qrels {
    pub judgments: BTreeMap<String, BTreeMap<String, i32>>,
    /// Lines skipped because they named a document absent from the corpus.
    pub unknown_docs: usize,
}

impl Qrels {
    /// Number of (query, document) pairs with grade > 0.
    pub fn positives(&self) -> usize {
        self.judgments
            .values()
            .map(|docs| docs.values().filter(|&&g| g > 0).count())
            .sum()
    }

    /// Queries with at least one judgment.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.judgments.keys().map(String::as_str)
    }
}

/// A BEIR-layout collection: corpus, queries and every qrels split found under `qrels/`.
#[derive(Debug, Clone)]
pub struct Collection {
    pub dir: PathBuf,
    pub corpus: Corpus,
    pub queries: Vec<Query>,
    /// Split name (file stem under `qrels/`) -> judgments.
    pub qrels: BTreeMap<String, Qrels>,
}

impl Collection {
    /// Reads a BEIR folder. `queries.jsonl` and `qrels/` are optional (a corpus alone is a valid
    /// collection); with `strict`, a judgment naming an unknown document is an error instead of
    /// a counted warning.
    pub fn open(dir: impl AsRef<Path>, strict: bool) -> Result<Collection> {
        let dir = dir.as_ref();
        let corpus = read_corpus(dir)?;
        let queries_path = folder_file(dir, "queries");
        let queries = if queries_path.exists() {
            read_queries(&queries_path)?
        } else {
            Vec::new()
        };
        let mut qrels = BTreeMap::new();
        let qrels_dir = dir.join("qrels");
        if qrels_dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&qrels_dir)
                .map_err(|e| Error::io(&qrels_dir, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "tsv" || x == "txt"))
                .collect();
            files.sort();
            for file in files {
                let split = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                qrels.insert(split, read_qrels(&file, Some(&corpus), strict)?);
            }
        }
        Ok(Collection {
            dir: dir.to_path_buf(),
            corpus,
            queries,
            qrels,
        })
    }

    /// The judgments of one split, or an error listing the splits that exist.
    pub fn split(&self, name: &str) -> Result<&Qrels> {
        self.qrels.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.qrels.keys().map(String::as_str).collect();
            Error::UnknownName {
                what: "qrels split",
                got: name.to_string(),
                expected: format!(
                    "one {} holds ({})",
                    self.dir.display(),
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            }
        })
    }
}

/// Streams the lines of a file as `(line_number, &str)`, failing on non-UTF-8 bytes with the
/// line and byte column. Trailing `\n` / `\r\n` are removed.
pub struct Lines {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    buf: Vec<u8>,
    line: u64,
}

impl Lines {
    pub fn open(path: impl AsRef<Path>) -> Result<Lines> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // A damaged stream surfaces as a read error naming the file.
        let source: Box<dyn Read + Send> = if path.extension().is_some_and(|x| x == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        Ok(Lines {
            path,
            reader: BufReader::with_capacity(1 << 16, source),
            buf: Vec::new(),
            line: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut bytes = &self.buf[..];
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        // Editors on Windows start UTF-8 files with a byte-order mark; it is not content.
        if self.line == 1
            && let Some(rest) = bytes.strip_prefix("\u{feff}".as_bytes())
        {
            bytes = rest;
        }
        let text = std::str::from_utf8(bytes).map_err(|e| Error::NonUtf8 {
            path: self.path.clone(),
            line: self.line,
            column: e.valid_up_to() + 1,
        })?;
        Ok(Some(Line {
            number: self.line,
            text,
            path: &self.path,
        }))
    }
}

/// One line of a file, able to build an error that points at it.
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    pub text: &'a str,
    pub path: &'a Path,
}

impl Line<'_> {
    /// A parse error naming this file and line.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Parse {
            path: self.path.to_path_buf(),
            line: self.number,
            message: message.into(),
        }
    }
}

/// A JSON id may be a string or a number; both become strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonId {
    Text(String),
    Number(serde_json::Number),
}

impl JsonId {
    fn into_string(self) -> String {
        match self {
            JsonId::Text(s) => s,
            JsonId::Number(n) => n.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct JsonRecord {
    /// BEIR's `_id`, or Pyserini's `id`.
    #[serde(rename = "_id", alias = "id")]
    id: Option<JsonId>,
    #[serde(default)]
    title: Option<String>,
    /// BEIR's `text`, or Pyserini's `contents`.
    #[serde(alias = "contents")]
    text: Option<String>,
}

/// Parses one JSONL record, requiring `_id` and `text`.
fn parse_json_record(line: &Line) -> Result<(String, String, String)> {
    let record: JsonRecord =
        serde_json::from_str(line.text).map_err(|e| line.error(format!("malformed JSON: {e}")))?;
    let id = record
        .id
        .ok_or_else(|| line.error("missing \"_id\" (or \"id\") field"))?
        .into_string();
    if id.is_empty() {
        return Err(line.error("empty \"_id\""));
    }
    let body = record
        .text
        .ok_or_else(|| line.error("missing \"text\" (or \"contents\") field"))?;
    Ok((id, record.title.unwrap_or_default(), body))
}

/// Which file holds the records: a BEIR folder's `NAME.jsonl` (or `NAME.jsonl.gz` when only
/// that exists), or the file itself.
fn folder_file(path: &Path, name: &str) -> PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    let plain = path.join(format!("{name}.jsonl"));
    let gz = path.join(format!("{name}.jsonl.gz"));
    if !plain.exists() && gz.exists() {
        gz
    } else {
        plain
    }
}

/// Whether a file holds JSON lines (by its name, a `.gz` ending aside).
fn is_jsonl(file: &Path) -> bool {
    let name = file.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".jsonl") || name.ends_with(".json")
}

/// Reads a corpus: a BEIR folder, a `.jsonl` file or a TSV file (`id<TAB>text` or
/// `id<TAB>title<TAB>text`; a header line naming the columns is skipped).
///
/// Cost: one pass over the file; memory is the documents themselves.
pub fn read_corpus(path: impl AsRef<Path>) -> Result<Corpus> {
    let mut reader = CorpusReader::open(path)?;
    let mut corpus = Corpus {
        source: reader.source().to_path_buf(),
        ..Corpus::default()
    };
    while let Some((doc, line)) = reader.next_doc()? {
        corpus.push(doc, reader.source(), line)?;
    }
    warn_empty(&corpus.source, corpus.empty_docs);
    Ok(corpus)
}

fn warn_empty(source: &Path, empty_docs: usize) {
    if empty_docs > 0 {
        tracing::warn!(
            "{}: {empty_docs} empty document(s) kept (no title and no text)",
            source.display()
        );
    }
}

/// Streams the documents of a corpus file one at a time, in the formats [`read_corpus`]
/// reads, without holding them: for corpora larger than memory. Checks each record's syntax
/// and id as it goes; duplicate ids across records are [`scan_corpus`]'s to find.
pub struct CorpusReader {
    lines: Lines,
    jsonl: bool,
}

impl CorpusReader {
    /// Opens a BEIR folder's `corpus.jsonl`, or a `.jsonl` or TSV file.
    pub fn open(path: impl AsRef<Path>) -> Result<CorpusReader> {
        let file = folder_file(path.as_ref(), "corpus");
        let jsonl = is_jsonl(&file);
        Ok(CorpusReader {
            lines: Lines::open(&file)?,
            jsonl,
        })
    }

    /// The file the documents are read from.
    pub fn source(&self) -> &Path {
        self.lines.path()
    }

    /// The next document and its 1-based line, or `None` at the end of the file.
    pub fn next_doc(&mut self) -> Result<Option<(Document, u64)>> {
        let jsonl = self.jsonl;
        while let Some(line) = self.lines.next_line()? {
            let (line_no, text) = (line.number, line.text);
            if text.trim().is_empty() {
                continue;
            }
            let doc = if jsonl {
                let (id, title, body) = parse_json_record(&line)?;
                Document {
                    id,
                    title,
                    text: body,
                }
            } else {
                let cols: Vec<&str> = text.split('\t').collect();
                if line_no == 1 && is_tsv_header(&cols) {
                    continue;
                }
                match cols.as_slice() {
                    [id, body] => Document {
                        id: id.to_string(),
                        title: String::new(),
                        text: body.to_string(),
                    },
                    [id, title, body] => Document {
                        id: id.to_string(),
                        title: title.to_string(),
                        text: body.to_string(),
                    },
                    _ => {
                        return Err(line.error(format!(
                            "expected 2 or 3 tab-separated columns (id, [title,] text), found {}",
                            cols.len()
                        )));
                    }
                }
            };
            if doc.id.trim().is_empty() {
                return Err(line.error("empty document id"));
            }
            return Ok(Some((doc, line_no)));
        }
        Ok(None)
    }

    /// Reads up to `n` documents into `batch` (cleared first); an empty batch means the end.
    pub fn next_batch(&mut self, n: usize, batch: &mut Vec<Document>) -> Result<()> {
        batch.clear();
        while batch.len() < n {
            match self.next_doc()? {
                Some((doc, _)) => batch.push(doc),
                None => break,
            }
        }
        Ok(())
    }
}

/// What one checking pass over a corpus file found ([`scan_corpus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusSummary {
    pub source: PathBuf,
    pub docs: usize,
    pub empty_docs: usize,
    /// [`fingerprint`] of the documents.
    pub fingerprint: String,
    /// Bytes of titles and texts, plus one per document.
    pub text_bytes: usize,
}

impl CorpusSummary {
    /// The summary of a corpus already in memory.
    pub fn of(corpus: &Corpus) -> CorpusSummary {
        CorpusSummary {
            source: corpus.source.clone(),
            docs: corpus.len(),
            empty_docs: corpus.empty_docs,
            fingerprint: fingerprint(corpus),
            text_bytes: corpus
                .docs
                .iter()
                .map(|d| d.title.len() + d.text.len() + 1)
                .sum(),
        }
    }
}

/// Checks a whole corpus file as [`read_corpus`] does (syntax, ids, duplicates, with the same
/// errors) without keeping its documents, and summarises it. Cost: one pass over the file;
/// memory is the set of ids.
pub fn scan_corpus(path: impl AsRef<Path>) -> Result<CorpusSummary> {
    let mut reader = CorpusReader::open(path)?;
    let source = reader.source().to_path_buf();
    let mut lines: HashMap<Box<str>, u64> = HashMap::new();
    let mut hasher = Fingerprint::default();
    let (mut docs, mut empty_docs, mut text_bytes) = (0, 0, 0);
    while let Some((doc, line)) = reader.next_doc()? {
        if let Some(&first_line) = lines.get(doc.id.as_str()) {
            return Err(Error::DuplicateId {
                path: source,
                line,
                id: doc.id,
                first_line,
            });
        }
        hasher.add(&doc);
        docs += 1;
        empty_docs += doc.is_empty() as usize;
        text_bytes += doc.title.len() + doc.text.len() + 1;
        lines.insert(doc.id.into_boxed_str(), line);
    }
    warn_empty(&source, empty_docs);
    Ok(CorpusSummary {
        source,
        docs,
        empty_docs,
        fingerprint: hasher.finish(),
        text_bytes,
    })
}

fn is_tsv_header(cols: &[&str]) -> bool {
    let first = cols.first().map(|c| c.trim().to_ascii_lowercase());
    matches!(
        first.as_deref(),
        Some("id" | "_id" | "docid" | "doc_id" | "pid" | "qid" | "query_id" | "query-id")
    ) && cols
        .last()
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("text"))
}

/// Reads queries: `queries.jsonl` (`{"_id", "text"}`; a BEIR folder is accepted too) or TSV
/// `id<TAB>text`. Duplicate ids are an error.
pub fn read_queries(path: impl AsRef<Path>) -> Result<Vec<Query>> {
    let path = path.as_ref();
    let file = folder_file(path, "queries");
    let jsonl = is_jsonl(&file);
    let mut lines = Lines::open(&file)?;
    let mut queries = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    while let Some(line) = lines.next_line()? {
        let (line_no, text) = (line.number, line.text);
        if text.trim().is_empty() {
            continue;
        }
        let (id, body) = if jsonl {
            let (id, _title, body) = parse_json_record(&line)?;
            (id, body)
        } else {
            let cols: Vec<&str> = text.split('\t').collect();
            if line_no == 1 && is_tsv_header(&cols) {
                continue;
            }
            match cols.as_slice() {
                [id, body] => (id.to_string(), body.to_string()),
                _ => {
                    return Err(line.error(format!(
                        "expected 2 tab-separated columns (id, text), found {}",
                        cols.len()
                    )));
                }
            }
        };
        if let Some(&first_line) = seen.get(&id) {
            return Err(Error::DuplicateId {
                path: file.clone(),
                line: line_no,
                id,
                first_line,
            });
        }
        seen.insert(id.clone(), line_no);
        queries.push(Query { id, text: body });
    }
    Ok(queries)
}

/// Reads relevance judgments in BEIR TSV (`query-id<TAB>corpus-id<TAB>score`, header optional)
/// or TREC format (`qid iter docid rel`), detected per line by the number of columns.
///
/// With a `corpus`, a line naming an unknown document is skipped and counted
/// ([`Qrels::unknown_docs`], with a warning), or is an error when `strict`. A repeated
/// (query, document) pair keeps its last grade.
pub fn read_qrels(path: impl AsRef<Path>, corpus: Option<&Corpus>, strict: bool) -> Result<Qrels> {
    let path = path.as_ref();
    let mut lines = Lines::open(path)?;
    let mut qrels = Qrels::default();
    while let Some(line) = lines.next_line()? {
        let (line_no, text) = (line.number, line.text);
        if text.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = if text.contains('\t') {
            text.split('\t').map(str::trim).collect()
        } else {
            text.split_whitespace().collect()
        };
        let (qid, did, grade) = match cols.as_slice() {
            [q, d, g] => (*q, *d, *g),
            [q, _iteration, d, g] => (*q, *d, *g),
            _ => {
                return Err(line.error(format!(
                    "expected 3 columns (query-id, corpus-id, score) or 4 (TREC: qid iter docid rel), found {}",
                    cols.len()
                )));
            }
        };
        let grade: i32 = match grade.parse::<f64>() {
            Ok(g) if g.is_finite() => g.round() as i32,
            _ if line_no == 1 => continue, // header line
            _ => {
                return Err(line.error(format!("relevance grade {grade:?} is not a number")));
            }
        };
        if let Some(corpus) = corpus
            && corpus.position(did).is_none()
        {
            if strict {
                return Err(Error::UnknownDocument {
                    path: path.to_path_buf(),
                    line: line_no,
                    id: did.to_string(),
                });
            }
            qrels.unknown_docs += 1;
            continue;
        }
        qrels
            .judgments
            .entry(qid.to_string())
            .or_default()
            .insert(did.to_string(), grade);
    }
    if qrels.unknown_docs > 0 {
        tracing::warn!(
            "{}: skipped {} judgment(s) naming documents absent from the corpus",
            path.display(),
            qrels.unknown_docs
        );
    }
    Ok(qrels)
}

/// A stable fingerprint of a corpus's content (ids, titles, texts, in order): 16 hex digits
/// of XXH3-64. Two corpora with equal fingerprints index to the same bytes.
pub fn fingerprint(corpus: &Corpus) -> String {
    let mut hasher = Fingerprint::default();
    corpus.docs.iter().for_each(|d| hasher.add(d));
    hasher.finish()
}

/// [`fingerprint`] computed one document at a time.
#[derive(Default)]
pub struct Fingerprint(xxhash_rust::xxh3::Xxh3);

impl Fingerprint {
    pub fn add(&mut self, doc: &Document) {
        for field in [&doc.id, &doc.title, &doc.text] {
            self.0.update(&(field.len() as u64).to_le_bytes());
            self.0.update(field.as_bytes());
        }
    }

    pub fn finish(&self) -> String {
        format!("{:016x}", self.0.digest())
    }
}
