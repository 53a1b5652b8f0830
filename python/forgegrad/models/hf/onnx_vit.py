"""ONNX export of ViT, DeiT (vit.py), DINOv2 (dinov2.py, dinov2_registers.py), Swin (swin.py), Swin V2 (swinv2.py),
BEiT (beit.py), Depth Anything (depth_anything.py) and DPT (dpt.py) with the input and output names of Hugging Face
optimum's exports and the batch dynamic:

    input    ``pixel_values`` (batch, channels, height, width) float32
    outputs  ``logits`` (batch, num_labels) for the classifiers (DeiT's teacher model: the mean of its two heads);
             ``last_hidden_state`` (batch, tokens + patches, hidden) and, with a pooler, ``pooler_output`` (batch,
             hidden) for ``ViTModel`` / ``DeiTModel`` / ``DPTModel`` / ``Dinov2Model`` (DINOv2's, with registers
             too: the CLS row) / ``SwinModel`` / ``Swinv2Model`` (the mean of the last stage's positions);
             ``predicted_depth`` (batch, height', width') for ``DepthAnythingForDepthEstimation`` and
             ``DPTForDepthEstimation``, ``logits`` (batch, num_labels, height', width') for
             ``DPTForSemanticSegmentation``

The image size is fixed in the graph: by default the model's (its position table), or ``image_size`` (a ViT or DeiT
then runs with ``interpolate_pos_encoding=True``; DINOv2 always resizes its table; Swin takes any size whose stages'
maps are at least a window, Swin V2 any, padding and shift masks then constants of the graph; BEiT any, its relative
position bias resized to the grid as constant matrices), the bicubic resize of the position
table held as constant matrices. The graph is verified in onnxruntime against forgegrad at the example's
batch (2) and at others.

``dynamic_image_size=True`` makes ``height`` and ``width`` dynamic too, for ViT and DeiT (positions interpolated),
DINOv2 with and without registers, BEiT, DPTModel and Depth Anything (its neck's resizes follow the patch grid: each
fusion to the next stage's map, the head to grid * patch): the patch grid is computed from the input's shape (the
exporter's ``axis_divisors``) and the position table resized to it by one Resize (F.interpolate's mapping; BEiT's
relative position bias table too, its index computed in the graph: ``BeitRelativePositionBias.in_graph``). Swin's window
padding and shift masks, and DPT's depth and segmentation necks (a map doubled, then the next stage's resized to it
where an odd grid makes them differ), depend on the size in ways the graph does not express: refused, naming the model
(``dynamic_refusal``); they export at a fixed image size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...tensor import Tensor
from .beit import BeitForImageClassification, BeitModel, BeitRelativePositionBias
from .depth_anything import DepthAnythingForDepthEstimation
from .dinov2 import Dinov2ForImageClassification, Dinov2Model
from .dinov2_registers import Dinov2WithRegistersForImageClassification
from .dpt import DPTForDepthEstimation, DPTForSemanticSegmentation, DPTModel
from .swin import SwinForImageClassification, SwinModel
from .swinv2 import Swinv2ForImageClassification, Swinv2Model
from .vit import DeiTForImageClassificationWithTeacher, ViTForImageClassification, ViTModel, _pair

__all__ = ["dynamic_refusal", "export_vit", "vit_names"]

_SWIN_MODELS = (SwinModel, Swinv2Model)
_SWIN_CLASSIFIERS = (SwinForImageClassification, Swinv2ForImageClassification)


_DEPTH = (DepthAnythingForDepthEstimation, DPTForDepthEstimation)
_DENSE = _DEPTH + (DPTForSemanticSegmentation,)  # models whose prediction is a map (they always resize positions)


def vit_names(model) -> tuple:
    """(input names, output names) of ``model``'s graph."""
    if isinstance(model, _DEPTH):
        return ["pixel_values"], ["predicted_depth"]
    if isinstance(model, DPTForSemanticSegmentation):
        return ["pixel_values"], ["logits"]
    if isinstance(model, Dinov2Model) or (isinstance(model, _SWIN_MODELS) and model.pooled):
        return ["pixel_values"], ["last_hidden_state", "pooler_output"]
    if isinstance(model, _SWIN_MODELS):
        return ["pixel_values"], ["last_hidden_state"]
    if isinstance(model, (ViTModel, BeitModel)):
        return ["pixel_values"], ["last_hidden_state"] + (["pooler_output"] if model.pooler is not None else [])
    if isinstance(model, (ViTForImageClassification, DeiTForImageClassificationWithTeacher,
                          Dinov2ForImageClassification, Dinov2WithRegistersForImageClassification,
                          BeitForImageClassification) + _SWIN_CLASSIFIERS):
        return ["pixel_values"], ["logits"]
    raise TypeError(f"export_vit: model must be a ViT, DeiT or DINOv2 model or a Swin, Swin V2 or BEiT model ("
                    f"ViTModel, ViTForImageClassification, DeiTModel, DeiTForImageClassification, "
                    f"DeiTForImageClassificationWithTeacher, Dinov2Model, Dinov2ForImageClassification, "
                    f"Dinov2WithRegistersModel, Dinov2WithRegistersForImageClassification, SwinModel, "
                    f"SwinForImageClassification, Swinv2Model, Swinv2ForImageClassification, BeitModel, "
                    f"BeitForImageClassification) or a dense prediction model "
                    f"(DepthAnythingForDepthEstimation, DPTModel, DPTForDepthEstimation, DPTForSemanticSegmentation), "
                    f"got {type(model).__name__}")


