//! baseline: here is a query, what would the methods generative retrieval must beat return?
//!
//! - [`bm25`]: BM25 with tantivy (English stemming), index stored in the index directory;
//! - [`dense`]: a BERT-family sentence encoder (all-MiniLM-L6-v2 by default) in candle, mean
//!   pooling, L2 normalisation, exact cosine search; embeddings cached in the index directory.

pub mod bm25;
pub mod dense;
