#!/usr/bin/env python3
"""Indexing-recall probe: a BEIR folder whose queries are one random window of each document's
own text, judged relevant to that document alone.

    python3 scripts/windows.py corpus/cranfield cran-win [WORDS=16]
    genret search INDEX --mode dsi --queries cran-win/queries.jsonl --out w.trec
    genret eval w.trec cran-win/qrels/test.tsv          # hits@1 = indexing recall

Documents of fewer than 4 words get no window. Seeded: the same windows every run.
"""
import json
import os
import random
import sys

corpus, out = sys.argv[1], sys.argv[2]
nwords = int(sys.argv[3]) if len(sys.argv) > 3 else 16
rng = random.Random(7)
os.makedirs(os.path.join(out, "qrels"), exist_ok=True)
with open(os.path.join(corpus, "corpus.jsonl")) as f, \
        open(os.path.join(out, "queries.jsonl"), "w") as q, \
        open(os.path.join(out, "qrels", "test.tsv"), "w") as r:
    r.write("query-id\tcorpus-id\tscore\n")
    for line in f:
        d = json.loads(line)
        w = d["text"].split()
        if len(w) < 4:
            continue
        n = min(nwords, len(w))
        s = rng.randint(0, len(w) - n)
        qid = "w" + d["_id"]
        q.write(json.dumps({"_id": qid, "text": " ".join(w[s:s + n])}) + "\n")
        r.write(f"{qid}\t{d['_id']}\t1\n")
