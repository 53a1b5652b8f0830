"""Mistral, Qwen2, Qwen3, Phi-3, Gemma 2 and Gemma 3 checkpoints written by transformers itself: logits,
left-padded batches, greedy generation (the lean decode step included) and save_pretrained, with
sliding-window attention short enough that the tests' sequences reach past it; YaRN and longrope rope
scaling, partial rotary factors."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate, save_pretrained
from forgegrad.models.hf import (CheckpointError, Gemma2ForCausalLM, Gemma3ForCausalLM, MistralForCausalLM,
                                 Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 100
BASE = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
            vocab_size=VOCAB, max_position_embeddings=128, initializer_range=0.3, eos_token_id=None)
# window 6 (Mistral, every layer) and 5 (Qwen2's second layer only): the 9-token inputs and the 50-token
# generations attend past both
MODELS = {
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**BASE, sliding_window=6)),
    "mistral_no_window": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(**BASE, sliding_window=None, head_dim=16)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**BASE, tie_word_embeddings=True)),
    "qwen2_sliding": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**BASE, use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    # head_dim 12 given apart from hidden_size / heads (as Qwen3's configs do), tied embeddings
    "qwen3": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(**BASE, head_dim=12, tie_word_embeddings=True)),
    "qwen3_sliding_bias": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(**BASE, head_dim=8, attention_bias=True, layer_types=["sliding_attention",
                                 "full_attention"], sliding_window=4, use_sliding_window=True)),
    # YaRN (Qwen's long-context setting) with head_dim 16: the ramp runs between dimensions 1 and 5 here
    "qwen2_yarn": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{
        **BASE, "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "original_max_position_embeddings": 32}}, head_dim=16)),
    # DeepSeek's form: mscale / mscale_all_dim give the attention factor, untruncated ramp, other betas
    "llama_yarn_mscale": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        **BASE, "rope_parameters": {"rope_type": "yarn", "rope_theta": 500.0, "factor": 8.0,
                                    "original_max_position_embeddings": 16, "mscale": 1.0, "mscale_all_dim": 0.5,
                                    "beta_fast": 16, "beta_slow": 2, "truncate": False}})),
    # dynamic (NTK) rope past a context of 8: the 9-token inputs and the generations cross it, so the base grows
    # with the length (each decode step's own)
    "llama_dynamic": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        **BASE, "max_position_embeddings": 8,
        "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 8.0}}, head_dim=16)),
    # Phi-3: fused qkv_proj / gate_up_proj in the checkpoint, Mistral's window
    "phi3": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**BASE, pad_token_id=0, sliding_window=6)),
    # Phi-3.5's longrope (original context 8: the 9-token inputs and the generations cross it) over half of
    # each head (4 of 8 dims rotated)
    "phi3_longrope": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**{
        **BASE, "pad_token_id": 0, "original_max_position_embeddings": 8, "partial_rotary_factor": 0.5,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.25],
                            "long_factor": [2.0, 5.0], "original_max_position_embeddings": 8,
                            "partial_rotary_factor": 0.5}})),
    # Phi-4-mini's form: 3/4 of each head rotated, tied embeddings
    "phi3_partial_tied": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **BASE, pad_token_id=0, partial_rotary_factor=0.75, tie_word_embeddings=True)),
    # Gemma 2: caps low enough to bend the scores and logits of these weights, window 4 on layer 0,
    # query_pre_attn_scalar apart from head_dim
    "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **BASE, pad_token_id=0, head_dim=8, query_pre_attn_scalar=12, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0)),
    "gemma2_uncapped": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **BASE, pad_token_id=0, head_dim=8, query_pre_attn_scalar=8, sliding_window=64, attn_logit_softcapping=None,
        final_logit_softcapping=None)),
    # Gemma 3 (text): per-head norms, a local (window 4, base 100) and a global layer (base 10,000, linear x2)
    "gemma3": lambda: transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**{
        **BASE, "pad_token_id": 0, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                            "full_attention": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}})),
}
IDS = np.random.RandomState(1).randint(0, VOCAB, (2, 9))
LEFT_PADDED = np.array([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
LEFT_MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 10])


def _edited_copy(src, dst, edit):
    """A copy of checkpoint directory src at dst with edit(config dict) applied to its config.json."""
    import shutil
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_variants"), MODELS, seed=0)


def test_architectures_and_windows(checkpoints):
    root, _ = checkpoints
    assert type(from_pretrained(root / "mistral")) is MistralForCausalLM
    assert from_pretrained(root / "mistral").sliding_windows == [6, 6]
    assert from_pretrained(root / "mistral_no_window").sliding_windows == [None, None]
    assert type(from_pretrained(root / "qwen2")) is Qwen2ForCausalLM
    assert from_pretrained(root / "qwen2_sliding").sliding_windows == [None, 5]
    q = from_pretrained(root / "qwen2").model.layers[0].self_attn
    assert q.q_proj.bias is not None and q.k_proj.bias is not None and q.o_proj.bias is None
    assert type(from_pretrained(root / "qwen3")) is Qwen3ForCausalLM
    q3 = from_pretrained(root / "qwen3").model.layers[0].self_attn
    assert q3.q_norm.weight.shape == (12,) and q3.q_proj.bias is None
    assert from_pretrained(root / "qwen3_sliding_bias").sliding_windows == [4, None]


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_transformers(checkpoints, name):
    root, models = checkpoints
    # the Tensor forward, then under fg.no_grad the graph-free one (the lean prefill where no window is reached)
    hfc.check_logits(from_pretrained(root / name), models[name], IDS, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mistral", "qwen2_sliding", "qwen3_sliding_bias", "gemma2"])
def test_logits_match_on_a_left_padded_batch(checkpoints, name):
    root, models = checkpoints
    hfc.check_left_padded_logits(from_pretrained(root / name), models[name], LEFT_PADDED, LEFT_MASK,
                                 rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_generation_yields_transformers_tokens(checkpoints, name):
    root, models = checkpoints
    # transformers' dynamic rope keeps the longest length it has seen for later, shorter calls: a fresh model
    # for each generation (forgegrad's counts each call's own length)
    fresh = (lambda: type(models[name]).from_pretrained(root / name)) if name == "llama_dynamic" else None
    hfc.check_greedy_generation(from_pretrained(root / name), models[name], IDS[:1, :5], LEFT_PADDED, LEFT_MASK,
                                new_tokens=50, padded_new_tokens=20, frozen_new_tokens=30, hf_fresh=fresh)


@pytest.mark.parametrize("name", ["mistral", "qwen2_sliding", "qwen3_sliding_bias"])
def test_lean_decode_step_masks_keys_before_the_window(checkpoints, name):
    """The lean decode step at cache length 9 (past the window) equals the Tensor forward of all 9 tokens."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    full = hfc.check_lean_decode_step(model, IDS, rtol=1e-5, atol=1e-5)
    # and the window does change the result: without it the last position attends to more keys
    model.sliding_windows = [None, None]  # (the decode step reads the same list)
    assert not np.allclose(model(IDS).numpy()[:, -1], full, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name, cls", [("mistral", "MistralForCausalLM"), ("qwen2_sliding", "Qwen2ForCausalLM"),
                                       ("qwen3", "Qwen3ForCausalLM"), ("phi3_longrope", "Phi3ForCausalLM"),
                                       ("gemma2", "Gemma2ForCausalLM"), ("gemma3", "Gemma3ForCausalLM")])
