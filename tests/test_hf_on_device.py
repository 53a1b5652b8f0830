"""Hugging Face decoders (checkpoints written by transformers) run and generate on a device: ``model.to(device)``,
then the forward's logits (with and without an attention mask), greedy and sampled ``generate`` with the KV cache on
the device. On the seam test device (tests/device_seam_helpers.py: the CPU kernels behind arrays that refuse any
numpy use) the results are the CPU model's bits, and generate copies back only the last position's logits; on cuda
(skipped without a GPU, with the reason) they agree with the CPU's within float32 rounding. What a device does not
run yet raises a clear error naming it."""
from __future__ import annotations

import numpy as np
import pytest

import device_seam_helpers as seam
import forgegrad as fg
import forgegrad.cuda as fcuda
from forgegrad import devices
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf._layers import DeviceKVCache, KVCache
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

DEV = seam.DEVICE
host = seam.host
T = transformers
VOCAB = 100
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3, eos_token_id=None)
# the families the device path is for (window 4: the 6-token prompts and their generations reach past it)
MODELS = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**BASE)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**BASE, sliding_window=4)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**BASE, tie_word_embeddings=True)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**BASE, head_dim=8, use_sliding_window=True, sliding_window=4,
                                                      layer_types=["sliding_attention", "full_attention"])),
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                   initializer_range=0.3, eos_token_id=None)),
}
# families the same change covers (their layers are the ops above); Gemma 2's soft-capped attention takes the
# composed path on a device (cuda's attention kernel has no cap), so it agrees to rounding, not to the bit
OTHERS = {
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**BASE, head_dim=8)),
    "gemma3": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(**BASE, head_dim=8, sliding_window=4)),
    "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(**BASE, pad_token_id=0, sliding_window=4)),
    "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**BASE, pad_token_id=0)),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**{**BASE, "num_key_value_heads": None})),
    "stablelm": lambda: T.StableLmForCausalLM(T.StableLmConfig(**BASE)),
    "granite": lambda: T.GraniteForCausalLM(T.GraniteConfig(**BASE)),
    "starcoder2": lambda: T.Starcoder2ForCausalLM(T.Starcoder2Config(**BASE)),
    "phi": lambda: T.PhiForCausalLM(T.PhiConfig(**BASE)),
    "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**BASE, head_dim=8, sliding_window=4)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**BASE, num_local_experts=4, num_experts_per_tok=2)),
}
IDS = np.array([[0, 0, 3, 4, 9, 7], [5, 6, 7, 8, 1, 2]])
MASK = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # the first prompt left-padded
SAMPLING = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)


@pytest.fixture(autouse=True, scope="module")
def _seam_device():
    with seam.registered():
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_on_device"), {**MODELS, **OTHERS})[0]


def _pair(checkpoints, name, device=DEV):
    """The checkpoint's model on the CPU and a copy moved to ``device``."""
    return from_pretrained(checkpoints / name), from_pretrained(checkpoints / name).to(device)


def _ids(on, device=DEV):
    return fg.tensor(IDS).to(device) if on == "device" else fg.tensor(IDS)


# ---- seam: the CPU's bits ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_logits_on_the_device_are_the_cpus(checkpoints, name):
    cpu, dev = _pair(checkpoints, name)
    assert all(p.device == DEV for p in dev.parameters())
    for mask in ("none", "cpu", "device"):  # the attention mask: none, a numpy array, a tensor on the device
        cpu_mask = None if mask == "none" else MASK
        dev_mask = fg.tensor(MASK).to(DEV) if mask == "device" else cpu_mask
        for on in ("cpu", "device"):
            got = dev(_ids(on), attention_mask=dev_mask)  # the Tensor forward (a graph: training's path)
            assert got.device == DEV
            np.testing.assert_array_equal(host(got), host(cpu(IDS, attention_mask=cpu_mask)))
            with fg.no_grad():  # no graph: the CPU model takes its lean prefill where no padding
                np.testing.assert_array_equal(host(dev(_ids(on), attention_mask=dev_mask)),
                                              host(cpu(IDS, attention_mask=cpu_mask)))


