"""forgegrad.special: torch.special's functions (torch 2.13), with torch's names, argument orders and dtypes.

The error-function, gamma and Bessel families and the orthogonal polynomials are registry ops (forgegrad/ops/
special.py, special_more.py, pointwise_*.py) whose forwards are numpy ports of torch's own algorithms (Cephes
expansions, the Faddeeva erfcx, SciPy's incomplete gamma): float64 results agree with torch's to a few ulps. Gradients
are torch's where torch has one; the Bessel functions (but i0, i0e, i1, i1e) and the polynomials are not
differentiable, as in torch; zeta, gammainc and gammaincc have no derivative for ``input`` (torch's backward raises,
so does forgegrad's). The rest are forgegrad's existing functions under torch.special's names. Not supported: ``out=``.

``install`` also puts torch's package-level names that forgegrad lacked (polygamma, mvlgamma, igamma, igammac) on
forgegrad and their Tensor methods (``x.polygamma(n)``, ``x.igamma(other)``, in-place forms too) on Tensor.
"""
from __future__ import annotations

import math

from . import _functions
from ._torch_install import inplace_method, method
from .ops.registry import _OPS
from .tensor import Tensor

__all__ = [
    "airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "chebyshev_polynomial_t", "chebyshev_polynomial_u",
    "chebyshev_polynomial_v", "chebyshev_polynomial_w", "digamma", "entr", "erf", "erfc", "erfcx", "erfinv", "exp2",
    "expit", "expm1", "gammainc", "gammaincc", "gammaln", "hermite_polynomial_h", "hermite_polynomial_he", "i0", "i0e",
    "i1", "i1e", "laguerre_polynomial_l", "legendre_polynomial_p", "log1p", "log_ndtr", "log_softmax", "logit",
    "logsumexp", "modified_bessel_i0", "modified_bessel_i1", "modified_bessel_k0", "modified_bessel_k1",
    "multigammaln", "ndtr", "ndtri", "polygamma", "psi", "round", "scaled_modified_bessel_k0",
    "scaled_modified_bessel_k1", "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v", "shifted_chebyshev_polynomial_w", "sinc", "softmax", "spherical_bessel_j0",
    "xlog1py", "xlogy", "zeta",
]


def _tensor(x, name, who):
    if not isinstance(x, Tensor):
        raise TypeError(f"special.{who}(): argument {name!r} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _one_tensor(a, b, names, who):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"special.{who}(): one of {names[0]!r} and {names[1]!r} must be a forgegrad.Tensor, got "
                        f"{type(a).__name__} and {type(b).__name__}")


def _unary(name, op=None):
    op = op or f"special_{name}"

    def fn(input):
        return _OPS[op](_tensor(input, "input", name))
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"torch.special.{name}(input) (the registry op {op!r})."
    return fn


def _binary(name, second="other", op=None, scalars=True):
    op = op or f"special_{name}"

    def fn(input, other):
        if scalars:
            _one_tensor(input, other, ("input", second), name)
        else:
            _tensor(input, "input", name), _tensor(other, second, name)
        return _OPS[op](input, other)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"torch.special.{name}(input, {second}) (the registry op {op!r})."
    return fn


# ---- the new registry ops -------------------------------------------------------------------------------------
airy_ai = _unary("airy_ai")
bessel_j0 = _unary("bessel_j0")
bessel_j1 = _unary("bessel_j1")
bessel_y0 = _unary("bessel_y0")
bessel_y1 = _unary("bessel_y1")
modified_bessel_i0 = _unary("modified_bessel_i0")
modified_bessel_i1 = _unary("modified_bessel_i1")
modified_bessel_k0 = _unary("modified_bessel_k0")
modified_bessel_k1 = _unary("modified_bessel_k1")
scaled_modified_bessel_k0 = _unary("scaled_modified_bessel_k0")
scaled_modified_bessel_k1 = _unary("scaled_modified_bessel_k1")
spherical_bessel_j0 = _unary("spherical_bessel_j0")
entr = _unary("entr")
erfcx = _unary("erfcx")
i0e = _unary("i0e")
i1 = _unary("i1")
i1e = _unary("i1e")
log_ndtr = _unary("log_ndtr")
ndtr = _unary("ndtr")
ndtri = _unary("ndtri")
chebyshev_polynomial_t = _binary("chebyshev_polynomial_t", "n")
chebyshev_polynomial_u = _binary("chebyshev_polynomial_u", "n")
chebyshev_polynomial_v = _binary("chebyshev_polynomial_v", "n")
chebyshev_polynomial_w = _binary("chebyshev_polynomial_w", "n")
shifted_chebyshev_polynomial_t = _binary("shifted_chebyshev_polynomial_t", "n")
shifted_chebyshev_polynomial_u = _binary("shifted_chebyshev_polynomial_u", "n")
shifted_chebyshev_polynomial_v = _binary("shifted_chebyshev_polynomial_v", "n")
shifted_chebyshev_polynomial_w = _binary("shifted_chebyshev_polynomial_w", "n")
hermite_polynomial_h = _binary("hermite_polynomial_h", "n")
hermite_polynomial_he = _binary("hermite_polynomial_he", "n")
laguerre_polynomial_l = _binary("laguerre_polynomial_l", "n")
legendre_polynomial_p = _binary("legendre_polynomial_p", "n")
xlog1py = _binary("xlog1py")
zeta = _binary("zeta")
gammainc = _binary("gammainc", scalars=False)  # torch takes tensors only here
gammaincc = _binary("gammaincc", scalars=False)
xlogy = _binary("xlogy", op="xlogy")

