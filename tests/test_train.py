"""forgegrad.train: fit / evaluate / predict, metrics, callbacks, progress output, Keras-style sugar."""
import sys

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.autograd import is_grad_enabled
from forgegrad.data import DataLoader, TensorDataset
from forgegrad.optim import SGD, Adam
from forgegrad.optim.lr_scheduler import ReduceLROnPlateau
from forgegrad.serialization import load
from forgegrad.train import (Accuracy, Callback, EarlyStopping, FitState, History, LambdaCallback,
                             MeanAbsoluteError, ModelCheckpoint, evaluate, fit, keras, predict)
from forgegrad.train.metrics import get_metric, get_metrics


def _blobs(n=64, seed=0):
    """Two well separated 2-D clusters; labels 0/1 (int64)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    X = rng.standard_normal((n, 2)).astype(np.float32) * 0.5 + np.where(y[:, None] == 1, 2.0, -2.0)
    return X.astype(np.float32), y


def _loaders(n=64, bs=16):
    X, y = _blobs(n)
    return (DataLoader(TensorDataset(X[:48], y[:48]), batch_size=bs, shuffle=True, seed=0),
            DataLoader(TensorDataset(X[48:], y[48:]), batch_size=bs))


def _mlp():
    fg.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def _weights(model):
    return {k: v._data.copy() for k, v in model.state_dict().items()}


# ---- fit / evaluate / predict -------------------------------------------------------------------
def test_fit_reduces_loss_and_history_keys():
    train, val = _loaders()
    model = _mlp()
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.2), train, epochs=6, val_loader=val,
            progress=False)
    assert isinstance(h, History) and h.history is h
    assert list(h.keys()) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 6 for v in h.values()) and h.epoch == list(range(6))
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] == 1.0 and not h.interrupted and h.note is None
    assert model.training  # mode restored


def test_fit_without_validation_and_metrics():
    train, _ = _loaders()
    model = _mlp()
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=2, metrics=(), progress=False)
    assert list(h.keys()) == ["loss"]


def test_fit_epoch_loss_is_sample_weighted_mean():
    # a model with no parameters-to-learn effect (lr=0): the epoch loss equals evaluate's loss
    X, y = _blobs(10)
    loader = DataLoader(TensorDataset(X, y), batch_size=4)  # batches of 4, 4, 2
    model = _mlp()
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.0), loader, epochs=1, progress=False)
    ref = nn.CrossEntropyLoss()(model(fg.tensor(X)), fg.tensor(y)).item()
    assert h["loss"][0] == pytest.approx(ref, rel=1e-5)
    assert evaluate(model, nn.CrossEntropyLoss(), loader)["loss"] == pytest.approx(ref, rel=1e-5)


class ModeProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, is_grad_enabled()))
        return self.lin(x)


def test_evaluate_and_predict_use_eval_mode_and_no_grad():
    _, val = _loaders()
    model = ModeProbe()
    out = evaluate(model, nn.CrossEntropyLoss(), val, metrics=["accuracy"])
    assert set(out) == {"loss", "accuracy"}
    assert set(model.seen) == {(False, False)} and model.training
    model.seen.clear()
    pred = predict(model, np.zeros((5, 2), np.float32), batch_size=2)
    assert isinstance(pred, fg.Tensor) and pred.shape == (5, 2) and not pred.requires_grad
    assert model.seen == [(False, False)] * 3 and model.training
    model.seen.clear()
    train, _ = _loaders()
    fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=1, val_loader=val, progress=False)
    assert (True, True) in model.seen and (False, False) in model.seen


def test_predict_inputs():
    model = _mlp()
    X, y = _blobs(10)
    ref = model(fg.tensor(X))._data
    np.testing.assert_allclose(predict(model, X, batch_size=3)._data, ref, rtol=1e-6)
    np.testing.assert_allclose(predict(model, fg.tensor(X))._data, ref, rtol=1e-6)
    np.testing.assert_allclose(predict(model, DataLoader(TensorDataset(X, y), batch_size=4))._data, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, X, batch_size=0)


def test_fit_argument_errors():
    train, _ = _loaders()
    model = _mlp()
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=-1)
    with pytest.raises(TypeError, match="zero_grad"):
        fit(model, nn.CrossEntropyLoss(), object(), train, epochs=1)
    with pytest.raises(TypeError, match="Callback"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=1, callbacks=[lambda: None])
    with pytest.raises(ValueError, match="unknown metric"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=1, metrics=["f1"])
    with pytest.raises(ValueError, match="no batches"):
        fit(model, nn.CrossEntropyLoss(), opt, DataLoader(TensorDataset(*_blobs(4)), batch_size=8, drop_last=True),
            epochs=1, progress=False)
    with pytest.raises(TypeError, match="tuple"):
        fit(model, nn.CrossEntropyLoss(), opt, [fg.zeros(2, 2)], epochs=1, progress=False)


# ---- metrics --------------------------------------------------------------------------------------
def test_accuracy_multiclass_and_onehot():
    m = Accuracy()
    out = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]], np.float32)
    m.update(out, np.array([1, 0, 1, 1]))
    assert m.compute() == 0.75
    m.update(out[:2], np.eye(3, dtype=np.float32)[[1, 2]])  # one-hot targets
    assert m.compute() == pytest.approx(4 / 6)
    m.reset()
    assert np.isnan(m.compute())
    with pytest.raises(ValueError, match="target"):
        m.update(out, np.zeros(3))


def test_accuracy_binary_probabilities_vs_logits():
    probs = np.array([[0.2], [0.7], [0.4], [0.9]], np.float32)
    target = np.array([0, 1, 1, 1])
    m = Accuracy()  # all in [0, 1]: read as probabilities, threshold 0.5
    m.update(probs, target)
    assert m.compute() == 0.75
    logits = np.array([-1.0, 0.3, 2.0, -0.2], np.float32)  # outside [0, 1]: logits, threshold 0
    m = Accuracy()
    m.update(logits, np.array([0.0, 1.0, 1.0, 1.0], np.float32))
    assert m.compute() == 0.75
    m = Accuracy(from_logits=True)  # 0.2 and 0.4 are positive logits
    m.update(probs, target)
    assert m.compute() == 0.75 and Accuracy(from_logits=True).from_logits


def test_fit_tells_accuracy_about_logits_from_the_loss():
    # outputs that all lie in [0, 1] but are logits: BCEWithLogitsLoss makes fit threshold them at 0
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(np.zeros(1, np.float32))

        def forward(self, x):
            return x[:, :1] * 0.0 + 0.3 + self.b

    X = np.zeros((4, 2), np.float32)
    y = np.ones((4, 1), np.float32)  # logit 0.3 > 0 -> class 1 -> all correct
    loader = DataLoader(TensorDataset(X, y), batch_size=4)
    model = Const()
    h = fit(model, nn.BCEWithLogitsLoss(), SGD(model.parameters(), lr=0.0), loader, epochs=1, progress=False)
    assert h["accuracy"] == [1.0]
    y0 = np.zeros((4, 1), np.float32)  # as probabilities 0.3 < 0.5 -> class 0 -> all correct under BCELoss
    h = fit(model, nn.BCELoss(), SGD(model.parameters(), lr=0.0), DataLoader(TensorDataset(X, y0), batch_size=4),
            epochs=1, progress=False)
    assert h["accuracy"] == [1.0]


def test_mae_and_callable_metrics():
    m = MeanAbsoluteError()
    m.update(np.array([[1.0], [2.0]]), np.array([0.0, 4.0]))
    m.update(np.array([[1.0]]), np.array([1.0]))
    assert m.compute() == pytest.approx(1.0)
    f = get_metric(lambda out, tgt: float(np.mean(out)))
    f.update(np.array([1.0, 1.0]), None)
    f.update(np.array([4.0]), None)
    assert f.compute() == pytest.approx(2.0)  # weighted by batch size
    assert get_metric("mae").name == "mae" and get_metric("acc").name == "acc"
    with pytest.raises(ValueError, match="duplicate"):
        get_metrics(["accuracy", "accuracy"])
    with pytest.raises(TypeError):
        get_metric(3)


# ---- callbacks --------------------------------------------------------------------------------------
def _drive(cb, model, values, monitor="val_loss", mutate=None):
    """Call cb's hooks as fit would, with scripted monitored values; returns the epochs run."""
    state = FitState(model, None, History(), len(values))
    cb.set_state(state)
    cb.on_train_begin({})
    ran = 0
    for e, v in enumerate(values):
        if mutate:
            mutate(e)
        cb.on_epoch_end(e, {"loss": 1.0, monitor: v})
        ran += 1
        if state.stop_training:
            break
    cb.on_train_end({})
    return ran, state


