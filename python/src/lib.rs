//! The Python module `genret._genret`: genret's index, training, search and evaluation for
//! Python callers (the package `genret` re-exports it with docstrings and helpers).
//!
//! Errors become `ValueError` when they are the caller's to fix (bad input, a missing model,
//! a damaged file) and `RuntimeError` otherwise, with genret's message. Long calls (build,
//! train, search) release the GIL, so other Python threads run meanwhile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use genret::baseline::dense::DEFAULT_MODEL;
use genret::device::Device;
use genret::eval::{Metric, Run};
use genret::index::{BuildConfig, Index};
use genret::model::Preset;
use genret::retrieve::{Bm25Params, Method, Mode, SearchOptions};
use genret::score::SealParams;
use genret::search::Searcher;
use genret::train::TrainConfig;

fn err(e: genret::Error) -> PyErr {
    if e.is_user_error() {
        PyValueError::new_err(e.to_string())
    } else {
        PyRuntimeError::new_err(e.to_string())
    }
}

/// One retrieved document.
#[pyclass(name = "Hit", module = "genret", frozen, get_all)]
#[derive(Clone)]
struct Hit {
    /// The document's id in the corpus.
    doc_id: String,
    score: f64,
    title: String,
    /// SEAL: the n-grams that found it; DSI: its identifier; BM25 and dense: empty.
    ngrams: Vec<String>,
}

/// One n-gram SEAL scored a query with (`Index.explain`).
#[pyclass(name = "Term", module = "genret", frozen, get_all)]
#[derive(Clone)]
struct Term {
    ngram: String,
    /// The model's probability of the n-gram (summed over its forms).
    prob: f64,
    /// Occurrences in the corpus.
    count: usize,
    /// Documents holding it.
    docs: usize,
    /// Its weight in a document's score.
    weight: f64,
}

#[pymethods]
impl Term {
    fn __repr__(&self) -> String {
        format!(
            "Term({:?}, prob={:.4}, count={}, weight={:.4})",
            self.ngram, self.prob, self.count, self.weight
        )
    }
}

#[pymethods]
impl Hit {
    fn __repr__(&self) -> String {
        format!(
            "Hit(doc_id={:?}, score={:.4}, title={:?})",
            self.doc_id, self.score, self.title
        )
    }
}

/// A genret index directory with the retrievers loaded for it.
#[pyclass(name = "Index", module = "genret")]
struct PyIndex {
    path: PathBuf,
    index: Arc<Index>,
    /// Where its models train and run.
    device: Device,
    /// Loaded on the first search that needs each method, kept for the next.
    searcher: Mutex<Option<Searcher>>,
}

impl PyIndex {
    fn wrap(path: PathBuf, index: Index, device: Device) -> PyIndex {
        PyIndex {
            path,
            index: Arc::new(index),
            device,
            searcher: Mutex::new(None),
        }
    }

    /// Reopens the directory after a command wrote to it (training, an added part).
    fn reopen(&mut self) -> PyResult<()> {
        let index = Index::open(&self.path).map_err(err)?;
        *self = PyIndex::wrap(self.path.clone(), index, self.device.clone());
        Ok(())
    }
}

#[pymethods]
impl PyIndex {
    /// Indexes a corpus (BEIR folder or corpus.jsonl, or id<TAB>text TSV) into `out`; its
    /// models will train and run on `device` (`genret --device`'s values). `shard_size`
    /// splits the FM-index into shards of at most that many symbols (`genret index
    /// --shard-size`).
    #[staticmethod]
    #[pyo3(signature = (corpus, out, device="auto", shard_size=None))]
    fn build(
        py: Python<'_>,
        corpus: PathBuf,
        out: PathBuf,
        device: &str,
        shard_size: Option<usize>,
    ) -> PyResult<PyIndex> {
        let device = genret::device::parse(device).map_err(err)?;
        let mut config = BuildConfig::default();
        if let Some(size) = shard_size {
            config.fm.shard_symbols = size;
        }
        let index = py.detach(|| {
            genret::index::build_from(genret::index::CorpusSource::File(&corpus), &out, &config)
        });
        Ok(PyIndex::wrap(out, index.map_err(err)?, device))
    }

