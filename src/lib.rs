//! # genret: generative retrieval in Rust
//!
//! A sequence-to-sequence model *writes* what it retrieves, and every step is constrained so
//! that only strings that exist come out: n-grams of the corpus (SEAL style, constrained by a
//! token-level FM-index) or document identifiers (DSI style, constrained by a prefix trie).
//!
//! This crate is the library behind the `genret` command. The FM-index is the core: given a
//! prefix, it says which tokens may follow and how often.
//!
//! ```
//! use genret::fmindex::{BuildOptions, FmIndex};
//!
//! // Three tiny documents as token ids (a tokenizer would produce these from text).
//! let docs = vec![vec![5, 6, 7], vec![5, 6, 8, 5], vec![9]];
//! let index = FmIndex::build(&docs, 10, BuildOptions::default()).unwrap();
//!
//! // "5 6" occurs twice, in two documents.
//! let range = index.range(&[5, 6]);
//! assert_eq!(range.count(), 2);
//! assert_eq!(index.doc_frequency(&[5, 6]), 2);
//!
//! // What may follow "5 6"? Token 7 once and token 8 once, each with its extended range.
//! let next: Vec<(u32, usize)> = index
//!     .continuations(range)
//!     .iter()
//!     .map(|c| (c.token, c.count))
//!     .collect();
//! assert_eq!(next, vec![(7, 1), (8, 1)]);
//!
//! // n-grams never cross a document boundary: "7 5" is not in the corpus.
//! assert_eq!(index.count(&[7, 5]), 0);
//!
//! // Documents can be read back from the index alone.
//! assert_eq!(index.extract(1).unwrap(), vec![5, 6, 8, 5]);
//! ```
//!
//! The whole flow, in memory and in a temporary directory: a corpus is indexed (tokenizer,
//! FM-index), a model writes n-grams under the FM-index's constraint, and every string it
//! writes occurs in the corpus. (The model here is untrained; `train::train` teaches one, and
//! `seal::Seal` adds the scoring that ranks documents from the n-grams.)
//!
//! ```
//! use candle_core::Device;
//! use genret::corpus::{Corpus, Document};
//! use genret::decode::{BeamOptions, FmConstraint, beam_search};
//! use genret::index::{BuildConfig, TokenizerSource, build};
//! use genret::model::{Config, Preset, T5ForConditionalGeneration, init_params};
//! use genret::tokenize::TrainConfig;
//!
//! # fn main() -> genret::Result<()> {
//! let texts = [
//!     "the boundary layer on a flat plate becomes turbulent downstream",
//!     "supersonic flow over a wedge produces an oblique shock wave",
//!     "heat transfer in the laminar boundary layer of a cone",
//! ];
//! let docs = texts.iter().enumerate().map(|(i, t)| Document {
//!     id: format!("d{i}"),
//!     title: String::new(),
//!     text: t.to_string(),
//! });
//! let corpus = Corpus::from_docs(docs.collect())?;
//! let dir = tempfile::tempdir().unwrap();
//! let config = BuildConfig {
//!     tokenizer: TokenizerSource::Train(TrainConfig { vocab_size: 300, ..TrainConfig::default() }),
//!     ..BuildConfig::default()
//! };
//! let index = build(&corpus, &dir.path().join("idx"), &config)?;
//!
//! let model_config = Config::preset(Preset::Tiny, index.docids()?.model_vocab() as usize);
//! let model = T5ForConditionalGeneration::new(
//!     &model_config,
//!     &init_params(&model_config, 7, &Device::Cpu)?,
//! )?;
//! let sp = index.tokenizer.specials();
//! let mut query = vec![sp.query];
//! query.extend(index.tokenizer.encode("boundary layer flow")?);
//! let banned = vec![sp.pad, sp.eos, sp.unk, sp.query, sp.index, sp.ngram, sp.docid];
//! let constraint = FmConstraint::new(&index.fm, banned, 1);
//! let options = BeamOptions { beam: 5, max_len: 4, history: 5 };
//! let (decoded, _) = beam_search(
//!     &model, &[query], &[sp.ngram], &constraint, &index.fm.full_range(), &options,
//! )?;
//! let written = &decoded[0].history;
//! assert!(!written.is_empty());
//! for ngram in written {
//!     // Constrained decoding: whatever the weights, only the corpus's n-grams come out.
//!     assert!(index.fm.count(&ngram.tokens) > 0);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concept each (see `docs/ARCHITECTURE.md`):
//! - [`corpus`]: BEIR / TSV / TREC readers with file:line errors;
//! - [`tokenize`]: train or load an HF tokenizer with genret's special tokens;
//! - [`fmindex`]: the token-level FM-index with continuations;
//! - [`docid`]: document identifier schemes and their prefix trie;
//! - [`index`]: the on-disk index directory, manifest, checksummed array files;
//! - [`model`]: the T5 encoder-decoder with a reorderable KV cache; [`train`]: teaching it;
//! - [`decode`]: batched constrained beam search; [`score`]: SEAL and DSI ranking;
//! - [`retrieve`]: the one interface of every method (SEAL in [`seal`], DSI in [`dsi`], BM25
//!   and dense retrieval in [`baseline`]) and their fusion;
//! - [`search`]: query in, ranked documents out; [`serve`]: the same over HTTP;
//! - [`storage`]: atomic writes, checksums, sealed directories, the writer lock;
//! - [`error`]: the library's error type.

pub mod baseline;
pub mod bench;
pub mod content;
pub mod corpus;
pub mod decode;
pub mod device;
pub mod docid;
pub mod dsi;
pub mod error;
pub mod eval;
pub mod fmindex;
pub mod index;
pub mod model;
pub mod progress;
pub mod retrieve;
pub mod score;
pub mod seal;
pub mod search;
pub mod serve;
mod simd;
pub mod stem;
pub mod storage;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};

/// The README's Rust code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
