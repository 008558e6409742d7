//! search: here is a query, which documents answer it?
//!
//! A [`Searcher`] holds an index and the retrievers loaded for it ([`crate::retrieve`]: SEAL,
//! DSI, BM25, dense retrieval) and answers queries in any [`Mode`]: one method, or two fused.
//! Queries are answered in batches, so many queries cost little more than one; every answer
//! is checked (no score that is not a number) and its documents named by id and title.
//!
//! ```no_run
//! # fn main() -> genret::Result<()> {
//! use genret::index::Index;
//! use genret::retrieve::SearchOptions;
//! use genret::search::Searcher;
//!
//! let searcher = Searcher::new(Index::open("cranfield.idx")?)?;
//! let results = searcher.search(&["boundary layer transition"], &SearchOptions::default())?;
//! for hit in &results[0].results {
//!     println!("{} {:.3} {}", hit.doc_id, hit.score, hit.title);
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Instant;

use crate::device::{self, Device};
use serde::Serialize;

use crate::baseline::bm25::Bm25;
use crate::baseline::dense::Dense;
use crate::dsi::{DSI_DIR, DsiModel};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::retrieve::{
    Fused, Method, Mode, Retrieval, Retrieved, Retriever, SearchOptions, SearchTimes,
};
use crate::score::Term;
use crate::seal::{MODEL_PART, Seal};

/// One retrieved document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub doc_id: String,
    pub score: f64,
    pub title: String,
    /// SEAL: the n-grams that matched the document, strongest first (at most 10).
    /// DSI: the identifier that named it (an atomic one: the document's id).
    pub ngrams: Vec<String>,
    /// The token ids of `ngrams`.
    #[serde(skip)]
    pub tokens: Vec<Vec<u32>>,
    /// Document number in the index.
    #[serde(skip)]
    pub doc: u32,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    pub query: String,
    /// Wall time of the query's batch divided by the batch size.
    pub took_ms: f64,
    pub results: Vec<Hit>,
    /// With [`SearchOptions::explain`] (SEAL): the terms the query was scored with,
    /// strongest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<Term>,
}

/// An index with its retrievers, ready to answer queries. Reads the index, never writes it.
pub struct Searcher {
    index: Arc<Index>,
    seal: Option<Seal>,
    dsi: Option<DsiModel>,
    bm25: Option<Bm25>,
    dense: Option<Dense>,
}

impl Searcher {
    /// Loads the index's generative models, those it has (at least one): SEAL's and DSI's,
    /// onto [`device::auto`] (the first GPU of a CUDA build, else the CPU).
    pub fn new(index: impl Into<Arc<Index>>) -> Result<Searcher> {
        let index = index.into();
        let parts = &index.dir.manifest.parts;
        let mut methods = Vec::new();
        // Without either, SEAL's loading says how to train a model.
        if parts.contains_key(MODEL_PART) || !parts.contains_key(DSI_DIR) {
            methods.push(Method::Seal);
        }
        if parts.contains_key(DSI_DIR) {
            methods.push(Method::Dsi);
        }
        Searcher::open(index, &methods, "", &device::auto())
    }

    /// Loads the retrievers of `methods`, each or an error saying how to make what it needs;
    /// dense retrieval with the encoder `dense_model` (a directory or a Hugging Face cache
    /// name). The models run on `device`.
    pub fn open(
        index: impl Into<Arc<Index>>,
        methods: &[Method],
        dense_model: &str,
        device: &Device,
    ) -> Result<Searcher> {
        let mut searcher = Searcher::bare(index);
        for &m in methods {
            let index = Arc::clone(&searcher.index);
            match m {
                Method::Seal => searcher.seal = Some(Seal::load(index, device)?),
                Method::Dsi => searcher.dsi = Some(DsiModel::load(&index, device)?),
                Method::Bm25 => searcher.bm25 = Some(Bm25::open_index(&index)?),
                Method::Dense => searcher.dense = Some(Dense::open(&index, dense_model, device)?),
            }
        }
        Ok(searcher)
    }

    /// A searcher with no retriever yet (add them with the `with_` methods).
    pub fn bare(index: impl Into<Arc<Index>>) -> Searcher {
        Searcher {
            index: index.into(),
            seal: None,
            dsi: None,
            bm25: None,
            dense: None,
        }
    }

    pub fn with_seal(mut self, seal: Seal) -> Searcher {
        self.seal = Some(seal);
        self
    }

    pub fn with_dsi(mut self, dsi: DsiModel) -> Searcher {
        self.dsi = Some(dsi);
        self
    }

    pub fn with_bm25(mut self, bm25: Bm25) -> Searcher {
        self.bm25 = Some(bm25);
        self
    }

