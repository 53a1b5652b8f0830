"""The sparse MLP block of the mixture-of-experts decoders on arrays (moe.sparse_moe_arrays: the lean prefill and
decode step) against transformers' own block with the same weights, at the shapes that take its separate paths:
one row (a decode step: the k experts run on the row in routing order), a few rows where some experts get no token
or a single one, and top_k = num_experts; Qwen3-MoE, Qwen2-MoE (a gated shared expert) and Mixtral. The one-row
path also gives the bits of the batched path (kept here as the reference)."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf._decode import LeanDecoder, lean_linear
from forgegrad.models.hf.moe import SparseMoeBlock, expert_slots, sparse_moe_arrays

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

BASE = dict(num_hidden_layers=1, hidden_size=24, num_attention_heads=2, num_key_value_heads=1, head_dim=12,
            intermediate_size=20, vocab_size=50, initializer_range=0.3, torch_dtype="float32",
            experts_implementation="eager")  # transformers' grouped GEMM takes no odd expert sizes
MODELS = {
    # top_k = num_experts: every expert on every token
    "qwen3_all_experts": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, num_experts=5, num_experts_per_tok=5, moe_intermediate_size=12, norm_topk_prob=True)),
    # top-1 of 8: a few rows leave experts without a token or with one
    "qwen3_top1": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, num_experts=8, num_experts_per_tok=1, moe_intermediate_size=7, norm_topk_prob=False)),
    "qwen2_shared": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **BASE, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=9, shared_expert_intermediate_size=11,
        norm_topk_prob=False)),
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **{k: v for k, v in BASE.items() if k != "head_dim"}, num_local_experts=4, num_experts_per_tok=2)),
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_lean_experts")
    torch.manual_seed(0)
    out = {}
    for name, make in MODELS.items():
        hf = make().eval()
        hf.save_pretrained(root / name)
        model = from_pretrained(root / name)
        block = model.model.layers[0].mlp
        assert isinstance(block, SparseMoeBlock)
        out[name] = (model, block, hf.model.layers[0].mlp)
    return out


def _hf_block(hf_block, h):
    with torch.no_grad():
        y = hf_block(torch.tensor(h)[None])
    return (y[0] if isinstance(y, tuple) else y)[0].numpy()


def _batched_reference(block, h, linear, mlp):
    """The block on rows h as sparse_moe_arrays computes it for several rows (each expert on its routed rows, the
    k weighted outputs of a row summed in routing order): the oracle for the one-row path."""
    from forgegrad import _C
    N, k = h.shape[0], block.top_k
    logits = np.ascontiguousarray(linear(block.gate, h), dtype=np.float32)
    probs = np.empty_like(logits)
    _C.softmax.softmax_forward(logits, probs)
    top = block.route(probs)
    weights = probs[np.arange(N)[:, None], top]
    if block.norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    weights = weights.reshape(-1, 1)
    out = np.empty((N * k, h.shape[1]), np.float32)
    for e, slots in expert_slots(top, block.n_experts):
        out[slots] = mlp(block.experts[e], np.ascontiguousarray(h[slots // k])) * weights[slots]
    y = out.reshape(N, k, -1).sum(axis=1)
    if block.has_shared:
        g = np.ascontiguousarray(linear(block.shared_expert_gate, h), dtype=np.float32)
        _C.activation.act_forward(_C.activation.SIGMOID, g, g)
        y = y + g * mlp(block.shared_expert, h)
    return y


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_block_on_arrays_equals_transformers_block(pairs, name, rows):
    model, block, hf_block = pairs[name]
    h = np.random.RandomState(rows).randn(rows, BASE["hidden_size"]).astype(np.float32)
    lean = LeanDecoder(model)
    got = lean._mlp(block, h)
    np.testing.assert_allclose(got, _hf_block(hf_block, h), rtol=1e-5, atol=1e-5)
    if rows <= 3 and name == "qwen3_top1":  # the routing these rows take: idle experts and single-token ones
        logits = lean_linear(block.gate, h)
        counts = np.bincount(logits.argmax(-1), minlength=block.n_experts)
        assert (counts == 0).any() and (rows == 1 or (counts == 1).any())


@pytest.mark.parametrize("name", list(MODELS))
def test_one_row_gives_the_batched_paths_bits(pairs, name):
    """A decode step's row through the one-row path: the same bits as the batched path run on that row alone."""
    model, block, _ = pairs[name]
    lean = LeanDecoder(model)
    for seed in range(4):
        h = np.random.RandomState(10 + seed).randn(1, BASE["hidden_size"]).astype(np.float32)
        got = sparse_moe_arrays(block, h, lean._linear, lean._mlp)
        want = _batched_reference(block, h, lean._linear, lean._mlp)
        assert got.dtype == np.float32 and got.shape == (1, BASE["hidden_size"])
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype, layer", [(None, "WeightOnlyInt8Linear"), ("bfloat16", "WeightOnlyBF16Linear")])
def test_weight_only_experts_take_the_one_row_path(pairs, dtype, layer):
    """int8 / bfloat16 weight-only experts (quantize_weight_only) go through the decoder's callbacks on one row as on
    many, and give the quantized block's Tensor forward."""
    from forgegrad import no_grad
    from forgegrad.quantization import quantize_weight_only
    from forgegrad.tensor import Tensor
    model, _, _ = pairs["qwen2_shared"]
    q = quantize_weight_only(model, inplace=False, **({} if dtype is None else {"dtype": dtype}))
    block = q.model.layers[0].mlp
    assert type(block.experts[0].gate_proj).__name__ == layer
    lean = LeanDecoder(q)
    h = np.random.RandomState(5).randn(1, BASE["hidden_size"]).astype(np.float32)
    got = sparse_moe_arrays(block, h, lean._linear, lean._mlp)
    np.testing.assert_array_equal(got, _batched_reference(block, h, lean._linear, lean._mlp))
    with no_grad():
        graph = block(Tensor._wrap(h)).numpy()
    np.testing.assert_allclose(got, graph, rtol=1e-5, atol=1e-5)


def test_large_experts_equal_transformers_and_give_one_bits_at_any_thread_count(tmp_path, threads):
    """Experts of 512 x 512 (a weight of 2^18 floats: the GEMM packs it with prefetches of the next panel) on ~20
    routed rows each: the array block and the Tensor forward against transformers' block, and the same bits at 1
    and 2 threads."""
    from forgegrad import Tensor
    torch.manual_seed(0)
    hf = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **{**BASE, "hidden_size": 512, "num_attention_heads": 8, "head_dim": 64, "initializer_range": 0.02},
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=512, norm_topk_prob=True)).eval()
    hf.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)
    block = model.model.layers[0].mlp
    h = np.random.RandomState(0).randn(40, 512).astype(np.float32)
    want = _hf_block(hf.model.layers[0].mlp, h)
    lean, graph = [], []
    for t in (1, 2):
        threads(t)
        lean.append(LeanDecoder(model)._mlp(block, h))
        graph.append(block(Tensor._wrap(h)).numpy())
    scale = np.abs(want).max()
    np.testing.assert_allclose(lean[0], want, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(graph[0], want, rtol=1e-5, atol=1e-5 * scale)
    assert lean[0].tobytes() == lean[1].tobytes() and graph[0].tobytes() == graph[1].tobytes()