def test_early_stopping_patience_and_min_delta():
    model = _mlp()
    es = EarlyStopping(monitor="val_loss", patience=2)
    ran, state = _drive(es, model, [1.0, 0.8, 0.9, 0.85, 0.7, 0.6])
    assert ran == 4 and es.stopped_epoch == 3 and es.best == 0.8 and es.best_epoch == 1
    assert state.history.stopped_early
    es = EarlyStopping(monitor="val_loss", patience=0, min_delta=0.1)
    ran, _ = _drive(es, model, [1.0, 0.95, 0.5])  # 0.05 is not an improvement
    assert ran == 2
    es = EarlyStopping(monitor="val_accuracy", patience=1)  # auto mode: higher is better
    ran, _ = _drive(es, model, [0.5, 0.6, 0.7, 0.7, 0.9], monitor="val_accuracy")
    assert ran == 4 and es.best == 0.7
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_early_stopping_restore_best_weights():
    model = _mlp()
    snapshots = {}

    def mutate(e):
        for p in model.parameters():
            p._data[...] = e
        snapshots[e] = _weights(model)

    es = EarlyStopping(patience=1, restore_best_weights=True)
    _drive(es, model, [1.0, 0.5, 0.9, 0.8], mutate=mutate)
    for k, v in _weights(model).items():
        np.testing.assert_array_equal(v, snapshots[1][k])


