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

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::corpus::{Lines, Qrels};
use crate::error::{Error, Result};
use crate::storage::write_atomic_with;

/// Ranked documents per query: `(query id, [(doc id, score)] best first)`.
pub type Run = Vec<(String, Vec<(String, f64)>)>;

/// How a run file lays out its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunFormat {
    /// `qid Q0 docid rank score name` (trec_eval's input).
    #[default]
    Trec,
    /// `qid<TAB>docid<TAB>rank` (MS MARCO's evaluation script's input).
    MsMarco,
}

impl std::str::FromStr for RunFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<RunFormat> {
        match s {
            "trec" => Ok(RunFormat::Trec),
            "msmarco" => Ok(RunFormat::MsMarco),
            _ => Err(Error::UnknownName {
                what: "run format",
                got: s.to_string(),
                expected: "trec or msmarco".into(),
            }),
        }
    }
}

/// Writes `run` in TREC format, atomically. Ids must not contain whitespace.
pub fn write_run(path: &Path, run: &Run, name: &str) -> Result<()> {
    write_run_as(path, run, name, RunFormat::Trec)
}

/// Writes `run` in `format`, atomically (`name` is TREC's run name). Ids must not contain
/// whitespace.
pub fn write_run_as(path: &Path, run: &Run, name: &str, format: RunFormat) -> Result<()> {
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
    if let Some((q, (d, score))) = run
        .iter()
        .flat_map(|(q, docs)| docs.iter().map(move |d| (q, d)))
        .find(|(_, (_, s))| !s.is_finite())
    {
        return Err(Error::InvalidInput(format!(
            "{}: query {q} document {d} has score {score}; a run file holds numbers only",
            path.display()
        )));
    }
    write_atomic_with(path, |w| {
        for (q, docs) in run {
            for (rank, (d, score)) in docs.iter().enumerate() {
                match format {
                    RunFormat::Trec => writeln!(w, "{q} Q0 {d} {} {score:.6} {name}", rank + 1)?,
                    RunFormat::MsMarco => writeln!(w, "{q}\t{d}\t{}", rank + 1)?,
                }
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
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| line.error(format!("score {score:?} is not a finite number")))?;
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
    /// Precision at k: relevant documents among the first k, over k (trec_eval's `P_k`: a
    /// run shorter than k still divides by k).
    Precision(usize),
}

impl Metric {
    /// The metric's name as genret reports it (`ndcg@10`, `mrr@10`, `recall@100`, `map@100`,
    /// `hits@1`, `p@10`).
    pub fn name(&self) -> String {
        match self {
            Metric::Ndcg(k) => format!("ndcg@{k}"),
            Metric::Rr(k) => format!("mrr@{k}"),
            Metric::Recall(k) => format!("recall@{k}"),
            Metric::Ap(k) => format!("map@{k}"),
            Metric::Success(k) => format!("hits@{k}"),
            Metric::Precision(k) => format!("p@{k}"),
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
        let bad = || Error::UnknownName {
            what: "metric",
            got: s.to_string(),
            expected: "ndcg@K, mrr@K, recall@K, map@K, hits@K or p@K".into(),
        };
        let (name, k) = s.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().ok().filter(|&k| k > 0).ok_or_else(bad)?;
        match name.to_ascii_lowercase().as_str() {
            "ndcg" | "ndcg_cut" => Ok(Metric::Ndcg(k)),
            "mrr" | "rr" => Ok(Metric::Rr(k)),
            "recall" | "r" => Ok(Metric::Recall(k)),
            "map" | "ap" => Ok(Metric::Ap(k)),
            "hits" | "success" => Ok(Metric::Success(k)),
            "p" | "precision" => Ok(Metric::Precision(k)),
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
        Metric::Precision(k) => {
            ranked.iter().take(k).filter(|d| grade(d) >= 1).count() as f64 / k as f64
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

/// One metric of two runs compared query by query over the same judged queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    pub metric: String,
    /// Mean of the run minus mean of the baseline.
    pub diff: f64,
    /// Queries where the run scores higher than the baseline.
    pub wins: usize,
    /// Queries where it scores lower.
    pub losses: usize,
    /// Two-sided p-value of the paired randomization test ([`randomization_p`]).
    pub p_value: f64,
}

impl PairedTest {
    /// The p-value to 4 decimals, `<0.0001` below that.
    pub fn p_text(&self) -> String {
        if self.p_value < 1e-4 {
            "<0.0001".into()
        } else {
            format!("{:.4}", self.p_value)
        }
    }
}

/// Sign assignments sampled by [`randomization_p`] when there are too many to enumerate.
pub const PERMUTATIONS: usize = 100_000;

/// Non-zero differences up to which [`randomization_p`] enumerates every sign assignment.
const EXACT_UP_TO: usize = 16;

/// Two-sided p-value of the paired randomization (sign-flip) test of per-query differences
/// `diffs` (run minus baseline): under the null hypothesis that the two runs are
/// interchangeable, each difference is as likely negated, so the p-value is the share of sign
/// assignments whose summed difference is at least as far from 0 as the observed one. The test
/// Smucker, Allan and Carterette (CIKM 2007) recommend for IR: no normality assumption, and it
/// agrees with the bootstrap and t-test where they are valid.
///
/// Exact (all `2^m` assignments of the `m` non-zero differences) when `m <= 16`; otherwise
/// [`PERMUTATIONS`] assignments drawn from a ChaCha8 generator seeded with `seed` (so the same
/// runs give the same p-value), counted as `(hits + 1) / (PERMUTATIONS + 1)`, which never
/// reports 0. O(m 2^m) or O(m PERMUTATIONS).
pub fn randomization_p(diffs: &[f64], seed: u64) -> f64 {
    let d: Vec<f64> = diffs.iter().copied().filter(|&x| x != 0.0).collect();
    if d.len() <= EXACT_UP_TO {
        return exact_p(&d);
    }
    let extreme = at_least_as_extreme(&d);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hits = (0..PERMUTATIONS)
        .filter(|_| {
            // One random bit per difference, 64 at a time.
            let sum: f64 = d.chunks(64).map(|c| signed_sum(c, rng.random())).sum();
            extreme(sum)
        })
        .count();
    (hits + 1) as f64 / (PERMUTATIONS + 1) as f64
}

/// The share of all `2^d.len()` sign assignments of `d` at least as extreme as `d` itself.
fn exact_p(d: &[f64]) -> f64 {
    let extreme = at_least_as_extreme(d);
    let assignments = 1u64 << d.len();
    let hits = (0..assignments)
        .filter(|&signs| extreme(signed_sum(d, signs)))
        .count();
    hits as f64 / assignments as f64
}

/// Whether a sum of signed differences is at least as far from 0 as the sum of `d`; sums
/// equal to it up to rounding count.
fn at_least_as_extreme(d: &[f64]) -> impl Fn(f64) -> bool {
    let observed = d.iter().sum::<f64>().abs();
    let tolerance = 1e-9 * d.iter().map(|x| x.abs()).sum::<f64>().max(1.0);
    move |sum: f64| sum.abs() >= observed - tolerance
}

/// The sum of `d` with `d[i]` negated where bit `i` of `signs` is set (`d.len() <= 64`).
fn signed_sum(d: &[f64], signs: u64) -> f64 {
    d.iter()
        .enumerate()
        .map(|(i, x)| if signs >> i & 1 == 1 { -x } else { *x })
        .sum()
}

/// Compares `run` with `baseline` on each of `metrics`, query by query: both must be
/// evaluated against the same qrels with `per_query` values ([`evaluate`]). The same runs
/// always give the same p-values (the sampling seed is fixed).
pub fn compare(run: &Evaluation, baseline: &Evaluation, metrics: &[Metric]) -> Vec<PairedTest> {
    metrics
        .iter()
        .map(|m| {
            let name = m.name();
            let value = |e: &Evaluation, q: &str| {
                e.per_query
                    .get(q)
                    .and_then(|row| row.get(&name))
                    .copied()
                    .unwrap_or(0.0)
            };
            let queries: std::collections::BTreeSet<&String> = run
                .per_query
                .keys()
                .chain(baseline.per_query.keys())
                .collect();
            let diffs: Vec<f64> = queries
                .into_iter()
                .map(|q| value(run, q) - value(baseline, q))
                .collect();
            let mean = |e: &Evaluation| e.mean.get(&name).copied().unwrap_or(0.0);
            PairedTest {
                diff: mean(run) - mean(baseline),
                wins: diffs.iter().filter(|&&x| x > 0.0).count(),
                losses: diffs.iter().filter(|&&x| x < 0.0).count(),
                p_value: randomization_p(&diffs, 0x5eed),
                metric: name,
            }
        })
        .collect()
}

/// How a run and relevance judgments meet: what tells a run evaluated against the qrels of
/// another collection (or split) from a bad run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// Judged queries.
    pub judged: usize,
    /// Judged queries the run answers.
    pub answered: usize,
    /// Documents the run returns for judged queries.
    pub returned: usize,
    /// Of those, how many the qrels judge (for any query).
    pub returned_judged: usize,
}

impl Overlap {
    pub fn of(run: &Run, qrels: &crate::corpus::Qrels) -> Overlap {
        let judged_docs: std::collections::HashSet<&str> = qrels
            .judgments
            .values()
            .flat_map(|d| d.keys().map(String::as_str))
            .collect();
        let mut overlap = Overlap {
            judged: qrels.judgments.len(),
            answered: 0,
            returned: 0,
            returned_judged: 0,
        };
        for (q, docs) in run {
            if qrels.judgments.contains_key(q) {
                overlap.answered += 1;
                overlap.returned += docs.len();
                overlap.returned_judged += docs
                    .iter()
                    .filter(|(d, _)| judged_docs.contains(d.as_str()))
                    .count();
            }
        }
        overlap
    }

    /// What looks wrong: fewer than half of the judged queries answered, or not one returned
    /// document judged. Empty when the two plausibly belong together.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.answered * 2 < self.judged {
            out.push(format!(
                "the run answers {} of the {} judged queries",
                self.answered, self.judged
            ));
        }
        if self.returned > 0 && self.returned_judged == 0 {
            out.push(format!(
                "none of the {} documents the run returns for judged queries is judged",
                self.returned
            ));
        }
        out
    }
}

/// The `q`-quantile (0..=1, nearest rank) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomization_p_is_exact_on_small_samples() {
        // Of the 8 sign assignments of [1, 1, 1], only all-plus and all-minus reach |3|.
        assert_eq!(randomization_p(&[1.0, 1.0, 1.0], 0), 0.25);
        // [1, 2, 3, 4]: |sum| >= 10 only with one sign for all: 2 of 16.
        assert_eq!(randomization_p(&[1.0, 2.0, 3.0, 4.0], 0), 0.125);
        // Zero differences carry no sign; an observed sum of 0 is never unusual.
        assert_eq!(randomization_p(&[0.0, 1.0, -1.0], 0), 1.0);
        assert_eq!(randomization_p(&[], 0), 1.0);
        // [0.1, 0.2, 0.3, -0.6] sums to 0 in floating point only up to rounding.
        assert_eq!(randomization_p(&[0.1, 0.2, 0.3, -0.6], 0), 1.0);
    }

    #[test]
    fn sampled_p_matches_the_exact_one() {
        // 20 differences (18 non-zero: sampled), against all 2^20 assignments enumerated.
        let d: Vec<f64> = (0..20)
            .map(|i| ((i * 7 % 11) as f64 - 3.0) / 10.0)
            .collect();
        let exact = exact_p(&d);
        let sampled = randomization_p(&d, 1);
        // Binomial standard error at 100,000 draws is below 0.0016.
        assert!((sampled - exact).abs() < 0.006, "{sampled} vs {exact}");
        assert_eq!(sampled, randomization_p(&d, 1), "seeded");
        // Negating every difference changes nothing (two-sided).
        let neg: Vec<f64> = d.iter().map(|x| -x).collect();
        assert!((randomization_p(&neg, 1) - sampled).abs() < 0.006);
    }
}
