"""The image-text prefill of `forgegrad bench image-text` (LLaVA 1.5's shape: a 216-token prompt with one 224 px image;
Gemma 3 with images: 69 tokens, its image block attending both ways), split in its parts: the whole forward
(``model(ids, pixel_values=...)``) and the decoder alone (the rows with the image features merged in, the masks, the
layers, the LM head, from features computed once), in forgegrad (the graph-free image prefill,
models/hf/_image_prefill.py), forgegrad's Tensor path (that prefill switched off) and onnxruntime running forgegrad's
export (``ImageTextSessions.prefill``; the decoder alone: ``decoder_model_merged.onnx`` on the merged rows), alternated
in rounds, thread CPU time, best round.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python bench/bench_image_prefill.py \
        [--threads 1,2 --rounds 7 --models llava,gemma3]

Randomly initialised models saved by transformers (the bench's configs: forgegrad.bench.image_text). At 2 threads the
figures are wall times (time.perf_counter): thread CPU time counts the calling thread only. Rough on a shared
machine: say the load.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from forgegrad.bench._timing import COOL_DOWN


def _prompt(kind: str):
    """(ids (1, T), pixels (1, 3, 224, 224), token_type_ids or None): the suite's prompt."""
    from forgegrad.bench import image_text as IT
    text, vision, llava_tokens, gemma_tokens, _, _ = IT._sizes(False)
    token = text["vocab_size"] - 1
    rng = np.random.RandomState(0)
    count = llava_tokens if kind == "llava" else gemma_tokens
    ids = np.concatenate([rng.randint(3, token - 2, 10), np.full(count, token), rng.randint(3, token - 2, 10)])[None]
    pixels = rng.randn(1, 3, vision["image_size"], vision["image_size"]).astype(np.float32)
    return ids, pixels, None if kind == "llava" else (ids == token).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="llava,gemma3")
    args = ap.parse_args()
    import forgegrad as fg
    from forgegrad.bench import image_text as IT
    from forgegrad.models.hf import _image_text
    from forgegrad.models.hf.onnx_image_text import ImageTextSessions
    applies = _image_text.image_prefill_applies

    def path(fast: bool):
        _image_text.image_prefill_applies = applies if fast else (lambda *a: False)

    for kind in args.models.split(","):
        ours, _ = IT.image_text_pair(kind, False)
        folder = IT.image_text_export(kind, False, ours)
        ids, pixels, kinds = _prompt(kind)
        kw = {"pixel_values": pixels} if kinds is None else {"pixel_values": pixels, "token_type_ids": kinds}
        with fg.no_grad():
            features = ours.image_features(pixels)
        for threads in map(int, args.threads.split(",")):
            fg.set_num_threads(threads)
            clock = time.thread_time if threads == 1 else time.perf_counter
            sessions = ImageTextSessions(folder, threads=threads)
            mask = np.ones_like(ids)
            empty = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
                     for i in sessions.decoder.get_inputs() if i.name in sessions.past_names}
            feed = sessions.decoder_feed(sessions.embeds(ids, sessions.image_rows(pixels)), mask, kinds, empty)

            def whole(fast):
                def run():
                    path(fast)
                    try:
                        with fg.no_grad():
                            return ours(ids, **kw).numpy()
                    finally:
                        path(True)
                return run

            def decoder(fast):
                def run():
                    path(fast)
                    try:
                        with fg.no_grad():
                            i, image, text_ids, past, pad = ours._prompt(ids, None, None, "bench")
                            masks = None if kinds is None else ours._image_masks(kinds, pad, past, *i.shape)
                            return ours._logits(i, image, text_ids, pad, past, None, None, 0, features, masks,
                                                "bench").numpy()
                    finally:
                        path(True)
                return run

            fns = {"prefill": {"forgegrad": whole(True), "Tensor path": whole(False),
                               "onnxruntime": lambda: sessions.prefill(ids, mask, pixels, kinds)[0]},
                   "decoder": {"forgegrad": decoder(True), "Tensor path": decoder(False),
                               "onnxruntime": lambda: sessions.decoder.run(None, feed)[0]}}
            a, b, c = (fns["prefill"][k]() for k in ("forgegrad", "Tensor path", "onnxruntime"))
            times = {part: {k: [] for k in f} for part, f in fns.items()}
            for _ in range(args.rounds):
                for part, f in fns.items():
                    for name, fn in f.items():
                        time.sleep(COOL_DOWN)  # onnxruntime's spinning threads park before the next call
                        t = clock()
                        fn()
                        times[part][name].append(clock() - t)
            unit = "thread CPU" if threads == 1 else "wall"
            for part, t in times.items():
                ms = {k: min(v) * 1e3 for k, v in t.items()}
                print(f"{kind} {part}, {threads} thread(s) ({unit} ms, best of {args.rounds}): forgegrad "
                      f"{ms['forgegrad']:.1f} (Tensor path {ms['Tensor path']:.1f}), onnxruntime "
                      f"{ms['onnxruntime']:.1f}: {ms['onnxruntime'] / ms['forgegrad']:.2f}x onnxruntime, "
                      f"{ms['Tensor path'] / ms['forgegrad']:.2f}x the Tensor path")
            scale = float(np.abs(b).max())
            print(f"{kind}: logits, forgegrad vs its Tensor path: {'equal' if np.array_equal(a, b) else 'differ'} "
                  f"(largest difference / largest logit {np.abs(a - b).max() / scale:.1e}); onnxruntime vs forgegrad "
                  f"{np.abs(c - a).max() / scale:.1e}", flush=True)


if __name__ == "__main__":
    main()
