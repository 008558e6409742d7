//! A sharded index: built with `genret index --shard-size`, opened whole and checked, searched
//! as one and answering exactly as the unsharded index of the same corpus does.

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
