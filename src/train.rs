//! train: here is an index, teach a model to write its n-grams, titles and document ids.
//!
//! Training data comes from the index directory alone (documents, tokenizer), plus a BEIR
//! query split when one is given. Each epoch draws its examples afresh from a generator seeded
//! by `(seed, epoch, document)`, so a run is reproducible and a resumed run sees exactly the
//! batches the interrupted one would have.
//!
//! Tasks (examples per document per epoch, see [`TaskMix`]):
//! - `span` (SEAL): pseudo-query (a random window of the document) -> `<ngram>` + a span of
//!   the same document, alternately inside the pseudo-query and anywhere;
//! - `title` (SEAL): pseudo-query -> `<title>` title `</title>`;
//! - `index` (DSI indexing): `<index>` + the first tokens of the document -> `<docid>` + its
//!   identifier ([`crate::docid`]);
//! - `docid` (DSI-QG retrieval): pseudo-query -> `<docid>` + its identifier;
//! - `keywords` (SEAL): 3-8 of the document's tokens drawn in proportion to their idf, in
//!   document order -> `<ngram>` + a window of 3-10 tokens around one of them;
//! - with `--queries`: each judged training query -> a span of its relevant document that
//!   shares the most tokens with it, its title, and its id.
//!
//! Every target ends with `</s>`. Sources start with `<query>` or `<index>`.
//!
//! Optimiser: AdamW (decoupled weight decay, none on norms), linear warm-up then linear decay,
//! global-norm gradient clipping. Written here rather than using candle-nn's AdamW because
//! resuming exactly needs the optimiser's moments saved and restored, which candle-nn keeps
//! private; its update is one fused pass per parameter (candle's composed update made a dozen
//! passes, about 10% of a `small` training step).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::docid::DocIds;
use crate::dsi::{DsiOptions, Recall, TrainingSet};
use crate::error::{Error, Result, cerr};
use crate::index::{Index, MODEL_DIR};
use crate::model::{self, Config, Params, Preset, T5ForConditionalGeneration};
use crate::progress;
use crate::storage::{DirLock, verify_dir, write_dir};

pub use crate::model::MAX_SOURCE_LEN;

pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const TRAIN_LOG: &str = "train_log.jsonl";

/// Examples per document per epoch for each corpus task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskMix {
    pub span: usize,
    pub title: usize,
    pub index: usize,
    /// Pseudo-query -> docid (DSI-QG style retrieval examples).
    #[serde(default)]
    pub docid: usize,
    /// Keyword query (a few of the document's words, drawn by idf) -> an n-gram around one.
    #[serde(default)]
    pub keywords: usize,
}

impl Default for TaskMix {
    fn default() -> Self {
        TaskMix {
            span: 4,
            title: 1,
            index: 1,
            docid: 1,
            // Off: no consistent gain across collections (docs/BENCHMARKS.md).
            keywords: 0,
        }
    }
}

impl std::fmt::Display for TaskMix {
    /// The form [`FromStr`](std::str::FromStr) parses: `span=4,title=1,...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "span={},title={},index={},docid={},keywords={}",
            self.span, self.title, self.index, self.docid, self.keywords
        )
    }
}

impl std::str::FromStr for TaskMix {
    type Err = String;

    /// Parses `span=4,title=1,index=1,docid=1` (missing tasks count 0).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut mix = TaskMix {
            span: 0,
            title: 0,
            index: 0,
            docid: 0,
            keywords: 0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (name, n) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected task=count"))?;
            let n: usize = n
                .parse()
                .map_err(|_| format!("{part:?}: count is not a number"))?;
            match name.trim() {
                "span" => mix.span = n,
                "title" => mix.title = n,
                "index" => mix.index = n,
                "docid" => mix.docid = n,
                "keywords" => mix.keywords = n,
                other => {
                    return Err(format!(
                        "unknown task {other:?} (span, title, index, docid, keywords)"
                    ));
                }
            }
        }
        Ok(mix)
    }
}

