"""nn.Module hooks against torch side by side (the same model built in both, the same inputs): forward pre-hooks and
forward hooks (order with prepend, with_kwargs, always_call, replacement), handles, hooks on the children of a
Sequential in its graph-free fast paths (native plan, freeze, compile), the global module hooks, and the state_dict /
load_state_dict hooks. Backward hooks: tests/test_module_backward_hooks.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.modules.module as tmodule

import forgegrad as fg
import forgegrad.nn.modules.module as fmodule
from forgegrad import nn
from module_hook_helpers import _rand, _mlp, _np, _close, _Scale, _both



# ---- forward pre-hooks and forward hooks -----------------------------------------------------------------------
def test_call_order_with_prepend_and_kwargs():
    def run(lib, tensor):
        m = _Scale.make(lib)
        log = []
        m.register_forward_pre_hook(lambda mod, a: log.append(("pre1", len(a))))
        m.register_forward_pre_hook(lambda mod, a: log.append(("pre0", len(a))), prepend=True)
        m.register_forward_pre_hook(lambda mod, a, kw: log.append(("prekw", sorted(kw))), with_kwargs=True)
        m.register_forward_hook(lambda mod, a, out: log.append(("post1", float(out.sum()))))
        m.register_forward_hook(lambda mod, a, out: log.append(("post0", float(out.sum()))), prepend=True)
        m.register_forward_hook(lambda mod, a, kw, out: log.append(("postkw", sorted(kw))), with_kwargs=True)
        m(tensor(_rand(3, 4)), 2.0, shift=0.5)
        return log
    ours, theirs = _both(run)
    assert [e[0] for e in ours] == [e[0] for e in theirs]
    for a, b in zip(ours, theirs):
        assert a[1] == pytest.approx(b[1], rel=1e-5) if isinstance(a[1], float) else a[1] == b[1]


def test_pre_hook_replaces_args_and_kwargs():
    def run(lib, tensor):
        m = _Scale.make(lib)
        m.register_forward_pre_hook(lambda mod, a: (a[0] + 1,) + a[1:])   # a tuple: the new args
        m.register_forward_pre_hook(lambda mod, a, kw: (a, {**kw, "shift": 3.0}), with_kwargs=True)
        out1 = m(tensor(_rand(2, 3)), 2.0, shift=0.5)
        m2 = _Scale.make(lib)
        m2.register_forward_pre_hook(lambda mod, a: a[0] * 10)  # one value: wrapped into a tuple
        return out1, m2(tensor(_rand(2, 3)))
    (a1, a2), (b1, b2) = _both(run)
    _close(a1, b1)
    _close(a2, b2)


@pytest.mark.parametrize("lib", [fg, torch])
def test_kwargs_pre_hook_bad_return_raises(lib):
    m = _Scale.make(lib)
    m.register_forward_pre_hook(lambda mod, a, kw: a, with_kwargs=True)  # not (args, kwargs)
    tensor = fg.tensor if lib is fg else torch.tensor
    with pytest.raises(RuntimeError, match="new_args, new_kwargs"):
        m(tensor(_rand(2, 3)))


def test_forward_hook_replaces_output_and_chains():
    def run(lib, tensor):
        m = _Scale.make(lib)
        m.register_forward_hook(lambda mod, a, out: out * 2)
        m.register_forward_hook(lambda mod, a, out: None)  # None keeps it
        m.register_forward_hook(lambda mod, a, kw, out: out + kw["shift"], with_kwargs=True)
        return m(tensor(_rand(4, 2)), 3.0, shift=1.5)
    ours, theirs = _both(run)
    _close(ours, theirs)


def test_always_call_runs_when_forward_raises():
    def run(lib, tensor):
        base = nn.Module if lib is fg else torch.nn.Module

        class Boom(base):
            def forward(self, x):
                raise ValueError("boom")
        m, log = Boom(), []
        m.register_forward_hook(lambda mod, a, out: log.append("plain"))
        m.register_forward_hook(lambda mod, a, out: log.append(("always", out)), always_call=True)
        m.register_forward_hook(lambda mod, a, kw, out: log.append(("always_kw", out, kw)), with_kwargs=True,
                                always_call=True)

        def bad(mod, a, out):
            raise KeyError("in hook")
        m.register_forward_hook(bad, always_call=True)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="boom"):
                m(tensor(_rand(2)))
        return log, [str(x.message) for x in w]
    (ours, our_warn), (theirs, their_warn) = _both(run)
    assert ours == theirs == [("always", None), ("always_kw", None, {})]
    assert len(our_warn) == len(their_warn) == 1 and "always_call=True" in our_warn[0]


def test_always_call_hook_runs_once_when_a_later_hook_raises():
    def run(lib, tensor):
        m, log = _Scale.make(lib), []
        m.register_forward_hook(lambda mod, a, out: log.append("always"), always_call=True)

        def bad(mod, a, out):
            raise IndexError("late")
        m.register_forward_hook(bad)
        with pytest.raises(IndexError):
            m(tensor(_rand(2)))
        return log
    assert _both(run) == (["always"], ["always"])


def test_handles_remove_and_context_manager():
    def run(lib, tensor):
        m, log = _Scale.make(lib), []
        h1 = m.register_forward_hook(lambda mod, a, out: log.append("f"), with_kwargs=False, always_call=True)
        h2 = m.register_forward_pre_hook(lambda mod, a, kw: log.append("p"), with_kwargs=True)
        x = tensor(_rand(2))
        m(x)
        h1.remove()
        h1.remove()  # twice: nothing to do
        m(x)
        h2.remove()
        with m.register_forward_hook(lambda mod, a, out: log.append("ctx")) as h3:
            m(x)
        m(x)
        assert isinstance(h3, (fg.utils.hooks.RemovableHandle if lib is fg else torch.utils.hooks.RemovableHandle))
        return log, h3.id > h2.id > h1.id, len(m._forward_hooks), len(m._forward_pre_hooks), \
            len(m._forward_hooks_always_called), len(m._forward_pre_hooks_with_kwargs)
    ours, theirs = _both(run)
    assert ours == theirs
    assert ours[0] == ["p", "f", "p", "ctx"]


@pytest.mark.parametrize("method", ["register_forward_pre_hook", "register_forward_hook",
                                    "register_full_backward_pre_hook", "register_full_backward_hook",
                                    "register_state_dict_pre_hook", "register_state_dict_post_hook",
                                    "register_load_state_dict_pre_hook", "register_load_state_dict_post_hook"])
def test_non_callable_hook_raises_type_error(method):
    # torch raises TypeError ("'int' object is not callable") at the first call; forgegrad when registering
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=f"{method}: hook must be callable, got int"):
        getattr(m, method)(3)
    if "state" not in method:
        t = torch.nn.Linear(2, 2)
        getattr(t, method)(3)
        with pytest.raises(TypeError, match="'int' object is not callable"):
            t(torch.ones(1, 2, requires_grad=True)).sum().backward()


@pytest.mark.parametrize("flag", ["prepend", "with_kwargs", "always_call"])
def test_non_bool_flags_raise(flag):
    with pytest.raises(TypeError, match=f"register_forward_hook: {flag} must be True or False"):
        nn.Linear(2, 2).register_forward_hook(lambda *a: None, **{flag: 1})
    with pytest.raises(TypeError, match="register_full_backward_hook: prepend must be True or False"):
        nn.Linear(2, 2).register_full_backward_hook(lambda *a: None, "yes")


def test_global_forward_hooks_run_first_and_are_removable():
    def run(lib, tensor):
        mod = fmodule if lib is fg else tmodule
        m, log = _Scale.make(lib), []
        m.register_forward_pre_hook(lambda md, a: log.append("own_pre"))
        m.register_forward_hook(lambda md, a, out: log.append("own"))
        handles = [mod.register_module_forward_pre_hook(lambda md, a: log.append(("g_pre", type(md).__name__))),
                   mod.register_module_forward_hook(lambda md, a, out: log.append("g")),
                   mod.register_module_forward_hook(lambda md, a, kw, out: out * 3, with_kwargs=True)]
        try:
            out = m(tensor(_rand(2, 2)), 2.0)
        finally:
            for h in handles:
                h.remove()
        out2 = m(tensor(_rand(2, 2)), 2.0)
        return log, out, out2
    (ours, o1, o2), (theirs, t1, t2) = _both(run)
    assert ours == theirs
    assert ours[:4] == [("g_pre", "Scale"), "own_pre", "g", "own"]
    _close(o1, t1)
    _close(o2, t2)


def test_global_forward_hook_reaches_children_of_fast_sequential():
    f, t = _mlp()
    x = _rand(1, 11, seed=4)

    def run(lib, tensor, model):
        mod = fmodule if lib is fg else tmodule
        seen = []
        h = mod.register_module_forward_hook(lambda md, a, out: seen.append((type(md).__name__, _np(out).copy())))
        try:
            with lib.no_grad():
                model(tensor(x))
        finally:
            h.remove()
        return seen
    ours, theirs = run(fg, fg.tensor, f), run(torch, torch.tensor, t)
    assert [n for n, _ in ours] == [n for n, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- hooks on the children of a Sequential: the graph-free fast paths must run them ---------------------------
def _captures(lib, tensor, model, x, grad):
    acts = {}
    handles = [m.register_forward_hook(lambda md, a, out, n=n: acts.__setitem__(n, _np(out).copy()))
               for n, m in model.named_children()]
    edit = model[3].register_forward_hook(lambda md, a, out: out * 0.5)  # the second ReLU's output halved
    if grad:
        y = model(tensor(x))
    else:
        with lib.no_grad():
            y = model(tensor(x))
    for h in handles + [edit]:
        h.remove()
    return acts, _np(y).copy()


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("batch", [1, 4])
def test_sequential_children_hooks_fire(grad, batch):
    f, t = _mlp()
    x = _rand(batch, 11, seed=1)
    with torch.no_grad():
        t(torch.tensor(x))
    with fg.no_grad():
        plain = f(fg.tensor(x)).numpy()  # the native plan built first: the hooks come after it
    ours, y = _captures(fg, fg.tensor, f, x, grad)
    theirs, ty = _captures(torch, torch.tensor, t, x, grad)
    assert sorted(ours) == sorted(theirs) == ["0", "1", "2", "3", "4"]
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6)
    with fg.no_grad():  # hooks removed: the fast path gives the plain result again
        np.testing.assert_array_equal(f(fg.tensor(x)).numpy(), plain)


def test_frozen_and_compiled_models_run_hooks_on_their_own_modules():
    f, t = _mlp(seed=2)
    x = _rand(1, 11, seed=5)
    with torch.no_grad():
        want = t(torch.tensor(x)).numpy()
    frozen = nn.utils.freeze(f)
    seen = []
    h = frozen[2].register_forward_hook(lambda md, a, out: seen.append(md))
    with fg.no_grad():
        frozen(fg.tensor(x))
    assert seen == [frozen[2]]
    h.remove()
    compiled = fg.compile(f)
    with fg.no_grad():
        np.testing.assert_allclose(compiled(fg.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)  # frozen copy made
    h = f[4].register_forward_hook(lambda md, a, out: seen.append(md) or out + 1)
    with fg.no_grad():
        got = compiled(fg.tensor(x)).numpy()
    assert seen[-1] is f[4]  # the model's own module, not the frozen copy's
    np.testing.assert_allclose(got, want + 1, rtol=1e-5, atol=1e-5)
    h.remove()
    g = fmodule.register_module_forward_pre_hook(lambda md, a: seen.append(("g", md)))
    try:
        with fg.no_grad():
            compiled(fg.tensor(x))
    finally:
        g.remove()
    assert ("g", f[0]) in seen
    with fg.no_grad():
        np.testing.assert_allclose(compiled(fg.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)


def test_dynamic_int8_chain_runs_child_hooks():
    from forgegrad.quantization import quantize_dynamic
    f, _ = _mlp(seed=3)
    q = quantize_dynamic(nn.Sequential(f[0], f[2], f[4]).eval())
    x = fg.tensor(_rand(1, 11, seed=6))
    plain = q(x).numpy()
    seen = []
    h = q[1].register_forward_hook(lambda md, a, out: seen.append(out.shape))
    assert q(x).shape == plain.shape and seen == [(1, 6)]
    h.remove()


# ---- state_dict and load_state_dict hooks ------------------------------------------------------------------
def test_state_dict_hooks():
    f, t = _mlp()

    def run(m):
        log = []
        m[0].register_state_dict_pre_hook(lambda md, prefix, keep_vars: log.append(("pre", prefix, keep_vars)))

        def post(md, sd, prefix, meta):
            log.append(("post", prefix, sorted(sd), meta.get("version")))
            sd[prefix + "extra"] = sd[prefix + "weight"] * 0  # edits in place
        m[2].register_state_dict_post_hook(post)
        keys = list(m.state_dict(keep_vars=True))
        return log, keys
    assert run(f) == run(t)
    for lib_model in (f, t):
        lib_model[2].register_state_dict_post_hook(lambda md, sd, prefix, meta: sd)
        with pytest.raises(RuntimeError, match="state_dict post-hook must return None"):
            lib_model.state_dict()


def test_load_state_dict_hooks():
    f, t = _mlp(seed=1)
    src = {("old." + k): v.detach().numpy() + 1 for k, v in t.state_dict().items()}

    def run(m, convert):
        log = []

        def rename(md, sd, prefix, meta, strict, missing, unexpected, errors):
            log.append(("pre", prefix, strict))
            if prefix == "":
                for k in list(sd):
                    sd[k[len("old."):]] = sd.pop(k)
        m.register_load_state_dict_pre_hook(rename)
        m[2].register_load_state_dict_pre_hook(rename)

        def post(md, keys):
            log.append(("post", sorted(keys.missing_keys), sorted(keys.unexpected_keys)))
            keys.missing_keys.clear()  # what it leaves out the strict check does not see
        m.register_load_state_dict_post_hook(post)
        got = m.load_state_dict({k: convert(v) for k, v in src.items() if k != "old.4.bias"}, strict=True)
        return log, sorted(got.missing_keys), sorted(got.unexpected_keys)
    assert run(f, lambda v: v) == run(t, torch.tensor)
    _close(f[0].weight, t[0].weight)
    for m in (f, t):
        m.register_load_state_dict_post_hook(lambda md, keys: keys.unexpected_keys.append("bogus"))
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bogus"'):
        f.load_state_dict(src)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bogus"'):
        t.load_state_dict({k: torch.tensor(v) for k, v in src.items()})


def test_load_pre_hook_errors_make_load_raise():
    m = nn.Linear(2, 2)
    before = m.weight.numpy().copy()
    m.register_load_state_dict_pre_hook(lambda md, sd, p, meta, strict, mi, un, errors: errors.append("refused"))
    with pytest.raises(RuntimeError, match="refused"):
        m.load_state_dict({"weight": np.zeros((2, 2), np.float32), "bias": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(m.weight.numpy(), before)


def test_hooked_module_pickles_and_deepcopies():
    import copy
    import pickle
    m = nn.Linear(3, 2)
    m.register_forward_hook(_double_output)
    x = fg.tensor(_rand(1, 3))
    want = m(x).numpy()
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        np.testing.assert_allclose(c(x).numpy(), want)


def _double_output(md, args, out):
    return out * 2


def test_gpt_graph_free_blocks_run_forward_hooks():
    """GPT's graph-free block forward (models/transformer.py) goes back to the modules while a forward hook
    watches one of them, as for a forward pre-hook."""
    from forgegrad.models import GPT
    fg.manual_seed(0)
    model = GPT(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24, bias=False).eval()
    idx = fg.tensor(np.random.default_rng(0).integers(0, 37, (2, 11)))
    with fg.no_grad():
        fast = model(idx).numpy()
    block = model.transformer.h[1]
    seen = []
    handle = block.mlp.c_fc.register_forward_hook(lambda m, args, out: seen.append(out.shape) or out * 0.0)
    assert not block._plain()
    with fg.no_grad():
        hooked = model(idx).numpy()
    assert seen == [(2, 11, 96)] and not np.allclose(hooked, fast)
    handle.remove()
    assert block._plain()
    g = fmodule.register_module_forward_hook(lambda m, args, out: None)
    try:
        assert not block._plain()
    finally:
        g.remove()
    with fg.no_grad():
        assert model(idx).numpy().tobytes() == fast.tobytes()


def test_plan_built_under_a_global_hook_stays_exact_after_it_is_removed():
    f, t = _mlp(seed=4)
    x = _rand(2, 11, seed=7)
    with torch.no_grad():
        want = t(torch.tensor(x)).numpy()
    seen = []
    g = fmodule.register_module_forward_hook(lambda md, a, out: seen.append(type(md).__name__))
    try:
        with fg.no_grad():
            np.testing.assert_allclose(f(fg.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)
    finally:
        g.remove()
    assert seen == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Sequential"]
    with fg.no_grad():
        np.testing.assert_allclose(f(fg.tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)
    assert len(seen) == 6


def test_onnx_export_records_forward_hooks(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    f, _ = _mlp(seed=5)
    f[2].register_forward_hook(lambda md, a, out: out * 2.0 + 1.0)
    f[0].register_full_backward_hook(lambda md, gi, go: None)  # nothing to export: no backward in a trace
    x = _rand(3, 11, seed=8)
    with fg.no_grad():
        want = f(fg.tensor(x)).numpy()
    fg.onnx.export(f, fg.tensor(x), str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_hooked_module_unpickled_in_a_fresh_process_runs_its_hook(tmp_path):
    import pickle
    import subprocess
    import sys
    m = nn.Linear(3, 2)
    m.register_forward_hook(_double_output)
    x = _rand(1, 3)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps((m, x, m(fg.tensor(x)).numpy())))
    code = ("import pickle, sys, numpy as np; sys.path.insert(0, sys.argv[2]); import forgegrad as fg; "
            "m, x, want = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "np.testing.assert_allclose(m(fg.tensor(x)).numpy(), want)")
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pkl"), os.path.dirname(__file__)], check=True,
                   env=env, timeout=120)


def test_hf_gpt2_forward_hook_captures_what_transformers_captures(tmp_path):
    """A Hugging Face model's lean inference path (models/hf/_decode.py) steps aside while a forward hook watches one
    of its layers: the captured activation and the edited logits are transformers' own."""
    transformers = pytest.importorskip("transformers")
    from forgegrad.models import from_pretrained
    from forgegrad.models.hf._decode import lean_path_applies
    torch.manual_seed(0)
    tm = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50,
                                                              n_positions=32)).eval()
    tm.save_pretrained(tmp_path / "gpt2")
    fm = from_pretrained(tmp_path / "gpt2")
    ids = np.random.RandomState(0).randint(0, 50, (2, 7))
    assert lean_path_applies(fm)

    def run(model, tensor, lib):
        got = {}
        layer = model.transformer.h[1].mlp.c_fc
        h1 = layer.register_forward_hook(lambda md, a, out: got.__setitem__("c_fc", _np(out).copy()))
        h2 = model.transformer.h[0].mlp.register_forward_hook(lambda md, a, out: out * 0.5)
        with lib.no_grad():
            out = model(tensor(ids))
        logits = _np(out if isinstance(out, (fg.Tensor, torch.Tensor)) else out.logits)
        if lib is fg:
            assert not lean_path_applies(model)
        h1.remove()
        h2.remove()
        return got["c_fc"], logits
    (a_act, a_logits), (b_act, b_logits) = run(fm, fg.tensor, fg), run(tm, torch.tensor, torch)
    np.testing.assert_allclose(a_act, b_act, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a_logits, b_logits, rtol=1e-4, atol=1e-4)
    assert lean_path_applies(fm)
