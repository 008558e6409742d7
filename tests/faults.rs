//! Fault injection: what a damaged file, a killed process, a full disk, hostile input or a
//! hostile HTTP client does to genret. The promise (docs/RELIABILITY.md): a correct answer
//! or a clear error that names the file, never a silent wrong result, a panic, a hang or the
//! loss of a working index. Bounded: ADI-sized indexes and tiny models, a few seconds each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const QUERY: &str = "information retrieval systems";

fn genret(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(args)
        .output()
        .expect("run genret")
}

fn ok(args: &[&str]) -> Output {
    let out = genret(args);
    assert!(
        out.status.success(),
        "genret {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn corpus(name: &str) -> String {
    format!("{}/corpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The documents and scores `genret search --json` answers (timings left out).
fn answer(idx: &Path) -> Result<Vec<(String, String)>, (i32, String)> {
    let out = genret(&["search", idx.to_str().unwrap(), QUERY, "-k", "5", "--json"]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "panic: {err}");
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), err));
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("search --json is JSON");
    let hits = v["results"].as_array().expect("results").clone();
    assert!(!hits.is_empty(), "no results: {v}");
    Ok(hits
        .iter()
        .map(|h| (h["doc_id"].to_string(), h["score"].to_string()))
        .collect())
}

/// ADI indexed again into `idx` with another tokenizer: another build of the index.
fn rebuild_adi(idx: &str) {
    ok(&[
        "index",
        &corpus("adi"),
        "--out",
        idx,
        "--vocab-size",
        "600",
        "-q",
    ]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Leftovers of genret's own writes beside or inside `dir`: temporary and half-built files.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("genret-build") || n.contains("genret-old"))
        .collect();
    if dir.exists() {
        names.extend(
            files_under(dir)
                .iter()
                .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp")),
        );
    }
    names
}

#[test]
fn every_file_damaged_truncated_or_deleted_gives_the_same_answer_or_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let expected = answer(&idx).expect("the intact index answers");
    let mut refused = 0;
    for file in files_under(&idx) {
        let rel = file.strip_prefix(&idx).unwrap().to_path_buf();
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        for damage in ["flip", "truncate", "delete"] {
            let copy = tmp.path().join(format!("case-{refused}-{damage}"));
            copy_dir(&idx, &copy);
            let target = copy.join(&rel);
            let mut bytes = std::fs::read(&target).unwrap();
            match damage {
                "flip" => {
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0x20;
                    std::fs::write(&target, &bytes).unwrap();
                }
                "truncate" => std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap(),
                _ => std::fs::remove_file(&target).unwrap(),
            }
            let case = format!("{damage} {}", rel.display());
            let mut check =
                |result: Result<Vec<(String, String)>, (i32, String)>, what: &str| match result {
                    Ok(got) => assert_eq!(got, expected, "{case}: {what} answered differently"),
                    Err((code, message)) => {
                        assert_eq!(code, 2, "{case}: {what}: {message}");
                        assert!(message.contains(&name), "{case}: {what}: {message}");
                        refused += 1;
                    }
                };
            check(answer(&copy), "search");
            if rel.starts_with("checkpoint") {
                // Resuming reads the checkpoint: damaged, it must be refused by name.
                let out = genret(&["train", copy.to_str().unwrap(), "--resume", "-q"]);
                let result = if out.status.success() {
                    answer(&copy)
                } else {
                    Err((out.status.code().unwrap_or(-1), stderr(&out)))
                };
                check(result, "train --resume");
            }
            std::fs::remove_dir_all(&copy).unwrap();
        }
    }
    // Every part a search reads is refused when damaged (3 damages x 9 files at least).
    assert!(refused >= 27, "only {refused} damaged cases were refused");
}

#[test]
fn a_part_outside_the_index_or_an_edited_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let manifest = idx.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (from, to) in [
        ("\"file\": \"stats.json\"", "\"file\": \"../stats.json\""),
        ("\"file\": \"stats.json\"", "\"file\": \"/etc/passwd\""),
        ("\"docs\": 82", "\"docs\": 83"),
        // Claiming the version before checksums does not switch them off.
        ("\"format_version\": 2", "\"format_version\": 1"),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&manifest, text.replacen(from, to, 1)).unwrap();
        let (code, message) = answer(&idx).expect_err(to);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains("manifest.json"), "{message}");
    }
}

