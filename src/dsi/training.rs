//! How a DSI model learns: the training sources drawn from each document (title, keyword sets,
//! overlapping chunks read at a fresh window every epoch), the frozen encoder's outputs cached
//! once, and indexing recall measured on a probe.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use half::f16;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::{
    DsiOptions, ENCODE_BATCH, EOS, MAX_SOURCE_TOKENS, MIN_CROP, PROBE_DOCS, PROBE_WORDS,
    encode_texts, special_tokens,
};
use crate::decode::{BeamOptions, TrieConstraint};
use crate::docid::DocIds;
use crate::error::{Error, Result, cerr};
use crate::index::Index;
use crate::model::{Encoded, T5ForConditionalGeneration};
use crate::score::dsi_rank;

/// Windows of `size` positions over `0..len` at stride `size / 2` (at least 1), the last one
/// ending at `len`: every run of up to `size / 2` positions lies inside one. A sequence no
/// longer than `size` is one window; an empty one has none.
pub fn chunks(len: usize, size: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    if len <= size {
        return std::iter::once(0..len).filter(|r| !r.is_empty()).collect();
    }
    let stride = (size / 2).max(1);
    let mut out: Vec<_> = (0..=len - size)
        .step_by(stride)
        .map(|s| s..s + size)
        .collect();
    if out.last().is_some_and(|r| r.end < len) {
        out.push(len - size..len);
    }
    out
}

