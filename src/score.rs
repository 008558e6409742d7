//! score: here are the n-grams (or docids) the model wrote, which documents do they point to?
//!
//! SEAL's LM+FM scoring. An n-gram `n` the model wrote for query `q` with probability
//! `P(n|q)` gets the weight
//!
//! ```text
//! w(n, q) = max(0, log[P(n|q) (1 - P(n))] - log[P(n) (1 - P(n|q))])
//! P(n)    = (DF(n) + s) / (N + s)        DF: documents holding n, N: corpus tokens, s = 5
//! ```
//!
//! so n-grams the model likes more than the corpus predicts count, and common ones do not.
//! SEAL counts an n-gram's occurrences `F(n)` where genret counts the documents holding it,
//! as BM25's idf does: a word its documents repeat (a topic word: Cranfield's "flutter", 276
//! occurrences in 56 documents) is rarer than its occurrences say, and weighs as rare
//! (measured on three collections: docs/BENCHMARKS.md). An n-gram's documents are located when it occurs at most
//! `max_ngram_freq` times (the candidates below need them anyway); a more frequent word's were
//! counted with the word table ([`WordForms::doc_freq`]); another frequent n-gram's number is
//! estimated from a sample of `df_sample` (250) occurrences ([`WeightedNgram::locate_docs`]).
//! A document's intersective score sums the weights of the n-grams it contains, strongest
//! first, each raised to `alpha` and scaled by its coverage
//! `cover(n) = 1 - beta + beta * |tokens(n) \ tokens already covered| / |tokens(n)|`, which
//! stops overlapping n-grams from counting the same words twice. Defaults are SEAL's
//! (alpha = 2, beta = 0.8).
//!
//! genret adds BM25's term-frequency saturation and length normalisation to each n-gram's
//! term: `w^alpha * cover * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))`, with BM25's
//! usual `k1 = 1.2`, `b = 0.75` (`k1 = 0` gives SEAL's score, which counts an n-gram once
//! however often the document repeats it and whatever the document's length). Why: with the
//! query's own n-grams weighted alike, this scored better than SEAL's on all three collections
//! tried (docs/BENCHMARKS.md), and BM25's constants are the ones every collection gets.
//!
//! Also as BM25 reads text, an n-gram is read as its content words, without stop words and
//! punctuation at either end (a piece of a query word as the word), and n-grams with one
//! content count as one term
//! (`SealParams::content`); n-grams that differ only in the forms of their words are one term
//! ([`crate::stem`], `SealParams::stem`): both gain on all three collections
//! (docs/BENCHMARKS.md).
//!
//! Candidate documents come from every occurrence of the n-grams at most `max_ngram_freq`
//! times in the corpus, and from a sample of a more frequent n-gram's: up to
//! `max_ngram_freq` of the occurrences at the FM-index's sampled text positions (one in 16 by
//! default, located for free; locating all would cost up to 16 LF steps each and nominate every
//! document). A document holding several of a query's frequent words is likely in one of
//! their samples; in a large corpus those words are the ones that tell relevant documents
//! apart.
//! Every candidate is then scored fully, with every n-gram, frequent ones included, over its
//! tokens read from the index's token store (a slice per document, ~1 us to score), up to
//! `rerank` (10,000) candidates chosen by a first pass (the sum of `w^alpha` over the
//! nominating n-grams a candidate holds). Scoring only a first-pass shortlist lost the
//! relevant documents once the corpus was large: the first pass sees only rare n-grams, and
//! the words that tell relevant documents apart are frequent there (docs/BENCHMARKS.md,
//! "Growing with the corpus"). An index without a token store (built before it) reads
//! candidates from the FM-index, ~100x dearer, and scores at most
//! [`EXTRACTED_RERANK`] (300, three times `genret bench`'s depth).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::decode::Hypothesis;
use crate::docid::{DocIds, TrieState};
use crate::error::Result;
use crate::fmindex::{Shards, Span};
use crate::stem::{Form, WordForms};

