"""The ``--onnx`` part of the block-local encoder benches (bench_longt5_encoder.py, bench_pegasus_x_encoder.py): the
model exported by ``export_seq2seq`` (timed, its verification in onnxruntime included) and its encoder graph in an
onnxruntime session pinned to one thread, as the benches pin forgegrad and torch."""
from __future__ import annotations

import os
import time


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
