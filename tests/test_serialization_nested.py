"""forgegrad.save / load of nested state (optimizer + scheduler + model + python scalars): round trips,
bit-identical resumed training, the reserved structure entry, and its validation on load."""
import json
import math
import os
import random
from collections import Counter, OrderedDict

import numpy as np
import pytest
import safetensors.numpy as stnp

import forgegrad as fg
from forgegrad import nn, optim
from forgegrad.optim import lr_scheduler
from forgegrad.serialization import load, load_metadata, save

KEY = "forgegrad.structure"


def _header(path):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])


# ---- round trips of the structure ----------------------------------------------------------------
def test_round_trip_keeps_types_order_and_values(tmp_path):
    p = nn.Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    state = OrderedDict([
        ("z_first", 1),  # insertion order, not sorted
        ("ints", {3: "three", 0: np.zeros(2, np.int64), -7: None}),
        ("same_text", {0: 1.5, "0": 2.5}),  # int and str keys that print alike stay distinct
        ("floats", [0.1, -0.0, 1e300, math.inf, -math.inf, math.nan, 2.0]),
        ("scalars", (True, False, None, "ünïcode \"quoted\"", "", 10 ** 30, -3)),
        ("empty", {"d": {}, "l": [], "t": ()}),
        ("arrays", {"param": p, "tensor": fg.tensor([1.0, 2.0]), "f64": np.linspace(0, 1, 4),
                    "bool": np.array([True, False]), "zero_d": np.array(5, np.int32), "np_scalar": np.float32(3.5),
                    "u8": np.arange(3, dtype=np.uint8), "f16": np.ones(2, np.float16), "empty": np.zeros((0, 3))}),
        ("nested", [{"a": (1, [2, (3,)])}, [[]]]),
    ])
    path = tmp_path / "n.safetensors"
    save(state, path)
    out = load(path)
    assert type(out) is dict and list(out) == list(state)
    assert out["z_first"] == 1 and type(out["z_first"]) is int
    assert list(out["ints"]) == [3, 0, -7] and out["ints"][3] == "three" and out["ints"][-7] is None
    assert out["ints"][0].dtype == np.int64
    assert out["same_text"] == {0: 1.5, "0": 2.5}
    f = out["floats"]
    assert type(f) is list and f[:5] == [0.1, -0.0, 1e300, math.inf, -math.inf] and math.isnan(f[5])
    assert math.copysign(1, f[1]) == -1 and type(f[6]) is float
    assert out["scalars"] == state["scalars"] and type(out["scalars"]) is tuple
    assert out["empty"] == {"d": {}, "l": [], "t": ()} and type(out["empty"]["t"]) is tuple
    assert out["nested"] == [{"a": (1, [2, (3,)])}, [[]]]
    a = out["arrays"]
    np.testing.assert_array_equal(a["param"], p._data)
    assert isinstance(a["param"], np.ndarray) and a["param"].dtype == np.float32
    np.testing.assert_array_equal(a["tensor"], [1.0, 2.0])
    assert a["f64"].dtype == np.float64 and a["bool"].dtype == bool and a["u8"].dtype == np.uint8
    assert a["f16"].dtype == np.float16 and a["empty"].shape == (0, 3)
    assert a["zero_d"].shape == () and a["zero_d"] == 5 and a["np_scalar"].shape == () and a["np_scalar"] == 3.5
    a["param"][0, 0] = 99  # writable and independent of the file
    assert load(path)["arrays"]["param"][0, 0] == 0


def test_mapping_subclasses_and_namedtuples_come_back_plain(tmp_path):
    from collections import namedtuple
    Pair = namedtuple("Pair", "a b")
    save({"c": Counter({2: 1, 4: 2}), "p": Pair(1, 2.0)}, tmp_path / "m.safetensors")
    out = load(tmp_path / "m.safetensors")
    assert type(out["c"]) is dict and out["c"] == {2: 1, 4: 2}
    assert type(out["p"]) is tuple and out["p"] == (1, 2.0)


