"""ONNX export of decoder-only Hugging Face models with their KV cache (forgegrad.models.hf.export_with_past):
checkpoints written by transformers itself, exported, then decoded step by step in onnxruntime on the graph's
own present -> past outputs. The prefill logits and every greedy token equal transformers' (and forgegrad's
generate), on a left-padded batch too; the refusals name what is not exportable yet."""
import numpy as np
import pytest

import hf_conformance as hfc
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_with_past, generate, generate_onnx
from forgegrad.models.hf.onnx_export import DecoderWithPast

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

VOCAB = 97
LLAMA = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=40,
             vocab_size=VOCAB, max_position_embeddings=96, initializer_range=0.3, eos_token_id=None)
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=24, n_head=3, vocab_size=VOCAB, n_positions=96, initializer_range=0.3, eos_token_id=None)),
    # grouped-query attention (6 query heads on 2 key/value heads), untied head
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)),
    # per-head query/key norms, head_dim apart from hidden_size / heads, tied embeddings
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**LLAMA, head_dim=12,
                                                                             tie_word_embeddings=True)),
    # scaled embeddings, (1 + w) norms, GELU-tanh MLP
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**LLAMA, head_dim=12)),
    # 3/4 of each head rotated (Phi-4-mini's form), fused projections in the checkpoint
    "phi3_partial": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **LLAMA, partial_rotary_factor=0.75, pad_token_id=0, sliding_window=None)),
    # a window of 6 on every layer: the 9-token prompts and 30 new tokens reach past it
    "mistral_window": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA, sliding_window=6)),
    # window 5 on the second layer only
    "qwen2_sliding": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**LLAMA, use_sliding_window=True, sliding_window=5, max_window_layers=1)),
    # Gemma 2: softcapped scores and logits, window 4 on layer 0
    "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **LLAMA, pad_token_id=0, head_dim=8, query_pre_attn_scalar=12, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0)),
    # Gemma 3: a local layer (window 4, its own rope base) and a global one (linear rope x2)
    "gemma3": lambda: transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**{
        **LLAMA, "pad_token_id": 0, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                            "full_attention": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}}})),
    # Phi-3.5's longrope: the long factors past 16 positions (the 9-token prompts cross it while decoding, where
    # generation recomputes the sequence)
    "phi3_longrope": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**{
        **LLAMA, "pad_token_id": 0, "original_max_position_embeddings": 16,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.25, 1.5, 1.75],
                            "long_factor": [2.0, 5.0, 6.0, 7.0], "original_max_position_embeddings": 16}})),
    # the dynamic (NTK) rope: its base grows with each call's length past 16 positions
    "llama_dynamic": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        **LLAMA, "max_position_embeddings": 16,
        "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}})),
    # mixtures of experts: top-2 of 5 renormalized with a window; Qwen2-MoE's gated shared expert, top-3 of 4
    # not renormalized, the second layer dense
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **LLAMA, num_local_experts=5, num_experts_per_tok=2, sliding_window=6)),
    "qwen2_moe": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **LLAMA, num_experts=4, num_experts_per_tok=3, moe_intermediate_size=16, shared_expert_intermediate_size=24,
        mlp_only_layers=[1], norm_topk_prob=False)),
}
EXPORTABLE = ["gpt2", "llama", "qwen3", "gemma", "phi3_partial", "mistral_window", "qwen2_sliding", "gemma2",
              "gemma3", "phi3_longrope", "llama_dynamic", "mixtral", "qwen2_moe"]
PROMPTS = np.random.RandomState(3).randint(1, VOCAB, (2, 9)).astype(np.int64)
LEFT_MASK = np.ones_like(PROMPTS)
LEFT_MASK[1, :4] = 0  # the second prompt is 5 tokens, left-padded
LEFT_PADDED = np.where(LEFT_MASK == 1, PROMPTS, 0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_onnx_past"), MODELS, seed=0)


_EXPORTS = {}


def _exported(checkpoints, tmp_path_factory, name):
    """(forgegrad model, onnxruntime session, export report), exported once per model."""
    if name not in _EXPORTS:
        root, _ = checkpoints
        model = from_pretrained(root / name)
        path = tmp_path_factory.mktemp("past_" + name) / "decoder.onnx"
        report = export_with_past(model, path)
        _EXPORTS[name] = model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), report
    return _EXPORTS[name]


