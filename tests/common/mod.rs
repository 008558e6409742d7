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

/// The repository: `GENRET_ROOT` where a test binary runs away from the tree it was built in
/// (scripts/gpu_check.sh on a GPU machine), else the tree it was built in.
pub fn root() -> std::path::PathBuf {
    std::env::var_os("GENRET_ROOT")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The shipped ADI collection (82 documents) indexed into `dir` with a BPE tokenizer of
/// `vocab` tokens trained on it.
pub fn adi_index(dir: &Path, vocab: usize) -> Index {
    let corpus = read_corpus(root().join("corpus/adi")).unwrap();
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

/// Runs the genret binary and fails the test unless it succeeds.
pub fn genret_ok(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(args)
        .output()
        .expect("run genret");
    assert!(
        out.status.success(),
        "genret {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// ADI indexed into `dir/adi.idx` (an 800-token BPE) and a tiny SEAL model trained on it for
/// 20 steps: real answers in a few seconds.
pub fn trained_adi(dir: &Path) -> std::path::PathBuf {
    let idx = dir.join("adi.idx");
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/adi");
    let s = idx.to_str().unwrap();
    genret_ok(&["index", corpus, "--out", s, "--vocab-size", "800", "-q"]);
    genret_ok(&["train", s, "--preset", "tiny", "--steps", "20", "-q"]);
    idx
}

/// A `genret serve` on a free loopback port; killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `index` with the `extra` arguments; returns once the address is printed.
pub fn serve(index: &Path, extra: &[&str]) -> Served {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_genret"))
        .arg("serve")
        .arg(index)
        .args(["--addr", "127.0.0.1:0", "-q"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start genret serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Served {
        child,
        base: format!("http://{addr}"),
        addr,
    }
}
