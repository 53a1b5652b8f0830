"""Depth Anything inference, forgegrad vs transformers, one thread pinned on both sides.

    PYTHONPATH=python python bench/bench_depth_anything.py [--height 266 --width 350 --rounds 5]

A randomly initialised model of depth-anything-small's shape (DINOv2 ViT-S/14 backbone: hidden 384, 12 layers, 6
heads, layers 9-12 into the neck; neck 48/96/192/384, fusion 64) is saved by transformers and loaded by
forgegrad's from_pretrained; both run the same image (sides multiples of 14) in interleaved rounds; the best round of
each is reported, with the largest difference of the predicted depth relative to its largest value.
"""
from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=266)
    p.add_argument("--width", type=int, default=350)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import forgegrad_copy

    torch.manual_seed(0)
    backbone = transformers.Dinov2Config(image_size=518, patch_size=14, hidden_size=384, num_hidden_layers=12,
                                         num_attention_heads=6, out_indices=[9, 10, 11, 12],
                                         reshape_hidden_states=False)
    hf = transformers.DepthAnythingForDepthEstimation(
        transformers.DepthAnythingConfig(backbone_config=backbone)).eval()
    model = forgegrad_copy(hf)
    x = np.random.default_rng(0).standard_normal((1, 3, args.height, args.width)).astype(np.float32)
    xt = torch.from_numpy(x)
    with pinned_threads(1), torch.no_grad():
        best, out = best_of_interleaved({"transformers": lambda: hf(xt).predicted_depth.numpy(),
                                         "forgegrad": lambda: model(x).numpy()}, args.rounds, warmup=1)
    want, got = out["transformers"], out["forgegrad"]
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"Depth Anything (small's shape), {args.height}x{args.width}, 1 thread, best of {args.rounds}: "
          f"transformers {best['transformers'] * 1e3:.0f} ms, forgegrad {best['forgegrad'] * 1e3:.0f} ms "
          f"({best['transformers'] / best['forgegrad']:.2f}x); max |diff| / max |depth| {rel:.1e}")


if __name__ == "__main__":
    main()
