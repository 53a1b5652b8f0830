"""F.interpolate's trilinear, area and antialias modes forward + backward, one realistic float32 shape each:
forgegrad (dense per-axis products, ops/_resample_maps.py) and torch, threads pinned on all sides (BLAS too).

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/bench_interpolate_modes.py --benchmark-group-by=group --benchmark-columns=min,median
FG_BENCH_THREADS="1" (default) picks the thread counts.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.nn import functional as F

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
CASES = {  # name: (input shape, interpolate's arguments)
    "trilinear x2": ((4, 16, 16, 32, 32), dict(scale_factor=2, mode="trilinear")),
    "bilinear aa 64->24": ((8, 32, 64, 64), dict(size=(24, 24), mode="bilinear", antialias=True)),
    "bicubic aa 64->24": ((8, 32, 64, 64), dict(size=(24, 24), mode="bicubic", antialias=True)),
    "area 64->20": ((8, 32, 64, 64), dict(size=(20, 20), mode="area")),
    "bicubic x2": ((8, 32, 64, 64), dict(scale_factor=2, mode="bicubic")),
}


def _fn(runtime, case):
    shape, kw = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if runtime == "torch":
        tx = torch.from_numpy(x).requires_grad_()
        g = torch.from_numpy(rng.standard_normal(torch.nn.functional.interpolate(tx, **kw).shape).astype(np.float32))

        def run_torch():
            tx.grad = None
            torch.nn.functional.interpolate(tx, **kw).backward(g)
        return run_torch
    fx = fg.tensor(x, requires_grad=True)
    g = fg.tensor(rng.standard_normal(F.interpolate(fx, **kw).shape).astype(np.float32))

    def run_fg():
        fx.grad = None
        F.interpolate(fx, **kw).backward(g)
    return run_fg


@pytest.mark.parametrize("runtime", ["forgegrad", "torch"])
@pytest.mark.parametrize("case", list(CASES))
def test_interpolate_mode(benchmark, nthreads, runtime, case):
    fn = _fn(runtime, case)
    benchmark.group = f"{case} fwd+bwd {'x'.join(map(str, CASES[case][0]))} threads={nthreads}"
    fn()
    benchmark(fn)
