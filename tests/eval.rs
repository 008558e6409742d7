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

#[test]
fn compare_reports_paired_differences_and_their_p_values() {
    let dir = tempfile::tempdir().unwrap();
    // The baseline: every query's ranking reversed.
    let run = read_run(&data("run.trec")).unwrap();
    let reversed: genret::eval::Run = run
        .iter()
        .map(|(q, docs)| {
            (
                q.clone(),
                docs.iter().map(|(d, s)| (d.clone(), -s)).collect(),
            )
        })
        .collect();
    let baseline = dir.path().join("reversed.trec");
    write_run(&baseline, &reversed, "reversed").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["eval", data("run.trec").to_str().unwrap()])
        .arg(data("qrels.tsv"))
        .args(["--compare", baseline.to_str().unwrap(), "--json"])
        .args(["--metrics", "ndcg@10,mrr@10,hits@1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let qrels = read_qrels(data("qrels.tsv"), None, false).unwrap();
    let metrics: Vec<Metric> = ["ndcg@10", "mrr@10", "hits@1"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let a = evaluate(&run, &qrels, &metrics, true);
    let b = evaluate(&reversed, &qrels, &metrics, true);
    let tests = out["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 3);
    for t in tests {
        let m = t["metric"].as_str().unwrap();
        assert_eq!(out["run"]["mean"][m].as_f64().unwrap(), a.mean[m]);
        assert_eq!(out["baseline"]["mean"][m].as_f64().unwrap(), b.mean[m]);
        let diffs: Vec<f64> = a
            .per_query
            .iter()
            .map(|(q, row)| row[m] - b.per_query[q][m])
            .collect();
        assert!((t["diff"].as_f64().unwrap() - (a.mean[m] - b.mean[m])).abs() < 1e-12);
        let count = |f: fn(f64) -> bool| diffs.iter().filter(|&&x| f(x)).count() as u64;
        assert_eq!(t["wins"].as_u64().unwrap(), count(|x| x > 0.0));
        assert_eq!(t["losses"].as_u64().unwrap(), count(|x| x < 0.0));
        // Naive reference: all 2^5 sign assignments of the five queries' differences.
        let observed = diffs.iter().sum::<f64>().abs();
        let extreme = (0..1u32 << diffs.len())
            .filter(|s| {
                let sum: f64 = diffs
                    .iter()
                    .enumerate()
                    .map(|(i, x)| if s >> i & 1 == 1 { -x } else { *x })
                    .sum();
                sum.abs() >= observed - 1e-9
            })
            .count();
        let want = extreme as f64 / (1u64 << diffs.len()) as f64;
        assert_eq!(t["p_value"].as_f64().unwrap(), want, "{m}");
    }
    assert!(
        tests.iter().any(|t| t["diff"].as_f64().unwrap() != 0.0),
        "the fixture's reversed run should differ"
    );
    // A run against itself: no difference, p = 1.
    let same = genret::eval::compare(&a, &a, &metrics);
    assert!(
        same.iter()
            .all(|t| t.diff == 0.0 && t.wins + t.losses == 0 && t.p_value == 1.0)
    );
}

/// A run evaluated against the qrels of another collection says so (and fails with --strict)
/// instead of printing zeros as if they were a result.
#[test]
fn eval_warns_when_run_and_qrels_do_not_belong_together() {
    let tmp = tempfile::tempdir().unwrap();
    let qrels = tmp.path().join("qrels.tsv");
    std::fs::write(
        &qrels,
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n",
    )
    .unwrap();
    let run = tmp.path().join("run.trec");
    let eval = |run_text: &str, strict: bool| {
        std::fs::write(&run, run_text).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_genret"));
        cmd.arg("eval").arg(&run).arg(&qrels);
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = "q1 Q0 d1 1 2.0 r\nq2 Q0 d9 1 2.0 r\nq3 Q0 d3 1 1.0 r\n";
    assert_eq!(eval(good, true), (Some(0), String::new()));
    // Another collection's ids: one judged query of three answered, no judged document.
    let foreign = "q1 Q0 x1 1 2.0 r\nq7 Q0 x2 1 1.0 r\n";
    let (code, err) = eval(foreign, false);
    assert_eq!(code, Some(0));
    assert!(
        err.contains("barely overlap") && err.contains("1 of the 3"),
        "{err}"
    );
    let (code, err) = eval(foreign, true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("none of the 1 documents"), "{err}");
}

#[test]
fn msmarco_runs_are_query_doc_rank_lines() {
    use genret::eval::{RunFormat, write_run_as};
    let dir = tempfile::tempdir().unwrap();
    let run = vec![
        (
            "q1".to_string(),
            vec![("d3".to_string(), 2.5), ("d1".to_string(), 1.0)],
        ),
        ("q2".to_string(), vec![("d2".to_string(), 0.5)]),
    ];
    let path = dir.path().join("run.tsv");
    write_run_as(&path, &run, "x", RunFormat::MsMarco).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "q1\td3\t1\nq1\td1\t2\nq2\td2\t1\n"
    );
    assert!("tsv".parse::<RunFormat>().is_err());
}
