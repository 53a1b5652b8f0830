"""ONNX exports of mixture-of-experts decoders (Mixtral, Qwen2-MoE, Qwen3-MoE) run only the routed experts: the
graph routes with TopK and runs a Loop over the experts some token chose, each on its routed rows
(models/hf/_moe_export.py). Checked on checkpoints written by transformers itself: onnxruntime's logits equal
transformers' at batches and lengths other than the example's, with every expert in use, with ties in the
router (zero router weights: every token picks the first k experts, the others stay unused; against the eager
model), for each expert
activation the exporter emits, with a shared expert, and with ``export_dense`` (no Loop, every expert weighted);
int8 weight-only experts export through the dense graph."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf.moe import SparseMoeBlock
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()

VOCAB = 90
BASE = dict(num_hidden_layers=2, hidden_size=40, num_attention_heads=4, num_key_value_heads=2, intermediate_size=24,
            vocab_size=VOCAB, max_position_embeddings=64, initializer_range=0.3, eos_token_id=None, pad_token_id=0)
MODELS = {
    # 7 experts, top-2, renormalized
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **BASE, num_local_experts=7, num_experts_per_tok=2)),
    # top-3 of 8 renormalized, head_dim apart from hidden / heads
    "qwen3_moe": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, head_dim=12, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=16, norm_topk_prob=True)),
    # a gated shared expert, top-2 of 5 not renormalized, GELU (tanh form) experts
    "qwen2_moe_gelu": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **BASE, num_experts=5, num_experts_per_tok=2, moe_intermediate_size=12, shared_expert_intermediate_size=20,
        norm_topk_prob=False, hidden_act="gelu_pytorch_tanh")),
    # the erf GELU, top-1 of 3
    "qwen3_moe_erf": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, head_dim=10, num_experts=3, num_experts_per_tok=1, moe_intermediate_size=12, hidden_act="gelu")),
}
IDS = np.random.RandomState(5).randint(1, VOCAB, (3, 11)).astype(np.int64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_moe_routed"), MODELS, seed=0)


def _export(model, path, **kw):
    from forgegrad.onnx import export
    export(model, IDS[:1, :4], str(path), input_names=["input_ids"],
           dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-5, **kw)
    return onnx.load(str(path)), ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor(ids)).logits.numpy()


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, SparseMoeBlock)]


@pytest.mark.parametrize("name", list(MODELS))
def test_the_graph_runs_the_routed_experts_and_gives_transformers_logits(checkpoints, tmp_path, name):
    root, hf = checkpoints
    model = from_pretrained(root / name)
    blocks = _blocks(model)
    graph, sess = _export(model, tmp_path / "m.onnx")
    loops = [n for n in graph.graph.node if n.op_type == "Loop"]
    assert len(loops) == len(blocks) == 2
    body_ops = [n.op_type for n in loops[0].attribute[0].g.node]
    assert body_ops.count("MatMul") == 2 and "NonZero" in body_ops  # gate|up and down, on the routed rows
    E, I, H = len(blocks[0].experts), blocks[0].experts[0].gate_proj.weight.shape[0], model.config["hidden_size"]
    shapes = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    assert sorted(s for s in shapes.values() if len(s) == 3) == sorted([(E, H, 2 * I), (E, I, H)] * 2)
    assert not any(".experts." in n and n.endswith("proj.weight") for n in shapes)  # no per-expert copies
    for ids in (IDS, IDS[:2, :1], IDS[:1]):  # batches and lengths apart from the example's (1, 4)
        got = sess.run(None, {"input_ids": ids})[0]
        np.testing.assert_allclose(got, _hf_logits(hf[name], ids), rtol=1e-4, atol=1e-4)


def test_ties_in_the_router_pick_the_lower_experts_and_leave_the_rest_unused(checkpoints, tmp_path):
    """Zero router weights give every expert the same probability: forgegrad's routing and ONNX's TopK take the
    first k (torch.topk leaves the order of equal values unspecified, so transformers is no reference here): every
    token runs experts 0..k-1, the Loop runs those only, and the graph's logits equal the eager model's."""
    root, _ = checkpoints
    model = from_pretrained(root / "qwen3_moe")
    for block in _blocks(model):
        block.gate.weight._data[...] = 0
    _, sess = _export(model, tmp_path / "tie.onnx")
    got = sess.run(None, {"input_ids": IDS})[0]
    np.testing.assert_allclose(got, model(IDS).numpy(), rtol=1e-5, atol=1e-5)


def test_export_dense_gives_the_same_logits_without_a_loop(checkpoints, tmp_path):
    root, hf = checkpoints
    model = from_pretrained(root / "mixtral")
    for block in _blocks(model):
        block.export_dense = True
    graph, sess = _export(model, tmp_path / "dense.onnx")
    assert not {"Loop", "NonZero", "TopK"} & {n.op_type for n in graph.graph.node}
    np.testing.assert_allclose(sess.run(None, {"input_ids": IDS})[0], _hf_logits(hf["mixtral"], IDS), rtol=1e-4,
                               atol=1e-4)


def test_int8_weight_only_experts_export_through_the_dense_graph(checkpoints, tmp_path):
    from forgegrad.quantization import quantize_weight_only
    root, _ = checkpoints
    q = quantize_weight_only(from_pretrained(root / "qwen3_moe"))
    graph, sess = _export(q, tmp_path / "q.onnx")
    assert "Loop" not in {n.op_type for n in graph.graph.node}
    np.testing.assert_allclose(sess.run(None, {"input_ids": IDS})[0], q(IDS).numpy(), rtol=1e-4, atol=1e-4)


def test_the_recorded_op_refuses_a_backward():
    from forgegrad.models.hf._moe_export import RoutedExpertsCall
    with pytest.raises(RuntimeError, match="records a mixture-of-experts block for an ONNX export"):
        RoutedExpertsCall.backward(None, None)