    /// Appends the documents of `corpus` to this index (`genret index --add`): the existing
    /// documents keep their numbers and docids, and trained models keep working.
    fn add_documents(&mut self, py: Python<'_>, corpus: PathBuf) -> PyResult<()> {
        *self.searcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let path = self.path.clone();
        py.detach(|| {
            let corpus = genret::corpus::read_corpus(&corpus)?;
            genret::index::add(&corpus, &path, &genret::index::AddConfig::default())
        })
        .map_err(err)?;
        self.reopen()
    }

    /// Number of FM-index shards.
    #[getter]
    fn shards(&self) -> usize {
        self.index.fm.shards().len()
    }

    /// The documents of each FM-index shard, as `(first, end)` document numbers.
    fn shard_ranges(&self) -> Vec<(u32, u32)> {
        let fm = &self.index.fm;
        (0..fm.shards().len())
            .map(|k| {
                let first = fm.first_doc(k);
                (first, first + fm.shards()[k].docs() as u32)
            })
            .collect()
    }

    /// SEAL's search up to the point where documents are scored: one plan per query, a dict
    /// of plain values (`forms`, `weights`, `candidates`, `avg_len`, `k`, `params`) that
    /// `DocumentShard.score(**plan)` scores wherever the candidates' documents are. Merging
    /// the shards' results by score (ties by document number) and keeping `k` gives
    /// `search`'s answer exactly (docs/SCALE.md). The options are `search`'s (with the same
    /// `batch`, the same answers).
    #[pyo3(signature = (
        queries, k=10, beam=10, batch=16, ngrams_per_step=50, max_ngram_len=10,
        exact_ngrams=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn seal_plans(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        k: usize,
        beam: usize,
        batch: usize,
        ngrams_per_step: usize,
        max_ngram_len: usize,
        exact_ngrams: bool,
    ) -> PyResult<Vec<Py<PyDict>>> {
        let options = SearchOptions {
            mode: Mode::SEAL,
            k,
            beam,
            batch: batch.max(1),
            ngrams_per_step,
            max_ngram_len,
            seal: SealParams::exact_ngrams(exact_ngrams),
            ..SearchOptions::default()
        };
        let plans = self.with_searcher(py, Mode::SEAL, DEFAULT_MODEL, move |searcher| {
            let seal = searcher
                .seal()
                .ok_or_else(|| genret::Error::InvalidInput("no SEAL model loaded".into()))?;
            let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
            // Decoded in `search`'s batches: a batch's padding can move the last bits of a
            // score, and the plans are to score exactly as `search` does.
            let mut plans = Vec::with_capacity(refs.len());
            for chunk in refs.chunks(options.batch) {
                plans.extend(seal.plan(chunk, &options)?.0);
            }
            Ok(plans)
        })?;
        plans
            .into_iter()
            .map(|plan| {
                let dict = PyDict::new(py);
                let forms: Vec<Vec<Vec<u32>>> = plan
                    .ngrams
                    .iter()
                    .map(|n| n.forms().map(|(t, _)| t.to_vec()).collect())
                    .collect();
                let weights: Vec<f64> = plan.ngrams.iter().map(|n| n.weight).collect();
                let p = &plan.params;
                let params = BTreeMap::from([
                    ("alpha", p.alpha),
                    ("beta", p.beta),
                    ("k1", p.k1),
                    ("b", p.b),
                ]);
                dict.set_item("forms", forms)?;
                dict.set_item("weights", weights)?;
                dict.set_item("candidates", plan.candidates)?;
                dict.set_item("avg_len", plan.avg_len)?;
                dict.set_item("k", k)?;
                dict.set_item("params", params)?;
                Ok(dict.unbind())
            })
            .collect()
    }

    /// Opens an index directory, verifying its parts; its models will train and run on
    /// `device` (`auto`, `cpu`, `cuda`, `cuda:N`), searching at `precision` (`genret
    /// --precision`'s values: `f32`, `tf32`, `f16`, `int8`; set for the whole process).
    #[staticmethod]
    #[pyo3(signature = (path, device="auto", precision="f32"))]
    fn open(py: Python<'_>, path: PathBuf, device: &str, precision: &str) -> PyResult<PyIndex> {
        genret::device::set_precision(precision.parse().map_err(err)?);
        let device = genret::device::parse(device).map_err(err)?;
        let index = py.detach(|| Index::open(&path)).map_err(err)?;
        Ok(PyIndex::wrap(path, index, device))
    }

