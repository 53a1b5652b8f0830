"""forgegrad's dtype utilities (finfo, iinfo, default dtype, promotion), global state (generator state, print
options, deterministic switches, flush_denormal, inter-op threads) and the factories asarray, frombuffer,
empty_strided, scalar_tensor and from_dlpack, each against torch 2.13."""
import array
import itertools

import numpy as np
import pytest
import torch

import forgegrad as fg

FG_DTYPES = [fg.bool, fg.uint8, fg.int8, fg.int16, fg.int32, fg.int64, fg.float16, fg.float32, fg.float64]


def _t(d):
    return getattr(torch, d.name)


@pytest.fixture
def default_dtype():
    """Restores forgegrad's and torch's default dtype to float32, however the test ends."""
    try:
        yield
    finally:
        fg.set_default_dtype(fg.float32)
        torch.set_default_dtype(torch.float32)
    assert fg.get_default_dtype() == fg.float32


# ---- finfo / iinfo ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [fg.float16, fg.float32, fg.float64])
def test_finfo_matches_torch(d):
    a, b = fg.finfo(d), torch.finfo(_t(d))
    for attr in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert fg.finfo(type=d) == a


def test_finfo_default_and_errors(default_dtype):
    assert fg.finfo().dtype == torch.finfo().dtype == "float32"
    fg.set_default_dtype(fg.float64)
    assert fg.finfo().eps == torch.finfo(torch.float64).eps
    with pytest.raises(TypeError, match="finfo.*iinfo"):
        fg.finfo(fg.int32)
    with pytest.raises(TypeError, match="'type'"):
        fg.finfo("float32")


@pytest.mark.parametrize("d", [fg.uint8, fg.int8, fg.int16, fg.int32, fg.int64])
def test_iinfo_matches_torch(d):
    a, b = fg.iinfo(d), torch.iinfo(_t(d))
    assert (a.bits, a.max, a.min, a.dtype) == (b.bits, b.max, b.min, b.dtype)


def test_iinfo_errors():
    with pytest.raises(TypeError, match="finfo"):
        fg.iinfo(fg.float32)
    with pytest.raises(TypeError):
        torch.iinfo(torch.bool)
    with pytest.raises(TypeError, match="bool"):
        fg.iinfo(fg.bool)
    with pytest.raises(TypeError, match="'type'"):
        fg.iinfo(3)


# ---- default dtype ----------------------------------------------------------------------------------------
FLOAT_FACTORIES = [
    ("tensor", lambda m: m.tensor([1.5, 2.0])), ("tensor scalar", lambda m: m.tensor(2.5)),
    ("zeros", lambda m: m.zeros(2, 3)), ("ones", lambda m: m.ones((2,))), ("empty", lambda m: m.empty(2)),
    ("full", lambda m: m.full((2,), 1.5)), ("rand", lambda m: m.rand(3)), ("randn", lambda m: m.randn(2, 2)),
    ("arange", lambda m: m.arange(0.0, 2.0, 0.5)), ("arange int start", lambda m: m.arange(0, 2.5)),
    ("linspace", lambda m: m.linspace(0, 1, 5)), ("logspace", lambda m: m.logspace(0, 1, 3)),
    ("eye", lambda m: m.eye(3)), ("normal", lambda m: m.normal(0.0, 1.0, (2,))),
    ("scalar_tensor", lambda m: m.scalar_tensor(3)), ("asarray", lambda m: m.asarray([1.0, 2.0])),
    ("empty_strided", lambda m: m.empty_strided((2, 2), (2, 1))),
]


@pytest.mark.parametrize("name,make", FLOAT_FACTORIES, ids=[n for n, _ in FLOAT_FACTORIES])
@pytest.mark.parametrize("d", [fg.float32, fg.float64])
def test_factories_follow_default_dtype(default_dtype, name, make, d):
    fg.set_default_dtype(d)
    torch.set_default_dtype(_t(d))
    assert fg.get_default_dtype() == d and torch.get_default_dtype() == _t(d)
    assert make(fg).dtype.name == str(make(torch).dtype).replace("torch.", "") == d.name


def test_default_dtype_leaves_other_dtypes(default_dtype):
    fg.set_default_dtype(fg.float64)
    assert fg.tensor([1, 2]).dtype == fg.int64 and fg.tensor([True]).dtype == fg.bool
    assert fg.arange(3).dtype == fg.int64
    assert fg.tensor(np.zeros(2, np.float32)).dtype == fg.float32  # an ndarray keeps its dtype, as torch.tensor
    assert fg.zeros(2, dtype=fg.float32).dtype == fg.float32
    assert fg.FloatTensor([1.0]).dtype == fg.float32


