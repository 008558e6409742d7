//! The T5 model: incremental decoding equals a full forward pass (also after beams are
//! reordered), save/load is bit-identical, and a checkpoint written with HF tensor names
//! (by the `safetensors` crate, as PyTorch would) loads and runs.

use std::collections::HashMap;

use candle_core::{D, Device, IndexOp, Tensor};
use genret::model::{self, Config, Preset, T5ForConditionalGeneration, init_params, param_specs};

fn tiny(vocab: usize) -> Config {
    Config::preset(Preset::Tiny, vocab)
}

/// Log-probs at the last position of each row's prefix, by a full teacher-forced forward.
fn full_logprobs(
    m: &T5ForConditionalGeneration,
    sources: &[Vec<u32>],
    prefixes: &[Vec<u32>],
    beams: usize,
) -> Tensor {
    let expanded: Vec<Vec<u32>> = (0..prefixes.len())
        .map(|r| sources[r / beams].clone())
        .collect();
    let (ids, mask) = m.pad_batch(&expanded).unwrap();
    let (dec, _) = m.pad_batch(prefixes).unwrap();
    let logits = m.forward(&ids, &mask, &dec).unwrap();
    let t = prefixes[0].len() - 1;
    let last = logits.i((.., t, ..)).unwrap();
    candle_nn::ops::log_softmax(&last, D::Minus1).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check_incremental(config: &Config) {
    let device = Device::Cpu;
    let params = init_params(config, 7, &device).unwrap();
    let m = T5ForConditionalGeneration::new(config, &params).unwrap();
    // Two queries of different lengths (the shorter is padded), three beams each.
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    let beams = 3;
    let rows = sources.len() * beams;
    let (ids, mask) = m.pad_batch(&sources).unwrap();
    let encoded = m.encode(&ids, &mask).unwrap();
    let mut cache = m.start(&encoded, beams).unwrap();
    let mut prefixes: Vec<Vec<u32>> = vec![vec![0]; rows];
    let vocab = config.vocab_size as u32;
    for step in 0..6u32 {
        if step == 3 {
            // Beams move within their query: row i continues old row perm[i].
            let perm: Vec<u32> = vec![2, 2, 0, 4, 3, 3];
            cache.reorder(&perm).unwrap();
            prefixes = perm.iter().map(|&p| prefixes[p as usize].clone()).collect();
        }
        let last: Vec<u32> = prefixes.iter().map(|p| *p.last().unwrap()).collect();
        let inc = m.step(&last, &mut cache).unwrap();
        let full = full_logprobs(&m, &sources, &prefixes, beams);
        let diff = max_abs_diff(&inc, &full);
        assert!(diff <= 1e-4, "step {step}: max abs diff {diff}");
        for (r, p) in prefixes.iter_mut().enumerate() {
            p.push((step * 7 + r as u32 * 3 + 2) % vocab);
        }
    }
    assert!(
        cache.reorder(&[3, 0, 0, 0, 0, 0]).is_err(),
        "a row may not change query"
    );
}

#[test]
fn incremental_decoding_matches_full_forward() {
    check_incremental(&tiny(50));
}

#[test]
fn incremental_decoding_matches_for_gated_untied_models() {
    let mut c = tiny(40);
    c.feed_forward_proj = "gated-gelu".into();
    c.tie_word_embeddings = false;
    c.num_decoder_layers = Some(3);
    check_incremental(&c);
}

#[test]
fn save_and_load_round_trip_bit_identically() {
    let device = Device::Cpu;
    let config = tiny(64);
    let params = init_params(&config, 3, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model::save(dir.path(), &config, &params).unwrap();
    let (back_config, back) = model::load(dir.path(), &device).unwrap();
    assert_eq!(back_config, config);
    assert_eq!(back.len(), params.len());
    for (name, var) in &params {
        let a: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = back[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} changed"
        );
    }
    // Same seed, same parameters; another seed, others.
    let again = init_params(&config, 3, &device).unwrap();
    let other = init_params(&config, 4, &device).unwrap();
    let first = |p: &model::Params| -> Vec<f32> {
        p["shared.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(first(&again), first(&params));
    assert_ne!(first(&other), first(&params));
}

#[test]
fn hf_named_checkpoint_loads_and_runs() {
    // Write a flan-t5-style checkpoint (gated-gelu, untied head, f16, embeddings stored as
    // encoder.embed_tokens.weight, plus a tensor genret does not use) with the safetensors
    // crate directly, as PyTorch's exporter lays it out.
    let mut config = tiny(32);
    config.feed_forward_proj = "gated-gelu".into();
    config.tie_word_embeddings = false;
    let mut store: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, spec) in param_specs(&config).iter().enumerate() {
        let n: usize = spec.shape.iter().product();
        let values: Vec<u8> = (0..n)
            .flat_map(|j| {
                let x = (((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5) * 0.2;
                half::f16::from_f32(if spec.init_std == 0.0 { 1.0 } else { x }).to_le_bytes()
            })
            .collect();
        let name = if spec.name == "shared.weight" {
            "encoder.embed_tokens.weight".to_string()
        } else {
            spec.name.clone()
        };
        store.push((name, spec.shape.clone(), values));
    }
    store.push((
        "decoder.embed_tokens.weight".into(),
        vec![32, config.d_model],
        vec![0; 32 * config.d_model * 2],
    ));
    let views: Vec<(String, safetensors::tensor::TensorView)> = store
        .iter()
        .map(|(n, shape, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), data)
                    .unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&config).unwrap();
    json["architectures"] = serde_json::json!(["T5ForConditionalGeneration"]);
    json["dropout_rate"] = serde_json::json!(0.1);
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();

    let device = Device::Cpu;
    let (loaded, params) = model::load(dir.path(), &device).unwrap();
    assert_eq!(loaded, config);
    let m = T5ForConditionalGeneration::new(&loaded, &params).unwrap();
    let (ids, mask) = m.pad_batch(&[vec![3, 4, 5, 1]]).unwrap();
    let enc = m.encode(&ids, &mask).unwrap();
    let mut cache = m.start(&enc, 2).unwrap();
    let out = m.step(&[0, 0], &mut cache).unwrap();
    assert_eq!(out.dims(), &[2, 32]);
    let probs: f32 = out
        .exp()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((probs - 2.0).abs() < 1e-4);

    // A missing tensor is named in the error.
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &device).unwrap();
    tensors.remove("decoder.block.1.layer.2.DenseReluDense.wo.weight");
    let err = model::params_from_tensors(&config, tensors)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder.block.1.layer.2.DenseReluDense.wo.weight"),
        "{err}"
    );
}

#[test]
fn model_directories_resolve_from_the_hf_cache_layout() {
    let hub = tempfile::tempdir().unwrap();
    let snap = hub.path().join("models--acme--tiny-t5/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("config.json"), "{}").unwrap();
    std::fs::create_dir_all(hub.path().join("models--acme--tiny-t5/refs")).unwrap();
    std::fs::write(hub.path().join("models--acme--tiny-t5/refs/main"), "abc123").unwrap();
    // SAFETY: no other test in this binary touches the environment concurrently.
    unsafe { std::env::set_var("HF_HUB_CACHE", hub.path()) };
    assert_eq!(model::resolve_model_dir("acme/tiny-t5").unwrap(), snap);
    assert!(model::resolve_model_dir("acme/absent").is_err());
}
