"""Int8 GEMM kernels (forgegrad._C.quant) against an exact integer numpy reference on every int8 path,
dynamic-quantized Linear against torch.ao's, quantize helpers against torch, errors, save/load."""
import warnings

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.quantization import (DynamicQuantizedLinear, choose_qparams, dequantize, int8_paths, qint8,
                                    quantize_dynamic, quantize_per_tensor, quint8, set_int8_path)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ALL_PATHS = ["amx", "avx512_vnni", "avx_vnni", "avx2", "scalar"]
_WHY = {"amx": "this CPU/OS has no usable AMX-INT8: " + _C.quant.amx_status(),
        "avx512_vnni": "this CPU has no AVX-512 VNNI", "avx_vnni": "this CPU has neither AVX-VNNI nor AVX-512 VNNI",
        "avx2": "this CPU has no AVX2"}


# every path runs where the machine has it; a path the CPU/OS lacks is skipped with the reason
_PATH_PARAMS = [pytest.param(p, marks=pytest.mark.skipif(p not in int8_paths(), reason=_WHY.get(p, "")))
                for p in ALL_PATHS]


@pytest.fixture(params=_PATH_PARAMS)
def int8_path(request):
    """Runs the test on one int8 path."""
    set_int8_path(request.param)
    yield request.param
    set_int8_path(None)


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    return torch


def _ref(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


SHAPES = [(1, 1, 1), (5, 7, 3), (17, 33, 64), (33, 65, 130), (2, 300, 7), (70, 40, 784), (1, 10, 128),
          (1, 40, 37), (2, 33, 41)]  # (one- and two-row GEMVs: K4 not a multiple of their accumulator sets)


@pytest.mark.parametrize("amax", [255, 127])  # 127: 7-bit activations (the AVX2 kernel's vpmaddubsw path)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_exact_every_path_and_thread_count(int8_path, threads, rng, M, N, K, amax):
    a = rng.integers(0, amax + 1, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    packed, colsum = _C.quant.pack_weight(w)
    np.testing.assert_array_equal(colsum, w.astype(np.int64).sum(1))
    for t in (1, 2, 3):
        threads(t)
        c = _C.quant.gemm_u8s8s32(a, packed, N, K)
        assert c.dtype == np.int32
        np.testing.assert_array_equal(c, _ref(a, w), err_msg=f"{int8_path}, {t} threads")


@pytest.mark.parametrize("amax", [255, 127])
@pytest.mark.parametrize("M", [1, 3])  # 1: the AVX2 7-bit kernel's one-row form
def test_gemm_extremes_do_not_saturate(int8_path, amax, M):
    # 255 * -128 pairs overflow int16 (vpmaddubsw would saturate); 127 * -128 pairs are the 7-bit
    # path's extreme; the longest allowed K stays in int32
    K = 32896
    a = np.full((M, K), amax, np.uint8)
    w = np.full((2, K), -128, np.int8)
    w[1, ::2] = 127
    packed, _ = _C.quant.pack_weight(w)
    np.testing.assert_array_equal(_C.quant.gemm_u8s8s32(a, packed, 2, K), _ref(a, w))


# Every row/column tail of the AVX2 kernels: 6-row blocks (and 1-5 row tails) on int16 panels when a
# panel has >= 4 rows, weights sign-extended in the loop below that (M 1-3, and the last panel of
# M = 65 / 130); 8-column groups of 32-column blocks (N 1, 9, 31, 33, 40); K not a multiple of 4 or 64.
@pytest.mark.parametrize("amax", [255, 127])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 64, 65, 130])
def test_gemm_exact_row_and_column_tails(int8_path, threads, rng, M, amax):
    for N, K in [(1, 1), (9, 3), (31, 66), (33, 5), (40, 131), (96, 64)]:
        a = rng.integers(0, amax + 1, (M, K), dtype=np.uint8)
        w = rng.integers(-128, 128, (N, K), dtype=np.int8)
        packed, _ = _C.quant.pack_weight(w)
        for t in (1, 3):
            threads(t)
            np.testing.assert_array_equal(_C.quant.gemm_u8s8s32(a, packed, N, K), _ref(a, w),
                                          err_msg=f"{int8_path}, M{M} N{N} K{K}, {t} threads")


