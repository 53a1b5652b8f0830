"""ONNX export of the encoders' extractive question-answering and multiple-choice heads (task_heads.py), with the
input and output names of Hugging Face optimum's exports and every size dynamic:

    question answering   inputs ``input_ids``, ``attention_mask`` (batch, sequence) int64 (and ``token_type_ids``
                         where the family has a type table of two or more rows: BERT, DeBERTa-v2); outputs
                         ``start_logits`` and ``end_logits`` (batch, sequence) float32
    multiple choice      the same inputs as (batch, num_choices, sequence); output ``logits`` (batch, num_choices)

The padding masks are computed in the graph from ``attention_mask`` (BERT's, RoBERTa's and DistilBERT's key bias,
DeBERTa's relative-position masks, ModernBERT's first-token pooling), so one file serves right- or left-padded
batches of any size. The graph is verified in onnxruntime against forgegrad at the example's sizes (batch 2, one row
padded) and at others.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...tensor import Tensor
from .task_heads import MultipleChoice, QuestionAnswering

__all__ = ["export_task_head", "task_head_names"]


def _types(model) -> bool:
    """Whether the graph takes ``token_type_ids``: a type table of two or more rows (RoBERTa's one row adds the same
    vector to every token; DistilBERT, ModernBERT and DeBERTa-v3 have none)."""
    return int(model.config.get("type_vocab_size") or 0) > 1


def _kind(model) -> str:
    if isinstance(model, QuestionAnswering):
        return "question answering"
    if isinstance(model, MultipleChoice):
        return "multiple choice"
    raise TypeError(f"export_task_head: model must be an encoder's question-answering or multiple-choice head "
                    f"(BertForQuestionAnswering, DebertaV2ForMultipleChoice, ...), got {type(model).__name__}")


def task_head_names(model) -> tuple:
    """(input names, output names) of ``model``'s graph."""
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if _types(model) else [])
    return inputs, ["start_logits", "end_logits"] if _kind(model) == "question answering" else ["logits"]


def _example(model, shape, seed: int):
    """Token ids (avoiding the special rows 0..2), a mask whose last row is right-padded to a third of its length,
    and token types 1 over the second half (a question-context pair)."""
    rng = np.random.default_rng(seed)
    vocab = int(model.config["vocab_size"])
    ids = rng.integers(min(3, vocab - 1), vocab, size=shape, dtype=np.int64)
    mask = np.ones(shape, np.int64)
    mask[-1, ..., max(1, shape[-1] // 3):] = 0
    types = np.zeros(shape, np.int64)
    types[..., shape[-1] // 2:] = 1
    return [ids, mask, types][:3 if _types(model) else 2]


def export_task_head(model, path, *, opset: int = 17, verify: bool = True, rtol: float = 1e-4, atol: float = 1e-4,
                     verify_sizes: Sequence[dict] = None, seed: int = 0):
    """Export ``model`` (a ``*ForQuestionAnswering`` or ``*ForMultipleChoice`` of BERT, RoBERTa, XLM-RoBERTa,
    DistilBERT, ModernBERT or DeBERTa-v2/v3) with dynamic ``batch``, ``sequence`` (and ``num_choices``) axes and,
    with ``verify``, check it in onnxruntime against forgegrad at the example's sizes (batch 2, 11 tokens, 3
    choices) and at ``verify_sizes`` (default: batch 1 of 1 token, 2 choices; batch 3 of 23 tokens, 4 choices).
    Returns the ExportReport of ``forgegrad.onnx.export``; raises TypeError for another model, and as ``export``
    does (UnsupportedOpError naming the layer, OnnxVerificationError past ``rtol``/``atol``)."""
    from ...onnx import export

    kind = _kind(model)
    names, outs = task_head_names(model)
    choices = kind == "multiple choice"
    axes = {0: "batch", 1: "num_choices", 2: "sequence"} if choices else {0: "batch", 1: "sequence"}
    dynamic = {n: axes for n in names}
    dynamic.update({n: {0: "batch", 1: "num_choices"} if choices else {0: "batch", 1: "sequence"} for n in outs})
    if verify_sizes is None:
        verify_sizes = [{"batch": 1, "sequence": 1}, {"batch": 3, "sequence": 23}]
        if choices:
            verify_sizes = [dict(verify_sizes[0], num_choices=2), dict(verify_sizes[1], num_choices=4)]
    example = tuple(Tensor._stored(a) for a in _example(model, (2, 3, 11) if choices else (2, 11), seed))
    was_training = model.training
    try:
        return export(model.eval(), example, path, opset=opset, dynamic_axes=dynamic, input_names=names,
                      output_names=outs, verify=verify, rtol=rtol, atol=atol, verify_sizes=list(verify_sizes))
    finally:
        model.train(was_training)
