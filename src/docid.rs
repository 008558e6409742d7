//! docid: here are the documents, what string does the model write to name each one?
//!
//! DSI-style retrieval decodes a document identifier token by token. A [`DocIds`] holds one
//! identifier per document (a sequence of *symbols*) under one [`Scheme`]:
//!
//! | scheme | identifier | symbols |
//! |---|---|---|
//! | `atomic` | one symbol per document | `0..docs` |
//! | `naive` | the document's index position in decimal | `0..10` |
//! | `semantic` | path of cluster numbers in a hierarchical k-means tree (k = 10) over document vectors, then the position inside its leaf (<= 100 documents), as DSI | `0..100` |
//! | `title` | the tokenized title (the first words of the text when there is none; duplicates get their id appended) | tokenizer ids |
//!
//! The model writes symbol `s` as token `offset + s`: schemes with their own alphabet append
//! it after the tokenizer's vocabulary (`offset` = tokenizer vocabulary size), `title` uses
//! tokenizer ids directly (`offset` = 0). The SEAL scheme (any corpus n-gram) needs no table:
//! the FM-index is its identifier set.
//!
//! Constrained decoding walks a prefix trie, stored compactly as the identifiers sorted
//! lexicographically: a trie node is a range of that order plus a depth, and its children are
//! the runs of equal symbols at that depth, found by binary search. Memory: the symbols
//! (4 bytes each) plus 8 bytes per document, no per-node pointers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fmindex::TokenDocs;
use crate::storage::{ArrayFile, ArrayWriter, Mapped};

/// File name of the docid table inside an index directory.
pub const DOCIDS_FILE: &str = "docids.bin";
const MAGIC: &[u8; 8] = b"GRDOCIDS";
/// On-disk format version of `docids.bin`.
/// 2 stores the trie order, so that opening an index does not sort every identifier again.
pub const FORMAT_VERSION: u32 = 2;

/// How documents are named for DSI-style decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Atomic,
    Naive,
    #[default]
    Semantic,
    Title,
}

impl Scheme {
    fn code(self) -> u64 {
        match self {
            Scheme::Atomic => 0,
            Scheme::Naive => 1,
            Scheme::Semantic => 2,
            Scheme::Title => 3,
        }
    }

    fn from_code(code: u64) -> Option<Scheme> {
        [
            Scheme::Atomic,
            Scheme::Naive,
            Scheme::Semantic,
            Scheme::Title,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Atomic => "atomic",
            Scheme::Naive => "naive",
            Scheme::Semantic => "semantic",
            Scheme::Title => "title",
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scheme> {
        match s {
            "atomic" => Ok(Scheme::Atomic),
            "naive" => Ok(Scheme::Naive),
            "semantic" => Ok(Scheme::Semantic),
            "title" => Ok(Scheme::Title),
            _ => Err(Error::UnknownName {
                what: "docid scheme",
                got: s.to_string(),
                expected: "atomic, naive, semantic or title".into(),
            }),
        }
    }
}

/// Parameters of the `semantic` scheme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticOptions {
    /// Clusters per tree level (DSI: 10).
    pub k: usize,
    /// Largest leaf; a leaf's documents are numbered `0..leaf_size` (DSI: 100).
    pub leaf_size: usize,
    /// Dimensions of the TF-IDF random projection used when no vectors are given.
    pub dims: usize,
    /// Lloyd iterations per k-means.
    pub iterations: usize,
    pub seed: u64,
}

impl Default for SemanticOptions {
    fn default() -> Self {
        SemanticOptions {
            k: 10,
            leaf_size: 100,
            dims: 128,
            iterations: 20,
            seed: 42,
        }
    }
}

/// One identifier per document, plus the lexicographic order that serves as the prefix trie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocIds {
    scheme: Scheme,
    /// Model token of symbol 0.
    offset: u32,
    /// Symbols are `< alphabet`.
    alphabet: u32,
    /// Document `d`'s symbols are `symbols[starts[d]..starts[d + 1]]`.
    starts: Vec<u32>,
    symbols: Vec<u32>,
    /// Documents in lexicographic order of their identifiers (a proper prefix sorts first).
    order: Vec<u32>,
}

/// A node of the docid trie: the documents `order[lo..hi]` whose identifiers share their first
/// `depth` symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrieState {
    pub lo: u32,
    pub hi: u32,
    pub depth: u32,
}

