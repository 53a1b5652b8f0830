"""Loss ops exported (a model may return its loss): each reduction, weights, ignore_index,
label smoothing, probability targets; opsets 13 and 18 (ReduceMean's axes become an input)."""
from __future__ import annotations

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.nn.functional as F

from test_onnx_common import Lambda, export_and_check

W4 = fg.tensor(np.float32([0.5, 1.0, 2.0, 0.7]))


def _probs(x):
    return F.sigmoid(x)


CASES = {
    "mse": (lambda m, x, t: F.mse_loss(x, t), "float"),
    "mse_none": (lambda m, x, t: F.mse_loss(x, t, reduction="none"), "float"),
    "l1_sum": (lambda m, x, t: F.l1_loss(x, t, reduction="sum"), "float"),
    "bce": (lambda m, x, t: F.binary_cross_entropy(_probs(x), _probs(t)), "float"),
    "bce_weight_none": (lambda m, x, t: F.binary_cross_entropy(_probs(x), _probs(t), weight=W4, reduction="none"),
                        "float"),
    "bce_logits": (lambda m, x, t: F.binary_cross_entropy_with_logits(x * 3, _probs(t)), "float"),
    "bce_logits_pos_weight": (lambda m, x, t: F.binary_cross_entropy_with_logits(
        x * 3, _probs(t), weight=W4, pos_weight=W4 * 2, reduction="sum"), "float"),
    "cross_entropy": (lambda m, x, t: F.cross_entropy(x, t), "index"),
    "cross_entropy_weight_ignore": (lambda m, x, t: F.cross_entropy(x, t, weight=W4, ignore_index=2), "index"),
    "cross_entropy_none": (lambda m, x, t: F.cross_entropy(x, t, reduction="none"), "index"),
    "cross_entropy_smoothing": (lambda m, x, t: F.cross_entropy(x, t, weight=W4, label_smoothing=0.1, ignore_index=1),
                                "index"),
    "cross_entropy_smoothing_sum": (lambda m, x, t: F.cross_entropy(x, t, label_smoothing=0.2, reduction="sum"),
                                    "index"),
    "cross_entropy_probs": (lambda m, x, t: F.cross_entropy(x, F.softmax(t), label_smoothing=0.1), "float"),
    "nll": (lambda m, x, t: F.nll_loss(F.log_softmax(x), t, weight=W4), "index"),
    "nll_none": (lambda m, x, t: F.nll_loss(F.log_softmax(x), t, reduction="none", ignore_index=0), "index"),
    "kl_div": (lambda m, x, t: F.kl_div(F.log_softmax(x), F.softmax(t * 2), reduction="batchmean"), "float"),
    "kl_div_log_target": (lambda m, x, t: F.kl_div(F.log_softmax(x), F.log_softmax(t), log_target=True,
                                                   reduction="none"), "float"),
}


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("name", sorted(CASES))
def test_loss(tmp_path, name, opset):
    fn, kind = CASES[name]
    fg.manual_seed(0)
    x = fg.randn(3, 4)
    t = fg.tensor(np.array([0, 3, 2])) if kind == "index" else fg.randn(3, 4)
    export_and_check(Lambda(fn), (x, t), tmp_path, opset=opset)


def test_cross_entropy_spatial(tmp_path):
    """(N, C, d) logits with (N, d) targets: class axis 1."""
    fg.manual_seed(1)
    x = fg.randn(3, 4, 5)
    t = fg.tensor(np.random.default_rng(0).integers(0, 4, size=(3, 5)))
    def fn(m, x, t):
        return F.cross_entropy(x, t, weight=W4), F.cross_entropy(x, t, label_smoothing=0.1)

    export_and_check(Lambda(fn), (x, t), tmp_path)
