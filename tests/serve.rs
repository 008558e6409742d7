//! `genret serve` end to end: the real binary on a loopback port, a real HTTP client (ureq),
//! valid and invalid requests, answers equal to `genret search --json`, concurrent requests
//! decoded in batches, and /stats counting what was sent.

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};

use common::genret_ok as genret;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `body` to `path`; returns the status and the parsed JSON answer.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> (u16, Value) {
    let mut resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, value)
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// Every method from the command line and the server alike: BM25 and dense retrieval once
/// `genret add` built their parts (a query never builds them), fused with SEAL or each other
/// by min-max or reciprocal-rank fusion. Needs all-MiniLM-L6-v2 installed
/// (`scripts/install_minilm.sh`; the README's test command runs it).
#[test]
fn serve_and_search_answer_with_every_method_once_added() {
    use genret::baseline::dense::DEFAULT_MODEL;
    common::minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(dir.path());
    let idx_s = idx.to_str().unwrap();
    let query = "information retrieval systems";
    let search = |mode: &str| {
        Command::new(env!("CARGO_BIN_EXE_genret"))
            .args(["search", idx_s, query, "--mode", mode, "-k", "5", "--json"])
            .output()
            .unwrap()
    };

    // Without the parts, a query is refused with how to add them, and writes nothing.
    let manifest = std::fs::read(idx.join("manifest.json")).unwrap();
    for (mode, hint) in [("bm25", "genret add"), ("seal+dense", "genret add")] {
        let out = search(mode);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {err}");
        assert!(err.contains(hint), "{mode}: {err}");
    }
    assert_eq!(std::fs::read(idx.join("manifest.json")).unwrap(), manifest);
    assert!(!idx.join("bm25").exists() && !idx.join("dense.bin").exists());

    for part in ["bm25", "dense"] {
        let out = genret(&["add", idx_s, part, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(added["built"], true, "{added}");
        // A second time there is nothing to do.
        let again: Value =
            serde_json::from_slice(&genret(&["add", idx_s, part, "--json"]).stdout).unwrap();
        assert_eq!(again["built"], false, "{again}");
    }

    let server = common::serve(&idx, &["--dense-model", DEFAULT_MODEL]);
    let http = agent();
    let (status, stats) = get(&http, &format!("{}/stats", server.base));
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats["index"]["methods"],
        json!(["seal", "bm25", "dense"]),
        "{stats}"
    );
    let mut answers = std::collections::HashMap::new();
    for mode in [
        "bm25",
        "dense",
        "seal+dense",
        "bm25+dense",
        "rrf:bm25+dense",
        "rrf:seal+bm25",
    ] {
        let (status, answer) = post(
            &http,
            &format!("{}/search", server.base),
            &json!({"query": query, "mode": mode, "k": 5}).to_string(),
        );
        assert_eq!(status, 200, "{mode}: {answer}");
        let cli = search(mode);
        assert!(
            cli.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&cli.stderr)
        );
        let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
        assert_eq!(answer["results"].as_array().unwrap().len(), 5, "{answer}");
        assert_eq!(answer["results"], cli["results"], "{mode}");
        let ids: Vec<String> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["doc_id"].as_str().unwrap().to_string())
            .collect();
        answers.insert(mode, ids);
    }
    // BM25's parameters: the server's and the CLI's answers agree, and differ from the
    // defaults' (k1 = 0, b = 0 counts only which terms a document holds).
    let (status, flat) = post(
        &http,
        &format!("{}/search", server.base),
        &json!({"query": query, "mode": "bm25", "k": 5, "k1": 0.0, "b": 0.0}).to_string(),
    );
    assert_eq!(status, 200, "{flat}");
    let cli = Command::new(env!("CARGO_BIN_EXE_genret"))
        .args([
            "search", idx_s, query, "--mode", "bm25", "-k", "5", "--json",
        ])
        .args(["--k1", "0", "--b", "0"])
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(flat["results"], cli["results"]);
    let scores = |v: &Value| -> Vec<f64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["score"].as_f64().unwrap())
            .collect()
    };
    let (_, default) = post(
        &http,
        &format!("{}/search", server.base),
        &json!({"query": query, "mode": "bm25", "k": 5}).to_string(),
    );
    assert_ne!(scores(&flat), scores(&default));
    let (status, answer) = post(
        &http,
        &format!("{}/search", server.base),
        &json!({"query": query, "mode": "bm25", "b": 1.5}).to_string(),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("BM25's b"),
        "{answer}"
    );
    // Reciprocal-rank fusion: a document both lists rank first is first.
    if answers["bm25"][0] == answers["dense"][0] {
        assert_eq!(answers["rrf:bm25+dense"][0], answers["bm25"][0]);
    }
    // A fused hit found by SEAL keeps the n-grams that found it.
    let (_, fused) = post(
        &http,
        &format!("{}/search", server.base),
        &json!({"query": query, "mode": "seal+dense", "k": 5}).to_string(),
    );
    assert!(
        fused["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| !h["ngrams"].as_array().unwrap().is_empty()),
        "{fused}"
    );
    // A mode whose method is not served says what is.
    let (status, answer) = post(
        &http,
        &format!("{}/search", server.base),
        &json!({"query": query, "mode": "dsi"}).to_string(),
    );
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("answers with seal, bm25, dense"), "{error}");
}

