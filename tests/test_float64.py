"""float64 as a real dtype: torch's promotion rules, dtypes kept through conversions and modules.

Every op is checked in float64 against torch's float64 (forward and gradients, to 1e-10) by the
generated registry checks (tests/test_op_registry.py, check "float64")."""
import numpy as np
import pytest
import torch

import forgegrad as fg


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
    # b's gradient is a float32 row sum (of sigmoids) widened: torch and forgegrad add in different orders,
    # so it may differ by an ulp of float32 (1.2e-7 relative), not of float64
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=2.5e-7)


def test_float64_tensors_and_conversions_keep_their_dtype():
    x = fg.from_numpy(np.arange(4.0))
    assert x.dtype == fg.float64 and (x * 2).dtype == fg.float64 and x.exp().sum().dtype == fg.float64
    assert fg.randn(3).double().dtype == fg.float64 and x.float().dtype == fg.float32
    assert fg.tensor([1.0], dtype=fg.double).dtype == fg.float64 and fg.DoubleTensor([1.0]).dtype == fg.float64
    assert x.detach().dtype == fg.float64 and x.data.dtype == fg.float64 and x.clone().dtype == fg.float64
    y = x.clone().requires_grad_()
    (y * y).sum().backward()
    assert y.grad.dtype == fg.float64


def test_ops_torch_does_not_promote_refuse_mixed_float_dtypes():
    x64, w32 = fg.randn(1, 2, 5, 5).double(), fg.randn(3, 2, 3, 3)
    for ours, theirs in [(lambda: fg.nn.functional.conv2d(x64, w32), lambda: torch.nn.functional.conv2d(
            torch.tensor(x64.numpy()), torch.tensor(w32.numpy()))),
                         (lambda: fg.nn.functional.layer_norm(x64, (5,), fg.ones(5)),
                          lambda: torch.nn.functional.layer_norm(torch.tensor(x64.numpy()), (5,), torch.ones(5)))]:
        with pytest.raises(RuntimeError):
            theirs()
        with pytest.raises(RuntimeError, match="same dtype"):
            ours()
    # elementwise losses promote, as torch's
    got = fg.nn.functional.l1_loss(fg.ones(3), fg.zeros(3, dtype=fg.float64))
    assert got.dtype == fg.float64


def test_float64_meta_shapes_keep_the_dtype():
    x = fg.randn(2, 3, 8, 8).double().to("meta")
    w = fg.randn(4, 3, 3, 3).double().to("meta")
    assert fg.nn.functional.conv2d(x, w).dtype == fg.float64
    assert fg.nn.functional.max_pool2d(x, 2).dtype == fg.float64


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


def test_parameter_keeps_a_tensors_float_dtype():
    from forgegrad import nn
    assert nn.Parameter(fg.zeros(2, dtype=fg.float64)).dtype == fg.float64  # as torch.nn.Parameter
    assert nn.Parameter(np.zeros(2)).dtype == fg.float32  # data other than a tensor: stored as float32
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Parameter(fg.tensor([1, 2]))


def test_like_factories_keep_a_float64_dtype_as_torch():
    x, t = fg.randn(3, 4).double(), torch.randn(3, 4).double()
    for name in ("zeros_like", "ones_like", "empty_like", "randn_like", "rand_like"):
        ours, theirs = getattr(fg, name)(x), getattr(torch, name)(t)
        assert str(ours.dtype).split(".")[1] == str(theirs.dtype).split(".")[1], name
    assert fg.full_like(x, 2.0).dtype == fg.float64 and fg.zeros_like(x, dtype=fg.float32).dtype == fg.float32
    assert fg.zeros_like(fg.tensor([1, 2])).dtype == fg.int64


def test_float64_tensors_keep_their_dtype_through_the_data_pipeline():
    from forgegrad.data import DataLoader, TensorDataset
    from forgegrad.data.transforms import RandomHorizontalFlip
    x, y = fg.randn(6, 1, 4, 4).double(), fg.tensor(np.arange(6))
    ds = TensorDataset(x, y)
    assert ds[0][0].dtype == fg.float64 and ds.tensors[0].dtype == fg.float64
    for loader in (DataLoader(ds, batch_size=4), DataLoader(list(zip(x, y)), batch_size=4)):
        xb, yb = next(iter(loader))
        assert xb.dtype == fg.float64 and yb.dtype == fg.int64
    assert RandomHorizontalFlip(generator=0)(x).dtype == fg.float64
    # numpy float data is stored as float32, as documented (forgegrad.data)
    assert TensorDataset(np.zeros((2, 3)))[0][0].dtype == fg.float32
