"""Extractive question answering and multiple choice (``*ForQuestionAnswering``, ``*ForMultipleChoice`` of BERT,
RoBERTa, XLM-RoBERTa, DistilBERT, ModernBERT, DeBERTa-v2) read from checkpoints transformers wrote: start / end
logits and choice logits equal transformers' on padded batches of odd lengths, gradients equal transformers'
(float64), save_pretrained writes what transformers reads back; ``answer_question`` gives the answers of
transformers' question-answering pipeline (rebuilt from transformers' tokenizer, model and ``select_starts_ends``:
transformers 5 removed the pipeline itself) on long contexts cut into windows, top_k and impossible answers
included, and with tokenizers that pad on the left (the context first); bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained
from forgegrad.models.hf import QuestionAnsweringOutput, answer_question
from forgegrad.models.hf.tokenizer import load_tokenizer
from hf_conformance import padded_batch, tiny_roberta_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()

VOCAB = 99
LENGTHS = [13, 7, 1, 10]
CHOICE_LENGTHS = [9, 5, 7, 3, 9, 1]  # 2 questions x 3 choices
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, initializer_range=0.3)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _config(family: str, **kw):
    """A tiny transformers config of ``family`` (dropouts off, so that training mode is comparable)."""
    if family == "Bert":
        return transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=64, **SMALL, **NO_DROPOUT, **kw)
    if family in ("Roberta", "XLMRoberta"):
        return getattr(transformers, f"{family}Config")(vocab_size=VOCAB, max_position_embeddings=40, pad_token_id=1,
                                                        bos_token_id=0, eos_token_id=2, type_vocab_size=1, **SMALL,
                                                        **NO_DROPOUT, **kw)
    if family == "DistilBert":
        return transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=40,
                                             max_position_embeddings=64, initializer_range=0.3, dropout=0.0,
                                             attention_dropout=0.0, qa_dropout=0.0, seq_classif_dropout=0.0, **kw)
    if family == "ModernBert":
        return transformers.ModernBertConfig(vocab_size=VOCAB, max_position_embeddings=64, local_attention=8,
                                             pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                             sep_token_id=2, **dict(SMALL, num_hidden_layers=3), **kw)
    return transformers.DebertaV2Config(vocab_size=VOCAB, max_position_embeddings=64, relative_attention=True,
                                        position_buckets=8, max_relative_positions=16, pos_att_type=["p2c", "c2p"],
                                        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                                        **SMALL, **NO_DROPOUT, **kw)


FAMILIES = ["Bert", "Roberta", "XLMRoberta", "DistilBert", "ModernBert", "DebertaV2"]
PAD = {"Roberta": 1, "XLMRoberta": 1}


def _saved(path, family, kind, **kw):
    torch.manual_seed(0)
    hf = getattr(transformers, f"{family}For{kind}")(_config(family, **kw)).eval()
    hf.save_pretrained(path)
    return hf, from_pretrained(path)


def _hf_qa(hf, ids, mask):
    with torch.no_grad():
        out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.start_logits.numpy(), out.end_logits.numpy()


def _choices(family):
    """(ids, mask) of shape (2, 3, T): six right-padded rows of odd lengths."""
    ids, mask = padded_batch(CHOICE_LENGTHS, VOCAB, pad=PAD.get(family, 0))
    return ids.reshape(2, 3, -1), mask.reshape(2, 3, -1)


def _hf_choice(hf, ids, mask):
    with torch.no_grad():
        return hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_start_end_logits_match_transformers(tmp_path, family):
    hf, model = _saved(tmp_path, family, "QuestionAnswering")
    assert type(model).__name__ == f"{family}ForQuestionAnswering"
    ids, mask = padded_batch(LENGTHS, VOCAB, pad=PAD.get(family, 0))
    want_start, want_end = _hf_qa(hf, ids, mask)
    out = model(ids, attention_mask=mask)
    assert isinstance(out, QuestionAnsweringOutput) and out.start_logits.shape == ids.shape
    start, end = out  # a named pair
    real = mask.astype(bool)  # ModernBERT's padding rows are unspecified (transformers unpads); the others' too
    np.testing.assert_allclose(start.numpy()[real], want_start[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(end.numpy()[real], want_end[real], rtol=1e-4, atol=1e-4)
    assert np.ptp(want_start[real]) > 1e-2  # the heads' outputs differ token to token: the check can fail


@pytest.mark.parametrize("family,pooling", [(f, None) for f in FAMILIES] + [("ModernBert", "mean")])
def test_multiple_choice_logits_match_transformers(tmp_path, family, pooling):
    hf, model = _saved(tmp_path, family, "MultipleChoice", **({"classifier_pooling": pooling} if pooling else {}))
    ids, mask = _choices(family)
    want = _hf_choice(hf, ids, mask)
    got = model(ids, attention_mask=mask).numpy()
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.ptp(want) > 1e-3
    # left padding (ModernBERT pools the first token the mask keeps, as transformers does)
    left_ids = np.stack([np.roll(r, -int(m.sum())) for r, m in zip(ids.reshape(6, -1), mask.reshape(6, -1))])
    left_mask = np.stack([np.roll(m, -int(m.sum())) for m in mask.reshape(6, -1)])
    left_ids, left_mask = left_ids.reshape(ids.shape), left_mask.reshape(ids.shape)
    np.testing.assert_allclose(model(left_ids, attention_mask=left_mask).numpy(),
                               _hf_choice(hf, left_ids, left_mask), rtol=1e-4, atol=1e-4)


def _gradients(hf, model, ids, mask, outputs):
    """Both sides' parameters with the gradients of the same random weighted sum of the outputs (transformers in
    float64), training mode."""
    ref = copy.deepcopy(hf).double().train()
    model.train()
    theirs_out = ref(torch.tensor(ids), attention_mask=torch.tensor(mask))
    ours_out = model(ids, attention_mask=mask)
    rng = np.random.RandomState(1)
    loss_t, loss_f = 0, 0
    for name, ours in zip(outputs, ours_out if isinstance(ours_out, tuple) else (ours_out,)):
        w = rng.standard_normal(tuple(ours.shape)) * (mask if ours.shape == mask.shape else 1)
        loss_t = loss_t + (getattr(theirs_out, name) * torch.tensor(w)).sum()
        loss_f = loss_f + (ours * fg.tensor(w.astype(np.float32))).sum()
    loss_t.backward()
    loss_f.backward()
    return dict(model.named_parameters()), dict(ref.named_parameters())


@pytest.mark.parametrize("family,kind", [("Bert", "QuestionAnswering"), ("ModernBert", "QuestionAnswering"),
                                         ("Roberta", "MultipleChoice"), ("DebertaV2", "MultipleChoice")])
def test_gradients_match_transformers(tmp_path, family, kind):
    hf, model = _saved(tmp_path, family, kind)
    if kind == "QuestionAnswering":
        ids, mask = padded_batch(LENGTHS, VOCAB, pad=PAD.get(family, 0))
        ours, theirs = _gradients(hf, model, ids, mask, ["start_logits", "end_logits"])
    else:
        ids, mask = _choices(family)
        ours, theirs = _gradients(hf, model, ids, mask, ["logits"])
    assert set(ours) == set(theirs)
    for name, p in ours.items():
        want = theirs[name].grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(want).max()),
                                   err_msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trip(tmp_path, family):
    """Both heads saved by save_pretrained are read back by transformers with the same outputs."""
    for kind in ("QuestionAnswering", "MultipleChoice"):
        hf, model = _saved(tmp_path / kind, family, kind)
        save_pretrained(model, tmp_path / f"{kind}-back")
        back = getattr(transformers, f"{family}For{kind}").from_pretrained(tmp_path / f"{kind}-back").eval()
        if kind == "QuestionAnswering":
            ids, mask = padded_batch(LENGTHS, VOCAB, pad=PAD.get(family, 0))
            for a, b in zip(_hf_qa(back, ids, mask), _hf_qa(hf, ids, mask)):
                np.testing.assert_array_equal(a[mask.astype(bool)], b[mask.astype(bool)])
        else:
            ids, mask = _choices(family)
            np.testing.assert_allclose(_hf_choice(back, ids, mask), _hf_choice(hf, ids, mask), rtol=1e-6, atol=1e-6)


def test_reader_checkpoint_with_a_pooler(tmp_path):
    """A BERT reader's checkpoint that carries a pooler (as the TensorFlow-converted SQuAD readers do) loads as
    transformers loads it: the pooler ignored."""
    from safetensors.numpy import load_file, save_file
    hf, _ = _saved(tmp_path, "Bert", "QuestionAnswering")
    tensors = load_file(tmp_path / "model.safetensors")
    rng = np.random.RandomState(0)
    tensors.update({"bert.pooler.dense.weight": rng.standard_normal((32, 32)).astype(np.float32),
                    "bert.pooler.dense.bias": np.zeros(32, np.float32)})
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ids, mask = padded_batch(LENGTHS, VOCAB)
    start, end = from_pretrained(tmp_path)(ids, attention_mask=mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(start.numpy()[real], _hf_qa(hf, ids, mask)[0][real], rtol=1e-4, atol=1e-4)


# ---- answer_question against the pipeline ------------------------------------------------------------------------

CORPUS = ["the tiny river runs past the old mill in a quiet town, where the miller bakes bread for the town "
          "every morning and sells it at the market near the bridge"] * 10
CONTEXT = ("The tiny river runs past the old mill. In the quiet town the miller bakes bread every morning, and "
           "sells it at the market near the bridge; the old bridge crosses the river where the town ends. "
           "Every evening the miller walks home past the mill and the river.")
QUESTION = "where does the miller sell bread?"


def _wordpiece_qa(path, family="Bert"):
    """A ``family``ForQuestionAnswering (torch seeded 0) with a WordPiece tokenizer saved as BertTokenizerFast
    ([CLS] question [SEP] context [SEP]: the pair template of BERT's, DistilBERT's, ModernBERT's and DeBERTa-v3's
    tokenizers; token types passed to the models that take them, as their tokenizers do)."""
    from tokenizers import BertWordPieceTokenizer
    path.mkdir()
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS, vocab_size=90)
    tok.save(str(path / "tokenizer.json"))
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family in ("Bert", "DebertaV2") else [])
    transformers.BertTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), model_max_length=64,
                                   model_input_names=names).save_pretrained(path)
    torch.manual_seed(0)
    cfg = _config(family)
    cfg.initializer_range = 0.5
    getattr(transformers, f"{family}ForQuestionAnswering")(cfg).save_pretrained(path)
    return path


def _roberta_qa(path, family="Roberta"):
    """A RobertaForQuestionAnswering with a byte-level BPE tokenizer (RoBERTa's pair template, no token types)."""
    tiny_roberta_tokenizer(path, CORPUS)
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<s>",
                                         eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                                         sep_token="</s>", mask_token="<mask>", model_max_length=64,
                                         model_input_names=["input_ids", "attention_mask"]).save_pretrained(path)
    torch.manual_seed(0)
    transformers.RobertaForQuestionAnswering(transformers.RobertaConfig(
        vocab_size=300, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        type_vocab_size=1, **dict(SMALL, initializer_range=0.5))).save_pretrained(path)
    return path