impl DocIds {
    /// Builds the identifiers of a scheme. `texts[d]` is document `d`'s tokenized title and
    /// body (used by `title`, and by `semantic` when `vectors` is `None`), `ids[d]` its corpus
    /// id; `vocab` is the tokenizer's vocabulary size. `vectors`, when given, are the
    /// documents' vectors for `semantic` (e.g. from a dense encoder), row-major `docs x dim`.
    pub fn build(
        scheme: Scheme,
        input: &DocidInput<'_>,
        semantic: &SemanticOptions,
        vectors: Option<(&[f32], usize)>,
    ) -> Result<DocIds> {
        let n = input.ids.len();
        if n >= u32::MAX as usize {
            return Err(Error::InvalidInput("too many documents for docids".into()));
        }
        let vocab = input.vocab;
        let (offset, alphabet, seqs): (u32, u32, Vec<Vec<u32>>) = match scheme {
            Scheme::Atomic => (
                vocab,
                n.max(1) as u32,
                (0..n as u32).map(|d| vec![d]).collect(),
            ),
            Scheme::Naive => (vocab, 10, (0..n).map(decimal).collect()),
            Scheme::Semantic => {
                let owned;
                let (data, dim) = match vectors {
                    Some(v) => v,
                    None => {
                        owned = tfidf_projection(input.texts, vocab, semantic.dims, semantic.seed);
                        (&owned[..], semantic.dims)
                    }
                };
                if data.len() != n * dim {
                    return Err(Error::InvalidInput(format!(
                        "semantic docids: {} vector values for {n} documents of dimension {dim}",
                        data.len()
                    )));
                }
                let seqs = hierarchical_kmeans(data, dim, n, semantic);
                let alphabet = semantic.k.max(semantic.leaf_size) as u32;
                (vocab, alphabet, seqs)
            }
            Scheme::Title => (0, vocab, title_ids(input)?),
        };
        DocIds::from_sequences(scheme, offset, alphabet, &seqs)
    }

    /// These documents' identifiers, unchanged (a model trained on them still names them),
    /// followed by identifiers for the documents of `new`, which come after them:
    ///
    /// - `naive`: their positions in decimal;
    /// - `title`: their titles (or first words), with `" (id)"` where one would repeat an
    ///   identifier;
    /// - `semantic`: each new document walks down the existing tree, at every node to the
    ///   child whose documents' mean vector is nearest (cosine) in `vectors` (every document,
    ///   these then the new ones, row-major with its dimension), and takes the next free
    ///   position of the leaf it reaches; in a full leaf, a position under its nearest document
    ///   (an identifier may extend another's). O(documents x depth x dimension) time and one
    ///   vector per tree node of memory;
    /// - `atomic`: refused, as every new document would need a token no trained model has.
    pub fn extend(&self, new: &DocidInput<'_>, vectors: Option<(&[f32], usize)>) -> Result<DocIds> {
        self.extendable()?;
        let old = self.len();
        let n = new.ids.len();
        let mut seqs: Vec<Vec<u32>> = (0..old as u32).map(|d| self.symbols(d).to_vec()).collect();
        match self.scheme {
            Scheme::Atomic => unreachable!("refused by extendable"),
            Scheme::Naive => seqs.extend((old..old + n).map(decimal)),
            Scheme::Title => {
                let mut taken: std::collections::HashSet<Vec<u32>> = seqs.iter().cloned().collect();
                for d in 0..n {
                    let mut id = title_seq(new, d);
                    if id.is_empty() || taken.contains(&id) {
                        id.extend((new.id_suffix)(d)?);
                    }
                    if !taken.insert(id.clone()) {
                        return Err(Error::InvalidInput(format!(
                            "title docids: document {} would repeat an identifier",
                            new.ids[d]
                        )));
                    }
                    seqs.push(id);
                }
            }
            Scheme::Semantic => {
                let Some((data, dim)) = vectors.filter(|(d, dim)| d.len() == (old + n) * dim)
                else {
                    return Err(Error::InvalidInput(format!(
                        "semantic docids: adding documents needs a vector for each of the {} \
                         documents",
                        old + n
                    )));
                };
                let added = extend_semantic(&seqs, data, dim, self.alphabet);
                seqs.extend(added);
            }
        }
        DocIds::from_sequences(self.scheme, self.offset, self.alphabet, &seqs)
    }