def test_default_dtype_nn_parameters(default_dtype):
    fg.set_default_dtype(fg.float64)
    torch.set_default_dtype(torch.float64)
    for ctor in (lambda m: m.nn.Linear(3, 2), lambda m: m.nn.Conv2d(1, 2, 3), lambda m: m.nn.LayerNorm(4),
                 lambda m: m.nn.BatchNorm1d(3), lambda m: m.nn.Embedding(5, 2), lambda m: m.nn.LSTM(3, 4)):
        ours = {k: v.dtype.name for k, v in ctor(fg).state_dict().items()}
        ref = {k: str(v.dtype).replace("torch.", "") for k, v in ctor(torch).state_dict().items()}
        assert ours == ref
    lin = fg.nn.Linear(3, 2)
    assert lin(fg.randn(4, 3)).dtype == fg.float64


def test_set_default_dtype_errors(default_dtype):
    for bad in (fg.int64, fg.float16, fg.bool):
        with pytest.raises(TypeError, match="'d'"):
            fg.set_default_dtype(bad)
    with pytest.raises(TypeError):
        torch.set_default_dtype(torch.int64)
    with pytest.raises(TypeError, match="'d'"):
        fg.set_default_dtype("float64")
    assert fg.get_default_dtype() == fg.float32


def test_set_default_dtype_restored_by_fixture(default_dtype):
    fg.set_default_dtype(fg.float64)
    assert fg.zeros(1).dtype == fg.float64


def test_default_is_float32_after():
    assert fg.get_default_dtype() == fg.float32 and fg.zeros(1).dtype == fg.float32


# ---- promotion --------------------------------------------------------------------------------------------
def test_promote_types_every_pair():
    for a, b in itertools.product(FG_DTYPES, repeat=2):
        assert fg.promote_types(a, b).name == str(torch.promote_types(_t(a), _t(b))).replace("torch.", ""), (a, b)
    assert fg.promote_types(type1=fg.int8, type2=fg.uint8) == fg.int16
    with pytest.raises(TypeError, match="'type2'"):
        fg.promote_types(fg.int8, "int8")


def _name(d):
    return d.name if isinstance(d, fg.dtype) else str(d).replace("torch.", "")


def test_can_cast_every_pair():
    for a, b in itertools.product(FG_DTYPES, repeat=2):
        assert fg.can_cast(a, b) == torch.can_cast(_t(a), _t(b)), (a, b)
    assert fg.can_cast(from_=fg.float32, to=fg.int64) is False
    with pytest.raises(TypeError, match="'to'"):
        fg.can_cast(fg.float32, None)


@pytest.mark.parametrize("d", [fg.float32, fg.float64])
def test_result_type_matches_torch(default_dtype, d):
    fg.set_default_dtype(d)
    torch.set_default_dtype(_t(d))
    values = [np.array([1, 2], np.int32), np.array([1.5], np.float16), np.array([True, False]),
              np.array(3, np.int8), np.array(2.5, np.float64), np.array([1.0], np.float64), np.array(7, np.uint8)]
    operands = [(fg.tensor(v, dtype=v.dtype), torch.tensor(v)) for v in values]
    operands += [(s, s) for s in (2, 2.5, True)]
    for (fa, ta), (fb, tb) in itertools.product(operands, repeat=2):
        if not isinstance(fa, fg.Tensor) and not isinstance(fb, fg.Tensor):
            continue  # torch needs a tensor among the two
        assert fg.result_type(fa, fb).name == _name(torch.result_type(ta, tb)), (fa, fb)
    with pytest.raises(TypeError, match="'other'"):
        fg.result_type(fg.zeros(1), "x")


def test_broadcast_shapes():
    cases = [((2, 3), (3,)), ((1,), (4, 1, 2), (3, 1)), (5, (1, 5)), ((0, 1), (3,)), ((),), ((2, 1), [1, 7])]
    for shapes in cases:
        assert fg.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    assert fg.broadcast_shapes() == tuple(torch.broadcast_shapes())
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes((2, 3), (4,))
    with pytest.raises(RuntimeError, match="shape 1"):
        fg.broadcast_shapes((2, 3), (4,))
    with pytest.raises(TypeError, match="shape 0"):
        fg.broadcast_shapes("ab")