def _pipeline(hf, tok, question, context, top_k=1, max_answer_len=15, handle_impossible_answer=False,
              doc_stride=None, max_seq_len=None):
    """transformers 4.57's QuestionAnsweringPipeline (fast tokenizer) step by step with transformers 5's tokenizer,
    model and select_starts_ends. A tokenizer that pads on the left gets the pipeline's order (the context first, cut
    "only_first", its characters read as sequence 0) with the mask its p_mask comment means (every token but the
    context's kept out, the classifier token excepted): the pipeline's own expression for that order,
    ``tok != 1 if question_first else 0``, keeps no token out."""
    from transformers.pipelines.document_question_answering import select_starts_ends
    max_seq_len = max_seq_len or min(tok.model_max_length, 384)
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    question_first = tok.padding_side == "right"
    ctx = 1 if question_first else 0
    enc = tok(text=question if question_first else context, text_pair=context if question_first else question,
              padding="do_not_pad", truncation="only_second" if question_first else "only_first",
              max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True, return_overflowing_tokens=True,
              return_offsets_mapping=True, return_special_tokens_mask=True)
    answers, min_null_score = [], 1000000
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny forwards: faster on one thread (restored below)
    try:
        outs = []
        for i in range(len(enc["input_ids"])):
            with torch.no_grad():
                outs.append(hf(**{k: torch.tensor([enc[k][i]]) for k in tok.model_input_names}))
    finally:
        torch.set_num_threads(threads)
    for i in range(len(enc["input_ids"])):
        p_mask = np.array([[s != ctx for s in enc.sequence_ids(i)]])
        if tok.cls_token_id is not None:
            p_mask[0, np.array(enc["input_ids"][i]) == tok.cls_token_id] = False
        out = outs[i]
        starts, ends, scores, min_null_score = select_starts_ends(
            out.start_logits.numpy(), out.end_logits.numpy(), p_mask, np.array([enc["attention_mask"][i]]),
            min_null_score, top_k * 2 + 10, handle_impossible_answer, max_answer_len)
        e = enc[i]
        for s, t, score in zip(starts, ends, scores):
            try:
                a = e.word_to_chars(e.token_to_word(s), sequence_index=ctx)[0]
                b = e.word_to_chars(e.token_to_word(t), sequence_index=ctx)[1]
            except Exception:
                a, b = e.offsets[s][0], e.offsets[t][1]
            same = next((x for x in answers if x["answer"].lower() == context[a:b].lower()), None)
            if same:
                same["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": a, "end": b, "answer": context[a:b]})
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]


