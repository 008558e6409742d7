//! Model benchmarks with the `small` preset over a 16k vocabulary: one decoder step for
//! 1 query x 10 beams and 32 queries x 10 beams (cache of 8 steps, source of 32 tokens), for
//! the model as built and prepared for search (`/packed`: f32 panels, `/packed-f16`,
//! `/packed-int8`),
//! the encoder for 32 queries, and one training step (batch 32, 32 -> 16 tokens), reported as
//! training examples/s; each for plain T5 and with the copy head (`+copy`).
//!
//! Before criterion's timings it prints each decoder step's arithmetic floor: its FLOPs
//! counted from the shapes (every product, the vocabulary head and attention included) over
//! the rate of one large matrix product on this machine, beside the step's measured median,
//! so that "how far from the hardware is the step" is one number (issue 23 asks for 2x).
//!
//! Run: `cargo bench --bench model` (about 6 minutes on 2 cores).

use std::hint::black_box;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use genret::device::Precision;
use genret::model::{Config, Preset, T5ForConditionalGeneration, init_params};

fn sequences(n: usize, len: usize, vocab: u32, salt: u32) -> Vec<Vec<u32>> {
    (0..n as u32)
        .map(|i| {
            (0..len as u32)
                .map(|j| (i * 7919 + j * 104_729 + salt) % (vocab - 10) + 10)
                .collect()
        })
        .collect()
}

/// FLOPs of one decoder step for `rows` = queries x beams, after `past` steps, over a source
/// of `src` tokens and `outputs` vocabulary rows: two per multiply-add of every product.
fn step_flops(c: &Config, rows: usize, past: usize, src: usize, outputs: usize) -> f64 {
    let (r, d, f) = (rows as f64, c.d_model as f64, c.d_ff as f64);
    let inner = (c.num_heads * c.d_kv) as f64;
    let ff_in = if c.feed_forward_proj.starts_with("gated") {
        2.0
    } else {
        1.0
    };
    let layer = 2.0 * r * d * inner * 4.0 // self-attention q, k, v, o
        + 2.0 * r * inner * (past + 1) as f64 * 2.0 // its scores and weighted sum
        + 2.0 * r * d * inner * 2.0 // cross-attention q, o (its k, v are cached)
        + 2.0 * r * inner * src as f64 * 2.0
        + 2.0 * r * d * f * (ff_in + 1.0); // feed-forward in and out
    let mut total = c.decoder_layers() as f64 * layer + 2.0 * r * d * outputs as f64;
    if c.copy_attention {
        total += 2.0 * r * d * d + 2.0 * r * d * src as f64 * 2.0 + 2.0 * r * d;
    }
    total
}

/// FLOP/s of a large matrix product (1024 x 1024 x 1024, f32, all cores): the rate the
/// floor is computed at. Best of five after a warm-up.
fn gemm_rate() -> f64 {
    let a = Tensor::ones((1024, 1024), DType::F32, &Device::Cpu).unwrap();
    let b = (Tensor::ones((1024, 1024), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
    a.matmul(&b).unwrap();
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(a.matmul(&b).unwrap());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * 1024f64.powi(3) / best
}

fn benches(c: &mut Criterion) {
    let vocab = 16_000;
    let mut group = c.benchmark_group("model/small");
    // Plain T5, then with the copy head every model genret trains has.
    for copy in [false, true] {
        let mut config = Config::preset(Preset::Small, vocab);
        config.copy_attention = copy;
        let params = init_params(&config, 1, &Device::Cpu).unwrap();
        let model = T5ForConditionalGeneration::new(&config, &params).unwrap();
        let tag = if copy { "+copy" } else { "" };
        println!("[small{tag}] {} parameters", config.num_params());
        // The model as built (the step reading the checkpoint's tensors), and prepared for
        // search as `genret search` loads it: packed f32 panels, and f16 ones.
        let prepared = [
            ("", model.clone()),
            (
                "/packed",
                model.clone().for_inference(Precision::F32).unwrap(),
            ),
            (
                "/packed-f16",
                model.clone().for_inference(Precision::F16).unwrap(),
            ),
            (
                "/packed-int8",
                model.clone().for_inference(Precision::Int8).unwrap(),
            ),
        ];
        for queries in [1usize, 32] {
            let beams = 10;
            let sources = sequences(queries, 32, vocab as u32, 1);
            let (ids, mask) = model.pad_batch(&sources).unwrap();
            let encoded = model.encode(&ids, &mask).unwrap();
            let mut warm = model.start(&encoded, beams).unwrap();
            let rows = queries * beams;
            for _ in 0..7 {
                model.step(&vec![5u32; rows], &mut warm).unwrap();
            }
            // What beam search does: the previous step's scores are handed back for their buffer.
            let spare = model.step_scores(&vec![5u32; rows], &mut warm).unwrap();
            let fresh = || {
                let mut cache = warm.clone();
                cache.recycle(spare.clone());
                cache
            };
            let flops = step_flops(&config, rows, 8, 32, vocab);
            let rate = gemm_rate();
            for (kind, model) in &prepared {
                // The step against its floor, timed here as a median of 31 steps.
                let mut times: Vec<f64> = (0..31)
                    .map(|_| {
                        let mut cache = fresh();
                        let t = Instant::now();
                        black_box(model.step_scores(&vec![7u32; rows], &mut cache).unwrap());
                        t.elapsed().as_secs_f64()
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                println!(
                    "[small{tag}{kind}] decoder step {queries}x{beams}: {:.1} MFLOP, floor {:.3} \
                     ms at {:.1} GFLOP/s; measured median {:.3} ms = {:.1}x the floor",
                    flops / 1e6,
                    flops / rate * 1e3,
                    rate / 1e9,
                    times[15] * 1e3,
                    times[15] * rate / flops
                );
                group.sample_size(100);
                group.throughput(Throughput::Elements(rows as u64));
                group.bench_function(format!("decoder-step/{queries}x{beams}{tag}{kind}"), |b| {
                    b.iter_batched(
                        fresh,
                        |mut cache| {
                            model
                                .step_scores(black_box(&vec![7u32; rows]), &mut cache)
                                .unwrap()
                        },
                        criterion::BatchSize::SmallInput,
                    )
                });
            }
        }
        let sources = sequences(32, 32, vocab as u32, 3);
        if !copy {
            group.throughput(Throughput::Elements(32));
            group.bench_function("encoder/32x32", |b| {
                b.iter(|| {
                    let (ids, mask) = model.pad_batch(black_box(&sources)).unwrap();
                    model.encode(&ids, &mask).unwrap()
                })
            });
        }
        let targets: Vec<Vec<u32>> = sequences(32, 16, vocab as u32, 5);
        group.sample_size(10);
        group.throughput(Throughput::Elements(32));
        group.bench_function(format!("train-step/32x(32->16){tag}"), |b| {
            b.iter(|| {
                let loss = model
                    .loss(black_box(&sources), black_box(&targets))
                    .unwrap();
                loss.backward().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = model;
    // No HTML plots: genret's plotters (with its ab_glyph text backend) is the same crate
    // criterion would draw with, and it has no font registered here.
    config = Criterion::default().without_plots();
    targets = benches
}
criterion_main!(model);
