"""ONNX export of NLLB-MoE (export_seq2seq; the top-2 routing with expert capacity as graph ops, then a Loop over the
experts in use on the rows that chose them (or, export_dense, every expert on every token, weighted), or with a fixed
capacity on its capacity's slots: NllbMoeSparseMLP.dense_forward; the slots' shapes:
test_hf_nllb_moe_onnx_dispatch.py) from checkpoints transformers wrote, in onnxruntime: the encoder's states and each
decoder call's logits (several places and one; the capacity counts each call's tokens) equal transformers' at batch 4
and 1 with padding, in the three routings of test_hf_nllb_moe (no dropping, an eval fraction with batch-prioritized
queues, a fixed capacity with padding routed); generate_onnx_seq2seq's greedy and beam tokens equal transformers'
generate. The capacity 2 * ceil(tokens / experts) and a fraction whose product with the token count rounds
differently in float32 are checked against forgegrad's routing, and the configs without a graph are refused.

The reference is transformers with transformers 4's per-expert dispatch restored (test_hf_nllb_moe's fixture)."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate, generate_onnx_seq2seq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from test_hf_nllb_moe import _COMMON, CONFIGS, _hf, _inputs, fixed_dispatch  # noqa: E402, F401  (the fixture: autouse)


def _sessions(directory):
    return tuple(ort.InferenceSession(str(directory / f), providers=["CPUExecutionProvider"])
                 for f in ("encoder.onnx", "decoder.onnx"))


@pytest.fixture(scope="module", params=list(CONFIGS))
def exported(request, tmp_path_factory):
    """(transformers model, forgegrad model, encoder session, decoder session)."""
    hf = _hf(request.param)
    root = tmp_path_factory.mktemp("nllb_moe_onnx") / request.param
    hf.save_pretrained(root / "ckpt")
    model = from_pretrained(root / "ckpt")
    enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)
    assert enc.ok and dec.ok
    return (hf, model, *_sessions(root / "onnx"))


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def _empty_past(dec, encoder_outputs, B):
    cross = iter(encoder_outputs)
    return {i.name: next(cross) if ".encoder." in i.name else np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
            for i in dec.get_inputs()[2:]}


@pytest.mark.parametrize("rows", [slice(None), slice(2, 3)])
def test_encoder_and_each_decoder_call_are_transformers(exported, rows):
    """Each decoder call (3 places, then 1, then 2) against transformers' call on the same places with its cache:
    the routers' capacity counts the call's tokens on both sides."""
    hf, model, enc, dec = exported
    ids, mask, tokens = _inputs()
    ids, mask = ids[rows], mask[rows]
    tokens = np.concatenate([tokens, tokens[:, 1:2]], 1)[rows]  # 6 places
    B = ids.shape[0]
    enc_out = enc.run(None, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        encoded = hf.model.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    _close(enc_out[0], encoded.last_hidden_state.numpy())
    past = _empty_past(dec, enc_out[1:], B)
    self_names = [n for n in past if ".decoder." in n]
    theirs, start = None, 0
    for new in (3, 1, 2):
        step = tokens[:, start:start + new]
        logits, *present = dec.run(None, {"input_ids": step, "encoder_attention_mask": mask, **past})
        with torch.no_grad():
            out = hf(encoder_outputs=encoded, attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(step),
                     cache=theirs, use_cache=True)
        _close(logits, out.logits.numpy())
        theirs = out.past_key_values
        past.update(zip(self_names, present))
        start += new


def test_greedy_and_beam_tokens_in_onnxruntime_are_transformers(exported):
    hf, model, enc, dec = exported
    ids, mask, _ = _inputs()
    for beams in (1, 3):
        got = generate_onnx_seq2seq(enc, dec, ids, mask, decoder_start_token_id=2, max_new_tokens=12,
                                    eos_token_id=2, pad_token_id=1, num_beams=beams)
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                               do_sample=False, num_beams=beams).numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"{beams} beams")
    np.testing.assert_array_equal(got, generate(model, ids, attention_mask=mask, max_new_tokens=12, num_beams=3))


@pytest.mark.parametrize("extra", [
    # 2 * ceil(tokens / experts): 50 encoder tokens, 4 experts: 26 places (a null expert_capacity, which
    # transformers' config refuses: forgegrad's routing is the reference)
    dict(moe_eval_capacity_token_fraction=-1.0, expert_capacity=None, moe_token_dropout=0.0),
    # 0.3 * 50 is 15.0 in float64 (capacity 15, as transformers' math.ceil) but 15.0000006 in float32 (16)
    dict(moe_eval_capacity_token_fraction=0.3, batch_prioritized_routing=True)])
def test_capacity_is_computed_from_the_calls_tokens_as_python_does(extra, tmp_path):
    import json
    null = extra.get("expert_capacity", 0) is None
    hf = _hf("no-drop", encoder_sparse_step=1, **{k: v for k, v in extra.items() if v is not None})
    hf.save_pretrained(tmp_path / "ckpt")
    if null:
        cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**cfg, "expert_capacity": None}))
    model = from_pretrained(tmp_path / "ckpt")
    export_seq2seq(model, tmp_path / "onnx", atol=1e-3)
    enc, dec = _sessions(tmp_path / "onnx")
    rng = np.random.RandomState(1)
    ids = rng.randint(3, 90, (5, 10))
    mask = np.ones((5, 10), np.int64)
    mask[0, 8:] = 0
    enc_out = enc.run(None, {"input_ids": ids, "attention_mask": mask})
    _close(enc_out[0], model.encode(ids, mask).numpy())
    if not null:
        with torch.no_grad():
            want = hf.model.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
        _close(enc_out[0], want.numpy())
    # the capacity decides: one place more (fraction) or less changes the states (forgegrad's eager routing)
    import dataclasses
    s = model.router
    less = (dataclasses.replace(s, expert_capacity=25) if s.expert_capacity is None  # 26 - 1
            else dataclasses.replace(s, eval_capacity_fraction=0.31))  # ceil(15.5): 16
    for m in model.modules():
        if hasattr(m, "settings"):
            m.settings = less
    assert np.abs(model.encode(ids, mask).numpy() - enc_out[0]).max() > 1e-3
    for m in model.modules():
        if hasattr(m, "settings"):
            m.settings = s
    tokens = rng.randint(3, 90, (5, 3))  # the decoder's capacity: from its 15 tokens
    logits = dec.run(None, {"input_ids": tokens, "encoder_attention_mask": mask, **_empty_past(dec, enc_out[1:], 5)})
    _close(logits[0], model(ids, mask, tokens).numpy())


def test_configs_without_a_graph_are_refused(tmp_path):
    from forgegrad.models.hf import NllbMoeForConditionalGeneration
    cfg = {**_COMMON, "d_model": 21}
    for extra, message in [(dict(second_expert_policy="sampling"), "second_expert_policy 'sampling' draws random"),
                           (dict(router_dtype="bfloat16"), "router_dtype 'bfloat16'")]:
        model = NllbMoeForConditionalGeneration({**cfg, **extra})
        with pytest.raises(NotImplementedError, match=f"NllbMoeForConditionalGeneration: {message}"):
            export_seq2seq(model, tmp_path / "onnx")


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_a_capacity_fraction_graph_loops_over_the_experts_in_use(tmp_path, fraction):
    """With a capacity from the call's tokens (the released checkpoints' fraction 1.0; 0.3 drops choices) each
    sparse layer's experts run in a Loop over the experts in use, each on the rows that chose it (a dropped choice
    or padding: none); ``export_dense`` writes the every-expert graph. Both give the eager encoder's states."""
    import onnx
    from forgegrad.models.hf import NllbMoeForConditionalGeneration
    from forgegrad.models.hf.nllb_moe import NllbMoeSparseMLP
    ids = np.random.RandomState(4).randint(3, 90, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    cfg = {**_COMMON, "moe_eval_capacity_token_fraction": fraction, "moe_token_dropout": 0.2}
    for dense in (False, True):
        model = NllbMoeForConditionalGeneration(cfg).eval()
        sparse = [m for m in model.modules() if isinstance(m, NllbMoeSparseMLP)]
        for m in sparse:
            m.export_dense = dense
        in_encoder = sum(isinstance(m, NllbMoeSparseMLP) for m in model.encoder.modules())
        export_seq2seq(model, tmp_path / str(dense), atol=1e-3)
        graph = onnx.load(str(tmp_path / str(dense) / "encoder.onnx")).graph
        loops = [n for n in graph.node if n.op_type == "Loop"]
        assert len(loops) == (0 if dense else in_encoder) and in_encoder >= 1
        if not dense:
            assert [n.op_type for n in loops[0].attribute[0].g.node].count("MatMul") == 2  # fc1, fc2 on the rows
        enc, _ = _sessions(tmp_path / str(dense))
        _close(enc.run(None, {"input_ids": ids, "attention_mask": mask})[0], model.encode(ids, mask).numpy())


def test_int8_weight_only_experts_export_through_the_every_expert_graph(tmp_path):
    import onnx
    from forgegrad.models.hf import NllbMoeForConditionalGeneration
    from forgegrad.quantization import quantize_weight_only
    q = quantize_weight_only(NllbMoeForConditionalGeneration(dict(_COMMON)).eval())
    export_seq2seq(q, tmp_path, atol=1e-3)
    assert "Loop" not in {n.op_type for n in onnx.load(str(tmp_path / "encoder.onnx")).graph.node}
    ids = np.random.RandomState(4).randint(3, 90, (2, 7))
    mask = np.ones_like(ids)
    enc, _ = _sessions(tmp_path)
    _close(enc.run(None, {"input_ids": ids, "attention_mask": mask})[0], q.encode(ids, mask).numpy())