def _same_answers(got, want):
    got = [got] if isinstance(got, dict) else got
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(a["answer"], a["start"], a["end"]) for a in want]
    np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want], rtol=1e-4, atol=1e-7)


# (context, settings): windows of the default size (the tokenizer's model_max_length) and smaller ones, overlapping
# or not; short contexts, where the "no answer" score ranks among the spans and top_k reaches the zero-scored pairs
CASES = [(CONTEXT, dict()), (CONTEXT, dict(top_k=3)), (CONTEXT, dict(top_k=5, max_answer_len=4)),
         (CONTEXT, dict(top_k=3, max_seq_len=32, doc_stride=6)),
         (CONTEXT, dict(top_k=2, max_seq_len=28, doc_stride=0, handle_impossible_answer=True)),
         ("bread", dict(top_k=6, handle_impossible_answer=True)),
         ("at the market", dict(top_k=10, handle_impossible_answer=True))]


@pytest.mark.parametrize("family", ["Bert", "Roberta", "DistilBert", "ModernBert", "DebertaV2"])
def test_answers_are_the_pipelines(tmp_path, family):
    path = (_roberta_qa if family == "Roberta" else _wordpiece_qa)(tmp_path / "qa", family)
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = from_pretrained(path)
    ours = load_tokenizer(path, model.config["vocab_size"])
    assert len(tok(QUESTION, CONTEXT)["input_ids"]) > 64  # the default window (model_max_length) is exceeded
    for context, kw in CASES:
        want = _pipeline(hf, tok, QUESTION, context, **kw)
        got = answer_question(model, ours, QUESTION, context, **kw)
        assert isinstance(got, dict) == (kw.get("top_k", 1) == 1)
        _same_answers(got, want)
        for a in ([got] if isinstance(got, dict) else got):
            assert context[a["start"]:a["end"]] == a["answer"]
        if context == "at the market":  # the impossible answer is among them: the check can fail
            assert any(a["answer"] == "" and a["score"] > 0 for a in want)
    assert answer_question(model, path, QUESTION, CONTEXT) == answer_question(model, ours, QUESTION, CONTEXT)


