//! bench: here is a collection, how does every method do on it?
//!
//! One command builds what is missing (index, model, BM25 index, dense embeddings) under an
//! output directory, answers every judged query of a split with every method one query at a
//! time (so latencies are per query), evaluates the runs ([`crate::eval`]) and writes
//! `results.json`, one TREC run per method and a quality-vs-latency chart.
//!
//! Generative methods train on the collection's `train` split as well as on the corpus when the
//! collection has one (and it is not the evaluated split); otherwise on the corpus alone.

mod chart;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::baseline::bm25::{BM25_DIR, Bm25};
use crate::baseline::dense::{Dense, DenseEncoder, DenseIndex};
use crate::corpus::{Collection, Qrels};
use crate::device::Device;
use crate::docid::SemanticOptions;
use crate::error::{Error, Result};
use crate::eval::{Evaluation, Metric, PairedTest, Run, compare, evaluate, percentile, write_run};
use crate::index::{BuildConfig, Index, TokenizerSource, build};
use crate::model::Preset;
use crate::retrieve::{Bm25Params, Method, Mode, SearchOptions};
use crate::score::SealParams;
use crate::seal::Seal;
use crate::search::Searcher;
use crate::storage::dir_bytes;
use crate::train::{Target, TrainConfig, train};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub collection: PathBuf,
    pub split: String,
    /// Methods and fusions; a fusion fuses the runs of its parts, which must be listed too.
    pub methods: Vec<Mode>,
    pub out: PathBuf,
    /// Training of SEAL's model (when the index has none yet).
    pub train: TrainConfig,
    /// Training of DSI's model (when the index has none yet); its encoder is `dense_model`.
    pub dsi: TrainConfig,
    pub beam: usize,
    /// SEAL's n-grams kept per decoding step ([`SearchOptions::ngrams_per_step`]).
    pub ngrams_per_step: usize,
    /// SEAL reads its n-grams as English words: their content, and the other forms of their
    /// words ([`SealParams::content`], [`SealParams::stem`]).
    pub stem: bool,
    /// Documents retrieved per query (the runs' depth).
    pub depth: usize,
    pub dense_model: String,
    /// BM25's parameters.
    pub bm25: Bm25Params,
    /// Queries answered together in the throughput pass (beside the one-at-a-time pass that
    /// gives latencies).
    pub batch: usize,
    /// Where the models train and run (`--device`).
    pub device: Device,
}

/// The training settings in which `had` (an existing model's run) differs from `asked`, as
/// `"name had (asked asked)"`; logging settings and where the training queries were read from
/// are not compared (only their split).
fn training_differences(had: &TrainConfig, asked: &TrainConfig) -> Vec<String> {
    let fields = |c: &TrainConfig| {
        let mut c = c.clone();
        c.queries = c.queries.map(|(_, split)| (PathBuf::new(), split));
        let serde_json::Value::Object(map) = serde_json::to_value(c).expect("config serializes")
        else {
            unreachable!("a struct serializes to an object")
        };
        map
    };
    let (had, asked) = (fields(had), fields(asked));
    had.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "checkpoint_every" | "log_every"))
        .filter(|(k, v)| asked.get(*k) != Some(v))
        .map(|(k, v)| {
            let show = |v: Option<&serde_json::Value>| match v {
                Some(serde_json::Value::Array(a)) if a.len() == 2 => a[1].to_string(),
                Some(serde_json::Value::Null) | None => "none".into(),
                Some(v) => v.to_string(),
            };
            format!("{k} {} (asked {})", show(Some(v)), show(asked.get(k)))
        })
        .collect()
}

/// Warns that the model in `index_dir` was trained otherwise than this run asks.
fn warn_differences(index_dir: &Path, what: &str, had: &TrainConfig, asked: &TrainConfig) {
    let differences = training_differences(had, asked);
    if !differences.is_empty() {
        tracing::warn!(
            "{}: reusing the {what} there, trained with {}; pass a new --out to train one as \
             this run asks",
            index_dir.display(),
            differences.join(", ")
        );
    }
}

