"""SiLU and LayerNorm kernels: forgegrad vs torch's aten kernels, threads pinned on both sides.

Run (the OPENBLAS variables are unset only for benchmarks):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \
        python -m pytest bench/bench_norm.py --benchmark-group-by=group --benchmark-columns=min,median,mean
FG_BENCH_THREADS="1,2" (default) picks the thread counts.

Groups (both sides allocate their outputs, as an autograd op does):
  silu fwd / bwd 2048x2048: forgegrad.kernels.activation.silu / silu_backward vs
    torch.nn.functional.silu / aten.silu_backward.
  layer_norm fwd / bwd RxD: kernels.norm.layer_norm_forward / layer_norm_backward (all three
    gradients) vs aten.native_layer_norm / native_layer_norm_backward, with weight and bias;
    shapes of a Transformer's activations (rows = batch * tokens).
  group_norm fwd+bwd, 32 groups at 8x256x32x32, 16x64x64x64 and 4x512x16x16, and instance norm (a group per
    channel) at 8x128x32x32: F.group_norm forward and backward through each library's autograd (input, weight and
    bias gradients), as a diffusion U-Net's blocks run it.
"""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.kernels import activation as KA
from forgegrad.kernels import norm as KN

BENCH_THREADS_DEFAULT = "1,2"  # FG_BENCH_THREADS overrides; `nthreads`: bench/conftest.py
RUNTIMES = ["forgegrad", "torch"]
LN_SHAPES = [(2048, 256), (2048, 768), (512, 4096)]


def _silu_fn(runtime, backward):
    rng = np.random.default_rng(0)
    x = (4 * rng.standard_normal((2048, 2048))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    if runtime == "forgegrad":
        return (lambda: KA.silu_backward(g, x)) if backward else (lambda: KA.silu(x))
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    if backward:
        return lambda: torch.ops.aten.silu_backward(tg, tx)
    return lambda: torch.nn.functional.silu(tx)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_silu(benchmark, nthreads, runtime, backward):
    fn = _silu_fn(runtime, backward)
    benchmark.group = f"silu {'bwd' if backward else 'fwd'} 2048x2048 threads={nthreads}"
    benchmark(fn)


def _layer_norm_fn(runtime, shape, backward):
    rng = np.random.default_rng(0)
    d = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(d) + 1).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)
    if runtime == "forgegrad":
        if not backward:
            return lambda: KN.layer_norm_forward(x, d, w, b)
        _, mean, rstd = KN.layer_norm_forward(x, d, w, b)
        return lambda: KN.layer_norm_backward(g, x, mean, rstd, w)
    tx, tg, tw, tb = (torch.from_numpy(a) for a in (x, g, w, b))
    if not backward:
        return lambda: torch.native_layer_norm(tx, (d,), tw, tb, 1e-5)
    _, mean, rstd = torch.native_layer_norm(tx, (d,), tw, tb, 1e-5)
    return lambda: torch.ops.aten.native_layer_norm_backward(tg, tx, (d,), mean, rstd, tw, tb, [True, True, True])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("shape", LN_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layer_norm(benchmark, nthreads, shape, runtime, backward):
    fn = _layer_norm_fn(runtime, shape, backward)
    benchmark.group = f"layer_norm {'bwd' if backward else 'fwd'} {shape[0]}x{shape[1]} threads={nthreads}"
    benchmark(fn)


GN_CASES = [((8, 256, 32, 32), 32), ((16, 64, 64, 64), 32), ((4, 512, 16, 16), 32), ((8, 128, 32, 32), 128)]


def _group_norm_fn(runtime, shape, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(shape[1]) + 1).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    lib = fg if runtime == "forgegrad" else torch
    tensor = fg.tensor if runtime == "forgegrad" else torch.from_numpy
    tx, tw, tb = (tensor(a).requires_grad_(True) for a in (x, w, b))
    tg = tensor(g)
    group_norm = lib.nn.functional.group_norm

    def step():
        for t in (tx, tw, tb):
            t.grad = None
        group_norm(tx, groups, tw, tb).backward(tg)

    return step


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shape, groups", GN_CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else
                         f"G{v}")
def test_group_norm(benchmark, nthreads, runtime, shape, groups):
    benchmark.group = f"group_norm fwd+bwd {'x'.join(map(str, shape))} groups={groups} threads={nthreads}"
    benchmark(_group_norm_fn(runtime, shape, groups))