/// One of a query's SEAL terms: what the model wrote, as documents are scored by it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Term {
    /// The n-gram as written (its other forms and the n-grams with the same content count
    /// as it).
    pub ngram: String,
    /// `P(n|q)`: the model's probability, summed over the n-grams counted as this one (so a
    /// sum over overlapping events, clamped below 1 when weighed).
    pub prob: f64,
    /// Occurrences in the corpus, every form counted.
    pub count: usize,
    /// Documents holding a form (estimated from a sample when `count` is above
    /// [`SealParams::max_ngram_freq`]); what the weight counts.
    pub docs: usize,
    /// Its weight `w(n, q)`; a document's score sums `w^alpha` over the terms it holds.
    pub weight: f64,
}

/// SEAL scoring parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SealParams {
    /// Exponent of an n-gram's weight in a document's score.
    pub alpha: f64,
    /// Weight of the coverage penalty (0: none, 1: an n-gram of covered words counts 0).
    pub beta: f64,
    /// Additive smoothing of the corpus frequency.
    pub smoothing: f64,
    /// N-grams occurring at most this often are located whole (their documents nominate
    /// candidates); a more frequent one nominates from a sample of this many occurrences.
    pub max_ngram_freq: usize,
    /// Candidate documents scored fully.
    pub rerank: usize,
    /// Occurrences located to estimate how many documents hold a frequent n-gram that is not
    /// a corpus word ([`WeightedNgram::locate_docs`]).
    pub df_sample: usize,
    /// Term-frequency saturation (0: an n-gram counts once per document).
    pub k1: f64,
    /// Length normalisation (0: none, 1: full).
    pub b: f64,
    /// Weigh an n-gram by the documents holding it rather than by its occurrences (SEAL's).
    pub doc_freq: bool,
    /// Count the corpus's n-grams that differ from a written one only in the forms of its
    /// words ("flows" for "flow") as that n-gram ([`crate::stem`]).
    pub stem: bool,
    /// Read each n-gram as its content words, without English stop words and punctuation at
    /// either end, and a piece of a query word as the word ([`crate::content::content_ngrams`];
    /// applied by [`crate::seal::Seal`], which has the tokenizer and the query); n-grams
    /// of stop words and punctuation alone are no term.
    pub content: bool,
}

impl SealParams {
    /// The defaults, with n-grams matched exactly as written when `exact` (no content reading,
    /// no word forms: for a corpus not in English).
    pub fn exact_ngrams(exact: bool) -> SealParams {
        SealParams {
            stem: !exact,
            content: !exact,
            ..SealParams::default()
        }
    }
}

impl Default for SealParams {
    fn default() -> Self {
        SealParams {
            alpha: 2.0,
            beta: 0.8,
            smoothing: 5.0,
            max_ngram_freq: 1000,
            rerank: 10_000,
            // The count enters the weight as a logarithm: a sample of 250 puts it within
            // ~6 % (1/sqrt(250)), ~0.06 of a weight, at a quarter of 1,000's LF walks.
            df_sample: 250,
            k1: 1.2,
            b: 0.75,
            doc_freq: true,
            stem: true,
            content: true,
        }
    }
}

/// Candidates scored fully at most when they are extracted from the FM-index rather than read
/// from a token store (see the module docs).
pub const EXTRACTED_RERANK: usize = 300;

/// `w(n, q)` from `log P(n|q)`, the n-gram's corpus frequency (its documents, or SEAL's
/// occurrences) and the corpus size in tokens. `P(n|q)` is clamped below 1 so a certain
/// n-gram gets a large finite weight.
pub fn ngram_weight(log_p_nq: f64, freq: f64, corpus_tokens: usize, smoothing: f64) -> f64 {
    let p_nq = log_p_nq.exp().clamp(f64::MIN_POSITIVE, 1.0 - 1e-9);
    let p_n = (freq + smoothing) / (corpus_tokens as f64 + smoothing);
    let w = (p_nq * (1.0 - p_n)).ln() - (p_n * (1.0 - p_nq)).ln();
    w.max(0.0)
}

