"""genret: generative retrieval (SEAL and DSI) with a native Rust core.

A sequence-to-sequence model writes what it retrieves: corpus n-grams constrained by an
FM-index (SEAL, ``mode="seal"``) or document identifiers constrained by a prefix trie (DSI,
``mode="dsi"``). BM25 and dense retrieval (MiniLM) answer through the same call, alone or
two fused (``"seal+dense"``: min-max normalised scores summed; ``"rrf:bm25+dense"``:
reciprocal-rank fusion).

Example::

    import genret

    index = genret.Index.build("corpus/cranfield", "cranfield.idx")
    index.train(steps=400)                     # SEAL's small model, ~3 min on 2 cores
    hits = index.search(["boundary layer transition"], k=5)[0]
    for h in hits:
        print(h.doc_id, round(h.score, 3), h.title, h.ngrams[:3])
    for t in index.explain("boundary layer transition")[:5]:   # the n-grams it scored with
        print(t.ngram, round(t.prob, 3), t.count, round(t.weight, 3))

    index.add("bm25")                          # BM25 reads an index `add` builds
    run = genret.run_of(index, {"1": "what similarity laws must be obeyed"}, mode="bm25", k=100)
    genret.write_run("bm25.trec", run)
    print(genret.evaluate(run, "corpus/cranfield/qrels/test.tsv"))

Models train and run on ``device`` (``Index.open(path, device="cuda")``; default ``"auto"``:
the first GPU when genret was built with its ``cuda`` feature, else the CPU).

Errors are ``ValueError`` when the input is at fault (a missing model, a bad query, a damaged
file; the message says what to do) and ``RuntimeError`` otherwise. ``build``, ``train`` and
``search`` release the GIL.
"""

from ._genret import DocumentShard, Hit, Index, Term, __version__, evaluate, write_run

__all__ = [
    "DocumentShard", "Hit", "Index", "Term", "evaluate", "write_run", "run_of", "merge_scored",
    "__version__",
]


def merge_scored(scored, k):
    """Merges ``DocumentShard.score`` results (lists of ``(doc, score)``, one per shard) into
    the best ``k`` as ``Index.search`` orders them: score descending, ties by document number.

    >>> merge_scored([[(4, 2.0), (9, 1.0)], [(7, 2.0)]], k=2)
    [(4, 2.0), (7, 2.0)]
    """
    return sorted((hit for part in scored for hit in part), key=lambda h: (-h[1], h[0]))[:k]


def run_of(index, queries, mode="seal", k=100, **options):
    """Answers ``queries`` (dict: query id -> text) and returns the run that ``evaluate`` and
    ``write_run`` take: dict query id -> list of (doc id, score), best first.

    >>> run = run_of(index, {"q1": "heat transfer"}, mode="bm25", k=10)   # doctest: +SKIP
    >>> run["q1"][0]                                                         # doctest: +SKIP
    ('120', 7.31...)
    """
    ids = list(queries)
    answers = index.search([queries[q] for q in ids], mode=mode, k=k, **options)
    return {q: [(h.doc_id, h.score) for h in hits] for q, hits in zip(ids, answers)}
