"""F.linear_cross_entropy and nn.LinearCrossEntropyLoss against torch 2.13's (values, every gradient, state_dict,
options, errors), and the point of the op: its peak memory stays far below the (N, C) logits'. The generated
registry checks (tests/test_op_registry.py -k linear_cross_entropy) add float64, threads, SIMD paths, ONNX, meta."""
import tracemalloc

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn.functional as F
from forgegrad import nn
from forgegrad.ops.linear_cross_entropy import chunk_rows

TF = torch.nn.functional


def _rand(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _labels(n, c, *shape, seed=0, ignore=None, every=3):
    y = np.random.default_rng(seed).integers(0, c, size=(n, *shape)).astype(np.int64)
    if ignore is not None:
        y.reshape(-1)[::every] = ignore
    return y


def _run(lib, x, w, y, b=None, cw=None, cot=None, **kw):
    """(loss, grads of input, linear_weight, linear_bias) on forgegrad (lib=fg) or torch."""
    if lib is fg:
        xs, ws = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
        bs = None if b is None else fg.tensor(b, requires_grad=True)
        out = F.linear_cross_entropy(xs, ws, fg.tensor(y), linear_bias=bs,
                                     weight=None if cw is None else fg.tensor(cw), **kw)
        c = fg.tensor(cot) if cot is not None else None
    else:
        xs, ws = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(w.copy()).requires_grad_()
        bs = None if b is None else torch.from_numpy(b.copy()).requires_grad_()
        out = TF.linear_cross_entropy(xs, ws, torch.from_numpy(y), linear_bias=bs,
                                      weight=None if cw is None else torch.from_numpy(cw), **kw)
        c = torch.from_numpy(cot) if cot is not None else None
    (out * c).sum().backward() if c is not None else out.backward()
    val = out.numpy() if lib is fg else out.detach().numpy()
    return [val] + [t.grad.numpy() if t is not None else None for t in (xs, ws, bs)]


def _close(got, want, rtol=1e-4, atol=1e-5):
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("n,c,d,chunk", [(13, 11, 5, 4), (7, 33, 9, 3), (1, 5, 3, 1), (20, 17, 6, 7)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias,cw,ignore,smooth", [(True, False, None, 0.0), (False, True, -100, 0.0),
                                                   (True, True, 2, 0.15), (False, False, None, 0.3)])
def test_function_matches_torch(n, c, d, chunk, reduction, bias, cw, ignore, smooth):
    x, w = _rand(n, d, seed=1), _rand(c, d, seed=2)
    y = _labels(n, c, seed=3, ignore=-100 if ignore is None else ignore)
    b = _rand(c, seed=4) if bias else None
    cwt = np.abs(_rand(c, seed=5)) + 0.1 if cw else None
    cot = _rand(n, seed=6) if reduction == "none" else None
    kw = dict(reduction=reduction, ignore_index=ignore, label_smoothing=smooth)
    want = _run(torch, x, w, y, b, cwt, cot, **kw)
    for opts in (None, nn.LinearCrossEntropyOptions(batch_chunk_size=chunk),
                 torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk, allow_retain_graph=True)):
        _close(_run(fg, x, w, y, b, cwt, cot, options=opts, **kw), want)
    if smooth == 0.0 and (y != (-100 if ignore is None else ignore)).any():
        # torch's own chunked path agrees too (where a row counts: with none, its gradients are NaN, its
        # reference path's and ours 0)
        _close(_run(torch, x, w, y, b, cwt, cot, options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk),
                    **kw), want)