/// Everything that determines a training run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub preset: Preset,
    /// Start from this model directory instead of a fresh initialisation.
    pub init: Option<PathBuf>,
    /// Warm start: a BERT-family encoder (directory or HF cache name), frozen, under a fresh
    /// decoder whose embeddings start from the encoder's. The index must use its tokenizer.
    #[serde(default)]
    pub encoder: Option<String>,
    /// Give a fresh model a copy head ([`crate::model::Config::copy_attention`]).
    #[serde(default = "yes")]
    pub copy: bool,
    /// Training queries: a BEIR folder and the qrels split to use.
    pub queries: Option<(PathBuf, String)>,
    pub steps: Option<usize>,
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub lr: f64,
    /// Warm-up steps as a fraction of all steps.
    pub warmup: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub log_every: usize,
    pub tasks: TaskMix,
    /// Source tokens a training example keeps; search keeps as many of a query's
    /// ([`MAX_SOURCE_LEN`] by default for both).
    pub max_source_len: usize,
    pub max_target_len: usize,
    /// Stop after this many steps of this run without a final save, as if killed (tests and
    /// time-sliced jobs); `--resume` continues from the last periodic checkpoint.
    #[serde(skip)]
    pub halt_after: Option<usize>,
    /// Which of the index's models the run trains.
    #[serde(default)]
    pub target: Target,
    /// DSI's recipe (with [`Target::Dsi`]).
    #[serde(default)]
    pub dsi: DsiOptions,
    /// Measure recall every this many steps (DSI; 0: only at the end).
    #[serde(default)]
    pub eval_every: usize,
}

/// The model a training run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// SEAL's model, `INDEX/model`: the tasks of [`TaskMix`].
    #[default]
    Seal,
    /// DSI's own model, `INDEX/dsi/model` ([`crate::dsi`]).
    Dsi,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            preset: Preset::Small,
            init: None,
            encoder: None,
            copy: true,
            queries: None,
            steps: None,
            epochs: None,
            batch_size: 32,
            lr: 1e-3,
            warmup: 0.05,
            weight_decay: 0.01,
            clip_norm: 1.0,
            seed: 42,
            checkpoint_every: 500,
            log_every: 10,
            tasks: TaskMix::default(),
            max_source_len: MAX_SOURCE_LEN,
            max_target_len: 24,
            halt_after: None,
            target: Target::Seal,
            dsi: DsiOptions::default(),
            eval_every: 0,
        }
    }
}

impl TrainConfig {
    /// DSI's defaults ([`crate::dsi`]): the frozen dense encoder, pseudo-queries, and the
    /// optimiser settings of a fine-tune from the dense start.
    pub fn dsi() -> TrainConfig {
        TrainConfig {
            target: Target::Dsi,
            encoder: Some(crate::baseline::dense::DEFAULT_MODEL.into()),
            copy: false,
            epochs: Some(DSI_EPOCHS),
            batch_size: 128,
            lr: 1e-3,
            warmup: 0.05,
            max_source_len: crate::dsi::MAX_SOURCE_TOKENS,
            ..TrainConfig::default()
        }
    }
}

/// Passes over DSI's training set by default.
pub const DSI_EPOCHS: usize = 5;

fn yes() -> bool {
    true
}