def _padding_on_the_left(path, where):
    """``path``'s tokenizer made to pad on the left: tokenizer_config.json's padding_side ("config") or only
    tokenizer.json's padding direction ("tokenizer.json"), as transformers reads either."""
    import json
    if where == "config":
        config = json.loads((path / "tokenizer_config.json").read_text())
        (path / "tokenizer_config.json").write_text(json.dumps(dict(config, padding_side="left")))
    else:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.enable_padding(direction="left", pad_id=0)
        tok.save(str(path / "tokenizer.json"))
    assert transformers.AutoTokenizer.from_pretrained(path).padding_side == "left"
    return path


@pytest.mark.parametrize("family,where", [("Bert", "config"), ("Roberta", "tokenizer.json")])
def test_tokenizers_that_pad_on_the_left_put_the_context_first(tmp_path, family, where):
    """A tokenizer that pads on the left: the context first, cut into windows, the question after it, as the
    pipeline (and transformers' SQuAD script) orders them, the answers read in the context; the same answers as the
    pipeline with its mask for that order keeping the question's tokens out (see _pipeline); other answers than the
    question-first order gives."""
    right = (_roberta_qa if family == "Roberta" else _wordpiece_qa)(tmp_path / "qa", family)
    import shutil
    left = _padding_on_the_left(shutil.copytree(right, tmp_path / "left"), where)
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(left).eval()
    tok = transformers.AutoTokenizer.from_pretrained(left)
    model = from_pretrained(left)
    ours = load_tokenizer(left, model.config["vocab_size"])
    assert ours.padding_side == "left" and load_tokenizer(right, model.config["vocab_size"]).padding_side == "right"
    changed = 0
    for context, kw in CASES:
        want = _pipeline(hf, tok, QUESTION, context, **kw)
        got = answer_question(model, ours, QUESTION, context, **kw)
        _same_answers(got, want)
        for a in ([got] if isinstance(got, dict) else got):
            assert context[a["start"]:a["end"]] == a["answer"]
        changed += got != answer_question(model, load_tokenizer(right, model.config["vocab_size"]), QUESTION,
                                          context, **kw)
    assert changed  # the order matters: the check can fail
    # the windows are transformers' "only_first" windows
    enc = tok(CONTEXT, QUESTION, truncation="only_first", max_length=32, stride=6, return_overflowing_tokens=True,
              return_offsets_mapping=True)
    windows = ours.encode_pair_windows(CONTEXT, QUESTION, 32, 6, cut="only_first")
    assert len(windows) == len(enc["input_ids"]) > 3 and [w.ids for w in windows] == enc["input_ids"]
    assert [w.offsets for w in windows] == [list(map(tuple, o)) for o in enc["offset_mapping"]]
    with pytest.raises(ValueError, match="answer_question: max_seq_len 20 .*the second text .* does not leave room"):
        answer_question(model, ours, QUESTION * 10, CONTEXT, max_seq_len=20, doc_stride=2)
    with pytest.raises(ValueError, match="cut must be"):
        ours.encode_pair_windows(CONTEXT, QUESTION, 32, 6, cut="longest_first")