def test_early_stopping_stops_fit_when_loss_converges():
    train, _ = _loaders()
    model = _mlp()
    # lr=0: the loss cannot improve after the first epoch (beyond rounding: the shuffled batches sum
    # in a different order each epoch, hence min_delta)
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.0), train, epochs=20,
            callbacks=[EarlyStopping(monitor="loss", patience=2, min_delta=1e-4)], progress=False)
    assert len(h["loss"]) == 3 and h.stopped_early


def test_early_stopping_missing_monitor_warns_and_does_not_stop():
    train, _ = _loaders()
    model = _mlp()
    with pytest.warns(RuntimeWarning, match="val_loss.*not available"):
        h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.0), train, epochs=3,
                callbacks=[EarlyStopping(patience=0)], progress=False)
    assert len(h["loss"]) == 3


def test_model_checkpoint_keeps_best(tmp_path):
    model = _mlp()
    snapshots = {}

    def mutate(e):
        for p in model.parameters():
            p._data[...] = e + 1
        snapshots[e] = _weights(model)

    path = tmp_path / "new_dir" / "best.safetensors"  # the directory is created
    ck = ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    _drive(ck, model, [1.0, 0.4, 0.7, 0.5], mutate=mutate)
    saved = load(path)
    for k, v in snapshots[1].items():
        np.testing.assert_array_equal(saved[k], v)
    assert ck.best == 0.4 and ck.last_saved == str(path)


def test_model_checkpoint_every_epoch_with_format(tmp_path):
    train, val = _loaders()
    model = _mlp()
    pattern = str(tmp_path / "m-{epoch:02d}-{val_loss:.2f}.safetensors")
    fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=2, val_loader=val,
        callbacks=[ModelCheckpoint(pattern)], progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("m-01-") and names[1].startswith("m-02-")
    m2 = _mlp()
    m2.load_state_dict(load(tmp_path / names[1]))
    for k, v in _weights(model).items():
        np.testing.assert_array_equal(m2.state_dict()[k]._data, v)
    with pytest.raises(KeyError, match="val_acc"):
        fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=1,
            callbacks=[ModelCheckpoint(str(tmp_path / "{val_acc}.safetensors"))], progress=False)