def test_probability_targets_and_their_gradients():
    x, w, cw = _rand(9, 4, seed=1), _rand(6, 4, seed=2), np.abs(_rand(6, seed=3)) + 0.2
    t = torch.softmax(torch.from_numpy(_rand(9, 6, seed=4)), 1).numpy()
    grads = {}
    for lib in (fg, torch):
        args = [lib.tensor(a.copy(), requires_grad=True) for a in (x, w, t, cw)]
        fn = F.linear_cross_entropy if lib is fg else TF.linear_cross_entropy
        loss = fn(args[0], args[1], args[2], weight=args[3], label_smoothing=0.2, reduction="sum",
                  options=nn.LinearCrossEntropyOptions(batch_chunk_size=2) if lib is fg else None)
        loss.backward()
        grads[lib] = [loss.detach().numpy() if lib is torch else loss.numpy()] + [a.grad.numpy() for a in args]
    _close(grads[fg], grads[torch])


def _modules(out_features=(), bias=True, **kw):
    tm = torch.nn.LinearCrossEntropyLoss(5, 7, out_features=out_features, bias=bias, **kw)
    fkw = {k: (fg.tensor(v.numpy()) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    fm = nn.LinearCrossEntropyLoss(5, 7, out_features=out_features, bias=bias, **fkw)
    return tm, fm


@pytest.mark.parametrize("out_features", [(), (3,), (2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_module_loads_a_torch_state_dict_and_matches(out_features, bias):
    cw = torch.rand(7) + 0.5
    tm, fm = _modules(out_features, bias, weight=cw, reduction="mean", options=None)
    sd = tm.state_dict()
    assert list(fm.state_dict()) == list(sd)  # weight, linear.weight(, linear.bias): torch's keys and order
    assert all(tuple(fm.state_dict()[k].shape) == tuple(v.shape) for k, v in sd.items())
    fm.load_state_dict(sd)  # unchanged: torch tensors
    assert repr(fm) == repr(tm)
    fm.options = nn.LinearCrossEntropyOptions(batch_chunk_size=3)
    x = _rand(8, 5, seed=1)
    y = _labels(8, 7, *out_features, seed=2, ignore=-100, every=5)
    xt, xf = torch.from_numpy(x).requires_grad_(), fg.tensor(x, requires_grad=True)
    lt, lf = tm(xt, torch.from_numpy(y)), fm(xf, fg.tensor(y))
    lt.backward()
    lf.backward()
    np.testing.assert_allclose(lf.numpy(), lt.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    for name, p in tm.named_parameters():
        got = dict(fm.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(got, p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_module_probability_targets_k_dimensional_and_unbatched():
    tm, fm = _modules((2,), True, reduction="none", label_smoothing=0.1)
    fm.load_state_dict(tm.state_dict())
    t = torch.softmax(torch.from_numpy(_rand(4, 7, 2, seed=3)), 1)
    x = _rand(4, 5, seed=4)
    np.testing.assert_allclose(fm(fg.tensor(x), fg.tensor(t.numpy())).numpy(),
                               tm(torch.from_numpy(x), t).detach().numpy(), rtol=1e-5, atol=1e-6)
    tm, fm = _modules((), False)
    fm.load_state_dict(tm.state_dict())
    x1, y1 = _rand(5, seed=5), np.asarray(3, np.int64)
    np.testing.assert_allclose(fm(fg.tensor(x1), fg.tensor(y1)).numpy(),
                               tm(torch.from_numpy(x1), torch.from_numpy(y1)).detach().numpy(), rtol=1e-5)


def test_chunk_rows_follow_torch_options():
    for kw in ({}, {"chunking_method": "aspect_ratio"}, {"chunking_method": "aspect_ratio:4"},
               {"batch_chunk_size": 5}, {"batch_chunk_size": 5000}, {"chunking_method": None}):
        for n, d, c in ((4096, 64, 32000), (2048, 512, 32000), (13, 7, 5), (1, 3, 100)):
            want = torch.nn.LinearCrossEntropyOptions(**kw)._adjust(n, d, c, torch.float32).batch_chunk_size
            assert chunk_rows(nn.LinearCrossEntropyOptions(**kw), n, d, c, 4) == want, (kw, n)
            assert chunk_rows(torch.nn.LinearCrossEntropyOptions(**kw), n, d, c, 4) == want
    assert chunk_rows(None, 4096, 64, 32000, 4) == (16 << 20) // (32000 * 4)  # the default budget


def test_retain_graph_follows_allow_retain_graph():
    x, w, y = _rand(6, 3), _rand(5, 3, seed=1), _labels(6, 5, seed=2)
    for opts in (None, nn.LinearCrossEntropyOptions(allow_retain_graph=True)):
        xs = fg.tensor(x, requires_grad=True)
        loss = F.linear_cross_entropy(xs, fg.tensor(w), fg.tensor(y), options=opts)
        loss.backward(retain_graph=True)
        first = xs.grad.numpy().copy()
        loss.backward()
        np.testing.assert_allclose(xs.grad.numpy(), 2 * first, rtol=1e-6)
    xs = fg.tensor(x, requires_grad=True)
    loss = F.linear_cross_entropy(xs, fg.tensor(w), fg.tensor(y), options=nn.LinearCrossEntropyOptions())
    (loss * 3.0).backward(retain_graph=True)  # consumed in place, as torch's default options
    with pytest.raises(RuntimeError, match="allow_retain_graph=True"):
        loss.backward()


def test_threads_and_chunking_change_no_result():
    x, w, y = _rand(257, 40, seed=1), _rand(3001, 40, seed=2), _labels(257, 3001, seed=3, ignore=-100)
    b = _rand(3001, seed=4)
    before = fg.get_num_threads()
    runs = {}
    try:
        for threads in (1, 3):
            fg.set_num_threads(threads)
            for chunk in (None, 32, 100):
                opts = None if chunk is None else nn.LinearCrossEntropyOptions(batch_chunk_size=chunk)
                runs[threads, chunk] = _run(fg, x, w, y, b, options=opts, label_smoothing=0.1)
    finally:
        fg.set_num_threads(before)
    for chunk in (None, 32, 100):
        for a, c in zip(runs[1, chunk], runs[3, chunk]):
            assert a.tobytes() == c.tobytes(), chunk  # bit for bit, whatever the thread count
        _close(runs[1, chunk], runs[1, None], rtol=1e-5, atol=1e-7)


def test_create_graph_double_backward_matches_torch():
    x, w, y = _rand(5, 3), _rand(4, 3, seed=1), _labels(5, 4, seed=2)
    xf, wf = fg.tensor(x, requires_grad=True), fg.tensor(w, requires_grad=True)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    gf = fg.autograd.grad(F.linear_cross_entropy(xf, wf, fg.tensor(y), label_smoothing=0.1), [xf], create_graph=True)[0]
    gt = torch.autograd.grad(TF.linear_cross_entropy(xt, wt, torch.from_numpy(y), label_smoothing=0.1), [xt],
                             create_graph=True)[0]
    (gf * gf).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(wf.grad.numpy(), wt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_bad_input_raises_naming_the_argument():
    x, w, y = fg.tensor(_rand(5, 4)), fg.tensor(_rand(7, 4, seed=1)), fg.tensor(_labels(5, 7))
    with pytest.raises(IndexError, match="target 7 is out of bounds for 7 classes"):
        F.linear_cross_entropy(x, w, fg.tensor(_labels(5, 7) * 0 + 7))
    with pytest.raises(TypeError, match="target must hold class indices"):
        F.linear_cross_entropy(x, w, fg.tensor(_labels(5, 7).astype(np.float32)))
    with pytest.raises(ValueError, match="target of class indices must have shape \\(5,\\)"):
        F.linear_cross_entropy(x, w, fg.tensor(_labels(4, 7)))
    with pytest.raises(RuntimeError, match="in_features"):
        F.linear_cross_entropy(x, fg.tensor(_rand(7, 3)), y)
    with pytest.raises(TypeError, match="options must be a LinearCrossEntropyOptions"):
        F.linear_cross_entropy(x, w, y, options=4)
    with pytest.raises(ValueError, match="acc_dtype"):
        F.linear_cross_entropy(x, w, y, options=nn.LinearCrossEntropyOptions(acc_dtype=torch.float64))
    with pytest.raises(ValueError, match="batch_chunk_size"):
        nn.LinearCrossEntropyOptions(batch_chunk_size=0)
    with pytest.raises(ValueError, match="chunking_method"):
        nn.LinearCrossEntropyOptions(chunking_method="rows")
    with pytest.raises(ValueError, match="batch_chunk_size .* and chunking_method"):
        F.linear_cross_entropy(x, w, y, options=nn.LinearCrossEntropyOptions(batch_chunk_size=3,
                                                                            chunking_method="aspect_ratio"))
    # the module's num_classes against the class weight and the targets
    with pytest.raises(RuntimeError, match="expected weight shape to be \\(7,\\)"):
        nn.LinearCrossEntropyLoss(4, 7, weight=fg.ones(6))
    with pytest.raises(RuntimeError, match="label_smoothing"):
        nn.LinearCrossEntropyLoss(4, 7, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        nn.LinearCrossEntropyLoss(4, 7, reduction="avg")
    m = nn.LinearCrossEntropyLoss(4, 3)
    with pytest.raises(IndexError, match="target 5 is out of bounds for 3 classes"):
        m(x, fg.tensor(np.array([0, 1, 5, 2, 1])))
    with pytest.raises(RuntimeError, match="same dtype"):
        m(fg.tensor(_rand(5, 4, dtype=np.float64)), fg.tensor(np.array([0, 1, 2, 2, 1])))


def test_peak_memory_stays_far_below_the_logits():
    n, c, d = 4096, 32000, 64
    logits_bytes = n * c * 4  # 524 MB
    x = fg.tensor(_rand(n, d, seed=1) * 0.1, requires_grad=True)
    w = fg.tensor(_rand(c, d, seed=2) * 0.1, requires_grad=True)
    y = fg.tensor(_labels(n, c, seed=3, ignore=-100, every=7))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        loss = F.linear_cross_entropy(x, w, y)
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert np.isfinite(loss.numpy()) and w.grad is not None and x.grad.shape == (n, d)
    # two 16 MB chunk buffers, dX and dW (1 + 8 MB) held from forward, the gradients handed out
    assert peak < logits_bytes / 8, f"peak {peak / 2**20:.1f} MiB"


def test_module_float64_and_no_grad_match_torch():
    tm = torch.nn.LinearCrossEntropyLoss(4, 6, bias=True, dtype=torch.float64, label_smoothing=0.1)
    fm = nn.LinearCrossEntropyLoss(4, 6, bias=True, dtype=fg.float64, label_smoothing=0.1)
    fm.load_state_dict(tm.state_dict())
    x, y = _rand(7, 4, seed=1, dtype=np.float64), _labels(7, 6, seed=2)
    xt, xf = torch.from_numpy(x).requires_grad_(), fg.tensor(x, requires_grad=True)
    lt, lf = tm(xt, torch.from_numpy(y)), fm(xf, fg.tensor(y))
    lt.backward()
    lf.backward()
    assert lf.dtype == fg.float64 and fm.linear.weight.grad.dtype == fg.float64
    np.testing.assert_allclose(lf.numpy(), lt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xf.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fm.linear.weight.grad.numpy(), tm.linear.weight.grad.numpy(), rtol=1e-10, atol=1e-14)
    with fg.no_grad():  # the inference kernel: the loss alone
        np.testing.assert_allclose(fm(xf, fg.tensor(y)).numpy(), lt.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_row_ignored_gives_nan_loss_and_zero_gradients_as_torch(dtype):
    x, w, y = _rand(3, 4, dtype=dtype), _rand(5, 4, seed=1, dtype=dtype), np.full(3, -100)
    got = _run(fg, x, w, y, label_smoothing=0.1)
    want = _run(torch, x, w, y, label_smoothing=0.1)
    assert np.isnan(got[0]) and np.isnan(want[0])
    _close(got[1:], want[1:])
