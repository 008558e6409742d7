//! The `genret` binary end to end: index, count, extract, help, exit codes on bad input, and a
//! closed pipe.

use std::path::Path;
use std::process::{Command, Output};

fn genret(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(args)
        .output()
        .expect("run genret")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn index_count_extract_on_adi() {
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("adi.idx");
    let idx = idx.to_str().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/adi");
    let out = genret(&[
        "index",
        corpus.to_str().unwrap(),
        "--out",
        idx,
        "--vocab-size",
        "2000",
        "--json",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["docs"], 82);

    let out = genret(&["count", idx, "information retrieval", "--json"]);
    assert!(out.status.success());
    let count: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let n = count["count"].as_u64().unwrap();
    let docs = count["docs"].as_u64().unwrap();
    assert!(n >= docs && docs > 0);
    let ids = count["doc_ids"].as_array().unwrap();
    assert_eq!(ids.len() as u64, docs.min(10));
    let tokens: Vec<String> = count["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();

    // The same count through --tokens.
    let out = genret(&["count", idx, "--tokens", &tokens.join(","), "--json"]);
    let again: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(again, count);

    // Every listed document really contains the phrase.
    let first = ids[0].as_str().unwrap();
    let out = genret(&["extract", idx, first, "--json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(doc["doc_id"], first);
    assert!(
        doc["text"]
            .as_str()
            .unwrap()
            .contains("information retrieval")
    );

    let out = genret(&["extract", idx, "--all"]);
    assert_eq!(stdout(&out).lines().count(), 82);

    let out = genret(&["extract", idx, "no-such-doc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-doc"));

    // A reader that stops early (`genret count ... | head`): a quiet end, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(["count", idx, "information retrieval"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn bad_input_exits_2_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"_id\": \"1\", \"text\": \"ok\"}\n{oops}\n").unwrap();
    let out = genret(&[
        "index",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:2"), "{err}");

    let out = genret(&["count", dir.path().join("missing").to_str().unwrap(), "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a genret index"));
}

#[test]
fn help_explains_each_command_with_an_example() {
    let out = genret(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in [
        "demo", "index", "count", "extract", "train", "search", "eval", "bench", "serve",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
        let sub = stdout(&genret(&[cmd, "--help"]));
        assert!(sub.contains("Example"), "{cmd} --help has no example");
    }
}
