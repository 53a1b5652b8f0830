"""Double backward, generated from the op registry: every op with a differentiable backward rule, over the samples
its record declares (the same ones tests/test_op_registry.py checks forward and backward with), in float64 against
torch's float64: the gradient taken with create_graph=True, then the gradient of its projection on a random vector.
An op given a rule is covered here by its existing samples; a registered op without one must be named in
UNCOVERED (tests/test_double_backward_models.py checks the error that names it, on a user Function)."""
import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import forgegrad as fg
from forgegrad import autograd
from forgegrad.ops import registry
from forgegrad.ops._double_backward import covered

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's, on a sample
MAX_ELEMENTS = 2_000  # the large samples (kernel blocking) say nothing more about a rule and cost seconds here
# torch has no double backward for these (its hardsigmoid_backward has no derivative): their rules are checked
# against the analytic second derivative in tests/test_nn_activations_torch.py
NO_TORCH_DOUBLE_BACKWARD = {"hardsigmoid"}
# registered ops without a differentiable rule (create_graph through one raises NotImplementedError naming it)
UNCOVERED = {"argmax", "argmin", "compare",  # no float output: nothing to differentiate
             "ctc_loss",  # torch has none either ("derivative for _ctc_loss_backward is not implemented")
             "grid_sample"}  # torch has one; forgegrad's rule (through the grid's weights) is not written yet
RANDOM = {"dropout"}  # its mask is drawn by each library: tests/test_double_backward.py checks it with its mask


def _torch_multi_margin(torch, x, y, p=1, margin=1.0, weight=None, reduction="mean"):
    c = x.shape[-1] if x.ndim else 1
    x2, y2 = x.reshape(-1, c), y.reshape(-1)
    onehot = torch.nn.functional.one_hot(y2, c).bool()
    z = margin - x2.gather(1, y2[:, None]) + x2
    h = torch.where((z > 0) & ~onehot, z ** p, 0)
    h = h if weight is None else h * weight[y2][:, None]
    return _torch_reduce(torch, (h.sum(-1) / c).reshape(x.shape[:-1]), reduction)


def _torch_multilabel_margin(torch, x, t, reduction="mean"):
    c = x.shape[-1] if x.ndim else 1
    x2, t2 = x.reshape(-1, c), t.reshape(-1, c)
    valid = (t2 == -1).cumsum(1) == 0
    tj = torch.where(valid, t2, 0)
    onehot = torch.nn.functional.one_hot(tj, c).bool() & valid[:, :, None]
    z = 1 - x2.gather(1, tj)[:, :, None] + x2[:, None, :]
    keep = (z > 0) & valid[:, :, None] & ~onehot.any(1)[:, None, :]
    return _torch_reduce(torch, (torch.where(keep, z, 0).sum((1, 2)) / c).reshape(x.shape[:-1]), reduction)


def _torch_reduce(torch, loss, reduction):
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


# torch's kernels of these have no double backward ("derivative for aten::multi_margin_loss_backward is not
# implemented"): their second order is checked against torch's formula written with torch ops, which
# test_torch_formula_equals_the_kernel holds to the kernel's values and gradients
def _torch_embedding_bag(torch, weight, input, offsets=None, per_sample_weights=None, mode="mean", **kw):
    """torch's embedding_bag, but with per_sample_weights (which its kernel cannot differentiate twice: "derivative
    for aten::_embedding_bag_per_sample_weights_backward is not implemented") as a weighted bag-membership matrix
    times the looked-up rows."""
    from forgegrad.ops import _embedding_bag_samples as EB
    if per_sample_weights is None:
        return EB.torch_reference(torch, weight, input, offsets, None, mode, **kw)
    flat = input.reshape(-1).long()
    if offsets is None:
        bag = torch.arange(input.shape[0]).repeat_interleave(input.shape[1])
        bags = input.shape[0]
    else:
        bags = offsets.numel() - int(kw.get("include_last_offset", False))
        bag = torch.searchsorted(offsets.long(), torch.arange(flat.numel()), right=True) - 1
    member = (bag[None, :] == torch.arange(bags)[:, None]).to(weight.dtype) * per_sample_weights.reshape(-1)[None]
    if kw.get("padding_idx") is not None:
        member = member * (flat != kw["padding_idx"] % weight.shape[0]).to(weight.dtype)[None, :]
    return member @ weight[flat]


TORCH_FORMULA = {"multi_margin_loss": _torch_multi_margin, "multilabel_margin_loss": _torch_multilabel_margin,
                 "embedding_bag": _torch_embedding_bag}


def _args(lib, op, sample, pos):
    out = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):  # float64, but where the op takes float32 only (as the registry's check)
            a = a.astype(np.float64) if a.dtype == np.float32 and i not in op.float32_args else a
            out.append(fg.tensor(a.copy(), requires_grad=i in pos) if lib == "fg" else
                       torch.from_numpy(a.copy()).requires_grad_(i in pos))
        else:
            out.append(a)
    return out