# ---- forgegrad's existing ops under torch.special's names -------------------------------------------------------
erf = _unary("erf", "erf")
erfc = _unary("erfc", "erfc")
erfinv = _unary("erfinv", "erfinv")
exp2 = _unary("exp2", "exp2")
expm1 = _unary("expm1", "expm1")
log1p = _unary("log1p", "log1p")
gammaln = _unary("gammaln", "lgamma")
digamma = _unary("digamma", "digamma")
psi = _unary("psi", "digamma")
i0 = _unary("i0", "i0")
sinc = _unary("sinc", "sinc")


def expit(input):
    """torch.special.expit: the logistic sigmoid."""
    return _functions.sigmoid(_tensor(input, "input", "expit"))


def logit(input, eps=None):
    """torch.special.logit(input, eps=None)."""
    return _OPS["logit"](_tensor(input, "input", "logit"), eps)


def round(input, **kwargs):  # noqa: A001  (torch.special.round)
    """torch.special.round(input): half to even (``decimals=`` as torch.round)."""
    from . import round as _round
    return _round(_tensor(input, "input", "round"), **kwargs)


def softmax(input, dim, *, dtype=None):
    """torch.special.softmax(input, dim, *, dtype=None): ``dtype`` casts the input first, as torch's."""
    x = _tensor(input, "input", "softmax")
    return _functions.softmax(x if dtype is None else x.to(dtype), dim)


def log_softmax(input, dim, *, dtype=None):
    """torch.special.log_softmax(input, dim, *, dtype=None)."""
    x = _tensor(input, "input", "log_softmax")
    return _functions.log_softmax(x if dtype is None else x.to(dtype), dim)


def logsumexp(input, dim, keepdim=False):
    """torch.special.logsumexp(input, dim, keepdim=False)."""
    from . import logsumexp as _logsumexp
    return _logsumexp(_tensor(input, "input", "logsumexp"), dim, keepdim)


def polygamma(n, input):
    """torch.special.polygamma(n, input): the n-th derivative of digamma (n = 0: digamma), differentiable in input."""
    return _OPS["polygamma"](_tensor(input, "input", "polygamma"), n)


def multigammaln(input, p):
    """torch.special.multigammaln(input, p): the multivariate log-gamma of dimension p, torch's sum
    sum_j lgamma(input - j/2) + p (p - 1) / 4 log(pi) (in torch's order; +inf where input <= (p - 1) / 2)."""
    return _multigammaln(input, p, "special.multigammaln")


def _multigammaln(input, p, name):
    from . import dtypes
    from .factories import tensor as _make
    from ._validate import check_int
    x = _tensor(input, "input", name)
    p = check_int(p, "p")
    if p < 1:  # torch's RuntimeError and words; a bad argument is a ValueError in forgegrad
        raise ValueError(f"{name}(): p has to be greater than or equal to 1, got {p}")
    if not x.dtype.is_floating_point:
        x = x.to(dtypes.default_float())
    offsets = _make([-(p - 1) / 2 + j / 2 for j in range(p)], dtype=x.dtype)  # torch's arange(-p/2 + 1/2, 1/2, 1/2)
    return (x.unsqueeze(-1) + offsets).lgamma().sum(-1) + p * (p - 1) * math.log(math.pi) / 4


# ---- torch's package-level names and Tensor methods ------------------------------------------------------------
def _polygamma_top(n, input):
    return polygamma(n, input)


def _mvlgamma(input, p=1):
    return _multigammaln(input, p, "mvlgamma")


def _igamma(input, other):
    return gammainc(input, other)


def _igammac(input, other):
    return gammaincc(input, other)


_polygamma_top.__name__, _mvlgamma.__name__, _igamma.__name__, _igammac.__name__ = (
    "polygamma", "mvlgamma", "igamma", "igammac")
PACKAGE = {"polygamma": _polygamma_top, "mvlgamma": _mvlgamma, "igamma": _igamma, "igammac": _igammac}


def _polygamma_method(self, n):
    """Tensor.polygamma(n): torch.polygamma(n, self)."""
    return polygamma(n, self)


def install(package_namespace: dict) -> None:
    """Put torch's package-level names forgegrad lacked on it, and their Tensor methods on Tensor (never replacing a
    name already there)."""
    from ._tensor_methods import TensorMethods
    for name, fn in PACKAGE.items():
        package_namespace.setdefault(name, fn)
    methods = {"polygamma": _polygamma_method, "mvlgamma": method(_mvlgamma), "igamma": method(_igamma),
               "igammac": method(_igammac)}
    methods.update({n + "_": inplace_method(fn, n) for n, fn in methods.items()})
    for name, m in methods.items():
        if not hasattr(TensorMethods, name):
            setattr(TensorMethods, name, m)
