"""Training a Gemma 2 checkpoint written by transformers: the gradients of every parameter equal torch's
(transformers' model; within ~2e-6 of the largest gradient, tested to 1e-5), with the soft-capped
attention on the fused kernel's forward and backward (counted: no composed attention runs), for a plain
batch (a sliding window on layer 0, plain causal on layer 1) and a left-padded one (transformers'
additive masks on both layers)."""
import copy

import numpy as np
import pytest

import forgegrad as fg
import forgegrad.models.hf.gemma2 as G
from forgegrad.models import from_pretrained
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 100
# caps low enough to bend these weights' scores and logits, window 4 on layer 0 (the 9- and 10-token inputs
# reach past it), grouped-query heads (6 query heads, 2 key/value heads), head_dim 16
CONFIG = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
              intermediate_size=80, vocab_size=VOCAB, max_position_embeddings=128, initializer_range=0.3,
              eos_token_id=None, pad_token_id=0, head_dim=16, query_pre_attn_scalar=12, sliding_window=4,
              attn_logit_softcapping=2.0, final_logit_softcapping=3.0, attention_dropout=0.0)
IDS = np.random.RandomState(1).randint(0, VOCAB, (2, 9))
LEFT_PADDED = np.array([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
LEFT_MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 10])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root, models = hfc.save_checkpoints(tmp_path_factory.mktemp("gemma2_train"), {
        "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**CONFIG))}, seed=0)
    return root / "gemma2", models["gemma2"]


@pytest.fixture
def attention_calls(monkeypatch):
    """The soft caps of the fused attention kernels' calls, and the composed attention's calls."""
    from kernel_calls import record_attention_kernels
    calls = dict(record_attention_kernels(monkeypatch), composed=0)
    composed = G.attend_softcapped_composed

    def counted(*a, **kw):
        calls["composed"] += 1
        return composed(*a, **kw)

    monkeypatch.setattr(G, "attend_softcapped_composed", counted)
    return calls


def _gradients(path, hf, ids, mask=None):
    """forgegrad's and transformers' parameter gradients of one random weighted sum of the logits at the
    real positions, both models in training mode. transformers runs in float64, but for a padded batch:
    there its float64 masks sum to -inf on the padding rows (causal + padding minimum), whose NaN weights
    then reach every row of that batch through the padding keys' values, so it runs in float32."""
    model = from_pretrained(path)
    assert model.model.layers[0].self_attn.softcap == 2.0
    ref = copy.deepcopy(hf).to(torch.float32 if mask is not None else torch.float64).train()
    model.train()
    real = np.ones(ids.shape, bool) if mask is None else mask.astype(bool)
    w = np.random.RandomState(2).standard_normal(ids.shape + (VOCAB,)) * real[..., None]
    kw, fkw = {}, {}
    if mask is not None:
        positions = np.where(mask, np.cumsum(mask, 1) - 1, 1)
        kw = dict(attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
        fkw = dict(attention_mask=mask, position_ids=positions)
    (ref(torch.tensor(ids), **kw).logits * torch.tensor(w)).sum().backward()
    loss = (model(ids, **fkw) * fg.tensor(w.astype(np.float32))).sum()
    loss.backward()
    return dict(model.named_parameters()), dict(ref.named_parameters())


@pytest.mark.parametrize("padded", [False, True])
def test_gradients_equal_torch_through_the_fused_kernel(checkpoint, attention_calls, padded):
    path, hf = checkpoint
    ids, mask = (LEFT_PADDED, LEFT_MASK) if padded else (IDS, None)
    mine, theirs = _gradients(path, hf, ids, mask)
    # one fused forward and one fused backward per layer, all capped; nothing composed
    assert attention_calls == {"forward": [2.0, 2.0], "backward": [2.0, 2.0], "composed": 0}
    assert set(mine) <= set(theirs) | {"lm_head.weight"}
    for name, p in mine.items():
        want = theirs[name].grad.numpy()
        assert p.grad is not None, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_fused_and_composed_attention_agree(checkpoint):
    """The Tensor-composed soft-capped attention (kept for devices without the cap) equals the fused one,
    values and gradients, on one layer's q, k, v with a sliding-window mask."""
    from forgegrad.models.hf._layers import additive_mask
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) * 3 for s in ((2, 6, 9, 16), (2, 2, 9, 16), (2, 2, 9, 16)))
    g = fg.tensor(rng.standard_normal((2, 6, 9, 16)).astype(np.float32))
    for mask in (None, additive_mask(None, 0, 9, causal=True, window=4)):
        assert mask is None or mask.min() < -1e38
        outs = []
        for attend in (G.attend_softcapped, G.attend_softcapped_composed):
            args = [fg.tensor(a, requires_grad=True) for a in (q, k, v)]
            out = attend(*args, mask, 0.3, 2.0)
            (out * g).sum().backward()
            outs.append([out.numpy()] + [a.grad.numpy() for a in args])
        for a, b in zip(*outs):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2"])
@pytest.mark.parametrize("key", ["attn_logit_softcapping", "final_logit_softcapping"])
def test_bad_caps_in_the_config_raise(bad, key):
    from forgegrad.models.hf import Gemma2ForCausalLM
    cfg = {k: v for k, v in CONFIG.items() if k not in ("eos_token_id", "pad_token_id")}
    with pytest.raises(ValueError, match=f"{key} must be a finite number > 0"):
        Gemma2ForCausalLM({**cfg, key: bad})