def _second_order(op, sample, lib):
    if lib == "torch":  # torch's fused CPU attention has no double backward: its math backend has
        with sdpa_kernel([SDPBackend.MATH]):
            return _second_order_in(op, sample, lib)
    return _second_order_in(op, sample, lib)


def _second_order_in(op, sample, lib):
    pos = [p for p in sample.grad_positions() if sample.args[p].dtype == np.float32 and p not in op.float32_args]
    args = _args(lib, op, sample, pos)
    outs = op(*args, **sample.kwargs) if lib == "fg" else TORCH_FORMULA.get(op.name, op.torch)(
        torch, *args, **sample.kwargs)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    rng = np.random.default_rng(7)
    wrap = fg.tensor if lib == "fg" else torch.from_numpy
    grad = autograd.grad if lib == "fg" else torch.autograd.grad
    total = sum((o * wrap(rng.uniform(-1, 1, size=tuple(o.shape)))).sum() for o in outs
                if o.dtype in (fg.float64, torch.float64) and o.requires_grad)
    if not isinstance(total, (fg.Tensor, torch.Tensor)):  # no float output (a cast to int64 or bool)
        return []
    xs = [args[p] for p in pos]
    gs = grad(total, xs, create_graph=True, allow_unused=True)
    proj = [(g * wrap(rng.uniform(-1, 1, size=tuple(g.shape)))).sum() for g in gs if g is not None and g.requires_grad]
    ggs = grad(sum(proj), xs, allow_unused=True) if proj else [None] * len(xs)

    def arr(t, like):
        if t is None:
            return np.zeros(like.shape)
        return t.detach().numpy() if lib == "fg" else t.detach().numpy(force=True)

    return [arr(g, x) for g, x in zip(gs, xs)] + [arr(g, x) for g, x in zip(ggs, xs)]


# torch's math ops (ops/pointwise_more.py, predicates.py): bool outputs; floor_divide: torch defines no derivative;
# torch's direct cdist has no double backward (its GEMM form has): tests/test_torch_math_ops.py
# checks cdist's rule against the double backward of torch's norm of the differences
UNCOVERED |= {"isnan", "isinf", "isfinite", "isposinf", "isneginf", "signbit", "isclose", "floor_divide"}
NO_TORCH_DOUBLE_BACKWARD |= {"cdist"}
# torch.special's Bessel functions and orthogonal polynomials (ops/special_more.py): torch defines no derivative
UNCOVERED |= {op.name for op in registry.all_ops() if op.name.startswith("special_") and "backward" in op.gaps}
# torch's logic ops (ops/logic.py, logic_more.py, histogram.py): bool / integer outputs; heaviside, histc and
# histogram have float outputs but no derivative in torch (their backward raises)
UNCOVERED |= {"all", "any", "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or",
              "bitwise_xor", "bitwise_not", "bitwise_left_shift", "bitwise_right_shift", "gcd", "lcm", "isin",
              "heaviside", "histc", "histogram"}


def _cases():
    for name in covered():
        op = registry.get(name)
        if name in RANDOM | NO_TORCH_DOUBLE_BACKWARD or op.samples is None or op.torch is None:
            continue
        for k, s in enumerate(op.samples()):
            if s.grad_positions() and all(not isinstance(a, np.ndarray) or a.size <= MAX_ELEMENTS for a in s.args):
                yield pytest.param(name, k, id=f"{name}-{s.name or k}")


@pytest.mark.parametrize("name,k", list(_cases()))
def test_registry_sample_grad_of_grad_matches_torch_float64(name, k):
    op = registry.get(name)
    sample = op.samples()[k]
    got, want = _second_order(op, sample, "fg"), _second_order(op, sample, "torch")
    for i, (a, b) in enumerate(zip(got, want)):
        what = f"{name} sample {sample.name or k}: " + ("gradient" if i < len(got) // 2 else "gradient of gradient")
        assert a.shape == b.shape, what
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("name", sorted(TORCH_FORMULA))
def test_torch_formula_equals_the_kernel(name):
    op = registry.get(name)
    for s in op.samples():
        for ref in (op.torch, TORCH_FORMULA[name]):
            args = [torch.from_numpy(a.astype(np.float64)).requires_grad_(i == 0) if isinstance(a, np.ndarray) and
                    a.dtype == np.float32 else torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                    for i, a in enumerate(s.args)]
            out = ref(torch, *args, **s.kwargs)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
            got = (out.detach().numpy(), args[0].grad.numpy())
            if ref is op.torch:
                want = got
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"{name} sample {s.name}")


def test_every_registered_op_has_a_rule_or_is_named_uncovered():
    names = {op.name for op in registry.all_ops()}
    assert set(covered()) | UNCOVERED == names, sorted(names - set(covered()) - UNCOVERED)
    assert not set(covered()) & UNCOVERED