/// One line of `train_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub examples_per_s: f64,
    /// DSI: recall measured at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<Recall>,
}

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
        let docs = index
            .docs
            .par_iter()
            .enumerate()
            .map(|(i, d)| {
                Ok(DocTokens {
                    title: tok.encode(&d.title)?,
                    body: tok.encode(&d.text)?,
                    docid: index.docids.tokens(i as u32),
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
        tokens.extend(fm.continuations(fm.full_range()).iter().map(|c| c.token));
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

/// AdamW with its moments, savable for exact resumption.
pub struct AdamW {
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    pub step: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: &Params, weight_decay: f64) -> Result<AdamW> {
        let zeros = |t: &Tensor| t.zeros_like().map_err(cerr);
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, var) in params.iter().filter(|(n, _)| !model::is_frozen(n)) {
            m.insert(name.clone(), zeros(var.as_tensor())?);
            v.insert(name.clone(), zeros(var.as_tensor())?);
        }
        Ok(AdamW {
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One update with learning rate `lr`, gradients scaled by `scale` (clipping).
    pub fn update(
        &mut self,
        params: &Params,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        scale: f64,
    ) -> Result<()> {
        self.step += 1;
        for (name, var) in params.iter().filter(|(n, _)| !model::is_frozen(n)) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let theta = var.as_tensor();
            // No decay on norms and position biases (1-D or tiny tables), as is usual.
            let decay = if theta.rank() > 1 && !name.contains("relative_attention_bias") {
                self.weight_decay
            } else {
                0.0
            };
            let h = AdamStep::new(
                (self.beta1, self.beta2),
                self.step,
                self.eps,
                lr,
                decay,
                scale,
            );
            let run = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
                let (m, v, new) = model::kernels::with_f32s(
                    &[g, &self.m[name], &self.v[name], theta],
                    "adamw",
                    |s| h.apply(s[0], s[1], s[2], s[3]),
                )?;
                let shape = theta.shape();
                Ok((
                    Tensor::from_vec(m, shape, theta.device())?,
                    Tensor::from_vec(v, shape, theta.device())?,
                    Tensor::from_vec(new, shape, theta.device())?,
                ))
            };
            let (m, v, new) = run().map_err(cerr)?;
            var.set(&new).map_err(cerr)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (k, t) in &self.m {
            tensors.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            tensors.insert(format!("v.{k}"), t.clone());
        }
        model::save_tensors(path, &tensors)
    }

    fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let mut tensors =
            candle_core::safetensors::load(path, device).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for (prefix, map) in [("m", &mut self.m), ("v", &mut self.v)] {
            for (k, t) in map.iter_mut() {
                *t = tensors
                    .remove(&format!("{prefix}.{k}"))
                    .ok_or_else(|| Error::Corrupt {
                        path: path.to_path_buf(),
                        message: format!("optimizer state lacks {prefix}.{k}"),
                    })?;
            }
        }
        Ok(())
    }
}

/// The constants of one AdamW update: gradient scale (clipping), moment decays, their bias
/// corrections `c = 1 - beta^t`, epsilon, learning rate, and `keep = 1 - lr * weight_decay`.
struct AdamStep {
    scale: f32,
    b1: f32,
    b2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    lr: f32,
    keep: f32,
}

impl AdamStep {
    /// The constants of update number `step` (1-based) with the given moment decays, epsilon,
    /// learning rate, weight decay and gradient scale.
    fn new(
        (b1, b2): (f64, f64),
        step: usize,
        eps: f64,
        lr: f64,
        weight_decay: f64,
        scale: f64,
    ) -> AdamStep {
        let t = step as i32;
        AdamStep {
            scale: scale as f32,
            b1: b1 as f32,
            b2: b2 as f32,
            c1: (1.0 - b1.powi(t)) as f32,
            c2: (1.0 - b2.powi(t)) as f32,
            eps: eps as f32,
            lr: lr as f32,
            keep: (1.0 - lr * weight_decay) as f32,
        }
    }

    /// New `(m, v, theta)` from gradient `g`, moments `m`, `v` and parameter `theta` (equal
    /// lengths), in one parallel pass.
    fn apply(
        &self,
        g: &[f32],
        m: &[f32],
        v: &[f32],
        theta: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        const CHUNK: usize = 1 << 14;
        let n = theta.len();
        let (mut m2, mut v2, mut t2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        m2.par_chunks_mut(CHUNK)
            .zip(v2.par_chunks_mut(CHUNK))
            .zip(t2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((m2, v2), t2))| {
                let at = c * CHUNK;
                for i in 0..m2.len() {
                    let g = g[at + i] * self.scale;
                    let m = self.b1 * m[at + i] + (1.0 - self.b1) * g;
                    let v = self.b2 * v[at + i] + (1.0 - self.b2) * g * g;
                    let step = (m / self.c1) / ((v / self.c2).sqrt() + self.eps);
                    m2[i] = m;
                    v2[i] = v;
                    t2[i] = theta[at + i] * self.keep - self.lr * step;
                }
            });
        (m2, v2, t2)
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then linear decay to 0.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    let warm = ((total as f64 * config.warmup).round() as usize).max(1);
    if step < warm {
        config.lr * (step + 1) as f64 / warm as f64
    } else {
        let rest = (total - warm).max(1) as f64;
        config.lr * (1.0 - (step - warm) as f64 / rest).max(0.0)
    }
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    total_steps: usize,
    config: TrainConfig,
}

/// What a finished (or halted) run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: usize,
    pub total_steps: usize,
    pub log: Vec<LogEntry>,
    pub params: usize,
    pub seconds: f64,
    /// DSI: the last recall measured.
    pub recall: Option<Recall>,
    /// DSI: the recall of the fresh model, before its first step (not on resume).
    pub initial_recall: Option<Recall>,
}

/// `checkpoint/state.json` in the checkpoint directory `ckpt`, or `None` if there is none.
fn read_state(ckpt: &Path) -> Result<Option<CheckpointState>> {
    let path = ckpt.join("state.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// Where a run's model, checkpoint and log live inside the index.
struct RunPaths {
    /// Manifest part of the trained model.
    part: &'static str,
    /// Directory of the trained model, relative to the index.
    model: String,
    checkpoint: PathBuf,
    log: PathBuf,
}

impl RunPaths {
    fn of(dir: &Path, target: Target) -> RunPaths {
        let base = match target {
            Target::Seal => String::new(),
            Target::Dsi => format!("{}/", crate::dsi::DSI_DIR),
        };
        RunPaths {
            part: match target {
                Target::Seal => "model",
                Target::Dsi => crate::dsi::DSI_DIR,
            },
            model: format!("{base}{MODEL_DIR}"),
            checkpoint: dir.join(format!("{base}{CHECKPOINT_DIR}")),
            log: dir.join(format!("{base}{TRAIN_LOG}")),
        }
    }
}

/// The configuration of the index's latest training run of `target` (kept with its last
/// checkpoint), or `None` if there is no checkpoint.
pub fn trained_with(index: &Index, target: Target) -> Result<Option<TrainConfig>> {
    let paths = RunPaths::of(index.dir.path(), target);
    Ok(read_state(&paths.checkpoint)?.map(|s| s.config))
}

/// What a DSI run carries besides the model: its docids and the encoder's tokenizer, saved
/// into the checkpoint and the model directory.
struct DsiParts {
    docids: DocIds,
    tokenizer: Vec<u8>,
}

impl DsiParts {
    fn save(&self, dir: &Path) -> Result<()> {
        self.docids.save(&dir.join(crate::dsi::DOCIDS_FILE))?;
        crate::storage::write_atomic(&dir.join(crate::dsi::TOKENIZER_FILE), &self.tokenizer)
    }

    fn load(dir: &Path) -> Result<DsiParts> {
        let path = dir.join(crate::dsi::TOKENIZER_FILE);
        Ok(DsiParts {
            docids: DocIds::load(&dir.join(crate::dsi::DOCIDS_FILE))?,
            tokenizer: std::fs::read(&path).map_err(|e| Error::io(&path, e))?,
        })
    }
}

/// A fresh DSI model for `index` (docids chosen by the recipe, from the encoder's document
/// vectors, which the dense baseline caches in the index).
fn dsi_start(
    index: &mut Index,
    config: &TrainConfig,
    device: &Device,
) -> Result<(Config, Params, DsiParts)> {
    let name = config
        .encoder
        .clone()
        .unwrap_or_else(|| crate::baseline::dense::DEFAULT_MODEL.into());
    let encoder_dir = model::resolve_model_dir(&name)?;
    let dense = crate::baseline::dense::DenseEncoder::load(&encoder_dir.display().to_string())?;
    let vectors = crate::baseline::dense::DenseIndex::open_or_build(index, &dense)?.vectors()?;
    let scheme = config.dsi.scheme(index.docs.len());
    let docids = crate::dsi::build_docids(index, scheme, &vectors, dense.dim(), config.seed)?;
    let path = encoder_dir.join(crate::dsi::TOKENIZER_FILE);
    let tok = crate::dsi::load_tokenizer(&path, crate::dsi::MAX_QUERY_TOKENS)?;
    let (c, p) = crate::dsi::init_model(
        &encoder_dir,
        &config.dsi,
        &docids,
        &vectors,
        crate::dsi::corpus_tokens(index, &tok)?,
        config.seed,
        device,
    )?;
    let tokenizer = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok((c, p, DsiParts { docids, tokenizer }))
}

/// The examples a run draws its batches from.
enum Data {
    Seal(TaskData),
    /// Fixed across epochs, with the frozen encoder's outputs cached.
    Dsi(Box<TrainingSet>),
}

/// One epoch's examples, their batches, and (DSI) the part of each cached source it reads.
struct Epoch {
    number: usize,
    examples: Vec<Example>,
    order: Vec<Vec<usize>>,
    views: Vec<crate::dsi::View>,
}

impl Data {
    fn epoch(&self, config: &TrainConfig, number: usize) -> Epoch {
        let (examples, views) = match self {
            Data::Seal(d) => (d.epoch_examples(config, number), Vec::new()),
            Data::Dsi(set) => {
                let views = set.epoch_views(config.seed, number);
                let examples = views
                    .iter()
                    .map(|v| Example {
                        source: v.tokens(&set.sources[v.source]),
                        target: set.targets[v.source].clone(),
                    })
                    .collect();
                (examples, views)
            }
        };
        let order = batches(&examples, config.batch_size, config.seed, number);
        Epoch {
            number,
            examples,
            order,
            views,
        }
    }

    /// The mean loss of `batch` (positions in `epoch`'s examples).
    fn loss(
        &self,
        model: &T5ForConditionalGeneration,
        epoch: &Epoch,
        batch: &[usize],
    ) -> Result<Tensor> {
        let targets: Vec<Vec<u32>> = batch
            .iter()
            .map(|&i| epoch.examples[i].target.clone())
            .collect();
        match self {
            Data::Seal(_) => {
                let sources: Vec<Vec<u32>> = batch
                    .iter()
                    .map(|&i| epoch.examples[i].source.clone())
                    .collect();
                model.loss(&sources, &targets)
            }
            Data::Dsi(set) => {
                let views: Vec<_> = batch.iter().map(|&i| epoch.views[i]).collect();
                model.loss_encoded(&set.encoded(model, &views)?, &targets)
            }
        }
    }
}

/// Trains a model on `index` (or resumes the run whose checkpoint is in the index), saving the
/// final model into `INDEX/model` (SEAL) or `INDEX/dsi/model` (DSI, with its docids and
/// tokenizer) and registering it in the manifest.
pub fn train(index: &mut Index, config: &TrainConfig, resume: bool) -> Result<TrainReport> {
    let started = Instant::now();
    let device = Device::Cpu;
    let dir = index.dir.path().to_path_buf();
    let paths = RunPaths::of(&dir, config.target);
    let ckpt = paths.checkpoint.clone();
    let log_path = paths.log.clone();
    let _lock = DirLock::acquire(&dir, "train")?;
    let owner = index.dir.fingerprint();

    let (config, params, model_config, start_step, state_total, dsi_parts) = if resume {
        if ckpt.exists() && !index.dir.is_legacy_unsealed(&ckpt) {
            let seal = verify_dir(&ckpt)?;
            index
                .dir
                .check_owner(&seal, &ckpt, "train without --resume to start afresh")?;
        }
        let state = read_state(&ckpt)?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: no checkpoint to resume from; start a run without --resume",
                ckpt.display()
            ))
        })?;
        let (model_config, params) = model::load(&ckpt, &device)?;
        let mut cfg = state.config.clone();
        cfg.halt_after = config.halt_after;
        let parts = match cfg.target {
            Target::Seal => None,
            Target::Dsi => Some(DsiParts::load(&ckpt)?),
        };
        (
            cfg,
            params,
            model_config,
            state.step,
            Some(state.total_steps),
            parts,
        )
    } else if config.target == Target::Dsi {
        let (c, p, parts) = dsi_start(index, config, &device)?;
        (config.clone(), p, c, 0, None, Some(parts))
    } else {
        let (model_config, params) = seal_start(index, config, &device)?;
        (config.clone(), params, model_config, 0, None, None)
    };
    if config.batch_size == 0 || config.max_target_len < 2 || config.max_source_len < 2 {
        return Err(Error::InvalidInput(
            "batch size must be >= 1 and max lengths >= 2".into(),
        ));
    }

    let mut model_config = model_config;
    let seal_data = match config.target {
        Target::Seal => Some(TaskData::new(index, config.queries.as_ref())?),
        Target::Dsi => None,
    };
    if !resume && let Some(data) = &seal_data {
        let tokens = data.output_tokens(index);
        // Scoring tokens the decoder never writes is wasted work (most of a 30k BERT or T5
        // vocabulary for a small corpus); the full vocabulary is kept when nothing is saved.
        if tokens.len() < model_config.vocab_size {
            model_config.output_tokens = Some(tokens);
        }
    }
    let model = T5ForConditionalGeneration::new(&model_config, &params)?;
    let data = match (seal_data, &dsi_parts) {
        (Some(d), _) => Data::Seal(d),
        (None, Some(parts)) => {
            let tmp = std::env::temp_dir().join(format!("genret-tok-{}.json", std::process::id()));
            crate::storage::write_atomic(&tmp, &parts.tokenizer)?;
            let tok = crate::dsi::load_tokenizer(&tmp, config.max_source_len);
            let _ = std::fs::remove_file(&tmp);
            Data::Dsi(Box::new(TrainingSet::build(
                index,
                &model,
                &tok?,
                &parts.docids,
                &config.dsi,
                config.queries.as_ref(),
                config.seed,
            )?))
        }
        (None, None) => unreachable!("a DSI run has its parts"),
    };
    // Every epoch has the same number of examples; epoch 0's are kept for the loop.
    let first = data.epoch(&config, 0);
    let per_epoch = first.examples.len().div_ceil(config.batch_size);
    if per_epoch == 0 {
        return Err(Error::InvalidInput(
            "the index yields no training examples".into(),
        ));
    }
    let total = state_total.unwrap_or(match (config.steps, config.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * per_epoch,
        (None, None) => 10 * per_epoch,
    });
    let eval_every = match config.eval_every {
        0 => per_epoch,
        n => n,
    };

    let mut opt = AdamW::new(&params, config.weight_decay)?;
    let mut log = if resume {
        opt.load(&ckpt.join("optimizer.safetensors"), &device)?;
        opt.step = start_step;
        // Entries past the checkpoint belong to the interrupted run and are redone.
        let kept: Vec<LogEntry> = read_log(&log_path)?
            .into_iter()
            .filter(|e| e.step <= start_step)
            .collect();
        rewrite_log(&log_path, &kept)?;
        kept
    } else {
        let _ = std::fs::remove_file(&log_path);
        Vec::new()
    };
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let save_extra = |dir: &Path| -> Result<()> {
        match &dsi_parts {
            Some(parts) => parts.save(dir),
            None => Ok(()),
        }
    };

    let pb = progress::bar(total as u64, "training");
    pb.set_position(start_step as u64);
    let mut current = first;
    let mut window_loss = 0.0;
    let mut window_steps = 0usize;
    let mut window_examples = 0usize;
    let mut window_start = Instant::now();
    let mut recall = log.iter().rev().find_map(|e| e.recall);
    // Where a fresh DSI run starts (its dense start's recall), for the report.
    let initial_recall = match (&data, &dsi_parts) {
        (Data::Dsi(set), Some(parts)) if !resume => {
            let r = set.recall(&model, &parts.docids)?;
            pb.set_message(format!("indexing recall@1 {:.3} at the start", r.index));
            Some(r)
        }
        _ => None,
    };
    for (steps_this_run, step) in (start_step..total).enumerate() {
        if config.halt_after.is_some_and(|h| steps_this_run >= h) {
            pb.abandon();
            return Ok(TrainReport {
                steps: step,
                total_steps: total,
                log,
                params: model_config.num_params(),
                seconds: started.elapsed().as_secs_f64(),
                recall,
                initial_recall,
            });
        }
        let epoch = step / per_epoch;
        if current.number != epoch {
            current = data.epoch(&config, epoch);
        }
        let order = &current.order;
        let batch = &order[(step % per_epoch).min(order.len() - 1)];

        let loss = data.loss(&model, &current, batch)?;
        let loss_value = loss.to_scalar::<f32>().map_err(cerr)? as f64;
        if !loss_value.is_finite() {
            return Err(Error::Model(format!(
                "loss became {loss_value} at step {step}; lower --lr"
            )));
        }
        let grads = loss.backward().map_err(cerr)?;
        let norm = global_norm(&params, &grads)?;
        let scale = if norm > config.clip_norm {
            config.clip_norm / norm
        } else {
            1.0
        };
        let lr = learning_rate(&config, step, total);
        opt.update(&params, &grads, lr, scale)?;

        window_loss += loss_value;
        window_steps += 1;
        window_examples += batch.len();
        let done = step + 1;
        let measured = match &data {
            Data::Dsi(set) if done % eval_every == 0 || done == total => {
                let parts = dsi_parts.as_ref().expect("a DSI run has its parts");
                Some(set.recall(&model, &parts.docids)?)
            }
            _ => None,
        };
        if measured.is_some() {
            recall = measured;
        }
        if done % config.log_every == 0 || done == total || measured.is_some() {
            let entry = LogEntry {
                step: done,
                loss: window_loss / window_steps as f64,
                lr,
                examples_per_s: window_examples as f64 / window_start.elapsed().as_secs_f64(),
                recall: measured,
            };
            append_log(&log_path, &entry)?;
            let recall_text = match recall {
                Some(Recall {
                    index,
                    queries: Some(q),
                }) => format!(" | recall@1 index {index:.3} queries {q:.3}"),
                Some(r) => format!(" | indexing recall@1 {:.3}", r.index),
                None => String::new(),
            };
            pb.set_message(format!(
                "loss {:.3} | {:.0} ex/s{recall_text}",
                entry.loss, entry.examples_per_s
            ));
            log.push(entry);
            window_loss = 0.0;
            window_steps = 0;
            window_examples = 0;
            window_start = Instant::now();
        }
        pb.inc(1);
        if done % config.checkpoint_every == 0 || done == total {
            save_checkpoint(
                &ckpt,
                &model_config,
                &params,
                &opt,
                done,
                total,
                &config,
                &owner,
                &save_extra,
            )?;
        }
    }
    pb.finish_and_clear();
    let model_dir = dir.join(&paths.model);
    write_dir(
        &model_dir,
        &model_dir.with_extension("tmp"),
        Some(&owner),
        |tmp| {
            model::save(tmp, &model_config, &params)?;
            save_extra(tmp)
        },
    )?;
    let mut meta = BTreeMap::from([
        ("params".to_string(), model_config.num_params().into()),
        ("steps".to_string(), total.into()),
        (
            "config".to_string(),
            serde_json::to_value(&config).expect("config serializes"),
        ),
    ]);
    if let Some(r) = recall {
        meta.insert(
            "recall".to_string(),
            serde_json::to_value(r).expect("recall serializes"),
        );
    }
    index.dir.add_part(
        paths.part,
        &format!("{}/{}", paths.model, model::WEIGHTS_FILE),
        meta,
    )?;
    Ok(TrainReport {
        steps: total,
        total_steps: total,
        log,
        params: model_config.num_params(),
        seconds: started.elapsed().as_secs_f64(),
        recall,
        initial_recall,
    })
}

/// A fresh SEAL model: `--init`'s checkpoint, the warm start, or the preset from scratch.
fn seal_start(index: &Index, config: &TrainConfig, device: &Device) -> Result<(Config, Params)> {
    // The model writes docids too: their symbols may extend the tokenizer's vocabulary.
    let vocab = index.docids.model_vocab() as usize;
    match &config.init {
        Some(path) => {
            let (c, p) = model::load(
                &model::resolve_model_dir(&path.display().to_string())?,
                device,
            )?;
            if c.vocab_size < vocab {
                return Err(Error::InvalidInput(format!(
                    "--init model has vocabulary {} but the index needs {vocab} (its tokenizer \
                     plus {} docid tokens); build the index with that model's tokenizer \
                     (--tokenizer) and `--docids title`",
                    c.vocab_size,
                    index.docids.extra_tokens()
                )));
            }
            Ok((c, p))
        }
        None => {
            let mut c = Config::preset(config.preset, vocab);
            let sp = index.tokenizer.specials();
            c.pad_token_id = sp.pad;
            c.eos_token_id = sp.eos;
            c.decoder_start_token_id = sp.pad;
            c.copy_attention = config.copy;
            match &config.encoder {
                Some(name) => warm_start(index, c, name, config.seed, device),
                None => {
                    let p = model::init_params(&c, config.seed, device)?;
                    Ok((c, p))
                }
            }
        }
    }
}

fn global_norm(params: &Params, grads: &candle_core::backprop::GradStore) -> Result<f64> {
    let mut sum = 0.0f64;
    for var in params.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            // Fixed chunks summed in order: the same bits whatever rayon's split.
            let chunks: Vec<f64> = model::kernels::with_f32s(&[g], "gradient norm", |s| {
                s[0].par_chunks(1 << 14)
                    .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                    .collect()
            })
            .map_err(cerr)?;
            sum += chunks.iter().sum::<f64>();
        }
    }
    Ok(sum.sqrt())
}

