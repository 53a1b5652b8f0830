"""A frozen Sequential's graph-free forward in one C++ call (``_C.plan.SequentialPlan``, built by
``nn.Sequential`` for models made by ``nn.utils.freeze``): the same bits as the unfrozen model's
steps at every batch, thread count and SIMD path, and the Python steps (their results, their errors)
wherever the plan would not run the same kernels: hooks, replaced weights, other dtypes, layouts
and shapes."""
import copy

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.autograd import no_grad

RNG = np.random.default_rng(5)


def _lenet():
    fg.manual_seed(3)
    model = fg.models.LeNet().eval()
    return model, nn.utils.freeze(model)


def _run(model, x):
    with no_grad():
        return model(x if isinstance(x, fg.Tensor) else fg.tensor(x)).numpy()


def _native(seq):
    plan = seq.__dict__.get("_inference_plan")
    return None if plan is None or plan[2] is False else plan[2]


def test_frozen_lenet_runs_each_sequential_as_one_call(simd_path, threads):
    model, frozen = _lenet()
    for n in (1, 2):
        threads(n)
        for batch in (1, 3, 16):
            x = RNG.standard_normal((batch, 1, 28, 28)).astype(np.float32)
            np.testing.assert_array_equal(_run(frozen, x), _run(model, x))
    for seq in (frozen.features, frozen.classifier):
        assert isinstance(_native(seq), _C.plan.SequentialPlan)
    assert len(_native(frozen.features)) == 2 and len(_native(frozen.classifier)) == 3
    # the plan itself returns the arrays (not None: the Python steps did not run instead)
    h = _native(frozen.features).run(x)
    np.testing.assert_array_equal(_native(frozen.classifier).run(h), _run(model, x))
    assert _native(model.features) is None  # an unfrozen model runs its Python steps


def test_frozen_lenet_at_batch_1_has_the_same_bits_at_1_2_and_3_threads(threads):
    # A batch-1 LeNet forward (~4M multiply-adds) runs its layers' regions on the pool back to back (its first
    # Linear splits its columns as well): which thread runs which part must not change a bit, nor must the pool
    # backing off in the middle of a forward because other processes keep every core busy.
    import os
    import subprocess
    import sys
    model, frozen = _lenet()
    xs = [RNG.standard_normal((b, 1, 28, 28)).astype(np.float32) for b in (1, 1, 2)]
    threads(1)
    want = [_run(model, x) for x in xs]
    for n in (2, 3, 1, 2):
        threads(n)
        for _ in range(20):
            for x, w in zip(xs, want):
                np.testing.assert_array_equal(_run(frozen, x), w)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(min(os.cpu_count() or 2, 4))]
    try:
        for n in (2, 3):
            threads(n)
            for _ in range(30):
                for x, w in zip(xs, want):
                    np.testing.assert_array_equal(_run(frozen, x), w)
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_frozen_mlp_with_fused_activations_equals_the_model():
    fg.manual_seed(4)
    model = nn.Sequential(nn.Linear(20, 33), nn.LeakyReLU(0.2), nn.Linear(33, 17), nn.GELU(), nn.Linear(17, 5),
                          nn.Sigmoid()).eval()
    frozen = nn.utils.freeze(model)
    for shape in ((1, 20), (9, 20), (2, 3, 20)):
        x = RNG.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(_run(frozen, x), _run(model, x))
    assert len(_native(frozen)) == 3


