"""Per-pass conv2d timing against torch: forward, input gradient and weight (+ bias) gradient, each alone.

forgegrad's passes are its three kernels (forgegrad.kernels.conv2d_forward, _C.conv.conv2d_backward_input,
_C.conv.conv2d_backward_weight); torch's are F.conv2d and aten.convolution_backward with an output mask of
(input) or (weight, bias). Times are the thread CPU time of one call, best of `--reps` (the machine may be
shared: CPU time is steadier than wall time), 1 thread on both sides unless --threads says otherwise.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python tools/conv_passes.py
    ... tools/conv_passes.py --shape 32,64,32,32,64 --threads 2
    ... tools/conv_passes.py --kernel 4 --stride 2 --shape 16,128,16,16,256 --reps 7   # DCGAN k4 s2 padding 1
"""
import argparse
import time

import numpy as np


def best_ms(fn, reps, inner=3):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.thread_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.thread_time() - t) / inner)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", help="N,C,H,W,OC of a padding-1 conv (repeatable); "
                    "default: the `forgegrad bench conv` shapes")
    ap.add_argument("--kernel", type=int, default=3, help="square kernel size (default 3)")
    ap.add_argument("--stride", type=int, default=1, help="stride (default 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    import torch

    import forgegrad as fg
    from forgegrad import _C
    from forgegrad.kernels.conv import conv2d_forward

    fg.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape or
              ["64,32,14,14,64", "32,64,32,32,64", "64,1,28,28,32"]]
    aten_bwd = torch.ops.aten.convolution_backward
    k, st = args.kernel, args.stride
    print(f"shape ({k}x{k}, stride {st}, padding 1) pass forgegrad ms  GFLOP/s   torch ms  GFLOP/s  x torch")
    for n, c, h, w, oc in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((oc, c, k, k)) * 0.1).astype(np.float32)
        b = np.zeros(oc, np.float32)
        oh, ow = (h + 2 - k) // st + 1, (w + 2 - k) // st + 1
        gy = rng.standard_normal((n, oc, oh, ow)).astype(np.float32)
        gx, gw, gb = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, wt, b, gy))
        one, pads, ss = [1, 1], [1, 1, 1, 1], [st, st]
        ours = {
            "fwd": lambda: conv2d_forward(x, wt, b, stride=st, padding=1),
            "dgrad": lambda: _C.conv.conv2d_backward_input(gy, wt, gx, ss, pads, one, 1),
            "wgrad": lambda: _C.conv.conv2d_backward_weight(x, gy, gw, gb, list(wt.shape), ss, pads, one, 1),
        }
        theirs = {
            "fwd": lambda: torch.nn.functional.conv2d(tx, tw, tb, stride=st, padding=1),
            "dgrad": lambda: aten_bwd(tg, tx, tw, [oc], ss, one, one, False, [0, 0], 1, [True, False, False]),
            "wgrad": lambda: aten_bwd(tg, tx, tw, [oc], ss, one, one, False, [0, 0], 1, [False, True, True]),
        }
        gflop = 2.0 * n * oc * c * k * k * oh * ow / 1e9
        with torch.no_grad():
            for name in ours:
                a, t = best_ms(ours[name], args.reps), best_ms(theirs[name], args.reps)
                print(f"{n}x{c}x{h}x{w}->{oc:<12} {name:6} {a:12.3f} {gflop / a * 1e3:8.0f} {t:10.3f} "
                      f"{gflop / t * 1e3:8.0f} {t / a:8.2f}")


if __name__ == "__main__":
    main()