@pytest.mark.parametrize("name", EXPORTABLE)
def test_graph_names_and_dynamic_axes(checkpoints, tmp_path_factory, name):
    model, sess, report = _exported(checkpoints, tmp_path_factory, name)
    assert report.ok and {r.label for r in report.runs} == {"example", "random"}
    n = len(model.new_cache(1, 1).keys)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"] + [
        f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    assert [o.name for o in sess.get_outputs()] == ["logits"] + [
        f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    shapes = {i.name: i.shape for i in sess.get_inputs() + sess.get_outputs()}
    kv_heads, head_dim = model.new_cache(1, 1).keys[0].shape[1::2]
    assert shapes["attention_mask"] == ["batch", "past_sequence+sequence"]
    assert shapes["past_key_values.1.value"] == ["batch", kv_heads, "past_sequence", head_dim]
    assert shapes["present.0.key"] == ["batch", kv_heads, "past_sequence+sequence", head_dim]
    assert shapes["logits"] == ["batch", "sequence", VOCAB]


@pytest.mark.parametrize("name", EXPORTABLE)
def test_prefill_then_steps_give_transformers_logits(checkpoints, tmp_path_factory, name):
    """The prompt with no past, then three one-token steps and a two-token step on the graph's own cache: each
    call's logits equal transformers' forward over the whole sequence so far, left-padded row included."""
    _, hf_models = checkpoints
    _, sess, _ = _exported(checkpoints, tmp_path_factory, name)
    kv = [i for i in sess.get_inputs()[2:]]
    past = {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for i in kv}
    seq, mask = LEFT_PADDED, LEFT_MASK
    new = seq
    for step, extra in enumerate([None, 1, 1, 1, 2]):
        if extra is not None:
            new = np.random.RandomState(step).randint(1, VOCAB, (2, extra)).astype(np.int64)
            seq = np.concatenate([seq, new], 1)
            mask = np.concatenate([mask, np.ones_like(new)], 1)
        logits, *present = sess.run(None, {"input_ids": new, "attention_mask": mask, **past})
        position_ids = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)
        with torch.no_grad():
            ref = hf_models[name](torch.tensor(seq), attention_mask=torch.tensor(mask),
                                  position_ids=torch.tensor(position_ids)).logits.numpy()[:, -new.shape[1]:]
        real = mask[:, -new.shape[1]:] == 1  # padding positions' logits are not compared
        np.testing.assert_allclose(logits[real], ref[real], rtol=1e-4, atol=1e-4, err_msg=f"call {step}")
        past = dict(zip([i.name for i in kv], present))


@pytest.mark.parametrize("name", EXPORTABLE)
def test_greedy_decoding_in_onnxruntime_yields_transformers_tokens(checkpoints, tmp_path_factory, name):
    _, hf_models = checkpoints
    model, sess, _ = _exported(checkpoints, tmp_path_factory, name)
    got = generate_onnx(sess, LEFT_PADDED, LEFT_MASK, max_new_tokens=30)
    want = hfc._hf_greedy(hf_models[name], LEFT_PADDED, 30, attention_mask=LEFT_MASK)
    np.testing.assert_array_equal(got, want)
    ours = generate(model, LEFT_PADDED, attention_mask=LEFT_MASK, max_new_tokens=30, pad_token_id=0)
    np.testing.assert_array_equal(got, np.asarray(ours))


