use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use genret::corpus::read_qrels;
use genret::eval::{Evaluation, Metric, Overlap, PairedTest, compare, evaluate, read_run};
use serde::Serialize;

/// Evaluate a TREC run against relevance judgments, with trec_eval's definitions: nDCG@10,
/// MRR@10, Recall@10/100, MAP@100, Hits@1/10 by default, averaged over the judged queries (a
/// judged query missing from the run counts 0).
///
/// RUN is a TREC run file (`qid Q0 docid rank score name`); QRELS a BEIR qrels TSV
/// (`query-id corpus-id score`) or TREC qrels (`qid 0 docid grade`).
///
/// With --compare BASELINE (another run on the same queries), each metric also gets the
/// difference, the queries each run wins, and the two-sided p-value of a paired randomization
/// test: the chance that a difference this large comes from two interchangeable runs.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  genret eval seal.trec corpus/cranfield/qrels/test.tsv\n  \
    genret eval bm25.trec corpus/cranfield/qrels/test.tsv --metrics ndcg@10,recall@1000 --json\n  \
    genret eval seal.trec corpus/cranfield/qrels/test.tsv --compare bm25.trec"
)]
pub struct EvalArgs {
    /// TREC run file.
    pub run: PathBuf,
    /// Qrels file.
    pub qrels: PathBuf,
    /// Metrics, comma-separated: ndcg@K, mrr@K, recall@K, map@K, hits@K, p@K.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Also report every query's values.
    #[arg(long)]
    pub per_query: bool,
    /// Compare with this baseline run, query by query (paired randomization test).
    #[arg(long, value_name = "BASELINE")]
    pub compare: Option<PathBuf>,
    /// Fail (exit 2) rather than warn when the run and the qrels barely overlap: fewer than
    /// half of the judged queries answered, or no returned document judged.
    #[arg(long)]
    pub strict: bool,
    /// Print `{"queries", "missing", "mean": {metric: value}, "per_query"?}`; with --compare,
    /// `{"run": that, "baseline": that, "tests": [{"metric", "diff", "wins", "losses",
    /// "p_value"}]}`.
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
    let problems = Overlap::of(&run, &qrels).problems();
    if !problems.is_empty() {
        let message = format!(
            "{} and {} barely overlap: {}; are they of the same collection and split?",
            args.run.display(),
            args.qrels.display(),
            problems.join("; ")
        );
        if args.strict {
            anyhow::bail!(genret::Error::InvalidInput(message));
        }
        eprintln!("warning: {message}");
    }
    let mut eval = evaluate(&run, &qrels, &metrics, true);
    if let Some(path) = &args.compare {
        let other = read_run(path).with_context(|| format!("reading {}", path.display()))?;
        let mut baseline = evaluate(&other, &qrels, &metrics, true);
        let tests = compare(&eval, &baseline, &metrics);
        if !args.per_query {
            eval.per_query.clear();
            baseline.per_query.clear();
        }
        if args.json {
            return super::print_json(&Compared {
                run: eval,
                baseline,
                tests,
            });
        }
        print_comparison(&args, &eval, &baseline, &tests);
        return Ok(());
    }
    if !args.per_query {
        eval.per_query.clear();
    }
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

/// `genret eval --compare --json`.
#[derive(Serialize)]
struct Compared {
    run: Evaluation,
    baseline: Evaluation,
    tests: Vec<PairedTest>,
}

fn print_comparison(
    args: &EvalArgs,
    run: &Evaluation,
    baseline: &Evaluation,
    tests: &[PairedTest],
) {
    let name = |p: &std::path::Path| {
        p.file_stem().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let (a, b) = (
        name(&args.run),
        name(args.compare.as_deref().expect("comparing")),
    );
    println!(
        "{} judged queries ({} missing from {a}, {} from {b}, counted 0)",
        run.queries, run.missing, baseline.missing
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>8} {:>6} {:>6} {:>8}",
        "metric",
        trim(&a),
        trim(&b),
        "diff",
        "wins",
        "losses",
        "p"
    );
    for t in tests {
        println!(
            "  {:<12} {:>10.4} {:>10.4} {:>+8.4} {:>6} {:>6} {:>8}",
            t.metric,
            run.mean[&t.metric],
            baseline.mean[&t.metric],
            t.diff,
            t.wins,
            t.losses,
            t.p_text()
        );
    }
    println!(
        "  p: two-sided paired randomization test ({} sign assignments sampled, or all when few queries differ)",
        genret::eval::PERMUTATIONS
    );
    for (q, row) in &run.per_query {
        let cells: Vec<String> = tests
            .iter()
            .map(|t| {
                format!(
                    "{} {:.4} {:.4}",
                    t.metric, row[&t.metric], baseline.per_query[q][&t.metric]
                )
            })
            .collect();
        println!("{q}\t{}", cells.join("  "));
    }
}

/// A run's name cut to a table column.
fn trim(name: &str) -> String {
    name.chars().take(10).collect()
}
