//! SEAL's scoring against naive versions written from its definition (`src/score.rs`): the
//! n-gram weight as a difference of log-odds, the intersective score by scanning every window
//! of the document, min-max fusion by visiting every document of every list. Random inputs,
//! seeded by proptest (a failure reproduces from its printed seed).

use std::collections::{BTreeMap, BTreeSet};

use genret::fmindex::{FmRange, Span};
use genret::retrieve::Fusion;
use genret::score::{SealParams, WeightedNgram, intersective_score, ngram_weight};
use genret::stem::Form;
use proptest::prelude::*;

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// w(n, q) = max(0, logit P(n|q) - logit P(n)), P(n) = (F + s) / (N + s); it grows with
    /// P(n|q) and falls with the n-gram's corpus frequency.
    #[test]
    fn ngram_weight_is_the_clamped_log_odds_difference(
        log_p in -30.0f64..-1e-6,
        freq in 0u32..5_000,
        extra in 1usize..1_000_000,
        smoothing in 0.5f64..10.0,
    ) {
        let n = freq as usize + extra;
        let w = ngram_weight(log_p, freq as f64, n, smoothing);
        let p_n = (freq as f64 + smoothing) / (n as f64 + smoothing);
        let naive = (logit(log_p.exp()) - logit(p_n)).max(0.0);
        prop_assert!((w - naive).abs() <= 1e-9 * naive.abs().max(1.0), "{w} vs {naive}");
        prop_assert!(ngram_weight(log_p * 0.5, freq as f64, n, smoothing) >= w);
        prop_assert!(ngram_weight(log_p, freq as f64 + 10.0, n + 10, smoothing) <= w + 1e-12);
    }
}

/// An n-gram written as `forms[0]`, also counted in the forms after it.
fn ngram(forms: &[Vec<u32>], weight: f64) -> WeightedNgram {
    let range = Span::single(FmRange {
        lo: 0,
        hi: 1,
        len: forms[0].len(),
    });
    WeightedNgram {
        tokens: forms[0].clone(),
        log_prob: -1.0,
        range: range.clone(),
        weight,
        variants: forms[1..]
            .iter()
            .map(|t| Form {
                tokens: t.clone(),
                range: range.clone(),
            })
            .collect(),
        docs: Vec::new(),
        doc_freq: 1.0,
    }
}

/// The intersective score from its definition: every window of the document compared with
/// every form of every n-gram, in the n-grams' order.
fn naive_score(
    doc: &[u32],
    ngrams: &[WeightedNgram],
    p: &SealParams,
    avg_len: f64,
) -> (f64, Vec<(usize, usize)>) {
    let norm = p.k1 * (1.0 - p.b + p.b * doc.len() as f64 / avg_len.max(1.0));
    let mut covered = BTreeSet::new();
    let mut score = 0.0;
    let mut matched = Vec::new();
    for (i, n) in ngrams.iter().enumerate() {
        let forms: Vec<Vec<u32>> = std::iter::once(n.tokens.clone())
            .chain(n.variants.iter().map(|f| f.tokens.clone()))
            .collect();
        let mut starts = BTreeSet::new();
        let mut words = BTreeSet::new();
        let mut first = None;
        for (f, form) in forms.iter().enumerate() {
            let hits: Vec<usize> = (0..doc.len())
                .filter(|&s| doc[s..].starts_with(form))
                .collect();
            if !hits.is_empty() {
                starts.extend(hits);
                words.extend(form.iter().copied());
                first.get_or_insert(f);
            }
        }
        let Some(first) = first else { continue };
        let tf = starts.len() as f64;
        let new = words.iter().filter(|t| !covered.contains(*t)).count();
        let cover = 1.0 - p.beta + p.beta * new as f64 / words.len() as f64;
        score += n.weight.powf(p.alpha) * cover * tf * (p.k1 + 1.0) / (tf + norm);
        covered.extend(words);
        matched.push((i, first));
    }
    (score, matched)
}

fn tokens(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..6, 1..=max_len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn intersective_score_equals_the_window_scan(
        doc in prop::collection::vec(0u32..6, 0..40),
        written in prop::collection::vec((prop::collection::vec(tokens(3), 1..3), 0.1f64..5.0), 0..6),
        alpha in 0.5f64..3.0,
        beta in 0.0f64..1.0,
        k1 in 0.0f64..2.0,
        b in 0.0f64..1.0,
        avg_len in 1.0f64..60.0,
    ) {
        let mut ngrams: Vec<WeightedNgram> =
            written.iter().map(|(forms, w)| ngram(forms, *w)).collect();
        ngrams.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        let params = SealParams { alpha, beta, k1, b, ..SealParams::default() };
        let (score, matched) = intersective_score(&doc, &ngrams, &params, avg_len);
        let (want, want_matched) = naive_score(&doc, &ngrams, &params, avg_len);
        prop_assert!((score - want).abs() <= 1e-9 * want.abs().max(1.0), "{score} vs {want}");
        prop_assert_eq!(matched, want_matched);
        prop_assert!(score >= 0.0);
    }

    #[test]
    fn min_max_fusion_equals_the_per_document_sum(
        lists in prop::collection::vec(
            prop::collection::btree_map(0u32..30, -50.0f64..50.0, 0..12), 0..4),
        k in 1usize..40,
    ) {
        let lists: Vec<Vec<(u32, f64)>> =
            lists.into_iter().map(|m| m.into_iter().collect()).collect();
        let refs: Vec<&[(u32, f64)]> = lists.iter().map(Vec::as_slice).collect();
        let fused = Fusion::MinMax.fuse(&refs, k);

        let mut want: BTreeMap<u32, f64> = BTreeMap::new();
        for list in &lists {
            let lo = list.iter().map(|h| h.1).fold(f64::INFINITY, f64::min);
            let hi = list.iter().map(|h| h.1).fold(f64::NEG_INFINITY, f64::max);
            for &(doc, s) in list {
                *want.entry(doc).or_default() += if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
            }
        }
        let mut want: Vec<(u32, f64)> = want.into_iter().collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        want.truncate(k);
        prop_assert_eq!(fused.len(), want.len());
        for (got, want) in fused.iter().zip(&want) {
            prop_assert_eq!(got.0, want.0);
            prop_assert!((got.1 - want.1).abs() < 1e-12);
            prop_assert!(got.1 >= 0.0 && got.1 <= lists.len() as f64 + 1e-12);
        }
    }
}
