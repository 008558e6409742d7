//! Property tests: every FM-index operation against a brute-force scan of the documents.
//!
//! Corpora are random (seeded by proptest, so a failure reproduces from its printed seed):
//! alphabets from 2 to 60,000 symbols, empty and one-token documents, patterns drawn from the
//! documents, across document boundaries, at random, and longer than any document.

use std::collections::{BTreeMap, BTreeSet};

use genret::fmindex::{BuildOptions, FmIndex, Occurrence};
use proptest::prelude::*;

/// Every (doc, offset) where `pattern` starts, by scanning each document.
fn naive_occurrences(docs: &[Vec<u32>], pattern: &[u32]) -> BTreeSet<Occurrence> {
    let mut out = BTreeSet::new();
    for (d, doc) in docs.iter().enumerate() {
        if pattern.len() > doc.len() {
            if pattern.is_empty() {
                out.insert(Occurrence {
                    doc: d as u32,
                    offset: 0,
                });
            }
            continue;
        }
        for off in 0..=doc.len() - pattern.len() {
            if doc[off..off + pattern.len()] == *pattern {
                out.insert(Occurrence {
                    doc: d as u32,
                    offset: off as u32,
                });
            }
        }
    }
    out
}

/// Next tokens after `pattern` with their counts, by scanning.
fn naive_continuations(docs: &[Vec<u32>], pattern: &[u32]) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for occ in naive_occurrences(docs, pattern) {
        let doc = &docs[occ.doc as usize];
        if let Some(&next) = doc.get(occ.offset as usize + pattern.len()) {
            *out.entry(next).or_insert(0) += 1;
        }
    }
    out
}

/// A random corpus: vocabulary size, documents (some empty, some of one token), patterns.
fn corpus() -> impl Strategy<Value = (u32, Vec<Vec<u32>>, Vec<Vec<u32>>)> {
    prop_oneof![Just(1u32), 2u32..8, 8u32..300, 300u32..60_000]
        .prop_flat_map(|vocab| {
            // Small alphabets draw all tokens; large ones mostly a few frequent ones, so
            // n-grams repeat as in real text.
            let token = prop_oneof![3 => 0..vocab.min(6), 1 => 0..vocab];
            let doc = prop_oneof![
                1 => Just(Vec::new()),
                1 => prop::collection::vec(token.clone(), 1..=1),
                6 => prop::collection::vec(token.clone(), 0..40),
            ];
            let docs = prop::collection::vec(doc, 1..12);
            let extra = prop::collection::vec(prop::collection::vec(token, 0..5), 0..4);
            (Just(vocab), docs, extra)
        })
        .prop_map(|(vocab, docs, extra)| {
            let mut patterns = extra;
            // Substrings of documents, of every length up to 6 at a few places.
            for doc in &docs {
                for len in 1..=6.min(doc.len()) {
                    for start in [0, doc.len() / 2, doc.len() - len] {
                        if start + len <= doc.len() {
                            patterns.push(doc[start..start + len].to_vec());
                        }
                    }
                }
            }
            // Patterns that exist only across a document boundary.
            for pair in docs.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                if let (Some(&x), Some(&y)) = (a.last(), b.first()) {
                    patterns.push(vec![x, y]);
                }
                let mut joined = a.clone();
                joined.extend_from_slice(b);
                patterns.push(joined);
            }
            // Longer than any document.
            let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
            patterns.push(vec![0; longest + 1]);
            patterns.push(Vec::new());
            (vocab, docs, patterns)
        })
}

