"""The defects the fuzz runs of 2026-12-07 (seed 101) and the probes beside them found: argument types and dtypes
at the op records' boundary (list operands, numbers for tensors, float64 mixes torch refuses, integer hardtanh),
each with its reproducer. The fuzz case that found each is in its docstring, runnable with tests/fuzz/fuzz_worker.py;
the older ones are in test_fuzz_regressions.py."""

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return fg.tensor(np.asarray(a, np.float32))


@pytest.mark.parametrize("x_dtype, bias_dtype", [(np.float32, np.float64), (np.float64, np.float32)])
@pytest.mark.parametrize("grad", [False, True])
def test_linear_refuses_a_bias_of_another_dtype(x_dtype, bias_dtype, grad):
    """Found probing the eager Sequential path against its modules one by one: F.linear on float32 input and
    weight with a float64 bias returned a float64 result (the float64 Function checked the input against the
    weight only; numpy promoted the sum), where torch raises, as it does for a float16 bias."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(d) for s, d in (((3, 4), x_dtype), ((5, 4), x_dtype), ((5,), bias_dtype)))
    with pytest.raises(RuntimeError):
        F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    args = [fg.tensor(a, requires_grad=grad) for a in (x, w, b)]
    with pytest.raises(RuntimeError, match="linear: expected both operands to have the same dtype"):
        fg.nn.functional.linear(*args)
    with fg.no_grad(), pytest.raises(RuntimeError, match="linear: expected both operands to have the same dtype"):
        fg.nn.functional.linear(*args)


def test_check_softcap_takes_none():
    """kernel:attention.check_softcap, [["scalar", 0, 2]] (seed 101): reported as 'accepted' since its softcap
    had no annotation saying None (no cap) is valid; annotated Optional now, which the fuzz harness reads."""
    from forgegrad.kernels.attention import check_softcap
    assert check_softcap(None) is None and check_softcap(5) == 5.0
    for bad, error in (("5", TypeError), (0.0, ValueError), (float("inf"), ValueError), (-1, ValueError)):
        with pytest.raises(error, match="softcap"):
            check_softcap(bad)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_ops_refuse_a_list_operand(name):
    """op:add, [["huge", 62, 20], ["scalar", 40, 29], ["noncontig", 42, 34]] raw (seed 101): add(x, [1.5]) was taken
    as an array (torch: TypeError). The call checked only the arguments every sample gives an array; add's
    samples give b a number too, so b went unchecked."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with pytest.raises(TypeError):
        getattr(torch, name)(torch.from_numpy(x), [1.5])
    for a in (fg.tensor(x), x):
        with pytest.raises(TypeError, match=f"{name}: argument 'b' must be a forgegrad.Tensor"):
            fg.ops.get(name)(a, [1.5])
        with pytest.raises(TypeError, match="must be a forgegrad.Tensor"):
            fg.ops.get(name)(a, (1.5, 2.0, 3.0))
    np.testing.assert_array_equal(fg.ops.get(name)(fg.tensor(x), 1.5).numpy(),
                                  getattr(torch, name)(torch.from_numpy(x), 1.5).numpy())


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)])
def test_smooth_l1_loss_promotes_a_float64_operand(dtypes):
    """Found by a probe casting one float32 argument of every op sample to float64: smooth_l1_loss of a float32
    input and a float64 target computed in float32 (the target's digits cast away), torch promotes to float64.
    (huber_loss keeps the input's dtype, as torch's does.)"""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal(6).astype(dtypes[0]), (rng.standard_normal(6) + 1e-9).astype(dtypes[1])
    fx, ft = fg.tensor(x, requires_grad=True), fg.tensor(t, requires_grad=True)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    for reduction in ("none", "sum"):
        got = fg.nn.functional.smooth_l1_loss(fx, ft, reduction=reduction, beta=0.5)
        want = F.smooth_l1_loss(tx, tt, reduction=reduction, beta=0.5)
        assert got.dtype == fg.float64 and want.dtype == torch.float64
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-12)
    got.backward()
    want.backward()
    for g, w in ((fx.grad, tx.grad), (ft.grad, tt.grad)):
        assert str(g.dtype).rsplit(".")[-1] == str(w.dtype).rsplit(".")[-1]
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6)
    h = fg.nn.functional.huber_loss(fg.tensor(x), fg.tensor(t), reduction="none")
    assert str(h.dtype).rsplit(".")[-1] == str(F.huber_loss(torch.tensor(x), torch.tensor(t), reduction="none").dtype
                                              ).rsplit(".")[-1]


