# Produces expected.json for tests/eval.rs with ir-measures (PyPI ir-measures 0.4.3, backend
# pytrec-eval-terrier 0.5.11):
#   python3 -m venv venv && venv/bin/pip install ir-measures==0.4.3 pytrec-eval-terrier==0.5.11
#   venv/bin/python make_expected.py > expected.json
# The fixture has graded judgments (0..3 and a negative one), score ties inside a query (q1's
# top two, q2's 2nd-4th: trec_eval breaks them by document id, descending), a judged query
# with no relevant document (q3), a relevant document retrieved only below rank 10 (q2's d5),
# and a run query that is not judged (q6). Every judged query is in the run.
# Every measure is computed by the pytrec_eval provider (trec_eval itself). ir-measures would
# route RR@k to its `msmarco` provider, which breaks score ties differently from trec_eval, so
# reciprocal rank is taken from trec_eval's uncut `recip_rank` (genret's mrr@1000: every run
# here is shorter than 1000).
import json
import ir_measures
from ir_measures import nDCG, RR, R, AP, Success, P

qrels = [ir_measures.Qrel(q, d, int(g)) for q, d, g in
         (line.rstrip("\n").split("\t") for line in open("qrels.tsv").readlines()[1:])]
run = list(ir_measures.read_trec_run("run.trec"))
measures = {
    "ndcg@10": nDCG @ 10, "ndcg@5": nDCG @ 5, "ndcg@3": nDCG @ 3,
    "mrr@1000": RR,
    "recall@10": R @ 10, "recall@100": R @ 100, "recall@3": R @ 3,
    "map@100": AP @ 100, "map@5": AP @ 5,
    "hits@1": Success @ 1, "hits@10": Success @ 10,
    "p@5": P @ 5, "p@10": P @ 10,
}
out = {"mean": {}, "per_query": {}}
trec = ir_measures.providers.registry["pytrec_eval"]
agg = trec.calc_aggregate(list(measures.values()), qrels, run)
for name, m in measures.items():
    out["mean"][name] = agg[m]
for row in trec.iter_calc(list(measures.values()), qrels, run):
    name = next(n for n, m in measures.items() if m == row.measure)
    out["per_query"].setdefault(row.query_id, {})[name] = row.value
print(json.dumps(out, indent=1, sort_keys=True))
