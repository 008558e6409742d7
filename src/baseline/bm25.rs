//! BM25 over the index's documents with tantivy: one field holding `title` + `text`, analysed
//! by tantivy's `en_stem` (Unicode word split, tokens over 40 bytes dropped, lowercase,
//! Snowball English stemmer; no stopword list), scored by tantivy's BM25 (Lucene's formula,
//! k1 = 1.2, b = 0.75; fixed by tantivy). A query is the disjunction of its analysed terms
//! (a repeated term counts twice, as Lucene's query parser does). Stored as `INDEX/bm25/`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tantivy::collector::TopDocs;
use tantivy::query::BooleanQuery;
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index as TantivyIndex, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Error, Result};
use crate::index::{DocEntry, Index};
use crate::retrieve::{Retrieval, Retriever, SearchOptions};

/// Directory of the BM25 index inside an index directory.
pub const BM25_DIR: &str = "bm25";
const ANALYZER: &str = "en_stem";
/// BM25 parameters tantivy uses (not configurable there).
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
        let fingerprint = index.dir.manifest.corpus.fingerprint.clone();
        let built = index.dir.part_meta_is("bm25", "corpus", &fingerprint);
        let dir = index.dir.file(BM25_DIR);
        // A derived cache: rebuilt from the verified documents when damaged, not refused.
        if built {
            match crate::storage::verify_dir(&dir).and_then(|_| Bm25::open(&dir)) {
                Ok(b) => return Ok(b),
                Err(e) => tracing::warn!("rebuilding the BM25 index: {e}"),
            }
        }
        let bm25 = Bm25::build(&index.docs, &dir)?;
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
        let fingerprint = &index.dir.manifest.corpus.fingerprint;
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

    /// The best `k` documents for `query`: (document number, score), best first, ties by
    /// document number. An empty or all-punctuation query returns nothing.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<(u32, f32)>> {
        let mut analyzer = self.analyzer.clone();
        let mut terms = Vec::new();
        let mut stream = analyzer.token_stream(query);
        while let Some(t) = stream.next() {
            terms.push(Term::from_field_text(self.text, &t.text));
        }
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new_multiterms_query(terms);
        let top = searcher
            .search(&query, &TopDocs::with_limit(k))
            .map_err(terr)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let column = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("pos")
                .map_err(terr)?;
            let pos = column
                .first(addr.doc_id)
                .ok_or_else(|| terr("a document lacks its position"))?;
            out.push((pos as u32, score));
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// [`search`](Self::search) for many queries in parallel.
    pub fn search_all(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        queries.par_iter().map(|q| self.search(q, k)).collect()
    }
}

impl Retriever for Bm25 {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let clock = std::time::Instant::now();
        let ranked = self.search_all(queries, options.k)?;
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
