"""Mixtral, Qwen2-MoE, Qwen3-MoE and Gemma (1) checkpoints written by transformers itself: logits, left-padded
batches, greedy generation (the lean decode step and prefill included), save_pretrained read back by
transformers, gradients into the routed experts (against torch's), and clear errors for missing expert
tensors and bad expert settings. The tiny models' weights are large enough (initializer_range 0.3) that
tokens take different experts, which each model's routing test checks."""
import json
import shutil

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import (CheckpointError, GemmaForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM,
                                 Qwen3MoeForCausalLM)
from forgegrad.models.hf._files import read_weights
from forgegrad.models.hf.moe import SparseMoeBlock
import hf_conformance as hfc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 100
BASE = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, intermediate_size=32,
            vocab_size=VOCAB, max_position_embeddings=128, initializer_range=0.3, eos_token_id=None,
            pad_token_id=0, torch_dtype="float32")
MODELS = {
    # 6 experts, top-2, Mistral's window 6 (the 9-token inputs and the generations reach past it)
    "mixtral": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        **BASE, num_local_experts=6, num_experts_per_tok=2, sliding_window=6)),
    # 3 layers, the middle one dense (mlp_only_layers); a gated shared expert; weights not renormalized
    "qwen2_moe": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(**{
        **BASE, "num_hidden_layers": 3}, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
        shared_expert_intermediate_size=24, mlp_only_layers=[1], norm_topk_prob=False)),
    # every second layer sparse (decoder_sparse_step 2), renormalized top-3, tied embeddings
    "qwen2_moe_step": lambda: transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **BASE, num_experts=4, num_experts_per_tok=3, moe_intermediate_size=16, shared_expert_intermediate_size=20,
        decoder_sparse_step=2, norm_topk_prob=True, tie_word_embeddings=True)),
    # Qwen3's per-head norms, head_dim 12, 8 experts, renormalized top-3
    "qwen3_moe": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, head_dim=12, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=16, norm_topk_prob=True)),
    # top-2 without renormalization, a window of 5 on every layer
    "qwen3_moe_window": lambda: transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **BASE, head_dim=8, num_experts=5, num_experts_per_tok=2, moe_intermediate_size=12, norm_topk_prob=False,
        use_sliding_window=True, sliding_window=5)),
    # Gemma 1: (1 + w) norms, scaled embeddings, GELU-tanh MLP, head_dim apart from hidden / heads, tied head
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**BASE, head_dim=12)),
}
MOE = [n for n in MODELS if n != "gemma"]
CLASSES = {"mixtral": MixtralForCausalLM, "qwen2_moe": Qwen2MoeForCausalLM, "qwen2_moe_step": Qwen2MoeForCausalLM,
           "qwen3_moe": Qwen3MoeForCausalLM, "qwen3_moe_window": Qwen3MoeForCausalLM, "gemma": GemmaForCausalLM}
IDS = np.random.RandomState(1).randint(0, VOCAB, (2, 9))
LEFT_PADDED = np.array([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
LEFT_MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 10])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return hfc.save_checkpoints(tmp_path_factory.mktemp("hf_moe_gemma"), MODELS, seed=0)


def _edited_copy(src, dst, config_edit=None, tensors_edit=None):
    """A copy of checkpoint directory src at dst with config_edit(config dict) / tensors_edit(dict of arrays)."""
    shutil.copytree(src, dst)
    if config_edit is not None:
        cfg = json.loads((dst / "config.json").read_text())
        config_edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    if tensors_edit is not None:
        from safetensors.numpy import save_file
        tensors = dict(read_weights(str(dst)))
        tensors_edit(tensors)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(dst / "model.safetensors"),
                  metadata={"format": "pt"})
    return dst


def _blocks(model):
    return [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, SparseMoeBlock)]


def _record_routing(model):
    """Each sparse block's routing (N, k) of the next forward, appended to the returned list."""
    seen = []
    for block in _blocks(model):
        route = block.route
        block.route = lambda probs, route=route: seen.append(route(probs)) or seen[-1]
    return seen


