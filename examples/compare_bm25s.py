"""genret beside another Python retrieval tool, compared with ir_measures.

Runs, on a BEIR collection (the shipped Cranfield by default): genret's SEAL (training its
model when the index has none), genret's BM25 (tantivy) and the `bm25s` package's BM25 over the
same documents, writes each run, and evaluates all three with `ir_measures` (and genret's own
evaluation, which must agree). Run it as a script or cell by cell in a notebook:

    pip install ./python bm25s ir-measures
    python examples/compare_bm25s.py                       # corpus/cranfield, 400 steps
    python examples/compare_bm25s.py corpus/adi --steps 100
"""

import argparse
import json
from pathlib import Path

import bm25s
import ir_measures
from ir_measures import nDCG, RR, R

import genret

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("collection", nargs="?", default="corpus/cranfield")
parser.add_argument("--out", default=None, help="index directory (default: bench/py-<name>.idx)")
parser.add_argument("--steps", type=int, default=400, help="SEAL training steps (small preset)")
args = parser.parse_args()
collection = Path(args.collection)
out = Path(args.out or f"bench/py-{collection.name}.idx")

# The collection: documents, test queries, judgments.
docs = [json.loads(line) for line in (collection / "corpus.jsonl").read_text().splitlines()]
queries = {
    q["_id"]: q["text"]
    for q in map(json.loads, (collection / "queries.jsonl").read_text().splitlines())
}
qrels_path = collection / "qrels" / "test.tsv"
judged = {line.split("\t")[0] for line in qrels_path.read_text().splitlines()[1:]}
queries = {q: t for q, t in queries.items() if q in judged}

# genret: the index, SEAL's model and BM25's index, each made once and reused.
index = genret.Index.open(str(out)) if out.exists() else genret.Index.build(str(collection), str(out))
if "model" not in index.parts:
    print(f"training SEAL's small model for {args.steps} steps ...")
    print(index.train(steps=args.steps))
if "bm25" not in index.parts:
    index.add("bm25")
runs = {
    "genret seal": genret.run_of(index, queries, mode="seal", k=100),
    "genret bm25": genret.run_of(index, queries, mode="bm25", k=100),
}

# bm25s over the same texts (title and text, as genret indexes them).
ids = [d["_id"] for d in docs]
retriever = bm25s.BM25()
retriever.index(bm25s.tokenize([f"{d.get('title', '')}\n{d['text']}" for d in docs], stopwords="en"))
qids = list(queries)
depth = min(100, len(docs))
results, scores = retriever.retrieve(bm25s.tokenize([queries[q] for q in qids], stopwords="en"), k=depth)
runs["bm25s"] = {
    q: [(ids[i], float(s)) for i, s in zip(results[n], scores[n])] for n, q in enumerate(qids)
}

# Every run evaluated by ir_measures, and by genret (the two must agree).
# BEIR's qrels: a header, then query-id <TAB> corpus-id <TAB> score.
qrels = [
    ir_measures.Qrel(q, d, int(rel))
    for q, d, rel in (line.split("\t") for line in qrels_path.read_text().splitlines()[1:])
]
measures = [nDCG @ 10, RR @ 10, R @ 100]
print(f"\n{collection.name}: {len(queries)} judged queries")
print(f"{'run':<14} {'nDCG@10':>8} {'RR@10':>8} {'R@100':>8}   genret's nDCG@10")
for name, run in runs.items():
    path = out.parent / f"{out.stem}-{name.replace(' ', '-')}.trec"
    genret.write_run(str(path), run, name=name.replace(" ", "-"))
    agg = ir_measures.calc_aggregate(measures, qrels, list(ir_measures.read_trec_run(str(path))))
    ours = genret.evaluate(run, str(qrels_path), ["ndcg@10"])["ndcg@10"]
    print(f"{name:<14} {agg[nDCG @ 10]:>8.4f} {agg[RR @ 10]:>8.4f} {agg[R @ 100]:>8.4f}   {ours:.4f}")
    assert abs(agg[nDCG @ 10] - ours) < 1e-9, (name, agg[nDCG @ 10], ours)
