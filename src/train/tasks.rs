//! Training examples: each task's (source, target) pairs drawn from the index's documents (and
//! judged queries), and their batches.

use std::collections::HashMap;
use std::path::PathBuf;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::TrainConfig;
use crate::error::Result;
use crate::index::Index;

/// A training example: token ids in, token ids out (ending with EOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub source: Vec<u32>,
    pub target: Vec<u32>,
}

/// What the training tasks need from an index, prepared once.
pub struct TaskData {
    docs: Vec<DocTokens>,
    /// (query tokens, relevant document position) pairs.
    queries: Vec<(Vec<u32>, u32)>,
    /// Inverse document frequency of every body token, `ln(N / df)`.
    idf: HashMap<u32, f64>,
    specials: crate::tokenize::SpecialIds,
}

struct DocTokens {
    title: Vec<u32>,
    body: Vec<u32>,
    docid: Vec<u32>,
}

impl TaskData {
    /// Tokenizes the index's documents (in parallel) and, if given, the training queries.
    pub fn new(index: &Index, queries: Option<&(PathBuf, String)>) -> Result<TaskData> {
        let tok = &index.tokenizer;
        let docids = index.docids()?;
        let docs = (0..index.docs.len())
            .into_par_iter()
            .map(|i| {
                let d = index.docs.get(i)?;
                Ok(DocTokens {
                    title: tok.encode(&d.title)?,
                    body: tok.encode(&d.text)?,
                    docid: docids.tokens(i as u32),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A judged query's tokens once per relevant document.
        let pairs = match queries {
            Some((dir, split)) => index
                .judged_queries(dir, split)?
                .into_iter()
                .map(|(q, pos)| Ok((tok.encode(&q)?, pos)))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let mut df: HashMap<u32, usize> = HashMap::new();
        for d in &docs {
            let mut distinct = d.body.clone();
            distinct.sort_unstable();
            distinct.dedup();
            for t in distinct {
                *df.entry(t).or_default() += 1;
            }
        }
        let n = docs.len() as f64;
        let idf = df
            .into_iter()
            .map(|(t, f)| (t, (n / f as f64).ln()))
            .collect();
        Ok(TaskData {
            docs,
            queries: pairs,
            idf,
            specials: tok.specials(),
        })
    }

    /// The decoder's output vocabulary for `index`: every token a training target can hold
    /// (document bodies, titles, docids, the specials that frame them) and every token of the
    /// FM-index, which is all that SEAL decoding may write.
    pub fn output_tokens(&self, index: &Index) -> Vec<u32> {
        let sp = &self.specials;
        let mut tokens: std::collections::BTreeSet<u32> =
            [sp.eos, sp.ngram, sp.docid, sp.title_start, sp.title_end].into();
        for d in &self.docs {
            tokens.extend(d.title.iter().chain(&d.body).chain(&d.docid));
        }
        let fm = &index.fm;
        fm.for_each_continuation(&fm.full_range(), |t, _| {
            tokens.insert(t);
        });
        tokens.into_iter().collect()
    }

    /// The examples of one epoch, in a deterministic order.
    pub fn epoch_examples(&self, config: &TrainConfig, epoch: usize) -> Vec<Example> {
        let sp = self.specials;
        let src_max = config.max_source_len;
        let tgt_max = config.max_target_len;
        let finish = |mut source: Vec<u32>, mut target: Vec<u32>| -> Example {
            source.truncate(src_max);
            target.truncate(tgt_max - 1);
            target.push(sp.eos);
            Example { source, target }
        };
        let seed = config.seed;
        let mix = config.tasks;
        let mut out: Vec<Example> = self
            .docs
            .par_iter()
            .enumerate()
            .flat_map_iter(|(d, doc)| {
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((d as u64) << 20),
                );
                let mut ex = Vec::new();
                let body = &doc.body;
                if !body.is_empty() {
                    for i in 0..mix.span {
                        let (qs, qe) = random_window(&mut rng, body.len(), 8, 24);
                        // Every other target is a span of the pseudo-query itself: a model
                        // must first learn to write the query's own corpus n-grams (what
                        // real queries share with their documents) before it can learn which
                        // other spans of a document go with a query.
                        let (ts, te) = if i % 2 == 0 {
                            let (s, e) = random_window(&mut rng, qe - qs, 2, 8);
                            (qs + s, qs + e)
                        } else {
                            random_window(&mut rng, body.len(), 3, 10)
                        };
                        let mut source = vec![sp.query];
                        source.extend_from_slice(&body[qs..qe]);
                        let mut target = vec![sp.ngram];
                        target.extend_from_slice(&body[ts..te]);
                        ex.push(finish(source, target));
                    }
                    if !doc.title.is_empty() {
                        for _ in 0..mix.title {
                            let (qs, qe) = random_window(&mut rng, body.len(), 8, 24);
                            let mut source = vec![sp.query];
                            source.extend_from_slice(&body[qs..qe]);
                            let mut target = vec![sp.title_start];
                            target.extend_from_slice(&doc.title);
                            target.push(sp.title_end);
                            ex.push(finish(source, target));
                        }
                    }
                    for _ in 0..mix.docid {
                        let (qs, qe) = random_window(&mut rng, body.len(), 8, 24);
                        let mut source = vec![sp.query];
                        source.extend_from_slice(&body[qs..qe]);
                        let mut target = vec![sp.docid];
                        target.extend_from_slice(&doc.docid);
                        ex.push(finish(source, target));
                    }
                }
                // Real queries are a few content words, not a window of running text: the copy
                // head should learn to write the phrase a keyword stands in, and idf makes the
                // keywords the words a searcher would pick.
                let positions: Vec<usize> = if mix.keywords > 0 && body.len() >= 3 {
                    (0..body.len()).collect()
                } else {
                    Vec::new()
                };
                for _ in 0..if positions.is_empty() {
                    0
                } else {
                    mix.keywords
                } {
                    let n = rng.random_range(3..=8).min(body.len());
                    let mut picked: Vec<usize> = positions
                        .choose_multiple_weighted(&mut rng, n, |&p| {
                            self.idf.get(&body[p]).copied().unwrap_or(0.0) + 1e-3
                        })
                        .map(|it| it.copied().collect())
                        .unwrap_or_default();
                    picked.sort_unstable();
                    let mut source = vec![sp.query];
                    source.extend(picked.iter().map(|&p| body[p]));
                    source.dedup();
                    let Some(&at) = picked.choose(&mut rng) else {
                        continue;
                    };
                    let w = rng.random_range(3..=10).min(body.len());
                    let start = at
                        .saturating_sub(rng.random_range(0..w))
                        .min(body.len() - w);
                    let mut target = vec![sp.ngram];
                    target.extend_from_slice(&body[start..start + w]);
                    ex.push(finish(source, target));
                }
                for _ in 0..mix.index {
                    let mut source = vec![sp.index];
                    source.extend_from_slice(&body[..body.len().min(src_max - 1)]);
                    let mut target = vec![sp.docid];
                    target.extend_from_slice(&doc.docid);
                    ex.push(finish(source, target));
                }
                ex
            })
            .collect();
        for (q, d) in &self.queries {
            let doc = &self.docs[*d as usize];
            let mut source = vec![sp.query];
            source.extend_from_slice(q);
            if !doc.body.is_empty() {
                let (s, e) = best_overlap_window(&doc.body, q, 10);
                let mut target = vec![sp.ngram];
                target.extend_from_slice(&doc.body[s..e]);
                out.push(finish(source.clone(), target));
            }
            if !doc.title.is_empty() {
                let mut target = vec![sp.title_start];
                target.extend_from_slice(&doc.title);
                target.push(sp.title_end);
                out.push(finish(source.clone(), target));
            }
            let mut target = vec![sp.docid];
            target.extend_from_slice(&doc.docid);
            out.push(finish(source, target));
        }
        out
    }
}

/// A random window of `min..=max` tokens (shorter if the sequence is) inside `0..len`.
fn random_window(rng: &mut ChaCha8Rng, len: usize, min: usize, max: usize) -> (usize, usize) {
    let w = rng.random_range(min..=max).min(len);
    let start = rng.random_range(0..=len - w);
    (start, start + w)
}

/// The window of `max` tokens (fewer if the document is shorter) sharing the most tokens with
/// `query`, the earliest on ties. O(doc * max).
fn best_overlap_window(doc: &[u32], query: &[u32], max: usize) -> (usize, usize) {
    let w = max.min(doc.len());
    let mut best: Option<(usize, usize)> = None;
    for start in 0..=doc.len() - w {
        let overlap = doc[start..start + w]
            .iter()
            .filter(|t| query.contains(t))
            .count();
        if best.is_none_or(|(_, b)| overlap > b) {
            best = Some((start, overlap));
        }
    }
    let start = best.map_or(0, |(s, _)| s);
    (start, start + w)
}

/// Groups examples into batches of similar source length (less padding), then shuffles the
/// batch order. Deterministic in `(seed, epoch)`.
pub fn batches(
    examples: &[Example],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64 * 7919));
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut rng);
    // Sort within windows of 50 batches by length: buckets without losing randomness.
    for chunk in order.chunks_mut(batch_size * 50) {
        chunk.sort_by_key(|&i| (examples[i].source.len(), examples[i].target.len()));
    }
    let mut out: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    out.shuffle(&mut rng);
    out
}
