"""Values near float's limits and non-finite entries the fuzz runs found computed otherwise than torch (or than the
exact result, where torch's float32 is wrong): batch_norm's statistics of channels holding ~3e38, and linalg det /
slogdet / inv of matrices holding inf or NaN. The fuzz case that found each is in its docstring, runnable with
tests/fuzz/fuzz_worker.py."""

import numpy as np
import pytest

import forgegrad as fg

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _same(want, got):
    """Equal where both are NaN or the same infinity, close where both are finite."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where both are infinite
        close = np.isfinite(want) & np.isfinite(got) & (np.abs(want - got) <= 1e-3 * np.maximum(1, np.abs(want)))
    return bool(np.all((np.isnan(want) & np.isnan(got)) | (want == got) | close))


def _matrices_with_nonfinite(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.choice([1, 2, 3, 4, 6, 9]))
        batch = tuple(int(b) for b in rng.integers(1, 3, int(rng.integers(0, 3))))
        a = rng.standard_normal(batch + (n, n)).astype(rng.choice([np.float32, np.float64]))
        flat = a.reshape(-1, n, n)
        for _ in range(int(rng.integers(1, 4))):
            flat[rng.integers(flat.shape[0]), rng.integers(n), rng.integers(n)] = rng.choice([np.inf, -np.inf, np.nan])
        yield a


def test_linalg_det_slogdet_inv_of_nonfinite_matrices_match_torch():
    """op:linalg_det, {"base": 4, "mutations": [["ninf", 6, 60]], "seed": 14, "raw": true} (seed 202): det of a
    matrix holding -inf gave inf (numpy's LAPACK) where torch gives NaN; slogdet and inv likewise, and elsewhere the
    other way round (numpy NaN, torch -inf). torch's values are those of LAPACK's unblocked LU of A^T (det, slogdet)
    and of A (inv, then two substitutions without zero skipping); ops/_linalg_nonfinite.py computes those for the
    batch elements holding inf / NaN."""
    numpy_differs = 0
    for a in _matrices_with_nonfinite(0, 300):
        ta, fa = torch.from_numpy(a), fg.tensor(a)
        want = torch.linalg.det(ta).numpy()
        numpy_differs += not _same(want, np.linalg.det(a))
        assert _same(want, fg.linalg.det(fa).numpy()), a
        for w, g in zip(torch.linalg.slogdet(ta), fg.linalg.slogdet(fa)):
            assert _same(w.numpy(), g.numpy()), a
        try:
            want_inv = torch.linalg.inv(ta).numpy()
        except RuntimeError:  # a pivot exactly 0 (inf - inf is NaN, not 0: rare)
            with pytest.raises(RuntimeError, match="'A' is singular"):
                fg.linalg.inv(fa)
            continue
        assert _same(want_inv, fg.linalg.inv(fa).numpy()), a
    assert numpy_differs > 30  # the cases numpy's LAPACK computed otherwise


def test_linalg_of_nonfinite_matrices_keeps_finite_batch_elements_and_singular_errors():
    a = np.stack([np.eye(3, dtype=np.float32) * 2, np.array([[1, np.inf, 0], [0, 1, 0], [0, 0, 1]], np.float32)])
    np.testing.assert_array_equal(fg.linalg.det(fg.tensor(a)).numpy(), torch.linalg.det(torch.from_numpy(a)).numpy())
    np.testing.assert_array_equal(fg.linalg.inv(fg.tensor(a)).numpy()[0], np.eye(3) / 2)
    singular = np.array([[np.inf, 1.0], [0.0, 0.0]], np.float32)  # U = [[inf, 1], [0, 0]]: a zero pivot
    with pytest.raises(RuntimeError, match="singular"):
        torch.linalg.inv(torch.from_numpy(singular))
    with pytest.raises(RuntimeError, match="linalg.inv: \\(batch element 1\\) argument 'A' is singular"):
        fg.linalg.inv(fg.tensor(np.stack([np.eye(2, dtype=np.float32), singular])))


def _batch_norm_case(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 1].flat[0] = 3.0e38  # one value near float's limit in channel 1 (its first: the sums' shift)
    x[-1, 2].flat[-1] = -3.0e38
    x[:, 3] = (3.0e38 + rng.standard_normal(x[:, 3].shape) * 1e37).astype(np.float32)  # a whole channel up there
    w, b = rng.standard_normal(shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    return x, w, b, rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(4, 5, 2, 3), (6, 5, 37), (9, 5)])
def test_batch_norm_training_statistics_of_values_near_floats_limit(shape):
    """op:batch_norm, ["bigval", 0, 0] on base 2 (seed 202): a training batch_norm of a channel holding 3e38 gave
    NaN: its float32 row sums and squares overflowed (torch's float32 gives the bias there, also wrong). Channels
    whose float accumulators overflow are summed again in double (cpp/kernels/per_isa/batchnorm.cpp); values and
    gradients are compared with torch's float64."""
    x, w, b, g = _batch_norm_case(shape, 0)
    fx, fw, fb = (fg.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    y = fg.nn.functional.batch_norm(fx, None, None, fw, fb, training=True)
    ty = F.batch_norm(tx, None, None, tw, tb, training=True)
    assert np.isfinite(y.detach().numpy()).all()
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    y.backward(fg.tensor(g))
    ty.backward(torch.tensor(g.astype(np.float64)))
    for got, want in ((fw.grad, tw.grad), (fb.grad, tb.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-6)  # gx ~ invstd: ~1e-38
    bits = []
    for threads in (1, 2, 3):
        previous = fg.get_num_threads()
        fg.set_num_threads(threads)
        try:
            bits.append(fg.nn.functional.batch_norm(fg.tensor(x), None, None, fg.tensor(w), fg.tensor(b),
                                                    training=True).numpy())
        finally:
            fg.set_num_threads(previous)
    for other in bits[1:]:
        np.testing.assert_array_equal(other, bits[0])


def test_cdist_p_past_float32s_range_and_zero_norm_of_nan_differences():
    """op:cdist, {"base": 1, "mutations": [["scalar", 0, 49]]} (seed 606): p = 1e300 on float32 rows gave 1 for every
    distance (1 / p rounded to float32 0: s ** 0); torch casts p to float32, inf, and gives the inf-norm, max |d|.
    op:cdist, base 11 (p = 0) with -inf entries (seed 606): the zero "norm" counted a NaN difference (-inf - -inf) as
    nonzero, torch's min(ceil(|d|), 1) gives NaN there."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 6, 4)), rng.standard_normal((1, 5, 4))
    for dtype in (np.float32, np.float64):
        for p in (1e300, 1e40, 200.0):
            want = torch.cdist(torch.tensor(a.astype(dtype)), torch.tensor(b.astype(dtype)), p).numpy()
            got = fg.cdist(fg.tensor(a.astype(dtype)), fg.tensor(b.astype(dtype)), p).numpy()
            if dtype == np.float32 and p == 200.0:  # torch's float32 |d|^200 overflows: inf (see the next test)
                assert np.isinf(want).any()
                want = torch.cdist(torch.tensor(a), torch.tensor(b), p).numpy().astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-5 if p != 200.0 else 1e-3)  # float32's |d|^200
    a[0, 1, 2] = b[0, 3, 2] = -np.inf
    for dtype in (np.float32, np.float64):
        want = torch.cdist(torch.tensor(a.astype(dtype)), torch.tensor(b.astype(dtype)), 0.0).numpy()
        got = fg.cdist(fg.tensor(a.astype(dtype)), fg.tensor(b.astype(dtype)), 0.0).numpy()
        assert np.isnan(want[0, 1, 3]) and np.isnan(got).sum() == np.isnan(want).sum()
        np.testing.assert_array_equal(got, want)


def test_cdist_through_the_gemm_makes_one_temporary_of_the_outputs_size():
    """op:cdist, {"mutations": [["unaligned", 1, 27], ["overflow", 35, 18]], "base": 5, "seed": 3334} (seed 606):
    "no answer within 60 s" for 30 rows against a broadcast 9.6M rows (a 1.1 GB output): torch 2.9 s, forgegrad
    24 s, mostly page faults of four output-sized temporaries (an + bn, 2 ab, the difference, max, sqrt). Now the
    GEMM's buffer and one other are all (3.6 s); peak memory (numpy's allocations, traced) about twice the output."""
    import tracemalloc
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 7)).astype(np.float32)
    b = np.broadcast_to(rng.standard_normal(7).astype(np.float32), (200_000, 7))
    ta, tb = fg.tensor(a), fg.tensor(b)
    with fg.no_grad():
        tracemalloc.start()
        try:
            out = fg.ops.get("cdist")(ta, tb)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2.5 * out.numpy().nbytes
    want = torch.cdist(torch.from_numpy(a), torch.from_numpy(np.ascontiguousarray(b[:40])))
    np.testing.assert_allclose(out.numpy()[:, :40], want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("p, rows", [(2.0, 30), (2.0, 4), (3.0, 4), (1.0, 4)])
def test_cdist_of_float32_values_near_floats_limit(p, rows):
    """op:cdist, {"seed": 3858, "mutations": [["scalar", 7, 29], ["bigval", 43, 24], ["scalar", 32, 27]], "base": 12}
    (seed 606's rerun): rows holding 3e38 gave NaN / inf (|a|^2 + |b|^2 of the GEMM path, the squares of the direct
    one past float32's range) where the distance is 3e38 or, past float32's range, inf; torch's float32 gives NaN
    too, so the reference is torch's float64 cast to float32. Those entries are recomputed in float64, scaled by the
    largest |d| (so a large p, p = 200 on values ~2, gives the distance where torch's float32 gives inf)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((rows, 5)).astype(np.float32), rng.standard_normal((27, 5)).astype(np.float32)
    a[1, 2], b[3, 0], b[5, 4] = 3e38, -3e38, 3e38
    b[7, 1] = np.inf  # a row holding inf keeps its inf / NaN (no float64 redo)
    want = torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double(), p).numpy()
    with np.errstate(over="ignore"):
        want = want.astype(np.float32)
    got = fg.cdist(fg.tensor(a), fg.tensor(b), p).numpy()
    finite_rows = np.isfinite(b).all(1)
    np.testing.assert_allclose(got[:, finite_rows], want[:, finite_rows], rtol=1e-5)
    assert np.isfinite(got[1, finite_rows]).any()
    assert not np.isfinite(got[:, 7]).any()


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8, np.int16])
@pytest.mark.parametrize("margin", [2.7, -2.7, 0.5, 127.9, 300.0])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_hinge_embedding_loss_of_integers_is_torchs(dtype, margin, reduction):
    """op:hinge_embedding_loss, {"base": 1, "mutations": [["dtype", 0, 2]], "seed": 0} (seed 707): an int32 input
    gave float 29.5 where torch gives 14: torch computes in the input's integer dtype (margin cast toward zero,
    uint8 wrapping), sums to int64, refuses mean and a margin the dtype cannot hold."""
    x = np.array([[0, 1, 3, 2, 0], [-3, 5, 0, 7, -1]]).astype(dtype)
    t = np.array([-1.0, 1, 0, -1, 1], np.float32)
    op = fg.ops.get("hinge_embedding_loss")
    try:
        want = F.hinge_embedding_loss(torch.from_numpy(x), torch.from_numpy(t), margin=margin, reduction=reduction)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="hinge_embedding_loss"):
            op(fg.tensor(x), fg.tensor(t), margin=margin, reduction=reduction)
        return
    got = op(fg.tensor(x), fg.tensor(t), margin=margin, reduction=reduction)
    assert str(got.dtype).rsplit(".")[-1] == str(want.dtype).rsplit(".")[-1]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def _attention_case(T, dtype, where, mode, value):
    """q, k, v (1, 2, T, 8) with one non-finite entry: in q's first row, or at the last key (which the causal or
    lower-triangular mask hides from every row but the last), and the mask arguments for torch and forgegrad."""
    rng = np.random.default_rng(T)
    q, k, v = (rng.standard_normal((1, 2, T, 8)).astype(dtype) for _ in range(3))
    target = {"q": q, "k": k, "v": v}[where]
    target[0, 0, 0 if where == "q" else T - 1, 0] = value
    keep = np.tril(np.ones((T, T), bool))
    mask = {"causal": None, "bool": keep, "float": np.where(keep, 0, -np.inf).astype(dtype)}[mode]
    return (q, k, v), mask


@pytest.mark.parametrize("T", [40, 130])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where, value", [("q", np.nan), ("k", np.nan), ("k", np.inf), ("v", np.nan), ("v", np.inf)])
@pytest.mark.parametrize("mode", ["causal", "bool", "float"])
def test_attention_with_nonfinite_entries_at_masked_keys_is_torchs(T, dtype, where, value, mode):
    """op:scaled_dot_product_attention, {"base": 1, "mutations": [["nan", 32, 0]], "seed": 0, "raw": true} (seed
    707): NaN in v at keys the causal mask hides gave finite rows where torch's P @ V gives 0 * NaN = NaN in every
    earlier row (the fused kernel skips those keys: a causal call with a non-finite value now runs composed). The
    float64 (composed) path also zeroed any row its inputs made NaN, taking it for a row with every key masked
    (those are now the rows whose scores are all -inf, as torch's _safe_softmax), and a bool mask assigned -inf
    where torch adds it (a NaN or inf score at a masked key stays NaN).
    Gradients are compared where torch's do not depend on its kernel's tiles: with a causal mask and non-finite q
    or k, torch's flash backward multiplies the masked 0 weights of its tiles' keys, so its NaN pattern follows its
    tile size. (torch's forward is itself inconsistent below T = 10: a causal NaN row of q gives 0 there.)"""
    (q, k, v), mask = _attention_case(T, dtype, where, mode, value)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    fq, fk, fv = (fg.tensor(a, requires_grad=True) for a in (q, k, v))
    causal = mode == "causal"
    want = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=None if causal else torch.from_numpy(mask),
                                          is_causal=causal)
    got = fg.nn.functional.scaled_dot_product_attention(fq, fk, fv, attn_mask=None if causal else fg.tensor(mask),
                                                        is_causal=causal)
    assert _same(want.detach().numpy(), got.numpy())
    if not (causal and where == "k"):  # there only the last row sees the entry (its score may be -inf: weight 0)
        assert np.isnan(got.numpy()).any()  # the test sees the non-finite path
    if causal and where != "v":
        return
    want.sum().backward()
    got.sum().backward()
    for t, f in ((tq, fq), (tk, fk), (tv, fv)):
        assert _same(t.grad.numpy(), f.grad.numpy())


