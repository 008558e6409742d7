//! search: here is a query, which documents answer it?
//!
//! Ties an index and its trained model together: encodes queries, runs constrained beam
//! search ([`crate::decode`]) and ranks documents ([`crate::score`]). Queries are decoded in
//! batches, so many queries cost little more than one.
//!
//! ```no_run
//! # fn main() -> genret::Result<()> {
//! use genret::index::Index;
//! use genret::search::{SearchOptions, Searcher};
//!
//! let index = Index::open("cranfield.idx")?;
//! let searcher = Searcher::new(&index)?;
//! let results = searcher.search(&["boundary layer transition"], &SearchOptions::default())?;
//! for hit in &results[0].results {
//!     println!("{} {:.3} {}", hit.doc_id, hit.score, hit.title);
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::baseline::dense::{DenseEncoder, DenseIndex};
use crate::decode::{BeamOptions, DecodeTimes, FmConstraint, beam_search};
use crate::dsi::DsiModel;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::model::T5ForConditionalGeneration;
use crate::score::{SealParams, fuse_min_max, seal_rank, weigh_ngrams};
use crate::stem::{WordForms, content_ngrams};

/// What the model writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Corpus n-grams, FM-index constrained, SEAL scoring.
    #[default]
    Seal,
    /// Document identifiers, trie constrained, ranked by log-prob.
    Dsi,
    /// SEAL fused with dense retrieval: the best [`FUSION_DEPTH`] of each, min-max
    /// normalised and summed ([`crate::score::fuse_min_max`]); needs
    /// [`Searcher::with_dense`].
    #[serde(rename = "seal+dense")]
    SealDense,
}

/// Documents taken from each retriever before fusing.
pub const FUSION_DEPTH: usize = 100;

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "seal" => Ok(Mode::Seal),
            "dsi" => Ok(Mode::Dsi),
            "seal+dense" => Ok(Mode::SealDense),
            _ => Err(Error::InvalidInput(format!(
                "unknown search mode {s:?}: use seal, dsi or seal+dense"
            ))),
        }
    }
}

/// Search parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    pub mode: Mode,
    /// Documents returned per query.
    pub k: usize,
    pub beam: usize,
    /// Longest n-gram (SEAL); DSI decodes up to the longest docid.
    pub max_ngram_len: usize,
    /// N-grams kept from every decoding step (SEAL; at least `beam`): the beam continues the
    /// best `beam` extensions, but all of a step's extensions are scored, and the next best
    /// are n-grams the model also likes (a query's other words, mostly).
    pub ngrams_per_step: usize,
    /// Query tokens kept (the model was trained on sources of this length).
    pub max_query_len: usize,
    /// Queries decoded together.
    pub batch: usize,
    pub seal: SealParams,
    /// Also return each query's weighted n-grams ([`SearchResult::terms`]; SEAL modes).
    pub explain: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            mode: Mode::Seal,
            k: 10,
            beam: 10,
            max_ngram_len: 10,
            ngrams_per_step: 50,
            max_query_len: crate::train::MAX_SOURCE_LEN,
            batch: 16,
            seal: SealParams::default(),
            explain: false,
        }
    }
}

/// One retrieved document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub doc_id: String,
    pub score: f64,
    pub title: String,
    /// SEAL: the n-grams that matched the document, strongest first (at most 10).
    /// DSI: the identifier that named it (an atomic one: the document's id).
    pub ngrams: Vec<String>,
    /// The token ids of `ngrams`.
    #[serde(skip)]
    pub tokens: Vec<Vec<u32>>,
    /// Document number in the index.
    #[serde(skip)]
    pub doc: u32,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    pub query: String,
    /// Wall time of the query's batch divided by the batch size.
    pub took_ms: f64,
    pub results: Vec<Hit>,
    /// With [`SearchOptions::explain`] (SEAL modes): the terms the query was scored with,
    /// strongest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<Term>,
}

