"""The defects the fuzz suite found, each with its reproducer (none of them crashed, so they run in
process). The fuzz case that found each is in its docstring, runnable with tests/fuzz/fuzz_worker.py."""
import pickle
import warnings

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return fg.tensor(np.asarray(a, np.float32))


def test_bindings_take_unpickled_float32_arrays():
    """Every c:* case on a recorded call: an unpickled array (as from a DataLoader worker) has its own
    float32 descriptor, and the bindings compared descriptors by identity: 'x must be a float32 array,
    got dtype float32'."""
    x = pickle.loads(pickle.dumps(np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)))
    assert x.dtype is not np.dtype(np.float32)
    out = np.empty_like(x)
    _C.activation.act_forward(_C.activation.RELU, x, out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    w = pickle.loads(pickle.dumps(np.ones((2, 4), np.float32)))
    np.testing.assert_allclose(_C.gemm.linear(x, w), x @ w.T, rtol=1e-6)
    np.testing.assert_allclose(_C.gemm.matmul(x, w, None, False, True), x @ w.T, rtol=1e-6)
    # a byte-swapped float32 is not float32: refused with the dtype named
    with pytest.raises(TypeError, match=">f4"):
        _C.activation.act_forward(_C.activation.RELU, x.astype(">f4"), out)


def test_leaky_relu_without_graph_on_integer_input():
    """op:leaky_relu, [["dtype", 0, 2]]: AttributeError '_NoCtx' object has no attribute 'slope'."""
    x = np.arange(-3, 4)
    with fg.no_grad():
        y = fg.ops.get("leaky_relu")(fg.tensor(x), 0.2)
    np.testing.assert_allclose(y._data, F.leaky_relu(torch.tensor(x, dtype=torch.float32), 0.2).numpy())


def test_kl_div_of_negative_or_nan_target_is_nan():
    """op:kl_div, [["alias", 0, 0]]: a negative (or NaN) target gave 0 where torch gives NaN."""
    inp = np.array([[-1.0, -2.0, -0.5, -1.5]], np.float32)
    target = np.array([[0.5, -0.25, 0.0, np.nan]], np.float32)
    got = fg.ops.get("kl_div")(_t(inp), _t(target), reduction="none")._data
    want = F.kl_div(torch.tensor(inp), torch.tensor(target), reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0, 1]) and np.isnan(got[0, 3]) and got[0, 2] == 0


def test_dropout_checks_its_argument_types():
    """op:dropout, [["scalar", 1, 1]]: training='True' (any truthy object) was taken as True."""
    drop = fg.ops.get("dropout")
    with pytest.raises(TypeError, match="training"):
        drop(_t(np.ones(4)), 0.5, "True")
    with pytest.raises(TypeError, match="p"):
        drop(_t(np.ones(4)), "0.5", False)
    np.testing.assert_array_equal(drop(_t(np.ones(4)), 0.5, np.False_)._data, np.ones(4))


def test_var_of_no_elements_is_nan():
    """op:var, [["zero_dim", 0, 0]]: -0 where torch gives NaN."""
    x = np.zeros((3, 0), np.float32)
    got = fg.ops.get("var")(_t(x), 1)._data
    want = torch.var(torch.tensor(x), 1).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).all() and got.shape == (3,)


@pytest.mark.parametrize("name,args,kwargs", [
    ("max_dim", (True,), {}),              # [["scalar", 0, 2]]: dim=True was axis 1
    ("min_dim", ([1],), {}),               # [["scalar", 0, 61]]: dim=[1] was axis 1
    ("sum", (), {"dim": 1.5}),             # a float was truncated
    ("sum", (), {"dim": "0"}),             # a str was iterated: axis 0
])
def test_a_dim_must_be_an_int(name, args, kwargs):
    with pytest.raises(TypeError, match="dim"):
        fg.ops.get(name)(_t(np.ones((2, 3))), *args, **kwargs)


@pytest.mark.parametrize("name", ["cat", "stack"])
def test_cat_and_stack_dim_must_be_an_int(name):
    """op:cat / op:stack, [["scalar", 0, 61]]: dim=[0] was taken as 0."""
    with pytest.raises(TypeError, match="dim"):
        fg.ops.get(name)(_t(np.ones((2, 3))), _t(np.ones((2, 3))), dim=[0])


