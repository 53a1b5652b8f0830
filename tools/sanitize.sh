#!/usr/bin/env bash
# forgegrad._C under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds the extension with -fsanitize=address,undefined into its own build folder, puts it into a
# temporary copy of the package (python/forgegrad/_C*.so is never touched), then runs the kernel
# tests (attention included), the hardening tests and a fuzz run (tests/fuzz) against that copy with
# the ASan runtime preloaded. Exits non-zero when a test fails or a sanitizer reports anything, in
# this process or in any child (sanitizer reports go to files, which catches those of the fuzz and
# hardening children).
#
#   tools/sanitize.sh                                  # CI-sized fuzz run
#   FORGEGRAD_FUZZ_EXAMPLES=5000 tools/sanitize.sh     # a longer fuzz run under the sanitizers
#   tools/sanitize.sh tests/test_gemm.py               # other tests instead of the default set
#   FORGEGRAD_SANITIZE_PREBUILT_SO=../build/sanitize/_C.cpython-311-x86_64-linux-gnu.so tools/sanitize.sh
#                                                      # no build: that sanitized _C (refused if a C++ file is newer)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${FORGEGRAD_SANITIZE_BUILD_DIR:-build/sanitize}
san="-fsanitize=address,undefined -fno-omit-frame-pointer"

prebuilt=${FORGEGRAD_SANITIZE_PREBUILT_SO:-}
if [ -n "$prebuilt" ]; then
  # an ASan + UBSan _C*.so built by this script elsewhere (another worktree's build/sanitize, whose
  # from-scratch build takes ~45 min on a busy machine): refused when the C++ sources changed after it
  # (a commit to cpp/ or CMakeLists.txt dated later, or uncommitted changes; file dates mean nothing
  # in a fresh worktree)
  last=$(git log -1 --format=%ct -- cpp CMakeLists.txt)
  if [ "$last" -gt "$(stat -c %Y "$prebuilt")" ] || ! git diff --quiet HEAD -- cpp CMakeLists.txt; then
    echo "sanitize.sh: $prebuilt predates the C++ sources of $(git log -1 --format='%h %ci' -- cpp CMakeLists.txt)"
    echo "             or the working tree changes cpp/: build it here instead"; exit 2
  fi
  echo "== using the prebuilt sanitized $prebuilt"
else
  echo "== building forgegrad._C with ASan + UBSan in $build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$san" -DCMAKE_MODULE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
    -DFORGEGRAD_CUDA=OFF -DFORGEGRAD_DEV_OUTPUT="" \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
    -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
  cmake --build "$build" -j "${FORGEGRAD_BUILD_JOBS:-2}"
  prebuilt=$(ls "$build"/_C*.so)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/forgegrad-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pkg" "$work/reports"
cp -r python/forgegrad "$work/pkg/"
rm -f "$work"/pkg/forgegrad/_C*.so
cp "$prebuilt" "$work/pkg/forgegrad/"

asan_rt=$(${CXX:-c++} -print-file-name=libasan.so)
[ -e "$asan_rt" ] || { echo "sanitize.sh: no ASan runtime ($asan_rt)"; exit 2; }
# detect_leaks=0: CPython leaks by design at exit. allocator_may_return_null=1 with
# max_allocation_size_mb: an allocation over 4 GiB (the fuzz's huge shapes) becomes MemoryError, as the
# fuzz child's address-space limit makes it without ASan, not a report or the machine's OOM killer.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096:log_path=$work/reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/reports/ubsan"
# libstdc++ preloaded too: python does not link it, and ASan must find its __cxa_throw at start-up
export LD_PRELOAD="$asan_rt $(${CXX:-c++} -print-file-name=libstdc++.so)"
export PYTHONPATH="$work/pkg"
# the fuzz child knows it runs under the sanitizers: its memory limit (GB) is on the RSS, not the address
# space (ASan reserves terabytes of it), and huge valid inputs are smaller (tests/fuzz/fuzz_util.py)
export FORGEGRAD_FUZZ_SANITIZED=1
export FORGEGRAD_FUZZ_MEMORY_GB=${FORGEGRAD_FUZZ_MEMORY_GB:-6}
export FORGEGRAD_FUZZ_TIMEOUT=${FORGEGRAD_FUZZ_TIMEOUT:-180}
export FORGEGRAD_FUZZ_REPORT="$work/fuzz.json"

python3 -c "import forgegrad, sys; sys.exit(0 if forgegrad.__file__.startswith('$work/pkg') else
            'sanitize.sh: python imports ' + forgegrad.__file__ + ', not the sanitized copy')"

if [ $# -gt 0 ]; then
  tests=("$@")
else
  # the kernels added since: the 3-D max pool, the fused linear backward, linear_cross_entropy (SGEMM +
  # cross-entropy kernel over chunks), ConvTranspose3d's kernel == stride path (attention_small: test_attention*),
  # the sums over leading / middle / non-adjacent axes, the strided conv and k4 weight-gradient tiles, the
  # orthogonal polynomials' recurrences (test_special)
  tests=(tests/test_*kernels*.py tests/test_gemm*.py tests/test_attention*.py tests/test_hardening_*.py tests/test_freeze_plan.py
         tests/test_pool3d_planes.py tests/test_linear_backward_fused.py tests/test_linear_cross_entropy.py
         tests/test_conv_transpose3d_disjoint.py tests/test_reduce_*.py tests/test_conv_direct_ocv.py
         tests/test_conv_wgrad_ocv.py tests/test_special.py tests/fuzz)
fi
echo "== running ${tests[*]} under the sanitizers"
start=$(date +%s)
status=0
(cd "$root" && python3 -m pytest "${tests[@]}" -q -p no:cacheprovider) || status=$?
end=$(date +%s)

# A report is an ASan error, a UBSan runtime error or a sanitizer CHECK failure; the allocator's
# "failed to allocate" warning for a refused huge allocation (MemoryError in Python) is none.
reports=$(grep -l -E "ERROR: AddressSanitizer|runtime error:|CHECK failed|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
  "$work"/reports/* 2>/dev/null | sort || true)
for f in "$work"/reports/*; do
  [ -e "$f" ] || continue
  echo "== sanitizer output $f"; cat "$f"
done
if [ -n "$reports" ]; then
  echo "sanitize.sh: $(echo "$reports" | wc -l) sanitizer report(s): $reports"
  [ "$status" -ne 0 ] || status=1
fi
cases=$(python3 -c "import json; print(sum(json.load(open('$work/fuzz.json'))['stats'].values()))" 2>/dev/null || echo 0)
echo "sanitize.sh: tests exit status $status, $cases fuzz cases, $((end - start)) s, sanitizer reports: $(echo -n "$reports" | grep -c . || true)"
exit "$status"
