use std::path::PathBuf;

use clap::Args;
use genret::index::Index;
use genret::model::Preset;
use genret::train::{TaskMix, TrainConfig, train};

/// Train the index's seq2seq model: it learns to write the corpus's n-grams, titles and
/// document ids from pseudo-queries drawn from the documents (and from real queries with
/// --queries). Saves INDEX/model (HF layout: config.json + model.safetensors), checkpoints
/// to INDEX/checkpoint, and logs to INDEX/train_log.jsonl.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret train cranfield.idx --preset small --epochs 10\n  \
    genret train squad.idx --queries corpus/squad --split train --steps 3000\n  \
    genret train cranfield.idx --resume          # continue a killed run exactly\n\n\
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
    /// Number of passes over the training examples (default 10 when --steps is absent).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue the interrupted run whose checkpoint is in the index (its settings are reused).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW, linear warm-up over 5% of steps, then linear decay).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
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
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.checkpoint_every == 0 || args.log_every == 0 {
        anyhow::bail!(genret::Error::InvalidInput(
            "--checkpoint-every and --log-every must be at least 1".into()
        ));
    }
    let mut index = Index::open(&args.index)?;
    let config = TrainConfig {
        preset: args.preset,
        init: args.init,
        encoder: args.encoder,
        copy: !args.no_copy,
        queries: args.queries.zip(args.split),
        steps: args.steps,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        tasks: args.tasks,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        ..TrainConfig::default()
    };
    let report = train(&mut index, &config, args.resume)?;
    let last = report.log.last();
    if args.json {
        return super::print_json(&serde_json::json!({
            "steps": report.steps,
            "params": report.params,
            "seconds": report.seconds,
            "first_loss": report.log.first().map(|e| e.loss),
            "final_loss": last.map(|e| e.loss),
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
    println!(
        "  model saved to {}",
        index.dir.file(genret::train::MODEL_DIR).display()
    );
    Ok(())
}