@pytest.mark.parametrize("shape, size", [((2, 5, 3), 2), ((3, 7, 4, 2), 3), ((1, 4, 2, 2, 3), 5), ((2, 3, 4), 8),
                                         ((2, 3, 4), 1)])
@pytest.mark.parametrize("default", [np.float32, np.float64])
def test_local_response_norm_of_int64_truncates_the_window_mean_as_torch(shape, size, default):
    """op:local_response_norm, {"base": 1, "mutations": [["dtype", 0, 2]], "seed": 0} (seed 707): an int64 input was
    normalized by the exact window mean of its squares; torch average-pools the integer squares, which truncates the
    mean, then computes in the default dtype. (The op's Function saw the int64 input, then was run again on it cast
    to floats, as ops making floats of integers are: local_response_norm now keeps its own integer rule.)"""
    x = np.random.default_rng(size).integers(-30, 30, shape)
    was_torch, was_fg = torch.get_default_dtype(), fg.get_default_dtype()
    torch.set_default_dtype(torch.float64 if default == np.float64 else torch.float32)
    fg.set_default_dtype(fg.float64 if default == np.float64 else fg.float32)
    try:
        want = F.local_response_norm(torch.from_numpy(x), size, alpha=0.7, beta=0.6, k=1.5).numpy()
        got = fg.nn.functional.local_response_norm(fg.tensor(x), size, alpha=0.7, beta=0.6, k=1.5).numpy()
    finally:
        torch.set_default_dtype(was_torch)
        fg.set_default_dtype(was_fg)
    assert got.dtype == want.dtype == default
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    exact = fg.nn.functional.local_response_norm(fg.tensor(x.astype(np.float64)), size, alpha=0.7, beta=0.6, k=1.5)
    if size > 1:  # the truncation shows
        assert not np.allclose(exact.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (1, 1, 1, 2), (1, 2, 2, 1), (2, 0, 1, 1),
                                                               (2, 1, 1, 2), (3, 1, 2, 1)])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's notice when its oneDNN flags are set
