//! The CUDA path against the CPU, on a machine with an NVIDIA GPU: the same weights give the
//! same logits, loss and gradients (the training ops), the same incremental decoder steps
//! (the copy-head mixture on the device), the same BERT states, and training and search
//! that follow the CPU's. Built only with `--features cuda` (scripts/build_cuda.sh builds
//! this binary too; scripts/gpu_check.sh runs it), so CI, which has no GPU, never compiles it.
#![cfg(feature = "cuda")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use genret::index::Index;
use genret::model::bert::BertModel;
use genret::model::{Config, Params, Preset, T5ForConditionalGeneration, init_params};
use genret::retrieve::SearchOptions;
use genret::search::Searcher;
use genret::train::{TrainConfig, train};

fn gpu() -> Device {
    Device::new_cuda(0).expect("a CUDA device (this test binary is for GPU machines)")
}

/// Largest `|a - b| / max(|b|, 1)` over all elements.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            if x == y {
                0.0
            } else {
                (x - y).abs() / y.abs().max(1.0)
            }
        })
        .fold(0f32, f32::max)
}

fn to_device(params: &Params, device: &Device) -> Params {
    params
        .iter()
        .map(|(k, v)| {
            let t = v.as_tensor().to_device(device).unwrap();
            (k.clone(), Var::from_tensor(&t).unwrap())
        })
        .collect()
}

/// A tiny model with a copy head over a restricted output vocabulary: every op that differs
/// between the CPU kernels and the device path.
fn config() -> Config {
    let mut c = Config::preset(Preset::Tiny, 60);
    c.copy_attention = true;
    c.output_tokens = Some((0..60).filter(|t| t % 4 != 3).collect());
    c
}

#[test]
fn logits_loss_and_gradients_equal_the_cpus() {
    let c = config();
    let cpu_params = init_params(&c, 5, &Device::Cpu).unwrap();
    let gpu_params = to_device(&cpu_params, &gpu());
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1], vec![4, 4, 12, 1]];
    let targets = vec![vec![9, 13, 1], vec![7, 1], vec![4, 12, 1]];
    let mut outputs = Vec::new();
    for params in [&cpu_params, &gpu_params] {
        let m = T5ForConditionalGeneration::new(&c, params).unwrap();
        let (ids, mask) = m.pad_batch(&sources).unwrap();
        let (dec, _) = m.pad_batch(&targets).unwrap();
        let scores = m.forward(&ids, &mask, &dec).unwrap();
        let loss = m.loss(&sources, &targets).unwrap();
        let grads = loss.backward().unwrap();
        let grads: BTreeMap<String, Tensor> = params
            .iter()
            .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), g.clone())))
            .collect();
        outputs.push((scores, loss, grads));
    }
    let (cpu, gpu) = (&outputs[0], &outputs[1]);
    // Finite scores only (-inf outside the output vocabulary on both).
    let finite = |t: &Tensor| {
        let keep = t.ge(-1e30).unwrap();
        keep.where_cond(t, &t.zeros_like().unwrap()).unwrap()
    };
    let d = rel_diff(&finite(&gpu.0), &finite(&cpu.0));
    assert!(d < 1e-4, "forward: {d}");
    let d = rel_diff(&gpu.1, &cpu.1);
    assert!(d < 1e-5, "loss: {d}");
    assert_eq!(
        cpu.2.keys().collect::<Vec<_>>(),
        gpu.2.keys().collect::<Vec<_>>()
    );
    for (name, g) in &cpu.2 {
        let d = rel_diff(&gpu.2[name], g);
        assert!(d < 1e-4, "gradient of {name}: {d}");
    }
}

