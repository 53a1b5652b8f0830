"""Whisper's decoder graph with ``decoder_attention_mask`` (left-padded prompts: condition_on_prev_tokens with previous
tokens of different lengths in a batch) and, exported with ``cross_attentions=True``, the alignment heads'
cross-attention (token timestamps), on a tiny checkpoint that predicts timestamps and names alignment heads: the
graph's logits and probabilities equal forgegrad's on padded prompts; generate_onnx_whisper's rows, segments and token
times equal model.generate's and transformers'; a decoder graph of the old interface (no mask input, no
cross_attentions output) still decodes what it can and names the export to make for the rest; the CLI flag."""

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_seq2seq, generate_onnx_whisper
from whisper_helpers import build_whisper

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.usefixtures("torch_one_thread")

# test_hf_whisper_timestamps.py's vocabulary: text below 100, the special tokens, then 51 timestamps
EOS, START, EN, FR, DE, TRANSLATE, TRANSCRIBE, LM, PREV, NOCAPTIONS, NO_TIMESTAMPS = range(100, 111)
T0 = NO_TIMESTAMPS + 1
MELS, FRAMES = 16, 100  # one 1-second window: 100 frames, 50 encoder positions
HEADS = [[1, 1], [0, 1], [1, 0]]  # not in layer order: the graph's output follows this order


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # (tiny graphs: a thread pool only spins on a shared machine)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(forgegrad model, transformers model, encoder session, decoder session, checkpoint, graph directory): the
    checkpoint exported once with cross_attentions=True."""
    root = tmp_path_factory.mktemp("onnx_whisper_pt")
    path = build_whisper(root / "ckpt", vocab_size=T0 + 51, max_target_positions=64, alignment_heads=HEADS,
                         suppress_tokens=[1, 5, TRANSLATE, TRANSCRIBE, LM, PREV, NOCAPTIONS], feature_extractor=False)
    model = from_pretrained(path)
    enc, dec = export_seq2seq(model, root / "onnx", cross_attentions=True)
    assert enc.ok and dec.ok
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    return model, hf, _session(root / "onnx" / "encoder.onnx"), _session(root / "onnx" / "decoder.onnx"), path, \
        root / "onnx"


def _long(batch, frames, seed):
    """Features (batch, 16, frames) and their attention_mask: every input after the first 2.3 seconds long."""
    x = np.random.default_rng(seed).standard_normal((batch, MELS, frames)).astype(np.float32)
    mask = np.ones((batch, frames), np.int64)
    mask[1:, 230:] = 0
    x[1:, :, 230:] = 0.0
    return x, mask


def test_decoder_graph_on_left_padded_prompts_equals_forgegrad(exported):
    """Two prompts of 7 and 4 tokens, the shorter left padded: the graph's logits at the real places (the prompt, then
    two steps on its own cache) equal model.decode's with the same decoder_attention_mask, and its cross_attentions
    (one call without past) are cross_attention_weights' at the alignment heads, in HEADS' order."""
    model, _, enc, dec, _, _ = exported
    assert [i.name for i in dec.get_inputs()[:2]] == ["input_ids", "decoder_attention_mask"]
    assert [o.name for o in dec.get_outputs()][-1] == "cross_attentions"
    x, _ = _long(2, FRAMES, seed=2)
    _, *cross = enc.run(None, {"input_features": x})
    names = [i.name for i in dec.get_inputs()[2:]]
    self_names = [n for n in names if ".decoder." in n]
    it = iter(cross)
    past = {n: next(it) if ".encoder." in n else np.zeros((2, 2, 0, 16), np.float32) for n in names}
    seq = np.array([[PREV, 7, 42, START, EN, TRANSCRIBE, NO_TIMESTAMPS],
                    [EOS, EOS, EOS, START, FR, TRANSCRIBE, NO_TIMESTAMPS]])
    mask = np.array([[1] * 7, [0, 0, 0, 1, 1, 1, 1]], np.int64)
    with fg.no_grad():
        states = model.encode(x)
        want_probs = model.cross_attention_weights(seq, model.cross_kv(states), [0, 1], decoder_attention_mask=mask)
    ids = seq
    for step in range(3):
        logits, *present, probs = dec.run(None, {"input_ids": ids, "decoder_attention_mask": mask, **past})
        with fg.no_grad():
            want = model.decode(seq, states, decoder_attention_mask=mask).numpy()[:, -ids.shape[1]:]
        real = mask[:, -ids.shape[1]:].astype(bool)
        np.testing.assert_allclose(logits[real], want[real], rtol=1e-4, atol=1e-4, err_msg=f"call {step}")
        if step == 0:
            np.testing.assert_allclose(probs, np.stack([want_probs[layer][:, head] for layer, head in HEADS], 1),
                                       rtol=0, atol=1e-5)
        past.update(zip(self_names, present))
        ids = logits[:, -1:].argmax(-1)
        seq, mask = np.concatenate([seq, ids], 1), np.concatenate([mask, np.ones((2, 1), np.int64)], 1)


def _times(out, want):
    np.testing.assert_array_equal(out["sequences"], want["sequences"])
    np.testing.assert_allclose(out["token_timestamps"], want["token_timestamps"], rtol=0, atol=1e-5)
    for ours, theirs in zip(out.get("segments", []), want.get("segments", []), strict=True):
        assert [(s["start"], s["end"], s["tokens"].tolist()) for s in ours] == \
            [(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in theirs]
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a["token_timestamps"], np.asarray(b["token_timestamps"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", [
    dict(frames=FRAMES, batch=2, kw=dict(max_new_tokens=12)),
    dict(frames=FRAMES, batch=2, kw=dict(language="fr", max_new_tokens=12, return_timestamps=True), cut=[60, 100]),
    dict(frames=260, batch=2, kw=dict(language="en", max_new_tokens=10, return_segments=True)),
    dict(frames=260, batch=2, kw=dict(language="en", max_new_tokens=10, return_segments=True,
                                      condition_on_prev_tokens=True)),
], ids=["detect", "timestamps-masked", "long-form", "long-form-conditioned"])
def test_token_timestamps_equal_generate_and_transformers(exported, case):
    """return_token_timestamps on the graphs: the rows, segments and token times (within 1e-5 s) of model.generate
    and of transformers' generate; short-form with the language detected, with timestamps and each input's frames
    (attention_mask), long-form with segments, and conditioned on previous tokens (left-padded prompts)."""
    model, hf, enc, dec, _, _ = exported
    x, mask = _long(case["batch"], case["frames"], seed=3)
    kw = dict(case["kw"], return_token_timestamps=True)
    if case["frames"] > FRAMES:
        kw.update(attention_mask=mask, return_timestamps=True)
    elif "cut" in case:
        kw["attention_mask"] = (np.arange(FRAMES)[None] < np.array(case["cut"])[:, None]).astype(np.int64)
    ours = generate_onnx_whisper(enc, dec, x, **kw)
    with fg.no_grad():
        _times(ours, model.generate(x, **kw))
    theirs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    with torch.no_grad():
        ref = hf.generate(torch.tensor(x), **theirs)
    _times(ours, {k: v.numpy() if hasattr(v, "numpy") else v for k, v in ref.items()})
    assert ours["token_timestamps"].max() > 0  # the alignment moved along the audio


@pytest.mark.parametrize("kw", [
    dict(),
    dict(prompt_ids=[PREV, 7, 42, 13], prompt_condition_type="all-segments"),
    dict(num_beams=2),
], ids=["greedy", "prompt-all-segments", "beams-2"])
def test_left_padded_prompts_equal_generate_and_transformers(exported, kw):
    """A batch whose previous tokens differ in length (condition_on_prev_tokens: left-padded prompts, which the old
    interface refuses on these inputs, test_graphs_of_the_old_interface): the rows and segments of model.generate
    and transformers' generate, greedy, after a text prompt, and with 2 beams (the padding follows each beam)."""
    model, hf, enc, dec, _, _ = exported
    x, mask = _long(2, 300, seed=5)
    kw = dict(kw, language="en", max_new_tokens=16, attention_mask=mask, return_timestamps=True,
              return_segments=True, condition_on_prev_tokens=True)
    ours = generate_onnx_whisper(enc, dec, x, **kw)
    want = model.generate(x, **kw)
    np.testing.assert_array_equal(ours["sequences"], want["sequences"])
    assert [[(s["start"], s["end"], s["tokens"].tolist()) for s in row] for row in ours["segments"]] == \
        [[(s["start"], s["end"], s["tokens"].tolist()) for s in row] for row in want["segments"]]
    assert len(ours["segments"][0]) > 1 and ours["segments"][0][-1]["end"] > 2.0  # several windows
    theirs = {k: torch.tensor(v) if k in ("attention_mask", "prompt_ids") else v for k, v in kw.items()}
    with torch.no_grad():
        ref = hf.generate(torch.tensor(x), **theirs)
    np.testing.assert_array_equal(ours["sequences"], ref["sequences"].numpy())
    assert [[(s["start"], s["end"], s["tokens"].tolist()) for s in row] for row in ours["segments"]] == \
        [[(float(s["start"]), float(s["end"]), s["tokens"].tolist()) for s in row] for row in ref["segments"]]


