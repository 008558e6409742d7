//! Building an index directory from a corpus, and opening it again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::docs::{self, DOCS_FILE, DocEntry, DocStore, LINES_FILE, LINES_PART};
use super::tokens::{TOKENS_FILE, TOKENS_PART, TokenBuffer, TokenStore};
use super::{
    CorpusInfo, FORMAT_VERSION, FieldsInfo, IndexDir, Manifest, PLAIN_FORMAT_VERSION, PartInfo,
    TokenizerInfo,
};
use crate::corpus::{Corpus, CorpusReader, CorpusSummary, Document, Fingerprint, scan_corpus};
use crate::docid::{DOCIDS_FILE, DocIds, DocidInput, Scheme, SemanticOptions};
use crate::error::{Error, Result};
use crate::fmindex::{BuildOptions, FmIndex, Shards, TokenDocs};
use crate::progress;
use crate::stem::{self, WORDS_FILE, WORDS_PART, WordForms};
use crate::storage::{DirLock, Mapped, replace_dir, sibling, write_atomic};
use crate::tokenize::{GenretTokenizer, TrainConfig};

/// File names of the parts written by [`build`].
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const STATS_FILE: &str = "stats.json";
pub const FMINDEX_FILE: &str = "fmindex.bin";

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// Train one on the corpus.
    Train(TrainConfig),
    /// Use an existing `tokenizer.json` as is (genret's special tokens are appended if absent).
    File(PathBuf),
}

/// How to build an index.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub tokenizer: TokenizerSource,
    /// Index each document's title (between `<title>` markers) before its text.
    pub index_titles: bool,
    pub fm: BuildOptions,
    /// Identifier scheme for DSI-style decoding.
    pub docids: Scheme,
    pub semantic: SemanticOptions,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            tokenizer: TokenizerSource::Train(TrainConfig::default()),
            index_titles: true,
            fm: BuildOptions::default(),
            docids: Scheme::default(),
            semantic: SemanticOptions::default(),
        }
    }
}

/// `stats.json`: what the build produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexStats {
    pub docs: u64,
    pub empty_docs: u64,
    pub tokens: u64,
    pub doc_tokens_min: u64,
    pub doc_tokens_mean: f64,
    pub doc_tokens_median: u64,
    pub doc_tokens_p95: u64,
    pub doc_tokens_max: u64,
    pub vocab_size: u64,
    /// Distinct token ids that occur in the corpus.
    pub distinct_tokens: u64,
    pub fmindex_bytes: u64,
    pub fmindex_bits_per_token: f64,
    pub build_seconds: f64,
    /// Wall-clock seconds of each build phase, by phase name (absent in indexes built before it).
    #[serde(default)]
    pub phase_seconds: BTreeMap<String, f64>,
}

/// The token sequence of one document as genret indexes and trains on it:
/// `<title> title </title> text` (title part omitted when empty or not indexed).
pub fn document_tokens(
    tokenizer: &GenretTokenizer,
    doc: &Document,
    index_titles: bool,
) -> Result<Vec<u32>> {
    let mut tokens = Vec::new();
    if index_titles && !doc.title.trim().is_empty() {
        let sp = tokenizer.specials();
        tokens.push(sp.title_start);
        tokens.extend(tokenizer.encode(&doc.title)?);
        tokens.push(sp.title_end);
    }
    tokens.extend(tokenizer.encode(&doc.text)?);
    Ok(tokens)
}

fn layout(index_titles: bool) -> FieldsInfo {
    if index_titles {
        FieldsInfo {
            indexed: vec!["title".into(), "text".into()],
            layout: "<title> {title} </title> {text}".into(),
        }
    } else {
        FieldsInfo {
            indexed: vec!["text".into()],
            layout: "{text}".into(),
        }
    }
}