/// Writes a checkpoint (with `extra`'s files) into a fresh directory and swaps it in, so a
/// crash leaves the previous checkpoint or the new one whole.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    ckpt: &Path,
    model_config: &Config,
    params: &Params,
    opt: &AdamW,
    step: usize,
    total: usize,
    config: &TrainConfig,
    owner: &str,
    extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    write_dir(ckpt, &ckpt.with_extension("tmp"), Some(owner), |tmp| {
        model::save(tmp, model_config, params)?;
        opt.save(&tmp.join("optimizer.safetensors"))?;
        extra(tmp)?;
        let state = CheckpointState {
            step,
            total_steps: total,
            config: config.clone(),
        };
        crate::storage::write_atomic(
            &tmp.join("state.json"),
            &serde_json::to_vec_pretty(&state).expect("state serializes"),
        )
    })
}

fn append_log(path: &Path, entry: &LogEntry) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(entry).expect("log entry serializes");
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Reads `train_log.jsonl` (empty if absent).
pub fn read_log(path: &Path) -> Result<Vec<LogEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut lines = crate::corpus::Lines::open(path)?;
    let mut out = Vec::new();
    while let Some(line) = lines.next_line()? {
        if line.text.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line.text)
                .map_err(|e| line.error(format!("malformed log entry: {e}")))?,
        );
    }
    Ok(out)
}

