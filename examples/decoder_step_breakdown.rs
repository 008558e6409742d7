//! Where a decoder step's time goes: the `small` model's step for 1 query x 10 beams (cache of
//! 8 steps, 32-token source) timed with the output vocabulary and the number of decoder layers
//! varied, so that differences give the vocabulary head's share and one layer's (issue 23).
//! It times `step_scores`, what beam search calls (on the CPU, the host decoder step);
//! `GENRET_PORTABLE_OPS=1` times the candle step instead.
//!
//! Run: `cargo run --release --example decoder_step_breakdown` (about 30 s).

use std::time::Instant;

use candle_core::Device;
use genret::model::{
    Config, DecoderCache, Preset, StepScores, T5ForConditionalGeneration, init_params,
};

/// Median of 41 steps from the same cache, in ms, each given a previous step's buffer as
/// beam search does ([`DecoderCache::recycle`]).
fn median_ms(
    model: &T5ForConditionalGeneration,
    rows: usize,
    warm: &DecoderCache,
    spare: &StepScores,
) -> f64 {
    let mut times: Vec<f64> = (0..41)
        .map(|_| {
            let mut cache = warm.clone();
            cache.recycle(spare.clone());
            let t = Instant::now();
            model.step_scores(&vec![7u32; rows], &mut cache).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[20]
}

fn main() {
    let beams = 10;
    for (vocab, layers, copy) in [
        (16_000, None, false),
        (4_000, None, false),
        (1_000, None, false),
        (16_000, Some(1), false),
        (1_000, Some(1), false),
        (16_000, None, true),
    ] {
        let mut config = Config::preset(Preset::Small, vocab);
        if layers.is_some() {
            config.num_decoder_layers = layers;
        }
        config.copy_attention = copy;
        let params = init_params(&config, 1, &Device::Cpu).unwrap();
        let model = T5ForConditionalGeneration::new(&config, &params).unwrap();
        let source: Vec<Vec<u32>> = vec![(0..32).map(|j| 10 + j).collect()];
        let (ids, mask) = model.pad_batch(&source).unwrap();
        let encoded = model.encode(&ids, &mask).unwrap();
        let mut warm = model.start(&encoded, beams).unwrap();
        for _ in 0..7 {
            model.step(&vec![5u32; beams], &mut warm).unwrap();
        }
        let spare = model.step_scores(&vec![5u32; beams], &mut warm).unwrap();
        println!(
            "vocabulary {vocab:>6}, {} decoder layers{}: step 1x{beams} median {:.3} ms",
            config.decoder_layers(),
            if copy { ", copy head" } else { "" },
            median_ms(&model, beams, &warm, &spare)
        );
    }
}