/// Where a build reads its documents: a corpus in memory, or a corpus file (as
/// [`crate::corpus::read_corpus`] reads it) streamed in batches, so that its documents are
/// never all in memory. Both give the same index.
#[derive(Debug, Clone, Copy)]
pub enum CorpusSource<'a> {
    Memory(&'a Corpus),
    File(&'a Path),
}

/// Documents a streamed build reads, tokenizes and writes at a time.
const BATCH_DOCS: usize = 16_384;

impl CorpusSource<'_> {
    /// The corpus checked whole (a file: one pass, [`scan_corpus`]) and summarised.
    fn summary(&self) -> Result<CorpusSummary> {
        match self {
            CorpusSource::Memory(corpus) => Ok(CorpusSummary::of(corpus)),
            CorpusSource::File(path) => scan_corpus(path),
        }
    }

    /// Calls `f` with consecutive batches of documents and the number of each batch's first.
    fn for_each_batch(&self, mut f: impl FnMut(usize, &[Document]) -> Result<()>) -> Result<()> {
        match self {
            CorpusSource::Memory(corpus) => {
                for (i, batch) in corpus.docs.chunks(BATCH_DOCS).enumerate() {
                    f(i * BATCH_DOCS, batch)?;
                }
            }
            CorpusSource::File(path) => {
                let mut reader = CorpusReader::open(path)?;
                let (mut first, mut batch) = (0, Vec::with_capacity(BATCH_DOCS));
                loop {
                    reader.next_batch(BATCH_DOCS, &mut batch)?;
                    if batch.is_empty() {
                        break;
                    }
                    f(first, &batch)?;
                    first += batch.len();
                }
            }
        }
        Ok(())
    }
}

/// Builds a complete index of `corpus` into `out`: tokenizer, `docs.jsonl`, the FM-index
/// and `stats.json`, then the manifest. Deterministic: the same corpus and config give the
/// same files (`build_seconds` in the stats aside).
///
/// The index is built in a hidden sibling directory and swapped in whole once complete, so
/// an existing index at `out` (with its trained models) stays usable until then, and a failed
/// or killed build leaves it as it was. A finished build replaces the whole directory: models
/// trained on the old index go with it. Takes `out`'s writer lock for the duration.
pub fn build(corpus: &Corpus, out: &Path, config: &BuildConfig) -> Result<Index> {
    build_from(CorpusSource::Memory(corpus), out, config)
}

/// [`build`] of a corpus read from `source`. From a file, the documents are streamed: the
/// build's memory is the FM-index's (about 9 bytes per token for the largest shard) or the
/// semantic docids' vectors (512 bytes per document), whichever is larger, never the corpus.
pub fn build_from(source: CorpusSource<'_>, out: &Path, config: &BuildConfig) -> Result<Index> {
    let started = Instant::now();
    let mut phases = Phases::default();
    let pb = progress::spinner("checking the corpus");
    let summary = source.summary()?;
    pb.finish_and_clear();
    phases.done("scan");
    if summary.docs == 0 {
        return Err(Error::InvalidInput(format!(
            "{}: the corpus has no documents; nothing to index",
            summary.source.display()
        )));
    }
    IndexDir::check_target(out)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let _lock = DirLock::acquire(out, "index")?;
    // What a killed `--add` left behind: the index it was growing is about to be replaced.
    let _ = std::fs::remove_dir_all(sibling(out, "add"));
    swap_in(out, "build", |building| {
        build_into(source, &summary, building, config, started, phases)
    })
}