# ---- generator state --------------------------------------------------------------------------------------
def test_rng_state_round_trips():
    fg.manual_seed(3)
    fg.rand(5)
    state = fg.get_rng_state()
    assert state.dtype == fg.uint8 and state.ndim == 1 and torch.get_rng_state().dtype == torch.uint8
    a = [fg.rand(4).numpy().copy(), fg.randn(3).numpy().copy(), fg.randint(0, 100, (5,)).numpy().copy()]
    fg.manual_seed(99)
    fg.set_rng_state(state)
    b = [fg.rand(4).numpy(), fg.randn(3).numpy(), fg.randint(0, 100, (5,)).numpy()]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.array_equal(fg.get_rng_state().numpy(), fg.get_rng_state().numpy())
    # a buffered 32-bit half survives the round trip too
    fg.random.generator().integers(0, 2**31, dtype=np.uint32)
    s2 = fg.get_rng_state()
    want = fg.random.generator().integers(0, 2**31, size=3, dtype=np.uint32)
    fg.set_rng_state(s2)
    np.testing.assert_array_equal(fg.random.generator().integers(0, 2**31, size=3, dtype=np.uint32), want)


def test_set_rng_state_rejects_foreign_states():
    with pytest.raises(ValueError, match="torch generator state"):
        fg.set_rng_state(fg.tensor(torch.get_rng_state().numpy(), dtype=fg.uint8))
    with pytest.raises(TypeError, match="'new_state'"):
        fg.set_rng_state(torch.get_rng_state())
    with pytest.raises(TypeError, match="uint8"):
        fg.set_rng_state(fg.get_rng_state().long())
    bad = fg.get_rng_state().numpy().copy()
    bad[0] ^= 1
    with pytest.raises(ValueError, match="'new_state'"):
        fg.set_rng_state(fg.tensor(bad, dtype=fg.uint8))


def test_initial_seed_and_seed():
    fg.manual_seed(1234)
    assert fg.initial_seed() == 1234
    torch.manual_seed(1234)
    assert torch.initial_seed() == 1234
    s = fg.seed()
    assert isinstance(s, int) and 0 <= s < 2**64 and fg.initial_seed() == s
    a = fg.rand(3).numpy().copy()
    fg.manual_seed(s)
    np.testing.assert_array_equal(fg.rand(3).numpy(), a)


# ---- print options ----------------------------------------------------------------------------------------
@pytest.fixture
def printopts():
    try:
        yield
    finally:
        fg.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")


def test_printoptions_like_torch(printopts):
    for kw in ({"precision": 2}, {"threshold": 5}, {"edgeitems": 1, "threshold": 3}, {"profile": "short"},
               {"profile": "full"}, {"sci_mode": True}, {"linewidth": 30}):
        fg.set_printoptions(**kw)
        torch.set_printoptions(**kw)
        for data in ([1.12345, -2.5], list(range(10)), [[0.5] * 12] * 2, [1e-8, 1.0]):
            ours, ref = repr(fg.tensor(data)), repr(torch.tensor(data))
            assert ("..." in ours) == ("..." in ref), (kw, ours, ref)
            assert ("e-" in ours or "e+" in ours) == ("e-" in ref or "e+" in ref), (kw, ours, ref)
            assert max(map(len, ours.splitlines())) <= max(80, kw.get("linewidth", 80)) + 10
        fg.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")
    fg.set_printoptions(2)  # positional: precision
    torch.set_printoptions(2)
    assert repr(fg.tensor([1.12345])) == repr(torch.tensor([1.12345])) == "tensor([1.12])"
    fg.set_printoptions(precision=4, sci_mode=False)
    assert "e-" not in repr(fg.tensor([1e-8, 1.0]))
    fg.set_printoptions(profile="default")
    torch.set_printoptions(profile="default")
    assert repr(fg.tensor([1.12345])) == "tensor([1.1235])" == repr(torch.tensor([1.12345]))


@pytest.mark.parametrize("data", [[1.5, 2.0], [1.0, 2.0], [0.1, float("nan"), 3.0], [1e-8, 1.0], [123456.7, 0.5],
                                  [[1.25, -3.0], [2.0, 4.125]], 2.5, []])
def test_repr_matches_torch(printopts, data):
    assert repr(fg.tensor(data)) == repr(torch.tensor(data))
    for kw in ({"precision": 2}, {"sci_mode": False}, {"sci_mode": True, "precision": 3}):
        fg.set_printoptions(**kw)
        torch.set_printoptions(**kw)
        assert repr(fg.tensor(data)) == repr(torch.tensor(data)), kw