def test_linear_u8_epilogue_tails_and_specials(int8_path, rng):
    # full 32-column blocks take the vector epilogue, the rest the scalar one: both must give the
    # scalar results, also for relu of -0 / NaN scale products and saturating requantization
    M, N, K = 13, 72, 40
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    w_scale = rng.uniform(0.001, 0.01, N).astype(np.float32)
    w_scale[[0, 33, 70]] = [np.nan, 0.0, np.inf]
    bias = rng.standard_normal(N).astype(np.float32)
    bias[[1, 40]] = [-0.0, np.nan]
    packed, colsum = _C.quant.pack_weight(w)
    a_scale, a_zp = 0.05, 200
    with np.errstate(invalid="ignore", over="ignore"):
        acc = (_ref(a, w) - a_zp * colsum[None, :]).astype(np.float32)
        want = acc * (np.float32(a_scale) * w_scale) + bias
        for relu in (False, True):
            y = _C.quant.linear_u8(a, a_scale, a_zp, packed, colsum, w_scale, bias, relu, None, 0)
            v = np.where(want > 0, want, np.float32(0)) if relu else want
            np.testing.assert_array_equal(y, v)
            q = _C.quant.linear_u8(a, a_scale, a_zp, packed, colsum, w_scale, bias, relu, 0.003, 128)
            t = np.rint(v * np.float32(1 / 0.003)) + np.float32(128)
            t = np.where(t < 255, t, np.float32(255))
            t = np.where(t > 0, t, np.float32(0))
            np.testing.assert_array_equal(q, t.astype(np.uint8))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 32, 33, 47, 100, 1000])
def test_quantize_u8_same_on_every_simd_path(n, rng):
    # the vector loops (32 and 8 floats at a time) against the scalar tail: ties to even, clamping,
    # NaN -> qmax, +-inf
    x = (rng.standard_normal(n) * 40).astype(np.float32)
    x[::5] = np.round(x[::5]) + 0.5  # exact halves: ties round to even
    if n > 3:
        x[[1, 2, 3]] = [np.nan, np.inf, -np.inf]
    outs = {}
    isas = ["scalar", "avx2", "avx512"]
    for simd in isas[:isas.index(fg.cpu_info()["detected_isa"]) + 1]:
        before = fg.get_simd()
        fg.set_simd(simd)
        try:
            outs[simd] = [quantize_per_tensor(x, 1.0, 7, quint8), _C.quant.quantize_u8(x, 0.5, 3, 2, 127)]
        finally:
            fg.set_simd(before)
    t = np.rint(x * np.float32(2.0)) + np.float32(3)
    t = np.where(t < 127, t, np.float32(127))
    want = np.where(t > 2, t, np.float32(2)).astype(np.uint8)
    for simd, (q, q7) in outs.items():
        np.testing.assert_array_equal(q, outs["scalar"][0], err_msg=simd)
        np.testing.assert_array_equal(q7, want, err_msg=simd)


@pytest.mark.parametrize("offset", [0, 1, 16, 40])
def test_gemm_activation_rows_at_any_alignment(int8_path, rng, offset):
    # K a multiple of 64: the kernel reads the caller's rows in place (the AMX path copies rows that
    # are not on 64-byte boundaries to an aligned slice first)
    M, N, K = 70, 96, 256
    buf = np.zeros(M * K + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    a = buf[start:start + M * K].reshape(M, K)
    a[:] = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    packed, _ = _C.quant.pack_weight(w)
    np.testing.assert_array_equal(_C.quant.gemm_u8s8s32(a, packed, N, K), _ref(a, w))


def test_linear_u8_epilogues_same_on_every_path(int8_path, rng):
    M, N, K = 41, 77, 70  # row blocks of 32 and 9, column blocks of 32, 32 and 13
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    w_scale = rng.uniform(0.001, 0.01, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    packed, colsum = _C.quant.pack_weight(w)
    a_scale, a_zp = 0.05, 117
    acc = (_ref(a, w) - a_zp * colsum[None, :]).astype(np.float32)
    want = acc * (np.float32(a_scale) * w_scale) + bias
    y = _C.quant.linear_u8(a, a_scale, a_zp, packed, colsum, w_scale, bias, False, None, 0)
    np.testing.assert_array_equal(y, want)  # the same float operations, in the same order
    y = _C.quant.linear_u8(a, a_scale, a_zp, packed, colsum, w_scale, bias, True, None, 0)
    np.testing.assert_array_equal(y, np.maximum(want, 0))
    q = _C.quant.linear_u8(a, a_scale, a_zp, packed, colsum, w_scale, None, True, 0.02, 3)
    want_q = np.clip(np.rint(np.maximum(acc * (np.float32(a_scale) * w_scale), 0) * np.float32(1 / 0.02)) + 3, 0, 255)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, want_q.astype(np.uint8))


def test_results_identical_across_paths(rng, use_int8_path):
    x = (rng.standard_normal((13, 91)) * 2).astype(np.float32)
    lin = nn.Linear(91, 45)
    q = DynamicQuantizedLinear.from_float(lin, relu=True)
    outs = {}
    for p in int8_paths():
        use_int8_path(p)
        outs[p] = q(fg.tensor(x))._data
    for p, y in outs.items():
        np.testing.assert_array_equal(y, outs["scalar"], err_msg=p)


def test_choose_qparams_and_quantize_match_torch(rng):
    torch = _torch()
    for scale_x, shift in [(1.0, 0.0), (3.0, 2.0), (0.5, -4.0), (1e-6, 0.0)]:
        x = (rng.standard_normal(500) * scale_x + shift).astype(np.float32)
        for rr in (True, False):
            s, z = choose_qparams(x, reduce_range=rr)
            ts, tz = torch._choose_qparams_per_tensor(torch.from_numpy(x), rr)
            assert np.float32(s) == np.float32(ts) and z == tz, (scale_x, shift, rr)
            q = quantize_per_tensor(x, s, z, quint8)
            tq = torch.quantize_per_tensor(torch.from_numpy(x), ts, tz, torch.quint8).int_repr().numpy()
            np.testing.assert_array_equal(q, tq)
            np.testing.assert_allclose(dequantize(q, s, z), x, atol=s * 0.5 + 1e-6)


def _torch_dynamic_linear(torch, lin_fg):
    from torch.ao.quantization import per_channel_dynamic_qconfig
    tl = torch.nn.Linear(lin_fg.in_features, lin_fg.out_features, bias=lin_fg.bias is not None)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin_fg.weight._data))
        if lin_fg.bias is not None:
            tl.bias.copy_(torch.from_numpy(lin_fg.bias._data))
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
    return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(tl), spec, dtype=torch.qint8)