def test_save_pretrained_loads_back_in_transformers(checkpoints, tmp_path, name, cls):
    root, models = checkpoints
    want_type = {"gemma3": "gemma3_text"}.get(name, name.split("_")[0])
    hfc.check_save_pretrained_round_trip(from_pretrained(root / name), models[name], getattr(transformers, cls),
                                         tmp_path / name, IDS, architecture=cls, model_type=want_type,
                                         rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, change, match", [
    ("mistral", {"sliding_window": 0}, "sliding_window must be a positive integer"),
    ("mistral", {"sliding_window": "4096"}, "sliding_window must be a positive integer"),
    ("qwen2_sliding", {"layer_types": ["full_attention"]}, "layer_types must list"),
    ("qwen2_sliding", {"layer_types": ["full_attention", "local"]}, "layer_types must list"),
    ("qwen2_sliding", {"sliding_window": None}, "sliding_window is null"),
])
def test_bad_window_configs_raise_clear_errors(checkpoints, tmp_path, name, change, match):
    root, _ = checkpoints
    with pytest.raises(ValueError, match=match):
        from_pretrained(_edited_copy(root / name, tmp_path / name, lambda cfg: cfg.update(change)))


@pytest.mark.parametrize("name", ["qwen2", "phi3_partial_tied"])
def test_exports_to_onnx_with_dynamic_axes(checkpoints, tmp_path, name):
    """Full attention (Qwen2's default; Phi-4-mini's partial rotation): the export runs in onnxruntime at other
    batch and sequence sizes."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from forgegrad.onnx import export
    root, models = checkpoints
    path = str(tmp_path / "q.onnx")
    export(from_pretrained(root / name), IDS[:1, :7], path, input_names=["input_ids"],
           dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-5)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": IDS})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, models[name](torch.tensor(IDS)).logits.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mistral", "gemma2", "phi3_longrope", "llama_dynamic"])
def test_plain_export_of_sliding_window_and_length_scaled_ropes(checkpoints, tmp_path, name):
    """The plain forward (input_ids only) of a sliding-window model (Mistral's on every layer, Gemma 2's on one) and of
    longrope / dynamic-rope models exports with the windows and the frequencies computed from the input's length:
    at lengths inside and past the window / original context (4 and 14 tokens), onnxruntime's logits are
    transformers' (a fresh model for the dynamic rope, which keeps the longest length it has seen)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from forgegrad.onnx import export
    root, models = checkpoints
    path = str(tmp_path / "w.onnx")
    export(from_pretrained(root / name), IDS[:1, :7], path, input_names=["input_ids"],
           dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-4,
           verify_sizes=[{"batch": 2, "tokens": 3}, {"batch": 1, "tokens": 12}])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ids = np.random.RandomState(7).randint(0, VOCAB, (2, 14))
    for length in (4, 14):
        hf = type(models[name]).from_pretrained(root / name).eval() if name == "llama_dynamic" else models[name]
        with torch.no_grad():
            want = hf(torch.tensor(ids[:, :length])).logits.numpy()
        np.testing.assert_allclose(sess.run(None, {"input_ids": ids[:, :length]})[0], want, rtol=1e-4, atol=1e-4,
                                   err_msg=f"{length} tokens")


