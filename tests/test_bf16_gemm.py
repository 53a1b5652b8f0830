"""The bfloat16 GEMM (_C.bf16.gemm / linear; vdpbf16ps where _C.bf16.gemm_path() is "avx512_bf16", else the widened
operands through the float32 sgemm) and what runs on it: a bfloat16 model's Linear and matmul, forward and
gradients, and autocast's, against torch's bfloat16 at odd shapes (K odd, M and N off the 8 x 32 tile, one row, K
past one 512 block); the same bits at 1, 2 and 3 threads; the float32 path's bits; the binding's checks."""
import math

import numpy as np
import pytest
import torch

import forgegrad as fg
from forgegrad import _C

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F = fg.nn.functional
NATIVE = _C.bf16.gemm_path() == "avx512_bf16"


@pytest.fixture(params=["best", "float32"])
def gemm_path(request):
    """Each test on the path this CPU takes and on the widened float32 one (the same where vdpbf16ps is missing)."""
    _C.bf16.set_gemm_native(request.param == "best")
    yield request.param
    _C.bf16.set_gemm_native(True)


@pytest.fixture
def threads():
    before = fg.get_num_threads()
    yield
    fg.set_num_threads(before)
    torch.set_num_threads(1)


def _bf16(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32).astype(BF16)


def _f(a):
    return np.asarray(a).astype(np.float32).astype(np.float64)


def assert_bf16_product_close(ours, theirs, abs_sum, k):
    """ours and theirs each round once to bfloat16 a float32 sum of the same terms (exact bfloat16 products and the
    bias) taken in another order. Two float32 sums of k terms differ by at most 2 k 2^-24 sum|term| (abs_sum), and
    each rounding to bfloat16 moves by at most half an ulp (2^-8 relative): one bfloat16 ulp of the larger, plus
    the summation bound. (Random normal data has no denormals, which the vdpbf16ps path would flush.)"""
    ours, theirs = _f(ours), _f(theirs)
    bound = 2.0 ** -7 * np.maximum(np.abs(ours), np.abs(theirs)) + 2 * (k + 1) * 2.0 ** -24 * abs_sum + 1e-30
    assert ours.shape == theirs.shape
    if ours.size == 0:
        return
    err = np.abs(ours - theirs)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]} > bound {bound[worst]} at {worst}"


