//! DSI's own model (`genret::dsi`), on ADI with a tiny random BERT written here as its frozen
//! encoder: a fresh model ranks exactly as dense retrieval with the same encoder does;
//! training raises indexing recall, and a killed run resumes exactly; search answers from the
//! DSI model alone.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use genret::baseline::dense::{DenseEncoder, DenseIndex};
use genret::docid::Scheme;
use genret::dsi::{DsiModel, DsiOptions, build_docids, corpus_tokens, init_model, load_tokenizer};
use genret::index::Index;
use genret::retrieve::{Mode, SearchOptions};
use genret::search::Searcher;
use genret::train::{Target, TrainConfig, read_log, train};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const ADI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/adi");

/// A random BERT (hidden 32, 2 layers, 4 heads) reading with the ADI index's tokenizer.
fn adi_index_2k(dir: &Path) -> Index {
    common::adi_index(dir, 2000)
}

fn write_tiny_bert(dir: &Path, index: &Index) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.2).unwrap();
    common::write_tiny_bert(dir, index.tokenizer.vocab_size(), 32, "", |_, name, n| {
        if name.ends_with("LayerNorm.weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        }
    });
    std::fs::copy(index.dir.file("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

fn queries() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ADI}/queries.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn dsi_config(bert: &Path) -> TrainConfig {
    TrainConfig {
        encoder: Some(bert.display().to_string()),
        epochs: Some(20),
        batch_size: 32,
        lr: 1e-2,
        log_every: 5,
        checkpoint_every: 10,
        dsi: DsiOptions {
            keyword_queries: 2,
            chunk_tokens: 16,
            ..DsiOptions::default()
        },
        ..TrainConfig::dsi()
    }
}

#[test]
fn a_fresh_dsi_model_ranks_as_dense_retrieval() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = adi_index_2k(&tmp.path().join("adi.idx"));
    let bert = tmp.path().join("bert");
    write_tiny_bert(&bert, &index);
    let encoder =
        DenseEncoder::load(&bert.display().to_string(), &genret::device::Device::Cpu).unwrap();
    let dense = DenseIndex::open_or_build(&mut index, &encoder).unwrap();
    let vectors = dense.vectors().unwrap();
    let docids = build_docids(&index, Scheme::Atomic, &vectors, 32, 42).unwrap();
    let options = DsiOptions::default();
    let tokenizer = load_tokenizer(&bert.join("tokenizer.json"), 256).unwrap();
    let tokens = corpus_tokens(&index, &tokenizer).unwrap();
    let (config, params) =
        init_model(&bert, &options, &docids, &vectors, tokens, 42, &Device::Cpu).unwrap();
    let dsi = DsiModel {
        model: genret::model::T5ForConditionalGeneration::new(&config, &params).unwrap(),
        tokenizer,
        docids,
        ids: Vec::new(),
    };
    let queries = queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let k = 10;
    let (ranked, _) = dsi.search(&refs, 10, k).unwrap();
    let embedded = encoder.embed(&refs, &|_| {}).unwrap();
    let expected = dense.search(&embedded, index.docs.len()).unwrap();
    // The encoder tells documents apart: queries have different best documents.
    let best: std::collections::HashSet<u32> = expected.iter().map(|r| r[0].0).collect();
    assert!(best.len() > 5, "a degenerate encoder: {best:?}");
    for (q, (got, want)) in ranked.iter().zip(&expected).enumerate() {
        assert_eq!(got.len(), k);
        let cos: HashMap<u32, f32> = want.iter().copied().collect();
        // log P(d | q) = temperature * cos(q, d) - a constant of the query: the same order.
        let shift = got[0].1 as f64 - options.temperature * cos[&got[0].0] as f64;
        for &(d, lp) in got {
            let predicted = options.temperature * cos[&d] as f64 + shift;
            assert!(
                (lp as f64 - predicted).abs() < 1e-3,
                "query {q}: doc {d} log-prob {lp}, dense predicts {predicted}"
            );
        }
        // The k best by dense, up to ties at the cut.
        let kth = want[k - 1].1;
        for &(d, c) in want.iter().take_while(|x| x.1 > kth + 1e-5) {
            assert!(
                got.iter().any(|x| x.0 == d),
                "query {q}: dense's doc {d} ({c}) missing"
            );
        }
    }
}

#[test]
fn dsi_training_raises_indexing_recall_and_search_uses_its_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adi.idx");
    let mut index = adi_index_2k(&dir);
    let bert = tmp.path().join("bert");
    write_tiny_bert(&bert, &index);
    let config = dsi_config(&bert);
    let report = train(&mut index, &config, false, &genret::device::Device::Cpu).unwrap();
    let first = report.log.iter().find_map(|e| e.recall).unwrap();
    let last = report.recall.unwrap();
    let losses: Vec<f64> = report.log.iter().map(|e| e.loss).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.5),
        "loss {losses:?}"
    );
    assert!(
        last.index > first.index && last.index >= 0.5,
        "indexing recall {} -> {}",
        first.index,
        last.index
    );
    assert!(dir.join("dsi/model/docids.bin").exists());
    assert!(dir.join("dsi/model/tokenizer.json").exists());
    assert_eq!(
        read_log(&dir.join("dsi/train_log.jsonl")).unwrap().len(),
        report.log.len()
    );

    // The index has a DSI model and no SEAL model: DSI answers, SEAL says what is missing.
    let index = std::sync::Arc::new(Index::open(&dir).unwrap());
    let searcher = Searcher::new(std::sync::Arc::clone(&index)).unwrap();
    let options = SearchOptions {
        mode: Mode::DSI,
        k: 5,
        ..SearchOptions::default()
    };
    let answer = searcher.search(&["flow of information"], &options).unwrap();
    assert_eq!(answer[0].results.len(), 5);
    for hit in &answer[0].results {
        // An atomic docid is shown as the document's own id.
        assert_eq!(hit.ngrams, vec![hit.doc_id.clone()]);
        assert_eq!(index.doc_position(&hit.doc_id).unwrap(), hit.doc);
    }
    let seal = SearchOptions {
        mode: Mode::SEAL,
        ..SearchOptions::default()
    };
    let err = searcher.search(&["flow"], &seal).unwrap_err().to_string();
    assert!(err.contains("genret train"), "{err}");
}

