"""F.interpolate (nearest x2, bilinear x2) and F.pad (reflect, constant) forward + backward at 8x32x64x64 float32:
forgegrad's C++ path (_C.resample), its numpy path (the same ops with the kernel switched off) and torch, threads
pinned on all sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_resample.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1" (default) picks the thread counts.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.nn import functional as F
from forgegrad.ops import _resample_maps as RM
from forgegrad.ops import pad as P

BENCH_THREADS_DEFAULT = "1"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "forgegrad-numpy", "torch"]
SHAPE = (8, 32, 64, 64)
CASES = {
    "nearest x2": lambda lib, x: lib.interpolate(x, scale_factor=2, mode="nearest"),
    "bilinear x2": lambda lib, x: lib.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
    "bilinear x2 ac": lambda lib, x: lib.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
    "reflect pad 2": lambda lib, x: lib.pad(x, (2, 2, 2, 2), mode="reflect"),
    "replicate pad 2": lambda lib, x: lib.pad(x, (2, 2, 2, 2), mode="replicate"),
    "constant pad 1": lambda lib, x: lib.pad(x, (1, 1, 1, 1)),
}


@pytest.fixture
def numpy_path(monkeypatch, request):
    """Switches the C++ path off for the runtime forgegrad-numpy (the path before the kernel)."""
    if request.node.callspec.params["runtime"] == "forgegrad-numpy":
        monkeypatch.setattr(RM, "_kernel_maps", lambda *a: None)
        monkeypatch.setattr(P, "_kernel_ok", lambda *a: False)


def _fn(runtime, case):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    op = CASES[case]
    if runtime == "torch":
        tx = torch.from_numpy(x).requires_grad_()
        g = torch.from_numpy(rng.standard_normal(op(torch.nn.functional, tx).shape).astype(np.float32))

        def run_torch():
            tx.grad = None
            op(torch.nn.functional, tx).backward(g)
        return run_torch
    fx = fg.tensor(x, requires_grad=True)
    g = fg.tensor(rng.standard_normal(op(F, fx).shape).astype(np.float32))

    def run_fg():
        fx.grad = None
        op(F, fx).backward(g)
    return run_fg


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", list(CASES))
def test_resample(benchmark, nthreads, numpy_path, runtime, case):
    fn = _fn(runtime, case)
    benchmark.group = f"{case} fwd+bwd {'x'.join(map(str, SHAPE))} threads={nthreads}"
    benchmark(fn)