#[test]
fn a_killed_rebuild_leaves_the_old_index_and_its_model_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let expected = answer(&idx).unwrap();
    let s = idx.to_str().unwrap();
    let started = Instant::now();
    let mut child = spawn(&["index", &corpus("cisi"), "--out", s, "--vocab-size", "1000"]);
    let _ = child.wait();
    let full = started.elapsed();
    // The full rebuild replaced the index (and its model): rebuild ADI and train again.
    let idx = common::trained_adi(&tmp.path().join("again"));
    let s = idx.to_str().unwrap();
    let expected_again = answer(&idx).unwrap();
    assert_eq!(
        expected_again, expected,
        "the same build gives the same answers"
    );
    for fraction in [0.0, 0.1, 0.3, 0.5, 0.7, 0.9] {
        let mut child = spawn(&["index", &corpus("cisi"), "--out", s, "--vocab-size", "1000"]);
        std::thread::sleep(full.mul_f64(fraction));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            continue; // finished before the kill: a complete new index, nothing to check
        }
        let manifest = std::fs::read_to_string(idx.join("manifest.json")).unwrap();
        if manifest.contains("corpus/cisi") {
            // Killed between the swap and the exit: the rebuild was complete (the new index,
            // whole, and no model). Put the trained ADI index back for the next kill.
            assert_eq!(common::trained_adi(&tmp.path().join("again")), idx);
            continue;
        }
        assert_eq!(answer(&idx), Ok(expected.clone()), "killed at {fraction}");
        assert!(
            leftovers(&idx).iter().all(|n| n.contains("genret-build")),
            "{:?}",
            leftovers(&idx)
        );
    }
    // The next rebuild is not refused and cleans up after the killed ones.
    rebuild_adi(s);
    assert!(leftovers(&idx).is_empty(), "{:?}", leftovers(&idx));
}

#[test]
fn a_killed_training_leaves_the_old_model_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let expected = answer(&idx).unwrap();
    let s = idx.to_str().unwrap();
    for delay_ms in [50, 300, 700, 1200] {
        let mut child = spawn(&[
            "train",
            s,
            "--preset",
            "tiny",
            "--steps",
            "400",
            "--checkpoint-every",
            "5",
        ]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "training 400 steps took under {delay_ms} ms"
        );
        assert_eq!(
            answer(&idx),
            Ok(expected.clone()),
            "killed at {delay_ms} ms"
        );
    }
    // The last run resumes from its checkpoint to the end; the new model then answers.
    ok(&["train", s, "--resume", "-q"]);
    answer(&idx).expect("the resumed model answers");
    assert!(leftovers(&idx).is_empty(), "{:?}", leftovers(&idx));
}