@pytest.mark.parametrize("shape,K,N,bias", [((5,), 37, 19, True), ((64,), 784, 256, True), ((1,), 128, 10, False),
                                            ((3, 4), 50, 33, True)])
def test_dynamic_linear_matches_torch(rng, shape, K, N, bias):
    torch = _torch()
    lin = nn.Linear(K, N, bias=bias)
    tq = _torch_dynamic_linear(torch, lin)
    x = (rng.standard_normal(shape + (K,)) * 3).astype(np.float32)
    yt = tq(torch.from_numpy(x)).numpy()
    qw = tq[0].weight()
    for reduce_range in (True, False):
        q = quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=qint8, reduce_range=reduce_range)[0]
        np.testing.assert_array_equal(q.weight._data, qw.int_repr().numpy())
        np.testing.assert_array_equal(q.weight_scale._data, qw.q_per_channel_scales().numpy().astype(np.float32))
        y = q(fg.tensor(x))._data
        assert y.shape == shape + (N,)
        s, _ = choose_qparams(x, reduce_range=True)  # torch's activation step (7 bits on x86)
        step = s * np.abs(q.dequantized_weight()).sum(1)  # one activation step in every product
        if reduce_range:  # the same quantization as torch: equal up to float rounding
            np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-5)
        else:  # 8-bit activations: a different (finer) rounding, within one of torch's steps
            assert (np.abs(y - yt) <= step).all()


def test_quantize_dynamic_model_fuses_relu_and_keeps_others(rng):
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    q = quantize_dynamic(model, {nn.Linear})
    assert isinstance(q[0], DynamicQuantizedLinear) and q[0].relu and not q[2].relu
    assert isinstance(q[1], nn.Identity)  # the ReLU runs in the kernel (torch.ao fuse_modules style)
    assert isinstance(model[0], nn.Linear)  # not in place by default
    x = rng.standard_normal((7, 20)).astype(np.float32)
    with fg.no_grad():
        ref = model(fg.tensor(x))._data
    y = q(fg.tensor(x))._data
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()


def test_save_load_int8_checkpoint(tmp_path, rng):
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    q = quantize_dynamic(model, {nn.Linear})
    fg.save(model.state_dict(), tmp_path / "fp32.safetensors")
    fg.save(q.state_dict(), tmp_path / "int8.safetensors")
    ratio = (tmp_path / "int8.safetensors").stat().st_size / (tmp_path / "fp32.safetensors").stat().st_size
    assert ratio <= 0.3, ratio
    sd = fg.load(tmp_path / "int8.safetensors")
    assert sd["0.weight"].dtype == np.int8 and sd["0.weight_scale"].dtype == np.float32
    other = quantize_dynamic(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                           nn.Linear(128, 10)), {nn.Linear})
    x = fg.tensor(rng.standard_normal((3, 784)).astype(np.float32))
    other(x)  # packs its own weights first: loading must drop that cache
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other(x)._data, q(x)._data)