#[test]
fn serve_answers_like_search_and_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(dir.path());
    let idx_s = idx.to_str().unwrap();
    let server = common::serve(&idx, &["--max-wait-ms", "50", "--max-query-chars", "200"]);
    let http = agent();
    let search_url = format!("{}/search", server.base);

    let (status, body) = get(&http, &format!("{}/health", server.base));
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    // Answers equal `genret search --json` (took_ms aside).
    let mut sent = (0, 0); // (ok, client errors)
    for (query, mode, k, beam, ngrams) in [
        ("information retrieval systems", "seal", 5, 10, 50),
        ("information retrieval systems", "seal", 5, 10, 3),
    ] {
        let (status, answer) = post(
            &http,
            &search_url,
            &json!({"query": query, "mode": mode, "k": k, "beam": beam, "ngrams_per_step": ngrams})
                .to_string(),
        );
        assert_eq!(status, 200, "{answer}");
        sent.0 += 1;
        let cli = genret(&[
            "search",
            idx_s,
            query,
            "--mode",
            mode,
            "-k",
            &k.to_string(),
            "--beam",
            &beam.to_string(),
            "--ngrams-per-step",
            &ngrams.to_string(),
            "--json",
        ]);
        let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
        assert_eq!(answer["query"], query);
        assert!(answer["took_ms"].as_f64().unwrap() > 0.0);
        let results = answer["results"].as_array().unwrap();
        assert!(!results.is_empty() && results.len() <= k, "{answer}");
        assert_eq!(answer["results"], cli["results"], "{mode}");
    }
    // Explained: the query's terms as `genret search --explain --json` gives them.
    let query = "information retrieval systems";
    let (status, answer) = post(
        &http,
        &search_url,
        &json!({"query": query, "explain": true}).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    sent.0 += 1;
    let cli = genret(&["search", idx_s, query, "--explain", "--json"]);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(!answer["terms"].as_array().unwrap().is_empty(), "{answer}");
    assert_eq!(answer["terms"], cli["terms"]);
    assert_eq!(answer["results"], cli["results"]);
    // Defaults fill what a request leaves out.
    let (status, answer) = post(&http, &search_url, r#"{"query": "library catalog"}"#);
    assert_eq!(status, 200);
    assert!(answer["results"].as_array().unwrap().len() <= 10);
    assert!(answer.get("terms").is_none(), "terms only when asked");
    sent.0 += 1;

    // Bad requests: 4xx with a message that names the problem.
    let long = "word ".repeat(100);
    let huge = format!(r#"{{"query": "{}"}}"#, "a".repeat(20_000));
    for (body, status, needle) in [
        ("not json", 400, "invalid request body"),
        (r#"{"k": 5}"#, 400, "missing field `query`"),
        (
            r#"{"query": "x", "beams": 3}"#,
            400,
            "unknown field `beams`",
        ),
        (r#"{"query": "   "}"#, 400, "query is empty"),
        (
            r#"{"query": "x", "k": 0}"#,
            400,
            "k must be between 1 and 1000",
        ),
        (r#"{"query": "x", "k": -3}"#, 400, "invalid request body"),
        (
            r#"{"query": "x", "beam": 101}"#,
            400,
            "beam must be between 1 and 100",
        ),
        (
            r#"{"query": "x", "ngrams_per_step": 0}"#,
            400,
            "ngrams_per_step must be between 1 and 1000",
        ),
        (r#"{"query": "x", "mode": "bm26"}"#, 400, "unknown mode"),
        (
            r#"{"query": "x", "mode": "bm25"}"#,
            400,
            "genret add INDEX bm25",
        ),
        (
            r#"{"query": "x", "mode": "seal+dense"}"#,
            400,
            "start the server with --dense-model",
        ),
        (
            r#"{"query": "x", "mode": "dsi"}"#,
            400,
            "genret train INDEX --dsi",
        ),
        (
            &format!(r#"{{"query": "{long}"}}"#),
            400,
            "the limit is 200",
        ),
        (&huge, 413, "over the limit of"),
    ] {
        let (got, answer) = post(&http, &search_url, body);
        assert_eq!(got, status, "{body:.60}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "{body:.60}: {message}");
        sent.1 += 1;
    }
    let (status, body) = get(&http, &format!("{}/nowhere", server.base));
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&http, &search_url);
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("POST"), "{body}");

    // Concurrent requests: all answered, each with its own query, in fewer batches than requests.
    let queries = [
        "computer programs",
        "abstracting services",
        "automatic indexing",
        "citation analysis",
        "document retrieval evaluation",
        "thesaurus construction",
        "machine translation",
        "user needs",
    ];
    let barrier = Arc::new(Barrier::new(queries.len()));
    let answers: Vec<(u16, Value, &str)> = std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .iter()
            .map(|q| {
                let (barrier, http, url) = (Arc::clone(&barrier), http.clone(), &search_url);
                s.spawn(move || {
                    barrier.wait();
                    let (status, answer) = post(&http, url, &json!({ "query": q }).to_string());
                    (status, answer, *q)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, answer, query) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["query"], *query);
        assert!(!answer["results"].as_array().unwrap().is_empty());
    }
    sent.0 += queries.len() as u64;

    let (status, body) = get(&http, &format!("{}/stats", server.base));
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["index"]["docs"], 82);
    assert!(stats["index"]["model"]["parameters"].as_u64().unwrap() > 0);
    assert_eq!(stats["ok"], sent.0);
    assert_eq!(stats["client_errors"], sent.1);
    assert_eq!(stats["requests"], sent.0 + sent.1);
    assert_eq!(stats["latency_ms"]["window"], sent.0);
    let batches = stats["batches"].as_u64().unwrap();
    assert!(
        batches < sent.0,
        "{batches} batches for {} answered requests: nothing was batched",
        sent.0
    );
    assert!(stats["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn serve_refuses_an_index_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("adi.idx");
    let corpus = format!("{}/corpus/adi", env!("CARGO_MANIFEST_DIR"));
    genret(&["index", &corpus, "--out", idx.to_str().unwrap(), "-q"]);
    let out = Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["serve", idx.to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("genret train"), "{err}");
}
