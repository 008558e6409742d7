use std::path::PathBuf;

use clap::Args;
use genret::bench::{BenchConfig, run, table};
use genret::model::Preset;
use genret::retrieve::{Bm25Params, Mode};

/// Compare generative retrieval with BM25 and dense retrieval on a BEIR collection: builds
/// what is missing under --out (index, model, BM25 index, dense embeddings), answers every
/// judged query of the split with every method, one query at a time, and writes
/// results.json, one TREC run per method and quality_latency.{svg,png}.
///
/// When the collection has a train split (and it is not the evaluated one), the generative
/// model trains on it as well as on the corpus; otherwise on the corpus alone. Rerunning
/// reuses what is already built.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  genret bench corpus/cranfield\n  \
    genret bench corpus/squad --split dev --out bench/squad\n  \
    genret bench corpus/cisi --methods bm25,dense --json")]
pub struct BenchArgs {
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    pub collection: PathBuf,
    /// Qrels split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Methods to compare, comma-separated: seal, dsi, bm25, dense, and fusions of two of
    /// them: A+B (each part's scores min-max normalised per query and summed) or rrf:A+B
    /// (reciprocal-rank fusion); a fusion's parts must be listed too.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "seal,dsi,bm25,dense,seal+dense,bm25+dense"
    )]
    pub methods: Vec<String>,
    /// Output directory (default: bench/<collection name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training steps of the generative model (when one must be trained).
    #[arg(long, default_value_t = 600)]
    pub steps: usize,
    /// Model preset for training: tiny, small or base.
    #[arg(long, value_enum, default_value_t = PresetArg::Small)]
    pub preset: PresetArg,
    /// Beam size of the generative methods.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub beam: u32,
    /// N-grams kept from every decoding step (seal; see `genret search --help`).
    #[arg(long, default_value_t = genret::retrieve::SearchOptions::default().ngrams_per_step as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ngrams_per_step: u32,
    /// Match SEAL's n-grams exactly, not read as English words (see `genret search --help`).
    #[arg(long)]
    pub exact_ngrams: bool,
    /// Queries decoded together in the throughput pass (the q/s bN column); latencies come
    /// from a pass one query at a time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// BM25's term-frequency saturation (modes with bm25; tantivy's and Lucene's default).
    #[arg(long, default_value_t = 1.2)]
    pub k1: f32,
    /// BM25's length normalisation, 0 (none) to 1 (full).
    #[arg(long, default_value_t = 0.75)]
    pub b: f32,
    /// Dense model: a directory, or a name in the Hugging Face cache.
    #[arg(long, default_value = genret::baseline::dense::DEFAULT_MODEL)]
    pub dense_model: String,
    /// Warm start the generative model from this BERT-family encoder (frozen; see
    /// `genret train --encoder`); the index then uses its tokenizer.
    #[arg(long)]
    pub encoder: Option<String>,
    /// Train the generative model without a copy head (see `genret train --no-copy`).
    #[arg(long)]
    pub no_copy: bool,
    /// Print results.json instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PresetArg {
    Tiny,
    Small,
    Base,
}

pub fn run_cli(args: BenchArgs) -> anyhow::Result<()> {
    let methods: Vec<Mode> = args
        .methods
        .iter()
        .map(|m| m.parse())
        .collect::<genret::Result<_>>()?;
    let name = args
        .collection
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "collection".into());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench").join(name));
    let mut config = BenchConfig::new(&args.collection, &out);
    config.split = args.split.clone();
    config.methods = methods;
    config.device = args.device.device()?;
    config.train.steps = Some(args.steps);
    config.train.preset = match args.preset {
        PresetArg::Tiny => Preset::Tiny,
        PresetArg::Small => Preset::Small,
        PresetArg::Base => Preset::Base,
    };
    config.train.encoder = args.encoder.clone();
    config.train.copy = !args.no_copy;
    config.beam = args.beam as usize;
    config.ngrams_per_step = args.ngrams_per_step as usize;
    config.stem = !args.exact_ngrams;
    config.bm25 = Bm25Params::new(args.k1, args.b)?;
    config.batch = args.batch as usize;
    config.dense_model = args.dense_model.clone();
    let results = run(&config)?;
    if args.json {
        return super::print_json(&results);
    }
    print!("{}", table(&results));
    println!(
        "wrote {}/results.json, one TREC run per method, quality_latency.svg/.png",
        out.display()
    );
    Ok(())
}
