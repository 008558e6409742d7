use std::path::PathBuf;

use clap::Args;
use genret::index::Index;
use genret::model::Preset;
use genret::train::{TaskMix, TrainConfig, train};

/// Train one of the index's seq2seq models.
///
/// SEAL's (the default): it learns to write the corpus's n-grams, titles and document ids
/// from pseudo-queries drawn from the documents (and from real queries with --queries).
/// Saves INDEX/model (HF layout: config.json + model.safetensors), checkpoints to
/// INDEX/checkpoint, and logs to INDEX/train_log.jsonl.
///
/// DSI's (--dsi): a frozen sentence encoder (all-MiniLM-L6-v2 unless --encoder) under a
/// small decoder that writes document identifiers, trained on every document's title,
/// keyword sets and text (in overlapping chunks, a fresh window of each every epoch), and
/// --queries. Saves
/// INDEX/dsi/model (with its tokenizer.json and docids.bin), checkpoints to
/// INDEX/dsi/checkpoint, logs to INDEX/dsi/train_log.jsonl; the progress bar and the log show
/// indexing recall (Hits@1 of a document from a window of its own text).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret train cranfield.idx --preset small --epochs 10\n  \
    genret train squad.idx --queries corpus/squad --split train --steps 3000\n  \
    genret train cranfield.idx --resume          # continue a killed run exactly\n  \
    genret train cranfield.idx --dsi             # DSI's model (frozen MiniLM encoder)\n  \
    genret train squad.idx --dsi --queries corpus/squad --split train\n\n\
    Runs candle's elementwise ops on one thread (CANDLE_NUM_THREADS=1) unless that variable is set:\n\
    its thread pool spins between ops and slows the matrix products that training is made of."
)]
pub struct TrainArgs {
    /// Index directory (from `genret index`).
    pub index: PathBuf,
    /// Model size when training from scratch.
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Start from a local HF T5 model directory (or a model name in the HF cache).
    #[arg(long, conflicts_with = "encoder")]
    pub init: Option<PathBuf>,
    /// Warm start: a BERT-family encoder (directory, or name in the HF cache, e.g.
    /// sentence-transformers/all-MiniLM-L6-v2), frozen, under a fresh decoder of --preset's
    /// depth. Index the corpus with its tokenizer.json (`genret index --tokenizer`).
    #[arg(long)]
    pub encoder: Option<String>,
    /// Train a fresh model without a copy head (the decoder then writes every token from its
    /// vocabulary head; see docs/ARCHITECTURE.md).
    #[arg(long)]
    pub no_copy: bool,
    /// BEIR folder whose training queries to learn from (with --split).
    #[arg(long, requires = "split")]
    pub queries: Option<PathBuf>,
    /// Qrels split of --queries to train on.
    #[arg(long, requires = "queries")]
    pub split: Option<String>,
    /// Number of optimizer steps.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Number of passes over the training examples (default 10 when --steps is absent; DSI:
    /// 5).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue the interrupted run whose checkpoint is in the index (its settings are reused).
    #[arg(long)]
    pub resume: bool,
    /// Examples per step (default 32; DSI: 128).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (AdamW, linear warm-up over 5% of steps, then linear decay; default
    /// 1e-3 for both).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Examples per document per epoch: span (query -> n-gram), title (query -> title),
    /// index (document -> docid), docid (query -> docid), keywords (a few of the document's
    /// words, drawn by idf -> an n-gram around one).
    #[arg(long, default_value_t = TaskMix::default())]
    pub tasks: TaskMix,
    /// Save a resumable checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Append a line to train_log.jsonl every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Train DSI's model (INDEX/dsi) instead of SEAL's.
    #[arg(long)]
    pub dsi: bool,
    /// DSI docids: atomic (one output token per document), semantic (hierarchical k-means
    /// over the encoder's document vectors), or auto (atomic up to 100,000 documents).
    #[arg(long, requires = "dsi", default_value = "auto")]
    pub dsi_docids: genret::dsi::DocidChoice,
    /// DSI: keyword-set pseudo-queries per document (besides its title and its text in
    /// chunks).
    #[arg(long, requires = "dsi", default_value_t = genret::dsi::DsiOptions::default().keyword_queries)]
    pub keyword_queries: usize,
    /// DSI: encoder tokens of a document chunk (chunks overlap by half).
    #[arg(long, requires = "dsi", default_value_t = genret::dsi::DsiOptions::default().chunk_tokens)]
    pub chunk_tokens: usize,
    /// DSI: decoder layers.
    #[arg(long, requires = "dsi", default_value_t = genret::dsi::DsiOptions::default().decoder_layers)]
    pub decoder_layers: usize,
    /// DSI: start from HF's random initialisation instead of dense retrieval (the docids'
    /// output rows from the documents' embeddings, the decoder as mean pooling).
    #[arg(long, requires = "dsi")]
    pub no_dense_init: bool,
    /// DSI: without the trainable per-token vectors added to the frozen encoder's output
    /// (the decoder then sees the encoder's contextual states alone).
    #[arg(long, requires = "dsi")]
    pub no_lexical_memory: bool,
    /// DSI: measure recall every N steps (default: every epoch).
    #[arg(long, requires = "dsi")]
    pub eval_every: Option<usize>,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.checkpoint_every == 0 || args.log_every == 0 {
        anyhow::bail!(genret::Error::InvalidInput(
            "--checkpoint-every and --log-every must be at least 1".into()
        ));
    }
    let mut index = Index::open(&args.index)?;
    let base = if args.dsi {
        TrainConfig::dsi()
    } else {
        TrainConfig::default()
    };
    let config = TrainConfig {
        preset: args.preset,
        init: args.init,
        encoder: args.encoder.or(base.encoder.clone()),
        copy: !args.no_copy && base.copy,
        queries: args.queries.zip(args.split),
        steps: args.steps,
        epochs: args.epochs.or(if args.steps.is_some() {
            None
        } else {
            base.epochs
        }),
        batch_size: args.batch_size.unwrap_or(base.batch_size),
        lr: args.lr.unwrap_or(base.lr),
        seed: args.seed,
        tasks: args.tasks,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        dsi: genret::dsi::DsiOptions {
            docids: args.dsi_docids,
            keyword_queries: args.keyword_queries,
            chunk_tokens: args.chunk_tokens,
            decoder_layers: args.decoder_layers,
            dense_init: !args.no_dense_init,
            lexical_memory: !args.no_lexical_memory,
            ..base.dsi
        },
        eval_every: args.eval_every.unwrap_or(base.eval_every),
        ..base
    };
    let report = train(&mut index, &config, args.resume, &args.device.device()?)?;
    let last = report.log.last();
    if args.json {
        return super::print_json(&serde_json::json!({
            "steps": report.steps,
            "params": report.params,
            "seconds": report.seconds,
            "first_loss": report.log.first().map(|e| e.loss),
            "final_loss": last.map(|e| e.loss),
            "recall": report.recall,
            "initial_recall": report.initial_recall,
        }));
    }
    println!(
        "trained {} parameters for {} steps in {:.1} s",
        report.params, report.steps, report.seconds
    );
    if let (Some(first), Some(last)) = (report.log.first(), last) {
        println!(
            "  loss {:.3} (step {}) -> {:.3} (step {}), {:.0} examples/s",
            first.loss, first.step, last.loss, last.step, last.examples_per_s
        );
    }
    let show = |what: &str, r: genret::dsi::Recall| match r.queries {
        Some(q) => println!(
            "  recall@1 {what}: indexing {:.3}, training queries {q:.3}",
            r.index
        ),
        None => println!("  indexing recall@1 {what}: {:.3}", r.index),
    };
    if let Some(r) = report.initial_recall {
        show("at the start", r);
    }
    if let Some(r) = report.recall {
        show("at the end", r);
    }
    let dir = if args.dsi {
        index
            .dir
            .file(genret::dsi::DSI_DIR)
            .join(genret::index::MODEL_DIR)
    } else {
        index.dir.file(genret::index::MODEL_DIR)
    };
    println!("  model saved to {}", dir.display());
    Ok(())
}
