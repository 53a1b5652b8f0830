"""float64 as a real dtype: every op that runs in float64 matches torch in float64 (forward and
gradients, far tighter than float32 allows), torch's promotion rules, and float32-only ops refuse."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad.ops._float64 import float64_ops
from forgegrad.ops.registry import _OPS


def _as64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
@pytest.mark.parametrize("name", float64_ops())
def test_op_in_float64_matches_torch(name):
    op = _OPS[name]
    for s in op.samples():
        args = [_as64(a) for a in s.args]
        ours = [fg.tensor(a, dtype=a.dtype, requires_grad=a.dtype == np.float64) if isinstance(a, np.ndarray) else a
                for a in args]
        theirs = [torch.tensor(a, requires_grad=a.dtype == np.float64) if isinstance(a, np.ndarray) else a
                  for a in args]
        out, ref = op(*ours, **s.kwargs), op.torch(torch, *theirs, **s.kwargs)
        outs, refs = (out if isinstance(out, tuple) else (out,)), (ref if isinstance(ref, tuple) else (ref,))
        for o, r in zip(outs, refs):
            assert o.numpy().dtype == r.detach().numpy().dtype, s.name
            np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=s.name)
        grads = [(o, r) for o, r in zip(outs, refs) if o.requires_grad]
        if not grads:
            continue
        sum((o * o).sum() for o, _ in grads).backward()
        sum((r * r).sum() for _, r in grads).backward()
        for a, b in zip(ours, theirs):
            if isinstance(a, fg.Tensor) and a.requires_grad:
                assert a.grad.dtype == fg.float64
                np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=s.name)


def test_promotion_rules_are_torchs():
    f32, f64 = fg.ones(2), fg.ones(2, dtype=fg.float64)
    i64 = fg.tensor([1, 2])
    t32, t64, ti = torch.ones(2), torch.ones(2, dtype=torch.float64), torch.tensor([1, 2])
    cases = [(f32 + f64, t32 + t64), (f64 * f32, t64 * t32), (i64 + f32, ti + t32), (i64 * 0.5, ti * 0.5),
             (f32 * 2.5, t32 * 2.5), (f64 * 2.5, t64 * 2.5), (f64 + i64, t64 + ti), (i64 / 2, ti / 2),
             (f64 @ f64, t64 @ t64), (f32.sum(), t32.sum()), (f64.mean(), t64.mean()),
             (fg.where(f64 > 0, f64, 0.0), torch.where(t64 > 0, t64, 0.0))]
    for got, want in cases:
        assert str(got.dtype).split(".")[1] == str(want.dtype).split(".")[1], (got, want)
    with pytest.raises(RuntimeError, match="same dtype"):  # torch's matmul does not promote either
        f64 @ fg.ones(2, 2)


def test_mixed_precision_gradients_have_their_tensors_dtype():
    a, b = fg.randn(3, 2, requires_grad=True), fg.randn(3, 4, dtype=fg.float64, requires_grad=True)
    (a.sigmoid().sum(1, keepdim=True) * b).sum().backward()
    assert a.grad.dtype == fg.float32 and b.grad.dtype == fg.float64
    ta, tb = torch.tensor(a.numpy(), requires_grad=True), torch.tensor(b.numpy(), requires_grad=True)
    (ta.sigmoid().sum(1, keepdim=True) * tb).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-7)


def test_float64_tensors_and_conversions_keep_their_dtype():
    x = fg.from_numpy(np.arange(4.0))
    assert x.dtype == fg.float64 and (x * 2).dtype == fg.float64 and x.exp().sum().dtype == fg.float64
    assert fg.randn(3).double().dtype == fg.float64 and x.float().dtype == fg.float32
    assert fg.tensor([1.0], dtype=fg.double).dtype == fg.float64 and fg.DoubleTensor([1.0]).dtype == fg.float64
    assert x.detach().dtype == fg.float64 and x.data.dtype == fg.float64 and x.clone().dtype == fg.float64
    y = x.clone().requires_grad_()
    (y * y).sum().backward()
    assert y.grad.dtype == fg.float64


def test_float32_only_ops_refuse_float64_clearly():
    x = fg.randn(1, 1, 4, 4).double()
    with pytest.raises(TypeError, match=r"op 'conv2d' has float32 kernels only .*\.float\(\)"):
        fg.nn.functional.conv2d(x, fg.randn(1, 1, 3, 3))
    with pytest.raises(TypeError, match="op 'layer_norm' has float32 kernels only"):
        fg.nn.LayerNorm(4)(x)


def test_tensor_factory_dtypes_follow_torch():
    arr64 = np.zeros(2)
    scalar = np.float64(2.0)
    for ours, theirs in [(fg.tensor(arr64), torch.tensor(arr64)), (fg.tensor([1.5, 2.0]), torch.tensor([1.5, 2.0])),
                         (fg.Tensor(arr64), torch.Tensor(arr64)), (fg.tensor(scalar), torch.tensor(scalar)),
                         (fg.as_tensor(arr64), torch.as_tensor(arr64)), (fg.tensor(3), torch.tensor(3))]:
        assert str(ours.dtype).split(".")[1] == str(theirs.dtype).split(".")[1]


def test_module_double_matches_torch_in_float64():
    from forgegrad import nn
    fg.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid()).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2),
                                 torch.nn.Sigmoid()).double()
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})
    assert all(p.dtype == fg.float64 for p in ours.parameters())
    x = np.random.default_rng(0).random((5, 3))
    with fg.no_grad():  # the fused float32 inference path is not taken for float64
        np.testing.assert_allclose(ours(fg.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    ours(fg.tensor(x)).sum().backward()
    theirs(torch.tensor(x)).sum().backward()
    np.testing.assert_allclose(ours[0].weight.grad.numpy(), theirs[0].weight.grad.numpy(), rtol=1e-10)
    assert ours.float()[0].weight.dtype == fg.float32
    with pytest.raises(TypeError, match="float32"):  # the optimizers' kernels are float32
        fg.optim.SGD(ours.double().parameters(), lr=0.1)


def test_parameter_keeps_a_tensors_float_dtype():
    from forgegrad import nn
    assert nn.Parameter(fg.zeros(2, dtype=fg.float64)).dtype == fg.float64  # as torch.nn.Parameter
    assert nn.Parameter(np.zeros(2)).dtype == fg.float32  # data other than a tensor: stored as float32
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Parameter(fg.tensor([1, 2]))
