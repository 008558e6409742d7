//! The T5 model: incremental decoding equals a full forward pass (also after beams are
//! reordered), save/load is bit-identical, and a checkpoint written with HF tensor names
//! (by the `safetensors` crate, as PyTorch would) loads and runs.
//!
//! Warm start (issue 8), a model whose encoder is a frozen BERT-family checkpoint: with a tiny
//! random BERT written here, training moves only the decoder, the encoder inside the model
//! computes exactly what the checkpoint computes, and the result searches; with
//! all-MiniLM-L6-v2 installed (CI installs it), the same equality on the real weights.

mod common;

use std::collections::HashMap;

use std::path::Path;

use candle_core::{D, Device, IndexOp, Tensor};
use genret::device::Precision;
use genret::index::Index;
use genret::model::bert::BertModel;
use genret::model::{
    self, Config, Init, Preset, T5ForConditionalGeneration, init_params, param_specs,
};
use genret::retrieve::{Mode, SearchOptions};
use genret::seal::load_model;
use genret::search::Searcher;
use genret::train::{TaskMix, TrainConfig, read_log, train};

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

/// Every step of the model as built, and prepared for inference in f32 and in f16 (the step
/// reading packed copies of its weights), against a full forward pass of the model as built.
fn check_incremental(config: &Config) {
    let as_built = incremental_steps(config, None, 1e-4);
    let f32 = incremental_steps(config, Some(Precision::F32), 1e-4);
    // f16 weights: each rounded by up to 2^-11 of itself.
    let f16 = incremental_steps(config, Some(Precision::F16), 2e-2);
    if genret::device::host_kernels(&Device::Cpu) {
        let differ = |a: &[Tensor], b: &[Tensor]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0f32, f32::max)
        };
        // The packed f32 weights are the same numbers; f16 ones are not.
        assert!(differ(&as_built, &f32) <= 1e-5);
        assert!(differ(&as_built, &f16) > 1e-6, "f16 weights were not used");
    }
}

/// The incremental steps' log-probs, each checked against a full forward pass to `tolerance`.
fn incremental_steps(config: &Config, precision: Option<Precision>, tolerance: f32) -> Vec<Tensor> {
    let device = Device::Cpu;
    let params = init_params(config, 7, &device).unwrap();
    let m = T5ForConditionalGeneration::new(config, &params).unwrap();
    let stepper = match precision {
        Some(p) => T5ForConditionalGeneration::new(config, &params)
            .unwrap()
            .for_inference(p)
            .unwrap(),
        None => m.clone(),
    };
    let mut steps = Vec::new();
    // Two queries of different lengths (the shorter is padded), three beams each.
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    let beams = 3;
    let rows = sources.len() * beams;
    // The prepared model encodes and starts too (its encoder's and cross-attention's products
    // packed).
    let (ids, mask) = stepper.pad_batch(&sources).unwrap();
    let encoded = stepper.encode(&ids, &mask).unwrap();
    let mut cache = stepper.start(&encoded, beams).unwrap();
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
        let inc = stepper.step(&last, &mut cache).unwrap();
        let full = full_logprobs(&m, &sources, &prefixes, beams);
        // A restricted vocabulary's -inf entries are compared by the restriction test.
        let (inc, full) = match &config.output_tokens {
            Some(allowed) => {
                let allowed = Tensor::new(allowed.as_slice(), &device).unwrap();
                (
                    inc.index_select(&allowed, 1).unwrap(),
                    full.index_select(&allowed, 1).unwrap(),
                )
            }
            None => (inc, full),
        };
        let diff = max_abs_diff(&inc, &full);
        assert!(
            diff <= tolerance,
            "{precision:?} step {step}: max abs diff {diff}"
        );
        steps.push(inc);
        for (r, p) in prefixes.iter_mut().enumerate() {
            p.push((step * 7 + r as u32 * 3 + 2) % vocab);
        }
    }
    assert!(
        cache.reorder(&[3, 0, 0, 0, 0, 0]).is_err(),
        "a row may not change query"
    );
    steps
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
fn incremental_decoding_matches_with_a_copy_head() {
    let mut c = tiny(50);
    c.copy_attention = true;
    check_incremental(&c);
    // Restricted: source tokens outside the output vocabulary (5, 2, 8) cannot be copied.
    c.output_tokens = Some((0..50).filter(|t| t % 3 != 2).collect());
    check_incremental(&c);
}

