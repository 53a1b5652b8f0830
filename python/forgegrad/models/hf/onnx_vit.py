"""ONNX export of ViT and DeiT (vit.py) with the input and output names of Hugging Face optimum's exports and the
batch dynamic:

    input    ``pixel_values`` (batch, channels, image_size, image_size) float32
    outputs  ``logits`` (batch, num_labels) for the classifiers (DeiT's teacher model: the mean of its two heads);
             ``last_hidden_state`` (batch, tokens + patches, hidden) and, with a pooler, ``pooler_output`` (batch,
             hidden) for ``ViTModel`` / ``DeiTModel``

The image size is the model's (its position table); the graph is verified in onnxruntime against forgegrad at the
example's batch (2) and at others.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...tensor import Tensor
from .vit import DeiTForImageClassificationWithTeacher, ViTForImageClassification, ViTModel

__all__ = ["export_vit", "vit_names"]


def vit_names(model) -> tuple:
    """(input names, output names) of ``model``'s graph."""
    if isinstance(model, ViTModel):
        return ["pixel_values"], ["last_hidden_state"] + (["pooler_output"] if model.pooler is not None else [])
    if isinstance(model, (ViTForImageClassification, DeiTForImageClassificationWithTeacher)):
        return ["pixel_values"], ["logits"]
    raise TypeError(f"export_vit: model must be a ViT or DeiT model (ViTModel, ViTForImageClassification, "
                    f"DeiTModel, DeiTForImageClassification, DeiTForImageClassificationWithTeacher), got "
                    f"{type(model).__name__}")


def export_vit(model, path, *, opset: int = 17, verify: bool = True, rtol: float = 1e-4, atol: float = 1e-4,
               verify_sizes: Sequence[dict] = None, seed: int = 0):
    """Export ``model`` with a dynamic ``batch`` axis and, with ``verify``, check it in onnxruntime against forgegrad
    at batch 2 (the example: random pixel values) and at ``verify_sizes`` (default: batch 1 and 5). Returns the
    ExportReport of ``forgegrad.onnx.export``; raises TypeError for another model, and as ``export`` does."""
    from ...onnx import export

    names, outs = vit_names(model)
    emb = model.embeddings if isinstance(model, ViTModel) else model.encoder.embeddings
    h, w = emb.image_size
    example = np.random.default_rng(seed).standard_normal((2, emb.patch_embeddings.num_channels, h, w))
    was_training = model.training
    try:
        return export(model.eval(), (Tensor(example.astype(np.float32)),), path, opset=opset,
                      dynamic_axes={n: {0: "batch"} for n in names + outs}, input_names=names, output_names=outs,
                      verify=verify, rtol=rtol, atol=atol,
                      verify_sizes=list(verify_sizes or [{"batch": 1}, {"batch": 5}]))
    finally:
        model.train(was_training)