/// An n-gram with its weight for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedNgram {
    pub tokens: Vec<u32>,
    /// `log P(n|q)`.
    pub log_prob: f32,
    pub range: Span,
    pub weight: f64,
    /// Other forms of the n-gram counted as it (see [`crate::stem`]); empty when it is matched
    /// exactly.
    pub variants: Vec<Form>,
    /// Documents holding a form, sorted: all of them when the n-gram occurs at most
    /// `max_ngram_freq` times; else those of a sample: the FM-index's sampled occurrences
    /// ([`WeightedNgram::add_sampled_docs`]) and any located to estimate `doc_freq`
    /// ([`WeightedNgram::locate_docs`]).
    pub docs: Vec<u32>,
    /// How many documents hold a form: `docs.len()` when all are located; for a more
    /// frequent corpus word, counted when the word table was built ([`WordForms::doc_freq`]);
    /// else estimated from the sample.
    pub doc_freq: f64,
}

impl WeightedNgram {
    /// The token ids and FM-index span of every form, the written one first.
    pub fn forms(&self) -> impl Iterator<Item = (&[u32], &Span)> {
        std::iter::once((&self.tokens[..], &self.range))
            .chain(self.variants.iter().map(|f| (&f.tokens[..], &f.range)))
    }

    /// Occurrences of all forms in the corpus.
    pub fn count(&self) -> usize {
        self.forms().map(|(_, r)| r.count()).sum()
    }

    /// Sets [`WeightedNgram::docs`], locating every occurrence if there are at most `limit`,
    /// else `sample` of them (locate costs up to the FM-index's sample rate in LF steps each),
    /// and returns how many documents hold a form.
    ///
    /// At most `limit` occurrences: every one is located and the count is exact. More: `sample`
    /// occurrences spread evenly over each form's suffix-array range are located (that order
    /// follows the text after the n-gram, not the document, so the sample is close to a random
    /// one), and the number of documents is estimated from the sample as species are from
    /// individuals, by bias-corrected Chao1: `d + f1 (f1 - 1) / (2 (f2 + 1))` with `d`
    /// documents seen, `f1` of them once and `f2` twice, between `d` and the occurrences.
    /// Scaling `d` by the sampled fraction instead overestimates the documents of words their
    /// documents repeat, the very words the document frequency is for (both measured in
    /// docs/BENCHMARKS.md).
    pub fn locate_docs(&mut self, fm: &Shards, limit: usize, sample: usize) -> f64 {
        self.locate_docs_with(fm, limit, sample, &Located::default())
    }

    /// [`WeightedNgram::locate_docs`], with the forms' occurrences read from `located` where
    /// another n-gram of the batch located them, and kept there.
    pub fn locate_docs_with(
        &mut self,
        fm: &Shards,
        limit: usize,
        sample: usize,
        located: &Located,
    ) -> f64 {
        let count = self.count();
        // Every occurrence, or each form's (and each shard's) share of the sample.
        let share = (count > limit).then_some((sample.max(1), count));
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for (_, span) in self.forms() {
            for &doc in located.docs(fm, span, share).iter() {
                *seen.entry(doc).or_default() += 1;
            }
        }
        let d = seen.len() as f64;
        let estimate = (count > limit).then(|| {
            let times = |k| seen.values().filter(|&&v| v == k).count() as f64;
            let (f1, f2) = (times(1), times(2));
            (d + f1 * (f1 - 1.0) / (2.0 * (f2 + 1.0))).clamp(d, count as f64)
        });
        self.docs = seen.into_keys().collect();
        self.docs.sort_unstable();
        estimate.unwrap_or(d)
    }
}

