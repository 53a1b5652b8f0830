"""Multi-head attention, as torch.nn.MultiheadAttention: same arguments, state_dict keys and results.

The projections run on forgegrad's GEMM (one packed Linear for self-attention); the attention itself
runs in one of two ways, as in torch:

- ``need_weights=False``: ``F.scaled_dot_product_attention`` (the fused kernel: scores are never
  materialised; ``is_causal`` skips the tiles above the diagonal);
- ``need_weights=True``: the scores are computed explicitly (``softmax(q k^T / sqrt(d) + mask)``)
  because the caller asked for them; the weights come back averaged over heads
  (``average_attn_weights=True``, shape (N, L, S)) or per head (N, H, L, S).

Masks follow torch: ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or (N*num_heads, L, S),
bool (True = this key is not attended to) or float (added to the scores).
"""
from __future__ import annotations

import math

import numpy as np

from .. import devices
from .._args import positive_int
from .._validate import check_bool, check_flag, check_float
from ..ops.registry import _OPS
from ..tensor import Tensor
from . import functional as F
from . import init
from .linear import Linear
from .module import Module
from .parameter import Parameter

__all__ = ["MultiheadAttention"]


def _as_tensor(x, name):
    if x is None or isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor._stored(x)
    raise TypeError(f"MultiheadAttention: {name} must be a forgegrad.Tensor (or numpy array), got "
                    f"{type(x).__name__}")


def canonical_mask(mask, name: str, dtype=np.float32):
    """A mask as an additive mask in ``dtype`` (the query's: float32 or float64): bool True -> -inf
    (not attended), float as given (torch's ``_canonical_mask``; a float32 mask for float64 queries
    is widened, exactly); None stays None. Other dtypes raise TypeError naming ``name``."""
    mask = _as_tensor(mask, name)
    if mask is None:
        return None
    kind = np.dtype(mask.dtype).kind
    if kind == "b":
        if isinstance(mask._data, np.ndarray) and not _traced():
            return Tensor._wrap_exact(np.where(mask._data, -np.inf, 0.0).astype(dtype))
        # a traced or meta mask: a recorded op, so an exported graph computes it from the input
        out = _OPS["where"](mask, np.float32(-np.inf), np.float32(0.0))
        return out if np.dtype(dtype) == np.float32 else out.to(dtype)
    if kind == "f":
        if mask.dtype not in (np.float32, np.float64) or np.dtype(mask.dtype).itemsize > np.dtype(dtype).itemsize:
            raise TypeError(f"{name} must be bool or {np.dtype(dtype)} (the query's dtype), got {mask.dtype}")
        return mask if mask.dtype == dtype else mask.to(dtype)

    raise TypeError(f"only bool and floating types of {name} are supported, got {mask.dtype}")


def _traced() -> bool:
    from ..grad_mode import recorder
    return recorder() is not None


