"""pytorch/examples programs run on forgegrad with only their import lines changed, and match torch.

Each program file here is the torch program with ``import forgegrad as torch`` & co.; the torch
version is the same file with ``forgegrad`` replaced by ``torch`` in the import block (nothing else).
Both run from the same initial weights on tiny data; losses and weights must agree. Dropout is set to
0 and the VAE's noise comes from one shared stream: random draws cannot match across frameworks.
"""
import pathlib
import re
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import forgegrad as fg

HERE = pathlib.Path(__file__).parent
_IMPORTS = re.compile(r"(# ---- imports.*?\n)(.*?)(# ---- end of imports ----)", re.S)


def load_pair(name):
    """(forgegrad module, torch module) from the program file: the torch one differs only in its imports."""
    src = (HERE / f"{name}.py").read_text()
    m = _IMPORTS.search(src)
    assert m, f"{name}.py has no import block"
    torch_src = src[:m.start(2)] + m.group(2).replace("forgegrad", "torch") + src[m.end(2):]
    assert torch_src.replace("torch", "forgegrad") .count("\n") == src.count("\n")
    mods = []
    for variant, code in (("fg", src), ("torch", torch_src)):
        mod = types.ModuleType(f"port_{name}_{variant}")
        mod.__file__ = str(HERE / f"{name}.py")
        exec(compile(code, mod.__file__, "exec"), mod.__dict__)
        mods.append(mod)
    return mods


def copy_weights(src, dst):
    """src (forgegrad module) -> dst (torch module): the state_dict keys are the same."""
    sd = {k: torch.tensor(np.array(v)) for k, v in src.state_dict().items()}
    dst.load_state_dict(sd)


def assert_same_weights(ours, theirs, rtol, atol):
    want = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(np.asarray(v), want[k].detach().numpy(), rtol=rtol, atol=atol, err_msg=k)


def test_import_swap_changes_only_imports():
    src = (HERE / "mnist.py").read_text()
    block = _IMPORTS.search(src).group(2)
    assert "forgegrad" not in src.replace(block, "").replace("forgegrad as torch", "")


def test_mnist(capsys):
    ours, theirs = load_pair("mnist")
    fg.manual_seed(0)
    m1, m2 = ours.Net(), theirs.Net()
    copy_weights(m1, m2)
    for m in (m1, m2):
        m.dropout1.p = m.dropout2.p = 0.0
    rng = np.random.default_rng(0)
    x = rng.random((12, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 12)
    args = SimpleNamespace(log_interval=1, dry_run=False)
    results = []
    for mod, lib, model in ((ours, fg, m1), (theirs, torch, m2)):
        from_lib = fg.utils.data if lib is fg else torch.utils.data
        ds = from_lib.TensorDataset(lib.tensor(x), lib.tensor(y))
        loader = from_lib.DataLoader(ds, batch_size=4)
        optimizer = mod.optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = mod.StepLR(optimizer, step_size=1, gamma=0.7)
        device = lib.device("cpu")
        for epoch in (1, 2):
            mod.train(args, model, device, loader, optimizer, epoch)
            scheduler.step()
        results.append(mod.test(model, device, loader))
    assert results[0][1] == results[1][1]
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=2e-4)
    assert_same_weights(m1, m2, rtol=2e-3, atol=2e-5)
    out = capsys.readouterr().out
    assert out.count("Train Epoch") == 12 and out.count("Test set") == 2


