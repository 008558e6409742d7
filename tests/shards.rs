//! A sharded index: built with `genret index --shard-size`, opened whole and checked, searched
//! as one and answering exactly as the unsharded index of the same corpus does; and an index
//! grown by `genret index --add`, which keeps its documents, docids and model and answers as
//! an index built whole would.

mod common;

use std::path::Path;
use std::sync::Arc;

use genret::corpus::read_queries;
use genret::index::Index;
use genret::retrieve::{Retriever, SearchOptions};
use genret::seal::{Seal, load_model};

const ADI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/adi");

/// ADI indexed again as the trained index was (same tokenizer settings), in shards of at most
/// `size` symbols.
fn sharded_adi(out: &Path, size: u64) -> Index {
    let s = out.to_str().unwrap();
    let size = size.to_string();
    common::genret_ok(&[
        "index",
        ADI,
        "--out",
        s,
        "--vocab-size",
        "800",
        "--shard-size",
        &size,
        "-q",
    ]);
    Index::open(out).unwrap()
}

#[test]
fn a_sharded_index_answers_as_the_whole_one() {
    let tmp = tempfile::tempdir().unwrap();
    let trained = common::trained_adi(tmp.path());
    let whole = Arc::new(Index::open(&trained).unwrap());
    assert_eq!(whole.fm.shards().len(), 1);
    let quarter = whole.fm.tokens() as u64 / 4 + 200;
    let sharded = Arc::new(sharded_adi(&tmp.path().join("four.idx"), quarter));
    assert_eq!(sharded.fm.shards().len(), 4);
    assert_eq!(sharded.fm.docs(), whole.fm.docs());
    assert_eq!(sharded.fm.tokens(), whole.fm.tokens());
    assert!(sharded.fm.is_mapped());
    // Written as the version that has shards, so an older genret refuses it by version.
    assert_eq!(
        sharded.dir.manifest.format_version,
        genret::index::FORMAT_VERSION
    );
    assert_eq!(
        whole.dir.manifest.format_version,
        genret::index::PLAIN_FORMAT_VERSION
    );
    // The tokenizer and the documents are the same, so is the fingerprint models are tied to.
    assert_eq!(sharded.dir.fingerprint(), whole.dir.fingerprint());

    let device = candle_core::Device::Cpu;
    let one = Seal::new(Arc::clone(&whole), load_model(&whole, &device).unwrap()).unwrap();
    let four = Seal::new(Arc::clone(&sharded), load_model(&whole, &device).unwrap()).unwrap();
    let queries = read_queries(ADI).unwrap();
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let options = SearchOptions {
        explain: true,
        ..SearchOptions::default()
    };
    let a = one.retrieve(&texts, &options).unwrap();
    let b = four.retrieve(&texts, &options).unwrap();
    let mut answered = 0;
    for (x, y) in a.answers.iter().zip(&b.answers) {
        answered += usize::from(!x.hits.is_empty());
        assert_eq!(x.terms, y.terms, "the same terms, counts and weights");
        let top = |r: &genret::retrieve::Answer| -> Vec<(u32, f64, Vec<String>)> {
            let hits = r.hits.iter().take(10);
            hits.map(|h| (h.doc, h.score, h.ngrams.clone())).collect()
        };
        assert_eq!(top(x), top(y));
    }
    assert!(answered > texts.len() / 2, "{answered} queries answered");

    // The CLI searches it, and a model trains on it.
    let s = tmp.path().join("four.idx");
    let s = s.to_str().unwrap();
    let out = common::genret_ok(&["count", s, "the"]);
    assert!(!out.stdout.is_empty());
    common::genret_ok(&["train", s, "--preset", "tiny", "--steps", "3", "-q"]);
    let out = common::genret_ok(&["search", s, "computer retrieval", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.to_string().contains("doc_id"), "{v}");
}

#[test]
fn a_missing_or_damaged_shard_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adi.idx");
    let index = sharded_adi(&dir, 3000);
    let shards = index.fm.shards().len();
    assert!(shards >= 3, "{shards} shards");
    drop(index);
    let second = dir.join("fmindex.1.bin");
    let mut bytes = std::fs::read(&second).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&second, &bytes).unwrap();
    let err = Index::open(&dir).unwrap_err().to_string();
    assert!(err.contains("fmindex.1.bin"), "{err}");
    bytes[mid] ^= 1;
    std::fs::write(&second, &bytes).unwrap();
    Index::open(&dir).unwrap();
    let last = dir.join(format!("fmindex.{}.bin", shards - 1));
    std::fs::remove_file(&last).unwrap();
    let err = Index::open(&dir).unwrap_err().to_string();
    assert!(err.contains(&format!("fmindex.{}", shards - 1)), "{err}");
}

