"""Checks shared by the encoder family tests (test_hf_mpnet.py, test_hf_electra.py, test_hf_albert.py): a forgegrad
encoder loaded with from_pretrained against the transformers model that wrote the checkpoint, on right-padded
batches.

    hf_outputs              a transformers model's output on (ids, mask) arrays, under no_grad
    check_encoder           hidden states (and pooler) at the real tokens equal transformers'; encode_packed too;
                            nn.utils.freeze's copy too; save_pretrained's directory loads in
                            transformers with the same outputs
    check_classifier        logits equal transformers' (forward and score_packed), and after the save round trip
    check_export_with_mask  an ONNX export with dynamic batch and sequence (input_ids, attention_mask) gives
                            transformers' outputs in onnxruntime on padded batches of other sizes
    word_piece_dir          a tiny WordPiece tokenizer saved in transformers' layout (for the serving tests)
    sentence_transformer_dir  sentence-transformers' own save of a checkpoint directory, mean-pooled and normalized
    check_embeddings_server  the embeddings server on sentence-transformers' save of a model gives its vectors

torch and transformers are imported inside the functions: the test files skip themselves where they are missing.
"""
from __future__ import annotations

import numpy as np

import forgegrad as fg
from forgegrad.models import from_pretrained, save_pretrained

TOL = dict(rtol=1e-5, atol=1e-5)


def hf_outputs(hf, ids, mask):
    import torch
    with torch.no_grad():
        return hf(torch.tensor(ids), attention_mask=torch.tensor(mask))


def check_encoder(hf, path, ids, mask, tmp_path, *, architecture):
    """from_pretrained(path) gives hf's last hidden states at the real tokens (and its pooler output where it has
    one), from forward, encode_packed and nn.utils.freeze's copy; save_pretrained writes a directory transformers
    loads as ``architecture`` with the same hidden states. Returns the model."""
    import transformers
    ref = hf_outputs(hf, ids, mask)
    model = from_pretrained(path)
    real = mask.astype(bool)
    out = model(ids, attention_mask=mask)
    want = ref.last_hidden_state.numpy()
    np.testing.assert_allclose(out.last_hidden_state.numpy()[real], want[real], **TOL)
    pooled = getattr(ref, "pooler_output", None)
    assert (out.pooler_output is None) == (pooled is None)
    if pooled is not None:
        np.testing.assert_allclose(out.pooler_output.numpy(), pooled.numpy(), **TOL)
    rows = [list(r[m]) for r, m in zip(ids, real)]
    np.testing.assert_allclose(model.encode_packed(rows), want[real], **TOL)
    frozen = fg.nn.utils.freeze(model)
    np.testing.assert_allclose(frozen(ids, attention_mask=mask).last_hidden_state.numpy()[real], want[real], **TOL)
    assert all(p.requires_grad for p in model.parameters())  # the model itself still trains
    save_pretrained(model, tmp_path / "saved")
    back = transformers.AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert type(back).__name__ == architecture
    np.testing.assert_allclose(hf_outputs(back, ids, mask).last_hidden_state.numpy(), want, rtol=0, atol=0)
    return model


def check_classifier(hf, path, ids, mask, tmp_path):
    """from_pretrained(path) gives hf's logits (forward on the padded batch, score_packed on the rows), and so
    does transformers' load of its save_pretrained. Returns the model."""
    import transformers
    ref = hf_outputs(hf, ids, mask).logits.numpy()
    model = from_pretrained(path)
    np.testing.assert_allclose(model(ids, attention_mask=mask).numpy(), ref, **TOL)
    rows = [list(r[m]) for r, m in zip(ids, mask.astype(bool))]
    np.testing.assert_allclose(model.score_packed(rows), ref, **TOL)
    save_pretrained(model, tmp_path / "saved")
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert type(back).__name__ == type(hf).__name__
    np.testing.assert_array_equal(hf_outputs(back, ids, mask).logits.numpy(), ref)
    return model


def check_export_with_mask(model, hf, path, example, batches):
    """Export ``model`` (an encoder: last_hidden_state and, where it has a pooler, pooler_output) with
    ``example`` = (ids, mask) and every batch and sequence size dynamic, verified by the exporter at other sizes;
    then onnxruntime's outputs on each (ids, mask) of ``batches`` equal transformers' (hidden states at the real
    tokens)."""
    import onnxruntime as ort

    from forgegrad import as_tensor
    from forgegrad.onnx import export
    pooled = getattr(model, "pooler", None) is not None
    outs = ["last_hidden_state"] + (["pooler_output"] if pooled else [])
    axes = {0: "batch", 1: "sequence"}
    dynamic = {"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes, "pooler_output": {0: "batch"}}
    report = export(model, tuple(as_tensor(a) for a in example), str(path), input_names=["input_ids", "attention_mask"],
                    output_names=outs, dynamic_axes={k: v for k, v in dynamic.items() if k != "pooler_output" or
                                                     pooled},
                    rtol=1e-4, atol=1e-5, verify_sizes=[{"batch": 1, "sequence": 1}, {"batch": 3, "sequence": 37}])
    assert report.ok, report
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ids, mask in batches:
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        ref = hf_outputs(hf, ids, mask)
        real = mask.astype(bool)
        np.testing.assert_allclose(got[0][real], ref.last_hidden_state.numpy()[real], **TOL)
        if pooled:
            np.testing.assert_allclose(got[1], ref.pooler_output.numpy(), **TOL)


def word_piece_dir(path, corpus="hello world, a tiny corpus for a tiny tokenizer of sentences and words"):
    """A lower-casing WordPiece tokenizer of about 120 tokens trained on ``corpus`` ([PAD] 0, [UNK] 1, [CLS] 2,
    [SEP] 3, [MASK] 4), saved in transformers' layout into ``path`` (created)."""
    import transformers
    from tokenizers import BertWordPieceTokenizer
    path.mkdir(parents=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator([corpus] * 10, vocab_size=120)
    tok.save(str(path / "tokenizer.json"))
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), unk_token="[UNK]",
                                         sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                         mask_token="[MASK]").save_pretrained(path)
    return path


def sentence_transformer_dir(base, out, dim):
    """sentence-transformers' save of the checkpoint at ``base`` (a model and its tokenizer) with mean pooling and
    Normalize into ``out``: all-mpnet-base-v2's pipeline. Returns the SentenceTransformer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    model = SentenceTransformer(modules=[Transformer(str(base)), Pooling(dim, "mean"), Normalize()], device="cpu")
    model.save(str(out))
    return model


def check_embeddings_server(hf, tmp_path, dim):
    """transformers' ``hf`` saved with a tiny WordPiece tokenizer and then by sentence-transformers (mean pooling,
    Normalize): the in-process embeddings server (encoder_app) on that folder gives sentence-transformers' vectors."""
    import pytest
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("sentence_transformers")
    from serve_helpers import running_app

    from forgegrad.serve.encoder_app import EncoderServeConfig, create_encoder_app
    base = word_piece_dir(tmp_path / "base")
    hf.save_pretrained(base)
    texts = ["hello world", "a tiny corpus for a tiny tokenizer of sentences", "sentences", "hello tiny world"]
    want = sentence_transformer_dir(base, tmp_path / "st", dim).encode(texts, convert_to_numpy=True)
    with running_app(create_encoder_app(EncoderServeConfig(str(tmp_path / "st")))) as url:
        r = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