def test_unsupported_architecture_lists_the_new_ones(checkpoints, tmp_path):
    root, _ = checkpoints
    with pytest.raises(CheckpointError, match="Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM"):
        from_pretrained(_edited_copy(root / "qwen2", tmp_path / "q",
                                     lambda cfg: cfg.update(architectures=["DeepseekV3ForCausalLM"])))


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "gemma2_uncapped", "gemma3"])
def test_lean_prefill_equals_the_tensor_forward_bit_for_bit(checkpoints, name):
    """Qwen2's biases, Qwen3's per-head norms, Gemma's extra norms, scaled embeddings and (Gemma 3) two rotary
    embeddings on the lean prefill: the Tensor forward's kernels in its order."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    ids = IDS[:, :4]  # within every test model's window (the fused prefill runs only there)
    graph = model(ids).numpy()  # grad enabled: the Tensor forward
    with hfc.counting_lean_prefill() as calls, fg.no_grad():
        lean = model(ids).numpy()
    assert calls and np.array_equal(lean, graph)


def test_yarn_frequencies_and_attention_factor_match_transformers(checkpoints):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    root, models = checkpoints
    for name in ("qwen2_yarn", "llama_yarn_mscale"):
        inv, factor = ROPE_INIT_FUNCTIONS["yarn"](models[name].config, "cpu")
        rotary = from_pretrained(root / name).rotary
        np.testing.assert_allclose(rotary.inv_freq, inv.numpy(), rtol=1e-6)
        assert rotary.attention_factor == pytest.approx(factor, rel=1e-12) and factor != 1.0


def test_int8_weight_only_qwen3_decodes_on_the_lean_path(checkpoints):
    """Weight-only int8 layers with biases, per-head norms and a sliding window: the lean decode step and
    generate agree with the quantized model's own Tensor forward."""
    from forgegrad.models.hf._decode import lean_path_applies
    from forgegrad.quantization import quantize_weight_only
    root, _ = checkpoints
    q = quantize_weight_only(from_pretrained(root / "qwen3_sliding_bias"))
    assert lean_path_applies(q)
    hfc.check_lean_decode_step(q, IDS, rtol=1e-5, atol=1e-5)
    hfc.check_greedy_by_hand(q, IDS[:1, :5], 8)  # greedy by hand on the Tensor path