#[test]
fn a_document_larger_than_a_shard_is_refused_with_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["index", ADI, "--out"])
        .arg(tmp.path().join("x.idx"))
        .args(["--vocab-size", "800", "--shard-size", "20", "-q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document") && err.contains("shard"), "{err}");
    assert!(!tmp.path().join("x.idx").exists(), "nothing left behind");
}

/// ADI's documents split in two JSONL files, the first `n` and the rest.
fn split_adi(dir: &Path, n: usize) -> (String, String) {
    let text = std::fs::read_to_string(Path::new(ADI).join("corpus.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = (dir.join("base.jsonl"), dir.join("more.jsonl"));
    std::fs::write(&a, lines[..n].join("\n") + "\n").unwrap();
    std::fs::write(&b, lines[n..].join("\n") + "\n").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    (s(&a), s(&b))
}

/// ADI's first 60 documents indexed into `dir/adi.idx` with `extra` arguments; the index
/// and the file of the other 22.
fn base_adi(dir: &Path, extra: &[&str]) -> (std::path::PathBuf, String) {
    let (base, more) = split_adi(dir, 60);
    let idx = dir.join("adi.idx");
    let mut args = vec![
        "index",
        &base,
        "--out",
        idx.to_str().unwrap(),
        "--vocab-size",
        "800",
    ];
    args.extend_from_slice(extra);
    args.push("-q");
    common::genret_ok(&args);
    (idx, more)
}

/// `genret index MORE --out IDX --add` fails saying `why`, and the index keeps its `docs`.
fn refused_addition(idx: &Path, more: &str, why: &str, docs: usize) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["index", more, "--add", "-q", "--out"])
        .arg(idx)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{err}");
    assert_eq!(Index::open(idx).unwrap().docs.len(), docs);
}

#[test]
fn added_documents_join_without_disturbing_the_built_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (idx, more) = base_adi(tmp.path(), &[]);
    let s = idx.to_str().unwrap();
    common::genret_ok(&["train", s, "--preset", "tiny", "--steps", "20", "-q"]);
    common::genret_ok(&["add", s, "bm25", "-q"]);
    let before = Index::open(&idx).unwrap();
    let old_ids: Vec<Vec<u32>> = (0..60)
        .map(|d| before.docids().unwrap().symbols(d).to_vec())
        .collect();
    let fingerprint = before.dir.fingerprint();
    drop(before);

    let out = common::genret_ok(&["index", &more, "--out", s, "--add", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["docs"], 82);
    let after = Arc::new(Index::open(&idx).unwrap());
    assert_eq!(after.docs.len(), 82);
    assert_eq!(after.dir.manifest.batches(), 2);
    assert_eq!(after.fm.shards().len(), 2);
    assert_eq!(
        after.dir.fingerprint(),
        fingerprint,
        "models stay tied to it"
    );
    let docids = after.docids().unwrap();
    assert!((0..60).all(|d| docids.symbols(d) == old_ids[d as usize]));
    assert_eq!(docids.len(), 82);
    let more_first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&more)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        after.docs.id(60).unwrap(),
        more_first["_id"].as_str().unwrap()
    );
    // BM25 no longer holds every document: left out, with the way back.
    assert!(!after.dir.has_part("bm25"));
    let err = genret::baseline::bm25::Bm25::open_index(&after)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("genret add"), "{err}");

    // The model trained before the addition answers as on an index built whole (with its
    // tokenizer), new documents included.
    let whole_dir = tmp.path().join("whole.idx");
    let tokenizer = idx.join("tokenizer.json");
    common::genret_ok(&[
        "index",
        ADI,
        "--out",
        whole_dir.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "-q",
    ]);
    let whole = Arc::new(Index::open(&whole_dir).unwrap());
    let device = candle_core::Device::Cpu;
    let grown = Seal::load(Arc::clone(&after), &device).unwrap();
    let built = Seal::new(whole, load_model(&after, &device).unwrap()).unwrap();
    let queries = read_queries(ADI).unwrap();
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let options = SearchOptions::default();
    let (a, b) = (
        grown.retrieve(&texts, &options).unwrap(),
        built.retrieve(&texts, &options).unwrap(),
    );
    let mut new_found = 0;
    for (x, y) in a.answers.iter().zip(&b.answers) {
        let top = |r: &genret::retrieve::Answer| -> Vec<(u32, f64)> {
            r.hits.iter().take(10).map(|h| (h.doc, h.score)).collect()
        };
        assert_eq!(top(x), top(y));
        new_found += x.hits.iter().take(10).filter(|h| h.doc >= 60).count();
    }
    assert!(new_found > 0, "added documents are found");

    // Adding documents already there is refused and changes nothing.
    refused_addition(&idx, &more, "already in the index", 82);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("genret-add"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn atomic_docids_refuse_an_addition() {
    let tmp = tempfile::tempdir().unwrap();
    let (idx, more) = base_adi(tmp.path(), &["--docids", "atomic"]);
    refused_addition(&idx, &more, "atomic docids", 60);
    refused_addition(&idx, &more, "rebuild the index", 60);
}
