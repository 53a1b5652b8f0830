"""DeBERTa-v2 / v3 export to ONNX with dynamic batch and sequence axes: the relative-position gather indices and the
padding masks are computed in the graph, so one file gives forgegrad's and transformers' outputs in onnxruntime at
any batch and length, a v3-style model (log buckets shorter than the sequences) and a v2-style one (clamped
positions, absolute positions, token types as a third input, the ConvLayer) alike; ``forgegrad export`` writes such
a file from a checkpoint directory."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf.deberta import _gather_plan, deberta_settings, distance_rows
from forgegrad.onnx import export

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

VOCAB = 99
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
STYLES = {
    # 8 buckets over 16 positions: lengths 7 and more reach the log buckets, 19 and 40 the clamped ends of the table
    "v3": dict(relative_attention=True, position_buckets=8, max_relative_positions=16, pos_att_type=["p2c", "c2p"],
               share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False),
    # no buckets, distances clamped at 5; absolute positions, token types and the ConvLayer
    "v2": dict(relative_attention=True, position_buckets=-1, max_relative_positions=5, pos_att_type="p2c|c2p",
               share_att_key=False, position_biased_input=True, type_vocab_size=2, conv_kernel_size=3),
}


def _config(style, **kw):
    return transformers.DebertaV2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=40, max_position_embeddings=64, initializer_range=0.3,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                        **STYLES[style], **kw)


_EXPORTS = {}


def _inputs(style, batch, length, seed):
    """Token ids, a right-padding mask (the first row full, the others shorter, one token at the least) and, for the
    v2 style (a type table), token types: 1 from the middle on."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate(rng.randint(1, length + 1, batch)[1:], start=1):
        mask[row, n:] = 0
        ids[row, n:] = 0
    types = np.zeros_like(ids)
    types[:, length // 2:] = 1
    return [ids, mask, types] if style == "v2" else [ids, mask]


def _exported(style, head, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, ONNX path), exported once with
    ``_inputs`` at (2, 13)."""
    key = (style, head)
    if key not in _EXPORTS:
        root = tmp_path_factory.mktemp(f"deberta_{style}_{head}")
        torch.manual_seed(0)
        hf = getattr(transformers, head)(_config(style, num_labels=3)).eval()
        hf.save_pretrained(root / "ckpt")
        model = from_pretrained(root / "ckpt")
        example = _inputs(style, 2, 13, seed=0)
        names = NAMES[:len(example)]
        path = str(root / "model.onnx")
        report = export(model, tuple(example), path, input_names=names, rtol=1e-4, atol=1e-5,
                        dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
        assert report.ok and len(report.runs) == 3, report  # the example, then (1, 1) and (7, 7) random inputs
        _EXPORTS[key] = hf, model, path
    return _EXPORTS[key]


@pytest.mark.parametrize("head", ["DebertaV2ForSequenceClassification", "DebertaV2Model"])
@pytest.mark.parametrize("style", list(STYLES))
def test_one_graph_gives_forgegrad_and_transformers_at_any_batch_and_length(style, head, tmp_path_factory):
    hf, model, path = _exported(style, head, tmp_path_factory)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        for length in (1, 7, 19, 40):  # 40: past the distances where the v3 rows stop changing (distance_rows)
            inputs = _inputs(style, batch, length, seed=batch * 100 + length)
            got = sess.run(None, dict(zip(NAMES, inputs)))[0]
            ours = model(*inputs)
            ours = (ours.last_hidden_state if head == "DebertaV2Model" else ours).numpy()
            with torch.no_grad():
                theirs = hf(*(torch.tensor(a) for a in inputs))
            theirs = (theirs.last_hidden_state if head == "DebertaV2Model" else theirs.logits).numpy()
            np.testing.assert_allclose(got, ours, rtol=1e-4, atol=1e-4, err_msg=f"{batch} x {length}")
            np.testing.assert_allclose(got, theirs, rtol=1e-4, atol=1e-4, err_msg=f"{batch} x {length}")


@pytest.mark.parametrize("style", list(STYLES))
def test_distance_rows_are_the_eager_gather_rows_at_every_length(style):
    """The graph's constant (rows by distance, clamped past n) gives the rows of the eager numpy plan, at lengths
    well past where the rows stop changing."""
    s = deberta_settings(_config(style).to_dict())
    args = (s["position_buckets"], s["max_relative_positions"], s["att_span"])
    n, c2p_rows, p2c_rows = distance_rows(*args)
    for T in (1, 2, 9, 40, 3 * n):
        lo, hi, c2p, p2c = _gather_plan(T, *args)
        d = np.clip(np.arange(T)[:, None] - np.arange(T)[None, :], -n, n) + n
        R = hi - lo
        np.testing.assert_array_equal(c2p % R + lo, c2p_rows[d])
        np.testing.assert_array_equal(p2c % R + lo, p2c_rows[d])


def test_forgegrad_export_cli_on_a_deberta_directory(tmp_path):
    """``forgegrad export`` on a DeBERTa-v3 classifier's directory: a graph of input_ids with dynamic batch and
    length, giving transformers' logits at another batch and length."""
    from forgegrad.cli import main
    torch.manual_seed(0)
    hf = transformers.DebertaV2ForSequenceClassification(_config("v3", num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m.onnx")]) == 0
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ids = np.random.RandomState(5).randint(1, VOCAB, (3, 21)).astype(np.int64)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(sess.run(None, {"input_ids": ids})[0], ref, rtol=1e-4, atol=1e-4)