#[test]
fn resume_refuses_a_checkpoint_from_another_build_and_a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let s = idx.to_str().unwrap();
    let saved = tmp.path().join("saved-checkpoint");
    copy_dir(&idx.join("checkpoint"), &saved);
    rebuild_adi(s);
    // The rebuild took the old model and checkpoint with it.
    let out = genret(&["train", s, "--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    copy_dir(&saved, &idx.join("checkpoint"));
    let out = genret(&["train", s, "--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("another build") && err.contains("checkpoint"),
        "{err}"
    );

    // While a training run holds the index, neither `index` nor `train` may write it.
    let mut child = spawn(&["train", s, "--preset", "tiny", "--steps", "100000"]);
    let lock = tmp.path().join(".adi.idx.genret-lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = format!("pid {})", child.id());
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&holder)) {
        assert!(Instant::now() < deadline, "the trainer never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [
        vec!["index", &corpus("adi"), "--out", s, "-q"],
        vec!["train", s, "--steps", "5", "-q"],
    ] {
        let out = genret(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("another genret process"),
            "{}",
            stderr(&out)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    // The OS released the killed process's lock.
    ok(&["train", s, "--preset", "tiny", "--steps", "5", "-q"]);
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_genret"))
        .args(args)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start genret")
}

/// A disk that fills up: the file-size limit (RLIMIT_FSIZE) makes every write past it fail
/// as a full disk would, without root or a small file system.
#[cfg(unix)]
fn with_small_disk(args: &[&str], bytes: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_genret"));
    command.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .output()
        .expect("run genret under a file-size limit")
}

#[cfg(unix)]
#[test]
fn a_full_disk_is_an_error_that_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let expected = answer(&idx).unwrap();
    let s = idx.to_str().unwrap();
    let out = with_small_disk(&["index", &corpus("cisi"), "--out", s, "-q"], 64 << 10);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("free some space"), "{}", stderr(&out));
    assert_eq!(answer(&idx), Ok(expected.clone()));
    let out = with_small_disk(
        &["train", s, "--preset", "tiny", "--steps", "10", "-q"],
        256 << 10,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("model.safetensors"),
        "{}",
        stderr(&out)
    );
    assert_eq!(answer(&idx), Ok(expected));
    assert!(leftovers(&idx).is_empty(), "{:?}", leftovers(&idx));
}

#[cfg(not(unix))]
#[test]
fn a_full_disk_is_an_error_that_changes_nothing() {
    eprintln!("skipped: the small-disk check needs RLIMIT_FSIZE (Unix)");
}

#[test]
fn non_finite_weights_are_refused_at_load() {
    use candle_core::{Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let model = idx.join("model");
    let weights = model.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let name = "shared.weight".to_string();
    let t = &tensors[&name];
    let mut values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    values[7] = f32::NAN;
    let poisoned = Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap();
    tensors.insert(name, poisoned);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    // As if genret had written it: the checksums match, only the values are wrong.
    let seal: Value =
        serde_json::from_slice(&std::fs::read(model.join("checksums.json")).unwrap()).unwrap();
    genret::storage::seal_dir(&model, seal["index"].as_str()).unwrap();
    let mut dir = genret::index::IndexDir::open(&idx).unwrap();
    let meta = dir.manifest.parts["model"].meta.clone();
    dir.add_part("model", "model/model.safetensors", meta)
        .unwrap();
    let (code, message) = answer(&idx).expect_err("NaN weights must not answer");
    assert_eq!(code, 2, "{message}");
    assert!(
        message.contains("model.safetensors") && message.contains("NaN"),
        "{message}"
    );

    // A run file with a NaN score is refused too, by file and line.
    let run = tmp.path().join("nan.run");
    std::fs::write(&run, "1 Q0 3 1 NaN x\n").unwrap();
    let qrels = format!("{}/qrels/test.tsv", corpus("adi"));
    let out = genret(&["eval", run.to_str().unwrap(), &qrels]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nan.run:1"), "{}", stderr(&out));
}

#[test]
fn input_edges_are_handled_or_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // A byte-order mark is not part of the first id.
    let tsv = tmp.path().join("bom.tsv");
    std::fs::write(
        &tsv,
        "\u{feff}d1\tboundary layer flow over a plate\nd2\tsupersonic wing theory\n",
    )
    .unwrap();
    let idx = tmp.path().join("bom.idx");
    let s = idx.to_str().unwrap();
    ok(&[
        "index",
        tsv.to_str().unwrap(),
        "--out",
        s,
        "--vocab-size",
        "300",
        "-q",
    ]);
    let docs = std::fs::read_to_string(idx.join("docs.jsonl")).unwrap();
    assert!(docs.starts_with("{\"id\":\"d1\""), "{docs}");

    // An empty corpus is refused and leaves the existing index alone.
    let before = std::fs::read(idx.join("manifest.json")).unwrap();
    let empty = tmp.path().join("empty.tsv");
    std::fs::write(&empty, "").unwrap();
    let out = genret(&["index", empty.to_str().unwrap(), "--out", s, "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no documents"), "{}", stderr(&out));
    assert_eq!(std::fs::read(idx.join("manifest.json")).unwrap(), before);

    // Empty queries and control characters are the caller's mistake.
    // (A NUL cannot be an argument; the server test sends one.)
    for query in ["", "   ", "a\u{7}b", "\u{1b}[2J"] {
        let out = genret(&["search", s, query]);
        assert_eq!(out.status.code(), Some(2), "{query:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("query"), "{}", stderr(&out));
    }
}

// ---- the server ----

/// Sends `request` on a fresh connection and reads until the server closes it (or 10 s pass,
/// which fails the test: the server must not leave a client hanging).
fn exchange(addr: &str, request: &[u8]) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let result = stream.read_to_end(&mut out);
    if let Err(e) = result {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "no answer and no close within 10 s for {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        );
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// The status and the JSON body of an HTTP answer; every answer genret gives has one.
fn parse(reply: &str) -> (u16, Value) {
    let status = reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {reply:?}"));
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {reply:?}"));
    (status, json)
}

fn post(body: &[u8], length: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /search HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: \
         application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[test]
fn the_server_survives_slow_malformed_and_excess_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let server = common::serve(
        &idx,
        &[
            "--header-timeout-ms",
            "500",
            "--body-timeout-ms",
            "500",
            "--max-connections",
            "8",
        ],
    );
    let addr = server.addr.as_str();

    // An idle connection and an unfinished head are closed after the header timeout.
    for request in [&b""[..], b"POST /search HTTP/1.1\r\nhost: x\r\n"] {
        let (took, _) = exchange(addr, request);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    // A body shorter than its Content-Length is answered 408 after the body timeout.
    let (took, reply) = exchange(addr, &post(br#"{"query":"a"}"#, 100));
    assert_eq!(parse(&reply).0, 408, "{reply}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // hyper's own answers carry JSON too.
    assert_eq!(parse(&exchange(addr, b"GARBAGE\r\n\r\n").1).0, 400);
    let huge = format!("GET /health HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(40_000));
    assert_eq!(parse(&exchange(addr, huge.as_bytes()).1).0, 431);

    let nul = br#"{"query":"a\u0000b"}"#;
    let (status, json) = parse(&exchange(addr, &post(nul, nul.len())).1);
    assert_eq!(status, 400);
    assert!(json["error"].as_str().unwrap().contains("U+0000"), "{json}");

    // Fuzzed bodies: each gets a JSON answer (or 408 for a body that never completes).
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: [&[u8]; 4] = [
        br#"{"query":"flow","k":3}"#,
        br#"{"query":"a","mode":"dsi","beam":0}"#,
        br#"{"query":"x","k":99999999999999999999}"#,
        br#"{"query":"\u0000"}"#,
    ];
    for i in 0..150 {
        let mut body = seeds[i % seeds.len()].to_vec();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % body.len();
            body[at] = (next() % 256) as u8;
        }
        let length = match next() % 5 {
            0 => body.len() + 1 + (next() % 50) as usize,
            1 => body.len().saturating_sub(1 + (next() % 5) as usize),
            _ => body.len(),
        };
        let (_, reply) = exchange(addr, &post(&body, length));
        let (status, json) = parse(&reply);
        assert!(
            status == 200 || json["error"].is_string(),
            "{status}: {reply}"
        );
    }

    // Connections beyond the cap are answered 503 rather than left to exhaust the server.
    // A server of its own with a long header timeout, so that no idle connection is closed
    // (freeing its slot) while the test runs on a loaded machine.
    let capped_server = common::serve(
        &idx,
        &["--header-timeout-ms", "60000", "--max-connections", "8"],
    );
    let capped = capped_server.addr.as_str();
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(capped).unwrap())
        .collect();
    // Accepts are first in, first out: the ninth connection is counted after the eight.
    let (_, reply) = exchange(capped, &post(br#"{"query":"flow"}"#, 16));
    assert_eq!(parse(&reply).0, 503, "{reply}");
    drop(idle);
    // Slots come back once the server has seen the eight closes; that takes a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, json) = loop {
        let (_, reply) = exchange(capped, &post(br#"{"query":"flow"}"#, 16));
        let (status, json) = parse(&reply);
        if status != 503 || std::time::Instant::now() > deadline {
            break (status, json);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{json}");
    assert!(!json["results"].as_array().unwrap().is_empty());
    let (_, reply) = exchange(
        addr,
        b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    let (_, stats) = parse(&reply);
    let path = stats["index"]["path"].as_str().unwrap();
    assert_eq!(path, "adi.idx", "no absolute paths in /stats");
}

#[cfg(unix)]
#[test]
fn a_run_goes_to_standard_output_or_through_a_link_never_replacing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = common::trained_adi(tmp.path());
    let s = idx.to_str().unwrap();
    let queries = corpus("adi");
    let out = ok(&["search", s, "--queries", &queries, "--out", "-", "-k", "2"]);
    let run = String::from_utf8(out.stdout).unwrap();
    assert_eq!(run.lines().count(), 35 * 2, "{run}");
    assert!(
        run.lines().all(|l| l.split_whitespace().count() == 6),
        "{run}"
    );

    let link = tmp.path().join("latest.run");
    std::os::unix::fs::symlink("real.run", &link).unwrap();
    let l = link.to_str().unwrap();
    ok(&[
        "search",
        s,
        "--queries",
        &queries,
        "--out",
        l,
        "-k",
        "2",
        "-q",
    ]);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("real.run")).unwrap(),
        run
    );
}