/// Makes the index at `out` anew in its hidden sibling `.NAME.genret-KIND` (a leftover from a
/// killed run removed first) with `fill`, which returns it opened from there, and swaps it in
/// whole ([`replace_dir`]); on failure `out` is as it was and the sibling is gone. The caller
/// holds the index's writer lock.
pub(super) fn swap_in(
    out: &Path,
    kind: &str,
    fill: impl FnOnce(&Path) -> Result<Index>,
) -> Result<Index> {
    let building = sibling(out, kind);
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| Error::io(&building, e))?;
    }
    std::fs::create_dir(&building).map_err(|e| Error::io(&building, e))?;
    let result = fill(&building).and_then(|mut index| {
        replace_dir(out, &building)?;
        index.dir.path = out.to_path_buf();
        Ok(index)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    result
}

/// [`build`]'s work, into the fresh directory `out`.
fn build_into(
    source: CorpusSource<'_>,
    summary: &CorpusSummary,
    out: &Path,
    config: &BuildConfig,
    started: Instant,
    mut phases: Phases,
) -> Result<Index> {
    let out = out.to_path_buf();

    let (tokenizer, kind, lowercase) = match &config.tokenizer {
        TokenizerSource::Train(train) => {
            let pb = progress::spinner(&format!(
                "training {:?} tokenizer ({} tokens)",
                train.kind, train.vocab_size
            ));
            let texts = tokenizer_sample(source, summary)?;
            let tok = GenretTokenizer::train(train, texts.into_iter())?;
            pb.finish_and_clear();
            let kind = format!("{:?}", train.kind).to_lowercase();
            (tok, kind, train.lowercase)
        }
        TokenizerSource::File(path) => (
            GenretTokenizer::from_file(path)?,
            "external".to_string(),
            false,
        ),
    };
    tokenizer.save(out.join(TOKENIZER_FILE))?;
    phases.done("tokenizer");

    // Tokenized and written batch by batch: what stays in memory is the token ids (2 bytes
    // each), and titles only for title docids.
    let vocab = tokenizer.vocab_size() as u32;
    let pb = progress::bar(summary.docs as u64, "tokenizing documents");
    let mut docs_out = docs::DocsWriter::create(&out.join(DOCS_FILE), &out.join(LINES_FILE))?;
    let mut buffer = TokenBuffer::new(vocab);
    let mut titles: Vec<Vec<u32>> = Vec::new();
    let mut read = Fingerprint::default();
    source.for_each_batch(|_, batch| {
        batch.iter().for_each(|d| read.add(d));
        let token_lists = batch
            .par_iter()
            .map(|doc| document_tokens(&tokenizer, doc, config.index_titles))
            .collect::<Result<Vec<_>>>()?;
        if config.docids == Scheme::Title {
            titles.extend(
                batch
                    .par_iter()
                    .map(|d| tokenizer.encode(&d.title))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        for entry in entries(batch, &token_lists) {
            docs_out.push(&entry)?;
        }
        token_lists.iter().for_each(|t| buffer.push(t));
        pb.inc(batch.len() as u64);
        Ok(())
    })?;
    // The file is read more than once: what was tokenized must be what was checked.
    if buffer.docs() != summary.docs || read.finish() != summary.fingerprint {
        return Err(Error::InvalidInput(format!(
            "{}: the corpus changed while it was being indexed; index it again",
            summary.source.display(),
        )));
    }
    docs_out.finish()?;
    buffer.write(&out.join(TOKENS_FILE))?;
    drop(buffer);
    pb.finish_and_clear();
    phases.done("tokenize");

    // Every later phase reads the documents back from the files just written.
    let tokens = TokenStore::open(Mapped::open(&out.join(TOKENS_FILE), None)?)?;
    let store = DocStore::open(
        Mapped::open(&out.join(DOCS_FILE), None)?,
        Mapped::open(&out.join(LINES_FILE), None)?,
    )?;

    let pb = progress::spinner("building FM-index");
    // Each shard is saved and used mapped from then on: the build holds one in memory at most.
    let fm = Shards::build_each(&tokens, vocab, config.fm, |k, shard| {
        let file = out.join(shard_file(k));
        shard.save(&file)?;
        drop(shard);
        FmIndex::load(&file)
    })?;
    pb.finish_and_clear();
    phases.done("fmindex");

    let pb = progress::spinner(&format!("assigning {} docids", config.docids.name()));
    let ids = store.ids()?;
    let docids = build_docids(&ids, &titles, &tokenizer, &tokens, config)?;
    drop((ids, titles));
    docids.save(&out.join(DOCIDS_FILE))?;
    pb.finish_and_clear();
    phases.done("docids");

    let pb = progress::spinner("collecting word forms");
    let forms = WordForms::build(
        store.len(),
        |d| store.get(d).map(|e| [e.title.into(), e.text.into()]),
        &tokenizer,
        &fm,
    )?;
    forms.save(&out.join(WORDS_FILE))?;
    pb.finish_and_clear();
    phases.done("words");

    let lens = (0..tokens.docs())
        .map(|d| tokens.len_of(d) as u64)
        .collect();
    let mut stats = IndexStats::of(summary.empty_docs as u64, lens, &fm, vocab, started);
    stats.phase_seconds = phases.seconds;
    write_stats(&out, &stats)?;
    drop((tokens, store));

    let part = |file: &str, meta| PartInfo::of(&out, file, meta);
    let mut parts = BTreeMap::new();
    parts.insert("tokenizer".into(), part(TOKENIZER_FILE, BTreeMap::new())?);
    parts.insert("docs".into(), part(DOCS_FILE, BTreeMap::new())?);
    parts.insert(LINES_PART.into(), part(LINES_FILE, BTreeMap::new())?);
    parts.insert("stats".into(), part(STATS_FILE, BTreeMap::new())?);
    for k in 0..fm.shards().len() {
        parts.insert(shard_part(k), part(&shard_file(k), shard_meta(&fm, k))?);
    }
    parts.insert(TOKENS_PART.into(), part(TOKENS_FILE, BTreeMap::new())?);
    parts.insert(
        "docids".into(),
        part(DOCIDS_FILE, docid_meta(&docids, "tfidf"))?,
    );

    parts.insert(WORDS_PART.into(), part(WORDS_FILE, words_meta())?);

    let manifest = Manifest {
        format_version: if fm.shards().len() > 1 {
            FORMAT_VERSION
        } else {
            PLAIN_FORMAT_VERSION
        },
        genret_version: env!("CARGO_PKG_VERSION").to_string(),
        corpus: CorpusInfo {
            source: summary.source.display().to_string(),
            fingerprint: summary.fingerprint.clone(),
            docs: summary.docs as u64,
            empty_docs: summary.empty_docs as u64,
            tokens: fm.tokens() as u64,
        },
        tokenizer: TokenizerInfo {
            file: TOKENIZER_FILE.into(),
            kind,
            vocab_size: vocab as u64,
            lowercase,
            specials: tokenizer.specials(),
        },
        fields: layout(config.index_titles),
        parts,
        added: Vec::new(),
    };
    let dir = IndexDir::create(&out, manifest)?;
    let docs = open_docs(&dir)?;
    let tokens = open_tokens(&dir)?;
    let docids = OnceLock::from(docids);
    Ok(Index::assemble(
        dir, tokenizer, docs, fm, docids, stats, tokens,
    ))
}

/// The documents of `docs` as the document store holds them, with their token counts.
pub(super) fn entries<'a>(
    docs: &'a [Document],
    token_lists: &'a [Vec<u32>],
) -> impl Iterator<Item = DocEntry> + 'a {
    docs.iter().zip(token_lists).map(|(d, t)| DocEntry {
        id: d.id.clone(),
        title: d.title.clone(),
        text: d.text.clone(),
        tokens: t.len() as u32,
    })
}

/// The manifest facts of FM-index shard `k` of `fm`; with several shards, their number (read
/// from shard 0's entry when opening) and the shard's documents.
pub(super) fn shard_meta(fm: &Shards, k: usize) -> BTreeMap<String, serde_json::Value> {
    let shard = &fm.shards()[k];
    let mut meta = BTreeMap::from([
        ("sample_rate".to_string(), shard.sample_rate().into()),
        (
            "bits_per_token".to_string(),
            serde_json::json!(shard.bits_per_token(true)),
        ),
        (
            "format_version".to_string(),
            crate::fmindex::FORMAT_VERSION.into(),
        ),
    ]);
    if fm.shards().len() > 1 {
        meta.insert("shards".into(), fm.shards().len().into());
        meta.insert("first_doc".into(), fm.first_doc(k).into());
        meta.insert("docs".into(), shard.docs().into());
    }
    meta
}

/// The manifest facts of the word table.
pub(super) fn words_meta() -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("format_version".to_string(), stem::FORMAT_VERSION.into())])
}