    /// Whether [`DocIds::extend`] can name more documents: not for atomic docids, as every
    /// new document would need a model token no trained model has.
    pub fn extendable(&self) -> Result<()> {
        if self.scheme == Scheme::Atomic {
            return Err(Error::InvalidInput(
                "atomic docids give every document a model token of its own, which no model \
                 trained before the addition has: rebuild the index (with --docids naive or \
                 semantic to add documents later)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Identifiers given explicitly: document `d` is named by `seqs[d]` (symbols `< alphabet`,
    /// written as model tokens `offset + symbol`). Fails on an empty or duplicate identifier.
    pub fn from_sequences(
        scheme: Scheme,
        offset: u32,
        alphabet: u32,
        seqs: &[Vec<u32>],
    ) -> Result<DocIds> {
        let mut starts = Vec::with_capacity(seqs.len() + 1);
        let mut symbols = Vec::new();
        starts.push(0);
        for s in seqs {
            symbols.extend_from_slice(s);
            starts.push(symbols.len() as u32);
        }
        DocIds::assemble(scheme, offset, alphabet, starts, symbols)
            .map_err(|m| Error::InvalidInput(format!("{} docids: {m}", scheme.name())))
    }

    /// Sorts and checks; `Err` says what is inconsistent.
    fn assemble(
        scheme: Scheme,
        offset: u32,
        alphabet: u32,
        starts: Vec<u32>,
        symbols: Vec<u32>,
    ) -> std::result::Result<DocIds, String> {
        let mut ids = DocIds::unsorted(scheme, offset, alphabet, starts, symbols)?;
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.par_sort_unstable_by(|&a, &b| ids.symbols(a).cmp(ids.symbols(b)));
        if let Some(w) = order
            .windows(2)
            .find(|w| ids.symbols(w[0]) == ids.symbols(w[1]))
        {
            return Err(format!(
                "documents {} and {} have the same identifier",
                w[0], w[1]
            ));
        }
        ids.order = order;
        Ok(ids)
    }

    /// Checks a stored trie order: every document once, identifiers strictly increasing
    /// (so sorted and distinct). O(total symbols), against the sort's O(n log n) comparisons.
    fn with_order(mut self, order: Vec<u32>) -> std::result::Result<DocIds, String> {
        let mut seen = vec![false; self.len()];
        for &d in &order {
            match seen.get_mut(d as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(format!(
                        "the stored order names document {d} twice or out of range"
                    ));
                }
            }
        }
        if order.len() != self.len() {
            return Err("the stored order misses documents".into());
        }
        if let Some(w) = order
            .windows(2)
            .find(|w| self.symbols(w[0]) >= self.symbols(w[1]))
        {
            return Err(format!(
                "the stored order is not sorted (documents {} and {})",
                w[0], w[1]
            ));
        }
        self.order = order;
        Ok(self)
    }

    /// Checks identifiers and symbols; the order is left empty.
    fn unsorted(
        scheme: Scheme,
        offset: u32,
        alphabet: u32,
        starts: Vec<u32>,
        symbols: Vec<u32>,
    ) -> std::result::Result<DocIds, String> {
        if starts.first() != Some(&0)
            || starts.windows(2).any(|w| w[0] >= w[1])
            || *starts.last().unwrap() as usize != symbols.len()
        {
            return Err("every identifier needs at least one symbol".into());
        }
        if symbols.iter().any(|&s| s >= alphabet) {
            return Err(format!("a symbol is outside the alphabet of {alphabet}"));
        }
        if offset.checked_add(alphabet).is_none() {
            return Err("alphabet overflows the token space".into());
        }
        Ok(DocIds {
            scheme,
            offset,
            alphabet,
            starts,
            symbols,
            order: Vec::new(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens the model needs beyond the tokenizer's vocabulary for this scheme.
    pub fn extra_tokens(&self) -> u32 {
        if self.offset == 0 { 0 } else { self.alphabet }
    }

    /// Smallest model vocabulary that can write every identifier.
    pub fn model_vocab(&self) -> u32 {
        self.offset + self.alphabet
    }

    /// Document `doc`'s identifier as symbols.
    pub fn symbols(&self, doc: u32) -> &[u32] {
        let d = doc as usize;
        &self.symbols[self.starts[d] as usize..self.starts[d + 1] as usize]
    }

    /// Document `doc`'s identifier as model tokens.
    pub fn tokens(&self, doc: u32) -> Vec<u32> {
        self.symbols(doc).iter().map(|&s| s + self.offset).collect()
    }

    /// Longest identifier, in tokens.
    pub fn max_len(&self) -> usize {
        self.starts
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }

    /// The document whose identifier is exactly `tokens` (model tokens). O(len log docs).
    pub fn lookup(&self, tokens: &[u32]) -> Option<u32> {
        let mut state = self.root();
        for &t in tokens {
            state = self.child(state, t)?;
        }
        self.terminal(state)
    }

    /// Heap bytes: symbols, starts and order.
    pub fn size_bytes(&self) -> usize {
        4 * (self.symbols.len() + self.starts.len() + self.order.len())
    }

    /// The trie's root (every document).
    pub fn root(&self) -> TrieState {
        TrieState {
            lo: 0,
            hi: self.len() as u32,
            depth: 0,
        }
    }

    fn symbol_at(&self, rank: u32, depth: u32) -> Option<u32> {
        self.symbols(self.order[rank as usize])
            .get(depth as usize)
            .copied()
    }

    /// The document whose identifier ends at `state`, if one does. O(1): a proper prefix
    /// sorts first in its range.
    pub fn terminal(&self, state: TrieState) -> Option<u32> {
        (state.lo < state.hi
            && self.symbols(self.order[state.lo as usize]).len() == state.depth as usize)
            .then(|| self.order[state.lo as usize])
    }

    /// The child of `state` along model token `token`, if any. O(log docs).
    pub fn child(&self, state: TrieState, token: u32) -> Option<TrieState> {
        let sym = token.checked_sub(self.offset)?;
        let (lo, hi) = (state.lo as usize, state.hi as usize);
        let slice = &self.order[lo..hi];
        let key = |&d: &u32| self.symbols(d).get(state.depth as usize).copied();
        let a = lo + slice.partition_point(|d| key(d) < Some(sym));
        let b = lo + slice.partition_point(|d| key(d) <= Some(sym));
        (a < b).then_some(TrieState {
            lo: a as u32,
            hi: b as u32,
            depth: state.depth + 1,
        })
    }

    /// Every child of `state`: (model token, child state), in increasing token order, into
    /// `out` (appended). O(c log docs) for c children.
    pub fn children_into(&self, state: TrieState, out: &mut Vec<(u32, TrieState)>) {
        let mut lo = state.lo;
        if self.terminal(state).is_some() {
            lo += 1;
        }
        while lo < state.hi {
            let sym = self
                .symbol_at(lo, state.depth)
                .expect("identifiers longer than depth follow the terminal");
            // Gallop then binary search: runs are often short.
            let slice = &self.order[lo as usize..state.hi as usize];
            let key = |&d: &u32| self.symbols(d)[state.depth as usize];
            let mut step = 1usize;
            while step < slice.len() && key(&slice[step]) == sym {
                step *= 2;
            }
            let window = &slice[step / 2..slice.len().min(step + 1)];
            let run = step / 2 + window.partition_point(|d| key(d) == sym);
            let hi = lo + run as u32;
            out.push((
                sym + self.offset,
                TrieState {
                    lo,
                    hi,
                    depth: state.depth + 1,
                },
            ));
            lo = hi;
        }
    }

    /// Writes `docids.bin` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = ArrayWriter::new();
        w.u64s(&[self.scheme.code(), self.offset as u64, self.alphabet as u64])
            .u32s(&self.starts)
            .u32s(&self.symbols)
            .u32s(&self.order);
        w.write(path, MAGIC, FORMAT_VERSION)
    }

    /// Reads and verifies `docids.bin`: O(total symbols) (format 1, without the stored order:
    /// O(total symbols x log docs) to sort).
    pub fn load(path: &Path) -> Result<DocIds> {
        DocIds::load_mapped(Mapped::open(path, None)?)
    }

    /// [`DocIds::load`] of a mapped file, whose checksum is not computed again if the whole
    /// file was verified when it was mapped.
    pub fn load_mapped(file: Arc<Mapped>) -> Result<DocIds> {
        let (mut r, version) = ArrayFile::read(file, MAGIC, 1..=FORMAT_VERSION)?;
        let head = r.u64s()?;
        let [code, offset, alphabet] = head[..] else {
            return Err(r.corrupt("bad scalar header"));
        };
        let scheme = Scheme::from_code(code).ok_or_else(|| r.corrupt("unknown scheme"))?;
        if offset > u32::MAX as u64 || alphabet > u32::MAX as u64 {
            return Err(r.corrupt("bad scalar header"));
        }
        let starts = r.u32s()?;
        let symbols = r.u32s()?;
        let order = if version >= 2 { Some(r.u32s()?) } else { None };
        let corrupt = r.corrupt("");
        r.finish()?;
        let (offset, alphabet) = (offset as u32, alphabet as u32);
        match order {
            Some(order) => DocIds::unsorted(scheme, offset, alphabet, starts, symbols)
                .and_then(|ids| ids.with_order(order)),
            None => DocIds::assemble(scheme, offset, alphabet, starts, symbols),
        }
        .map_err(|m| match corrupt {
            Error::Corrupt { path, .. } => Error::Corrupt { path, message: m },
            other => other,
        })
    }
}

/// What building docids needs to know about the documents.
pub struct DocidInput<'a> {
    /// Corpus ids, in index order.
    pub ids: &'a [String],
    /// Tokenized title of each document (may be empty).
    pub titles: &'a [Vec<u32>],
    /// Tokens of each document as indexed.
    pub texts: &'a dyn TokenDocs,
    /// Tokenized `" (" + id + ")"` suffix of each document: only called for duplicate titles.
    pub id_suffix: &'a (dyn Fn(usize) -> Result<Vec<u32>> + Sync),
    /// Tokenizer vocabulary size.
    pub vocab: u32,
}

/// Document `d`'s position in decimal, one symbol per digit.
fn decimal(d: usize) -> Vec<u32> {
    d.to_string().bytes().map(|b| (b - b'0') as u32).collect()
}

/// Document `d`'s title, or its first 12 text tokens when it has none.
fn title_seq(input: &DocidInput<'_>, d: usize) -> Vec<u32> {
    const FALLBACK: usize = 12;
    if input.titles[d].is_empty() {
        let text = input.texts.tokens(d);
        text[..text.len().min(FALLBACK)].to_vec()
    } else {
        input.titles[d].clone()
    }
}

/// Title identifiers: the title, or the first 12 text tokens when it is empty; documents that
/// would share one get `" (id)"` appended.
fn title_ids(input: &DocidInput<'_>) -> Result<Vec<Vec<u32>>> {
    let mut seqs: Vec<Vec<u32>> = (0..input.ids.len()).map(|d| title_seq(input, d)).collect();
    let mut groups: HashMap<Vec<u32>, Vec<usize>> = HashMap::new();
    for (d, s) in seqs.iter().enumerate() {
        groups.entry(s.clone()).or_default().push(d);
    }
    let mut dups: Vec<usize> = groups
        .into_values()
        .filter(|g| g.len() > 1 || g.iter().any(|&d| seqs[d].is_empty()))
        .flatten()
        .collect();
    dups.sort_unstable();
    for d in dups {
        let suffix = (input.id_suffix)(d)?;
        seqs[d].extend(suffix);
    }
    Ok(seqs)
}

/// TF-IDF vectors of the documents projected to `dims` dimensions by a seeded Gaussian random
/// matrix (Johnson-Lindenstrauss), L2-normalised; row-major `docs x dims`.
pub fn tfidf_projection<D: TokenDocs + ?Sized>(
    texts: &D,
    vocab: u32,
    dims: usize,
    seed: u64,
) -> Vec<f32> {
    let n = texts.count();
    let mut df = vec![0u32; vocab as usize];
    for d in 0..n {
        let mut seen: Vec<u32> = texts.tokens(d).into_owned();
        seen.sort_unstable();
        seen.dedup();
        for s in seen {
            df[s as usize] += 1;
        }
    }
    // One projection row per used token, generated from (seed, token) so it does not depend
    // on which other tokens occur.
    let rows: HashMap<u32, Vec<f32>> = df
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(t, _)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((t as u64) << 24));
            let row: Vec<f32> = (0..dims).map(|_| StandardNormal.sample(&mut rng)).collect();
            (t as u32, row)
        })
        .collect();
    let mut out = vec![0f32; n * dims];
    out.par_chunks_mut(dims.max(1))
        .enumerate()
        .for_each(|(d, v)| {
            let mut tf: HashMap<u32, u32> = HashMap::new();
            for &s in texts.tokens(d).iter() {
                *tf.entry(s).or_default() += 1;
            }
            let mut entries: Vec<(u32, u32)> = tf.into_iter().collect();
            entries.sort_unstable();
            for (s, c) in entries {
                let idf = ((n as f32 + 1.0) / (df[s as usize] as f32 + 1.0)).ln() + 1.0;
                let w = (1.0 + (c as f32).ln()) * idf;
                for (x, r) in v.iter_mut().zip(&rows[&s]) {
                    *x += w * r;
                }
            }
            normalize(v);
        });
    out
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// DSI's semantic identifiers: k-means with `k` clusters, recursively on every cluster larger
/// than `leaf_size`; a document's identifier is its path of cluster numbers then its position
/// in its leaf. Deterministic in `options.seed`.
fn hierarchical_kmeans(
    data: &[f32],
    dim: usize,
    n: usize,
    options: &SemanticOptions,
) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); n];
    let items: Vec<u32> = (0..n as u32).collect();
    let k = options.k.max(2);
    let leaf = options.leaf_size.max(1);
    // Explicit stack rather than recursion: deep trees on degenerate data stay safe.
    let mut stack = vec![(items, Vec::<u32>::new(), 0u64)];
    while let Some((items, prefix, node)) = stack.pop() {
        if items.len() <= leaf {
            for (pos, &d) in items.iter().enumerate() {
                let mut id = prefix.clone();
                id.push(pos as u32);
                out[d as usize] = id;
            }
            continue;
        }
        let assign = kmeans(
            data,
            dim,
            &items,
            k,
            options.iterations,
            options.seed ^ node,
        );
        let mut groups = vec![Vec::new(); k];
        for (&d, &c) in items.iter().zip(&assign) {
            groups[c as usize].push(d);
        }
        if groups.iter().any(|g| g.len() == items.len()) {
            // Indistinguishable vectors: split evenly so the tree still shrinks.
            let size = items.len().div_ceil(k);
            groups = items.chunks(size).map(<[u32]>::to_vec).collect();
        }
        for (c, group) in groups.into_iter().enumerate().rev() {
            if !group.is_empty() {
                let mut p = prefix.clone();
                p.push(c as u32);
                let child = node.wrapping_mul(31).wrapping_add(c as u64 + 1);
                stack.push((group, p, child));
            }
        }
    }
    out
}

