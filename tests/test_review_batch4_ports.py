"""Review of the torch-port additions: Tensor.normal_/uniform_ take 0-d tensors for their numbers (torch converts
them), and Conv1d/Conv2d's repr names a non-zero padding_mode as torch's."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn

torch = pytest.importorskip("torch", reason="the reference is torch")


def test_normal_and_uniform_take_0d_tensor_arguments():
    fg.manual_seed(0)
    w = fg.zeros(2000)
    w.normal_(fg.tensor(3.0), fg.tensor(0.5))  # AttributeError ('Tensor' has no astype) before
    assert w.dtype == fg.float32
    assert abs(float(w.mean()) - 3.0) < 0.1 and abs(float(w.std()) - 0.5) < 0.1
    w.uniform_(fg.tensor(-2.0), np.float64(-1.0))
    values = w.numpy()
    assert values.min() >= -2.0 and values.max() <= -1.0 and w.dtype == fg.float32
    t = torch.zeros(3)
    t.normal_(torch.tensor(3.0), torch.tensor(0.5))  # torch accepts them too
    with pytest.raises(RuntimeError, match="std"):
        w.normal_(0.0, fg.tensor(-1.0))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_repr_names_the_padding_mode(mode):
    for fcls, tcls in ((nn.Conv1d, torch.nn.Conv1d), (nn.Conv2d, torch.nn.Conv2d)):
        assert repr(fcls(4, 2, 3, padding=1, padding_mode=mode)) == repr(tcls(4, 2, 3, padding=1, padding_mode=mode))
