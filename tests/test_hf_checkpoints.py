"""Hugging Face checkpoints: directories written by transformers itself load with from_pretrained, give
transformers' logits, generate transformers' tokens, and save_pretrained writes what transformers loads."""
import json
import os

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate, save_pretrained
from forgegrad.models.hf import CheckpointError
from forgegrad.nn.linear import packed_weight
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 100


def _gpt2(**kw):
    cfg = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=96, initializer_range=0.3)
    cfg.update(kw)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()


def _llama(**kw):
    cfg = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
               intermediate_size=80, vocab_size=VOCAB, max_position_embeddings=128, initializer_range=0.3)
    cfg.update(kw)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()


def _bert_config(**kw):
    cfg = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
               vocab_size=VOCAB, max_position_embeddings=64, num_labels=3)
    cfg.update(kw)
    return transformers.BertConfig(**cfg)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    # head_dim 8: frequencies 1, 0.1, 0.01, 0.001 (wavelengths 6.3 to 6283), one in each llama3 band
    llama3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    linear = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 3.0}
    # no eos token: transformers' min_new_tokens would hold back token 2 (LlamaConfig's default eos) where
    # forgegrad's generate, given no eos, takes it
    models = {"gpt2": _gpt2(), "llama": _llama(), "llama3_rope": _llama(rope_parameters=llama3, eos_token_id=None),
              "linear_rope": _llama(rope_parameters=linear, eos_token_id=None),
              "bert": transformers.BertModel(_bert_config()).eval(),
              "bert_cls": transformers.BertForSequenceClassification(_bert_config()).eval()}
    for name, m in models.items():
        m.save_pretrained(root / name)
    return root, models


