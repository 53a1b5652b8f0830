"""Zoo models beyond the four trained in the device tests, with a small input each: the cases that
tests/test_device_seam_models.py and tests/test_cuda_models.py run forward and backward on a device."""
import forgegrad as fg
from forgegrad import models

# name -> (make the model, make its input); both draw from forgegrad's generator (seed it first)
OTHER = {
    "gru": (lambda: models.create("gru", input_size=5, num_classes=3), lambda: fg.randn(2, 4, 5)),
    "char_lstm": (lambda: models.create("char_lstm", vocab_size=11, embed_dim=8, hidden_size=8),
                  lambda: fg.randint(0, 11, (2, 6))),
    "gpt": (lambda: models.create("gpt", vocab_size=17, n_embd=16, n_head=2, n_layer=1, block_size=16),
            lambda: fg.randint(0, 17, (2, 6))),
    "transformer_classifier": (lambda: models.create("transformer_classifier", vocab_size=17, num_classes=3,
                                                     d_model=16, nhead=2, num_layers=1, dim_feedforward=32),
                               lambda: fg.randint(0, 17, (2, 6))),
    "conv_vae": (lambda: models.create("conv_vae", in_channels=1, image_size=8, latent=4, hidden=16),
                 lambda: fg.rand(2, 1, 8, 8)),
}


def forward_backward(name, device):
    """OTHER[name] built from seed 0 and moved to ``device``: its training-mode output, whose squared sum
    is backpropagated, the eval-mode output under no_grad, and the parameters' gradients (tensors on
    the device)."""
    make_model, make_input = OTHER[name]
    fg.manual_seed(0)
    model, x = make_model(), make_input()
    model.to(device)
    fg.manual_seed(1)  # dropout and the VAE's noise draw the same numbers on both sides
    out = model(x.to(device))
    out = out[0] if isinstance(out, tuple) else out
    (out * out).sum().backward()
    with fg.no_grad():
        model.eval()
        fg.manual_seed(1)
        inference = model(x.to(device))
    inference = inference[0] if isinstance(inference, tuple) else inference
    return out, inference, [p.grad for p in model.parameters()]


def fit_run(device):
    """A model moved to ``device``, trained with forgegrad.train.fit on a loader of CPU batches
    (EarlyStopping restoring the best weights), then evaluated and predicted; the Keras-style API
    on a Sequential too. Returns what a user reads back (numbers and host arrays)."""
    import numpy as np
    from forgegrad import nn, optim, train
    from forgegrad.data import DataLoader, TensorDataset
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    fg.manual_seed(0)
    model = models.MLP(6, hidden=(8,), out_features=2).to(device)
    opt = optim.Adam(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(fg.tensor(x), fg.tensor(y)), batch_size=16)
    stop = train.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = train.fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=4, val_loader=loader,
                        callbacks=[stop], progress=False)
    assert all(p.device == device for p in model.parameters())
    scores = train.evaluate(model, nn.CrossEntropyLoss(), loader)
    predicted = train.predict(model, x, batch_size=16).numpy()
    fg.manual_seed(0)
    seq = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid()).to(device)
    seq.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"], learning_rate=0.05)
    keras_history = seq.fit(x, y.astype(np.float32), epochs=2, batch_size=16, verbose=0, shuffle=False)
    return dict(history), scores, predicted, dict(keras_history), seq.predict(x[:5])


def gpt_run(device, path):
    """The zoo GPT (dropout on) moved to ``device`` and trained four steps the way `forgegrad train gpt`
    does (AdamW, gradient clipping, a cosine schedule), then sampled greedily; its state_dict saved to
    ``path`` and loaded into a CPU model. Returns (losses, gradient norms, sampled ids, the loaded
    model's logits)."""
    import numpy as np
    from forgegrad import optim
    from forgegrad.models.transformer import sample
    fg.manual_seed(0)
    model = models.create("gpt", vocab_size=17, n_embd=16, n_head=2, n_layer=2, block_size=12, dropout=0.1)
    model.to(device)
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    ids = np.random.default_rng(5).integers(0, 17, (3, 13))
    x, y = fg.tensor(ids[:, :-1]).to(device), fg.tensor(ids[:, 1:].reshape(-1)).to(device)
    losses, norms = [], []
    fg.manual_seed(1)  # the dropout masks, drawn on the host: the same on every device
    for _ in range(4):
        opt.zero_grad()
        loss = fg.nn.functional.cross_entropy(model(x).reshape(-1, 17), y)
        loss.backward()
        norms.append(float(fg.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item()))
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
    tokens = sample(model, [1, 2, 3], 6, temperature=0.0)
    fg.save(model.state_dict(), path)
    fg.manual_seed(0)
    loaded = models.create("gpt", vocab_size=17, n_embd=16, n_head=2, n_layer=2, block_size=12)
    loaded.load_state_dict(fg.load(path))
    loaded.eval()
    with fg.no_grad():
        logits = loaded(fg.tensor(ids[:1, :-1])).numpy()
    return losses, norms, tokens, logits