/// The documents of the occurrences located for a batch of queries, by pattern and sample:
/// queries decoded together write many of the same n-grams, and locate (up to the FM-index's
/// sample rate in LF steps per occurrence) is the dearest part of weighing them. Answers are
/// those of locating anew; the batch's threads share one. Holds at most
/// [`Located::CAPACITY`] document numbers; past that, occurrences are located and not kept.
#[derive(Default)]
pub struct Located {
    found: Mutex<Found>,
}

/// Which of a pattern's occurrences are located: all (`None`), or `Some((want, of))` as
/// [`Shards::locate_evenly`] picks them.
type Share = Option<(usize, usize)>;

/// What a [`Located`] holds: documents by pattern span and share of its occurrences.
#[derive(Default)]
struct Found {
    docs: HashMap<(Span, Share), Arc<[u32]>>,
    /// Document numbers in `docs`.
    held: usize,
}

impl Located {
    /// Most document numbers kept (64 MiB).
    pub const CAPACITY: usize = 1 << 24;

    /// The document of each occurrence of the pattern of `span` that `share` picks, in
    /// [`Shards::locate`]'s order.
    pub fn docs(&self, fm: &Shards, span: &Span, share: Share) -> Arc<[u32]> {
        let key = (span.clone(), share);
        if let Some(docs) = self.found.lock().expect("not poisoned").docs.get(&key) {
            return docs.clone();
        }
        let occurrences = match share {
            None => fm.locate(span, usize::MAX),
            Some((want, of)) => fm.locate_evenly(span, want, of),
        };
        let docs: Arc<[u32]> = occurrences.iter().map(|o| o.doc).collect();
        let mut found = self.found.lock().expect("not poisoned");
        if found.held + docs.len() <= Self::CAPACITY {
            found.held += docs.len();
            found.docs.insert(key, docs.clone());
        }
        docs
    }

    /// Patterns (with their share) whose documents are kept.
    pub fn patterns(&self) -> usize {
        self.found.lock().expect("not poisoned").docs.len()
    }
}

impl WeightedNgram {
    /// Adds to [`WeightedNgram::docs`] the documents of up to `limit` of the occurrences at
    /// the FM-index's sampled text positions ([`Shards::sampled_occurrences`]: about one in
    /// `sample_rate`, no LF step), spread over the forms and shards by their counts.
    pub fn add_sampled_docs(&mut self, fm: &Shards, limit: usize) {
        let count = self.count().max(1);
        let mut docs = std::mem::take(&mut self.docs);
        for (_, span) in self.forms() {
            docs.extend(
                fm.sampled_occurrences(span, limit, count)
                    .iter()
                    .map(|o| o.doc),
            );
        }
        docs.sort_unstable();
        docs.dedup();
        self.docs = docs;
    }
}

/// A scored document and the n-grams it contains, strongest first, each as
/// `(index into the query's n-gram list, index of the first of its forms the document
/// holds)` ([`WeightedNgram::forms`]; 0: the written one).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredDoc {
    pub doc: u32,
    pub score: f64,
    pub ngrams: Vec<(usize, usize)>,
}

