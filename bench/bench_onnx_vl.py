"""Qwen2-VL and LLaVA-NeXT exported by export_image_text, onnxruntime against forgegrad eager, one thread pinned on
both sides: the vision graph alone (Qwen2-VL: the grid's layout and the (N, N) frame bias computed in the graph;
LLaVA-NeXT: the tiles, packed on the host) and the prefill of a prompt holding one image (vision, embedding, the rows
placed on the host, the decoder over the prompt).

    PYTHONPATH=python python bench/bench_onnx_vl.py [--models qwen2_vl,llava_next --rounds 3]

The models are bench_image_text.py's (random weights saved by transformers): Qwen2-VL with a 12-block 768-wide tower
over 16 x 16 patches of 14 px (64 merged tokens), LLaVA-NeXT with a CLIP ViT-B/16 tower over 5 tiles of 224 px (660
tokens), each with a 4-layer 1024-wide decoder; 20 text tokens around the image. The best of the interleaved rounds
is reported, with the largest difference of the outputs over their largest magnitude.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="qwen2_vl,llava_next")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads
    from forgegrad.bench.hf_encoders import forgegrad_copy
    from forgegrad.models.hf import export_image_text
    from forgegrad.models.hf.onnx_image_text import ImageTextSessions
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_image_text import _llava_next, _qwen2_vl

    transformers.logging.set_verbosity_error()
    makers = {"qwen2_vl": _qwen2_vl, "llava_next": _llava_next}
    for name in args.models.split(","):
        torch.manual_seed(0)
        hf, image_token, count, extra = makers[name](transformers)
        model = forgegrad_copy(hf)
        rng = np.random.RandomState(0)
        if "grid" in extra:
            grid = np.array([extra["grid"]])
            pixels = rng.randn(int(np.prod(extra["grid"])), 3 * 2 * 14 * 14).astype(np.float32)
            images = {"image_grid_thw": grid}
            eager_rows = lambda: model.image_features(pixels, grid).numpy()  # noqa: E731
        else:
            sizes = np.array([extra["image_sizes"]])
            count = model.image_token_counts(sizes)[0]
            pixels = rng.randn(1, 5, 3, 224, 224).astype(np.float32)
            images = {"image_sizes": sizes}
            eager_rows = lambda: model.packed_features(pixels, sizes).numpy()  # noqa: E731
        ids = np.concatenate([rng.randint(3, 7000, 10), np.full(count, image_token), rng.randint(3, 7000, 10)])[None]
        mask = np.ones_like(ids)
        with tempfile.TemporaryDirectory() as folder:
            export_image_text(model, folder)
            s = ImageTextSessions(folder, threads=1)
            with pinned_threads(1), fg.no_grad():
                best, out = best_of_interleaved({
                    "fg vision": eager_rows,
                    "ort vision": lambda: s.image_rows(pixels, **images),
                    "fg prefill": lambda: model(ids, pixel_values=pixels, **images).numpy(),
                    "ort prefill": lambda: s.prefill(ids, mask, pixels, **images)[0]}, args.rounds, warmup=1)

        def diff(a, b):
            return np.abs(out[a] - out[b]).max() / np.abs(out[a]).max()

        print(f"{name}: prompt of {ids.shape[1]} tokens ({count} image tokens), 1 thread, best of {args.rounds}: "
              f"vision onnxruntime {best['ort vision'] * 1e3:.0f} ms vs forgegrad {best['fg vision'] * 1e3:.0f} ms "
              f"({best['fg vision'] / best['ort vision']:.2f}x); prefill {best['ort prefill'] * 1e3:.0f} ms vs "
              f"{best['fg prefill'] * 1e3:.0f} ms ({best['fg prefill'] / best['ort prefill']:.2f}x); max diff / max: "
              f"rows {diff('fg vision', 'ort vision'):.1e}, logits {diff('fg prefill', 'ort prefill'):.1e}")


if __name__ == "__main__":
    main()