/// The manifest's name of FM-index shard `k`: `fmindex`, then `fmindex.1`, `fmindex.2`, ...
/// (an index of one shard is laid out as before shards existed).
pub(super) fn shard_part(k: usize) -> String {
    match k {
        0 => "fmindex".into(),
        k => format!("fmindex.{k}"),
    }
}

/// The file of FM-index shard `k`: `fmindex.bin`, then `fmindex.1.bin`, ...
pub(super) fn shard_file(k: usize) -> String {
    match k {
        0 => FMINDEX_FILE.into(),
        k => format!("fmindex.{k}.bin"),
    }
}

/// Text a tokenizer is trained on at most: a 16k vocabulary's merges are settled long before
/// (see docs/BENCHMARKS.md), and training on all of a large corpus costs minutes and memory.
pub const TOKENIZER_SAMPLE_BYTES: usize = 32 << 20;

/// The documents a tokenizer is trained on: all of them up to [`TOKENIZER_SAMPLE_BYTES`],
/// else every k-th, spread evenly over the corpus (deterministic), as `title\ntext`.
fn tokenizer_sample(source: CorpusSource<'_>, summary: &CorpusSummary) -> Result<Vec<String>> {
    every_kth(
        source,
        summary.text_bytes.div_ceil(TOKENIZER_SAMPLE_BYTES).max(1),
    )
}