/// Identifiers for the documents whose vectors follow those of `old`'s in `data` (see
/// [`DocIds::extend`]), each placed in the tree `old` spells, which grows as they are placed.
fn extend_semantic(old: &[Vec<u32>], data: &[f32], dim: usize, alphabet: u32) -> Vec<Vec<u32>> {
    /// Each node's sum of its documents' vectors (every prefix of an identifier, the
    /// identifier included), its child symbols, and the identifiers.
    #[derive(Default)]
    struct Tree {
        sums: HashMap<Vec<u32>, Vec<f32>>,
        children: HashMap<Vec<u32>, std::collections::BTreeSet<u32>>,
        ids: std::collections::HashSet<Vec<u32>>,
    }
    impl Tree {
        fn add(&mut self, id: &[u32], v: &[f32]) {
            for l in 1..=id.len() {
                let sum = self
                    .sums
                    .entry(id[..l].to_vec())
                    .or_insert_with(|| vec![0.0; v.len()]);
                sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
                self.children
                    .entry(id[..l - 1].to_vec())
                    .or_default()
                    .insert(id[l - 1]);
            }
            self.ids.insert(id.to_vec());
        }

        /// Whether `node`'s children are all documents with nothing under them.
        fn is_leaf(&self, node: &[u32], kids: &std::collections::BTreeSet<u32>) -> bool {
            kids.iter().all(|&c| {
                let child = [node, &[c]].concat();
                self.ids.contains(&child) && !self.children.contains_key(&child)
            })
        }
    }
    let row = |d: usize| &data[d * dim..(d + 1) * dim];
    let mut tree = Tree::default();
    for (d, id) in old.iter().enumerate() {
        tree.add(id, row(d));
    }
    let mut out = Vec::new();
    for d in old.len()..data.len() / dim.max(1) {
        let v = row(d);
        let mut node: Vec<u32> = Vec::new();
        let id = loop {
            let Some(kids) = tree.children.get(&node) else {
                node.push(0);
                break node;
            };
            let free = kids.last().map_or(0, |&c| c + 1);
            if free < alphabet && tree.is_leaf(&node, kids) {
                node.push(free);
                break node;
            }
            // The child nearest in direction (cosine to its documents' sum); ties: lowest.
            let cosine = |c: u32| {
                let sum = &tree.sums[&[&node[..], &[c]].concat()];
                let norm = sum
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::MIN_POSITIVE);
                sum.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() / norm
            };
            let best = kids
                .iter()
                .map(|&c| (c, cosine(c)))
                .fold(None, |best: Option<(u32, f32)>, (c, s)| match best {
                    Some((_, b)) if b >= s => best,
                    _ => Some((c, s)),
                })
                .expect("a node in the map has a child")
                .0;
            node.push(best);
        };
        tree.add(&id, v);
        out.push(id);
    }
    out
}