impl BenchConfig {
    /// Defaults: split `test`, every method, `small` model for 600 steps, beam 10, depth 100,
    /// all-MiniLM-L6-v2, [`crate::device::auto`].
    pub fn new(collection: impl Into<PathBuf>, out: impl Into<PathBuf>) -> BenchConfig {
        BenchConfig {
            collection: collection.into(),
            split: "test".into(),
            methods: vec![
                Mode::SEAL,
                Mode::DSI,
                Mode::BM25,
                Mode::DENSE,
                Mode::SEAL_DENSE,
                Mode::BM25_DENSE,
            ],
            out: out.into(),
            train: TrainConfig {
                preset: Preset::Small,
                steps: Some(600),
                ..TrainConfig::default()
            },
            dsi: TrainConfig::dsi(),
            beam: 10,
            ngrams_per_step: SearchOptions::default().ngrams_per_step,
            stem: SealParams::default().stem,
            depth: 100,
            dense_model: crate::baseline::dense::DEFAULT_MODEL.into(),
            bm25: Bm25Params::default(),
            batch: SearchOptions::default().batch,
            device: crate::device::auto(),
        }
    }
}

/// One method's row of `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MethodResult {
    pub name: String,
    pub metrics: BTreeMap<String, f64>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Queries per second answering one query at a time.
    pub qps: f64,
    /// Queries per second answering [`BenchResults::batch`] queries together (the
    /// throughput of batch search; a fused method's is its parts' combined).
    #[serde(default)]
    pub qps_batch: f64,
    /// Bytes of the method's own index (model weights excluded, listed in `model_bytes`).
    pub index_bytes: u64,
    pub model_bytes: u64,
    /// Seconds to build its index (and train its model) in this output directory.
    pub build_s: f64,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchResults {
    pub collection: String,
    pub split: String,
    pub queries: usize,
    /// Whether the generative model also trained on the collection's train split.
    pub trained_on_queries: bool,
    pub methods: Vec<MethodResult>,
    /// Every other method compared with each baseline (BM25, dense) that ran, query by query.
    #[serde(default)]
    pub tests: Vec<BaselineTests>,
    /// Where the models ran (`cpu`, `cuda:0`): latencies and build times depend on it.
    #[serde(default)]
    pub device: String,
    /// Queries answered together for [`MethodResult::qps_batch`].
    #[serde(default)]
    pub batch: usize,
}

/// One method against one baseline: every standard metric's difference and paired
/// randomization test ([`crate::eval::compare`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineTests {
    pub method: String,
    pub baseline: String,
    pub tests: Vec<PairedTest>,
}

/// The DSI model's directory and its docid table, inside the index.
const DSI_MODEL: &str = "dsi/model";
const DSI_DOCIDS: &str = "dsi/model/docids.bin";

/// Build times recorded in `OUT/timings.json`, so a rerun that reuses an index still reports
/// what it cost to make.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Timings {
    index_s: f64,
    train_s: f64,
    bm25_s: f64,
    dense_s: f64,
    /// DSI's own model (its encoder's document embeddings excluded: the dense baseline's).
    #[serde(default)]
    dsi_train_s: f64,
}

