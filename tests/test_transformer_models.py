"""The zoo's gpt and transformer_classifier (against a torch nanoGPT with the same weights), sampling,
and ONNX export of every Transformer layer and both models with dynamic batch and sequence axes,
verified in onnxruntime by the exporter (at the example's sizes and at batch/seq 1 and 7)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

import forgegrad as fg
import forgegrad.models as zoo
import forgegrad.onnx as fonnx
from forgegrad import nn
from helpers import assert_close_scaled

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---- a torch nanoGPT with the same module names, as the reference ------------------------------------------
class _TorchAttn(torch.nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.c_attn, self.c_proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (a.view(n, t, self.h, c // self.h).transpose(1, 2) for a in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(n, t, c))


class _TorchMLP(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc, self.gelu, self.c_proj = torch.nn.Linear(c, 4 * c), torch.nn.GELU(), torch.nn.Linear(4 * c, c)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class _TorchBlock(torch.nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = (torch.nn.LayerNorm(c), _TorchAttn(c, h), torch.nn.LayerNorm(c),
                                                     _TorchMLP(c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _TorchGPT(torch.nn.Module):
    def __init__(self, vocab, block, n_layer, n_head, c):
        super().__init__()
        self.transformer = torch.nn.ModuleDict(dict(
            wte=torch.nn.Embedding(vocab, c), wpe=torch.nn.Embedding(block, c),
            h=torch.nn.ModuleList([_TorchBlock(c, n_head) for _ in range(n_layer)]), ln_f=torch.nn.LayerNorm(c)))
        self.lm_head = torch.nn.Linear(c, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(idx.shape[1]))
        for b in tr.h:
            x = b(x)
        return self.lm_head(tr.ln_f(x))


CFG = dict(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=24)


def test_gpt_matches_nanogpt_in_torch(rng):
    fg.manual_seed(0)
    m = zoo.create("gpt", **CFG)
    t = _TorchGPT(37, 16, 2, 2, 24)
    sd = m.state_dict()
    assert list(sd) == list(t.state_dict())
    assert m.lm_head.weight is m.transformer.wte.weight  # tied: one parameter
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in t.parameters())
    t.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in sd.items()})
    idx = rng.integers(0, 37, (3, 11))
    ot, of = t(torch.from_numpy(idx)), m(fg.tensor(idx))
    assert of.shape == (3, 11, 37)
    assert_close_scaled(of, ot, "logits")
    loss_t = torch.nn.functional.cross_entropy(ot.reshape(-1, 37), torch.from_numpy(idx).reshape(-1))
    loss_f = nn.functional.cross_entropy(of.reshape(-1, 37), fg.tensor(idx).reshape(-1))
    loss_t.backward()
    loss_f.backward()
    tp = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert_close_scaled(p.grad, tp[name].grad, name, atol_scale=2e-5, rtol=1e-4)
    # GPT-2 initialisation: N(0, 0.02), the residual projections scaled by 1/sqrt(2 n_layer)
    proj = m.transformer.h[0].attn.c_proj.weight.numpy()
    assert abs(proj.std() - 0.02 / math.sqrt(4)) < 0.003
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        m(fg.tensor(rng.integers(0, 37, (1, 17))))
    with pytest.raises(ValueError, match="n_embd .*divisible by n_head"):
        zoo.create("gpt", n_embd=10, n_head=3)


def test_sample_greedy_top_k_and_context_crop():
    fg.manual_seed(1)
    m = zoo.create("gpt", **CFG)
    greedy = zoo.sample(m, [1, 2, 3], 20, temperature=0.0)
    assert len(greedy) == 23 and greedy == zoo.sample(m, [1, 2, 3], 20, temperature=0.0)  # past block_size
    ids = zoo.sample(m, [1], 10, top_k=1)
    assert ids == zoo.sample(m, [1], 10, temperature=0.0)  # top-1 is greedy
    assert all(0 <= i < 37 for i in zoo.sample(m, [5], 10, temperature=1.5, top_k=5))
    assert m.training  # restored
    with pytest.raises(ValueError, match="prompt"):
        zoo.sample(m, [], 3)


def test_classifier_ignores_padding_and_trains(rng):
    fg.manual_seed(2)
    m = zoo.create("transformer_classifier", vocab_size=20, num_classes=3, d_model=16, nhead=2, num_layers=2,
                   dim_feedforward=32, max_len=12, dropout=0.0)
    tokens = rng.integers(1, 20, (2, 6))
    padded = np.concatenate([tokens, np.zeros((2, 4), np.int64)], axis=1)
    assert_close_scaled(m(fg.tensor(padded)), m(fg.tensor(tokens)), "padding changes nothing")
    opt = fg.optim.AdamW(m.parameters(), lr=3e-3)
    x = rng.integers(1, 20, (16, 8))
    y = (x[:, 0] % 3).astype(np.int64)  # the class is a function of the first token
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(m(fg.tensor(x)), fg.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---- ONNX ------------------------------------------------------------------------------------------------
SEQ = {"x": {0: "batch", 1: "seq"}}


class _MHA(nn.Module):
    def __init__(self, need_weights):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x):
        out, w = self.attn(x, x, x, need_weights=self.need_weights)
        return out if w is None else (out, w)


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, x, memory):
        return self.layer(x, memory)


class _Rope(nn.Module):
    def __init__(self):
        super().__init__()
        self.rope = nn.RotaryEmbedding(8, max_len=32)
        self.pos = nn.SinusoidalPositionalEncoding(8, max_len=32)
        self.learned = nn.LearnedPositionalEmbedding(32, 8)
        self.batch_first = True

    def forward(self, x):  # (N, T, 8) -> rotated as one head
        x = self.learned(self.pos(x))
        q, k = self.rope(x.unsqueeze(1), x.unsqueeze(1))
        return (q + k).squeeze(1)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("need_weights", [True, False])
def test_onnx_multihead_attention(tmp_path, need_weights):
    fg.manual_seed(3)
    report = fonnx.export(_MHA(need_weights), fg.randn(2, 5, 16), str(tmp_path / "m.onnx"), input_names=["x"],
                          dynamic_axes=SEQ)
    assert report.ok and len(report.runs) == 3


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_encoder_and_layer_norm(tmp_path, opset):
    fg.manual_seed(4)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16))
    path = tmp_path / "e.onnx"
    report = fonnx.export(model, fg.randn(2, 5, 16), str(path), opset=opset)
    assert report.ok and report.dynamic_axes == {"src": {0: "batch", 1: "seq"}}
    assert ("LayerNormalization" in _ops(path)) == (opset >= 17)


def test_onnx_decoder_layer_transformer_and_positions(tmp_path):
    fg.manual_seed(5)
    axes = {"x": {0: "batch", 1: "tgt"}, "memory": {0: "batch", 1: "src"}}
    report = fonnx.export(_Decoder(), (fg.randn(2, 4, 16), fg.randn(2, 6, 16)), str(tmp_path / "d.onnx"),
                          input_names=["x", "memory"], dynamic_axes=axes)
    assert report.ok
    t = nn.Transformer(16, 4, 1, 1, 32, dropout=0.0, batch_first=True)
    axes = {"src": {0: "batch", 1: "src_len"}, "tgt": {0: "batch", 1: "tgt_len"}}
    assert fonnx.export(t, (fg.randn(2, 6, 16), fg.randn(2, 4, 16)), str(tmp_path / "t.onnx"),
                        dynamic_axes=axes).ok
    assert fonnx.export(_Rope(), fg.randn(2, 5, 8), str(tmp_path / "r.onnx"), input_names=["x"],
                        dynamic_axes=SEQ).ok


def test_onnx_gpt_and_classifier(tmp_path, rng):
    fg.manual_seed(6)
    gpt = zoo.create("gpt", **CFG)
    report = fonnx.export(gpt, fg.tensor(rng.integers(0, 37, (2, 9))), str(tmp_path / "g.onnx"), opset=17)
    assert report.ok and report.dynamic_axes == {"idx": {0: "batch", 1: "seq"}}
    clf = zoo.create("transformer_classifier", vocab_size=20, num_classes=3, d_model=16, nhead=2, num_layers=1,
                     dim_feedforward=32, max_len=12)
    tokens = rng.integers(1, 20, (2, 8))
    tokens[0, 5:] = 0
    report = fonnx.export(clf, fg.tensor(tokens), str(tmp_path / "c.onnx"), input_names=["x"], dynamic_axes=SEQ)
    assert report.ok


# ---- forgegrad train gpt / eval / export ----------------------------------------------------------------------
def test_cli_trains_evaluates_and_exports_gpt(tmp_path, capsys):
    from forgegrad.cli import main
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    out = tmp_path / "run"
    args = ["train", "gpt", "--data", str(text), "--steps", "30", "--block-size", "16", "--batch-size", "8",
            "--grad-accum", "2", "--lr", "3e-3", "--eval-every", "15", "--sample-tokens", "20", "--out", str(out),
            "--no-progress", "--arg", "n_layer=1", "--arg", "n_embd=32", "--arg", "n_head=2"]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "--- sample ---" in log and "val_loss" in log
    losses = [float(line.split("train_loss ")[1].split()[0]) for line in log.splitlines()
              if line.startswith("step ")]
    assert losses[-1] < 4.0 < math.log(256)  # well below a uniform guess over bytes
    assert main(["eval", str(out), "--json"]) == 0
    assert '"perplexity"' in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(tmp_path / "g.onnx"), "--batch", "2"]) == 0
    assert main(args[:4] + ["--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    from forgegrad.cli._lm import lr_at
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.1)
