#!/usr/bin/env bash
# Builds genret with its CUDA backend (`cargo build --release --features cuda`) on a machine
# without a CUDA toolkit or a GPU, and stages what a GPU machine needs to run
# scripts/gpu_check.sh in target/cuda/carry: the binary and the GPU test binary (tests/gpu.rs),
# stripped and xz-compressed (about 10 MB each instead of 70: the device tool carries at most
# 64 MiB), and MiniLM's config.json and tokenizer.json (when MiniLM is installed here).
#
#   bash scripts/build_cuda.sh            # -> target/cuda/release/genret, target/cuda/carry/
#
# The toolkit comes from NVIDIA's PyPI packages (nvcc, headers, cuBLAS, cuRAND, NVRTC),
# installed into target/cuda-toolkit (about 1.5 GB, once). The driver library libcuda.so is
# never on PyPI (it ships with the driver), so the build links against a stub generated from
# cudarc's own bindings; the real libcuda.so.1 of the GPU machine's driver is loaded when the
# binary runs there. The binary needs, at run time, the driver and the CUDA 13 libraries
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13 and libcudart.so.13
# (scripts/gpu_check.sh finds them in the machine's Python packages).
#
# Environment: GENRET_CUDA_DIR (toolkit folder), CUDA_COMPUTE_CAP (default 90: H100/H200;
# 80 for A100, 89 for L4/RTX 40xx), CARGO_TARGET_DIR (default target/cuda, kept apart so the
# CPU build in target/ is never overwritten by this one).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLKIT=${GENRET_CUDA_DIR:-$PWD/target/cuda-toolkit}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
ROOT=$TOOLKIT/nvidia/cu13

# Every package pinned to the 13.0 release: nvcc's own dependencies (nvvm, crt) left loose
# resolve to a newer release, whose compiler front end writes PTX this ptxas rejects.
REQUIREMENTS=(
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*"
    "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*"
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*"
)
if [ "$(cat "$TOOLKIT/.requirements" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
    echo "installing the CUDA 13.0 toolkit packages into $TOOLKIT" >&2
    rm -rf "$TOOLKIT"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$TOOLKIT" \
        "${REQUIREMENTS[@]}" \
        || { echo "error: pip could not install NVIDIA's CUDA packages (is PyPI reachable?)" >&2; exit 1; }
    echo "${REQUIREMENTS[*]}" >"$TOOLKIT/.requirements"
fi

# The linker looks for unversioned names; the wheels ship only the versioned libraries.
for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
    [ -e "$ROOT/lib/lib$lib" ] || { echo "error: $ROOT/lib/lib$lib is missing" >&2; exit 1; }
    ln -sf "lib$lib" "$ROOT/lib/lib${lib%.so.*}.so"
done

# A link-time stub of the driver library: every cu* entry point cudarc declares, empty.
STUBS=$ROOT/lib/stubs
if [ ! -e "$STUBS/libcuda.so" ]; then
    cargo fetch --quiet
    BINDINGS=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
cudarc = [p for p in pkgs if p["name"] == "cudarc"]
print(os.path.join(os.path.dirname(cudarc[0]["manifest_path"]), "src/driver/sys/mod.rs"))')
    mkdir -p "$STUBS"
    grep -o '^pub unsafe fn cu[A-Za-z0-9_]*' "$BINDINGS" | sed 's/^pub unsafe fn //' | sort -u \
        | sed 's/.*/void &(void) {}/' >"$STUBS/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/cuda_stub.c"
fi

export CUDA_HOME=$ROOT
export NVCC=$ROOT/bin/nvcc
export PATH=$ROOT/bin:$PATH
export LIBRARY_PATH=$ROOT/lib:$STUBS${LIBRARY_PATH:+:$LIBRARY_PATH}
"$NVCC" --version | tail -2 >&2
cargo build --release --features cuda --bin genret
TESTS=$(cargo test --release --features cuda --test gpu --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')

CARRY=$CARGO_TARGET_DIR/carry
rm -rf "$CARRY" && mkdir -p "$CARRY"
for pair in "genret:$CARGO_TARGET_DIR/release/genret" "gpu-tests:$TESTS"; do
    strip -o "$CARRY/${pair%%:*}" "${pair#*:}"
    xz -T0 -6 "$CARRY/${pair%%:*}"
done
MINILM=$(ls -d "${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ 2>/dev/null | head -1)
if [ -n "$MINILM" ]; then
    mkdir -p "$CARRY/minilm-shape"
    cp -L "$MINILM/config.json" "$MINILM/tokenizer.json" "$CARRY/minilm-shape/"
fi
du -sh "$CARRY"/* >&2
echo "$CARGO_TARGET_DIR/release/genret"