def test_cdist_and_multi_margin_weight_refuse_a_float64_float32_mix():
    """Found by the same float64 probe: cdist of float32 and float64 rows and multi_margin_loss with a float64 weight
    on float32 input had promoted to float64; torch raises for both (docs: its distances, matrix products and
    class-loss weights do not promote)."""
    rng = np.random.default_rng(0)
    a32, b64 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((2, 4))
    with pytest.raises(RuntimeError):
        torch.cdist(torch.from_numpy(a32), torch.from_numpy(b64))
    for x1, x2 in ((a32, b64), (b64, a32)):
        with pytest.raises(RuntimeError, match="cdist.*same dtype"):
            fg.cdist(fg.tensor(x1), fg.tensor(x2))
    np.testing.assert_allclose(fg.cdist(fg.tensor(b64[:, :]), fg.tensor(b64)).numpy(),
                               torch.cdist(torch.from_numpy(b64), torch.from_numpy(b64)).numpy(), atol=1e-12)
    target, w64 = np.array([0, 3, 1]), rng.uniform(0.5, 2, 4)
    with pytest.raises(RuntimeError):
        F.multi_margin_loss(torch.from_numpy(a32), torch.from_numpy(target), weight=torch.from_numpy(w64))
    with pytest.raises(RuntimeError, match="multi_margin_loss: expected input and weight to have the same dtype"):
        fg.nn.functional.multi_margin_loss(fg.tensor(a32), fg.tensor(target), weight=fg.tensor(w64))
    w32 = fg.tensor(w64.astype(np.float32))
    got = fg.nn.functional.multi_margin_loss(fg.tensor(a32), fg.tensor(target), weight=w32)
    want = F.multi_margin_loss(torch.from_numpy(a32), torch.from_numpy(target),
                               weight=torch.from_numpy(w64.astype(np.float32)))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_group_norm_with_an_infinite_weight_is_x_hat_times_weight():
    """op:group_norm, [["ninf", 4, 4]] raw, base 4 (seed 101): forgegrad gave -inf where torch gives NaN. torch folds
    the affine (x * rstd * w + (b - mean * rstd * w): -inf + inf for a group of positive mean), forgegrad computes
    x_hat * w + b, whose value at a -inf weight is -inf times x_hat's sign; the fuzz child now takes that formula, in
    float64 from torch's x_hat, as the reference where a norm's weight or bias is infinite."""
    x = np.array([[1.8, 0.05, 0.4, -0.5], [1.2, -1.3, 1.6, -0.1]], np.float32).reshape(2, 4, 1, 1)
    w = np.array([0.2, -0.6, -np.inf, 0.5], np.float32)
    b = np.array([0.5, 1.6, 1.1, -1.1], np.float32)
    got = fg.nn.functional.group_norm(fg.tensor(x), 2, fg.tensor(w), fg.tensor(b)).numpy()
    xhat = F.group_norm(torch.from_numpy(x).double(), 2).numpy()
    want = xhat * w.astype(np.float64).reshape(1, 4, 1, 1) + b.astype(np.float64).reshape(1, 4, 1, 1)
    assert np.isneginf(want[:, 2]).all()  # x_hat > 0 there: torch's float32 gives NaN for the second row
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.5, 0.5), (-1.5, 2.5), (0.0, 6.0), (-500.0, 500.0), (-1e30, 1e30)])
def test_hardtanh_of_integers_keeps_their_dtype(dtype, bounds):
    """op:hardtanh, [["alias", 29, 22], ["dtype", 9, 11], ["overlap", 23, 30]] (seed 101): an int64 input with
    min_val = max_val = 0.5 gave float32 0.5 where torch gives int64 0 (integer hardtanh / relu6 casts the bounds
    toward zero and keeps the dtype; bounds an integer of that dtype cannot hold, or negative ones for unsigned
    input, raise there)."""
    x = np.array([-3, 0, 1, 7, 100]).astype(dtype)
    try:
        want = F.hardtanh(torch.from_numpy(x), *bounds).numpy()
    except RuntimeError:
        with pytest.raises(RuntimeError, match="hardtanh"):
            fg.ops.get("hardtanh")(x, *bounds)
        return
    got = fg.ops.get("hardtanh")(x, *bounds).numpy()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    if dtype is np.int64:
        np.testing.assert_array_equal(fg.nn.functional.relu6(fg.tensor(x)).numpy(),
                                      F.relu6(torch.from_numpy(x)).numpy())