def test_bad_input_raises_clear_errors(rng):
    w = rng.integers(-128, 128, (4, 10), dtype=np.int8)
    packed, colsum = _C.quant.pack_weight(w)
    a = rng.integers(0, 256, (3, 10), dtype=np.uint8)
    with pytest.raises(TypeError, match="a must have dtype uint8"):
        _C.quant.gemm_u8s8s32(a.astype(np.int8), packed, 4, 10)
    with pytest.raises(ValueError, match="a must have shape"):
        _C.quant.gemm_u8s8s32(a[:, :9].copy(), packed, 4, 10)
    with pytest.raises(ValueError, match="packed must have shape"):
        _C.quant.gemm_u8s8s32(a, packed[:-1], 4, 10)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.quant.gemm_u8s8s32(np.asfortranarray(np.ones((3, 10), np.uint8)), packed, 4, 10)
    with pytest.raises(TypeError, match="w must have dtype int8"):
        _C.quant.pack_weight(w.astype(np.float32))
    with pytest.raises(ValueError, match="could overflow"):
        _C.quant.pack_weight(np.zeros((1, 40000), np.int8))
    with pytest.raises(ValueError, match="w_scale must have shape"):
        _C.quant.linear_u8(a, 0.1, 3, packed, colsum, np.ones(3, np.float32), None, False, None, 0)
    with pytest.raises(ValueError, match="a_zero_point"):
        _C.quant.linear_u8(a, 0.1, 300, packed, colsum, np.ones(4, np.float32), None, False, None, 0)
    with pytest.raises(ValueError, match="a_scale"):
        _C.quant.linear_u8(a, 0.0, 3, packed, colsum, np.ones(4, np.float32), None, False, None, 0)
    q = DynamicQuantizedLinear.from_float(nn.Linear(10, 4))
    with pytest.raises(ValueError, match="NaN or infinity"):
        q(fg.tensor(np.full((2, 10), np.nan, np.float32)))
    with pytest.raises(ValueError, match=r"shape \(\*, 10\)"):
        q(fg.tensor(np.ones((2, 9), np.float32)))
    with pytest.raises(TypeError, match="float32"):
        q(fg.tensor(np.ones((2, 10), np.int64)))
    with pytest.raises(ValueError, match="cannot quantize Conv2d"):
        quantize_dynamic(nn.Sequential(nn.Conv2d(1, 2, 3)), {nn.Conv2d})
    with pytest.raises(ValueError, match="qint8"):
        quantize_dynamic(nn.Linear(3, 4), {nn.Linear}, dtype=quint8)
    with pytest.raises(ValueError, match="unknown int8 path"):
        set_int8_path("sse")
    with pytest.raises(ValueError, match="NaN or infinity"):
        choose_qparams(np.array([1.0, np.inf], np.float32))


def test_set_simd_lowers_int8_path(simd_path):
    from forgegrad.quantization import int8_path
    # under AVX2 the avx_vnni kernel stays where its VEX encoding (AVX-VNNI, an AVX2-class extension) runs
    avx2_best = "avx_vnni" if _C.quant.avx_vnni_encoding() == "vex" else "avx2"
    want = {"scalar": "scalar", "avx2": avx2_best}.get(simd_path, int8_paths()[0])
    assert int8_path() == want


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), None)
    except OSError:
        return None


@pytest.mark.skipif(_cpu_flags() is None, reason="no /proc/cpuinfo (not Linux): the kernel's own list of CPU "
                    "flags, which this test compares the CPUID probe with, is not there")
def test_avx_vnni_encoding_follows_the_cpu():
    """The avx_vnni path runs the VEX encoding exactly where the kernel reports AVX-VNNI, the EVEX one
    where only AVX-512 VNNI is there (a CPU without AVX-VNNI faults on the VEX form)."""
    flags = _cpu_flags()
    want = "vex" if "avx_vnni" in flags else "evex" if "avx512_vnni" in flags else ""
    assert _C.quant.avx_vnni_encoding() == want
    assert ("avx_vnni" in int8_paths()) == (want != "")


def test_digits_mlp_int8_accuracy_within_half_a_point():
    pytest.importorskip("sklearn")
    from forgegrad import datasets, optim
    import forgegrad.nn.functional as F
    (Xtr, ytr), (Xte, yte) = datasets.load_digits(return_split=True)
    mean, scale = Xtr.mean(0), Xtr.std(0) + 0.1
    Xtr, Xte = ((Xtr - mean) / scale).astype(np.float32), ((Xte - mean) / scale).astype(np.float32)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0)
    for _ in range(8):
        idx = order.permutation(len(Xtr))
        for i in range(0, len(idx), 32):
            b = idx[i:i + 32]
            loss = F.cross_entropy(model(fg.tensor(Xtr[b])), fg.tensor(ytr[b].astype(np.int64)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with fg.no_grad():
        acc32 = (model(fg.tensor(Xte))._data.argmax(1) == yte).mean() * 100
    q = quantize_dynamic(model, {nn.Linear}, dtype=qint8)
    acc8 = (q(fg.tensor(Xte))._data.argmax(1) == yte).mean() * 100
    assert acc32 > 94
    assert abs(acc8 - acc32) <= 0.5, (acc32, acc8)