def test_architectures_and_sparse_layers(checkpoints):
    root, _ = checkpoints
    for name, cls in CLASSES.items():
        assert type(from_pretrained(root / name)) is cls
    mixtral = from_pretrained(root / "mixtral")
    assert mixtral.sliding_windows == [6, 6] and len(_blocks(mixtral)) == 2
    assert all(b.norm_topk_prob and b.top_k == 2 and len(b.experts) == 6 and not b.has_shared for b in _blocks(mixtral))
    q2 = from_pretrained(root / "qwen2_moe")
    assert [isinstance(layer.mlp, SparseMoeBlock) for layer in q2.model.layers] == [True, False, True]
    assert q2.model.layers[1].mlp.gate_proj.weight.shape == (32, 48)  # the dense layer: intermediate_size
    b = q2.model.layers[0].mlp
    assert b.has_shared and b.shared_expert.gate_proj.weight.shape == (24, 48) and not b.norm_topk_prob
    assert b.experts[7].up_proj.weight.shape == (16, 48) and q2.model.layers[0].self_attn.q_proj.bias is not None
    step = from_pretrained(root / "qwen2_moe_step")
    assert [isinstance(layer.mlp, SparseMoeBlock) for layer in step.model.layers] == [False, True] and step.tied
    q3 = from_pretrained(root / "qwen3_moe")
    assert q3.model.layers[0].self_attn.q_norm.weight.shape == (12,) and _blocks(q3)[0].top_k == 3
    assert from_pretrained(root / "qwen3_moe_window").sliding_windows == [5, 5]
    assert q3.sliding_windows == [None, None]