/// Documents 0, k, 2k, ... of `source` as `title\ntext`, across its batches.
fn every_kth(source: CorpusSource<'_>, every: usize) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    source.for_each_batch(|first, batch| {
        let skip = (every - first % every) % every;
        texts.extend(
            batch
                .iter()
                .skip(skip)
                .step_by(every)
                .map(|d| format!("{}\n{}", d.title, d.text)),
        );
        Ok(())
    })?;
    Ok(texts)
}

/// Times a build's phases one after another, logged at info level (`-v`) as each ends.
pub(super) struct Phases {
    last: Instant,
    pub(super) seconds: BTreeMap<String, f64>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            last: Instant::now(),
            seconds: BTreeMap::new(),
        }
    }
}

impl Phases {
    pub(super) fn done(&mut self, phase: &str) {
        let took = self.last.elapsed().as_secs_f64();
        tracing::info!("index build: {phase} took {took:.2} s");
        self.seconds.insert(phase.to_string(), took);
        self.last = Instant::now();
    }
}

/// The manifest entry of docids; `vectors` names what semantic docids were clustered from.
pub(super) fn docid_meta(docids: &DocIds, vectors: &str) -> BTreeMap<String, serde_json::Value> {
    let mut meta = BTreeMap::from([
        ("scheme".to_string(), docids.scheme().name().into()),
        ("extra_tokens".to_string(), docids.extra_tokens().into()),
        ("max_len".to_string(), docids.max_len().into()),
        (
            "format_version".to_string(),
            crate::docid::FORMAT_VERSION.into(),
        ),
    ]);
    if docids.scheme() == Scheme::Semantic {
        meta.insert("vectors".into(), vectors.into());
    }
    meta
}

/// Docids of documents with these `ids`, `titles` (tokenized; only title docids read them)
/// and `texts`.
fn build_docids(
    ids: &[String],
    titles: &[Vec<u32>],
    tokenizer: &GenretTokenizer,
    texts: &dyn TokenDocs,
    config: &BuildConfig,
) -> Result<DocIds> {
    let suffix = |d: usize| tokenizer.encode(&format!(" ({})", ids[d]));
    let input = DocidInput {
        ids,
        titles,
        texts,
        id_suffix: &suffix,
        vocab: tokenizer.vocab_size() as u32,
    };
    DocIds::build(config.docids, &input, &config.semantic, None)
}

impl IndexStats {
    /// The statistics of an index of documents of `lens` tokens (in index order) over `fm`,
    /// `empty_docs` of them empty, built since `started`.
    pub(super) fn of(
        empty_docs: u64,
        mut lens: Vec<u64>,
        fm: &Shards,
        vocab: u32,
        started: Instant,
    ) -> IndexStats {
        let docs = lens.len() as u64;
        lens.sort_unstable();
        let tokens: u64 = lens.iter().sum();
        let pick = |q: f64| -> u64 {
            if lens.is_empty() {
                0
            } else {
                lens[((lens.len() - 1) as f64 * q).round() as usize]
            }
        };
        let mut distinct = 0;
        fm.for_each_continuation(&fm.full_range(), |_, _| distinct += 1);
        IndexStats {
            docs,
            empty_docs,
            tokens,
            doc_tokens_min: pick(0.0),
            doc_tokens_mean: tokens as f64 / lens.len().max(1) as f64,
            doc_tokens_median: pick(0.5),
            doc_tokens_p95: pick(0.95),
            doc_tokens_max: pick(1.0),
            vocab_size: vocab as u64,
            distinct_tokens: distinct,
            fmindex_bytes: fm.size_bytes() as u64,
            fmindex_bits_per_token: fm.bits_per_token(true),
            build_seconds: started.elapsed().as_secs_f64(),
            phase_seconds: BTreeMap::new(),
        }
    }
}

/// Writes `stats.json` into `dir` atomically.
pub(super) fn write_stats(dir: &Path, stats: &IndexStats) -> Result<()> {
    write_atomic(
        &dir.join(STATS_FILE),
        &serde_json::to_vec_pretty(stats).expect("stats serialize"),
    )
}