/// Runs the comparison (see the module docs). Long steps show progress bars.
pub fn run(config: &BenchConfig) -> Result<BenchResults> {
    for m in &config.methods {
        if let Some(missing) = m
            .methods()
            .into_iter()
            .find(|p| m.is_fused() && !config.methods.contains(&Mode::One(*p)))
        {
            return Err(Error::InvalidInput(format!(
                "{m} fuses this run's {} results: add {} to --methods",
                m.methods()
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(" and "),
                missing.name()
            )));
        }
    }
    let collection = Collection::open(&config.collection, false)?;
    let qrels = collection.split(&config.split)?.clone();
    let texts: BTreeMap<&str, &str> = collection
        .queries
        .iter()
        .map(|q| (q.id.as_str(), q.text.as_str()))
        .collect();
    let judged: Vec<(String, String)> = qrels
        .judgments
        .keys()
        .filter_map(|q| texts.get(q.as_str()).map(|t| (q.clone(), t.to_string())))
        .collect();
    if judged.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: split {:?} has no judged query with a text in queries.jsonl",
            config.collection.display(),
            config.split
        )));
    }
    // Evaluate over the judged queries that have a text.
    let qrels = Qrels {
        judgments: qrels
            .judgments
            .into_iter()
            .filter(|(q, _)| texts.contains_key(q.as_str()))
            .collect(),
        unknown_docs: qrels.unknown_docs,
    };
    std::fs::create_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    let timings_path = config.out.join("timings.json");
    let mut timings: Timings = std::fs::read(&timings_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let save_timings = |t: &Timings| {
        crate::storage::write_atomic(
            &timings_path,
            &serde_json::to_vec_pretty(t).expect("timings serialize"),
        )
    };

    // The index: reused when it was built from this very corpus.
    let index_dir = config.out.join("index");
    let fingerprint = crate::corpus::fingerprint(&collection.corpus);
    let mut index = match Index::open(&index_dir) {
        Ok(i) if i.dir.manifest.documents_fingerprint() == fingerprint => i,
        _ => {
            tracing::info!("indexing {}", config.collection.display());
            let started = Instant::now();
            let mut build_config = BuildConfig::default();
            // A warm-start encoder fixes the vocabulary: the FM-index must use its tokenizer.
            if let Some(encoder) = &config.train.encoder {
                let dir = crate::model::resolve_model_dir(encoder)?;
                build_config.tokenizer = TokenizerSource::File(dir.join("tokenizer.json"));
            }
            let i = build(&collection.corpus, &index_dir, &build_config)?;
            timings.index_s = started.elapsed().as_secs_f64();
            timings.train_s = 0.0;
            timings.dsi_train_s = 0.0;
            save_timings(&timings)?;
            i
        }
    };

    let train_split = (config.split != "train" && collection.qrels.contains_key("train"))
        .then(|| "train".to_string());
    let training_queries = train_split
        .as_ref()
        .map(|s| (config.collection.clone(), s.clone()));
    let uses = |method: Method| config.methods.iter().any(|m| m.uses(method));
    let seal = uses(Method::Seal);
    let dsi = uses(Method::Dsi);
    if seal && !index.dir.manifest.parts.contains_key("model") {
        // Warm start: the encoder's document embeddings also cluster the semantic docids, so
        // that documents near a query in the encoder's space share its docid prefix.
        if let Some(name) = &config.train.encoder {
            let encoder = DenseEncoder::load(name, &config.device)?;
            let started = Instant::now();
            let dense = DenseIndex::open_or_build(&mut index, &encoder)?;
            timings.dense_s = started.elapsed().as_secs_f64();
            index.set_semantic_docids(
                &dense.vectors()?,
                encoder.dim(),
                &SemanticOptions::default(),
                &format!("dense:{}", encoder.source),
            )?;
        }
        let mut tc = config.train.clone();
        tc.queries = training_queries.clone();
        let report = train(&mut index, &tc, false, &config.device)?;
        timings.train_s = report.seconds;
        save_timings(&timings)?;
        index = Index::open(&index_dir)?;
    } else if seal && let Some(had) = crate::train::trained_with(&index, Target::Seal)? {
        let mut asked = config.train.clone();
        asked.queries = training_queries.clone();
        warn_differences(&index_dir, "model", &had, &asked);
    }
    if dsi && !index.dir.manifest.parts.contains_key(crate::dsi::DSI_DIR) {
        // The encoder's document embeddings are the dense baseline's: built (and timed) as
        // dense's when missing, so DSI's time is its own training.
        let encoder = DenseEncoder::load(&config.dense_model, &config.device)?;
        if !DenseIndex::is_cached(&index, &encoder) {
            let started = Instant::now();
            DenseIndex::open_or_build(&mut index, &encoder)?;
            timings.dense_s = started.elapsed().as_secs_f64();
        }
        let mut tc = config.dsi.clone();
        tc.encoder = Some(config.dense_model.clone());
        tc.queries = training_queries.clone();
        let report = train(&mut index, &tc, false, &config.device)?;
        timings.dsi_train_s = report.seconds;
        save_timings(&timings)?;
        index = Index::open(&index_dir)?;
    } else if dsi && let Some(had) = crate::train::trained_with(&index, Target::Dsi)? {
        let mut asked = config.dsi.clone();
        asked.encoder = Some(config.dense_model.clone());
        asked.queries = training_queries.clone();
        warn_differences(&index_dir, "DSI model", &had, &asked);
    }

    // The baselines' indexes, built (and timed) when missing.
    let bm25 = if uses(Method::Bm25) {
        let started = Instant::now();
        let fresh = !index.dir.manifest.parts.contains_key("bm25");
        let bm25 = Bm25::open_or_build(&mut index)?;
        if fresh {
            timings.bm25_s = started.elapsed().as_secs_f64();
            save_timings(&timings)?;
        }
        Some(bm25)
    } else {
        None
    };
    let dense = if uses(Method::Dense) {
        let encoder = DenseEncoder::load(&config.dense_model, &config.device)?;
        let started = Instant::now();
        let fresh = !DenseIndex::is_cached(&index, &encoder);
        let dense = DenseIndex::open_or_build(&mut index, &encoder)?;
        if fresh {
            timings.dense_s = started.elapsed().as_secs_f64();
            save_timings(&timings)?;
        }
        Some(Dense {
            encoder,
            index: dense,
        })
    } else {
        None
    };

    // Every method's retriever, over the finished index.
    let index = Arc::new(index);
    let mut searcher = Searcher::bare(Arc::clone(&index));
    if seal {
        searcher = searcher.with_seal(Seal::load(Arc::clone(&index), &config.device)?);
    }
    if dsi {
        searcher = searcher.with_dsi(crate::dsi::DsiModel::load(&index, &config.device)?);
    }
    if let Some(bm25) = bm25 {
        searcher = searcher.with_bm25(bm25);
    }
    if let Some(dense) = dense {
        searcher = searcher.with_dense(dense);
    }
    let query_ids: Vec<&str> = judged.iter().map(|(q, _)| q.as_str()).collect();
    let query_texts: Vec<&str> = judged.iter().map(|(_, t)| t.as_str()).collect();
    let mut results = Vec::new();
    let mut evals: Vec<(Mode, Evaluation)> = Vec::new();
    // A fusion fuses runs of single methods (each run once, so its latency is the sum of its
    // parts'), so those come first.
    let mut modes = config.methods.clone();
    modes.sort_by_key(|m| m.is_fused());
    let mut runs: BTreeMap<Method, PerQuery> = BTreeMap::new();
    // Seconds each single method took over all queries in batches of `config.batch`.
    let mut batched: BTreeMap<Method, f64> = BTreeMap::new();
    for &mode in &modes {
        let (per_query, ms) = match mode {
            Mode::One(method) => {
                let options = SearchOptions {
                    mode,
                    k: config.depth,
                    beam: config.beam,
                    ngrams_per_step: config.ngrams_per_step,
                    batch: 1,
                    seal: SealParams::exact_ngrams(!config.stem),
                    bm25: config.bm25,
                    ..SearchOptions::default()
                };
                let run = timed(&mode, &query_texts, |q| {
                    Ok(searcher.search(&[q], &options)?[0]
                        .results
                        .iter()
                        .map(|h| (h.doc, h.score))
                        .collect())
                })?;
                let options = SearchOptions {
                    batch: config.batch.max(1),
                    ..options
                };
                let started = Instant::now();
                for chunk in query_texts.chunks(options.batch) {
                    searcher.search(chunk, &options)?;
                }
                batched.insert(method, started.elapsed().as_secs_f64());
                runs.insert(method, run.clone());
                run
            }
            Mode::Fused(a, b, fusion) => {
                let ((a, a_ms), (b, b_ms)) = (&runs[&a], &runs[&b]);
                let fused = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| fusion.fuse(&[x, y], config.depth))
                    .collect();
                let ms = a_ms.iter().zip(b_ms).map(|(x, y)| x + y).collect();
                (fused, ms)
            }
        };
        let run: Run = query_ids
            .iter()
            .zip(&per_query)
            .map(|(q, hits)| {
                let ranked = hits
                    .iter()
                    .map(|&(d, s)| Ok((index.docs.id(d as usize)?, s)))
                    .collect::<Result<_>>()?;
                Ok((q.to_string(), ranked))
            })
            .collect::<Result<_>>()?;
        write_run(
            &config.out.join(format!("{}.trec", mode.name())),
            &run,
            &mode.name(),
        )?;
        let eval = evaluate(&run, &qrels, &Metric::standard(), true);
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let total_s: f64 = ms.iter().sum::<f64>() / 1e3;
        let part = |name: &str| {
            index
                .dir
                .manifest
                .parts
                .get(name)
                .map_or(0, |p| dir_bytes(&index.dir.file(&p.file)))
        };
        let cost = |method: Method| match method {
            Method::Seal => (
                part("fmindex"),
                part("model"),
                timings.index_s + timings.train_s,
            ),
            Method::Dsi => (
                dir_bytes(&index.dir.file(DSI_DOCIDS)),
                dir_bytes(&index.dir.file(DSI_MODEL)) - dir_bytes(&index.dir.file(DSI_DOCIDS)),
                timings.dsi_train_s,
            ),
            Method::Bm25 => (dir_bytes(&index.dir.file(BM25_DIR)), 0, timings.bm25_s),
            Method::Dense => (part("dense"), 0, timings.dense_s),
        };
        let (index_bytes, model_bytes, build_s) = mode
            .methods()
            .into_iter()
            .map(cost)
            .fold((0, 0, 0.0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z));
        results.push(MethodResult {
            name: mode.name(),
            metrics: eval.mean.clone(),
            p50_ms: percentile(&sorted, 0.5),
            p95_ms: percentile(&sorted, 0.95),
            qps: if total_s > 0.0 {
                ms.len() as f64 / total_s
            } else {
                0.0
            },
            qps_batch: {
                let s: f64 = mode.methods().iter().map(|m| batched[m]).sum();
                if s > 0.0 { ms.len() as f64 / s } else { 0.0 }
            },
            index_bytes,
            model_bytes,
            build_s,
        });
        evals.push((mode, eval));
    }
    let baselines = [Mode::BM25, Mode::DENSE];
    let tests = evals
        .iter()
        .filter(|(m, _)| !baselines.contains(m))
        .flat_map(|(m, e)| {
            evals
                .iter()
                .filter(|(b, _)| baselines.contains(b))
                .map(|(b, base)| BaselineTests {
                    method: m.name(),
                    baseline: b.name(),
                    tests: compare(e, base, &Metric::standard()),
                })
        })
        .collect();
    let name = config
        .collection
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.collection.display().to_string());
    let out = BenchResults {
        collection: name,
        split: config.split.clone(),
        queries: judged.len(),
        trained_on_queries: (seal || dsi) && train_split.is_some(),
        methods: results,
        tests,
        device: crate::device::name(&config.device),
        batch: config.batch.max(1),
    };
    crate::storage::write_atomic(
        &config.out.join("results.json"),
        &serde_json::to_vec_pretty(&out).expect("results serialize"),
    )?;
    chart::quality_latency(&out, &config.out.join("quality_latency"))?;
    Ok(out)
}

