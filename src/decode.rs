//! decode: here is a model and a set of valid strings, which strings does it most likely write?
//!
//! Batched beam search over rows = queries x beams on the model's decoder step
//! ([`T5ForConditionalGeneration::step`]), constrained at every step by a [`Constraint`]: a
//! state per hypothesis that says which tokens may come next and what state each leads to.
//! The FM-index constraint ([`FmConstraint`]) keeps each hypothesis's FM-index range and
//! extends it by one backward-search step per token; the docid constraint ([`TrieConstraint`])
//! walks the docid trie. Neither recomputes anything from the start of the hypothesis.
//!
//! Only allowed tokens compete: their log-probs are gathered from the model's output (never a
//! masked copy of the whole vocabulary). A hypothesis may end (emit EOS) where its constraint
//! says so; one with no allowed continuation simply dies. With `history` the best partial
//! hypotheses of every step are returned too (SEAL scores every n-gram prefix), as many as
//! asked even where the beam is narrower: the extensions of a step are all scored anyway, so
//! keeping more of them than the beam continues costs no model work.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::docid::{DocIds, TrieState};
use crate::error::{Error, Result};
use crate::fmindex::{Shards, Span};
use crate::model::{Encoded, T5ForConditionalGeneration};

/// The set of valid output strings, walked one token at a time.
pub trait Constraint: Sync {
    type State: Clone + Send + Sync;

    /// Appends `(token, next state)` for every token allowed after `state` (EOS excluded).
    fn next_into(&self, state: &Self::State, out: &mut Vec<(u32, Self::State)>);

    /// Whether a hypothesis in `state` is a complete string (may emit EOS).
    fn can_end(&self, state: &Self::State) -> bool;
}

/// SEAL's constraint: any n-gram that occurs in the corpus. The state is the n-gram's
/// FM-index span; a step is one [`Shards::for_each_continuation`] call, O(d log sigma) per
/// shard for d distinct next tokens.
pub struct FmConstraint<'a> {
    fm: &'a Shards,
    /// Tokens never generated (padding, EOS, task markers), sorted.
    banned: Vec<u32>,
    /// Shortest n-gram that may end.
    min_len: usize,
}

impl<'a> FmConstraint<'a> {
    /// N-grams of at least `min_len` tokens of `fm`, never containing a token of `banned`.
    pub fn new(fm: &'a Shards, mut banned: Vec<u32>, min_len: usize) -> Self {
        banned.sort_unstable();
        FmConstraint {
            fm,
            banned,
            min_len,
        }
    }
}

impl Constraint for FmConstraint<'_> {
    type State = Span;

    fn next_into(&self, state: &Span, out: &mut Vec<(u32, Span)>) {
        self.fm.for_each_continuation(state, |token, next| {
            if self.banned.binary_search(&token).is_err() {
                out.push((token, next));
            }
        });
    }

    fn can_end(&self, state: &Span) -> bool {
        !state.is_empty() && state.pattern_len() >= self.min_len
    }
}

/// DSI's constraint: a prefix of some document's identifier. O(c log docs) per step.
pub struct TrieConstraint<'a> {
    pub docids: &'a DocIds,
}

impl Constraint for TrieConstraint<'_> {
    type State = TrieState;

    fn next_into(&self, state: &TrieState, out: &mut Vec<(u32, TrieState)>) {
        self.docids.children_into(*state, out);
    }

    fn can_end(&self, state: &TrieState) -> bool {
        self.docids.terminal(*state).is_some()
    }
}

/// Beam search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamOptions {
    /// Hypotheses kept per query at every step.
    pub beam: usize,
    /// Most tokens generated after the forced prefix (EOS not counted).
    pub max_len: usize,
    /// Partial hypotheses returned per step (SEAL), besides finished ones: the best
    /// `max(history, beam)` extensions of each step; 0 returns none.
    pub history: usize,
}

