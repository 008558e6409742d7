//! retrieve: here is a batch of queries, which documents does one method return for them?
//!
//! Every retrieval method is a [`Retriever`]: SEAL ([`crate::seal::Seal`]), DSI
//! ([`crate::dsi::DsiModel`]), BM25 ([`crate::baseline::bm25::Bm25`]), dense retrieval
//! ([`crate::baseline::dense::Dense`]), and [`Fused`], which combines two of them. A [`Mode`]
//! names one method or a fusion of two (`seal`, `bm25+dense`, `rrf:seal+dense`): search,
//! bench, serve and the command line parse and print modes with this one type, and fuse with
//! this one [`Fusion`].
//!
//! A retriever answers document numbers (positions in the index) with scores, best first;
//! [`crate::search::Searcher`] adds the documents' ids and titles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decode::DecodeTimes;
use crate::error::{Error, Result};
use crate::score::{SealParams, Term};

/// One retrieval method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// The model writes corpus n-grams under the FM-index's constraint; documents are ranked
    /// from the n-grams they hold ([`crate::seal`]).
    Seal,
    /// The model writes document identifiers under a prefix trie ([`crate::dsi`]).
    Dsi,
    /// BM25 over the documents' words ([`crate::baseline::bm25`]).
    Bm25,
    /// Cosine similarity of sentence embeddings ([`crate::baseline::dense`]).
    Dense,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Seal, Method::Dsi, Method::Bm25, Method::Dense];

    pub fn name(self) -> &'static str {
        match self {
            Method::Seal => "seal",
            Method::Dsi => "dsi",
            Method::Bm25 => "bm25",
            Method::Dense => "dense",
        }
    }

    /// Whether the method writes with a trained generative model.
    pub fn is_generative(self) -> bool {
        matches!(self, Method::Seal | Method::Dsi)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| Error::UnknownName {
                what: "method",
                got: s.to_string(),
                expected: "seal, dsi, bm25 or dense".into(),
            })
    }
}

/// How two rankings become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Fusion {
    /// Each list's scores min-max normalised to [0, 1] per query and summed (a document
    /// missing from a list adds 0; a list whose scores are all equal adds 1 to each of its
    /// documents).
    #[default]
    MinMax,
    /// Reciprocal-rank fusion: `sum 1 / (RRF_K + rank)` over the lists holding the document,
    /// ranks from 1 (Cormack, Clarke and Buettcher, SIGIR 2009). Ignores scores, so it needs no
    /// normalisation.
    Rrf,
}

/// RRF's constant, the paper's 60.
pub const RRF_K: f64 = 60.0;

/// Documents taken from each part of a fusion before fusing (at least `k`).
pub const FUSION_DEPTH: usize = 100;

impl Fusion {
    /// The best `k` of `lists` (each `(document, score)`, best first) fused. Cost: linear in
    /// the lists' lengths plus a sort of the distinct documents. Ties go to the lower
    /// document number.
    pub fn fuse(self, lists: &[&[(u32, f64)]], k: usize) -> Vec<(u32, f64)> {
        let mut fused: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
        for list in lists {
            match self {
                Fusion::MinMax => {
                    let (lo, hi) = list
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), h| {
                            (lo.min(h.1), hi.max(h.1))
                        });
                    for &(doc, score) in *list {
                        let norm = if hi > lo {
                            (score - lo) / (hi - lo)
                        } else {
                            1.0
                        };
                        *fused.entry(doc).or_default() += norm;
                    }
                }
                Fusion::Rrf => {
                    for (rank, &(doc, _)) in list.iter().enumerate() {
                        *fused.entry(doc).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
                    }
                }
            }
        }
        let mut out: Vec<(u32, f64)> = fused.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }
}

/// What answers a query: one method, or two fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    One(Method),
    Fused(Method, Method, Fusion),
}

impl Default for Mode {
    fn default() -> Mode {
        Mode::One(Method::Seal)
    }
}

impl Mode {
    pub const SEAL: Mode = Mode::One(Method::Seal);
    pub const DSI: Mode = Mode::One(Method::Dsi);
    pub const BM25: Mode = Mode::One(Method::Bm25);
    pub const DENSE: Mode = Mode::One(Method::Dense);
    pub const SEAL_DENSE: Mode = Mode::Fused(Method::Seal, Method::Dense, Fusion::MinMax);
    pub const BM25_DENSE: Mode = Mode::Fused(Method::Bm25, Method::Dense, Fusion::MinMax);

    /// The methods it runs, in order.
    pub fn methods(self) -> Vec<Method> {
        match self {
            Mode::One(m) => vec![m],
            Mode::Fused(a, b, _) => vec![a, b],
        }
    }

    /// Whether answering in this mode runs `method`.
    pub fn uses(self, method: Method) -> bool {
        self.methods().contains(&method)
    }

