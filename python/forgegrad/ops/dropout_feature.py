"""Channel dropout and alpha dropout, torch's formulas (ATen's _dropout_impl), on forgegrad's generator:

- feature_dropout (F.dropout1d / 2d / 3d): one keep draw per (sample, channel), the mask (N, C, 1, ...) broadcast
  over the spatial axes, kept channels scaled by 1 / (1 - p);
- alpha_dropout (nn.AlphaDropout, for SELU networks): each element kept with probability 1 - p, dropped ones set
  to SELU's negative saturation, then the affine map a * y + b that keeps a zero mean and unit variance
  (a = 1 / sqrt((alpha^2 p + 1)(1 - p)), alpha = 1.7580993408473766);
- feature_alpha_dropout: alpha dropout with the channel mask.

The masks are drawn on the host with forgegrad's generator (forgegrad.manual_seed repeats them; the draw does not
depend on the thread count). The gradient is g times the forward's mask (times a for alpha). In eval mode, or at
p = 0, each returns its input itself (a view, as torch's); at p = 1 the input times zero (NaN stays NaN, as
torch's). The ONNX mapping is the identity: dropout is exported in eval mode only.
"""
from __future__ import annotations

import numpy as np

from .._validate import check_bool, check_float
from ..autograd import Function
from . import _meta as M
from . import _pool_onnx as PO
from . import _pool_samples as PS
from .registry import register_op

ALPHA = 1.7580993408473766  # SELU's scale * alpha: its negative saturation is -ALPHA


def check_p(p, owner):
    p = check_float(p, f"{owner}: p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p (the dropout probability) has to be between 0 and 1, but got {p}")
    return p


def _keep(shape, p):
    from .. import random as _random
    return _random.generator().random(shape, dtype=np.float32) >= p


def _dropout_function(name, feature, alpha):
    def forward(ctx, x, p=0.5, training=True):
        p, training = check_p(p, name), check_bool(training, f"{name}: training")
        if feature and x.ndim < 2:
            raise ValueError(f"{name}: input must have at least 2 dimensions (N, C, ...) for channel dropout, got "
                             f"shape {tuple(x.shape)}")
        if not training or p == 0.0 or x.size == 0:
            ctx.scale = None
            return x
        t = x.dtype.type
        if p == 1.0:
            ctx.scale = np.zeros((), x.dtype)
            return x * t(0)
        keep = _keep(tuple(x.shape[:2]) + (1,) * (x.ndim - 2) if feature else x.shape, p).astype(x.dtype)
        if alpha:
            a = 1.0 / np.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
            ctx.scale = keep * t(a)
            return x * ctx.scale + (keep - t(1)) * t(ALPHA * a) + t(ALPHA * a * p)
        ctx.scale = keep * t(1.0 / (1.0 - p))
        return x * ctx.scale

    def backward(ctx, g):
        return g if ctx.scale is None else (g * ctx.scale).astype(g.dtype, copy=False)

    title = "".join(part.title() for part in name.split("_"))
    return type(f"{title}Function", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "is_view": True,  # in eval mode or at p=0 the output is the input itself, as torch's
                 "__doc__": f"{name}(x, p, training) (see the module docstring)."})


def _rule(ctx, args, kwargs, g):
    """g times the forward's mask: linear in g."""
    from ._double_backward import _const
    scale = ctx.__dict__.get("scale")
    return g if scale is None else g * _const(scale, g)


def _register(name, feature, alpha):
    return register_op(
        name, meta=M.same, flops=M.per_output_element(3 if alpha else 1), samples=PS.dropout_samples,
        torch=PS.dropout_torch(name), bad_inputs=lambda: PS.dropout_bad_inputs(feature), onnx=PO.map_dropout_identity,
        differentiable_backward=_rule)(_dropout_function(name, feature, alpha))


FeatureDropoutFunction = _register("feature_dropout", True, False)
AlphaDropoutFunction = _register("alpha_dropout", False, True)
FeatureAlphaDropoutFunction = _register("feature_alpha_dropout", True, True)
for _fn in (FeatureDropoutFunction, AlphaDropoutFunction, FeatureAlphaDropoutFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype
