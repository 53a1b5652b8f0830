"""OLMo 3 checkpoints written by transformers itself: OLMo 2's layers with sliding windows on the layers layer_types
marks and the rope scaling on the global layers only. Logits on a left-padded batch whose prompts are longer than the
window, greedy and beam generation against transformers', the KV-cache decode path and the lean decode step against
the full forward, save_pretrained read back by transformers, the ONNX export with its cache, and the batched and
paged engines give generate's tokens (the checks every decoder runs: hf_decoder_family.py)."""
import json

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate
from forgegrad.models.hf import Olmo3ForCausalLM
import hf_conformance as hfc
from hf_decoder_family import DecoderFamily, edited_copy, install_family_tests, prompts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 300
WINDOW = 4
BASE = dict(vocab_size=VOCAB, hidden_size=48, num_attention_heads=6, intermediate_size=64, max_position_embeddings=256,
            initializer_range=0.3, eos_token_id=None, bos_token_id=None, pad_token_id=0, sliding_window=WINDOW)
MODELS = {
    # transformers' default pattern (three sliding layers, then a global one), grouped-query attention, and a linear
    # rope scaling that transformers applies to the global layer only
    "gqa": lambda: transformers.Olmo3ForCausalLM(transformers.Olmo3Config(
        **BASE, num_hidden_layers=4, num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # layer_types given (global first), biases on the attention projections, a tied LM head, another rope base
    "tied": lambda: transformers.Olmo3ForCausalLM(transformers.Olmo3Config(
        **BASE, num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"], attention_bias=True,
        tie_word_embeddings=True, rope_theta=500.0)),
}
IDS, LEFT_PADDED, LEFT_MASK = prompts(VOCAB)  # past the window (LEFT_PADDED's 7 real tokens too)
# the cache takes 3 prompt tokens, then the steps run past the window; the lean step and prefill and the engines
# are checked against the windows below
install_family_tests(globals(), DecoderFamily(
    "olmo3", MODELS, Olmo3ForCausalLM, transformers.Olmo3ForCausalLM, IDS, LEFT_PADDED, LEFT_MASK, tied=("tied",),
    cache_split=3, leave_out=("test_the_lean_decode_step_and_prefill_equal_the_tensor_forward",
                              "test_the_batched_and_paged_engines_and_the_server_give_generate_s_tokens")))


def test_windows_and_ropes_follow_the_config(checkpoints):
    root, _ = checkpoints
    model = from_pretrained(root / "gqa")
    assert isinstance(model, Olmo3ForCausalLM) and model.sliding_windows == [WINDOW, WINDOW, WINDOW, None]
    assert [model.layer_rotary(i) is model.rotary for i in range(4)] == [False, False, False, True]
    assert from_pretrained(root / "tied").sliding_windows == [None, WINDOW]
    cfg = {**MODELS["tied"]().config.to_dict(), "layer_types": ["full_attention", "local"]}
    with pytest.raises(ValueError, match="layer_types"):
        Olmo3ForCausalLM(cfg)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_lean_decode_step_and_prefill_equal_the_tensor_forward(checkpoints, name):
    """The lean step past the window (its masks drop the keys before it); the lean prefill within the window, and
    the Tensor forward (no lean prefill) once a prompt reaches past it."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    hfc.check_lean_step_and_prefill(model, IDS, prefill_ids=IDS[:, :WINDOW])
    with hfc.counting_lean_prefill() as calls, fg.no_grad():
        long = model(IDS).numpy()
    assert calls == []
    np.testing.assert_allclose(long, model(IDS).numpy(), rtol=1e-5, atol=1e-5)


def test_the_batched_and_paged_engines_give_generate_s_tokens(checkpoints):
    """Prompts shorter and longer than the window decoded together by the contiguous engine (padding and windows
    masked in the lean step) and by the paged engine (block tables, each layer's window): generate's tokens, one
    prompt at a time."""
    root, _ = checkpoints
    hfc.check_batched_engines(str(root / "gqa"))


def test_the_refusals_of_a_model_that_is_not_a_decoder_name_every_decoder():
    """generate's and export_with_past's lists come from ARCHITECTURES: the decoders added last are in them."""
    from forgegrad import nn
    from forgegrad.models.hf.onnx_export import DecoderWithPast
    with pytest.raises(TypeError, match="Linear is not a decoder") as generate_error:
        generate(nn.Linear(2, 2), IDS)
    with pytest.raises(TypeError, match="Linear is not a decoder-only model") as export_error:
        DecoderWithPast(nn.Linear(2, 2))
    for name in ("GPT2LMHeadModel", "GPTNeoXForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM", "MixtralForCausalLM"):
        assert name in str(generate_error.value) and name in str(export_error.value)
    assert "T5ForConditionalGeneration" in str(generate_error.value)
    assert "T5ForConditionalGeneration" not in str(export_error.value)


def test_yarn_on_the_global_layers_in_either_config_format(tmp_path):
    """A YaRN-scaled OLMo 3 (the long-context releases): transformers 5's rope_parameters per layer type, and the
    older rope_theta + rope_scaling (the global layers' scaling) that earlier transformers wrote, give its logits."""
    torch.manual_seed(0)
    hf = transformers.Olmo3ForCausalLM(transformers.Olmo3Config(**BASE, num_hidden_layers=4, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})).eval()
    hf.save_pretrained(tmp_path)
    ids = np.random.RandomState(3).randint(1, VOCAB, (2, 24))  # past the original context
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(from_pretrained(tmp_path)(ids).numpy(), ref, rtol=1e-4, atol=1e-4)
    cfg = json.loads((tmp_path / "config.json").read_text())
    full = cfg.pop("rope_parameters")["full_attention"]
    cfg.update(rope_theta=full.pop("rope_theta"), rope_scaling=full)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_allclose(from_pretrained(tmp_path)(ids).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_a_config_without_max_position_embeddings_loads(checkpoints, tmp_path):
    """max_position_embeddings is optional, as for OLMo 2 (transformers' default, 2048): the same logits (it was
    refused as a required key)."""
    root, hf = checkpoints
    dst = edited_copy(root / "tied", tmp_path / "tied", lambda cfg: {k: v for k, v in cfg.items()
                                                                    if k != "max_position_embeddings"})
    hfc.check_logits(from_pretrained(dst), hf["tied"], IDS)