# ---- raw bindings writing over their own inputs (silent wrong results) -------------------------------
def _overlapping(shape, shift=1):
    """Two float32 views of one buffer, shape each, the second starting `shift` elements later."""
    n = int(np.prod(shape))
    buf = np.linspace(-1, 1, n + shift, dtype=np.float32)
    return buf[:n].reshape(shape), buf[shift:].reshape(shape)


def test_activation_and_softmax_bindings_refuse_partial_overlap():
    """c:activation.act_forward / c:softmax.softmax_forward, [["overlap", 1, 0]]: out one element
    off x gave wrong values (the Python wrappers checked; the bindings did not)."""
    out, x = _overlapping((3, 7))
    with pytest.raises(ValueError, match="overlap"):
        _C.activation.act_forward(_C.activation.TANH, x, out)
    with pytest.raises(ValueError, match="overlap"):
        _C.softmax.softmax_forward(x, out)
    with pytest.raises(ValueError, match="overlap"):
        _C.activation.column_sums(x, out[0])
    # in place (out is x itself) stays allowed where documented
    y = np.linspace(-1, 1, 21, dtype=np.float32).reshape(3, 7)
    want = np.tanh(y)
    _C.activation.act_forward(_C.activation.TANH, y, y)
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_batch_norm_binding_refuses_an_output_aliasing_an_input():
    """c:batchnorm.batch_norm_forward, [["alias", 2, 1]]: save_mean was running_var, overwritten
    before it was read: NaN and wrong values."""
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    rm, rv = np.zeros(5, np.float32), np.ones(5, np.float32)
    out, si = np.empty_like(x), np.empty(5, np.float32)
    with pytest.raises(ValueError, match="running_var and save_mean overlap"):
        _C.batchnorm.batch_norm_forward(x, None, None, rm, rv, False, 0.1, 1e-3, out, rv, si)


def test_cross_entropy_binding_refuses_prob_out_over_logits():
    """c:loss.cross_entropy_forward, [["alias", 0, 2]]: prob_out was logits: a wrong loss."""
    logits = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 0])
    with pytest.raises(ValueError, match="logits and prob_out overlap"):
        _C.loss.cross_entropy_forward(logits, target, None, -100, 0.0, logits, np.empty(4, np.float32))


def test_pool_geometry_ceil_mode_must_be_a_bool():
    """kernel:geometry.pool2d_geometry, [["scalar", 19, 9]]: ceil_mode='False' was truthy: True."""
    from forgegrad.kernels import geometry
    with pytest.raises(TypeError, match="ceil_mode"):
        geometry.pool2d_geometry((1, 1, 5, 5), 2, 2, 0, 1, "False")
    with pytest.raises(TypeError, match="keras"):
        geometry.conv2d_padding("same", (3, 3), keras="yes")
    assert geometry.pool2d_output_shape((1, 1, 5, 5), 2, 2, 0, 1, np.True_) == (1, 1, 3, 3)


def test_vector_norms_order_must_be_a_number():
    """kernel:optim.vector_norms, [["scalar", 0, 1]]: norm_type='0.1' went through float()."""
    from forgegrad import kernels
    with pytest.raises(TypeError, match="norm_type"):
        kernels.vector_norms([np.ones(3, np.float32)], "2")
    assert kernels.vector_norms([np.ones(4, np.float32)], 2) == [2.0]


def test_pool_backward_input_shape_must_be_ints():
    """kernel:pool.*_backward, [["scalar", 0, 9]]: input_shape (2.5, 3.5, 7.5, 9.5) was truncated."""
    from forgegrad import kernels
    gy = np.ones((2, 3, 3, 4), np.float32)
    with pytest.raises(TypeError, match="input_shape"):
        kernels.avg_pool2d_backward(gy, (2.5, 3.5, 7.5, 9.5), 2)
    with pytest.raises(TypeError, match="input_shape"):
        kernels.adaptive_avg_pool2d_backward(gy, "(2, 3, 7, 9)")
    with pytest.raises(TypeError, match="input_hw"):
        kernels.geometry.adaptive_output_size((3, 4), "(7, 9)")
    assert kernels.avg_pool2d_backward(gy, (2, 3, 7, 9), 2).shape == (2, 3, 7, 9)


