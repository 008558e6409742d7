//! Tokenizer round trips, index directory building and opening, and damaged files: every
//! truncated, corrupted or wrong-version file is rejected with an error, never a panic.

use std::path::{Path, PathBuf};

use genret::Error;
use genret::corpus::{Corpus, Document, read_corpus};
use genret::fmindex::{BuildOptions, FmIndex};
use genret::index::{
    BuildConfig, CorpusSource, FMINDEX_FILE, Index, IndexDir, TokenizerSource, build, build_from,
};
use genret::stem::{WORDS_PART, WordForms};
use genret::tokenize::{GenretTokenizer, SPECIAL_TOKENS, TokenizerKind, TrainConfig};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

fn small_config() -> BuildConfig {
    BuildConfig {
        tokenizer: TokenizerSource::Train(TrainConfig {
            vocab_size: 2000,
            ..TrainConfig::default()
        }),
        ..BuildConfig::default()
    }
}

#[test]
fn tokenizer_trained_on_cranfield_round_trips_every_document() {
    let corpus = read_corpus(shipped("cranfield")).unwrap();
    let tok = GenretTokenizer::train(
        &TrainConfig::default(),
        corpus.docs.iter().map(|d| d.text.clone()),
    )
    .unwrap();
    for (i, name) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_to_id(name), Some(i as u32));
    }
    assert!(tok.vocab_size() > 1000 && tok.vocab_size() <= 16_000);
    for doc in &corpus.docs {
        let ids = tok.encode(&doc.text).unwrap();
        assert!(ids.iter().all(|&t| t != tok.specials().unk));
        assert_eq!(tok.decode(&ids, false).unwrap(), doc.text);
    }
}

#[test]
fn cased_tokenizer_round_trips_mixed_case_and_unicode() {
    let corpus = read_corpus(shipped("squad")).unwrap();
    let texts: Vec<String> = corpus
        .docs
        .iter()
        .take(300)
        .map(|d| d.text.clone())
        .collect();
    for kind in [TokenizerKind::Bpe, TokenizerKind::Unigram] {
        let config = TrainConfig {
            kind,
            vocab_size: 1500,
            lowercase: false,
        };
        let tok = GenretTokenizer::train(&config, texts.iter()).unwrap();
        for text in texts
            .iter()
            .take(50)
            .chain(["Zürich — 東京 ✓ émigré".to_string()].iter())
        {
            let ids = tok.encode(text).unwrap();
            assert_eq!(&tok.decode(&ids, false).unwrap(), text, "{kind:?}");
        }
        // Saved and reloaded, the tokenizer encodes identically.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = GenretTokenizer::from_file(&path).unwrap();
        assert_eq!(
            back.encode(&texts[0]).unwrap(),
            tok.encode(&texts[0]).unwrap()
        );
        assert_eq!(back.specials(), tok.specials());
    }
}

