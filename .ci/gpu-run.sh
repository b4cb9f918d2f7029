#!/usr/bin/env bash
# Runs on a GPU machine, from the repository root, with the binaries .ci/gpu-bundle built:
# the device tests, then the issue's benchmarks (MSM 2^16..2^22, batched proofs, a proof
# of a 2^20-domain circuit), CPU and CUDA in the same run. The CPU figures are pinned to 2 cores (taskset) to match the 2-core
# machine the CPU targets were set on. Logs go to $OUT (or ./gpu-out).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-gpu-out}
mkdir -p "$out"
export PROVNET_CACHE_DIR="$out/cache"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# NVRTC sits in the toolkit's lib64; provnet looks there (and in PROVNET_NVRTC_DIR).
export PROVNET_NVRTC_DIR=${PROVNET_NVRTC_DIR:-$(dirname "$(find / -name 'libnvrtc.so*' -print -quit 2>/dev/null || echo /usr/local/cuda/lib64/x)")}

step() { echo "== $*"; "$@"; echo "== rc=$?"; }
{
    step "$here/gpu_device" --ignored --test-threads 1
} > "$out/device-tests.log" 2>&1
{
    step "$here/provnet" bench msm --backend cpu,cuda --log-n 16..20 --runs 3
    step "$here/provnet" bench msm --backend cuda --log-n 21..22 --runs 3
    step "$here/provnet" bench msm --backend cpu,cuda --log-n 16..20 --scalars witness --runs 3
} > "$out/bench-msm.log" 2>&1
models="$out/models"
mkdir -p "$models"
{
    for m in dense_256 digits_mlp; do
        step "$here/provnet" model import "kernels/fixtures/$m.onnx" --out "$models/$m"
        step "$here/provnet" model setup "$models/$m"
        step "$here/provnet" bench prove --model "$models/$m" --input "kernels/fixtures/${m}_input.json" \
            --backend cuda --batch 64 --runs 5 --process-runs 0
        step taskset -c 0,1 "$here/provnet" bench prove --model "$models/$m" \
            --input "kernels/fixtures/${m}_input.json" --backend cpu --batch 64 --runs 5 --process-runs 0
    done
} > "$out/bench-prove.log" 2>&1
# The large-circuit target: one segment of 953k constraints (FFT domain 2^20), inputs in
# [0, 1]. Setup runs here on every core; the 2-core CPU figure is a single proof.
{
    m="$models/conv_1m"
    step "$here/provnet" model import kernels/fixtures/conv_1m.onnx --input-min 0 --input-max 1 --out "$m"
    step "$here/provnet" model setup "$m"
    step "$here/provnet" bench prove --model "$m" --input kernels/fixtures/conv_1m_input.json \
        --backend cuda --runs 5 --verify-runs 20 --process-runs 0
    step taskset -c 0,1 "$here/provnet" bench prove --model "$m" \
        --input kernels/fixtures/conv_1m_input.json --backend cpu --runs 1 --verify-runs 5 --process-runs 0
} > "$out/bench-large.log" 2>&1
rm -rf "$models"
tail -n 3 "$out"/*.log
