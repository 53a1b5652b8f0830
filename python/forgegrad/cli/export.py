"""``forgegrad export CHECKPOINT --out model.onnx``: ONNX export, verified in onnxruntime."""
from __future__ import annotations

import os
import sys

import numpy as np

from .. import nn
from ..tensor import Tensor
from . import _checkpoint
from ._errors import CLIError, UsageError, require


class VAEReconstructor(nn.Module):
    """The deterministic part of a VAE worth deploying: x -> decode(mu(x)) (no sampling noise)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        mu, _ = self.vae.encode(x)
        return self.vae.decode(mu)


def add_parser(sub):
    p = sub.add_parser("export", help="export a checkpoint to ONNX and verify it in onnxruntime",
                       description="Export a checkpoint written by `forgegrad train` to ONNX, run it in onnxruntime "
                                   "and print the parity report against forgegrad. VAEs export their deterministic "
                                   "reconstruction x -> decode(mu(x)).")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="the train --out directory, its model.json or model.safetensors; or a Hugging Face "
                        "checkpoint directory (config.json): a GPT-2 or Llama-family decoder exports with its KV "
                        "cache as inputs and outputs, for generation in onnxruntime; T5, BART, Marian, mBART, "
                        "M2M100 and Whisper as encoder.onnx and decoder.onnx in the --out directory; Gemma 3, "
                        "LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL and Qwen2.5-VL (image-text) as "
                        "vision_encoder.onnx, embed_tokens.onnx and "
                        "decoder_model_merged.onnx in the --out directory; a "
                        "question-answering or multiple-choice encoder with input_ids and attention_mask "
                        "(start_logits and end_logits, or logits)")
    p.add_argument("--no-past", action="store_true",
                   help="Hugging Face decoders: export the plain forward (input_ids -> logits) without the KV cache")
    p.add_argument("--cross-attentions", action="store_true",
                   help="Whisper: the decoder graph also outputs the alignment heads' cross-attention "
                        "(generation_config.json's alignment_heads), for token timestamps in generate_onnx_whisper")
    p.add_argument("--out", required=True, metavar="model.onnx", help="path of the ONNX file to write")
    p.add_argument("--batch", type=int, default=4, help="batch size of the example input used to trace (default 4)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    p.set_defaults(run=run)
    return p


def example_input(meta, batch, seed=0):
    shape = (batch,) + tuple(meta["input_shape"])
    rng = np.random.default_rng(seed)
    if meta.get("input_kind") == "tokens":
        return Tensor._stored(rng.integers(0, meta["num_classes"], size=shape, dtype=np.int64))
    return Tensor._stored(rng.random(shape, dtype=np.float32))


RECURRENT_INT8_ATOL = 0.02


def _has_recurrent_int8(model) -> bool:
    from ..quantization import DynamicQuantizedGRU, DynamicQuantizedLSTM
    return any(isinstance(m, (DynamicQuantizedLSTM, DynamicQuantizedGRU)) for m in model.modules())


def export_model(model, meta, out, batch=4, verify=True, atol=None):
    """Export (wrapping VAEs) and return the exporter's parity report (``atol``: the verification's
    absolute tolerance; None: the exporter's default, or RECURRENT_INT8_ATOL for a model with int8
    LSTM/GRU layers)."""
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise UsageError(f"--out {out}: directory {d} does not exist")
    if os.path.isdir(out):
        raise UsageError(f"--out {out} is a directory; give the path of the .onnx file to write")
    # the third-party packages first, so a missing one is reported with the extra that installs it
    require("onnx", "onnx", what="ONNX export")
    if verify:
        require("onnxruntime", "onnx", what="verifying the ONNX export")
    onnx_mod = require("forgegrad.onnx", None, what="ONNX export (forgegrad.onnx)")
    target = VAEReconstructor(model) if meta.get("task") == "vae" else model
    target.eval()
    verification_error = getattr(onnx_mod, "OnnxVerificationError", ())
    export_error = getattr(onnx_mod, "OnnxExportError", ())
    try:
        if atol is None and _has_recurrent_int8(model):
            # an int8 LSTM/GRU's outputs may move by about one hidden-state step in onnxruntime (its
            # sigmoid/tanh round differently: see docs/quantization.md); the zoo's logits are of order 1-10
            atol = RECURRENT_INT8_ATOL
        tolerance = {} if atol is None else {"atol": atol}
        return onnx_mod.export(target, (example_input(meta, batch),), out, verify=verify, **tolerance)
    except verification_error as e:
        report = getattr(e, "report", None)
        if report is not None:
            print(report, file=sys.stderr)
        raise CLIError(f"the ONNX model written to {out} does not match forgegrad in onnxruntime: "
                       f"{str(e).splitlines()[0]}") from None
    except (export_error or NotImplementedError, NotImplementedError, ValueError, TypeError) as e:
        raise CLIError(f"ONNX export of {meta['name']} failed: {str(e).splitlines()[0]}") from None


def format_report(report) -> str:
    if report is None:
        return "parity: not verified"
    if isinstance(report, dict):
        return "\n".join(f"  {k}: {v}" for k, v in report.items())
    return str(report)


def is_hf_directory(path) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def export_hf(path, out, batch=4, verify=True, past=True, cross_attentions=False):
    """A Hugging Face checkpoint directory to ONNX: a decoder with its KV cache (export_with_past), an image-text
    model's three graphs (export_image_text: {graph: report}), an encoder's
    question-answering or multiple-choice head (export_task_head), or its plain forward (dynamic batch and
    sequence); returns (model's class name, parity report). ``cross_attentions``: Whisper's decoder graph also
    outputs its alignment heads' cross-attention (export_seq2seq's)."""
    require("onnx", "onnx", what="ONNX export")
    if verify:
        require("onnxruntime", "onnx", what="verifying the ONNX export")
    from ..models import from_pretrained
    from ..models.hf import export_seq2seq, export_task_head, export_with_past
    from ..models.hf.task_heads import MultipleChoice, QuestionAnswering
    from ..onnx import OnnxExportError, OnnxVerificationError, export
    try:
        model = from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: {e}") from None
    name = type(model).__name__
    try:
        if callable(getattr(model, "encode_graph", None)):  # T5, BART, Marian, Whisper: encoder.onnx + decoder.onnx
            if os.path.exists(out) and not os.path.isdir(out):
                raise UsageError(f"--out {out}: an encoder-decoder exports two graphs; give a directory")
            if not past:
                raise UsageError(f"--no-past: {name} exports only with its caches (encoder.onnx, decoder.onnx)")
            return name, export_seq2seq(model, out, verify=verify, cross_attentions=cross_attentions)[1]
        if cross_attentions:
            raise UsageError(f"--cross-attentions: only Whisper's decoder graph outputs them, not {name}'s")
        if getattr(model, "takes_images", False):  # Gemma 3, LLaVA(-NeXT), PaliGemma, Qwen2-VL: 3 graphs
            if os.path.exists(out) and not os.path.isdir(out):
                raise UsageError(f"--out {out}: an image-text model exports three graphs (vision_encoder.onnx, "
                                 "embed_tokens.onnx, decoder_model_merged.onnx); give a directory")
            if not past:
                raise UsageError(f"--no-past: {name} exports only with its cache (decoder_model_merged.onnx)")
            from ..models.hf import export_image_text
            return name, export_image_text(model, out, verify=verify)
        if os.path.isdir(out):
            raise UsageError(f"--out {out} is a directory; give the path of the .onnx file to write")
        if past and callable(getattr(model, "forward_graph", None)):
            return name, export_with_past(model, out, verify=verify)
        if isinstance(model, (QuestionAnswering, MultipleChoice)):  # input_ids, attention_mask (, token_type_ids)
            return name, export_task_head(model, out, verify=verify)
        ids = np.random.default_rng(0).integers(0, model.config["vocab_size"], size=(batch, 8), dtype=np.int64)
        return name, export(model.eval(), (ids,), out, input_names=["input_ids"], output_names=["logits"],
                            verify=verify, rtol=1e-4, atol=1e-4,
                            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}})
    except OnnxVerificationError as e:
        print(e.report, file=sys.stderr)
        raise CLIError(f"the ONNX model written to {out} does not match forgegrad in onnxruntime") from None
    except (OnnxExportError, NotImplementedError, ValueError, TypeError) as e:
        raise CLIError(f"ONNX export of {name} failed: {str(e).splitlines()[0]}") from None


def run(args, log=print):
    if args.batch <= 0:
        raise UsageError(f"--batch must be positive, got {args.batch}")
    if is_hf_directory(args.checkpoint):
        d = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(d):
            raise UsageError(f"--out {args.out}: directory {d} does not exist")
        name, report = export_hf(args.checkpoint, args.out, args.batch, not args.no_verify, past=not args.no_past,
                                 cross_attentions=args.cross_attentions)
        if os.path.isdir(args.out):
            log(f"exported {name} to {args.out}: {', '.join(sorted(os.listdir(args.out)))}")
        else:
            log(f"exported {name} to {args.out} ({os.path.getsize(args.out):,} bytes)")
        if not args.no_verify:
            log("onnxruntime parity report:")
            log(format_report(report))
        return 0
    if args.cross_attentions:
        raise UsageError("--cross-attentions: only a Whisper checkpoint directory's decoder graph outputs them")
    model, meta = _checkpoint.load(args.checkpoint)
    report = export_model(model, meta, args.out, batch=args.batch, verify=not args.no_verify)
    log(f"exported {meta['name']} to {args.out} ({os.path.getsize(args.out):,} bytes)")
    if not args.no_verify:
        log("onnxruntime parity report:")
        log(format_report(report))
        if getattr(report, "ok", True) is False:  # export() raises on a mismatch; this is belt and braces
            raise CLIError("the ONNX model's outputs differ from forgegrad's beyond tolerance (see the report)")
    return 0
