"""docs/SCALE.md's serving design, run on one machine with Ray: a decoder actor (the model and
the FM-index) writes and weighs each query's n-grams and nominates candidates
(`Index.seal_plans`); one document-server actor per FM-index shard scores the candidates it
holds (`DocumentShard.score`) and names them; the driver merges the shards' answers. Every
answer is checked against `Index.search` in one process: same documents, same scores.

    python scripts/ray_demo.py CORPUS WORK [--shards 4] [--steps 60] [--queries 50]

Run through scripts/ray_demo.sh, which installs Ray and the genret package into a venv.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import ray

import genret


@ray.remote
class Decoder:
    """The model and the FM-index: from queries to plans, no document read."""

    def __init__(self, path):
        self.index = genret.Index.open(path)

    def plans(self, texts, k):
        return self.index.seal_plans(texts, k=k)


@ray.remote
class DocumentServer:
    """Documents first..end: scores the candidates among them and names them."""

    def __init__(self, path, first, end):
        self.shard = genret.DocumentShard(path, first, end)

    def score(self, plans):
        """Each plan's best among this shard's candidates, as (doc, score, id)."""
        answers = []
        for plan in plans:
            scored = self.shard.score(**plan)
            ids = self.shard.ids([d for d, _ in scored])
            answers.append([(d, score, i) for (d, score), i in zip(scored, ids)])
        return answers


def build(corpus, work, shards, steps):
    """A `shards`-shard index of `corpus` with a tiny SEAL model (reused when present)."""
    path = work / "index"
    if (path / "model").exists():
        return genret.Index.open(str(path))
    plain = genret.Index.build(corpus, str(work / "plain"))
    stats = json.loads((Path(plain.path) / "stats.json").read_text())
    size = math.ceil((stats["tokens"] + stats["docs"]) / shards) + 1
    while True:
        index = genret.Index.build(corpus, str(path), shard_size=size)
        if index.shards <= shards:
            break
        size = math.ceil(size * 1.02)
    index.train(steps=steps, preset="tiny")
    return index


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("work", type=Path)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    index = build(args.corpus, args.work, args.shards, args.steps)
    ranges = index.shard_ranges()
    print(f"index {index.path}: {len(index)} documents in {len(ranges)} shards {ranges}")
    qfile = Path(args.corpus) / "queries.jsonl"
    texts = [json.loads(line)["text"] for line in qfile.read_text().splitlines() if line.strip()]
    texts = texts[: args.queries]

    clock = time.perf_counter()
    local = index.search(texts, k=args.k)
    local_s = time.perf_counter() - clock

    ray.init(num_cpus=len(ranges) + 1, include_dashboard=False, log_to_driver=False)
    decoder = Decoder.remote(str(index.path))
    servers = [DocumentServer.remote(str(index.path), a, b) for a, b in ranges]
    ray.get([decoder.plans.remote(texts[:1], args.k)] + [s.score.remote([]) for s in servers])

    # One scatter-gather per batch of queries: the plans go to every document server at once
    # (one object in Ray's store), each scores the candidates it holds.
    clock = time.perf_counter()
    plans = ray.get(decoder.plans.remote(texts, args.k))
    ref = ray.put(plans)
    per_server = ray.get([s.score.remote(ref) for s in servers])
    answers = []
    for q, plan in enumerate(plans):
        merged = genret.merge_scored([scored[q] for scored in per_server], plan["k"])
        answers.append([(i, score) for _, score, i in merged])
    ray_s = time.perf_counter() - clock
    ray.shutdown()

    same = sum(
        [(h.doc_id, h.score) for h in hits] == answer for hits, answer in zip(local, answers)
    )
    report = {
        "documents": len(index),
        "shards": ranges,
        "queries": len(texts),
        "identical_answers": same,
        "candidates_per_query": sum(len(p["candidates"]) for p in plans) / len(plans),
        "one_process_s": round(local_s, 3),
        "ray_s": round(ray_s, 3),
    }
    (args.work / "ray_demo.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    if same != len(texts):
        raise SystemExit(f"{len(texts) - same} of {len(texts)} answers differ from Index.search")
    print(f"all {same} answers equal Index.search's (documents and scores)")


if __name__ == "__main__":
    main()