def test_windows_are_the_tokenizers(tmp_path):
    """encode_pair_windows cuts the context as transformers' tokenizer does (ids, types, offsets, overlap)."""
    path = _wordpiece_qa(tmp_path / "qa")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    want = tok(QUESTION, CONTEXT, truncation="only_second", max_length=28, stride=4, return_overflowing_tokens=True,
               return_offsets_mapping=True)
    got = load_tokenizer(path, VOCAB).encode_pair_windows(QUESTION, CONTEXT, 28, 4)
    assert len(got) == len(want["input_ids"]) > 3
    assert [w.ids for w in got] == want["input_ids"]
    assert [w.type_ids for w in got] == want["token_type_ids"]
    assert [w.offsets for w in got] == [list(map(tuple, o)) for o in want["offset_mapping"]]
    assert load_tokenizer(path, VOCAB).cls_token_id == tok.cls_token_id


def test_bad_input(tmp_path):
    path = _wordpiece_qa(tmp_path / "qa")
    model = from_pretrained(path)
    tok = load_tokenizer(path, VOCAB)
    with pytest.raises(ValueError, match="question must not be empty"):
        answer_question(model, tok, "  ", CONTEXT)
    with pytest.raises(TypeError, match="context must be a str"):
        answer_question(model, tok, QUESTION, ["a", "list"])
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        answer_question(model, tok, QUESTION, CONTEXT, top_k=0)
    with pytest.raises(ValueError, match="max_answer_len"):
        answer_question(model, tok, QUESTION, CONTEXT, max_answer_len=0)
    with pytest.raises(ValueError, match="doc_stride .30. is larger than max_seq_len .20."):
        answer_question(model, tok, QUESTION, CONTEXT, max_seq_len=20, doc_stride=30)
    with pytest.raises(ValueError, match="answer_question: max_seq_len 20 and doc_stride 2 .*does not leave room"):
        answer_question(model, tok, QUESTION * 10, CONTEXT, max_seq_len=20, doc_stride=2)
    with pytest.raises(ValueError, match="answer_question: max_seq_len 20 and doc_stride 10 .*stride 10 must be less"):
        answer_question(model, tok, QUESTION, CONTEXT, max_seq_len=20, doc_stride=10)
    _, choices = _saved(tmp_path / "mc", "Bert", "MultipleChoice")
    with pytest.raises(TypeError, match="question-answering model"):
        answer_question(choices, tok, QUESTION, CONTEXT)
    with pytest.raises(TypeError, match="call the model"):
        choices.score_packed([[1, 2, 3]])
    with pytest.raises(ValueError, match="holds no tokenizer.json"):
        answer_question(model, tmp_path, QUESTION, CONTEXT)
    with pytest.raises(RuntimeError, match="eval"):
        answer_question(model.train(), tok, QUESTION, CONTEXT)


