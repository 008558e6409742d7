//! `genret bench` and `genret eval` end to end on ADI with a tiny model: every output loads
//! (results.json parses with every method and metric, each TREC run evaluates with
//! `genret eval` to the numbers in results.json, the PNG is a PNG), and a rerun reuses what
//! was built.

mod common;

use std::path::Path;
use std::process::Command;

fn genret(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bench_on_adi_writes_results_runs_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adi");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/adi");
    common::minilm_dir();
    let methods = "seal,dsi,bm25,dense,seal+dense,bm25+dense";
    let args = [
        "-q",
        "bench",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--methods",
        methods,
        "--preset",
        "tiny",
        "--steps",
        "20",
        "--beam",
        "3",
        "--json",
    ];
    let o = genret(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(printed, file);
    assert_eq!(file["collection"], "adi");
    assert_eq!(file["split"], "test");
    assert_eq!(file["queries"], 35);
    assert_eq!(file["batch"], 16);
    assert_eq!(file["device"], "cpu");
    let rows = file["methods"].as_array().unwrap();
    assert_eq!(rows.len(), methods.split(',').count());
    let qrels = corpus.join("qrels/test.tsv");
    for row in rows {
        let name = row["name"].as_str().unwrap();
        for m in [
            "ndcg@10",
            "mrr@10",
            "recall@10",
            "recall@100",
            "map@100",
            "hits@1",
            "hits@10",
        ] {
            let v = row["metrics"][m].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{name} {m} = {v}");
        }
        assert!(row["p50_ms"].as_f64().unwrap() <= row["p95_ms"].as_f64().unwrap());
        assert!(row["qps"].as_f64().unwrap() > 0.0);
        assert!(row["qps_batch"].as_f64().unwrap() > 0.0);
        assert!(row["index_bytes"].as_u64().unwrap() > 0);
        // The run re-evaluates with `genret eval` to the same numbers.
        let run = out.join(format!("{name}.trec"));
        let e = genret(&[
            "eval",
            run.to_str().unwrap(),
            qrels.to_str().unwrap(),
            "--json",
        ]);
        assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
        let e: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        assert_eq!(e["queries"], 35);
        for (m, v) in e["mean"].as_object().unwrap() {
            let want = row["metrics"][m].as_f64().unwrap();
            assert!((v.as_f64().unwrap() - want).abs() < 1e-9, "{name} {m}");
        }
    }
    let row = |name: &str| rows.iter().find(|r| r["name"] == name);
    // Every other method is compared with each baseline that ran, on every metric.
    let baselines = 2;
    let tests = file["tests"].as_array().unwrap();
    assert_eq!(tests.len(), (rows.len() - baselines) * baselines);
    for pair in tests {
        let (m, b) = (
            pair["method"].as_str().unwrap(),
            pair["baseline"].as_str().unwrap(),
        );
        assert!(b == "bm25" || b == "dense", "{b}");
        let metric = |name: &str, k: &str| row(name).unwrap()["metrics"][k].as_f64().unwrap();
        let t = pair["tests"].as_array().unwrap();
        assert_eq!(t.len(), 7);
        for t in t {
            let k = t["metric"].as_str().unwrap();
            let diff = t["diff"].as_f64().unwrap();
            assert!(
                (diff - (metric(m, k) - metric(b, k))).abs() < 1e-9,
                "{m} vs {b} {k}"
            );
            let p = t["p_value"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{m} vs {b} {k}: p = {p}");
            let changed = t["wins"].as_u64().unwrap() + t["losses"].as_u64().unwrap();
            assert!(changed <= 35);
            assert!(changed > 0 || (diff == 0.0 && p == 1.0));
        }
    }
    // A fused method answers after both of its parts: its latency is at least theirs.
    {
        let fused = row("seal+dense").expect("seal+dense ran");
        let p50 = |r: &serde_json::Value| r["p50_ms"].as_f64().unwrap();
        assert!(p50(fused) >= p50(row("seal").unwrap()));
        assert!(p50(fused) >= p50(row("dense").unwrap()));
        // `genret search --mode seal+dense` ranks as the bench's fusion of its two runs.
        let searched = dir.path().join("searched.trec");
        let o = genret(&[
            "-q",
            "search",
            out.join("index").to_str().unwrap(),
            "--queries",
            corpus.to_str().unwrap(),
            "--out",
            searched.to_str().unwrap(),
            "--mode",
            "seal+dense",
            "-k",
            "100",
            "--beam",
            "3",
            "--batch",
            "1",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let docs = |run: &genret::eval::Run| -> std::collections::BTreeMap<String, Vec<String>> {
            run.iter()
                .map(|(q, hits)| (q.clone(), hits.iter().map(|h| h.0.clone()).collect()))
                .collect()
        };
        let benched = genret::eval::read_run(&out.join("seal+dense.trec")).unwrap();
        let searched = genret::eval::read_run(&searched).unwrap();
        let searched = docs(&searched);
        for (q, want) in docs(&benched) {
            assert_eq!(searched[&q], want, "query {q}");
        }
    }
    // BM25 is a real baseline: on ADI it finds something for most queries.
    let bm25 = rows.iter().find(|r| r["name"] == "bm25").unwrap();
    assert!(bm25["metrics"]["recall@100"].as_f64().unwrap() > 0.5);
    let png = std::fs::read(out.join("quality_latency.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.join("quality_latency.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("bm25"));

    // A rerun reuses the index and model: the model file is untouched.
    let model = out.join("index/model/model.safetensors");
    let before = std::fs::metadata(&model).unwrap().modified().unwrap();
    let o = genret(&args);
    assert!(o.status.success());
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        before
    );

    // Bad input: unknown method and unknown split are clear errors (exit code 2).
    let o = genret(&["bench", corpus.to_str().unwrap(), "--methods", "bm26"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bm26"));
    let o = genret(&[
        "bench",
        corpus.to_str().unwrap(),
        "--methods",
        "seal,seal+dense",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("add dense to --methods"));
    let o = genret(&[
        "bench",
        corpus.to_str().unwrap(),
        "--split",
        "dev",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("dev"));
}

#[test]
fn demo_on_adi_answers_three_queries_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/adi");
    let args = [
        "demo",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
        "--no-dense",
    ];
    let run = genret(&args);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("Three example queries"), "{text}");
    assert_eq!(text.matches("\nquery: ").count(), 3, "{text}");
    for method in ["seal", "bm25"] {
        assert!(
            text.lines().any(|l| l.starts_with(method)),
            "no {method} row: {text}"
        );
    }
    // DSI reads with the dense baseline's encoder: --no-dense leaves out both.
    for method in ["dense", "dsi"] {
        assert!(!text.lines().any(|l| l.starts_with(method)), "{text}");
    }
    assert!(out.join("results.json").exists());
    // The hint at the end runs as printed: its command is this binary, however it was called.
    let next = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Next: "))
        .expect("a Next: line");
    let exe = next.split(" search ").next().unwrap();
    let hinted = std::process::Command::new(exe)
        .args([
            "search",
            out.join("index").to_str().unwrap(),
            "information retrieval",
        ])
        .output()
        .unwrap_or_else(|e| panic!("the hint's command {exe:?} does not run: {e}"));
    assert!(
        hinted.status.success(),
        "{}",
        String::from_utf8_lossy(&hinted.stderr)
    );

    // Rerun with --json: reuses the model, prints the three answers then results.json.
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let run = genret(&json_args);
    assert!(run.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for answer in &lines[..3] {
        assert!(answer["query"].is_string() && answer["results"].is_array());
    }
    assert_eq!(lines[3]["methods"].as_array().unwrap().len(), 2);
}
