//! tokenize: here is text, give me the token ids the model and the FM-index share.
//!
//! A thin layer over HF `tokenizers`. genret trains a byte-level BPE (default) or Unigram
//! tokenizer on the corpus, or takes an existing `tokenizer.json` (T5, BERT, ...) as is. Either
//! way the tokenizer carries genret's special tokens ([`SPECIAL_TOKENS`]); a loaded tokenizer
//! that lacks some gets them appended as added tokens.
//!
//! Trained tokenizers lowercase by default (retrieval rarely gains from case, and a model
//! learned from a small corpus gains from the smaller vocabulary); with `lowercase: false`,
//! `decode(encode(text)) == text` for any text. With lowercasing, the round trip holds for
//! lowercase text.

mod fast;

use std::path::Path;
use std::sync::Arc;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::unigram::{Unigram, UnigramTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{Lowercase, NFC, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// genret's special tokens, in id order for a trained tokenizer (ids 0..9).
///
/// `<pad>` pads batches and starts decoding (as in T5); `</s>` ends every sequence; `<unk>` is
/// never produced by a byte-level tokenizer but kept for loaded ones. The rest mark what a
/// sequence is: `<title>`..`</title>` surround a title inside an indexed document;
/// `<query>` / `<index>` prefix encoder inputs; `<ngram>` / `<docid>` are forced first decoder
/// tokens selecting what the model writes.
pub const SPECIAL_TOKENS: [&str; 9] = [
    "<pad>", "</s>", "<unk>", "<title>", "</title>", "<query>", "<index>", "<ngram>", "<docid>",
];

/// Tokenizer model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    Bpe,
    Unigram,
}

/// How to train a tokenizer.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub kind: TokenizerKind,
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    pub lowercase: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            kind: TokenizerKind::Bpe,
            vocab_size: 16_000,
            lowercase: true,
        }
    }
}

/// Ids of the special tokens in a given tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub eos: u32,
    pub unk: u32,
    pub title_start: u32,
    pub title_end: u32,
    pub query: u32,
    pub index: u32,
    pub ngram: u32,
    pub docid: u32,
}

/// A tokenizer with genret's special tokens resolved.
#[derive(Clone)]
pub struct GenretTokenizer {
    inner: Tokenizer,
    specials: SpecialIds,
    /// The same ids without HF's general pipeline, where this tokenizer allows it.
    fast: Option<Arc<fast::FastByteLevel>>,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Alternative spellings of the first three special tokens in common tokenizers.
const ALIASES: [&[&str]; 3] = [
    &["<pad>", "[PAD]"],
    &["</s>", "[SEP]", "<|endoftext|>"],
    &["<unk>", "[UNK]"],
];

impl GenretTokenizer {
    /// Trains a tokenizer on `texts`. Deterministic for the same texts and config.
    ///
    /// Cost: BPE is near-linear in the corpus size (seconds for tens of MB); Unigram is several
    /// times slower.
    pub fn train<I, S>(config: &TrainConfig, texts: I) -> Result<GenretTokenizer>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let (model, mut trainer): (ModelWrapper, TrainerWrapper) = match config.kind {
            TokenizerKind::Bpe => (
                BPE::default().into(),
                BpeTrainerBuilder::new()
                    .show_progress(false)
                    .vocab_size(config.vocab_size)
                    .min_frequency(2)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build()
                    .into(),
            ),
            TokenizerKind::Unigram => (
                Unigram::default().into(),
                UnigramTrainerBuilder::default()
                    .show_progress(false)
                    .vocab_size(config.vocab_size as u32)
                    .special_tokens(specials)
                    .unk_token(Some("<unk>".to_string()))
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build()
                    .map_err(tk_err)?
                    .into(),
            ),
        };
        let mut tokenizer = Tokenizer::new(model);
        let mut normalizers: Vec<NormalizerWrapper> = vec![NFC.into()];
        if config.lowercase {
            normalizers.push(Lowercase.into());
        }
        tokenizer.with_normalizer(Some(Sequence::new(normalizers)));
        tokenizer.with_pre_tokenizer(Some(ByteLevel::default()));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        tokenizer.train(&mut trainer, texts).map_err(tk_err)?;
        Self::from_tokenizer(tokenizer)
    }

    /// Loads a `tokenizer.json` (genret's own, or any HF one such as T5's or BERT's).
    pub fn from_file(path: impl AsRef<Path>) -> Result<GenretTokenizer> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such tokenizer file"),
            ));
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a tokenizer the tokenizers library can read ({e}); give an HF \
                 tokenizer.json, or rebuild the index if it is the index's own",
                path.display()
            ))
        })?;
        Self::from_tokenizer(tokenizer)
    }

    /// Wraps an HF tokenizer, adding whichever of genret's special tokens it lacks.
    pub fn from_tokenizer(mut inner: Tokenizer) -> Result<GenretTokenizer> {
        // Loaded tokenizers may add [CLS]/[SEP] or </s> themselves; genret adds what it needs.
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        inner.with_truncation(None).map_err(tk_err)?;
        inner.with_padding(None);
        let mut ids = [0u32; SPECIAL_TOKENS.len()];
        for (i, name) in SPECIAL_TOKENS.iter().enumerate() {
            let aliases: &[&str] = ALIASES.get(i).copied().unwrap_or(&[]);
            let found = std::iter::once(*name)
                .chain(aliases.iter().copied())
                .find_map(|t| inner.token_to_id(t));
            ids[i] = match found {
                Some(id) => id,
                None => {
                    inner.add_special_tokens(&[AddedToken::from(*name, true)]);
                    inner
                        .token_to_id(name)
                        .ok_or_else(|| tk_err(format!("could not add special token {name}")))?
                }
            };
        }
        // Same order as SPECIAL_TOKENS.
        let specials = SpecialIds {
            pad: ids[0],
            eos: ids[1],
            unk: ids[2],
            title_start: ids[3],
            title_end: ids[4],
            query: ids[5],
            index: ids[6],
            ngram: ids[7],
            docid: ids[8],
        };
        let fast = fast::FastByteLevel::of(&inner).map(Arc::new);
        Ok(GenretTokenizer {
            inner,
            specials,
            fast,
        })
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let json = self.inner.to_string(true).map_err(tk_err)?;
        crate::storage::write_atomic(path.as_ref(), json.as_bytes())
    }

    /// Token ids of `text`, without special tokens. Cost: linear in the text length; a
    /// tokenizer genret trained encodes ASCII text several times faster than HF's pipeline
    /// (the same ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(ids) = self.fast.as_ref().and_then(|f| f.encode(&self.inner, text)) {
            return Ok(ids);
        }
        let enc = self.inner.encode(text, false).map_err(tk_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`. Special tokens are kept when `keep_special`; the single leading space a
    /// byte-level tokenizer adds to the first word is removed.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        let text = self.inner.decode(ids, !keep_special).map_err(tk_err)?;
        Ok(match text.strip_prefix(' ') {
            Some(rest) if self.adds_prefix_space() => rest.to_string(),
            _ => text,
        })
    }

    fn adds_prefix_space(&self) -> bool {
        matches!(
            self.inner.get_pre_tokenizer(),
            Some(tokenizers::PreTokenizerWrapper::ByteLevel(b)) if b.add_prefix_space
        )
    }

    /// The string form of one token id, if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens: every id is `< vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// The underlying HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

impl std::fmt::Debug for GenretTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenretTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .finish()
    }
}