@pytest.mark.parametrize("name", MOE)
def test_routing_differs_between_tokens(checkpoints, name):
    """The test models really route: tokens take different experts, and most experts get some token."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    seen = _record_routing(model)
    model(IDS)
    assert seen
    for top in seen:
        assert len({tuple(sorted(row)) for row in top.tolist()}) > 1
        assert len(np.unique(top)) > top.shape[1] and len(np.unique(top)) >= len(_blocks(model)[0].experts) // 2


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_transformers(checkpoints, name):
    root, models = checkpoints
    # the Tensor forward, then under fg.no_grad the graph-free one (the lean prefill where no window is reached)
    hfc.check_logits(from_pretrained(root / name), models[name], IDS, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_on_a_left_padded_batch(checkpoints, name):
    root, models = checkpoints
    hfc.check_left_padded_logits(from_pretrained(root / name), models[name], LEFT_PADDED, LEFT_MASK,
                                 rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_generation_yields_transformers_tokens(checkpoints, name):
    from forgegrad.models.hf._decode import lean_path_applies
    root, models = checkpoints
    model = from_pretrained(root / name)
    assert lean_path_applies(model)
    hfc.check_greedy_generation(model, models[name], IDS[:1, :5], LEFT_PADDED, LEFT_MASK,
                                new_tokens=50, padded_new_tokens=50, frozen_new_tokens=30)


@pytest.mark.parametrize("name", list(MODELS))
def test_lean_decode_step_and_prefill_equal_the_tensor_forward(checkpoints, name):
    """The decode step at cache length 9 (past the windows) and the fused prefill of a short prompt (within
    them) against the Tensor forward."""
    root, _ = checkpoints
    model = from_pretrained(root / name)
    # (the attention kernels differ in their last bits; 3 layers of weights at std 0.3 amplify that to ~2e-5)
    hfc.check_lean_decode_step(model, IDS, rtol=1e-4, atol=1e-4)
    ids = IDS[:, :4]
    graph = model(ids).numpy()
    with hfc.counting_lean_prefill() as calls, fg.no_grad():
        lean = model(ids).numpy()
    assert calls
    np.testing.assert_allclose(lean, graph, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_pretrained_loads_back_in_transformers(checkpoints, tmp_path, name):
    root, models = checkpoints
    arch = CLASSES[name].architecture
    hfc.check_save_pretrained_round_trip(from_pretrained(root / name), models[name], getattr(transformers, arch),
                                         tmp_path / name, IDS, architecture=arch, model_type=CLASSES[name].model_type,
                                         rtol=1e-6, atol=1e-6)
    # the tensors transformers' own save_pretrained writes (one per expert projection), equal
    ours, theirs = read_weights(str(tmp_path / name)), read_weights(str(root / name))
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


@pytest.mark.parametrize("name", ["mixtral", "qwen3_moe"])
def test_fused_expert_layout_loads(checkpoints, tmp_path, name):
    """transformers' in-memory layout (all experts in one gate_up_proj / down_proj tensor per layer) is split
    on load."""
    from safetensors.torch import save_file
    root, models = checkpoints
    state = {k: v.contiguous() for k, v in models[name].state_dict().items()}
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    shutil.copytree(root / name, tmp_path / name)
    save_file(state, str(tmp_path / name / "model.safetensors"), metadata={"format": "pt"})
    model = from_pretrained(tmp_path / name)
    with torch.no_grad():
        ref = models[name](torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(model(IDS).numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_gradients_reach_the_routed_experts_as_in_torch(checkpoints, name):
    """Backward through the routing: the routed experts' and the router's gradients equal torch's; an expert
    no token was routed to gets none (torch: zeros)."""
    root, models = checkpoints
    model = from_pretrained(root / name)
    ids = IDS[:1, :3]  # 3 tokens, top-k of them: some expert stays idle
    weights = np.random.RandomState(2).randn(1, 3, VOCAB).astype(np.float32)
    seen = _record_routing(model)
    (model(ids) * fg.tensor(weights)).sum().backward()
    ref = models[name]
    ref.zero_grad()
    (ref(torch.tensor(ids)).logits * torch.tensor(weights)).sum().backward()
    idle_seen = False
    for i, (block, top) in enumerate(zip(_blocks(model), seen)):
        layer = next(j for j, lay in enumerate(model.model.layers) if lay.mlp is block)
        experts = ref.model.layers[layer].mlp.experts
        inner = block.experts[0].gate_proj.weight.shape[0]
        np.testing.assert_allclose(block.gate.weight.grad.numpy(), ref.model.layers[layer].mlp.gate.weight.grad.numpy(),
                                   rtol=1e-3, atol=1e-4)
        for e, expert in enumerate(block.experts):
            want_gate = experts.gate_up_proj.grad[e, :inner].numpy()
            want_down = experts.down_proj.grad[e].numpy()
            if e in top:
                g = expert.gate_proj.weight.grad.numpy()
                assert np.isfinite(g).all() and np.abs(g).max() > 0
                np.testing.assert_allclose(g, want_gate, rtol=1e-3, atol=1e-4)
                np.testing.assert_allclose(expert.down_proj.weight.grad.numpy(), want_down, rtol=1e-3, atol=1e-4)
            else:
                idle_seen = True
                assert expert.gate_proj.weight.grad is None and not want_gate.any() and not want_down.any()
        if block.has_shared:
            np.testing.assert_allclose(block.shared_expert_gate.weight.grad.numpy(),
                                       ref.model.layers[layer].mlp.shared_expert_gate.weight.grad.numpy(),
                                       rtol=1e-3, atol=1e-4)
    assert idle_seen


@pytest.mark.parametrize("name, drop, match", [
    ("mixtral", "model.layers.1.block_sparse_moe.experts.4.w3.weight",
     r"missing 1 tensor.*'model\.layers\.1\.block_sparse_moe\.experts\.4\.w3\.weight'"),
    ("qwen2_moe", "model.layers.2.mlp.experts.7.down_proj.weight",
     r"missing 1 tensor.*'model\.layers\.2\.mlp\.experts\.7\.down_proj\.weight'"),
    ("qwen2_moe", "model.layers.0.mlp.shared_expert_gate.weight", r"missing 1 tensor.*shared_expert_gate"),
    ("qwen3_moe", "model.layers.0.mlp.gate.weight", r"missing 1 tensor.*'model\.layers\.0\.mlp\.gate\.weight'"),
])
def test_a_missing_expert_tensor_raises_checkpoint_error(checkpoints, tmp_path, name, drop, match):
    root, _ = checkpoints
    with pytest.raises(CheckpointError, match=match):
        from_pretrained(_edited_copy(root / name, tmp_path / name, tensors_edit=lambda t: t.pop(drop)))


def test_a_wrong_expert_shape_names_the_checkpoint_tensor(checkpoints, tmp_path):
    root, _ = checkpoints
    key = "model.layers.0.block_sparse_moe.experts.1.w2.weight"
    with pytest.raises(CheckpointError, match=r"tensor 'model\.layers\.0\.block_sparse_moe\.experts\.1\.w2\.weight' "
                                              r"has shape \(48, 31\)"):
        from_pretrained(_edited_copy(root / "mixtral", tmp_path / "m",
                                     tensors_edit=lambda t: t.update({key: t[key][:, :31]})))


@pytest.mark.parametrize("name, change, error, match", [
    ("mixtral", {"num_experts_per_tok": 7}, ValueError, r"num_experts_per_tok \(7\) exceeds the number of experts"),
    ("mixtral", {"num_local_experts": 0}, ValueError, "num_local_experts must be a positive integer"),
    ("qwen2_moe", {"num_experts": None}, CheckpointError, "must give num_experts as a positive integer"),
    ("qwen2_moe", {"moe_intermediate_size": "16"}, CheckpointError, "must give moe_intermediate_size"),
    ("qwen2_moe", {"mlp_only_layers": [3]}, ValueError, "mlp_only_layers must list layer indices below 3"),
    ("qwen2_moe", {"decoder_sparse_step": 0}, ValueError, "decoder_sparse_step must be a positive integer"),
    ("qwen3_moe", {"num_experts_per_tok": True}, CheckpointError, "must give num_experts_per_tok"),
    ("qwen3_moe", {"num_local_experts": -1}, ValueError, "num_local_experts must be a positive integer"),
])
def test_bad_expert_configs_raise_clear_errors(checkpoints, tmp_path, name, change, error, match):
    root, _ = checkpoints
    with pytest.raises(error, match=match):
        from_pretrained(_edited_copy(root / name, tmp_path / name, config_edit=lambda cfg: cfg.update(change)))


def test_qwen3_moe_reads_num_experts_as_its_hub_configs_give_it(checkpoints, tmp_path):
    """transformers writes num_local_experts; Qwen3-MoE's published configs say num_experts."""
    root, models = checkpoints

    def edit(cfg):
        cfg["num_experts"] = cfg.pop("num_local_experts")
    model = from_pretrained(_edited_copy(root / "qwen3_moe", tmp_path / "q", config_edit=edit))
    assert len(_blocks(model)[0].experts) == 8
    with torch.no_grad():
        np.testing.assert_allclose(model(IDS).numpy(), models["qwen3_moe"](torch.tensor(IDS)).logits.numpy(),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "qwen2_moe_step"])