/// A cache run on one row per query and then widened to the beam continues exactly as one
/// started with every beam (what beam search does before the first choice), and the scores
/// beam search picks from equal the whole-vocabulary step's.
#[test]
fn a_widened_cache_continues_as_one_started_with_every_beam() {
    let mut config = tiny(50);
    config.copy_attention = true;
    config.output_tokens = Some((0..50).filter(|t| t % 4 != 3).collect());
    let params = init_params(&config, 11, &Device::Cpu).unwrap();
    let m = T5ForConditionalGeneration::new(&config, &params).unwrap();
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    let (ids, mask) = m.pad_batch(&sources).unwrap();
    let encoded = m.encode(&ids, &mask).unwrap();
    let beams = 3;
    let mut wide = m.start(&encoded, beams).unwrap();
    let mut narrow = m.start(&encoded, 1).unwrap();
    for t in [0u32, 7] {
        m.step(&vec![t; 2 * beams], &mut wide).unwrap();
        m.step(&[t; 2], &mut narrow).unwrap();
    }
    narrow.expand(beams).unwrap();
    assert_eq!(narrow.rows(), wide.rows());
    assert!(
        narrow.expand(2).is_err(),
        "a cache with beams cannot be widened again"
    );
    let tokens: Vec<u32> = vec![4, 9, 12, 20, 33, 6];
    let (a, b) = (
        m.step(&tokens, &mut wide).unwrap(),
        m.step(&tokens, &mut narrow).unwrap(),
    );
    let allowed = Tensor::new(config.output_tokens.as_deref().unwrap(), &Device::Cpu).unwrap();
    let (a, b) = (
        a.index_select(&allowed, 1).unwrap(),
        b.index_select(&allowed, 1).unwrap(),
    );
    assert!(max_abs_diff(&a, &b) <= 1e-6, "{}", max_abs_diff(&a, &b));

    // pick() gives the same numbers as the whole-vocabulary tensor, -inf outside the output.
    let scores = m.step_scores(&tokens, &mut wide).unwrap();
    let full: Vec<Vec<f32>> = m.step(&tokens, &mut narrow).unwrap().to_vec2().unwrap();
    let index: Vec<u32> = (0..6u32).flat_map(|r| [r, 3, 11, 49]).collect();
    let picked = scores.pick(&index, 4).unwrap();
    for (r, row) in picked.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let want = full[r][index[r * 4 + j] as usize];
            assert!(
                (v == want && v == f32::NEG_INFINITY) || (v - want).abs() <= 1e-6,
                "row {r} token {}: {v} vs {want}",
                index[r * 4 + j]
            );
        }
    }
    assert!(picked.iter().all(|row| row[1] == f32::NEG_INFINITY));
}

