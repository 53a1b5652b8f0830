"""The ``cuda`` Functions of the activation and recurrent ops: forgegrad._C.cuda_pointwise kernels
on DeviceArrays, whose per-element math is the shared host/device code of cpp/include/forgegrad/hd/
(the same functions the CPU kernels' portable build runs; see docs/shared_math.md).

The ops add these with ``OpDef.add_device("cuda", ...)`` next to their CPU Functions. Kernels launch
on forgegrad's CUDA stream without synchronising. Ran on an H200: tests/test_cuda_pointwise.py passes.
"""
from __future__ import annotations

from .. import _C
from ..autograd import Function, is_grad_enabled

_P = _C.cuda_pointwise
_ACT = _C.activation
# kernel codes of forgegrad._C.rnn / _C.cuda_pointwise (forgegrad.kernels.rnn._MODES)
_MODES = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _empty(shape, like):
    """A new float32 DeviceArray of ``shape`` on the device of ``like``."""
    from .. import cuda
    return cuda.empty(shape, device=like.device)


def _zeros(shape, like):
    from .. import cuda
    return cuda.zeros(shape, device=like.device)


# ---- activations --------------------------------------------------------------------------------------
def _act_forward(code, x, alpha=0.0):
    y = _empty(x.shape, x)
    _P.act_forward(code, x, y, float(alpha))
    return y


def _act_backward(code, g, saved, alpha=0.0):
    dx = _empty(g.shape, g)
    _P.act_backward(code, g, saved, dx, float(alpha))
    return dx


def activation_function(name: str, code: int, saves_output: bool) -> type:
    """The cuda Function of an activation without arguments (relu, sigmoid, tanh, silu)."""

    def forward(ctx, x):
        y = _act_forward(code, x)
        ctx.save_for_backward(y if saves_output else x)
        return y

    def backward(ctx, g):
        (saved,) = ctx.saved_tensors
        return _act_backward(code, g, saved)

    title = "".join(part.title() for part in name.split("_"))
    return type(f"{title}CudaFunction", (Function,), {
        "__module__": __name__, "__doc__": f"{name} on the cuda device (forgegrad._C.cuda_pointwise).",
        "forward": staticmethod(forward), "backward": staticmethod(backward)})


class LeakyReluCudaFunction(Function):
    """leaky_relu on the cuda device."""

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        from ..kernels import activation as K
        ctx.slope = K._slope(negative_slope)  # the CPU op's check and conversion
        ctx.save_for_backward(x)
        return _act_forward(_ACT.LEAKY_RELU, x, ctx.slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _act_backward(_ACT.LEAKY_RELU, g, x, ctx.slope)


class GeluCudaFunction(Function):
    """gelu (exact, or approximate='tanh') on the cuda device."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        ctx.code = _ACT.GELU_TANH if approximate == "tanh" else _ACT.GELU
        ctx.save_for_backward(x)
        return _act_forward(ctx.code, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _act_backward(ctx.code, g, x)


# ---- recurrent layer ------------------------------------------------------------------------------------
class RecurrentLayerCudaFunction(Function):
    """recurrent_layer on the cuda device: the host runs the time loop, each step one SGEMM (the
    recurrent product added to the precomputed input projections) and one fused gate kernel; backward
    through time likewise (forgegrad._C.cuda_pointwise.rnn_forward / rnn_backward). Same arguments,
    results and saved buffers as the CPU Function (ops.rnn.RecurrentLayerFunction)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
        if mode not in _MODES:
            raise ValueError(f"recurrent layer: mode must be one of {tuple(_MODES)}, got {mode!r}")
        if type(reverse) is not bool:
            raise TypeError(f"recurrent layer: reverse must be a bool, got {type(reverse).__name__}")
        if len(x.shape) != 3 or len(w_hh.shape) != 2:
            raise ValueError(f"recurrent layer: x must be 3-D and w_hh 2-D, got shapes {tuple(x.shape)} and "
                             f"{tuple(w_hh.shape)}")
        lstm, gru = mode == "lstm", mode == "gru"
        T, B, _ = x.shape
        H = w_hh.shape[1]
        GH = _GATES[mode] * H
        training = is_grad_enabled() and any(ctx.needs_input_grad)
        ctx.mode, ctx.reverse = mode, reverse
        ctx.has = (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)
        if h0 is None:
            h0 = _zeros((B, H), x)
        if lstm and c0 is None:
            c0 = _zeros((B, H), x)
        if not lstm:
            c0 = None
        y, h_n = _empty((T, B, H), x), _empty((B, H), x)
        c_n = _empty((B, H), x) if lstm else None
        gates = cells = hn_lin = None
        if training and (lstm or gru):
            gates = _empty((T, B, GH), x)
            cells = _empty((T, B, H), x) if lstm else None
            hn_lin = _empty((T, B, H), x) if gru else None
        _P.rnn_forward(_MODES[mode], x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_n, c_n, gates, cells, hn_lin, reverse)
        if training:
            ctx.saved = (x, h0, c0, w_ih, w_hh, y, gates, cells, hn_lin)
        return (y, h_n, c_n) if lstm else (y, h_n)

    @staticmethod
    def backward(ctx, grad_y, grad_hn, grad_cn=None):
        x, h0, c0, w_ih, w_hh, y, gates, cells, hn_lin = ctx.saved
        lstm = ctx.mode == "lstm"
        has_h0, has_c0, has_bih, has_bhh = ctx.has
        GH, H = w_hh.shape
        gx, gh0 = _empty(x.shape, x), _empty(h0.shape, x)
        gc0 = _empty(h0.shape, x) if lstm else None
        gw_ih, gw_hh = _empty(w_ih.shape, x), _empty(w_hh.shape, x)
        gb_ih = _empty((GH,), x) if has_bih else None
        gb_hh = _empty((GH,), x) if has_bhh else None
        _P.rnn_backward(_MODES[ctx.mode], x, h0, c0, w_ih, w_hh, y, gates, cells, hn_lin, grad_y, grad_hn,
                        grad_cn if lstm else None, gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh, ctx.reverse)
        return (gx, gh0 if has_h0 else None, gc0 if (lstm and has_c0) else None, gw_ih, gw_hh,
                gb_ih, gb_hh)
