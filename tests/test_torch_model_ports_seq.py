"""Ported torch models, part two (see test_torch_model_ports.py): a 1-d audio CNN + BiLSTM trained with CTC loss,
a siamese embedding net with TripletMarginLoss, ESPCN super-resolution with PixelShuffle and an MLP through GLU,
PReLU, Mish and other added activations. Same check: torch's weights loaded unchanged, outputs, losses and every
gradient against torch in train and eval mode, the ONNX export run in onnxruntime at another batch size."""
import numpy as np
import pytest
import torch

import forgegrad as fg
from model_ports import activation_mlp, audio_ctc, build_pair, check_onnx, compare_train_eval, espcn, siamese


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ctc_batch(n=3, frames=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, frames)).astype(np.float32)
    in_lens = np.array([frames // 2] + [int(rng.integers(frames // 4, frames // 2 + 1)) for _ in range(n - 1)])
    tgt_lens = np.array([int(rng.integers(1, 4)) for _ in range(n)])
    targets = rng.integers(1, 5, size=(n, 4))
    return x, targets, in_lens, tgt_lens


@pytest.mark.parametrize("reduction,flat", [("mean", False), ("sum", True)])
def test_audio_ctc_bilstm_matches_torch(reduction, flat):
    tm, fm = build_pair(audio_ctc)
    x, targets, in_lens, tgt_lens = _ctc_batch()
    if flat:  # the concatenated-targets form
        targets = np.concatenate([t[:n] for t, n in zip(targets, tgt_lens)])

    def loss(T, out, inputs):
        crit = T.nn.CTCLoss(blank=0, reduction=reduction, zero_infinity=True)
        return crit(out, T.tensor(targets), T.tensor(in_lens), T.tensor(tgt_lens))

    compare_train_eval(tm, fm, [x], loss=loss, what=f"ctc-{reduction}")


def test_audio_ctc_training_steps_match_torch():
    tm, fm = build_pair(audio_ctc)
    x, targets, in_lens, tgt_lens = _ctc_batch(seed=1)

    def run(T, m):
        opt = T.optim.Adam(m.parameters(), lr=1e-2)
        crit = T.nn.CTCLoss()
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = crit(m(T.tensor(x)), T.tensor(targets), T.tensor(in_lens), T.tensor(tgt_lens))
            loss.backward()
            T.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        return losses

    got, want = run(fg, fm), run(torch, tm)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got[-1] < got[0]


def test_audio_ctc_net_exports_with_a_dynamic_batch(tmp_path):
    # the default axes: batch only (axis 1 feeds the Conv1d's channels; it was taken for the LSTM's sequence axis)
    tm, fm = build_pair(audio_ctc)
    check_onnx(tm, fm, [_r(2, 8, 16)], [_r(4, 8, 16, seed=3)], tmp_path, "speech")


def test_audio_ctc_net_exports_with_a_dynamic_length(tmp_path):
    # lengths of 10 and up: instance norm needs two frames after the pool, as torch's
    tm, fm = build_pair(audio_ctc)
    check_onnx(tm, fm, [_r(2, 8, 16)], [_r(4, 8, 19, seed=3)], tmp_path, "speech_len",
               dynamic_axes={"x": {0: "batch", 2: "seq"}},
               verify_sizes=[{"batch": 1, "seq": 10}, {"batch": 3, "seq": 23}])


@pytest.mark.parametrize("swap", [False, True])
def test_siamese_triplet_margin_matches_torch(swap, tmp_path):
    tm, fm = build_pair(siamese)
    a, p, n = _r(4, 1, 10, 10), _r(4, 1, 10, 10, seed=1), _r(4, 1, 10, 10, seed=2)
    p = a + 0.3 * p  # positives near their anchors, so some triplets sit inside the margin and some outside

    def loss(T, out, inputs):
        return T.nn.TripletMarginLoss(margin=0.5, p=2, swap=swap)(out[0], out[1], out[2])

    compare_train_eval(tm, fm, [a, p, n], loss=loss, what=f"siamese-swap{swap}")
    if not swap:
        check_onnx(tm, fm, [a, p, n], [_r(2, 1, 10, 10, seed=s) for s in (4, 5, 6)], tmp_path, "siamese")


def test_espcn_matches_torch(tmp_path):
    tm, fm = build_pair(espcn)
    x, hr = _r(2, 1, 7, 9), _r(2, 1, 21, 27, seed=1)

    def loss(T, out, inputs):
        return T.nn.functional.mse_loss(out, T.tensor(hr))

    compare_train_eval(tm, fm, [x], loss=loss, what="espcn")
    check_onnx(tm, fm, [x], [_r(3, 1, 7, 9, seed=2)], tmp_path, "espcn")


def test_activation_mlp_matches_torch(tmp_path):
    tm, fm = build_pair(activation_mlp)
    x = 2 * _r(9, 6)
    compare_train_eval(tm, fm, [x], what="mlp")
    check_onnx(tm, fm, [x], [_r(4, 6, seed=8)], tmp_path, "mlp")


def test_text_siamese_with_embedding_max_norm_matches_torch():
    """A bag-of-embeddings siamese encoder with ``nn.Embedding(max_norm=1.0)`` (a metric-learning staple; the
    module lacked the argument F.embedding has): outputs, the in-place renormalised table and the gradients."""
    def build(T):
        class Enc(T.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = T.nn.Embedding(12, 5, padding_idx=0, max_norm=1.0)
                self.fc = T.nn.Linear(5, 4)

            def forward(self, a, b):
                return T.stack([self.fc(self.emb(t).mean(1)) for t in (a, b)])

        return Enc()

    tm, fm = build_pair(build)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 12, (3, 4)), rng.integers(0, 12, (3, 4))

    def loss(T, out, inputs):
        return T.nn.CosineEmbeddingLoss(margin=0.1)(out[0], out[1], T.tensor(np.array([1.0, -1.0, 1.0])))

    compare_train_eval(tm, fm, [a, b], loss=loss, what="embedding-max-norm")
    np.testing.assert_allclose(fm.emb.weight.numpy(), tm.emb.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "max_norm=1.0" in repr(fm.emb)
    assert "sparse=True" in repr(fg.nn.Embedding(3, 2, sparse=True))
    with pytest.raises(ValueError, match="max_norm"):
        fg.nn.Embedding(3, 2, max_norm=-1.0)
    frozen = fg.nn.Embedding.from_pretrained(fg.tensor(np.full((3, 2), 2.0, np.float32)), max_norm=1.0)
    frozen(fg.tensor(np.array([1])))
    np.testing.assert_allclose(np.linalg.norm(frozen.weight.numpy(), axis=1), [2 * np.sqrt(2), 1.0, 2 * np.sqrt(2)],
                               rtol=1e-5)