/// An opened index: manifest, tokenizer, documents and FM-index, checked against each other.
#[derive(Debug)]
pub struct Index {
    pub dir: IndexDir,
    pub tokenizer: GenretTokenizer,
    /// The documents, read one at a time from the mapped `docs.jsonl`.
    pub docs: DocStore,
    /// The FM-index, in one shard or several ([`Shards`]).
    pub fm: Shards,
    /// Every document's token ids (`tokens.bin`), for reading candidates without walking
    /// the FM-index; `None` for an index built before it ([`Index::doc_tokens`] falls back).
    pub tokens: Option<TokenStore>,
    /// Read on first use: [`Index::docids`].
    docids: OnceLock<DocIds>,
    pub stats: IndexStats,
    /// Document id -> position, built on first use (a search by text never needs it).
    /// `Err`: why the ids cannot be mapped (one repeats).
    positions: OnceLock<std::result::Result<HashMap<String, u32>, String>>,
}

impl Index {
    /// Opens an index directory: its tokenizer, and its documents, token store and FM-index
    /// mapped and used in place. Cost: one checksum pass over the FM-index and the token
    /// store (memory speed, nothing copied) and 8 bytes per document of `docs.lines`;
    /// `docs.jsonl` is checked block by block as documents are read ([`DocStore`]) and
    /// `docids.bin` when first needed ([`Index::docids`]), so no byte is used unverified.
    pub fn open(path: impl AsRef<Path>) -> Result<Index> {
        let clock = Instant::now();
        let index = Index::open_unlogged(path)?;
        tracing::info!(
            "opened {} ({} documents) in {:.2} s",
            index.dir.path.display(),
            index.docs.len(),
            clock.elapsed().as_secs_f64()
        );
        Ok(index)
    }

    fn open_unlogged(path: impl AsRef<Path>) -> Result<Index> {
        let dir = IndexDir::open(path)?;
        let hint = "rebuild it with `genret index CORPUS --out DIR`";
        let tokenizer = GenretTokenizer::from_file(dir.part("tokenizer", hint)?)?;
        // The three large parts are independent: read side by side. The binary ones are
        // mapped, verified against the manifest in one pass and used in place.
        let fm_path = dir.file(FMINDEX_FILE);
        let ((docs, tokens), fm) = rayon::join(
            || rayon::join(|| open_docs(&dir), || open_tokens(&dir)),
            || open_shards(&dir, hint),
        );
        let (docs, tokens, fm) = (docs?, tokens?, fm?);
        let stats_path = dir.part("stats", hint)?;
        let stats: IndexStats = serde_json::from_slice(
            &std::fs::read(&stats_path).map_err(|e| Error::io(&stats_path, e))?,
        )
        .map_err(|e| Error::Corrupt {
            path: stats_path.clone(),
            message: e.to_string(),
        })?;
        if fm.docs() != docs.len() || fm.vocab_size() as usize != tokenizer.vocab_size() {
            return Err(Error::Corrupt {
                path: fm_path,
                message: format!(
                    "FM-index has {} documents and vocabulary {}, but docs.jsonl has {} and the tokenizer {}",
                    fm.docs(),
                    fm.vocab_size(),
                    docs.len(),
                    tokenizer.vocab_size()
                ),
            });
        }
        if let Some(t) = &tokens
            && (t.docs() != docs.len() || t.vocab_size() != fm.vocab_size())
        {
            return Err(Error::Corrupt {
                path: dir.file(TOKENS_FILE),
                message: format!(
                    "it has {} documents and vocabulary {}, but docs.jsonl has {} and the \
                     FM-index {}",
                    t.docs(),
                    t.vocab_size(),
                    docs.len(),
                    fm.vocab_size()
                ),
            });
        }
        Ok(Index::assemble(
            dir,
            tokenizer,
            docs,
            fm,
            OnceLock::new(),
            stats,
            tokens,
        ))
    }

    fn assemble(
        dir: IndexDir,
        tokenizer: GenretTokenizer,
        docs: DocStore,
        fm: Shards,
        docids: OnceLock<DocIds>,
        stats: IndexStats,
        tokens: Option<TokenStore>,
    ) -> Index {
        let positions = OnceLock::new();
        Index {
            dir,
            tokenizer,
            docs,
            fm,
            tokens,
            docids,
            stats,
            positions,
        }
    }