/// A decoded string (after the forced prefix), with its total log-prob and final state.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis<S> {
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probs (plus EOS's for a finished hypothesis).
    pub score: f32,
    pub state: S,
}

/// What beam search found for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<S> {
    /// Hypotheses that emitted EOS, best first, distinct.
    pub finished: Vec<Hypothesis<S>>,
    /// With `history`: the best partial hypotheses of every step, best first, distinct.
    pub history: Vec<Hypothesis<S>>,
}

/// Where decoding time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimes {
    /// Encoder, decoder steps, cache reorders and gathering log-probs.
    pub model: Duration,
    /// Constraint lookups and beam bookkeeping.
    pub constraint: Duration,
    /// Decoder steps run (forced prefix included).
    pub steps: usize,
}

impl std::ops::AddAssign for DecodeTimes {
    fn add_assign(&mut self, o: DecodeTimes) {
        self.model += o.model;
        self.constraint += o.constraint;
        self.steps += o.steps;
    }
}

/// The allowed next tokens of one hypothesis, with their states.
type Allowed<S> = Vec<(u32, S)>;

struct Beam<S> {
    tokens: Vec<u32>,
    score: f32,
    state: S,
    /// Row of the previous step this beam continues.
    row: usize,
}

struct Candidate<S> {
    score: f32,
    parent: usize,
    token: u32,
    state: S,
}

/// Queries a thread decodes at least, as one batch, before [`beam_search`] splits a batch
/// between threads: below it, splitting each op serves better.
const SPLIT_QUERIES: usize = 4;

/// Runs constrained beam search for a batch of queries.
///
/// `sources` are the encoder inputs (one per query); every hypothesis starts with the
/// model's decoder start token then the forced `prefix` (e.g. `<ngram>`), in `start` state.
/// Returns one [`Decoded`] per query and the time split.
///
/// Cost: one encoder pass, `1 + prefix.len()` decoder steps over one row per query, then
/// `max_len` at most over `queries x beam` rows, plus the constraint's lookups for every live
/// hypothesis; from `2 x SPLIT_QUERIES` queries, each half of the batch on its own share of
/// rayon's threads. Each query's answer is the same (to float rounding) in any batch.
pub fn beam_search<C: Constraint>(
    model: &T5ForConditionalGeneration,
    sources: &[Vec<u32>],
    prefix: &[u32],
    constraint: &C,
    start: &C::State,
    options: &BeamOptions,
) -> Result<(Vec<Decoded<C::State>>, DecodeTimes)> {
    split_between_threads(
        model,
        sources,
        prefix,
        constraint,
        start,
        options,
        rayon::current_num_threads(),
    )
}

/// [`beam_search`] with `threads` of rayon's threads to share. Queries decode independently:
/// with enough of them, each half goes to its own share of the threads whole (steps,
/// constraint and bookkeeping), where one batch would split every op over the threads and
/// run its bookkeeping on one.
fn split_between_threads<C: Constraint>(
    model: &T5ForConditionalGeneration,
    sources: &[Vec<u32>],
    prefix: &[u32],
    constraint: &C,
    start: &C::State,
    options: &BeamOptions,
    threads: usize,
) -> Result<(Vec<Decoded<C::State>>, DecodeTimes)> {
    if sources.is_empty() {
        return Ok((Vec::new(), DecodeTimes::default()));
    }
    if threads > 1 && sources.len() >= 2 * SPLIT_QUERIES {
        let half = sources.len() / 2;
        let run = |part: &[Vec<u32>], threads: usize| {
            split_between_threads(model, part, prefix, constraint, start, options, threads)
        };
        let (a, b) = rayon::join(
            || run(&sources[..half], threads / 2),
            || run(&sources[half..], threads - threads / 2),
        );
        let ((mut decoded, ta), (rest, tb)) = (a?, b?);
        decoded.extend(rest);
        // The halves ran side by side: the longer one's times are the batch's.
        let times = if ta.model + ta.constraint >= tb.model + tb.constraint {
            ta
        } else {
            tb
        };
        return Ok((decoded, times));
    }
    let clock = Instant::now();
    let (ids, mask) = model.pad_batch(sources)?;
    let encoded = model.encode(&ids, &mask)?;
    let encoding = clock.elapsed();
    let (decoded, mut times) =
        beam_search_encoded(model, &encoded, prefix, constraint, start, options)?;
    times.model += encoding;
    Ok((decoded, times))
}

