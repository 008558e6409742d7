//! Constrained decoding: the FM-index and docid-trie constraints let through exactly the valid
//! continuations (checked against brute force), and beam search with a beam at least as wide
//! as the set of valid strings returns all of them with the scores a full forward pass gives.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{D, Device, IndexOp};
use genret::decode::{BeamOptions, Constraint, FmConstraint, TrieConstraint, beam_search};
use genret::docid::{DocIds, Scheme};
use genret::fmindex::{BuildOptions, FmIndex, Shards};
use genret::model::{Config, Preset, T5ForConditionalGeneration, init_params};
use proptest::prelude::*;

/// Brute force: every token that follows `prefix` somewhere in `docs`, with its count.
fn next_tokens(docs: &[Vec<u32>], prefix: &[u32]) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for d in docs {
        for start in 0..d.len() {
            let end = start + prefix.len();
            if end < d.len() && d[start..end] == *prefix {
                *out.entry(d[end]).or_default() += 1;
            }
        }
    }
    out
}

fn occurrences(docs: &[Vec<u32>], pattern: &[u32]) -> usize {
    docs.iter()
        .map(|d| d.windows(pattern.len()).filter(|w| *w == pattern).count())
        .sum()
}

fn corpus() -> impl Strategy<Value = (u32, Vec<Vec<u32>>)> {
    (2u32..12).prop_flat_map(|vocab| {
        (
            Just(vocab),
            prop::collection::vec(prop::collection::vec(0..vocab, 0..30), 1..8),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Walking the FM-index constraint along random choices: the allowed set equals the
    /// brute-force set of next tokens (minus banned ones), each step's range counts exactly the
    /// n-gram's occurrences, and so every n-gram it lets through occurs in the corpus.
    #[test]
    fn fm_constraint_allows_exactly_corpus_ngrams(
        (vocab, docs) in corpus(),
        choices in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        banned in prop::collection::vec(0u32..12, 0..3),
        shard_size in 3usize..40,
    ) {
        // In shards of a random size (at least the longest document's): sharded
        // continuations are merged to exactly the whole corpus's.
        let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
        let options = BuildOptions {
            sample_rate: 3,
            shard_symbols: shard_size.max(longest + 2),
        };
        let fm = Shards::build(&docs, vocab, options).unwrap();
        let c = FmConstraint::new(&fm, banned.clone(), 1);
        let mut state = fm.full_range();
        let mut ngram: Vec<u32> = Vec::new();
        for choice in choices {
            let mut allowed = Vec::new();
            c.next_into(&state, &mut allowed);
            let expected: BTreeSet<u32> = if ngram.is_empty() {
                docs.iter().flatten().copied().collect()
            } else {
                next_tokens(&docs, &ngram).into_keys().collect()
            };
            let expected: BTreeSet<u32> =
                expected.into_iter().filter(|t| !banned.contains(t)).collect();
            let got: BTreeSet<u32> = allowed.iter().map(|(t, _)| *t).collect();
            prop_assert_eq!(&got, &expected, "after {:?}", ngram);
            if allowed.is_empty() {
                break;
            }
            let (token, next) = allowed[choice.index(allowed.len())].clone();
            ngram.push(token);
            state = next;
            let occ = occurrences(&docs, &ngram);
            prop_assert!(occ > 0, "{:?} does not occur", ngram);
            prop_assert_eq!(state.count(), occ);
            prop_assert!(c.can_end(&state));
        }
    }

    /// The docid trie: children are exactly the next symbols of identifiers with that prefix,
    /// a state is terminal exactly when its prefix is an identifier, and lookup finds each one.
    #[test]
    fn trie_allows_exactly_docid_prefixes(
        raw in prop::collection::btree_set(prop::collection::vec(0u32..5, 1..5), 1..30),
        offset in 0u32..100,
        choices in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
    ) {
        let seqs: Vec<Vec<u32>> = raw.into_iter().collect();
        let ids = DocIds::from_sequences(Scheme::Atomic, offset, 5, &seqs).unwrap();
        for (d, s) in seqs.iter().enumerate() {
            let tokens: Vec<u32> = s.iter().map(|x| x + offset).collect();
            prop_assert_eq!(ids.lookup(&tokens), Some(d as u32));
            prop_assert_eq!(ids.tokens(d as u32), tokens);
        }
        let c = TrieConstraint { docids: &ids };
        let mut state = ids.root();
        let mut prefix: Vec<u32> = Vec::new();
        for choice in choices {
            let expected: BTreeSet<u32> = seqs
                .iter()
                .filter(|s| s.len() > prefix.len() && s[..prefix.len()] == *prefix)
                .map(|s| s[prefix.len()] + offset)
                .collect();
            let mut allowed = Vec::new();
            c.next_into(&state, &mut allowed);
            let got: Vec<u32> = allowed.iter().map(|(t, _)| *t).collect();
            prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
            let is_id = seqs.iter().position(|s| *s == prefix);
            prop_assert_eq!(ids.terminal(state), is_id.map(|d| d as u32));
            prop_assert_eq!(c.can_end(&state), is_id.is_some());
            if allowed.is_empty() {
                break;
            }
            let (token, next) = allowed[choice.index(allowed.len())];
            prefix.push(token - offset);
            state = next;
            prop_assert!(seqs.iter().any(|s| s.starts_with(&prefix)));
        }
    }
}

#[test]
fn docids_reject_duplicates_and_empty_identifiers() {
    assert!(DocIds::from_sequences(Scheme::Naive, 10, 3, &[vec![1], vec![1]]).is_err());
    assert!(DocIds::from_sequences(Scheme::Naive, 10, 3, &[vec![1], vec![]]).is_err());
    assert!(DocIds::from_sequences(Scheme::Naive, 10, 3, &[vec![1], vec![3]]).is_err());
    assert!(DocIds::from_sequences(Scheme::Naive, 10, 3, &[vec![1], vec![1, 2]]).is_ok());
}

fn tiny_model(vocab: usize, seed: u64) -> T5ForConditionalGeneration {
    let mut config = Config::preset(Preset::Tiny, vocab);
    config.pad_token_id = 0;
    config.eos_token_id = 1;
    config.decoder_start_token_id = 0;
    let params = init_params(&config, seed, &Device::Cpu).unwrap();
    T5ForConditionalGeneration::new(&config, &params).unwrap()
}

/// Score of `seq` then EOS (when `finished`) after `start prefix`, by a full forward pass.
fn full_score(
    model: &T5ForConditionalGeneration,
    source: &[u32],
    prefix: &[u32],
    seq: &[u32],
    finished: bool,
) -> f32 {
    let mut dec = vec![model.config.decoder_start_token_id];
    dec.extend_from_slice(prefix);
    dec.extend_from_slice(seq);
    let mut targets: Vec<u32> = seq.to_vec();
    if finished {
        targets.push(model.config.eos_token_id);
    } else {
        dec.pop();
    }
    let (ids, mask) = model.pad_batch(&[source.to_vec()]).unwrap();
    let (dec_ids, _) = model.pad_batch(&[dec.clone()]).unwrap();
    let logits = model.forward(&ids, &mask, &dec_ids).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits.i(0).unwrap(), D::Minus1).unwrap();
    let logp: Vec<Vec<f32>> = logp.to_vec2().unwrap();
    let first = prefix.len() + 1; // position whose output is the first decoded token
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| logp[first - 1 + i][t as usize])
        .sum()
}

#[test]
fn beam_search_over_a_trie_returns_the_brute_force_set() {
    let vocab = 16;
    let model = tiny_model(vocab, 7);
    // Identifiers over tokens 10..16 (offset 10), one a prefix of another.
    let seqs = vec![
        vec![0, 1],
        vec![0, 1, 2],
        vec![0, 3],
        vec![4],
        vec![5, 5, 5, 5],
        vec![2, 0, 1],
    ];
    let ids = DocIds::from_sequences(Scheme::Atomic, 10, 6, &seqs).unwrap();
    let c = TrieConstraint { docids: &ids };
    let sources = vec![vec![3, 4, 5, 6], vec![7, 8], vec![9, 9, 9, 2, 3]];
    let prefix = [2u32];
    let options = BeamOptions {
        beam: seqs.len(),
        max_len: 4,
        history: 0,
    };
    let (decoded, times) =
        beam_search(&model, &sources, &prefix, &c, &ids.root(), &options).unwrap();
    assert!(times.steps > 0);
    for (q, d) in decoded.iter().enumerate() {
        let mut expected: Vec<(Vec<u32>, f32)> = seqs
            .iter()
            .map(|s| {
                let t: Vec<u32> = s.iter().map(|x| x + 10).collect();
                let score = full_score(&model, &sources[q], &prefix, &t, true);
                (t, score)
            })
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(d.finished.len(), expected.len(), "query {q}");
        for (h, (t, score)) in d.finished.iter().zip(&expected) {
            assert_eq!(&h.tokens, t, "query {q}: order or content differs");
            assert!((h.score - score).abs() <= 1e-4, "{} vs {score}", h.score);
            assert_eq!(ids.terminal(h.state), ids.lookup(t));
        }
    }
}

/// A batch large enough to be split between two threads (each half decoded whole on its own)
/// answers every query, in order, as that query decoded alone.
#[test]
fn a_batch_split_between_threads_decodes_each_query_as_alone() {
    let model = tiny_model(16, 11);
    let seqs = vec![
        vec![0, 1],
        vec![0, 1, 2],
        vec![0, 3],
        vec![4],
        vec![2, 0, 1],
    ];
    let ids = DocIds::from_sequences(Scheme::Atomic, 10, 6, &seqs).unwrap();
    let c = TrieConstraint { docids: &ids };
    let sources: Vec<Vec<u32>> = (0..9u32)
        .map(|q| (0..3 + q % 4).map(|t| 2 + (q * 5 + t * 3) % 14).collect())
        .collect();
    let options = BeamOptions {
        beam: 3,
        max_len: 4,
        history: 2,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let decode = |s: &[Vec<u32>]| {
        pool.install(|| beam_search(&model, s, &[2], &c, &ids.root(), &options))
            .unwrap()
            .0
    };
    let together = decode(&sources);
    assert_eq!(together.len(), sources.len());
    for (q, d) in together.iter().enumerate() {
        let alone = decode(&sources[q..q + 1]).remove(0);
        for (got, want) in [(&d.finished, &alone.finished), (&d.history, &alone.history)] {
            assert_eq!(got.len(), want.len(), "query {q}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.tokens, w.tokens, "query {q}");
                assert!(
                    (g.score - w.score).abs() <= 1e-5,
                    "query {q}: {g:?} vs {w:?}"
                );
            }
        }
    }
}

#[test]
fn beam_search_with_history_returns_every_corpus_ngram() {
    let vocab = 14;
    let model = tiny_model(vocab, 3);
    let docs = vec![vec![5, 6, 7, 5], vec![6, 7, 8], vec![9, 5, 6]];
    let fm = Shards::from(FmIndex::build(&docs, vocab as u32, BuildOptions::default()).unwrap());
    let c = FmConstraint::new(&fm, vec![0, 1], 1);
    let max_len = 3;
    let mut all: BTreeSet<Vec<u32>> = BTreeSet::new();
    for d in &docs {
        for n in 1..=max_len {
            for w in d.windows(n) {
                all.insert(w.to_vec());
            }
        }
    }
    let sources = vec![vec![5, 6], vec![8, 8, 9]];
    let options = BeamOptions {
        beam: all.len(),
        max_len,
        history: all.len(),
    };
    let (decoded, _) = beam_search(&model, &sources, &[2], &c, &fm.full_range(), &options).unwrap();
    for (q, d) in decoded.iter().enumerate() {
        let got: BTreeSet<Vec<u32>> = d.history.iter().map(|h| h.tokens.clone()).collect();
        assert_eq!(
            got, all,
            "query {q}: history must hold every n-gram up to {max_len}"
        );
        let finished: BTreeSet<Vec<u32>> = d.finished.iter().map(|h| h.tokens.clone()).collect();
        assert_eq!(finished, all, "query {q}: every n-gram may end");
        for h in &d.history {
            assert_eq!(h.state.count(), fm.count(&h.tokens));
            let want = full_score(&model, &sources[q], &[2], &h.tokens, false);
            assert!(
                (h.score - want).abs() <= 1e-4,
                "{:?}: {} vs {want}",
                h.tokens,
                h.score
            );
        }
        assert!(d.history.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // A history wider than the beam: every first token is kept though one beam continues,
    // and the second step's extensions of that beam, scored exactly.
    let narrow = BeamOptions {
        beam: 1,
        max_len,
        history: all.len(),
    };
    let (decoded, _) = beam_search(&model, &sources, &[2], &c, &fm.full_range(), &narrow).unwrap();
    for (q, d) in decoded.iter().enumerate() {
        let unigrams: BTreeSet<Vec<u32>> = all.iter().filter(|n| n.len() == 1).cloned().collect();
        let got: BTreeSet<Vec<u32>> = d
            .history
            .iter()
            .filter(|h| h.tokens.len() == 1)
            .map(|h| h.tokens.clone())
            .collect();
        assert_eq!(got, unigrams, "query {q}");
        let best = d.history.iter().find(|h| h.tokens.len() == 1).unwrap();
        let bigrams: Vec<&Vec<u32>> = all
            .iter()
            .filter(|n| n.len() == 2 && n[0] == best.tokens[0])
            .collect();
        for b in bigrams {
            assert!(d.history.iter().any(|h| &h.tokens == b), "{b:?} missing");
        }
        assert!(d.history.iter().all(|h| {
            h.tokens[..h.tokens.len() - 1]
                .iter()
                .zip(&best.tokens)
                .all(|(a, b)| a == b)
                || h.tokens.len() == 1
        }));
        for h in &d.history {
            let want = full_score(&model, &sources[q], &[2], &h.tokens, false);
            assert!((h.score - want).abs() <= 1e-4, "{:?}", h.tokens);
        }
    }
}

#[test]
fn beam_search_survives_empty_constraints_and_narrow_beams() {
    let model = tiny_model(12, 1);
    // A corpus of one token: after it nothing may follow, so beams die after one step.
    let fm = Shards::from(FmIndex::build(&[vec![5]], 12, BuildOptions::default()).unwrap());
    let c = FmConstraint::new(&fm, vec![], 1);
    let options = BeamOptions {
        beam: 1,
        max_len: 6,
        history: 1,
    };
    let (decoded, _) =
        beam_search(&model, &[vec![3]], &[], &c, &fm.full_range(), &options).unwrap();
    assert_eq!(decoded[0].history.len(), 1);
    assert_eq!(decoded[0].history[0].tokens, vec![5]);
    // Everything banned: nothing to decode, no panic.
    let c = FmConstraint::new(&fm, vec![5], 1);
    let (decoded, _) = beam_search(
        &model,
        &[vec![3], vec![4]],
        &[],
        &c,
        &fm.full_range(),
        &options,
    )
    .unwrap();
    assert!(
        decoded
            .iter()
            .all(|d| d.history.is_empty() && d.finished.is_empty())
    );
    // No queries.
    let (decoded, _) = beam_search(&model, &[], &[], &c, &fm.full_range(), &options).unwrap();
    assert!(decoded.is_empty());
    // Beam 0 is a clear error.
    let zero = BeamOptions { beam: 0, ..options };
    assert!(beam_search(&model, &[vec![3]], &[], &c, &fm.full_range(), &zero).is_err());
}
