//! The shipped collections load with their documented counts, and every kind of bad input
//! gets an error naming the file and line.

use std::path::{Path, PathBuf};

use genret::Error;
use genret::corpus::{
    Collection, CorpusReader, CorpusSummary, fingerprint, read_corpus, read_qrels, read_queries,
    scan_corpus,
};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

#[test]
fn shipped_collections_have_documented_counts() {
    let adi = Collection::open(shipped("adi"), true).unwrap();
    assert_eq!((adi.corpus.len(), adi.queries.len()), (82, 35));
    assert_eq!(adi.split("test").unwrap().positives(), 170);

    let cran = Collection::open(shipped("cranfield"), true).unwrap();
    assert_eq!((cran.corpus.len(), cran.queries.len()), (1400, 225));
    let test = cran.split("test").unwrap();
    assert_eq!(test.positives(), 1612);
    assert_eq!(test.judgments.len(), 225);
    // Graded judgments 1..4 survive.
    let grades: std::collections::BTreeSet<i32> = test
        .judgments
        .values()
        .flat_map(|d| d.values().copied())
        .collect();
    assert_eq!(grades, [1, 2, 3, 4].into_iter().collect());

    let cisi = Collection::open(shipped("cisi"), true).unwrap();
    assert_eq!((cisi.corpus.len(), cisi.queries.len()), (1460, 112));
    assert_eq!(cisi.split("test").unwrap().judgments.len(), 76);

    let squad = Collection::open(shipped("squad"), true).unwrap();
    assert_eq!((squad.corpus.len(), squad.queries.len()), (2067, 7426));
    assert_eq!(squad.split("train").unwrap().positives(), 6398);
    assert_eq!(squad.split("dev").unwrap().positives(), 1028);
    let err = squad.split("test").unwrap_err().to_string();
    assert!(err.contains("dev, train"), "{err}");
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Asserts `err` is a parse-type error at `line` whose message contains `needle`.
fn assert_at(err: Error, line: u64, needle: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(":{line}:")),
        "no line {line} in: {msg}"
    );
    assert!(msg.contains(needle), "{needle:?} not in: {msg}");
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "corpus.jsonl",
        b"{\"_id\": \"a\", \"text\": \"ok\"}\n{\"_id\": \"b\", \"text\": \n",
    );
    let err = read_corpus(&path).unwrap_err();
    assert_at(err, 2, "malformed JSON");
    assert!(
        read_corpus(&path)
            .unwrap_err()
            .to_string()
            .contains("corpus.jsonl")
    );
}

#[test]
fn missing_id_and_missing_text_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.jsonl",
        b"{\"_id\": \"a\", \"text\": \"x\"}\n{\"text\": \"no id\"}\n",
    );
    assert_at(read_corpus(&path).unwrap_err(), 2, "missing \"_id\"");
    let path = write(
        dir.path(),
        "d.jsonl",
        b"{\"_id\": \"a\", \"title\": \"t\"}\n",
    );
    assert_at(read_corpus(&path).unwrap_err(), 1, "missing \"text\"");
}

#[test]
fn numeric_ids_are_accepted_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.jsonl", b"{\"_id\": 17, \"text\": \"x\"}\n");
    assert_eq!(read_corpus(&path).unwrap().docs[0].id, "17");
}

#[test]
fn a_scan_summarises_the_corpus_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.tsv",
        b"id\ttitle\ttext\nd1\tA title\tsome text\nd2\t\t\nd3\t\tmore text\n",
    );
    let corpus = read_corpus(&path).unwrap();
    let summary = scan_corpus(&path).unwrap();
    assert_eq!(summary, CorpusSummary::of(&corpus));
    assert_eq!((summary.docs, summary.empty_docs), (3, 1));
    assert_eq!(summary.fingerprint, fingerprint(&corpus));
    // Batches give every document once, in order.
    let mut reader = CorpusReader::open(&path).unwrap();
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    loop {
        reader.next_batch(2, &mut batch).unwrap();
        if batch.is_empty() {
            break;
        }
        ids.extend(batch.iter().map(|d| d.id.clone()));
    }
    assert_eq!(ids, ["d1", "d2", "d3"]);
}

#[test]
fn duplicate_ids_name_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.jsonl",
        b"{\"_id\": \"a\", \"text\": \"1\"}\n{\"_id\": \"b\", \"text\": \"2\"}\n\n{\"_id\": \"a\", \"text\": \"3\"}\n",
    );
    // The streamed check that a build runs over a corpus file finds it the same way.
    for err in [
        read_corpus(&path).unwrap_err(),
        scan_corpus(&path).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::DuplicateId {
                    line: 4,
                    first_line: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
    let qpath = write(dir.path(), "q.tsv", b"1\tfirst\n1\tagain\n");
    assert!(matches!(
        read_queries(&qpath).unwrap_err(),
        Error::DuplicateId {
            line: 2,
            first_line: 1,
            ..
        }
    ));
}

#[test]
fn non_utf8_bytes_are_reported_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.tsv", b"d1\tfine text\nd2\tcaf\xe9 latin-1\n");
    let err = read_corpus(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonUtf8 {
                line: 2,
                column: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("UTF-8"));
}

#[test]
fn empty_documents_are_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.jsonl",
        b"{\"_id\": \"a\", \"title\": \"\", \"text\": \"\"}\n{\"_id\": \"b\", \"text\": \"words\"}\n{\"_id\": \"c\", \"text\": \"  \"}\n",
    );
    let corpus = read_corpus(&path).unwrap();
    assert_eq!(corpus.len(), 3);
    assert_eq!(corpus.empty_docs, 2);
}

