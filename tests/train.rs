//! Training from the index alone: the tiny model learns ADI (loss at least halves), and a run
//! killed after a checkpoint and resumed follows the same loss curve as an uninterrupted one;
//! the keyword task draws its queries and targets from one document.

mod common;

use genret::index::Index;
use genret::model::Preset;
use genret::train::{TaskMix, TrainConfig, read_log, train};

fn tiny_config(steps: usize) -> TrainConfig {
    TrainConfig {
        preset: Preset::Tiny,
        steps: Some(steps),
        batch_size: 16,
        lr: 5e-3,
        tasks: TaskMix {
            span: 1,
            title: 2,
            index: 2,
            docid: 0,
            keywords: 0,
        },
        log_every: 5,
        checkpoint_every: 10,
        ..TrainConfig::default()
    }
}

#[test]
fn tiny_model_halves_its_loss_on_adi() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = common::adi_index(&dir.path().join("adi"), 2000);
    let report = train(
        &mut index,
        &tiny_config(250),
        false,
        &genret::device::Device::Cpu,
    )
    .unwrap();
    let first = report.log.first().unwrap().loss;
    let last = report.log.last().unwrap().loss;
    assert!(last <= first / 2.0, "loss {first} -> {last}");
    // The model part is registered and reloads.
    let index = Index::open(dir.path().join("adi")).unwrap();
    assert!(index.dir.manifest.parts.contains_key("model"));
    genret::seal::load_model(&index, &candle_core::Device::Cpu).unwrap();
    // The model folder is complete for people and HF tools: the tokenizer it reads with, a
    // generation config that agrees with config.json, and a model card.
    let model = dir.path().join("adi/model");
    assert_eq!(
        std::fs::read(model.join("tokenizer.json")).unwrap(),
        std::fs::read(dir.path().join("adi/tokenizer.json")).unwrap()
    );
    let read_json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(model.join(name)).unwrap()).unwrap()
    };
    let (generation, config) = (
        read_json("generation_config.json"),
        read_json("config.json"),
    );
    for key in ["eos_token_id", "pad_token_id", "decoder_start_token_id"] {
        assert_eq!(generation[key], config[key], "{key}");
    }
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(card.contains("genret SEAL model"), "{card}");
    assert!(
        card.contains("82 documents") && card.contains("250 steps"),
        "{card}"
    );
    assert!(
        card.contains("copy head") && card.contains("--no-copy"),
        "{card}"
    );
    // The log on disk is what the report says.
    let on_disk = read_log(&dir.path().join("adi/train_log.jsonl")).unwrap();
    assert_eq!(on_disk.len(), report.log.len());
    for (a, b) in on_disk.iter().zip(&report.log) {
        assert_eq!(a.step, b.step);
        assert!((a.loss - b.loss).abs() < 1e-9);
    }
}

/// Also the regression test for a tied LM head computed once at model construction: training
/// never updated the copy, so a resumed run (which rebuilt it) diverged at its first step.
#[test]
fn a_killed_and_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut straight = common::adi_index(&dir.path().join("a"), 2000);
    let full = train(
        &mut straight,
        &tiny_config(40),
        false,
        &genret::device::Device::Cpu,
    )
    .unwrap();

    let mut killed = common::adi_index(&dir.path().join("b"), 2000);
    let halted = train(
        &mut killed,
        &TrainConfig {
            halt_after: Some(25),
            ..tiny_config(40)
        },
        false,
        &genret::device::Device::Cpu,
    )
    .unwrap();
    assert_eq!(halted.steps, 25);
    assert!(!killed.dir.manifest.parts.contains_key("model"));
    let resumed = train(
        &mut killed,
        &tiny_config(40),
        true,
        &genret::device::Device::Cpu,
    )
    .unwrap();
    assert_eq!(resumed.steps, 40);
    assert_eq!(resumed.log.len(), full.log.len());
    for (a, b) in full.log.iter().zip(&resumed.log) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() <= 1e-5,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
        assert_eq!(a.lr, b.lr);
    }
    let a = std::fs::read(dir.path().join("a/model/model.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("b/model/model.safetensors")).unwrap();
    assert!(a == b, "final weights differ");
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = common::adi_index(&dir.path().join("c"), 2000);
    let err = train(
        &mut index,
        &tiny_config(5),
        true,
        &genret::device::Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn keyword_queries_are_document_words_and_their_targets_surround_one() {
    let dir = tempfile::tempdir().unwrap();
    let index = common::adi_index(&dir.path().join("adi"), 2000);
    let data = genret::train::TaskData::new(&index, None).unwrap();
    let config = TrainConfig {
        tasks: TaskMix {
            span: 0,
            title: 0,
            index: 0,
            docid: 0,
            keywords: 3,
        },
        ..TrainConfig::default()
    };
    let examples = data.epoch_examples(&config, 0);
    let sp = index.tokenizer.specials();
    let bodies: Vec<Vec<u32>> = index
        .docs
        .all()
        .unwrap()
        .iter()
        .map(|d| index.tokenizer.encode(&d.text).unwrap())
        .collect();
    assert!(examples.len() >= 3 * 80, "{} examples", examples.len());
    // Each example's keywords and target come from one document: find it.
    for ex in &examples {
        assert_eq!(ex.source[0], sp.query);
        assert_eq!(ex.target[0], sp.ngram);
        assert_eq!(*ex.target.last().unwrap(), sp.eos);
        let keywords = &ex.source[1..];
        let window = &ex.target[1..ex.target.len() - 1];
        assert!((1..=8).contains(&keywords.len()), "{keywords:?}");
        assert!((3..=10).contains(&window.len()), "{window:?}");
        let from_one = bodies.iter().any(|b| {
            keywords.iter().all(|k| b.contains(k)) && b.windows(window.len()).any(|w| w == window)
        });
        assert!(from_one, "keywords {keywords:?} / window {window:?}");
        assert!(
            window.iter().any(|t| keywords.contains(t)),
            "{window:?} holds none of {keywords:?}"
        );
    }
    // Deterministic in (seed, epoch), different across epochs.
    assert_eq!(data.epoch_examples(&config, 0), examples);
    assert_ne!(data.epoch_examples(&config, 1), examples);
    // `genret train --tasks` prints and parses the same mix.
    let mix = config.tasks;
    assert_eq!(mix.to_string().parse::<TaskMix>().unwrap(), mix);
    assert_eq!("keywords=3".parse::<TaskMix>().unwrap(), mix);
}