    /// Where the models train and run (`cpu`, `cuda:0`).
    #[getter]
    fn device(&self) -> String {
        genret::device::name(&self.device)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The parts the index holds (`model`, `dsi`, `bm25`, `dense`, ...).
    #[getter]
    fn parts(&self) -> Vec<String> {
        self.index.dir.manifest.parts.keys().cloned().collect()
    }

    fn __len__(&self) -> usize {
        self.index.docs.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Index({:?}, documents={}, parts={:?})",
            self.path.display().to_string(),
            self.index.docs.len(),
            self.parts()
        )
    }

    /// Trains SEAL's model (or DSI's with `dsi=True`); returns what the run reports. `lr`
    /// and `batch_size` default to the recipe's; `encoder` (a directory or a Hugging Face
    /// cache name) warm-starts SEAL's model from a frozen BERT-family encoder, or sets DSI's,
    /// as `genret train --encoder` does.
    // Python's keyword arguments, one per setting.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        steps=None, preset="small", dsi=false, queries=None, split="train", seed=42, lr=None,
        batch_size=None, encoder=None
    ))]
    fn train(
        &mut self,
        py: Python<'_>,
        steps: Option<usize>,
        preset: &str,
        dsi: bool,
        queries: Option<PathBuf>,
        split: &str,
        seed: u64,
        lr: Option<f64>,
        batch_size: Option<usize>,
        encoder: Option<String>,
    ) -> PyResult<BTreeMap<String, f64>> {
        let mut config = if dsi {
            TrainConfig::dsi()
        } else {
            TrainConfig {
                preset: match preset {
                    "tiny" => Preset::Tiny,
                    "small" => Preset::Small,
                    "base" => Preset::Base,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "unknown preset {other:?}: use tiny, small or base"
                        )));
                    }
                },
                ..TrainConfig::default()
            }
        };
        if steps.is_some() {
            config.steps = steps;
            config.epochs = None;
        }
        config.seed = seed;
        config.queries = queries.map(|q| (q, split.to_string()));
        if let Some(lr) = lr {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(PyValueError::new_err(format!("lr must be > 0 (got {lr})")));
            }
            config.lr = lr;
        }
        if let Some(b) = batch_size {
            if b == 0 {
                return Err(PyValueError::new_err("batch_size must be at least 1"));
            }
            config.batch_size = b;
        }
        if encoder.is_some() {
            config.encoder = encoder;
        }
        // The searcher holds the index; training needs it alone.
        *self.searcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let path = self.path.clone();
        let device = &self.device;
        let report = py
            .detach(|| {
                let mut index = Index::open(&path)?;
                genret::train::train(&mut index, &config, false, device)
            })
            .map_err(err)?;
        self.reopen()?;
        let mut out = BTreeMap::new();
        out.insert("steps".into(), report.steps as f64);
        out.insert("seconds".into(), report.seconds);
        out.insert("parameters".into(), report.params as f64);
        if let Some(last) = report.log.last() {
            out.insert("loss".into(), last.loss);
        }
        Ok(out)
    }

    /// Builds BM25's index (`part="bm25"`) or the documents' dense embeddings
    /// (`part="dense"`), which searches in those modes read.
    #[pyo3(signature = (part, dense_model=DEFAULT_MODEL))]
    fn add(&mut self, py: Python<'_>, part: &str, dense_model: &str) -> PyResult<()> {
        *self.searcher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let path = self.path.clone();
        let device = &self.device;
        py.detach(|| genret::baseline::add(&mut Index::open(&path)?, part, dense_model, device))
            .map_err(err)?;
        self.reopen()
    }

    /// Answers `queries` (a list of strings): one list of hits per query, best first. The
    /// options are `genret search`'s (see its --help): `ngrams_per_step`, `max_ngram_len` and
    /// `exact_ngrams` concern SEAL, `k1` and `b` BM25.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        queries, mode="seal", k=10, beam=10, batch=16, dense_model=DEFAULT_MODEL,
        ngrams_per_step=50, max_ngram_len=10, exact_ngrams=false, k1=1.2, b=0.75
    ))]
    fn search(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        mode: &str,
        k: usize,
        beam: usize,
        batch: usize,
        dense_model: &str,
        ngrams_per_step: usize,
        max_ngram_len: usize,
        exact_ngrams: bool,
        k1: f32,
        b: f32,
    ) -> PyResult<Vec<Vec<Hit>>> {
        let mode: Mode = mode.parse().map_err(err)?;
        let options = SearchOptions {
            mode,
            k,
            beam,
            batch,
            ngrams_per_step,
            max_ngram_len,
            seal: SealParams::exact_ngrams(exact_ngrams),
            bm25: Bm25Params::new(k1, b).map_err(err)?,
            ..SearchOptions::default()
        };
        let results = self.answer(py, queries, options, dense_model)?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.results
                    .into_iter()
                    .map(|h| Hit {
                        doc_id: h.doc_id,
                        score: h.score,
                        title: h.title,
                        ngrams: h.ngrams,
                    })
                    .collect()
            })
            .collect())
    }
    /// The n-grams SEAL scored `query` with, strongest first: each one's model probability
    /// (`prob`), corpus occurrences (`count`), documents holding it (`docs`) and weight, as
    /// `genret search --explain` prints them. The options are `search`'s.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        query, k=10, beam=10, ngrams_per_step=50, max_ngram_len=10, exact_ngrams=false
    ))]
    fn explain(
        &self,
        py: Python<'_>,
        query: String,
        k: usize,
        beam: usize,
        ngrams_per_step: usize,
        max_ngram_len: usize,
        exact_ngrams: bool,
    ) -> PyResult<Vec<Term>> {
        let options = SearchOptions {
            mode: Mode::SEAL,
            k,
            beam,
            ngrams_per_step,
            max_ngram_len,
            seal: SealParams::exact_ngrams(exact_ngrams),
            explain: true,
            ..SearchOptions::default()
        };
        let mut results = self.answer(py, vec![query], options, DEFAULT_MODEL)?;
        Ok(results
            .pop()
            .map(|r| r.terms)
            .unwrap_or_default()
            .into_iter()
            .map(|t| Term {
                ngram: t.ngram,
                prob: t.prob,
                count: t.count,
                docs: t.docs,
                weight: t.weight,
            })
            .collect())
    }
}

