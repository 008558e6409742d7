"""The Python package end to end on the shipped ADI collection: build, train, search in every
mode, evaluate, write a run; answers equal the command line's; searching releases the GIL."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import genret

ROOT = Path(__file__).resolve().parents[2]
ADI = ROOT / "corpus" / "adi"


def genret_bin():
    path = os.environ.get("GENRET_BIN")
    assert path and Path(path).exists(), "set GENRET_BIN to the genret binary (scripts/test_python.sh does)"
    return path


def cli_json(index, query, *flags):
    """`genret search INDEX QUERY --json FLAGS`'s answer."""
    out = subprocess.run(
        [genret_bin(), "search", str(index.path), query, "--json", *flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def queries():
    lines = (ADI / "queries.jsonl").read_text().splitlines()
    return {q["_id"]: q["text"] for q in map(json.loads, lines)}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("py") / "adi.idx"
    index = genret.Index.build(str(ADI), str(out))
    assert len(index) == 82
    with pytest.raises(ValueError, match="genret train"):
        index.search(["information retrieval"])
    report = index.train(steps=30, preset="tiny")
    assert report["steps"] == 30 and report["loss"] > 0
    assert "model" in index.parts
    return index


@pytest.mark.parametrize(
    "options, flags",
    [
        ({}, []),
        (
            {"exact_ngrams": True, "ngrams_per_step": 20, "max_ngram_len": 4, "beam": 5},
            ["--exact-ngrams", "--ngrams-per-step", "20", "--max-ngram-len", "4", "--beam", "5"],
        ),
    ],
)
def test_seal_answers_equal_the_command_line(index, options, flags):
    query = "information retrieval systems"
    hits = index.search([query], k=5, **options)[0]
    assert 0 < len(hits) <= 5
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    cli = cli_json(index, query, "-k", "5", *flags)["results"]
    assert [(h.doc_id, h.title, h.ngrams) for h in hits] == [
        (c["doc_id"], c["title"], c["ngrams"]) for c in cli
    ]
    assert [h.score for h in hits] == pytest.approx([c["score"] for c in cli], rel=1e-12)


def test_every_mode_and_evaluation(index, tmp_path):
    with pytest.raises(ValueError, match="genret add"):
        index.search(["retrieval"], mode="bm25")
    index.add("bm25")
    query = ["information retrieval systems"]
    default = index.search(query, mode="bm25", k=5)[0]
    presence = index.search(query, mode="bm25", k=5, k1=0.0, b=0.0)[0]
    assert [h.score for h in default] != [h.score for h in presence]
    with pytest.raises(ValueError, match="BM25's b"):
        index.search(query, mode="bm25", b=2.0)
    qs = queries()
    for mode in ["bm25", "seal+bm25", "rrf:seal+bm25"]:
        run = genret.run_of(index, qs, mode=mode, k=20)
        assert len(run) == len(qs)
        metrics = genret.evaluate(run, str(ADI / "qrels" / "test.tsv"))
        assert 0.0 < metrics["ndcg@10"] <= 1.0, (mode, metrics)
    with pytest.raises(ValueError, match="unknown mode"):
        index.search(["retrieval"], mode="bm26")
    with pytest.raises(ValueError, match="empty"):
        index.search(["  "], mode="bm25")

    # The run file is TREC's, and evaluates as the in-memory run does.
    run = genret.run_of(index, qs, mode="bm25", k=20)
    path = tmp_path / "bm25.trec"
    genret.write_run(str(path), run, name="bm25")
    first = path.read_text().splitlines()[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1" and first[5] == "bm25"
    out = subprocess.run(
        [genret_bin(), "eval", str(path), str(ADI / "qrels" / "test.tsv"), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    cli = json.loads(out.splitlines()[-1])
    mine = genret.evaluate(run, str(ADI / "qrels" / "test.tsv"))
    assert cli["mean"]["ndcg@10"] == pytest.approx(mine["ndcg@10"], abs=1e-12)


def test_evaluate_counts_a_relevant_document_at_rank_two(tmp_path):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    metrics = genret.evaluate({"q1": [("d1", 2.0), ("d2", 1.0)]}, str(qrels), ["mrr@10", "recall@1"])
    assert metrics == {"mrr@10": 0.5, "recall@1": 0.0}


def test_search_releases_the_gil(index):
    texts = list(queries().values()) * 2
    index.search(texts[:2])  # loaded and warm
    count = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        # The counter's pace while the main thread sleeps (which releases the GIL).
        c0 = count[0]
        time.sleep(0.2)
        rate = (count[0] - c0) / 0.2
        c0, t0 = count[0], time.perf_counter()
        index.search(texts, batch=8)
        took = time.perf_counter() - t0
        ran = count[0] - c0
    finally:
        stop.set()
        thread.join()
    assert took > 0.05, f"search too quick to tell ({took:.3f} s)"
    # Holding the GIL, the counter would advance for a switch interval or two at most.
    assert ran > 0.1 * rate * took, (ran, rate, took)


def test_device_choice(index):
    # The package is built without CUDA (CI has no GPU): auto and cpu are the CPU, cuda says
    # how to get a CUDA build, and a misspelt device is refused before anything loads.
    assert index.device == "cpu"
    assert genret.Index.open(str(index.path), device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="build_cuda.sh"):
        genret.Index.open(str(index.path), device="cuda:0")
    with pytest.raises(ValueError, match="unknown device"):
        genret.Index.open(str(index.path), device="gpu")


def test_explain_equals_the_command_line(index):
    query = "information retrieval systems"
    terms = index.explain(query)
    assert terms and all(isinstance(t, genret.Term) for t in terms)
    cli = cli_json(index, query, "--explain")["terms"]
    assert [(t.ngram, t.count, t.docs) for t in terms] == [
        (c["ngram"], c["count"], c["docs"]) for c in cli
    ]
    assert [t.weight for t in terms] == pytest.approx([c["weight"] for c in cli], rel=1e-12)


def test_train_options(tmp_path):
    index = genret.Index.build(str(ADI), str(tmp_path / "adi.idx"))
    report = index.train(steps=4, preset="tiny", lr=2e-3, batch_size=4)
    assert report["steps"] == 4
    with pytest.raises(ValueError, match="lr must be"):
        index.train(steps=4, preset="tiny", lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        index.train(steps=4, preset="tiny", batch_size=0)


def test_document_shards_score_plans_as_search_does(index):
    texts = list(queries().values())[:8]
    plans = index.seal_plans(texts, k=10)
    shards = [genret.DocumentShard(str(index.path), a, b) for a, b in [(0, 30), (30, 31), (31, 82)]]
    assert [len(s) for s in shards] == [30, 1, 51]
    answers = index.search(texts, k=10)
    for plan, hits in zip(plans, answers):
        assert plan["candidates"], "a plan nominates candidates"
        merged = genret.merge_scored([s.score(**plan) for s in shards], plan["k"])
        owner = [next(s for s, (a, b) in zip(shards, [(0, 30), (30, 31), (31, 82)]) if a <= d < b)
                 for d, _ in merged]
        ids = [o.ids([d])[0] for o, (d, _) in zip(owner, merged)]
        assert ids == [h.doc_id for h in hits]
        assert [score for _, score in merged] == [h.score for h in hits]
    with pytest.raises(ValueError, match="not in this shard"):
        shards[1].ids([0])
    with pytest.raises(ValueError, match="not within"):
        genret.DocumentShard(str(index.path), 10, 83)


def test_shards_and_added_documents(tmp_path, index):
    lines = (ADI / "corpus.jsonl").read_text().splitlines()
    (tmp_path / "base.jsonl").write_text("\n".join(lines[:60]) + "\n")
    (tmp_path / "more.jsonl").write_text("\n".join(lines[60:]) + "\n")
    sharded = genret.Index.build(str(ADI), str(tmp_path / "four.idx"), shard_size=5000)
    assert sharded.shards > 1 and len(sharded) == 82
    grown = genret.Index.build(str(tmp_path / "base.jsonl"), str(tmp_path / "grown.idx"))
    grown.train(steps=4, preset="tiny")
    grown.add_documents(str(tmp_path / "more.jsonl"))
    assert len(grown) == 82 and "model" in grown.parts
    assert grown.search(["information retrieval"])[0]
    with pytest.raises(ValueError, match="already in the index"):
        grown.add_documents(str(tmp_path / "more.jsonl"))


@pytest.mark.parametrize("precision,rel", [("f16", 1e-2), ("int8", 1e-1)])
def test_reduced_precision_equals_the_command_line(index, precision, rel):
    # Precision is set for the whole process when an index opens; these tests run last and
    # set it back.
    query = "information retrieval systems"
    f32 = index.search([query], k=5)[0]
    try:
        low = genret.Index.open(str(index.path), precision=precision).search([query], k=5)[0]
        cli = cli_json(index, query, "-k", "5", "--precision", precision)["results"]
        assert [h.doc_id for h in low] == [c["doc_id"] for c in cli]
        assert [h.score for h in low] == pytest.approx([c["score"] for c in cli], rel=1e-12)
        # The reduced weights were used: the scores moved, by little.
        assert [h.score for h in low] != [h.score for h in f32]
        assert [h.score for h in low] == pytest.approx([h.score for h in f32], rel=rel)
        with pytest.raises(ValueError, match="f32, tf32, f16 or int8"):
            genret.Index.open(str(index.path), precision="bf16")
    finally:
        genret.Index.open(str(index.path), precision="f32")