/// Weights every decoded n-gram; keeps those with a positive weight, strongest first, with
/// the documents [`seal_rank`] nominates candidates from located
/// ([`WeightedNgram::locate_docs`]). An n-gram in `hyps` more than once (as
/// [`crate::content::content_ngrams`] leaves them) is one, with the probabilities summed.
///
/// With `forms`, n-grams that differ only in the forms of their words count as one, as a
/// stemmed term does in BM25 ([`WordForms::phrase`]): the model's probability of it is the sum
/// over the forms it wrote, its corpus frequency the sum over all its forms, and a document
/// containing any form matches it.
pub fn weigh_ngrams(
    fm: &Shards,
    hyps: &[Hypothesis<Span>],
    params: &SealParams,
    forms: Option<&WordForms>,
    located: &Located,
) -> Vec<WeightedNgram> {
    /// What an n-gram counts as: its words' stems where the corpus has other forms of it,
    /// else its tokens.
    #[derive(PartialEq, Eq, Hash)]
    enum Key {
        Stems(Vec<usize>),
        Tokens(Vec<u32>),
    }
    let mut out: Vec<WeightedNgram> = Vec::new();
    // A term already in `out` -> its place.
    let mut terms: HashMap<Key, usize> = HashMap::new();
    for h in hyps
        .iter()
        .filter(|h| !h.tokens.is_empty() && !h.state.is_empty())
    {
        let phrase = forms.and_then(|f| f.phrase(&h.tokens, fm));
        let term = match &phrase {
            Some(p) => Key::Stems(p.stems.clone()),
            None => Key::Tokens(h.tokens.clone()),
        };
        match terms.entry(term) {
            Entry::Occupied(e) => {
                let n = &mut out[*e.get()];
                n.log_prob = log_add(n.log_prob, h.score);
            }
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(WeightedNgram {
                    tokens: h.tokens.clone(),
                    log_prob: h.score,
                    range: h.state.clone(),
                    weight: 0.0,
                    variants: phrase.map_or_else(Vec::new, |p| p.variants),
                    docs: Vec::new(),
                    doc_freq: 0.0,
                });
            }
        }
    }
    let weight = |n: &WeightedNgram, freq: f64| {
        ngram_weight(n.log_prob as f64, freq, fm.tokens(), params.smoothing)
    };
    let limit = params.max_ngram_freq;
    // N-grams are located on rayon's threads: a query decoded alone (batch 1) uses them all.
    out.par_iter_mut().for_each(|n| {
        // A corpus word's documents were counted with the word table. No weight with that
        // count (or with one document, the least another n-gram can have): no locate.
        let word_docs = forms.and_then(|f| f.doc_freq(&n.tokens));
        if weight(n, word_docs.unwrap_or(1) as f64) <= 0.0 {
            return;
        }
        // The documents are located where that is cheap (and `seal_rank` needs them), so
        // the count is exactly the documents the score finds a form in; a frequent word's
        // count is the table's, another frequent n-gram's is estimated from a sample.
        n.doc_freq = match word_docs {
            Some(docs) if n.count() > limit => docs as f64,
            _ => n.locate_docs_with(fm, limit, params.df_sample, located),
        };
        let freq = if params.doc_freq {
            n.doc_freq
        } else {
            n.count() as f64
        };
        n.weight = weight(n, freq);
    });
    out.retain(|n| n.weight > 0.0);
    // The documents `seal_rank` nominates candidates from: the rare n-grams' all, or where
    // every n-gram is frequent, a sample of each one's.
    let all_frequent = out.iter().all(|n| n.count() > limit);
    out.par_iter_mut()
        .filter(|n| n.docs.is_empty() && (all_frequent || n.count() <= limit))
        .for_each(|n| {
            n.locate_docs_with(fm, limit, limit, located);
        });
    // A frequent n-gram nominates too, from the occurrences the FM-index has located already
    // (its sampled positions): in a large corpus the words that tell a query's documents
    // apart are all frequent, and a document holding several of them is likely sampled in one.
    for n in out.iter_mut().filter(|n| n.count() > limit) {
        n.add_sampled_docs(fm, limit);
    }
    out.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.tokens.cmp(&b.tokens)));
    out
}

/// `ln(e^a + e^b)` without overflow.
fn log_add(a: f32, b: f32) -> f32 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// The intersective score of a document with tokens `doc` given `ngrams` (strongest first),
/// in a corpus whose mean document length is `avg_len`: the score and the n-grams it
/// contains, as in [`ScoredDoc::ngrams`]. Builds a [`Scorer`] for one document: to score
/// many, build one and call [`Scorer::score`].
pub fn intersective_score(
    doc: &[u32],
    ngrams: &[WeightedNgram],
    params: &SealParams,
    avg_len: f64,
) -> (f64, Vec<(usize, usize)>) {
    Scorer::new(ngrams, params, avg_len).score(doc)
}