def test_histc_min_max_and_histogram_range_are_numbers():
    """op:histc, [["scalar", 14, 59], ["scalar", 62, 40]] raw (seed 101): min='0.1' was read by float() (torch:
    TypeError); histogram's range=('-1', '1') likewise."""
    x = np.random.default_rng(0).standard_normal(20).astype(np.float32)
    with pytest.raises(TypeError):
        torch.histc(torch.from_numpy(x), bins=4, min="0.1")
    for kw in ({"min": "0.1"}, {"max": "2"}, {"min": None}):
        with pytest.raises(TypeError, match="histc\\(\\): m(in|ax) must be a number"):
            fg.ops.get("histc")(x, bins=4, **kw)
    with pytest.raises(TypeError, match="range must be a pair of numbers"):
        fg.histogram(fg.tensor(x), bins=4, range=("-1", "1"))
    np.testing.assert_array_equal(fg.histc(fg.tensor(x), bins=4, min=-1, max=np.float32(1)).numpy(),
                                  torch.histc(torch.from_numpy(x), bins=4, min=-1, max=1).numpy())
    np.testing.assert_array_equal(fg.histogram(fg.tensor(x), bins=4, range=(np.float64(-1), 1))[0].numpy(),
                                  torch.histogram(torch.from_numpy(x), bins=4, range=(-1, 1))[0].numpy())


def test_linear_cross_entropy_refuses_numbers_for_tensors():
    """op:linear_cross_entropy, [["scalar", 42, 58], ["broadcast0", 19, 43]] (seed 101): a float linear_bias raised
    AttributeError ('float' object has no attribute 'dtype'); the op's call lets numbers through to tensor
    arguments, its check now names each one."""
    op = fg.ops.get("linear_cross_entropy")
    x, w = _t(np.ones((3, 4))), _t(np.ones((5, 4)))
    t = fg.tensor(np.array([0, 1, 2]))
    for args, name in (((x, w, t, 1.5), "linear_bias"), ((2.0, w, t), "input"), ((x, 3.0, t), "linear_weight"),
                       ((x, w, 1), "target"), ((x, w, t, None, 2.0), "weight")):
        with pytest.raises(TypeError, match=f"linear_cross_entropy: {name} must be a"):
            op(*args)