/// [`beam_search`] over an encoder output computed beforehand (one row per query): what
/// decoding a frozen encoder's cached states needs.
pub fn beam_search_encoded<C: Constraint>(
    model: &T5ForConditionalGeneration,
    encoded: &Encoded,
    prefix: &[u32],
    constraint: &C,
    start: &C::State,
    options: &BeamOptions,
) -> Result<(Vec<Decoded<C::State>>, DecodeTimes)> {
    let mut times = DecodeTimes::default();
    let cerr = |e: candle_core::Error| Error::Model(e.to_string());
    let queries = encoded.states.dim(0).map_err(cerr)?;
    if queries == 0 {
        return Ok((Vec::new(), times));
    }
    if options.beam == 0 {
        return Err(Error::OutOfRange {
            name: "beam size",
            expected: "at least 1".into(),
            got: "0".into(),
        });
    }
    let b = options.beam;
    let rows = queries * b;
    let eos = model.config.eos_token_id;
    let pad = model.config.pad_token_id;

    let clock = Instant::now();
    // A query's beams are one hypothesis until the first choice: the decoder start and the
    // forced prefix run on one row per query, then the rows are widened to the beam.
    let mut cache = model.start(encoded, 1)?;
    let mut logp = model.step_scores(
        &vec![model.config.decoder_start_token_id; queries],
        &mut cache,
    )?;
    for &t in prefix {
        cache.recycle(logp);
        logp = model.step_scores(&vec![t; queries], &mut cache)?;
    }
    cache.expand(b)?;
    let mut logp = logp.expand(b)?;
    times.steps += 1 + prefix.len();
    times.model += clock.elapsed();

    let mut live: Vec<Vec<Beam<C::State>>> = (0..queries)
        .map(|q| {
            vec![Beam {
                tokens: Vec::new(),
                score: 0.0,
                state: start.clone(),
                row: q * b,
            }]
        })
        .collect();
    let mut out: Vec<Decoded<C::State>> = (0..queries)
        .map(|_| Decoded {
            finished: Vec::new(),
            history: Vec::new(),
        })
        .collect();

    for step in 0..=options.max_len {
        // Allowed tokens of every live beam; the last step only lets beams end.
        let clock = Instant::now();
        let allowed: Vec<Vec<Allowed<C::State>>> = live
            .par_iter()
            .map(|beams| {
                beams
                    .iter()
                    .map(|beam| {
                        let mut next = Vec::new();
                        if step < options.max_len {
                            constraint.next_into(&beam.state, &mut next);
                        }
                        next
                    })
                    .collect()
            })
            .collect();
        times.constraint += clock.elapsed();

        // Gather the log-probs of allowed tokens (plus EOS, column 0) for every live row.
        let clock = Instant::now();
        let width = 1 + allowed.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let mut index = vec![eos; rows * width];
        for (q, beams) in live.iter().enumerate() {
            for (beam, next) in beams.iter().zip(&allowed[q]) {
                let base = beam.row * width;
                for (j, (t, _)) in next.iter().enumerate() {
                    index[base + 1 + j] = *t;
                }
            }
        }
        let picked = logp.pick(&index, width)?;
        // -inf is a token the model rules out; NaN or +inf would rank garbage silently.
        if picked
            .iter()
            .flatten()
            .any(|x| x.is_nan() || *x == f32::INFINITY)
        {
            return Err(Error::Model(
                "the decoder produced NaN log-probabilities (non-finite activations); the \
                 model is unusable: train it again"
                    .into(),
            ));
        }
        times.model += clock.elapsed();

        let clock = Instant::now();
        let chosen: Vec<Vec<Candidate<C::State>>> = live
            .par_iter()
            .zip(allowed.into_par_iter())
            .zip(out.par_iter_mut())
            .map(|((beams, allowed), decoded)| {
                let mut cands = Vec::new();
                for (i, (beam, next)) in beams.iter().zip(allowed).enumerate() {
                    let lp = &picked[beam.row];
                    if constraint.can_end(&beam.state) {
                        decoded.finished.push(Hypothesis {
                            tokens: beam.tokens.clone(),
                            score: beam.score + lp[0],
                            state: beam.state.clone(),
                        });
                    }
                    for (j, (token, state)) in next.into_iter().enumerate() {
                        cands.push(Candidate {
                            score: beam.score + lp[1 + j],
                            parent: i,
                            token,
                            state,
                        });
                    }
                }
                // Best first; ties by parent then token so the result is deterministic.
                let order = |a: &Candidate<C::State>, c: &Candidate<C::State>| {
                    c.score
                        .total_cmp(&a.score)
                        .then(a.parent.cmp(&c.parent))
                        .then(a.token.cmp(&c.token))
                };
                // The best `b` continue; up to `keep` go into the history.
                let keep = if options.history > 0 {
                    options.history.max(b)
                } else {
                    b
                };
                if cands.len() > keep {
                    cands.select_nth_unstable_by(keep - 1, order);
                    cands.truncate(keep);
                }
                cands.sort_unstable_by(order);
                // Without history, a query is done once its beam-th finished hypothesis beats
                // every live one: log-probs only fall as hypotheses grow.
                if options.history == 0 && decoded.finished.len() >= b {
                    let mut scores: Vec<f32> = decoded.finished.iter().map(|h| h.score).collect();
                    scores.sort_unstable_by(|x, y| y.total_cmp(x));
                    let best_live = cands.first().map_or(f32::NEG_INFINITY, |c| c.score);
                    if best_live <= scores[b - 1] {
                        cands.clear();
                    }
                }
                cands
            })
            .collect();

        let mut parents: Vec<u32> = (0..rows as u32).map(|r| r - r % b as u32).collect();
        let mut tokens = vec![pad; rows];
        let mut any = false;
        for (q, cands) in chosen.into_iter().enumerate() {
            let old = std::mem::take(&mut live[q]);
            for (i, c) in cands.into_iter().enumerate() {
                let parent = &old[c.parent];
                let mut seq = parent.tokens.clone();
                seq.push(c.token);
                if options.history > 0 {
                    out[q].history.push(Hypothesis {
                        tokens: seq.clone(),
                        score: c.score,
                        state: c.state.clone(),
                    });
                }
                if i >= b {
                    continue;
                }
                let row = q * b + i;
                parents[row] = parent.row as u32;
                tokens[row] = c.token;
                live[q].push(Beam {
                    tokens: seq,
                    score: c.score,
                    state: c.state,
                    row,
                });
                any = true;
            }
        }
        times.constraint += clock.elapsed();
        if !any {
            break;
        }
        let clock = Instant::now();
        cache.reorder(&parents)?;
        cache.recycle(logp);
        logp = model.step_scores(&tokens, &mut cache)?;
        times.steps += 1;
        times.model += clock.elapsed();
    }

    for decoded in &mut out {
        best_distinct(&mut decoded.finished);
        best_distinct(&mut decoded.history);
    }
    Ok((out, times))
}

/// Sorts best first and keeps the best-scored copy of each token sequence.
fn best_distinct<S>(hyps: &mut Vec<Hypothesis<S>>) {
    hyps.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.tokens.cmp(&b.tokens)));
    let mut seen = std::collections::HashSet::new();
    hyps.retain(|h| seen.insert(h.tokens.clone()));
}