def test_keyboard_interrupt_returns_history_and_keeps_checkpoint(tmp_path, capsys):
    train, val = _loaders()
    model = _mlp()
    path = tmp_path / "last.safetensors"
    at_epoch_end = {}

    class Interrupt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end[epoch] = _weights(self.model)

        def on_train_batch_end(self, batch, logs=None):
            if self.state.epoch == 2 and batch == 1:
                raise KeyboardInterrupt

    ended = []
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=10, val_loader=val,
            callbacks=[ModelCheckpoint(path), Interrupt(),
                       LambdaCallback(on_train_end=lambda logs: ended.append(logs))],
            progress=False)
    assert h.interrupted and len(h["loss"]) == 2 and len(h["val_loss"]) == 2
    assert "interrupted" in h.note and "epoch 3/10" in h.note and str(path) in h.note
    assert "interrupted" in capsys.readouterr().err
    assert ended == [{"interrupted": True}]
    saved = load(path)  # the checkpoint of the last completed epoch, intact
    for k, v in at_epoch_end[1].items():
        np.testing.assert_array_equal(saved[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    assert model.training


def test_other_exceptions_propagate():
    train, _ = _loaders()
    model = _mlp()
    boom = LambdaCallback(on_epoch_end=lambda e, logs: (_ for _ in ()).throw(RuntimeError("boom")))
    model.eval()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=2, callbacks=[boom],
            progress=False)
    assert not model.training  # the caller's mode is restored even on errors


def test_interrupt_note_mentions_restored_best_weights():
    train, _ = _loaders()
    model = _mlp()
    stop = LambdaCallback(on_epoch_begin=lambda e, logs: (_ for _ in ()).throw(KeyboardInterrupt()) if e == 2 else None)
    h = fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=5, progress=False,
            callbacks=[EarlyStopping(monitor="loss", patience=3, restore_best_weights=True), stop])
    assert h.interrupted and len(h["loss"]) == 2 and "best weights" in h.note


# ---- schedulers ---------------------------------------------------------------------------------------
class StepDecay:
    def __init__(self, opt):
        self.opt, self.calls = opt, 0

    def step(self):
        self.calls += 1
        for g in self.opt.param_groups:
            g["lr"] *= 0.5


class RecordingPlateau(ReduceLROnPlateau):
    """forgegrad.optim's ReduceLROnPlateau, recording the metric fit steps it with."""

    def __init__(self, opt):
        super().__init__(opt)
        self.seen = []

    def step(self, metrics, epoch=None):
        self.seen.append(metrics)
        super().step(metrics, epoch)


def test_scheduler_stepped_per_epoch_and_lr_logged():
    train, val = _loaders()
    model = _mlp()
    opt = SGD(model.parameters(), lr=0.4)
    sched = StepDecay(opt)
    h = fit(model, nn.CrossEntropyLoss(), opt, train, epochs=3, scheduler=sched, progress=False)
    assert sched.calls == 3 and h["lr"] == [0.4, 0.2, 0.1]
    plateau = RecordingPlateau(opt)
    h = fit(model, nn.CrossEntropyLoss(), opt, train, epochs=2, val_loader=val, scheduler=plateau, progress=False)
    assert plateau.seen == h["val_loss"]
    plateau = RecordingPlateau(opt)
    h = fit(model, nn.CrossEntropyLoss(), opt, train, epochs=2, scheduler=plateau, progress=False)
    assert plateau.seen == h["loss"]


# ---- progress output -----------------------------------------------------------------------------------
def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")  # installed in the test environment; an optional extra for users
    train, val = _loaders()
    model = _mlp()
    fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=2, val_loader=val, progress=True)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "loss=" in err and "val_accuracy=" in err


def test_progress_falls_back_to_lines_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    train, _ = _loaders()
    model = _mlp()
    fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=2, progress=True)
    out = capsys.readouterr()
    assert "Epoch 1/2 - loss: " in out.out and "accuracy: " in out.out and "Epoch 2/2" in out.out


def test_progress_false_is_silent(capsys):
    train, _ = _loaders()
    model = _mlp()
    fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=1, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    with pytest.raises(ValueError, match="progress"):
        fit(model, nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), train, epochs=1, progress="fancy")