def test_tensor_names_are_dotted_paths_and_unique(tmp_path):
    a, b, c, d = (np.full(2, i, np.float32) for i in range(4))
    state = {"a.b": a, "a": {"b": b}, 0: c, "0": d, "opt": {"state": {1: {"exp_avg": a}}}}
    path = tmp_path / "n.safetensors"
    save(state, path)
    raw = stnp.load_file(str(path))  # a plain safetensors file: other readers see every array
    assert set(raw) == {"a.b", "a.b#2", "0", "0#2", "opt.state.1.exp_avg"}
    out = load(path)
    for x, y in ((out["a.b"], a), (out["a"]["b"], b), (out[0], c), (out["0"], d),
                 (out["opt"]["state"][1]["exp_avg"], a)):
        np.testing.assert_array_equal(x, y)


def test_flat_state_dict_file_is_unchanged(tmp_path):
    fg.manual_seed(0)
    sd = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).state_dict()
    path = tmp_path / "flat.safetensors"
    save(sd, path, metadata={"epoch": "3"})
    expected = stnp.save({k: v._data for k, v in sd.items()}, metadata={"epoch": "3"})
    assert path.read_bytes() == expected  # byte for byte what a plain safetensors writer produces
    assert KEY not in _header(path)["__metadata__"]
    out = load(path)
    assert type(out) is OrderedDict and list(out) == sorted(sd)


def test_metadata_with_nested_state(tmp_path):
    path = tmp_path / "n.safetensors"
    save({"epoch": 2, "w": np.zeros(2)}, path, metadata={"note": "hi"})
    assert load_metadata(path) == {"note": "hi"}  # the reserved entry is internal
    structure = json.loads(_header(path)["__metadata__"][KEY])
    assert structure["format"] == "forgegrad.nested" and structure["version"] == 1
    with pytest.raises(ValueError, match="reserved"):
        save({"w": np.zeros(2)}, tmp_path / "r.safetensors", metadata={KEY: "{}"})
    assert not (tmp_path / "r.safetensors").exists()


# ---- optimizer / scheduler resume ----------------------------------------------------------------
def _model(seed):
    fg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _batches(n):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)) for _ in range(n)]


def _train(model, opt, sched, batches):
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(fg.tensor(x)), fg.tensor(y))
        loss.backward()
        opt.step()
        if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
            sched.step(loss.item())
        else:
            sched.step()


class Halve:  # a callable object: LambdaLR saves its __dict__
    def __init__(self):
        self.factor = 0.5

    def __call__(self, epoch):
        return self.factor ** epoch


RESUME_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9), "StepLR", dict(step_size=2, gamma=0.5)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), "MultiStepLR",
     dict(milestones=[2, 4, 4, 6], gamma=0.5)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95)), "CosineAnnealingLR", dict(T_max=5, eta_min=1e-4)),
    ("Adam", dict(lr=0.01, weight_decay=0.1), "LambdaLR", dict(lr_lambda=Halve())),
    ("AdamW", dict(lr=0.01, amsgrad=True), "ExponentialLR", dict(gamma=0.9)),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.05), "ReduceLROnPlateau",
     dict(factor=0.5, patience=0, threshold=10.0)),
]


@pytest.mark.parametrize("opt_name,opt_kw,sched_name,sched_kw", RESUME_CASES)
def test_resume_from_checkpoint_is_bit_identical(tmp_path, opt_name, opt_kw, sched_name, sched_kw):
    batches = _batches(9)
    model = _model(0)
    opt = getattr(optim, opt_name)(model.parameters(), **opt_kw)
    sched = getattr(lr_scheduler, sched_name)(opt, **sched_kw)
    _train(model, opt, sched, batches[:4])
    path = tmp_path / "ckpt.safetensors"
    save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
          "epoch": 4}, path)
    _train(model, opt, sched, batches[4:])  # the reference: training that never stopped

    if sched_name == "LambdaLR":
        sched_kw = dict(lr_lambda=Halve())
        sched_kw["lr_lambda"].factor = 0.0  # restored from the checkpoint
    fresh = _model(1)  # different initial weights: everything must come from the checkpoint
    fresh_opt = getattr(optim, opt_name)(fresh.parameters(), lr=0.5)
    fresh_sched = getattr(lr_scheduler, sched_name)(fresh_opt, **sched_kw)
    ckpt = load(path)
    assert ckpt["epoch"] == 4
    fresh.load_state_dict(ckpt["model"])
    fresh_opt.load_state_dict(ckpt["optimizer"])
    fresh_sched.load_state_dict(ckpt["scheduler"])
    assert fresh_opt.param_groups[0]["params"][0] is fresh[0].weight
    _train(fresh, fresh_opt, fresh_sched, batches[4:])

    for (k, v), (k2, v2) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v._data, v2._data)
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert fresh_sched.last_epoch == sched.last_epoch
    for p, q in zip(model.parameters(), fresh.parameters()):
        for name, t in opt.state[p].items():
            np.testing.assert_array_equal(fresh_opt.state[q][name]._data, t._data)


