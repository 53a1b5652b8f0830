"""The graph-free inference path of CLIP's / SigLIP's encoder layer (models/hf/_encoder_fast.py): outputs equal the
composed path's (float32 rounding; bit for bit where the activation is an epilogue) and transformers', on odd
shapes, for the vision tower and the causal, padded text tower; the weights' derived arrays recomputed after an
in-place write, a ``.data`` write or a replaced Parameter; hooks, grad mode, training and traces take the composed
path, whose gradients stay torch's."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import forgegrad as fg
from forgegrad import nn
from forgegrad.models.hf import _encoder_fast as EF
from forgegrad.models.hf import clip as C

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers.models.clip import configuration_clip as cc, modeling_clip as mc  # noqa: E402

VISION = dict(hidden_size=36, intermediate_size=52, num_hidden_layers=2, num_attention_heads=3, image_size=35,
              patch_size=7)  # 26 tokens, head size 12
TEXT = dict(vocab_size=50, hidden_size=36, intermediate_size=52, num_hidden_layers=2, num_attention_heads=3,
            max_position_embeddings=16, bos_token_id=47, eos_token_id=49, pad_token_id=49)


def _pair(hf_class, config_class, cfg, act):
    torch.manual_seed(0)
    hf = hf_class(config_class(**cfg, hidden_act=act)).eval()
    ours = (C.CLIPVisionModel if "Vision" in hf_class.__name__ else C.CLIPTextModel)(dict(cfg, hidden_act=act))
    ours.load_state_dict({k.removeprefix("vision_model.").removeprefix("text_model."): v.detach().numpy()
                          for k, v in hf.state_dict().items() if "position_ids" not in k}, strict=False)
    return ours.eval(), hf


def _pixels(n=2):
    return np.random.default_rng(1).standard_normal((n, 3, 35, 35)).astype(np.float32)


def _composed(model, *args, **kwargs):
    """The layers' composed (autograd-op) path, graph-free."""
    saved, C.fast_path_ok = C.fast_path_ok, lambda *a: False
    try:
        with fg.no_grad():
            return model(*args, **kwargs).last_hidden_state.numpy()
    finally:
        C.fast_path_ok = saved


def _fast(model, *args, **kwargs):
    calls = []
    saved = C.fast_forward

    def counted(*a):
        calls.append(1)
        return saved(*a)
    C.fast_forward = counted
    try:
        with fg.no_grad():
            out = model(*args, **kwargs).last_hidden_state.numpy()
    finally:
        C.fast_forward = saved
    return out, len(calls)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu_pytorch_tanh", "gelu"])
def test_vision_tower_equals_composed_path_and_transformers(act):
    ours, hf = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, act)
    px = _pixels()
    got, calls = _fast(ours, px)
    assert calls == 2  # both layers ran the inference path
    want = _composed(ours, px)
    if act == "quick_gelu":  # silu(1.702 x) / 1.702 with fc1's weights scaled: float32 rounding
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:  # the activation as fc1's epilogue: the same kernel
        np.testing.assert_array_equal(got, want)
    with torch.no_grad():
        theirs = hf(pixel_values=torch.tensor(px)).last_hidden_state.numpy()
    np.testing.assert_allclose(got, theirs, rtol=1e-4, atol=2e-5)


def test_causal_padded_text_tower_equals_transformers():
    ours, hf = _pair(mc.CLIPTextModel, cc.CLIPTextConfig, TEXT, "quick_gelu")
    ids = np.random.default_rng(2).integers(0, 47, (3, 9))
    ids[:, -1] = 49
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    got, calls = _fast(ours, ids, mask)
    assert calls == 2
    np.testing.assert_allclose(got, _composed(ours, ids, mask), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    keep = mask.astype(bool)
    np.testing.assert_allclose(got[keep], theirs[keep], rtol=1e-4, atol=2e-5)


def test_weight_changes_are_seen():
    ours, _ = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, "quick_gelu")
    px = _pixels(1)
    first, _ = _fast(ours, px)
    layer = ours.encoder.layers[0]
    noise = np.random.default_rng(4).standard_normal((36, 36)).astype(np.float32) * 0.2
    assert len(layer.__dict__["_weight_cache"]) == 4  # q|k|v, out_proj, scaled fc1, fc2
    changes = [
        lambda: layer.self_attn.k_proj.weight.add_(fg.tensor(noise)),  # in place, counted
        lambda: layer.self_attn.v_proj.bias.copy_(fg.tensor(np.full(36, 0.3, np.float32))),
        lambda: layer.mlp.fc1.weight.data.mul_(1.5),  # through .data
        lambda: setattr(layer.mlp.fc2, "weight", nn.Parameter(fg.tensor(layer.mlp.fc2.weight.numpy() * 0.5))),
        lambda: setattr(layer.self_attn.q_proj, "bias", nn.Parameter(fg.tensor(np.ones(36, np.float32)))),
    ]
    before = first
    for change in changes:
        with fg.no_grad():
            change()
        got, _ = _fast(ours, px)
        np.testing.assert_allclose(got, _composed(ours, px), rtol=1e-5, atol=1e-5)
        assert np.abs(got - before).max() > 1e-3  # the change is in the output
        before = got