fn rewrite_log(path: &Path, entries: &[LogEntry]) -> Result<()> {
    crate::storage::write_atomic_with(path, |w| {
        for e in entries {
            serde_json::to_writer(&mut *w, e)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// A fresh model whose encoder is the BERT-family checkpoint `name` (frozen) and whose
/// decoder has `config`'s depth at the encoder's width.
fn warm_start(
    index: &Index,
    config: Config,
    name: &str,
    seed: u64,
    device: &Device,
) -> Result<(Config, Params)> {
    let dir = model::resolve_model_dir(name)?;
    let base_vocab = index.tokenizer.inner().get_vocab_size(false);
    let (config, params) = model::bert_warm_start(config, &dir, seed, device)?;
    let bert_vocab = config.bert_encoder.as_ref().map_or(0, |b| b.vocab_size);
    if base_vocab != bert_vocab {
        return Err(Error::InvalidInput(format!(
            "the index's tokenizer has {base_vocab} tokens but the encoder {name} has {bert_vocab}: index the corpus with the encoder's tokenizer (`genret index CORPUS --tokenizer {}`)",
            dir.join("tokenizer.json").display()
        )));
    }
    Ok((config, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused update equals AdamW written with candle's tensor ops (the reference).
    #[test]
    fn fused_adam_step_matches_the_composed_update() {
        let dev = Device::Cpu;
        let n = 40_000; // more than one parallel chunk
        let vals = |salt: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + salt) % 1013) as f32 / 1013.0 * scale - scale / 2.0)
                .collect()
        };
        let (g, m, theta) = (vals(1, 2.0), vals(2, 0.2), vals(3, 1.0));
        let v: Vec<f32> = vals(4, 0.02).iter().map(|x| x.abs()).collect();
        let (b1, b2, t, eps, lr, wd, scale) = (0.9f64, 0.999f64, 3, 1e-8, 1e-3, 0.01, 0.5);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let h = AdamStep::new((b1, b2), t as usize, eps, lr, wd, scale);
        let (m2, v2, t2) = h.apply(&g, &m, &v, &theta);

        let t_ = |x: &Vec<f32>| Tensor::from_slice(x, n, &dev).unwrap();
        let reference = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let g = (t_(&g) * scale)?;
            let m = ((t_(&m) * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((t_(&v) * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let step = ((&m / c1)? / ((&v / c2)?.sqrt()? + eps)?)?;
            let new = ((t_(&theta) * (1.0 - lr * wd))? - (step * lr)?)?;
            Ok((m, v, new))
        };
        let (rm, rv, rt) = reference().unwrap();
        for (fused, reference) in [(m2, rm), (v2, rv), (t2, rt)] {
            let reference = reference.to_vec1::<f32>().unwrap();
            let worst = fused
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-6))
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "relative difference {worst}");
        }
    }
}