def test_more_scalar_arguments_checked():
    """op:argmax [["scalar", 1, 2]]: keepdim='True' by truthiness; op:clamp: max=0.7+1j lost its
    imaginary part; op:embedding: padding_idx=2.0 taken; op:binary_cross_entropy_with_logits:
    weight='x' raised AttributeError."""
    x = _t(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="keepdim"):
        fg.ops.get("argmax")(x, 1, "True")
    with pytest.raises(TypeError, match="max"):
        fg.ops.get("clamp")(x, None, 0.7 + 1j)
    with pytest.raises(TypeError, match="padding_idx"):
        fg.ops.get("embedding")(_t(np.ones((4, 2))), fg.tensor(np.array([0, 1])), 2.0)
    with pytest.raises(TypeError, match="weight"):
        fg.ops.get("binary_cross_entropy_with_logits")(x, x, "x")


def test_clamp_of_integers_by_float_bounds_is_float():
    """op:clamp, [["dtype", 0, 2]]: an int32 input clamped to (-0.5, 0.7) was truncated to ints."""
    x = np.arange(-3, 4)
    got = fg.ops.get("clamp")(fg.tensor(x), -0.5, 0.7)
    want = torch.clamp(torch.tensor(x), -0.5, 0.7)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got._data, want.numpy(), rtol=1e-6)
    assert fg.ops.get("clamp")(fg.tensor(x), -1, 2).dtype == np.int64
    meta = fg.ops.get("clamp")(fg.tensor(x).to("meta"), -0.5, 0.7)
    assert meta.dtype == np.float32


def test_kl_div_log_target_must_be_a_bool():
    """op:kl_div, [["scalar", 0, 2]]: log_target='True' was taken by truthiness."""
    x = _t(np.full((2, 3), -1.0))
    with pytest.raises(TypeError, match="log_target"):
        fg.ops.get("kl_div")(x, x, "mean", "True")


@pytest.mark.parametrize("name", ["max_dim", "min_dim"])
def test_max_min_dim_keepdim_must_be_a_bool(name):
    """op:max_dim / op:min_dim, [["scalar", 1, 2]]: keepdim='True' was taken by truthiness."""
    with pytest.raises(TypeError, match="keepdim"):
        fg.ops.get(name)(_t(np.ones((2, 3))), 1, "True")


def test_attention_mask_geometry_is_checked_without_a_mask():
    """kernel:attention.prepare_mask, base 0, mutations [["scalar", 2, 31]] (long run, seed 7): with no
    mask the function returned None before checking L, so L = '1' passed unnoticed."""
    from forgegrad.kernels import attention as KA
    assert KA.prepare_mask(None, (2, 3), 5, 7) is None
    for args, err in ((((2, 3), "1", 7), TypeError), (((2, 3), 5, 0), ValueError), (((2, 1.5), 5, 7), TypeError)):
        with pytest.raises(err):
            KA.prepare_mask(None, *args)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "cos"])
def test_float_functions_of_bools_are_float32(name):
    """op:cos, base 0, mutations [["dtype", 0, 4]] (long run, seed 7): numpy computes cos(bool) in
    float16, so the result (cast to float32) was off by ~2e-4 against torch's float32."""
    b = np.array([True, False, True])
    got = getattr(fg, name)(fg.tensor(b))
    want = getattr(torch, name)(torch.from_numpy(b)).numpy()
    assert got.dtype == fg.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)  # float32 libm vs torch: the last ulp


def test_clamp_and_compare_refuse_lists_and_clamp_takes_tensor_bounds():
    """op:clamp, base 0, [["scalar", 0, 55]] and op:compare, base 7, [["scalar", 0, 16]] (long run,
    seed 7): a list bound or operand was taken as an array (torch: TypeError). Tensor bounds, which
    torch takes, failed inside clamp."""
    x = fg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    with pytest.raises(TypeError, match="max must be a number or a tensor"):
        fg.ops.get("clamp")(x, max=[0.7])
    with pytest.raises(TypeError, match="other operand|argument .b. must be a forgegrad.Tensor"):
        fg.ops.get("compare")(x, [0.25], op="le")
    xt = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    y = x.clamp(min=1.5, max=fg.tensor(np.float32(3)))
    yt = xt.clamp(min=1.5, max=torch.tensor(3.0))
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())