class MultiheadAttention(Module):
    """``MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
    add_zero_attn=False, kdim=None, vdim=None, batch_first=False)``, as torch.nn.MultiheadAttention.

    Parameters (state_dict keys as torch): ``in_proj_weight`` (3E, E) when kdim == vdim == embed_dim,
    else ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim);
    ``in_proj_bias`` (3E) when bias; ``bias_k``/``bias_v`` (1, 1, E) when add_bias_kv;
    ``out_proj.weight``/``out_proj.bias``.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (attn_output, attn_weights or None).
    Shapes: query (L, N, E) ((N, L, E) with batch_first, (L, E) unbatched), key (S, N, kdim), value
    (S, N, vdim); attn_output like query. ``is_causal`` is a hint that ``attn_mask`` is the causal
    mask (as in torch it needs the mask): with no key_padding_mask and need_weights=False the fused
    kernel then skips the masked tiles instead of reading the mask.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        self.embed_dim = positive_int(embed_dim, "embed_dim", "MultiheadAttention")
        self.num_heads = positive_int(num_heads, "num_heads", "MultiheadAttention")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        self.kdim = self.embed_dim if kdim is None else positive_int(kdim, "kdim", "MultiheadAttention")
        self.vdim = self.embed_dim if vdim is None else positive_int(vdim, "vdim", "MultiheadAttention")
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.dropout = check_float(dropout, "dropout", low=0.0, high=1.0)
        self.batch_first = check_flag(batch_first, "batch_first")
        self.add_zero_attn = check_flag(add_zero_attn, "add_zero_attn")
        self.head_dim = self.embed_dim // self.num_heads
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(devices.empty((3 * e, e)))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(devices.empty((e, e)))
            self.k_proj_weight = Parameter(devices.empty((e, self.kdim)))
            self.v_proj_weight = Parameter(devices.empty((e, self.vdim)))
        if check_flag(bias, "bias"):
            self.in_proj_bias = Parameter(devices.empty((3 * e,)))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias)
        if check_flag(add_bias_kv, "add_bias_kv"):
            self.bias_k = Parameter(devices.empty((1, 1, e)))
            self.bias_v = Parameter(devices.empty((1, 1, e)))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch's initialisation: xavier-uniform projections, zero biases (out_proj.weight keeps
        Linear's default)."""
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    # ---- forward ----------------------------------------------------------------------------------------
    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        query, key, value = (_as_tensor(t, n) for t, n in ((query, "query"), (key, "key"), (value, "value")))
        need_weights = check_bool(need_weights, "need_weights")
        average_attn_weights = check_bool(average_attn_weights, "average_attn_weights")
        is_causal = check_bool(is_causal, "is_causal")
        batched = self._check_shapes(query, key, value, key_padding_mask, attn_mask)
        packed = query is key and key is value  # self-attention: one GEMM for q, k and v
        if not batched:  # one sequence: a batch of one, squeezed again at the end
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = _as_tensor(key_padding_mask, "key_padding_mask").unsqueeze(0)
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal=True needs attn_mask (the causal mask: it is a hint "
                             "that attn_mask is causal); use Transformer.generate_square_subsequent_mask(L)")
        if not self.batch_first or not batched:  # (L, N, E) -> (N, L, E): batch first inside
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt_len, _ = query.shape
        q, k, v = self._project(query, key, value, packed)
        h, d = self.num_heads, self.head_dim
        kpm = canonical_mask(key_padding_mask, "key_padding_mask", q.dtype)
        mask = canonical_mask(attn_mask, "attn_mask", q.dtype)
        causal_hint = is_causal and kpm is None and not need_weights
        if causal_hint:
            mask = None  # the kernel skips the masked tiles itself
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(n, h, tgt_len, -1)
        if self.bias_k is not None:
            k = _cat_seq(k, self.bias_k.expand(n, 1, self.embed_dim))
            v = _cat_seq(v, self.bias_v.expand(n, 1, self.embed_dim))
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        # (N, S, E) -> (N, H, S, D)
        q = q.reshape(n, tgt_len, h, d).permute(0, 2, 1, 3)
        k = k.reshape(n, k.shape[1], h, d).permute(0, 2, 1, 3)
        v = v.reshape(n, v.shape[1], h, d).permute(0, 2, 1, 3)
        if self.add_zero_attn:
            zeros = Tensor._wrap_exact(devices.zeros((n, h, 1, d), k.dtype))
            k, v = _cat_seq(k, zeros, dim=2), _cat_seq(v, zeros, dim=2)
            mask, kpm = _pad_last(mask), _pad_last(kpm)
        src_len = k.shape[2]
        if kpm is not None:  # (N, S) -> (N, 1, 1, S), merged into the attention mask
            kpm = kpm.reshape(n, 1, 1, src_len)
            mask = kpm if mask is None else mask + kpm
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            # torch scales q first (q * sqrt(1/d)), then adds the mask to q k^T
            scores = (q * float(math.sqrt(1.0 / d))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = F.softmax(scores, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, dropout_p, True)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal_hint)
            weights = None
        out = self.out_proj(out.permute(0, 2, 1, 3).reshape(n, tgt_len, self.embed_dim))
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            out = out.squeeze(1)
            if weights is not None:
                weights = weights.squeeze(0)
        return out, weights

    def _project(self, query, key, value, packed):
        """q, k, v (N, L|S, E): one packed GEMM for self-attention (query is key is value), else three."""
        e, b = self.embed_dim, self.in_proj_bias
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if packed:
                qkv = F.linear(query, w, b)
                return qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def _check_shapes(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        """torch's shape rules; returns whether the input is batched. Errors name the argument."""
        for t, name in ((query, "query"), (key, "key"), (value, "value")):
            if t is None:
                raise TypeError(f"MultiheadAttention: {name} is required")
        if query.ndim not in (2, 3):
            raise ValueError(f"MultiheadAttention: query should be unbatched 2-D or batched 3-D, got shape "
                             f"{tuple(query.shape)}")
        batched = query.ndim == 3
        for t, name, width in ((key, "key", self.kdim), (value, "value", self.vdim)):
            if t.ndim != query.ndim:
                raise ValueError(f"MultiheadAttention: for {query.ndim}-D query, {name} should be "
                                 f"{query.ndim}-D too, got shape {tuple(t.shape)}")
            if t.shape[-1] != width:
                raise ValueError(f"MultiheadAttention: {name} must have {width} features (the last dim), got "
                                 f"shape {tuple(t.shape)}")
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query must have embed_dim={self.embed_dim} features, got "
                             f"shape {tuple(query.shape)}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"MultiheadAttention: key {tuple(key.shape)} and value {tuple(value.shape)} must have "
                             "the same sequence and batch sizes")
        bdim, sdim = (0, 1) if self.batch_first else (1, 0)
        if batched:
            n, tgt_len, src_len = query.shape[bdim], query.shape[sdim], key.shape[sdim]
            if key.shape[bdim] != n:
                raise ValueError(f"MultiheadAttention: key and query batch sizes differ: {tuple(key.shape)} and "
                                 f"{tuple(query.shape)} (batch_first={self.batch_first})")
        else:
            n, tgt_len, src_len = 1, query.shape[0], key.shape[0]
        if key_padding_mask is not None:
            want = (n, src_len) if batched else (src_len,)
            kpm = _as_tensor(key_padding_mask, "key_padding_mask")
            if tuple(kpm.shape) != want:
                raise ValueError(f"MultiheadAttention: key_padding_mask must have shape {want}, got "
                                 f"{tuple(kpm.shape)}")
        if attn_mask is not None:
            m = _as_tensor(attn_mask, "attn_mask")
            heads = self.num_heads * n
            if tuple(m.shape) not in ((tgt_len, src_len), (heads, tgt_len, src_len)):
                raise ValueError(f"MultiheadAttention: attn_mask must have shape {(tgt_len, src_len)} or "
                                 f"{(heads, tgt_len, src_len)} (batch * num_heads, L, S), got {tuple(m.shape)}")
        return batched

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")


def _cat_seq(x, extra, dim=1):
    from ..factories import cat
    return cat([x, extra], dim=dim)


def _pad_last(mask):
    """A mask with one more key column that every query may attend (0): bias_k / the zero key."""
    if mask is None:
        return None
    from ..factories import cat
    zeros = Tensor._wrap_exact(devices.zeros(tuple(mask.shape[:-1]) + (1,), mask.dtype))
    return cat([mask, zeros], dim=-1)
