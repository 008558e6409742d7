//! index::add: here are more documents, how do they join an index without rebuilding it?
//!
//! [`add`] appends a corpus to an index as a new batch: its documents are tokenized with the
//! index's tokenizer and written as their own document store, token store and FM-index
//! shard(s) (`docs.J.jsonl`, `docs.J.lines`, `tokens.J.bin`, `fmindex.K.bin`), numbered after
//! the existing ones. What holds every document is redone: the word table (one pass over all
//! texts) and the docids, where every existing identifier is kept and the new documents get
//! new ones ([`DocIds::extend`]). The built documents, their token ids, their docids and the
//! index's fingerprint are unchanged, so a trained SEAL model keeps working and finds the new
//! documents too; a DSI model keeps answering among the documents it was trained on.
//!
//! Like a build, the new index is made in a hidden sibling directory and swapped in whole
//! (the unchanged files hard-linked into it), so an interrupted addition leaves the index as
//! it was. Parts derived from all documents that cannot be extended are left out and say how
//! to rebuild them: the BM25 and dense baselines (`genret add`), and training checkpoints
//! (a resumed run would draw its examples from another corpus).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use super::build::{
    Index, IndexStats, Phases, batch_part, docid_meta, document_tokens, entries, shard_file,
    shard_meta, shard_part, swap_in, words_meta,
};
use super::docs::{self, LINES_PART};
use super::tokens::{TOKENS_PART, TokenStore};
use super::{CorpusInfo, FORMAT_VERSION, IndexDir, PartInfo};
use crate::corpus::{Corpus, fingerprint};
use crate::docid::{DOCIDS_FILE, DocidInput, Scheme, SemanticOptions, tfidf_projection};
use crate::error::{Error, Result};
use crate::fmindex::{BuildOptions, MAX_SYMBOLS, Shards, TokenDocs};
use crate::progress;
use crate::stem::{WORDS_FILE, WORDS_PART, WordForms};
use crate::storage::DirLock;

/// How to add documents.
#[derive(Debug, Clone, Copy)]
pub struct AddConfig {
    /// Most symbols per new FM-index shard (see [`BuildOptions::shard_symbols`]).
    pub shard_symbols: usize,
}

impl Default for AddConfig {
    fn default() -> Self {
        AddConfig {
            shard_symbols: MAX_SYMBOLS,
        }
    }
}

/// Parts an addition leaves out, with what to do about each: built from every document, they
/// would be stale.
const DROPPED: [(&str, &str); 2] = [
    ("bm25", "genret add INDEX bm25"),
    ("dense", "genret add INDEX dense"),
];

/// Parts an addition writes anew.
const REWRITTEN: [&str; 3] = [WORDS_PART, "docids", "stats"];

/// Appends the documents of `corpus` to the index at `path` (see the module docs) and returns
/// the index as it is now. Fails, leaving the index as it was, when a document id is already
/// in the index, when the docids are atomic, or when the index predates the parts an addition
/// extends (rebuild it first). Cost: tokenizing and indexing the new documents as a build
/// would, plus one pass over every document's text and tokens (word table, docids).
pub fn add(corpus: &Corpus, path: &Path, config: &AddConfig) -> Result<Index> {
    if corpus.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: the corpus has no documents; nothing to add",
            corpus.source.display()
        )));
    }
    let _lock = DirLock::acquire(path, "index --add")?;
    let index = Index::open(path)?;
    if !index.dir.has_part(LINES_PART) || index.tokens.is_none() {
        return Err(Error::InvalidInput(format!(
            "{}: built by an older genret, without the parts an addition extends; rebuild it \
             with `genret index` first",
            path.display()
        )));
    }
    swap_in(path, "add", |building| {
        add_into(corpus, &index, building, config)
    })
}

/// The index's documents, then the new ones, read one at a time: what the projection of every
/// document reads, without a copy of every token list.
struct Grown<'a> {
    old: &'a TokenStore,
    new: &'a [Vec<u32>],
}

impl TokenDocs for Grown<'_> {
    fn count(&self) -> usize {
        self.old.docs() + self.new.len()
    }

    fn tokens(&self, d: usize) -> Cow<'_, [u32]> {
        match d.checked_sub(self.old.docs()) {
            None => self.old.tokens(d),
            Some(n) => Cow::Borrowed(&self.new[n]),
        }
    }
}

/// [`add`]'s work: the index with `corpus` appended, into the fresh directory `out`, opened
/// (every part verified and checked against the others) before it is swapped in.
fn add_into(corpus: &Corpus, index: &Index, out: &Path, config: &AddConfig) -> Result<Index> {
    let started = Instant::now();
    let mut phases = Phases::default();
    let old = &index.dir;
    let existing: HashSet<String> = index.docs.ids()?.into_iter().collect();
    if let Some(d) = corpus.docs.iter().find(|d| existing.contains(&d.id)) {
        return Err(Error::InvalidInput(format!(
            "{}: document {:?} is already in the index; an addition holds new documents only",
            corpus.source.display(),
            d.id
        )));
    }
    let docids = index.docids()?;
    docids.extendable()?;
    link_unchanged(old, out)?;
    phases.done("check and link");

    let pb = progress::bar(corpus.len() as u64, "tokenizing documents");
    let titles = index.indexes_titles();
    let token_lists: Vec<Vec<u32>> = corpus
        .docs
        .par_iter()
        .map(|doc| {
            let tokens = document_tokens(&index.tokenizer, doc, titles);
            pb.inc(1);
            tokens
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();
    phases.done("tokenize");

    let batch = old.manifest.batches();
    let file = |stem: &str, ext: &str| format!("{stem}.{batch}.{ext}");
    let (docs_file, lines_file, tokens_file) = (
        file("docs", "jsonl"),
        file("docs", "lines"),
        file("tokens", "bin"),
    );
    let new_entries = entries(&corpus.docs, &token_lists);
    docs::write_as(&out.join(&docs_file), &out.join(&lines_file), new_entries)?;
    let vocab = index.tokenizer.vocab_size() as u32;
    TokenStore::write(&out.join(&tokens_file), &token_lists, vocab)?;
    phases.done("docs");

    let pb = progress::spinner("building FM-index shard");
    let options = BuildOptions {
        sample_rate: index.fm.shards()[0].sample_rate(),
        shard_symbols: config.shard_symbols,
    };
    let added = Shards::build(&token_lists, vocab, options)?;
    let first_new = index.fm.shards().len();
    for (k, shard) in added.shards().iter().enumerate() {
        shard.save(&out.join(shard_file(first_new + k)))?;
    }
    let mut shards = index.fm.shards().to_vec();
    shards.extend(added.shards().iter().cloned());
    let fm = Shards::new(shards)?;
    pb.finish_and_clear();
    phases.done("fmindex");

    let pb = progress::spinner("extending docids");
    let ids: Vec<String> = corpus.docs.iter().map(|d| d.id.clone()).collect();
    let new_titles: Vec<Vec<u32>> = if docids.scheme() == Scheme::Title {
        corpus
            .docs
            .par_iter()
            .map(|d| index.tokenizer.encode(&d.title))
            .collect::<Result<_>>()?
    } else {
        vec![Vec::new(); corpus.len()]
    };
    let suffix = |d: usize| index.tokenizer.encode(&format!(" ({})", corpus.docs[d].id));
    let input = DocidInput {
        ids: &ids,
        titles: &new_titles,
        texts: &token_lists,
        id_suffix: &suffix,
        vocab,
    };
    // Semantic docids place the new documents by TF-IDF projections of every document.
    let semantic = SemanticOptions::default();
    let vectors = match docids.scheme() {
        Scheme::Semantic => {
            let old = index.tokens.as_ref().expect("checked by add");
            let all = Grown {
                old,
                new: &token_lists,
            };
            Some(tfidf_projection(&all, vocab, semantic.dims, semantic.seed))
        }
        _ => None,
    };
    let extended = docids.extend(&input, vectors.as_deref().map(|v| (v, semantic.dims)))?;
    extended.save(&out.join(DOCIDS_FILE))?;
    drop(vectors);
    pb.finish_and_clear();
    phases.done("docids");

    let pb = progress::spinner("collecting word forms");
    let old_docs = index.docs.len();
    let forms = WordForms::build(
        old_docs + corpus.len(),
        |d| match d.checked_sub(old_docs) {
            None => index.docs.get(d).map(|e| [e.title.into(), e.text.into()]),
            Some(n) => {
                let doc = &corpus.docs[n];
                Ok([doc.title.as_str().into(), doc.text.as_str().into()])
            }
        },
        &index.tokenizer,
        &fm,
    )?;
    forms.save(&out.join(WORDS_FILE))?;
    pb.finish_and_clear();
    phases.done("words");

    let lens: Vec<u64> = (0..fm.docs() as u32)
        .map(|d| fm.doc_len(d).map(|n| n as u64))
        .collect::<Result<_>>()?;
    let empty_docs = index.stats.empty_docs + corpus.empty_docs as u64;
    let mut stats = IndexStats::of(empty_docs, lens, &fm, vocab, started);
    stats.phase_seconds = phases.seconds;
    super::build::write_stats(out, &stats)?;

    // The manifest: the old one, less what was dropped, plus the new batch and shards.
    let mut manifest = old.manifest.clone();
    let mut dropped = Vec::new();
    for (part, fix) in DROPPED {
        if manifest.parts.remove(part).is_some() {
            dropped.push(format!("{part} (rebuild it with `{fix}`)"));
        }
    }
    let part = |file: &str, meta| PartInfo::of(out, file, meta);
    let none = BTreeMap::new;
    let parts = &mut manifest.parts;
    parts.insert(batch_part("docs", batch), part(&docs_file, none())?);
    parts.insert(batch_part(LINES_PART, batch), part(&lines_file, none())?);
    parts.insert(batch_part(TOKENS_PART, batch), part(&tokens_file, none())?);
    // New shards get their entries; the others keep theirs (file and checksum) with their
    // facts brought up to date (the number of shards, their documents).
    for k in 0..fm.shards().len() {
        let meta = shard_meta(&fm, k);
        match parts.get_mut(&shard_part(k)) {
            Some(entry) if k < first_new => entry.meta.extend(meta),
            _ => {
                parts.insert(shard_part(k), part(&shard_file(k), meta)?);
            }
        }
    }
    let vectors = match docids.scheme() {
        Scheme::Semantic => old
            .manifest
            .parts
            .get("docids")
            .and_then(|p| p.meta.get("vectors"))
            .and_then(|v| v.as_str())
            .unwrap_or("tfidf")
            .to_string(),
        _ => String::new(),
    };
    parts.insert(
        "docids".into(),
        part(DOCIDS_FILE, docid_meta(&extended, &vectors))?,
    );
    parts.insert(WORDS_PART.into(), part(WORDS_FILE, words_meta())?);
    parts.insert("stats".into(), part(super::STATS_FILE, none())?);
    manifest.added.push(CorpusInfo {
        source: corpus.source.display().to_string(),
        fingerprint: fingerprint(corpus),
        docs: corpus.len() as u64,
        empty_docs: corpus.empty_docs as u64,
        tokens: token_lists.iter().map(|t| t.len() as u64).sum(),
    });
    manifest.format_version = FORMAT_VERSION;
    IndexDir::create(out, manifest)?;
    for d in dropped {
        tracing::warn!("left out of the index, as it does not hold the added documents: {d}");
    }
    // The parts just written open and agree with each other before the swap.
    Index::open(out)
}

/// Hard-links every file of the index `from` into `to` (directories recreated), except the
/// manifest, the parts an addition rewrites or drops, and training checkpoints. Hard links
/// share the files, which genret never changes in place; a file system without them gets
/// copies.
fn link_unchanged(from: &IndexDir, to: &Path) -> Result<()> {
    let manifest = &from.manifest;
    let mut skip: HashSet<String> = [super::MANIFEST.to_string()].into();
    for name in REWRITTEN.iter().chain(DROPPED.iter().map(|(p, _)| p)) {
        if let Some(p) = manifest.parts.get(*name) {
            skip.insert(p.file.clone());
        }
    }
    link_tree(from.path(), to, Path::new(""), &skip)
}

fn link_tree(from: &Path, to: &Path, rel: &Path, skip: &HashSet<String>) -> Result<()> {
    let dir = from.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = rel.join(entry.file_name());
        let key = name.to_string_lossy().into_owned();
        if skip.contains(&key) || entry.file_name() == "checkpoint" {
            continue;
        }
        let (src, dst) = (from.join(&name), to.join(&name));
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            std::fs::create_dir(&dst).map_err(|e| Error::io(&dst, e))?;
            link_tree(from, to, &name, skip)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
        }
    }
    Ok(())
}