def test_printoptions_errors(printopts):
    with pytest.raises(TypeError, match="'precision'"):
        fg.set_printoptions(precision=1.5)
    with pytest.raises(ValueError, match="'profile'"):
        fg.set_printoptions(profile="long")
    with pytest.raises(TypeError, match="'sci_mode'"):
        fg.set_printoptions(sci_mode="yes")
    with pytest.raises(TypeError, match="'threshold'"):
        fg.set_printoptions(threshold=-1)


# ---- switches ---------------------------------------------------------------------------------------------
def test_deterministic_switches():
    try:
        assert fg.are_deterministic_algorithms_enabled() is torch.are_deterministic_algorithms_enabled() is False
        fg.use_deterministic_algorithms(True, warn_only=True)
        torch.use_deterministic_algorithms(True, warn_only=True)
        assert fg.are_deterministic_algorithms_enabled() is torch.are_deterministic_algorithms_enabled() is True
        assert fg.is_deterministic_algorithms_warn_only_enabled() is True
        assert torch.is_deterministic_algorithms_warn_only_enabled() is True
        fg.use_deterministic_algorithms(mode=True)
        assert fg.is_deterministic_algorithms_warn_only_enabled() is False
        with pytest.raises(TypeError, match="'mode'"):
            fg.use_deterministic_algorithms(1)
        with pytest.raises(TypeError, match="'warn_only'"):
            fg.use_deterministic_algorithms(True, warn_only=None)
    finally:
        fg.use_deterministic_algorithms(False)
        torch.use_deterministic_algorithms(False)
    assert fg.are_deterministic_algorithms_enabled() is False


def test_flush_denormal_is_honest():
    assert fg.set_flush_denormal(True) is False  # nothing flushed: a denormal stays
    tiny = np.float32(1e-40)
    assert (fg.tensor([tiny]) * 1.0).item() != 0.0
    assert fg.set_flush_denormal(False) is True
    with pytest.raises(TypeError, match="'mode'"):
        fg.set_flush_denormal("on")


def test_interop_threads():
    before = fg.get_num_interop_threads()
    assert isinstance(before, int) and before >= 1 and isinstance(torch.get_num_interop_threads(), int)
    try:
        fg.set_num_interop_threads(3)
        assert fg.get_num_interop_threads() == 3
        with pytest.raises(RuntimeError, match="'num'"):
            fg.set_num_interop_threads(0)
        with pytest.raises(TypeError, match="'num'"):
            fg.set_num_interop_threads(2.0)
    finally:
        fg.set_num_interop_threads(before)


# ---- factories --------------------------------------------------------------------------------------------
def test_asarray_shares_and_infers():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t, r = fg.asarray(a), torch.asarray(a)
    assert t.dtype.name == str(r.dtype).replace("torch.", "") and np.shares_memory(t.numpy(), a)
    i32 = np.arange(3, dtype=np.int32)
    assert fg.asarray(i32).dtype == fg.int32 and np.shares_memory(fg.asarray(i32).numpy(), i32)
    for data in ([1, 2], [1.0, 2], [True, False], 3, 2.5, [[1, 2], [3, 4]]):
        ours, ref = fg.asarray(data), torch.asarray(data)
        assert ours.dtype.name == str(ref.dtype).replace("torch.", ""), data
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    x = fg.randn(3)
    assert fg.asarray(x) is x
    assert fg.asarray(x, dtype=fg.float64).dtype == fg.float64
    c = fg.asarray(a, copy=True)
    assert not np.shares_memory(c.numpy(), a)
    g = fg.asarray([1.0, 2.0], requires_grad=True)
    assert g.requires_grad and g.is_leaf
    src = torch.arange(3.0)
    shared = fg.asarray(src)  # through DLPack: torch's memory
    src[0] = 5.0
    assert shared.dtype == fg.float32 and shared.tolist() == [5.0, 1.0, 2.0]
    buf = array.array("f", [1.0, 2.0])
    np.testing.assert_array_equal(fg.asarray(buf).numpy(), torch.asarray(buf).numpy())


