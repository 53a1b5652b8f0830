"""What the block-local encoder benches (bench_longt5_encoder.py, bench_pegasus_x_encoder.py) share: their arguments,
the interleaved timing of transformers' and forgegrad's encoders on one input (one thread pinned on both sides), the
report, and ``--onnx``: the model exported by ``export_seq2seq`` (timed, its verification in onnxruntime included) with
its encoder graph in an onnxruntime session pinned to one thread, run in the same rounds."""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def parse_args(doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also export and time onnxruntime's encoder graph")
    return p.parse_args()


def onnx_encoder(model, directory: str):
    """(a function running the encoder graph on (ids, mask) -> its states, the export's seconds)."""
    import onnxruntime as ort

    from forgegrad.models.hf import export_seq2seq

    start = time.perf_counter()
    export_seq2seq(model, directory)
    seconds = time.perf_counter() - start
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(directory, "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    return (lambda ids, mask: sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]), seconds


def compare_encoders(label: str, hf_encode, model, ids, mask, args: argparse.Namespace) -> None:
    """Times hf_encode() (transformers' encoder states as numpy) against model.encode(ids, mask) (and onnxruntime's
    encoder graph with --onnx) in interleaved rounds and prints the best round of each with their differences."""
    import numpy as np
    import torch

    import forgegrad as fg
    from forgegrad.bench._timing import best_of_interleaved, pinned_threads

    runs = {"transformers": hf_encode, "forgegrad": lambda: model.encode(ids, mask).numpy()}
    with tempfile.TemporaryDirectory() as d:
        if args.onnx:
            encoder, seconds = onnx_encoder(model, os.path.join(d, "onnx"))
            runs["onnxruntime"] = lambda: encoder(ids, mask)
        with pinned_threads(1), torch.no_grad(), fg.no_grad():
            best, out = best_of_interleaved(runs, args.rounds, warmup=1)
    want, got = out["transformers"], out["forgegrad"]
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"{label} (base widths, {args.layers} layers), {args.length} tokens, 1 thread, best of {args.rounds}: "
          f"transformers {best['transformers'] * 1e3:.0f} ms, forgegrad {best['forgegrad'] * 1e3:.0f} ms "
          f"({best['transformers'] / best['forgegrad']:.2f}x); max |diff| / max |state| {rel:.1e}")
    if args.onnx:
        rel = np.abs(out["onnxruntime"] - got).max() / np.abs(got).max()
        print(f"  ONNX: export_seq2seq {seconds:.1f} s; onnxruntime's encoder graph {best['onnxruntime'] * 1e3:.0f} ms "
              f"({best['onnxruntime'] / best['forgegrad']:.2f}x forgegrad's time); max |diff| / max |state| {rel:.1e}")
