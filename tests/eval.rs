//! Metrics equal trec_eval's to 4 decimals. The expected values in tests/data/eval/expected.json
//! were computed by ir-measures 0.4.3 with its pytrec_eval (trec_eval) provider from the
//! committed qrels.tsv and run.trec, by tests/data/eval/make_expected.py (see its header for the
//! exact commands). The fixture has graded judgments, a negative grade, score ties, a judged
//! query without relevant documents and an unjudged run query.

use std::path::Path;

use genret::corpus::read_qrels;
use genret::eval::{Metric, evaluate, read_run, write_run};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/eval")
        .join(name)
}

#[test]
fn metrics_match_trec_eval_to_four_decimals() {
    let qrels = read_qrels(data("qrels.tsv"), None, false).unwrap();
    let run = read_run(&data("run.trec")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("expected.json")).unwrap()).unwrap();
    let metrics: Vec<Metric> = expected["mean"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    assert!(metrics.len() >= 10);
    let eval = evaluate(&run, &qrels, &metrics, true);
    assert_eq!(eval.queries, 5);
    assert_eq!(eval.missing, 0);
    for (name, want) in expected["mean"].as_object().unwrap() {
        let got = eval.mean[name];
        let want = want.as_f64().unwrap();
        assert!((got - want).abs() < 5e-5, "mean {name}: {got} vs {want}");
    }
    for (q, row) in expected["per_query"].as_object().unwrap() {
        for (name, want) in row.as_object().unwrap() {
            let got = eval.per_query[q][name];
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() < 5e-5, "{q} {name}: {got} vs {want}");
        }
    }
}

#[test]
fn missing_queries_count_zero_and_cutoffs_apply() {
    let qrels = read_qrels(data("qrels.tsv"), None, false).unwrap();
    let mut run = read_run(&data("run.trec")).unwrap();
    let full = evaluate(&run, &qrels, &[Metric::Success(10)], false);
    run.retain(|(q, _)| q != "q1");
    let eval = evaluate(&run, &qrels, &[Metric::Success(10), Metric::Rr(2)], false);
    assert_eq!(eval.missing, 1);
    // q1 had a hit in its top 10: the mean loses exactly 1/5.
    assert!((full.mean["hits@10"] - eval.mean["hits@10"] - 0.2).abs() < 1e-12);
    // q2's first relevant is at rank 1, q4's at rank 2 (d9 is graded -1), q5 has none.
    assert!((eval.mean["mrr@2"] - (1.0 + 0.5) / 5.0).abs() < 1e-12);
    assert!("ndcg@0".parse::<Metric>().is_err());
    assert!("foo@3".parse::<Metric>().is_err());
}

#[test]
fn run_files_round_trip_and_reject_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = read_run(&data("run.trec")).unwrap();
    let path = dir.path().join("copy.trec");
    write_run(&path, &run, "copy").unwrap();
    let back = read_run(&path).unwrap();
    assert_eq!(back.len(), run.len());
    for ((qa, da), (qb, db)) in run.iter().zip(&back) {
        assert_eq!(qa, qb);
        let ids = |d: &Vec<(String, f64)>| d.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(da), ids(db));
    }
    let bad = dir.path().join("bad.trec");
    std::fs::write(&bad, "q1 Q0 d1 1 1.0 x\nq1 Q0 d2 2 high x\n").unwrap();
    let err = read_run(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.trec") && err.contains(":2"), "{err}");
    let spaced = vec![("q 1".to_string(), vec![("d1".to_string(), 1.0)])];
    assert!(write_run(&dir.path().join("x.trec"), &spaced, "r").is_err());
}