/// [`intersective_score`] prepared once for a query's n-grams: which forms start with each
/// token, so that a document is scored in one pass over its tokens. O(|doc| + matches) per
/// document; building it is O(total form length + largest first token).
pub struct Scorer<'a> {
    params: SealParams,
    avg_len: f64,
    /// `w^alpha` of each n-gram.
    strength: Vec<f64>,
    /// First token -> index into `starting` + 1 (0: no form starts with it).
    first: Vec<u32>,
    /// The (n-gram, form) pairs starting with one token, in n-gram then form order.
    starting: Vec<Vec<(usize, usize)>>,
    /// Each n-gram's forms' tokens, in [`WeightedNgram::forms`] order.
    forms: Vec<Vec<&'a [u32]>>,
}

impl<'a> Scorer<'a> {
    pub fn new(ngrams: &'a [WeightedNgram], params: &SealParams, avg_len: f64) -> Scorer<'a> {
        let forms: Vec<Vec<&[u32]>> = ngrams
            .iter()
            .map(|n| n.forms().map(|(t, _)| t).collect())
            .collect();
        let weights: Vec<f64> = ngrams.iter().map(|n| n.weight).collect();
        Scorer::of_forms(forms, &weights, params, avg_len)
    }

    /// A scorer of n-grams given by their forms' tokens (each n-gram's written form first) and
    /// their weights alone: what a server that holds documents but no FM-index needs.
    pub fn of_forms(
        forms: Vec<Vec<&'a [u32]>>,
        weights: &[f64],
        params: &SealParams,
        avg_len: f64,
    ) -> Scorer<'a> {
        let mut first: Vec<u32> = Vec::new();
        let mut starting: Vec<Vec<(usize, usize)>> = Vec::new();
        for (n, fs) in forms.iter().enumerate() {
            for (f, tokens) in fs.iter().enumerate() {
                let Some(&t) = tokens.first() else { continue };
                let t = t as usize;
                if first.len() <= t {
                    first.resize(t + 1, 0);
                }
                if first[t] == 0 {
                    starting.push(Vec::new());
                    first[t] = starting.len() as u32;
                }
                starting[first[t] as usize - 1].push((n, f));
            }
        }
        Scorer {
            params: *params,
            avg_len,
            strength: weights.iter().map(|w| w.powf(params.alpha)).collect(),
            first,
            starting,
            forms,
        }
    }

    /// The score of document `doc` and the n-grams it contains (see [`intersective_score`]).
    pub fn score(&self, doc: &[u32]) -> (f64, Vec<(usize, usize)>) {
        let params = &self.params;
        let norm =
            params.k1 * (1.0 - params.b + params.b * doc.len() as f64 / self.avg_len.max(1.0));
        // Every (n-gram, form, position) where a form occurs.
        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        for (p, &t) in doc.iter().enumerate() {
            let slot = self.first.get(t as usize).copied().unwrap_or(0);
            if slot == 0 {
                continue;
            }
            for &(n, f) in &self.starting[slot as usize - 1] {
                let tokens = self.forms[n][f];
                if doc.get(p..p + tokens.len()) == Some(tokens) {
                    hits.push((n, f, p));
                }
            }
        }
        hits.sort_unstable();
        let mut covered = std::collections::HashSet::new();
        let mut score = 0.0;
        let mut matched = Vec::new();
        let mut starts: Vec<usize> = Vec::new();
        let mut distinct: Vec<u32> = Vec::new();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let n = group[0].0;
            // Forms of one word may share a start (a form that is another's prefix): a
            // position counts once.
            starts.clear();
            starts.extend(group.iter().map(|h| h.2));
            starts.sort_unstable();
            starts.dedup();
            distinct.clear();
            for forms in group.chunk_by(|a, b| a.1 == b.1) {
                distinct.extend_from_slice(self.forms[n][forms[0].1]);
            }
            distinct.sort_unstable();
            distinct.dedup();
            let tf = starts.len() as f64;
            let new = distinct.iter().filter(|t| !covered.contains(*t)).count();
            let cover = 1.0 - params.beta + params.beta * new as f64 / distinct.len() as f64;
            let saturated = tf * (params.k1 + 1.0) / (tf + norm);
            score += self.strength[n] * cover * saturated;
            covered.extend(distinct.iter().copied());
            matched.push((n, group[0].1));
        }
        (score, matched)
    }
}

