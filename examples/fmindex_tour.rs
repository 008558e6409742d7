//! A tour of the FM-index on the shipped ADI collection: index it, then walk the n-grams
//! that continue a phrase, as constrained decoding does.
//!
//! Run: `cargo run --release --example fmindex_tour -- "information"`

use genret::corpus::read_corpus;
use genret::index::{BuildConfig, build};

fn main() -> genret::Result<()> {
    let phrase = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "information".into());
    let corpus = read_corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/adi"))?;
    let out = std::env::temp_dir().join("genret-tour.idx");
    let index = build(&corpus, &out, &BuildConfig::default())?;

    let tokens = index.tokenizer.encode(&phrase)?;
    let range = index.fm.range(&tokens);
    println!(
        "{phrase:?} -> tokens {tokens:?}: {} occurrences",
        range.count()
    );

    // The most frequent continuations, each extended once more from its cached span.
    let mut next = index.fm.continuations(&range);
    next.sort_by_key(|(_, span)| std::cmp::Reverse(span.count()));
    for (token, span) in next.iter().take(5) {
        let word = index.tokenizer.decode(&[*token], false)?;
        let after: Vec<String> = index
            .fm
            .continuations(span)
            .iter()
            .take(4)
            .map(|(t, _)| index.tokenizer.decode(&[*t], false).unwrap_or_default())
            .collect();
        println!(
            "  + {word:<16} x{:<4} then: {}",
            span.count(),
            after.join(" | ")
        );
    }
    for occ in index.fm.locate(&range, 3) {
        println!(
            "  in document {} at token {}",
            index.docs.id(occ.doc as usize)?,
            occ.offset
        );
    }
    Ok(())
}
