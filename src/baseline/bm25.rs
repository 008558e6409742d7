//! BM25 over the index's documents with tantivy: one field holding `title` + `text`, analysed
//! by tantivy's `en_stem` (Unicode word split, tokens over 40 bytes dropped, lowercase,
//! Snowball English stemmer; no stopword list), scored by BM25 (Lucene's formula). A query is
//! the disjunction of its analysed terms (a repeated term counts twice, as Lucene's query
//! parser does). Stored as `INDEX/bm25/`.
//!
//! With the default k1 = 1.2, b = 0.75 tantivy scores (block-max WAND: only documents that can
//! enter the top k are scored). Tantivy fixes those two, so other values are scored here over
//! the same postings, document lengths (tantivy's one-byte field norms) and statistics, with
//! the same formula: every document holding a query term is scored, O(sum of the terms'
//! postings). At the defaults both give the same scores (a test holds them equal).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tantivy::collector::TopDocs;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::Postings;
use tantivy::query::BooleanQuery;
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocSet, Index as TantivyIndex, IndexReader, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};

use crate::error::{Error, Result};
use crate::index::{DocEntry, Index};
use crate::retrieve::{Bm25Params, Retrieval, Retriever, SearchOptions};

/// Directory of the BM25 index inside an index directory.
pub const BM25_DIR: &str = "bm25";
const ANALYZER: &str = "en_stem";
/// BM25 parameters tantivy uses (not configurable there): [`Bm25Params::default`].
pub const K1: f32 = 1.2;
pub const B: f32 = 0.75;

fn terr(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("BM25 index (tantivy): {e}"))
}

/// A BM25 index of the documents of an index directory.
pub struct Bm25 {
    reader: IndexReader,
    text: Field,
    analyzer: TextAnalyzer,
}

impl Bm25 {
    /// Opens `INDEX/bm25`, building it first if it is missing or from another corpus.
    /// Build cost: one pass over the documents (tantivy, 2 threads).
    pub fn open_or_build(index: &mut Index) -> Result<Bm25> {
        let fingerprint = index.dir.manifest.documents_fingerprint();
        let built = index.dir.part_meta_is("bm25", "corpus", &fingerprint);
        let dir = index.dir.file(BM25_DIR);
        // A derived cache: rebuilt from the verified documents when damaged, not refused.
        if built {
            match crate::storage::verify_dir(&dir).and_then(|_| Bm25::open(&dir)) {
                Ok(b) => return Ok(b),
                Err(e) => tracing::warn!("rebuilding the BM25 index: {e}"),
            }
        }
        let bm25 = Bm25::build(&index.docs.all()?, &dir)?;
        let meta = [
            ("corpus".to_string(), serde_json::json!(fingerprint)),
            ("k1".to_string(), serde_json::json!(K1)),
            ("b".to_string(), serde_json::json!(B)),
            ("analyzer".to_string(), serde_json::json!(ANALYZER)),
        ]
        .into_iter()
        .collect();
        index.dir.add_part("bm25", BM25_DIR, meta)?;
        Ok(bm25)
    }

    /// Opens `INDEX/bm25` as built for this corpus, verified; never builds it (a query must
    /// not write to the index): an index without one gets an error saying how to add it.
    pub fn open_index(index: &Index) -> Result<Bm25> {
        let fingerprint = &index.dir.manifest.documents_fingerprint();
        if !index.dir.part_meta_is("bm25", "corpus", fingerprint) {
            return Err(Error::MissingPart {
                dir: index.dir.path().to_path_buf(),
                part: "BM25 index for these documents".into(),
                file: BM25_DIR.into(),
                hint: format!(
                    "add one with `genret add {} bm25`",
                    index.dir.path().display()
                ),
            });
        }
        let dir = index.dir.file(BM25_DIR);
        crate::storage::verify_dir(&dir)?;
        Bm25::open(&dir)
    }

    /// Builds a fresh index of `docs` into `dir` (replacing it): written to a temporary
    /// directory beside it and renamed into place, so a crash leaves no half index.
    pub fn build(docs: &[DocEntry], dir: &Path) -> Result<Bm25> {
        let (schema, text, pos) = schema();
        let tmp = PathBuf::from(format!("{}.tmp-{}", dir.display(), std::process::id()));
        crate::storage::write_dir(dir, &tmp, None, |tmp| {
            let index = TantivyIndex::create_in_dir(tmp, schema).map_err(terr)?;
            let mut writer = index
                .writer_with_num_threads::<TantivyDocument>(1, 100_000_000)
                .map_err(terr)?;
            let pb = crate::progress::bar(docs.len() as u64, "indexing BM25");
            for (i, d) in docs.iter().enumerate() {
                let mut doc = TantivyDocument::new();
                doc.add_text(text, format!("{}\n{}", d.title, d.text));
                doc.add_u64(pos, i as u64);
                writer.add_document(doc).map_err(terr)?;
                pb.inc(1);
            }
            writer.commit().map_err(terr)?;
            writer.wait_merging_threads().map_err(terr)?;
            pb.finish_and_clear();
            Ok(())
        })?;
        Bm25::open(dir)
    }

