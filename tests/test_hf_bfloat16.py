"""from_pretrained(dtype="bfloat16"): every Linear keeps the checkpoint's bfloat16 weights (half the memory)
and the model's outputs are the float32 model's, bit for bit, on each architecture's own renaming (GPT-2's
transposed Conv1D weights, Phi-3's fused projections, Gemma's norm offsets, the experts of an MoE)."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, generate, save_pretrained
from forgegrad.models.hf import CheckpointError
from forgegrad.models.hf._decode import lean_path_applies
from forgegrad.quantization import BF16Embedding, WeightOnlyBF16Linear, quantize_weight_only

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

LLAMA = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
             vocab_size=100, max_position_embeddings=128, initializer_range=0.3, eos_token_id=None)
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=48, n_head=4, vocab_size=100, n_positions=64, initializer_range=0.3)),
    "llama_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, tie_word_embeddings=True)),
    "phi3": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**LLAMA, pad_token_id=0)),
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**LLAMA, head_dim=8)),
    "qwen3_moe": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **LLAMA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)),
}
IDS = np.array([[5, 17, 3, 99, 42, 8, 1, 60, 23], [7, 7, 2, 31, 64, 11, 90, 4, 50]])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    for name, make in MODELS.items():
        torch.manual_seed(0)
        make().to(torch.bfloat16).save_pretrained(root / name)
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_bfloat16_weights_give_the_float32_models_outputs(checkpoints, name):
    fp32 = from_pretrained(checkpoints / name)
    bf16 = from_pretrained(checkpoints / name, dtype="bfloat16")
    linears = [m for m in bf16.modules() if isinstance(m, WeightOnlyBF16Linear)]
    assert linears and not any(type(m) is fg.nn.Linear for m in bf16.modules())
    assert all(m.weight.numpy().dtype == np.uint16 for m in linears)
    table = bf16.tied_embedding()
    assert isinstance(table, BF16Embedding) and table.weight.numpy().dtype == np.uint16
    if fp32.tied:  # the head reads the embedding's bits: shared, not copied
        assert not bf16.tied and np.shares_memory(bf16.lm_head.weight.numpy(), table.weight.numpy())
    np.testing.assert_array_equal(bf16(IDS).numpy(), fp32(IDS).numpy())  # the Tensor path
    assert lean_path_applies(bf16)
    with fg.no_grad():  # the lean prefill
        np.testing.assert_array_equal(bf16(IDS).numpy(), fp32(IDS).numpy())
    np.testing.assert_array_equal(generate(bf16, IDS, max_new_tokens=12), generate(fp32, IDS, max_new_tokens=12))
    # half the bytes: the Linear weights and the token embedding (norms, biases, GPT-2's positions stay float32)
    size = lambda m: sum({id(t.numpy()): t.numpy().nbytes for t in m.state_dict(keep_vars=True).values()}.values())  # noqa: E731,E501
    assert size(bf16) < 0.6 * size(fp32)


def test_float32_checkpoint_rounds_to_nearest_as_quantize_weight_only(tmp_path):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).save_pretrained(tmp_path)  # float32 file
    direct = from_pretrained(tmp_path, dtype="bfloat16")
    converted = quantize_weight_only(from_pretrained(tmp_path), dtype="bfloat16")  # Linear layers only
    linear_keys = [k for k, v in converted.state_dict().items() if v.numpy().dtype == np.uint16]
    assert linear_keys
    for k in linear_keys:
        np.testing.assert_array_equal(direct.state_dict()[k].numpy(), converted.state_dict()[k].numpy())
    # the embedding rounded too (to nearest), so the logits are those of the float32 model on the rounded table
    from forgegrad.quantization import from_bfloat16_bits, to_bfloat16_bits
    table = converted.model.embed_tokens.weight.numpy()
    table[...] = from_bfloat16_bits(to_bfloat16_bits(table))
    np.testing.assert_array_equal(direct(IDS).numpy(), converted(IDS).numpy())


def test_bfloat16_embedding_checks_its_indices(checkpoints):
    model = from_pretrained(checkpoints / "llama_tied", dtype="bfloat16")
    with pytest.raises(IndexError, match=r"index out of range: indices must be in \[0, 100\)"):
        model.model.embed_tokens(np.array([[1, 100]]))
    with pytest.raises(TypeError, match="indices must be integers"):
        model.model.embed_tokens(np.array([1.0]))
    assert "dtype=bfloat16" in repr(model.model.embed_tokens)


def test_errors(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="dtype must be"):
        from_pretrained(checkpoints / "llama_tied", dtype="float16")
    bf16 = from_pretrained(checkpoints / "llama_tied", dtype=torch.bfloat16)  # torch's dtype by name
    with pytest.raises(TypeError, match="WeightOnlyBF16Linear layers"):
        save_pretrained(bf16, tmp_path / "out")
    with pytest.raises(TypeError, match="WeightOnlyInt8Linear layers"):
        save_pretrained(quantize_weight_only(from_pretrained(checkpoints / "gpt2")), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a float32 checkpoint whose weight bfloat16 cannot hold
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight[0, 0] = 3.4e38
    hf.save_pretrained(tmp_path / "huge")
    with pytest.raises(CheckpointError, match="up_proj.weight"):
        from_pretrained(tmp_path / "huge", dtype="bfloat16")
    from_pretrained(tmp_path / "huge")  # float32 holds it


def test_bfloat16_model_exports_to_onnx(checkpoints, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from forgegrad.onnx import export
    model = from_pretrained(checkpoints / "llama_tied", dtype="bfloat16")
    path = tmp_path / "llama_bf16.onnx"
    export(model, IDS[:1, :5], str(path), input_names=["input_ids"],  # verified in onnxruntime on export
           dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-5)  # as the float32 export
    graph = onnx.load(str(path)).graph
    assert sum(init.data_type == onnx.TensorProto.BFLOAT16 for init in graph.initializer) >= 15  # 14 Linear + table
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input_ids": IDS})[0], model(IDS).numpy(), rtol=1e-4, atol=1e-4)
