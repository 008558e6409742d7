//! genret computes what HF transformers computes. `tests/data/hf-t5/` (copied from
//! `../shared/fixtures/hf-t5/`, made by its `make_reference.py`) holds two tiny random T5
//! checkpoints saved by transformers 5 (v1.0-style relu with a tied, scaled head; v1.1-style
//! gated-gelu with an unscaled head) and transformers' own encoder states, logits and 4-beam
//! outputs for fixed inputs. genret loads both, reproduces every logit to 1e-4 and the beams
//! in order with their scores, and saves a model that loads back in the same layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use genret::decode::{BeamOptions, Constraint, beam_search};
use genret::model::{self, T5ForConditionalGeneration};
use serde_json::Value;

const MODELS: [&str; 2] = ["t5-tiny-relu", "t5-tiny-gated-gelu"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf-t5")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("t5_reference.json")).unwrap()).unwrap()
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn tensor_u32(rows: &[Vec<u32>]) -> Tensor {
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load(dir: &Path) -> T5ForConditionalGeneration {
    let (config, params) = model::load(dir, &Device::Cpu).unwrap();
    T5ForConditionalGeneration::new(&config, &params).unwrap()
}

/// Teacher-forced logits of the reference inputs, flattened, and the encoder's first state.
fn run(m: &T5ForConditionalGeneration, r: &Value) -> (Vec<f32>, Vec<f32>) {
    let ids = tensor_u32(&matrix_u32(&r["input_ids"]));
    let mask = tensor_u32(&matrix_u32(&r["attention_mask"]))
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let dec = tensor_u32(&matrix_u32(&r["decoder_input_ids"]));
    let logits = m.forward(&ids, &mask, &dec).unwrap();
    let enc = m.encode(&ids, &mask).unwrap();
    let first = enc
        .states
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    (logits.flatten_all().unwrap().to_vec1().unwrap(), first)
}

#[test]
fn hf_checkpoints_give_transformers_logits_and_encoder_states() {
    let reference = reference();
    for name in MODELS {
        let r = &reference[name];
        let m = load(&fixtures().join(name));
        let (logits, first) = run(&m, r);
        let want = floats(&r["logits"]);
        assert_eq!(logits.len(), 2 * 4 * 128, "{name}");
        let d = worst(&logits, &want);
        assert!(d < 1e-4, "{name}: logits differ by {d}");
        let d = worst(&first, &floats(&r["encoder_last_hidden_state_first_row"]));
        assert!(d < 1e-4, "{name}: encoder states differ by {d}");
    }
}

/// Every token but EOS, any time: plain beam search, as transformers' `generate` runs it.
struct Anything {
    vocab: u32,
    eos: u32,
}

impl Constraint for Anything {
    type State = ();

    fn next_into(&self, _: &(), out: &mut Vec<(u32, ())>) {
        out.extend((0..self.vocab).filter(|&t| t != self.eos).map(|t| (t, ())));
    }

    fn can_end(&self, _: &()) -> bool {
        true
    }
}

#[test]
fn beam_search_returns_transformers_beams_in_order() {
    let reference = reference();
    for name in MODELS {
        let r = &reference[name];
        let m = load(&fixtures().join(name));
        let source = matrix_u32(&r["input_ids"])[0].clone();
        let want = matrix_u32(&r["beam4"]["sequences"]);
        let scores = floats(&r["beam4"]["scores"]);
        let new_tokens = want[0].len() - 1;
        // genret keeps every hypothesis that may end, while transformers keeps an EOS only
        // where it ranks among the step's best `num_beams` candidates. These references' 4
        // beams all ran to max_new_tokens without EOS, so they are transformers' running beams
        // at the last step: what genret's last step keeps, best first.
        assert!(
            want.iter()
                .all(|s| s.len() == new_tokens + 1 && !s[1..].contains(&1))
        );
        let options = BeamOptions {
            beam: 4,
            max_len: new_tokens,
            history: 4,
        };
        let constraint = Anything {
            vocab: m.config.vocab_size as u32,
            eos: m.config.eos_token_id,
        };
        let (decoded, _) = beam_search(&m, &[source], &[], &constraint, &(), &options).unwrap();
        let last: Vec<_> = decoded[0]
            .history
            .iter()
            .filter(|h| h.tokens.len() == new_tokens)
            .collect();
        assert_eq!(last.len(), 4, "{name}");
        for (i, (h, (want, want_score))) in last.iter().zip(want.iter().zip(&scores)).enumerate() {
            assert_eq!(h.tokens[..], want[1..], "{name}: beam {i}");
            // With length_penalty 0, transformers' score is the sum of the log-probs.
            assert!(
                (h.score - want_score).abs() < 1e-3,
                "{name}: beam {i} scores {} against transformers' {want_score}",
                h.score
            );
        }
    }
}

#[test]
fn a_model_genret_saves_loads_back_in_the_hf_layout() {
    let reference = reference();
    let tmp = tempfile::tempdir().unwrap();
    for name in MODELS {
        let dir = fixtures().join(name);
        let (config, params) = model::load(&dir, &Device::Cpu).unwrap();
        let out = tmp.path().join(name);
        model::save(&out, &config, &params).unwrap();
        let names = |p: &Path| -> BTreeSet<String> {
            candle_core::safetensors::load(p.join("model.safetensors"), &Device::Cpu)
                .unwrap()
                .into_keys()
                .collect()
        };
        assert_eq!(names(&out), names(&dir), "{name}: tensor names");
        let before = run(&load(&dir), &reference[name]);
        let after = run(&load(&out), &reference[name]);
        assert_eq!(before, after, "{name}");
    }
}
