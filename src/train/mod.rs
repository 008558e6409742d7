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
//! Files: this one holds the configuration and the loop; `tasks` draws the examples and
//! batches them, `optim` is the optimiser and its schedule, `checkpoint` writes and reads a
//! run's checkpoint and log.
//!
//! Optimiser: AdamW (decoupled weight decay, none on norms), linear warm-up then linear decay,
//! global-norm gradient clipping. Written here rather than using candle-nn's AdamW because
//! resuming exactly needs the optimiser's moments saved and restored, which candle-nn keeps
//! private; its update is one fused pass per parameter (candle's composed update made a dozen
//! passes, about 10% of a `small` training step).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::docid::DocIds;
use crate::dsi::{DsiOptions, Recall, TrainingSet};
use crate::error::{Error, Result, cerr};
use crate::index::Index;
use crate::model::{self, Config, Params, Preset, T5ForConditionalGeneration};
use crate::progress;
use crate::storage::{DirLock, verify_dir, write_dir};

mod card;
mod checkpoint;
mod optim;
mod tasks;

pub use checkpoint::{LogEntry, read_log, trained_with};
use checkpoint::{RunPaths, append_log, read_state, rewrite_log, save_checkpoint};
use optim::global_norm;
pub use optim::{AdamW, learning_rate};
pub use tasks::{Example, TaskData, batches};

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
    let dense =
        crate::baseline::dense::DenseEncoder::load(&encoder_dir.display().to_string(), device)?;
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
/// tokenizer) and registering it in the manifest. The model trains on `device`; a run resumed
/// on another device continues from the same checkpoint.
pub fn train(
    index: &mut Index,
    config: &TrainConfig,
    resume: bool,
    device: &Device,
) -> Result<TrainReport> {
    let started = Instant::now();
    let device = device.clone();
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
        let state = read_state(&ckpt)?.ok_or_else(|| Error::MissingPart {
            dir: index.dir.path().to_path_buf(),
            part: "checkpoint to resume from".into(),
            file: ckpt.display().to_string(),
            hint: "start a run without --resume".into(),
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
            save_extra(tmp)?;
            card::write(tmp, index, &config, &model_config, &log, recall.as_ref())
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
    let vocab = index.docids()?.model_vocab() as usize;
    match &config.init {
        Some(path) => {
            let (c, p) = model::load(
                &model::resolve_model_dir(&path.display().to_string())?,
                device,
            )?;
            if c.vocab_size < vocab {
                return Err(Error::Mismatch {
                    path: path.to_path_buf(),
                    message: format!(
                        "the --init model has vocabulary {} but the index needs {vocab} (its \
                         tokenizer plus {} docid tokens); build the index with that model's \
                         tokenizer (--tokenizer) and `--docids title`",
                        c.vocab_size,
                        index.docids()?.extra_tokens()
                    ),
                });
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
        return Err(Error::Mismatch {
            path: dir.clone(),
            message: format!(
                "the index's tokenizer has {base_vocab} tokens but this encoder has {bert_vocab}: \
                 index the corpus with the encoder's tokenizer (`genret index CORPUS --tokenizer \
                 {}`)",
                dir.join("tokenizer.json").display()
            ),
        });
    }
    Ok((config, params))
}
