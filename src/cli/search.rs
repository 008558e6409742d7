use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use genret::corpus::read_queries;
use genret::eval::{Run, RunFormat, write_run_as};
use genret::index::Index;
use genret::retrieve::{Bm25Params, Mode, SearchOptions};
use genret::score::SealParams;
use genret::search::{SearchResult, Searcher};

/// Search an index: with its trained model, which writes corpus n-grams (seal, the default)
/// or document identifiers (dsi) under constrained beam search, documents ranked from what it
/// wrote; with BM25 or dense retrieval; or with two of them fused.
///
/// Give one QUERY to print its results, or --queries FILE (BEIR queries.jsonl, or
/// id<TAB>text TSV) with --out RUN.trec to answer many in batches and write a TREC run.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret search cranfield.idx \"boundary layer transition\"\n  \
    genret search cranfield.idx \"heat transfer\" --mode dsi -k 5 --json\n  \
    genret search cranfield.idx \"heat transfer\" --mode seal+dense\n  \
    genret search cranfield.idx \"heat transfer\" --mode rrf:bm25+dense\n  \
    genret search cranfield.idx \"heat transfer\" --explain\n  \
    genret search cranfield.idx --queries corpus/cranfield/queries.jsonl --out seal.trec"
)]
pub struct SearchArgs {
    /// Index directory (with a model from `genret train`).
    pub index: PathBuf,
    /// Query text.
    #[arg(required_unless_present = "queries", conflicts_with = "queries")]
    pub query: Option<String>,
    /// Queries file: BEIR queries.jsonl (or its folder) or id<TAB>text TSV.
    #[arg(long, requires = "out")]
    pub queries: Option<PathBuf>,
    /// TREC run file to write (with --queries); `-` writes it to standard output.
    #[arg(long, requires = "queries")]
    pub out: Option<PathBuf>,
    /// Documents per query.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub k: u32,
    /// Retrieval method: seal (the model writes n-grams), dsi (the model writes docids), bm25
    /// or dense; or two fused, each part's best 100 (at least -k) merged: A+B sums min-max
    /// normalised scores (seal+dense, bm25+dense), rrf:A+B sums reciprocal ranks. bm25 and
    /// dense read what `genret add INDEX bm25|dense` built.
    #[arg(long, default_value = "seal")]
    pub mode: Mode,
    /// Dense model (modes with dense): a directory, or a name in the Hugging Face cache.
    #[arg(long, default_value = genret::baseline::dense::DEFAULT_MODEL)]
    pub dense_model: String,
    /// Beam size.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub beam: u32,
    /// N-grams kept from every decoding step, at least --beam (seal): more of the model's
    /// likely n-grams for the same decoder work.
    #[arg(long, default_value_t = SearchOptions::default().ngrams_per_step as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ngrams_per_step: u32,
    /// Longest n-gram in tokens (seal).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_ngram_len: u32,
    /// Match the model's n-grams exactly (seal). By default they are read as English words,
    /// as BM25's analyzer reads text: an n-gram counts as its content, without stop words and
    /// punctuation at either end ("of the flow," is "flow"; a piece of a query word, "ow" of
    /// "flow", is the word), and also matches the corpus's other forms of its words ("flow"
    /// finds "flows"), grouped by the Snowball English stemmer. Use this for a corpus not in
    /// English.
    #[arg(long)]
    pub exact_ngrams: bool,
    /// Candidate documents scored fully with every n-gram (seal), chosen by a first pass over
    /// the rare n-grams; an index built before its token store (tokens.bin) scores at most
    /// 300, as extracting them from the FM-index is dearer.
    #[arg(long, default_value_t = SealParams::default().rerank as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rerank: u32,
    /// BM25's term-frequency saturation (modes with bm25; tantivy's and Lucene's default).
    #[arg(long, default_value_t = 1.2)]
    pub k1: f32,
    /// BM25's length normalisation, 0 (none) to 1 (full).
    #[arg(long, default_value_t = 0.75)]
    pub b: f32,
    /// Queries decoded together (batch search).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Run name in the TREC file.
    #[arg(long, default_value = "genret")]
    pub run_name: String,
    /// Run file format: trec (`qid Q0 docid rank score name`) or msmarco
    /// (`qid<TAB>docid<TAB>rank`).
    #[arg(long, default_value = "trec", value_parser = ["trec", "msmarco"])]
    pub format: String,
    /// Print JSON: one object per query,
    /// {"query", "took_ms", "results": [{"doc_id", "score", "title", "ngrams"}]}.
    #[arg(long)]
    pub json: bool,
    /// Also print the query's terms (seal, seal+dense): every n-gram the model wrote, as it
    /// was weighed (the model's probability, its occurrences and documents in the corpus, the
    /// weight), strongest first; in JSON, "terms": [{"ngram", "prob", "count", "docs",
    /// "weight"}].
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    if let Some(query) = &args.query {
        // Before loading anything: a bad query is the answer whatever the index holds.
        genret::search::check_query(query)?;
    }
    let index = Index::open(&args.index)?;
    let searcher = Searcher::open(
        index,
        &args.mode.methods(),
        &args.dense_model,
        &args.device.device()?,
    )?;
    let options = SearchOptions {
        mode: args.mode,
        k: args.k as usize,
        beam: args.beam as usize,
        max_ngram_len: args.max_ngram_len as usize,
        ngrams_per_step: args.ngrams_per_step as usize,
        batch: args.batch as usize,
        seal: SealParams {
            rerank: args.rerank as usize,
            ..SealParams::exact_ngrams(args.exact_ngrams)
        },
        bm25: Bm25Params::new(args.k1, args.b)?,
        explain: args.explain,
        ..SearchOptions::default()
    };
    if let Some(query) = &args.query {
        let results = searcher.search(&[query.as_str()], &options)?;
        return print_results(&results, args.json);
    }
    let (Some(path), Some(out)) = (&args.queries, &args.out) else {
        unreachable!("clap requires QUERY or --queries with --out");
    };
    if args.json && out == std::path::Path::new("-") {
        anyhow::bail!("--json and --out - would both write to standard output; choose one");
    }
    let queries = read_queries(path).with_context(|| format!("reading {}", path.display()))?;
    let pb = genret::progress::bar(queries.len() as u64, "searching");
    let mut run: Run = Vec::with_capacity(queries.len());
    let mut took = 0.0;
    for chunk in queries.chunks(options.batch) {
        let texts: Vec<&str> = chunk.iter().map(|q| q.text.as_str()).collect();
        let results = searcher.search(&texts, &options)?;
        for (q, r) in chunk.iter().zip(&results) {
            took += r.took_ms;
            run.push((
                q.id.clone(),
                r.results
                    .iter()
                    .map(|h| (h.doc_id.clone(), h.score))
                    .collect(),
            ));
        }
        if args.json {
            print_results(&results, true)?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let format: RunFormat = args.format.parse()?;
    write_run_as(out, &run, &args.run_name, format)?;
    if !args.json {
        let n = queries.len().max(1) as f64;
        let summary = format!(
            "{} queries -> {} ({:.1} ms/query, {:.1} queries/s)",
            queries.len(),
            out.display(),
            took / n,
            1e3 * n / took.max(1e-9)
        );
        // With the run on standard output, the summary must not end up inside it.
        if out == std::path::Path::new("-") {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    }
    Ok(())
}

pub(crate) fn print_results(results: &[SearchResult], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for r in results {
        if json {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
            continue;
        }
        writeln!(out, "query: {}  ({:.1} ms)", r.query, r.took_ms)?;
        if !r.terms.is_empty() {
            writeln!(
                out,
                "  terms (probability, occurrences, documents, weight):"
            )?;
            for t in &r.terms {
                writeln!(
                    out,
                    "    {:<30} {:>8.5} {:>8} {:>8} {:>7.3}",
                    format!("{:?}", t.ngram),
                    t.prob,
                    t.count,
                    t.docs,
                    t.weight
                )?;
            }
        }
        if r.results.is_empty() {
            writeln!(out, "  no results")?;
        }
        for (rank, h) in r.results.iter().enumerate() {
            let title = if h.title.is_empty() {
                "(untitled)"
            } else {
                &h.title
            };
            writeln!(
                out,
                "{:>3}. {:<10} {:>9.3}  {}",
                rank + 1,
                h.doc_id,
                h.score,
                title
            )?;
            if !h.ngrams.is_empty() {
                let shown: Vec<String> =
                    h.ngrams.iter().take(5).map(|n| format!("{n:?}")).collect();
                writeln!(out, "     via {}", shown.join(", "))?;
            }
        }
    }
    Ok(())
}
