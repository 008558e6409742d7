//! FM-index benchmarks: build speed, size, count, continuations from a cached range, locate;
//! and the `fm-index` crate on the same symbols for count and build.
//!
//! Two corpora: (a) the shipped Cranfield collection, tokenized by genret's default BPE
//! tokenizer; (b) a synthetic corpus of 10M tokens drawn from a Zipf(1.0) law over 32,000
//! token ids in documents of 50-350 tokens (seeded, so every run sees the same text).
//!
//! Run: `cargo bench --bench fmindex` (about 6 minutes on 2 cores). Sizes and the
//! per-range continuation percentiles are printed before criterion's timings.
//! `GENRET_BENCH_QUICK=1` uses 1M synthetic tokens instead of 10M.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fm_index::{FMIndexWithLocate, SearchIndex, Text};
use genret::corpus::read_corpus;
use genret::fmindex::{BuildOptions, Continuation, FmIndex, FmRange};
use genret::index::document_tokens;
use genret::tokenize::{GenretTokenizer, TrainConfig};

/// splitmix64: a tiny seeded generator, enough for reproducible synthetic text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn zipf_corpus(tokens: usize, vocab: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut cdf = Vec::with_capacity(vocab as usize);
    let mut acc = 0.0;
    for k in 1..=vocab {
        acc += 1.0 / k as f64;
        cdf.push(acc);
    }
    let mut rng = Rng(seed);
    let mut docs = Vec::new();
    let mut total = 0;
    while total < tokens {
        let len = (50 + rng.below(300) as usize).min(tokens - total);
        let doc: Vec<u32> = (0..len)
            .map(|_| {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * acc;
                cdf.partition_point(|&c| c < u) as u32
            })
            .collect();
        total += doc.len();
        docs.push(doc);
    }
    docs
}

fn cranfield_corpus() -> (Vec<Vec<u32>>, u32) {
    let corpus = read_corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/cranfield")).unwrap();
    let tok = GenretTokenizer::train(
        &TrainConfig::default(),
        corpus
            .docs
            .iter()
            .map(|d| format!("{}\n{}", d.title, d.text)),
    )
    .unwrap();
    let docs = corpus
        .docs
        .iter()
        .map(|d| document_tokens(&tok, d, true).unwrap())
        .collect();
    (docs, tok.vocab_size() as u32)
}

/// Patterns of length `m` taken at seeded random positions of the corpus.
fn sample_patterns(docs: &[Vec<u32>], m: usize, count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let doc = &docs[rng.below(docs.len() as u64) as usize];
        if doc.len() >= m {
            let start = rng.below((doc.len() - m + 1) as u64) as usize;
            out.push(doc[start..start + m].to_vec());
        }
    }
    out
}

/// The text exactly as genret lays it out (reversed documents, separators, final 0), for
/// the `fm-index` crate.
fn genret_layout(docs: &[Vec<u32>]) -> Vec<u32> {
    let mut text = Vec::new();
    for doc in docs {
        text.extend(doc.iter().rev().map(|&t| t + 2));
        text.push(1);
    }
    text.push(0);
    text
}

