use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use genret::corpus::read_qrels;
use genret::eval::{Metric, evaluate, read_run};

/// Evaluate a TREC run against relevance judgments, with trec_eval's definitions: nDCG@10,
/// MRR@10, Recall@10/100, MAP@100, Hits@1/10 by default, averaged over the judged queries (a
/// judged query missing from the run counts 0).
///
/// RUN is a TREC run file (`qid Q0 docid rank score name`); QRELS a BEIR qrels TSV
/// (`query-id corpus-id score`) or TREC qrels (`qid 0 docid grade`).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret eval seal.trec corpus/cranfield/qrels/test.tsv\n  \
    genret eval bm25.trec corpus/cranfield/qrels/test.tsv --metrics ndcg@10,recall@1000 --json"
)]
pub struct EvalArgs {
    /// TREC run file.
    pub run: PathBuf,
    /// Qrels file.
    pub qrels: PathBuf,
    /// Metrics, comma-separated: ndcg@K, mrr@K, recall@K, map@K, hits@K.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Also report every query's values.
    #[arg(long)]
    pub per_query: bool,
    /// Print `{"queries", "missing", "mean": {metric: value}, "per_query"?}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let metrics: Vec<Metric> = match &args.metrics {
        Some(names) => names
            .iter()
            .map(|n| n.trim().parse())
            .collect::<genret::Result<_>>()?,
        None => Metric::standard(),
    };
    let run = read_run(&args.run).with_context(|| format!("reading {}", args.run.display()))?;
    let qrels = read_qrels(&args.qrels, None, false)
        .with_context(|| format!("reading {}", args.qrels.display()))?;
    if qrels.judgments.is_empty() {
        anyhow::bail!(genret::Error::InvalidInput(format!(
            "{}: no judgments",
            args.qrels.display()
        )));
    }
    let eval = evaluate(&run, &qrels, &metrics, args.per_query);
    if args.json {
        return super::print_json(&eval);
    }
    println!(
        "{} judged queries ({} missing from the run, counted 0)",
        eval.queries, eval.missing
    );
    for m in &metrics {
        println!("  {:<12} {:.4}", m.name(), eval.mean[&m.name()]);
    }
    for (q, row) in &eval.per_query {
        let cells: Vec<String> = metrics
            .iter()
            .map(|m| format!("{} {:.4}", m.name(), row[&m.name()]))
            .collect();
        println!("{q}\t{}", cells.join("  "));
    }
    Ok(())
}