/// One of a query's SEAL terms: what the model wrote, as documents are scored by it
/// ([`crate::score`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// One query's hits and, when explained, its terms.
type Answer = (Vec<Hit>, Vec<Term>);

/// Time split of a [`Searcher::search`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchTimes {
    pub decode: DecodeTimes,
    /// Ranking documents from decoded strings (and for seal+dense, dense retrieval and
    /// fusion).
    pub scoring: std::time::Duration,
}

/// An index with its models, ready to answer queries.
pub struct Searcher<'a> {
    index: &'a Index,
    /// SEAL's model (`INDEX/model`).
    model: Option<T5ForConditionalGeneration>,
    /// DSI's model (`INDEX/dsi`).
    dsi: Option<DsiModel>,
    /// Built on the first search that matches word forms.
    forms: OnceLock<WordForms>,
    dense: Option<(DenseEncoder, DenseIndex)>,
}

impl<'a> Searcher<'a> {
    /// Loads the index's trained models (CPU): SEAL's and DSI's, those it has (at least one).
    pub fn new(index: &'a Index) -> Result<Searcher<'a>> {
        let parts = &index.dir.manifest.parts;
        let dsi = if parts.contains_key(crate::dsi::DSI_DIR) {
            Some(DsiModel::load(index, &Device::Cpu)?)
        } else {
            None
        };
        if !parts.contains_key("model") && dsi.is_some() {
            return Ok(Searcher {
                index,
                model: None,
                dsi,
                forms: OnceLock::new(),
                dense: None,
            });
        }
        let model = crate::train::load_model(index, &Device::Cpu)?;
        let mut searcher = Searcher::with_model(index, model)?;
        searcher.dsi = dsi;
        Ok(searcher)
    }

    /// Uses a model already in memory; its vocabulary must cover the index's docids.
    pub fn with_model(index: &'a Index, model: T5ForConditionalGeneration) -> Result<Searcher<'a>> {
        let need = index.docids.model_vocab() as usize;
        if model.config.vocab_size < need {
            return Err(Error::InvalidInput(format!(
                "the model's vocabulary ({}) is smaller than the index needs ({need}); \
                 the index was rebuilt after training: retrain with `genret train`",
                model.config.vocab_size
            )));
        }
        Ok(Searcher {
            index,
            model: Some(model),
            dsi: None,
            forms: OnceLock::new(),
            dense: None,
        })
    }

    /// Adds the DSI model that answers [`Mode::Dsi`] ([`DsiModel::load`]).
    pub fn with_dsi(mut self, dsi: DsiModel) -> Searcher<'a> {
        self.dsi = Some(dsi);
        self
    }

    /// SEAL's model, or an error saying how to train one.
    fn seal_model(&self) -> Result<&T5ForConditionalGeneration> {
        self.model.as_ref().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: no SEAL model; train one with `genret train INDEX_DIR`",
                self.index.dir.path().display()
            ))
        })
    }

    /// Adds dense retrieval over the same documents, for [`Mode::SealDense`]
    /// ([`DenseIndex::open_or_build`] makes `dense` for this index).
    pub fn with_dense(mut self, encoder: DenseEncoder, dense: DenseIndex) -> Searcher<'a> {
        self.dense = Some((encoder, dense));
        self
    }

    pub fn index(&self) -> &Index {
        self.index
    }

    /// Answers `queries`, in order.
    pub fn search(&self, queries: &[&str], options: &SearchOptions) -> Result<Vec<SearchResult>> {
        Ok(self.search_timed(queries, options)?.0)
    }

    /// [`search`](Self::search) plus where the time went.
    pub fn search_timed(
        &self,
        queries: &[&str],
        options: &SearchOptions,
    ) -> Result<(Vec<SearchResult>, SearchTimes)> {
        if options.k == 0 || options.beam == 0 || options.batch == 0 {
            return Err(Error::InvalidInput(
                "k, beam and batch must be at least 1".into(),
            ));
        }
        for q in queries {
            check_query(q)?;
        }
        let mut times = SearchTimes::default();
        let mut results = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(options.batch) {
            let started = Instant::now();
            let hits = self.search_batch(chunk, options, &mut times)?;
            for (q, (hits, _)) in chunk.iter().zip(&hits) {
                if let Some(h) = hits.iter().find(|h| !h.score.is_finite()) {
                    return Err(Error::Model(format!(
                        "query {q:?}: document {} scored {}; refusing a result that is not a number",
                        h.doc_id, h.score
                    )));
                }
            }
            let took_ms = started.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
            results.extend(
                chunk
                    .iter()
                    .zip(hits)
                    .map(|(q, (hits, terms))| SearchResult {
                        query: q.to_string(),
                        took_ms,
                        results: hits,
                        terms,
                    }),
            );
        }
        Ok((results, times))
    }

    fn search_batch(
        &self,
        queries: &[&str],
        options: &SearchOptions,
        times: &mut SearchTimes,
    ) -> Result<Vec<Answer>> {
        if options.mode == Mode::SealDense {
            return self.search_fused(queries, options, times);
        }
        let tok = &self.index.tokenizer;
        let sp = tok.specials();
        let sources = queries
            .iter()
            .map(|q| {
                let mut s = vec![sp.query];
                s.extend(tok.encode(q)?);
                s.truncate(options.max_query_len.max(2));
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        match options.mode {
            Mode::SealDense => unreachable!("answered above"),
            Mode::Seal => {
                let fm = &self.index.fm;
                let banned = vec![
                    sp.pad, sp.eos, sp.unk, sp.query, sp.index, sp.ngram, sp.docid,
                ];
                let constraint = FmConstraint::new(fm, banned, 1);
                let beam = BeamOptions {
                    beam: options.beam,
                    max_len: options.max_ngram_len,
                    history: options.ngrams_per_step,
                };
                let (decoded, t) = beam_search(
                    self.seal_model()?,
                    &sources,
                    &[sp.ngram],
                    &constraint,
                    &fm.full_range(),
                    &beam,
                )?;
                times.decode += t;
                let clock = Instant::now();
                let forms = if options.seal.stem {
                    Some(self.word_forms()?)
                } else {
                    None
                };
                let hits = decoded
                    .iter()
                    .zip(queries)
                    .map(|(d, query)| {
                        let content;
                        let history = if options.seal.content {
                            content = content_ngrams(&d.history, query, tok, fm, forms)?;
                            &content
                        } else {
                            &d.history
                        };
                        let ngrams = weigh_ngrams(fm, history, &options.seal, forms);
                        let ranked = seal_rank(fm, &ngrams, &options.seal, options.k)?;
                        let terms = if options.explain {
                            ngrams
                                .iter()
                                .map(|n| {
                                    Ok(Term {
                                        ngram: tok.decode(&n.tokens, true)?,
                                        prob: (n.log_prob as f64).exp(),
                                        count: n.count(),
                                        docs: n.doc_freq.round() as usize,
                                        weight: n.weight,
                                    })
                                })
                                .collect::<Result<_>>()?
                        } else {
                            Vec::new()
                        };
                        let hits = ranked
                            .into_iter()
                            .map(|r| {
                                let tokens: Vec<Vec<u32>> = r
                                    .ngrams
                                    .iter()
                                    .take(10)
                                    .filter_map(|&(i, f)| ngrams[i].forms().nth(f))
                                    .map(|(tokens, _)| tokens.to_vec())
                                    .collect();
                                let texts = tokens
                                    .iter()
                                    .map(|t| tok.decode(t, true))
                                    .collect::<Result<_>>()?;
                                Ok(self.hit(r.doc, r.score, texts, tokens))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok((hits, terms))
                    })
                    .collect::<Result<Vec<_>>>()?;
                times.scoring += clock.elapsed();
                Ok(hits)
            }
            Mode::Dsi => {
                let dsi = self.dsi.as_ref().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "{}: no DSI model; train one with `genret train INDEX_DIR --dsi`",
                        self.index.dir.path().display()
                    ))
                })?;
                let (ranked, t) = dsi.search(queries, options.beam, options.k)?;
                times.decode += t;
                let clock = Instant::now();
                let hits = ranked
                    .into_iter()
                    .map(|ranked| {
                        let hits = ranked
                            .into_iter()
                            .map(|(doc, score)| {
                                let id = docid_text(self.index, &dsi.docids, doc);
                                let tokens = vec![dsi.docids.tokens(doc)];
                                self.hit(doc, score as f64, vec![id], tokens)
                            })
                            .collect();
                        (hits, Vec::new())
                    })
                    .collect();
                times.scoring += clock.elapsed();
                Ok(hits)
            }
        }
    }

    /// SEAL's and dense retrieval's best [`FUSION_DEPTH`] fused; a hit keeps the n-grams
    /// SEAL found it by (none when only dense retrieval found it).
    fn search_fused(
        &self,
        queries: &[&str],
        options: &SearchOptions,
        times: &mut SearchTimes,
    ) -> Result<Vec<Answer>> {
        let Some((encoder, dense)) = &self.dense else {
            return Err(Error::InvalidInput(
                "mode seal+dense needs dense retrieval: this searcher was made without it \
                 (genret search loads it with --mode seal+dense)"
                    .into(),
            ));
        };
        let seal = SearchOptions {
            mode: Mode::Seal,
            k: FUSION_DEPTH.max(options.k),
            ..*options
        };
        let seal = self.search_batch(queries, &seal, times)?;
        let clock = Instant::now();
        let embedded = encoder.embed(queries, &|_| {})?;
        let dense = dense.search(&embedded, FUSION_DEPTH.max(options.k))?;
        let fused = seal
            .into_iter()
            .zip(dense)
            .map(|((mut seal, terms), dense)| {
                let s: Vec<(u32, f64)> = seal.iter().map(|h| (h.doc, h.score)).collect();
                let d: Vec<(u32, f64)> = dense.iter().map(|&(doc, c)| (doc, c as f64)).collect();
                let hits = fuse_min_max(&[&s, &d], options.k)
                    .into_iter()
                    .map(
                        |(doc, score)| match seal.iter().position(|h| h.doc == doc) {
                            Some(i) => Hit {
                                score,
                                ..seal.swap_remove(i)
                            },
                            None => self.hit(doc, score, Vec::new(), Vec::new()),
                        },
                    )
                    .collect();
                (hits, terms)
            })
            .collect();
        times.scoring += clock.elapsed();
        Ok(fused)
    }

    /// The corpus's word forms, built on first use (one pass over the documents).
    pub fn word_forms(&self) -> Result<&WordForms> {
        if let Some(f) = self.forms.get() {
            return Ok(f);
        }
        let index = self.index;
        let built = WordForms::build(&index.docs, &index.tokenizer, &index.fm)?;
        Ok(self.forms.get_or_init(|| built))
    }

    fn hit(&self, doc: u32, score: f64, ngrams: Vec<String>, tokens: Vec<Vec<u32>>) -> Hit {
        let entry = &self.index.docs[doc as usize];
        Hit {
            doc_id: entry.id.clone(),
            score,
            title: entry.title.clone(),
            ngrams,
            tokens,
            doc,
        }
    }
}

/// A docid for people: its symbols joined by `-`, or for an atomic one the document's id.
fn docid_text(index: &Index, docids: &crate::docid::DocIds, doc: u32) -> String {
    if docids.scheme() == crate::docid::Scheme::Atomic {
        return index.docs[doc as usize].id.clone();
    }
    docids
        .symbols(doc)
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

/// Refuses a query that has no words or holds a control character (a NUL, an escape): such a
/// query is a caller's mistake, and answering it would hide that.
pub fn check_query(query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Error::InvalidInput(
            "the query is empty; give some words to search for".into(),
        ));
    }
    if let Some(c) = query.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        return Err(Error::InvalidInput(format!(
            "the query holds the control character U+{:04X}; queries are plain text",
            c as u32
        )));
    }
    Ok(())
}
