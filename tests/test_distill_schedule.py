"""DistillationLoss against the torch formula (value and gradient), fit(..., teacher=...), and the
PruningSchedule callback with TF-MOT's ConstantSparsity / PolynomialDecay."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import forgegrad as fg
from forgegrad import nn, optim
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.nn.utils import prune
from forgegrad.train import (ConstantSparsity, DistillationLoss, PolynomialDecay, PruningSchedule, fit,
                             distillation_loss)


def _torch_kd(t, s, y, T, alpha):
    soft = TF.kl_div(TF.log_softmax(s / T, 1), TF.softmax(t / T, 1), reduction="batchmean") * T * T
    return alpha * soft + (1 - alpha) * TF.cross_entropy(s, y)


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (3.0, 0.0)])
def test_distillation_loss_and_gradient_match_torch(T, alpha):
    rng = np.random.default_rng(0)
    t = rng.standard_normal((6, 5)).astype(np.float32) * 3
    s = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    sf = fg.tensor(s, requires_grad=True)
    tf_ = fg.tensor(t, requires_grad=True)
    out = DistillationLoss(temperature=T, alpha=alpha)(tf_, sf, fg.tensor(y))
    st = torch.tensor(s, requires_grad=True)
    ref = _torch_kd(torch.tensor(t), st, torch.tensor(y), T, alpha)
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-5, atol=1e-6)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(sf.grad._data, st.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert tf_.grad is None  # the teacher gets no gradient


def test_distillation_errors():
    a = fg.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(a, fg.tensor(np.zeros((2, 4), np.float32)), fg.tensor(np.zeros(2, np.int64)))
    with pytest.raises(TypeError, match="student_logits"):
        distillation_loss(a, np.zeros((2, 3)), fg.tensor(np.zeros(2, np.int64)))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    return x, y


def test_fit_with_teacher_uses_teacher_outputs():
    x, y = _data()
    fg.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    teacher.train()
    calls = []
    real_forward = teacher.forward
    teacher.forward = lambda inp: (calls.append(teacher.training), real_forward(inp))[1]
    student = nn.Sequential(nn.Linear(8, 4))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    before = student[0].weight._data.copy()
    hist = fit(student, DistillationLoss(2.0, 0.5), optim.SGD(student.parameters(), lr=0.1), loader, epochs=2,
               val_loader=loader, progress=False, teacher=teacher)
    assert len(calls) == 8 and not any(calls)  # once per batch, in eval mode
    assert teacher.training  # restored
    assert not np.array_equal(before, student[0].weight._data)
    assert len(hist["val_loss"]) == 2
    # the student's step equals a manual step on the same loss
    fg.manual_seed(1)
    s2 = nn.Sequential(nn.Linear(8, 4))
    w0 = s2[0].weight._data.copy()
    fit(s2, DistillationLoss(2.0, 0.5), optim.SGD(s2.parameters(), lr=0.1), [(x[:16], y[:16])], epochs=1,
        progress=False, teacher=teacher)
    fg.manual_seed(1)
    s3 = nn.Sequential(nn.Linear(8, 4))
    np.testing.assert_array_equal(s3[0].weight._data, w0)
    with fg.no_grad():
        t_out = real_forward(fg.tensor(x[:16]))
    loss = distillation_loss(t_out, s3(fg.tensor(x[:16])), fg.tensor(y[:16]), 2.0, 0.5)
    loss.backward()
    np.testing.assert_allclose(s2[0].weight._data, w0 - 0.1 * s3[0].weight.grad._data, rtol=1e-5, atol=1e-6)


def test_fit_teacher_needs_a_distillation_loss():
    x, y = _data(16)
    m = nn.Linear(8, 4)
    with pytest.raises(TypeError, match="hard_loss"):
        fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), [(x, y)], epochs=1, progress=False,
            teacher=nn.Linear(8, 4))


def test_polynomial_decay_is_tfmot_formula():
    s = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=110, power=3, frequency=20)
    for step in [0, 10, 30, 57, 110, 500]:
        p = min(1.0, max(0.0, (step - 10) / 100))
        assert s.sparsity(step) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - p) ** 3)
    assert [st for st in range(200) if s.should_prune(st)] == [10, 30, 50, 70, 90, 110]
    c = ConstantSparsity(0.5, begin_step=2, frequency=3)
    assert [st for st in range(12) if c.should_prune(st)] == [2, 5, 8, 11] and c.sparsity(7) == 0.5
    with pytest.raises(ValueError, match="end_step"):
        PolynomialDecay(0.0, 0.5, begin_step=5, end_step=2)
    with pytest.raises(ValueError, match="final_sparsity"):
        PolynomialDecay(0.0, 1.5, begin_step=0, end_step=2)


def test_pruning_schedule_reaches_target_during_fit():
    x, y = _data(128)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    sched = PruningSchedule(model, PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=4))
    seen = []

    class Spy(fg.train.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float((model[0].weight_mask._data == 0).mean()))

    fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2),
        DataLoader(TensorDataset(x, y), batch_size=16), epochs=2, progress=False, callbacks=[sched, Spy()])
    assert prune.is_pruned(model)
    assert seen == sorted(seen) and seen[0] < 0.75  # sparsity grows step by step
    for m in (model[0], model[2]):
        assert (m.weight_mask._data == 0).mean() == pytest.approx(0.75, abs=1 / m.weight_mask._data.size)
        assert np.all(m.weight._data[m.weight_mask._data == 0] == 0)
    sched.strip()
    assert not prune.is_pruned(model) and sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert (model[0].weight._data == 0).mean() == pytest.approx(0.75, abs=0.01)
