//! model: here is a query, what are the next-token log-probs of each beam?
//!
//! A T5 encoder-decoder (Raffel et al., "Exploring the Limits of Transfer Learning with a
//! Unified Text-to-Text Transformer", JMLR 2020) on candle, written for training and beam
//! search. Every tensor name equals the Hugging Face checkpoint's (`shared.weight`,
//! `encoder.block.0.layer.0.SelfAttention.q.weight`, ...; see [`param_specs`]), and the config
//! is HF's `config.json`, so a local `t5-small` or `flan-t5-small` directory loads as is.
//!
//! Written here rather than taken from candle-transformers because beam search needs what its
//! T5 lacks: full-sequence logits for a training loss, a padding mask, and an explicit KV cache
//! that beams can reorder. The decoder step takes the cache as a value ([`DecoderCache`]):
//! self-attention keys and values grow by one position per step and are re-indexed with
//! [`DecoderCache::reorder`] when beams move; cross-attention keys and values are computed once
//! per query, and the beams of a query attend to them together as one batched product.
//!
//! One file per part: `config` (HF's `config.json`, presets), `params` (every tensor's
//! checkpoint name, shape and initialisation), `layers` (attention, feed-forward, norms),
//! `cache` (the encoded source and the reorderable decoder cache), `heads` (the copy head, the
//! restricted output vocabulary), `t5` (the model: encode, step, training logits),
//! `checkpoint` (finding, loading and saving model directories; the BERT warm start) and
//! `kernels` (hand-written CPU kernels). [`bert`] is the BERT-family encoder (MiniLM) that a
//! warm-started or DSI model reads with and the dense baseline embeds with.
//!
//! Differences from HF: no dropout (genret trains small models on small data with a fixed
//! recipe; determinism and resumability matter more), f32 only.

use std::collections::BTreeMap;

use candle_core::Var;

pub mod bert;
mod cache;
mod checkpoint;
mod config;
mod heads;
mod host_bert;
mod host_decoder;
mod int8;
pub(crate) mod kernels;
mod layers;
mod panels;
mod params;
mod skinny;
mod t5;

pub use cache::{DecoderCache, Encoded, StepScores};
pub use checkpoint::{bert_warm_start, load, resolve_model_dir, save, save_tensors};
pub(crate) use checkpoint::{check_finite, in_file, load_bert_weights, read_bert_config};
pub use config::{Config, Preset};
pub use host_decoder::HostScores;
pub use params::{Init, ParamSpec, init_params, is_frozen, param_specs, params_from_tensors};
pub use t5::T5ForConditionalGeneration;

/// The model's parameters by checkpoint tensor name, in a stable (sorted) order.
pub type Params = BTreeMap<String, Var>;

/// Source tokens a SEAL model reads, in training and at search: one constant, so a query is
/// never cut shorter or longer than the sources the model learnt from.
pub const MAX_SOURCE_LEN: usize = 64;

/// Names of the files of a saved model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[cfg(test)]
mod tests {
    use super::layers::relative_bucket;
    use super::*;

    #[test]
    fn relative_buckets_match_hf_reference_values() {
        // Expected values from a line-by-line Python transcription of HF's
        // T5Attention._relative_position_bucket (32 buckets, max distance 128).
        let bi: Vec<u32> = [-200, -64, -9, -8, -1, 0, 1, 7, 8, 20, 127, 500]
            .iter()
            .map(|&r| relative_bucket(r, true, 32, 128))
            .collect();
        assert_eq!(bi, vec![15, 14, 8, 8, 1, 0, 17, 23, 24, 26, 31, 31]);
        let uni: Vec<u32> = [0, -1, -15, -16, -40, -127, -500, 3]
            .iter()
            .map(|&r| relative_bucket(r, false, 32, 128))
            .collect();
        assert_eq!(uni, vec![0, 1, 15, 16, 23, 31, 31, 0]);
    }

    #[test]
    fn config_reads_hf_t5_small_json() {
        let json = r#"{"architectures":["T5ForConditionalGeneration"],"d_ff":2048,"d_kv":64,
            "d_model":512,"decoder_start_token_id":0,"dropout_rate":0.1,"eos_token_id":1,
            "initializer_factor":1.0,"is_encoder_decoder":true,"layer_norm_epsilon":1e-06,
            "model_type":"t5","n_positions":512,"num_heads":8,"num_layers":6,
            "output_past":true,"pad_token_id":0,"relative_attention_num_buckets":32,
            "vocab_size":32128}"#;
        let c: Config = serde_json::from_str(json).unwrap();
        assert_eq!(
            (c.d_model, c.decoder_layers(), c.feed_forward_proj.as_str()),
            (512, 6, "relu")
        );
        assert!(c.tie_word_embeddings);
        assert_eq!(c.num_params(), 60_506_624);
    }
}
