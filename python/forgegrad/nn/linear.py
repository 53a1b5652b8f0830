"""Linear layers: Linear, the Keras-style Dense, Bilinear, Identity, Flatten, Unflatten."""
from __future__ import annotations

import math

import numpy as np

from .. import _C, devices
from .._args import positive_int
from ..autograd import graph_free
from ..ops.registry import _OPS
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import add_weight_and_bias

__all__ = ["Linear", "Dense", "Bilinear", "Identity", "Flatten", "Unflatten"]


class Linear(Module):
    """y = x W^T + b.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (default True).

    Shape: input (*, in_features) -> output (*, out_features).
    Parameters: weight (out_features, in_features) and bias (out_features), initialised as in
    PyTorch: U(-1/sqrt(in_features), 1/sqrt(in_features)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        # on the default device (meta under `with forgegrad.device("meta")`: no memory)
        add_weight_and_bias(self, (self.out_features, self.in_features), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.layer_default_(self.weight, self.bias)

    def forward(self, input):
        packed = packed_weight(self)
        if packed is not None and graph_free() and isinstance(input, Tensor) and type(input._data) is np.ndarray \
                and input._data.dtype == np.float32:
            return _fused_linear(input, self.weight, self.bias, -1, 0.0, packed)
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def packed_weight(module):
    """The module's weight packed for the GEMM (set by ``nn.utils.freeze``) when it is a snapshot of
    the weight array the module holds now, else None (a replaced weight is read as it is)."""
    packed = module.__dict__.get("_packed_weight")
    if packed is None:
        return None
    weight = module._parameters.get("weight")
    return packed if weight is not None and packed.source is weight._data else None


def _fused_linear(input, weight, bias, activation, alpha, packed=None):
    """Inference without a graph (no_grad, no trace): act(input @ W^T + b) in one kernel call, the
    activation (a kernel code, -1 for none; see an activation module's ``epilogue()``) applied by
    the GEMM to each output tile as it finishes it. Same kernels, same results as the autograd path.
    ``packed``: the weight's ``_C.gemm.PackedWeight`` (see ``packed_weight``) or None."""
    return Tensor._wrap(_C.gemm.linear(input._data, weight._data, None if bias is None else bias._data,
                                       activation, alpha, packed))


# Dense's activation names: the activations nn.functional has, by name (softmax over the last axis).
_ACTIVATIONS = {None: None, "linear": None, "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
                "gelu": F.gelu, "silu": F.silu, "leaky_relu": F.leaky_relu,
                "softmax": lambda x: F.softmax(x, dim=-1)}


def _dense_epilogue(activation):
    """(kernel code, alpha) that Linear's kernel applies in place for a Dense activation name, from the
    activation op's record (the same kernel F.relu & co. run); None when it runs as its own op."""
    if activation in (None, "linear"):
        return -1, 0.0
    op = _OPS.get(activation)
    return None if op is None or op.epilogue is None else op.epilogue()


def lazy_parameters(module, size_attr, size, size_arg, owner) -> None:
    """Keras-style lazy layers (Dense, Conv2D): ``module.<size_attr>`` (the input size) and the weight
    and bias stay None until the first call builds them with ``module._build(n)``, unless ``size``
    is given, which builds them now."""
    setattr(module, size_attr, None)
    module._lazy_size_attr = size_attr  # marks a lazy layer (see unbuilt_lazy_modules)
    module._param_device = devices.default_device()  # where a lazy build creates the weight
    module.register_parameter("weight", None)
    module.register_parameter("bias", None)
    if size is not None:
        module._build(positive_int(size, size_arg, owner))


def unbuilt_lazy_modules(module):
    """(name, module) of the lazy layers under ``module`` whose parameters do not exist yet."""
    return [(n, m) for n, m in module.named_modules()
            if getattr(m, "_lazy_size_attr", None) and m._parameters.get("weight") is None]


def feature_size_after(module, size):
    """The feature size (last dim) a module's output has for inputs of feature size ``size`` (None:
    unknown). Lets Sequential build a Keras-style Dense stack up front once the first size is known."""
    from .activation import Dropout, _Activation
    from .normalization import LayerNorm
    if type(module) is Linear:
        return module.out_features
    if type(module) is Dense:
        if module.weight is None and size is not None:
            module._build(size)
        return module.units
    if isinstance(module, (_Activation, Dropout, Identity, LayerNorm)):  # elementwise: size unchanged
        return size
    return None


class Dense(Module):
    """Keras-style fully connected layer: ``Dense(units, activation=None, input_dim=None)``.

    When ``input_dim`` is omitted the input size is inferred on the first call (the weight is
    created then). Parameters follow Linear's names and layout (weight (units, in), bias (units)).
    """

    def __init__(self, units: int, activation=None, input_dim: int = None, use_bias: bool = True):
        super().__init__()
        self.units = positive_int(units, "units", "Dense")
        if isinstance(activation, str) or activation is None:
            if activation not in _ACTIVATIONS:
                raise ValueError(f"Dense: unknown activation {activation!r}; expected one of "
                                 f"{sorted(k for k in _ACTIVATIONS if k)} or a callable")
            self.activation_name = activation
            self._act = _ACTIVATIONS[activation]
            self._epilogue = _dense_epilogue(activation)
        elif callable(activation):
            self.activation_name = getattr(activation, "__name__", "custom")
            self._act = activation
            self._epilogue = None
        else:
            raise TypeError(f"Dense: activation must be a name or a callable, got {type(activation).__name__}")
        self.use_bias = use_bias
        lazy_parameters(self, "in_features", input_dim, "input_dim", "Dense")

    def _build(self, in_features: int) -> None:
        self.in_features = in_features
        add_weight_and_bias(self, (self.units, in_features), self.use_bias, self._param_device)
        init.layer_default_(self.weight, self.bias)

    @property
    def built(self) -> bool:
        return self.weight is not None

    def forward(self, input):
        if self.weight is None:
            if input.ndim < 1:
                raise ValueError("Dense: input must have at least 1 dimension")
            self._build(input.shape[-1])
        if (self._epilogue is not None and graph_free() and isinstance(input, Tensor)
                and type(input._data) is np.ndarray and type(self.weight._data) is np.ndarray
                and input._data.dtype == np.float32 and self.weight._data.dtype == np.float32):
            return _fused_linear(input, self.weight, self.bias, *self._epilogue, packed_weight(self))  # one call
        y = F.linear(input, self.weight, self.bias)
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        return f"units={self.units}, activation={self.activation_name}, in_features={self.in_features}"


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Flatten(Module):
    """Flattens dims start_dim..end_dim (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """``Unflatten(dim, unflattened_size)``: splits dim ``dim`` into ``unflattened_size`` (a tuple or list of
    ints, a torch.Size; one of them may be -1: inferred), as torch's."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Unflatten: dim must be an int, got {type(dim).__name__} {dim!r}")
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(f"Unflatten: unflattened_size must be a tuple of ints, but found type "
                            f"{type(unflattened_size).__name__}")
        for i, n in enumerate(unflattened_size):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                raise TypeError(f"Unflatten: unflattened_size must be tuple of ints, but found element of type "
                                f"{type(n).__name__} at pos {i}")
        if not unflattened_size or sum(n == -1 for n in unflattened_size) > 1 or min(unflattened_size) < -1:
            raise ValueError(f"Unflatten: unflattened_size must be non-empty, with at most one -1 and otherwise sizes "
                             f">= 0, got {unflattened_size}")
        self.dim, self.unflattened_size = int(dim), unflattened_size

    def forward(self, input):
        from ..ops._util import single_axis
        d = single_axis(self.dim, input.ndim, "dim")
        n, sizes = input.shape[d], [int(s) for s in self.unflattened_size]
        known = int(np.prod([s for s in sizes if s != -1]))
        if -1 in sizes:
            if known == 0 or n % known:
                raise RuntimeError(f"Unflatten: sizes {tuple(sizes)} cannot fill dim {d} of size {n}")
            sizes[sizes.index(-1)] = n // known
        elif known != n:
            raise RuntimeError(f"Unflatten: unflattened_size {tuple(sizes)} does not multiply up to the size of dim "
                               f"{d} ({n}) of the input of shape {tuple(input.shape)}")
        return input.reshape(tuple(input.shape[:d]) + tuple(sizes) + tuple(input.shape[d + 1:]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Bilinear(Module):
    """y = x1^T A x2 + b: ``Bilinear(in1_features, in2_features, out_features, bias=True)``.

    Shape: input1 (*, in1_features), input2 (*, in2_features) -> (*, out_features). Parameters (torch's names
    and initialisation): weight (out_features, in1_features, in2_features) and bias (out_features), both
    U(-1/sqrt(in1_features), 1/sqrt(in1_features)). The product is F.bilinear (a GEMM and a reduction)."""

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in1_features = positive_int(in1_features, "in1_features", "Bilinear")
        self.in2_features = positive_int(in2_features, "in2_features", "Bilinear")
        self.out_features = positive_int(out_features, "out_features", "Bilinear")
        add_weight_and_bias(self, (self.out_features, self.in1_features, self.in2_features), bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in1_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
