"""The `gpt` suite: the zoo's GPT (forgegrad.models.GPT) against the same model in torch eager.

Workloads (the configuration of issue #14: n_layer 4, n_head 4, n_embd 256, block 128, vocab 256):

- a training step at batch 16, T = 128: forward, cross-entropy over the next bytes, backward,
  AdamW; torch runs a nanoGPT-style twin with the same weights, its attention on
  ``torch.nn.functional.scaled_dot_product_attention`` (is_causal=True);
- the forward at batch 1, T = 128 without a graph (inference): forgegrad (the model after
  ``nn.utils.freeze``, which packs its weights once, as onnxruntime does when it creates a session),
  torch (``no_grad``) and onnxruntime running forgegrad's ONNX export of the same model (opset 17,
  intra_op_num_threads = the thread count).

bench/bench_gpt.py wraps the same workloads for pytest-benchmark and checks that both sides compute
the same loss.
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Sequence

import numpy as np

from . import Workload, _scaling, suite, time_workloads
from ._timing import optional_import, ort_session

CONFIG = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=256)
BATCH, T = 16, 128
TRAIN_WORKLOAD = "GPT 4L-4H-256 train step, B16 T128, AdamW"
INFER_WORKLOAD = "GPT 4L-4H-256 forward, B1 T128"


def torch_gpt(torch, vocab_size, block_size, n_layer, n_head, n_embd):
    """A nanoGPT in torch with forgegrad.models.GPT's module names (so state_dicts map one to one)."""
    tnn, F = torch.nn, torch.nn.functional

    class Attn(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = tnn.Linear(n_embd, 3 * n_embd), tnn.Linear(n_embd, n_embd)

        def forward(self, x):
            n, t, c = x.shape
            q, k, v = self.c_attn(x).split(c, dim=2)
            q, k, v = (a.view(n, t, n_head, c // n_head).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(n, t, c))

    class MLP(tnn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.gelu = tnn.Linear(n_embd, 4 * n_embd), tnn.GELU()
            self.c_proj = tnn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = tnn.LayerNorm(n_embd), Attn(), tnn.LayerNorm(n_embd), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = tnn.ModuleDict(dict(
                wte=tnn.Embedding(vocab_size, n_embd), wpe=tnn.Embedding(block_size, n_embd),
                h=tnn.ModuleList([Block() for _ in range(n_layer)]), ln_f=tnn.LayerNorm(n_embd)))
            self.lm_head = tnn.Linear(n_embd, vocab_size, bias=False)
            self.lm_head.weight = self.transformer.wte.weight

        def forward(self, idx):
            tr = self.transformer
            x = tr.wte(idx) + tr.wpe.weight[: idx.shape[1]]
            for b in tr.h:
                x = b(x)
            return self.lm_head(tr.ln_f(x))

    return GPT()


def models(torch):
    """(forgegrad GPT, torch twin with its weights or None)."""
    from .. import random as fg_random
    from ..models import GPT
    fg_random.manual_seed(0)
    model = GPT(**CONFIG)
    if torch is None:
        return model, None
    tm = torch_gpt(torch, **CONFIG)
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()})
    return model, tm


def _optimizers(model, tm, torch):
    from .. import optim
    opt = optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    topt = None if tm is None else torch.optim.AdamW(tm.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    return opt, topt


def train_fns(torch, batch: int = None, device: str = "cpu"):
    """{"forgegrad": step, "torch": step or None}; each step returns its loss (before the update).
    Both models, their optimizer states and the batch live on ``device`` ("cpu" or "cuda")."""
    batch = BATCH if batch is None else batch
    from .. import nn
    from ..tensor import Tensor
    from ._steps import _step
    model, tm = models(torch)
    model.to(device)
    if tm is not None:
        tm.to(device)
    opt, topt = _optimizers(model, tm, torch)
    w = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (batch, T + 1))
    x, y = Tensor._stored(w[:, :-1]).to(device), Tensor._stored(w[:, 1:].reshape(-1)).to(device)

    def fg_loss():
        return nn.functional.cross_entropy(model(x).reshape(-1, CONFIG["vocab_size"]), y)

    fns = {"forgegrad": _step(opt, fg_loss), "torch": None}
    if torch is not None:
        tx, ty = torch.from_numpy(w[:, :-1]).to(device), torch.from_numpy(w[:, 1:].reshape(-1)).to(device)

        def torch_loss():
            return torch.nn.functional.cross_entropy(tm(tx).reshape(-1, CONFIG["vocab_size"]), ty)

        fns["torch"] = _step(topt, torch_loss)
    return fns


def inference_fns(threads: int):
    """{"forgegrad", "torch", "onnxruntime"}: logits of one 128-byte sequence, no graph."""
    from .. import no_grad
    from ..tensor import Tensor
    torch, ort = optional_import("torch"), optional_import("onnxruntime")
    from ..nn.utils import freeze
    model, tm = models(torch)
    model.eval()
    frozen = freeze(model)  # the weights packed once (same outputs, bit for bit)
    ids = np.random.default_rng(1).integers(0, CONFIG["vocab_size"], (1, T))
    x = Tensor._stored(ids)

    def fg_forward():
        with no_grad():
            return frozen(x)

    fns = {"forgegrad": fg_forward, "torch": None, "onnxruntime": None}
    if torch is not None:
        tm.eval()
        tx = torch.from_numpy(ids)

        def torch_forward():
            with torch.no_grad():
                return tm(tx)

        fns["torch"] = torch_forward
    if ort is not None and optional_import("onnx") is not None:
        from .. import onnx as fonnx
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "gpt.onnx")
            # traced at a shorter length (the exporter also traces at longer ones); T is a dynamic axis
            fonnx.export(model, Tensor._stored(ids[:, :16]), path, opset=17, verify=False)
            with open(path, "rb") as f:
                data = f.read()
        sess = ort_session(ort, data, threads)
        name = sess.get_inputs()[0].name
        fns["onnxruntime"] = lambda: sess.run(None, {name: ids})
    return fns


def workloads(quick: bool = False) -> List[Workload]:
    return [Workload(TRAIN_WORKLOAD, ("forgegrad", "torch"), lambda _t: train_fns(optional_import("torch"))),
            Workload(INFER_WORKLOAD, ("forgegrad", "torch", "onnxruntime"), inference_fns)]


@suite("gpt")
def gpt_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    repeat, min_time = (3, 0.01) if quick else (7, 0.2)
    return time_workloads(workloads(quick), threads, repeat, min_time)


# `forgegrad bench scaling`: the GPT train step by batch size (the peak-memory probe covers the
# classifier models only)
_scaling.register(_scaling.Sweep(
    "gpt", "GPT 4L-4H-256 training step, T128 (AdamW)", "batch size", (1, 2, 4, 8, 16, 32, 64), (1, 4, 16),
    ("forgegrad", "torch"), lambda b, _t: train_fns(optional_import("torch"), b),
    lambda b: (float(b * T), "tokens"), repeat=3, min_time=0.0))