def test_bad_heads(tmp_path):
    """A question-answering config with other than two labels, multiple-choice inputs not (batch, choices,
    tokens)."""
    with pytest.raises(ValueError, match="num_labels must be 2"):
        fg.models.hf.BertForQuestionAnswering(_config("Bert", num_labels=3).to_dict())
    _, model = _saved(tmp_path, "Bert", "MultipleChoice")
    ids, mask = _choices("Bert")
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, choices, tokens\)"):
        model(ids[0], attention_mask=mask[0])
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        model(ids, attention_mask=mask[:, :2])
    with pytest.raises(ValueError, match="at least one token per row"):  # the encoder's error, not numpy's reshape
        model(ids[:, :, :0])


def test_windows_from_several_threads_are_each_calls_own(tmp_path):
    """Calls with different window sizes at once on one tokenizer (a server's threads): each gets its own windows
    (the truncation settings are not one shared state that another call can change under it)."""
    import sys
    import threading
    from tokenizers import BertWordPieceTokenizer
    (tmp_path / "tok").mkdir()
    trained = BertWordPieceTokenizer(lowercase=True)
    trained.train_from_iterator(CORPUS, vocab_size=90)
    trained.save(str(tmp_path / "tok" / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tok", VOCAB)
    settings = [(20, 2), (28, 4), (40, 1)]
    want = {s: [w.ids for w in tok.encode_pair_windows(QUESTION, CONTEXT, *s)] for s in settings}
    wrong = []

    def run(s):
        for _ in range(1500):
            if [w.ids for w in tok.encode_pair_windows(QUESTION, CONTEXT, *s)] != want[s]:
                wrong.append(s)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between nearly every bytecode
    try:
        threads = [threading.Thread(target=run, args=(s,)) for s in settings]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not wrong