impl PyIndex {
    /// Answers `queries` with `options`, the GIL released, loading the retrievers the mode
    /// needs beside those already loaded (kept for the next call).
    fn answer(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        options: SearchOptions,
        dense_model: &str,
    ) -> PyResult<Vec<genret::search::SearchResult>> {
        self.with_searcher(py, options.mode, dense_model, move |searcher| {
            let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
            searcher.search(&refs, &options)
        })
    }

    /// Runs `f` with the GIL released on a searcher that has `mode`'s methods loaded (the one
    /// kept from the last call when it has them), and keeps the searcher for the next call.
    fn with_searcher<R: Send>(
        &self,
        py: Python<'_>,
        mode: Mode,
        dense_model: &str,
        f: impl FnOnce(&Searcher) -> genret::Result<R> + Send,
    ) -> PyResult<R> {
        let mut slot = self.searcher.lock().unwrap_or_else(|e| e.into_inner());
        let current = slot.take();
        let index = Arc::clone(&self.index);
        let dense_model = dense_model.to_string();
        let device = self.device.clone();
        let (searcher, results) = py
            .detach(move || -> genret::Result<_> {
                let loaded = current.as_ref().map(Searcher::methods).unwrap_or_default();
                let searcher = match current {
                    Some(s) if mode.methods().iter().all(|m| loaded.contains(m)) => s,
                    _ => {
                        let mut methods: Vec<Method> = loaded;
                        methods.extend(mode.methods());
                        methods.sort();
                        methods.dedup();
                        Searcher::open(index, &methods, &dense_model, &device)?
                    }
                };
                let results = f(&searcher);
                Ok((searcher, results))
            })
            .map_err(err)?;
        *slot = Some(searcher);
        results.map_err(err)
    }
}

/// The documents `first..end` of an index, with no FM-index or model: a document server
/// that scores SEAL's candidates among them (`score`, given a plan from
/// `Index.seal_plans`) and returns their ids. One per process or machine; see docs/SCALE.md.
#[pyclass(name = "DocumentShard", module = "genret", frozen)]
struct PyDocumentShard {
    docs: genret::index::DocStore,
    tokens: genret::index::TokenStore,
    first: u32,
    end: u32,
}

#[pymethods]
impl PyDocumentShard {
    /// Opens the document and token stores of the index at `path` (verified), serving
    /// documents `first..end` (`end` defaults to all).
    #[new]
    #[pyo3(signature = (path, first=0, end=None))]
    fn new(py: Python<'_>, path: PathBuf, first: u32, end: Option<u32>) -> PyResult<Self> {
        let (docs, tokens) = py
            .detach(|| genret::index::open_documents(&path))
            .map_err(err)?;
        let all = docs.len() as u32;
        let end = end.unwrap_or(all);
        if first > end || end > all {
            return Err(PyValueError::new_err(format!(
                "documents {first}..{end} are not within the index's {all}"
            )));
        }
        Ok(PyDocumentShard {
            docs,
            tokens,
            first,
            end,
        })
    }