IDS = np.random.RandomState(1).randint(0, VOCAB, (2, 9))
LEFT_PADDED = np.array([[0, 0, 0, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
LEFT_MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama3_rope", "linear_rope"])
def test_decoder_logits_match_transformers(checkpoints, name):
    root, models = checkpoints
    hfc.check_logits(from_pretrained(root / name), models[name], IDS, rtol=1e-4, atol=1e-4, graph_free=False)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decoder_logits_match_on_a_left_padded_batch(checkpoints, name):
    root, models = checkpoints
    hfc.check_left_padded_logits(from_pretrained(root / name), models[name], LEFT_PADDED, LEFT_MASK,
                                 rtol=1e-4, atol=1e-4)


def test_bert_outputs_match_transformers_with_padding(checkpoints):
    root, models = checkpoints
    mask = np.ones_like(IDS)
    mask[1, 6:] = 0
    types = np.zeros_like(IDS)
    types[:, 4:] = 1
    with torch.no_grad():
        ref = models["bert"](torch.tensor(IDS), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
        ref_cls = models["bert_cls"](torch.tensor(IDS), attention_mask=torch.tensor(mask)).logits.numpy()
    out = from_pretrained(root / "bert")(IDS, attention_mask=mask, token_type_ids=types)
    real = mask.astype(bool)
    np.testing.assert_allclose(out.last_hidden_state.numpy()[real], ref.last_hidden_state.numpy()[real],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.pooler_output.numpy(), ref.pooler_output.numpy(), rtol=1e-4, atol=1e-4)
    logits = from_pretrained(root / "bert_cls")(IDS, attention_mask=mask).numpy()
    np.testing.assert_allclose(logits, ref_cls, rtol=1e-4, atol=1e-4)


def test_bert_encode_packed_is_the_forward_at_the_real_tokens(checkpoints):
    """encode_packed runs the per-token layers on the real tokens only: transformers' padded forward there."""
    root, models = checkpoints
    model = from_pretrained(root / "bert")
    seqs = [list(IDS[0]), list(IDS[1, :4]), [7], list(IDS[1, :6])]
    packed = model.encode_packed(seqs)
    lengths = [len(s) for s in seqs]
    ids = np.zeros((4, 9), np.int64)
    mask = np.zeros((4, 9), np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    with torch.no_grad():
        ref = models["bert"](torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    assert packed.shape == (sum(lengths), 32)
    np.testing.assert_allclose(packed, ref[mask.astype(bool)], rtol=1e-4, atol=1e-4)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.encode_packed(seqs)
    model.eval()
    with pytest.raises(ValueError, match="input_ids must be in"):
        model.encode_packed([[VOCAB]])


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama3_rope", "linear_rope"])
def test_greedy_generation_yields_transformers_tokens(checkpoints, name):
    root, models = checkpoints
    # 50 tokens (the output's shape (1, 55) checked), then a left-padded batch of prompts of different lengths
    hfc.check_greedy_generation(from_pretrained(root / name), models[name], IDS[:1, :5], LEFT_PADDED, LEFT_MASK,
                                new_tokens=50, padded_new_tokens=20, frozen_new_tokens=None)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_frozen_decoder_gives_the_same_logits_and_tokens(checkpoints, name):
    # nn.utils.freeze packs every Linear weight once: prefill (many rows) uses the packed weights,
    # decode (one row per sequence) reads them in place; the results must not change at all
    root, _ = checkpoints
    model = from_pretrained(root / name)
    frozen = fg.nn.utils.freeze(model)
    linears = [m for m in frozen.modules() if isinstance(m, fg.nn.Linear)]
    assert linears and all(packed_weight(m) is not None for m in linears)
    ids = np.random.RandomState(2).randint(0, VOCAB, (2, 40))
    with fg.no_grad():
        np.testing.assert_array_equal(frozen(ids).numpy(), model(ids).numpy())
    np.testing.assert_array_equal(generate(frozen, ids, max_new_tokens=12), generate(model, ids, max_new_tokens=12))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_lean_decode_step_equals_the_tensor_forward(checkpoints, name):
    root, _ = checkpoints
    # prompt IDS[:, :6] into a cache of 8, then the step of IDS[:, 6] at position 6
    hfc.check_lean_decode_step(from_pretrained(root / name), IDS[:, :7], rtol=1e-5, atol=1e-5, cache_len=8)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_lean_prefill_equals_the_tensor_forward_bit_for_bit(checkpoints, name):
    """A no_grad forward from position 0 without padding runs LeanDecoder.prefill: the same kernels in
    the same order as the Tensor forward (which runs with grad enabled), so the same bits, logits and cache."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    graph_cache, lean_cache = model.new_cache(2, 12), model.new_cache(2, 12)
    graph = model(IDS, cache=graph_cache).numpy()
    with hfc.counting_lean_prefill() as calls, fg.no_grad():
        lean = model(IDS, cache=lean_cache).numpy()
        last = model(IDS, position_ids=np.broadcast_to(np.arange(9), IDS.shape), logits_to_keep=2).numpy()
        model(LEFT_PADDED, attention_mask=LEFT_MASK)  # padding: the Tensor forward
    assert len(calls) == 2
    assert np.array_equal(lean, graph) and np.array_equal(last, model(IDS, logits_to_keep=2).numpy())
    assert lean_cache.length == graph_cache.length == 9
    for a, b in zip(lean_cache.keys + lean_cache.values, graph_cache.keys + graph_cache.values):
        assert np.array_equal(a, b)


def test_forward_pre_hooks_keep_the_tensor_forward(checkpoints):
    """A pre-hook (pruning applies its masks through one) must run: such a model never takes the lean path."""
    from forgegrad.models.hf._decode import lean_path_applies
    root, _ = checkpoints
    model = from_pretrained(root / "gpt2")
    assert lean_path_applies(model)
    with fg.no_grad():
        before = model(IDS).numpy()
    model.transformer.h[0].mlp.c_fc.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    assert not lean_path_applies(model)
    with fg.no_grad():
        hooked = model(IDS).numpy()
    assert np.array_equal(hooked, model(IDS).numpy()) and not np.allclose(hooked, before)
    assert generate(model, IDS[:, :4], max_new_tokens=3).shape == (2, 7)


def test_a_replaced_projection_keeps_the_tensor_forward(checkpoints):
    """A projection replaced by another module (an adapter wrapping the Linear) is what forward runs:
    neither the lean prefill nor the lean decode step may read the old layer's weight instead."""
    from forgegrad import nn
    from forgegrad.models.hf._decode import lean_path_applies
    root, _ = checkpoints
    model = from_pretrained(root / "llama")

    class Doubled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 2.0

    model.model.layers[1].mlp.down_proj = Doubled(model.model.layers[1].mlp.down_proj)
    assert not lean_path_applies(model)
    graph = model(IDS).numpy()
    with fg.no_grad():
        assert np.array_equal(model(IDS).numpy(), graph)
    hfc.check_greedy_by_hand(model, IDS[:1, :4], 6)


def test_sampling_is_repeatable_and_thread_count_independent(checkpoints):
    root, _ = checkpoints
    model = from_pretrained(root / "llama")
    runs = []
    old = fg.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fg.set_num_threads(threads)
            fg.manual_seed(7)
            runs.append(generate(model, IDS[:, :4], max_new_tokens=12, do_sample=True, temperature=0.9,
                                 top_k=20, top_p=0.9))
    finally:
        fg.set_num_threads(old)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    greedy = generate(model, IDS[:, :4], max_new_tokens=12)
    np.testing.assert_array_equal(generate(model, IDS[:, :4], max_new_tokens=12, do_sample=True, top_k=1), greedy)


def test_eos_stops_rows_and_streamer_sees_every_step(checkpoints):
    root, _ = checkpoints
    model = from_pretrained(root / "gpt2")
    free = generate(model, IDS[:1, :4], max_new_tokens=10)
    eos = int(free[0, 6])  # the third generated token
    seen = []
    out = generate(model, IDS[:1, :4], max_new_tokens=10, eos_token_id=eos, streamer=seen.append)
    first = int(np.argmax(free[0, 4:] == eos))
    np.testing.assert_array_equal(out, free[:, :4 + first + 1])  # stops right after the first eos
    assert [int(s[0]) for s in seen] == out[0, 4:].tolist()


def test_save_pretrained_loads_back_in_transformers(checkpoints, tmp_path):
    root, models = checkpoints
    for name, cls in (("gpt2", transformers.GPT2LMHeadModel), ("llama", transformers.LlamaForCausalLM),
                      ("bert_cls", transformers.BertForSequenceClassification)):
        hfc.check_save_pretrained_round_trip(from_pretrained(root / name), models[name], cls, tmp_path / name, IDS,
                                             rtol=1e-6, atol=1e-6)


def test_sharded_and_bfloat16_checkpoints(tmp_path):
    torch.manual_seed(3)
    hf = _llama()
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    with torch.no_grad():
        ref = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(from_pretrained(tmp_path / "sharded")(IDS).numpy(), ref, rtol=1e-4, atol=1e-4)
    import copy
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    with torch.no_grad():
        for p in hf.parameters():  # the bf16 weights, widened, in float32 (rotary buffers stay float32)
            p.copy_(p.to(torch.bfloat16).float())
        ref16 = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(from_pretrained(tmp_path / "bf16")(IDS).numpy(), ref16, rtol=1e-4, atol=1e-4)


# --- malformed directories and bad arguments ---

def _copy(src, dst):
    os.makedirs(dst)
    for f in os.listdir(src):
        with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
            b.write(a.read())


def test_malformed_directories_raise_clear_errors(checkpoints, tmp_path):
    from safetensors.numpy import load_file, save_file
    root, _ = checkpoints
    with pytest.raises(FileNotFoundError, match="no such directory"):
        from_pretrained(tmp_path / "nope")
    _copy(root / "gpt2", tmp_path / "missing")
    tensors = load_file(tmp_path / "missing" / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, tmp_path / "missing" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing 1 tensor.*c_fc"):
        from_pretrained(tmp_path / "missing")
    _copy(root / "gpt2", tmp_path / "shape")
    cfg = json.loads((tmp_path / "shape" / "config.json").read_text())
    cfg["n_inner"] = 64
    (tmp_path / "shape" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="c_fc.weight.*has shape"):
        from_pretrained(tmp_path / "shape")
    _copy(root / "gpt2", tmp_path / "arch")
    cfg = json.loads((tmp_path / "arch" / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["Wav2Vec2ForCTC"], "wav2vec2"
    (tmp_path / "arch" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported architecture.*Wav2Vec2ForCTC"):
        from_pretrained(tmp_path / "arch")
    cfg["architectures"], cfg["model_type"] = ["T5ForConditionalGeneration"], "t5"  # a GPT-2 config said to be T5
    (tmp_path / "arch" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="must give d_model"):
        from_pretrained(tmp_path / "arch")
    _copy(root / "gpt2", tmp_path / "bin")
    os.rename(tmp_path / "bin" / "model.safetensors", tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle.*save_pretrained"):
        from_pretrained(tmp_path / "bin")
    _copy(root / "gpt2", tmp_path / "trunc")
    path = tmp_path / "trunc" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        from_pretrained(tmp_path / "trunc")
    os.makedirs(tmp_path / "noconfig")
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(tmp_path / "noconfig")


@pytest.mark.parametrize("change, match", [
    ({"factor": None}, "llama3 rope needs 'factor' > 0"),
    ({"low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor .* > low_freq_factor"),
    ({"rope_type": "dynamic", "factor": 0}, "dynamic rope needs 'factor' > 0"),
    ({"rope_type": "proportional"}, "rope type 'proportional' is not supported yet"),
    ({"rope_type": "yarn", "original_max_position_embeddings": 0}, "yarn rope needs .original_max_position_emb"),
    ({"rope_type": "yarn", "factor": -2.0}, "yarn rope needs 'factor' > 0"),
    ({"rope_type": "yarn", "beta_fast": "32"}, "yarn rope needs 'beta_fast' > 0"),
])
def test_bad_rope_parameters_raise_clear_errors(checkpoints, tmp_path, change, match):
    root, _ = checkpoints
    _copy(root / "llama3_rope", tmp_path / "rope")
    cfg = json.loads((tmp_path / "rope" / "config.json").read_text())
    cfg["rope_parameters"].update(change)
    (tmp_path / "rope" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        from_pretrained(tmp_path / "rope")


def test_bad_generate_arguments(checkpoints):
    root, _ = checkpoints
    model = from_pretrained(root / "gpt2")
    with pytest.raises(ValueError, match="temperature"):
        generate(model, IDS, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, IDS, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, IDS, max_new_tokens=-1)
    with pytest.raises(ValueError, match="input_ids must be in"):
        generate(model, [[1, VOCAB]])
    with pytest.raises(ValueError, match="exceed the model's 96 positions"):
        generate(model, IDS, max_new_tokens=90)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        generate(model, IDS, attention_mask=np.ones((2, 3)))
    with pytest.raises(TypeError, match="not a decoder"):
        generate(from_pretrained(root / "bert"), IDS)


@pytest.mark.parametrize("bias", [True, False])
def test_zoo_gpt_generates_and_saves_a_checkpoint_transformers_loads(tmp_path, bias):
    from forgegrad.models import GPT
    fg.manual_seed(0)
    gpt = GPT(vocab_size=VOCAB, block_size=40, n_layer=2, n_head=2, n_embd=32, bias=bias).eval()
    for p in gpt.parameters():  # peaked logits: greedy choices far from ties
        p.numpy()[...] *= 8 if p.ndim == 2 else 1
    prompt = IDS[:1, :5]
    want = prompt.copy()
    with fg.no_grad():
        for _ in range(12):  # greedy by hand with the zoo model's own forward
            want = np.concatenate([want, gpt(want).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generate(gpt, prompt, max_new_tokens=12), want)
    save_pretrained(gpt, tmp_path / "gpt")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt").eval()
    with torch.no_grad():
        ref = back(torch.tensor(IDS[:, :7])).logits.numpy()
    np.testing.assert_allclose(gpt(IDS[:, :7]).numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_int8_weight_only_model_decodes_on_the_lean_path(checkpoints, name):
    from forgegrad.quantization import WeightOnlyInt8Linear, quantize_weight_only
    root, _ = checkpoints
    q = quantize_weight_only(from_pretrained(root / name))
    assert any(isinstance(m, WeightOnlyInt8Linear) for m in q.modules())
    # against the quantized model's own (Tensor path) forward
    hfc.check_lean_decode_step(q, IDS[:, :7], rtol=1e-5, atol=1e-5, cache_len=8)
    hfc.check_greedy_by_hand(q, IDS[:1, :5], 10)  # greedy by hand on the Tensor path (grad enabled: no lean prefill)
    from forgegrad.models.hf._decode import lean_path_applies
    assert lean_path_applies(q)
    with fg.no_grad():  # the lean prefill runs the int8 layers as the Tensor forward does
        lean = q(IDS).numpy()
    assert np.array_equal(lean, q(IDS).numpy())
