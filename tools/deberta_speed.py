"""DeBERTa-v3 at deberta-v3-small's shape (random weights), forgegrad against transformers, one thread each: the
encoder's forward (no_grad) on batches of --tokens tokens, and the outputs compared. With --onnx, also the model
exported to ONNX (dynamic batch and length) in onnxruntime, one intra-op thread, against forgegrad's model and its
``nn.utils.freeze`` copy (which, as an onnxruntime session, computes the weights-only products once).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/deberta_speed.py --batches 1 8 --tokens 128
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/deberta_speed.py --batches 1 --tokens 128 --onnx
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

# microsoft/deberta-v3-small's config.json
V3_SMALL = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
                hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                max_position_embeddings=512, type_vocab_size=0, initializer_range=0.02, layer_norm_eps=1e-7,
                relative_attention=True, max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
                share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False, pad_token_id=0)


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def _onnx_session(model, path):
    """The model exported with dynamic batch and length (input_ids, attention_mask), in a one-thread session."""
    import onnxruntime as ort
    from forgegrad.onnx import export
    ids = np.arange(1, 14, dtype=np.int64)[None]
    export(model, (ids, np.ones_like(ids)), path, input_names=["input_ids", "attention_mask"], verify=False,
           dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask")})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile forgegrad's forward at the last batch size")
    ap.add_argument("--onnx", action="store_true", help="also time the ONNX export of the model in onnxruntime")
    args = ap.parse_args()
    import torch
    import transformers
    import forgegrad as fg
    from forgegrad.models import from_pretrained
    torch.set_num_threads(1)
    fg.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = transformers.DebertaV2Model(transformers.DebertaV2Config(**V3_SMALL)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model = from_pretrained(tmp)
        sess = _onnx_session(model, os.path.join(tmp, "model.onnx")) if args.onnx else None
    frozen = fg.nn.utils.freeze(model)
    rng = np.random.default_rng(0)
    for batch in args.batches:
        ids = rng.integers(1, V3_SMALL["vocab_size"], (batch, args.tokens))
        tids = torch.tensor(ids)
        with torch.no_grad(), fg.no_grad():
            diff = np.abs(model(ids).last_hidden_state.numpy() - hf(tids).last_hidden_state.numpy()).max()
            ours = best(lambda: model(ids), args.repeat)
            theirs = best(lambda: hf(tids), args.repeat)
        print(f"batch {batch} x {args.tokens} tokens: forgegrad {ours:.1f} ms, transformers {theirs:.1f} ms "
              f"({theirs / ours:.2f}x); largest difference {diff:.1e}")
        if sess is not None:
            feed = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones(ids.shape, np.int64)}
            with fg.no_grad():
                diff = np.abs(sess.run(None, feed)[0] - model(ids).last_hidden_state.numpy()).max()
                frozen_ms = best(lambda: frozen(ids), args.repeat)  # weights-only products kept, as ORT folds them
            runtime = best(lambda: sess.run(None, feed), args.repeat)
            print(f"  onnxruntime {runtime:.1f} ms ({runtime / ours:.2f}x forgegrad's time); nn.utils.freeze's copy "
                  f"{frozen_ms:.1f} ms ({runtime / frozen_ms:.2f}x); largest difference {diff:.1e}")
    if args.profile:
        import cProfile
        import pstats
        with fg.no_grad():
            cProfile.runctx("model(ids)", globals(), {"model": model, "ids": ids}, "/tmp/deberta.prof")
        pstats.Stats("/tmp/deberta.prof").sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