def test_conv_input_gradient_and_transposed_conv_of_a_nonfinite_weight_are_torchs(stride, padding, dilation, groups,
                                                                                   value):
    """Found by the fuzz runs of 2026-12-05 (the `nan` mutation on conv_transpose2d's weight): a NaN weight gave NaN
    over the whole plane of the transposed conv's output (and of conv2d's input gradient) where torch has it only
    where that tap lands. The stride-1 kernel correlated grad_y padded with zeros, multiplying them by the weight
    (0 * NaN); a non-finite weight now takes the col2im path. torch's reference is its native kernel: oneDNN (its
    default here) also puts NaN in a column no tap of the weight reaches, at stride 2."""
    rng = np.random.default_rng(stride * 10 + padding)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32)
    w[1, 0, 1, 2] = value
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **geometry).shape).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    with torch.backends.mkldnn.flags(enabled=False):
        F.conv2d(tx, torch.from_numpy(w), **geometry).backward(torch.from_numpy(g))
        want_t = F.conv_transpose2d(torch.from_numpy(g), torch.from_numpy(w), **geometry).numpy()
    fx = fg.tensor(x, requires_grad=True)
    fg.nn.functional.conv2d(fx, fg.tensor(w), **geometry).backward(fg.tensor(g))
    got_t = fg.nn.functional.conv_transpose2d(fg.tensor(g), fg.tensor(w), **geometry).numpy()
    bad = ~np.isfinite(tx.grad.numpy())
    assert bad.any() and not bad.all()  # the weight's tap reaches part of the plane
    assert _same(tx.grad.numpy(), fx.grad.numpy())
    assert _same(want_t, got_t)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int64", "bool"])