def test_numbers_alone_for_an_op_is_a_clear_error():
    """Found probing every op record with a Python number in place of each tensor argument (the call lets numbers
    through, for add's b): 148 ops raised AttributeError ('float' object has no attribute 'dtype': sin(1.5),
    softmax(2.0, 0), sum(2) ...). An op call given numbers and no tensor at all is now a TypeError naming the first;
    numbers beside a tensor keep working (add's b, x // 2 and 2 ** x through the Tensor operators). A number weight of
    nll_loss / cross_entropy is a TypeError of theirs. (A number beside a tensor where the op takes none, matmul(2.0,
    x), reached the kernels' AttributeError in 48 ops: test_a_number_where_an_op_takes_none_is_a_type_error.)"""
    ran = 0
    for op in fg.ops.all_ops():
        if not op.samples:
            continue
        s = op.samples()[0]
        if not any(isinstance(a, np.ndarray) for a in s.args):
            continue
        args = [1.5 if isinstance(a, np.ndarray) else a for a in s.args]
        with pytest.raises(TypeError, match=f"{op.name}: argument '.*' must be a forgegrad.Tensor, got float"):
            op(*args, **s.kwargs)
        ran += 1
    assert ran > 250
    x = fg.tensor(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(fg.ops.get("add")(x, 1.5).numpy(), np.full((2, 3), 2.5, np.float32))
    np.testing.assert_array_equal(fg.ops.get("pow")(x * 2, 3).numpy(), np.full((2, 3), 8.0, np.float32))
    np.testing.assert_array_equal((2 ** (x * 3)).numpy(), np.full((2, 3), 8.0, np.float32))
    logp, target = fg.tensor(np.log(np.full((2, 3), 1 / 3, np.float32))), fg.tensor(np.array([0, 2]))
    for name in ("nll_loss", "cross_entropy"):
        with pytest.raises(TypeError, match=f"{name}: weight must be a tensor"):
            fg.ops.get(name)(logp, target, 1.5)


@pytest.mark.parametrize("bounds", [(float("nan"), 6.0), (0.0, float("nan"))])
def test_hardtanh_refuses_nan_bounds(bounds):
    """op:hardtanh, [["alias", 53, 33], ["scalar", 23, 41], ["scalar", 45, 5]] (seed 101's rerun): min_val=NaN left x
    as it was (the kernel's max(x, NaN) keeps x) where torch's clamp gives NaN everywhere; a NaN bound is a
    ValueError now."""
    x = _t(np.linspace(-8, 8, 12))
    with pytest.raises(ValueError, match="hardtanh: min_val and max_val must be numbers, not NaN"):
        fg.nn.functional.hardtanh(x, *bounds)
    assert np.isnan(F.hardtanh(torch.from_numpy(x.numpy()), *bounds).numpy()).all()


def test_adaptive_avg_pool3d_sums_long_windows_in_float64():
    """op:adaptive_avg_pool3d, [["huge", 12, 28]] raw, base 10 (seed 202): the global pool of a broadcast input of
    8.4M equal values per channel gave 0.5518 for 0.5478 (numpy's mean along a strided axis adds float32 values one
    after another); windows of float32 input are summed in float64 now."""
    v = np.float32(0.54784673)
    x = np.broadcast_to(v, (1, 2, 3, 699051, 4))  # zero strides, as the fuzz's "huge" view
    got = fg.ops.get("adaptive_avg_pool3d")(x, output_size=1).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.full((1, 2, 1, 1, 1), v), rtol=1e-6)
    small = np.random.default_rng(0).standard_normal((2, 3, 5, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(fg.nn.functional.adaptive_avg_pool3d(fg.tensor(small), (2, 3, 4)).numpy(),
                               F.adaptive_avg_pool3d(torch.from_numpy(small), (2, 3, 4)).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["amax", "amin"])
def test_amax_amin_keepdim_must_be_a_bool(name):
    """op:amax / op:amin, [["grow_dim", 56, 32], ["scalar", 27, 38], ["alias", 1, 57]] (seed 202): keepdim=None
    was read as False (torch: TypeError), as sum / mean / max(dim) already refuse."""
    x = _t(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError):
        getattr(torch, name)(torch.from_numpy(x.numpy()), 1, keepdim=None)
    for bad in (None, "yes"):
        with pytest.raises(TypeError, match="keepdim must be a bool"):
            fg.ops.get(name)(x, 1, bad)
    assert getattr(fg, name)(x, 1, keepdim=True).shape == (2, 1)


def test_a_number_where_an_op_takes_none_is_a_type_error():
    """The probe of test_numbers_alone_for_an_op_is_a_clear_error with the other tensors kept: a number beside a
    tensor where the op takes none (matmul(x, 2.0), cat((x, 1.5)), mse_loss(x, 1), scatter's index...) raised
    AttributeError ('float' object has no attribute 'ndim') in 48 op records (95 arguments); torch raises TypeError
    ("matmul(): argument 'other' (position 2) must be Tensor, not float"). Now every such argument gives a TypeError
    naming it, and the pointwise ops still broadcast a number (where(c, x, 0.0), xlogy(x, 2.0)), as torch does."""
    refused = set()
    for op in fg.ops.all_ops():
        if not op.samples:
            continue
        for s in op.samples():
            arrays = [i for i, a in enumerate(s.args) if isinstance(a, np.ndarray)]
            for i in arrays if len(arrays) > 1 else ():
                args = [fg.tensor(a) if isinstance(a, np.ndarray) else a for a in s.args]
                args[i] = 1.5
                try:
                    op(*args, **s.kwargs)
                except AttributeError as e:  # pragma: no cover - the failure this test is for
                    pytest.fail(f"{op.name}, argument {i}: AttributeError {e}")
                except TypeError as e:
                    if "this op takes no number there" in str(e):
                        assert "must be a forgegrad.Tensor, got float" in str(e)
                        refused.add(op.name)
                except (ValueError, RuntimeError, IndexError):
                    pass
    assert len(refused) >= 48, sorted(refused)
    x = np.ones((3, 4), np.float32)
    for name, args, arg in (("matmul", (x, 2.0), "b"), ("cat", (x, 1.5), "arrays\\[1\\]"),
                            ("mse_loss", (x, 1), "target"), ("cdist", (2.0, x), "x1")):
        with pytest.raises(TypeError, match=f"{name}: argument '{arg}' must be a forgegrad.Tensor"):
            fg.ops.get(name)(*[fg.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
    with pytest.raises(TypeError, match="argument 'other'"):
        torch.matmul(torch.from_numpy(x), 2.0)
    c = np.array([[True, False, True, False]] * 3)
    np.testing.assert_array_equal(fg.ops.get("where")(fg.tensor(c), fg.tensor(x), 0.0).numpy(),
                                  torch.where(torch.from_numpy(c), torch.from_numpy(x), 0.0).numpy())
