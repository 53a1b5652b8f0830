"""The encoders' question-answering and multiple-choice heads export to ONNX (``export_task_head``, ``forgegrad
export``) with dynamic batch, length and choices: one graph gives forgegrad's and transformers' start / end logits
(two named outputs) or choice logits in onnxruntime at other sizes, padded rows included."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf import export_task_head

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()

VOCAB = 99
SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONFIGS = {
    "bert": lambda: transformers.BertConfig(max_position_embeddings=64, type_vocab_size=2, **SMALL),
    "roberta": lambda: transformers.RobertaConfig(max_position_embeddings=70, pad_token_id=1, type_vocab_size=1,
                                                  **SMALL),
    # v3: log buckets shorter than the longer test length, no type table
    "deberta": lambda: transformers.DebertaV2Config(max_position_embeddings=64, relative_attention=True,
                                                    position_buckets=8, max_relative_positions=16,
                                                    pos_att_type=["p2c", "c2p"], share_att_key=True,
                                                    norm_rel_ebd="layer_norm", position_biased_input=False,
                                                    type_vocab_size=0, **SMALL),
    "modernbert": lambda: transformers.ModernBertConfig(max_position_embeddings=64, pad_token_id=0, **SMALL),
}
CASES = {"BertForQuestionAnswering": "bert", "DebertaV2ForQuestionAnswering": "deberta",
         "RobertaForMultipleChoice": "roberta", "ModernBertForMultipleChoice": "modernbert"}


def _checkpoint(head, root):
    torch.manual_seed(0)
    hf = getattr(transformers, head)(CONFIGS[CASES[head]]()).eval()
    hf.save_pretrained(root)
    return hf


_EXPORTS = {}


def _exported(head, tmp_path_factory):
    """(transformers model, forgegrad's from_pretrained of its checkpoint, ONNX path, report), exported once."""
    if head not in _EXPORTS:
        root = tmp_path_factory.mktemp(head)
        hf = _checkpoint(head, root / "ckpt")
        model = from_pretrained(root / "ckpt")
        report = export_task_head(model, root / "model.onnx")
        assert report.ok and len(report.runs) == 3, report  # the example's sizes and two others
        _EXPORTS[head] = hf, model, str(root / "model.onnx"), report
    return _EXPORTS[head]


def _inputs(shape, types: bool, seed: int, left: bool = False):
    """Ids, a mask with every row but the first padded to a random length (on the right, or the left) and, with
    ``types``, token types 1 from the middle on."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, shape).astype(np.int64)
    mask = np.ones(shape, np.int64)
    for row in range(1, shape[0]):
        n = rng.randint(1, shape[-1] + 1)
        pad = (slice(None, shape[-1] - n) if left else slice(n, None))
        mask[row, ..., pad] = 0
        ids[row, ..., pad] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if types:
        out["token_type_ids"] = (np.arange(shape[-1]) >= shape[-1] // 2).astype(np.int64) * np.ones_like(ids)
    return out


def _compare(head, tmp_path_factory, shapes, left=False):
    hf, model, path, report = _exported(head, tmp_path_factory)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for shape in shapes:
        feed = _inputs(shape, "token_type_ids" in names, seed=sum(shape), left=left)
        got = sess.run(None, feed)
        ours = model(*(feed[n] for n in names))
        with torch.no_grad():
            theirs = hf(**{k: torch.tensor(v) for k, v in feed.items()})
        if head.endswith("QuestionAnswering"):
            ours, theirs = [o.numpy() for o in ours], [theirs.start_logits.numpy(), theirs.end_logits.numpy()]
        else:
            ours, theirs = [ours.numpy()], [theirs.logits.numpy()]
        real = feed["attention_mask"].astype(bool)
        for g, o, t in zip(got, ours, theirs):
            assert g.shape == (shape if head.endswith("QuestionAnswering") else shape[:-1])
            np.testing.assert_allclose(g, o, rtol=1e-4, atol=1e-4, err_msg=f"{head} {shape} vs forgegrad")
            if head.endswith("QuestionAnswering"):  # a padding token's scores are never read
                g, t = g[real], t[real]
            np.testing.assert_allclose(g, t, rtol=1e-4, atol=1e-4, err_msg=f"{head} {shape} vs transformers")


@pytest.mark.parametrize("head", ["BertForQuestionAnswering", "DebertaV2ForQuestionAnswering"])
def test_question_answering_graph_gives_start_and_end_logits_at_any_batch_and_length(head, tmp_path_factory):
    _, _, path, report = _exported(head, tmp_path_factory)
    assert report.output_names == ["start_logits", "end_logits"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = ["input_ids", "attention_mask"] + (["token_type_ids"] if head.startswith("Bert") else [])
    assert [i.name for i in sess.get_inputs()] == want
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]
    _compare(head, tmp_path_factory, [(1, 5), (3, 19), (2, 40)])


def test_multiple_choice_graph_gives_choice_logits_at_any_batch_choices_and_length(tmp_path_factory):
    head = "RobertaForMultipleChoice"
    _, _, path, report = _exported(head, tmp_path_factory)
    assert report.output_names == ["logits"]
    _compare(head, tmp_path_factory, [(1, 2, 6), (3, 4, 17), (2, 5, 30)])


def test_left_padded_rows_give_the_same_logits(tmp_path_factory):
    _compare("BertForQuestionAnswering", tmp_path_factory, [(3, 12)], left=True)
    _compare("RobertaForMultipleChoice", tmp_path_factory, [(3, 2, 12)], left=True)


def test_modernbert_choices_pool_the_first_real_token_in_the_graph(tmp_path_factory):
    """ModernBERT's "cls" pooling takes the first token the mask keeps: computed from the mask in the graph, so a
    left-padded batch pools the right token at any size."""
    _compare("ModernBertForMultipleChoice", tmp_path_factory, [(1, 3, 5), (3, 2, 14)])
    _compare("ModernBertForMultipleChoice", tmp_path_factory, [(3, 2, 12)], left=True)


def test_export_task_head_names_a_model_that_is_not_one(tmp_path):
    """An encoder without a question-answering or multiple-choice head: a TypeError naming it, before tracing."""
    from forgegrad import nn
    with pytest.raises(TypeError, match="question-answering or multiple-choice head.*got Linear"):
        export_task_head(nn.Linear(4, 2), tmp_path / "unused.onnx")
    assert not (tmp_path / "unused.onnx").exists()


def test_forgegrad_export_cli_on_a_question_answering_directory(tmp_path):
    """``forgegrad export`` on a BERT question-answering directory: start_logits and end_logits of input_ids,
    attention_mask and token_type_ids, transformers' at another batch and length."""
    from forgegrad.cli import main
    hf = _checkpoint("BertForQuestionAnswering", tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "qa.onnx")]) == 0
    sess = ort.InferenceSession(str(tmp_path / "qa.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["start_logits", "end_logits"]
    feed = _inputs((2, 21), True, seed=7)
    start, end = sess.run(None, feed)
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in feed.items()})
    real = feed["attention_mask"].astype(bool)
    np.testing.assert_allclose(start[real], ref.start_logits.numpy()[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(end[real], ref.end_logits.numpy()[real], rtol=1e-4, atol=1e-4)