def test_int8_weight_only_quantizes_a_tied_head(checkpoints, tmp_path):
    """A tied LM head gets an int8 copy of the embedding (the lookups keep the float32 rows); tied_head=False
    keeps it float32. The int8 model saves and loads with forgegrad.save/load."""
    from forgegrad.quantization import WeightOnlyInt8Linear, quantize_weight_only
    root, _ = checkpoints
    model = from_pretrained(root / "qwen2")
    assert model.tied
    q = quantize_weight_only(model)
    assert not q.tied and isinstance(q.lm_head, WeightOnlyInt8Linear) and q.lm_head.weight.dtype == np.int8
    assert q.model.embed_tokens.weight.dtype == np.float32 and model.tied  # the original is left as it was
    kept = quantize_weight_only(model, tied_head=False)
    assert kept.tied and not hasattr(kept, "lm_head")
    with fg.no_grad():
        ref, got = model(IDS).numpy(), q(IDS).numpy()
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() < 0.05 * scale  # int8 numerics, near the float logits
    np.testing.assert_array_equal(generate(q, IDS[:1, :5], max_new_tokens=6)[:, :5], IDS[:1, :5])
    fg.save(q.state_dict(), tmp_path / "q.fg")
    back = quantize_weight_only(from_pretrained(root / "qwen2"))
    back.load_state_dict(fg.load(tmp_path / "q.fg"))
    with fg.no_grad():
        np.testing.assert_array_equal(back(IDS).numpy(), got)


def test_phi3_fused_projections_split_on_load_and_fuse_on_save(checkpoints, tmp_path):
    from forgegrad.models.hf._files import read_weights
    root, _ = checkpoints
    stored = read_weights(str(root / "phi3"))
    assert "model.layers.0.self_attn.qkv_proj.weight" in stored and "model.layers.0.mlp.gate_up_proj.weight" in stored
    model = from_pretrained(root / "phi3")
    assert type(model) is Phi3ForCausalLM and model.sliding_windows == [6, 6]
    attn = model.model.layers[0].self_attn
    np.testing.assert_array_equal(np.concatenate([attn.q_proj.weight.numpy(), attn.k_proj.weight.numpy(),
                                                  attn.v_proj.weight.numpy()]),
                                  stored["model.layers.0.self_attn.qkv_proj.weight"])
    save_pretrained(model, tmp_path / "phi3")
    again = read_weights(str(tmp_path / "phi3"))
    assert set(again) == set(stored) - {k for k in stored if k.endswith("inv_freq")}
    for key in again:
        np.testing.assert_array_equal(again[key], stored[key])
    rotary = from_pretrained(root / "phi3_longrope").rotary
    assert rotary.inv_freq.shape == (2,) and rotary.original_max == 8 and rotary.attention_factor > 1


