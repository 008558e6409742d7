//! Search speed: queries/s and ms/query (p50, p95) at beam 5 / 10 / 15 in SEAL and DSI modes,
//! with the time split between the model (encoder, decoder steps, cache reorders), the
//! constraint (FM-index / trie lookups and beam bookkeeping) and document scoring.
//!
//! Run: `cargo bench --bench search` on the demo index given by `GENRET_BENCH_INDEX` (an index
//! directory with trained models, e.g. the README's demo: SEAL rows if it has SEAL's model, DSI
//! rows if it has DSI's), or, without it, on a fresh Cranfield index with an untrained `small`
//! model (SEAL only: the same amount of work per step).
//! `GENRET_BENCH_QUERIES` limits the number of Cranfield queries (default 100).
//!
//! Latency is measured one query at a time (batch 1); throughput with batches of 16.

use std::time::Instant;

use candle_core::Device;
use genret::corpus::{read_corpus, read_queries};
use genret::eval::percentile;
use genret::index::{BuildConfig, Index, build};
use genret::model::{Config, Preset, T5ForConditionalGeneration, init_params};
use genret::retrieve::{Mode, SearchOptions};
use genret::search::Searcher;

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let index = std::sync::Arc::new(match std::env::var("GENRET_BENCH_INDEX") {
        Ok(path) => Index::open(&path).expect("GENRET_BENCH_INDEX must be an index"),
        Err(_) => {
            let corpus = read_corpus(format!("{root}/corpus/cranfield")).unwrap();
            build(
                &corpus,
                &tmp.path().join("cran.idx"),
                &BuildConfig::default(),
            )
            .unwrap()
        }
    });
    let parts = &index.dir.manifest.parts;
    let mut modes = Vec::new();
    let searcher = if parts.contains_key("model") || parts.contains_key(genret::dsi::DSI_DIR) {
        if parts.contains_key("model") {
            modes.push(Mode::SEAL);
        }
        if parts.contains_key(genret::dsi::DSI_DIR) {
            modes.push(Mode::DSI);
        }
        Searcher::new(std::sync::Arc::clone(&index)).expect("the index's models load")
    } else {
        let mut config = Config::preset(
            Preset::Small,
            index.docids().unwrap().model_vocab() as usize,
        );
        let sp = index.tokenizer.specials();
        config.pad_token_id = sp.pad;
        config.eos_token_id = sp.eos;
        config.decoder_start_token_id = sp.pad;
        let params = init_params(&config, 1, &Device::Cpu).unwrap();
        let model = T5ForConditionalGeneration::new(&config, &params).unwrap();
        modes.push(Mode::SEAL);
        Searcher::bare(std::sync::Arc::clone(&index))
            .with_seal(genret::seal::Seal::new(std::sync::Arc::clone(&index), model).unwrap())
    };
    println!(
        "index: {} documents, {} tokens; modes: {modes:?}",
        index.docs.len(),
        index.fm.tokens(),
    );
    let limit: usize = std::env::var("GENRET_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let queries = read_queries(format!("{root}/corpus/cranfield")).unwrap();
    let texts: Vec<&str> = queries
        .iter()
        .take(limit)
        .map(|q| q.text.as_str())
        .collect();
    // Warm-up: page in the models and the index.
    for &mode in &modes {
        let options = SearchOptions {
            mode,
            ..SearchOptions::default()
        };
        searcher.search(&texts[..4], &options).unwrap();
    }

    println!(
        "\n| mode | beam | p50 ms | p95 ms | model % | constraint % | scoring % | queries/s (batch 1) | queries/s (batch 16) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &mode in &modes {
        for beam in [5, 10, 15] {
            let one = SearchOptions {
                mode,
                beam,
                batch: 1,
                ..SearchOptions::default()
            };
            let started = Instant::now();
            let (results, times) = searcher.search_timed(&texts, &one).unwrap();
            let wall = started.elapsed().as_secs_f64();
            let mut ms: Vec<f64> = results.iter().map(|r| r.took_ms).collect();
            ms.sort_by(f64::total_cmp);
            let model = times.decode.model.as_secs_f64();
            let constraint = times.decode.constraint.as_secs_f64();
            let scoring = times.scoring.as_secs_f64();
            let total = model + constraint + scoring;
            let batched = SearchOptions { batch: 16, ..one };
            let started = Instant::now();
            searcher.search(&texts, &batched).unwrap();
            let batched_wall = started.elapsed().as_secs_f64();
            println!(
                "| {} | {beam} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
                mode.name(),
                percentile(&ms, 0.5),
                percentile(&ms, 0.95),
                100.0 * model / total,
                100.0 * constraint / total,
                100.0 * scoring / total,
                texts.len() as f64 / wall,
                texts.len() as f64 / batched_wall,
            );
        }
    }
}