    /// The documents' identifiers (`docids.bin`), read and checked on first use (O(total
    /// symbols); a SEAL search never needs them). An error names the file if it is damaged or
    /// does not fit the documents and the tokenizer.
    pub fn docids(&self) -> Result<&DocIds> {
        if let Some(d) = self.docids.get() {
            return Ok(d);
        }
        let hint = "rebuild it with `genret index CORPUS --out DIR`";
        let docids = DocIds::load_mapped(self.dir.map_part("docids", hint)?)?;
        if docids.len() != self.docs.len()
            || docids.model_vocab() < self.tokenizer.vocab_size() as u32
        {
            return Err(Error::Corrupt {
                path: self.dir.file(DOCIDS_FILE),
                message: format!(
                    "docids has {} documents and needs vocabulary {}, but docs.jsonl has {} and \
                     the tokenizer {}",
                    docids.len(),
                    docids.model_vocab(),
                    self.docs.len(),
                    self.tokenizer.vocab_size()
                ),
            });
        }
        Ok(self.docids.get_or_init(|| docids))
    }

    /// The token ids of document `doc`: a slice of `tokens.bin` (O(length)), or, for an index
    /// built before it, rebuilt from the FM-index (O(length x log vocabulary)).
    pub fn doc_tokens(&self, doc: u32) -> Result<Vec<u32>> {
        match &self.tokens {
            Some(t) => t.doc(doc),
            None => self.fm.extract(doc),
        }
    }

    /// Replaces the docids with semantic ones clustered from `vectors` (row-major, one row of
    /// `dim` values per document in index order: e.g. dense embeddings), recording `source`
    /// in the manifest. A model trained on the previous docids must be retrained.
    pub fn set_semantic_docids(
        &mut self,
        vectors: &[f32],
        dim: usize,
        options: &SemanticOptions,
        source: &str,
    ) -> Result<()> {
        let ids = self.docs.ids()?;
        let no_suffix = |_: usize| Ok(Vec::new());
        let input = DocidInput {
            ids: &ids,
            titles: &[],
            texts: &Vec::<Vec<u32>>::new(),
            id_suffix: &no_suffix,
            vocab: self.tokenizer.vocab_size() as u32,
        };
        let docids = DocIds::build(Scheme::Semantic, &input, options, Some((vectors, dim)))?;
        docids.save(&self.dir.file(DOCIDS_FILE))?;
        self.dir
            .add_part("docids", DOCIDS_FILE, docid_meta(&docids, source))?;
        self.docids = OnceLock::from(docids);
        Ok(())
    }

    /// The index position of a document id, or an error naming the id. The first call builds
    /// the id map (O(documents); 1M: ~1 s), refusing an index whose ids repeat.
    pub fn doc_position(&self, id: &str) -> Result<u32> {
        let positions = self.positions.get_or_init(|| {
            let ids = self.docs.ids().map_err(|e| e.to_string())?;
            let map: HashMap<String, u32> = ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| (id, i as u32))
                .collect();
            if map.len() != self.docs.len() {
                return Err(format!(
                    "{} documents but {} distinct ids: an id appears twice",
                    self.docs.len(),
                    map.len()
                ));
            }
            Ok(map)
        });
        let positions = positions.as_ref().map_err(|message| Error::Corrupt {
            path: self.dir.file(DOCS_FILE),
            message: message.clone(),
        })?;
        positions
            .get(id)
            .copied()
            .ok_or_else(|| Error::UnknownDocId {
                id: id.to_string(),
                docs: self.docs.len(),
            })
    }

    /// The (query text, document position) pairs judged relevant (grade > 0) in `split` of the
    /// BEIR folder `dir`, for the documents this index holds; an error when there are none.
    pub fn judged_queries(&self, dir: &Path, split: &str) -> Result<Vec<(String, u32)>> {
        let collection = crate::corpus::Collection::open(dir, false)?;
        let qrels = collection.split(split)?;
        let text: HashMap<&str, &str> = collection
            .queries
            .iter()
            .map(|q| (q.id.as_str(), q.text.as_str()))
            .collect();
        let mut pairs = Vec::new();
        for (qid, judged) in &qrels.judgments {
            let Some(q) = text.get(qid.as_str()) else {
                continue;
            };
            for (did, &grade) in judged {
                if grade > 0
                    && let Ok(pos) = self.doc_position(did)
                {
                    pairs.push((q.to_string(), pos));
                }
            }
        }
        if pairs.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: split {split:?} has no judged query whose document is in the index",
                dir.display()
            )));
        }
        Ok(pairs)
    }

    /// Whether titles are part of the indexed token sequences.
    pub fn indexes_titles(&self) -> bool {
        self.dir
            .manifest
            .fields
            .indexed
            .iter()
            .any(|f| f == "title")
    }
}