def test_optimizer_update_bindings_refuse_overlapping_state():
    """c:hd_math.adam_update, base 0, [["overlap", 0, 0]] (long run, seed 7): param and exp_avg_sq
    partly sharing memory gave silently wrong updates."""
    kw = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    buf, g = np.zeros(40, np.float32), np.ones(37, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        _C.hd_math.adam_update(buf[0:37], g, np.zeros(37, np.float32), buf[2:39], None, **kw)
    with pytest.raises(ValueError, match="overlap"):
        _C.hd_math.sgd_update(buf[0:37], g, buf[1:38], True, lr=0.1, momentum=0.9)
    p = np.zeros(37, np.float32)
    _C.hd_math.adam_update(p, g, np.zeros(37, np.float32), np.zeros(37, np.float32), None, **kw)
    np.testing.assert_allclose(p, -1e-3, rtol=1e-5)


def test_batch_norm_of_a_long_constant_channel():
    """op:batch_norm, base 2, [["huge", 0, 2]] (long run, seed 7): a broadcast input of 2**26 equal
    values per channel; each (n, c) row was summed in float, so the mean drifted by far more than the
    (zero) spread and the output was off by ~1.7 instead of equal to the bias."""
    import forgegrad.nn.functional as F
    w, b = np.array([1.5, -2, 0.3], np.float32), np.array([0.15, 0.2, -0.1], np.float32)
    x = np.broadcast_to(np.float32(0.7173), (2, 3, 2 ** 23))
    y = F.batch_norm(fg.tensor(x), None, None, fg.tensor(w), fg.tensor(b), training=True).numpy()
    np.testing.assert_allclose(y, np.broadcast_to(b[None, :, None], y.shape), atol=2e-5)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 2 ** 20)) + 3).astype(np.float32)
    y = F.batch_norm(fg.tensor(x), None, None, fg.tensor(w), fg.tensor(b), training=True).numpy()
    t = torch.nn.functional.batch_norm(torch.from_numpy(x).double(), None, None, torch.from_numpy(w).double(),
                                       torch.from_numpy(b).double(), training=True).numpy()
    np.testing.assert_allclose(y, t, atol=5e-5)


def test_fake_quantize_takes_nan_to_torchs_bound():
    """op:fake_quantize_per_tensor_affine / per_channel, base 0, [["nan", 0, 0]] (long run, seed 7): torch turns
    NaN into a quantization bound (a NaN cast to an integer lands on quant_min); forgegrad gives torch's values."""
    x = np.array([[0.1, np.nan, -0.3], [0.7, 0.2, np.nan]], np.float32)
    got = fg.ops.get("fake_quantize_per_tensor_affine")(fg.tensor(x), 0.05, 3, 0, 255).numpy()
    want = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), 0.05, 3, 0, 255).numpy()
    np.testing.assert_array_equal(got, want)
    s, z = np.array([0.05, 0.1], np.float32), np.array([3, 0], np.int32)
    got = fg.ops.get("fake_quantize_per_channel_affine")(fg.tensor(x), fg.tensor(s), fg.tensor(z), 0, 0, 255).numpy()
    want = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(z),
                                                  0, 0, 255).numpy()
    np.testing.assert_array_equal(got, want)


def test_fake_quantize_of_infinite_input_as_torchs_kernels():
    """op:fake_quantize_per_channel_affine, base 0, [["inf", 0, 0]] (long run, seed 7): torch's per-tensor kernel
    saturates +-inf (and quotients that overflow) to the bounds; its per-channel kernel casts the infinite quotient
    to an integer and lands on quant_min. forgegrad follows each kernel, with no overflow warning."""
    x = np.array([[np.inf, -np.inf, 1.0, 3e38], [0.5, np.inf, -3e38, -np.inf]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the saturating product
        got = fg.ops.get("fake_quantize_per_tensor_affine")(fg.tensor(x), 0.05, 3, 0, 255).numpy()
    want = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), 0.05, 3, 0, 255).numpy()
    np.testing.assert_array_equal(got, want)
    s, z = np.array([0.05, 0.1], np.float32), np.array([3, 0], np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fg.ops.get("fake_quantize_per_channel_affine")(fg.tensor(x), fg.tensor(s), fg.tensor(z), 0, 0,
                                                             255).numpy()
    want = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(z),
                                                  0, 0, 255).numpy()
    np.testing.assert_array_equal(got, want)