@pytest.mark.parametrize("name", ["cos", "exp", "log", "sigmoid", "tanh"])
def test_registry_op_on_a_numpy_integer_array_computes_in_float32_as_torch(name, dtype):
    """op:cos & co., raw numpy uint8 / int8 (seed 909): the registry op ran numpy's ufunc on the array itself, whose
    8-bit integers promote to float16 (cos(1) = 0.5405); numpy arrays now go in as tensors of their dtype, so torch's
    rule applies: the default float dtype."""
    x = np.array([0, 1, 2, 3, 200 if dtype == "uint8" else 1], dtype)
    got = fg.ops.get(name)(x)
    want = getattr(torch, name)(torch.from_numpy(x))
    assert got.dtype == fg.float32 and str(want.dtype) == "torch.float32"
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)


def test_std_of_a_row_near_floats_limit_beside_a_row_with_inf():
    """op:std, [3e38, 1, 1, 1] beside a row holding inf (seed 909): the float64 redo of an overflowing square was
    skipped when any row held inf, leaving inf where torch gives 1.5e38."""
    x = np.array([[3e38, 1, 1, 1], [1, 1, 1, np.inf], [1, 2, np.nan, 3], [1, 2, 3, 4]], np.float32)
    for op in ("std", "var"):
        got = getattr(fg.tensor(x), op)(1).numpy()
        want = getattr(torch.from_numpy(x), op)(1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_linalg_solve_with_an_infinite_entry_gives_nan_as_torch():
    """op:linalg_solve, an inf in A (seed 909): OpenBLAS's LU solved the infinite column as a limit ([-0, -0.286,
    0.225]); torch gives NaN for that whole system, and so does forgegrad now (the other systems unchanged)."""
    A = np.array([[[np.inf, -0.4, 0.6], [-0.8, 2.2, 0.45], [np.inf, -0.9, 1.5]],
                  [[2, 0, 1], [0, 3, 0], [1, 0, 4]]], np.float32)
    vectors, matrices = np.array([[-0.8, -0.5, 0.6], [1, 1, 1]], np.float32), np.ones((2, 3, 2), np.float32)
    for b, left in ((vectors, True), (matrices, True), (np.swapaxes(matrices, -1, -2).copy(), False)):
        got = fg.linalg.solve(fg.tensor(A), fg.tensor(b), left=left).numpy()
        want = torch.linalg.solve(torch.from_numpy(A), torch.from_numpy(b), left=left).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()