/// A word as keyword sampling counts it: lowercase, letters and digits only.
pub(super) fn keyword(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A document's title (when it has one) and `n` keyword sets: 3-8 distinct non-stop words of
/// its text drawn in proportion to their idf, in document order, as a searcher's query names
/// a document's rarer words (DSI-QG's pseudo-queries, without a generator model; the text
/// itself is read in [`chunks`]). Deterministic in `rng`.
pub fn keyword_queries(
    title: &str,
    text: &str,
    n: usize,
    idf: &dyn Fn(&str) -> f64,
    rng: &mut ChaCha8Rng,
) -> Vec<String> {
    let mut out = Vec::with_capacity(n + 1);
    let title = title.trim();
    if !title.is_empty() {
        out.push(title.to_string());
    }
    let mut seen = HashSet::new();
    let candidates: Vec<(usize, String)> = text
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| (i, keyword(w)))
        .filter(|(_, w)| w.len() >= 3 && !crate::stem::is_stop_word(w) && seen.insert(w.clone()))
        .collect();
    if candidates.len() < 3 {
        return out;
    }
    for _ in 0..n {
        let k = rng.random_range(3..=8).min(candidates.len());
        let mut picked: Vec<&(usize, String)> = candidates
            .choose_multiple_weighted(rng, k, |(_, w)| idf(w) + 1e-3)
            .map(|it| it.collect())
            .unwrap_or_default();
        picked.sort_by_key(|(i, _)| *i);
        out.push(
            picked
                .iter()
                .map(|(_, w)| w.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    out
}

/// `ln(N / df)` of every keyword of `texts`.
fn keyword_idf(texts: &[String]) -> HashMap<String, f64> {
    let mut df: HashMap<String, usize> = HashMap::new();
    for t in texts {
        let distinct: HashSet<String> = t.split_whitespace().map(keyword).collect();
        for w in distinct {
            *df.entry(w).or_default() += 1;
        }
    }
    let n = texts.len() as f64;
    df.into_iter()
        .map(|(w, f)| (w, (n / f as f64).ln()))
        .collect()
}

/// Encoder outputs of many sources, kept as f16 (half the memory; the decoder reads them as
/// f32): source `i`'s states are rows `offsets[i]..offsets[i + 1]`.
pub struct StateCache {
    dim: usize,
    data: Vec<f16>,
    offsets: Vec<usize>,
}

impl StateCache {
    /// Runs `model`'s encoder over every source, longest-alike together, in batches.
    pub fn encode(
        model: &T5ForConditionalGeneration,
        sources: &[Vec<u32>],
        progress: &dyn Fn(usize),
    ) -> Result<StateCache> {
        let dim = model.config.d_model;
        let mut offsets = Vec::with_capacity(sources.len() + 1);
        offsets.push(0);
        for s in sources {
            offsets.push(offsets.last().unwrap() + s.len());
        }
        let mut data = vec![f16::ZERO; offsets.last().unwrap() * dim];
        let mut order: Vec<usize> = (0..sources.len()).collect();
        order.sort_by_key(|&i| sources[i].len());
        let mut done = 0;
        for chunk in order.chunks(ENCODE_BATCH) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
            let (ids, mask) = model.pad_batch(&batch)?;
            let states = model.frozen_states(&ids, &mask)?;
            let states: Vec<Vec<Vec<f32>>> = states.to_vec3().map_err(cerr)?;
            for (&i, rows) in chunk.iter().zip(states) {
                let out = &mut data[offsets[i] * dim..offsets[i + 1] * dim];
                for (o, x) in out.iter_mut().zip(rows.iter().flatten()) {
                    *o = f16::from_f32(*x);
                }
            }
            done += chunk.len();
            progress(done);
        }
        Ok(StateCache { dim, data, offsets })
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 2 + self.offsets.len() * 8
    }

    /// The states of parts of sources (each view's positions in order), padded to the
    /// longest, and the `(views, len)` mask of real positions.
    pub fn batch(&self, views: &[View], device: &Device) -> Result<(Tensor, Tensor)> {
        let len = views.iter().map(View::len).max().unwrap_or(1).max(1);
        let d = self.dim;
        let mut states = vec![0f32; views.len() * len * d];
        let mut mask = vec![0f32; views.len() * len];
        for (b, v) in views.iter().enumerate() {
            let base = self.offsets[v.source];
            let mut at = b * len;
            for part in v.parts() {
                let (lo, hi) = (base + part.start, base + part.end);
                let out = &mut states[at * d..(at + hi - lo) * d];
                for (o, x) in out.iter_mut().zip(&self.data[lo * d..hi * d]) {
                    *o = x.to_f32();
                }
                at += hi - lo;
            }
            mask[b * len..at].fill(1.0);
        }
        let states = Tensor::from_vec(states, (views.len(), len, d), device).map_err(cerr)?;
        let mask = Tensor::from_vec(mask, (views.len(), len), device).map_err(cerr)?;
        Ok((states, mask))
    }
}

/// `model`'s encoder output for `views` of `sources` whose frozen states `cache` holds.
fn encode_views(
    model: &T5ForConditionalGeneration,
    cache: &StateCache,
    sources: &[Vec<u32>],
    views: &[View],
) -> Result<Encoded> {
    let (states, mask) = cache.batch(views, model.device())?;
    let tokens: Vec<Vec<u32>> = views.iter().map(|v| v.tokens(&sources[v.source])).collect();
    let (ids, _) = model.pad_batch(&tokens)?;
    model.encoded_from_states(states, &ids, &mask)
}

/// Positions of a cached source a training step reads: the encoder's leading special tokens
/// (`..head`), a contiguous run `start..end`, and its trailing ones (`tail..len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub source: usize,
    head: usize,
    start: usize,
    end: usize,
    tail: usize,
    len: usize,
}

impl View {
    fn whole(source: usize, len: usize) -> View {
        View {
            source,
            head: 0,
            start: 0,
            end: len,
            tail: len,
            len,
        }
    }

    fn parts(&self) -> [std::ops::Range<usize>; 3] {
        [0..self.head, self.start..self.end, self.tail..self.len]
    }

    /// Positions read.
    pub fn len(&self) -> usize {
        self.head + (self.end - self.start) + (self.len - self.tail)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token ids it reads of `tokens` (the source's).
    pub fn tokens(&self, tokens: &[u32]) -> Vec<u32> {
        self.parts()
            .into_iter()
            .flat_map(|r| tokens[r].iter().copied())
            .collect()
    }
}

/// A set of sources whose documents are known, for a Hits@1 figure during training.
struct Probe {
    sources: Vec<Vec<u32>>,
    states: StateCache,
    docs: Vec<u32>,
}

impl Probe {
    /// Share of sources whose best decoded docid names their document (beam 10, as search).
    fn hits_at_1(&self, model: &T5ForConditionalGeneration, docids: &DocIds) -> Result<f64> {
        if self.docs.is_empty() {
            return Ok(0.0);
        }
        let constraint = TrieConstraint { docids };
        let options = BeamOptions {
            beam: 10,
            max_len: docids.max_len(),
            history: 0,
        };
        let mut hits = 0;
        let views: Vec<View> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| View::whole(i, s.len()))
            .collect();
        for chunk in views.chunks(ENCODE_BATCH) {
            let enc = encode_views(model, &self.states, &self.sources, chunk)?;
            let (decoded, _) = crate::decode::beam_search_encoded(
                model,
                &enc,
                &[],
                &constraint,
                &docids.root(),
                &options,
            )?;
            for (v, d) in chunk.iter().zip(decoded) {
                if dsi_rank(docids, &d.finished, 1).first().map(|x| x.0)
                    == Some(self.docs[v.source])
                {
                    hits += 1;
                }
            }
        }
        Ok(hits as f64 / self.docs.len() as f64)
    }
}

/// Everything a DSI training run reads, prepared once: every example's source tokens and
/// target docid, the frozen encoder's outputs for the sources, and the recall probes.
pub struct TrainingSet {
    pub sources: Vec<Vec<u32>>,
    /// Docid tokens then [`EOS`].
    pub targets: Vec<Vec<u32>>,
    /// Whether epochs read a fresh window of the example ([`TrainingSet::epoch_views`]):
    /// document chunks.
    crop: Vec<bool>,
    /// How many special tokens the encoder's tokenizer puts before and after a text.
    specials: (usize, usize),
    states: StateCache,
    /// A window of [`PROBE_WORDS`] words of up to [`PROBE_DOCS`] documents (indexing
    /// recall), and up to as many judged training queries (what the model was taught).
    index_probe: Probe,
    query_probe: Option<Probe>,
}

/// Recall figures during training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recall {
    /// Hits@1 of a document from a window of its own text.
    pub index: f64,
    /// Hits@1 of training queries (when the run has them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queries: Option<f64>,
}

impl TrainingSet {
    /// Pseudo-queries of every document (its title, keyword sets seeded by `seed`, and its
    /// text in [`chunks`] of `options.chunk_tokens`), the judged training queries of
    /// `queries` (a BEIR folder and split), tokenized with `tok` and run through `model`'s
    /// frozen encoder under a progress bar.
    pub fn build(
        index: &Index,
        model: &T5ForConditionalGeneration,
        tok: &Tokenizer,
        docids: &DocIds,
        options: &DsiOptions,
        queries: Option<&(std::path::PathBuf, String)>,
        seed: u64,
    ) -> Result<TrainingSet> {
        let entries = index.docs.all()?;
        let texts: Vec<String> = entries.iter().map(|d| d.text.clone()).collect();
        let idf = keyword_idf(&texts);
        let idf = |w: &str| idf.get(w).copied().unwrap_or(0.0);
        let mut source_texts: Vec<String> = Vec::new();
        let mut text_docs: Vec<u32> = Vec::new();
        for (d, doc) in entries.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((d as u64) << 20));
            for q in keyword_queries(
                &doc.title,
                &doc.text,
                options.keyword_queries,
                &idf,
                &mut rng,
            ) {
                source_texts.push(q);
                text_docs.push(d as u32);
            }
        }
        let judged = match queries {
            Some((dir, split)) => index.judged_queries(dir, split)?,
            None => Vec::new(),
        };
        let refs: Vec<&str> = source_texts.iter().map(String::as_str).collect();
        let mut sources = encode_texts(tok, &refs)?;
        let mut docs = text_docs;
        let mut crop = vec![false; sources.len()];
        // The text in overlapping chunks, each read as the encoder reads a text of its own.
        let (head, tail) = special_tokens(tok)?;
        let mut whole = tok.clone();
        whole
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bodies: Vec<Vec<u32>> = whole
            .encode_batch(refs, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect();
        let size = options
            .chunk_tokens
            .min(MAX_SOURCE_TOKENS - head.len() - tail.len());
        for (d, body) in bodies.iter().enumerate() {
            for r in chunks(body.len(), size) {
                sources.push([&head[..], &body[r], &tail[..]].concat());
                docs.push(d as u32);
                crop.push(true);
            }
        }
        let judged_texts: Vec<&str> = judged.iter().map(|(q, _)| q.as_str()).collect();
        sources.extend(encode_texts(tok, &judged_texts)?);
        docs.extend(judged.iter().map(|x| x.1));
        crop.resize(sources.len(), false);
        let targets: Vec<Vec<u32>> = docs
            .iter()
            .map(|&d| {
                let mut t = docids.tokens(d);
                t.push(EOS);
                t
            })
            .collect();
        let specials = (head.len(), tail.len());

        // Probes: fresh windows (another seed) and an evenly spaced sample of the queries.
        let step = index.docs.len().div_ceil(PROBE_DOCS).max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x5eed));
        let mut probe_texts = Vec::new();
        let mut probe_docs = Vec::new();
        for (d, doc) in entries.iter().enumerate().step_by(step) {
            let words: Vec<&str> = doc.text.split_whitespace().collect();
            if words.is_empty() {
                continue;
            }
            let w = PROBE_WORDS.min(words.len());
            let s = rng.random_range(0..=words.len() - w);
            probe_texts.push(words[s..s + w].join(" "));
            probe_docs.push(d as u32);
        }
        let mut sampled = judged.clone();
        sampled.shuffle(&mut rng);
        sampled.truncate(PROBE_DOCS);

        let total = sources.len() + probe_texts.len() + sampled.len();
        let pb = crate::progress::bar(total as u64, "encoding pseudo-queries and chunks");
        let states = StateCache::encode(model, &sources, &|n| pb.set_position(n as u64))?;
        let probe = |texts: &[&str], docs: Vec<u32>, done: usize| -> Result<Probe> {
            let sources = encode_texts(tok, texts)?;
            let states =
                StateCache::encode(model, &sources, &|n| pb.set_position((done + n) as u64))?;
            Ok(Probe {
                sources,
                states,
                docs,
            })
        };
        let refs: Vec<&str> = probe_texts.iter().map(String::as_str).collect();
        let index_probe = probe(&refs, probe_docs, sources.len())?;
        let query_probe = if sampled.is_empty() {
            None
        } else {
            let refs: Vec<&str> = sampled.iter().map(|(q, _)| q.as_str()).collect();
            Some(probe(
                &refs,
                sampled.iter().map(|x| x.1).collect(),
                sources.len() + probe_texts.len(),
            )?)
        };
        pb.finish_and_clear();
        tracing::info!(
            "DSI training set: {} sources ({} judged queries), encoder states {:.0} MiB",
            sources.len(),
            judged.len(),
            states.size_bytes() as f64 / (1 << 20) as f64
        );
        Ok(TrainingSet {
            sources,
            targets,
            crop,
            specials,
            states,
            index_probe,
            query_probe,
        })
    }

    /// Every example as epoch `epoch` reads it: after the first epoch, a document chunk is
    /// read as a random contiguous window of a quarter to all of its tokens (special tokens
    /// kept), drawn afresh each epoch, so the decoder learns a document from windows anywhere
    /// in its text of every length up to a chunk, at no extra encoder cost; titles, keyword
    /// sets and judged queries are read whole. Deterministic in `(seed, epoch)`.
    pub fn epoch_views(&self, seed: u64, epoch: usize) -> Vec<View> {
        let (head, tail) = self.specials;
        self.sources
            .par_iter()
            .enumerate()
            .map(|(i, s)| {
                let len = s.len();
                let inner = len.saturating_sub(head + tail);
                if !self.crop[i] || inner <= MIN_CROP || epoch == 0 {
                    return View::whole(i, len);
                }
                let mut rng = ChaCha8Rng::seed_from_u64(
                    seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 16),
                );
                let w = rng.random_range(inner.div_ceil(4).max(MIN_CROP)..=inner);
                let start = head + rng.random_range(0..=inner - w);
                View {
                    source: i,
                    head,
                    start,
                    end: start + w,
                    tail: len - tail,
                    len,
                }
            })
            .collect()
    }

    /// `model`'s encoder output for `views`.
    pub fn encoded(&self, model: &T5ForConditionalGeneration, views: &[View]) -> Result<Encoded> {
        encode_views(model, &self.states, &self.sources, views)
    }

    /// Indexing recall and training-query recall of `model` now.
    pub fn recall(&self, model: &T5ForConditionalGeneration, docids: &DocIds) -> Result<Recall> {
        Ok(Recall {
            index: self.index_probe.hits_at_1(model, docids)?,
            queries: self
                .query_probe
                .as_ref()
                .map(|p| p.hits_at_1(model, docids))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The boundary layer thickens downstream. Transition occurs near the \
        trailing edge? Heat transfer rises sharply after transition! A short one. Measured \
        skin friction agrees with theory within ten percent";

    #[test]
    fn chunks_overlap_by_half_and_cover_every_short_window() {
        assert_eq!(chunks(0, 32), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(chunks(20, 32), vec![0..20]);
        assert_eq!(chunks(32, 32), vec![0..32]);
        assert_eq!(chunks(70, 32), vec![0..32, 16..48, 32..64, 38..70]);
        for len in [33, 50, 97, 200] {
            let cs = chunks(len, 32);
            assert_eq!(cs.last().unwrap().end, len);
            for s in 0..=len - 16 {
                assert!(
                    cs.iter().any(|c| c.start <= s && s + 16 <= c.end),
                    "{len}: {s}"
                );
            }
        }
    }

    #[test]
    fn keyword_queries_are_the_title_then_distinct_content_words_in_order() {
        let idf = |w: &str| if w == "friction" { 5.0 } else { 1.0 };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let qs = keyword_queries("Boundary layers", TEXT, 6, &idf, &mut rng);
        assert_eq!(qs.len(), 7);
        assert_eq!(qs[0], "Boundary layers");
        let order: Vec<String> = TEXT.split_whitespace().map(keyword).collect();
        for q in &qs[1..] {
            let kw: Vec<&str> = q.split(' ').collect();
            assert!((3..=8).contains(&kw.len()), "{kw:?}");
            assert!(
                kw.iter()
                    .all(|w| order.iter().any(|o| o == w) && !crate::stem::is_stop_word(w))
            );
            assert_eq!(kw.iter().collect::<HashSet<_>>().len(), kw.len());
            let at: Vec<usize> = kw
                .iter()
                .map(|w| order.iter().position(|o| o == w).unwrap())
                .collect();
            assert!(at.windows(2).all(|p| p[0] < p[1]), "document order: {q}");
        }
        // Deterministic in the generator's seed.
        let mut again = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            keyword_queries("Boundary layers", TEXT, 6, &idf, &mut again),
            qs
        );
        // Too few content words: the title alone; nothing at all: nothing.
        assert_eq!(keyword_queries("T", "a flow", 5, &idf, &mut rng), vec!["T"]);
        assert!(keyword_queries("", " ", 5, &idf, &mut rng).is_empty());
    }

    /// A training set of `sources` (those with `crop` document chunks) over a state cache
    /// whose row `p` of source `i` holds the value `100 i + p` in every dimension.
    fn training_set(sources: Vec<Vec<u32>>, crop: Vec<bool>) -> TrainingSet {
        let dim = 2;
        let mut offsets = vec![0];
        let mut data = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            offsets.push(offsets.last().unwrap() + s.len());
            for p in 0..s.len() {
                data.extend([f16::from_f32((100 * i + p) as f32); 2]);
            }
        }
        let states = StateCache { dim, data, offsets };
        let empty = || Probe {
            sources: Vec::new(),
            states: StateCache {
                dim,
                data: Vec::new(),
                offsets: vec![0],
            },
            docs: Vec::new(),
        };
        TrainingSet {
            targets: vec![vec![2, EOS]; sources.len()],
            crop,
            specials: (1, 1),
            sources,
            states,
            index_probe: empty(),
            query_probe: None,
        }
    }

    #[test]
    fn epochs_read_fresh_windows_of_chunks_that_keep_the_special_tokens() {
        // [CLS]=101 ... [SEP]=102; sources 0 and 1 are chunks, 2 a judged query.
        let long: Vec<u32> = std::iter::once(101).chain(1..=20).chain([102]).collect();
        let short = vec![101, 7, 8, 9, 102];
        let set = training_set(
            vec![long.clone(), short.clone(), long.clone()],
            vec![true, true, false],
        );
        assert!(
            set.epoch_views(3, 0)
                .iter()
                .zip([22, 5, 22])
                .all(|(v, n)| v.len() == n)
        );
        let (one, two) = (set.epoch_views(3, 1), set.epoch_views(3, 2));
        assert_eq!(one, set.epoch_views(3, 1), "deterministic");
        assert_ne!(one[0], two[0], "fresh each epoch");
        for views in [&one, &two] {
            let t = views[0].tokens(&long);
            assert_eq!((t[0], *t.last().unwrap()), (101, 102));
            assert!((5..=20).contains(&(t.len() - 2)), "{t:?}");
            assert!(
                t[1..t.len() - 1].windows(2).all(|w| w[1] == w[0] + 1),
                "contiguous"
            );
            assert_eq!(views[1].tokens(&short), short, "too short to crop");
            assert_eq!(
                views[2].tokens(&long),
                long,
                "judged queries are read whole"
            );
        }
        // The states read are the cropped positions' own, padded after the shorter view.
        let (states, _) = set.states.batch(&[one[0], one[1]], &Device::Cpu).unwrap();
        let states: Vec<Vec<Vec<f32>>> = states.to_vec3().unwrap();
        let first = &one[0];
        let want: Vec<f32> = std::iter::once(0)
            .chain(first.start..first.end)
            .chain([21])
            .map(|p| p as f32)
            .collect();
        let got: Vec<f32> = states[0].iter().map(|r| r[0]).collect();
        assert_eq!(got, want);
        let got: Vec<f32> = states[1].iter().map(|r| r[1]).collect();
        let mut want = vec![100.0, 101.0, 102.0, 103.0, 104.0];
        want.resize(first.len(), 0.0);
        assert_eq!(got, want);
    }
}