#[test]
fn an_existing_tokenizer_gets_the_missing_special_tokens() {
    // A BERT-style WordPiece tokenizer.json written by hand: it has [PAD], [SEP], [UNK] only.
    let json = r###"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id":0,"content":"[PAD]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
        {"id":1,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
        {"id":2,"content":"[SEP]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}
      ],
      "normalizer": {"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},
      "pre_tokenizer": {"type":"BertPreTokenizer"},
      "post_processor": null,
      "decoder": {"type":"WordPiece","prefix":"##","cleanup":true},
      "model": {"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,
        "vocab": {"[PAD]":0,"[UNK]":1,"[SEP]":2,"wing":3,"lift":4,"##s":5}}
    }"###;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let tok = GenretTokenizer::from_file(&path).unwrap();
    let sp = tok.specials();
    assert_eq!((sp.pad, sp.unk, sp.eos), (0, 1, 2));
    assert!(sp.title_start >= 6 && sp.docid >= 6);
    assert_eq!(tok.vocab_size(), 6 + SPECIAL_TOKENS.len() - 3);
    assert_eq!(tok.encode("Wings lift").unwrap(), vec![3, 5, 4]);

    // The same tokenizer drives a whole index build.
    let corpus = Corpus::from_docs(vec![Document {
        id: "d".into(),
        title: "wing".into(),
        text: "lift lifts".into(),
    }])
    .unwrap();
    let out = dir.path().join("idx");
    let config = BuildConfig {
        tokenizer: TokenizerSource::File(path),
        ..BuildConfig::default()
    };
    let index = build(&corpus, &out, &config).unwrap();
    assert_eq!(index.dir.manifest.tokenizer.kind, "external");
    assert_eq!(
        index.fm.extract(0).unwrap(),
        vec![sp.title_start, 3, sp.title_end, 4, 4, 5]
    );
}

#[test]
fn build_open_and_count_on_adi() {
    let corpus = read_corpus(shipped("adi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adi.idx");
    let built = build(&corpus, &out, &small_config()).unwrap();
    let index = Index::open(&out).unwrap();
    assert_eq!(index.docs.len(), 82);
    assert_eq!(index.fm, built.fm);
    assert_eq!(index.dir.manifest.corpus.docs, 82);
    assert_eq!(index.dir.manifest.fields.indexed, vec!["title", "text"]);
    // Each document reads back from the FM-index as the title/text layout of the same text.
    let sp = index.tokenizer.specials();
    for (d, doc) in corpus.docs.iter().enumerate() {
        let tokens = index.fm.extract(d as u32).unwrap();
        assert_eq!(tokens.len() as u32, index.docs.get(d).unwrap().tokens);
        if !doc.title.is_empty() {
            assert_eq!(tokens[0], sp.title_start);
        }
        let text = index.tokenizer.decode(&tokens, false).unwrap();
        assert!(text.contains(doc.text.to_lowercase().trim()), "doc {d}");
    }
    // A phrase from a document is found in it.
    let phrase = index.tokenizer.encode("information retrieval").unwrap();
    let range = index.fm.range(&phrase);
    assert!(range.count() > 0);
    for occ in index.fm.locate(&range, 100) {
        let doc = &corpus.docs[occ.doc as usize];
        let hay = format!("{} {}", doc.title, doc.text).to_lowercase();
        assert!(hay.contains("information retrieval"), "doc {}", doc.id);
    }
    // The word table the build stored is the one a search would build from the documents.
    let stored = index.dir.part(WORDS_PART, "").unwrap();
    let read = WordForms::load(&stored, &index.fm).unwrap();
    let docs = &corpus.docs;
    let fresh = WordForms::build(
        docs.len(),
        |d| Ok([docs[d].title.as_str().into(), docs[d].text.as_str().into()]),
        &index.tokenizer,
        &index.fm,
    )
    .unwrap();
    assert!(read == fresh, "stored and rebuilt word tables differ");
}

#[test]
fn same_corpus_same_index_bytes() {
    let corpus = read_corpus(shipped("adi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    build(&corpus, &a, &small_config()).unwrap();
    build(&corpus, &b, &small_config()).unwrap();
    for file in ["tokenizer.json", "docs.jsonl", FMINDEX_FILE] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
fn a_build_streamed_from_the_file_equals_one_from_memory() {
    let path = shipped("adi");
    let corpus = read_corpus(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let memory = build(&corpus, &a, &small_config()).unwrap();
    let streamed = build_from(CorpusSource::File(&path), &b, &small_config()).unwrap();
    assert_eq!(memory.dir.manifest.corpus, streamed.dir.manifest.corpus);
    let mut files = 0;
    for entry in std::fs::read_dir(&a).unwrap() {
        let name = entry.unwrap().file_name();
        // stats.json holds the build's seconds, and the manifest its checksum.
        if name == "stats.json" || name == "manifest.json" {
            continue;
        }
        files += 1;
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name:?} differs"
        );
    }
    assert_eq!(
        files, 7,
        "tokenizer, documents, lines, FM-index, tokens, docids, words"
    );
    // A duplicate id in the file is found before anything is built, naming both lines.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"_id\": \"x\", \"text\": \"one\"}\n{\"_id\": \"x\", \"text\": \"two\"}\n",
    )
    .unwrap();
    let err = build_from(
        CorpusSource::File(&bad),
        &dir.path().join("c"),
        &small_config(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            Error::DuplicateId {
                line: 2,
                first_line: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.path().join("c").exists());
}

#[test]
fn refuses_to_write_into_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let corpus = read_corpus(shipped("adi")).unwrap();
    let err = build(&corpus, dir.path(), &small_config()).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(dir.path().join("precious.txt").exists());
}

#[test]
fn manifest_version_and_missing_parts_are_clear_errors() {
    let corpus = read_corpus(shipped("adi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    build(&corpus, &out, &small_config()).unwrap();

    let manifest_path = out.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let current = format!(
        "\"format_version\": {}",
        genret::index::PLAIN_FORMAT_VERSION
    );
    assert!(original.contains(&current));
    let future = original.replace(&current, "\"format_version\": 99");
    std::fs::write(&manifest_path, future).unwrap();
    let err = IndexDir::open(&out).unwrap_err();
    assert!(matches!(err, Error::Version { found: 99, .. }), "{err}");

    std::fs::write(&manifest_path, &original).unwrap();
    std::fs::remove_file(out.join(FMINDEX_FILE)).unwrap();
    let err = Index::open(&out).err().unwrap();
    assert!(matches!(err, Error::MissingPart { .. }), "{err}");
    assert!(err.to_string().contains("fmindex"));

    std::fs::write(&manifest_path, "{not json").unwrap();
    assert!(matches!(
        IndexDir::open(&out).unwrap_err(),
        Error::Corrupt { .. }
    ));
    let err = IndexDir::open(dir.path().join("nothing-here")).unwrap_err();
    assert!(err.to_string().contains("not a genret index"));
}

fn sample_fm_file(dir: &Path) -> (PathBuf, FmIndex) {
    let docs: Vec<Vec<u32>> = (0..40u32)
        .map(|d| (0..(d % 9)).map(|i| (d * 7 + i * 3) % 50).collect())
        .collect();
    let fm = FmIndex::build(
        &docs,
        50,
        BuildOptions {
            sample_rate: 4,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    let path = dir.join("fm.bin");
    fm.save(&path).unwrap();
    (path, fm)
}

#[test]
fn fmindex_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (path, fm) = sample_fm_file(dir.path());
    assert_eq!(FmIndex::load(&path).unwrap(), fm);
}

#[test]
fn every_flipped_byte_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_fm_file(dir.path());
    let original = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.bin");
    for pos in 0..original.len() {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x5a;
        std::fs::write(&damaged, &bytes).unwrap();
        let err = FmIndex::load(&damaged).expect_err(&format!("byte {pos} accepted"));
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::Version { .. }),
            "byte {pos}: {err}"
        );
    }
}

#[test]
fn every_truncation_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_fm_file(dir.path());
    let original = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("short.bin");
    for len in 0..original.len() {
        std::fs::write(&damaged, &original[..len]).unwrap();
        let err = FmIndex::load(&damaged).expect_err(&format!("length {len} accepted"));
        assert!(matches!(err, Error::Corrupt { .. }), "length {len}: {err}");
    }
    let mut longer = original.clone();
    longer.extend_from_slice(&[0; 8]);
    std::fs::write(&damaged, &longer).unwrap();
    assert!(FmIndex::load(&damaged).is_err());
}

#[test]
fn a_changed_version_is_a_version_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_fm_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let future = genret::fmindex::FORMAT_VERSION + 1;
    bytes[8..12].copy_from_slice(&future.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = FmIndex::load(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Version { found, expected, .. }
                if found == future && expected == genret::fmindex::FORMAT_VERSION
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rebuild"));
}

#[test]
fn a_valid_checksum_over_inconsistent_arrays_is_rejected() {
    // Re-sign a payload whose C array was altered: the checksum passes, the structure does not.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_fm_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Header 32 bytes, then scalars (8-byte length + 5 u64), then the C array's length and data.
    let c_data = 32 + 8 + 40 + 8;
    bytes[c_data + 8] ^= 1;
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[32..]);
    bytes[24..32].copy_from_slice(&checksum.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        FmIndex::load(&path).unwrap_err(),
        Error::Corrupt { .. }
    ));
}

/// Two commands that opened the same index and each record a part: neither loses the other's
/// (the manifest is re-read under the writer lock), and a part made for an index that was
/// rebuilt meanwhile is refused.
#[test]
fn parts_recorded_by_two_openers_are_both_kept() {
    let corpus = read_corpus(shipped("adi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("idx");
    build(&corpus, &out, &small_config()).unwrap();
    let mut a = IndexDir::open(&out).unwrap();
    let mut b = IndexDir::open(&out).unwrap();
    std::fs::write(out.join("a.bin"), b"a").unwrap();
    std::fs::write(out.join("b.bin"), b"b").unwrap();
    a.add_part("a", "a.bin", Default::default()).unwrap();
    b.add_part("b", "b.bin", Default::default()).unwrap();
    let parts = IndexDir::open(&out).unwrap().manifest.parts;
    assert!(
        parts.contains_key("a") && parts.contains_key("b"),
        "{parts:?}"
    );

    let mut stale = IndexDir::open(&out).unwrap();
    let mut other = small_config();
    other.index_titles = false;
    build(&corpus, &out, &other).unwrap();
    std::fs::write(out.join("c.bin"), b"c").unwrap();
    let err = stale
        .add_part("c", "c.bin", Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("rebuilt"), "{err}");
}
