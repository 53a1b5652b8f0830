"""ONNX export of NLLB-MoE with a fixed expert capacity K (moe_eval_capacity_token_fraction <= 0): the experts run on
their capacity's slots (NllbMoeSparseMLP.dispatched_forward), not on every token. The graph's expert MatMuls take
the stacked expert weights (E, d_model, ffn) and the slots' tokens (E, min(K, tokens), d_model) at run time, for a
call of more tokens than K and one of fewer; with more choices than slots (tokens dropped) the encoder's states and
the decoder's logits equal transformers' (its v4 per-expert dispatch restored: test_hf_nllb_moe's fixture)."""
import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from test_hf_nllb_moe import _hf, fixed_dispatch  # noqa: E402, F401  (the fixture: autouse)

E, K = 4, 4  # experts, capacity
D, FFN = 21, 19  # test_hf_nllb_moe's d_model and encoder_ffn_dim


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(transformers model, forgegrad model, the exported directory): every encoder and decoder layer sparse."""
    hf = _hf("fixed-capacity", num_experts=E, expert_capacity=K, encoder_sparse_step=1, decoder_sparse_step=1)
    root = tmp_path_factory.mktemp("nllb_moe_dispatch")
    hf.save_pretrained(root / "ckpt")
    model = from_pretrained(root / "ckpt")
    enc, dec = export_seq2seq(model, root / "onnx", atol=1e-3)
    assert enc.ok and dec.ok
    return hf, model, root / "onnx"


def _session(path, extra_outputs=()):
    proto = onnx.load(str(path))
    for name in extra_outputs:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _expert_matmuls(path):
    """The graph's MatMuls whose weight is a stacked (E, ., .) initializer: (node, weight shape)."""
    proto = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    return [(n, shapes[n.input[1]]) for n in proto.graph.node
            if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 3]


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_expert_matmuls_run_on_the_capacity_slots(exported):
    hf, model, directory = exported
    layers = hf.config.encoder_layers
    found = _expert_matmuls(directory / "encoder.onnx")
    assert sorted(shape for _, shape in found) == sorted([(E, D, FFN), (E, FFN, D)] * layers)
    # no expert runs on all the tokens: the only other MatMuls / Gemms with an ffn-wide weight would be per-expert
    proto = onnx.load(str(directory / "encoder.onnx"))
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    wide = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm")
            and len(n.input) > 1 and FFN in shapes.get(n.input[1], ())[-2:] and len(shapes[n.input[1]]) == 2]
    assert not wide, [n.name for n in wide]
    firsts = [n.input[0] for n, shape in found if shape == (E, D, FFN)]
    session = _session(directory / "encoder.onnx", firsts)
    rng = np.random.RandomState(3)
    for B, T in ((5, 10), (1, 3)):  # 50 tokens (the slots cut to K), 3 (to the call's tokens)
        ids = rng.randint(3, 90, (B, T))
        outs = session.run(firsts, {"input_ids": ids, "attention_mask": np.ones((B, T), np.int64)})
        for rows in outs:
            assert rows.shape == (E, min(K, B * T), D)


def test_dropped_tokens_equal_transformers(exported):
    """50 encoder tokens route 100 choices into E * K = 16 slots: most are dropped; each decoder call's capacity
    counts its own tokens (5 calls' 10 tokens: slots cut to K; one row's 2 tokens: to 2)."""
    hf, model, directory = exported
    enc, dec = (_session(directory / f) for f in ("encoder.onnx", "decoder.onnx"))
    rng = np.random.RandomState(4)
    ids = rng.randint(3, 90, (5, 10))
    mask = np.ones((5, 10), np.int64)
    mask[1, 7:] = 0
    enc_out = enc.run(None, {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        encoded = hf.model.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    _close(enc_out[0], encoded.last_hidden_state.numpy())
    _close(enc_out[0], model.encode(ids, mask).numpy())
    tokens = rng.randint(3, 90, (5, 2))
    for rows in (slice(None), slice(3, 4)):
        B = tokens[rows].shape[0]
        cross = iter(o[rows] for o in enc_out[1:])
        past = {i.name: next(cross) if ".encoder." in i.name else np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
                for i in dec.get_inputs()[2:]}
        logits = dec.run(None, {"input_ids": tokens[rows], "encoder_attention_mask": mask[rows], **past})[0]
        states = transformers.modeling_outputs.MoEModelOutput(last_hidden_state=encoded.last_hidden_state[rows])
        with torch.no_grad():
            want = hf(encoder_outputs=states, attention_mask=torch.tensor(mask[rows]),
                      decoder_input_ids=torch.tensor(tokens[rows])).logits.numpy()
        _close(logits, want)
