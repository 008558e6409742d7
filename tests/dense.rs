//! The dense baseline's encoder: all-MiniLM-L6-v2 reproduces the reference embeddings in
//! ../shared/fixtures (copied to tests/data/minilm_reference.json) to cosine >= 0.9999 when the
//! model is installed (`scripts/install_minilm.sh`, which the README's test command runs; the
//! test fails without it); a tiny random BERT built here checks pooling, padding and search.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use genret::baseline::dense::{DEFAULT_MODEL, DenseEncoder, DenseIndex};
use genret::device::Precision;
use genret::model::bert::{BertConfig, BertModel};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_reference_embeddings() {
    let encoder = DenseEncoder::load(
        &common::minilm_dir().display().to_string(),
        &genret::device::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{DEFAULT_MODEL}: {e}"));
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/minilm_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let sentences: Vec<&str> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f32>> = fixture["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(encoder.dim(), 384);
    // All at once (padded together) and one by one must both match.
    let batch = encoder.embed(&sentences, &|_| {}).unwrap();
    for (i, want) in expected.iter().enumerate() {
        let got = &batch[i * 384..(i + 1) * 384];
        let c = cosine(got, want);
        assert!(c >= 0.9999, "sentence {i} {:?}: cosine {c}", sentences[i]);
        let alone = encoder.embed(&[sentences[i]], &|_| {}).unwrap();
        assert!(cosine(&alone, want) >= 0.9999);
    }
}

/// A 2-layer BERT with random weights over a 50-token vocabulary and a matching tokenizer.
fn tiny_encoder() -> DenseEncoder {
    let model = tiny_bert();
    let words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..46).map(|i| format!("w{i}")))
        .collect();
    let vocab: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let wp = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(wp);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    DenseEncoder::new(model, tok).unwrap()
}

/// The BERT of [`tiny_encoder`]: 2 layers, hidden 16, 4 heads, random weights.
fn tiny_bert() -> BertModel {
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 32,
        "max_position_embeddings": 64, "type_vocab_size": 2
    }))
    .unwrap();
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 0u64;
    let mut rand = |shape: &[usize]| {
        seed += 1;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0) * 0.2)
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    t.insert("embeddings.word_embeddings.weight".into(), rand(&[50, 16]));
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        rand(&[64, 16]),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        rand(&[2, 16]),
    );
    for (name, shape) in [("weight", 16usize), ("bias", 16)] {
        t.insert(
            format!("embeddings.LayerNorm.{name}"),
            Tensor::ones(shape, DType::F32, &dev).unwrap(),
        );
    }
    for l in 0..2 {
        let p = format!("bert.encoder.layer.{l}");
        for (n, o, i) in [
            ("attention.self.query", 16, 16),
            ("attention.self.key", 16, 16),
            ("attention.self.value", 16, 16),
            ("attention.output.dense", 16, 16),
            ("intermediate.dense", 32, 16),
            ("output.dense", 16, 32),
        ] {
            t.insert(format!("{p}.{n}.weight"), rand(&[o, i]));
            t.insert(format!("{p}.{n}.bias"), rand(&[o]));
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.insert(
                format!("{p}.{n}.weight"),
                Tensor::ones(16, DType::F32, &dev).unwrap(),
            );
            t.insert(
                format!("{p}.{n}.bias"),
                Tensor::zeros(16, DType::F32, &dev).unwrap(),
            );
        }
    }
    BertModel::from_tensors(config, t, &dev).unwrap()
}

/// A prepared encoder splits a batch of several queries over its threads by whole queries:
/// each query's states are exactly those it has encoded alone (which splits each product).
#[test]
fn a_batch_split_over_threads_encodes_each_query_as_alone() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let lens = [7usize, 8, 6, 7, 8, 7];
    let len = 8;
    let mut ids = vec![0u32; lens.len() * len];
    let mut mask = vec![0f32; lens.len() * len];
    for (q, &n) in lens.iter().enumerate() {
        for t in 0..n {
            ids[q * len + t] = (4 + (q * 13 + t * 7) % 46) as u32;
            mask[q * len + t] = 1.0;
        }
    }
    let dev = Device::Cpu;
    let ids = Tensor::from_vec(ids, (lens.len(), len), &dev).unwrap();
    let mask = Tensor::from_vec(mask, (lens.len(), len), &dev).unwrap();
    for precision in [Precision::F32, Precision::Int8] {
        let model = tiny_bert().for_inference(precision).unwrap();
        let together = pool.install(|| model.forward(&ids, &mask).unwrap());
        for (q, &n) in lens.iter().enumerate() {
            let one = |t: &Tensor| t.narrow(0, q, 1).unwrap();
            let alone = pool.install(|| model.forward(&one(&ids), &one(&mask)).unwrap());
            let rows = |t: &Tensor| t.narrow(1, 0, n).unwrap().flatten_all().unwrap();
            let (a, b) = (rows(&one(&together)), rows(&alone));
            let diff = (a - b).unwrap().abs().unwrap().max(0).unwrap();
            assert_eq!(
                diff.to_scalar::<f32>().unwrap(),
                0.0,
                "{precision:?} query {q}"
            );
        }
    }
}

#[test]
fn tiny_bert_pools_padding_free_unit_embeddings_and_searches_exactly() {
    let enc = tiny_encoder();
    let texts = [
        "w1 w2 w3",
        "w4",
        "w5 w6 w7 w8 w9 w10 w11 w12",
        "w1 w2 w3 w20",
        "",
    ];
    let all = enc.embed(&texts, &|_| {}).unwrap();
    assert_eq!(all.len(), texts.len() * 16);
    for (i, t) in texts.iter().enumerate() {
        let row = &all[i * 16..(i + 1) * 16];
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            norm == 0.0 || (norm - 1.0).abs() < 1e-5,
            "row {i} norm {norm}"
        );
        // Padding next to longer texts changes nothing.
        let alone = enc.embed(&[t], &|_| {}).unwrap();
        for (a, b) in alone.iter().zip(row) {
            assert!((a - b).abs() < 1e-5, "text {i}: {a} vs {b}");
        }
    }
    // Each document is its own nearest neighbour; scores are cosines, best first.
    let index = DenseIndex::from_flat(all[..4 * 16].to_vec(), 4, 16).unwrap();
    let hits = index.search(&all[..4 * 16], 3).unwrap();
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h[0].0, i as u32);
        assert!((h[0].1 - 1.0).abs() < 1e-5);
        assert!(h.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(h.len(), 3);
    }
}