SHAPES = [(1, 7, 5), (3, 1, 33), (9, 33, 17), (8, 32, 32), (37, 515, 40), (17, 1025, 70), (65, 64, 100)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_torch(rng, gemm_path, m, k, n, trans_a, trans_b):
    a, b, bias = _bf16(rng, m, k), _bf16(rng, k, n), _bf16(rng, n)
    a_arg = np.ascontiguousarray(a.T) if trans_a else a
    b_arg = np.ascontiguousarray(b.T) if trans_b else b
    got = _C.bf16.gemm(a_arg, b_arg, trans_a, trans_b, bias).view(BF16)
    assert got.shape == (m, n)
    ta, tb, tbias = (torch.from_numpy(x.astype(np.float32)).bfloat16() for x in (a, b, bias))
    want = torch.addmm(tbias, ta, tb).float().numpy()
    assert_bf16_product_close(got, want, np.abs(_f(a)) @ np.abs(_f(b)) + np.abs(_f(bias)), k)
    plain = _C.bf16.gemm(a_arg, b_arg, trans_a, trans_b).view(BF16)
    assert_bf16_product_close(plain, (ta @ tb).float().numpy(), np.abs(_f(a)) @ np.abs(_f(b)), k)


def test_gemm_batched_matches_torch(rng, gemm_path):
    a3, b3, b2, a2 = _bf16(rng, 3, 9, 33), _bf16(rng, 3, 33, 40), _bf16(rng, 33, 40), _bf16(rng, 9, 33)
    for a, b in ((a3, b3), (a3, b2), (a2, b3)):
        got = _C.bf16.gemm(a, b).view(BF16)
        want = (torch.from_numpy(a.astype(np.float32)).bfloat16() @ torch.from_numpy(b.astype(np.float32)).bfloat16())
        assert got.shape == tuple(want.shape)
        assert_bf16_product_close(got, want.float().numpy(), np.abs(_f(a)) @ np.abs(_f(b)), 33)


def test_gemm_bits_are_the_same_at_1_2_3_threads(rng, gemm_path, threads):
    a, b, bias = _bf16(rng, 67, 1030), _bf16(rng, 1030, 90), _bf16(rng, 90)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    runs = []
    for t in (1, 2, 3):
        fg.set_num_threads(t)
        runs.append([_C.bf16.gemm(a, b, False, False, bias), _C.bf16.gemm(at, b, True, False),
                     _C.bf16.gemm(a, bt, False, True, bias), _C.bf16.gemm(at, bt, True, True)])
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            np.testing.assert_array_equal(x, y)


def test_float32_path_is_the_widened_sgemms_bits(rng):
    a, b, bias = _bf16(rng, 19, 45), _bf16(rng, 37, 45), _bf16(rng, 37)
    _C.bf16.set_gemm_native(False)
    try:
        assert _C.bf16.gemm_path() == "float32"
        got = _C.bf16.gemm(a, b, False, True, bias)
    finally:
        _C.bf16.set_gemm_native(True)
    want = _C.gemm.linear(a.astype(np.float32), b.astype(np.float32), bias.astype(np.float32))
    np.testing.assert_array_equal(got, want.astype(BF16).view(np.uint16))


def test_a_lower_simd_path_takes_the_float32_gemm():
    before = fg.get_simd()
    try:
        fg.set_simd("avx2" if before != "scalar" else "scalar")
        assert _C.bf16.gemm_path() == "float32"
    finally:
        fg.set_simd(before)
    assert _C.bf16.gemm_path() == ("avx512_bf16" if NATIVE else "float32")


@pytest.mark.skipif(not NATIVE, reason="the vdpbf16ps path needs a CPU with AVX512_BF16")
def test_vdpbf16ps_flushes_denormals_as_documented():
    tiny = np.array([[2.0 ** -130]], np.float32).astype(BF16)  # a bfloat16 denormal (smallest normal 2^-126)
    one = np.ones((1, 1), BF16)
    assert float(_C.bf16.gemm(tiny, one).view(BF16)[0, 0]) == 0.0  # DAZ: the input read as zero
    small = np.array([[2.0 ** -70]], np.float32).astype(BF16)
    assert float(_C.bf16.gemm(small, small).view(BF16)[0, 0]) == 0.0  # FTZ: the 2^-140 product flushed
    _C.bf16.set_gemm_native(False)
    try:  # the float32 path keeps them (sgemm does not flush)
        assert float(_C.bf16.gemm(tiny, one).view(BF16)[0, 0]) == float(tiny[0, 0])
    finally:
        _C.bf16.set_gemm_native(True)


def _torch(t):
    return torch.from_numpy(t.float().numpy()).bfloat16()


@pytest.mark.parametrize("x_shape,n", [((1, 7), 5), ((9, 33), 17), ((2, 37, 515), 40), ((65, 64), 100), ((0, 5), 3),
                                       ((2, 0, 5), 3), ((9, 0), 4), ((9, 5), 0)])
def test_bf16_linear_forward_and_gradients_match_torch(rng, gemm_path, x_shape, n):
    k = x_shape[-1]
    x = fg.tensor(_bf16(rng, *x_shape)).requires_grad_()
    w = fg.tensor(_bf16(rng, n, k)).requires_grad_()
    b = fg.tensor(_bf16(rng, n)).requires_grad_()
    g = _bf16(rng, *x_shape[:-1], n)
    y = F.linear(x, w, b)
    assert type(y._ctx).__name__ == "Bf16LinearFunction"
    y.backward(fg.tensor(g))
    tx, tw, tb = (_torch(t).requires_grad_() for t in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(g.astype(np.float32)).bfloat16())
    xf, wf, gf = _f(x.detach().float().numpy()), _f(w.detach().float().numpy()), _f(g.astype(np.float32))
    rows = math.prod(x_shape[:-1])
    x2, g2 = xf.reshape(rows, k), gf.reshape(rows, n)
    assert_bf16_product_close(y.float().detach().numpy(), ty.float().detach().numpy(),
                              np.abs(xf) @ np.abs(wf.T) + np.abs(_f(b.detach().float().numpy())), k)
    for ours, theirs, abs_sum, terms in ((x.grad, tx.grad, np.abs(gf) @ np.abs(wf), n),
                                         (w.grad, tw.grad, np.abs(g2.T) @ np.abs(x2), x2.shape[0]),
                                         (b.grad, tb.grad, np.abs(g2).sum(0), x2.shape[0])):
        assert ours.dtype == fg.bfloat16
        assert_bf16_product_close(ours.float().numpy(), theirs.float().numpy(), abs_sum, terms)


@pytest.mark.parametrize("a_shape,b_shape", [((5, 7), (7, 3)), ((2, 9, 33), (33, 17)), ((3, 9, 33), (3, 33, 40)),
                                             ((1, 515), (515, 70)), ((0, 3, 4), (0, 4, 2)), ((2, 0, 5), (5, 3)),
                                             ((3, 0), (0, 4)), ((2, 3, 4), (4, 0))])
def test_bf16_matmul_forward_and_gradients_match_torch(rng, gemm_path, a_shape, b_shape):
    a = fg.tensor(_bf16(rng, *a_shape)).requires_grad_()
    b = fg.tensor(_bf16(rng, *b_shape)).requires_grad_()
    y = a @ b
    if gemm_path == "best" and NATIVE:
        assert type(y._ctx).__name__ == "Bf16MatmulFunction"
    g = _bf16(rng, *y.shape)
    y.backward(fg.tensor(g))
    ta, tb = _torch(a).requires_grad_(), _torch(b).requires_grad_()
    ty = ta @ tb
    ty.backward(torch.from_numpy(g.astype(np.float32)).bfloat16())
    af, bf, gf = _f(a.detach().float().numpy()), _f(b.detach().float().numpy()), _f(g.astype(np.float32))
    k = a_shape[-1]
    assert_bf16_product_close(y.float().detach().numpy(), ty.float().detach().numpy(), np.abs(af) @ np.abs(bf), k)
    assert_bf16_product_close(a.grad.float().numpy(), ta.grad.float().numpy(),
                              np.abs(gf) @ np.abs(np.swapaxes(bf, -1, -2)), b_shape[-1])
    if len(b_shape) == 2:
        rows = math.prod(a_shape[:-1])
        a2, g2 = af.reshape(rows, k), gf.reshape(rows, b_shape[-1])
        abs_b, terms = np.abs(a2.T) @ np.abs(g2), a2.shape[0]
    else:
        abs_b, terms = np.abs(np.swapaxes(af, -1, -2)) @ np.abs(gf), a_shape[-2]
    assert_bf16_product_close(b.grad.float().numpy(), tb.grad.float().numpy(), abs_b, terms)


def _mlp_step(seed, autocast, threads=None):
    """A bfloat16 (or autocast) MLP's output and parameter gradients, as bits."""
    if threads:
        fg.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    fg.manual_seed(0)
    model = fg.nn.Sequential(fg.nn.Linear(33, 70), fg.nn.ReLU(), fg.nn.Linear(70, 7))
    x = fg.tensor(rng.standard_normal((41, 33)).astype(np.float32))
    y = fg.tensor(rng.integers(0, 7, 41))
    if not autocast:
        model, x = model.to(fg.bfloat16), x.to(fg.bfloat16)
    with fg.autocast("cpu", enabled=autocast):
        out = model(x)
    F.cross_entropy(out.float(), y).backward()
    return [out._data.view(np.uint16).copy()] + [p.grad._data.view(
        np.uint16 if p.grad.dtype == fg.bfloat16 else np.uint32).copy() for p in model.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
def test_training_step_bits_are_the_same_at_1_2_3_threads(gemm_path, threads, autocast):
    runs = [_mlp_step(5, autocast, t) for t in (1, 2, 3)]
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            np.testing.assert_array_equal(x, y)


def test_autocast_linear_and_matmul_match_torch(rng, gemm_path):
    x = rng.standard_normal((13, 33)).astype(np.float32)
    w = rng.standard_normal((20, 33)).astype(np.float32)
    m = rng.standard_normal((20, 9)).astype(np.float32)
    fx, fw, fm = fg.tensor(x), fg.tensor(w, requires_grad=True), fg.tensor(m, requires_grad=True)
    with fg.autocast("cpu"):
        fy = F.linear(fx, fw) @ fm
    assert fy.dtype == fg.bfloat16
    fy.float().sum().backward()
    tx, tw, tm = torch.from_numpy(x), torch.from_numpy(w).requires_grad_(), torch.from_numpy(m).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = torch.nn.functional.linear(tx, tw) @ tm
    ty.float().sum().backward()
    # two rounded products in a row: the second's operands may already differ by one bfloat16 ulp
    np.testing.assert_allclose(fy.float().detach().numpy(), ty.float().detach().numpy(), rtol=2 ** -5, atol=0.2)
    for ours, theirs in ((fw.grad, tw.grad), (fm.grad, tm.grad)):
        assert ours.dtype == fg.float32
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2 ** -5, atol=0.2)


def test_gemm_binding_refuses_bad_arguments():
    a, b = np.zeros((3, 4), np.uint16), np.zeros((4, 5), np.uint16)
    bad = [
        (lambda: _C.bf16.gemm(a.astype(np.float32), b), TypeError, "a must be a bfloat16 or uint16"),
        (lambda: _C.bf16.gemm(a, b.astype(np.int16)), TypeError, "b must be a bfloat16 or uint16"),
        (lambda: _C.bf16.gemm(a[0], b), ValueError, "a must be a 2-D or 3-D C-contiguous"),
        (lambda: _C.bf16.gemm(a, b.T), ValueError, "b must be a 2-D or 3-D C-contiguous"),
        (lambda: _C.bf16.gemm(a, np.zeros((5, 4), np.uint16)), ValueError, "op\\(b\\) must have op\\(a\\)'s 4"),
        (lambda: _C.bf16.gemm(a, b, True), ValueError, "op\\(b\\) must have op\\(a\\)'s 3"),
        (lambda: _C.bf16.gemm(np.zeros((2, 3, 4), np.uint16), np.zeros((3, 4, 5), np.uint16)), ValueError,
         "same batch size"),
        (lambda: _C.bf16.gemm(a, b, bias=np.zeros(4, np.uint16)), ValueError, "bias must have op\\(b\\)'s 5 columns"),
        (lambda: _C.bf16.gemm(a, b, bias=np.zeros(5, np.float32)), TypeError, "bias must be a bfloat16"),
        (lambda: _C.bf16.gemm([[0]], b), TypeError, "a must be a numpy array"),
    ]
    for call, exc, match in bad:
        with pytest.raises(exc, match=match):
            call()
    assert _C.bf16.gemm(a.view(BF16), b.view(BF16)).shape == (3, 5)
    assert not _C.bf16.gemm(np.zeros((3, 0), np.uint16), np.zeros((0, 5), np.uint16)).any()  # K = 0: zeros


def test_linear_takes_the_gemm_from_8_rows_and_the_dot_form_below(rng, gemm_path):
    """_C.bf16.linear: the GEMM's bits (x w^T + bias) from 8 rows; fewer rows (decode) keep the float32 path's dot
    form, which reads the weight once (packing it would read and write it again)."""
    w, b = _bf16(rng, 40, 515), _bf16(rng, 40)
    for m in (1, 7, 8, 9):
        x = _bf16(rng, m, 515)
        got = _C.bf16.linear(x, w, b)
        if m >= 8:
            np.testing.assert_array_equal(got, _C.bf16.gemm(x, w, False, True, b))
        else:
            want = _C.gemm.linear(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
            np.testing.assert_array_equal(got, want.astype(BF16).view(np.uint16))


def test_matmul_double_backward_matches_the_float32_path():
    def run():
        a = fg.tensor(np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)).to(fg.bfloat16).requires_grad_()
        b = fg.tensor(np.linspace(-0.5, 0.7, 20, dtype=np.float32).reshape(4, 5)).to(fg.bfloat16).requires_grad_()
        (ga,) = fg.autograd.grad(((a @ b).float() ** 2).sum(), [a], create_graph=True)
        ga.float().sum().backward()
        return ga.float().numpy(), b.grad.float().numpy()
    best = run()
    _C.bf16.set_gemm_native(False)
    try:
        generic = run()
    finally:
        _C.bf16.set_gemm_native(True)
    for x, y in zip(best, generic):  # a few rounded products in a row: a bfloat16 ulp or two of values up to ~3
        np.testing.assert_allclose(x, y, rtol=2 ** -6, atol=2 ** -5)
