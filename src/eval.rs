//! eval: here is a ranking, how good is it?
//!
//! TREC run files: one line per retrieved document, `qid Q0 docid rank score run_name`,
//! ranks from 1, scores descending within a query.

use std::io::Write;
use std::path::Path;

use crate::corpus::Lines;
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