#[test]
fn a_killed_dsi_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let bert = tmp.path().join("bert");
    let whole_dir = tmp.path().join("whole.idx");
    let mut whole = adi_index_2k(&whole_dir);
    write_tiny_bert(&bert, &whole);
    let mut config = dsi_config(&bert);
    config.epochs = Some(3);
    let reference = train(&mut whole, &config, false, &genret::device::Device::Cpu).unwrap();

    let mut halted = adi_index_2k(&tmp.path().join("halted.idx"));
    let mut first = config.clone();
    first.halt_after = Some(13);
    let part = train(&mut halted, &first, false, &genret::device::Device::Cpu).unwrap();
    assert_eq!(part.steps, 13);
    let resumed = train(
        &mut halted,
        &TrainConfig {
            target: Target::Dsi,
            ..TrainConfig::default()
        },
        true,
        &genret::device::Device::Cpu,
    )
    .unwrap();
    let a: Vec<(usize, f64)> = reference.log.iter().map(|e| (e.step, e.loss)).collect();
    let b: Vec<(usize, f64)> = resumed.log.iter().map(|e| (e.step, e.loss)).collect();
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() < 1e-5, "step {sa}: {la} vs {lb}");
    }
    assert_eq!(reference.recall, resumed.recall);
    let weights = |dir: &Path| std::fs::read(dir.join("dsi/model/model.safetensors")).unwrap();
    assert_eq!(weights(&whole_dir), weights(&tmp.path().join("halted.idx")));
}