def _embeddings(model):
    """The module holding ``model``'s patch embeddings and position table."""
    if isinstance(model, (ViTModel, Dinov2Model, BeitModel) + _SWIN_MODELS):
        return model.embeddings
    if isinstance(model, _DENSE):
        return (model.backbone if hasattr(model, "backbone") else model.dpt).embeddings
    return model.encoder.embeddings


def export_vit(model, path, *, image_size=None, dynamic_image_size: bool = False, opset: int = None,
               verify: bool = True, rtol: float = 1e-4, atol: float = 1e-4, verify_sizes: Sequence[dict] = None,
               seed: int = 0):
    """Export ``model`` with a dynamic ``batch`` axis and, with ``verify``, check it in onnxruntime against forgegrad
    at batch 2 (the example: random pixel values) and at ``verify_sizes`` (default: batch 1 and 5). ``image_size``
    (an int or (height, width); default the config's) fixes the graph's image size, or with ``dynamic_image_size``
    is only the example's: ``height`` and ``width`` are then dynamic too (see ``dynamic_image_size``; default
    verify sizes: batch 1 and 3 at other, odd sizes). ``opset`` defaults to 17 (18 where the graph needs Resize's
    antialias: DINOv2 with registers with dynamic image sizes). Returns the ExportReport of
    ``forgegrad.onnx.export``; raises TypeError for another model, ValueError for ``dynamic_image_size`` on a model
    whose graph cannot follow the image size, and as ``export`` does."""
    from ...onnx import export

    if dynamic_image_size is True and type(model).__name__.startswith(("CLIP", "Siglip")):
        raise ValueError(f"export_vit: dynamic_image_size is not supported for {type(model).__name__}: forgegrad's "
                         "CLIP and SigLIP towers take exactly their config's image_size (no interpolate_pos_encoding), "
                         "so no graph of theirs takes other sizes; export_clip_tower exports them at that size")
    names, outs = vit_names(model)
    emb = _embeddings(model)
    h, w = emb.image_size if image_size is None else _pair(image_size, "image_size", "export_vit:")
    ph, pw = emb.patch_embeddings.patch_size
    if h < ph or w < pw:
        raise ValueError(f"export_vit: image_size must be at least one {ph}x{pw} patch, got {h}x{w}")
    if not isinstance(dynamic_image_size, bool):
        raise TypeError(f"export_vit: dynamic_image_size must be a bool, got {dynamic_image_size!r}")
    if dynamic_image_size:
        return _export_dynamic(model, path, emb, names, outs, (h, w), opset, verify, rtol, atol, verify_sizes,
                               seed)
    run = model
    if isinstance(model, _SWIN_MODELS):
        def run(pixel_values):  # only the outputs vit_names gives
            out = model(pixel_values, interpolate_pos_encoding=(h, w) != emb.image_size)
            return (out.last_hidden_state, out.pooler_output) if model.pooled else out.last_hidden_state
    elif isinstance(model, _SWIN_CLASSIFIERS) and (h, w) != emb.image_size:
        def run(pixel_values):
            return model(pixel_values, interpolate_pos_encoding=True)
    elif (h, w) != emb.image_size and not isinstance(model, (Dinov2Model, Dinov2ForImageClassification,
                                                             Dinov2WithRegistersForImageClassification, BeitModel,
                                                             BeitForImageClassification, DPTModel) + _DENSE):
        def run(pixel_values):  # ViT, DeiT at another size: their positions resized
            return model(pixel_values, interpolate_pos_encoding=True)
    example = np.random.default_rng(seed).standard_normal((2, emb.patch_embeddings.num_channels, h, w))
    was_training = model.training
    try:
        model.eval()
        return export(run, (Tensor._stored(example.astype(np.float32)),), path, opset=17 if opset is None else opset,
                      dynamic_axes={n: {0: "batch"} for n in names + outs}, input_names=names, output_names=outs,
                      verify=verify, rtol=rtol, atol=atol,
                      verify_sizes=list(verify_sizes or [{"batch": 1}, {"batch": 5}]))
    finally:
        model.train(was_training)


