//! A reproducible corpus of any size from real English sentences, for measuring how genret
//! grows with the corpus (issue 24, scripts/bench_scale.sh).
//!
//! The sentences of the shipped collections (corpus/: ADI, Cranfield, CISI, SQuAD paragraphs)
//! are pooled; passage i is 3-5 of them drawn by a seeded ChaCha8 generator, so the same
//! arguments always write the same bytes. Queries are one sentence of a sampled passage; every
//! passage that holds that sentence is judged relevant (a pooled sentence recurs in about
//! passages x 4 / pool passages), so `hit@10` asks whether search finds one of the passages
//! that say it.
//!
//! Run: `cargo run --release --example scale_corpus -- PASSAGES OUT_DIR [QUERIES] [SEED]`
//! (writes OUT_DIR/corpus.jsonl, queries.jsonl, qrels/test.tsv: a BEIR folder).

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::Path;

use genret::corpus::Collection;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sentences of at least this many words are pooled; shorter ones are headings and fragments.
const MIN_WORDS: usize = 5;

fn sentences(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_inclusive(['.', '?', '!'])
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| s.split(' ').count() >= MIN_WORDS)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: scale_corpus PASSAGES OUT_DIR [QUERIES=200] [SEED=24]");
        std::process::exit(2);
    }
    let passages: usize = args[0].parse()?;
    let out = Path::new(&args[1]);
    let queries: usize = args.get(2).map_or(Ok(200), |a| a.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(24), |a| a.parse())?;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut pool = Vec::new();
    let mut seen = HashSet::new();
    for name in ["adi", "cranfield", "cisi", "squad"] {
        let collection = Collection::open(root.join(name), false)?;
        for doc in &collection.corpus.docs {
            for s in sentences(&doc.text) {
                if seen.insert(s.clone()) {
                    pool.push(s);
                }
            }
        }
    }
    eprintln!("{} distinct sentences pooled", pool.len());

    std::fs::create_dir_all(out.join("qrels"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picks: Vec<Vec<u32>> = Vec::with_capacity(passages);
    let mut corpus = BufWriter::new(std::fs::File::create(out.join("corpus.jsonl"))?);
    for i in 0..passages {
        let n = rng.random_range(3..=5);
        let chosen: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..pool.len()) as u32)
            .collect();
        let text = chosen
            .iter()
            .map(|&s| pool[s as usize].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let line = serde_json::json!({"_id": format!("p{i}"), "title": "", "text": text});
        serde_json::to_writer(&mut corpus, &line)?;
        corpus.write_all(b"\n")?;
        picks.push(chosen);
    }
    corpus.flush()?;

    // Queries from a separately seeded stream, so their choice does not move the passages.
    let mut qrng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let asked: Vec<(usize, u32)> = (0..queries.min(passages))
        .map(|_| {
            let p = qrng.random_range(0..passages);
            (p, picks[p][qrng.random_range(0..picks[p].len())])
        })
        .collect();
    let wanted: HashSet<u32> = asked.iter().map(|&(_, s)| s).collect();
    let mut holders: HashMap<u32, Vec<usize>> = HashMap::new();
    for (p, chosen) in picks.iter().enumerate() {
        for s in chosen.iter().filter(|s| wanted.contains(s)) {
            let list = holders.entry(*s).or_default();
            if list.last() != Some(&p) {
                list.push(p);
            }
        }
    }
    let mut qfile = BufWriter::new(std::fs::File::create(out.join("queries.jsonl"))?);
    let mut qrels = BufWriter::new(std::fs::File::create(out.join("qrels/test.tsv"))?);
    writeln!(qrels, "query-id\tcorpus-id\tscore")?;
    for (q, &(_, s)) in asked.iter().enumerate() {
        let line = serde_json::json!({"_id": format!("q{q}"), "text": pool[s as usize]});
        serde_json::to_writer(&mut qfile, &line)?;
        qfile.write_all(b"\n")?;
        for p in &holders[&s] {
            writeln!(qrels, "q{q}\tp{p}\t1")?;
        }
    }
    qfile.flush()?;
    qrels.flush()?;
    eprintln!(
        "{passages} passages, {} queries -> {}",
        asked.len(),
        out.display()
    );
    Ok(())
}
