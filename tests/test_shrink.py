"""nn.utils.shrink: structurally pruned rows/channels are cut out (smaller layers, next layer's inputs
fixed, biases folded) without changing the outputs; shrunk state_dicts reload into the original model."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.nn.utils import prune, shrink


def _out(model, x):
    model.eval()
    with fg.no_grad():
        return model(fg.tensor(x))._data


def test_mlp_shrinks_and_keeps_outputs():
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Dropout(0.1), nn.Linear(20, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    prune.ln_structured(model[0], "weight", amount=0.5, n=2, dim=0)
    prune.ln_structured(model[3], "weight", amount=0.25, n=1, dim=0)
    masked = _out(model, x)
    report = shrink.shrink(model)
    assert report == {"0": (20, 10), "3": (16, 12)}
    assert model[0].weight.shape == (10, 12) and model[0].out_features == 10
    assert model[3].weight.shape == (12, 10) and model[3].in_features == 10
    assert model[5].weight.shape == (3, 12) and not prune.is_pruned(model)
    np.testing.assert_allclose(_out(model, x), masked, rtol=1e-5, atol=1e-5)


def test_conv_bn_pool_flatten_linear_shrinks_exactly():
    fg.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 4))
    bn = model[1]
    bn.running_mean._data[...] = np.linspace(-1, 1, 8)
    bn.running_var._data[...] = np.linspace(0.5, 2, 8)
    x = np.random.default_rng(1).standard_normal((3, 2, 10, 10)).astype(np.float32)
    report = shrink.prune_structured(model, amount=0.5)
    assert report == {"0": (8, 4), "4": (6, 3)}
    assert model[0].weight.shape == (4, 2, 3, 3) and bn.num_features == 4 and bn.running_mean.shape == (4,)
    assert model[4].weight.shape == (3, 4, 3, 3) and model[7].weight.shape == (4, 12)
    # the same model, pruned by masks only, gives the reference outputs
    fg.manual_seed(1)
    ref = nn.Sequential(nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 4))
    ref[1].running_mean._data[...] = np.linspace(-1, 1, 8)
    ref[1].running_var._data[...] = np.linspace(0.5, 2, 8)
    prune.ln_structured(ref[0], "weight", amount=0.5, n=2, dim=0)
    prune.ln_structured(ref[4], "weight", amount=0.5, n=2, dim=0)
    np.testing.assert_allclose(_out(model, x), _out(ref, x), rtol=1e-4, atol=1e-5)


def test_lenet_shrinks_and_reloads_from_state_dict():
    fg.manual_seed(2)
    model = fg.models.LeNet(input_size=8, hidden=16)
    report = shrink.prune_structured(model, amount=0.5)
    assert report == {"features.0": (32, 16), "features.3": (64, 32), "classifier.1": (16, 8)}
    x = np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = _out(model, x)
    fresh = fg.models.LeNet(input_size=8, hidden=16)
    shrink.resize_to_state_dict(fresh, model.state_dict())
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(_out(fresh, x), y)


def test_prune_structured_needs_a_chain():
    with pytest.raises(ValueError, match="no Linear/Conv2d feeding another"):
        shrink.prune_structured(nn.Sequential(nn.Linear(3, 2)), 0.5)