    pub fn is_fused(self) -> bool {
        matches!(self, Mode::Fused(..))
    }

    /// The name `FromStr` reads: `seal`, `seal+dense` (min-max fusion), `rrf:seal+dense`.
    pub fn name(self) -> String {
        match self {
            Mode::One(m) => m.name().into(),
            Mode::Fused(a, b, Fusion::MinMax) => format!("{}+{}", a.name(), b.name()),
            Mode::Fused(a, b, Fusion::Rrf) => format!("rrf:{}+{}", a.name(), b.name()),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    /// `METHOD`, `METHOD+METHOD` (min-max fusion) or `rrf:METHOD+METHOD`.
    fn from_str(s: &str) -> Result<Mode> {
        let s = s.trim();
        let (fusion, rest) = match s.split_once(':') {
            Some(("rrf", rest)) => (Fusion::Rrf, rest),
            Some(("minmax", rest)) => (Fusion::MinMax, rest),
            Some((other, _)) => {
                return Err(Error::UnknownName {
                    what: "fusion",
                    got: other.to_string(),
                    expected: "minmax (the default) or rrf, as in rrf:bm25+dense".into(),
                });
            }
            None => (Fusion::MinMax, s),
        };
        let parts: Vec<&str> = rest.split('+').collect();
        let bad = || Error::UnknownName {
            what: "mode",
            got: s.to_string(),
            expected: "seal, dsi, bm25 or dense, or two different ones fused, as in seal+dense \
                       or rrf:bm25+dense"
                .into(),
        };
        let methods = parts
            .iter()
            .map(|p| p.parse::<Method>().map_err(|_| bad()))
            .collect::<Result<Vec<_>>>()?;
        match methods[..] {
            [m] if !s.contains(':') => Ok(Mode::One(m)),
            [a, b] if a != b => Ok(Mode::Fused(a, b, fusion)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Mode, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Search parameters; each retriever reads those that concern it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    pub mode: Mode,
    /// Documents returned per query.
    pub k: usize,
    /// Beam size (SEAL, DSI).
    pub beam: usize,
    /// Longest n-gram (SEAL); DSI decodes up to the longest docid.
    pub max_ngram_len: usize,
    /// N-grams kept from every decoding step (SEAL; at least `beam`): the beam continues the
    /// best `beam` extensions, but all of a step's extensions are scored, and the next best
    /// are n-grams the model also likes (a query's other words, mostly).
    pub ngrams_per_step: usize,
    /// Query tokens kept (SEAL: the model was trained on sources of this length).
    pub max_query_len: usize,
    /// Queries answered together.
    pub batch: usize,
    pub seal: SealParams,
    /// BM25's parameters (modes with `bm25`).
    pub bm25: Bm25Params,
    /// Also return each query's weighted n-grams ([`Answer::terms`]; SEAL).
    pub explain: bool,
}

/// BM25's term-frequency saturation `k1` and length normalisation `b` (Robertson et al.;
/// Lucene's form). The defaults, k1 = 1.2 and b = 0.75, are Lucene's, Pyserini's (0.9/0.4
/// there for MS MARCO) and tantivy's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.2, b: 0.75 }
    }
}

impl Bm25Params {
    /// The parameters, checked: `k1 >= 0` and `0 <= b <= 1`, both finite.
    pub fn new(k1: f32, b: f32) -> Result<Bm25Params> {
        if !(k1.is_finite() && k1 >= 0.0) {
            return Err(Error::OutOfRange {
                name: "BM25's k1",
                expected: "a finite number >= 0".into(),
                got: k1.to_string(),
            });
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(Error::OutOfRange {
                name: "BM25's b",
                expected: "between 0 and 1".into(),
                got: b.to_string(),
            });
        }
        Ok(Bm25Params { k1, b })
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            mode: Mode::SEAL,
            k: 10,
            beam: 10,
            max_ngram_len: 10,
            ngrams_per_step: 50,
            max_query_len: crate::model::MAX_SOURCE_LEN,
            batch: 16,
            seal: SealParams::default(),
            bm25: Bm25Params::default(),
            explain: false,
        }
    }
}

/// One document a retriever returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// Document number in the index.
    pub doc: u32,
    pub score: f64,
    /// Why: SEAL's n-grams that matched it, strongest first (at most 10); DSI's identifier
    /// that named it; nothing for BM25 and dense retrieval.
    pub ngrams: Vec<String>,
    /// The token ids of `ngrams`.
    pub tokens: Vec<Vec<u32>>,
}

impl Retrieved {
    /// A document with a score and nothing to show for it.
    pub fn bare(doc: u32, score: f64) -> Retrieved {
        Retrieved {
            doc,
            score,
            ngrams: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

/// A retriever's answer to one query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Best first.
    pub hits: Vec<Retrieved>,
    /// With [`SearchOptions::explain`] (SEAL): the terms the query was scored with,
    /// strongest first.
    pub terms: Vec<Term>,
}

/// A retriever's answers to a batch of queries, in order, and where its time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retrieval {
    pub answers: Vec<Answer>,
    pub times: SearchTimes,
}

impl Retrieval {
    /// Documents with scores (best first) and nothing else to show, per query, found in
    /// `took`: BM25's and dense retrieval's answers.
    pub fn scored(lists: Vec<Vec<(u32, f32)>>, took: Duration) -> Retrieval {
        let answers = lists
            .into_iter()
            .map(|scores| Answer {
                hits: scores
                    .into_iter()
                    .map(|(doc, s)| Retrieved::bare(doc, s as f64))
                    .collect(),
                terms: Vec::new(),
            })
            .collect();
        Retrieval {
            answers,
            times: SearchTimes {
                scoring: took,
                ..SearchTimes::default()
            },
        }
    }
}

/// Where a search's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchTimes {
    pub decode: DecodeTimes,
    /// Everything else: ranking documents from decoded strings, BM25, embedding queries,
    /// fusing.
    pub scoring: Duration,
}

impl std::ops::AddAssign for SearchTimes {
    fn add_assign(&mut self, o: SearchTimes) {
        self.decode += o.decode;
        self.scoring += o.scoring;
    }
}

/// A retrieval method ready to answer queries.
pub trait Retriever: Send + Sync {
    /// The best `options.k` documents for each of `queries` (answered together; `batch` is
    /// the caller's concern), in order.
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval>;
}

/// Two retrievers' best [`FUSION_DEPTH`] fused: a hit keeps the evidence (n-grams, docid) of
/// the first part that found it with some, and the answer the first part's terms (else the
/// second's).
pub struct Fused<'a> {
    pub parts: [&'a dyn Retriever; 2],
    pub fusion: Fusion,
}

impl Retriever for Fused<'_> {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let deep = SearchOptions {
            k: FUSION_DEPTH.max(options.k),
            ..*options
        };
        let a = self.parts[0].retrieve(queries, &deep)?;
        let b = self.parts[1].retrieve(queries, &deep)?;
        let mut times = a.times;
        times += b.times;
        let clock = std::time::Instant::now();
        let answers = a
            .answers
            .into_iter()
            .zip(b.answers)
            .map(|(mut a, mut b)| {
                let lists: Vec<Vec<(u32, f64)>> = [&a, &b]
                    .iter()
                    .map(|x| x.hits.iter().map(|h| (h.doc, h.score)).collect())
                    .collect();
                let fused = self.fusion.fuse(&[&lists[0], &lists[1]], options.k);
                let hits = fused
                    .into_iter()
                    .map(|(doc, score)| {
                        let found = [&mut a.hits, &mut b.hits].into_iter().find_map(|hits| {
                            let i = hits
                                .iter()
                                .position(|h| h.doc == doc && !h.ngrams.is_empty())?;
                            Some(hits.swap_remove(i))
                        });
                        match found {
                            Some(h) => Retrieved { score, ..h },
                            None => Retrieved::bare(doc, score),
                        }
                    })
                    .collect();
                let terms = if a.terms.is_empty() { b.terms } else { a.terms };
                Answer { hits, terms }
            })
            .collect();
        times.scoring += clock.elapsed();
        Ok(Retrieval { answers, times })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_print_the_same_names() {
        for name in [
            "seal",
            "dsi",
            "bm25",
            "dense",
            "seal+dense",
            "bm25+dense",
            "rrf:seal+dense",
            "rrf:dsi+bm25",
        ] {
            let mode: Mode = name.parse().unwrap();
            assert_eq!(mode.name(), name);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(serde_json::from_str::<Mode>(&json).unwrap(), mode);
        }
        assert_eq!(
            "minmax:seal+dense".parse::<Mode>().unwrap(),
            Mode::SEAL_DENSE
        );
        for bad in [
            "",
            "bm26",
            "seal+",
            "seal+seal",
            "rrf:seal",
            "mean:a+b",
            "a+b+c",
        ] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reciprocal_rank_fusion_sums_inverse_ranks() {
        let a = [(1, 9.0), (2, 5.0)];
        let b = [(2, 0.9), (3, 0.8)];
        let fused = Fusion::Rrf.fuse(&[&a, &b], 10);
        // Document 2: ranks 2 and 1; document 1: rank 1 only; document 3: rank 2 only.
        assert_eq!(fused[0].0, 2);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert_eq!(fused[1], (1, 1.0 / 61.0));
        assert_eq!(fused[2], (3, 1.0 / 62.0));
        assert_eq!(Fusion::Rrf.fuse(&[&a, &b], 1).len(), 1);
    }
}