    pub fn with_dense(mut self, dense: Dense) -> Searcher {
        self.dense = Some(dense);
        self
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// SEAL's retriever, if loaded.
    pub fn seal(&self) -> Option<&Seal> {
        self.seal.as_ref()
    }

    /// The methods loaded, in [`Method::ALL`]'s order.
    pub fn methods(&self) -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|&m| self.loaded(m).is_some())
            .collect()
    }

    fn loaded(&self, method: Method) -> Option<&dyn Retriever> {
        match method {
            Method::Seal => self.seal.as_ref().map(|r| r as &dyn Retriever),
            Method::Dsi => self.dsi.as_ref().map(|r| r as &dyn Retriever),
            Method::Bm25 => self.bm25.as_ref().map(|r| r as &dyn Retriever),
            Method::Dense => self.dense.as_ref().map(|r| r as &dyn Retriever),
        }
    }

    /// The retriever of `method`, or an error saying how to have it.
    pub fn retriever(&self, method: Method) -> Result<&dyn Retriever> {
        self.loaded(method).ok_or_else(|| {
            let dir = self.index.dir.path();
            let parts = &self.index.dir.manifest.parts;
            let missing = |part: &str, file: &str, hint: String| Error::MissingPart {
                dir: dir.to_path_buf(),
                part: part.into(),
                file: file.into(),
                hint,
            };
            match method {
                Method::Seal if !parts.contains_key(MODEL_PART) => missing(
                    "SEAL model",
                    MODEL_PART,
                    format!("train one with `genret train {}`", dir.display()),
                ),
                Method::Dsi if !parts.contains_key(DSI_DIR) => missing(
                    "DSI model",
                    DSI_DIR,
                    format!("train one with `genret train {} --dsi`", dir.display()),
                ),
                m => Error::InvalidInput(format!(
                    "{}: {} is not loaded in this searcher (Searcher::open loads it)",
                    dir.display(),
                    m.name()
                )),
            }
        })
    }

    /// Answers `queries`, in order.
    pub fn search(&self, queries: &[&str], options: &SearchOptions) -> Result<Vec<SearchResult>> {
        Ok(self.search_timed(queries, options)?.0)
    }

    /// [`search`](Self::search) plus where the time went.
    pub fn search_timed(
        &self,
        queries: &[&str],
        options: &SearchOptions,
    ) -> Result<(Vec<SearchResult>, SearchTimes)> {
        // On one of rayon's threads: the model's parallel loops then split work with their
        // pool in place, where a caller outside it would hand every loop over and sleep until
        // it returned, two thread switches each (a few hundred a batch).
        rayon::scope(|_| self.search_on_pool(queries, options))
    }

    fn search_on_pool(
        &self,
        queries: &[&str],
        options: &SearchOptions,
    ) -> Result<(Vec<SearchResult>, SearchTimes)> {
        for (name, value) in [
            ("k", options.k),
            ("beam", options.beam),
            ("batch", options.batch),
        ] {
            if value == 0 {
                return Err(Error::OutOfRange {
                    name,
                    expected: "at least 1".into(),
                    got: "0".into(),
                });
            }
        }
        for q in queries {
            check_query(q)?;
        }
        let fused;
        let retriever: &dyn Retriever = match options.mode {
            Mode::One(m) => self.retriever(m)?,
            Mode::Fused(a, b, fusion) => {
                fused = Fused {
                    parts: [self.retriever(a)?, self.retriever(b)?],
                    fusion,
                };
                &fused
            }
        };
        let mut times = SearchTimes::default();
        let mut results = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(options.batch) {
            let started = Instant::now();
            let Retrieval {
                answers,
                times: took,
            } = retriever.retrieve(chunk, options)?;
            times += took;
            for (q, a) in chunk.iter().zip(&answers) {
                if let Some(h) = a.hits.iter().find(|h| !h.score.is_finite()) {
                    return Err(Error::Model(format!(
                        "query {q:?}: document {} scored {}; refusing a result that is not a number",
                        self.index.docs.id(h.doc as usize)?,
                        h.score
                    )));
                }
            }
            let took_ms = started.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
            for (q, a) in chunk.iter().zip(answers) {
                results.push(SearchResult {
                    query: q.to_string(),
                    took_ms,
                    results: a
                        .hits
                        .into_iter()
                        .map(|h| self.hit(h))
                        .collect::<Result<_>>()?,
                    terms: a.terms,
                });
            }
        }
        Ok((results, times))
    }

    fn hit(&self, r: Retrieved) -> Result<Hit> {
        let entry = self.index.docs.get(r.doc as usize)?;
        Ok(Hit {
            doc_id: entry.id,
            score: r.score,
            title: entry.title,
            ngrams: r.ngrams,
            tokens: r.tokens,
            doc: r.doc,
        })
    }
}

/// Refuses a query that has no words or holds a control character (a NUL, an escape): such a
/// query is a caller's mistake, and answering it would hide that.
pub fn check_query(query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Error::BadQuery(
            "the query is empty; give some words to search for".into(),
        ));
    }
    if let Some(c) = query.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        return Err(Error::BadQuery(format!(
            "the query holds the control character U+{:04X}; queries are plain text",
            c as u32
        )));
    }
    Ok(())
}