def test_router_logits_and_aux_loss_equal_transformers(checkpoints, name):
    """output_router_logits: the sparse layers' router logits and the load-balancing loss of a left-padded batch
    (padding rows left out) equal transformers' ``outputs.router_logits`` / ``aux_loss``, and the loss's
    gradients into the routers and the embedding equal torch's."""
    from forgegrad.models.hf.moe import load_balancing_loss
    root, models = checkpoints
    model = from_pretrained(root / name)
    assert not model.output_router_logits and model.router_aux_loss_coef == 0.001
    model.output_router_logits = True
    model(LEFT_PADDED, LEFT_MASK)
    aux = model.aux_loss(LEFT_MASK)
    aux.backward()
    ref = models[name]
    ref.zero_grad()
    out = ref(torch.tensor(LEFT_PADDED), attention_mask=torch.tensor(LEFT_MASK), output_router_logits=True)
    out.aux_loss.backward()
    got = model.router_logits()
    assert len(got) == len(out.router_logits) == len(_blocks(model))
    real = LEFT_MASK.reshape(-1) == 1  # (padding rows: transformers' hold zeros there)
    for g, w in zip(got, out.router_logits):
        np.testing.assert_allclose(g.numpy()[real], w.detach().numpy()[real], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(aux.numpy()), float(out.aux_loss.detach()), rtol=1e-5)
    layer = next(j for j, lay in enumerate(model.model.layers) if lay.mlp is _blocks(model)[-1])
    np.testing.assert_allclose(_blocks(model)[-1].gate.weight.grad.numpy(),
                               ref.model.layers[layer].mlp.gate.weight.grad.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(model.model.embed_tokens.weight.grad.numpy(),
                               ref.model.embed_tokens.weight.grad.numpy(), rtol=1e-3, atol=1e-6)
    # without a mask every row counts (transformers' function on the same logits)
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    block = _blocks(model)[0]
    want = load_balancing_loss_func(tuple(torch.tensor(g.numpy()) for g in got), block.n_experts, block.top_k)
    np.testing.assert_allclose(float(load_balancing_loss(got, block.n_experts, block.top_k).numpy()), float(want),
                               rtol=1e-5)


def test_router_logits_misuse_raises_clearly(checkpoints):
    from forgegrad.models.hf.moe import load_balancing_loss
    root, _ = checkpoints
    model = from_pretrained(root / "mixtral").eval()
    with pytest.raises(RuntimeError, match="output_router_logits = True"):
        model.router_logits()
    with pytest.raises(TypeError, match="output_router_logits must be True or False"):
        model.output_router_logits = "yes"
    model.output_router_logits = True
    with pytest.raises(RuntimeError, match="no forward has run"):
        model.aux_loss()
    with fg.no_grad():  # the lean prefill would keep no router logits: the Tensor forward runs
        model(IDS)
    with pytest.raises(ValueError, match="attention_mask must be \\(batch, tokens\\) with batch \\* tokens = 18"):
        model.aux_loss(np.ones((2, 8)))
    with pytest.raises(ValueError, match="top_k must be an int in 1..6"):
        load_balancing_loss(model.router_logits(), 6, 7)
    with pytest.raises(ValueError, match="no router logits"):
        load_balancing_loss([], 6, 2)
    assert np.isfinite(model.aux_loss().numpy())


@pytest.mark.parametrize("name", ["qwen3_moe", "qwen2_moe_step"])
def test_plain_onnx_export_of_a_mixture_of_experts_routes_in_the_graph(checkpoints, tmp_path, name):
    """The plain forward exports with the routing computed in the graph (every expert weighted by the token's
    routing weight): onnxruntime's logits equal transformers' at a batch and length other than the example's."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from forgegrad.onnx import export
    root, models = checkpoints
    path = str(tmp_path / "q.onnx")
    export(from_pretrained(root / name), IDS[:1, :5], path, input_names=["input_ids"],
           dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}}, rtol=1e-4, atol=1e-5)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": IDS})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, models[name](torch.tensor(IDS)).logits.numpy(), rtol=1e-4, atol=1e-4)


def test_int8_weight_only_moe_decodes_on_the_lean_path(checkpoints):
    """quantize_weight_only turns the experts, the shared expert and the router into int8 layers; the lean
    decode step and generate agree with the quantized model's own Tensor forward."""
    from forgegrad.models.hf._decode import lean_path_applies
    from forgegrad.quantization import WeightOnlyInt8Linear, quantize_weight_only
    root, _ = checkpoints
    q = quantize_weight_only(from_pretrained(root / "qwen2_moe"))
    block = q.model.layers[0].mlp
    assert all(isinstance(m, WeightOnlyInt8Linear) for m in (block.gate, block.experts[3].down_proj,
                                                             block.shared_expert.up_proj, block.shared_expert_gate))
    assert lean_path_applies(q)
    hfc.check_lean_decode_step(q, IDS, rtol=1e-4, atol=1e-4)
    hfc.check_greedy_by_hand(q, IDS[:1, :5], 8)  # greedy by hand on the Tensor path


def test_gemma_norms_scale_and_legacy_activation(checkpoints, tmp_path):
    """Gemma's (1 + w) norms load as offsets plus 1; its embeddings are scaled (logits change without it);
    the first releases' hidden_act "gelu" means the tanh form (transformers' reading); a bidirectional
    config is refused."""
    root, models = checkpoints
    model = from_pretrained(root / "gemma")
    assert model.tied and model.sliding_windows == [None, None] and model.head_dim == 12
    ref_norm = models["gemma"].model.layers[0].input_layernorm.weight.detach().numpy()
    np.testing.assert_array_equal(model.model.layers[0].input_layernorm.weight.numpy(), ref_norm + np.float32(1))
    with torch.no_grad():
        ref = models["gemma"](torch.tensor(IDS)).logits.numpy()
    legacy = from_pretrained(_edited_copy(root / "gemma", tmp_path / "g",
                                          config_edit=lambda cfg: cfg.update(hidden_act="gelu")))
    assert legacy.config["hidden_act"] == "gelu_pytorch_tanh"
    np.testing.assert_allclose(legacy(IDS).numpy(), ref, rtol=1e-4, atol=1e-4)
    model.embed_scale = None
    model._embed = lambda ids: model.model.embed_tokens(fg.Tensor._wrap(ids))
    assert not np.allclose(model(IDS).numpy(), ref, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="use_bidirectional_attention is not supported"):
        from_pretrained(_edited_copy(root / "gemma", tmp_path / "b",
                                     config_edit=lambda cfg: cfg.update(use_bidirectional_attention=True)))