/// Ranks documents from weighted n-grams with their documents located, as [`weigh_ngrams`]
/// leaves them (see the module docs); the best `k`, best first, ties by document number.
/// `doc_tokens` gives a candidate's tokens (a slice of the index's token store, or the
/// FM-index's extraction); the best `rerank` candidates of the first pass are scored, in
/// parallel.
pub fn seal_rank(
    fm: &Shards,
    ngrams: &[WeightedNgram],
    params: &SealParams,
    k: usize,
    doc_tokens: &(dyn Fn(u32) -> Result<Vec<u32>> + Sync),
) -> Result<Vec<ScoredDoc>> {
    let candidates = seal_candidates(ngrams, params, k);
    let scorer = Scorer::new(ngrams, params, average_len(fm));
    score_candidates(&scorer, &candidates, k, doc_tokens)
}

/// The first pass of [`seal_rank`]: documents nominated by the n-grams' located documents,
/// by summed `w^alpha`, the best `max(rerank, k)`, best first, ties by document number.
pub fn seal_candidates(ngrams: &[WeightedNgram], params: &SealParams, k: usize) -> Vec<u32> {
    let mut first: HashMap<u32, f64> = HashMap::new();
    for n in ngrams {
        for &d in &n.docs {
            *first.entry(d).or_default() += n.weight.powf(params.alpha);
        }
    }
    let mut candidates: Vec<(u32, f64)> = first.into_iter().collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.truncate(params.rerank.max(k));
    candidates.into_iter().map(|(d, _)| d).collect()
}

/// The average document length in tokens that scoring normalises by.
pub fn average_len(fm: &Shards) -> f64 {
    fm.tokens() as f64 / fm.docs().max(1) as f64
}

/// The second pass of [`seal_rank`]: `candidates` scored over their tokens in parallel, the
/// best `k`, best first, ties by document number. Any subset of the candidates (those one
/// server holds) gives the scores the whole would, so results merged by the same order equal
/// one pass over all.
pub fn score_candidates(
    scorer: &Scorer<'_>,
    candidates: &[u32],
    k: usize,
    doc_tokens: &(dyn Fn(u32) -> Result<Vec<u32>> + Sync),
) -> Result<Vec<ScoredDoc>> {
    let mut scored = candidates
        .par_iter()
        .map(|&doc| {
            let (score, ngrams) = scorer.score(&doc_tokens(doc)?);
            Ok(ScoredDoc { doc, score, ngrams })
        })
        .collect::<Result<Vec<_>>>()?;
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    scored.truncate(k);
    Ok(scored)
}

