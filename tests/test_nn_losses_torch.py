"""The margin / ranking / metric / likelihood loss modules and the small nn pieces (Unflatten, ParameterList,
ParameterDict, Bilinear, F.bilinear, F.embedding, F.pairwise_distance) against torch: values, gradients,
state_dict keys and round trips, optimizers. The ops' own checks (every sample, float64, ONNX, errors, double
backward) are generated from their records in tests/test_op_registry.py."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import forgegrad as fg
import forgegrad.nn as nn
import forgegrad.nn.functional as F

RNG = np.random.default_rng(0)


def _r(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def _signs(*shape):
    return RNG.choice(np.array([-1.0, 1.0], np.float32), size=shape)


def _both(arrays, grad):
    """forgegrad and torch tensors of the same arrays; float arrays at positions ``grad`` require grad."""
    ours = [fg.tensor(a.copy(), requires_grad=i in grad) for i, a in enumerate(arrays)]
    theirs = [torch.from_numpy(a.copy()).requires_grad_(i in grad) for i, a in enumerate(arrays)]
    return ours, theirs


def _compare(ours_out, theirs_out, ours_in, theirs_in, grad, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(ours_out.numpy(), theirs_out.detach().numpy(), rtol=rtol, atol=atol)
    cot = RNG.uniform(-1, 1, size=tuple(theirs_out.shape)).astype(np.float32)
    (ours_out * fg.tensor(cot)).sum().backward()
    (theirs_out * torch.from_numpy(cot)).sum().backward()
    for i in grad:
        g, w = ours_in[i].grad, theirs_in[i].grad
        np.testing.assert_allclose(np.zeros(theirs_in[i].shape) if g is None else g.numpy(),
                                   np.zeros(theirs_in[i].shape) if w is None else w.numpy(),
                                   rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")


LABELS = np.array([2, 0, 4, 4, 1], np.int64)
ML_TARGET = np.array([[3, 0, -1, 1, 2], [4, -1, 0, 0, 0], [0, 1, 2, 3, 4], [-1, 1, 1, 1, 1], [2, 2, -1, 4, 4]])
CASES = {  # name: (module kwargs, inputs, positions with gradients)
    "CosineEmbeddingLoss": ({"margin": 0.25}, [_r(5, 7), _r(5, 7), _signs(5)], (0, 1)),
    "MarginRankingLoss": ({"margin": 0.5, "reduction": "sum"}, [_r(9), _r(9), _signs(9)], (0, 1, 2)),
    "HingeEmbeddingLoss": ({"margin": 0.7, "reduction": "none"}, [_r(4, 6), _signs(4, 6)], (0,)),
    "SoftMarginLoss": ({}, [_r(3, 5), _signs(3, 5)], (0,)),
    "MultiLabelSoftMarginLoss": ({"weight": _r(5, low=0.1, high=2)},
                                 [_r(5, 5), (RNG.random((5, 5)) < 0.5).astype(np.float32)], (0, 1)),
    "MultiMarginLoss": ({"p": 2, "margin": 0.8, "weight": _r(5, low=0.1, high=2), "reduction": "none"},
                        [_r(5, 5), LABELS], (0,)),
    "MultiLabelMarginLoss": ({"reduction": "sum"}, [_r(5, 5), ML_TARGET], (0,)),
    "TripletMarginLoss": ({"margin": 0.6, "p": 1.5, "swap": True}, [_r(6, 5), _r(6, 5), _r(6, 5)], (0, 1, 2)),
    "TripletMarginWithDistanceLoss": ({"margin": 2.0}, [_r(6, 5), _r(6, 5), _r(6, 5)], (0, 1, 2)),
    "PoissonNLLLoss": ({"log_input": False, "full": True},
                       [_r(4, 7, low=0.1, high=3), RNG.poisson(2.0, (4, 7)).astype(np.float32) + 0.5], (0, 1)),
    "GaussianNLLLoss": ({"full": True, "reduction": "sum"}, [_r(4, 3), _r(4, 3), _r(4, 1, low=0.1, high=2)],
                        (0, 1, 2)),
}


def _kwargs(kw, lib):
    return {k: (fg.tensor(v) if lib is fg else torch.from_numpy(v)) if isinstance(v, np.ndarray) else v
            for k, v in kw.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_module_matches_torch(name):
    kw, arrays, grad = CASES[name]
    ours_in, theirs_in = _both(arrays, grad)
    ours = getattr(nn, name)(**_kwargs(kw, fg))
    theirs = getattr(torch.nn, name)(**_kwargs(kw, torch))
    _compare(ours(*ours_in), theirs(*theirs_in), ours_in, theirs_in, grad)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # weight buffers: torch's key


@pytest.mark.parametrize("size_average,reduce", [(False, None), (None, False), (True, True)])
def test_legacy_reduction_flags_as_torch(size_average, reduce):
    x, y = _r(4, 3), _signs(4, 3)
    ours = nn.SoftMarginLoss(size_average=size_average, reduce=reduce)(fg.tensor(x), fg.tensor(y))
    theirs = torch.nn.SoftMarginLoss(size_average=size_average, reduce=reduce)(torch.from_numpy(x),
                                                                                torch.from_numpy(y))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_triplet_zero_distance_and_tie_gradients_as_torch():
    a = np.array([[0, 0], [1, 1], [2, 0]], np.float32)
    p = np.array([[0, 0], [1, 2], [2, 1]], np.float32)  # a zero distance in row 0
    n = np.array([[1, 0], [1, 3], [2, 1]], np.float32)  # row 1: loss exactly 0 at margin 1; row 2: swap tie
    for swap in (False, True):
        ours_in, theirs_in = _both([a, p, n], (0, 1, 2))
        _compare(F.triplet_margin_loss(*ours_in, eps=0.0, swap=swap, reduction="none"),
                 torch.nn.functional.triplet_margin_loss(*theirs_in, eps=0.0, swap=swap, reduction="none"),
                 ours_in, theirs_in, (0, 1, 2))


def test_triplet_with_a_custom_distance_function():
    def ours_dist(x, y):
        return 1.0 - (x * y).sum(-1) / ((x * x).sum(-1) * (y * y).sum(-1)).sqrt()

    def theirs_dist(x, y):
        return 1.0 - torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=0.0)

    arrays = [_r(5, 4), _r(5, 4), _r(5, 4)]
    for swap in (False, True):
        ours_in, theirs_in = _both(arrays, (0, 1, 2))
        _compare(nn.TripletMarginWithDistanceLoss(distance_function=ours_dist, margin=0.3, swap=swap)(*ours_in),
                 torch.nn.TripletMarginWithDistanceLoss(distance_function=theirs_dist, margin=0.3, swap=swap)(
                     *theirs_in), ours_in, theirs_in, (0, 1, 2))
    with pytest.raises(ValueError, match="margin"):
        F.triplet_margin_with_distance_loss(*[fg.tensor(a) for a in arrays], margin=0.0)
    with pytest.raises(TypeError, match="distance_function"):
        F.triplet_margin_with_distance_loss(*[fg.tensor(a) for a in arrays], distance_function="l2")
    with pytest.raises(ValueError, match="dimensions"):
        F.triplet_margin_with_distance_loss(fg.tensor(arrays[0]), fg.tensor(arrays[1][0]), fg.tensor(arrays[2]),
                                            distance_function=ours_dist)


@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_pairwise_distance(p):
    arrays = [_r(3, 1, 6), _r(4, 6)]
    ours_in, theirs_in = _both(arrays, (0, 1))
    _compare(F.pairwise_distance(*ours_in, p=p, keepdim=True),
             torch.nn.functional.pairwise_distance(*theirs_in, p=p, keepdim=True), ours_in, theirs_in, (0, 1))


def test_gaussian_nll_float_var_and_errors():
    x, t = _r(3, 4), _r(3, 4)
    ours = F.gaussian_nll_loss(fg.tensor(x), fg.tensor(t), 0.7)
    theirs = torch.nn.functional.gaussian_nll_loss(torch.from_numpy(x), torch.from_numpy(t), 0.7)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="var has negative"):
        F.gaussian_nll_loss(fg.tensor(x), fg.tensor(t), -0.1)
    with pytest.raises(ValueError, match="var is of incorrect size"):
        F.gaussian_nll_loss(fg.tensor(x), fg.tensor(t), fg.tensor(_r(3, 2, low=0.1, high=1)))


def test_poisson_full_gradient_nan_at_zero_target_as_torch():
    x, t = _r(5), np.array([0, 1, 2, 0.5, 4], np.float32)
    ours_in, theirs_in = _both([x, t], (0, 1))
    out = F.poisson_nll_loss(*ours_in, full=True)
    ref = torch.nn.functional.poisson_nll_loss(*theirs_in, full=True)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-6)
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6, equal_nan=True)
    assert np.isnan(ours_in[1].grad.numpy()[0])


def test_class_targets_out_of_range_name_the_target():
    with pytest.raises(ValueError, match="target out of range"):
        F.multi_margin_loss(fg.tensor(_r(2, 3)), fg.tensor(np.array([0, 3])))
    with pytest.raises(ValueError, match="target out of range"):
        F.multilabel_margin_loss(fg.tensor(_r(2, 3)), fg.tensor(np.array([[0, 3, -1], [1, -1, 0]])))
    with pytest.raises(ValueError, match="weight"):
        nn.MultiMarginLoss(weight=fg.tensor(_r(2, 3)))


# ---- Unflatten -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim,sizes", [(1, (2, -1)), (-1, [3, 4]), (1, torch.Size([4, 1, 3])), (0, (-1,))])
def test_unflatten_as_torch(dim, sizes):
    x = _r(5, 12)
    ours = nn.Unflatten(dim, sizes)(fg.tensor(x))
    theirs = torch.nn.Unflatten(dim, sizes)(torch.from_numpy(x))
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_unflatten_round_trips_flatten_and_refuses_bad_sizes():
    x = fg.tensor(_r(2, 3, 4, 5))
    m = nn.Sequential(nn.Flatten(1, 2), nn.Unflatten(1, (3, 4)))
    np.testing.assert_array_equal(m(x).numpy(), x.numpy())
    with pytest.raises(RuntimeError, match="multiply up"):
        nn.Unflatten(1, (5, 3))(x)
    with pytest.raises(RuntimeError, match="cannot fill"):
        nn.Unflatten(1, (2, -1))(x)
    with pytest.raises(ValueError, match="one -1"):
        nn.Unflatten(1, (-1, -1))
    with pytest.raises(TypeError, match="tuple of ints"):  # torch 2.13 dropped the named (name, size) form too
        nn.Unflatten(1, (("C", 3), ("H", 4)))
    with pytest.raises(TypeError, match="tuple of ints"):
        nn.Unflatten(1, 12)
    assert repr(nn.Unflatten(-1, [3, 4])) == repr(torch.nn.Unflatten(-1, [3, 4]))


# ---- ParameterList / ParameterDict -----------------------------------------------------------------------
class _Holder:
    @staticmethod
    def ours():
        m = nn.Module()
        m.plist = nn.ParameterList([nn.Parameter(fg.tensor(_r(2, 3))), fg.tensor(_r(4))])
        m.plist.append(nn.Parameter(fg.tensor(_r(1))))
        m.pdict = nn.ParameterDict({"b": nn.Parameter(fg.tensor(_r(3))), "a": fg.tensor(_r(2, 2))})
        m.pdict.update(OrderedDict([("z", fg.tensor(_r(1))), ("c", fg.tensor(_r(5)))]))
        return m

    @staticmethod
    def theirs():
        m = torch.nn.Module()
        m.plist = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(2, 3)), torch.zeros(4)])
        m.plist.append(torch.nn.Parameter(torch.zeros(1)))
        m.pdict = torch.nn.ParameterDict({"b": torch.nn.Parameter(torch.zeros(3)), "a": torch.zeros(2, 2)})
        m.pdict.update(OrderedDict([("z", torch.zeros(1)), ("c", torch.zeros(5))]))
        return m


def test_parameter_containers_state_dict_round_trips_with_torch():
    ours, theirs = _Holder.ours(), _Holder.theirs()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    fresh = _Holder.ours()
    fresh.load_state_dict({k: fg.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()})
    for (k, a), b in zip(fresh.state_dict().items(), ours.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in ours.parameters())


def test_optimizers_and_to_see_parameter_container_entries():
    ours, theirs = _Holder.ours(), _Holder.theirs()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    opt_o = fg.optim.Adam(ours.parameters(), lr=0.1)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=0.1)
    for _ in range(2):
        lo = sum(((p * p).sum() for p in ours.plist), fg.tensor(0.0)) + sum((p.sum() for p in ours.pdict.values()),
                                                                              fg.tensor(0.0))
        lt = sum((p * p).sum() for p in theirs.plist) + sum(p.sum() for p in theirs.pdict.values())
        for opt, loss in ((opt_o, lo), (opt_t, lt)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=k)
    ours.to("meta")
    assert all(p.is_meta for p in ours.plist) and all(p.is_meta for p in ours.pdict.values())


def test_parameter_list_behaves_as_a_list():
    pl = nn.ParameterList([fg.tensor(_r(2)) for _ in range(4)])
    assert len(pl) == 4 and pl[-1] is pl[3] and isinstance(pl[0], nn.Parameter)
    sub = pl[1:3]
    assert isinstance(sub, nn.ParameterList) and len(sub) == 2 and sub[0] is pl[1]
    pl += [fg.tensor(_r(3))]
    pl[0] = fg.tensor(_r(5))
    assert len(pl) == 5 and pl[0].shape == (5,) and list(pl.state_dict()) == ["0", "1", "2", "3", "4"]
    with pytest.raises(IndexError):
        pl[5]
    with pytest.raises(TypeError, match="iterable"):
        pl.extend(fg.tensor(_r(2)))


def test_parameter_dict_behaves_as_a_dict():
    pd = nn.ParameterDict([("x", fg.tensor(_r(2))), ("w", fg.tensor(_r(3)))])  # pairs: their order
    assert pd.keys() == ["x", "w"] and "w" in pd and len(pd) == 2
    tpd = torch.nn.ParameterDict({"y": torch.zeros(1), "b": torch.zeros(1), "a": torch.zeros(1)})
    assert nn.ParameterDict({"y": fg.tensor(_r(1)), "b": fg.tensor(_r(1)), "a": fg.tensor(_r(1))}).keys() == \
        list(tpd.keys())  # a plain dict: sorted, as torch
    w = pd.pop("w")
    assert w.shape == (3,) and "w" not in pd and list(pd.state_dict()) == ["x"]
    pd["v"] = fg.tensor(_r(1))
    del pd["x"]
    assert list(pd.state_dict()) == ["v"] and pd.get("nope") is None
    with pytest.raises(TypeError, match="strings"):
        pd[1] = fg.tensor(_r(1))
    with pytest.raises(KeyError, match="hide"):
        pd["items"] = fg.tensor(_r(1))


# ---- Bilinear / F.bilinear -------------------------------------------------------------------------------
@pytest.mark.parametrize("bias,lead", [(True, (5,)), (False, (2, 3)), (True, ())])
def test_bilinear_matches_torch_with_its_state_dict(bias, lead):
    theirs = torch.nn.Bilinear(4, 3, 6, bias=bias)
    ours = nn.Bilinear(4, 3, 6, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours.load_state_dict({k: fg.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()})
    arrays = [_r(*lead, 4), _r(*lead, 3)]
    ours_in, theirs_in = _both(arrays, (0, 1))
    _compare(ours(*ours_in), theirs(*theirs_in), ours_in, theirs_in, (0, 1))
    names = ["weight"] + (["bias"] if bias else [])
    for n in names:
        np.testing.assert_allclose(getattr(ours, n).grad.numpy(), getattr(theirs, n).grad.numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=n)
    assert repr(ours) == repr(theirs)


def test_bilinear_init_bounds_and_errors():
    m = nn.Bilinear(16, 3, 200)
    bound = 1 / 4
    assert np.abs(m.weight.numpy()).max() <= bound and np.abs(m.weight.numpy()).max() > 0.9 * bound
    assert np.abs(m.bias.numpy()).max() <= bound
    w = fg.tensor(_r(2, 4, 3))
    with pytest.raises(ValueError, match="input1"):
        F.bilinear(fg.tensor(_r(5, 3)), fg.tensor(_r(5, 3)), w)
    with pytest.raises(ValueError, match="input2"):
        F.bilinear(fg.tensor(_r(5, 4)), fg.tensor(_r(5, 4)), w)
    with pytest.raises(ValueError, match="leading"):
        F.bilinear(fg.tensor(_r(5, 4)), fg.tensor(_r(6, 3)), w)
    with pytest.raises(ValueError, match="bias"):
        F.bilinear(fg.tensor(_r(5, 4)), fg.tensor(_r(5, 3)), w, fg.tensor(_r(3)))
    with pytest.raises(ValueError, match="weight"):
        F.bilinear(fg.tensor(_r(5, 4)), fg.tensor(_r(5, 3)), fg.tensor(_r(4, 3)))


def test_bilinear_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.bl = nn.Bilinear(4, 3, 5)

        def forward(self, a, b):
            return self.bl(a, b)

    report = fg.onnx.export(Pair(), (fg.tensor(_r(2, 4)), fg.tensor(_r(2, 3))), str(tmp_path / "bilinear.onnx"))
    assert report.ok, report


# ---- F.embedding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_functional_padding_as_torch(padding_idx):
    w = _r(6, 4)
    idx = np.array([[0, 2, 5], [2, 2, 1]])
    ours_w, theirs_w = fg.tensor(w.copy(), requires_grad=True), torch.from_numpy(w.copy()).requires_grad_(True)
    ours = F.embedding(fg.tensor(idx), ours_w, padding_idx=padding_idx)
    theirs = torch.nn.functional.embedding(torch.from_numpy(idx), theirs_w, padding_idx=padding_idx)
    _compare(ours, theirs, [ours_w], [theirs_w], (0,))


@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_embedding_max_norm_renormalises_the_rows_in_place_as_torch(norm_type):
    w = _r(7, 5, low=-3, high=3)
    idx = np.array([[1, 3, 3], [6, 0, 1]])
    ours_w, theirs_w = fg.tensor(w.copy(), requires_grad=True), torch.from_numpy(w.copy()).requires_grad_(True)
    ours = F.embedding(fg.tensor(idx), ours_w, max_norm=1.5, norm_type=norm_type)
    theirs = torch.nn.functional.embedding(torch.from_numpy(idx), theirs_w, max_norm=1.5, norm_type=norm_type)
    np.testing.assert_allclose(ours_w.numpy(), theirs_w.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours_w.numpy(), w)  # rows were scaled, the rows not indexed kept
    np.testing.assert_array_equal(ours_w.numpy()[[2, 4, 5]], w[[2, 4, 5]])
    _compare(ours, theirs, [ours_w], [theirs_w], (0,))


def test_embedding_functional_errors():
    w = fg.tensor(_r(4, 3))
    with pytest.raises(ValueError, match="padding_idx"):
        F.embedding(fg.tensor(np.array([0])), w, padding_idx=4)
    with pytest.raises(TypeError, match="input"):
        F.embedding(fg.tensor(_r(2)), w)
    with pytest.raises(ValueError, match="weight"):
        F.embedding(fg.tensor(np.array([0])), fg.tensor(_r(4)))
    with pytest.raises(TypeError, match="sparse"):
        F.embedding(fg.tensor(np.array([0])), w, sparse="yes")


def test_losses_export_with_a_dynamic_batch(tmp_path):
    """A model whose forward returns the new losses exports with axis 0 of every input dynamic (the default), and
    onnxruntime's values at the example and at other batch sizes equal forgegrad's (export's parity runs)."""
    pytest.importorskip("onnxruntime")

    class Losses(nn.Module):
        def __init__(self):
            super().__init__()
            self.cos = nn.CosineEmbeddingLoss(margin=0.2)
            self.mm = nn.MultiMarginLoss(p=2, weight=fg.tensor(_r(4, low=0.5, high=1.5)))
            self.trip = nn.TripletMarginLoss(swap=True)
            self.gauss = nn.GaussianNLLLoss()

        def forward(self, a, b, y, labels, var):
            # var kept positive: the export's extra runs draw inputs at random
            return (self.cos(a, b, y) + self.mm(a, labels) + self.trip(a, b, a * 0.5) +
                    self.gauss(a, b, var.abs() + 0.1))

    inputs = (fg.tensor(_r(5, 4)), fg.tensor(_r(5, 4)), fg.tensor(_signs(5)), fg.tensor(LABELS % 4),
              fg.tensor(_r(5, low=0.1, high=1.0)))
    report = fg.onnx.export(Losses(), inputs, str(tmp_path / "losses.onnx"))
    assert report.ok, report
    assert len({tuple(s.values()) for s in report.sizes_tried}) > 1, report.sizes_tried
