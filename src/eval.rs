//! eval: here is a ranking, how good is it?
//!
//! Metrics with trec_eval's definitions (and so ir-measures' / pytrec_eval's), checked to 4
//! decimals against values ir-measures computed (`tests/data/eval/`):
//! - `nDCG@k`: graded gains (the qrels grade, negatives as 0), discount `log2(rank + 1)`,
//!   normalised by the ideal ordering of all judged documents; 0 when nothing is relevant;
//! - `RR@k` (MRR@k averaged), `R@k` (recall), `AP@k` (MAP@k averaged: precision at each
//!   relevant rank <= k, divided by all relevant documents), `Success@k` (Hits@k).
//!
//! A document is relevant when its grade is >= 1. Per-query values are averaged over the
//! judged queries (those in the qrels); a judged query absent from the run counts 0, as
//! `trec_eval -c` does, so a method cannot gain by returning nothing. A run is ordered by score,
//! ties broken by document id descending, as trec_eval does.
//!
//! TREC run files: one line per retrieved document, `qid Q0 docid rank score run_name`,
//! ranks from 1, scores descending within a query.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::corpus::{Lines, Qrels};
use crate::error::{Error, Result};
use crate::index::write_atomic_with;

/// Ranked documents per query: `(query id, [(doc id, score)] best first)`.
pub type Run = Vec<(String, Vec<(String, f64)>)>;

/// Writes `run` in TREC format, atomically. Ids must not contain whitespace.
pub fn write_run(path: &Path, run: &Run, name: &str) -> Result<()> {
    for (q, docs) in run {
        let bad = std::iter::once(q.as_str())
            .chain(docs.iter().map(|(d, _)| d.as_str()))
            .chain(std::iter::once(name))
            .find(|s| s.is_empty() || s.chars().any(char::is_whitespace));
        if let Some(bad) = bad {
            return Err(Error::InvalidInput(format!(
                "{}: id or run name {bad:?} is empty or has whitespace, which TREC run files cannot hold",
                path.display()
            )));
        }
    }
    write_atomic_with(path, |w| {
        for (q, docs) in run {
            for (rank, (d, score)) in docs.iter().enumerate() {
                writeln!(w, "{q} Q0 {d} {} {score:.6} {name}", rank + 1)?;
            }
        }
        Ok(())
    })
}

/// Reads a TREC run file; each query's documents come back sorted by score, best first (ties
/// by doc id, descending, as trec_eval breaks them), in the order queries first appear.
pub fn read_run(path: &Path) -> Result<Run> {
    let mut lines = Lines::open(path)?;
    let mut run: Run = Vec::new();
    let mut position = std::collections::HashMap::new();
    while let Some(line) = lines.next_line()? {
        if line.text.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.text.split_whitespace().collect();
        let [q, _, d, _rank, score, ..] = cols[..] else {
            return Err(line.error(format!(
                "expected `qid Q0 docid rank score run`, found {} columns",
                cols.len()
            )));
        };
        let score: f64 = score
            .parse()
            .map_err(|_| line.error(format!("score {score:?} is not a number")))?;
        let i = *position.entry(q.to_string()).or_insert_with(|| {
            run.push((q.to_string(), Vec::new()));
            run.len() - 1
        });
        run[i].1.push((d.to_string(), score));
    }
    for (_, docs) in &mut run {
        docs.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    }
    Ok(run)
}

/// A metric at a cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Ndcg(usize),
    Rr(usize),
    Recall(usize),
    Ap(usize),
    Success(usize),
}

impl Metric {
    /// The metric's name as genret reports it (`ndcg@10`, `mrr@10`, `recall@100`, `map@100`,
    /// `hits@1`).
    pub fn name(&self) -> String {
        match self {
            Metric::Ndcg(k) => format!("ndcg@{k}"),
            Metric::Rr(k) => format!("mrr@{k}"),
            Metric::Recall(k) => format!("recall@{k}"),
            Metric::Ap(k) => format!("map@{k}"),
            Metric::Success(k) => format!("hits@{k}"),
        }
    }

