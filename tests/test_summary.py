"""Module.summary: output shapes, parameter counts and FLOPs per module, computed on the meta device,
against a hand count (LeNet), torch's shapes and parameter counts, and a 20-billion-parameter MLP
summarised in a subprocess whose peak memory is checked."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import forgegrad as fg
from forgegrad import models, nn


def _lenet_hand_count(n=1):
    """(name, type, output shape, params, FLOPs) of every LeNet module for a batch of n 1x28x28 images.

    conv: a multiply-add (2 FLOPs) per output element and weight element of its group, plus the bias
    add; relu: 1 per element; 2x2 max-pool: one compare per window element of each output (4);
    flatten: none (a reshape); linear: 2*in per output element plus the bias add."""
    c1 = n * 32 * 28 * 28  # conv1 / relu1 outputs
    p1 = n * 32 * 14 * 14
    c2 = n * 64 * 14 * 14
    p2 = n * 64 * 7 * 7
    return [
        ("", "LeNet", (n, 10), 0, 0),
        ("features", "Sequential", (n, 64, 7, 7), 0, 0),
        ("features.0", "Conv2d", (n, 32, 28, 28), 32 * 1 * 3 * 3 + 32, c1 * (2 * 1 * 3 * 3) + c1),
        ("features.1", "ReLU", (n, 32, 28, 28), 0, c1),
        ("features.2", "MaxPool2d", (n, 32, 14, 14), 0, p1 * 4),
        ("features.3", "Conv2d", (n, 64, 14, 14), 64 * 32 * 3 * 3 + 64, c2 * (2 * 32 * 3 * 3) + c2),
        ("features.4", "ReLU", (n, 64, 14, 14), 0, c2),
        ("features.5", "MaxPool2d", (n, 64, 7, 7), 0, p2 * 4),
        ("classifier", "Sequential", (n, 10), 0, 0),
        ("classifier.0", "Flatten", (n, 3136), 0, 0),
        ("classifier.1", "Linear", (n, 128), 3136 * 128 + 128, n * (2 * 3136 * 128 + 128)),
        ("classifier.2", "ReLU", (n, 128), 0, n * 128),
        ("classifier.3", "Linear", (n, 10), 128 * 10 + 10, n * (2 * 128 * 10 + 10)),
    ]


def _rows(summary):
    return [(r.name, r.type_name, r.output_shapes[0], r.params, r.flops) for r in summary.rows]


@pytest.mark.parametrize("on_meta", [False, True], ids=["cpu-weights", "meta-weights"])
def test_lenet_summary_matches_hand_count(on_meta, capsys):
    if on_meta:
        with fg.device("meta"):
            model = models.LeNet()
    else:
        model = models.LeNet()
    s = model.summary((1, 28, 28))
    printed = capsys.readouterr().out
    want = _lenet_hand_count()
    assert _rows(s) == want
    assert s.total_params == s.trainable_params == 421_642 == sum(w[3] for w in want)
    assert s.total_flops == sum(w[4] for w in want) == 8_595_466
    assert s.output_shapes == [(1, 10)] and s.input_shapes == [(1, 1, 28, 28)]
    assert printed.strip() == str(s).strip()
    lines = printed.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "shape", "Param", "#", "FLOPs"]
    row = next(line for line in lines if "features.3 (Conv2d)" in line)
    assert row.split()[-4:] == ["14,", "14)", "18,496", "7,237,888"]
    assert next(line for line in lines if "features (Sequential)" in line).split()[-2:] == ["--", "--"]
    assert "Total params: 421,642 (1.61 MiB)" in printed and "Total FLOPs: 8,595,466 (8.60 MFLOPs)" in printed


def test_lenet_summary_shapes_and_params_match_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    ref = tnn.Sequential(
        tnn.Sequential(tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                       tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2)),
        tnn.Sequential(tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10)))
    names = {"0": "features", "1": "classifier"}
    shapes = {}
    for name, m in ref.named_modules():
        m.register_forward_hook(lambda mod, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    ref(torch.zeros(3, 1, 28, 28))
    s = models.LeNet().summary((1, 28, 28), batch_size=3, print_summary=False)
    for name, m in ref.named_modules():
        ours = ".".join([names[name.split(".")[0]]] + name.split(".")[1:]) if name else ""
        row = s.layer(ours)
        assert row.output_shapes == [shapes[name]], ours
        assert row.params == sum(p.numel() for p in m.parameters(recurse=False)), ours
    assert s.total_params == sum(p.numel() for p in ref.parameters())


def test_flops_scale_with_batch_and_model_is_left_as_it_was():
    model = models.LeNet()
    model.train()
    before = [p._data for p in model.parameters()]
    s4 = model.summary((1, 28, 28), batch_size=4, print_summary=False)
    assert [r.output_shapes[0][0] for r in s4.rows] == [4] * len(s4.rows)
    assert _rows(s4) == _lenet_hand_count(4)
    assert all(m.training for m in model.modules())  # summary runs in eval mode, then restores
    assert all(p._data is b and not p.is_meta for p, b in zip(model.parameters(), before))
    # the model still runs on real data
    assert model(fg.randn(2, 1, 28, 28)).shape == (2, 10)


def test_batch_norm_and_conv2d_keras_in_eval_mode():
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same", activation="relu", in_channels=3), nn.BatchNorm2d(8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(4, input_dim=8))
    s = model.summary((3, 10, 10), batch_size=2, print_summary=False)
    e = 2 * 8 * 10 * 10
    assert s.layer("0").flops == e * (2 * 3 * 3 * 3 + 1) + e  # conv + bias, then relu inside Conv2D
    assert s.layer("1").flops == 4 * e  # eval-mode batch norm: 4 FLOPs per element
    assert s.layer("1").params == 16 and s.layer("1").output_shapes == [(2, 8, 10, 10)]
    assert s.layer("2").flops == e + 2 * 8  # an add per element and a divide per output
    assert s.layer("4").flops == 2 * (2 * 8 * 4 + 4)
    assert s.total_params == 8 * 3 * 9 + 8 + 16 + 8 * 4 + 4
    assert model[1].num_batches_tracked.item() == 0  # eval mode: running statistics untouched


def test_several_inputs_dtypes_and_full_shapes():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 6)
            self.lstm = nn.LSTM(6, 5, batch_first=True)
            self.head = nn.Linear(5 + 3, 2)

        def forward(self, tokens, extra):
            out, (h, c) = self.lstm(self.emb(tokens))
            return self.head(fg.cat([out[:, -1], extra], dim=1))

    model = TwoInputs()
    s = model.summary([(7,), (3,)], batch_size=4, dtypes=["int64", "float32"], print_summary=False)
    assert s.input_shapes == [(4, 7), (4, 3)] and s.output_shapes == [(4, 2)]
    assert s.layer("emb").output_shapes == [(4, 7, 6)] and s.layer("emb").params == 300
    assert s.layer("lstm").output_shapes == [(4, 7, 5), (1, 4, 5), (1, 4, 5)]
    assert s.layer("lstm").params == 4 * 5 * (6 + 5) + 2 * 4 * 5
    assert s.layer("lstm").flops > 0 and s.layer("head").flops == 4 * (2 * 8 * 2 + 2)
    assert "[(4, 7, 5), (1, 4, 5), (1, 4, 5)]" in str(s)
    # batch_size=None: the shapes are complete (here a sequence-first LSTM, batch in dim 1)
    s = nn.LSTM(6, 5).summary((7, 4, 6), batch_size=None, print_summary=False)
    assert s.output_shapes == [(7, 4, 5), (1, 4, 5), (1, 4, 5)]


def test_shared_module_counts_params_once_and_flops_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(self.lin(x)) + x  # the add runs in Twice's own forward

    s = Twice().summary((4,), print_summary=False)
    assert s.layer("lin").calls == 2 and s.layer("lin").flops == 2 * (2 * 16 + 4)
    assert s.layer("").flops == 4 and s.total_params == 20 == s.layer("lin").params
    assert "lin (Linear) x2" in str(s)


def test_uncalled_modules_and_frozen_parameters():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.spare = nn.Linear(2, 2)  # registered but never called by forward

        def forward(self, x):
            return self.used(x)

    model = WithSpare()
    model.used.weight.requires_grad_(False)
    s = model.summary((3,), print_summary=False)
    assert s.layer("spare").output_shapes is None and "(not called)" in str(s)
    assert s.total_params == 12 + 6 and s.trainable_params == 3 + 6 and s.non_trainable_params == 9


def test_error_names_the_module():
    model = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(ValueError) as exc:
        model.summary((10,), batch_size=3, print_summary=False)
    notes = " ".join(getattr(exc.value, "__notes__", []))
    assert "module '2' (Linear)" in notes and "(3, 5)" in notes and "(3, 10)" in notes


@pytest.mark.parametrize("kwargs,error,match", [
    ({"input_shape": "28x28"}, TypeError, "input_shape must be a tuple"),
    ({"input_shape": (1, -2)}, ValueError, "sizes >= 0"),
    ({"input_shape": [(1, 2), (3, 1.5)]}, ValueError, r"input 1"),
    ({"input_shape": (4,), "batch_size": 0}, ValueError, "batch_size"),
    ({"input_shape": [(4,), (4,)], "dtypes": ["float32"]}, ValueError, "dtypes has 1 entries for 2"),
    ({"input_shape": (4,), "dtypes": "no-such-dtype"}, TypeError, "dtypes must be numpy dtypes"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nn.Linear(4, 2).summary(print_summary=False, **kwargs)


def test_summary_of_20_billion_parameters_on_meta_in_little_memory():
    """100k x 100k Linear layers: 80 GB of float32 weights if allocated; on meta, none are."""
    code = textwrap.dedent("""
        import resource
        import forgegrad as fg
        from forgegrad import nn
        with fg.device("meta"):
            model = nn.Sequential(nn.Linear(100_000, 100_000), nn.ReLU(), nn.Linear(100_000, 100_000))
        s = model.summary((100_000,), batch_size=2, print_summary=False)
        assert all(p.is_meta for p in model.parameters())
        # peak RSS of this process: VmHWM where /proc exists (Linux carries ru_maxrss over from the
        # parent across fork+exec, so under pytest it would report pytest's own peak)
        try:
            with open("/proc/self/status") as f:
                peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except OSError:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(s.total_params, s.total_flops, peak_kb)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    params, flops, maxrss_kb = map(int, out.stdout.split())
    assert params == 2 * (100_000 * 100_000 + 100_000) == 20_000_200_000
    assert flops == 2 * (2 * (2 * 100_000 * 100_000 + 100_000)) + 2 * 100_000
    assert maxrss_kb < 600 * 1024, f"peak RSS {maxrss_kb / 1024:.0f} MB"


def test_ops_without_a_flop_rule_are_named():
    from forgegrad.autograd import Function
    from forgegrad.devices import MetaArray
    from forgegrad.ops.registry import OpDef

    class Halve(Function):  # an op record with a shape rule but no FLOP rule (not registered globally)
        @staticmethod
        def forward(ctx, x):
            return x * 0.5

    Halve.op = OpDef("halve_without_flops", Halve, meta=lambda x: MetaArray(x.shape, x.dtype))

    class UsesHalve(nn.Module):
        def forward(self, x):
            return Halve.apply(x)

    s = UsesHalve().summary((3,), print_summary=False)
    assert s.output_shapes == [(1, 3)] and s.total_flops == 0 and s.uncounted_ops == ["halve_without_flops"]
    assert "ops without a FLOP count, counted as 0: halve_without_flops" in str(s)