/// Lloyd's k-means with k-means++ seeding over the rows `items` of `data`; returns each item's
/// cluster. O(iterations x items x k x dim).
fn kmeans(
    data: &[f32],
    dim: usize,
    items: &[u32],
    k: usize,
    iterations: usize,
    seed: u64,
) -> Vec<u32> {
    let row = |d: u32| &data[d as usize * dim..(d as usize + 1) * dim];
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centroids: Vec<Vec<f32>> = vec![row(items[rng.random_range(0..items.len())]).to_vec()];
    let mut nearest: Vec<f32> = items.iter().map(|&d| dist(row(d), &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = nearest.iter().map(|&x| x as f64).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut chosen = items.len() - 1;
            for (i, &x) in nearest.iter().enumerate() {
                target -= x as f64;
                if target <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.random_range(0..items.len())
        };
        let c = row(items[pick]).to_vec();
        for (m, &d) in nearest.iter_mut().zip(items) {
            *m = m.min(dist(row(d), &c));
        }
        centroids.push(c);
    }
    let mut assign = vec![0u32; items.len()];
    for _ in 0..iterations.max(1) {
        let next: Vec<u32> = items
            .par_iter()
            .map(|&d| {
                let r = row(d);
                let mut best = (f32::INFINITY, 0u32);
                for (c, cen) in centroids.iter().enumerate() {
                    let x = dist(r, cen);
                    if x < best.0 {
                        best = (x, c as u32);
                    }
                }
                best.1
            })
            .collect();
        let changed = next != assign;
        assign = next;
        let mut sums = vec![vec![0f32; dim]; k];
        let mut counts = vec![0usize; k];
        for (&d, &c) in items.iter().zip(&assign) {
            counts[c as usize] += 1;
            for (s, x) in sums[c as usize].iter_mut().zip(row(d)) {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centroids[c] = sums[c].iter().map(|s| s / counts[c] as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    assign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DocIds {
        let seqs = vec![vec![2, 1], vec![0, 3], vec![2], vec![1, 1, 1]];
        DocIds::from_sequences(Scheme::Semantic, 100, 4, &seqs).unwrap()
    }

    fn write(path: &Path, ids: &DocIds, version: u32, order: Option<&[u32]>) {
        let mut w = ArrayWriter::new();
        w.u64s(&[ids.scheme.code(), ids.offset as u64, ids.alphabet as u64])
            .u32s(&ids.starts)
            .u32s(&ids.symbols);
        if let Some(order) = order {
            w.u32s(order);
        }
        w.write(path, MAGIC, version).unwrap();
    }

    #[test]
    fn the_stored_order_reads_back_and_a_wrong_one_is_refused() {
        let ids = sample();
        assert_eq!(ids.order, vec![1, 3, 2, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docids.bin");
        ids.save(&path).unwrap();
        assert_eq!(DocIds::load(&path).unwrap(), ids);
        // Format 1 had no order: sorted on load, the same identifiers.
        write(&path, &ids, 1, None);
        assert_eq!(DocIds::load(&path).unwrap(), ids);
        for bad in [&[1, 2, 3, 0][..], &[1, 3, 3, 0], &[1, 3, 2], &[1, 3, 2, 9]] {
            write(&path, &ids, 2, Some(bad));
            let err = DocIds::load(&path).unwrap_err().to_string();
            assert!(err.contains("docids.bin") && err.contains("order"), "{err}");
        }
    }

    /// `n` documents with these titles and no text, for [`DocIds::extend`].
    fn input<'a>(
        ids: &'a [String],
        titles: &'a [Vec<u32>],
        suffix: &'a (dyn Fn(usize) -> Result<Vec<u32>> + Sync),
    ) -> DocidInput<'a> {
        let texts: &'a Vec<Vec<u32>> = Box::leak(Box::new(vec![Vec::new(); ids.len()]));
        DocidInput {
            ids,
            titles,
            texts,
            id_suffix: suffix,
            vocab: 50,
        }
    }

    #[test]
    fn added_documents_keep_every_identifier_and_get_new_ones() {
        let ids = |n: usize| (0..n).map(|d| format!("d{d}")).collect::<Vec<_>>();
        let suffix = |d: usize| Ok(vec![40 + d as u32]);
        let none = vec![Vec::new(); 8];
        // naive: positions on from the last.
        let naive = DocIds::from_sequences(
            Scheme::Naive,
            50,
            10,
            &(0..9).map(decimal).collect::<Vec<_>>(),
        )
        .unwrap();
        let new_ids = ids(3);
        let grown = naive
            .extend(&input(&new_ids, &none[..3], &suffix), None)
            .unwrap();
        assert_eq!(grown.len(), 12);
        assert!((0..9).all(|d| grown.symbols(d) == naive.symbols(d)));
        assert_eq!(grown.symbols(10), &[1, 0]);
        // title: a repeated title gets the id's suffix.
        let titled = DocIds::from_sequences(Scheme::Title, 0, 50, &[vec![5, 6], vec![7]]).unwrap();
        let titles = vec![vec![5, 6], vec![9], vec![9]];
        let grown = titled
            .extend(&input(&new_ids, &titles, &suffix), None)
            .unwrap();
        assert_eq!(grown.symbols(2), &[5, 6, 40]);
        assert_eq!(grown.symbols(3), &[9]);
        assert_eq!(grown.symbols(4), &[9, 42]);
        // atomic: refused, with the way out.
        let atomic = DocIds::from_sequences(Scheme::Atomic, 50, 2, &[vec![0], vec![1]]).unwrap();
        let err = atomic
            .extend(&input(&new_ids, &none[..3], &suffix), None)
            .unwrap_err();
        assert!(err.to_string().contains("rebuild"), "{err}");
    }

    #[test]
    fn an_added_document_joins_its_nearest_cluster() {
        // Three well-separated blobs in 8 dimensions; 60 documents clustered, 6 added.
        let dim = 8;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut point = |blob: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            v[blob] += 1.0;
            normalize(&mut v);
            v
        };
        let blob_of = |d: usize| d % 3;
        let data: Vec<f32> = (0..66).flat_map(|d| point(blob_of(d))).collect();
        let options = SemanticOptions {
            k: 3,
            leaf_size: 10,
            ..SemanticOptions::default()
        };
        let old = hierarchical_kmeans(&data[..60 * dim], dim, 60, &options);
        let built = DocIds::from_sequences(Scheme::Semantic, 50, 10, &old).unwrap();
        let new_ids: Vec<String> = (60..66).map(|d| format!("d{d}")).collect();
        let none = vec![Vec::new(); 6];
        let suffix = |_: usize| Ok(Vec::new());
        let grown = built
            .extend(&input(&new_ids, &none, &suffix), Some((&data, dim)))
            .unwrap();
        assert_eq!(grown.len(), 66);
        assert!((0..60).all(|d| grown.symbols(d) == built.symbols(d)));
        for d in 60..66 {
            let first = grown.symbols(d as u32)[0];
            let same_blob = (0..60).filter(|&o| blob_of(o) == blob_of(d));
            let firsts: Vec<u32> = same_blob.map(|o| built.symbols(o as u32)[0]).collect();
            assert!(
                firsts.contains(&first),
                "document {d}: {:?}",
                grown.symbols(d as u32)
            );
            assert!(
                firsts.iter().all(|&f| f == first),
                "the blobs are one cluster each"
            );
        }
        // A full leaf (4 documents, alphabet 4): the new one goes under its nearest document.
        let full = DocIds::from_sequences(
            Scheme::Semantic,
            50,
            4,
            &[vec![0], vec![1], vec![2], vec![3]],
        )
        .unwrap();
        let vectors: Vec<f32> = [0usize, 1, 2, 3, 2]
            .iter()
            .flat_map(|&b| point(b))
            .collect();
        let one = &new_ids[..1];
        let grown = full
            .extend(&input(one, &none[..1], &suffix), Some((&vectors, dim)))
            .unwrap();
        assert_eq!(grown.symbols(4), &[2, 0]);
        // With room in the leaf, the next free position.
        let room = DocIds::from_sequences(
            Scheme::Semantic,
            50,
            8,
            &[vec![0], vec![1], vec![2], vec![3]],
        )
        .unwrap();
        let grown = room
            .extend(&input(one, &none[..1], &suffix), Some((&vectors, dim)))
            .unwrap();
        assert_eq!(grown.symbols(4), &[4]);
    }
}