#[test]
fn huge_documents_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = "word ".repeat(400_000);
    let line = format!("big\t{text}\n");
    let path = write(dir.path(), "c.tsv", line.as_bytes());
    let corpus = read_corpus(&path).unwrap();
    assert_eq!(corpus.docs[0].text.len(), text.len());
}

#[test]
fn tsv_collections_with_and_without_titles() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.tsv",
        b"id\ttitle\ttext\n1\tT1\tbody one\n2\t\tbody two\r\n",
    );
    let corpus = read_corpus(&path).unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus.docs[0].title, "T1");
    assert_eq!(corpus.docs[1].text, "body two");
    let path = write(dir.path(), "d.tsv", b"1\tonly text\n2\ta\tb\tc\td\n");
    assert_at(read_corpus(&path).unwrap_err(), 2, "found 5");
}

#[test]
fn qrels_with_unknown_documents_warn_or_fail_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = write(dir.path(), "c.tsv", b"d1\tone\nd2\ttwo\n");
    let corpus = read_corpus(&corpus_path).unwrap();
    let qrels = write(
        dir.path(),
        "q.tsv",
        b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nq2\td2\t2\n",
    );
    let lenient = read_qrels(&qrels, Some(&corpus), false).unwrap();
    assert_eq!(lenient.unknown_docs, 1);
    assert_eq!(lenient.positives(), 2);
    let err = read_qrels(&qrels, Some(&corpus), true).unwrap_err();
    assert!(
        matches!(err, Error::UnknownDocument { line: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ghost"));
}

#[test]
fn trec_qrels_format_and_bad_grades() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "qrels.txt", b"1 0 d1 2\n1 0 d2 0\n2 0 d3 1\n");
    let qrels = read_qrels(&path, None, false).unwrap();
    assert_eq!(qrels.judgments["1"]["d1"], 2);
    assert_eq!(qrels.positives(), 2);
    let path = write(dir.path(), "bad.tsv", b"q\td\t1\nq\td2\thigh\n");
    assert_at(
        read_qrels(&path, None, false).unwrap_err(),
        2,
        "not a number",
    );
    let path = write(dir.path(), "cols.tsv", b"q\td\n");
    assert_at(
        read_qrels(&path, None, false).unwrap_err(),
        1,
        "expected 3 columns",
    );
}

#[test]
fn a_missing_file_is_named() {
    let err = read_corpus("/nonexistent/genret/corpus.jsonl").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/genret/corpus.jsonl"));
}

fn gzip(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}

#[test]
fn pyserini_jsonl_and_gzip_compressed_files_read_as_their_plain_forms() {
    let dir = tempfile::tempdir().unwrap();
    // Pyserini's {"id", "contents"}, compressed.
    let docs = br#"{"id": "d1", "contents": "boundary layer flow"}
{"id": "d2", "contents": "heat transfer"}
"#;
    let corpus = read_corpus(write(dir.path(), "docs.jsonl.gz", &gzip(docs))).unwrap();
    let plain = read_corpus(write(dir.path(), "docs.jsonl", docs)).unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus.docs, plain.docs);
    assert_eq!(corpus.docs[1].text, "heat transfer");
    // A BEIR folder holding only compressed files.
    let beir = dir.path().join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    write(&beir, "corpus.jsonl.gz", &gzip(docs));
    write(
        &beir,
        "queries.jsonl.gz",
        &gzip(br#"{"_id": "q1", "text": "flow"}"#),
    );
    write(
        &beir.join("qrels"),
        "test.tsv",
        b"query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    );
    let c = Collection::open(&beir, true).unwrap();
    assert_eq!((c.corpus.len(), c.queries.len()), (2, 1));
    // A TSV collection too; line numbers count uncompressed lines.
    let tsv = write(dir.path(), "c.tsv.gz", &gzip(b"d1\tone\nd2\n"));
    assert_at(read_corpus(tsv).unwrap_err(), 2, "columns");
    // A damaged stream is an error naming the file, not a short corpus.
    let mut cut = gzip(docs);
    cut.truncate(cut.len() / 2);
    let err = read_corpus(write(dir.path(), "cut.jsonl.gz", &cut)).unwrap_err();
    assert!(err.to_string().contains("cut.jsonl.gz"), "{err}");
}
