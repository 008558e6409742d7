//! baseline: here is a query, what would the methods generative retrieval must beat return?
//!
//! - [`bm25`]: BM25 with tantivy (English stemming), index stored in the index directory;
//! - [`dense`]: a BERT-family sentence encoder (all-MiniLM-L6-v2 by default) in candle, mean
//!   pooling, L2 normalisation, exact cosine search; embeddings cached in the index directory.

pub mod bm25;
pub mod dense;

use std::path::PathBuf;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::index::Index;

/// Builds a baseline's part of `index` (`"bm25"`, or `"dense"`: every document embedded by
/// `dense_model`) unless it is already there for these documents and this model. Returns
/// whether it was built now, and where it lies. Queries only read these parts. The dense
/// encoder runs on `device`.
pub fn add(
    index: &mut Index,
    part: &str,
    dense_model: &str,
    device: &Device,
) -> Result<(bool, PathBuf)> {
    match part {
        "bm25" => {
            let fingerprint = index.dir.manifest.documents_fingerprint();
            let fresh = !index.dir.part_meta_is("bm25", "corpus", &fingerprint);
            bm25::Bm25::open_or_build(index)?;
            Ok((fresh, index.dir.file(bm25::BM25_DIR)))
        }
        "dense" => {
            let encoder = dense::DenseEncoder::load(dense_model, device)?;
            let fresh = !dense::DenseIndex::is_cached(index, &encoder);
            dense::DenseIndex::open_or_build(index, &encoder)?;
            Ok((fresh, index.dir.file(dense::DENSE_FILE)))
        }
        other => Err(Error::UnknownName {
            what: "part",
            got: other.to_string(),
            expected: "bm25 or dense".into(),
        }),
    }
}