/// Percentiles of the time of one `continuations_into` call per cached range, in ns.
fn continuation_percentiles(fm: &FmIndex, ranges: &[FmRange]) -> (f64, f64, f64) {
    let mut buf: Vec<Continuation> = Vec::new();
    let mut times: Vec<f64> = ranges
        .iter()
        .map(|&r| {
            let reps = 200;
            let t = Instant::now();
            for _ in 0..reps {
                fm.continuations_into(black_box(r), &mut buf);
                black_box(&buf);
            }
            t.elapsed().as_nanos() as f64 / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    (q(0.5), q(0.95), q(0.99))
}

fn bench_corpus(c: &mut Criterion, name: &str, docs: &[Vec<u32>], vocab: u32) {
    let tokens: usize = docs.iter().map(Vec::len).sum();
    let t = Instant::now();
    let fm = FmIndex::build(docs, vocab, BuildOptions::default()).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "[{name}] {tokens} tokens, {} docs, vocab {vocab}: one build {:.2} s ({:.2} M tokens/s); \
         {:.2} bits/token with locate samples (rate {}), {:.2} without",
        docs.len(),
        build_s,
        tokens as f64 / build_s / 1e6,
        fm.bits_per_token(true),
        fm.sample_rate(),
        fm.bits_per_token(false),
    );

    let trigrams = sample_patterns(docs, 3, 1000, 7);
    // Cached ranges of 1- and 2-token contexts with at most 50 distinct next tokens, as the
    // decoder holds them.
    let mut cached: Vec<FmRange> = sample_patterns(docs, 2, 4000, 11)
        .iter()
        .flat_map(|p| [fm.range(&p[..1]), fm.range(p)])
        .filter(|&r| {
            let d = fm.continuations(r).len();
            (1..=50).contains(&d)
        })
        .collect();
    cached.truncate(2000);
    let (p50, p95, p99) = continuation_percentiles(&fm, &cached);
    let distinct: f64 = cached
        .iter()
        .map(|&r| fm.continuations(r).len() as f64)
        .sum::<f64>()
        / cached.len() as f64;
    println!(
        "[{name}] continuations from a cached range (<= 50 next tokens, mean {distinct:.1}, {} ranges): \
         p50 {:.0} ns, p95 {:.0} ns, p99 {:.0} ns",
        cached.len(),
        p50,
        p95,
        p99
    );

    let text = genret_layout(docs);
    let max = *text.iter().max().unwrap();
    let t = Instant::now();
    let other = FMIndexWithLocate::new(&Text::with_max_character(text.clone(), max), 5).unwrap();
    let other_build_s = t.elapsed().as_secs_f64();
    println!(
        "[{name}] fm-index crate (sampling level 5 = rate 32): one build {:.2} s ({:.2} M tokens/s), {:.2} bits/token",
        other_build_s,
        tokens as f64 / other_build_s / 1e6,
        other.heap_size() as f64 * 8.0 / tokens as f64,
    );
    // fm-index searches the stored (reversed, shifted) text: the same pattern, reversed.
    let other_patterns: Vec<Vec<u32>> = trigrams
        .iter()
        .map(|p| p.iter().rev().map(|&t| t + 2).collect())
        .collect();
    for (p, q) in trigrams.iter().zip(&other_patterns) {
        assert_eq!(
            fm.count(p),
            other.search(q).count(),
            "counts disagree on {p:?}"
        );
    }

    let mut group = c.benchmark_group(format!("fmindex/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(tokens as u64));
    group.bench_function("build/genret", |b| {
        b.iter(|| FmIndex::build(black_box(docs), vocab, BuildOptions::default()).unwrap())
    });
    group.bench_function("build/fm-index-crate", |b| {
        b.iter(|| {
            FMIndexWithLocate::new(&Text::with_max_character(black_box(text.clone()), max), 5)
                .unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("fmindex/{name}"));
    group.throughput(Throughput::Elements(trigrams.len() as u64));
    group.bench_function(BenchmarkId::new("count-3gram", "genret"), |b| {
        b.iter(|| {
            trigrams
                .iter()
                .map(|p| fm.count(black_box(p)))
                .sum::<usize>()
        })
    });
    group.bench_function(BenchmarkId::new("count-3gram", "fm-index-crate"), |b| {
        b.iter(|| {
            other_patterns
                .iter()
                .map(|p| other.search(black_box(p)).count())
                .sum::<usize>()
        })
    });
    group.throughput(Throughput::Elements(cached.len() as u64));
    group.bench_function("continuations-cached-range", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            let mut n = 0;
            for &r in &cached {
                fm.continuations_into(black_box(r), &mut buf);
                n += buf.len();
            }
            n
        })
    });
    let ranges: Vec<FmRange> = trigrams.iter().map(|p| fm.range(p)).collect();
    group.throughput(Throughput::Elements(ranges.len() as u64));
    group.bench_function("locate-3gram-first-10", |b| {
        b.iter(|| {
            ranges
                .iter()
                .map(|&r| fm.locate(black_box(r), 10).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let (cran, cran_vocab) = cranfield_corpus();
    bench_corpus(c, "cranfield", &cran, cran_vocab);
    let tokens = if std::env::var_os("GENRET_BENCH_QUICK").is_some() {
        1_000_000
    } else {
        10_000_000
    };
    let zipf = zipf_corpus(tokens, 32_000, 42);
    bench_corpus(c, "zipf-10m", &zipf, 32_000);
}

criterion_group! {
    name = fmindex;
    // No HTML plots: genret's plotters (with its ab_glyph text backend) is the same crate
    // criterion would draw with, and it has no font registered here.
    config = Criterion::default().without_plots();
    targets = benches
}
criterion_main!(fmindex);