def test_nll_loss_ignored_position_with_infinite_log_probability():
    """op:nll_loss, base 12, [["inf", 0, 0]] (long run, seed 7): an ignored position's log-probability
    was multiplied by its zero weight, and inf * 0 made the loss NaN (torch: -inf)."""
    lp = np.log(np.full((4, 3), 1 / 3, np.float32))
    lp[1, 0], lp[2, 1] = np.inf, -np.inf
    t = np.array([2, -100, 1, 0])
    for reduction in ("mean", "sum", "none"):
        got = fg.nn.functional.nll_loss(fg.tensor(lp), fg.tensor(t), reduction=reduction).numpy()
        want = F.nll_loss(torch.from_numpy(lp), torch.from_numpy(t), reduction=reduction).numpy()
        np.testing.assert_array_equal(got, want)


def test_mean_and_sum_across_many_rows():
    """op:mean, base 4, [["huge", 0, 0]] (long run, seed 7): numpy sums pairwise only along a contiguous
    innermost axis; across 2**26 broadcast rows it added one value after another in float32, and the
    mean of equal values came out 0.15 % off. Long reductions now accumulate in float64."""
    v = np.float32(0.54784673)
    x = fg.tensor(np.broadcast_to(v, (2 ** 24, 5)))
    np.testing.assert_array_equal(x.mean(0).numpy(), np.full(5, v))
    assert x.sum().numpy() == np.float32(float(v) * 5 * 2 ** 24)
    assert x.mean().numpy().dtype == np.float32


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_norms_of_rows_near_float_max(norm):
    """op:layer_norm, base 0, [["bigval", 0, 0]] (long run, seed 7): values of 3e38 overflowed the float
    sums of squares, and the rows came out as the bias or NaN (torch's float32: NaN); such rows are
    now normalised in double, as torch's float64 does."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    x[0, 2], x[1, [1, 4]], x[2, [3, 5]] = 3e38, 3e38, (-3e38, 3e38)
    w, b = rng.standard_normal(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a).double() for a in (x, w, b))
    if norm == "layer_norm":
        got = fg.nn.functional.layer_norm(fg.tensor(x), (7,), fg.tensor(w), fg.tensor(b)).numpy()
        want = F.layer_norm(tx, (7,), tw, tb).numpy()
    else:
        got = fg.nn.functional.rms_norm(fg.tensor(x), (7,), fg.tensor(w)).numpy()
        want = F.rms_norm(tx, (7,), tw).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_var_and_std_of_a_long_constant_axis():
    """op:var / op:std, [["huge", 0, ...]] (long run, seed 7): 2**26 equal float32 values had a variance
    of 1.8e-4 (the float32 mean drifted); long reductions now accumulate in float64."""
    x = fg.tensor(np.broadcast_to(np.float32(0.5478), (2 ** 22, 3)))
    np.testing.assert_array_equal(x.var(0).numpy(), np.zeros(3, np.float32))
    np.testing.assert_array_equal(x.std(0).numpy(), np.zeros(3, np.float32))
    y = fg.tensor(np.random.default_rng(0).standard_normal((5000, 2)).astype(np.float32))
    np.testing.assert_allclose(y.var(0).numpy(), torch.from_numpy(y.numpy()).double().var(0).numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "silu", "tanh"])
def test_activations_of_integers_without_a_graph(name):
    """op:relu, base 0, [["dtype", 0, 2]] (long run, seed 7): the no-graph path ran the forward on a
    stand-in ctx, and a forward that looks up its reference on type(ctx) raised AttributeError."""
    x = np.array([[-1, 2], [3, -4]], np.int32)
    got = getattr(fg.nn.functional, name)(fg.tensor(x)).numpy()
    want = getattr(F, name)(torch.from_numpy(x.astype(np.int64) if name == "relu" else x.astype(np.float32)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_pow_reshape_and_nll_loss_check_argument_types():
    """op:pow [["scalar", 0, ...]], op:reshape and op:nll_loss (long run, seed 7): a list exponent, a None
    shape and ignore_index=1.0 were taken (torch: TypeError)."""
    x = fg.tensor(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="exponent|argument 'b' must be a forgegrad.Tensor"):  # (the call's check)
        fg.ops.get("pow")(x, [2.0])
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        fg.ops.get("reshape")(x, None)
    assert x.reshape(4, 3).shape == (4, 3) and x.reshape((2, -1)).shape == (2, 6)
    lp = fg.tensor(np.log(np.full((2, 3), 1 / 3, np.float32)))
    with pytest.raises(TypeError, match="ignore_index"):
        fg.nn.functional.nll_loss(lp, fg.tensor(np.array([0, 1])), ignore_index=1.0)


def test_attention_nan_score_spreads_over_its_row_only():
    """op:scaled_dot_product_attention (long run, seed 7): a query row whose scores are all NaN gave 0
    (the running max skips NaN, so the row looked empty); torch gives NaN there, and only there."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 5, 16), (2, 3, 7, 16), (2, 3, 7, 8)))
    q[0, 1, 2, 4] = np.nan
    mask = np.zeros((5, 7), np.float32)
    mask[3, 6] = np.nan
    for kw in ({}, {"attn_mask": mask}, {"is_causal": True}):
        got = fg.nn.functional.scaled_dot_product_attention(
            _t(q), _t(k), _t(v), **{n: _t(m) for n, m in kw.items() if n == "attn_mask"},
            **{n: m for n, m in kw.items() if n != "attn_mask"}).numpy()
        want = F.scaled_dot_product_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
                                              **{n: torch.from_numpy(m) if n == "attn_mask" else m
                                                 for n, m in kw.items()}).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-4, atol=1e-5)