def test_unsupported_steps_keep_the_python_path():
    fg.manual_seed(5)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()
    frozen = nn.utils.freeze(model)
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(frozen, x), _run(model, x))
    assert _native(frozen) is None
    # a 3x3 max pool after a conv: the conv runs natively only with the 2x2 / stride 2 pool
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(3)).eval()
    frozen = nn.utils.freeze(conv)
    x = RNG.standard_normal((2, 2, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(_run(frozen, x), _run(conv, x))
    assert _native(frozen) is None


def test_ceil_mode_pool_on_odd_sizes_falls_back():
    fg.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)).eval()
    frozen = nn.utils.freeze(model)
    for side in (8, 7):  # even: the fused pool; odd: ceil_mode's extra row and column (the Python steps)
        x = RNG.standard_normal((2, 3, side, side)).astype(np.float32)
        y = _run(frozen, x)
        assert y.shape == (2, 8, (side + 1) // 2, (side + 1) // 2)
        np.testing.assert_array_equal(y, _run(model, x))
    assert _native(frozen) is not None
    assert _native(frozen).run(x) is None


def test_hooks_replaced_weights_and_other_inputs_follow_the_model():
    model, frozen = _lenet()
    x = RNG.standard_normal((2, 1, 28, 28)).astype(np.float32)
    _run(frozen, x)  # plans built
    # a forward pre-hook added after the plan was built runs
    for m in (model, frozen):
        m.features[3].register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
    np.testing.assert_array_equal(_run(frozen, x), _run(model, x))
    assert _native(frozen.features).run(x) is None
    # a replaced weight (a new Parameter) is read, not the one the plan first saw
    new = RNG.standard_normal(frozen.classifier[1].weight.shape).astype(np.float32)
    frozen.classifier[1].weight = nn.Parameter(fg.tensor(new))
    model.classifier[1].weight = nn.Parameter(fg.tensor(new.copy()))
    np.testing.assert_array_equal(_run(frozen, x), _run(model, x))
    # float64 and non-contiguous inputs run the Python steps, with the model's results and errors
    for m in (frozen, model):
        with pytest.raises(RuntimeError, match="same dtype"):
            _run(m, x.astype(np.float64))
    wide = np.repeat(x, 2, axis=3)[..., ::2]
    np.testing.assert_array_equal(_run(frozen, wide), _run(model, wide))
    assert _native(frozen.classifier).run(wide.reshape(2, -1)[:, :3136]) is None
    # a wrong shape raises the Python step's error
    bad = fg.tensor(RNG.standard_normal((1, 2, 28, 28)).astype(np.float32))
    with pytest.raises(ValueError) as frozen_err, no_grad():
        frozen.features(bad)
    with pytest.raises(ValueError) as model_err, no_grad():
        model.features(bad)
    assert str(frozen_err.value) == str(model_err.value)


def test_deep_copies_and_refreezing_build_their_own_plan():
    model, frozen = _lenet()
    x = RNG.standard_normal((1, 1, 28, 28)).astype(np.float32)
    expected = _run(model, x)
    _run(frozen, x)
    twin = copy.deepcopy(frozen)
    np.testing.assert_array_equal(_run(twin, x), expected)
    assert isinstance(_native(twin.features), _C.plan.SequentialPlan)  # its own, built at its first call
    assert _native(twin.features) is not _native(frozen.features)
    again = nn.utils.freeze(frozen)
    np.testing.assert_array_equal(_run(again, x), expected)
    assert _native(again.features) is not None and _native(again.features) is not _native(frozen.features)


def test_plan_arguments_are_checked():
    plan = _C.plan.SequentialPlan()
    with pytest.raises(TypeError, match="parameters must be a dict"):
        plan.add_linear([1, 2])
    with pytest.raises(ValueError, match="activation must be -1"):
        plan.add_linear({}, activation=99)
    with pytest.raises(TypeError, match="hooks must be a list of dicts"):
        plan.add_flatten([3])
    with pytest.raises(TypeError, match="packed must be a PackedConvWeight or None"):
        plan.add_conv2d({}, (1, 1), (0, 0, 0, 0), (1, 1), 1, (3, 3), packed="not packed")
    with pytest.raises(TypeError, match="packed must be a PackedWeight or None"):
        plan.add_linear({}, packed=_C.conv.PackedConvWeight(np.ones((2, 2, 3, 3), np.float32)))
    assert plan.run(np.zeros((1, 4), np.float32)) is None  # no steps
    plan.add_linear({"weight": nn.Parameter(fg.tensor(np.ones((3, 4), np.float32)))})
    assert plan.run([[1.0, 2.0, 3.0, 4.0]]) is None  # not an array
    assert plan.run(np.zeros((1, 5), np.float32)) is None  # another in_features
    assert plan.run(np.zeros((0, 4), np.float32)) is None  # empty
    np.testing.assert_array_equal(plan.run(np.ones((2, 4), np.float32)), np.full((2, 3), 4.0, np.float32))
    assert plan.run(np.ones((2, 4), np.float64)) is None
    assert len(plan) == 1


def test_sequential_hooks_and_overridden_forward_are_honoured():
    class Doubled(nn.Sequential):
        def forward(self, input):
            return super().forward(input) * 2.0

    fg.manual_seed(7)
    layers = (nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    plain = nn.Sequential(*layers).eval()
    doubled = nn.utils.freeze(Doubled(*copy.deepcopy(layers)).eval())
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    want = _run(plain, x)
    np.testing.assert_array_equal(_run(doubled, x), want * 2.0)
    np.testing.assert_array_equal(_run(doubled, x), want * 2.0)  # the plan is built: forward still runs
    frozen = nn.utils.freeze(plain)
    np.testing.assert_array_equal(_run(frozen, x), want)
    frozen.register_forward_pre_hook(lambda mod, args: (args[0] + 1.0,))
    np.testing.assert_array_equal(_run(frozen, x), _run(plain, x + 1.0))


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("conv", [False, True])
def test_a_hook_on_a_fused_activation_added_after_the_first_call_runs(frozen, conv):
    """The activation a Linear or Conv2d applies in its kernel: a forward pre-hook registered on it once the plan
    is built runs (the activation then runs as its own step, with the hook's input)."""
    fg.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)) if conv else \
        nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    model = nn.utils.freeze(model) if frozen else model
    x = RNG.standard_normal((1, 1, 6, 6) if conv else (2, 4)).astype(np.float32)
    before = _run(model, x)  # plan built
    calls = []
    model[1].register_forward_pre_hook(lambda mod, args: calls.append(1) or (-args[0],))
    after = _run(model, x)
    assert len(calls) == 1
    with no_grad():
        y = model[0](fg.tensor(x))
        expected = (model[2](fg.tensor(np.maximum(-y.numpy(), 0))) if conv else fg.tensor(np.maximum(-y.numpy(), 0)))
    np.testing.assert_array_equal(after, expected.numpy())
    assert not np.array_equal(after, before)