@pytest.mark.parametrize("change, match", [
    ({"partial_rotary_factor": 0.1}, "rotates 0 dimensions"),
    ({"partial_rotary_factor": 1.5}, "partial_rotary_factor must be in"),
    ({"short_factor": [1.0]}, "'short_factor': 2 positive numbers"),
    ({"long_factor": [1.0, -1.0]}, "'long_factor': 2 positive numbers"),
    ({"long_factor": [1.0, float("inf")]}, "'long_factor': 2 positive numbers"),
    ({"original_max_position_embeddings": float("nan")}, "needs 'original_max_position_embeddings' > 0"),
])
def test_bad_longrope_configs_raise_clear_errors(checkpoints, tmp_path, change, match):
    root, _ = checkpoints
    with pytest.raises(ValueError, match=match):
        from_pretrained(_edited_copy(root / "phi3_longrope", tmp_path / "p",
                                     lambda cfg: cfg["rope_parameters"].update(change)))


def test_gemma2_norms_caps_and_scale(checkpoints):
    """Gemma's (1 + weight) norms are stored as offsets: loaded with 1 added; the caps really bend the scores."""
    root, models = checkpoints
    model = from_pretrained(root / "gemma2")
    assert type(model) is Gemma2ForCausalLM and model.sliding_windows == [4, None] and model.tied
    ref_norm = models["gemma2"].model.layers[0].pre_feedforward_layernorm.weight.detach().numpy()
    np.testing.assert_array_equal(model.model.layers[0].pre_feedforward_layernorm.weight.numpy(),
                                  ref_norm + np.float32(1))
    logits = model(IDS).numpy()
    assert np.abs(logits).max() < 3.0  # the final cap
    model.final_softcap = None
    assert np.abs(model(IDS).numpy()).max() > 3.0


@pytest.mark.parametrize("name", ["gemma2", "gemma2_uncapped", "gemma3"])
def test_gemma2_decodes_on_the_lean_step(checkpoints, name):
    """generate's decode step for Gemma 2 (capped scores and logits, extra norms, scaled embeddings) equals
    the Tensor forward, past the window too."""
    from forgegrad.models.hf._decode import lean_path_applies
    root, _ = checkpoints
    model = from_pretrained(root / name)
    assert lean_path_applies(model)
    hfc.check_lean_decode_step(model, IDS, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["qwen2", "gemma2"])
def test_forgegrad_generate_cli_runs_the_new_architectures(tmp_path, capsys, name):
    """`forgegrad generate DIR` (byte tokens) on a Qwen2 and a Gemma 2 checkpoint prints the greedy continuation."""
    from forgegrad.cli import main
    from forgegrad.models.hf.tokenizer import ByteTokenizer
    torch.manual_seed(0)
    cfg = {**BASE, "vocab_size": 300, "pad_token_id": 0}
    hf = (transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**cfg)) if name == "qwen2" else
          transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**cfg, head_dim=8, sliding_window=4)))
    hf.save_pretrained(tmp_path / name)
    assert main(["generate", str(tmp_path / name), "--prompt", "Hi there", "--max-new-tokens", "10"]) == 0
    ids = list("Hi there".encode())
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=10, min_new_tokens=10, do_sample=False,
                          pad_token_id=0).numpy()[0, len(ids):]
    assert capsys.readouterr().out == "Hi there" + ByteTokenizer().decode(ref) + "\n"


def test_gemma3_rotaries_per_layer_type(checkpoints):
    root, _ = checkpoints
    model = from_pretrained(root / "gemma3")
    assert type(model) is Gemma3ForCausalLM and model.sliding_windows == [4, None]
    assert model.layer_rotary(0) is model.rotary_local and model.layer_rotary(1) is model.rotary
    np.testing.assert_allclose(model.rotary_local.inv_freq, 1 / 100.0 ** (np.arange(0, 8, 2) / 8), rtol=1e-6)
    np.testing.assert_allclose(model.rotary.inv_freq, 1 / 10000.0 ** (np.arange(0, 8, 2) / 8) / 2, rtol=1e-6)
    assert model.model.layers[0].self_attn.q_norm.weight.shape == (8,)
