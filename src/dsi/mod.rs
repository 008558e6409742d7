//! dsi: here is a query, which document does the model name, and how does a model learn to
//! name them?
//!
//! DSI-style retrieval (Tay et al., "Transformer Memory as a Differentiable Search Index",
//! NeurIPS 2022) has a model of its own, `INDEX/dsi/`, apart from SEAL's `INDEX/model`:
//!
//! - **Encoder**: a frozen sentence encoder (all-MiniLM-L6-v2 by default, the dense
//!   baseline's), stored under `bert.` in the model's safetensors as in the warm start of
//!   [`crate::model`]. It reads queries with its own tokenizer (`INDEX/dsi/tokenizer.json`),
//!   independent of the index's. Frozen, its outputs for the training sources are computed
//!   once ([`TrainingSet`]), so a training step costs the decoder's work alone.
//! - **Decoder**: a small T5 decoder (one layer by default) that writes a docid under the
//!   docid trie ([`crate::decode::TrieConstraint`]).
//! - **Docids** ([`DocidChoice::Auto`]): atomic, one output token per document, up to
//!   [`ATOMIC_MAX_DOCS`] documents (the output layer then holds a row per document);
//!   semantic beyond, hierarchical k-means over the encoder's document vectors (DSI, NCI).
//! - **Training data**, DSI-QG style (Zhuang et al. 2022), without a query generator: each
//!   document's title and keyword sets ([`keyword_queries`]) and its whole text in
//!   overlapping chunks ([`chunks`]), every epoch reading a fresh window of each chunk
//!   ([`TrainingSet::epoch_views`]); plus judged training queries when given.
//! - **Start** ([`DsiOptions::dense_init`]): an atomic docid's output row is its document's
//!   dense embedding times a temperature, and the decoder starts as mean pooling over the
//!   encoder's states (attention with zero queries, identity values, zero input embeddings and
//!   residual branches elsewhere), so a fresh model ranks documents as dense retrieval does,
//!   and training on the corpus's pseudo-queries adapts both sides to it.
//!
//! `training.rs` holds how the model learns (the training set, the cached encoder outputs,
//! indexing recall); this file the options, the docids, the model's start, and retrieval.
//!
//! Costs (docs/BENCHMARKS.md): training = the frozen encoder over every pseudo-query once,
//! then decoder steps; search = one encoder pass per query and `docid length + 1` decoder
//! steps; the trie walk is a few binary searches per step.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};

use crate::decode::{BeamOptions, DecodeTimes, TrieConstraint, beam_search};
use crate::docid::{DocIds, Scheme, SemanticOptions};
use crate::error::{Error, Result, cerr};
use crate::index::Index;
use crate::model::{self, Config, Params, T5ForConditionalGeneration};
use crate::retrieve::{Answer, Retrieval, Retrieved, Retriever, SearchOptions, SearchTimes};
use crate::score::dsi_rank;

mod training;

pub use training::{Recall, StateCache, TrainingSet, View, chunks, keyword_queries};

/// The DSI model's directory inside an index.
pub const DSI_DIR: &str = "dsi";
/// Files of a DSI model directory besides `config.json` and `model.safetensors`.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const DOCIDS_FILE: &str = "docids.bin";
/// Token ids of the DSI decoder's specials; docid symbols follow them.
pub const PAD: u32 = 0;
pub const EOS: u32 = 1;
const SPECIALS: u32 = 2;
/// Largest corpus that gets atomic docids under [`DocidChoice::Auto`]: the output layer is
/// then `docs x d_model` floats (1.5 GiB at 1M documents and width 384).
pub const ATOMIC_MAX_DOCS: usize = 100_000;
/// Longest source in encoder tokens: pseudo-queries are cut here, queries at search
/// (sentence-transformers' limit for all-MiniLM-L6-v2) at [`MAX_QUERY_TOKENS`].
pub const MAX_SOURCE_TOKENS: usize = 64;
pub const MAX_QUERY_TOKENS: usize = 256;
/// Documents probed for indexing recall during training.
pub(super) const PROBE_DOCS: usize = 500;
/// Words of an indexing-recall probe window.
pub const PROBE_WORDS: usize = 16;
pub(super) const ENCODE_BATCH: usize = 64;
/// Chunks of at most this many tokens are read whole ([`TrainingSet::epoch_views`]).
pub(super) const MIN_CROP: usize = 4;