/// DSI ranking: each finished docid hypothesis names one document, scored by its log-prob.
/// Best `k`, best first.
pub fn dsi_rank(docids: &DocIds, finished: &[Hypothesis<TrieState>], k: usize) -> Vec<(u32, f32)> {
    let mut out: Vec<(u32, f32)> = finished
        .iter()
        .filter_map(|h| docids.terminal(h.state).map(|d| (d, h.score)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out.dedup_by_key(|x| x.0);
    out.truncate(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::written;
    use crate::stem::tests::{corpus, forms_of};

    #[test]
    fn forms_the_model_wrote_weigh_as_one_word() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
        let hyp = |w: &str, p: f32| written(&tok, &fm, w, p.ln());
        let hyps = [hyp("flow", 0.6), hyp("wing", 0.8), hyp("flows", 0.3)];
        let params = SealParams::default();
        let exact = weigh_ngrams(&fm, &hyps, &params, None, &Located::default());
        assert_eq!(exact.len(), 3);
        assert!(exact.iter().all(|n| n.variants.is_empty()));

        let grouped = weigh_ngrams(&fm, &hyps, &params, Some(&forms), &Located::default());
        assert_eq!(grouped.len(), 2, "flow and flows are one word");
        let flow = grouped.iter().find(|n| n.tokens == hyps[0].tokens).unwrap();
        assert!((flow.log_prob - 0.9f32.ln()).abs() < 1e-6);
        let count = |w: &str| fm.count(&tok.encode(w).unwrap());
        let glue = tok.encode("-").unwrap().len();
        let glued = fm.count(&tok.encode("-flow").unwrap()[glue..]);
        assert_eq!(glued, 2, "high-flow, slip/flow");
        let all = count("flow") + count("flows") + count("flowing") + glued;
        assert_eq!(flow.count(), all);
        assert_eq!(flow.variants.len(), 3);
        // Weighed by the documents holding a form, each counted once.
        let mut docs: Vec<u32> = flow.forms().flat_map(|(_, r)| fm.docs_of(r)).collect();
        docs.sort_unstable();
        docs.dedup();
        assert!(docs.len() < all, "some document repeats a form");
        assert_eq!(flow.docs, docs);
        assert_eq!(flow.doc_freq, docs.len() as f64);
        let want = ngram_weight(
            0.9f32.ln() as f64,
            flow.doc_freq,
            fm.tokens(),
            params.smoothing,
        );
        assert!((flow.weight - want).abs() < 1e-6);
        // SEAL's weight counts the occurrences: lower.
        let seal = SealParams {
            doc_freq: false,
            ..params
        };
        let by_occurrences = weigh_ngrams(&fm, &hyps, &seal, Some(&forms), &Located::default());
        let by_occurrences = by_occurrences
            .iter()
            .find(|n| n.tokens == flow.tokens)
            .unwrap();
        let want = ngram_weight(
            0.9f32.ln() as f64,
            all as f64,
            fm.tokens(),
            params.smoothing,
        );
        assert!((by_occurrences.weight - want).abs() < 1e-6);
        assert!(by_occurrences.weight < flow.weight);
    }

    #[test]
    fn a_batch_locates_each_pattern_once_with_the_same_answers() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
        let hyp = |w: &str, p: f32| written(&tok, &fm, w, p.ln());
        let hyps = [hyp("flow", 0.6), hyp("wing", 0.8), hyp("flows", 0.3)];
        // A low limit and sample, so that both whole and sampled locates are kept.
        let params = SealParams {
            max_ngram_freq: 2,
            df_sample: 1,
            ..SealParams::default()
        };
        assert!(hyps.iter().any(|h| h.state.count() > 2));
        assert!(hyps.iter().any(|h| h.state.count() <= 2));
        let located = Located::default();
        let first = weigh_ngrams(&fm, &hyps, &params, Some(&forms), &located);
        let kept = located.patterns();
        assert!(kept > 0);
        let again = weigh_ngrams(&fm, &hyps, &params, Some(&forms), &located);
        assert_eq!(located.patterns(), kept, "nothing located anew");
        let fresh = weigh_ngrams(&fm, &hyps, &params, Some(&forms), &Located::default());
        for n in [&first, &again] {
            assert_eq!(n.len(), fresh.len());
            for (a, b) in n.iter().zip(&fresh) {
                assert_eq!(
                    (&a.tokens, &a.docs, a.doc_freq),
                    (&b.tokens, &b.docs, b.doc_freq)
                );
                assert_eq!(a.weight, b.weight);
            }
        }
    }
}