def test_multisteplr_closed_form_after_load(tmp_path):
    opt = optim.SGD(_model(0).parameters(), lr=1.0)
    sched = lr_scheduler.MultiStepLR(opt, milestones=[1, 3, 3], gamma=0.5)
    save({"s": sched.state_dict()}, tmp_path / "s.safetensors")
    opt2 = optim.SGD(_model(0).parameters(), lr=1.0)
    sched2 = lr_scheduler.MultiStepLR(opt2, milestones=[9])
    sched2.load_state_dict(load(tmp_path / "s.safetensors")["s"])
    assert isinstance(sched2.milestones, Counter)
    sched2.step(4)  # the closed form walks milestones.elements()
    assert opt2.param_groups[0]["lr"] == 0.125


def test_optimizer_state_comes_back_with_torch_types(tmp_path):
    model = _model(0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    _train(model, opt, lr_scheduler.StepLR(opt, 1, 1.0), _batches(2))
    save({"optimizer": opt.state_dict()}, tmp_path / "o.safetensors")
    sd = load(tmp_path / "o.safetensors")["optimizer"]
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert sd["state"][0]["step"].shape == () and sd["state"][0]["step"] == 2
    g = sd["param_groups"][0]
    assert g["betas"] == (0.9, 0.999) and g["params"] == [0, 1, 2, 3] and g["foreach"] is None


# ---- save errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,where", [
    ({"opt": {"state": {0: {"buf": {1, 2}}}}}, r"\['opt'\]\['state'\]\[0\]\['buf'\] is a set"),
    ({"cfg": [1, object()]}, r"\['cfg'\]\[1\] is a object"),
    ({"w": b"bytes"}, r"\['w'\] is a bytes"),
    ({"w": 1 + 2j}, r"\['w'\] is a complex"),
    ({"m": {"x": np.array(["a", "b"])}}, r"\['m'\]\['x'\] has dtype"),
    ({"m": (np.zeros(2, np.complex128),)}, r"\['m'\]\[0\] has dtype complex128, which safetensors cannot"),
])
def test_unsupported_value_names_key_path(tmp_path, bad, where):
    with pytest.raises(TypeError, match=where):
        save(bad, tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad,where", [
    ({1.5: 1}, "float key 1.5 at <root>"),
    ({"a": {(1, 2): 1}}, r"tuple key \(1, 2\) at \['a'\]"),
    ({"a": [{True: 1}]}, r"bool key True at \['a'\]\[0\]"),
    ({"a": {None: np.zeros(1)}}, "NoneType key None"),
])
def test_bad_keys_rejected(tmp_path, bad, where):
    with pytest.raises(TypeError, match="keys must be str or int.*" + where):
        save(bad, tmp_path / "k.safetensors")


def test_numpy_int_keys_become_ints(tmp_path):
    save({"s": {np.int64(3): 1}}, tmp_path / "k.safetensors")
    out = load(tmp_path / "k.safetensors")
    assert list(out["s"]) == [3] and type(list(out["s"])[0]) is int


def test_reference_cycle_rejected(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match=r"\['a'\]\[0\] contains itself"):
        save({"x": loop}, tmp_path / "c.safetensors")
    shared = [1, 2]  # the same object twice is not a cycle
    save({"a": shared, "b": shared}, tmp_path / "s.safetensors")
    assert load(tmp_path / "s.safetensors") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("old", ["flat", "nested"])