#[test]
fn copy_head_mixes_source_tokens_into_the_vocabulary_distribution() {
    let device = Device::Cpu;
    let mut config = tiny(50);
    config.copy_attention = true;
    let allowed: Vec<u32> = (0..50).filter(|t| t % 3 != 2).collect();
    config.output_tokens = Some(allowed.clone());
    let params = init_params(&config, 11, &device).unwrap();
    // A zero gate weight makes g = 1/2 exactly: P = P_vocab / 2 + copy / 2.
    params["copy.gate.weight"]
        .set(&Tensor::zeros((1, 64), candle_core::DType::F32, &device).unwrap())
        .unwrap();
    let m = T5ForConditionalGeneration::new(&config, &params).unwrap();
    let plain = {
        let mut c = config.clone();
        c.copy_attention = false;
        T5ForConditionalGeneration::new(&c, &params).unwrap()
    };
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    // The copyable tokens: in the source and in the output vocabulary.
    let copyable = [vec![9u32, 13, 1], vec![7, 3, 1]];
    let targets = vec![vec![9u32, 4, 13, 1], vec![3, 6, 1]];
    let shifted = vec![vec![0u32, 9, 4, 13], vec![0, 3, 6]];
    let (ids, mask) = m.pad_batch(&sources).unwrap();
    let (dec, _) = m.pad_batch(&shifted).unwrap();
    let mixed: Vec<Vec<Vec<f32>>> = m.forward(&ids, &mask, &dec).unwrap().to_vec3().unwrap();
    let vocab: Vec<Vec<Vec<f32>>> =
        candle_nn::ops::log_softmax(&plain.forward(&ids, &mask, &dec).unwrap(), D::Minus1)
            .unwrap()
            .to_vec3()
            .unwrap();
    for (b, target) in targets.iter().enumerate() {
        for t in 0..target.len() {
            let mut copied = 0.0;
            for w in 0..50u32 {
                let (p, pv) = (mixed[b][t][w as usize].exp(), vocab[b][t][w as usize].exp());
                if !allowed.contains(&w) {
                    assert_eq!(mixed[b][t][w as usize], f32::NEG_INFINITY, "token {w}");
                } else if copyable[b].contains(&w) {
                    copied += p - pv / 2.0;
                } else {
                    assert!(
                        (p - pv / 2.0).abs() <= 1e-5,
                        "({b}, {t}, {w}): {p} vs {pv}/2"
                    );
                }
            }
            assert!(
                (copied - 0.5).abs() <= 1e-4,
                "({b}, {t}): copy mass {copied}"
            );
        }
    }
    // The training loss is the mixture's cross-entropy.
    let loss = m
        .loss(&sources, &targets)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let mut total = 0.0;
    for (b, target) in targets.iter().enumerate() {
        for (t, &w) in target.iter().enumerate() {
            total -= mixed[b][t][w as usize];
        }
    }
    let want = total / 7.0;
    assert!((loss - want).abs() <= 1e-4, "loss {loss} vs {want}");
}

#[test]
fn restricted_output_vocabulary_scores_only_allowed_tokens() {
    let device = Device::Cpu;
    let mut config = tiny(50);
    let allowed: Vec<u32> = (0..50).filter(|t| t % 3 != 2).collect();
    config.output_tokens = Some(allowed.clone());
    let params = init_params(&config, 7, &device).unwrap();
    let m = T5ForConditionalGeneration::new(&config, &params).unwrap();
    let whole = {
        let mut c = config.clone();
        c.output_tokens = None;
        T5ForConditionalGeneration::new(&c, &params).unwrap()
    };
    let allowed_t = Tensor::new(allowed.as_slice(), &device).unwrap();
    // The reference: the unrestricted model's logits over the allowed tokens, normalised there.
    let restricted = |logits: &Tensor, dim: usize| {
        candle_nn::ops::log_softmax(&logits.index_select(&allowed_t, dim).unwrap(), D::Minus1)
            .unwrap()
    };

    // Decoder steps: allowed tokens as the reference, every other token -inf.
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    let beams = 2;
    let (ids, mask) = m.pad_batch(&sources).unwrap();
    let mut cache = m.start(&m.encode(&ids, &mask).unwrap(), beams).unwrap();
    let mut prefixes: Vec<Vec<u32>> = vec![vec![0]; 4];
    for step in 0..3u32 {
        let last: Vec<u32> = prefixes.iter().map(|p| *p.last().unwrap()).collect();
        let inc = m.step(&last, &mut cache).unwrap();
        let full = full_logprobs(&whole, &sources, &prefixes, beams);
        let want = restricted(&full, 1);
        let got = inc.index_select(&allowed_t, 1).unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-4, "step {step}: max abs diff {diff}");
        let values: Vec<Vec<f32>> = inc.to_vec2().unwrap();
        for row in &values {
            for (t, v) in row.iter().enumerate() {
                assert_eq!(*v == f32::NEG_INFINITY, t % 3 == 2, "token {t}: {v}");
            }
        }
        for (r, p) in prefixes.iter_mut().enumerate() {
            p.push(allowed[(step as usize * 5 + r * 3) % allowed.len()]);
        }
    }

    // The training loss is the restricted cross-entropy.
    let targets = vec![vec![3u32, 4, 1], vec![6, 1]];
    let loss = m
        .loss(&sources, &targets)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let shifted = vec![vec![0u32, 3, 4], vec![0, 6]];
    let (dec, _) = m.pad_batch(&shifted).unwrap();
    let logp = restricted(&whole.forward(&ids, &mask, &dec).unwrap(), 2);
    let logp: Vec<Vec<Vec<f32>>> = logp.to_vec3().unwrap();
    let row = |t: u32| allowed.iter().position(|&a| a == t).unwrap();
    let mut total = 0.0;
    for (b, target) in targets.iter().enumerate() {
        for (i, &t) in target.iter().enumerate() {
            total -= logp[b][i][row(t)];
        }
    }
    let want = total / 5.0;
    assert!((loss - want).abs() <= 1e-4, "loss {loss} vs {want}");
    // A target the model cannot write is an error, not a silent wrong loss.
    let err = m.loss(&sources, &[vec![2, 1], vec![4, 1]]).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
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
                half::f16::from_f32(if spec.init == Init::Ones { 1.0 } else { x }).to_le_bytes()
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

