"""The vision towers of the image-text bench (`forgegrad bench image-text`): LLaVA 1.5's CLIP ViT-B/16 at 224 px (11
of 12 layers run, 197 tokens, quick_gelu) and Gemma 3's SigLIP of that size (196 tokens, gelu tanh, pooled to 49),
``model.image_features(pixels)`` in forgegrad against onnxruntime running forgegrad's own export of it (the
``vision_encoder.onnx`` of ``export_image_text``), and against forgegrad's composed layer path (the encoder
layers' graph-free inference path, models/hf/_encoder_fast.py, switched off), alternated in rounds, thread CPU time,
best round.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_vision_tower.py \
        [--threads 1,2 --rounds 7 --models llava,gemma3]

Randomly initialised models saved by transformers (the bench's configs: forgegrad.bench.image_text). Thread CPU
time counts the calling thread only: at 2 threads it is no wall time (the figures printed then are wall times,
time.perf_counter). Rough on a shared machine: say the load.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from forgegrad.bench._timing import COOL_DOWN


def _model(kind: str):
    from forgegrad.bench import image_text as IT
    ours, _ = IT.image_text_pair(kind, False)
    return ours, IT.image_text_export(kind, False, ours)


def _tower(ours, pixels, fast_ok, clip, fast: bool) -> np.ndarray:
    """The vision tower's last hidden state, on the fast or the composed layer path."""
    import forgegrad as fg
    clip.fast_path_ok = fast_ok if fast else (lambda *a: False)
    try:
        with fg.no_grad():
            return ours.vision_tower(pixels).last_hidden_state.numpy()
    finally:
        clip.fast_path_ok = fast_ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="llava,gemma3")
    args = ap.parse_args()
    import forgegrad as fg
    from forgegrad.models.hf import clip
    from forgegrad.models.hf.onnx_image_text import ImageTextSessions
    fast_ok = clip.fast_path_ok
    pixels = np.random.RandomState(0).randn(1, 3, 224, 224).astype(np.float32)
    for kind in args.models.split(","):
        ours, folder = _model(kind)
        for threads in map(int, args.threads.split(",")):
            fg.set_num_threads(threads)
            clock = time.thread_time if threads == 1 else time.perf_counter
            sessions = ImageTextSessions(folder, threads=threads)

            def fast():
                clip.fast_path_ok = fast_ok
                with fg.no_grad():
                    return ours.image_features(pixels).numpy()

            def composed():
                clip.fast_path_ok = lambda *a: False
                try:
                    with fg.no_grad():
                        return ours.image_features(pixels).numpy()
                finally:
                    clip.fast_path_ok = fast_ok

            def ort():
                return sessions.vision.run(None, {"pixel_values": pixels})[0]
            a, b = _tower(ours, pixels, fast_ok, clip, True), _tower(ours, pixels, fast_ok, clip, False)
            scale = float(np.abs(b).max())
            feats, graph = composed(), ort()
            # (a random Gemma 3's projector holds zeros, transformers' init: its features are all 0 there)
            ort_note = f"{np.abs(graph - feats).max() / float(np.abs(feats).max()):.1e}" if feats.any() else \
                f"all features 0 (random projector), largest |difference| {np.abs(graph - feats).max():.1e}"
            best = {"forgegrad": [], "composed": [], "onnxruntime": []}
            for _ in range(args.rounds):
                for name, fn in (("forgegrad", fast), ("composed", composed), ("onnxruntime", ort)):
                    time.sleep(COOL_DOWN)  # the last runtime's spinning threads park (onnxruntime's steal a core)
                    t = clock()
                    fn()
                    best[name].append(clock() - t)
            ms = {k: min(v) * 1e3 for k, v in best.items()}
            print(f"{kind} vision tower, {threads} thread(s) ({'thread CPU' if threads == 1 else 'wall'} ms, best of "
                  f"{args.rounds}): forgegrad {ms['forgegrad']:.1f} (composed layers {ms['composed']:.1f}), "
                  f"onnxruntime {ms['onnxruntime']:.1f}: {ms['onnxruntime'] / ms['forgegrad']:.2f}x onnxruntime, "
                  f"{ms['composed'] / ms['forgegrad']:.2f}x composed; largest difference / largest value: "
                  f"the tower's last hidden state, fast vs composed {np.abs(a - b).max() / scale:.1e}; the "
                  f"features, onnxruntime vs composed {ort_note}")


if __name__ == "__main__":
    main()