/// The FM-index shards the manifest lists (`fmindex`, and `fmindex.1` ... up to its
/// `shards`), each mapped and verified, in parallel.
fn open_shards(dir: &IndexDir, hint: &str) -> Result<Shards> {
    let count = dir
        .manifest
        .parts
        .get("fmindex")
        .and_then(|p| p.meta.get("shards"))
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as usize;
    let shards = (0..count)
        .into_par_iter()
        .map(|k| FmIndex::load_mapped(dir.map_part(&shard_part(k), hint)?))
        .collect::<Result<Vec<_>>>()?;
    Shards::new(shards).map_err(|e| Error::Corrupt {
        path: dir.file(FMINDEX_FILE),
        message: e.to_string(),
    })
}

/// The document store of `dir`: `docs.jsonl` mapped and checked block by block against
/// `docs.lines`, or, for an index built before `docs.lines`, verified whole and scanned; then
/// the batches added since, each its own pair of files.
fn open_docs(dir: &IndexDir) -> Result<DocStore> {
    let hint = "rebuild it with `genret index CORPUS --out DIR`";
    if !dir.has_part(LINES_PART) {
        return DocStore::scan(dir.map_part("docs", hint)?);
    }
    let stores = (0..dir.manifest.batches())
        .into_par_iter()
        .map(|j| {
            DocStore::open(
                dir.map_part_unverified(&batch_part("docs", j), hint)?,
                dir.map_part(&batch_part(LINES_PART, j), hint)?,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DocStore::concat(stores))
}

/// The documents of the index at `path` alone: its document and token stores, verified as
/// [`Index::open`] verifies them, with no FM-index, docids or model. What a server that scores
/// and returns documents needs (see docs/SCALE.md); fails on an index built before token
/// stores existed.
pub fn open_documents(path: impl AsRef<Path>) -> Result<(DocStore, TokenStore)> {
    let dir = IndexDir::open(path)?;
    let (docs, tokens) = rayon::join(|| open_docs(&dir), || open_tokens(&dir));
    let (docs, tokens) = (docs?, tokens?);
    let tokens = tokens.ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} has no token store (built by an earlier genret); rebuild it with `genret index \
             CORPUS --out DIR`",
            dir.path.display()
        ))
    })?;
    Ok((docs, tokens))
}

/// The token store of `dir`, if it has one (an index built before `tokens.bin` has not), with
/// the batches added since.
fn open_tokens(dir: &IndexDir) -> Result<Option<TokenStore>> {
    if !dir.has_part(TOKENS_PART) {
        return Ok(None);
    }
    let hint = "rebuild it with `genret index CORPUS --out DIR`";
    let stores = (0..dir.manifest.batches())
        .into_par_iter()
        .map(|j| TokenStore::open(dir.map_part(&batch_part(TOKENS_PART, j), hint)?))
        .collect::<Result<Vec<_>>>()?;
    TokenStore::concat(stores).map(Some)
}

/// The manifest name of batch `j`'s part `name`: `name` for the build's, then `name.1`, ...
pub(super) fn batch_part(name: &str, j: usize) -> String {
    match j {
        0 => name.to_string(),
        j => format!("{name}.{j}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizer_sample_takes_every_kth_document_across_batches() {
        let docs = (0..2 * BATCH_DOCS + 5)
            .map(|i| Document {
                id: i.to_string(),
                title: String::new(),
                text: format!("t{i}"),
            })
            .collect();
        let corpus = Corpus::from_docs(docs).unwrap();
        for every in [1, 3, 7, BATCH_DOCS + 1] {
            let want: Vec<String> = (0..corpus.len())
                .step_by(every)
                .map(|i| format!("\nt{i}"))
                .collect();
            let got = every_kth(CorpusSource::Memory(&corpus), every).unwrap();
            assert_eq!(got, want, "every {every}");
        }
    }
}