# ---- Keras-style sugar ------------------------------------------------------------------------------------
def _seed_model(final="sigmoid"):
    fg.manual_seed(0)
    return nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(8, activation="relu"),
                         nn.Dense(1, activation=final))


def test_keras_compile_fit_evaluate_predict():
    X, y = _blobs(80)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"], learning_rate=0.01)
    h = model.fit(X, y, epochs=8, batch_size=16, validation_split=0.25, verbose=0)
    assert list(h.history.keys()) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert h["loss"][-1] < h["loss"][0] and h["val_accuracy"][-1] == 1.0
    loss, acc = model.evaluate(X, y)
    assert acc == 1.0 and loss < h["loss"][0]
    p = model.predict(X[:5])
    assert isinstance(p, np.ndarray) and p.shape == (5, 1) and p.dtype == np.float32
    assert ((0 <= p) & (p <= 1)).all()
    cfg = model._compile_config
    # Dense layers were built (one forward) before the optimizer was created: it holds every parameter
    held = {id(q) for g in cfg.optimizer.param_groups for q in g["params"]}
    assert held == {id(q) for q in model.parameters()} and len(held) == 6
    assert cfg.optimizer.param_groups[0]["lr"] == 0.01
    # sigmoid + binary_crossentropy is BCE on probabilities
    assert cfg.loss_fn.from_logits is False
    ref = nn.functional.binary_cross_entropy(fg.tensor(p), fg.tensor(y[:5, None].astype(np.float32))).item()
    assert model.evaluate(X[:5], y[:5], return_dict=True)["loss"] == pytest.approx(ref, rel=1e-5)
    # a second fit continues with the same optimizer
    model.fit(X, y, epochs=1, verbose=0)
    assert model._compile_config.optimizer is cfg.optimizer


def test_keras_module_functions_and_linear_output_uses_logits():
    X, y = _blobs(40)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, "relu"), nn.Dense(1))
    keras.compile(model, loss="binary_crossentropy", optimizer="sgd", metrics=["accuracy"], lr=0.1)
    keras.fit(model, X, y, epochs=5, batch_size=8, verbose=0)
    assert model._compile_config.loss_fn.from_logits is True
    assert keras.evaluate(model, X, y)[1] == 1.0


def test_keras_validation_split_takes_last_fraction(monkeypatch):
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float32)
    seen = {}
    real_fit = keras.loop.fit

    def spy(model, loss_fn, optimizer, train_loader, **kw):
        seen["train"] = train_loader.dataset.arrays[1].ravel().tolist()
        seen["val"] = kw["val_loader"].dataset.arrays[1].ravel().tolist()
        return real_fit(model, loss_fn, optimizer, train_loader, **kw)

    monkeypatch.setattr(keras.loop, "fit", spy)
    fg.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    keras.compile(model, loss="mse", optimizer="sgd", metrics=["mae"])
    h = keras.fit(model, X, y, epochs=1, validation_split=0.3, verbose=0)
    assert seen["val"] == [7.0, 8.0, 9.0] and seen["train"] == list(range(7))
    assert set(h) == {"loss", "mae", "val_loss", "val_mae"}
    keras.fit(model, X, y, epochs=1, validation_data=(X[:2], y[:2]), validation_split=0.5, verbose=0)
    assert seen["val"] == [0.0, 1.0] and len(seen["train"]) == 10


def test_keras_sparse_and_categorical_crossentropy():
    X, y = _blobs(60)
    for final, loss, target in [("softmax", "sparse_categorical_crossentropy", y),
                                (None, "sparse_categorical_crossentropy", y),
                                ("softmax", "categorical_crossentropy", np.eye(2, dtype=np.float32)[y]),
                                (None, "categorical_crossentropy", np.eye(2, dtype=np.float32)[y])]:
        fg.manual_seed(1)
        model = nn.Sequential(nn.Dense(8, "relu"), nn.Dense(2, activation=final))
        model.compile(loss=loss, optimizer="adam", metrics=["accuracy"], lr=0.02)
        h = model.fit(X, target, epochs=6, batch_size=10, verbose=0)
        assert h["loss"][-1] < h["loss"][0], (final, loss)
        assert h["accuracy"][-1] > 0.9, (final, loss)
    # softmax probabilities: the loss equals -mean log p[target]
    p = model.predict(X)
    fg.manual_seed(1)
    sm = nn.Sequential(nn.Dense(2, "softmax"))
    sm.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    probs = sm.predict(X)
    expect = -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1)))
    assert sm.evaluate(X, y) == pytest.approx(expect, rel=1e-5)
    assert p.shape == (60, 2)


