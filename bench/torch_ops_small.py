"""Small ops against torch in one process, 1 thread pinned on both sides, forgegrad and torch alternated twice and
the best of each taken (bench/torch_ops_interleaved.py's method): Tensor.unfold with overlapping windows, histc,
shifts, isin, gcd (C++ binary GCD), rot90 / diff / unfold's backward (C++ tiled transpose, one-pass difference
adjoint, overlap-add), the other logic / shape / pointwise ops of that round on ~1M elements, and the activations
of forgegrad.kernels.activation_more (elu, selu, celu, softplus, mish, logsigmoid, hardsigmoid, hardswish,
softsign, tanhshrink, hardtanh, relu6, softshrink, hardshrink, threshold) and of
forgegrad.kernels.activation_param (prelu, glu, rrelu in eval and training) forward + backward on 1.6M float32
elements, with relu's for scale (the "act ..." cases).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/torch_ops_small.py [substring ...]

Arguments keep only the cases whose name contains one of them. Figures on a shared machine are rough.
"""
import sys

import numpy as np
import torch

import forgegrad as fg
from torch_ops_interleaved import compare


def fwd_bwd(lib, fn, *arrays):
    def run():
        ts = [lib.tensor(a, requires_grad=True) for a in arrays]
        fn(*ts).sum().backward()
    return run