def test_failed_nested_save_keeps_old_file(tmp_path, monkeypatch, old):
    path = tmp_path / "ck.safetensors"
    first = {"w": np.arange(3, dtype=np.float32)} if old == "flat" else {"w": np.arange(3, dtype=np.float32), "e": 1}
    save(first, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"\['opt'\]\['lr'\]"):
        save({"w": np.ones(3, np.float32), "opt": {"lr": {0.1}}}, path)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save({"w": np.ones(3, np.float32), "epoch": 7}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ck.safetensors"]


# ---- load: a tampered or damaged structure entry -------------------------------------------------
def _write_raw(path, arrays, structure):
    path.write_bytes(stnp.save(arrays, metadata={KEY: structure}))


def _doc(root, **over):
    return json.dumps(dict({"format": "forgegrad.nested", "version": 1, "root": root}, **over))


W = {"w": np.zeros(2, np.float32)}
BAD_STRUCTURES = [
    ("not json", W, "{not json"),
    ("json list", {}, "[]"),
    ("wrong format", W, _doc({"dict": [["w", {"tensor": "w"}]]}, format="pickle")),
    ("no root", {}, json.dumps({"format": "forgegrad.nested", "version": 1})),
    ("newer version", {}, _doc({"dict": []}, version=2)),
    ("string version", {}, _doc({"dict": []}, version="1")),
    ("bool version", {}, _doc({"dict": []}, version=True)),
    ("root not a dict", {}, _doc({"list": []})),
    ("root scalar", {}, _doc(3)),
    ("missing tensor", {}, _doc({"dict": [["w", {"tensor": "w"}]]})),
    ("tensor name not str", W, _doc({"dict": [["w", {"tensor": 0}]]})),
    ("tensor used twice", W, _doc({"dict": [["a", {"tensor": "w"}], ["b", {"tensor": "w"}]]})),
    ("tensor not referenced", W, _doc({"dict": []})),
    ("bad float tag", {}, _doc({"dict": [["x", {"float": "1e5"}]]})),
    ("NaN constant", {}, '{"format":"forgegrad.nested","version":1,"root":{"dict":[["x",NaN]]}}'),
    ("dict body not list", {}, _doc({"dict": {"x": 1}})),
    ("dict pair of 3", {}, _doc({"dict": [["x", 1, 2]]})),
    ("dict pair not list", {}, _doc({"dict": ["x"]})),
    ("bool key", {}, _doc({"dict": [[True, 1]]})),
    ("null key", {}, _doc({"dict": [[None, 1]]})),
    ("float key", {}, _doc({"dict": [[1.5, 1]]})),
    ("duplicate key", {}, _doc({"dict": [["x", 1], ["x", 2]]})),
    ("unknown tag", {}, _doc({"dict": [["x", {"pickle": "os.system"}]]})),
    ("two tags", {}, _doc({"dict": [["x", {"list": [], "tuple": []}]]})),
    ("bare json list node", {}, _doc({"dict": [["x", [1, 2]]]})),
    ("list body not list", {}, _doc({"dict": [["x", {"tuple": "ab"}]]})),
    ("deep nesting", {}, _doc({"dict": [["x", json.loads('{"list":[' * 300 + ']}' * 300)]]})),
    ("very deep json", {}, '{"root":' + '[' * 100000 + ']' * 100000 + '}'),
]


@pytest.mark.parametrize("name,arrays,structure", BAD_STRUCTURES, ids=[c[0] for c in BAD_STRUCTURES])
def test_malformed_structure_is_a_clear_value_error(tmp_path, name, arrays, structure):
    path = tmp_path / "t.safetensors"
    _write_raw(path, arrays, structure)
    with pytest.raises(ValueError, match="not a valid forgegrad checkpoint.*'forgegrad.structure'"):
        load(path)


def test_hand_written_valid_structure_loads(tmp_path):
    path = tmp_path / "t.safetensors"
    _write_raw(path, W, _doc({"dict": [["w", {"tensor": "w"}], [3, {"float": "-inf"}], ["t", {"tuple": [None]}]]}))
    out = load(path)
    assert list(out) == ["w", 3, "t"] and out[3] == -math.inf and out["t"] == (None,)


def test_random_corruption_of_structure_only_raises_value_error(tmp_path):
    model = _model(0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, lr_scheduler.StepLR(opt, 1), _batches(1))
    good = tmp_path / "good.safetensors"
    save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}, good)
    arrays = stnp.load_file(str(good))
    text = _header(good)["__metadata__"][KEY]
    rng = random.Random(0)
    alphabet = '{}[]",:0123456789.-etrufalsn\\ abcdxyz'
    path = tmp_path / "t.safetensors"
    outcomes = Counter()
    for _ in range(300):
        chars = list(text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[i] = rng.choice(alphabet)
            elif op == 1:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        _write_raw(path, arrays, "".join(chars))
        try:
            out = load(path)
        except ValueError as e:
            assert "not a valid forgegrad checkpoint" in str(e)
            outcomes["rejected"] += 1
        else:
            assert isinstance(out, dict)
            outcomes["loaded"] += 1
    assert outcomes["rejected"] > 100


# ---- fit's ModelCheckpoint(save_optimizer=True) --------------------------------------------------
def test_model_checkpoint_save_optimizer_resumes_fit_bit_identically(tmp_path):
    from forgegrad.data import DataLoader, TensorDataset
    from forgegrad.train import ModelCheckpoint, fit

    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    loader = DataLoader(TensorDataset(X, y), batch_size=16)  # same batches every epoch and every run

    def setup(seed):
        model = _model(seed)
        opt = optim.Adam(model.parameters(), lr=0.02, amsgrad=True)
        return model, opt, lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    model, opt, sched = setup(0)
    pattern = str(tmp_path / "ck-{epoch}.safetensors")
    ref = fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=4, scheduler=sched, progress=False,
              callbacks=[ModelCheckpoint(pattern, save_optimizer=True)])
    ck = load(tmp_path / "ck-2.safetensors")
    assert sorted(ck) == ["epoch", "model", "optimizer", "scheduler"] and ck["epoch"] == 2

    model2, opt2, sched2 = setup(1)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optimizer"])
    sched2.load_state_dict(ck["scheduler"])
    resumed = fit(model2, nn.CrossEntropyLoss(), opt2, loader, epochs=4 - ck["epoch"], scheduler=sched2,
                  progress=False)
    assert resumed["loss"] == ref["loss"][2:] and resumed["lr"] == ref["lr"][2:]
    for (k, v), (_, v2) in zip(model.state_dict().items(), model2.state_dict().items()):
        np.testing.assert_array_equal(v._data, v2._data, err_msg=k)

    # the default still writes bare weights, loadable straight into a model
    fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False,
        callbacks=[ModelCheckpoint(tmp_path / "w.safetensors")])
    model2.load_state_dict(load(tmp_path / "w.safetensors"))


def test_model_checkpoint_save_optimizer_needs_state_dict(tmp_path):
    from forgegrad.data import DataLoader, TensorDataset
    from forgegrad.train import ModelCheckpoint, fit

    class NoState:
        param_groups = []

        def zero_grad(self):
            pass

        def step(self):
            pass

    loader = DataLoader(TensorDataset(np.zeros((4, 5), np.float32), np.zeros(4, np.int64)), batch_size=2)
    with pytest.raises(TypeError, match=r"save_optimizer=True\) needs the optimizer to have state_dict\(\).*NoState"):
        fit(_model(0), nn.CrossEntropyLoss(), NoState(), loader, epochs=1, progress=False,
            callbacks=[ModelCheckpoint(tmp_path / "x.safetensors", save_optimizer=True)])
    assert os.listdir(tmp_path) == []


def test_module_load_state_dict_names_a_nested_checkpoint():
    model = fg.nn.Linear(3, 2)
    ckpt = {"model": model.state_dict(), "epoch": 1}
    with pytest.raises(TypeError, match=r"nested checkpoint pass its model part, e\.g\. ckpt\['model'\]"):
        model.load_state_dict(ckpt)
    model.load_state_dict(ckpt["model"])
