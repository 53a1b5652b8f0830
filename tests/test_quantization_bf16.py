"""Weight-only bfloat16 Linear: the kernel widens each weight as it reads it and runs the float32 GEMM's
arithmetic, so a model with bfloat16 weights computes the float32 model's outputs for those weights bit
for bit; Hugging Face bfloat16 checkpoints keep their own weights; ONNX export in onnxruntime."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad import _C, nn
from forgegrad.quantization import (WeightOnlyBF16Linear, from_bfloat16_bits, quantize_weight_only,
                                    to_bfloat16_bits)

torch = pytest.importorskip("torch")


def test_rounding_matches_torch(rng):
    a = np.concatenate([
        rng.standard_normal(5000).astype(np.float32) * np.float32(10) ** rng.integers(-40, 38, 5000),
        # ties (the low half exactly 0x8000) both ways, the largest finite floats, subnormals, signed zeros
        (np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x00000001,
                   0x80008000, 0x00000000, 0x80000000], np.uint32)).view(np.float32),
        np.array([np.inf, -np.inf], np.float32)])
    want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(to_bfloat16_bits(a), want)
    np.testing.assert_array_equal(from_bfloat16_bits(want), torch.from_numpy(want.view(np.int16)).view(
        torch.bfloat16).float().numpy())
    nan = to_bfloat16_bits(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(from_bfloat16_bits(nan)).all()
    with pytest.raises(TypeError, match="bits must be uint16"):
        from_bfloat16_bits(np.zeros(3, np.int16))


# M <= 8: the dot form (rows in groups of 4, then 3, 2 or 1; 8 weight rows a block); M > 8: column blocks
# widened into scratch for sgemm ((12, 600, 1000): 4 blocks; (9, 300, 4097): 9 blocks of 32-34 rows)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 37, 100), (2, 70, 4101), (3, 45, 31), (4, 9, 17), (5, 130, 64),
                                   (7, 1030, 33), (8, 3, 200), (9, 300, 4097), (12, 600, 1000), (40, 17, 5)])
def test_kernel_equals_float32_linear_on_widened_weights(simd_path, threads, rng, M, N, K):
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = to_bfloat16_bits(rng.standard_normal((N, K)).astype(np.float32))
    bias = rng.standard_normal(N).astype(np.float32)
    wide = from_bfloat16_bits(w)
    for b in (bias, None):
        threads(1)
        y = _C.quant.linear_bf16(x, w, b)
        np.testing.assert_array_equal(y, _C.gemm.linear(x, wide, b))  # the float32 Linear's bits
        want = x.astype(np.float64) @ wide.astype(np.float64).T + (0 if b is None else b)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        for t in (2, 3):
            threads(t)
            np.testing.assert_array_equal(_C.quant.linear_bf16(x, w, b), y)


def test_kernel_rejects_bad_input():
    x, w = np.ones((2, 4), np.float32), np.ones((3, 4), np.uint16)
    with pytest.raises(TypeError, match="w must have dtype uint16"):
        _C.quant.linear_bf16(x, np.ones((3, 4), np.float32), None)
    with pytest.raises(ValueError, match="w must have shape"):
        _C.quant.linear_bf16(x, np.ones((3, 5), np.uint16), None)
    with pytest.raises(ValueError, match="bias"):
        _C.quant.linear_bf16(x, w, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32"):
        _C.quant.linear_bf16(x.astype(np.float64), w, None)
    assert _C.quant.linear_bf16(np.ones((0, 4), np.float32), w, None).shape == (0, 3)


def test_module_is_the_float32_model_with_rounded_weights(tmp_path, rng):
    fg.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 8, bias=False))
    q = quantize_weight_only(model, dtype="bfloat16")
    assert isinstance(q[0], WeightOnlyBF16Linear) and isinstance(model[0], nn.Linear)  # a copy
    rounded = nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 8, bias=False))
    rounded.load_state_dict({k: fg.tensor(from_bfloat16_bits(to_bfloat16_bits(v.numpy())) if "weight" in k
                                          else v.numpy()) for k, v in model.state_dict().items()})
    x = fg.tensor(rng.standard_normal((2, 5, 48)).astype(np.float32))  # (*, in_features)
    with fg.no_grad():
        np.testing.assert_array_equal(q(x).numpy(), rounded(x).numpy())
    # half the bytes on disk; a checkpoint loads back into a quantized copy with the same outputs
    fg.save(q.state_dict(), tmp_path / "bf16.safetensors")
    fg.save(model.state_dict(), tmp_path / "fp32.safetensors")
    assert (tmp_path / "bf16.safetensors").stat().st_size < 0.55 * (tmp_path / "fp32.safetensors").stat().st_size
    other = quantize_weight_only(nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 8, bias=False)),
                                 dtype="bf16")
    other.load_state_dict(fg.load(tmp_path / "bf16.safetensors"))
    np.testing.assert_array_equal(other(x).numpy(), q(x).numpy())
    assert "dtype=bfloat16" in repr(q)


def test_module_errors(rng):
    with pytest.raises(ValueError, match="dtype must be qint8"):
        quantize_weight_only(nn.Linear(3, 3), dtype="float16")
    bad = nn.Linear(3, 2)
    bad.weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantize_weight_only(bad, dtype="bfloat16")
    huge = nn.Linear(3, 2)
    huge.weight.data[0, 0] = np.float32(3.4e38)  # finite in float32, past bfloat16's largest
    with pytest.raises(ValueError, match="past bfloat16's largest"):
        quantize_weight_only(huge, dtype="bfloat16")
    q = quantize_weight_only(nn.Linear(3, 2), dtype="bfloat16")
    with pytest.raises(ValueError, match=r"shape \(\*, 3\)"):
        q(fg.tensor(np.ones((1, 4), np.float32)))
    with pytest.raises(TypeError, match="must be float32"):
        q(fg.tensor(np.ones((1, 3), np.float64)))
    with pytest.raises(TypeError, match="forgegrad.Tensor"):
        q(np.ones((1, 3), np.float32))


def test_onnx_export_runs_in_onnxruntime(tmp_path, rng):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from forgegrad.onnx import export
    q = quantize_weight_only(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)), dtype="bfloat16")
    x = rng.standard_normal((3, 20)).astype(np.float32)
    path = tmp_path / "bf16.onnx"
    export(q, fg.tensor(x), str(path), input_names=["x"], dynamic_axes={"x": {0: "batch"}})  # verified on export
    graph = onnx.load(str(path)).graph
    assert sum(init.data_type == onnx.TensorProto.BFLOAT16 for init in graph.initializer) == 2
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x7 = rng.standard_normal((7, 20)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x7})[0], q(fg.tensor(x7)).numpy(), rtol=1e-5, atol=1e-5)


def test_hugging_face_bfloat16_checkpoint_keeps_its_weights_and_tokens(tmp_path):
    transformers = pytest.importorskip("transformers")
    from forgegrad.models import from_pretrained, generate
    from forgegrad.models.hf._decode import lean_path_applies
    from forgegrad.models.hf._files import read_weights
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                                   intermediate_size=80, vocab_size=100, max_position_embeddings=128,
                                   initializer_range=0.3, tie_word_embeddings=True, eos_token_id=None)
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)  # float32, widened exactly
    q = quantize_weight_only(model, dtype="bfloat16")  # tied head: a bfloat16 copy of the embedding
    assert isinstance(q.lm_head, WeightOnlyBF16Linear) and lean_path_applies(q)
    stored = read_weights(str(tmp_path))  # the checkpoint's bfloat16 values, widened
    np.testing.assert_array_equal(from_bfloat16_bits(q.model.layers[1].mlp.down_proj.weight.numpy()),
                                  stored["model.layers.1.mlp.down_proj.weight"])
    ids = np.array([[5, 17, 3, 99, 42, 8, 1, 60, 23]])
    with fg.no_grad():  # the lean prefill on both
        np.testing.assert_array_equal(q(ids).numpy(), model(ids).numpy())
    np.testing.assert_array_equal(q(ids).numpy(), model(ids).numpy())  # the Tensor path on both
    out = generate(q, ids, max_new_tokens=30)  # the lean decode step
    np.testing.assert_array_equal(out, generate(model, ids, max_new_tokens=30))
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    want = hf.generate(torch.from_numpy(ids), max_new_tokens=30, do_sample=False)
    np.testing.assert_array_equal(out, want.numpy())