def _old_interface(directory, out):
    """The decoder graph as exported before decoder_attention_mask and cross_attentions: the mask input replaced by
    ones of (batch, past + new tokens) computed in the graph (the causal mask the old graph computed), the
    cross_attentions output removed."""
    from onnx import TensorProto, helper
    m = onnx.load(str(directory / "decoder.onnx"))
    g = m.graph
    g.input.remove(next(i for i in g.input if i.name == "decoder_attention_mask"))
    g.output.remove(next(o for o in g.output if o.name == "cross_attentions"))
    ones = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Shape", ["input_ids"], ["old.batch"], end=1),
             helper.make_node("Shape", ["input_ids"], ["old.new"], start=1),
             helper.make_node("Shape", ["past_key_values.0.decoder.key"], ["old.past"], start=2, end=3),
             helper.make_node("Add", ["old.past", "old.new"], ["old.length"]),
             helper.make_node("Concat", ["old.batch", "old.length"], ["old.shape"], axis=0),
             helper.make_node("ConstantOfShape", ["old.shape"], ["decoder_attention_mask"], value=ones)]
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.save(m, str(out))
    return _session(out)


def test_graphs_of_the_old_interface(exported, tmp_path):
    """A decoder graph without the mask input and the cross_attentions output (as exported before them) decodes
    prompts of one length as before; left-padded prompts and token timestamps are refused, naming the export."""
    model, _, enc, _, _, directory = exported
    old = _old_interface(directory, tmp_path / "decoder.onnx")
    assert "decoder_attention_mask" not in [i.name for i in old.get_inputs()]
    x, mask = _long(2, 300, seed=5)
    kw = dict(language="en", max_new_tokens=16, return_timestamps=True)
    np.testing.assert_array_equal(generate_onnx_whisper(enc, old, x[:, :, :FRAMES], **kw),
                                  model.generate(x[:, :, :FRAMES], **kw))
    with pytest.raises(ValueError, match=r"takes no decoder_attention_mask .*export the model again"):
        generate_onnx_whisper(enc, old, x, attention_mask=mask, condition_on_prev_tokens=True, **kw)
    with pytest.raises(ValueError, match=r"export_seq2seq\(model, DIR, cross_attentions=True\)"):
        generate_onnx_whisper(enc, old, x[:, :, :FRAMES], return_token_timestamps=True, **kw)


def test_cli_export_with_cross_attentions(exported, tmp_path):
    """`forgegrad export WHISPER_DIR --out DIR --cross-attentions`: the decoder graph outputs the alignment heads'
    probabilities and gives model.generate's token times; the flag is refused for a non-Whisper checkpoint path."""
    from forgegrad.cli import main
    model, _, _, _, ckpt, _ = exported
    assert main(["export", str(ckpt), "--out", str(tmp_path / "onnx"), "--cross-attentions"]) == 0
    dec = _session(tmp_path / "onnx" / "decoder.onnx")
    assert [(o.name, o.shape[1]) for o in dec.get_outputs()][-1] == ("cross_attentions", len(HEADS))
    x, _ = _long(1, FRAMES, seed=8)
    kw = dict(language="de", max_new_tokens=10, return_token_timestamps=True)
    _times(generate_onnx_whisper(tmp_path / "onnx" / "encoder.onnx", dec, x, **kw), model.generate(x, **kw))
    (tmp_path / "model.json").write_text("{}")
    assert main(["export", str(tmp_path / "model.json"), "--out", str(tmp_path / "m.onnx"), "--cross-attentions"]) == 2