fn rms(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

fn adi_index(dir: &Path) -> Index {
    common::adi_index(dir, 600)
}

/// Writes a deterministic BERT (hidden 16, 2 layers) with vocabulary `vocab` into `dir` under
/// the names transformers' BertForMaskedLM exports (`bert.` prefix); returns its tensors.
fn write_tiny_bert(dir: &Path, vocab: usize) -> HashMap<String, Tensor> {
    common::write_tiny_bert(dir, vocab, 16, "bert.", |i, _, n| {
        (0..n)
            .map(|j| (((j * 7919 + i * 104_729) % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect()
    })
}

#[test]
fn warm_started_model_trains_only_its_decoder_and_searches() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("adi.idx");
    let mut index = adi_index(&idx);
    let vocab = index.tokenizer.inner().get_vocab_size(false);
    let bert_dir = tmp.path().join("bert");
    let original = write_tiny_bert(&bert_dir, vocab);

    let config = TrainConfig {
        preset: Preset::Tiny,
        encoder: Some(bert_dir.display().to_string()),
        steps: Some(60),
        batch_size: 16,
        lr: 5e-3,
        tasks: TaskMix {
            span: 1,
            title: 0,
            index: 0,
            docid: 1,
            keywords: 0,
        },
        log_every: 10,
        checkpoint_every: 1000,
        ..TrainConfig::default()
    };
    train(&mut index, &config, false, &genret::device::Device::Cpu).unwrap();
    let log = read_log(&idx.join("train_log.jsonl")).unwrap();
    let (first, last) = (log.first().unwrap().loss, log.last().unwrap().loss);
    assert!(last < 0.9 * first, "loss {first} -> {last}");

    let index = std::sync::Arc::new(Index::open(&idx).unwrap());
    let m = load_model(&index, &Device::Cpu).unwrap();
    assert_eq!(m.config.num_layers, 0);
    assert_eq!(m.config.d_model, 16);
    assert_eq!(m.config.bert_encoder.as_ref().unwrap().vocab_size, vocab);

    // Frozen: the saved encoder is the checkpoint, bit for bit; the decoder moved.
    let saved =
        candle_core::safetensors::load(idx.join("model/model.safetensors"), &Device::Cpu).unwrap();
    for (name, t) in &original {
        assert_eq!(max_abs_diff(&saved[name], t), 0.0, "{name} changed");
    }
    let words = &original["bert.embeddings.word_embeddings.weight"];
    let std = rms(words);
    let shared_rows = saved["shared.weight"].narrow(0, 0, vocab).unwrap();
    let start = (words / std as f64).unwrap();
    assert!(
        max_abs_diff(&shared_rows, &start) > 1e-3,
        "decoder embeddings did not train"
    );

    // The model's encoder computes exactly what the checkpoint computes (ids within BERT's
    // vocabulary), padding included.
    let reference = BertModel::from_tensors(
        m.config.bert_encoder.clone().unwrap(),
        original.clone(),
        &Device::Cpu,
    )
    .unwrap();
    let seqs = vec![vec![11u32, 12, 13, 14, 15], vec![20, 21]];
    let (ids, mask) = m.pad_batch(&seqs).unwrap();
    let ours = m.encode(&ids, &mask).unwrap().states;
    // The searching model is prepared for inference (its products in packed kernels): equal
    // to the checkpoint's model prepared alike, and to float rounding to it as built.
    let prepared = reference.clone().for_inference(Precision::F32).unwrap();
    let theirs = prepared.forward(&ids, &mask).unwrap();
    assert_eq!(max_abs_diff(&ours, &theirs), 0.0);
    // As built, at the real tokens (a prepared model leaves padded rows' products 0).
    let as_built = reference.forward(&ids, &mask).unwrap();
    for (row, len) in [(0, 5), (1, 2)] {
        let real = |t: &Tensor| t.i((row, 0..len)).unwrap();
        assert!(max_abs_diff(&real(&ours), &real(&as_built)) < 1e-5);
    }

    // It searches: real documents (SEAL may find no n-gram that this briefly trained model
    // prefers over the corpus's own frequencies, so it may answer nothing).
    let searcher = Searcher::new(std::sync::Arc::clone(&index)).unwrap();
    for mode in [Mode::SEAL] {
        let options = SearchOptions {
            mode,
            k: 5,
            beam: 5,
            ..SearchOptions::default()
        };
        let results = searcher
            .search(&["computer indexing of documents"], &options)
            .unwrap();
        assert!(
            mode == Mode::SEAL || !results[0].results.is_empty(),
            "{results:?}"
        );
        for hit in &results[0].results {
            assert!(index.doc_position(&hit.doc_id).is_ok(), "{}", hit.doc_id);
        }
    }
}

#[test]
fn warm_start_refuses_an_index_with_another_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = adi_index(&tmp.path().join("adi.idx"));
    let bert_dir = tmp.path().join("bert");
    write_tiny_bert(&bert_dir, 300);
    let config = TrainConfig {
        preset: Preset::Tiny,
        encoder: Some(bert_dir.display().to_string()),
        steps: Some(2),
        ..TrainConfig::default()
    };
    let err = train(&mut index, &config, false, &genret::device::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tokenizer") && err.contains("300"), "{err}");
}

#[test]
fn minilm_warm_start_encodes_like_minilm() {
    let dir = common::minilm_dir();
    let config = Config::preset(Preset::Small, 30_522 + 9);
    let (config, params) = model::bert_warm_start(config, &dir, 7, &Device::Cpu).unwrap();
    assert_eq!((config.d_model, config.d_kv), (384, 48));
    let m = T5ForConditionalGeneration::new(&config, &params).unwrap();
    let reference = BertModel::load(&dir, &Device::Cpu).unwrap();
    // "boundary layer transition" in MiniLM's WordPiece ids, and a shorter padded row.
    let seqs = vec![vec![101u32, 6192, 6741, 6653, 102], vec![101, 3684, 102]];
    let (ids, mask) = m.pad_batch(&seqs).unwrap();
    let ours = m.encode(&ids, &mask).unwrap().states;
    let theirs = reference.forward(&ids, &mask).unwrap();
    assert_eq!(max_abs_diff(&ours, &theirs), 0.0);
    // Decoder embeddings start as the encoder's word embeddings at unit scale.
    let shared = params["shared.weight"].as_tensor();
    let rows = rms(&shared.narrow(0, 0, 30_522).unwrap());
    assert!((rows - 1.0).abs() < 1e-3, "{rows}");
}
