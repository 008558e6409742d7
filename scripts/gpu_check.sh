#!/usr/bin/env bash
# The GPU check, in one short run on a machine with an NVIDIA GPU (nothing is fetched there):
#   1. the GPU tests (tests/gpu.rs: logits, loss, gradients, decoder steps, BERT states,
#      training and search, each against the CPU);
#   2. SEAL's `small` model trained on Cranfield for $STEPS steps, in f32 and in tf32;
#   3. the 225 Cranfield queries decoded by SEAL at beam 10, batch 1 and 32;
#   4. DSI trained for $DSI_STEPS steps and its queries decoded the same way;
#   5. every GPU run compared with the same model searched on the CPU (same top 10?);
# and writes $OUT/gpu_check.json: steps/s, queries/s, agreement.
#
# On this machine:   bash scripts/build_cuda.sh    (binary, test binary, encoder shape)
# On the GPU machine, from the repository root, with target/cuda/carry carried:
#                    bash scripts/gpu_check.sh [OUT]   (OUT defaults to target/gpu-check)
# Rehearsal without a GPU (and the 2-core CPU numbers to compare with):
#                    DEVICE=cpu GENRET_BIN=target/release/genret bash scripts/gpu_check.sh
#
# DSI reads with all-MiniLM-L6-v2. Where it is not installed (a GPU machine without network),
# an encoder of the same shape with random weights is made with python3 and torch from the
# carried config.json and tokenizer.json: the speed is MiniLM's, and CPU and GPU still run
# the same weights, but DSI's answers mean nothing there (the JSON says which encoder ran).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/gpu-check}
DEVICE=${DEVICE:-cuda}
CARRY=${CARRY:-target/cuda/carry}
BIN=${GENRET_BIN:-$CARRY/genret}
TESTS=${GPU_TESTS:-$CARRY/gpu-tests}
STEPS=${STEPS:-300}
DSI_STEPS=${DSI_STEPS:-300}
COLLECTION=${COLLECTION:-corpus/cranfield}
W=$OUT/work
rm -rf "$W" && mkdir -p "$W"
log() { echo "[gpu_check $(date +%T)] $*" >&2; }
# The carried binaries come xz-compressed (scripts/build_cuda.sh); python3's lzma unpacks them
# where no xz is installed.
for f in "$BIN" "$TESTS"; do
    if [ ! -x "$f" ] && [ -f "$f.xz" ]; then
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f.xz" "$f"
        chmod +x "$f"
    fi
done
[ -x "$BIN" ] || { log "no genret binary at $BIN (scripts/build_cuda.sh makes it)"; exit 1; }