    /// The metrics `genret bench` reports.
    pub fn standard() -> Vec<Metric> {
        vec![
            Metric::Ndcg(10),
            Metric::Rr(10),
            Metric::Recall(10),
            Metric::Recall(100),
            Metric::Ap(100),
            Metric::Success(1),
            Metric::Success(10),
        ]
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        let bad = || {
            Error::InvalidInput(format!(
                "unknown metric {s:?}: use ndcg@K, mrr@K, recall@K, map@K or hits@K"
            ))
        };
        let (name, k) = s.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().ok().filter(|&k| k > 0).ok_or_else(bad)?;
        match name.to_ascii_lowercase().as_str() {
            "ndcg" | "ndcg_cut" => Ok(Metric::Ndcg(k)),
            "mrr" | "rr" => Ok(Metric::Rr(k)),
            "recall" | "r" => Ok(Metric::Recall(k)),
            "map" | "ap" => Ok(Metric::Ap(k)),
            "hits" | "success" => Ok(Metric::Success(k)),
            _ => Err(bad()),
        }
    }
}

/// The value of `metric` for one query: `ranked` are its retrieved documents best first,
/// `judged` its judgments (document -> grade).
pub fn query_metric(metric: Metric, ranked: &[&str], judged: &BTreeMap<String, i32>) -> f64 {
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0);
    let relevant = judged.values().filter(|&&g| g >= 1).count();
    match metric {
        Metric::Ndcg(k) => {
            let dcg: f64 = ranked
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, d)| grade(d).max(0) as f64 / (i as f64 + 2.0).log2())
                .sum();
            let mut ideal: Vec<i32> = judged.values().map(|&g| g.max(0)).collect();
            ideal.sort_unstable_by(|a, b| b.cmp(a));
            let idcg: f64 = ideal
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, &g)| g as f64 / (i as f64 + 2.0).log2())
                .sum();
            if idcg > 0.0 { dcg / idcg } else { 0.0 }
        }
        Metric::Rr(k) => ranked
            .iter()
            .take(k)
            .position(|d| grade(d) >= 1)
            .map_or(0.0, |i| 1.0 / (i as f64 + 1.0)),
        Metric::Recall(k) => {
            if relevant == 0 {
                return 0.0;
            }
            let found = ranked.iter().take(k).filter(|d| grade(d) >= 1).count();
            found as f64 / relevant as f64
        }
        Metric::Ap(k) => {
            if relevant == 0 {
                return 0.0;
            }
            let mut hits = 0;
            let mut sum = 0.0;
            for (i, d) in ranked.iter().take(k).enumerate() {
                if grade(d) >= 1 {
                    hits += 1;
                    sum += hits as f64 / (i as f64 + 1.0);
                }
            }
            sum / relevant as f64
        }
        Metric::Success(k) => {
            if ranked.iter().take(k).any(|d| grade(d) >= 1) {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// Metrics of a run against qrels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Judged queries averaged over.
    pub queries: usize,
    /// Judged queries with no line in the run (counted as 0).
    pub missing: usize,
    /// Metric name -> mean over judged queries.
    pub mean: BTreeMap<String, f64>,
    /// Query id -> metric name -> value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Evaluates `run` (documents in any order: they are sorted by score, ties by id descending)
/// against `qrels` for `metrics`. O(run size log + judgments).
pub fn evaluate(run: &Run, qrels: &Qrels, metrics: &[Metric], per_query: bool) -> Evaluation {
    let by_query: HashMap<&str, Vec<&(String, f64)>> = run
        .iter()
        .map(|(q, docs)| {
            let mut sorted: Vec<&(String, f64)> = docs.iter().collect();
            sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
            (q.as_str(), sorted)
        })
        .collect();
    let mut sums: BTreeMap<String, f64> = metrics.iter().map(|m| (m.name(), 0.0)).collect();
    let mut table = BTreeMap::new();
    let mut missing = 0;
    for (q, judged) in &qrels.judgments {
        let ranked: Vec<&str> = match by_query.get(q.as_str()) {
            Some(docs) => docs.iter().map(|(d, _)| d.as_str()).collect(),
            None => {
                missing += 1;
                Vec::new()
            }
        };
        let mut row = BTreeMap::new();
        for m in metrics {
            let v = query_metric(*m, &ranked, judged);
            *sums.get_mut(&m.name()).expect("every metric has a sum") += v;
            row.insert(m.name(), v);
        }
        if per_query {
            table.insert(q.clone(), row);
        }
    }
    let n = qrels.judgments.len();
    Evaluation {
        queries: n,
        missing,
        mean: sums
            .into_iter()
            .map(|(k, v)| (k, if n == 0 { 0.0 } else { v / n as f64 }))
            .collect(),
        per_query: table,
    }
}