def test_keras_optimizer_instance_class_and_errors():
    X, y = _blobs(20)
    # an optimizer class is instantiated with the (built) parameters
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer=Adam, metrics=["accuracy"], lr=0.01)
    model.fit(X, y, epochs=1, verbose=0)
    assert isinstance(model._compile_config.optimizer, Adam)
    # an instance created after building is used as is
    built = nn.Sequential(nn.Dense(4, "relu", input_dim=2), nn.Dense(1, "sigmoid", input_dim=4))
    opt = SGD(built.parameters(), lr=0.1)
    built.compile(loss="binary_crossentropy", optimizer=opt)
    built.fit(X, y, epochs=1, verbose=0)
    assert built._compile_config.optimizer is opt
    # the first layer's input size builds every layer up front (Keras): an optimizer made now holds them all
    known = nn.Sequential(nn.Dense(4, "relu", input_dim=2), nn.Dense(1, "sigmoid"))
    known.compile(loss="binary_crossentropy", optimizer=SGD(known.parameters(), lr=0.1))
    known.fit(X, y, epochs=1, verbose=0)
    # an optimizer given a model whose first layer has no input size yet refuses (it could never update it)
    lazy = nn.Sequential(nn.Dense(4, "relu"), nn.Dense(1, "sigmoid"))
    with pytest.raises(ValueError, match=r"lazy layers 0 \(Dense\) have no parameters yet"):
        SGD(lazy.parameters(), lr=0.1)
    # an optimizer built from a list it could not check still gets compile's error
    lazy.compile(loss="binary_crossentropy", optimizer=SGD(list(known.parameters()), lr=0.1))
    with pytest.raises(ValueError, match="before the model's Dense layers were built"):
        lazy.fit(X, y, epochs=1, verbose=0)


def test_keras_errors():
    X, y = _blobs(20)
    model = _seed_model()
    with pytest.raises(RuntimeError, match="compiled first"):
        model.fit(X, y)
    with pytest.raises(ValueError, match="unknown loss"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer"):
        model.compile(loss="mse", optimizer="lion")
    with pytest.raises(ValueError, match="unknown metric"):
        model.compile(loss="mse", metrics=["f1"])
    model.compile(loss="binary_crossentropy", optimizer="adam")
    with pytest.raises(ValueError, match="20 samples"):
        model.fit(X, y[:5], verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(X, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(X, y, validation_data=X, verbose=0)


def test_keras_verbose_levels(capsys):
    X, y = _blobs(20)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, y, epochs=2, verbose=2)
    out = capsys.readouterr()
    assert "Epoch 2/2 - loss:" in out.out
    model.fit(X, y, epochs=1, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_keras_custom_loss_callable():
    X, y = _blobs(20)
    model = _seed_model()
    calls = []

    def my_loss(out, target):
        calls.append(target.shape)
        return nn.functional.binary_cross_entropy(out, target.float().reshape(-1, 1))

    model.compile(loss=my_loss, optimizer="adam", metrics=[])
    h = model.fit(X, y, epochs=1, batch_size=10, verbose=0)
    assert calls and calls[0] == (10,) and list(h) == ["loss"]
    assert isinstance(model.evaluate(X, y), float)


def test_history_repr_and_append():
    h = History()
    h.append(0, {"loss": 1.0, "accuracy": 0.5})
    h.append(1, {"loss": 0.5, "accuracy": 0.75})
    assert h["loss"] == [1.0, 0.5] and h.epoch == [0, 1]
    assert "loss" in repr(h)