fn check_all(vocab: u32, docs: &[Vec<u32>], patterns: &[Vec<u32>], rate: u32) {
    let index = FmIndex::build(
        docs,
        vocab,
        BuildOptions {
            sample_rate: rate,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    assert_eq!(index.docs(), docs.len());
    assert_eq!(index.tokens(), docs.iter().map(Vec::len).sum::<usize>());
    for (d, doc) in docs.iter().enumerate() {
        assert_eq!(&index.extract(d as u32).unwrap(), doc, "extract doc {d}");
        assert_eq!(index.doc_len(d as u32), doc.len());
    }
    assert!(index.extract(docs.len() as u32).is_err());
    for pattern in patterns {
        let expected = naive_occurrences(docs, pattern);
        let range = index.range(pattern);
        assert_eq!(range.count(), expected.len(), "count of {pattern:?}");
        assert_eq!(index.count(pattern), expected.len());
        let located: BTreeSet<Occurrence> = index.locate(range, usize::MAX).into_iter().collect();
        assert_eq!(located, expected, "locate {pattern:?}");
        let limited = index.locate(range, 2);
        assert_eq!(limited.len(), expected.len().min(2));
        assert!(limited.iter().all(|o| expected.contains(o)));
        // The occurrences at sampled text positions: genuine, distinct, and (with a sample
        // at every position) all of them; a limit keeps that many.
        let sampled = index.sampled_occurrences(range, usize::MAX);
        let distinct: BTreeSet<Occurrence> = sampled.iter().copied().collect();
        assert_eq!(distinct.len(), sampled.len(), "sampled twice: {pattern:?}");
        assert!(distinct.is_subset(&expected), "sampled {pattern:?}");
        if rate == 1 {
            assert_eq!(distinct, expected, "every position sampled: {pattern:?}");
        }
        assert_eq!(
            index.sampled_occurrences(range, 1).len(),
            sampled.len().min(1)
        );
        let naive_docs: BTreeSet<u32> = expected.iter().map(|o| o.doc).collect();
        assert_eq!(
            index.doc_frequency(pattern),
            naive_docs.len(),
            "df {pattern:?}"
        );

        let conts = index.continuations(range);
        let got: BTreeMap<u32, usize> = conts.iter().map(|c| (c.token, c.count)).collect();
        assert_eq!(
            got,
            naive_continuations(docs, pattern),
            "continuations {pattern:?}"
        );
        assert!(conts.windows(2).all(|w| w[0].token < w[1].token));
        for c in &conts {
            let mut longer = pattern.clone();
            longer.push(c.token);
            assert_eq!(
                c.range,
                index.range(&longer),
                "continuation range {longer:?}"
            );
            assert_eq!(c.range, index.extend(range, c.token));
        }
        // Extending by a token that never follows gives an empty range.
        for t in [0, vocab / 2, vocab - 1, vocab, u32::MAX] {
            if !got.contains_key(&t) {
                assert!(
                    index.extend(range, t).is_empty(),
                    "extend {pattern:?} by {t}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_brute_force((vocab, docs, patterns) in corpus(), rate in prop_oneof![Just(1u32), 2u32..5, Just(32)]) {
        check_all(vocab, &docs, &patterns, rate);
    }
}

#[test]
fn doc_of_maps_positions_to_documents() {
    let docs = vec![vec![1, 2], vec![], vec![3]];
    let index = FmIndex::build(&docs, 4, BuildOptions::default()).unwrap();
    // Text: [2 1 SEP] [SEP] [3 SEP] END
    assert_eq!(index.doc_of(0), Some((0, 0)));
    assert_eq!(index.doc_of(2), Some((0, 2)));
    assert_eq!(index.doc_of(3), Some((1, 0)));
    assert_eq!(index.doc_of(4), Some((2, 0)));
    assert_eq!(index.doc_of(6), None);
    assert_eq!(index.full_range().count(), 3 + 3);
}

#[test]
fn tokens_outside_the_vocabulary_are_rejected() {
    let err = FmIndex::build(&[vec![0, 7]], 5, BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("position 1"), "{err}");
    assert!(
        FmIndex::build(
            &[vec![0]],
            5,
            BuildOptions {
                sample_rate: 0,
                ..BuildOptions::default()
            }
        )
        .is_err()
    );
}

#[test]
fn empty_corpus_and_all_empty_documents() {
    for docs in [vec![], vec![vec![], vec![]]] {
        let index = FmIndex::build(&docs, 3, BuildOptions::default()).unwrap();
        assert_eq!(index.tokens(), 0);
        assert_eq!(index.count(&[0]), 0);
        assert!(index.continuations(index.full_range()).is_empty());
        for d in 0..docs.len() as u32 {
            assert!(index.extract(d).unwrap().is_empty());
        }
    }
}

#[test]
fn large_alphabet_uses_the_wide_suffix_array_path() {
    // vocab + 2 > 65536 forces 32-bit symbols.
    let vocab = 70_000;
    let docs: Vec<Vec<u32>> = (0..50u32)
        .map(|d| (0..30).map(|i| (d * 1_399 + i * 2_333) % vocab).collect())
        .collect();
    let patterns: Vec<Vec<u32>> = docs.iter().map(|d| d[3..6].to_vec()).collect();
    check_all(vocab, &docs, &patterns, 4);
}
