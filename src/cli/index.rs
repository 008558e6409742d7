use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use genret::corpus::read_corpus;
use genret::docid::Scheme;
use genret::fmindex::BuildOptions;
use genret::index::{AddConfig, BuildConfig, CorpusSource, TokenizerSource, build_from};
use genret::tokenize::{TokenizerKind, TrainConfig};

/// Index a corpus: train (or load) a tokenizer, tokenize every document, and build the
/// token-level FM-index, all into one index directory.
///
/// CORPUS is a BEIR folder (with corpus.jsonl), a .jsonl file, or a TSV file
/// (id<TAB>text or id<TAB>title<TAB>text). Rebuilding into an existing index replaces it
/// whole once the new one is complete (models trained on the old one go with it); until then the
/// old index stays usable, and an interrupted or failed rebuild leaves it as it was.
///
/// The corpus is streamed, never held whole: it is read three times (a check of every record
/// and id, the tokenizer's sample, then tokenizing in batches), and the build's memory at its
/// peak is about 9 bytes per token, or 512 bytes per document for semantic docids if that is
/// more (10M passages of ~110 tokens: 9.1 GiB).
///
/// With --add, CORPUS's documents are appended to the index at --out instead, as a new batch
/// and FM-index shard, with the index's tokenizer: the existing documents keep their numbers,
/// token ids and docids, so trained models keep working (a SEAL model finds the new documents
/// too; a DSI model answers among those it was trained on until retrained). BM25 and dense
/// baselines are dropped (rebuild them with `genret add`).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret index corpus/cranfield --out cranfield.idx\n  \
    genret index collection.tsv --out msmarco.idx --vocab-size 32000\n  \
    genret index corpus/squad --out squad.idx --tokenizer t5-small/tokenizer.json\n  \
    genret index passages.tsv --out big.idx --shard-size 500000000\n  \
    genret index new-passages.tsv --out big.idx --add"
)]
pub struct IndexArgs {
    /// Corpus to index: BEIR folder, .jsonl or .tsv file.
    pub corpus: PathBuf,
    /// Index directory to create (or rebuild).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Vocabulary size of the trained tokenizer, special tokens included.
    #[arg(long, default_value_t = 16_000)]
    pub vocab_size: usize,
    /// Tokenizer model to train.
    #[arg(long, value_enum, default_value_t = Kind::Bpe)]
    pub tokenizer_kind: Kind,
    /// Keep case in the trained tokenizer (default: lowercase everything).
    #[arg(long)]
    pub cased: bool,
    /// Use this tokenizer.json as is instead of training one.
    #[arg(long, conflicts_with_all = ["vocab_size", "tokenizer_kind", "cased"])]
    pub tokenizer: Option<PathBuf>,
    /// Do not index titles (by default each document is `<title> title </title> text`).
    #[arg(long)]
    pub no_titles: bool,
    /// One suffix-array sample per this many tokens: smaller locates faster, larger is smaller.
    #[arg(long, default_value_t = genret::fmindex::DEFAULT_SAMPLE_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample_rate: u32,
    /// Split the FM-index into shards of consecutive documents of at most this many symbols
    /// (tokens, plus one per document): searched as one index, answers unchanged. The default
    /// is the most one shard holds (2^31 - 1); a smaller one bounds the build's memory.
    #[arg(long, default_value_t = genret::fmindex::MAX_SYMBOLS as u64, value_parser = clap::value_parser!(u64).range(3..=genret::fmindex::MAX_SYMBOLS as u64))]
    pub shard_size: u64,
    /// How documents are named for DSI-style decoding (`genret search --mode dsi`):
    /// semantic (hierarchical k-means path, as DSI), naive (position in decimal), atomic (one
    /// token per document) or title.
    #[arg(long, value_enum, default_value_t = DocidKind::Semantic)]
    pub docids: DocidKind,
    /// Append CORPUS's documents to the existing index at --out (its tokenizer, titles and
    /// docid scheme) instead of building a new one.
    #[arg(long, conflicts_with_all = ["vocab_size", "tokenizer_kind", "cased", "tokenizer", "no_titles", "sample_rate", "docids"])]
    pub add: bool,
    /// Print the build statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DocidKind {
    Atomic,
    Naive,
    Semantic,
    Title,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Bpe,
    Unigram,
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    if args.vocab_size < 300 {
        anyhow::bail!(genret::Error::InvalidInput(format!(
            "--vocab-size {} is too small: a byte-level tokenizer needs at least 300 (256 bytes + specials)",
            args.vocab_size
        )));
    }
    if args.add {
        let corpus = read_corpus(&args.corpus)
            .with_context(|| format!("reading corpus {}", args.corpus.display()))?;
        return add(&args, &corpus);
    }
    let tokenizer = match args.tokenizer {
        Some(path) => TokenizerSource::File(path),
        None => TokenizerSource::Train(TrainConfig {
            kind: match args.tokenizer_kind {
                Kind::Bpe => TokenizerKind::Bpe,
                Kind::Unigram => TokenizerKind::Unigram,
            },
            vocab_size: args.vocab_size,
            lowercase: !args.cased,
        }),
    };
    let config = BuildConfig {
        tokenizer,
        index_titles: !args.no_titles,
        fm: BuildOptions {
            sample_rate: args.sample_rate,
            shard_symbols: args.shard_size as usize,
        },
        docids: match args.docids {
            DocidKind::Atomic => Scheme::Atomic,
            DocidKind::Naive => Scheme::Naive,
            DocidKind::Semantic => Scheme::Semantic,
            DocidKind::Title => Scheme::Title,
        },
        ..BuildConfig::default()
    };
    // Streamed from the file: the corpus is never all in memory.
    let index =
        build_from(CorpusSource::File(&args.corpus), &args.out, &config).with_context(|| {
            format!(
                "indexing corpus {} into {}",
                args.corpus.display(),
                args.out.display()
            )
        })?;
    let s = &index.stats;
    if args.json {
        return super::print_json(s);
    }
    println!(
        "indexed {} into {}",
        args.corpus.display(),
        args.out.display()
    );
    println!("  documents      {} ({} empty)", s.docs, s.empty_docs);
    println!(
        "  tokens         {} (per document: min {}, median {}, mean {:.1}, p95 {}, max {})",
        s.tokens,
        s.doc_tokens_min,
        s.doc_tokens_median,
        s.doc_tokens_mean,
        s.doc_tokens_p95,
        s.doc_tokens_max
    );
    println!(
        "  vocabulary     {} ({} used by the corpus)",
        s.vocab_size, s.distinct_tokens
    );
    let shards = match index.fm.shards().len() {
        1 => String::new(),
        n => format!(", {n} shards"),
    };
    println!(
        "  FM-index       {:.1} KiB, {:.2} bits/token{shards}",
        s.fmindex_bytes as f64 / 1024.0,
        s.fmindex_bits_per_token
    );
    let d = index.docids()?;
    println!(
        "  docids         {} (longest {} tokens, {} extra model tokens)",
        d.scheme().name(),
        d.max_len(),
        d.extra_tokens()
    );
    // Longest phase first: where a large corpus's build time goes.
    let mut phases: Vec<(&String, &f64)> = s.phase_seconds.iter().collect();
    phases.sort_by(|a, b| b.1.total_cmp(a.1));
    let phases: Vec<String> = phases
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.1} s"))
        .collect();
    println!(
        "  took           {:.2} s ({})",
        s.build_seconds,
        phases.join(", ")
    );
    Ok(())
}

/// `--add`: appends the corpus to the index at `--out` and says what it holds now.
fn add(args: &IndexArgs, corpus: &genret::corpus::Corpus) -> anyhow::Result<()> {
    let config = AddConfig {
        shard_symbols: args.shard_size as usize,
    };
    let index = genret::index::add(corpus, &args.out, &config)
        .with_context(|| format!("adding {} to {}", args.corpus.display(), args.out.display()))?;
    let s = &index.stats;
    if args.json {
        return super::print_json(s);
    }
    println!(
        "added {} documents from {} to {}",
        corpus.len(),
        args.corpus.display(),
        args.out.display()
    );
    println!(
        "  documents      {} ({} batches, {} FM-index shards)",
        s.docs,
        index.dir.manifest.batches(),
        index.fm.shards().len()
    );
    println!("  tokens         {}", s.tokens);
    let d = index.docids()?;
    println!(
        "  docids         {} (existing ones kept; longest {} tokens)",
        d.scheme().name(),
        d.max_len()
    );
    println!("  took           {:.2} s", s.build_seconds);
    Ok(())
}