def cases(rng):
    """(name, forgegrad callable, torch callable, repeats)."""
    out = []

    def both(name, make, repeats=7):
        out.append((name, make(fg), make(torch), repeats))

    x = rng.standard_normal((64, 4096)).astype(np.float32)
    both("unfold(1,64,16) (y*y).sum fwd+bwd (64,4096)",
         lambda lib: fwd_bwd(lib, lambda t: (lambda y: y * y)(t.unfold(1, 64, 16)), x))
    both("unfold(1,64,64) fwd+bwd (64,4096)", lambda lib: fwd_bwd(lib, lambda t: t.unfold(1, 64, 64) * 2, x))

    m = rng.standard_normal(1 << 20).astype(np.float32)
    fm, tm = fg.tensor(m), torch.tensor(m)
    out.append(("histc bins=100 data range 1M f32", lambda: fg.histc(fm), lambda: torch.histc(tm), 7))
    out.append(("histc bins=1000 [-2,2] 1M f32", lambda: fg.histc(fm, 1000, -2, 2),
                lambda: torch.histc(tm, 1000, -2, 2), 7))
    out.append(("histogram bins=100 1M f32", lambda: fg.histogram(fm, 100), lambda: torch.histogram(tm, 100), 7))

    i = rng.integers(-1 << 40, 1 << 40, 1 << 20)
    s = rng.integers(0, 63, 1 << 20)
    fi, ti, fs, ts = fg.tensor(i), torch.tensor(i), fg.tensor(s), torch.tensor(s)
    out.append(("x << 3 int64 1M", lambda: fi << 3, lambda: ti << 3, 7))
    out.append(("x >> 3 int64 1M", lambda: fi >> 3, lambda: ti >> 3, 7))
    out.append(("x >> s (tensor) int64 1M", lambda: fi >> fs, lambda: ti >> ts, 7))
    for dt in (np.int32, np.int8):
        small = i.astype(dt)
        fsm, tsm = fg.from_numpy(small), torch.from_numpy(small)  # fg.tensor would store int64
        out.append((f"x << 3 {dt.__name__} 1M", lambda f=fsm: f << 3, lambda t=tsm: t << 3, 7))
    out.append(("x & y int64 1M", lambda: fi & fs, lambda: ti & ts, 7))

    e = rng.integers(0, 1000, 1 << 20)
    te = rng.integers(0, 1000, 100)
    fe, tte, fte, ttte = fg.tensor(e), torch.tensor(e), fg.tensor(te), torch.tensor(te)
    out.append(("isin 1M int64 in 100", lambda: fg.isin(fe, fte), lambda: torch.isin(tte, ttte), 7))
    out.append(("isin 1M int64 in a number", lambda: fg.isin(fe, 7), lambda: torch.isin(tte, 7), 7))
    te2 = rng.integers(0, 100000, 10000)
    fte2, ttte2 = fg.tensor(te2), torch.tensor(te2)
    out.append(("isin 1M int64 in 10000", lambda: fg.isin(fe, fte2), lambda: torch.isin(tte, ttte2), 5))

    g1, g2 = rng.integers(-1000, 1000, 1 << 18), rng.integers(-1000, 1000, 1 << 18)
    fg1, fg2, tg1, tg2 = fg.tensor(g1), fg.tensor(g2), torch.tensor(g1), torch.tensor(g2)
    out.append(("gcd 256k int64", lambda: fg.gcd(fg1, fg2), lambda: torch.gcd(tg1, tg2), 5))
    w1, w2 = rng.integers(-1 << 40, 1 << 40, 1 << 18), rng.integers(-1 << 40, 1 << 40, 1 << 18)
    fw1, fw2, tw1, tw2 = fg.tensor(w1), fg.tensor(w2), torch.tensor(w1), torch.tensor(w2)
    out.append(("gcd 256k int64 |x| < 2**40", lambda: fg.gcd(fw1, fw2), lambda: torch.gcd(tw1, tw2), 5))
    n1, n2 = g1.astype(np.int32), g2.astype(np.int32)
    fn1, fn2, tn1, tn2 = fg.from_numpy(n1), fg.from_numpy(n2), torch.from_numpy(n1), torch.from_numpy(n2)
    out.append(("gcd 256k int32", lambda: fg.gcd(fn1, fn2), lambda: torch.gcd(tn1, tn2), 5))

    h = rng.choice([-1.0, 0.0, 2.0], 1 << 20).astype(np.float32)
    fh, th, fv, tv = fg.tensor(h), torch.tensor(h), fg.tensor(np.float32([0.5])), torch.tensor(np.float32([0.5]))
    out.append(("heaviside 1M f32", lambda: fg.heaviside(fh, fv), lambda: torch.heaviside(th, tv), 7))

    a, b = rng.standard_normal(1 << 20).astype(np.float32), rng.standard_normal(1 << 20).astype(np.float32)
    fa, fb, ta, tb = fg.tensor(a), fg.tensor(b), torch.tensor(a), torch.tensor(b)
    out.append(("logical_and f32 1M", lambda: fg.logical_and(fa, fb), lambda: torch.logical_and(ta, tb), 7))
    bo = a > 0
    fbo, tbo = fg.tensor(bo), torch.tensor(bo)
    out.append(("logical_not bool 1M", lambda: fg.logical_not(fbo), lambda: torch.logical_not(tbo), 7))
    out.append(("a > b f32 1M", lambda: fa > fb, lambda: ta > tb, 7))
    out.append(("a == 0.5 f32 1M", lambda: fa == 0.5, lambda: ta == 0.5, 7))
    out.append(("all(a != 9) f32 1M", lambda: fg.all(fa), lambda: torch.all(ta), 7))
    out.append(("any f32 1M dim=0 (1024,1024)", lambda: fg.any(fa.reshape(1024, 1024), 0),
                lambda: torch.any(ta.reshape(1024, 1024), 0), 7))

    for name in ("log1p", "expm1", "tan"):
        out.append((f"{name} fwd 1M f32", lambda n=name: getattr(fg, n)(fa), lambda n=name: getattr(torch, n)(ta), 7))
    pos = np.abs(a)
    both("log1p fwd+bwd 1M f32", lambda lib: fwd_bwd(lib, lib.log1p, pos))

    r = rng.standard_normal((512, 512)).astype(np.float32)
    both("repeat_interleave 3 dim=0 fwd+bwd (512,512)",
         lambda lib: fwd_bwd(lib, lambda t: t.repeat_interleave(3, dim=0), r))
    both("rot90 fwd+bwd (512,512)", lambda lib: fwd_bwd(lib, lambda t: lib.rot90(t, 1, (0, 1)) * 2, r))
    both("diff n=1 dim=1 fwd+bwd (512,512)", lambda lib: fwd_bwd(lib, lambda t: lib.diff(t, dim=1), r))
    both("diff n=2 dim=0 fwd+bwd (512,512)", lambda lib: fwd_bwd(lib, lambda t: lib.diff(t, n=2, dim=0), r))
    v = rng.standard_normal((8, 256, 256)).astype(np.float32)
    both("rot90 k=-1 dims (1,2) fwd+bwd (8,256,256)",
         lambda lib: fwd_bwd(lib, lambda t: lib.rot90(t, -1, (1, 2)) * 2, v))
    fv, tv = fg.tensor(v), torch.tensor(v)
    out.append(("x.mT.contiguous() (8,256,256)", lambda: fv.mT.contiguous(), lambda: tv.mT.contiguous(), 7))
    c1, c2 = rng.standard_normal((1 << 18, 3)).astype(np.float32), rng.standard_normal((1 << 18, 3)).astype(np.float32)
    both("cross fwd+bwd (256k,3)", lambda lib: fwd_bwd(lib, lambda p, q: lib.cross(p, q, dim=1), c1, c2))
    act = (rng.standard_normal((400, 4096)) * 3).astype(np.float32)  # 1.6M elements
    for name, kw in (("relu", {}), ("elu", {}), ("selu", {}), ("celu", {"alpha": 2.0}), ("softplus", {}),
                     ("mish", {}), ("logsigmoid", {}), ("hardsigmoid", {}), ("hardswish", {}), ("softsign", {}),
                     ("tanhshrink", {}), ("hardtanh", {}), ("relu6", {}), ("softshrink", {}), ("hardshrink", {}),
                     ("threshold", {"threshold": 0.5, "value": -1.0})):
        both(f"act {name} fwd+bwd (400,4096) f32",
             lambda lib, n=name, k=kw: fwd_bwd(lib, lambda t: getattr(lib.nn.functional, n)(t, **k), act), 5)
    # the parametrised ones (forgegrad.kernels.activation_param) on NCHW activations, 1.6M elements
    nchw = (rng.standard_normal((32, 64, 28, 28)) * 3).astype(np.float32)
    slopes = rng.uniform(0.05, 0.3, 64).astype(np.float32)
    both("act prelu(64 slopes) fwd+bwd (32,64,28,28) f32",
         lambda lib: fwd_bwd(lib, lambda t, w: lib.nn.functional.prelu(t, w), nchw, slopes), 5)
    both("act glu(dim=1) fwd+bwd (32,64,28,28) f32",
         lambda lib: fwd_bwd(lib, lambda t: lib.nn.functional.glu(t, 1), nchw), 5)
    for training in (False, True):
        both(f"act rrelu(training={training}) fwd+bwd (400,4096) f32",
             lambda lib, tr=training: fwd_bwd(lib, lambda t: lib.nn.functional.rrelu(t, training=tr), act), 5)
    return out


def main():
    fg.set_num_threads(1)
    torch.set_num_threads(1)
    keep = sys.argv[1:]
    for name, ours, theirs, repeats in cases(np.random.default_rng(0)):
        if not keep or any(k in name for k in keep):
            compare(name, ours, theirs, repeats)


if __name__ == "__main__":
    main()