    /// Opens a BM25 index directory.
    pub fn open(dir: &Path) -> Result<Bm25> {
        let index = TantivyIndex::open_in_dir(dir).map_err(|e| Error::Corrupt {
            path: dir.to_path_buf(),
            message: format!("cannot open the BM25 index ({e}); delete it and rerun"),
        })?;
        let text = index.schema().get_field("text").map_err(terr)?;
        let analyzer = index
            .tokenizers()
            .get(ANALYZER)
            .ok_or_else(|| terr(format!("tokenizer {ANALYZER} is not registered")))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(terr)?;
        Ok(Bm25 {
            reader,
            text,
            analyzer,
        })
    }

    /// The best `k` documents for `query` with BM25's parameters `params`: (document number,
    /// score), best first, ties by document number. An empty or all-punctuation query returns
    /// nothing.
    pub fn search_with(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
    ) -> Result<Vec<(u32, f32)>> {
        let terms = self.terms(query);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let mut out = if params == Bm25Params::default() {
            self.tantivy_top(terms, k)?
        } else {
            self.scored_top(&terms, k, params)?
        };
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        Ok(out)
    }

    /// [`search_with`](Self::search_with) for many queries in parallel.
    pub fn search_all(
        &self,
        queries: &[&str],
        k: usize,
        params: Bm25Params,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        queries
            .par_iter()
            .map(|q| self.search_with(q, k, params))
            .collect()
    }

    /// The query's analysed terms, repeats kept.
    fn terms(&self, query: &str) -> Vec<Term> {
        let mut analyzer = self.analyzer.clone();
        let mut terms = Vec::new();
        let mut stream = analyzer.token_stream(query);
        while let Some(t) = stream.next() {
            terms.push(Term::from_field_text(self.text, &t.text));
        }
        terms
    }

    /// Tantivy's top `k` (default parameters), unsorted.
    fn tantivy_top(&self, terms: Vec<Term>, k: usize) -> Result<Vec<(u32, f32)>> {
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new_multiterms_query(terms);
        let top = searcher
            .search(&query, &TopDocs::with_limit(k))
            .map_err(terr)?;
        top.into_iter()
            .map(|(score, addr)| {
                let column = positions(searcher.segment_reader(addr.segment_ord))?;
                Ok((position(&column, addr.doc_id)?, score))
            })
            .collect()
    }

    /// Every document holding a term, scored with `params` as tantivy scores with its fixed
    /// ones (`idf * (1 + k1) * tf / (tf + k1 * (1 - b + b * dl / avgdl))`, summed over the
    /// query's terms), unsorted.
    fn scored_top(&self, terms: &[Term], k: usize, params: Bm25Params) -> Result<Vec<(u32, f32)>> {
        let searcher = self.reader.searcher();
        let segments = searcher.segment_readers();
        let docs: u64 = segments.iter().map(|s| u64::from(s.max_doc())).sum();
        let mut tokens = 0u64;
        for s in segments {
            tokens += s
                .inverted_index(self.text)
                .map_err(terr)?
                .total_num_tokens();
        }
        let avg = tokens as f32 / docs.max(1) as f32;
        // The length part of the denominator for each of tantivy's 256 field-norm codes.
        let norm: Vec<f32> = (0..=255u8)
            .map(|id| {
                let dl = FieldNormReader::id_to_fieldnorm(id) as f32;
                params.k1 * (1.0 - params.b + params.b * dl / avg)
            })
            .collect();
        let mut weights = Vec::with_capacity(terms.len());
        for t in terms {
            let df = searcher.doc_freq(t).map_err(terr)?;
            let x = ((docs - df) as f32 + 0.5) / (df as f32 + 0.5);
            weights.push((1.0 + x).ln() * (1.0 + params.k1));
        }
        let mut out = Vec::new();
        for s in segments {
            let inverted = s.inverted_index(self.text).map_err(terr)?;
            let lengths = s.get_fieldnorms_reader(self.text).map_err(terr)?;
            let mut scores = vec![0f32; s.max_doc() as usize];
            for (t, &w) in terms.iter().zip(&weights) {
                let Some(mut postings) = inverted
                    .read_postings(t, IndexRecordOption::WithFreqs)
                    .map_err(terr)?
                else {
                    continue;
                };
                while postings.doc() != TERMINATED {
                    let d = postings.doc();
                    let tf = postings.term_freq() as f32;
                    let norm = norm[lengths.fieldnorm_id(d) as usize];
                    scores[d as usize] += w * (tf / (tf + norm));
                    postings.advance();
                }
            }
            let column = positions(s)?;
            for (d, &score) in scores.iter().enumerate() {
                if score > 0.0 {
                    out.push((position(&column, d as u32)?, score));
                }
            }
        }
        let by = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if out.len() > k {
            out.select_nth_unstable_by(k, by);
            out.truncate(k);
        }
        Ok(out)
    }
}