def test_asarray_errors():
    with pytest.raises(ValueError, match="copy=False"):
        fg.asarray([1, 2], copy=False)
    with pytest.raises(ValueError, match="copy=False"):
        fg.asarray(np.zeros(2, np.float32), dtype=fg.float64, copy=False)
    with pytest.raises(TypeError, match="'obj'"):
        fg.asarray(np.zeros(2, np.complex256))
    with pytest.raises(TypeError, match="'copy'"):
        fg.asarray([1], copy="yes")


def test_frombuffer():
    raw = bytearray(np.arange(8, dtype=np.int32).tobytes())
    for kw in ({}, {"count": 3}, {"offset": 8}, {"count": 2, "offset": 4}):
        ours, ref = fg.frombuffer(raw, dtype=fg.int32, **kw), torch.frombuffer(raw, dtype=torch.int32, **kw)
        assert ours.dtype == fg.int32
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    t = fg.frombuffer(raw, dtype=fg.int32)
    raw[0] = 42  # shared, not copied
    assert t[0].item() == 42
    with pytest.warns(UserWarning, match="not writable"):
        fg.frombuffer(b"\x00\x00\x80\x3f", dtype=fg.float32)
    with pytest.raises(TypeError):
        fg.frombuffer(raw)  # dtype is required, as torch's
    with pytest.raises(ValueError, match="multiple"):
        fg.frombuffer(bytearray(7), dtype=fg.int32)
    with pytest.raises(ValueError, match="count"):
        fg.frombuffer(bytearray(8), dtype=fg.int32, count=3)
    with pytest.raises(ValueError, match="'offset'"):
        fg.frombuffer(bytearray(8), dtype=fg.int32, offset=8)
    with pytest.raises(TypeError, match="'buffer'"):
        fg.frombuffer([1, 2], dtype=fg.int32)


def test_empty_strided():
    for size, stride in (((2, 3), (3, 1)), ((2, 3), (1, 2)), ((3,), (2,)), ((2, 2), (0, 1)), ((0, 4), (4, 1))):
        ours, ref = fg.empty_strided(size, stride), torch.empty_strided(size, stride)
        assert ours.shape == tuple(ref.shape) and ours.stride() == ref.stride() and ours.dtype == fg.float32
        assert ours.is_contiguous() == ref.is_contiguous()
    assert fg.empty_strided((2,), (1,), dtype=fg.int64).dtype == fg.int64
    assert fg.empty_strided((2,), (1,), requires_grad=True).requires_grad
    with pytest.raises(RuntimeError, match="same length"):
        fg.empty_strided((2, 3), (1,))
    with pytest.raises(TypeError, match="'stride'"):
        fg.empty_strided((2,), (-1,))


def test_scalar_tensor():
    for s in (3, 2.5, True, -1):
        ours, ref = fg.scalar_tensor(s), torch.scalar_tensor(s)
        assert ours.shape == () and ours.dtype.name == _name(ref.dtype) and ours.item() == ref.item()
    assert fg.scalar_tensor(4, dtype=fg.int64).dtype == fg.int64
    assert fg.scalar_tensor(1.0, requires_grad=True).requires_grad
    with pytest.raises(TypeError, match="'s'"):
        fg.scalar_tensor("1")


def test_from_dlpack():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = fg.from_dlpack(a)
    assert t.dtype == fg.float32 and np.shares_memory(t.numpy(), a)
    src = torch.arange(4, dtype=torch.int64)
    u = fg.from_dlpack(src)
    src[0] = 9  # shares torch's memory
    assert u.dtype == fg.int64 and u.tolist() == [9, 1, 2, 3]
    with pytest.raises(TypeError, match="'ext_tensor'"):
        fg.from_dlpack([1, 2])
    assert fg.from_dlpack(torch.tensor([1 + 2j])).dtype == fg.complex64  # complex tensors exist now
    with pytest.raises(TypeError):
        fg.from_dlpack(np.zeros(2, np.complex256))


def test_names_on_package():
    for name in ("finfo", "iinfo", "get_default_dtype", "set_default_dtype", "promote_types", "result_type",
                 "can_cast", "broadcast_shapes", "get_rng_state", "set_rng_state", "initial_seed", "seed",
                 "set_printoptions", "use_deterministic_algorithms", "are_deterministic_algorithms_enabled",
                 "is_deterministic_algorithms_warn_only_enabled", "set_flush_denormal", "get_num_interop_threads",
                 "set_num_interop_threads", "asarray", "frombuffer", "empty_strided", "scalar_tensor", "from_dlpack"):
        assert hasattr(torch, name) and name in fg.__all__ and callable(getattr(fg, name)), name
