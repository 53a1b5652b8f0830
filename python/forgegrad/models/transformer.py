"""Transformer models: a GPT (decoder-only language model) and an encoder text classifier.

``GPT`` follows GPT-2 / nanoGPT: token and learned position embeddings, ``n_layer`` pre-LN blocks
(LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP 4x with GELU -> residual), a final
LayerNorm and an LM head whose weight is the token embedding's (weight tying). Its submodule names
are nanoGPT's (transformer.wte, transformer.h.0.attn.c_attn, lm_head, ...), so a nanoGPT state_dict
loads unchanged. Attention is ``F.scaled_dot_product_attention(..., is_causal=True)``: the fused
kernel, which never materialises the T x T scores.

``sample`` draws tokens from a GPT (temperature, top-k), running the whole context each step (no
KV cache).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .. import devices, nn
from .. import random as _random
from .._args import positive_int
from .._validate import check_bool, check_float
from ..autograd import graph_free, is_grad_enabled, no_grad
from ..grad_mode import recorder
from ..nn.hooks import has_call_hooks
from ..nn.linear import _fused_linear, packed_weight
from .. import _C
from ..kernels.attention import attention_forward_packed as _attention_packed
from ..kernels.norm import layer_norm_forward as _layer_norm
from ..ops.attention import packed_causal_attention as _packed_causal_attention
from ..tensor import Tensor

__all__ = ["GPT", "TransformerClassifier", "sample"]

F = nn.functional


def _dropout(module, x):
    """module(x), skipped when it is the identity (eval mode or p = 0): no op call at all."""
    return module(x) if module.training and module.p > 0 else x


def _arr(t):
    return None if t is None else t._data


def _linear(x, lin, activation=-1, alpha=0.0):
    """lin on a float32 array (the kernel Linear runs), with its packed weight when it has one."""
    return _C.gemm.linear(x, lin.weight._data, _arr(lin.bias), activation, alpha, packed_weight(lin))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a packed q/k/v projection (c_attn) and c_proj."""

    def __init__(self, n_embd, n_head, dropout, bias):
        super().__init__()
        self.n_head, self.n_embd = n_head, n_embd
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.dropout = dropout
        self.batch_first = True  # (N, T, C); the ONNX exporter makes T dynamic by default

    def forward(self, x):
        n, t, c = x.shape
        h = self.n_head
        qkv = self.c_attn(x)
        dropout = self.dropout if self.training else 0.0
        if dropout == 0.0 and type(qkv._data) is np.ndarray and qkv._data.dtype == np.float32 and recorder() is None:
            # the fused kernel on the packed projection: no head split / merge copies (an ONNX trace
            # and float64 take the composed ops below, which compute the same)
            return _dropout(self.resid_dropout, self.c_proj(_packed_causal_attention(qkv, h)))
        # (N, T, 3C) -> (3, N, H, T, D): one permute, then q, k, v are views of it
        qkv = qkv.reshape(n, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y = y.permute(0, 2, 1, 3).reshape(n, t, c)
        return _dropout(self.resid_dropout, self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout, bias):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # inference: bias + GELU in the float32 GEMM's output pass (a float64 model takes the op path; hooks on
        # c_fc or gelu run through the modules)
        if graph_free() and type(x._data) is np.ndarray and x._data.dtype == np.float32 \
                and self.c_fc.weight._data.dtype == np.float32 \
                and not has_call_hooks(self.c_fc) and not has_call_hooks(self.gelu):
            h = _fused_linear(x, self.c_fc.weight, self.c_fc.bias, *self.gelu.epilogue(), packed_weight(self.c_fc))
        else:
            h = self.gelu(self.c_fc(x))
        return _dropout(self.dropout, self.c_proj(h))


class Block(nn.Module):
    """A pre-LN Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def _plain(self) -> bool:
        """Whether _infer computes what forward does: the submodules are the ones __init__ made
        (exact types: a quantized or wrapped layer takes forward), without forward pre-hooks (they
        can change arguments), with float32 CPU parameters, and dropout the identity."""
        a, m = self.attn, self.mlp
        parts = (self, self.ln_1, a, a.c_attn, a.c_proj, self.ln_2, m, m.c_fc, m.gelu, m.c_proj)
        if tuple(map(type, parts)) != _PLAIN_BLOCK_TYPES or any(has_call_hooks(p) for p in parts):
            return False
        if any(d.training and d.p > 0 for d in (a.resid_dropout, m.dropout)) or (a.training and a.dropout > 0):
            return False
        for lin in (a.c_attn, a.c_proj, m.c_fc, m.c_proj, self.ln_1, self.ln_2):
            for t in (lin.weight, lin.bias):
                if t is not None and (type(t._data) is not np.ndarray or t._data.dtype != np.float32):
                    return False
        return True

    def _infer(self, x):
        """forward on a float32 array without a graph (see GPT.forward): the kernels forward's ops run,
        in the same order, without the per-op dispatch (a batch-1 forward's ops cost about as much to
        dispatch as the small kernels they run)."""
        a, m, ln1, ln2 = self.attn, self.mlp, self.ln_1, self.ln_2
        h = _layer_norm(x, ln1.normalized_shape, _arr(ln1.weight), _arr(ln1.bias), ln1.eps)[0]
        qkv = _linear(h, a.c_attn)
        y = _attention_packed(qkv, a.n_head)[0]
        x = np.add(x, _linear(y, a.c_proj))
        h = _layer_norm(x, ln2.normalized_shape, _arr(ln2.weight), _arr(ln2.bias), ln2.eps)[0]
        h = _linear(h, m.c_fc, *m.gelu.epilogue())
        return np.add(x, _linear(h, m.c_proj))

    def __init__(self, n_embd, n_head, dropout, bias):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


_PLAIN_BLOCK_TYPES = (Block, nn.LayerNorm, CausalSelfAttention, nn.Linear, nn.Linear, nn.LayerNorm, MLP, nn.Linear,
                      nn.GELU, nn.Linear)


class GPT(nn.Module):
    """``GPT(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.0, bias=True,
    gradient_checkpointing=False)``.

    forward(idx) maps token ids (N, T) int64, T <= block_size, to logits (N, T, vocab_size).
    Initialisation as GPT-2: weights N(0, 0.02) (the residual projections c_proj N(0, 0.02/sqrt(2
    n_layer))), biases 0. ``lm_head.weight`` is ``transformer.wte.weight`` (one parameter).
    ``gradient_checkpointing`` (or ``gradient_checkpointing_enable()``): in training, each block runs under
    forgegrad.utils.checkpoint (its activations are recomputed in backward: less memory, the same gradients).
    """

    def __init__(self, vocab_size: int = 256, block_size: int = 128, n_layer: int = 4, n_head: int = 4,
                 n_embd: int = 256, dropout: float = 0.0, bias: bool = True, gradient_checkpointing: bool = False):
        super().__init__()
        self.gradient_checkpointing = check_bool(gradient_checkpointing, "gradient_checkpointing")
        self.vocab_size = positive_int(vocab_size, "vocab_size", "GPT")
        self.block_size = positive_int(block_size, "block_size", "GPT")
        self.n_layer = positive_int(n_layer, "n_layer", "GPT")
        self.n_head = positive_int(n_head, "n_head", "GPT")
        self.n_embd = positive_int(n_embd, "n_embd", "GPT")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        dropout = check_float(dropout, "dropout", low=0.0, high=1.0)
        bias = check_bool(bias, "bias")
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(self.vocab_size, self.n_embd),
            wpe=nn.Embedding(self.block_size, self.n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(self.n_embd, self.n_head, dropout, bias) for _ in range(self.n_layer)]),
            ln_f=nn.LayerNorm(self.n_embd, bias=bias)))
        self.lm_head = nn.Linear(self.n_embd, self.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layer))
            elif p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)
            else:
                is_norm_weight = name.endswith(".weight")  # LayerNorm weights stay 1
                if not is_norm_weight:
                    nn.init.zeros_(p)

    def forward(self, idx):
        if not isinstance(idx, Tensor):
            idx = Tensor._stored(np.asarray(idx))
        if idx.ndim != 2:
            raise ValueError(f"GPT: expected token ids (N, T), got shape {tuple(idx.shape)}")
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"GPT: sequence length {t} exceeds block_size {self.block_size}")
        tr = self.transformer
        # positions 0..T-1 as a slice of the table: an exported graph keeps T dynamic
        x = _dropout(tr.drop, tr.wte(idx) + tr.wpe.weight[:t])
        blocks = list(tr.h)
        if graph_free() and type(x._data) is np.ndarray and all(b._plain() for b in blocks):
            # inference: the blocks straight on the kernels (same results, no per-op dispatch)
            x = x._data
            for block in blocks:
                x = block._infer(x)
            x = Tensor._wrap(x)
        elif self.gradient_checkpointing and self.training and is_grad_enabled():
            from ..utils.checkpoint import checkpoint
            for block in blocks:
                x = checkpoint(block, x, use_reentrant=False)
        else:
            for block in blocks:
                x = block(x)
        return self.lm_head(tr.ln_f(x))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        """Checkpoint every block in training (transformers' method name)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False


class TransformerClassifier(nn.Module):
    """``TransformerClassifier(vocab_size, num_classes, d_model=64, nhead=4, num_layers=2,
    dim_feedforward=128, max_len=256, dropout=0.1, pad_id=0)``: token + learned position embeddings,
    a pre-LN ``nn.TransformerEncoder`` (batch first) that ignores padding (``key_padding_mask``), the
    mean of the non-padding positions, and a Linear head.

    forward(tokens) maps token ids (N, T) int64 (``pad_id`` pads) to logits (N, num_classes).
    """

    def __init__(self, vocab_size: int, num_classes: int = 2, d_model: int = 64, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 128, max_len: int = 256, dropout: float = 0.1,
                 pad_id: int = 0):
        super().__init__()
        owner = "TransformerClassifier"
        self.vocab_size = positive_int(vocab_size, "vocab_size", owner)
        self.num_classes = positive_int(num_classes, "num_classes", owner)
        self.pad_id = pad_id
        self.embed = nn.Embedding(self.vocab_size, d_model, padding_idx=pad_id)
        self.pos = nn.LearnedPositionalEmbedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, self.num_classes)

    def forward(self, tokens):
        if not isinstance(tokens, Tensor):
            tokens = Tensor._stored(np.asarray(tokens))
        if tokens.ndim != 2:
            raise ValueError(f"TransformerClassifier: expected token ids (N, T), got shape {tuple(tokens.shape)}")
        pad = tokens == self.pad_id
        x = self.encoder(self.pos(self.embed(tokens)), src_key_padding_mask=pad)
        keep = (tokens != self.pad_id).float().unsqueeze(-1)
        pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # mean over real tokens
        return self.head(pooled)


def sample(model, prompt: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
           top_k: Optional[int] = None, generator=None) -> list:
    """Token ids: ``prompt`` followed by ``max_new_tokens`` sampled ids. Each step runs the model on
    the last ``block_size`` ids and draws from softmax(logits / temperature), restricted to the
    ``top_k`` most likely ids when given (temperature 0: the most likely id, greedy)."""
    ids = [int(i) for i in prompt]
    if not ids:
        raise ValueError("sample: prompt must hold at least one token id")
    max_new_tokens = int(max_new_tokens)
    temperature = check_float(temperature, "temperature", low=0.0)
    if top_k is not None:
        top_k = positive_int(top_k, "top_k", "sample")
    gen = generator or _random.generator()
    block = getattr(model, "block_size", None) or len(ids) + max_new_tokens
    dev = next((p.device for p in model.parameters()), "cpu")  # tokens go to the model; logits come back
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                ctx = Tensor._stored(np.asarray([ids[-block:]], np.int64)).to(dev)
                z = devices.to_host(model(ctx)[0, -1]._data).astype(np.float64)
                if temperature == 0.0:
                    ids.append(int(np.argmax(z)))
                    continue
                z = z / temperature
                if top_k is not None and top_k < z.size:
                    cut = np.partition(z, -top_k)[-top_k]
                    z = np.where(z < cut, -np.inf, z)
                p = np.exp(z - z.max())
                ids.append(int(gen.choice(z.size, p=p / p.sum())))
    finally:
        model.train(was_training)
    return ids
