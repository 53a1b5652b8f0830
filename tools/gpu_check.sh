#!/usr/bin/env bash
# The GPU check of the CUDA backend (docs/cuda.md), for a machine with an NVIDIA GPU, nvcc, cmake,
# ninja, pybind11, pytest (+ pytest-xdist, pytest-timeout) and torch: builds forgegrad._C with the
# CUDA kernels for that GPU into python/forgegrad, runs the CUDA tests and the cuda bench suite.
#   bash tools/gpu_check.sh [OUTDIR]        # logs: OUTDIR/{gpu,build,tests,bench}.log
# Environment: PYTHON (default python3), ARCH (CUDA architecture, default: the GPU's), BUILD_DIR
# (default build/gpu), TESTS (pytest arguments narrowing the run), WORKERS (pytest-xdist workers when
# installed, default 8), BENCH=0 to skip the bench, MEMCHECK=1 to also run the runtime, GEMM, nn and
# pointwise tests under compute-sanitizer's memcheck (the planted-fault tests left out; API errors,
# such as the deliberate out-of-memory test's, not counted). Without a GPU the tests skip and the
# bench rows are absent, which checks the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.log"
nvcc --version | tail -2 | tee -a "$out/gpu.log"
arch=${ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
build=${BUILD_DIR:-build/gpu}
start=$SECONDS
if ! { cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFORGEGRAD_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES="$arch" -DFORGEGRAD_DEV_OUTPUT="$PWD/python/forgegrad" \
         -Dpybind11_DIR="$($py -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" &&
       cmake --build "$build" -j "$(nproc)"; } > "$out/build.log" 2>&1; then
  tail -60 "$out/build.log"
  exit 1
fi
echo "build (sm_$arch, $(nproc) jobs): $((SECONDS - start)) s"
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
$py -c "import forgegrad.cuda as c; print('cuda available:', c.is_available(), c.device_count(), c.unavailable_reason())"
plugins=()
$py -c "import xdist" 2>/dev/null && plugins+=(-n "${WORKERS:-8}")
$py -c "import pytest_timeout" 2>/dev/null && plugins+=(--timeout 120 --timeout-method=thread)
start=$SECONDS
# shellcheck disable=SC2086
timeout "${TEST_TIMEOUT:-300}" $py -m pytest ${TESTS:-tests/test_cuda.py tests/test_cuda_arrays.py \
  tests/test_cuda_gemm.py tests/test_cuda_nn.py tests/test_cuda_nn_contract.py tests/test_cuda_pointwise.py \
  tests/test_cuda_runtime.py tests/test_device_ops.py tests/test_cuda_models.py \
  tests/test_cuda_dropout_indexing.py tests/test_device_fallback.py tests/test_hf_on_device.py} \
  -q -p no:cacheprovider "${plugins[@]}" -rs > "$out/tests.log" 2>&1
echo "tests: exit $?, $((SECONDS - start)) s"
grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.log" | head -80
if [ "${BENCH:-1}" != 0 ]; then
  timeout "${BENCH_TIMEOUT:-200}" $py -m forgegrad.bench cuda > "$out/bench.log" 2>&1
  echo "bench: exit $?"
  cat "$out/bench.log"
fi
if [ "${MEMCHECK:-0}" != 0 ]; then
  sanitizer=$(command -v compute-sanitizer || echo "$(dirname "$(command -v nvcc)")/compute-sanitizer")
  start=$SECONDS
  timeout "${MEMCHECK_TIMEOUT:-300}" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 3 \
    --print-limit 20 \
    $py -m pytest tests/test_cuda.py tests/test_cuda_arrays.py tests/test_cuda_gemm.py tests/test_cuda_nn.py \
    tests/test_cuda_pointwise.py tests/test_cuda_dropout_indexing.py -k "not fault" -q -p no:cacheprovider \
    > "$out/memcheck.log" 2>&1
  echo "memcheck: exit $?, $((SECONDS - start)) s"
  grep -E "ERROR SUMMARY|Invalid|passed|failed" "$out/memcheck.log" | head -20
fi
