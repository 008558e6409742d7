//! Model benchmarks with the `small` preset over a 16k vocabulary: one decoder step for
//! 1 query x 10 beams and 32 queries x 10 beams (cache of 8 steps, source of 32 tokens),
//! the encoder for 32 queries, and one training step (batch 32, 32 -> 16 tokens), reported as
//! training examples/s; each for plain T5 and with the copy head (`+copy`).
//!
//! Run: `cargo bench --bench model` (about 4 minutes on 2 cores).

use std::hint::black_box;

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
        for queries in [1usize, 32] {
            let beams = 10;
            let sources = sequences(queries, 32, vocab as u32, 1);
            let (ids, mask) = model.pad_batch(&sources).unwrap();
            let encoded = model.encode(&ids, &mask).unwrap();
            let mut warm = model.start(&encoded, beams).unwrap();
            let rows = queries * beams;
            for _ in 0..8 {
                model.step(&vec![5u32; rows], &mut warm).unwrap();
            }
            group.sample_size(100);
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_function(format!("decoder-step/{queries}x{beams}{tag}"), |b| {
                b.iter_batched(
                    || warm.clone(),
                    |mut cache| {
                        model
                            .step(black_box(&vec![7u32; rows]), &mut cache)
                            .unwrap()
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
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