def test_attention_scales_q_before_the_product():
    """op:scaled_dot_product_attention, base 12, [["bigval", 0, 0]] (long run, seed 7): q k^T * scale
    overflowed to inf (then NaN) for a q near 3e38 where torch's (q * scale) k^T stays finite."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 4, 16), (1, 6, 16), (1, 6, 8)))
    q[0, 1, 3] = 3e38
    k[0, :, 3] = [1.5, -1.5, 1.2, -1.8, 1.6, 1.9]  # (q * 0.25) * k stays in float's range, q * k does not
    want = F.scaled_dot_product_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)).numpy()
    assert np.isfinite(want).all()
    for grad in (False, True):
        out = fg.nn.functional.scaled_dot_product_attention(_t(q).requires_grad_(grad), _t(k), _t(v))
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-5)


def test_activations_of_bools():
    """tanh of a bool tensor came out float16 (numpy's float type for bools), sigmoid raised numpy's
    "boolean negative is not supported", relu numpy's casting error. As torch: tanh and sigmoid compute
    in float32, relu refuses bools, naming itself."""
    x = np.array([[True, False, True]])
    for name in ("tanh", "sigmoid"):
        got = getattr(fg, name)(fg.tensor(x))
        want = getattr(torch, name)(torch.from_numpy(x)).numpy()
        assert got.numpy().dtype == np.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    with pytest.raises(TypeError, match="relu: bool"):
        fg.relu(fg.tensor(x))
    with pytest.raises(TypeError, match="relu: bool"):
        fg.nn.ReLU()(fg.tensor(x))


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_flags_must_be_bools(name):
    """op:var / op:std, [["scalar", 1, 2]] (long run, seed 7, after the fixes above): keepdim="True"
    was taken by truthiness; torch refuses it."""
    x = _t(np.ones((3, 4)))
    for kw in ({"keepdim": "True"}, {"unbiased": None}, {"keepdim": 1.0}):
        with pytest.raises(TypeError, match=f"{name}: (keepdim|unbiased)"):
            fg.ops.get(name)(x, 1, **kw)
    assert fg.ops.get(name)(x, 1, keepdim=np.bool_(True)).shape == (3, 1)


def test_std_of_values_near_float_max():
    """op:std, base 1, [["bigval", 0, 0]] (long run, seed 7): deviations near 3e38 overflowed their float32
    squares, and std came out inf where torch's float64 gives ~1.6e38. Such rows are redone in double
    (var there is past float's range: inf); the gradients stay finite."""
    x = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    x[0, 2], x[1, 1], x[1, 4] = 3e38, -3e38, 3e38
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    for name in ("std", "var"):
        t = _t(x).requires_grad_()
        y = fg.ops.get(name)(t, 1)
        y.sum().backward()
        yt = getattr(torch, name)(xt, 1)
        (g,) = torch.autograd.grad(yt.sum(), xt)
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(y.numpy(), yt.detach().numpy().astype(np.float32), rtol=1e-5)
        assert y.numpy().dtype == t.grad.numpy().dtype == np.float32
        np.testing.assert_allclose(t.grad.numpy(), g.numpy(), rtol=1e-4, atol=1e-5 * np.abs(g.numpy()).max())


# ---- the long runs of 2026-12-06 (seeds 23 and 41, the recently added ops and bindings) ----------------
def test_label_arguments_must_be_strings():
    """kernel:attention.check_softcap [["scalar", 1, 52]] and kernel:geometry.adaptive_output_size
    [["scalar", 8, 4]]: the name used in the messages took an int (the messages then named '1')."""
    from forgegrad.kernels import attention as KAT
    from forgegrad.kernels import geometry as KG
    with pytest.raises(TypeError, match="check_softcap: who must be a str"):
        KAT.check_softcap(2.0, 1)
    with pytest.raises(TypeError, match="adaptive_output_size: owner must be a str"):
        KG.adaptive_output_size(2, (4, 4), 1)
    with pytest.raises(TypeError, match="conv1d_as_2d: owner must be a str"):
        KG.conv1d_as_2d(1, 0, 1, None)
    with pytest.raises(ValueError, match="padding must be an int, a 1-tuple, 'same' or 'valid'"):
        KG.conv1d_as_2d(1, "(2,)")  # kernel:geometry.conv1d_as_2d [["scalar", 1, 1]]: any string was passed on
    assert KAT.check_softcap(3, "cap") == 3.0 and KG.adaptive_output_size((None, 2), (4, 5)) == (4, 2)
    assert KG.conv1d_as_2d(2, "same", 1) == ((1, 2), "same", (1, 1))


def test_meta_matmul_of_a_float_and_an_integer_operand():
    """Found reading the integer matmul's meta rule: matmul(float32, int64) on the meta device gave a float32
    result where the forward raises (the rule looked at the first operand's dtype only)."""
    a, b = fg.empty((3, 4), device="meta"), fg.empty((4, 5), dtype=fg.int64, device="meta")
    for x, y in ((a, b), (b.transpose(0, 1), a.transpose(0, 1))):
        with pytest.raises(TypeError, match="expected both operands to have the same dtype"):
            fg.matmul(x, y)
    with pytest.raises(TypeError, match="same dtype, got float32 and int64"):
        fg.matmul(fg.ones(3, 4), fg.tensor(np.ones((4, 5), np.int64)))
    i32 = fg.empty((3, 4), dtype=fg.int32, device="meta")
    assert fg.matmul(i32, fg.empty((4, 2), dtype=fg.int32, device="meta")).dtype == fg.int32
    assert fg.matmul(a, fg.empty((4, 2), device="meta")).dtype == fg.float32


def test_max_pool3d_kernel_far_wider_than_the_input():
    """c:pool.max_pool3d_forward [["scalar", 52, 13], ...] (kernel_size 2**31 - 1): a hang. The kernel's portable
    path looped over every kernel column per output row, ~2**31 of them; F.max_pool3d reaches it with padding of
    half such a kernel (valid for torch). The columns are now clipped to those inside the row, and a kernel much
    wider than the row walks each output's own taps (the same rule, so torch's values and indices)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 3, 4, 5)).astype(np.float32)
    x[0, 1, 1, 2, 3] = np.nan
    for k, s, p, d in (((1, 1, 2 ** 31 - 1), 1, (0, 0, 2 ** 30 - 1), 1), ((3, 1, 41), (2, 1, 3), (1, 0, 20), 1),
                       ((1, 3, 21), 1, (0, 1, 10), 1), ((2, 2, 9), (1, 2, 5), (1, 1, 4), (2, 1, 1))):
        y, i = fg.nn.functional.max_pool3d(_t(x), k, s, p, d, return_indices=True)
        ty, ti = F.max_pool3d(torch.from_numpy(x), k, s, p, d, return_indices=True)
        np.testing.assert_array_equal(y.numpy(), ty.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())


def test_max_pool3d_binding_checks_the_geometry():
    """The same case straight to the binding: kernel_size 2**31 - 1 with out (2, 3, 4) for input (4, 6, 8) was
    taken (torch gives no output there), as were more outputs than the input holds (-inf and indices past the
    volume) and padding over half the kernel."""
    x = np.zeros((2, 3, 4, 6, 8), np.float32)

    def call(out, k, s=(2, 2, 2), p=(0, 0, 0)):
        _C.pool.max_pool3d_forward(x, np.empty(out, np.float32), np.empty(out, np.int64), k, s, p, (1, 1, 1))
    with pytest.raises(ValueError, match=r"max_pool3d: out \(2, 3, 2, 3, 4\) has more outputs than kernel_size"):
        call((2, 3, 2, 3, 4), (2 ** 31 - 1,) * 3)
    with pytest.raises(ValueError, match="has more outputs than"):
        call((2, 3, 3, 3, 4), (2, 2, 2))  # floor and ceil_mode give 2 depth outputs
    with pytest.raises(ValueError, match="padding must be at most half of kernel_size"):
        call((2, 3, 2, 3, 4), (3, 3, 3), p=(2, 0, 0))
    call((2, 3, 3, 3, 4), (2, 2, 2), p=(1, 0, 0))  # ceil_mode's sizes with padding: taken


@pytest.mark.parametrize("name", ["all", "any"])
def test_all_any_keepdim_without_dim(name):
    """op:all [["fortran", 48, 34], ["scalar", 18, 2]] reported a mismatch: forgegrad's (1, 1, 1) for dim=None,
    keepdim=True is torch's; the registry's torch reference dropped keepdim when dim was None (fixed there)."""
    x = np.ones((2, 5, 3), bool)
    x[1, 2, 0] = False
    got = getattr(fg, name)(fg.tensor(x), dim=None, keepdim=True)
    want = getattr(torch, name)(torch.from_numpy(x), dim=None, keepdim=True)
    assert got.shape == tuple(want.shape) == (1, 1, 1)
    assert bool(got.numpy().ravel()[0]) == bool(want.item())
    op = fg.ops.get(name)
    assert tuple(op.torch(torch, torch.from_numpy(x), None, True).shape) == (1, 1, 1)


def test_diff_of_order_past_the_size_returns_at_once():
    """op:diff [["scalar", 44, 24]] (n = 2**63): a hang, one (empty) difference per step; steps past the axis's
    size change nothing, so n is capped there (forward, backward and the double-backward rule)."""
    x = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    a = fg.tensor(x, requires_grad=True)
    y = fg.diff(a, 2 ** 63, -1)
    y.sum().backward()
    assert y.shape == (3, 0) and not a.grad.numpy().any()
    for n in (7, 8):
        a, t = fg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        (fg.diff(a, n, 1) * 2).sum().backward()
        (torch.diff(t, n, 1) * 2).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), atol=1e-5)


def test_scatter_reduce_include_self_must_be_a_bool():
    """op:scatter_reduce [["scalar", 2, 2]]: include_self='True' was taken by truthiness (torch: TypeError)."""
    x, idx, src = fg.zeros(3), fg.tensor(np.array([0, 2, 2])), fg.ones(3)
    with pytest.raises(TypeError, match="include_self must be a bool"):
        fg.scatter_reduce(x, 0, idx, src, "sum", include_self="True")
    got = fg.scatter_reduce(x, 0, idx, src, "sum", include_self=np.bool_(False))
    assert got.numpy().tolist() == [1.0, 0.0, 2.0]