def dynamic_refusal(model) -> Optional[str]:
    """Why ``model``'s graph cannot take images of any size (None where it can)."""
    name = type(model).__name__
    if isinstance(model, _SWIN_MODELS + _SWIN_CLASSIFIERS):
        return (f"{name}: Swin pads each stage's map to a multiple of its window and builds the shifted windows' "
                "attention masks from the map's size, both fixed per image size (export at a fixed image_size)")
    if isinstance(model, (DPTForDepthEstimation, DPTForSemanticSegmentation)):
        return (f"{name}: DPT's fusion doubles each map and resizes the next stage's map to it only where their sizes "
                "differ (a patch grid odd at some stage), sizes the graph cannot compute from the image's (export at "
                "a fixed image_size; Depth Anything's fusion follows the grid and exports with dynamic sizes)")
    return None


def _export_dynamic(model, path, emb, names, outs, size, opset, verify, rtol, atol, verify_sizes, seed):
    """The graph with symbolic batch, height and width: the patch grid floor(height / patch) x floor(width / patch)
    computed from the input's shape, the position table resized to it by one Resize (forgegrad's F.interpolate
    mapping: bicubic, cubic_coeff_a -0.75, half_pixel; DINOv2 with registers antialiased, a -0.5, opset 18)."""
    from ...onnx import export

    why = dynamic_refusal(model)
    if why is not None:
        raise ValueError(f"export_vit: dynamic_image_size is not supported for {why}")
    (h, w), (ph, pw) = size, emb.patch_embeddings.patch_size
    if opset is None:
        opset = 18 if emb.resize_antialias else 17
    if emb.resize_antialias and opset < 18:
        raise ValueError(f"export_vit: {type(model).__name__} with dynamic_image_size resizes its position table "
                         f"with antialiasing, which needs Resize's antialias attribute: opset 18 or later, got {opset}")
    run = model
    if isinstance(model, (ViTModel, ViTForImageClassification, DeiTForImageClassificationWithTeacher)):
        def run(pixel_values):  # ViT, DeiT: their positions resized to every image
            return model(pixel_values, interpolate_pos_encoding=True)
    if verify_sizes is None:
        verify_sizes = [{"batch": 1, "height": h + ph + 3, "width": w + 1},
                        {"batch": 3, "height": max(ph, h // 2 + 1), "width": w + 2 * pw - 1}]
    example = np.random.default_rng(seed).standard_normal((2, emb.patch_embeddings.num_channels, h, w))
    axes = {n: {0: "batch"} for n in outs}
    axes["pixel_values"] = {0: "batch", 2: "height", 3: "width"}
    was_training, was_by_op = model.training, emb.resize_by_op
    biases = [m for m in model.modules() if isinstance(m, BeitRelativePositionBias)]
    try:
        model.eval()
        emb.resize_by_op = emb.position_embeddings is not None
        for m in biases:
            m.in_graph = True
        return export(run, (Tensor._stored(example.astype(np.float32)),), path, opset=opset, dynamic_axes=axes,
                      input_names=names, output_names=outs, verify=verify, rtol=rtol, atol=atol,
                      verify_sizes=list(verify_sizes), axis_divisors={"height": ph, "width": pw})
    finally:
        emb.resize_by_op = was_by_op
        for m in biases:
            m.in_graph = False
        model.train(was_training)