    /// This shard's best `k` of the plan's candidates (those it holds) as `(doc, score)`, best
    /// first, ties by document number: what `Index.search` scores them.
    #[pyo3(signature = (forms, weights, candidates, avg_len, k, params))]
    #[allow(clippy::too_many_arguments)]
    fn score(
        &self,
        py: Python<'_>,
        forms: Vec<Vec<Vec<u32>>>,
        weights: Vec<f64>,
        candidates: Vec<u32>,
        avg_len: f64,
        k: usize,
        params: BTreeMap<String, f64>,
    ) -> PyResult<Vec<(u32, f64)>> {
        if forms.len() != weights.len() {
            return Err(PyValueError::new_err(format!(
                "{} n-grams but {} weights",
                forms.len(),
                weights.len()
            )));
        }
        let param = |name: &str| {
            params
                .get(name)
                .copied()
                .ok_or_else(|| PyValueError::new_err(format!("params has no {name:?}")))
        };
        let params = SealParams {
            alpha: param("alpha")?,
            beta: param("beta")?,
            k1: param("k1")?,
            b: param("b")?,
            ..SealParams::default()
        };
        let mine: Vec<u32> = candidates
            .into_iter()
            .filter(|d| (self.first..self.end).contains(d))
            .collect();
        py.detach(|| {
            let forms: Vec<Vec<&[u32]>> = forms
                .iter()
                .map(|f| f.iter().map(Vec::as_slice).collect())
                .collect();
            let scorer = genret::score::Scorer::of_forms(forms, &weights, &params, avg_len);
            genret::score::score_candidates(&scorer, &mine, k, &|d| self.tokens.doc(d))
        })
        .map(|scored| scored.into_iter().map(|s| (s.doc, s.score)).collect())
        .map_err(err)
    }

    /// The corpus ids of documents `docs` (each within this shard).
    fn ids(&self, docs: Vec<u32>) -> PyResult<Vec<String>> {
        docs.into_iter()
            .map(|d| {
                if !(self.first..self.end).contains(&d) {
                    return Err(PyValueError::new_err(format!(
                        "document {d} is not in this shard ({}..{})",
                        self.first, self.end
                    )));
                }
                self.docs.id(d as usize).map_err(err)
            })
            .collect()
    }

    fn __len__(&self) -> usize {
        (self.end - self.first) as usize
    }

    fn __repr__(&self) -> String {
        format!("DocumentShard(documents {}..{})", self.first, self.end)
    }
}

/// A run as genret reads it: query id -> [(doc id, score)], in the order given.
fn to_run(run: BTreeMap<String, Vec<(String, f64)>>) -> Run {
    run.into_iter().collect()
}

/// Evaluates a run (dict: query id -> list of (doc id, score)) against a qrels file (TREC or
/// BEIR TSV); returns each metric's mean over the judged queries.
#[pyfunction]
#[pyo3(signature = (run, qrels, metrics=None))]
fn evaluate(
    run: BTreeMap<String, Vec<(String, f64)>>,
    qrels: PathBuf,
    metrics: Option<Vec<String>>,
) -> PyResult<BTreeMap<String, f64>> {
    let qrels = genret::corpus::read_qrels(&qrels, None, false).map_err(err)?;
    let metrics = match metrics {
        Some(names) => names
            .iter()
            .map(|m| m.parse::<Metric>())
            .collect::<genret::Result<Vec<_>>>()
            .map_err(err)?,
        None => Metric::standard(),
    };
    Ok(genret::eval::evaluate(&to_run(run), &qrels, &metrics, false).mean)
}

/// Writes a run (dict: query id -> list of (doc id, score), best first) as a TREC run file,
/// atomically.
#[pyfunction]
#[pyo3(signature = (path, run, name="genret"))]
fn write_run(path: PathBuf, run: BTreeMap<String, Vec<(String, f64)>>, name: &str) -> PyResult<()> {
    genret::eval::write_run(&path, &to_run(run), name).map_err(err)
}

#[pymodule]
fn _genret(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    m.add_class::<PyDocumentShard>()?;
    m.add_class::<Hit>()?;
    m.add_class::<Term>()?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(write_run, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
