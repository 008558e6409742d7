//! Search end to end: docid schemes, SEAL's scoring formula against hand-computed values, and
//! `genret search` on Cranfield with a briefly trained tiny model (every query answered, every
//! reported n-gram occurs in its document, every DSI result is a real docid).

use std::path::Path;
use std::process::Command;

use genret::corpus::{read_corpus, read_queries};
use genret::docid::{DocIds, Scheme};
use genret::fmindex::{BuildOptions, FmIndex, Shards};
use genret::index::{BuildConfig, Index, TokenizerSource, build};
use genret::model::Preset;
use genret::retrieve::Fusion;
use genret::retrieve::{Mode, SearchOptions};
use genret::score::{SealParams, WeightedNgram, intersective_score, ngram_weight, seal_rank};
use genret::search::Searcher;
use genret::tokenize::TrainConfig as TokenizerConfig;
use genret::train::{TaskMix, TrainConfig, train};

fn corpus_path(name: &str) -> String {
    format!("{}/corpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn index_of(name: &str, dir: &Path, docids: Scheme) -> Index {
    let corpus = read_corpus(corpus_path(name)).unwrap();
    let config = BuildConfig {
        tokenizer: TokenizerSource::Train(TokenizerConfig {
            vocab_size: 2000,
            ..TokenizerConfig::default()
        }),
        docids,
        ..BuildConfig::default()
    };
    build(&corpus, dir, &config).unwrap()
}

#[test]
fn ngram_weight_matches_hand_computation() {
    // P(n|q) = 0.5; DF = 15, N = 995, s = 5: P(n) = 20 / 1000 = 0.02.
    // w = ln(0.5 * 0.98) - ln(0.02 * 0.5) = ln(49).
    let w = ngram_weight(0.5f64.ln(), 15.0, 995, 5.0);
    assert!((w - 49f64.ln()).abs() < 1e-9, "{w}");
    // An n-gram the model likes less than the corpus predicts weighs nothing.
    assert_eq!(ngram_weight(0.001f64.ln(), 500.0, 995, 5.0), 0.0);
    // A certain n-gram gets a large finite weight.
    let certain = ngram_weight(0.0, 0.0, 995, 5.0);
    assert!(certain.is_finite() && certain > 20.0);
}

fn ngram(tokens: &[u32], weight: f64) -> WeightedNgram {
    WeightedNgram {
        tokens: tokens.to_vec(),
        log_prob: -1.0,
        range: genret::fmindex::Span::single(genret::fmindex::FmRange {
            lo: 0,
            hi: 1,
            len: tokens.len(),
        }),
        weight,
        variants: Vec::new(),
        docs: Vec::new(),
        doc_freq: 0.0,
    }
}

#[test]
fn intersective_score_matches_hand_computation() {
    // SEAL's score: alpha 2, beta 0.8, no term-frequency saturation.
    let params = SealParams {
        k1: 0.0,
        ..SealParams::default()
    };
    let doc = [1, 2, 3, 4, 5];
    let ngrams = [
        ngram(&[2, 3], 2.0),
        ngram(&[3, 4], 1.0),
        ngram(&[9], 5.0),
        ngram(&[5], 0.5),
    ];
    // [2 3]: all new, 2^2 * 1 = 4. [3 4]: one of two tokens new, cover = 0.2 + 0.8 * 0.5 = 0.6,
    // 1^2 * 0.6 = 0.6. [9] is absent. [5]: new, 0.25. Total 4.85.
    let (score, matched) = intersective_score(&doc, &ngrams, &params, 5.0);
    assert!((score - 4.85).abs() < 1e-12, "{score}");
    assert_eq!(matched, vec![(0, 0), (1, 0), (3, 0)]);
    // Without the coverage penalty [3 4] counts fully.
    let flat = SealParams {
        beta: 0.0,
        ..params
    };
    assert!((intersective_score(&doc, &ngrams, &flat, 5.0).0 - 5.25).abs() < 1e-12);

    // BM25's saturation (k1 1.2, b 0.75): an n-gram found once in a document of average length
    // counts as in SEAL's score...
    let bm25 = SealParams::default();
    assert!((intersective_score(&doc, &ngrams, &bm25, 5.0).0 - 4.85).abs() < 1e-12);
    // ... twice, 2 * 2.2 / (2 + 1.2) times; here the document is also the average length.
    let repeated = [1, 2, 3, 4, 5, 5];
    let (score, _) = intersective_score(&repeated, &ngrams, &bm25, 6.0);
    let want = 4.0 + 0.6 + 0.25 * 2.0 * 2.2 / 3.2;
    assert!((score - want).abs() < 1e-12, "{score} vs {want}");
    // A document twice the average length: norm 1.2 * (0.25 + 0.75 * 2) = 2.1.
    let (score, _) = intersective_score(&doc, &ngrams, &bm25, 2.5);
    let want = (4.0 + 0.6 + 0.25) * 2.2 / 3.1;
    assert!((score - want).abs() < 1e-12, "{score} vs {want}");
}

#[test]
fn a_word_with_variants_counts_each_position_once() {
    // [5] with the forms [8] and [5, 6] (which starts where [5] does) in a document that holds
    // them at 3 positions scores as an exact n-gram found 3 times in a document as long.
    let doc = vec![5, 6, 7, 5, 8];
    let form = |tokens: &[u32]| genret::stem::Form {
        tokens: tokens.to_vec(),
        range: ngram(tokens, 0.0).range,
    };
    let word = WeightedNgram {
        variants: vec![form(&[8]), form(&[5, 6])],
        ..ngram(&[5], 2.0)
    };
    let params = SealParams::default();
    let (score, matched) = intersective_score(&doc, &[word], &params, 4.0);
    let (exact, _) = intersective_score(&[1, 1, 1, 0, 0], &[ngram(&[1], 2.0)], &params, 4.0);
    assert_eq!(matched, vec![(0, 0)], "the written form occurs first");
    assert!((score - exact).abs() < 1e-12, "{score} vs {exact}");
    let (twice, _) = intersective_score(&[1, 1, 0, 0, 0], &[ngram(&[1], 2.0)], &params, 4.0);
    assert!(score > twice);
}

#[test]
fn min_max_fusion_normalises_each_list_and_sums() {
    let a = [(1, 10.0), (2, 5.0), (3, 0.0)];
    let b = [(3, 0.9), (4, 0.1)];
    let fused = Fusion::MinMax.fuse(&[&a, &b], 10);
    // 1: 1 + 0; 3: 0 + 1; 2: 0.5; 4: 0 + 0. Ties by document number.
    assert_eq!(fused, vec![(1, 1.0), (3, 1.0), (2, 0.5), (4, 0.0)]);
    // A list of equal scores counts 1 for each of its documents; k truncates.
    let flat = [(7, 3.0), (2, 3.0)];
    assert_eq!(
        Fusion::MinMax.fuse(&[&flat, &b], 2),
        vec![(2, 1.0), (3, 1.0)]
    );
    assert!(Fusion::MinMax.fuse(&[], 5).is_empty());
}

#[test]
fn seal_rank_prefers_documents_with_more_and_stronger_ngrams() {
    let docs = vec![vec![5, 6, 7], vec![5, 6, 8, 9], vec![9, 9], vec![7, 7, 7]];
    let fm = Shards::from(FmIndex::build(&docs, 12, BuildOptions::default()).unwrap());
    let mk = |t: &[u32], w: f64| {
        let mut n = WeightedNgram {
            range: fm.range(t),
            ..ngram(t, w)
        };
        n.locate_docs(&fm, 1000, 1000);
        n
    };
    let ngrams = vec![mk(&[5, 6], 3.0), mk(&[8], 2.0), mk(&[7], 1.0)];
    let seal = SealParams {
        k1: 0.0,
        ..SealParams::default()
    };
    let ranked = seal_rank(&fm, &ngrams, &seal, 10, &|d| fm.extract(d)).unwrap();
    let order: Vec<u32> = ranked.iter().map(|r| r.doc).collect();
    // doc 1: 9 + 4 = 13; doc 0: 9 + 1 = 10; doc 3: 1; doc 2 has none.
    assert_eq!(order, vec![1, 0, 3]);
    assert!((ranked[0].score - 13.0).abs() < 1e-12);
    assert_eq!(ranked[0].ngrams, vec![(0, 0), (1, 0)]);
}

#[test]
fn document_frequency_is_exact_up_to_the_limit_and_estimated_beyond() {
    use rand::{Rng, SeedableRng};
    // Token 1 once in each of 300 documents, token 2 ten times in each of 30: 300 occurrences
    // each. Random fillers (seeded) put their occurrences in suffix-array order by the text
    // after them, as real text does.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut filler = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(3..40)).collect() };
    let mut docs: Vec<Vec<u32>> = (0..300)
        .map(|_| [filler(5), vec![1], filler(5)].concat())
        .collect();
    for _ in 0..30 {
        docs.push(
            (0..10)
                .flat_map(|_| [vec![2], filler(3)].concat())
                .collect(),
        );
    }
    let fm = Shards::from(FmIndex::build(&docs, 40, BuildOptions::default()).unwrap());
    let located = |t: u32, limit: usize| {
        let mut n = WeightedNgram {
            range: fm.range(&[t]),
            ..ngram(&[t], 1.0)
        };
        n.doc_freq = n.locate_docs(&fm, limit, limit);
        n
    };
    // Up to the limit: exact, against a scan of the documents.
    for t in [1, 2, 5] {
        let n = located(t, 1000);
        let want: Vec<u32> = (0..docs.len() as u32)
            .filter(|&d| docs[d as usize].contains(&t))
            .collect();
        assert_eq!(n.docs, want, "token {t}");
        assert_eq!(n.doc_freq, want.len() as f64);
    }
    // Beyond it, from a sample of 100 occurrences: the once-per-document word is estimated at
    // (nearly) its 300 documents, the repeated one near its 30, where scaling the documents
    // seen by the sampled fraction would say ~300 for both.
    let once = located(1, 100);
    let repeated = located(2, 100);
    assert!(once.docs.len() <= 100 && repeated.docs.len() <= 30);
    assert!(
        once.doc_freq >= 250.0 && once.doc_freq <= 300.0,
        "{}",
        once.doc_freq
    );
    assert!(
        repeated.doc_freq >= 30.0 && repeated.doc_freq <= 45.0,
        "{}",
        repeated.doc_freq
    );
}

#[test]
fn docid_schemes_are_unique_deterministic_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in [
        Scheme::Semantic,
        Scheme::Naive,
        Scheme::Atomic,
        Scheme::Title,
    ] {
        let path = dir.path().join(scheme.name());
        let index = index_of("adi", &path, scheme);
        let ids = index.docids().unwrap();
        assert_eq!(ids.scheme(), scheme);
        assert_eq!(ids.len(), 82);
        for d in 0..82u32 {
            assert_eq!(ids.lookup(&ids.tokens(d)), Some(d), "{scheme:?} doc {d}");
        }
        // Reopened from disk: identical.
        let reopened = Index::open(&path).unwrap();
        assert_eq!(reopened.docids().unwrap(), ids);
        // The trie is compact: at most 16 bytes per identifier token.
        let tokens: usize = (0..82).map(|d| ids.symbols(d).len()).sum();
        assert!(
            ids.size_bytes() <= 16 * tokens,
            "{scheme:?}: {} bytes",
            ids.size_bytes()
        );
        match scheme {
            Scheme::Semantic => {
                // 82 documents fit one leaf: position only. Cluster paths are tested below.
                assert!(ids.max_len() == 1);
                assert_eq!(ids.extra_tokens(), 100);
            }
            Scheme::Naive => assert_eq!(ids.symbols(81), &[8, 1]),
            Scheme::Atomic => assert_eq!(ids.extra_tokens(), 82),
            Scheme::Title => assert_eq!(ids.extra_tokens(), 0),
        }
    }
    // Semantic ids over Cranfield: several levels, k <= 10 per level, leaves <= 100, and the
    // same build gives the same ids.
    let a = index_of("cranfield", &dir.path().join("c1"), Scheme::Semantic);
    let b = index_of("cranfield", &dir.path().join("c2"), Scheme::Semantic);
    assert_eq!(a.docids().unwrap(), b.docids().unwrap());
    let ids = a.docids().unwrap();
    assert!(ids.max_len() >= 2);
    let mut leaves: std::collections::HashMap<Vec<u32>, usize> = Default::default();
    for d in 0..ids.len() as u32 {
        let s = ids.symbols(d);
        assert!(s[..s.len() - 1].iter().all(|&c| c < 10));
        assert!(s[s.len() - 1] < 100);
        *leaves.entry(s[..s.len() - 1].to_vec()).or_default() += 1;
    }
    assert!(leaves.values().all(|&n| n <= 100));
    // A damaged docids file is refused when the docids are first read (a search by text
    // never reads them).
    let file = dir.path().join("c1").join(genret::docid::DOCIDS_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let reopened = Index::open(dir.path().join("c1")).unwrap();
    let err = reopened.docids().unwrap_err().to_string();
    assert!(err.contains("docids.bin"), "{err}");
    drop(DocIds::load(&dir.path().join("c2").join(genret::docid::DOCIDS_FILE)).unwrap());
}

/// Cranfield, tiny model, a few dozen steps: enough to exercise every path of search.
fn trained_cranfield(dir: &Path) -> Index {
    let mut index = index_of("cranfield", dir, Scheme::Semantic);
    let config = TrainConfig {
        preset: Preset::Tiny,
        steps: Some(30),
        batch_size: 16,
        lr: 5e-3,
        tasks: TaskMix {
            span: 1,
            title: 0,
            index: 0,
            docid: 1,
            keywords: 0,
        },
        log_every: 10,
        checkpoint_every: 1000,
        ..TrainConfig::default()
    };
    train(&mut index, &config, false, &genret::device::Device::Cpu).unwrap();
    Index::open(dir).unwrap()
}

/// `ngram` without the stop words and punctuation at its ends, when it has any there.
fn trimmed(ngram: &str) -> Option<&str> {
    let words: Vec<&str> = ngram
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let content = |w: &&str| !genret::stem::is_stop_word(&w.to_lowercase());
    let first = words.iter().position(content)?;
    let last = words.iter().rposition(content)?;
    let start = words[first].as_ptr() as usize - ngram.as_ptr() as usize;
    let end = words[last].as_ptr() as usize - ngram.as_ptr() as usize + words[last].len();
    let whole = ngram[..start].trim().is_empty() && ngram[end..].trim().is_empty();
    (!whole).then(|| &ngram[start..end])
}

#[test]
fn search_answers_every_cranfield_query_with_real_ngrams_and_docids() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("cran.idx");
    let index = std::sync::Arc::new(trained_cranfield(&idx));
    let searcher = Searcher::new(std::sync::Arc::clone(&index)).unwrap();
    let queries = read_queries(corpus_path("cranfield")).unwrap();
    assert_eq!(queries.len(), 225);
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();

    let options = SearchOptions {
        k: 10,
        beam: 5,
        batch: 32,
        ..SearchOptions::default()
    };
    let (results, times) = searcher.search_timed(&texts, &options).unwrap();
    assert_eq!(results.len(), 225);
    assert!(times.decode.steps > 0 && times.decode.model > times.decode.constraint / 1000);
    let mut docs_cache = std::collections::HashMap::new();
    for r in &results {
        assert!(!r.results.is_empty(), "no result for {:?}", r.query);
        assert!(r.results.len() <= 10);
        assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));
        for hit in &r.results {
            let doc = index.doc_position(&hit.doc_id).unwrap();
            assert_eq!(doc, hit.doc);
            let tokens = docs_cache
                .entry(doc)
                .or_insert_with(|| index.fm.extract(doc).unwrap());
            assert!(!hit.tokens.is_empty());
            for ngram in &hit.tokens {
                assert!(
                    tokens.windows(ngram.len()).any(|w| w == &ngram[..]),
                    "n-gram {ngram:?} reported for doc {} does not occur in it",
                    hit.doc_id
                );
            }
            // An n-gram counts as its content (SealParams::content): no stop word or
            // punctuation at either end, unless the corpus lacks the content alone.
            for n in &hit.ngrams {
                if let Some(content) = trimmed(n) {
                    let tokens = index.tokenizer.encode(content).unwrap();
                    assert!(index.fm.range(&tokens).is_empty(), "{n:?} counted whole");
                }
            }
        }
    }
    // Read exactly, the model's n-grams with stop words and punctuation count too.
    let exact = searcher
        .search(
            &texts[..20],
            &SearchOptions {
                seal: SealParams {
                    content: false,
                    ..SealParams::default()
                },
                ..options
            },
        )
        .unwrap();
    assert!(
        exact
            .iter()
            .flat_map(|r| &r.results)
            .flat_map(|h| &h.ngrams)
            .any(|n| trimmed(n).is_some())
    );
    // The same queries one at a time give the same rankings as in batches.
    let single = searcher
        .search(
            &texts[..3],
            &SearchOptions {
                batch: 1,
                ..options
            },
        )
        .unwrap();
    for (a, b) in single.iter().zip(&results) {
        let ids = |r: &genret::search::SearchResult| {
            r.results
                .iter()
                .map(|h| h.doc_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(a), ids(b));
    }
    // Explained: the same rankings, plus the query's terms, strongest first, each weighed by
    // SEAL's formula from its probability and corpus count.
    let explained = searcher
        .search(
            &texts[..5],
            &SearchOptions {
                explain: true,
                ..options
            },
        )
        .unwrap();
    for (e, r) in explained.iter().zip(&results) {
        assert!(r.terms.is_empty(), "terms only when asked");
        let docs =
            |r: &genret::search::SearchResult| r.results.iter().map(|h| h.doc).collect::<Vec<_>>();
        assert_eq!(docs(e), docs(r));
        assert!(!e.terms.is_empty());
        assert!(e.terms.windows(2).all(|w| w[0].weight >= w[1].weight));
        for t in &e.terms {
            assert!(t.prob > 0.0 && t.docs > 0 && t.docs <= t.count, "{t:?}");
            // Weighed by its documents, reported rounded (an estimate may be fractional).
            let smoothing = SealParams::default().smoothing;
            let w = |docs: f64| ngram_weight(t.prob.ln(), docs, index.fm.tokens(), smoothing);
            let (lo, hi) = (w(t.docs as f64 + 0.5), w(t.docs as f64 - 0.5));
            assert!(
                lo - 1e-9 <= t.weight && t.weight <= hi + 1e-9,
                "{t:?}: {lo}..{hi}"
            );
        }
    }

    // DSI has a model of its own (tests/dsi.rs): without it, --mode dsi says how to train one.
    let dsi = SearchOptions {
        mode: Mode::DSI,
        ..SearchOptions::default()
    };
    let err = searcher.search(&texts[..1], &dsi).unwrap_err().to_string();
    assert!(
        err.contains("genret train") && err.contains("--dsi"),
        "{err}"
    );

    // The CLI: one query as JSON, then the whole query file as a TREC run.
    let bin = env!("CARGO_BIN_EXE_genret");
    let out = Command::new(bin)
        .args([
            "search",
            idx.to_str().unwrap(),
            "boundary layer",
            "--json",
            "--explain",
            "-k",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["query"], "boundary layer");
    assert!(v["took_ms"].as_f64().unwrap() > 0.0);
    let hits = v["results"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    for h in hits {
        assert!(h["doc_id"].is_string() && h["score"].is_number() && h["title"].is_string());
        assert!(!h["ngrams"].as_array().unwrap().is_empty());
    }
    let terms = v["terms"].as_array().unwrap();
    assert!(!terms.is_empty());
    for t in terms {
        assert!(t["ngram"].is_string() && t["count"].as_u64().unwrap() > 0);
        assert!(t["docs"].as_u64().unwrap() > 0);
        assert!(t["prob"].as_f64().unwrap() > 0.0 && t["weight"].as_f64().unwrap() > 0.0);
    }
    let run = dir.path().join("run.trec");
    let out = Command::new(bin)
        .args([
            "-q",
            "search",
            idx.to_str().unwrap(),
            "--queries",
            &corpus_path("cranfield"),
            "--out",
        ])
        .arg(&run)
        .args(["--mode", "seal", "-k", "4", "--beam", "4", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), 225, "one JSON line per query");
    let parsed = genret::eval::read_run(&run).unwrap();
    assert_eq!(parsed.len(), 225);
    assert!(
        parsed
            .iter()
            .all(|(_, docs)| !docs.is_empty() && docs.len() <= 4)
    );

    // Bad input: a malformed queries file names its line; exit code 2.
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "1\tok\nno tab here\n").unwrap();
    let out = Command::new(bin)
        .args(["search", idx.to_str().unwrap(), "--queries"])
        .arg(&bad)
        .arg("--out")
        .arg(dir.path().join("x.trec"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.tsv") && err.contains(":2"), "{err}");
}

#[test]
fn search_without_a_model_says_how_to_train_one() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("adi.idx");
    index_of("adi", &idx, Scheme::Naive);
    let out = Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["search", idx.to_str().unwrap(), "query"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("genret train"), "{err}");
}
