//! seal: here is a query, which documents hold the n-grams the model writes for it?
//!
//! SEAL's whole pipeline behind one call ([`Retriever::retrieve`]): the query is tokenized as
//! the model was trained to read it, constrained beam search writes corpus n-grams
//! ([`crate::decode`] with an [`FmConstraint`]), the n-grams are read as their content words
//! and word forms ([`crate::stem`]), weighed and ranked ([`crate::score`]).
//!
//! Cost per query: the decoder's `max_ngram_len` steps of `beam` hypotheses, then a locate of
//! every rare n-gram's occurrences and a full score of up to `rerank` candidates
//! (`SealParams`), each read from the index's token store (extracted from the FM-index, and at
//! most [`crate::score::EXTRACTED_RERANK`] of them, for an index built before the store).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::Device;
use rayon::prelude::*;

use crate::content::content_ngrams;
use crate::decode::{BeamOptions, FmConstraint, beam_search};
use crate::error::{Error, Result};
use crate::index::{Index, MODEL_DIR};
use crate::model::{self, T5ForConditionalGeneration};
use crate::retrieve::{Answer, Retrieval, Retrieved, Retriever, SearchOptions, SearchTimes};
use crate::score::{
    EXTRACTED_RERANK, Located, Scorer, SealParams, Term, WeightedNgram, average_len,
    score_candidates, seal_candidates, weigh_ngrams,
};
use crate::stem::{WORDS_PART, WordForms};

/// The index's part holding SEAL's model.
pub const MODEL_PART: &str = "model";

/// Loads the trained SEAL model of an index, verified ([`crate::index::IndexDir::model_dir`]),
/// prepared for search at the process's [`crate::device::precision`].
pub fn load_model(index: &Index, device: &Device) -> Result<T5ForConditionalGeneration> {
    let dir = index
        .dir
        .model_dir(MODEL_PART, MODEL_DIR, "genret train INDEX_DIR")?;
    let (config, params) = model::load(&dir, device)?;
    T5ForConditionalGeneration::new(&config, &params)?.for_inference(crate::device::precision())
}

/// An index with SEAL's model: answers queries with the documents its n-grams point to.
pub struct Seal {
    index: Arc<Index>,
    model: T5ForConditionalGeneration,
    /// Built on the first search that matches word forms.
    forms: OnceLock<WordForms>,
}

impl Seal {
    /// Loads the index's model onto `device`.
    pub fn load(index: Arc<Index>, device: &Device) -> Result<Seal> {
        let model = load_model(&index, device)?;
        Seal::new(index, model)
    }

    /// Uses a model already in memory; its vocabulary must cover the index's tokens (all
    /// that SEAL decoding writes).
    pub fn new(index: Arc<Index>, model: T5ForConditionalGeneration) -> Result<Seal> {
        let need = index.fm.vocab_size() as usize;
        if model.config.vocab_size < need {
            return Err(Error::InvalidInput(format!(
                "the model's vocabulary ({}) is smaller than the index needs ({need}); \
                 the index was rebuilt after training: retrain with `genret train`",
                model.config.vocab_size
            )));
        }
        Ok(Seal {
            index,
            model,
            forms: OnceLock::new(),
        })
    }

    pub fn model(&self) -> &T5ForConditionalGeneration {
        &self.model
    }

    /// The corpus's word forms, read on first use from the table the index build stored
    /// (O(table size)), or built (one pass over the documents) for an index made before it.
    pub fn word_forms(&self) -> Result<&WordForms> {
        if let Some(f) = self.forms.get() {
            return Ok(f);
        }
        let index = &self.index;
        let clock = Instant::now();
        if index.dir.has_part(WORDS_PART) {
            let file = index.dir.map_part(WORDS_PART, "rebuild the index")?;
            let loaded = WordForms::load_mapped(file, &index.fm)?;
            tracing::info!("word table read in {:.2} s", clock.elapsed().as_secs_f64());
            return Ok(self.forms.get_or_init(|| loaded));
        }
        let docs = &index.docs;
        let built = WordForms::build(
            docs.len(),
            |d| docs.get(d).map(|e| [e.title.into(), e.text.into()]),
            &index.tokenizer,
            &index.fm,
        )?;
        tracing::info!("word table built in {:.2} s", clock.elapsed().as_secs_f64());
        Ok(self.forms.get_or_init(|| built))
    }
}

/// What a query's SEAL search settles before any document is scored: its weighted n-grams and
/// the candidate documents, best first ([`seal_candidates`]). Scoring the candidates
/// ([`score_candidates`] with [`SealPlan::scorer`]) needs only their tokens, so it can run
/// where the documents are: servers that each hold some of them score theirs, and their
/// results merged by score give [`Seal`]'s answer.
#[derive(Debug, Clone)]
pub struct SealPlan {
    pub ngrams: Vec<WeightedNgram>,
    pub candidates: Vec<u32>,
    pub params: SealParams,
    /// The average document length scores are normalised by.
    pub avg_len: f64,
}

impl SealPlan {
    pub fn scorer(&self) -> Scorer<'_> {
        Scorer::new(&self.ngrams, &self.params, self.avg_len)
    }
}

impl Seal {
    /// Decodes `queries` and weighs what the model wrote: each query's [`SealPlan`], with the
    /// time spent decoding and weighing.
    pub fn plan(
        &self,
        queries: &[&str],
        options: &SearchOptions,
    ) -> Result<(Vec<SealPlan>, SearchTimes)> {
        let mut times = SearchTimes::default();
        let tok = &self.index.tokenizer;
        let fm = &self.index.fm;
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
            &self.model,
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
        let mut params = options.seal;
        if self.index.tokens.is_none() {
            params.rerank = params.rerank.min(EXTRACTED_RERANK);
        }
        // Queries are weighed on rayon's threads (each locates its n-grams in the FM-index,
        // once for the batch); the order of the results is the queries'.
        let located = Located::default();
        let plans = decoded
            .par_iter()
            .zip(queries.par_iter())
            .map(|(d, query)| {
                let content;
                let history = if options.seal.content {
                    content = content_ngrams(&d.history, query, tok, fm, forms)?;
                    &content
                } else {
                    &d.history
                };
                let ngrams = weigh_ngrams(fm, history, &options.seal, forms, &located);
                let candidates = seal_candidates(&ngrams, &params, options.k);
                Ok(SealPlan {
                    ngrams,
                    candidates,
                    params,
                    avg_len: average_len(fm),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        times.scoring += clock.elapsed();
        Ok((plans, times))
    }
}

impl Retriever for Seal {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let (plans, mut times) = self.plan(queries, options)?;
        let tok = &self.index.tokenizer;
        let clock = Instant::now();
        let answers = plans
            .par_iter()
            .map(|plan| {
                let ngrams = &plan.ngrams;
                let ranked = score_candidates(&plan.scorer(), &plan.candidates, options.k, &|d| {
                    self.index.doc_tokens(d)
                })?;
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
                        Ok(Retrieved {
                            doc: r.doc,
                            score: r.score,
                            ngrams: texts,
                            tokens,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Answer { hits, terms })
            })
            .collect::<Result<Vec<_>>>()?;
        times.scoring += clock.elapsed();
        Ok(Retrieval { answers, times })
    }
}
