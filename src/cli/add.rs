use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use genret::baseline::dense::DEFAULT_MODEL;
use genret::index::Index;
use serde::Serialize;

/// Add a baseline's index to an index directory: BM25's inverted index, or the documents'
/// embeddings by a dense model. `genret search --mode bm25|dense` and `genret serve` read
/// them; searching never builds them, so a query never writes to the index.
///
/// Nothing is done when the part is already there for these documents (and this model).
/// Takes the index's writer lock; an interrupted run leaves the index as it was.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  genret add cranfield.idx bm25\n  \
    genret add cranfield.idx dense\n  \
    genret add cranfield.idx dense --dense-model ./my-minilm --json")]
pub struct AddArgs {
    /// Index directory.
    pub index: PathBuf,
    /// What to add: bm25 (tantivy, English stemming) or dense (every document embedded).
    pub part: Part,
    /// Dense model: a directory, or a name in the Hugging Face cache.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub dense_model: String,
    /// Print {"index", "part", "built", "bytes", "seconds"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Bm25,
    Dense,
}

#[derive(Serialize)]
struct Added {
    index: String,
    part: Part,
    /// Whether it was built now (false: it was already there).
    built: bool,
    bytes: u64,
    seconds: f64,
}

pub fn run(args: AddArgs) -> anyhow::Result<()> {
    let mut index = Index::open(&args.index)?;
    let started = Instant::now();
    let name = match args.part {
        Part::Bm25 => "bm25",
        Part::Dense => "dense",
    };
    let (built, path) =
        genret::baseline::add(&mut index, name, &args.dense_model, &args.device.device()?)?;
    let added = Added {
        index: args.index.display().to_string(),
        part: args.part,
        built,
        bytes: genret::storage::dir_bytes(&path),
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        return super::print_json(&added);
    }
    let name = match args.part {
        Part::Bm25 => "BM25 index".to_string(),
        Part::Dense => format!("embeddings by {}", args.dense_model),
    };
    if built {
        println!(
            "{}: added the {name} ({:.1} MiB, {:.1} s)",
            added.index,
            added.bytes as f64 / (1u64 << 20) as f64,
            added.seconds
        );
    } else {
        println!("{}: the {name} was already there", added.index);
    }
    Ok(())
}
