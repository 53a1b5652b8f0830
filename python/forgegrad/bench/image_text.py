"""The `image-text` suite: image-text decoders and a mixture of experts from Hugging Face checkpoints, forgegrad
against transformers on torch with the same (random) weights, and onnxruntime on forgegrad's exports (the image-text
models' three graphs; the mixture of experts' graph runs only the routed experts).

Rows: LLaVA 1.5's shape (a CLIP ViT-B/16 tower at 224 px, the second-to-last layer's 196 patches, a 4-layer decoder
1024 wide) and Gemma 3 with images (a SigLIP tower of that size pooled to 49 tokens, the same decoder), each the
forward of a batch-1 prompt holding one image and 20 text tokens; Qwen3-MoE (2 layers, hidden 512, 32 experts of 512,
top-4) over a 128-token prompt. --quick: 2-layer, 64-wide versions. onnxruntime runs the image-text rows on
forgegrad's export_image_text graphs (vision, embedding, the rows placed on the host, the decoder's prefill). Each row's
note says how far forgegrad's logits are from transformers' (and onnxruntime's from forgegrad's), checked once before
timing.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Dict, List, Sequence

import numpy as np

from . import Workload, suite, time_workloads
from ._timing import optional_import, ort_session

_NOTES: Dict[str, str] = {}
_TMP: List[str] = []


def _scratch() -> str:
    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="forgegrad-image-text-"))
        atexit.register(shutil.rmtree, _TMP[0], True)
    return _TMP[0]


def _sizes(quick: bool):
    if quick:
        text = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, vocab_size=1000, max_position_embeddings=512)
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      image_size=64, patch_size=16)
        return text, vision, 16, 4, dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                         moe_intermediate_size=64, num_experts=8, num_experts_per_tok=2,
                                         vocab_size=1000), 32
    text = dict(num_hidden_layers=4, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                intermediate_size=2816, vocab_size=8000, max_position_embeddings=1024)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16)
    return text, vision, 196, 49, dict(num_hidden_layers=2, hidden_size=512, num_attention_heads=8,
                                       num_key_value_heads=2, head_dim=64, intermediate_size=1024,
                                       moe_intermediate_size=512, num_experts=32, num_experts_per_tok=4,
                                       vocab_size=8000), 128


def _pair(name: str, make_hf):
    """(forgegrad's model from the checkpoint transformers writes, transformers' model), made once."""
    import torch
    import transformers

    from ..models import from_pretrained
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = make_hf(transformers).eval()
    path = os.path.join(_scratch(), name)
    if not os.path.isdir(path):
        hf.save_pretrained(path)
    return from_pretrained(path), hf


def _note(name: str, ours: np.ndarray, theirs: np.ndarray, graph=None) -> None:
    scale = float(np.abs(theirs).max()) or 1.0
    text = f"largest logit difference from transformers / largest logit: {np.abs(ours - theirs).max() / scale:.1e}"
    if graph is not None:
        text += f"; onnxruntime's from forgegrad's: {np.abs(graph - ours).max() / scale:.1e}"
    _NOTES[name] = text


def image_text_pair(kind: str, quick: bool):
    """(forgegrad's, transformers') LLaVA ("llava") or Gemma 3 ("gemma3") of the suite's sizes, made once."""
    text, vision, _, gemma_tokens, _, _ = _sizes(quick)
    image_token = text["vocab_size"] - 1
    if kind == "llava":
        def make(transformers):
            cfg = transformers.LlavaConfig(text_config=dict(text, model_type="llama"),
                                           vision_config=dict(vision, model_type="clip_vision_model"),
                                           image_token_index=image_token)
            return transformers.LlavaForConditionalGeneration(cfg)
    else:
        def make(transformers):
            head_dim = text["hidden_size"] // text["num_attention_heads"]
            cfg = transformers.Gemma3Config(text_config=dict(text, head_dim=head_dim, sliding_window=64),
                                            vision_config=dict(vision, vision_use_head=False),
                                            mm_tokens_per_image=gemma_tokens, image_token_id=image_token,
                                            boi_token_id=image_token - 2, eoi_token_id=image_token - 1)
            return transformers.Gemma3ForConditionalGeneration(cfg)
    return _pair(f"{kind}-{'quick' if quick else 'full'}", make)


def image_text_export(kind: str, quick: bool, ours) -> str:
    """The folder of ``ours``' export_image_text graphs (written once)."""
    from ..models.hf.onnx_image_text import export_image_text
    folder = os.path.join(_scratch(), f"{kind}-{'quick' if quick else 'full'}-onnx")
    if not os.path.isdir(folder):
        export_image_text(ours, folder)
    return folder


def _image_fns(name: str, kind: str, quick: bool, threads: int):
    fns = {"forgegrad": None, "transformers": None, "onnxruntime": None}
    if optional_import("torch") is None or optional_import("transformers") is None:
        return fns
    import torch
    text, vision, llava_tokens, gemma_tokens, _, _ = _sizes(quick)
    image_token = text["vocab_size"] - 1
    count, extra = (llava_tokens, {}) if kind == "llava" else (gemma_tokens, {"token_type_ids": True})
    ours, hf = image_text_pair(kind, quick)
    rng = np.random.RandomState(0)
    ids = np.concatenate([rng.randint(3, text["vocab_size"] - 3, 10), np.full(count, image_token),
                          rng.randint(3, text["vocab_size"] - 3, 10)])[None]
    size = vision["image_size"]
    pixels = rng.randn(1, 3, size, size).astype(np.float32)
    kw_ours, kw_hf = {"pixel_values": pixels}, {"pixel_values": torch.tensor(pixels)}
    if extra:
        kinds = (ids == image_token).astype(np.int64)
        kw_ours["token_type_ids"], kw_hf["token_type_ids"] = kinds, torch.tensor(kinds)
    from .. import no_grad
    ti = torch.tensor(ids)

    def fg_forward():
        with no_grad():
            return ours(ids, **kw_ours).numpy()

    def hf_forward():
        with torch.no_grad():
            return hf(input_ids=ti, **kw_hf).logits.numpy()

    fns["forgegrad"], fns["transformers"] = fg_forward, hf_forward
    graph = None
    if optional_import("onnxruntime") is not None and optional_import("onnx") is not None:
        # the export's three graphs (onnx_image_text.py): vision, embedding, the rows merged, the decoder's prefill
        from ..models.hf.onnx_image_text import ImageTextSessions
        folder = image_text_export(kind, quick, ours)
        sessions = ImageTextSessions(folder, threads=threads)
        mask = np.ones_like(ids)
        fns["onnxruntime"] = lambda: sessions.prefill(ids, mask, pixels, kw_ours.get("token_type_ids"))[0]
        graph = fns["onnxruntime"]()
    _note(name, fg_forward(), hf_forward(), graph)
    return fns


def _moe_fns(name: str, quick: bool, threads: int):
    fns = {"forgegrad": None, "transformers": None, "onnxruntime": None}
    if optional_import("torch") is None or optional_import("transformers") is None:
        return fns
    import torch
    *_, cfg, length = _sizes(quick)
    ours, hf = _pair(f"moe-{'quick' if quick else 'full'}",
                     lambda transformers: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
                         **cfg, norm_topk_prob=True)))
    ids = np.random.RandomState(0).randint(0, cfg["vocab_size"], (1, length))
    from .. import no_grad
    ti = torch.tensor(ids)

    def fg_forward():
        with no_grad():
            return ours(ids).numpy()

    def hf_forward():
        with torch.no_grad():
            return hf(input_ids=ti).logits.numpy()

    fns["forgegrad"], fns["transformers"] = fg_forward, hf_forward
    graph = None
    ort = optional_import("onnxruntime")
    if ort is not None and optional_import("onnx") is not None:
        from ..onnx import export
        path = os.path.join(_scratch(), f"moe-{'quick' if quick else 'full'}.onnx")
        if not os.path.isfile(path):
            export(ours, ids[:, :5], path, input_names=["input_ids"],
                   dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-5)
        sess = ort_session(ort, path, threads)
        fns["onnxruntime"] = lambda: sess.run(None, {"input_ids": ids})[0]
        graph = fns["onnxruntime"]()
    _note(name, fg_forward(), hf_forward(), graph)
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    shape = "2 layers, 64 wide" if quick else "ViT-B/16 224 px + 4-layer 1024-wide decoder"
    _, _, llava_tokens, gemma_tokens, cfg, length = _sizes(quick)
    llava = f"LLaVA 1.5 shape ({shape}), forward of a prompt with one image ({llava_tokens + 20} tokens)"
    gemma = f"Gemma 3 with images ({shape}), forward of a prompt with one image ({gemma_tokens + 20} tokens)"
    moe = (f"Qwen3-MoE ({cfg['num_hidden_layers']} layers, {cfg['num_experts']} experts, top-"
           f"{cfg['num_experts_per_tok']}), forward of {length} tokens (onnxruntime: the routed export)")
    three = ("forgegrad", "transformers", "onnxruntime")
    return [Workload(llava, three, lambda t: _image_fns(llava, "llava", quick, t)),
            Workload(gemma, three, lambda t: _image_fns(gemma, "gemma3", quick, t)),
            Workload(moe, three, lambda t: _moe_fns(moe, quick, t))]


@suite("image-text")
def image_text_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (2, 0.0) if quick else (5, 0.5)
    rows = time_workloads(workloads(quick), threads, repeat, min_time)
    for r in rows:
        r["note"] = _NOTES.get(r["workload"], "")
    return rows