def test_composed_path_where_the_fast_one_does_not_apply():
    ours, hf = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, "quick_gelu")
    px = _pixels(1)
    seen = []
    handle = ours.encoder.layers[1].self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    out, calls = _fast(ours, px)
    assert calls == 1 and seen == [(1, 26, 36)]  # the hooked layer ran its parts
    handle.remove()
    ours.encoder.layers[0].mlp.act = lambda x: x  # a replaced activation is called
    _, calls = _fast(ours, px)
    assert calls == 1
    ours.encoder.layers[0].mlp.act = ours.encoder.layers[0].mlp._configured_act
    x = fg.tensor(np.zeros((1, 26, 36), np.float32))
    layer = ours.encoder.layers[0]
    assert EF.fast_path_ok(layer, x) is False  # grad mode on
    with fg.no_grad():
        assert EF.fast_path_ok(layer, x) is True
        assert EF.fast_path_ok(layer.train(), x) is False
    copied = copy.deepcopy(ours.eval())
    assert all(len(m.__dict__.get("_weight_cache", ())) == 0 for m in copied.encoder.layers)
    np.testing.assert_array_equal(_fast(copied, px)[0], _fast(ours, px)[0])


def test_gradients_in_eval_mode_are_torchs():
    """Grad mode on (eval): the composed path, gradients as torch's, after the model ran inference calls."""
    ours, hf = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, "quick_gelu")
    px = _pixels()
    _fast(ours, px)
    r = np.random.default_rng(3).standard_normal((2, 26, 36)).astype(np.float32)
    loss = (ours(px).last_hidden_state * fg.tensor(r)).sum()
    loss.backward()
    theirs = (hf(pixel_values=torch.tensor(px)).last_hidden_state * torch.tensor(r)).sum()
    theirs.backward()
    named = {k.removeprefix("vision_model."): v for k, v in hf.named_parameters()}
    for key in ("encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.1.mlp.fc1.bias",
                "encoder.layers.0.self_attn.v_proj.weight"):
        ours_p = ours.get_parameter(key)
        np.testing.assert_allclose(ours_p.grad.numpy(), named[key].grad.numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_a_frozen_tower_runs_the_fast_path_on_its_packed_weights():
    ours, _ = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, "gelu_pytorch_tanh")
    px = _pixels()
    frozen = nn.utils.freeze(ours)
    got, calls = _fast(frozen, px)
    assert calls == 2
    np.testing.assert_array_equal(got, _fast(ours, px)[0])
    np.testing.assert_array_equal(got, _composed(frozen, px))
    # freeze's packed copies serve out_proj, fc1 and fc2: the layer keeps only the q|k|v one
    assert len(frozen.encoder.layers[0].__dict__["_weight_cache"]) == 1


def test_a_tower_past_the_packed_weights_budget_keeps_no_copies(monkeypatch):
    """FORGEGRAD_PACKED_WEIGHTS_MB bounds the towers that keep packed / fused weight copies (about their weights'
    memory again): past it every call makes them and drops them, the same bits; back within it they are kept again."""
    ours, _ = _pair(mc.CLIPVisionModel, cc.CLIPVisionConfig, VISION, "gelu")
    px = _pixels()
    kept, _ = _fast(ours, px)
    assert all(len(layer.__dict__["_weight_cache"]) == 4 for layer in ours.encoder.layers)
    # the tower's Linear weights: 2 layers x (4 x 36 x 36 + 2 x 36 x 52) floats ~ 83 KB; one layer's ~ 41 KB
    monkeypatch.setenv("FORGEGRAD_PACKED_WEIGHTS_MB", "0.06")
    got, calls = _fast(ours, px)
    assert calls == 2
    np.testing.assert_array_equal(got, kept)
    assert all("_weight_cache" not in layer.__dict__ for layer in ours.encoder.layers)
    monkeypatch.setenv("FORGEGRAD_PACKED_WEIGHTS_MB", "1")
    got, _ = _fast(ours, px)
    np.testing.assert_array_equal(got, kept)
    assert all(len(layer.__dict__["_weight_cache"]) == 4 for layer in ours.encoder.layers)
    monkeypatch.setenv("FORGEGRAD_PACKED_WEIGHTS_MB", "many")
    with pytest.raises(ValueError, match="FORGEGRAD_PACKED_WEIGHTS_MB must be a number of megabytes"), fg.no_grad():
        ours(px)
