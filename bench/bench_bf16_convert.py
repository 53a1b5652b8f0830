"""float32 -> bfloat16 rounding and bfloat16 -> float32 widening of whole arrays: forgegrad's C++ conversions
(_C.bf16, what forgegrad.dtypes.astype runs), ml_dtypes' numpy casts (what forgegrad ran before) and torch's
``.to(torch.bfloat16)`` / ``.float()``, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_bf16_convert.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1,2" (default "1") picks the thread counts.
"""
import numpy as np
import pytest
import torch

from forgegrad import _C

ml_dtypes = pytest.importorskip("ml_dtypes")
BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
SIZES = [256 * 512, 4 << 20]


def _calls(direction, n):
    f = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    h = f.astype(ml_dtypes.bfloat16)
    if direction == "round":
        out = np.empty(n, np.uint16)
        tf = torch.from_numpy(f)
        return {"forgegrad": lambda: _C.bf16.round_from_float32(f, out), "ml_dtypes": lambda: f.astype(h.dtype),
                "torch": lambda: tf.to(torch.bfloat16)}
    out = np.empty(n, np.float32)
    th = torch.from_numpy(h.view(np.int16)).view(torch.bfloat16)
    return {"forgegrad": lambda: _C.bf16.widen_to_float32(h, out), "ml_dtypes": lambda: h.astype(np.float32),
            "torch": lambda: th.float()}


@pytest.mark.parametrize("runtime", ["forgegrad", "ml_dtypes", "torch"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("direction", ["round", "widen"])
def test_bf16_conversion(benchmark, nthreads, direction, n, runtime):
    fn = _calls(direction, n)[runtime]
    fn()
    benchmark.group = f"bfloat16 {direction}, {n} elements, threads={nthreads}"
    benchmark(fn)