def test_generate_onnx_stops_rows_at_eos_as_transformers(checkpoints, tmp_path_factory):
    """Greedy with an eos token: rows that produced it continue with the pad token, decoding stops once all have."""
    _, hf_models = checkpoints
    _, sess, _ = _exported(checkpoints, tmp_path_factory, "llama")
    free = generate_onnx(sess, LEFT_PADDED, LEFT_MASK, max_new_tokens=12)
    eos = int(free[0, 9 + 2])  # row 0's third new token
    got = generate_onnx(sess, LEFT_PADDED, LEFT_MASK, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        want = hf_models["llama"].generate(torch.tensor(LEFT_PADDED), attention_mask=torch.tensor(LEFT_MASK),
                                           max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                           pad_token_id=0).numpy()
    np.testing.assert_array_equal(got, want)
    assert got[0, 9 + 2] == eos


@pytest.mark.parametrize("name", ["phi3_longrope", "llama_dynamic"])
def test_a_prompt_past_the_original_context_takes_the_scaled_frequencies(checkpoints, tmp_path_factory, name):
    """A 22-token prompt (one row left-padded to 17 tokens) reaches past the 16 positions of the original context:
    the graph picks longrope's long factors / the dynamic rope's grown base from the mask, as transformers does;
    a 5-token prompt stays on the short ones (a graph that always took one set fails one of the two). The reference
    is a fresh transformers model: its dynamic rope keeps the longest length an earlier call reached."""
    root, hf_models = checkpoints
    _, sess, _ = _exported(checkpoints, tmp_path_factory, name)
    hf = type(hf_models[name]).from_pretrained(root / name).eval()
    rng = np.random.RandomState(5)
    for tokens in (22, 5):
        ids = rng.randint(1, VOCAB, (2, tokens)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[1, :5] = 0
        empty = {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for i in sess.get_inputs()[2:]}
        logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask, **empty})[0]
        position_ids = np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)
        with torch.no_grad():
            want = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(position_ids)).logits.numpy()
        np.testing.assert_allclose(logits[mask == 1], want[mask == 1], rtol=1e-4, atol=1e-4, err_msg=f"{tokens}")


def test_a_longrope_graph_records_where_generation_recomputes(checkpoints, tmp_path_factory):
    """The graph's metadata names the length past which generate_onnx recomputes the sequence (Phi-3's original
    context); a model without one has none."""
    from forgegrad.models.hf.onnx_export import RECOMPUTE_KEY
    meta = {n: _exported(checkpoints, tmp_path_factory, n)[1].get_modelmeta().custom_metadata_map
            for n in ("phi3_longrope", "llama")}
    assert meta["phi3_longrope"][RECOMPUTE_KEY] == "16" and RECOMPUTE_KEY not in meta["llama"]


def test_refusals_name_what_cannot_be_exported():
    from forgegrad import nn
    with pytest.raises(TypeError, match="Linear is not a decoder-only model"):
        DecoderWithPast(nn.Linear(2, 2))


def test_generate_onnx_checks_its_arguments(checkpoints, tmp_path_factory, tmp_path):
    _, sess, _ = _exported(checkpoints, tmp_path_factory, "gpt2")
    with pytest.raises(ValueError, match="input_ids must be"):
        generate_onnx(sess, np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match="attention_mask must have"):
        generate_onnx(sess, PROMPTS, LEFT_MASK[:, :3])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_onnx(sess, PROMPTS, max_new_tokens=-1)
    import forgegrad as fg
    from forgegrad.onnx import export
    plain = str(tmp_path / "plain.onnx")
    export(fg.nn.Linear(3, 2), np.zeros((1, 3), np.float32), plain)
    with pytest.raises(ValueError, match="not export_with_past's"):
        generate_onnx(plain, PROMPTS)


