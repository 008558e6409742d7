//! Helpers shared by the integration tests.

// Each test crate compiles this module and uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use genret::corpus::read_corpus;
use genret::index::{BuildConfig, Index, TokenizerSource, build};
use genret::model::bert::{BertConfig, tensor_shapes};
use genret::tokenize::TrainConfig as TokenizerConfig;

/// The shipped ADI collection (82 documents) indexed into `dir` with a BPE tokenizer of
/// `vocab` tokens trained on it.
pub fn adi_index(dir: &Path, vocab: usize) -> Index {
    let corpus = read_corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/adi")).unwrap();
    let config = BuildConfig {
        tokenizer: TokenizerSource::Train(TokenizerConfig {
            vocab_size: vocab,
            ..TokenizerConfig::default()
        }),
        ..BuildConfig::default()
    };
    build(&corpus, dir, &config).unwrap()
}

/// Writes a 2-layer, 4-head BERT of width `hidden` and vocabulary `vocab` into `dir`
/// (config.json, model.safetensors with every tensor name prefixed by `prefix`); `fill(i,
/// name, n)` gives the `n` values of the `i`-th tensor. Returns the tensors as saved.
pub fn write_tiny_bert(
    dir: &Path,
    vocab: usize,
    hidden: usize,
    prefix: &str,
    mut fill: impl FnMut(usize, &str, usize) -> Vec<f32>,
) -> HashMap<String, Tensor> {
    let config = serde_json::json!({
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 2 * hidden,
        "max_position_embeddings": 512, "type_vocab_size": 2, "model_type": "bert"
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bert: BertConfig = serde_json::from_value(config).unwrap();
    let mut tensors = HashMap::new();
    for (i, (name, shape)) in tensor_shapes(&bert).into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let t = Tensor::from_vec(fill(i, &name, n), shape.as_slice(), &Device::Cpu).unwrap();
        tensors.insert(format!("{prefix}{name}"), t);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    tensors
}

/// The directory of all-MiniLM-L6-v2, which the README's test command installs
/// (`scripts/install_minilm.sh`). Missing, the test fails and says so: a check that needs the
/// model never passes without it.
pub fn minilm_dir() -> std::path::PathBuf {
    genret::model::resolve_model_dir(genret::baseline::dense::DEFAULT_MODEL).unwrap_or_else(|e| {
        panic!(
            "all-MiniLM-L6-v2 is not installed ({e}); run `bash scripts/install_minilm.sh` \
             (the README's test command does)"
        )
    })
}