def test_vae(monkeypatch):
    ours, theirs = load_pair("vae")
    fg.manual_seed(1)
    m1, m2 = ours.VAE(), theirs.VAE()
    copy_weights(m1, m2)
    x = np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32)
    noise = {}
    for name, lib in (("fg", fg), ("torch", torch)):
        stream = np.random.default_rng(7)  # the same draws for both
        noise[name] = (lambda lib_, s: lambda t: lib_.tensor(s.standard_normal(tuple(t.shape)).astype(np.float32)))(
            lib, stream)
    monkeypatch.setattr(fg, "randn_like", noise["fg"])
    monkeypatch.setattr(torch, "randn_like", noise["torch"])
    losses = []
    for mod, lib, model in ((ours, fg, m1), (theirs, torch, m2)):
        from_lib = fg.utils.data if lib is fg else torch.utils.data
        ds = from_lib.TensorDataset(lib.tensor(x), lib.tensor(np.zeros(16, np.int64)))
        mod.model, mod.device = model, lib.device("cpu")
        mod.optimizer = mod.torch.optim.Adam(model.parameters(), lr=1e-3)
        mod.train_loader = mod.test_loader = from_lib.DataLoader(ds, batch_size=8)
        mod.args = SimpleNamespace(log_interval=1, batch_size=8)
        losses.append([mod.train(1), mod.train(2), mod.test(2)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert_same_weights(m1, m2, rtol=1e-3, atol=1e-4)  # Adam: a near-zero gradient's step is sensitive


def _no_dropout(model):
    """Random dropout masks cannot match across frameworks: every dropout of the model set to 0."""
    for m in model.modules():
        if type(m).__name__ == "Dropout":
            m.p = 0.0
        elif type(m).__name__ == "MultiheadAttention":
            m.dropout = 0.0


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU", "Transformer"])
def test_word_language_model(tmp_path, rnn_type):
    ours, theirs = load_pair("word_language_model")
    words = "the cat sat on the mat and the dog ate the bone while a bird sang".split()
    rng = np.random.default_rng(2)
    for split, n in (("train", 30), ("valid", 6), ("test", 6)):
        lines = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(n)]
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    fg.manual_seed(3)
    pairs = ((ours, fg), (theirs, torch))
    for mod, lib in pairs:
        mod.args = SimpleNamespace(bptt=7, batch_size=4, clip=0.25, dry_run=False, model=rnn_type)
        mod.device, mod.eval_batch_size, mod.lr = lib.device("cpu"), 2, 5.0 if rnn_type != "Transformer" else 0.5
        mod.corpus = mod.Corpus(str(tmp_path))
        mod.train_data = mod.batchify(mod.corpus.train, mod.args.batch_size)
        if rnn_type == "Transformer":  # main.py: TransformerModel(ntokens, emsize, nhead, nhid, nlayers, dropout)
            mod.model = mod.TransformerModel(len(mod.corpus.dictionary), 8, 2, 12, 2, dropout=0.0)
            _no_dropout(mod.model)
        else:
            mod.model = mod.RNNModel(rnn_type, len(mod.corpus.dictionary), 8, 12, 2, dropout=0.0)
        mod.criterion = mod.nn.NLLLoss()
    copy_weights(ours.model, theirs.model)
    results = []
    for mod, lib in pairs:
        val_data = mod.batchify(mod.corpus.valid, mod.eval_batch_size)
        losses = mod.train() + mod.train()
        results.append((losses, mod.evaluate(val_data)))
    models = [ours.model, theirs.model]
    assert len(results[0][0]) > 4
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4)
    assert_same_weights(models[0], models[1], rtol=1e-3, atol=1e-5)


def test_vae_exports_deterministically(tmp_path):
    ours, _ = load_pair("vae")
    fg.manual_seed(4)
    model = ours.VAE()
    x = fg.rand(3, 1, 28, 28)
    report = fg.onnx.export(model, x, str(tmp_path / "vae.onnx"))  # verified in onnxruntime
    assert report.ok and report.dynamic_axes["x"] == {0: "batch"}
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "vae.onnx"), providers=["CPUExecutionProvider"])
    x7 = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    recon = sess.run(None, {"x": x7})[0]
    with fg.no_grad():  # sampling at its mean: the exported forward decodes z = mu
        mu, _ = model.eval().encode(fg.tensor(x7).view(-1, 784))
        np.testing.assert_allclose(recon, model.decode(mu).numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(model(fg.tensor(x7))[0].numpy(), recon)  # outside export it samples


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_word_language_model_exports_with_nested_hidden(tmp_path, rnn_type):
    import onnx
    ours, _ = load_pair("word_language_model")
    fg.manual_seed(5)
    model = ours.RNNModel(rnn_type, 11, 8, 12, 2, dropout=0.0)
    data = fg.randint(0, 11, (7, 3))
    hidden = model.init_hidden(3)  # (h, c) for the LSTM: export takes (input, (h, c)) as torch.onnx does
    report = fg.onnx.export(model, (data, hidden), str(tmp_path / "lm.onnx"))
    assert report.ok
    graph = onnx.load(str(tmp_path / "lm.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input"] == ["seq", "batch"]  # sequence-first: axis 0 is the sequence, not the batch
    hidden_names = ["hidden_0", "hidden_1"] if rnn_type == "LSTM" else ["hidden"]
    for name in hidden_names:
        assert dims[name] == [2, "batch", 12]
    assert {"encoder.weight", "decoder.bias"} <= {i.name for i in graph.initializer}  # the model's own names


def test_keras_mlp_matches_torch():
    # the Keras-style MLP: every layer built from input_dim, so an optimizer made before fit trains them all
    from forgegrad import nn, optim
    fg.manual_seed(6)
    model = nn.Sequential(nn.Dense(64, activation="relu", input_dim=20), nn.Dense(64, activation="relu"),
                          nn.Dense(1, activation="sigmoid"))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 1), torch.nn.Sigmoid())
    for i, j in ((0, 0), (1, 2), (2, 4)):
        ref[j].weight.data = torch.tensor(model[i].weight.numpy().copy())
        ref[j].bias.data = torch.tensor(model[i].bias.numpy().copy())
    rng = np.random.default_rng(6)
    X = rng.standard_normal((64, 20)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.float32)
    model.compile(loss="binary_crossentropy", optimizer=opt, metrics=["accuracy"])
    history = model.fit(X, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    topt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(3):
        for k in range(0, 64, 16):
            topt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy(ref(torch.tensor(X[k:k + 16]))[:, 0],
                                                            torch.tensor(y[k:k + 16]))
            loss.backward()
            topt.step()
    for i, j in ((0, 0), (1, 2), (2, 4)):
        np.testing.assert_allclose(model[i].weight.numpy(), ref[j].weight.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert len(history.history["loss"]) == 3