def test_forgegrad_export_cli_takes_a_hugging_face_directory(checkpoints, tmp_path):
    """`forgegrad export DIR --out F`: a decoder with its cache (greedy tokens in onnxruntime equal transformers');
    --no-past: the plain forward (a sliding-window model's too)."""
    from forgegrad.cli import main
    root, hf_models = checkpoints
    out = tmp_path / "g.onnx"
    assert main(["export", str(root / "gpt2"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(generate_onnx(out, LEFT_PADDED, LEFT_MASK, max_new_tokens=8),
                                  hfc._hf_greedy(hf_models["gpt2"], LEFT_PADDED, 8, attention_mask=LEFT_MASK))
    assert main(["export", str(root / "llama"), "--out", str(out), "--no-past"]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids"]
    with torch.no_grad():
        want = hf_models["llama"](torch.tensor(PROMPTS)).logits.numpy()
    np.testing.assert_allclose(sess.run(["logits"], {"input_ids": PROMPTS})[0], want, rtol=1e-4, atol=1e-4)
    # a sliding window in the plain forward: the window computed in the graph (9 tokens pass Mistral's 6)
    assert main(["export", str(root / "mistral_window"), "--out", str(tmp_path / "w.onnx"), "--no-past"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "w.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = hf_models["mistral_window"](torch.tensor(PROMPTS)).logits.numpy()
    np.testing.assert_allclose(sess.run(["logits"], {"input_ids": PROMPTS})[0], want, rtol=1e-4, atol=1e-4)


def test_last_logits_only_graph_decodes_the_same(checkpoints, tmp_path):
    """logits_to_keep=1: the LM head on the last position only (a prompt's logits are (batch, 1, vocab));
    greedy tokens unchanged. Other values are refused."""
    root, hf_models = checkpoints
    model = from_pretrained(root / "qwen3")
    path = tmp_path / "last.onnx"
    export_with_past(model, path, logits_to_keep=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape == ["batch", 1, VOCAB]
    np.testing.assert_array_equal(generate_onnx(sess, LEFT_PADDED, LEFT_MASK, max_new_tokens=10),
                                  hfc._hf_greedy(hf_models["qwen3"], LEFT_PADDED, 10, attention_mask=LEFT_MASK))
    with pytest.raises(ValueError, match="logits_to_keep must be 0"):
        export_with_past(model, tmp_path / "x.onnx", logits_to_keep=2)


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_weight_only_quantized_decoder_exports_with_its_cache(checkpoints, tmp_path, dtype):
    """int8 / bfloat16 weight-only layers (quantize_weight_only) keep their form in the graph; greedy tokens in
    onnxruntime equal the quantized model's own generate."""
    from forgegrad.quantization import quantize_weight_only
    root, _ = checkpoints
    model = quantize_weight_only(from_pretrained(root / "llama"), dtype=dtype)
    path = tmp_path / "q.onnx"
    export_with_past(model, path)
    np.testing.assert_array_equal(generate_onnx(path, LEFT_PADDED, LEFT_MASK, max_new_tokens=12),
                                  np.asarray(generate(model, LEFT_PADDED, attention_mask=LEFT_MASK,
                                                      max_new_tokens=12, pad_token_id=0)))


def test_sampling_in_onnxruntime_draws_as_generate_does(checkpoints, tmp_path_factory):
    """do_sample with temperature, top-k and top-p: after the same forgegrad.manual_seed, generate_onnx draws the
    tokens forgegrad's generate draws (the same warpers on logits within 1e-5, the same generator)."""
    import forgegrad as fg
    model, sess, _ = _exported(checkpoints, tmp_path_factory, "llama")
    kw = dict(max_new_tokens=20, do_sample=True, temperature=1.3, top_k=40, top_p=0.95)
    fg.manual_seed(11)
    got = generate_onnx(sess, LEFT_PADDED, LEFT_MASK, **kw)
    fg.manual_seed(11)
    want = np.asarray(generate(model, LEFT_PADDED, attention_mask=LEFT_MASK, pad_token_id=0, **kw))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, generate_onnx(sess, LEFT_PADDED, LEFT_MASK, max_new_tokens=20))  # not greedy
    with pytest.raises(ValueError, match="temperature"):
        generate_onnx(sess, PROMPTS, do_sample=True, temperature=0)
