#!/usr/bin/env bash
# How genret grows with the corpus (issue 24): for each size, a reproducible corpus of real
# English passages (examples/scale_corpus.rs), then index, train a fixed small SEAL model,
# and search, one process at a time; prints a table and writes WORK/scale.json.
#
#   bash scripts/bench_scale.sh [PASSAGES ...]        (default: 10000 100000 1000000)
#
# Env: WORK (default target/scale; corpora and indexes are kept there and reused), STEPS (SEAL
# training steps, default 30: the model only has to write n-grams, quality is not the point),
# QUERIES (default 200), GENRET (binary; default target/release/genret, built if absent),
# REUSE=1 (keep an index and model already built under WORK, with its index timing, rather
# than building them again: for resuming a long run).
# Columns: index wall and CPU seconds and peak RSS (GNU time), index size on disk (model
# excluded), search process peak RSS, startup (process wall time less the queries' own time),
# the first query's extra time over the median, SEAL's median per-query time at batch 1, and
# hits@10 (a passage that holds the query sentence in the top 10).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/scale}
STEPS=${STEPS:-30}
QUERIES=${QUERIES:-200}
GENRET=${GENRET:-target/release/genret}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000 1000000)
[ -x /usr/bin/time ] || { echo "bench_scale: needs GNU time at /usr/bin/time (apt install time)" >&2; exit 1; }

cargo build --release --quiet --example scale_corpus
[ -x "$GENRET" ] || cargo build --release --quiet
mkdir -p "$WORK"
rows=()
for n in "${SIZES[@]}"; do
  corpus="$WORK/p$n" index="$WORK/i$n"
  [ -f "$corpus/corpus.jsonl" ] || target/release/examples/scale_corpus "$n" "$corpus" "$QUERIES" >&2
  if [ "${REUSE:-0}" = 1 ] && [ -f "$WORK/index$n.time" ] && [ -f "$index/manifest.json" ]; then
    echo "== $n passages: index kept ($index)" >&2
  else
    echo "== $n passages: index" >&2
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/index$n.time" "$GENRET" index "$corpus" --out "$index" -q >/dev/null
  fi
  [ "${REUSE:-0}" = 1 ] && [ -d "$index/model" ] || "$GENRET" train "$index" --steps "$STEPS" -q >/dev/null
  echo "== $n passages: search" >&2
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/search$n.time" \
    "$GENRET" search "$index" --queries "$corpus/queries.jsonl" --batch 1 --json --out "$WORK/run$n.trec" -q \
    >"$WORK/search$n.jsonl"
  "$GENRET" eval "$WORK/run$n.trec" "$corpus/qrels/test.tsv" --metrics hits@10 --json >"$WORK/eval$n.json"
  rows+=("$(python3 - "$n" "$WORK" "$index" <<'EOF'
import json, os, statistics, sys
n, work, index = sys.argv[1], sys.argv[2], sys.argv[3]
wall, user, sys_, rss = open(f"{work}/index{n}.time").read().split()[-4:]
swall, _, _, srss = open(f"{work}/search{n}.time").read().split()[-4:]
took = [json.loads(l)["took_ms"] for l in open(f"{work}/search{n}.jsonl")]
stats = json.load(open(f"{index}/stats.json"))
size = sum(os.path.getsize(os.path.join(index, f)) for f in os.listdir(index)
           if os.path.isfile(os.path.join(index, f)))
p50 = statistics.median(took[1:])
row = {
    "passages": int(n), "tokens": stats["tokens"],
    "index_wall_s": float(wall), "index_cpu_s": float(user) + float(sys_),
    "index_peak_rss_mib": int(rss) / 1024, "index_mb": size / 1e6,
    "phase_seconds": stats.get("phase_seconds", {}),
    "search_rss_mib": int(srss) / 1024,
    "startup_s": float(swall) - sum(took) / 1e3,
    "first_query_extra_ms": took[0] - p50, "seal_p50_ms": p50,
    "hits@10": json.load(open(f"{work}/eval{n}.json"))["mean"]["hits@10"],
}
print(json.dumps(row))
EOF
)")
done
printf '%s\n' "${rows[@]}" >"$WORK/scale.jsonl"
python3 - "$WORK" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/scale.jsonl")]
json.dump(rows, open(f"{sys.argv[1]}/scale.json", "w"), indent=1)
print("| passages | tokens | index wall / CPU | peak RSS | index size | search RSS / startup "
      "| first query extra | SEAL p50 | hits@10 |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['passages']:,} | {r['tokens'] / 1e6:.1f}M "
          f"| {r['index_wall_s']:.0f} s / {r['index_cpu_s']:.0f} s "
          f"| {r['index_peak_rss_mib']:.0f} MiB | {r['index_mb']:.0f} MB "
          f"| {r['search_rss_mib']:.0f} MiB / {r['startup_s']:.1f} s "
          f"| {r['first_query_extra_ms']:.0f} ms | {r['seal_p50_ms']:.0f} ms | {r['hits@10']:.2f} |")
EOF