if [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$W/gpu.txt" \
        || log "nvidia-smi failed"
    # The CUDA 13 libraries the binary links, from wherever this machine keeps them (a CUDA
    # install or NVIDIA's Python packages).
    for lib in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
        if ! ldconfig -p | grep -q "$lib"; then
            found=$(find /usr /opt /root -name "$lib" 2>/dev/null | head -1)
            [ -n "$found" ] && LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
    done
    export LD_LIBRARY_PATH
    ldd "$BIN" | grep "not found" && log "missing libraries above"
fi

# 1. The GPU tests.
if [ "$DEVICE" != cpu ] && [ -x "$TESTS" ]; then
    log "GPU tests"
    GENRET_ROOT=$PWD "$TESTS" --test-threads 1 >"$W/tests.log" 2>&1
    echo $? >"$W/tests.rc"
fi

# Times one command into $W/NAME.time (seconds) and its output into $W/NAME.log.
timed() {
    local name=$1
    shift
    local start end
    start=$(date +%s.%N)
    "$@" >"$W/$name.log" 2>"$W/$name.err"
    local rc=$?
    end=$(date +%s.%N)
    echo "$start $end $rc" >"$W/$name.time"
    [ $rc -eq 0 ] || log "$name failed ($rc): $(tail -3 "$W/$name.err")"
    return $rc
}

log "index $COLLECTION"
timed index "$BIN" index "$COLLECTION" --out "$W/idx" -q
cp -r "$W/idx" "$W/idx-tf32"

log "train SEAL small, $STEPS steps, f32 and tf32"
timed train "$BIN" train "$W/idx" --preset small --steps "$STEPS" --device "$DEVICE" --json -q
if [ "$DEVICE" != cpu ]; then
    timed train-tf32 "$BIN" train "$W/idx-tf32" --preset small --steps "$STEPS" \
        --device "$DEVICE" --precision tf32 --json -q
fi

QUERIES=$COLLECTION/queries.jsonl
search() { # NAME INDEX DEVICE BATCH [more flags]
    local name=$1 idx=$2 device=$3 batch=$4
    shift 4
    timed "$name" "$BIN" search "$idx" --queries "$QUERIES" --out "$W/$name.trec" \
        --beam 10 --batch "$batch" --device "$device" "$@"
}
log "SEAL search"
search seal-b1 "$W/idx" "$DEVICE" 1
search seal-b32 "$W/idx" "$DEVICE" 32
if [ "$DEVICE" != cpu ]; then
    search seal-cpu "$W/idx" cpu 32
    search seal-b32-tf32 "$W/idx" "$DEVICE" 32 --precision tf32
fi

# DSI's encoder: MiniLM if installed, else its shape with random weights.
ENCODER=sentence-transformers/all-MiniLM-L6-v2
ENCODER_KIND=all-MiniLM-L6-v2
if ! "$BIN" add "$W/idx" dense --device cpu -q >/dev/null 2>&1; then
    ENCODER=$W/minilm-random
    ENCODER_KIND="random weights of all-MiniLM-L6-v2's shape"
    log "no MiniLM here: making $ENCODER"
    mkdir -p "$ENCODER"
    cp "$CARRY/minilm-shape/config.json" "$CARRY/minilm-shape/tokenizer.json" "$ENCODER/"
    python3 - "$ENCODER" <<'EOF'
import sys
from transformers import BertConfig, BertModel
d = sys.argv[1]
model = BertModel(BertConfig.from_json_file(f"{d}/config.json"))
model.save_pretrained(d, safe_serialization=True)
EOF
fi
log "train DSI, $DSI_STEPS steps"
timed dsi-train "$BIN" train "$W/idx" --dsi --encoder "$ENCODER" --steps "$DSI_STEPS" \
    --device "$DEVICE" --json -q
log "DSI search"
search dsi-b1 "$W/idx" "$DEVICE" 1 --mode dsi
search dsi-b32 "$W/idx" "$DEVICE" 32 --mode dsi
[ "$DEVICE" != cpu ] && search dsi-cpu "$W/idx" cpu 32 --mode dsi

python3 - "$W" "$OUT/gpu_check.json" "$DEVICE" "$STEPS" "$DSI_STEPS" "$ENCODER_KIND" <<'EOF'
import json, os, re, sys
w, out, device, steps, dsi_steps, encoder = sys.argv[1:]

def read(name, ext):
    p = os.path.join(w, f"{name}.{ext}")
    return open(p).read() if os.path.exists(p) else None

def seconds(name):
    t = read(name, "time")
    if not t:
        return None
    start, end, rc = t.split()
    return float(end) - float(start) if rc == "0" else None

def train(name):
    log = read(name, "log")
    if not log or seconds(name) is None:
        return None
    r = json.loads(log.strip().splitlines()[-1])
    return {"steps": r["steps"], "seconds": round(r["seconds"], 2),
            "steps_per_s": round(r["steps"] / r["seconds"], 2),
            "first_loss": r["first_loss"], "final_loss": r["final_loss"]}

def search(name):
    log = read(name, "log")
    m = log and re.search(r"\(([\d.]+) ms/query, ([\d.]+) queries/s\)", log)
    return {"ms_per_query": float(m.group(1)), "queries_per_s": float(m.group(2)),
            "wall_s": round(seconds(name), 2)} if m else None

def run(name):
    text = read(name, "trec")
    if text is None:
        return None
    ranked = {}
    for line in text.splitlines():
        q, _, doc, *_ = line.split()
        ranked.setdefault(q, []).append(doc)
    return {q: docs[:10] for q, docs in ranked.items()}

def agreement(a, b):
    ra, rb = run(a), run(b)
    if not ra or not rb:
        return None
    same = sum(1 for q in ra if rb.get(q) == ra[q])
    return {"queries": len(ra), "same_top10": same, "fraction": round(same / len(ra), 4)}

tests = None
if read("tests", "rc") is not None:
    log = read("tests", "log")
    m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed", log or "")
    tests = {"rc": int(read("tests", "rc")), "passed": int(m.group(1)) if m else None,
             "failed": int(m.group(2)) if m else None}
result = {
    "device": device,
    "gpu": (read("gpu", "txt") or "").strip() or None,
    "tests": tests,
    "train_seal_small": {"f32": train("train"), "tf32": train("train-tf32")},
    "seal": {"batch1": search("seal-b1"), "batch32": search("seal-b32"),
             "batch32_tf32": search("seal-b32-tf32"), "cpu_batch32": search("seal-cpu"),
             "agreement_with_cpu": agreement("seal-cpu", "seal-b32"),
             "agreement_tf32_with_cpu": agreement("seal-cpu", "seal-b32-tf32"),
             "agreement_batch1_batch32": agreement("seal-b1", "seal-b32")},
    "dsi_encoder": encoder,
    "train_dsi": train("dsi-train"),
    "dsi": {"batch1": search("dsi-b1"), "batch32": search("dsi-b32"),
            "cpu_batch32": search("dsi-cpu"),
            "agreement_with_cpu": agreement("dsi-cpu", "dsi-b32"),
            "agreement_batch1_batch32": agreement("dsi-b1", "dsi-b32")},
}
json.dump(result, open(out, "w"), indent=1)
print(json.dumps(result, indent=1))
EOF
