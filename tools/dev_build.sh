#!/usr/bin/env bash
# Incremental development build: compiles forgegrad._C into python/forgegrad/ so that
# `PYTHONPATH=python pytest` runs against the working tree without reinstalling.
#   tools/dev_build.sh            # CPU kernels only (fast)
#   FORGEGRAD_CUDA=ON tools/dev_build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${FORGEGRAD_BUILD_DIR:-build/dev}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFORGEGRAD_CUDA="${FORGEGRAD_CUDA:-OFF}" \
  -DFORGEGRAD_DEV_OUTPUT="$PWD/python/forgegrad" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build "$build" -j "${FORGEGRAD_BUILD_JOBS:-2}"