/// Every query's hits `(doc, score)`, best first, and its milliseconds.
type PerQuery = (Vec<Vec<(u32, f64)>>, Vec<f64>);

/// Answers every query with `f`, one at a time, under a progress bar; returns the hits and
/// each query's milliseconds.
fn timed(
    mode: &Mode,
    queries: &[&str],
    f: impl Fn(&str) -> Result<Vec<(u32, f64)>>,
) -> Result<PerQuery> {
    let pb = crate::progress::bar(queries.len() as u64, &format!("{mode} queries"));
    let mut hits = Vec::with_capacity(queries.len());
    let mut ms = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        hits.push(f(q)?);
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((hits, ms))
}

/// The comparison table as text (one row per method).
pub fn table(results: &BenchResults) -> String {
    let mut s = format!(
        "{} ({} split, {} queries{})\n",
        results.collection,
        results.split,
        results.queries,
        if results.trained_on_queries {
            ", generative methods trained on the train split"
        } else {
            ", generative methods trained on the corpus alone"
        }
    );
    s.push_str(&format!(
        "{:<10} {:>8} {:>7} {:>7} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9} {:>11} {:>11} {:>9}\n",
        "method",
        "nDCG@10",
        "MRR@10",
        "R@10",
        "R@100",
        "Hits@1",
        "p50 ms",
        "p95 ms",
        "q/s",
        format!("q/s b{}", results.batch.max(1)),
        "index",
        "model",
        "build s"
    ));
    for m in &results.methods {
        let g = |k: &str| m.metrics.get(k).copied().unwrap_or(0.0);
        s.push_str(&format!(
            "{:<10} {:>8.4} {:>7.4} {:>7.4} {:>8.4} {:>7.4} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>11} {:>11} {:>9.1}\n",
            m.name,
            g("ndcg@10"),
            g("mrr@10"),
            g("recall@10"),
            g("recall@100"),
            g("hits@1"),
            m.p50_ms,
            m.p95_ms,
            m.qps,
            m.qps_batch,
            human_bytes(m.index_bytes),
            if m.model_bytes > 0 {
                human_bytes(m.model_bytes)
            } else {
                "-".into()
            },
            m.build_s
        ));
    }
    s.push_str(&format!(
        "(latency and q/s: one query at a time; q/s b{}: {} queries decoded together; index and \
         model: bytes on disk; build s: building the index and training the model; models on \
         {})\n",
        results.batch.max(1),
        results.batch.max(1),
        if results.device.is_empty() {
            "the CPU"
        } else {
            &results.device
        }
    ));
    if !results.tests.is_empty() {
        s.push_str(
            "\nagainst the baselines: difference (two-sided p, paired randomization test)\n",
        );
        s.push_str(&format!(
            "{:<10} {:<9} {:>18} {:>18} {:>18}\n",
            "method", "baseline", "nDCG@10", "MRR@10", "Hits@1"
        ));
        for b in &results.tests {
            let cell = |metric: &str| {
                b.tests
                    .iter()
                    .find(|t| t.metric == metric)
                    .map_or_else(String::new, |t| format!("{:+.4} ({})", t.diff, t.p_text()))
            };
            s.push_str(&format!(
                "{:<10} {:<9} {:>18} {:>18} {:>18}\n",
                b.method,
                b.baseline,
                cell("ndcg@10"),
                cell("mrr@10"),
                cell("hits@1")
            ));
        }
    }
    s
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_differences_name_what_an_existing_model_was_trained_with() {
        let asked = BenchConfig::new("c", "o").train;
        assert!(training_differences(&asked, &asked).is_empty());
        let had = TrainConfig {
            steps: Some(400),
            copy: false,
            log_every: 1,
            queries: Some(("elsewhere/squad".into(), "train".into())),
            ..asked.clone()
        };
        let mut asked_train = asked.clone();
        asked_train.queries = Some(("corpus/squad".into(), "train".into()));
        // Logging and the queries' path do not count; the split does.
        assert_eq!(
            training_differences(&had, &asked_train),
            ["copy false (asked true)", "steps 400 (asked 600)"]
        );
        assert_eq!(
            training_differences(&had, &asked),
            [
                "copy false (asked true)",
                "queries \"train\" (asked none)",
                "steps 400 (asked 600)"
            ]
        );
    }
}