@pytest.mark.parametrize("on", ["cpu", "device"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_generation_on_the_device_is_the_cpus(checkpoints, name, on):
    cpu, dev = _pair(checkpoints, name)
    for mask in (None, MASK):
        want = generate(cpu, IDS, attention_mask=mask, max_new_tokens=8)
        got = generate(dev, _ids(on), attention_mask=mask, max_new_tokens=8)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sampled_generation_on_the_device_repeats_the_cpus(checkpoints, name):
    cpu, dev = _pair(checkpoints, name)
    fg.manual_seed(7)
    want = generate(cpu, IDS, attention_mask=MASK, max_new_tokens=8, num_return_sequences=2, **SAMPLING)
    fg.manual_seed(7)
    got = generate(dev, _ids("device"), attention_mask=MASK, max_new_tokens=8, num_return_sequences=2, **SAMPLING)
    np.testing.assert_array_equal(got, want)


def test_generate_copies_back_only_the_last_logits_row(checkpoints, monkeypatch):
    """The prefill's logits (B, T, V) stay on the device: what comes back per step is (B, V) and the ids."""
    cpu, dev = _pair(checkpoints, "llama")
    copied = []
    to_host = seam.BACKEND.to_host
    monkeypatch.setitem(devices._TRANSFERS, (DEV, "cpu"), lambda a: copied.append(a.shape) or to_host(a))
    out = generate(dev, _ids("device"), attention_mask=MASK, max_new_tokens=5)
    np.testing.assert_array_equal(out, generate(cpu, IDS, attention_mask=MASK, max_new_tokens=5))
    assert copied.count((2, VOCAB)) == 5  # one logits row per new token
    assert set(copied) == {(2, VOCAB), IDS.shape}  # and the prompt's ids, given on the device


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_the_kv_cache_grows_on_the_device(checkpoints, name):
    cpu, dev = _pair(checkpoints, name)
    assert type(cpu.new_cache(2, 8)) is KVCache
    cache = dev.new_cache(2, 8)
    assert isinstance(cache, DeviceKVCache)
    with fg.no_grad():
        first = dev(IDS[:, :5], cache=cache)
        step = dev(IDS[:, 5:], cache=cache)
        full = dev(IDS)
    assert cache.length == 6 and all(k.device == DEV and k.shape[2] == 6 for k in cache.keys + cache.values)
    np.testing.assert_array_equal(host(first), host(full)[:, :5])
    np.testing.assert_allclose(host(step)[:, 0], host(full)[:, 5], rtol=0, atol=1e-5)  # a GEMV against a GEMM
    with pytest.raises(ValueError, match="exceed the cache's max_length 8"):
        dev(IDS[:, :3], cache=cache)


@pytest.mark.parametrize("name", sorted(set(OTHERS) - {"mixtral"}))
def test_other_decoder_families_generate_on_the_device(checkpoints, name):
    cpu, dev = _pair(checkpoints, name)
    with fg.no_grad():
        want, got = host(cpu(IDS, attention_mask=MASK)), host(dev(IDS, attention_mask=MASK))
    if name == "gemma2":
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(generate(dev, IDS, attention_mask=MASK, max_new_tokens=6),
                                  generate(cpu, IDS, attention_mask=MASK, max_new_tokens=6))


# ---- what a device does not run yet: a clear error naming it -----------------------------------------------------
def test_beam_search_on_a_device_is_refused(checkpoints):
    dev = from_pretrained(checkpoints / "llama").to(DEV)
    with pytest.raises(NotImplementedError, match=r"beam search \(num_beams > 1\) runs on CPU models only.*'seam'"):
        generate(dev, IDS, max_new_tokens=3, num_beams=2)
    with pytest.raises(NotImplementedError, match=r"guidance_scale"):
        generate(dev, IDS, max_new_tokens=3, guidance_scale=1.5)


@pytest.mark.parametrize("name, what", [
    ("bfloat16", r"layer 'model.embed_tokens' \(BF16Embedding: a bfloat16 token embedding"),
    ("mixtral", r"layer 'model.layers.0.mlp' \(SparseMoeBlock: mixture-of-experts routing")])
def test_layers_that_compute_on_the_host_refuse_the_move(checkpoints, name, what):
    """Refused by model.to before anything moves (the model stays whole on the CPU)."""
    cpu = from_pretrained(checkpoints / "llama", dtype="bfloat16") if name == "bfloat16" else \
        from_pretrained(checkpoints / name)
    with pytest.raises(NotImplementedError, match=what + r".*runs on the CPU only, and the model is on 'seam'"):
        cpu.to(DEV)
    assert all(t.device == "cpu" for t in list(cpu.parameters()) + list(cpu.buffers()))
    assert generate(cpu, IDS, max_new_tokens=2).shape == (2, 8)


def test_an_op_without_a_device_kernel_names_the_op(checkpoints):
    """A device whose op table lacks rms_norm: the op's own error, not a crash or a CPU fallback."""
    seam.register("seam_no_norm")
    try:
        fg.ops.get("rms_norm").remove_device("seam_no_norm")
        dev = from_pretrained(checkpoints / "qwen3").to("seam_no_norm")
        with pytest.raises(NotImplementedError, match=r"op 'rms_norm' has no kernel for device 'seam_no_norm'"):
            generate(dev, IDS, max_new_tokens=3)
    finally:
        seam.unregister("seam_no_norm")


# ---- cuda: the CPU's results within float32 rounding -------------------------------------------------------------
cuda = pytest.mark.skipif(not fcuda.is_available(),
                          reason=f"needs a CUDA device: {fcuda.unavailable_reason() or 'available'}")


@cuda
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_logits_and_greedy_tokens_are_the_cpus(checkpoints, name):
    cpu, dev = _pair(checkpoints, name, "cuda")
    for mask in (None, MASK):
        with fg.no_grad():
            got = dev(_ids("device", "cuda"), attention_mask=mask)
            assert got.device.type == "cuda"
            np.testing.assert_allclose(host(got), host(cpu(IDS, attention_mask=mask)), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(generate(dev, IDS, attention_mask=mask, max_new_tokens=8),
                                      generate(cpu, IDS, attention_mask=mask, max_new_tokens=8))


@cuda
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_kv_cache_decoding_is_the_full_recompute(checkpoints, name):
    dev = from_pretrained(checkpoints / name).to("cuda")
    steps = []
    out = generate(dev, IDS, attention_mask=MASK, max_new_tokens=6, on_logits=lambda x: steps.append(x.copy()))
    assert len(steps) == 6
    with fg.no_grad():
        for i, cached in enumerate(steps):  # the whole sequence so far, no cache: its last position's logits
            n = IDS.shape[1] + i
            mask = np.concatenate([MASK, np.ones((2, i), np.int64)], axis=1)
            positions = np.where(mask, np.cumsum(mask, axis=1) - 1, 1)  # generate's, for the left padding
            full = host(dev(fg.tensor(out[:, :n]).to("cuda"), attention_mask=mask, position_ids=positions))[:, -1]
            np.testing.assert_allclose(cached, full, rtol=0, atol=1e-4)
            np.testing.assert_array_equal(full.argmax(-1), out[:, n])


@cuda
def test_cuda_sampled_generation_repeats(checkpoints):
    dev = from_pretrained(checkpoints / "llama").to("cuda")
    runs = []
    for _ in range(2):
        fg.manual_seed(3)
        runs.append(generate(dev, IDS, attention_mask=MASK, max_new_tokens=8, **SAMPLING))
    np.testing.assert_array_equal(*runs)


@cuda
def test_cuda_bfloat16_weights_are_refused(checkpoints):
    with pytest.raises(NotImplementedError, match=r"BF16Embedding: a bfloat16 token embedding.*the model is on 'cuda'"):
        from_pretrained(checkpoints / "llama", dtype="bfloat16").to("cuda")
