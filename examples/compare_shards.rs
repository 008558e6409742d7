//! Checks that a sharded index answers as the unsharded one: SEAL search of every query with
//! the model trained on `MODEL_INDEX`, on `WHOLE_INDEX` and on `SHARDED_INDEX` (the same
//! corpus and tokenizer, built with and without `genret index --shard-size`), and prints how
//! many queries got the same top 10 (documents and order) and the largest score difference.
//! Exits 1 on any difference.
//!
//! Run: `cargo run --release --example compare_shards -- cranfield.idx whole.idx four.idx corpus/cranfield`

use std::sync::Arc;

use genret::corpus::read_queries;
use genret::index::Index;
use genret::retrieve::{Retriever, SearchOptions};
use genret::seal::{Seal, load_model};

fn main() -> genret::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, trained, whole, sharded, queries] = &args[..] else {
        eprintln!("usage: compare_shards MODEL_INDEX WHOLE_INDEX SHARDED_INDEX QUERIES");
        std::process::exit(2);
    };
    let device = candle_core::Device::Cpu;
    let whole = Arc::new(Index::open(whole)?);
    let sharded = Arc::new(Index::open(sharded)?);
    let shards = sharded.fm.shards().len();
    let trained = Index::open(trained)?;
    let one = Seal::new(Arc::clone(&whole), load_model(&trained, &device)?)?;
    let many = Seal::new(Arc::clone(&sharded), load_model(&trained, &device)?)?;
    let queries = read_queries(queries)?;
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let options = SearchOptions::default();
    let a = one.retrieve(&texts, &options)?;
    let b = many.retrieve(&texts, &options)?;
    let (mut same, mut max_diff) = (0, 0f64);
    for (q, (x, y)) in a.answers.iter().zip(&b.answers).enumerate() {
        let top = |r: &genret::retrieve::Answer| -> Vec<u32> {
            r.hits.iter().take(10).map(|h| h.doc).collect()
        };
        if top(x) == top(y) {
            same += 1;
        } else {
            println!("query {}: {:?} vs {:?}", queries[q].id, top(x), top(y));
        }
        for (h, g) in x.hits.iter().zip(&y.hits).take(10) {
            max_diff = max_diff.max((h.score - g.score).abs());
        }
    }
    println!(
        "{same} of {} queries: the same top 10 with {shards} shards as with one; largest score \
         difference {max_diff:.3e}",
        texts.len()
    );
    if same != texts.len() {
        std::process::exit(1);
    }
    Ok(())
}
