//! Checks a trained index end to end: answers every query of a collection in SEAL and DSI
//! modes and verifies that every reported n-gram occurs in the document it retrieved and every
//! DSI result is named by a real docid. Prints a summary; exits 1 on any violation.
//!
//! Run: `cargo run --release --example verify_search -- cranfield.idx corpus/cranfield`

use genret::corpus::read_queries;
use genret::index::Index;
use genret::retrieve::{Mode, SearchOptions};
use genret::search::Searcher;

fn main() -> genret::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, index, queries] = &args[..] else {
        eprintln!("usage: verify_search INDEX_DIR QUERIES");
        std::process::exit(2);
    };
    let index = std::sync::Arc::new(Index::open(index)?);
    let searcher = Searcher::new(std::sync::Arc::clone(&index))?;
    let queries = read_queries(queries)?;
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let mut violations = 0;
    for mode in [Mode::SEAL, Mode::DSI] {
        let options = SearchOptions {
            mode,
            ..SearchOptions::default()
        };
        let results = searcher.search(&texts, &options)?;
        let (mut answered, mut ngrams) = (0, 0);
        for r in &results {
            answered += usize::from(!r.results.is_empty());
            for hit in &r.results {
                let doc = index.doc_position(&hit.doc_id)?;
                let tokens = index.fm.extract(doc)?;
                for t in &hit.tokens {
                    ngrams += 1;
                    let ok = match mode {
                        Mode::DSI => index.docids()?.lookup(t) == Some(doc),
                        _ => tokens.windows(t.len()).any(|w| w == &t[..]),
                    };
                    if !ok {
                        violations += 1;
                        eprintln!("violation: {:?} -> {} via {t:?}", r.query, hit.doc_id);
                    }
                }
            }
        }
        println!(
            "{mode:?}: {answered}/{} queries answered, {ngrams} reported strings checked",
            results.len()
        );
    }
    println!("violations: {violations}");
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