/// A segment's column of document numbers (the `pos` fast field).
fn positions(segment: &tantivy::SegmentReader) -> Result<tantivy::columnar::Column<u64>> {
    segment.fast_fields().u64("pos").map_err(terr)
}

/// The document number of a segment's document `doc`.
fn position(column: &tantivy::columnar::Column<u64>, doc: u32) -> Result<u32> {
    column
        .first(doc)
        .map(|p| p as u32)
        .ok_or_else(|| terr("a document lacks its position"))
}

impl Retriever for Bm25 {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let clock = std::time::Instant::now();
        let ranked = self.search_all(queries, options.k, options.bm25)?;
        Ok(Retrieval::scored(ranked, clock.elapsed()))
    }
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqs);
    let text = builder.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(indexing),
    );
    let pos = builder.add_u64_field("pos", FAST);
    (builder.build(), text, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> DocEntry {
        DocEntry::of_text(text)
    }

    /// Documents of every length, so that many of tantivy's field-norm codes occur.
    fn corpus() -> Vec<DocEntry> {
        let words = [
            "flow", "boundary", "layer", "heat", "transfer", "wing", "shock", "plate",
        ];
        (0..120)
            .map(|i| {
                let len = 3 + (i * 7) % 90;
                let text: Vec<&str> = (0..len).map(|j| words[(i * 3 + j * j) % 8]).collect();
                doc(&text.join(" "))
            })
            .collect()
    }

    #[test]
    fn own_scoring_at_the_defaults_equals_tantivys() {
        let dir = tempfile::tempdir().unwrap();
        let bm25 = Bm25::build(&corpus(), &dir.path().join("bm25")).unwrap();
        for q in [
            "flow",
            "boundary layer flow",
            "heat heat transfer",
            "shock wing plate",
        ] {
            let terms = bm25.terms(q);
            let sorted = |mut v: Vec<(u32, f32)>| {
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v
            };
            let theirs = sorted(bm25.tantivy_top(terms.clone(), 1000).unwrap());
            let ours = sorted(
                bm25.scored_top(&terms, 1000, Bm25Params::default())
                    .unwrap(),
            );
            assert_eq!(theirs.len(), ours.len(), "{q}");
            for (a, b) in theirs.iter().zip(&ours) {
                assert!((a.1 - b.1).abs() <= 1e-5 * a.1, "{q}: {a:?} {b:?}");
            }
            // The same ranking, up to documents whose scores differ by rounding.
            let rank = |v: &[(u32, f32)]| {
                v.iter()
                    .map(|h| (h.0, (h.1 * 1e4).round() as i64))
                    .collect::<std::collections::BTreeSet<_>>()
            };
            assert_eq!(rank(&theirs), rank(&ours), "{q}");
        }
    }

    #[test]
    fn k1_and_b_do_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let docs = vec![
            doc("flow"),
            doc("flow wing wing wing wing wing wing wing wing wing wing wing"),
            doc("flow flow flow"),
            doc("heat"),
        ];
        let bm25 = Bm25::build(&docs, &dir.path().join("bm25")).unwrap();
        let score = |k1, b, d: u32| -> f32 {
            let hits = bm25
                .search_with("flow", 10, Bm25Params::new(k1, b).unwrap())
                .unwrap();
            hits.iter().find(|h| h.0 == d).map(|h| h.1).unwrap()
        };
        // b = 0: a document's length does not matter; b = 1: the short one wins.
        assert_eq!(score(1.2, 0.0, 0), score(1.2, 0.0, 1));
        assert!(score(1.2, 1.0, 0) > score(1.2, 1.0, 1));
        // k1 = 0: only presence counts; a large k1: repeats count almost linearly.
        assert_eq!(score(0.0, 0.5, 0), score(0.0, 0.5, 2));
        assert!(score(100.0, 0.0, 2) > 2.9 * score(100.0, 0.0, 0));
        // A document without the term is never returned.
        let hits = bm25
            .search_with("flow", 10, Bm25Params::new(0.9, 0.4).unwrap())
            .unwrap();
        assert_eq!(hits.len(), 3);
        for bad in [(-0.1, 0.5), (1.2, 1.5), (f32::NAN, 0.5), (1.2, f32::NAN)] {
            let err = Bm25Params::new(bad.0, bad.1).unwrap_err().to_string();
            assert!(err.contains("BM25's"), "{err}");
        }
    }
}