#[test]
fn incremental_steps_equal_the_cpus() {
    let c = config();
    let cpu_params = init_params(&c, 9, &Device::Cpu).unwrap();
    let gpu_params = to_device(&cpu_params, &gpu());
    let sources = vec![vec![5, 9, 13, 2, 8, 1], vec![7, 3, 1]];
    let beams = 3;
    let mut steps: Vec<Vec<Tensor>> = Vec::new();
    for params in [&cpu_params, &gpu_params] {
        let m = T5ForConditionalGeneration::new(&c, params).unwrap();
        let (ids, mask) = m.pad_batch(&sources).unwrap();
        let mut cache = m.start(&m.encode(&ids, &mask).unwrap(), beams).unwrap();
        let mut out = Vec::new();
        let mut tokens = vec![0u32; sources.len() * beams];
        for step in 0..5u32 {
            if step == 2 {
                cache.reorder(&[1, 0, 0, 5, 3, 3]).unwrap();
            }
            let logp = m.step(&tokens, &mut cache).unwrap();
            out.push(logp.to_device(&Device::Cpu).unwrap());
            tokens = (0..tokens.len() as u32)
                .map(|r| (r * 5 + step * 3) % 60)
                .collect();
            tokens.iter_mut().for_each(|t| *t -= u32::from(*t % 4 == 3));
        }
        steps.push(out);
    }
    let allowed = Tensor::new(c.output_tokens.clone().unwrap().as_slice(), &Device::Cpu).unwrap();
    for (i, (a, b)) in steps[0].iter().zip(&steps[1]).enumerate() {
        let (a, b) = (
            a.index_select(&allowed, 1).unwrap(),
            b.index_select(&allowed, 1).unwrap(),
        );
        let d = rel_diff(&b, &a);
        assert!(d < 1e-4, "step {i}: {d}");
    }
}

#[test]
fn bert_states_equal_the_cpus() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_bert(tmp.path(), 90, 32, "", |i, _, n| {
        (0..n)
            .map(|j| (((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5) * 0.2)
            .collect()
    });
    let mut states = Vec::new();
    for device in [Device::Cpu, gpu()] {
        let bert = BertModel::load(tmp.path(), &device).unwrap();
        let ids = Tensor::new(&[[2u32, 17, 40, 3, 0], [2, 8, 3, 0, 0]], &device).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 1., 0.], [1., 1., 1., 0., 0.]], &device).unwrap();
        states.push(bert.forward(&ids, &mask).unwrap());
    }
    let d = rel_diff(&states[1], &states[0]);
    assert!(d < 1e-4, "{d}");
}

#[test]
fn training_and_search_on_the_gpu_follow_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        preset: Preset::Tiny,
        steps: Some(20),
        ..TrainConfig::default()
    };
    let mut reports = Vec::new();
    for (name, device) in [("cpu.idx", Device::Cpu), ("gpu.idx", gpu())] {
        let mut index = common::adi_index(&tmp.path().join(name), 800);
        reports.push(train(&mut index, &config, false, &device).unwrap());
    }
    for (a, b) in reports[0].log.iter().zip(&reports[1].log) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() <= 1e-3 * a.loss,
            "step {}: {} (cpu) {} (gpu)",
            a.step,
            a.loss,
            b.loss
        );
    }
    // The model trained on the CPU, searched on both: the same top 10 nearly everywhere.
    let index = Arc::new(Index::open(tmp.path().join("cpu.idx")).unwrap());
    let queries: Vec<String> =
        std::fs::read_to_string(common::root().join("corpus/adi/queries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let mut answers = Vec::new();
    for device in [Device::Cpu, gpu()] {
        let searcher = Searcher::open(
            Arc::clone(&index),
            &[genret::retrieve::Method::Seal],
            "",
            &device,
        )
        .unwrap();
        let results = searcher.search(&refs, &SearchOptions::default()).unwrap();
        answers.push(
            results
                .into_iter()
                .map(|r| r.results.into_iter().map(|h| h.doc_id).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        );
    }
    let same = answers[0]
        .iter()
        .zip(&answers[1])
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same * 100 >= queries.len() * 97,
        "{same} of {} the same",
        queries.len()
    );
}
