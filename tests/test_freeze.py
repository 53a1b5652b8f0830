"""Packed weights: ``_C.gemm.PackedWeight`` (a linear weight packed once for the GEMM) and
``nn.utils.freeze`` (an inference copy of a model whose Linear weights are packed). The packed path
must give exactly the unpacked path's bits on every shape and layout, thread count and SIMD path,
and a frozen model must never use a packed copy that no longer matches its weight."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.autograd import no_grad
from forgegrad.models.transformer import GPT

RNG = np.random.default_rng(11)

# (M, N, K): packed-path shapes with edge panels and several K slices, plus the shapes sgemm runs
# without packing (M <= 8, N <= 16, tiny products), where the packed weight must simply be ignored.
SHAPES = [(128, 768, 256), (37, 129, 257), (300, 100, 700), (9, 33, 3), (1, 50, 70), (5, 300, 1000),
          (200, 13, 90), (64, 64, 64), (17, 1, 5), (130, 1000, 513)]


def _case(M, N, K):
    x = RNG.standard_normal((M, K)).astype(np.float32)
    w = RNG.standard_normal((N, K)).astype(np.float32)
    b = RNG.standard_normal(N).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("layout", ["C", "F"])
def test_packed_linear_equals_linear(M, N, K, layout, simd_path):
    x, w, b = _case(M, N, K)
    if layout == "F":
        w = np.asfortranarray(w)  # a transposed view: the other op(B) layout
    p = _C.gemm.PackedWeight(w)
    assert p.shape == (N, K) and p.source is w
    for bias in (b, None):
        for act, alpha in ((-1, 0.0), (1, 0.1)):
            want = _C.gemm.linear(x, w, bias, act, alpha)
            got = _C.gemm.linear(x, w, bias, act, alpha, packed=p)
            np.testing.assert_array_equal(got, want)
    ref = x.astype(np.float64) @ w.astype(np.float64).T + b
    np.testing.assert_allclose(_C.gemm.linear(x, w, b, packed=p), ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_packed_linear_is_identical_at_any_thread_count(threads):
    x, w, b = _case(250, 300, 600)
    p = _C.gemm.PackedWeight(w)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append(_C.gemm.linear(x, w, b, packed=p))
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_packed_weight_from_another_isa_is_not_used(simd_path):
    # packed under the best ISA, used under each: a layout of another ISA would be garbage, so the
    # binding reads the weight itself then
    x, w, b = _case(100, 70, 300)
    fg.set_simd(fg.cpu_info()["detected_isa"])
    p = _C.gemm.PackedWeight(w)
    fg.set_simd(simd_path)
    np.testing.assert_array_equal(_C.gemm.linear(x, w, b, packed=p), _C.gemm.linear(x, w, b))


def test_packed_weight_bad_input():
    x, w, b = _case(20, 30, 40)
    p = _C.gemm.PackedWeight(w)
    with pytest.raises(ValueError, match="packed was made from another array"):
        _C.gemm.linear(x, w.copy(), b, packed=p)
    with pytest.raises(TypeError, match="packed"):
        _C.gemm.linear(x, w, b, packed="not packed")
    with pytest.raises(TypeError, match="PackedWeight: weight must have dtype float32"):
        _C.gemm.PackedWeight(w.astype(np.float64))
    with pytest.raises(ValueError, match="PackedWeight: weight must be 2-D"):
        _C.gemm.PackedWeight(b)
    with pytest.raises(TypeError, match="PackedWeight: weight must be a numpy.ndarray"):
        _C.gemm.PackedWeight([[1.0]])
    empty = _C.gemm.PackedWeight(np.zeros((0, 4), np.float32))
    assert _C.gemm.linear(x[:, :4].copy(), empty.source, None, packed=empty).shape == (20, 0)


def _gpt():
    fg.manual_seed(3)
    return GPT(vocab_size=61, block_size=40, n_layer=2, n_head=3, n_embd=48).eval()


def test_frozen_gpt_matches_the_model_bit_for_bit():
    model = _gpt()
    frozen = nn.utils.freeze(model)
    assert nn.utils.is_frozen(frozen) and not nn.utils.is_frozen(model)
    ids = fg.tensor(RNG.integers(0, 61, (3, 37)))
    with no_grad():
        np.testing.assert_array_equal(frozen(ids).numpy(), model(ids).numpy())
    # with a graph (the op path: the packed weights are not used) the values agree too
    np.testing.assert_allclose(frozen(ids).numpy(), model(ids).numpy(), rtol=1e-5, atol=1e-5)


def test_frozen_sequential_and_dense_match():
    fg.manual_seed(4)
    model = nn.Sequential(nn.Linear(37, 90), nn.GELU(), nn.Linear(90, 20), nn.Dense(11, activation="relu"))
    x = fg.tensor(RNG.standard_normal((45, 37)).astype(np.float32))
    with no_grad():
        want = model(x).numpy()
        frozen = nn.utils.freeze(model)
        np.testing.assert_array_equal(frozen(x).numpy(), want)
        np.testing.assert_array_equal(frozen[0](x).numpy(), model[0](x).numpy())  # Linear alone


def test_freeze_leaves_the_original_trainable_and_the_copy_read_only():
    fg.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model.train()
    frozen = nn.utils.freeze(model)
    assert model.training and not frozen.training
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ValueError, match="read-only"):
        frozen[0].weight.numpy()[0, 0] = 1.0
    # the original still trains, and a step on it does not reach the frozen copy
    x = fg.tensor(RNG.standard_normal((10, 8)).astype(np.float32))
    with no_grad():
        before = frozen(x).numpy().copy()
    opt = fg.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    opt.step()
    with no_grad():
        np.testing.assert_array_equal(frozen(x).numpy(), before)
        assert not np.array_equal(model(x).numpy(), before)


def test_a_replaced_weight_is_read_not_its_stale_packed_copy():
    fg.manual_seed(6)
    frozen = nn.utils.freeze(nn.Linear(30, 50))
    x = fg.tensor(RNG.standard_normal((40, 30)).astype(np.float32))
    new = RNG.standard_normal((50, 30)).astype(np.float32)
    frozen.weight = nn.Parameter(fg.tensor(new))
    with no_grad():
        got = frozen(x).numpy()
    np.testing.assert_array_equal(got, _C.gemm.linear(x.numpy(), new, frozen.bias.numpy()))



def test_freeze_in_place_makes_the_model_itself_the_frozen_one():
    model = _gpt().train()
    ids = fg.tensor(RNG.integers(0, 61, (3, 37)))
    twin = nn.utils.freeze(model)  # a copy, for the bits
    arrays = {name: p.numpy() for name, p in model.named_parameters()}
    from forgegrad.nn.utils.freeze import packed_nbytes
    assert packed_nbytes(model) == 0
    assert nn.utils.freeze(model, inplace=True) is model
    assert nn.utils.is_frozen(model) and not model.training
    linear_bytes = sum(m.weight.numpy().nbytes for m in model.modules() if isinstance(m, nn.Linear))
    assert linear_bytes <= packed_nbytes(model) <= 1.5 * linear_bytes  # a copy of each, its panels padded
    # no copy: the very arrays it held, now read-only and without gradients
    assert all(p.numpy() is arrays[name] and not p.requires_grad and not p.numpy().flags.writeable
               for name, p in model.named_parameters())
    with pytest.raises(ValueError, match="read-only"):
        model.transformer.h[0].attn.c_attn.weight.numpy()[0, 0] = 1.0
    with no_grad():
        np.testing.assert_array_equal(model(ids).numpy(), twin(ids).numpy())


def test_freezing_again_packs_only_what_changed():
    fg.manual_seed(8)
    model = nn.utils.freeze(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 25)), inplace=True)
    first, second = (model[i].__dict__["_packed_weight"] for i in (0, 2))
    new = RNG.standard_normal((25, 30)).astype(np.float32)
    model[2].weight = nn.Parameter(fg.tensor(new))  # a replaced weight: read as it is until frozen again
    assert nn.utils.freeze(model, inplace=True) is model
    assert model[0].__dict__["_packed_weight"] is first  # the same array: its packed copy kept
    repacked = model[2].__dict__["_packed_weight"]
    assert repacked is not second and repacked.source is model[2].weight.numpy()
    x = fg.tensor(RNG.standard_normal((12, 20)).astype(np.float32))
    with no_grad():
        hidden = _C.gemm.linear(x.numpy(), model[0].weight.numpy(), model[0].bias.numpy(), _C.activation.RELU, 0.0)
        np.testing.assert_array_equal(model(x).numpy(), _C.gemm.linear(hidden, new, model[2].bias.numpy()))
    with pytest.raises(TypeError, match="freeze: inplace must be True or False"):
        nn.utils.freeze(model, inplace="yes")

def test_freeze_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="freeze: module must be a forgegrad.nn.Module"):
        nn.utils.freeze(lambda x: x)


def test_a_copy_of_a_frozen_model_reads_its_own_weights():
    # deepcopy (e.g. quantize_weight_only's) gives new writeable arrays: the copy must not keep a
    # packed snapshot it cannot follow
    import copy
    fg.manual_seed(7)
    frozen = nn.utils.freeze(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)))
    twin = copy.deepcopy(frozen)
    assert nn.utils.is_frozen(frozen) and not nn.utils.is_frozen(twin)
    x = fg.tensor(RNG.standard_normal((12, 20)).astype(np.float32))
    twin[0].weight.numpy()[:] = 0.5
    with no_grad():
        np.testing.assert_array_equal(twin[0](x).numpy(), _C.gemm.linear(x.numpy(), twin[0].weight.numpy(),
                                                                            twin[0].bias.numpy()))
    from forgegrad.quantization import quantize_weight_only
    quantized = quantize_weight_only(frozen)
    with no_grad():
        assert quantized(x).shape == (12, 5)


# Winograd layers (3x3, stride 1, >= 16 channels a group): one image and batches, groups, odd sizes
CONV_CASES = [((1, 32, 14, 14), (64, 32), 1), ((3, 16, 9, 11), (20, 16), 1), ((2, 32, 11, 5), (34, 16), 2),
              ((6, 32, 14, 13), (40, 32), 1)]


def _conv(xshape, wshape, groups, packed=None, pool=False, act=-1):
    x = np.random.default_rng(1).standard_normal(xshape).astype(np.float32)
    w = np.random.default_rng(2).standard_normal(wshape + (3, 3)).astype(np.float32)
    b = np.random.default_rng(3).standard_normal(wshape[0]).astype(np.float32)
    oh, ow = xshape[2], xshape[3]
    y = np.empty((xshape[0], wshape[0]) + ((oh // 2, ow // 2) if pool else (oh, ow)), np.float32)
    return x, w, b, y


@pytest.mark.parametrize("xshape,wshape,groups", CONV_CASES)
def test_packed_conv_equals_conv(xshape, wshape, groups, simd_path, threads):
    """A PackedConvWeight (the kernels' Winograd transform made once) gives the unpacked call's bits,
    with the fused activation and pool too, at any thread count."""
    x, w, b, _ = _conv(xshape, wshape, groups)
    packed = _C.conv.PackedConvWeight(w, groups)
    assert packed.source is w and packed.groups == groups and packed.nbytes == 16 * w.shape[0] * w.shape[1] * 4
    for pool, act in ((False, -1), (True, _C.activation.RELU)):
        _, _, _, want = _conv(xshape, wshape, groups, pool=pool)
        _C.conv.conv2d_forward(x, w, b, want, (1, 1), (1, 1, 1, 1), (1, 1), groups, act, 0.0, pool)
        for n in (1, 2, 3):
            threads(n)
            got = np.empty_like(want)
            _C.conv.conv2d_forward(x, w, b, got, (1, 1), (1, 1, 1, 1), (1, 1), groups, act, 0.0, pool, packed)
            assert got.tobytes() == want.tobytes()


def test_packed_conv_from_another_isa_or_for_other_layers_is_not_used(simd_path):
    x, w, b, want = _conv((1, 32, 14, 14), (64, 32), 1)
    fg.set_simd(fg.cpu_info()["detected_isa"])
    packed = _C.conv.PackedConvWeight(w)
    fg.set_simd(simd_path)
    _C.conv.conv2d_forward(x, w, b, want, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    got = np.empty_like(want)
    _C.conv.conv2d_forward(x, w, b, got, (1, 1), (1, 1, 1, 1), (1, 1), 1, packed=packed)
    assert got.tobytes() == want.tobytes()
    # a strided layer never runs Winograd: the packed transform is simply not read
    y2 = np.empty((1, 64, 7, 7), np.float32)
    want2 = np.empty_like(y2)
    _C.conv.conv2d_forward(x, w, b, want2, (2, 2), (1, 1, 1, 1), (1, 1), 1)
    _C.conv.conv2d_forward(x, w, b, y2, (2, 2), (1, 1, 1, 1), (1, 1), 1, packed=packed)
    assert y2.tobytes() == want2.tobytes()
    # layers that never run Winograd hold nothing
    assert _C.conv.PackedConvWeight(np.zeros((8, 4, 3, 3), np.float32)).nbytes == 0
    assert _C.conv.PackedConvWeight(np.zeros((32, 32, 5, 5), np.float32)).nbytes == 0


def test_packed_conv_bad_input():
    x, w, b, y = _conv((1, 32, 14, 14), (64, 32), 1)
    packed = _C.conv.PackedConvWeight(w)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    with pytest.raises(ValueError, match="packed was made from another array"):
        _C.conv.conv2d_forward(x, w.copy(), b, y, *args, packed=packed)
    w2 = w[:, :16].copy()  # (64, 16, 3, 3): groups=2 on the 32 input channels
    with pytest.raises(ValueError, match="packed was made for groups=1, got groups=2"):
        _C.conv.conv2d_forward(x, w2, b, y, (1, 1), (1, 1, 1, 1), (1, 1), 2, packed=_C.conv.PackedConvWeight(w2, 1))
    with pytest.raises(TypeError):
        _C.conv.conv2d_forward(x, w, b, y, *args, packed="not packed")
    with pytest.raises(TypeError, match="weight"):
        _C.conv.PackedConvWeight(w.astype(np.float64))
    with pytest.raises(ValueError, match="weight must be 4-D"):
        _C.conv.PackedConvWeight(w[0])
    with pytest.raises(ValueError, match="groups must be >= 1 and divide out_channels 64, got 3"):
        _C.conv.PackedConvWeight(w, 3)


def test_frozen_lenet_matches_the_model_bit_for_bit():
    """freeze packs each 3x3 conv's Winograd transform; the graph-free forward uses it where the conv
    runs Winograd (LeNet's second conv, from one 14x14 image) and gets the same bits."""
    fg.manual_seed(8)
    model = fg.models.LeNet().eval()
    frozen = nn.utils.freeze(model)
    assert frozen.features[3].__dict__["_packed_weight"].nbytes > 0
    assert "_packed_weight" not in frozen.features[0].__dict__  # one input channel: never Winograd
    for batch in (1, 2, 7):
        x = fg.tensor(RNG.standard_normal((batch, 1, 28, 28)).astype(np.float32))
        with no_grad():
            np.testing.assert_array_equal(frozen(x).numpy(), model(x).numpy())
    # a replaced conv weight is read as it is, not through its stale transform
    new = RNG.standard_normal(frozen.features[3].weight.shape).astype(np.float32)
    frozen.features[3].weight = nn.Parameter(fg.tensor(new))
    model.features[3].weight = nn.Parameter(fg.tensor(new.copy()))
    with no_grad():
        np.testing.assert_array_equal(frozen(x).numpy(), model(x).numpy())


def test_frozen_cache_matches_the_very_arrays_and_is_not_copied():
    import copy
    import pickle

    from forgegrad.nn.utils.freeze import FrozenCache
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    cache = FrozenCache(size=2)
    assert cache.get("rows", (a,), lambda: 1) == 1
    assert cache.get("rows", (a,), lambda: 2) == 1  # kept
    assert cache.get("rows", (b,), lambda: 3) == 3  # equal values, another array: another entry
    assert len(cache) == 2
    assert cache.get("other", (a,), lambda: 4) == 4 and len(cache) == 1  # full: cleared first
    assert len(copy.deepcopy(cache)) == 0 and copy.deepcopy(cache).size == 2
    assert len(pickle.loads(pickle.dumps(cache))) == 0


def test_frozen_copy_keeps_weights_64_byte_aligned_and_tied_weights_shared():
    """deepcopy's numpy copies start 16 bytes into a cache line: freeze puts them back on 64-byte boundaries (a
    batch-1 Linear streams its weight with vector loads), one array per array the model shared."""
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    model[4].register_buffer("shared", model[4].weight.detach())  # a second tensor on the weight's array
    x = fg.tensor(RNG.standard_normal((1, 784)).astype(np.float32))
    frozen = nn.utils.freeze(model)
    for layer in (frozen[0], frozen[2], frozen[4]):
        for t in (layer.weight, layer.bias):
            assert t._data.ctypes.data % 64 == 0
    assert frozen[4].shared._data is frozen[4].weight._data
    with no_grad():
        np.testing.assert_array_equal(frozen(x).numpy(), model(x).numpy())