/// One query's documents, best first: (document number, log-prob of its docid).
pub type Ranked = Vec<(u32, f32)>;

/// How a DSI model names documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DocidChoice {
    /// Atomic up to [`ATOMIC_MAX_DOCS`] documents, semantic beyond.
    #[default]
    Auto,
    Atomic,
    Semantic,
}

impl std::str::FromStr for DocidChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DocidChoice::Auto),
            "atomic" => Ok(DocidChoice::Atomic),
            "semantic" => Ok(DocidChoice::Semantic),
            other => Err(format!(
                "unknown DSI docids {other:?}: use auto, atomic or semantic"
            )),
        }
    }
}

/// DSI's recipe: what `train::train` needs beyond the optimiser's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DsiOptions {
    pub docids: DocidChoice,
    /// Encoder tokens of a document chunk: a document's text is read in chunks of this many
    /// tokens at half this stride ([`chunks`]), so every window of up to half as many tokens
    /// lies inside one.
    pub chunk_tokens: usize,
    /// Keyword-set pseudo-queries per document ([`keyword_queries`]).
    pub keyword_queries: usize,
    pub decoder_layers: usize,
    /// A trainable vector per encoder token added to the frozen encoder's output
    /// ([`crate::model::Config::lexical_memory`]).
    #[serde(default)]
    pub lexical_memory: bool,
    /// Start from dense retrieval (see the module docs); off: HF's random initialisation.
    pub dense_init: bool,
    /// Scale of the dense start's logits (a cosine of 1 gives this logit): the temperature
    /// sentence-transformers trains all-MiniLM-L6-v2's contrastive loss with (scale 20).
    pub temperature: f64,
}

impl Default for DsiOptions {
    fn default() -> Self {
        DsiOptions {
            docids: DocidChoice::Auto,
            chunk_tokens: 32,
            keyword_queries: 5,
            decoder_layers: 1,
            lexical_memory: true,
            dense_init: true,
            temperature: 20.0,
        }
    }
}

impl DsiOptions {
    /// The scheme this recipe gives a corpus of `docs` documents.
    pub fn scheme(&self, docs: usize) -> Scheme {
        match self.docids {
            DocidChoice::Atomic => Scheme::Atomic,
            DocidChoice::Semantic => Scheme::Semantic,
            DocidChoice::Auto if docs <= ATOMIC_MAX_DOCS => Scheme::Atomic,
            DocidChoice::Auto => Scheme::Semantic,
        }
    }
}

/// The encoder's tokenizer as DSI reads sources with it: its special tokens added, cut at
/// `max_tokens`, no padding (batches are padded with a mask).
pub fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    tok.with_truncation(Some(TruncationParams {
        max_length: max_tokens,
        ..TruncationParams::default()
    }))
    .map_err(|e| Error::Tokenizer(e.to_string()))?;
    tok.with_padding(None);
    Ok(tok)
}

/// The special tokens the tokenizer puts before and after a text ([CLS] and [SEP]).
pub(super) fn special_tokens(tok: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let enc = |specials| {
        tok.encode("x", specials)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    };
    let (with, without) = (enc(true)?, enc(false)?);
    let head = (0..=with.len().saturating_sub(without.len()))
        .find(|&h| with[h..].starts_with(&without))
        .unwrap_or(0);
    let tail = (head + without.len()).min(with.len());
    Ok((with[..head].to_vec(), with[tail..].to_vec()))
}

/// The distinct encoder tokens of the index's documents (titles and texts), sorted: those a
/// query can share with a document.
pub fn corpus_tokens(index: &Index, tok: &Tokenizer) -> Result<Vec<u32>> {
    let texts: Vec<String> = index
        .docs
        .all()?
        .iter()
        .map(|d| format!("{} {}", d.title, d.text))
        .collect();
    let mut whole = tok.clone();
    whole
        .with_truncation(None)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let set: std::collections::BTreeSet<u32> = whole
        .encode_batch(refs, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .iter()
        .flat_map(|e| e.get_ids().to_vec())
        .collect();
    Ok(set.into_iter().collect())
}

/// Token ids of `texts` as the encoder reads them.
pub fn encode_texts(tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    Ok(tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .iter()
        .map(|e| e.get_ids().to_vec())
        .collect())
}

/// Docids of the index's documents under `scheme`, written as DSI decoder tokens
/// (`SPECIALS + symbol`). `vectors` (row-major, `dim` wide) cluster semantic docids.
pub fn build_docids(
    index: &Index,
    scheme: Scheme,
    vectors: &[f32],
    dim: usize,
    seed: u64,
) -> Result<DocIds> {
    let n = index.docs.len();
    match scheme {
        Scheme::Atomic => {
            let seqs: Vec<Vec<u32>> = (0..n as u32).map(|d| vec![d]).collect();
            DocIds::from_sequences(Scheme::Atomic, SPECIALS, n.max(1) as u32, &seqs)
        }
        Scheme::Semantic => {
            let options = SemanticOptions {
                seed,
                ..SemanticOptions::default()
            };
            let ids = index.docs.ids()?;
            let no_suffix = |_: usize| Ok(Vec::new());
            let input = crate::docid::DocidInput {
                ids: &ids,
                titles: &[],
                texts: &Vec::<Vec<u32>>::new(),
                id_suffix: &no_suffix,
                vocab: SPECIALS,
            };
            DocIds::build(Scheme::Semantic, &input, &options, Some((vectors, dim)))
        }
        other => Err(Error::InvalidInput(format!(
            "DSI models use atomic or semantic docids, not {}",
            other.name()
        ))),
    }
}

/// A fresh DSI model: the frozen encoder in `encoder_dir` under a decoder of
/// `options.decoder_layers` layers at the encoder's width, writing `docids`. With
/// `options.dense_init` it starts as dense retrieval (module docs); `doc_vectors` (unit rows,
/// one per document) are the atomic docids' output rows. `corpus_tokens` (sorted, distinct
/// encoder token ids of the documents) get the lexical memory's rows.
pub fn init_model(
    encoder_dir: &Path,
    options: &DsiOptions,
    docids: &DocIds,
    doc_vectors: &[f32],
    corpus_tokens: Vec<u32>,
    seed: u64,
    device: &Device,
) -> Result<(Config, Params)> {
    let bert = model::read_bert_config(encoder_dir)?;
    let h = bert.hidden_size;
    let heads = bert.num_attention_heads;
    if heads == 0 || !h.is_multiple_of(heads) || options.decoder_layers == 0 {
        return Err(Error::InvalidInput(format!(
            "{}: hidden size {h} is not a multiple of its {heads} heads, or no decoder layers",
            encoder_dir.display()
        )));
    }
    let mut c = Config::preset(model::Preset::Small, docids.model_vocab() as usize);
    c.d_model = h;
    c.d_kv = h / heads;
    c.num_heads = heads;
    c.d_ff = bert.intermediate_size;
    c.num_layers = 0;
    c.num_decoder_layers = Some(options.decoder_layers);
    c.tie_word_embeddings = false;
    c.pad_token_id = PAD;
    c.eos_token_id = EOS;
    c.decoder_start_token_id = PAD;
    c.bert_encoder = Some(bert.clone());
    c.lexical_memory = options.lexical_memory;
    if options.lexical_memory {
        c.lexical_tokens = Some(corpus_tokens);
    }
    let params = model::init_params(&c, seed, device)?;
    model::load_bert_weights(&params, encoder_dir, &bert)?;
    if options.dense_init {
        dense_start(&c, &params, options, docids, doc_vectors).map_err(cerr)?;
    }
    Ok((c, params))
}

/// Sets the dense-retrieval start (module docs) on fresh parameters.
fn dense_start(
    c: &Config,
    params: &Params,
    options: &DsiOptions,
    docids: &DocIds,
    doc_vectors: &[f32],
) -> candle_core::Result<()> {
    let h = c.d_model;
    let dev = params["shared.weight"].device().clone();
    let set_zero = |name: &str| -> candle_core::Result<()> {
        let v = &params[name];
        v.set(&v.zeros_like()?)
    };
    let eye = Tensor::eye(h, candle_core::DType::F32, &dev)?;
    for i in 0..c.decoder_layers() {
        let p = format!("decoder.block.{i}.layer");
        set_zero(&format!("{p}.0.SelfAttention.o.weight"))?;
        set_zero(&format!("{p}.2.DenseReluDense.wo.weight"))?;
        if i == 0 {
            // Zero queries attend evenly: the first layer adds the mean of the encoder states.
            set_zero(&format!("{p}.1.EncDecAttention.q.weight"))?;
            params[&format!("{p}.1.EncDecAttention.v.weight")].set(&eye)?;
            params[&format!("{p}.1.EncDecAttention.o.weight")].set(&eye)?;
        } else {
            set_zero(&format!("{p}.1.EncDecAttention.o.weight"))?;
        }
    }
    // Input tokens add nothing at first: every step's state is the mean, which the final norm
    // scales to length sqrt(h), so a docid's later steps (EOS) cost every document alike.
    set_zero("shared.weight")?;
    let mut head = vec![0f32; c.vocab_size * h];
    if docids.scheme() == Scheme::Atomic && doc_vectors.len() == docids.len() * h {
        let scale = (options.temperature / (h as f64).sqrt()) as f32;
        for d in 0..docids.len() as u32 {
            let row = docids.tokens(d)[0] as usize;
            let src = &doc_vectors[d as usize * h..(d as usize + 1) * h];
            for (o, &x) in head[row * h..(row + 1) * h].iter_mut().zip(src) {
                *o = x * scale;
            }
        }
    } else {
        // Semantic symbols keep their random rows; the specials start at logit 0.
        let lm = params["lm_head.weight"]
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?;
        head[SPECIALS as usize * h..].copy_from_slice(&lm[SPECIALS as usize * h..]);
    }
    params["lm_head.weight"].set(&Tensor::from_vec(head, (c.vocab_size, h), &dev)?)
}

/// A trained DSI model with what it reads and writes: ready to answer queries.
pub struct DsiModel {
    pub model: T5ForConditionalGeneration,
    pub tokenizer: Tokenizer,
    pub docids: DocIds,
    /// The documents' ids, which name atomic docids to people (empty: atomic docids are
    /// shown by number).
    pub ids: Vec<String>,
}

impl DsiModel {
    /// Loads a DSI model directory (`config.json`, `model.safetensors`, `tokenizer.json`,
    /// `docids.bin`) for an index of `docs` documents.
    pub fn load_dir(dir: &Path, docs: usize, device: &Device) -> Result<DsiModel> {
        DsiModel::load_naming(dir, docs..=docs, device)
    }

    /// [`DsiModel::load_dir`] for a model whose docids name `named` documents.
    fn load_naming(
        dir: &Path,
        named: std::ops::RangeInclusive<usize>,
        device: &Device,
    ) -> Result<DsiModel> {
        let (config, params) = model::load(dir, device)?;
        let model = T5ForConditionalGeneration::new(&config, &params)?
            .for_inference(crate::device::precision())?;
        let tokenizer = load_tokenizer(&dir.join(TOKENIZER_FILE), MAX_QUERY_TOKENS)?;
        let path = dir.join(DOCIDS_FILE);
        let docids = DocIds::load(&path)?;
        let docs = *named.end();
        if !named.contains(&docids.len()) || docids.model_vocab() as usize > config.vocab_size {
            return Err(Error::Corrupt {
                path,
                message: format!(
                    "{} docids for an index of {docs} documents, or beyond the model's \
                     vocabulary of {}: retrain with `genret train INDEX --dsi`",
                    docids.len(),
                    config.vocab_size
                ),
            });
        }
        Ok(DsiModel {
            model,
            tokenizer,
            docids,
            ids: Vec::new(),
        })
    }

    /// Loads the index's DSI model (`INDEX/dsi/model`).
    pub fn load(index: &Index, device: &Device) -> Result<DsiModel> {
        let dir = index.dir.model_dir(
            DSI_DIR,
            &format!("{DSI_DIR}/{}", crate::index::MODEL_DIR),
            "genret train INDEX_DIR --dsi",
        )?;
        // Documents added since training (`genret index --add`) come after the ones the
        // model names, which keep their numbers: it answers among those until retrained.
        let docs = index.docs.len();
        let named = if index.dir.manifest.added.is_empty() {
            docs..=docs
        } else {
            0..=docs
        };
        let mut dsi = DsiModel::load_naming(&dir, named, device)?;
        if dsi.docids.len() < docs {
            tracing::warn!(
                "the DSI model names {} of the index's {docs} documents (the rest were added \
                 after it was trained): retrain with `genret train INDEX --dsi` to find them",
                dsi.docids.len()
            );
        }
        if dsi.docids.scheme() == Scheme::Atomic {
            dsi.ids = index.docs.ids()?;
        }
        Ok(dsi)
    }

    /// A docid for people: its symbols joined by `-`, or an atomic one's document id.
    pub fn docid_text(&self, doc: u32) -> String {
        if self.docids.scheme() == Scheme::Atomic
            && let Some(id) = self.ids.get(doc as usize)
        {
            return id.clone();
        }
        self.docids
            .symbols(doc)
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The best `k` documents (document number, log-prob of its docid) for each query, from
    /// constrained beam search of width `beam` (at least `k` for atomic docids, whose search
    /// is one step).
    pub fn search(
        &self,
        queries: &[&str],
        beam: usize,
        k: usize,
    ) -> Result<(Vec<Ranked>, DecodeTimes)> {
        let sources = encode_texts(&self.tokenizer, queries)?;
        let beam = if self.docids.scheme() == Scheme::Atomic {
            beam.max(k).min(self.docids.len().max(1))
        } else {
            beam
        };
        let options = BeamOptions {
            beam,
            max_len: self.docids.max_len(),
            history: 0,
        };
        let constraint = TrieConstraint {
            docids: &self.docids,
        };
        let (decoded, times) = beam_search(
            &self.model,
            &sources,
            &[],
            &constraint,
            &self.docids.root(),
            &options,
        )?;
        let ranked = decoded
            .iter()
            .map(|d| dsi_rank(&self.docids, &d.finished, k))
            .collect();
        Ok((ranked, times))
    }
}

impl Retriever for DsiModel {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let (ranked, decode) = self.search(queries, options.beam, options.k)?;
        let answers = ranked
            .into_iter()
            .map(|ranked| Answer {
                hits: ranked
                    .into_iter()
                    .map(|(doc, score)| Retrieved {
                        doc,
                        score: score as f64,
                        ngrams: vec![self.docid_text(doc)],
                        tokens: vec![self.docids.tokens(doc)],
                    })
                    .collect(),
                terms: Vec::new(),
            })
            .collect();
        let times = SearchTimes {
            decode,
            ..SearchTimes::default()
        };
        Ok(Retrieval { answers, times })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_docids_are_atomic_for_small_corpora() {
        let o = DsiOptions::default();
        assert_eq!(o.scheme(1_400), Scheme::Atomic);
        assert_eq!(o.scheme(ATOMIC_MAX_DOCS + 1), Scheme::Semantic);
        let semantic = DsiOptions {
            docids: DocidChoice::Semantic,
            ..o
        };
        assert_eq!(semantic.scheme(10), Scheme::Semantic);
    }
}
